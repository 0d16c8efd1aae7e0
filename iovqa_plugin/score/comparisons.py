"""Scoring comparisons: P(A) from the choice-token logits, and the greedy choice.

A comparison sample is encoded as in training (both media, videos or images, in prompt order, and the
comparison prompt), without its answer. At the answer position the softmax over the choice words' distinguishing tokens
(``A``, ``B``; ``tie`` too when ties are answered) gives P(A), P(B) (and P(tie)), normalised over the
choice tokens so they sum to 1; ``choice`` is the most probable choice word, which is the greedy answer
whenever the model's top token is a choice token at all; ``choice_mass`` says how much of the whole
next-token distribution the choice tokens hold (as ``integer_mass`` does for scores).

The prediction file has one row per comparison: ``pair`` (its identity), ``video_a``, ``video_b``, ``p_a``,
``p_b``, ``p_tie`` (empty unless ties are answered), ``choice``, ``choice_mass``, ``error``. The compared
pairs and their human preference go to a pairs file beside it (``<out stem>_pairs.csv``: video_a, video_b,
preference), which ``iovqa eval --pairs`` reads with the prediction file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Iterator, Optional

from ..data.pairs import PairSample
from . import decoding

COLUMNS = ["pair", "video_a", "video_b", "p_a", "p_b", "p_tie", "choice", "choice_mass", "error"]
PREFERENCE_LABELS = {1: "A", -1: "B", 0: "tie"}


@dataclass
class ComparisonResult:
    pair: str
    video_a: str
    video_b: str
    probabilities: Optional[list[float]] = None  # over the choice words, in ChoiceWords.answers order
    choice: Optional[str] = None
    choice_mass: Optional[float] = None
    error: Optional[str] = None

    def row(self) -> dict[str, Any]:
        p = list(self.probabilities or []) + [None] * 3
        return {"pair": self.pair, "video_a": self.video_a, "video_b": self.video_b, "p_a": p[0], "p_b": p[1],
                "p_tie": p[2], "choice": self.choice, "choice_mass": self.choice_mass, "error": self.error}


class ComparisonScorer:
    """A loaded scorer (``scorer.Scorer``) asked which of two media is better."""

    def __init__(self, scorer: Any):
        self.scorer = scorer
        self.words = scorer.iovqa_args.choices.answers
        self.tokens = scorer.loaded.level_tokens(self.words)

    def encode(self, sample: PairSample) -> dict[str, Any]:
        images, videos = sample.media_lists()
        return self.scorer.loaded.encode_media(sample.prompt, images, videos, prefix=list(self.tokens.lead))

    def score(self, samples: list[PairSample], batch_size: int = 4) -> Iterator[ComparisonResult]:
        """A result per sample, in order; a batch that fails is scored one by one, failures become error rows."""
        for start in range(0, len(samples), batch_size):
            yield from self._score_batch(samples[start: start + batch_size])

    def _score_batch(self, samples: list[PairSample]) -> Iterator[ComparisonResult]:
        try:
            loaded = self.scorer.loaded
            batch = loaded.batch([self.encode(s) for s in samples])
            probabilities, mass = decoding.level_distribution(loaded.model, batch, self.tokens)
        except Exception as err:  # one bad sample must not stop the run
            if len(samples) == 1:
                sample = samples[0]
                yield ComparisonResult(sample.key, *sample.media, error=f"{type(err).__name__}: {err}")
                return
            for sample in samples:
                yield from self._score_batch([sample])
            return
        for i, sample in enumerate(samples):
            p = probabilities[i].tolist()
            yield ComparisonResult(sample.key, *sample.media, probabilities=p,
                                   choice=self.words[max(range(len(p)), key=p.__getitem__)],
                                   choice_mass=float(mass[i]))


def pairs_file_of(out: str) -> str:
    """Where the compared pairs and their human preference are written, beside the prediction file."""
    return os.path.splitext(out)[0] + "_pairs.csv"


def write_comparisons(results: list[ComparisonResult], samples: list[PairSample], out: str) -> str:
    """The prediction file and the pairs file beside it; returns the pairs file's path."""
    import pandas as pd

    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    pd.DataFrame([r.row() for r in results], columns=COLUMNS).to_csv(out, index=False)
    pairs = pairs_file_of(out)
    pd.DataFrame([{"pair": s.key, "video_a": s.media[0], "video_b": s.media[1],
                   "preference": PREFERENCE_LABELS[s.human]} for s in samples]).to_csv(pairs, index=False)
    return pairs
