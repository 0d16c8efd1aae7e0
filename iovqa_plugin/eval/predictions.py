"""Prediction files: one row per video, matched to labels or to other models by video id.

Columns written by the scorer: ``video`` (the id as in the annotations),
``pred_mos`` (empty when scoring failed), ``mode``, and per mode details
(``text`` for greedy, ``std`` and ``p_10``..``p_50`` for expected), ``error``.
LLaMA-Factory's ``generated_predictions.jsonl`` (``predict``/``label`` per
line, in dataset order) is read too, by position.
"""

from __future__ import annotations

import json
import os

from ..data.annotations import read_table
from ..data.label_formats import read_answer

VIDEO, PRED = "video", "pred_mos"
REASON = "_reason"  # why a row holds no score: the error column of the score column read (see error_column)


class MatchError(ValueError):
    """Prediction and label rows that cannot be paired one to one."""


def read_predictions(path: str, label_format: str = "integer", score_column: str = PRED):
    """A prediction file as a DataFrame with ``video`` and ``pred_mos`` columns.

    ``score_column`` picks the decoding of a scorer file as the prediction: ``pred_mos`` (the mode's
    score), ``expected_mos``, ``greedy_mos`` or ``head_mos``.
    """
    import pandas as pd

    _refuse_empty(path)
    if path.endswith(".jsonl") and _is_llamafactory_output(path):
        with open(path, encoding="utf-8") as handle:
            rows = [json.loads(line) for line in handle if line.strip()]
        frame = pd.DataFrame(
            {
                "position": range(len(rows)),
                "text": [r.get("predict", "") for r in rows],
                "label_text": [r.get("label", "") for r in rows],
            }
        )
        answers = [read_answer(t, label_format) for t in frame["text"]]
        frame[PRED] = [mos for mos, _ in answers]
        frame["error"] = [reason for _, reason in answers]  # out of range or no number: left out, with the reason
        frame[REASON] = frame["error"].fillna("")
        return _with_rows(frame, path)
    frame = _with_rows(_table(path), path)
    for column in (VIDEO, score_column):
        if column not in frame.columns:
            raise MatchError(f"{path}: no {column!r} column (columns: {list(frame.columns)})")
    frame[VIDEO] = frame[VIDEO].astype(str).str.strip()
    # an empty cell (a failed video) is not a number: NaN, as any other non-number
    frame[PRED] = pd.to_numeric(frame[score_column], errors="coerce")
    frame[REASON] = _reasons(frame, score_column)
    return frame


def error_column(score_column: str) -> str:
    """The column that says why ``score_column`` is empty: greedy's own (``greedy_error``, per dimension
    ``greedy_error_<d>``) for a greedy score, else ``error`` (the video's failure)."""
    if score_column == "greedy_mos" or score_column.startswith("greedy_mos_"):
        return "greedy_error" + score_column[len("greedy_mos"):]
    return "error"


def _reasons(frame, score_column: str):
    """Per row, why it holds no score: its score column's error, else the video's ``error`` (one that could
    not be read has no greedy answer either), else that the cell is empty or not a number."""
    import pandas as pd

    empty = pd.Series("", index=frame.index)
    own = frame[error_column(score_column)] if error_column(score_column) in frame else empty
    video = frame["error"] if "error" in frame else empty
    reason = own.fillna("").astype(str).str.strip()
    reason = reason.where(reason != "", video.fillna("").astype(str).str.strip())
    raw = frame[score_column].fillna("").astype(str).str.strip()
    fallback = raw.map(lambda cell: f"no {score_column}" if cell == "" else f"{score_column} {cell!r} is not a number")
    return reason.where(reason != "", fallback)


def _table(path: str):
    try:
        return read_table(path)
    except ValueError as err:  # not readable as its format says
        raise MatchError(str(err)) from None


def _refuse_empty(path: str) -> None:
    if os.path.isfile(path) and os.path.getsize(path) == 0:
        raise MatchError(f"{path}: empty file, no predictions")


def _with_rows(frame, path: str):
    if frame.empty:
        raise MatchError(f"{path}: no prediction rows")
    return frame


def dimension_columns_of(path: str) -> list[str]:
    """The per-dimension score columns (``pred_mos_<dimension>``) of a prediction table (none for a
    LLaMA-Factory ``generated_predictions.jsonl``)."""
    _refuse_empty(path)
    if path.endswith(".jsonl") and _is_llamafactory_output(path):
        return []
    return [c for c in _with_rows(_table(path), path).columns if str(c).startswith(PRED + "_")]


def _is_llamafactory_output(path: str) -> bool:
    with open(path, encoding="utf-8") as handle:
        first = handle.readline()
    try:
        return "predict" in json.loads(first)
    except json.JSONDecodeError:
        return False


def _duplicates(values, what: str, path: str) -> None:
    counts = values.value_counts()
    repeated = counts[counts > 1]
    if len(repeated):
        shown = ", ".join(f"{v!r} x{n}" for v, n in repeated.head(10).items())
        raise MatchError(f"{path}: duplicate {what} ids: {shown}")


def match(
    pred, pred_path: str, labels, labels_path: str, video_column: str, mos_column: str, labelled_only: bool = False,
    answered_only: bool = False,
):
    """(pred array, MOS array, ids, unanswered) paired by video id; any missing or duplicate id is an error.

    With ``labelled_only`` the predictions of videos that have no label are left
    out instead of being an error: to evaluate one
    split of a file that scored more videos. A labelled video without a
    prediction is an error either way. A video whose score is empty (scoring failed, or a greedy answer held no
    score) is an error too, with its reason; with ``answered_only`` it is left out and listed in ``unanswered``
    ({video: reason}).
    """
    import pandas as pd

    labels = labels.copy()
    labels[video_column] = labels[video_column].astype(str).str.strip()
    _duplicates(labels[video_column], "video", labels_path)
    if "position" in pred.columns:  # LLaMA-Factory output: same order as the dataset
        if len(pred) != len(labels):
            raise MatchError(f"{pred_path}: {len(pred)} predictions for {len(labels)} labelled rows in {labels_path}")
        pred = pred.assign(**{VIDEO: labels[video_column].values})
    _duplicates(pred[VIDEO], "video", pred_path)
    merged = labels.merge(pred, left_on=video_column, right_on=VIDEO, how="outer", indicator=True)
    missing = merged.loc[merged["_merge"] == "left_only", video_column].tolist()
    extra = merged.loc[merged["_merge"] == "right_only", VIDEO].tolist()
    if labelled_only and not missing:
        merged = merged[merged["_merge"] == "both"]
    elif missing or extra:
        hint = "" if missing else " (use --labelled-only to evaluate the labelled videos only)"
        raise MatchError(
            f"{pred_path} vs {labels_path}: {len(missing)} labelled video(s) without prediction {missing[:10]}, "
            f"{len(extra)} prediction(s) without label {extra[:10]}{hint}"
        )
    failed = merged[PRED].isna()
    unanswered = dict(zip(merged.loc[failed, video_column], merged.loc[failed, REASON]))
    if unanswered and not answered_only:
        shown = "; ".join(f"{video}: {reason}" for video, reason in list(unanswered.items())[:5])
        raise MatchError(f"{pred_path}: {len(unanswered)} of {len(merged)} video(s) have no score ({shown}); "
                         "--answered-only evaluates the others and lists these")
    merged = merged[~failed]
    mos = pd.to_numeric(merged[mos_column], errors="coerce")
    if mos.isna().any():
        bad = merged.loc[mos.isna(), video_column].tolist()
        raise MatchError(f"{labels_path}: non-numeric {mos_column} for {bad[:10]}")
    return merged[PRED].to_numpy(float), mos.to_numpy(float), merged[video_column].tolist(), unanswered


def read_labels(path: str, video_column: str, mos_column: str):
    """A labels table whose video ids and MOS pass training's checks (see ``annotations.check_labels``)."""
    from ..data.annotations import check_labels

    frame = _table(path)
    if frame.empty:
        raise MatchError(f"{path}: no label rows")
    for column in (video_column, mos_column):
        if column not in frame.columns:
            raise MatchError(f"{path}: no {column!r} column (columns: {list(frame.columns)})")
    check_labels(path, frame, video_column, mos_column)
    return frame
