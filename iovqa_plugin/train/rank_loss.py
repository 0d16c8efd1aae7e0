"""The fidelity ranking loss of DeQA-Score, over the pairs of a micro-batch (``iovqa_rank_loss: fidelity``).

For every pointwise sample the model's distribution over the score's candidate
tokens at the score position gives an expected score ``s`` and its variance
``v`` (candidate values 1..5). For each pair i < j of rows scoring the same
dimension,

    p_hat = Phi((s_i - s_j) / sqrt(v_i + v_j + eps))     (predicted variance, the default)
    p_hat = Phi((s_i - s_j) / sqrt(2 sigma^2))           (a fixed sigma, ``iovqa_rank_sigma``; DeQA-Score's
                                                          training script uses sigma 1: ``use_fix_std``)
    p     = Phi((mu_i - mu_j) / sqrt(std_i^2 + std_j^2 + eps))   with the raters' stds, else 1 / 0 / 0.5
    L     = mean over pairs of 1 - sqrt(p_hat p + eps) - sqrt((1 - p_hat)(1 - p) + eps),   eps = 1e-8

(DeQA-Score's ``rating_loss``; its code notes that eps = 0 stalls the
optimiser: the square roots' gradients are infinite at 0). The target is
detached. A micro-batch without a pair (one row, or rows of different
dimensions only) gives 0, still attached to the graph.

Which score for two-digit integer labels ("37"): the expectation of the
*first* digit over "1".."5" (the grade, in MOS units), not 10 E[d1] + E[d2].
Under teacher forcing the second digit's distribution is conditioned on the
row's *true* first digit, so it is not the model's prediction for the video:
for MOS 3.9 against 4.1 the pair's gradient would push the second digit after
"3" down for the 3.9 video, against its own label "9". The first digit
depends on the prompt and video only; it is the score the in-training
SRCC/PLCC read (``score_metrics``) and, like DeQA-Score's level token, one
token's expectation over five values. Tokenizers with one token per integer
use that token's expectation over 10..50 (in MOS units). Level-word labels
use Q-Align's expectation over the five level tokens.

Across ranks (``iovqa_rank_gather``): every rank gathers the (score,
variance, MOS, std, dimension) rows of all ranks, the other ranks' rows
detached, and computes the loss over all pairs; each rank's backward reaches
its own rows. DDP averages the gradients over the ranks, so the loss is
multiplied by the world size to give each row the gradient of the global loss
(as the Trainer does with ``average_tokens_across_devices``).

Pure tensors: no LLaMA-Factory import (the trainer in ``patches.trainer`` calls it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch

EPS = 1e-8  # DeQA-Score's: inside the square roots and the variances


@dataclass(frozen=True)
class RankSettings:
    """The rank-loss part of a run (from ``iovqa_rank_*``), passed to the trainer."""

    weight: float = 1.0
    sigma: Optional[float] = None  # None: each row's predicted variance; else this sigma for every row
    use_stds: bool = False  # the target from the MOS and the raters' stds (level runs with iovqa_std_column)
    gather: bool = False  # pairs across all ranks

    @classmethod
    def of_run(cls, run) -> Optional["RankSettings"]:
        """The settings of an ``IOVQAArguments`` run, or None when it adds no rank loss."""
        if not run.rank_on:
            return None
        return cls(weight=run.rank_weight, sigma=run.rank_sigma, use_stds=run.std_column is not None,
                   gather=run.rank_gather)


def score_moments(probabilities: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, variance) of each row's distribution ``probabilities`` (..., C) over ``values`` (C,).

    The variance, not the standard deviation: its gradient stays finite when a distribution is one-hot.
    """
    values = values.to(probabilities)
    mean = (probabilities * values).sum(-1)
    variance = (probabilities * (values - mean.unsqueeze(-1)) ** 2).sum(-1)
    return mean, variance


def normal_cdf(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * (1 + torch.erf(x / math.sqrt(2)))


def preference_probability(mos_i: torch.Tensor, mos_j: torch.Tensor, std_i: torch.Tensor,
                           std_j: torch.Tensor) -> torch.Tensor:
    """Thurstone's P(i better than j) from two MOS and their raters' stds: Phi((mu_i - mu_j) / sqrt(std_i^2 +
    std_j^2 + eps)); with both stds 0 it is the hard 1 / 0 (0.5 for equal MOS). Numbers or tensors."""
    mos_i, mos_j, std_i, std_j = (torch.as_tensor(v, dtype=torch.float64) if not torch.is_tensor(v) else v
                                  for v in (mos_i, mos_j, std_i, std_j))
    return normal_cdf((mos_i - mos_j) / (std_i ** 2 + std_j ** 2 + EPS).sqrt())


def fidelity_loss(
    scores: torch.Tensor,
    variances: torch.Tensor,
    mos: torch.Tensor,
    stds: Optional[torch.Tensor] = None,
    groups: Optional[torch.Tensor] = None,
    sigma: Optional[float] = None,
) -> torch.Tensor:
    """Mean fidelity loss over the pairs i < j of rows in the same group (0 without a pair).

    ``scores``, ``variances`` (N,): the predicted expected scores and their variances. ``mos`` (N,): the
    true scores; ``stds`` (N,): their raters' standard deviations (None: the target is 1 / 0 / 0.5 by
    which MOS is larger). ``groups`` (N,) integer ids: only rows of one group are paired (None: one group).
    ``sigma``: a fixed standard deviation for every row instead of the predicted variances.
    """
    n = scores.shape[0]
    i, j = torch.triu_indices(n, n, offset=1, device=scores.device)
    if groups is not None:
        same = groups[i] == groups[j]
        i, j = i[same], j[same]
    if i.numel() == 0:
        return scores.sum() * 0.0  # no pair: zero, attached to the graph
    dtype = torch.promote_types(scores.dtype, torch.float32)  # bf16 scores in float32; float64 stays
    scores, variances, mos = scores.to(dtype), variances.to(dtype), mos.to(scores.device, dtype)
    if sigma is None:
        spread = (variances[i] + variances[j] + EPS).sqrt()
    else:
        spread = torch.full_like(scores[i], math.sqrt(2.0) * sigma)
    p_hat = normal_cdf((scores[i] - scores[j]) / spread)
    with torch.no_grad():
        if stds is None:
            p = (torch.sign(mos[i] - mos[j]) + 1) / 2  # 1, 0, or 0.5 for equal MOS
        else:
            stds = stds.to(scores.device, dtype)
            p = preference_probability(mos[i], mos[j], stds[i], stds[j])
    loss = 1 - (p_hat * p + EPS).sqrt() - ((1 - p_hat) * (1 - p) + EPS).sqrt()
    return loss.mean()


def gather_rows(rows: torch.Tensor) -> tuple[torch.Tensor, int]:
    """(all ranks' rows in rank order, world size): ``rows`` (B, F) of this rank keep their gradient, the others'
    are detached copies. Micro-batches of different sizes are padded for the collective and cut back."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return rows, 1
    world, rank = dist.get_world_size(), dist.get_rank()
    size = torch.tensor([rows.shape[0]], device=rows.device)
    sizes = [torch.zeros_like(size) for _ in range(world)]
    dist.all_gather(sizes, size)
    sizes = [int(s.item()) for s in sizes]
    longest = max(sizes)
    padded = torch.zeros(longest, rows.shape[1], dtype=rows.dtype, device=rows.device)
    padded[: rows.shape[0]] = rows.detach()
    parts = [torch.zeros_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded)
    parts = [part[:count] for part, count in zip(parts, sizes)]
    parts[rank] = rows  # the local rows with their gradient
    return torch.cat(parts, dim=0), world


def rank_loss(
    scores: torch.Tensor,
    variances: torch.Tensor,
    mos: torch.Tensor,
    stds: Optional[torch.Tensor],
    groups: torch.Tensor,
    settings: RankSettings,
) -> torch.Tensor:
    """The unweighted fidelity loss of a micro-batch's rows (N,), over all ranks' rows when ``settings.gather``."""
    if not settings.use_stds:
        stds = None
    if not settings.gather:
        return fidelity_loss(scores, variances, mos, stds, groups, settings.sigma)
    device, dtype = scores.device, torch.promote_types(scores.dtype, torch.float32)
    columns = [scores, variances, mos, stds if stds is not None else torch.zeros_like(scores), groups]
    columns = [column.to(device, dtype) for column in columns]
    rows, world = gather_rows(torch.stack(columns, dim=1))
    everything = fidelity_loss(rows[:, 0], rows[:, 1], rows[:, 2], rows[:, 3] if stds is not None else None,
                               rows[:, 4].long(), settings.sigma)
    return everything * world


def integer_score_distributions(
    logits: torch.Tensor, targets: torch.Tensor, grid, scores: int = 1
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(probabilities (B, S, C), candidate values (C,) in MOS units, true MOS (B, S)) of integer-label rows.

    ``logits`` (B, K, V) predict the next-token ``targets`` (B, K) (the labelled-position layout of
    ``labelled_logits``), which hold exactly the ``scores`` integers' tokens of each row (``grid.steps`` each).
    The distribution is the first token's over its candidates (see the module docstring for why).
    """
    from ..data.labels import INTEGER_LABELS
    from ..data.labels import IGNORE_INDEX

    targets = targets.to(logits.device)
    labelled = targets != IGNORE_INDEX
    rank = labelled.long().cumsum(dim=1) - 1
    rows = torch.arange(targets.shape[0], device=logits.device)
    first_ids = grid.first_ids.to(logits.device)
    if grid.steps == 1:
        values = torch.tensor(INTEGER_LABELS, dtype=torch.float32, device=logits.device) / 10
    else:
        values = torch.arange(1, first_ids.numel() + 1, dtype=torch.float32, device=logits.device)
    probabilities, mos = [], []
    for k in range(scores):
        at = labelled & (rank == k * grid.steps)
        missing = (at.sum(dim=1) != 1).nonzero().flatten().tolist()
        if missing:
            raise ValueError(f"batch row(s) {missing} hold fewer than {scores} score(s) in their labels")
        position = at.long().argmax(dim=1)
        probabilities.append(torch.softmax(logits[rows, position].float()[:, first_ids], dim=-1))
        true_first = (first_ids == targets[rows, position].unsqueeze(1)).long().argmax(1)
        truth = values[true_first]
        if grid.steps == 2:
            second_ids = grid.second_ids.to(logits.device)
            second = (labelled & (rank == k * grid.steps + 1)).long().argmax(dim=1)
            truth = truth + (second_ids == targets[rows, second].unsqueeze(1)).long().argmax(1).float() / 10
        mos.append(truth)
    return torch.stack(probabilities, dim=1), values, torch.stack(mos, dim=1)
