"""MOS <-> response label.

The paper's label: keep one decimal of the Overall MOS, multiply by 10, use
the integer (3.666 -> 3.7 -> "37"); valid MOS is [1, 5], so labels are 10..50.

Level-word labels (``level``, as Q-Align answers): the MOS rounded to the
nearest whole level, 1 bad, 2 poor, 3 fair, 4 good, 5 excellent. On MOS in
[1, 5] that is Q-Align's equal-width binning of the scale into five bins
centred on the levels: level = round(MOS), half up on the exact decimal
(2.5 -> 3 fair, 2.49 -> 2 poor, 4.5 -> 5 excellent). A level answer reads
back as its level (MOS 1..5), on the scale of the other formats.

Rounding is decimal, half up, applied to the number as written: a float is
read through its shortest ``repr`` (2.65 is "2.65", not 2.64999...), so
2.65 -> 2.7 and 3.25 -> 3.3, with no binary-float surprises.
"""

from __future__ import annotations

import math
import re
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any, Optional

MOS_MIN = Decimal(1)
MOS_MAX = Decimal(5)
INTEGER_MIN, INTEGER_MAX = 10, 50
LABEL_FORMATS = ("integer", "decimal", "level")
LEVEL_WORDS = ("bad", "poor", "fair", "good", "excellent")  # levels 1..5 (Q-Align's words)

_TENTH = Decimal("0.1")
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")  # the sign is kept: "-12" is out of range, not 1.2
OUT_OF_RANGE = "out of range"
NO_NUMBER = "no number"
NO_LEVEL_WORD = "no level word"
NO_SCORE_REASONS = (OUT_OF_RANGE, NO_LEVEL_WORD, NO_NUMBER)  # what each reason for an answer without a MOS starts with
# A complete score in an answer: the label's two digits. The digit-only loss trains these tokens and nothing
# after them, so greedy decoding stops once an answer holds one (see score.decoding.greedy).
_LEVEL = re.compile(r"\b(" + "|".join(LEVEL_WORDS) + r")\b", re.IGNORECASE)
COMPLETE_SCORE = {"integer": re.compile(r"\d\d"), "decimal": re.compile(r"\d\.\d"), "level": _LEVEL}


class LabelError(ValueError):
    """A MOS value that cannot become a label (the message says why)."""


def _decimal(value: Any, what: str) -> tuple[Decimal, str]:
    """A numeric cell (number or text) as an exact finite Decimal, and its text."""
    if value is None:
        raise LabelError(f"{what} is missing (null, or no such key in the row)")
    if isinstance(value, bool):
        raise LabelError(f"{what} must be a number, got {value!r}")
    if isinstance(value, float):
        if math.isnan(value):
            raise LabelError(f"{what} is empty or NaN")
        text = repr(value)
    elif isinstance(value, (int, Decimal)):
        text = str(value)
    elif isinstance(value, str):
        text = value.strip()
        if not text:
            raise LabelError(f"{what} is empty")
    else:
        raise LabelError(f"{what} must be a number, got {value!r}")
    try:
        number = Decimal(text)
    except InvalidOperation:
        raise LabelError(f"{what} is not a number: {value!r}") from None
    if number.is_nan():
        raise LabelError(f"{what} is empty or NaN")
    if not number.is_finite():
        raise LabelError(f"{what} must be finite, got {value!r}")
    return number, text


def parse_mos(value: Any) -> Decimal:
    """A MOS cell (number or text) as an exact Decimal in [1, 5]."""
    mos, text = _decimal(value, "MOS")
    if not MOS_MIN <= mos <= MOS_MAX:
        raise LabelError(f"MOS {text} is outside [{MOS_MIN}, {MOS_MAX}]")
    return mos


def parse_std(value: Any) -> float:
    """A cell of the MOS's rater standard deviation: a number in [0, 4] (the width of the MOS scale)."""
    std, text = _decimal(value, "MOS standard deviation")
    if not 0 <= std <= MOS_MAX - MOS_MIN:
        raise LabelError(f"MOS standard deviation {text} is outside [0, {MOS_MAX - MOS_MIN}]")
    return float(std)


def round_mos(value: Any) -> Decimal:
    """MOS rounded to one decimal, half up (3.666 -> 3.7, 2.65 -> 2.7)."""
    return parse_mos(value).quantize(_TENTH, rounding=ROUND_HALF_UP)


def mos_to_integer(value: Any) -> int:
    """The paper's integer label: 1.0 -> 10, 3.666 -> 37, 5.0 -> 50."""
    return int(round_mos(value) * 10)


def mos_to_level(value: Any) -> int:
    """The nearest level 1..5 of a MOS, half up: 2.5 -> 3, 2.49 -> 2, 3.666 -> 4."""
    return int(parse_mos(value).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def mos_to_label(value: Any, label_format: str = "integer") -> str:
    """The response text trained on: "37" (integer), "3.7" (decimal) or "good" (level)."""
    if label_format == "integer":
        return str(mos_to_integer(value))
    if label_format == "decimal":
        return str(round_mos(value))
    if label_format == "level":
        return LEVEL_WORDS[mos_to_level(value) - 1]
    raise ValueError(f"label_format must be one of {LABEL_FORMATS}, got {label_format!r}")


def label_to_mos(label: str, label_format: str = "integer") -> float:
    """Inverse of :func:`mos_to_label` ("37" -> 3.7, "good" -> 4.0)."""
    if label_format == "level":
        return float(LEVEL_WORDS.index(label.strip().lower()) + 1)
    number = Decimal(label.strip())
    return float(number / 10) if label_format == "integer" else float(number)


def read_answer(text: str, label_format: str = "integer") -> tuple[Optional[float], Optional[str]]:
    """(MOS, None) from a model's answer, or (None, reason) when it gives no MOS.

    The first number in ``text`` must be on the label grid of the format: an
    integer 10..50 (divided by 10) or a decimal 1.0..5.0. Anything else
    ("100", "9", "55", "-12", "37.5" for integer labels) is out of range and
    never becomes a MOS; text with no number gives no MOS either. The reason
    starts with :data:`OUT_OF_RANGE`, :data:`NO_NUMBER` or (level answers) :data:`NO_LEVEL_WORD` and quotes the
    text.
    Level answers: the first level word (any case, a whole word) is its level 1..5.
    """
    if label_format == "level":
        found = _LEVEL.search(text or "")
        if found is None:
            return None, f"{NO_LEVEL_WORD} in answer {text!r}"
        return float(LEVEL_WORDS.index(found.group(1).lower()) + 1), None
    match = _NUMBER.search(text or "")
    if match is None:
        return None, f"{NO_NUMBER} in answer {text!r}"
    number = Decimal(match.group(0))
    if label_format == "integer":
        if number == number.to_integral_value() and INTEGER_MIN <= number <= INTEGER_MAX:
            return float(number / 10), None
        grid = f"integers {INTEGER_MIN}..{INTEGER_MAX}"
    elif label_format == "decimal":
        if MOS_MIN <= number <= MOS_MAX:
            return float(number), None
        grid = f"{MOS_MIN}.0..{MOS_MAX}.0"
    else:
        raise ValueError(f"label_format must be one of {LABEL_FORMATS}, got {label_format!r}")
    return None, f"{OUT_OF_RANGE}: answer {text!r} reads {match.group(0)}, the labels are {grid}"


def parse_score(text: str, label_format: str = "integer") -> Optional[float]:
    """MOS from a model's answer, or None (no number, or a number off the label grid): see :func:`read_answer`."""
    return read_answer(text, label_format)[0]
