"""Threshold-free and threshold-based metrics for out-of-distribution detection.

Conventions used throughout the course:

* every score follows "higher = more in-distribution" (ID);
* the in-distribution samples are the *positive* class;
* every metric is returned as a Python ``float`` in percent.

All functions take two 1-d score vectors, ``scores_in`` (ID test samples) and ``scores_out``
(OOD test samples), as numpy arrays or torch tensors. They are computed in float64 numpy, from
one sort of the pooled scores, without scikit-learn (the tests compare against it).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ._arrays import score_vector

__all__ = ["auroc", "threshold_at_tpr", "fpr_at_95_tpr", "aupr_in", "aupr_out", "roc_curve", "ood_metrics"]


def _validate(scores_in: Any, scores_out: Any) -> tuple[np.ndarray, np.ndarray]:
    """Check both score vectors and return them as float64 numpy arrays."""
    return score_vector(scores_in, "scores_in"), score_vector(scores_out, "scores_out")


def _counts_by_threshold(s_in: np.ndarray, s_out: np.ndarray):
    """Cumulative true and false positives when accepting every score ``>= t``.

    ``t`` runs over the distinct pooled scores in decreasing order, so tied scores enter
    together. Returns ``(tps, fps, thresholds)``, each of length ``#distinct scores``.
    """
    scores = np.concatenate([s_in, s_out])
    is_in = np.concatenate([np.ones(len(s_in)), np.zeros(len(s_out))])
    order = np.argsort(-scores, kind="mergesort")
    scores, is_in = scores[order], is_in[order]
    # last position of every run of equal scores
    last = np.r_[np.flatnonzero(np.diff(scores) != 0), len(scores) - 1]
    tps = np.cumsum(is_in)[last]
    fps = (last + 1) - tps
    return tps, fps, scores[last]


def roc_curve(scores_in: Any, scores_out: Any) -> tuple[np.ndarray, np.ndarray]:
    """ROC curve with the in-distribution samples as positives.

    Parameters
    ----------
    scores_in : array or tensor, shape (N_in,)
        Scores of in-distribution samples (higher = more ID).
    scores_out : array or tensor, shape (N_out,)
        Scores of out-of-distribution samples.

    Returns
    -------
    fpr, tpr : numpy float64 arrays, shape (T + 1,)
        Fractions (0..1, not percent) of OOD and ID samples accepted by the rule
        ``score >= t``, for every distinct score ``t`` in decreasing order, preceded by the
        point (0, 0). Every intermediate point is kept (scikit-learn's
        ``roc_curve(..., drop_intermediate=False)`` gives the same points).
    """
    return _roc(*_validate(scores_in, scores_out))


def _roc(s_in: np.ndarray, s_out: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    tps, fps, _ = _counts_by_threshold(s_in, s_out)
    return np.r_[0.0, fps / len(s_out)], np.r_[0.0, tps / len(s_in)]


def auroc(scores_in: Any, scores_out: Any) -> float:
    """Area under the ROC curve in percent, ID positive.

    Equals the probability that a random ID sample scores higher than a random OOD sample,
    counting ties as one half, times 100 (scikit-learn's ``roc_auc_score(labels, scores) * 100``
    with ``labels = 1`` for ID). 100 = perfect separation, 50 = chance, 0 = perfectly reversed.

    Parameters
    ----------
    scores_in : array or tensor, shape (N_in,)
    scores_out : array or tensor, shape (N_out,)

    Returns
    -------
    float, in [0, 100]
    """
    return _auroc(*_validate(scores_in, scores_out))


def _auroc(s_in: np.ndarray, s_out: np.ndarray) -> float:
    fpr, tpr = _roc(s_in, s_out)
    # trapezoids: ties between ID and OOD give a diagonal step, i.e. a half count
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2.0) * 100.0)


def threshold_at_tpr(scores_in: Any, *, tpr: float = 0.95) -> float:
    """The score threshold that accepts a fraction ``tpr`` of the in-distribution samples.

    A sample is accepted when ``score >= t``. ``t`` is the largest score such that at least
    ``ceil(tpr * N_in)`` of ``scores_in`` are ``>= t``: sort them in decreasing order and take
    the ``ceil(tpr * N_in)``-th one (the ``(1 - tpr)`` lower quantile, no interpolation).
    This is the threshold behind :func:`fpr_at_95_tpr`; computed on held-out known data (never
    on OOD data, which a deployed system does not have), it accepts about ``tpr`` of further
    known data.

    Parameters
    ----------
    scores_in : array or tensor, shape (N_in,)
        Scores of in-distribution samples (higher = more ID).
    tpr : float in (0, 1], default 0.95

    Returns
    -------
    float: one of the values of ``scores_in``.
    """
    return _threshold(score_vector(scores_in, "scores_in"), tpr)


def _threshold(s_in: np.ndarray, tpr: float) -> float:
    if not 0.0 < float(tpr) <= 1.0:
        raise ValueError(f"tpr must be in (0, 1], got {tpr}")
    # smallest k with k / N_in >= tpr (tolerance guards against 0.95 * 20 = 18.999...)
    k = max(1, int(np.ceil(tpr * len(s_in) - 1e-9)))
    return float(np.sort(s_in)[::-1][k - 1])


def fpr_at_95_tpr(scores_in: Any, scores_out: Any, *, tpr: float = 0.95) -> float:
    """Percentage of OOD samples accepted when 95% of the ID samples are accepted.

    A sample is accepted as in-distribution when ``score >= t``, with ``t`` from
    :func:`threshold_at_tpr` on the ID scores (the largest score such that at least
    ``ceil(tpr * N_in)`` ID scores are ``>= t``). This is the definition of Hendrycks et al.
    used by the PLP and MCM papers (ID = positive). OpenOOD and pytorch-ood report the FPR with
    OOD as the positive class instead, a different number.

    Ties: every sample whose score equals ``t`` is accepted. The ID acceptance rate can
    therefore exceed ``tpr`` when ID scores tie at ``t``, and OOD samples tied with ``t``
    count as false positives (the pessimistic choice).

    Parameters
    ----------
    scores_in : array or tensor, shape (N_in,)
    scores_out : array or tensor, shape (N_out,)
    tpr : float in (0, 1], default 0.95
        Fraction of ID samples the threshold must accept.

    Returns
    -------
    float, in [0, 100]; lower is better.
    """
    return _fpr_at_tpr(*_validate(scores_in, scores_out), tpr)


def _fpr_at_tpr(s_in: np.ndarray, s_out: np.ndarray, tpr: float) -> float:
    return float(np.mean(s_out >= _threshold(s_in, tpr)) * 100.0)


def _average_precision(pos: np.ndarray, neg: np.ndarray) -> float:
    """Step-wise average precision, ``sum_n (R_n - R_{n-1}) P_n`` over distinct thresholds."""
    tps, fps, _ = _counts_by_threshold(pos, neg)
    precision = tps / (tps + fps)
    recall = tps / len(pos)
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision) * 100.0)


def aupr_in(scores_in: Any, scores_out: Any) -> float:
    """Area under the precision-recall curve in percent, ID positive, on the scores.

    Computed as average precision (no interpolation, equal to scikit-learn's
    ``average_precision_score(labels, scores) * 100`` with ``labels = 1`` for ID). Its chance
    level is the ID fraction ``N_in / (N_in + N_out)``, not 50.

    Parameters
    ----------
    scores_in, scores_out : arrays or tensors of shapes (N_in,) and (N_out,)

    Returns
    -------
    float, in [0, 100]; chance is ``100 * N_in / (N_in + N_out)``
    """
    s_in, s_out = _validate(scores_in, scores_out)
    return _average_precision(s_in, s_out)


def aupr_out(scores_in: Any, scores_out: Any) -> float:
    """Area under the precision-recall curve in percent, OOD positive, on the negated scores.

    Equals ``average_precision_score(1 - labels, -scores) * 100``. Chance level is the OOD
    fraction ``N_out / (N_in + N_out)``. Arguments and result as for :func:`aupr_in`.
    """
    s_in, s_out = _validate(scores_in, scores_out)
    return _average_precision(-s_out, -s_in)


def ood_metrics(scores_in: Any, scores_out: Any) -> dict[str, float]:
    """All four metrics at once.

    Returns
    -------
    dict with keys ``"auroc"``, ``"fpr95"``, ``"aupr_in"``, ``"aupr_out"`` (floats, percent).
    """
    s_in, s_out = _validate(scores_in, scores_out)  # once, for all four
    return {
        "auroc": _auroc(s_in, s_out),
        "fpr95": _fpr_at_tpr(s_in, s_out, 0.95),
        "aupr_in": _average_precision(s_in, s_out),
        "aupr_out": _average_precision(-s_out, -s_in),
    }
