"""The MOS scale: reading a MOS cell, and the roundings the label formats write (see ``label_formats``).

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
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

MOS_MIN = Decimal(1)
MOS_MAX = Decimal(5)
INTEGER_MIN, INTEGER_MAX = 10, 50
INTEGER_LABELS = tuple(range(INTEGER_MIN, INTEGER_MAX + 1))  # the score grid 10..50 (MOS x 10)
# The five levels 1..5 and their words (Q-Align's): level labels, the head's grades, soft and ranking targets.
LEVEL_WORDS = ("bad", "poor", "fair", "good", "excellent")
LEVELS = tuple(float(level) for level in range(1, len(LEVEL_WORDS) + 1))
IGNORE_INDEX = -100  # a label position the loss skips (LLaMA-Factory's and transformers' value)

_TENTH = Decimal("0.1")
OUT_OF_RANGE = "out of range"
NO_NUMBER = "no number"
NO_LEVEL_WORD = "no level word"
NO_SCORE_REASONS = (OUT_OF_RANGE, NO_LEVEL_WORD, NO_NUMBER)  # what each reason for an answer without a MOS starts with


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
