"""Annotation layouts: what a dataset's rows are, by its ``formatting`` in ``dataset_info.json``.

Each layout is a LLaMA-Factory dataset formatting the plugin registers; it names the kind of samples it makes
(a score, or a comparison), the file it reads (pointwise rows, or pair rows) and the `columns` keys a dataset
entry may map.
"""

from __future__ import annotations

from dataclasses import dataclass

from .annotations import STOCK_COLUMN_DEFAULTS
from .pairs import PAIR_ROLES

POINTWISE_COLUMNS = (*STOCK_COLUMN_DEFAULTS, "std")  # video path, text prompt, MOS, the MOS's rater std


@dataclass(frozen=True)
class Layout:
    formatting: str  # the dataset_info.json `formatting`
    samples: str  # "score" or "comparison"
    reads: str  # "pointwise" (one row per medium with its MOS) or "pairs" (one row per pair)
    columns: tuple[str, ...]  # the `columns` keys an entry may map
    describe: str

    @property
    def comparison(self) -> bool:
        return self.samples == "comparison"


LAYOUTS = {
    layout.formatting: layout
    for layout in (
        Layout("iovqa", "score", "pointwise", POINTWISE_COLUMNS,
               "video path, text prompt, MOS, the MOS's rater standard deviation"),
        Layout("iovqa_pairs", "comparison", "pairs", tuple(r for r in PAIR_ROLES if r != "dimension"),
               "the roles of a pairs file: media A and B, a preference label or the two MOS (and their stds), "
               "the text prompt"),
        Layout("iovqa_drawn_pairs", "comparison", "pointwise", POINTWISE_COLUMNS,
               "the pointwise columns the pairs are drawn from: video path, text prompt, MOS, std"),
    )
}
POINTWISE = "iovqa"


def layout_of(formatting: str) -> Layout:
    """The layout of a plugin formatting (KeyError for another formatting)."""
    return LAYOUTS[formatting]
