"""The label formats (``iovqa_label_format``): a registry, like LLaMA-Factory's ``TEMPLATES``.

A :class:`LabelFormat` holds everything that follows from how a MOS is written as the answer trained on: the
MOS -> label conversion, the reader of a model's answer, the prompt's answer wording, the rule greedy decoding
stops at, which tokens the loss mask keeps, and how expected decoding reads the score's distribution. The
config's choices, the prompt, the mask, the decoders and the readers of prediction files look the format up
here; adding a format is one :func:`register_label_format` call.

The three formats (see ``labels`` for the roundings):

* ``integer``: the paper's label, the MOS rounded to one decimal and x10 ("37"), labels 10..50.
* ``decimal``: the rounded MOS as written ("3.7"), the paper's ablation.
* ``level``: the nearest level word ("good", Q-Align); it reads back as its level 1..5.

Standard library only: the recipe's keys are checked against this registry before anything heavy loads.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Callable, Optional

from ..registry import Registry
from .labels import (
    INTEGER_MAX, INTEGER_MIN, LEVEL_WORDS, MOS_MAX, MOS_MIN, NO_LEVEL_WORD, NO_NUMBER, OUT_OF_RANGE, mos_to_integer,
    mos_to_level, round_mos,
)

Answer = tuple[Optional[float], Optional[str]]  # (MOS, None), or (None, the reason the answer gives no MOS)

MASKS = ("digits", "words")  # the mask keeps the first run(s) of number tokens / the level word's token path
EXPECTED = ("grid", "levels")  # expected decoding over the integer grid 10..50 / over the five level words


@dataclass(frozen=True)
class LabelFormat:
    """One way of writing the MOS as the answer trained on."""

    name: str
    help: str  # the format's part of iovqa_label_format's help
    to_label: Callable[[Any], str]  # a MOS cell -> the response text ("37"); LabelError for a bad MOS
    to_mos: Callable[[str], float]  # a label as written -> its MOS ("37" -> 3.7)
    read: Callable[[str], Answer]  # a model's answer -> (MOS, None) or (None, reason)
    answer_format: str  # the prompt's {answer_format}
    complete: re.Pattern  # an answer holding a complete score: greedy decoding stops there
    answer_kind: str = "number"  # the default prompt's "Output the <kind> only"
    mask: str = "digits"  # which tokens the loss mask keeps (MASKS)
    # digits mask: token texts besides digits that continue a score's run of number tokens (decimal: ".")
    number_marks: tuple[str, ...] = ()
    score_digits: int = 2  # digits mask: the digits of one complete score
    # digits mask: scores as the mask keeps them (a middle one and the ends), which the template check encodes
    probes: tuple[str, ...] = ()
    expected: Optional[str] = None  # how expected decoding reads the score's distribution (EXPECTED); None: greedy only

    def __post_init__(self):
        if self.mask not in MASKS:
            raise ValueError(f"label format {self.name!r}: mask must be one of {MASKS}, got {self.mask!r}")
        if self.expected is not None and self.expected not in EXPECTED:
            raise ValueError(f"label format {self.name!r}: expected must be one of {EXPECTED} or None, "
                             f"got {self.expected!r}")

    @property
    def grid(self) -> bool:
        """Answers on the integer grid 10..50: the score's distribution is read off the digit tokens' logits
        (expected decoding, in-training SRCC/PLCC, the head's MOS target, the ranking loss)."""
        return self.expected == "grid"

    @property
    def words(self) -> bool:
        """Level-word answers: the mask keeps the word's token path, expected decoding reads the level tokens."""
        return self.mask == "words"


LABEL_FORMATS: Registry[LabelFormat] = Registry("label format", "label_format")
register_label_format = LABEL_FORMATS.register
get_label_format = LABEL_FORMATS.lookup


_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")  # the sign is kept: "-12" is out of range, not 1.2
_LEVEL = re.compile(r"\b(" + "|".join(LEVEL_WORDS) + r")\b", re.IGNORECASE)


def read_number(text: str, to_mos: Callable[[Decimal], Optional[float]], grid: str) -> Answer:
    """The first number in ``text`` as a MOS (``to_mos``: None when the number is off the label grid, described
    by ``grid`` in the reason)."""
    match = _NUMBER.search(text or "")
    if match is None:
        return None, f"{NO_NUMBER} in answer {text!r}"
    mos = to_mos(Decimal(match.group(0)))
    if mos is None:
        return None, f"{OUT_OF_RANGE}: answer {text!r} reads {match.group(0)}, the labels are {grid}"
    return mos, None


def _integer_mos(number: Decimal) -> Optional[float]:
    on_grid = number == number.to_integral_value() and INTEGER_MIN <= number <= INTEGER_MAX
    return float(number / 10) if on_grid else None


def _decimal_mos(number: Decimal) -> Optional[float]:
    return float(number) if MOS_MIN <= number <= MOS_MAX else None


def _read_level(text: str) -> Answer:
    found = _LEVEL.search(text or "")
    if found is None:
        return None, f"{NO_LEVEL_WORD} in answer {text!r}"
    return float(LEVEL_WORDS.index(found.group(1).lower()) + 1), None


register_label_format(LabelFormat(
    name="integer",
    help="MOS rounded to one decimal and x10, e.g. 3.666 -> '37' (the paper).",
    to_label=lambda value: str(mos_to_integer(value)),
    to_mos=lambda label: float(Decimal(label.strip()) / 10),
    read=lambda text: read_number(text, _integer_mos, f"integers {INTEGER_MIN}..{INTEGER_MAX}"),
    answer_format="a single integer from 10 (worst) to 50 (best)",
    # the label's two digits: the digit-only loss trains these tokens and nothing after them
    complete=re.compile(r"\d\d"),
    probes=("37", "10", "50"),
    expected="grid",
))
register_label_format(LabelFormat(
    name="decimal",
    help="the rounded MOS as written, e.g. '3.7' (the paper's ablation).",
    to_label=lambda value: str(round_mos(value)),
    to_mos=lambda label: float(Decimal(label.strip())),
    read=lambda text: read_number(text, _decimal_mos, f"{MOS_MIN}.0..{MOS_MAX}.0"),
    answer_format="a single number with one decimal from 1.0 (worst) to 5.0 (best)",
    complete=re.compile(r"\d\.\d"),
    number_marks=(".",),
    probes=("3.7", "1.0", "5.0"),
))
register_label_format(LabelFormat(
    name="level",
    help="the nearest level word (Q-Align), round(MOS) half up: 1 bad, 2 poor, 3 fair, 4 good, 5 excellent "
    "(3.666 -> 'good'); scored as Q-Align does, softmax over the five level tokens dotted with 1..5.",
    to_label=lambda value: LEVEL_WORDS[mos_to_level(value) - 1],
    to_mos=lambda label: float(LEVEL_WORDS.index(label.strip().lower()) + 1),
    read=_read_level,  # the first level word (any case, a whole word) is its level 1..5
    answer_format="a single word, one of bad, poor, fair, good, excellent (worst to best)",
    complete=_LEVEL,
    answer_kind="word",
    mask="words",
    expected="levels",
))


def mos_to_label(value: Any, label_format: str = "integer") -> str:
    """The response text trained on: "37" (integer), "3.7" (decimal) or "good" (level)."""
    return get_label_format(label_format).to_label(value)


def label_to_mos(label: str, label_format: str = "integer") -> float:
    """Inverse of :func:`mos_to_label` ("37" -> 3.7, "good" -> 4.0)."""
    return get_label_format(label_format).to_mos(label)


def read_answer(text: str, label_format: str = "integer") -> Answer:
    """(MOS, None) from a model's answer, or (None, reason) when it gives no MOS.

    The first number in ``text`` must be on the label grid of the format: an integer 10..50 (divided by 10) or a
    decimal 1.0..5.0. Anything else ("100", "9", "55", "-12", "37.5" for integer labels) is out of range and never
    becomes a MOS; text with no number gives no MOS either. The reason starts with ``OUT_OF_RANGE``,
    ``NO_NUMBER`` or (level answers) ``NO_LEVEL_WORD`` and quotes the text. Level answers: the first level word
    (any case, a whole word) is its level 1..5.
    """
    return get_label_format(label_format).read(text)


def parse_score(text: str, label_format: str = "integer") -> Optional[float]:
    """MOS from a model's answer, or None (no number, or a number off the label grid): see :func:`read_answer`."""
    return read_answer(text, label_format)[0]


def label_format_help() -> str:
    """iovqa_label_format's help: each registered format's own."""
    return "Response label. " + " ".join(f"`{f.name}`: {f.help}" for f in LABEL_FORMATS.values())
