"""The scoring modes (``iovqa score --mode``): a registry.

A :class:`ScoringMode` says which decoders run (greedy answer, expected score, the softmax-regression head) and
which of their scores becomes the prediction file's ``pred_mos``. The command's choices, the scorer and the
result row look the mode up here; adding a mode is one :func:`register_scoring_mode` call.

Standard library only: the ``--nproc`` launcher reads it without starting torch.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..registry import Registry

MAX_NEW_TOKENS = 6  # greedy answers' length limit (a score is 2-3 tokens; greedy stops at a complete one sooner)
SCORES = ("greedy_mos", "expected_mos", "head_mos", "sampled_mos")  # the result fields a mode's pred_mos can be


@dataclass(frozen=True)
class Sampling:
    """``--mode sampled``: n answers per video sampled at a temperature (VisualQuality-R1 scores the mean of
    its sampled answers), seeded per video so that a video's answers do not depend on its batch or process."""

    samples: int = 8
    temperature: float = 1.0
    seed: int = 0

    def __post_init__(self):
        if isinstance(self.samples, bool) or not isinstance(self.samples, int) or self.samples < 1:
            raise ValueError(f"--samples must be an integer >= 1, got {self.samples!r}")
        if not 0 < self.temperature < float("inf"):
            raise ValueError(f"--temperature must be > 0, got {self.temperature!r}")


@dataclass(frozen=True)
class ScoringMode:
    name: str
    greedy: bool = False  # temperature-0 answers, read by the label format
    expected: bool = False  # the expected score over the label format's grid or level words
    head: bool = False  # the softmax-regression head's expected grade (models trained with iovqa_head)
    sampled: bool = False  # the mean of n answers sampled at a temperature (see Sampling)
    score: str = "expected_mos"  # the field that becomes pred_mos
    # an answer without a MOS is the row's error (not only its greedy_error): pred_mos is greedy's
    greedy_error_fails: bool = False

    def __post_init__(self):
        if self.score not in SCORES:
            raise ValueError(f"scoring mode {self.name!r}: score must be one of {SCORES}, got {self.score!r}")
        if self.head and (self.greedy or self.expected or self.sampled):
            raise ValueError(f"scoring mode {self.name!r}: the head is scored alone")


SCORING_MODES: Registry[ScoringMode] = Registry("scoring mode", "mode")
register_scoring_mode = SCORING_MODES.register
get_scoring_mode = SCORING_MODES.lookup


def check_mode(mode: str, iovqa_args) -> None:
    """Refuse a scoring mode this run's model cannot be scored with (before any model is loaded)."""
    if get_scoring_mode(mode).sampled and iovqa_args.multi_dimension:
        raise ValueError("--mode sampled scores one MOS per video; runs with several quality dimensions "
                         "(iovqa_dimensions) are scored with greedy, expected or both")


register_scoring_mode(ScoringMode("expected", expected=True))
register_scoring_mode(ScoringMode("greedy", greedy=True, score="greedy_mos", greedy_error_fails=True))
register_scoring_mode(ScoringMode("both", greedy=True, expected=True))
register_scoring_mode(ScoringMode("head", head=True, score="head_mos"))
register_scoring_mode(ScoringMode("sampled", sampled=True, score="sampled_mos"))
