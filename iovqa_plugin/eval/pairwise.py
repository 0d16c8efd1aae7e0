"""Pairwise preference accuracy of pointwise predictions ("diff" and "tau", as VQ-Insight's and VideoAlign's tables).

A pair (A, B) has a human preference: A better, B better, or a tie (from a
preference label, or from the two MOS: equal MOS is a tie). The model prefers
the video with the higher predicted score, and ties them when the scores are
equal (or, with tie calibration, within epsilon of each other).

- ``diff``: accuracy over the pairs humans do not tie; a pair counts as right when the model prefers the same
  video (a model tie on such a pair counts as wrong).
- ``tau``: the pairwise accuracy with ties of Deutsch et al. 2023, "Ties Matter: Meta-Evaluating Modern Metrics
  with Pairwise Accuracy and Tie Calibration" (acc_eq): over all pairs, right when both prefer the same video or
  both tie, ``(C + T_hm) / (C + D + T_h + T_m + T_hm)``. Predicted scores are continuous, so without tie
  calibration the model rarely ties and every human tie counts as wrong. With tie calibration the model ties a
  pair when ``|s_A - s_B| <= epsilon``, epsilon chosen among the pairs' score differences to maximise acc_eq (the
  paper's procedure; the report gives epsilon). Calibrating on the evaluated pairs themselves is what the paper
  does for meta-evaluation; it flatters the model slightly.

Pairs come from a pairs file (``--pairs``: CSV/JSON/JSONL rows of video A, video B and a preference label or the
two MOS; every row is used or stops the evaluation with its file, row and field), or are all pairs of the labelled
videos (``--pairwise``), optionally only those within a ``--by`` group.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from ..data.annotations import Issue
from .predictions import PRED, REASON, VIDEO, MatchError, _table, read_predictions

PREFERENCES = {"a": 1, "b": -1, "tie": 0}  # a preference label (any case) -> the sign of s_A - s_B it asks for
MAX_SHOWN = 10  # bad pair rows shown in one error


@dataclass(frozen=True)
class PairColumns:
    """Column names of a pairs file (``--pair-column ROLE=NAME`` renames them)."""

    video_a: str = "video_a"
    video_b: str = "video_b"
    preference: str = "preference"  # "A", "B" or "tie"; used when present
    mos_a: str = "mos_a"  # else the two MOS (equal MOS: a tie)
    mos_b: str = "mos_b"
    dimension: str = "dimension"  # optional: which dimension's score a row compares (multi-dimension predictions)


def pairwise_accuracy(pred_diff: Sequence[float], human: Sequence[float], tie_calibration: bool = False) -> dict:
    """``diff`` and ``tau`` accuracy of pairs with predicted differences ``pred_diff`` (s_A - s_B) and human
    preferences ``human`` (> 0: A better, < 0: B better, 0: tie); see the module docstring."""
    pred_diff, human = np.asarray(pred_diff, dtype=np.float64), np.sign(np.asarray(human, dtype=np.float64))
    if pred_diff.shape != human.shape or pred_diff.ndim != 1:
        raise ValueError(f"predicted differences and preferences must be 1-D and of equal length, got "
                         f"{pred_diff.shape} and {human.shape}")
    n = len(pred_diff)
    human_tie = human == 0
    agree = (np.sign(pred_diff) == human) & ~human_tie  # both prefer the same video
    distinct = n - int(human_tie.sum())
    epsilon = calibrated_epsilon(pred_diff, human_tie, agree) if tie_calibration and n else 0.0
    model_tie = np.abs(pred_diff) <= epsilon
    correct = np.where(model_tie, human_tie, agree)
    return {
        "pairs": n,
        "human_ties": int(human_tie.sum()),
        "diff": float(agree.sum() / distinct) if distinct else float("nan"),
        "diff_pairs": distinct,
        "tau": float(correct.mean()) if n else float("nan"),
        "model_ties": int(model_tie.sum()),
        "tie_epsilon": float(epsilon),
        "tie_calibration": bool(tie_calibration),
    }


def calibrated_epsilon(pred_diff: np.ndarray, human_tie: np.ndarray, agree: np.ndarray) -> float:
    """The epsilon (0 or one of the pairs' |s_A - s_B|) whose ties maximise acc_eq; the smallest on equal accuracy."""
    gap = np.abs(pred_diff)
    order = np.argsort(gap, kind="stable")
    gap, human_tie, agree = gap[order], human_tie[order], agree[order]
    candidates = np.unique(np.concatenate([[0.0], gap]))
    tied = np.searchsorted(gap, candidates, side="right")  # pairs tied at each candidate: the first `tied` ones
    ties_right = np.concatenate([[0], np.cumsum(human_tie)])[tied]
    untied_right = int(agree.sum()) - np.concatenate([[0], np.cumsum(agree)])[tied]
    return float(candidates[int(np.argmax(ties_right + untied_right))])


def all_pairs(scores: np.ndarray, mos: np.ndarray, groups: Optional[Sequence[str]] = None) -> tuple[np.ndarray, np.ndarray]:
    """(s_A - s_B, MOS_A - MOS_B) of every pair of videos (within the same group when ``groups`` is given)."""
    i, j = np.triu_indices(len(scores), k=1)
    if groups is not None:
        groups = np.asarray(groups, dtype=object)
        same = groups[i] == groups[j]
        i, j = i[same], j[same]
    return scores[i] - scores[j], mos[i] - mos[j]


def labelled_pairs_report(scores: np.ndarray, mos: np.ndarray, groups: Optional[Sequence[str]] = None,
                          tie_calibration: bool = False) -> dict:
    """Pairwise accuracy over all pairs of the labelled videos and, with ``groups``, over the pairs within a group."""
    report = {"all_pairs": pairwise_accuracy(*all_pairs(scores, mos), tie_calibration)}
    if groups is not None:
        report["within_groups"] = pairwise_accuracy(*all_pairs(scores, mos, groups), tie_calibration)
    return report


def read_pairs(path: str, columns: PairColumns = PairColumns()):
    """The pairs file as a DataFrame with ``row``, ``video_a``, ``video_b``, ``human`` (sign of A - B) and
    ``dimension`` (None where not given); a bad row stops with its file, row and field (all of them listed)."""
    pairs, issues = _parse_pairs(path, columns)
    if issues:
        _stop(path, issues)
    return pairs


def _parse_pairs(path: str, columns: PairColumns):
    """(the rows as in ``read_pairs``, the issues of the bad ones)."""
    import pandas as pd

    frame = _table(path)
    if frame.empty:
        raise MatchError(f"{path}: no pair rows")
    for column in (columns.video_a, columns.video_b):
        if column not in frame.columns:
            raise MatchError(f"{path}: no {column!r} column (columns: {list(frame.columns)})")
    by_preference = columns.preference in frame.columns
    if not by_preference and not {columns.mos_a, columns.mos_b} <= set(frame.columns):
        raise MatchError(f"{path}: neither a {columns.preference!r} column nor both {columns.mos_a!r} and "
                         f"{columns.mos_b!r} (columns: {list(frame.columns)})")
    name = os.path.basename(path)
    issues, rows = [], []
    for index, record in enumerate(frame.to_dict("records"), start=1):
        a, b = _text(record.get(columns.video_a)), _text(record.get(columns.video_b))
        found = []
        if not a:
            found.append(Issue(name, index, columns.video_a, a, "missing first video"))
        if not b:
            found.append(Issue(name, index, columns.video_b, b, "missing second video"))
        elif a and a == b:
            found.append(Issue(name, index, columns.video_b, b, "the same video as video A: not a pair"))
        human = None
        if by_preference:
            label = _text(record.get(columns.preference))
            human = PREFERENCES.get(label.lower())
            if human is None:
                found.append(Issue(name, index, columns.preference, label, "not one of 'A', 'B', 'tie'"))
        else:
            values = []
            for column in (columns.mos_a, columns.mos_b):
                value = pd.to_numeric(_text(record.get(column)) or "nan", errors="coerce")
                if not np.isfinite(value):
                    found.append(Issue(name, index, column, _text(record.get(column)), "not a number"))
                values.append(value)
            if len(found) == 0:
                human = float(np.sign(values[0] - values[1]))
        dimension = _text(record.get(columns.dimension)) or None
        issues.extend(found)
        rows.append({"row": index, "video_a": a, "video_b": b, "human": human, "dimension": dimension,
                     "bad": bool(found)})
    return pd.DataFrame(rows), issues


def pairs_report(pred_path: str, pairs_path: str, score_columns: dict[Optional[str], str],
                 columns: PairColumns = PairColumns(), label_format: str = "integer",
                 tie_calibration: bool = False) -> dict:
    """Pairwise accuracy of a prediction file on a pairs file; per dimension when ``score_columns`` maps several
    dimensions to their score columns (``{None: column}``: single-score predictions, every row compares it).

    A row names its dimension in ``columns.dimension``; rows without one compare ``overall`` when the predictions
    score several dimensions. A video without a prediction (or whose prediction is empty) stops with the row.
    """
    pairs, issues = _parse_pairs(pairs_path, columns)  # every bad row is reported, with those found below
    name = os.path.basename(pairs_path)
    predictions = {dimension: _scores_by_video(pred_path, column, label_format)
                   for dimension, column in score_columns.items()}
    single = list(score_columns) == [None]
    chosen = {dimension: ([], []) for dimension in score_columns}
    for pair in pairs.to_dict("records"):
        dimension = pair["dimension"]
        if single:
            if dimension not in (None, "overall"):
                issues.append(Issue(name, pair["row"], columns.dimension, dimension,
                                    f"{pred_path} scores one dimension (overall)"))
                continue
            dimension = None
        else:
            dimension = dimension or "overall"
            if dimension not in score_columns:
                issues.append(Issue(name, pair["row"], columns.dimension, pair["dimension"] or "",
                                    f"not a dimension of {pred_path} ({sorted(score_columns)})"))
                continue
        scores, column = predictions[dimension], score_columns[dimension]
        values = []
        for field, video in ((columns.video_a, pair["video_a"]), (columns.video_b, pair["video_b"])):
            if not video:
                continue  # reported as missing
            if video not in scores:
                issues.append(Issue(name, pair["row"], field, video, f"no prediction in {pred_path}"))
            elif scores[video][0] is None:
                issues.append(Issue(name, pair["row"], field, video,
                                    f"its {column} in {pred_path} is empty ({scores[video][1]})"))
            else:
                values.append(scores[video][0])
        if len(values) == 2 and not pair["bad"]:
            chosen[dimension][0].append(values[0] - values[1])
            chosen[dimension][1].append(pair["human"])
    if issues:
        _stop(pairs_path, sorted(issues, key=lambda issue: issue.row))
    results = {dimension: pairwise_accuracy(diffs, human, tie_calibration)
               for dimension, (diffs, human) in chosen.items()}
    if single:
        return results[None]
    return {"dimensions": {d: r for d, r in results.items() if r["pairs"]},
            "unused_dimensions": [d for d, r in results.items() if not r["pairs"]]}


def summary(prefix: str, result: dict) -> str:
    """One line per set of pairs, for the terminal."""
    calibrated = f", tie epsilon {result['tie_epsilon']:.4g}" if result["tie_calibration"] else ""
    return (f"{prefix}pairwise accuracy diff {result['diff']:.4f} ({result['diff_pairs']} pairs without a human "
            f"tie), tau {result['tau']:.4f} ({result['pairs']} pairs, {result['human_ties']} human ties, "
            f"{result['model_ties']} model ties{calibrated})")


def _scores_by_video(pred_path: str, column: str, label_format: str) -> dict[str, tuple[Optional[float], str]]:
    frame = read_predictions(pred_path, label_format, column)
    if "position" in frame.columns:
        raise MatchError(f"{pred_path}: LLaMA-Factory's generated predictions name no video; pairs need a "
                         "prediction file with a video column (iovqa score)")
    repeated = frame[VIDEO][frame[VIDEO].duplicated()].tolist()
    if repeated:
        raise MatchError(f"{pred_path}: duplicate video ids: {repeated[:MAX_SHOWN]}")
    return {video: (None if np.isnan(score) else float(score), reason)
            for video, score, reason in zip(frame[VIDEO], frame[PRED], frame[REASON])}


def _text(value) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    return str(value).strip()


def _stop(path: str, issues: list[Issue]) -> None:
    shown = "\n  ".join(str(issue) for issue in issues[:MAX_SHOWN])
    more = f"\n  ... and {len(issues) - MAX_SHOWN} more" if len(issues) > MAX_SHOWN else ""
    raise MatchError(f"{path}: {len(issues)} bad pair row(s):\n  {shown}{more}")
