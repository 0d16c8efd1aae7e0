"""Weighted ensembles of prediction files, and fitting their weights.

The paper averages five models with weights 0.25, 0.15, 0.25, 0.10, 0.25
(``examples/ensemble_paper.yaml``). ``fit_weights`` finds non-negative
weights summing to 1 that maximise the final score (SRCC + PLCC) / 2 on a
labelled validation split.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..config import TAOBAO_MOS_COLUMN, TAOBAO_VIDEO_COLUMN
from .metrics import compute_metrics
from .predictions import PRED, VIDEO, MatchError, read_predictions


@dataclass
class Member:
    name: str
    predictions: str
    weight: float


def load_config(path: str) -> list[Member]:
    """Members from a YAML file: ``members: [{name, predictions, weight}, ...]``."""
    import os

    import yaml

    with open(path, encoding="utf-8") as handle:
        config = yaml.safe_load(handle)
    base = os.path.dirname(os.path.abspath(path))
    members = []
    for i, entry in enumerate(config.get("members", []), start=1):
        for key in ("predictions", "weight"):
            if key not in entry:
                raise ValueError(f"{path}: member {i} has no {key!r}")
        predictions = entry["predictions"]
        if not os.path.isabs(predictions) and not os.path.exists(predictions):
            predictions = os.path.join(base, predictions)
        members.append(Member(str(entry.get("name", f"member{i}")), predictions, float(entry["weight"])))
    if not members:
        raise ValueError(f"{path}: no members")
    return members


def check_weights(weights: np.ndarray) -> None:
    if (weights < 0).any():
        raise ValueError(f"ensemble weights must be non-negative, got {weights.tolist()}")
    if not np.isclose(weights.sum(), 1.0, atol=1e-6):
        raise ValueError(f"ensemble weights must sum to 1, got {weights.sum():.6f} ({weights.tolist()})")


def aligned_scores(paths: list[str], score_column: str = PRED):
    """(ids, matrix[video, member]) of several prediction files matched by video id, in the first file's order."""
    frames = [read_predictions(p, score_column=score_column) for p in paths]
    ids = None
    for path, frame in zip(paths, frames):
        if VIDEO not in frame.columns:
            raise MatchError(f"{path}: ensembles need prediction files with a {VIDEO!r} column")
        if frame[VIDEO].duplicated().any():
            raise MatchError(f"{path}: duplicate video ids {frame.loc[frame[VIDEO].duplicated(), VIDEO].tolist()[:10]}")
        failed = frame.loc[frame[PRED].isna(), VIDEO].tolist()
        if failed:
            raise MatchError(f"{path}: {len(failed)} video(s) without score: {failed[:10]}")
        these = set(frame[VIDEO])
        if ids is None:
            ids, first = these, path
        elif these != ids:
            raise MatchError(
                f"{path} and {first} score different videos: {sorted(these - ids)[:10]} vs {sorted(ids - these)[:10]}"
            )
    order = frames[0][VIDEO].tolist()
    matrix = np.stack([f.set_index(VIDEO).loc[order, PRED].to_numpy(float) for f in frames], axis=1)
    return order, matrix


def combine(matrix: np.ndarray, weights: np.ndarray) -> np.ndarray:
    check_weights(weights)
    return matrix @ weights


def fit_weights(matrix: np.ndarray, mos: np.ndarray, restarts: int = 8, seed: int = 0) -> np.ndarray:
    """Non-negative weights summing to 1 that maximise (SRCC + PLCC) / 2 of ``matrix @ w`` against ``mos``.

    Weights are a softmax of free parameters (so the constraints always hold),
    optimised with Nelder-Mead from equal weights and random restarts (SRCC is
    piecewise constant, so a gradient method would stall).
    """
    from scipy.optimize import minimize

    members = matrix.shape[1]

    def weights_of(z):
        e = np.exp(z - z.max())
        return e / e.sum()

    def loss(z):
        final = compute_metrics(matrix @ weights_of(z), mos)["final"]
        return 1.0 if np.isnan(final) else -final

    rng = np.random.default_rng(seed)
    starts = [np.zeros(members)] + [rng.normal(0, 1.0, members) for _ in range(restarts)]
    best = min((minimize(loss, z0, method="Nelder-Mead", options={"maxiter": 400, "xatol": 1e-4}) for z0 in starts),
               key=lambda r: r.fun)
    weights = weights_of(best.x)
    equal = np.full(members, 1.0 / members)
    if loss(np.log(equal)) <= best.fun:  # never return worse than equal weights
        weights = equal
    return weights


def members_from_files(paths: list[str], weights: list[float] | None = None) -> list[Member]:
    """Members from prediction files (named by file), equal weights unless given."""
    import os

    if weights is not None and len(weights) != len(paths):
        raise ValueError(f"{len(paths)} prediction files but {len(weights)} weights")
    weights = weights if weights is not None else [1.0 / len(paths)] * len(paths)
    return [Member(os.path.basename(p), p, float(w)) for p, w in zip(paths, weights)]


def run_ensemble(
    config: str | list[Member],
    out_path: str,
    fit_labels: str | None = None,
    video_column: str = TAOBAO_VIDEO_COLUMN,
    mos_column: str = TAOBAO_MOS_COLUMN,
    score_column: str = PRED,
) -> dict:
    """Write the weighted ensemble of the members (a YAML config path, or a list); optionally fit the weights on
    labels first."""
    import pandas as pd

    members = load_config(config) if isinstance(config, str) else list(config)
    ids, scores, summary = _ensemble(members, fit_labels, video_column, mos_column, score_column)
    pd.DataFrame({VIDEO: ids, PRED: scores}).to_csv(out_path, index=False)
    _write_meta(out_path, members, summary, score_column)
    summary.update(out=out_path)
    return summary


def run_ensemble_dimensions(
    config: str | list[Member],
    out_path: str,
    mos_columns: dict[str, str],
    fit_labels: str | None = None,
    video_column: str = TAOBAO_VIDEO_COLUMN,
    score_column: str = PRED,
) -> dict:
    """The ensemble of multi-dimension prediction files, dimension by dimension.

    Dimension ``d`` combines the members' ``<score_column>_<d>`` columns (weights fitted on the labels'
    ``mos_columns[d]`` when ``fit_labels`` is given, separately per dimension). The output has
    ``pred_mos_<d>`` per dimension and ``pred_mos``, their mean.
    """
    import pandas as pd

    members = load_config(config) if isinstance(config, str) else list(config)
    columns, summary, order = {}, {"dimensions": {}}, None
    for name, mos_column in mos_columns.items():
        ids, scores, part = _ensemble(members, fit_labels, video_column, mos_column, f"{score_column}_{name}")
        if order is not None and ids != order:
            raise MatchError(f"dimension {name!r}: the members score other videos than for the other dimensions")
        order, columns[f"{PRED}_{name}"] = ids, scores
        summary["dimensions"][name] = part
    table = pd.DataFrame({VIDEO: order, PRED: np.mean(list(columns.values()), axis=0), **columns})
    table.to_csv(out_path, index=False)
    summary.update(members=[m.name for m in members])
    _write_meta(out_path, members, summary, score_column, mos_columns)
    summary.update(out=out_path)
    return summary


def _write_meta(out_path: str, members: list[Member], summary: dict, score_column: str,
                mos_columns: dict[str, str] | None = None) -> None:
    """The ensemble's ``.meta.json``, as the scorer writes one: its members and, with several quality dimensions,
    the dimensions and their MOS columns (so that ``iovqa eval`` knows what each column is)."""
    from ..data.dimensions import OVERALL
    from ..score.prediction_file import write_meta

    meta = {"ensemble": {"members": [{"name": m.name, "predictions": m.predictions} for m in members],
                         "score_column": score_column,
                         "weights": summary.get("used_weights") or {d: part["used_weights"] for d, part in
                                                                    summary.get("dimensions", {}).items()}}}
    if mos_columns:
        meta["dimensions"] = list(mos_columns)
        meta["dimension_columns"] = {name: column for name, column in mos_columns.items() if name != OVERALL}
    write_meta(out_path, meta)


def _ensemble(members: list[Member], fit_labels: str | None, video_column: str, mos_column: str,
              score_column: str) -> tuple[list[str], np.ndarray, dict]:
    """(video ids, ensemble scores, summary) of one score column of the members."""
    from .predictions import read_labels

    check_weights(np.array([m.weight for m in members]))
    ids, matrix = aligned_scores([m.predictions for m in members], score_column)
    weights = np.array([m.weight for m in members])
    summary = {"members": [m.name for m in members], "weights": weights.tolist()}
    if fit_labels:
        labels = read_labels(fit_labels, video_column, mos_column)
        labels[video_column] = labels[video_column].astype(str).str.strip()
        by_id = labels.set_index(video_column)[mos_column].astype(float)
        missing = [i for i in ids if i not in by_id.index]
        if missing:
            raise MatchError(f"{fit_labels}: no MOS for {len(missing)} scored video(s): {missing[:10]}")
        mos = by_id.loc[ids].to_numpy(float)
        equal = np.full(len(members), 1.0 / len(members))
        fitted = fit_weights(matrix, mos)
        summary.update(
            configured=compute_metrics(combine(matrix, weights), mos),
            equal=compute_metrics(combine(matrix, equal), mos),
            fitted=compute_metrics(combine(matrix, fitted), mos),
            fitted_weights=fitted.tolist(),
        )
        summary["gain_over_equal"] = summary["fitted"]["final"] - summary["equal"]["final"]
        weights = fitted
    summary.update(used_weights=weights.tolist())
    return list(ids), combine(matrix, weights), summary
