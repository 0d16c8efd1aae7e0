"""Quality-score metrics: SRCC, PLCC, the paper's final score, and more.

Conventions follow pyiqa: higher is better for the correlations, lower for
RMSE. ``final = (SRCC + PLCC) / 2`` as in the challenge. ``plcc_logistic`` is
PLCC after the standard 4-parameter logistic mapping of predictions to MOS
(the VQEG practice for comparing metrics with different scales). The fitted
curve may decrease, so the correlation of the mapped predictions is always
positive; ``plcc_logistic`` carries the sign of the relation (PLCC's sign), so
a model that ranks videos backwards shows negative SRCC, PLCC and
``plcc_logistic`` alike.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

METRICS = ("srcc", "plcc", "final", "krcc", "rmse", "plcc_logistic")
LOWER_BETTER = {"rmse"}
PLCC_LOGISTIC_NOTE = "PLCC after a 4-parameter logistic fit of predictions to MOS, with the sign of PLCC"


def _arrays(pred: Sequence[float], mos: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    pred = np.asarray(pred, dtype=np.float64)
    mos = np.asarray(mos, dtype=np.float64)
    if pred.shape != mos.shape or pred.ndim != 1:
        raise ValueError(f"predictions and MOS must be 1-D and of equal length, got {pred.shape} and {mos.shape}")
    if len(pred) < 3:
        raise ValueError(f"correlations need at least 3 pairs, got {len(pred)}")
    if not (np.isfinite(pred).all() and np.isfinite(mos).all()):
        raise ValueError("predictions and MOS must be finite numbers")
    return pred, mos


def logistic4(x: np.ndarray, beta1: float, beta2: float, beta3: float, beta4: float) -> np.ndarray:
    """VQEG 4-parameter logistic: (b1 - b2) / (1 + exp(-(x - b3) / |b4|)) + b2."""
    from scipy.special import expit  # overflow-free 1 / (1 + exp(-z))

    return (beta1 - beta2) * expit((x - beta3) / (abs(beta4) + 1e-12)) + beta2


def fit_logistic(pred: np.ndarray, mos: np.ndarray) -> np.ndarray:
    """Parameters of :func:`logistic4` mapping ``pred`` to ``mos`` (least squares)."""
    import warnings

    from scipy.optimize import OptimizeWarning, curve_fit

    start = [mos.max(), mos.min(), float(np.mean(pred)), float(np.std(pred)) or 1.0]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", OptimizeWarning)  # parameter covariance is not used
            params, _ = curve_fit(logistic4, pred, mos, p0=start, maxfev=20000)
    except (RuntimeError, ValueError, TypeError):  # TypeError: fewer points than the curve's 4 parameters
        params = np.asarray(start)  # no convergence: fall back to the starting curve
    return params


def compute_metrics(pred: Sequence[float], mos: Sequence[float]) -> dict[str, float]:
    """All metrics of ``pred`` against ``mos`` (NaN correlation when a side is constant)."""
    from scipy import stats

    pred, mos = _arrays(pred, mos)
    constant = np.ptp(pred) == 0 or np.ptp(mos) == 0
    srcc = float("nan") if constant else float(stats.spearmanr(pred, mos).statistic)
    plcc = float("nan") if constant else float(stats.pearsonr(pred, mos).statistic)
    krcc = float("nan") if constant else float(stats.kendalltau(pred, mos).statistic)
    if constant:
        plcc_logistic = float("nan")
    else:
        fitted = logistic4(pred, *fit_logistic(pred, mos))
        fit = float(stats.pearsonr(fitted, mos).statistic) if np.ptp(fitted) > 0 else float("nan")
        plcc_logistic = float(np.copysign(abs(fit), plcc))  # the sign of the relation, as PLCC's
    return {
        "srcc": srcc,
        "plcc": plcc,
        "final": (srcc + plcc) / 2,
        "krcc": krcc,
        "rmse": float(np.sqrt(np.mean((pred - mos) ** 2))),
        "plcc_logistic": plcc_logistic,
        "n": int(len(pred)),
    }
