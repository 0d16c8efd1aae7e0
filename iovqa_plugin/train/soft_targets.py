"""Soft targets over answer words: level words (DeQA-Score: a Gaussian around the MOS over the five levels), and a
comparison's choice words (Thurstone: the probability that A is better).

With hard level labels a MOS of 3.4 and one of 2.6 both train the one-hot
"fair": the position of the MOS inside its level is lost. With
``iovqa_level_targets: soft`` the loss at the level token's position is the
cross-entropy against a distribution over the five level tokens instead,

    t_k = softmax_k( -(k - MOS)^2 / (2 sigma^2) ),  k = 1..5 (bad..excellent),
    loss = - sum_k t_k * log p(level token k)

(the Gaussian's density at each level, renormalised over the five levels;
the head's ``soft_ce`` uses the same target). ``p`` is the model's softmax
over the whole vocabulary at that position, as in the hard loss, so the
loss also keeps the probability on the level tokens, and as sigma -> 0 it
becomes the hard one-hot loss. The other labelled tokens of the answer (a
shared leading token, the rest of a multi-token word such as "ex" + "cellent")
keep their ordinary cross-entropy; the loss is the mean over labelled tokens,
as the stock causal-LM loss.

sigma per row: the row's rater standard deviation when the annotations have
one (``iovqa_std_column``, as DeQA-Score does), else ``iovqa_level_sigma``.
A standard deviation of 0 (every rater agreed) gives the one-hot nearest
level. Default sigma 0.5, half the distance between two levels: a MOS on a
level puts 79% on it and 11% on each neighbour; a MOS between two levels
splits between them (3.5 -> 49% fair, 49% good), and the target's mean
follows the MOS inside a level (3.25 -> 3.23), which the one-hot target does
not (3.25 -> 3). A much smaller sigma snaps back to the nearest level
(sigma 0.25: 3.25 -> 3.02); a larger one flattens the target and pulls its
mean toward the middle of the scale (sigma 1: 4.5 -> 4.22 and 1.0 -> 1.52,
against 4.49 and 1.12 at sigma 0.5).

Comparisons (``iovqa_pair_soft_targets``): a pair whose data has both MOS and
both raters' stds trains its choice token against

    t = [p, 1 - p] (and 0 on the tie word when ties are answered),
    p = Phi((mos_a - mos_b) / sqrt(std_a^2 + std_b^2))   (``rank_loss.preference_probability``),

with the same loss as the level words' (:func:`soft_level_loss` on the rows that
have such a target; the other rows of the batch, scores and hard choices, keep
their one-hot cross-entropy). Two clearly different MOS with small stds give
p near 1 or 0, the hard choice; as the stds go to 0 the target becomes it.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import torch

from ..data.labels import IGNORE_INDEX, LEVELS

MOS_KEY = "iovqa_mos"  # the batch key of each row's MOS (the head's target, the level runs' metric truth)
SIGMA_KEY = "iovqa_sigma"  # the batch key of each row's soft-target sigma
CHOICE_KEY = "iovqa_choice_target"  # the batch key of each row's soft choice target (B, answers); NaN rows: hard
_SIGMA_FLOOR = 1e-3  # keeps a 0 standard deviation finite: the target is then the one-hot nearest level


def gaussian_levels(mos: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
    """(B, 5) a Gaussian around each MOS with its sigma (a number or one per row), discretised on 1..5."""
    levels = torch.tensor(LEVELS, device=mos.device, dtype=torch.float32)
    sigma = torch.as_tensor(sigma, dtype=torch.float32, device=mos.device).clamp(min=_SIGMA_FLOOR)
    if sigma.dim() == 1:
        sigma = sigma.unsqueeze(-1)
    return torch.softmax(-0.5 * ((levels - mos.float().unsqueeze(-1)) / sigma) ** 2, dim=-1)


def row_sigmas(stds: Sequence[Optional[float]], default: float) -> torch.Tensor:
    """Each row's sigma: its standard deviation when the data has one, else the recipe's ``default``."""
    return torch.tensor([default if std is None else std for std in stds], dtype=torch.float32)


def choice_targets(p_a: Sequence[Optional[float]], answers: int) -> torch.Tensor:
    """(B, answers) each row's target over the choice words, [p, 1 - p, (0)]; NaN for a row without one."""
    rows = [[float("nan")] * answers if p is None else [p, 1 - p] + [0.0] * (answers - 2) for p in p_a]
    return torch.tensor(rows, dtype=torch.float32).reshape(len(rows), answers)


def level_positions(targets: torch.Tensor, prefix: int) -> torch.Tensor:
    """(B, K) True at each row's level token: its labelled target number ``prefix`` (0: the first).

    ``targets`` are next-token targets (position t predicts targets[t]) holding only the level words'
    tokens, as the level mask leaves them; every row must hold one.
    """
    labelled = targets != IGNORE_INDEX
    at = labelled & (labelled.long().cumsum(dim=1) - 1 == prefix)
    missing = (at.sum(dim=1) != 1).nonzero().flatten().tolist()
    if missing:
        raise ValueError(f"batch row(s) {missing} hold no level token in their labels")
    return at


def level_logits(logits: torch.Tensor, targets: torch.Tensor, prefix: int) -> torch.Tensor:
    """(B, V) the logits that predict each row's level token (``logits`` (B, K, V) aligned with ``targets``)."""
    at = level_positions(targets.to(logits.device), prefix)
    return logits[at]  # one position per row, in row order


def soft_level_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    level_ids: torch.Tensor,
    prefix: int,
    target: torch.Tensor,
    num_items_in_batch: Optional[Any] = None,
    rows: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Cross-entropy with the level token's one-hot replaced by ``target`` (B, n) over ``level_ids`` (n words:
    the levels, or a comparison's choice words).

    ``logits`` (B, K, V) predict ``targets`` (B, K) (IGNORE_INDEX where nothing is trained). ``rows`` (B,) bool:
    the rows with a soft target (None: all); the others keep the one-hot loss everywhere. The sum over
    labelled targets is divided by ``num_items_in_batch`` when given, else by their count (the mean), as
    ``train.labelled_logits.causal_lm_loss``.
    """
    targets = targets.to(logits.device)
    log_p = torch.log_softmax(logits.float(), dim=-1)
    labelled = targets != IGNORE_INDEX
    hard = -log_p.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    if rows is None:
        at = level_positions(targets, prefix)
    else:
        rows = rows.to(targets.device)
        at = torch.zeros_like(labelled)
        at[rows] = level_positions(targets[rows], prefix)
        target = target[rows.to(target.device)]
    soft = -(target.to(log_p.device).float() * log_p[at][:, level_ids.to(log_p.device)]).sum(-1)
    per_token = torch.where(labelled, hard, torch.zeros_like(hard))
    per_token = per_token.masked_scatter(at, soft)
    total = per_token.sum()
    if num_items_in_batch is None:
        return total / labelled.sum()
    if torch.is_tensor(num_items_in_batch):
        num_items_in_batch = num_items_in_batch.to(total.device)
    return total / num_items_in_batch

