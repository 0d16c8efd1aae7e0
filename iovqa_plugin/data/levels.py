"""The five level words in token space, and Q-Align's expected score over them.

A level answer ("bad" .. "excellent", levels 1..5) is one token or several,
depending on the tokenizer and on how the chat template writes the answer:
Qwen's ``qwen2_vl`` template puts the answer right after
``<|im_start|>assistant\\n``, with no leading space, and Qwen's vocabulary
writes "bad", "fair", "good" as one token each but "poor" as "po" + "or" and
"excellent" as "ex" + "cellent". So the token paths are taken from the
template's own encoding of each answer (the adapter renders them), not from
a guess such as " good".

From the five answers' token ids the part every answer shares at the end
(the template's ``<|im_end|>``, newline) is dropped; the paths that remain
are the level words. Their first *distinguishing* position is the first
position where the paths differ (0 unless the template or tokenizer puts a
shared token, such as a lone space marker, before every word); at that
position each level must have its own token, else the expected score is not
defined and :class:`LevelTokensError` names the tokenizer and the levels
that share a token. Everything before it is the same for every level, so the
distribution at that position is conditioned on nothing that gives the
answer away.

Expected score (Q-Align): the softmax over the five level tokens' logits at
that position, dotted with the levels 1..5: a MOS on the 1..5 scale.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch

from .labels import LEVEL_WORDS, LEVELS


class LevelTokensError(ValueError):
    """Level words whose token paths do not give one distinguishing token per level."""


@dataclass(frozen=True)
class LevelTokens:
    """Token paths of the five level words, as the chat template writes the answer."""

    paths: tuple[tuple[int, ...], ...]  # bad..excellent, without the template's common ending
    prefix: int  # leading tokens every path shares; the level tokens come right after them
    # What the template writes before every answer (a reasoning template's empty think block): never trained,
    # and the end of the scoring prompt.
    lead: tuple[int, ...] = ()

    @classmethod
    def from_answers(cls, answers: Sequence[Sequence[int]], tokenizer_name: str, decode: Any = None,
                     lead: Sequence[int] = ()) -> "LevelTokens":
        """From the encoded answers "bad".."excellent" (template ending included, common to all five), each
        starting with ``lead``, the template's own tokens before any answer.

        ``decode`` (token id -> text) only makes error messages readable.
        """
        lead = list(lead)
        if any(list(answer[: len(lead)]) != lead for answer in answers):
            raise ValueError("every encoded answer must start with the template's lead tokens")
        paths = [list(answer[len(lead):]) for answer in answers]
        if len(paths) != len(LEVEL_WORDS):
            raise ValueError(f"expected {len(LEVEL_WORDS)} encoded answers, got {len(paths)}")
        while all(len(p) > 1 for p in paths) and len({p[-1] for p in paths}) == 1:
            for path in paths:
                path.pop()
        prefix = 0
        while all(len(p) > prefix for p in paths) and len({p[prefix] for p in paths}) == 1:
            prefix += 1
        short = [w for w, p in zip(LEVEL_WORDS, paths) if len(p) <= prefix]
        if short:
            raise LevelTokensError(
                f"tokenizer {tokenizer_name!r}: the level word(s) {short} have no token of their own after the "
                f"{prefix} token(s) every level answer starts with; level labels need another tokenizer"
            )
        by_token: dict[int, list[str]] = {}
        for word, path in zip(LEVEL_WORDS, paths):
            by_token.setdefault(path[prefix], []).append(word)
        shared = {token: words for token, words in by_token.items() if len(words) > 1}
        if shared:
            shown = "; ".join(
                f"{words} all start with token {token}" + (f" ({decode(token)!r})" if decode else "")
                for token, words in shared.items()
            )
            raise LevelTokensError(
                f"tokenizer {tokenizer_name!r} writes the level words {list(LEVEL_WORDS)} with a shared first "
                f"distinguishing token ({shown}): Q-Align's expected score over the level tokens is not defined "
                "for it; use integer labels"
            )
        return cls(tuple(tuple(p) for p in paths), prefix, tuple(lead))

    @property
    def ids(self) -> torch.Tensor:
        """(5,) the distinguishing token of each level, bad..excellent."""
        return torch.tensor([path[self.prefix] for path in self.paths], dtype=torch.long)

    @property
    def shared_prefix(self) -> tuple[int, ...]:
        """The tokens every level answer starts with (usually none)."""
        return self.paths[0][: self.prefix]

    @property
    def longest(self) -> int:
        """Tokens of the longest level answer."""
        return max(len(path) for path in self.paths)

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """(B, 5) softmax over the five level tokens' logits (B, V) at the distinguishing position."""
        return torch.softmax(logits.float()[:, self.ids.to(logits.device)], dim=-1)

    def mass(self, logits: torch.Tensor) -> torch.Tensor:
        """(B,) the probability the model puts on the five level tokens at all (before renormalising)."""
        return torch.softmax(logits.float(), dim=-1)[:, self.ids.to(logits.device)].sum(-1)


def expected_level(probabilities: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(expected MOS, standard deviation in MOS units) of (B, 5) level probabilities, levels 1..5."""
    levels = torch.tensor(LEVELS, dtype=probabilities.dtype, device=probabilities.device)
    mean = (probabilities * levels).sum(-1)
    std = (probabilities * (levels - mean.unsqueeze(-1)) ** 2).sum(-1).clamp(min=0).sqrt()
    return mean, std
