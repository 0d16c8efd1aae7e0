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
from typing import Optional, Sequence

import numpy as np

from ..data.annotations import Issue
from ..data.pairs import PairColumns, pair_columns_problem, parse_pair_rows
from .predictions import PRED, REASON, VIDEO, MatchError, _refuse_empty, _table, read_predictions

MAX_SHOWN = 10  # bad pair rows shown in one error


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
    problem = pair_columns_problem(list(frame.columns), columns)
    if problem:
        raise MatchError(f"{path}: {problem}")
    rows, issues = parse_pair_rows(frame.to_dict("records"), os.path.basename(path), columns)
    return pd.DataFrame([{"row": r.row, "video_a": r.video_a, "video_b": r.video_b, "human": r.human,
                          "dimension": r.dimension, "bad": r.bad} for r in rows]), issues


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


def _stop(path: str, issues: list[Issue]) -> None:
    shown = "\n  ".join(str(issue) for issue in issues[:MAX_SHOWN])
    more = f"\n  ... and {len(issues) - MAX_SHOWN} more" if len(issues) > MAX_SHOWN else ""
    raise MatchError(f"{path}: {len(issues)} bad pair row(s):\n  {shown}{more}")


COMPARISON_COLUMNS = ("video_a", "video_b", "p_a", "p_b")  # what `iovqa score` writes for comparisons


def is_comparison_predictions(path: str) -> bool:
    """A prediction file of comparisons (``iovqa score`` on pairs: P(A), P(B) per pair), not of scores."""
    _refuse_empty(path)
    return set(COMPARISON_COLUMNS) <= set(_table(path).columns)


def comparison_report(pred_path: str, pairs_path: str, columns: PairColumns = PairColumns(),
                      tie_calibration: bool = False) -> dict:
    """Pairwise accuracy of comparison predictions on a pairs file: the model prefers A when P(A) > P(B) (the
    pair's "score difference" is P(A) - P(B)); a pair predicted in the other order counts with the sign turned.
    A pair without a prediction, or whose prediction failed, stops with its row."""
    pairs, issues = _parse_pairs(pairs_path, columns)
    name = os.path.basename(pairs_path)
    predicted, failed = {}, {}
    for record in _table(pred_path).to_dict("records"):
        key = (str(record["video_a"]).strip(), str(record["video_b"]).strip())
        p_a, p_b = (float(record[c]) if str(record[c]).strip() else float("nan") for c in ("p_a", "p_b"))
        if np.isfinite(p_a) and np.isfinite(p_b):
            predicted[key] = p_a - p_b
        else:
            failed[key] = str(record.get("error") or "no P(A)")
    diffs, human = [], []
    for pair in pairs.to_dict("records"):
        key = (pair["video_a"], pair["video_b"])
        if pair["bad"]:
            continue
        if key in predicted or key[::-1] in predicted:
            diffs.append(predicted[key] if key in predicted else -predicted[key[::-1]])
            human.append(pair["human"])
        else:
            reason = f"failed in {pred_path}: {failed[key]}" if key in failed else f"no comparison in {pred_path}"
            issues.append(Issue(name, pair["row"], columns.video_b, key[1], reason))
    if issues:
        _stop(pairs_path, sorted(issues, key=lambda issue: issue.row))
    return pairwise_accuracy(diffs, human, tie_calibration)
