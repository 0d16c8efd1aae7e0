"""Training and evaluation steps of the softmax-regression head.

LLaMA-Factory's SFT trainer with the loss and the evaluation step replaced:
the loss is the head's (see ``head.head_loss``) on the hidden state at
``<LABEL_1>``, not next-token cross-entropy; evaluation returns, per sample,
the expected score and the MOS, which ``trainer_metrics.ComputeScoreMetrics``
turns into ``eval_srcc`` / ``eval_plcc`` / ``eval_final``.
"""

from __future__ import annotations

from typing import Any

import torch
from llamafactory.train.sft.trainer import CustomSeq2SeqTrainer

from .config import active
from .head import EMBEDDING_MODULE, HEAD_MODULE, HeadHooks, add_label_token, expected_score, grade_probabilities
from .head import head_loss, label_positions, module_of

MOS_KEY = "iovqa_mos"


class HeadForward:
    """Runs the model and the head: grade logits of each row's ``<LABEL_1>``."""

    def __init__(self, model: torch.nn.Module, tokenizer: Any):
        self.label_id = add_label_token(tokenizer)
        self.hooks = HeadHooks(model, self.label_id)
        self.head = module_of(model, HEAD_MODULE)
        module_of(model, EMBEDDING_MODULE)  # present, or a clear error

    def __call__(self, model: torch.nn.Module, inputs: dict[str, Any]) -> torch.Tensor:
        positions = label_positions(inputs["input_ids"], self.label_id)
        inputs = {k: v for k, v in inputs.items() if k not in ("labels", MOS_KEY)}
        model(**inputs, use_cache=False, logits_to_keep=1)  # the LM head runs on the last position only
        hidden = self.hooks.hidden
        rows = torch.arange(hidden.shape[0], device=hidden.device)
        return self.head(hidden[rows, positions.to(hidden.device)])


class HeadTrainer(CustomSeq2SeqTrainer):
    """CustomSeq2SeqTrainer whose loss and evaluation are the head's."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        plugin = active()
        self._loss_kind, self._sigma = plugin.head_loss, plugin.head_sigma
        self._head_forward = HeadForward(self.model, self.processing_class)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        mos = inputs[MOS_KEY]
        logits = self._head_forward(model, inputs)
        loss = head_loss(logits, mos.to(logits.device), self._loss_kind, self._sigma)
        return (loss, {"logits": logits}) if return_outputs else loss

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None, **kwargs):
        inputs = self._prepare_inputs(inputs)
        mos = inputs[MOS_KEY]
        with torch.no_grad():
            logits = self._head_forward(model, inputs)
            loss = head_loss(logits, mos.to(logits.device), self._loss_kind, self._sigma)
        if prediction_loss_only:
            return loss.detach(), None, None
        expected = expected_score(grade_probabilities(logits))
        mos = mos.to(expected.device).float()
        return loss.detach(), torch.stack([expected, mos], dim=1), mos
