"""Evaluating a prediction file against labels: metrics, JSON report, scatter plot."""

from __future__ import annotations

import json
import os
from typing import Optional

import numpy as np

from .metrics import PLCC_LOGISTIC_NOTE, compute_metrics, fit_logistic, logistic4
from ..config import TAOBAO_MOS_COLUMN, TAOBAO_VIDEO_COLUMN
from .grouping import MIN_GROUP, group_values, grouped_metrics
from .pairwise import labelled_pairs_report
from .predictions import PRED, MatchError, error_column, match, read_labels, read_predictions


def evaluate(
    pred_path: str,
    labels_path: str,
    video_column: str = TAOBAO_VIDEO_COLUMN,
    mos_column: str = TAOBAO_MOS_COLUMN,
    report: Optional[str] = None,
    plot: Optional[str] = None,
    label_format: str = "integer",
    labelled_only: bool = False,
    score_column: str = PRED,
    answered_only: bool = False,
    by: Optional[str] = None,
    title: Optional[str] = None,
    pairwise: bool = False,
    tie_calibration: bool = False,
) -> dict:
    """Metrics of ``pred_path`` against ``labels_path`` (rows matched by video id); writes report and plot.

    ``labelled_only`` evaluates the predictions of labelled videos only (one
    split of a file that scored more videos); the report's ``left_out`` says
    how many predictions had no label. Without it, such predictions are an error.
    ``answered_only`` leaves out the videos whose ``score_column`` is empty (a greedy answer without a score, a
    failed video); the report's ``unanswered`` lists them with their reasons. ``by``: also the metrics per
    value of that column (of the labels or the predictions) and the within-group SRCC (see ``grouping``).
    The report and plot are named after the prediction file and, for another column than ``pred_mos``, the
    column (``preds_greedy_mos_metrics.json``), so evaluating another column writes files of its own.
    ``pairwise``: also the pairwise accuracy over all pairs of the evaluated videos (and, with ``by``, over the
    pairs within a group), ``tie_calibration`` as in ``pairwise``.
    """
    pred = read_predictions(pred_path, label_format, score_column)
    labels = read_labels(labels_path, video_column, mos_column)
    scores, mos, ids, unanswered = match(pred, pred_path, labels, labels_path, video_column, mos_column,
                                         labelled_only, answered_only)
    if len(scores) < MIN_GROUP:
        without = f" ({len(unanswered)} left out without a score)" if unanswered else ""
        raise MatchError(f"{pred_path} vs {labels_path}: {len(scores)} scored and labelled video(s) in "
                         f"{score_column}{without}; correlations need at least {MIN_GROUP}")
    result = {"predictions": pred_path, "labels": labels_path, "score_column": score_column,
              **compute_metrics(scores, mos)}
    if labelled_only:
        result["left_out"] = len(pred) - len(scores) - len(unanswered)  # predictions without a label
    if answered_only:
        result["unanswered"] = {"count": len(unanswered), "column": error_column(score_column),
                                "videos": unanswered}
    warnings = constant_warnings(scores, mos, score_column, mos_column, pred_path, labels_path)
    if warnings:
        result["warnings"] = warnings
    groups = group_values(by, ids, pred, pred_path, labels, labels_path, video_column) if by else None
    if by:
        result["by"] = grouped_metrics(by, groups, scores, mos)
    if pairwise:
        result["pairwise"] = labelled_pairs_report(scores, mos, groups, tie_calibration)
    result["notes"] = {"plcc_logistic": PLCC_LOGISTIC_NOTE}
    stem = os.path.splitext(pred_path)[0] + ("" if score_column == PRED else f"_{score_column}")
    report = report or f"{stem}_metrics.json"
    plot = plot or f"{stem}_scatter.png"
    with open(report, "w", encoding="utf-8") as handle:
        json.dump(result, handle, indent=2)
    shown = title or os.path.basename(pred_path) + ("" if score_column == PRED else f" ({score_column})")
    scatter_plot(scores, mos, result, plot, title=shown)
    result.update(report=report, plot=plot)
    return result


def constant_warnings(scores: np.ndarray, mos: np.ndarray, score_column: str, mos_column: str, pred_path: str,
                      labels_path: str) -> list[str]:
    """Why correlations are NaN, if they are: every prediction (or every label) is the same value."""
    found = []
    for values, column, path in ((scores, score_column, pred_path), (mos, mos_column, labels_path)):
        if np.ptp(values) == 0:
            found.append(f"{path}: every {column} of the {len(values)} videos is {values[0]:g}: SRCC, PLCC and "
                         "KRCC are NaN (undefined for constant values)")
    return found


def scatter_plot(pred: np.ndarray, mos: np.ndarray, metrics: dict, path: str, title: str = "") -> None:
    """Predicted vs MOS, the fitted 4-parameter logistic, the metrics in the title."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 5))
    ax.scatter(pred, mos, s=18, alpha=0.7, label="videos")
    if np.ptp(pred) > 0:
        xs = np.linspace(pred.min(), pred.max(), 200)
        ax.plot(xs, logistic4(xs, *fit_logistic(pred, mos)), color="tab:red", label="4-parameter logistic fit")
    ax.set_xlabel("predicted MOS")
    ax.set_ylabel("MOS")
    ax.set_title(
        f"{title}\nSRCC {metrics['srcc']:.3f}  PLCC {metrics['plcc']:.3f}  final {metrics['final']:.3f}  "
        f"(n={metrics['n']})",
        fontsize=9,
    )
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def evaluate_dimensions(
    pred_path: str,
    labels_path: str,
    mos_columns: dict[str, str],
    video_column: str = TAOBAO_VIDEO_COLUMN,
    report: Optional[str] = None,
    label_format: str = "integer",
    labelled_only: bool = False,
    score_column: str = PRED,
    answered_only: bool = False,
    by: Optional[str] = None,
    pairwise: bool = False,
    tie_calibration: bool = False,
) -> dict:
    """Metrics of each quality dimension of a multi-dimension prediction file, and their mean.

    Dimension ``d`` is its ``<score_column>_<d>`` column against the labels' ``mos_columns[d]``; each gets
    its report and scatter plot (``<pred stem>_<d>_metrics.json`` / ``_scatter.png``; for another column than
    ``pred_mos``, ``<pred stem>_<score_column>_<d>_...``), titled with the dimension; ``report`` holds them
    all with the mean SRCC, PLCC and final over the dimensions.
    """
    base = os.path.splitext(pred_path)[0]
    stem = base + ("" if score_column == PRED else f"_{score_column}")
    per_dimension = {}
    for name, mos_column in mos_columns.items():
        column = f"{score_column}_{name}"
        result = evaluate(pred_path, labels_path, video_column, mos_column, report=f"{stem}_{name}_metrics.json",
                          plot=f"{stem}_{name}_scatter.png", label_format=label_format,
                          labelled_only=labelled_only, score_column=column, answered_only=answered_only, by=by,
                          pairwise=pairwise, tie_calibration=tie_calibration,
                          title=f"{os.path.basename(pred_path)}: {name} ({column} vs {mos_column})")
        per_dimension[name] = result
    mean = {key: float(np.mean([r[key] for r in per_dimension.values()])) for key in ("srcc", "plcc", "final")}
    result = {"predictions": pred_path, "labels": labels_path, "score_column": score_column,
              "dimensions": per_dimension, "mean": mean}
    report = report or f"{stem}_metrics.json"
    with open(report, "w", encoding="utf-8") as handle:
        json.dump(result, handle, indent=2)
    result["report"] = report
    return result
