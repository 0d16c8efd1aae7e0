"""The prediction file a scoring run writes: a CSV in input order, resumable, with a record of what made it.

Beside ``preds.csv`` the scorer keeps ``preds.csv.meta.json``: the model, the
adapter's weights, the template, the input settings, the plugin keys and the
decoding options. Re-running the same command resumes (videos already
scored are kept, failed ones are tried again); a command that would score
differently is refused with the differences, never merged into the file
(``restart=True`` starts the file over).
"""

from __future__ import annotations

import json
import math
import os
from typing import Any, Iterable, Optional

from .results import COLUMNS, PROBABILITY_COLUMNS, VideoResult


class ResumeError(ValueError):
    """An existing prediction file was written by a different scoring run."""


def meta_path(out_path: str) -> str:
    return out_path + ".meta.json"


class PredictionFile:
    """Rows appended as they are scored; rewritten in input order by :meth:`finish`."""

    def __init__(self, path: str, identity: dict[str, Any], save_probabilities: bool, restart: bool = False):
        import pandas as pd

        self.path = path
        self.header = list(COLUMNS) + (PROBABILITY_COLUMNS if save_probabilities else [])
        self.identity = dict(identity, columns=self.header)
        self.done: set[str] = set()
        if restart:
            for stale in (path, meta_path(path)):
                if os.path.exists(stale):
                    os.remove(stale)
        if os.path.isfile(path):
            self._check_resumable()
            previous = pd.read_csv(path, dtype={"video": str}, keep_default_na=True)
            previous = previous[previous["pred_mos"].notna()]  # failed rows are tried again
            self.done = set(previous["video"])
            previous.reindex(columns=self.header).to_csv(path, index=False)
        else:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            pd.DataFrame(columns=self.header).to_csv(path, index=False)
            with open(meta_path(path), "w", encoding="utf-8") as handle:
                json.dump(self.identity, handle, indent=2, sort_keys=True)

    def _check_resumable(self) -> None:
        meta = meta_path(self.path)
        if not os.path.isfile(meta):
            raise ResumeError(
                f"{self.path} exists but has no {os.path.basename(meta)}: it was not written by this scorer, so "
                "it cannot be resumed. Pass --restart to score into it from scratch, or choose another --out."
            )
        with open(meta, encoding="utf-8") as handle:
            before = json.load(handle)
        differences = _differences(before, self.identity)
        if differences:
            shown = "\n  ".join(differences[:12])
            raise ResumeError(
                f"{self.path} was written by a different scoring run; resuming would mix two runs' predictions:\n"
                f"  {shown}\nRe-run with the same settings to resume, pass --restart to start the file over, "
                "or choose another --out."
            )

    def append(self, result: VideoResult) -> None:
        import pandas as pd

        pd.DataFrame([result.row()]).reindex(columns=self.header).to_csv(self.path, mode="a", header=False, index=False)

    def finish(self, order: Iterable[str]) -> None:
        """Rewrite the file with its rows in ``order`` (the input's), atomically."""
        import pandas as pd

        table = pd.read_csv(self.path, dtype={"video": str}, keep_default_na=True)
        rank = {video: i for i, video in enumerate(order)}
        table = table.assign(_order=table["video"].map(rank)).sort_values("_order", kind="stable").drop(columns="_order")
        tmp = f"{self.path}.{os.getpid()}.tmp"
        table.to_csv(tmp, index=False)
        os.replace(tmp, self.path)


def _differences(before: dict, now: dict, prefix: str = "") -> list[str]:
    """Human-readable differences between two identities (nested dicts)."""
    lines = []
    for key in sorted(set(before) | set(now)):
        a, b = before.get(key), now.get(key)
        name = f"{prefix}{key}"
        if isinstance(a, dict) and isinstance(b, dict):
            lines += _differences(a, b, name + ".")
        elif a != b:
            lines.append(f"{name}: file has {_short(a)}, this run has {_short(b)}")
    return lines


def _short(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


def failed(result: VideoResult) -> bool:
    score = result.pred_mos
    return bool(result.error) or score is None or math.isnan(score)


def score_rows_into(scorer: Any, rows: list[tuple[str, str, str]], out_path: str, mode: str, batch_size: int,
                    save_probabilities: bool, restart: bool = False, progress: bool = True,
                    extra_identity: Optional[dict] = None) -> dict[str, int]:
    """Score (video id, video path, text prompt) rows into ``out_path``, resuming; counts of what happened."""
    from tqdm.auto import tqdm

    identity = dict(scorer.settings.identity(), mode=mode, **(extra_identity or {}))
    out = PredictionFile(out_path, identity, save_probabilities, restart=restart)
    todo = [row for row in rows if row[0] not in out.done]
    stats = {"rows": len(rows), "skipped_done": len(rows) - len(todo), "scored": 0, "errors": 0}
    try:
        with tqdm(total=len(todo), desc=f"iovqa score ({mode})", unit="video", disable=not progress) as bar:
            for result in scorer.score_rows(todo, mode=mode, batch_size=batch_size):
                out.append(result)
                stats["errors" if failed(result) else "scored"] += 1
                bar.update()
    finally:
        out.finish(row[0] for row in rows)
    return stats


def score_file(scorer: Any, annotations: str, out_path: str, media_dir: str, mode: str = "expected",
               batch_size: int = 4, save_probabilities: bool = False, progress: bool = True,
               restart: bool = False) -> dict[str, int]:
    """Score every row of an annotation file (the run's column keys) into ``out_path``, resuming."""
    from ..data.datasets import resolve_data, scoring_rows

    rows = scoring_rows(resolve_data(annotations, None, scorer.plugin, media_dir=media_dir))
    return score_rows_into(scorer, rows, out_path, mode, batch_size, save_probabilities, restart=restart,
                           progress=progress)
