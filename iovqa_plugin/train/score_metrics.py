"""SRCC / PLCC / final during LLaMA-Factory's evaluation, from digit-token distributions.

With the digit mask on, every evaluation sample's labels are exactly the
score's tokens. The predicted score is the expectation of the model's
distribution at the answer's first position, which depends on the prompt
and video only: for Qwen-style tokenizers the first digit (the expected
grade, sum of P(d) * d over d = 1..5); for tokenizers with one token per
integer, all of 10..50. No generation, no extra forward pass.

The second digit is left out on purpose: under teacher forcing its
distribution is conditioned on the *true* first digit, which would leak the
label into the prediction. The scorer's ``expected`` mode computes the full
two-digit expectation properly (one prefill plus one batched step). Logged as
``eval_srcc``, ``eval_plcc``, ``eval_final`` (in ``eval_results.json``).

Level-word runs: the level trainer's evaluation step hands ``ComputeScoreMetrics``
Q-Align's expected score (``data.levels``) and each row's MOS directly.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..data.grid import VALUES, ScoreGrid
from ..eval.metrics import compute_metrics

from .mask import IGNORE_INDEX


def score_logits(logits: Any, labels: torch.Tensor, grid: ScoreGrid) -> torch.Tensor:
    """(B, 2) = (expected score, true MOS) from (B, L, V) logits whose labels are exactly the score's tokens."""
    if isinstance(logits, (list, tuple)):
        logits = logits[0] if logits[0].dim() == 3 else logits[1]
    rows = torch.arange(labels.shape[0], device=labels.device)
    first_pos = (labels != IGNORE_INDEX).long().argmax(dim=1)  # the score's first token
    first_logits = logits[rows, first_pos - 1].float()  # logits at t-1 predict token t
    first_ids = grid.first_ids.to(labels.device)
    true_first = (first_ids == labels[rows, first_pos].unsqueeze(1)).long().argmax(1)
    if grid.steps == 1:
        values = torch.tensor(VALUES, device=labels.device, dtype=torch.float32) / 10
        expected = (grid.probabilities(first_logits) * values).sum(-1)
        true_mos = values[true_first]
    else:
        grades = torch.arange(1, first_ids.numel() + 1, device=labels.device, dtype=torch.float32)
        expected = (torch.softmax(first_logits[:, first_ids], dim=-1) * grades).sum(-1)
        second_ids = grid.second_ids.to(labels.device)
        true_second = (second_ids == labels[rows, first_pos + 1].unsqueeze(1)).long().argmax(1)
        true_mos = grades[true_first] + true_second.float() / 10
    return torch.stack([expected, true_mos], dim=1)


class ScoreLogits:
    """``preprocess_logits_for_metrics`` of an IOVQA run: logits reduced to (expected score, true MOS) per sample."""

    def __init__(self, grid: ScoreGrid):
        self.grid = grid

    def __call__(self, logits: Any, labels: torch.Tensor) -> torch.Tensor:
        return score_logits(logits, labels, self.grid)


class ComputeScoreMetrics:
    """``compute_metrics``: correlations of the expected score with the true MOS (across the whole split)."""

    def __call__(self, eval_preds: Any, compute_result: bool = True) -> dict[str, float]:
        predictions = eval_preds.predictions
        if isinstance(predictions, (list, tuple)):
            predictions = predictions[0]
        predictions = np.asarray(predictions, dtype=np.float64)
        metrics = compute_metrics(predictions[:, 0], predictions[:, 1])
        return {key: metrics[key] for key in ("srcc", "plcc", "final")}
