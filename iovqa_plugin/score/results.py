"""One scored video: the row the scorer writes to a prediction file."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from ..data.grid import VALUES
from ..train.head import GRADE_NAMES

MODES = ("greedy", "expected", "both", "head")
COLUMNS = [
    "video",
    "pred_mos",
    "mode",
    "greedy_text",
    "greedy_mos",
    "greedy_error",
    "expected_mos",
    "expected_std",
    "integer_mass",
    "head_mos",
    *(f"p_{name}" for name in GRADE_NAMES),
    "error",
]
PROBABILITY_COLUMNS = [f"p_{v}" for v in VALUES]  # with --save-probs


@dataclass
class VideoResult:
    video: str
    mode: str
    greedy_text: Optional[str] = None
    greedy_mos: Optional[float] = None
    greedy_error: Optional[str] = None  # why the greedy answer gave no MOS (no number, out of range)
    expected_mos: Optional[float] = None
    expected_std: Optional[float] = None
    integer_mass: Optional[float] = None
    probabilities: Optional[list[float]] = None
    head_mos: Optional[float] = None
    grades: Optional[list[float]] = None  # head, or level runs' expected: P(bad), P(poor), P(fair), P(good), P(excellent)
    error: Optional[str] = None

    @property
    def pred_mos(self) -> Optional[float]:
        """The mode's score: greedy's number, the head's expectation, else the expected score (``both`` too)."""
        return {"greedy": self.greedy_mos, "head": self.head_mos}.get(self.mode, self.expected_mos)

    def row(self) -> dict[str, Any]:
        row = {c: getattr(self, c, None) for c in COLUMNS}
        if self.grades is not None:
            row.update({f"p_{name}": p for name, p in zip(GRADE_NAMES, self.grades)})
        if self.probabilities is not None:
            row.update(dict(zip(PROBABILITY_COLUMNS, self.probabilities)))
        return row
