"""The scoring loop: rows of videos through a :class:`~.scorer.Scorer` into a prediction file, resuming it.

The file itself (its CSV, meta, resume rules) is ``prediction_file``'s.
"""

from __future__ import annotations

import math
from typing import Any, Optional, Sequence

from .prediction_file import PredictionFile, take_over
from .results import VideoResult


def failed(result: VideoResult) -> bool:
    score = result.pred_mos
    return bool(result.error) or score is None or math.isnan(score)


def run_identity(scorer_settings: Any, mode: str, extra_identity: Optional[dict] = None) -> dict[str, Any]:
    """What identifies a scoring run's predictions: the model and inputs, the mode and decoding options (and the
    quality dimensions scored, when they are not the default single score)."""
    identity = dict(scorer_settings.identity(), mode=mode, **(extra_identity or {}))
    iovqa_args = scorer_settings.iovqa_args
    if iovqa_args.multi_dimension:  # what `iovqa eval` reads to pair each dimension's column with its MOS column
        identity["dimensions"] = list(iovqa_args.dimension_names)
        identity["dimension_columns"] = dict(iovqa_args.dimension_columns or {})
    return identity


def score_todo(scorer: Any, todo: list[tuple[str, str, str]], out: PredictionFile, mode: str, batch_size: int,
               progress: bool = True) -> dict[str, int]:
    """Score rows into ``out`` as they come; counts of scored and failed videos."""
    from tqdm.auto import tqdm

    stats = {"scored": 0, "errors": 0}
    with tqdm(total=len(todo), desc=f"iovqa score ({mode})", unit="video", disable=not progress) as bar:
        for result in scorer.score_rows(todo, mode=mode, batch_size=batch_size):
            out.append(result)
            stats["errors" if failed(result) else "scored"] += 1
            bar.update()
    return stats


def score_rows_into(scorer: Any, rows: list[tuple[str, str, str]], out_path: str, mode: str, batch_size: int,
                    save_probabilities: bool, restart: bool = False, progress: bool = True,
                    extra_identity: Optional[dict] = None,
                    sources: Sequence[str] = ()) -> dict[str, int]:
    """Score (video id, video path, text prompt) rows into ``out_path``, resuming; counts of what happened.

    ``sources``: other prediction files of the same run (e.g. part files of an interrupted data-parallel run)
    whose scored rows are taken over instead of scoring their videos again.
    """
    out = PredictionFile(out_path, run_identity(scorer.settings, mode, extra_identity), save_probabilities, rows,
                         restart=restart)
    if not restart:
        take_over(out, rows, sources, ignore=("shard",))
    todo = [row for row in rows if row[0] not in out.done]
    stats = {"rows": len(rows), "skipped_done": len(rows) - len(todo), "scored": 0, "errors": 0,
             "changed": out.changed}
    try:
        stats.update(score_todo(scorer, todo, out, mode, batch_size, progress))
    finally:
        out.finish(row[0] for row in rows)
    return stats


def score_file(scorer: Any, annotations: str, out_path: str, media_dir: str, mode: str = "expected",
               batch_size: int = 4, save_probabilities: bool = False, progress: bool = True,
               restart: bool = False) -> dict[str, int]:
    """Score every row of an annotation file (the run's column keys) into ``out_path``, resuming."""
    from ..data.datasets import resolve_data, scoring_rows

    rows = scoring_rows(resolve_data(annotations, None, scorer.iovqa_args, media_dir=media_dir))
    return score_rows_into(scorer, rows, out_path, mode, batch_size, save_probabilities, restart=restart,
                           progress=progress)
