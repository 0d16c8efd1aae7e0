"""The integer score grid 10..50 in token space, and distributions over it.

A two-digit score is one or two tokens depending on the tokenizer: Qwen
splits digits ("3", "7"), Llama-3 style tokenizers group them ("37"). The
grid maps each score to its token path so that the probability of every
integer, p(n) = P(first token) * P(second token | first), and from it the
expected score and its spread, can be computed from next-token
distributions without free-running generation.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .labels import INTEGER_LABELS


@dataclass
class ScoreGrid:
    """Token paths of the integers 10..50 for one tokenizer."""

    steps: int  # 1: every integer is one token; 2: first digit, then second digit
    first_ids: torch.Tensor  # steps 1: (41,) ids of the integers; steps 2: (5,) ids of "1".."5"
    second_ids: torch.Tensor  # steps 2: (10,) ids of "0".."9"; steps 1: empty

    @classmethod
    def from_tokenizer(cls, tokenizer) -> "ScoreGrid":
        paths = [tokenizer.encode(str(v), add_special_tokens=False) for v in INTEGER_LABELS]
        if all(len(p) == 1 for p in paths):
            return cls(1, torch.tensor([p[0] for p in paths]), torch.tensor([], dtype=torch.long))
        if all(len(p) == 2 for p in paths):
            first = {v // 10: p[0] for v, p in zip(INTEGER_LABELS, paths)}
            second = {v % 10: p[1] for v, p in zip(INTEGER_LABELS, paths)}
            consistent = all(p == [first[v // 10], second[v % 10]] for v, p in zip(INTEGER_LABELS, paths))
            if consistent and len(second) == 10:
                return cls(2, torch.tensor([first[d] for d in range(1, 6)]), torch.tensor([second[d] for d in range(10)]))
        raise ValueError(
            "the tokenizer writes the integers 10..50 neither as one token each nor as one token per digit; "
            "expected-score decoding is not defined for it (use greedy decoding)"
        )

    def value(self, tokens: list[int]) -> int | None:
        """The integer 10..50 a token path writes, None when it is off the grid (a token that is no digit, 51..59)."""
        first_ids, second_ids = self.first_ids.tolist(), self.second_ids.tolist()
        if len(tokens) != self.steps or tokens[0] not in first_ids:
            return None
        first = first_ids.index(tokens[0])
        if self.steps == 1:
            return INTEGER_LABELS[first]
        if tokens[1] not in second_ids:
            return None
        value = (first + 1) * 10 + second_ids.index(tokens[1])
        return value if value in INTEGER_LABELS else None

    def probabilities(self, first_logits: torch.Tensor, second_logits: torch.Tensor | None = None) -> torch.Tensor:
        """p(n) for n = 10..50 (rows sum to 1), from next-token logits.

        ``first_logits``: (B, V) at the answer's first position. ``second_logits``:
        (B, 5, V), the logits after each first digit 1..5 (two-step grids only).
        """
        first = torch.log_softmax(first_logits.float(), dim=-1)[:, self.first_ids.to(first_logits.device)]
        if self.steps == 1:
            joint = first
        else:
            second = torch.log_softmax(second_logits.float(), dim=-1)[..., self.second_ids.to(first_logits.device)]
            joint = (first.unsqueeze(-1) + second).flatten(1)  # (B, 50): 10..59
            joint = joint[:, : len(INTEGER_LABELS)]  # 10..50: the first digit 5 only takes 0
        return torch.softmax(joint, dim=-1)

    def mass(self, first_logits: torch.Tensor, second_logits: torch.Tensor | None = None) -> torch.Tensor:
        """Probability the model puts on valid integers at all (before renormalising)."""
        first = torch.softmax(first_logits.float(), dim=-1)[:, self.first_ids.to(first_logits.device)]
        if self.steps == 1:
            return first.sum(-1)
        second = torch.softmax(second_logits.float(), dim=-1)[..., self.second_ids.to(first_logits.device)]
        joint = (first.unsqueeze(-1) * second).flatten(1)[:, : len(INTEGER_LABELS)]
        return joint.sum(-1)


def expected_mos(probabilities: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(expected MOS, standard deviation in MOS units) of p(n) over 10..50."""
    values = torch.tensor(INTEGER_LABELS, dtype=probabilities.dtype, device=probabilities.device) / 10
    mean = (probabilities * values).sum(-1)
    std = ((probabilities * (values - mean.unsqueeze(-1)) ** 2).sum(-1)).clamp(min=0).sqrt()
    return mean, std
