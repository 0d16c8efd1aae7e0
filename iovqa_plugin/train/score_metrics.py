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

Several quality dimensions in the ``joint`` layout: every answer holds one
score per dimension, and each is read the same way at its own first token,
logged as ``eval_srcc_<dimension>``, ``eval_plcc_<dimension>`` and
``eval_final_<dimension>``; ``eval_srcc`` / ``eval_plcc`` / ``eval_final``
are then their means over the dimensions. A later dimension's first token is
read under teacher forcing, after the true scores of the earlier ones (the
scorer's ``expected`` mode conditions on its own greedy answer instead). In
the ``per_sample`` layout each evaluation sample is one (video, dimension)
and the metrics are pooled over all of them; per-dimension numbers come from
``iovqa score`` and ``iovqa eval``.

Level-word runs: the level trainer's evaluation step hands ``ComputeScoreMetrics``
Q-Align's expected score (``data.levels``) and each row's MOS directly.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..data.grid import ScoreGrid
from ..data.labels import INTEGER_LABELS
from ..eval.metrics import compute_metrics

from ..data.labels import IGNORE_INDEX


def score_logits(logits: Any, labels: torch.Tensor, grid: ScoreGrid, scores: int = 1) -> torch.Tensor:
    """(B, 2 * scores) = (expected score, true MOS) of each score, from (B, L, V) logits whose labels are exactly
    the scores' tokens (``scores`` of them per row, ``grid.steps`` tokens each)."""
    if isinstance(logits, (list, tuple)):
        logits = logits[0] if logits[0].dim() == 3 else logits[1]
    labelled = labels != IGNORE_INDEX
    rank = labelled.long().cumsum(dim=1) - 1  # the k-th score starts at the labelled token of rank k * steps
    columns = []
    for k in range(scores):
        first_pos = (labelled & (rank == k * grid.steps)).long().argmax(dim=1)
        columns.append(_score_at(logits, labels, first_pos, grid))
    return torch.cat(columns, dim=1)


def _score_at(logits: torch.Tensor, labels: torch.Tensor, first_pos: torch.Tensor, grid: ScoreGrid) -> torch.Tensor:
    """(B, 2) = (expected score, true MOS) of the score whose first token is at ``first_pos``."""
    rows = torch.arange(labels.shape[0], device=labels.device)
    first_logits = logits[rows, first_pos - 1].float()  # logits at t-1 predict token t
    first_ids = grid.first_ids.to(labels.device)
    true_first = (first_ids == labels[rows, first_pos].unsqueeze(1)).long().argmax(1)
    if grid.steps == 1:
        values = torch.tensor(INTEGER_LABELS, device=labels.device, dtype=torch.float32) / 10
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

    def __init__(self, grid: ScoreGrid, scores: int = 1):
        self.grid, self.scores = grid, scores

    def __call__(self, logits: Any, labels: torch.Tensor) -> torch.Tensor:
        return score_logits(logits, labels, self.grid, self.scores)


METRIC_KEYS = ("srcc", "plcc", "final")


class ComputeScoreMetrics:
    """``compute_metrics``: correlations of the expected score with the true MOS (across the whole split);
    with ``dimensions`` (one score per dimension in each answer), per dimension and their mean."""

    def __init__(self, dimensions: tuple[str, ...] = ()):
        self.dimensions = tuple(dimensions)

    def __call__(self, eval_preds: Any, compute_result: bool = True) -> dict[str, float]:
        predictions = eval_preds.predictions
        if isinstance(predictions, (list, tuple)):
            predictions = predictions[0]
        predictions = np.asarray(predictions, dtype=np.float64)
        if not self.dimensions:
            metrics = compute_metrics(predictions[:, 0], predictions[:, 1])
            return {key: metrics[key] for key in METRIC_KEYS}
        result = {}
        for k, name in enumerate(self.dimensions):
            metrics = compute_metrics(predictions[:, 2 * k], predictions[:, 2 * k + 1])
            result.update({f"{key}_{name}": metrics[key] for key in METRIC_KEYS})
        for key in METRIC_KEYS:  # the mean over the dimensions
            result[key] = float(np.mean([result[f"{key}_{name}"] for name in self.dimensions]))
        return result
