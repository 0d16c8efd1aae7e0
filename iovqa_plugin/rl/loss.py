"""The GRPO objective as pure tensor functions: group-relative advantages and the clipped, KL-regularised loss.

The formulation is TRL 0.24's ``GRPOTrainer`` (``_generate_and_score_completions`` for the advantages,
``_compute_loss`` for the loss), token-level importance sampling, written here as functions of tensors
because TRL's live inside its trainer's methods (which wire no video inputs):

* advantages: A = r − mean(r of the group); divided by (std + 1e-4) where std is the group's (unbiased)
  reward std (``group``), the batch's (``batch``), or not at all (``none``, Dr. GRPO);
* ratio ρ_t = exp(log π_θ(o_t) − log π_old(o_t)) per completion token (π_old = π_θ detached when each
  generation batch is used for one update, num_iterations = 1);
* per-token loss ℓ_t = −min(ρ_t A, clip(ρ_t, 1 − ε_low, 1 + ε_high) A) + β · KL_t with the k3 estimator
  KL_t = exp(log π_ref − log π_θ) − (log π_ref − log π_θ) − 1;
* reduction by ``loss_type``: ``grpo`` mean over each completion's tokens, then over completions; ``bnpo``
  sum over the micro-batch's tokens / their number; ``dr_grpo`` sum / (completions × max_completion_length);
  ``dapo`` sum / ``normalizer``, the completion tokens of the whole accumulated batch per process (TRL's
  ``num_items_in_batch / num_processes``; the micro-batch's tokens when not given).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

LOSS_TYPES = ("grpo", "dr_grpo", "dapo", "bnpo")
STD_FLOOR = 1e-4  # TRL's: advantages / (std + 1e-4)


def group_advantages(rewards: torch.Tensor, num_generations: int, scale: str = "group"
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """(advantages (B,), each rollout's group reward std (B,)) of rewards (B,) in groups of ``num_generations``
    consecutive rollouts."""
    if rewards.numel() % num_generations:
        raise ValueError(f"{rewards.numel()} rewards do not split into groups of {num_generations}")
    grouped = rewards.view(-1, num_generations)
    advantages = (grouped - grouped.mean(dim=1, keepdim=True)).flatten()
    group_std = grouped.std(dim=1).repeat_interleave(num_generations)
    if scale == "group":
        advantages = advantages / (group_std + STD_FLOOR)
    elif scale == "batch":
        advantages = advantages / (rewards.std() + STD_FLOOR)
    elif scale != "none":
        raise ValueError(f"scale must be group, batch or none, got {scale!r}")
    return advantages, group_std


@dataclass
class LossStats:
    """What the step logs about the loss (detached means over the completion tokens)."""

    kl: Optional[float]
    clip_ratio: float


def grpo_loss(logps: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
              old_logps: Optional[torch.Tensor] = None, ref_logps: Optional[torch.Tensor] = None,
              beta: float = 0.0, epsilon_low: float = 0.2, epsilon_high: Optional[float] = None,
              loss_type: str = "dapo", max_completion_length: Optional[int] = None,
              normalizer: Optional[float] = None) -> tuple[torch.Tensor, LossStats]:
    """The loss of one micro-batch: ``logps`` (B, T) the policy's per-token log-probs of the completions (with
    gradient), ``advantages`` (B,), ``mask`` (B, T) 1 on completion tokens; ``old_logps`` (B, T) the sampling
    policy's (None: ``logps`` detached), ``ref_logps`` (B, T) the reference's (needed when beta > 0)."""
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"loss_type must be one of {LOSS_TYPES}, got {loss_type!r}")
    mask = mask.to(logps.dtype)
    epsilon_high = epsilon_low if epsilon_high is None else epsilon_high
    old = logps.detach() if old_logps is None else old_logps
    ratio = torch.exp(logps - old)
    clipped = torch.clamp(ratio, 1 - epsilon_low, 1 + epsilon_high)
    a = advantages.to(logps.dtype).unsqueeze(1)
    per_token = -torch.min(ratio * a, clipped * a)
    kl = None
    if beta != 0.0:
        if ref_logps is None:
            raise ValueError("beta > 0 needs the reference log-probs")
        delta = ref_logps - logps
        kl = torch.exp(delta) - delta - 1
        per_token = per_token + beta * kl
    tokens = mask.sum().clamp(min=1.0)
    if loss_type == "grpo":
        loss = ((per_token * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).mean()
    elif loss_type == "bnpo":
        loss = (per_token * mask).sum() / tokens
    elif loss_type == "dr_grpo":
        if max_completion_length is None:
            raise ValueError("dr_grpo needs max_completion_length")
        loss = (per_token * mask).sum() / (per_token.shape[0] * max_completion_length)
    else:  # dapo
        loss = (per_token * mask).sum() / (tokens if normalizer is None else normalizer)
    clipped_away = ((ratio < 1 - epsilon_low) & (a < 0)) | ((ratio > 1 + epsilon_high) & (a > 0))
    stats = LossStats(
        kl=None if kl is None else float((kl.detach() * mask).sum() / tokens),
        clip_ratio=float((clipped_away.to(mask.dtype) * mask).sum() / tokens),
    )
    return loss, stats
