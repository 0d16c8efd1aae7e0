"""Metrics per group of videos (``iovqa eval --by COLUMN``): per scene, source, prompt, level...

Each group's SRCC and PLCC (with its size), and the within-group SRCC: the mean SRCC over the groups where a
ranking is defined (at least :data:`MIN_GROUP` videos and labels that are not all equal), with how many groups
that was. It says how well a model ranks videos that share the column's value, which the pooled SRCC mixes with
how well it separates the groups.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .predictions import VIDEO, MatchError

MIN_GROUP = 3  # correlations need three pairs
EMPTY = "(empty)"  # the group of rows whose cell is empty


def group_values(column: str, ids: Sequence[str], pred, pred_path: str, labels, labels_path: str,
                 video_column: str) -> list[str]:
    """The ``column`` value of each video of ``ids``, from the labels (first) or the prediction file."""
    for frame, key, path in ((labels, video_column, labels_path), (pred, VIDEO, pred_path)):
        if column in frame.columns and key in frame.columns:
            table = frame.assign(**{key: frame[key].astype(str).str.strip()}).set_index(key)[column]
            values = table.reindex(list(ids))
            return [EMPTY if _blank(v) else str(v).strip() for v in values]
    raise MatchError(f"--by {column}: no such column in {labels_path} (columns: {list(labels.columns)}) nor in "
                     f"{pred_path} (columns: {[c for c in pred.columns if not c.startswith('_')]})")


def _blank(value) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value)) or str(value).strip() == ""


def grouped_metrics(column: str, groups: Sequence[str], pred: np.ndarray, mos: np.ndarray) -> dict:
    """Per group: n, SRCC and PLCC (None below :data:`MIN_GROUP` videos; NaN where a side is constant); the
    within-group SRCC over the groups with at least MIN_GROUP videos and labels that differ."""
    from .metrics import compute_metrics

    groups = np.asarray(groups, dtype=object)
    per_group, ranked, constant_predictions = {}, [], []
    for name in sorted(set(groups.tolist())):
        chosen = groups == name
        n = int(chosen.sum())
        entry = {"n": n, "srcc": None, "plcc": None}
        if n >= MIN_GROUP:
            metrics = compute_metrics(pred[chosen], mos[chosen])
            entry.update(srcc=metrics["srcc"], plcc=metrics["plcc"])
            if np.ptp(mos[chosen]) > 0:
                if np.ptp(pred[chosen]) > 0:
                    ranked.append(metrics["srcc"])
                else:
                    constant_predictions.append(name)
        per_group[name] = entry
    eligible = len(ranked) + len(constant_predictions)
    return {
        "column": column,
        "groups": per_group,
        "within_group_srcc": float(np.mean(ranked)) if ranked else float("nan"),
        "groups_used": len(ranked),
        "groups_total": len(per_group),
        # groups where labels differ but every prediction is the same: no ranking, left out of the mean
        "groups_constant_predictions": constant_predictions,
        "note": f"within_group_srcc: mean SRCC over the {len(ranked)} of {len(per_group)} groups with >= "
                f"{MIN_GROUP} videos, labels that differ and predictions that differ"
                + (f" ({len(constant_predictions)} of {eligible} such groups have constant predictions)"
                   if constant_predictions else ""),
    }


def group_table(by: dict) -> str:
    """The groups as aligned text lines (for the terminal)."""

    def number(value) -> str:
        return "   -  " if value is None else f"{value:6.3f}"

    width = max(len(by["column"]), *(len(name) for name in by["groups"]))
    lines = [f"{by['column']:<{width}}  {'n':>5}  {'SRCC':>6}  {'PLCC':>6}"]
    for name, entry in by["groups"].items():
        lines.append(f"{name:<{width}}  {entry['n']:>5}  {number(entry['srcc'])}  {number(entry['plcc'])}")
    lines.append(f"within-group SRCC {by['within_group_srcc']:.3f} over {by['groups_used']} of "
                 f"{by['groups_total']} groups")
    return "\n".join(lines)
