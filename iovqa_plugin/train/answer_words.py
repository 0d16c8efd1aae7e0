"""The yes/no answer mask of quality questions mixed into a scoring run (VQ-Insight's "Is the motion pattern
reasonable?" with a yes or no answer).

A question sample whose whole answer is one of :data:`YES_NO_WORDS` (in any
of :data:`CASES`, optionally ending in a period) trains on the answer word's
tokens only, as a score trains on its digits: the template's end of turn and
the period are masked. The token paths come from the template's own
rendering of each answer (see ``patches.score_position.render_answer``), as
the level words' do. A row whose labels are not one of those answers is
left as it is (a free-text answer keeps LLaMA-Factory's full-answer loss).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from ..data.labels import IGNORE_INDEX

YES_NO_WORDS = ("yes", "no")
CASES = (str.lower, str.capitalize, str.upper)
ENDINGS = ("", ".")


def answer_variants(words: Sequence[str] = YES_NO_WORDS) -> list[tuple[str, str]]:
    """(answer as written, its word) of every accepted way of writing each word."""
    return [(case(word) + ending, case(word)) for word in words for case in CASES for ending in ENDINGS]


@dataclass(frozen=True)
class AnswerWords:
    """Label token paths of the accepted answers: the whole labelled span, and the part that is trained."""

    spans: tuple[tuple[int, ...], ...]  # an answer's labelled tokens as the template renders them (end of turn too)
    kept: tuple[tuple[int, ...], ...]  # which of those tokens are the word (positions in the span)

    @classmethod
    def from_template(cls, render: Callable[[str], list[int]], words: Sequence[str] = YES_NO_WORDS) -> "AnswerWords":
        """``render(answer)``: the answer's label tokens as training renders them (lead and end of turn included).

        The word's tokens are those of the rendering of the bare word less what the empty answer renders at both
        ends (a reasoning template's lead, the end of turn); with a period, the same tokens where the period
        did not merge into the word, else the whole answer."""
        empty = render("")
        spans, kept = [], []
        for answer, word in answer_variants(words):
            span, bare = render(answer), render(word)
            lead = _common_prefix(bare, empty)
            end = len(bare) - _common_prefix(bare[::-1], empty[::-1][: len(empty) - lead])
            word_ids = bare[lead:end]
            if span[lead: lead + len(word_ids)] != word_ids:  # the period merged into the word's last token
                word_ids = span[lead: len(span) - (len(bare) - end)]
            spans.append(tuple(span))
            kept.append(tuple(range(lead, lead + len(word_ids))))
        return cls(tuple(spans), tuple(kept))

    def mask(self, labels: torch.Tensor) -> tuple[torch.Tensor, list[bool]]:
        """(labels with a yes/no answer's rows cut to the word's tokens, which rows were such an answer)."""
        out, found = labels.clone(), []
        for row in range(labels.shape[0]):
            positions = (labels[row] != IGNORE_INDEX).nonzero().flatten()
            span = tuple(labels[row, positions].tolist())
            match = next((kept for known, kept in zip(self.spans, self.kept) if known == span), None)
            found.append(match is not None)
            if match is not None:
                dropped = [p for i, p in enumerate(positions.tolist()) if i not in match]
                out[row, dropped] = IGNORE_INDEX
        return out, found


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n
