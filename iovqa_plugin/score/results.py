"""One scored video: the row the scorer writes to a prediction file.

With several quality dimensions each video also has a result per dimension,
written as ``<column>_<dimension>`` for the columns in
:data:`DIMENSION_COLUMNS` (``pred_mos_temporal``, ``expected_mos_temporal``,
...). The video's own ``greedy_mos`` / ``expected_mos`` / ``pred_mos`` are then
the means over its dimensions (empty when one is missing), ``integer_mass``
the lowest of its dimensions', ``greedy_text`` the joint answer (per_sample:
each dimension's answer, as ``name: text`` joined by ``; ``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from ..data.labels import INTEGER_LABELS, LEVEL_WORDS
from .modes import get_scoring_mode

COLUMNS = [
    "video",
    "pred_mos",
    "mode",
    "greedy_text",
    "greedy_mos",
    "greedy_error",
    "reasoning",
    "expected_mos",
    "expected_std",
    "integer_mass",
    "head_mos",
    "sampled_mos",
    "sampled_std",
    "sampled_parsed",
    "sampled_unparseable",
    *(f"p_{name}" for name in LEVEL_WORDS),
    "error",
]
PROBABILITY_COLUMNS = [f"p_{v}" for v in INTEGER_LABELS]  # with --save-probs
DIMENSION_COLUMNS = ["pred_mos", "greedy_mos", "greedy_error", "expected_mos", "expected_std", "integer_mass"]


def dimension_columns(dimensions: tuple[str, ...]) -> list[str]:
    """The per-dimension columns of a prediction file (none for the default single score)."""
    return [f"{column}_{name}" for name in dimensions for column in DIMENSION_COLUMNS]


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
    reasoning: Optional[str] = None  # a thinking model's think block (greedy's; sampled mode: the first sample's that has one)
    sampled_mos: Optional[float] = None  # sampled mode: the mean MOS of the samples that gave one
    sampled_std: Optional[float] = None  # their (population) standard deviation
    sampled_parsed: Optional[int] = None  # how many samples gave a MOS
    sampled_unparseable: Optional[int] = None  # how many gave none (left out of the mean, never averaged in)
    grades: Optional[list[float]] = None  # head, or level runs' expected: P(bad), P(poor), P(fair), P(good), P(excellent)
    error: Optional[str] = None
    dimensions: Optional[dict[str, "VideoResult"]] = None  # several quality dimensions: each one's result

    @property
    def pred_mos(self) -> Optional[float]:
        """The mode's score: greedy's number, the head's expectation, else the expected score (``both`` too)."""
        return getattr(self, get_scoring_mode(self.mode).score)

    def row(self) -> dict[str, Any]:
        row = {c: getattr(self, c, None) for c in COLUMNS}
        if self.grades is not None:
            row.update({f"p_{name}": p for name, p in zip(LEVEL_WORDS, self.grades)})
        if self.probabilities is not None:
            row.update(dict(zip(PROBABILITY_COLUMNS, self.probabilities)))
        for name, result in (self.dimensions or {}).items():
            row.update({f"{column}_{name}": getattr(result, column) for column in DIMENSION_COLUMNS})
        return row

    def summarise_dimensions(self) -> None:
        """The video's own fields from its dimensions' results (means; see the module docstring)."""
        parts = list((self.dimensions or {}).values())

        def mean(column: str) -> Optional[float]:
            values = [getattr(p, column) for p in parts]
            return None if any(v is None for v in values) else sum(values) / len(values)

        self.greedy_mos, self.expected_mos = mean("greedy_mos"), mean("expected_mos")
        masses = [p.integer_mass for p in parts if p.integer_mass is not None]
        self.integer_mass = min(masses) if masses else None
        errors = [f"{name}: {p.greedy_error}" for name, p in self.dimensions.items() if p.greedy_error]
        self.greedy_error = "; ".join(errors) or None
        if get_scoring_mode(self.mode).greedy_error_fails and errors:
            self.error = f"greedy {self.greedy_error}"
