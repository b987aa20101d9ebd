"""Threshold-free and threshold-based metrics for out-of-distribution detection.

A thin layer over scikit-learn (``roc_auc_score``, ``roc_curve``, ``average_precision_score``)
that fixes the course's conventions:

* every score follows "higher = more in-distribution" (ID);
* the in-distribution samples are the *positive* class;
* every metric is returned as a Python ``float`` in percent;
* FPR@95TPR is Hendrycks et al.'s (ID positive), which scikit-learn has no function for.

All functions take two 1-d score vectors, ``scores_in`` (ID test samples) and ``scores_out``
(OOD test samples), as numpy arrays or torch tensors. Each public function validates them
once and passes float64 numpy arrays to the private kernels below (``_auroc``, ``_fpr_at_tpr``,
``_aupr_in``, ``_aupr_out``, ``_ood_metrics``), which validate nothing again; scikit-learn's
own finiteness scan is switched off for them (``assume_finite``), since it was just done.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ._arrays import score_vector

__all__ = ["auroc", "threshold_at_tpr", "fpr_at_95_tpr", "aupr_in", "aupr_out", "roc_curve",
           "ood_metrics"]


def _validate(scores_in: Any, scores_out: Any) -> tuple[np.ndarray, np.ndarray]:
    """Check both score vectors and return them as float64 numpy arrays."""
    return score_vector(scores_in, "scores_in"), score_vector(scores_out, "scores_out")


def _pooled(positive: np.ndarray, negative: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(labels, scores)`` for scikit-learn: label 1 for ``positive``, 0 for ``negative``."""
    labels = np.r_[np.ones(len(positive)), np.zeros(len(negative))]
    return labels, np.concatenate([positive, negative])


def _sklearn():
    """scikit-learn's metrics and its ``config_context``, imported on first use (importing
    ``sklearn.metrics`` takes seconds, which every notebook and grader process would pay)."""
    import sklearn
    from sklearn import metrics as skm

    return skm, sklearn.config_context


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
        ``roc_curve(..., drop_intermediate=False)``).
    """
    return _roc(*_validate(scores_in, scores_out))


def _roc(s_in: np.ndarray, s_out: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    skm, config = _sklearn()
    with config(assume_finite=True):
        fpr, tpr, _ = skm.roc_curve(*_pooled(s_in, s_out), drop_intermediate=False)
    return fpr, tpr


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
    skm, config = _sklearn()
    with config(assume_finite=True):
        return float(skm.roc_auc_score(*_pooled(s_in, s_out)) * 100.0)


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
    # the k-th largest = the (N - k)-th smallest; a partial sort finds it
    return float(np.partition(s_in, len(s_in) - k)[len(s_in) - k])


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


def _average_precision(positive: np.ndarray, negative: np.ndarray) -> float:
    skm, config = _sklearn()
    with config(assume_finite=True):
        return float(skm.average_precision_score(*_pooled(positive, negative)) * 100.0)


def _aupr_in(s_in: np.ndarray, s_out: np.ndarray) -> float:
    return _average_precision(s_in, s_out)


def _aupr_out(s_in: np.ndarray, s_out: np.ndarray) -> float:
    return _average_precision(-s_out, -s_in)


def aupr_in(scores_in: Any, scores_out: Any) -> float:
    """Area under the precision-recall curve in percent, ID positive, on the scores.

    Computed as average precision (no interpolation: scikit-learn's
    ``average_precision_score(labels, scores) * 100`` with ``labels = 1`` for ID). Its chance
    level is the ID fraction ``N_in / (N_in + N_out)``, not 50.

    Parameters
    ----------
    scores_in, scores_out : arrays or tensors of shapes (N_in,) and (N_out,)

    Returns
    -------
    float, in [0, 100]; chance is ``100 * N_in / (N_in + N_out)``
    """
    return _aupr_in(*_validate(scores_in, scores_out))


def aupr_out(scores_in: Any, scores_out: Any) -> float:
    """Area under the precision-recall curve in percent, OOD positive, on the negated scores.

    Equals ``average_precision_score(1 - labels, -scores) * 100``. Chance level is the OOD
    fraction ``N_out / (N_in + N_out)``. Arguments and result as for :func:`aupr_in`.
    """
    return _aupr_out(*_validate(scores_in, scores_out))


def ood_metrics(scores_in: Any, scores_out: Any) -> dict[str, float]:
    """All four metrics at once, from one validation of the scores.

    Returns
    -------
    dict with keys ``"auroc"``, ``"fpr95"``, ``"aupr_in"``, ``"aupr_out"`` (floats, percent).
    """
    return _ood_metrics(*_validate(scores_in, scores_out))


def _ood_metrics(s_in: np.ndarray, s_out: np.ndarray) -> dict[str, float]:
    """Kernel of :func:`ood_metrics` on validated float64 arrays."""
    return {
        "auroc": _auroc(s_in, s_out),
        "fpr95": _fpr_at_tpr(s_in, s_out, 0.95),
        "aupr_in": _aupr_in(s_in, s_out),
        "aupr_out": _aupr_out(s_in, s_out),
    }
