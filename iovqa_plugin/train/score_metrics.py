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

Comparison rows in the evaluation set (an ``eval_dataset`` of formatting
``iovqa_pairs`` or ``iovqa_drawn_pairs``, alone or next to scored rows): a row
whose labels are a choice word's tokens gives P(A) - P(B) over the choice
tokens at its answer position and the human preference (+1 A, -1 B, 0 a tie
answered with the third word); ``eval_pairwise_diff`` and
``eval_pairwise_tau`` are the pairwise accuracies of ``eval.pairwise`` over
them, and the correlations are over the scored rows only.
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
    second_pos = (first_pos + 1).clamp(max=labels.shape[1] - 1)  # a comparison row's one choice token ends its labels
    if grid.steps == 1:
        values = torch.tensor(INTEGER_LABELS, device=labels.device, dtype=torch.float32) / 10
        expected = (grid.probabilities(first_logits) * values).sum(-1)
        true_mos = values[true_first]
    else:
        grades = torch.arange(1, first_ids.numel() + 1, device=labels.device, dtype=torch.float32)
        expected = (torch.softmax(first_logits[:, first_ids], dim=-1) * grades).sum(-1)
        second_ids = grid.second_ids.to(labels.device)
        true_second = (second_ids == labels[rows, second_pos].unsqueeze(1)).long().argmax(1)
        true_mos = grades[true_first] + true_second.float() / 10
    return torch.stack([expected, true_mos], dim=1)


def choice_logits(logits: torch.Tensor, labels: torch.Tensor, choice_ids: torch.Tensor) -> torch.Tensor:
    """(B, 3) = (P(A) - P(B) over the choice tokens, human preference +1 / -1 / 0, 1 if the row is a comparison
    else 0) from the logits at each row's first labelled token; ``choice_ids``: A's, B's (and the tie's)."""
    labelled = labels != IGNORE_INDEX
    first_pos = labelled.long().argmax(dim=1)
    rows = torch.arange(labels.shape[0], device=labels.device)
    choice_ids = choice_ids.to(labels.device)
    first = labels[rows, first_pos]
    is_choice = (first.unsqueeze(1) == choice_ids).any(dim=1) & labelled.any(dim=1)
    p = torch.softmax(logits[rows, first_pos - 1].float()[:, choice_ids], dim=-1)
    human = (first == choice_ids[0]).float() - (first == choice_ids[1]).float()
    return torch.stack([p[:, 0] - p[:, 1], human, is_choice.float()], dim=1)


class ScoreLogits:
    """``preprocess_logits_for_metrics`` of an IOVQA run: logits reduced to (expected score, true MOS) per sample;
    with ``choice_ids`` (runs whose evaluation may hold comparisons) a comparison row's (P(A) - P(B), human
    preference) instead, and a last column marking comparison rows."""

    def __init__(self, grid: ScoreGrid, scores: int = 1, choice_ids: Any = None):
        self.grid, self.scores = grid, scores
        self.choice_ids = None if choice_ids is None else torch.as_tensor(choice_ids)

    def __call__(self, logits: Any, labels: torch.Tensor) -> torch.Tensor:
        scores = score_logits(logits, labels, self.grid, self.scores)
        if self.choice_ids is None:
            return scores
        if isinstance(logits, (list, tuple)):
            logits = logits[0] if logits[0].dim() == 3 else logits[1]
        choices = choice_logits(logits, labels, self.choice_ids)
        comparison = choices[:, 2:].bool()
        return torch.cat([torch.where(comparison, choices[:, :2], scores), choices[:, 2:]], dim=1)


METRIC_KEYS = ("srcc", "plcc", "final")


class ComputeScoreMetrics:
    """``compute_metrics``: correlations of the expected score with the true MOS (across the whole split);
    with ``dimensions`` (one score per dimension in each answer), per dimension and their mean."""

    def __init__(self, dimensions: tuple[str, ...] = (), comparisons: bool = False):
        self.dimensions = tuple(dimensions)
        self.comparisons = comparisons  # the predictions' last column marks comparison rows (ScoreLogits)

    def __call__(self, eval_preds: Any, compute_result: bool = True) -> dict[str, float]:
        predictions = eval_preds.predictions
        if isinstance(predictions, (list, tuple)):
            predictions = predictions[0]
        predictions = np.asarray(predictions, dtype=np.float64)
        if self.comparisons:
            return self._with_comparisons(predictions)
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

    def _with_comparisons(self, predictions: np.ndarray) -> dict[str, float]:
        """The score metrics over the scored rows, the pairwise accuracies over the comparison rows."""
        from ..eval.pairwise import pairwise_accuracy

        comparison = predictions[:, -1] > 0.5
        result = {}
        if not comparison.all():
            metrics = compute_metrics(predictions[~comparison, 0], predictions[~comparison, 1])
            result.update({key: metrics[key] for key in METRIC_KEYS})
        if comparison.any():
            accuracy = pairwise_accuracy(predictions[comparison, 0], predictions[comparison, 1])
            result.update(pairwise_diff=accuracy["diff"], pairwise_tau=accuracy["tau"])
        return result
