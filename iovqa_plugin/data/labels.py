"""MOS <-> response label.

The paper's label: keep one decimal of the Overall MOS, multiply by 10, use
the integer (3.666 -> 3.7 -> "37"); valid MOS is [1, 5], so labels are 10..50.

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
LABEL_FORMATS = ("integer", "decimal")

_TENTH = Decimal("0.1")
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")  # the sign is kept: "-12" is out of range, not 1.2
OUT_OF_RANGE = "out of range"
NO_NUMBER = "no number"
# A complete score in an answer: the label's two digits. The digit-only loss trains these tokens and nothing
# after them, so greedy decoding stops once an answer holds one (see score.decoding.greedy).
COMPLETE_SCORE = {"integer": re.compile(r"\d\d"), "decimal": re.compile(r"\d\.\d")}


class LabelError(ValueError):
    """A MOS value that cannot become a label (the message says why)."""


def parse_mos(value: Any) -> Decimal:
    """A MOS cell (number or text) as an exact Decimal in [1, 5]."""
    if isinstance(value, bool) or value is None:
        raise LabelError(f"MOS must be a number, got {value!r}")
    if isinstance(value, float):
        if math.isnan(value):
            raise LabelError("MOS is empty or NaN")
        text = repr(value)
    elif isinstance(value, (int, Decimal)):
        text = str(value)
    elif isinstance(value, str):
        text = value.strip()
        if not text:
            raise LabelError("MOS is empty")
    else:
        raise LabelError(f"MOS must be a number, got {value!r}")
    try:
        mos = Decimal(text)
    except InvalidOperation:
        raise LabelError(f"MOS is not a number: {value!r}") from None
    if mos.is_nan():
        raise LabelError("MOS is empty or NaN")
    if not mos.is_finite():
        raise LabelError(f"MOS must be finite, got {value!r}")
    if not MOS_MIN <= mos <= MOS_MAX:
        raise LabelError(f"MOS {text} is outside [{MOS_MIN}, {MOS_MAX}]")
    return mos


def round_mos(value: Any) -> Decimal:
    """MOS rounded to one decimal, half up (3.666 -> 3.7, 2.65 -> 2.7)."""
    return parse_mos(value).quantize(_TENTH, rounding=ROUND_HALF_UP)


def mos_to_integer(value: Any) -> int:
    """The paper's integer label: 1.0 -> 10, 3.666 -> 37, 5.0 -> 50."""
    return int(round_mos(value) * 10)


def mos_to_label(value: Any, label_format: str = "integer") -> str:
    """The response text trained on: "37" (integer) or "3.7" (decimal)."""
    if label_format == "integer":
        return str(mos_to_integer(value))
    if label_format == "decimal":
        return str(round_mos(value))
    raise ValueError(f"label_format must be one of {LABEL_FORMATS}, got {label_format!r}")


def label_to_mos(label: str, label_format: str = "integer") -> float:
    """Inverse of :func:`mos_to_label` ("37" -> 3.7)."""
    number = Decimal(label.strip())
    return float(number / 10) if label_format == "integer" else float(number)


def read_answer(text: str, label_format: str = "integer") -> tuple[Optional[float], Optional[str]]:
    """(MOS, None) from a model's answer, or (None, reason) when it gives no MOS.

    The first number in ``text`` must be on the label grid of the format: an
    integer 10..50 (divided by 10) or a decimal 1.0..5.0. Anything else
    ("100", "9", "55", "-12", "37.5" for integer labels) is out of range and
    never becomes a MOS; text with no number gives no MOS either. The reason
    starts with :data:`OUT_OF_RANGE` or :data:`NO_NUMBER` and quotes the text.
    """
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
