"""The trainers an IOVQA run uses: LLaMA-Factory's SFT trainer with the plugin's loss and evaluation steps.

``HeadTrainer``: the softmax-regression head. Its loss is the head's (see
``train.head.head_loss``) on the hidden state at ``<LABEL_1>``, not next-token
cross-entropy; evaluation returns, per sample, the expected score and the
MOS, which ``train.score_metrics.ComputeScoreMetrics`` turns into
``eval_srcc`` / ``eval_plcc`` / ``eval_final``.

``LabelledLogitsTrainer``: the integer and decimal label runs (``iovqa_labelled_logits``, on by
default). ``compute_loss`` and the evaluation step come from ``train.labelled_logits``: the output
layer runs only at positions whose next label is trained, with the same loss value and gradients as
the stock step (see that module for what is reproduced and what is refused); evaluation returns each
row's labelled-position logits packed to the front instead of full-sequence logits, which the score
metrics (or LLaMA-Factory's argmax accuracy) read with the same results. ``predict_with_generate``
keeps the stock evaluation step. With ``iovqa_rank_loss: fidelity`` it adds the weighted fidelity ranking
loss over the micro-batch's pairs (``train.rank_loss``) to the SFT loss, logged as ``rank_loss``. With
``iovqa_pair_soft_targets`` a comparison row's choice token is trained against its soft target (the
collator's ``CHOICE_KEY``, ``train.soft_targets``).

``LevelTrainer``: level-word label runs (``iovqa_label_format: level``), always on labelled-position
logits. Hard targets: the same causal-LM loss; soft targets (``iovqa_level_targets: soft``): the
level token's cross-entropy against a Gaussian around the row's MOS (``train.soft_targets``). Its
evaluation step returns, per sample, Q-Align's expected score (softmax over the five level tokens at
the level position, dotted with 1..5) and the row's MOS, for ``eval_srcc`` / ``eval_plcc``.
"""

from __future__ import annotations

from typing import Any, Optional

import torch
from llamafactory.train.sft.trainer import CustomSeq2SeqTrainer
from transformers.loss.loss_utils import LOSS_MAPPING

from iovqa_plugin.config import IOVQAArguments
from iovqa_plugin.logs import get_logger
from iovqa_plugin.data.labels import LEVELS
from iovqa_plugin.data.levels import LevelTokens, expected_level
from iovqa_plugin.train.head import MOS_KEY, HeadForward, expected_score, grade_probabilities, head_loss
from iovqa_plugin.train.labelled_logits import LabelledLogitsError, causal_lm_loss, compact_for_metrics, labelled_loss
from iovqa_plugin.train.rank_loss import RankSettings, integer_score_distributions, rank_loss, score_moments
from iovqa_plugin.train.soft_targets import CHOICE_KEY, SIGMA_KEY, gaussian_levels, level_logits, soft_level_loss


class HeadTrainer(CustomSeq2SeqTrainer):
    """CustomSeq2SeqTrainer whose loss and evaluation are the head's."""

    def __init__(self, *args: Any, iovqa_args: IOVQAArguments, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._loss_kind, self._sigma = iovqa_args.head_loss, iovqa_args.head_sigma
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


OFF = "set iovqa_labelled_logits: false to use it"


def unsupported_loss_settings(trainer: Any) -> list[str]:
    """What in the run would make the stock loss differ from the labelled-position loss."""
    finetuning = trainer.finetuning_args
    found = [
        f"{key}: true (an alternative SFT loss over all positions)"
        for key in ("use_dft_loss", "use_eaft_loss", "use_asft_loss")
        if getattr(finetuning, key, False)
    ]
    if trainer.compute_loss_func is not None and not found:
        found.append("a custom compute_loss_func")
    if trainer.args.label_smoothing_factor:
        found.append(f"label_smoothing_factor: {trainer.args.label_smoothing_factor} (smooths over every position)")
    parallel = getattr(trainer.accelerator, "parallelism_config", None)
    if parallel is not None and (getattr(parallel, "cp_enabled", False) or getattr(parallel, "sp_enabled", False)):
        found.append("parallelism_config with context/sequence parallelism (the sequence is sharded)")
    if trainer.args.n_gpu > 1:
        found.append(f"{trainer.args.n_gpu} GPUs in one process (DataParallel); launch one process per GPU")
    model = _unwrap(trainer.model)
    if (getattr(model.forward, "__module__", "") or "").startswith("liger_kernel"):
        found.append("enable_liger_kernel: true (its fused loss replaces the model's forward)")
    loss_function = getattr(model, "loss_function", None)
    if loss_function is not None and loss_function is not LOSS_MAPPING["ForCausalLM"]:
        found.append(f"a model loss other than ForCausalLMLoss ({getattr(loss_function, '__name__', loss_function)})")
    return found


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    while True:
        inner = getattr(model, "module", None) or (model.get_base_model() if hasattr(model, "get_base_model") else None)
        if inner is None or inner is model:
            return model
        model = inner


class LabelledLogitsTrainer(CustomSeq2SeqTrainer):
    """LLaMA-Factory's SFT trainer whose loss and evaluation step run the output layer at labelled positions only."""

    def __init__(self, *args: Any, rank: Optional[RankSettings] = None, grid: Any = None, scores: int = 1,
                 choices: Optional[LevelTokens] = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        # the fidelity ranking loss (None: off); integer runs read each row's score on ``grid``, ``scores`` per answer
        self._rank, self._grid, self._scores, self._rank_terms = rank, grid, scores, []
        self._choices = choices  # the choice words' tokens (iovqa_pair_soft_targets), else None
        if rank is not None:
            get_logger().info("fidelity ranking loss, weight %s, %s, pairs %s", rank.weight,
                              f"fixed sigma {rank.sigma}" if rank.sigma else "predicted variances",
                              "across ranks" if rank.gather else "within each micro-batch")
        found = unsupported_loss_settings(self)
        if found:
            raise LabelledLogitsError(
                "iovqa_labelled_logits (on by default; always for level labels) computes the stock causal-LM loss "
                "only; this run has " + "; ".join(found) + f" ({OFF}, with integer or decimal labels)"
            )
        get_logger().info("labelled-position logits: the output layer runs only where the loss is")

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        inputs, loss_function = self._choice_loss(inputs)
        loss, outputs = self._labelled_loss(model, inputs, num_items_in_batch, loss_function)
        loss = self._with_rank(model, loss, outputs, num_items_in_batch)
        return (loss, outputs) if return_outputs else loss

    def _choice_loss(self, inputs):
        """(the batch without its soft choice targets, the loss function): the causal-LM loss, with the choice
        token of each comparison row that has a soft target (``train.soft_targets``) trained against it."""
        if CHOICE_KEY not in inputs:
            return inputs, causal_lm_loss
        inputs = dict(inputs)
        target = inputs.pop(CHOICE_KEY)
        if self._choices is None:
            raise LabelledLogitsError("the batch has soft choice targets but the trainer has no choice words")
        rows, choices = ~torch.isnan(target[:, 0]), self._choices

        def soft(logits, targets, items):
            return soft_level_loss(logits, targets, choices.ids, choices.prefix, target.to(logits.device), items,
                                   rows=rows)

        return inputs, soft

    def _rank_distributions(self, outputs) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
        """(probabilities (B, S, C), values (C,), MOS (B, S), stds (B, S) or None) of the rows' S scores."""
        return (*integer_score_distributions(outputs["logits"], outputs["targets"], self._grid, self._scores), None)

    def _with_rank(self, model, loss, outputs, num_items_in_batch):
        """``loss`` plus the weighted fidelity ranking loss of the batch's rows (pairs of the same score index)."""
        if self._rank is None:
            return loss
        probabilities, values, mos, stds = self._rank_distributions(outputs)
        scores, variances = score_moments(probabilities, values)
        groups = torch.arange(scores.shape[1], device=scores.device).expand_as(scores)
        term = rank_loss(scores.flatten(), variances.flatten(), mos.flatten(),
                         None if stds is None else stds.flatten(), groups.flatten(), self._rank)
        if model.training:  # logged as the global loss (gathered, it is scaled by the world size for DDP's mean)
            self._rank_terms.append(float(term.detach()) / (self.accelerator.num_processes if self._rank.gather else 1))
            if self.model_accepts_loss_kwargs and num_items_in_batch is not None:
                # the Trainer then does not divide the loss by the accumulation steps; the rank term is a mean
                term = term / getattr(self, "current_gradient_accumulation_steps", 1)
        return loss + self._rank.weight * term.to(loss.device)

    def log(self, logs, *args, **kwargs):
        if self._rank_terms and "loss" in logs:  # the mean unweighted rank term since the last training log
            logs["rank_loss"] = round(sum(self._rank_terms) / len(self._rank_terms), 6)
            self._rank_terms.clear()
        return super().log(logs, *args, **kwargs)

    def _labelled_loss(self, model, inputs, num_items_in_batch, loss_function=causal_lm_loss):
        # The Trainer hands the model the token count only when it accepts loss kwargs (not for LLaMA-Factory's
        # VLM runs: it sets model_accepts_loss_kwargs False); the loss is then a mean the Trainer divides by the
        # accumulation steps.
        accepts = self.model_accepts_loss_kwargs
        loss, outputs = labelled_loss(model, inputs, num_items_in_batch if accepts else None, loss_function)
        if self.args.average_tokens_across_devices and accepts and num_items_in_batch is not None:
            loss = loss * (self.accelerator.num_processes if self.args.n_gpu <= 1 else self.args.n_gpu)
        return loss, outputs

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None, **gen_kwargs):
        if self.args.predict_with_generate or inputs.get("labels") is None:
            return super().prediction_step(model, self._generation_inputs(inputs), prediction_loss_only,
                                           ignore_keys=ignore_keys, **gen_kwargs)
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad(), self.compute_loss_context_manager():
            num_items_in_batch = self._get_num_items_in_batch([inputs], self.args.device)
            loss, outputs = self.compute_loss(model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch)
        loss = loss.detach().mean()
        if prediction_loss_only:
            return loss, None, None
        return (loss, *self._for_metrics(outputs))

    def _generation_inputs(self, inputs):
        """The batch as LLaMA-Factory's generating prediction step takes it."""
        return {k: v for k, v in inputs.items() if k != CHOICE_KEY}

    def _for_metrics(self, outputs) -> tuple[torch.Tensor, torch.Tensor]:
        """(predictions, labels) handed to compute_metrics: the packed labelled-position logits."""
        return compact_for_metrics(outputs["logits"].detach(), outputs["targets"])


class LevelTrainer(LabelledLogitsTrainer):
    """The labelled-position trainer for level-word labels: hard or soft level targets, expected-score metrics."""

    def __init__(self, *args: Any, iovqa_args: IOVQAArguments, levels: LevelTokens, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._soft, self._levels = iovqa_args.soft_targets, levels
        sigma = f"column {iovqa_args.std_column!r}" if iovqa_args.std_column else f"{iovqa_args.level_sigma}"
        get_logger().info("level-word labels, %s targets%s", iovqa_args.level_targets,
                          f" (Gaussian around the MOS, sigma {sigma})" if self._soft else "")

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        inputs = dict(inputs)
        mos, sigma = inputs.pop(MOS_KEY), inputs.pop(SIGMA_KEY)
        loss_function = causal_lm_loss
        if self._soft:
            target, levels = gaussian_levels(mos, sigma), self._levels

            def soft(logits, targets, items):
                return soft_level_loss(logits, targets, levels.ids, levels.prefix, target.to(logits.device), items)

            loss_function = soft
        loss, outputs = self._labelled_loss(model, inputs, num_items_in_batch, loss_function)
        outputs[MOS_KEY], outputs[SIGMA_KEY] = mos, sigma
        loss = self._with_rank(model, loss, outputs, num_items_in_batch)
        return (loss, outputs) if return_outputs else loss

    def _rank_distributions(self, outputs):
        """Q-Align's distribution over the five level tokens, the rows' MOS and their sigmas (the raters' stds)."""
        at_level = level_logits(outputs["logits"], outputs["targets"], self._levels.prefix)
        values = torch.tensor(LEVELS, device=at_level.device)
        mos, sigma = outputs[MOS_KEY].to(at_level.device), outputs[SIGMA_KEY].to(at_level.device)
        return self._levels.probabilities(at_level).unsqueeze(1), values, mos.unsqueeze(1), sigma.unsqueeze(1)

    def _generation_inputs(self, inputs):
        return {k: v for k, v in inputs.items() if k not in (MOS_KEY, SIGMA_KEY)}

    def _for_metrics(self, outputs) -> tuple[torch.Tensor, torch.Tensor]:
        """(expected score and MOS per row, MOS): Q-Align's expectation at the level token."""
        at_level = level_logits(outputs["logits"].detach(), outputs["targets"], self._levels.prefix)
        expected, _ = expected_level(self._levels.probabilities(at_level))
        mos = outputs[MOS_KEY].to(expected.device).float()
        return torch.stack([expected, mos], dim=1), mos
