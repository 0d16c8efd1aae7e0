"""The trainers an IOVQA run uses: LLaMA-Factory's SFT trainer with the plugin's loss and evaluation steps.

``HeadTrainer``: the softmax-regression head. Its loss is the head's (see
``train.head.head_loss``) on the hidden state at ``<LABEL_1>``, not next-token
cross-entropy; evaluation returns, per sample, the expected score and the
MOS, which ``train.score_metrics.ComputeScoreMetrics`` turns into
``eval_srcc`` / ``eval_plcc`` / ``eval_final``.
"""

from __future__ import annotations

from typing import Any

import torch
from llamafactory.train.sft.trainer import CustomSeq2SeqTrainer

from iovqa_plugin.config import IOVQAArguments
from iovqa_plugin.train.head import MOS_KEY, HeadForward, expected_score, grade_probabilities, head_loss


class HeadTrainer(CustomSeq2SeqTrainer):
    """CustomSeq2SeqTrainer whose loss and evaluation are the head's."""

    def __init__(self, *args: Any, run: IOVQAArguments, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._loss_kind, self._sigma = run.head_loss, run.head_sigma
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
