"""Class Anchor Clustering (CAC; Miller et al., WACV 2021): the method.

A classifier over ``N`` known classes is turned into a distance-based open-set recogniser:

* the network's ``N`` logits are the point ``z`` in the anchor space (as in the paper; the CAC
  project notebook of seed 004 adds one more ``N x N`` linear layer, ``extra_layer=True``);
* every known class ``j`` owns a fixed anchor ``c_j = alpha * e_j`` (:func:`class_anchors`);
* the network outputs the Euclidean distances ``d_j = ||z - c_j||`` (:func:`anchor_distances`,
  shape ``(B, N)``).

Training pulls each sample towards its own anchor and away from the others with
(:func:`cac_loss`)

    L(x, y) = log(1 + sum_{j != y} exp(d_y - d_j)) + lambda * d_y

and a test sample is scored with ``s_j = d_j * (1 - softmin(d)_j)`` (:func:`cac_class_scores`):
the predicted class is ``argmin_j s_j`` and the sample is called *unknown* when ``min_j s_j``
exceeds a threshold (:func:`open_set_predict`, class id ``N`` for unknown). Following the
course convention (higher = more in-distribution), :func:`cac_known_scores` returns
``-min_j s_j``.

This module is the method only: it knows nothing of profiles, files or caches. Notebook 07's
experiment (data, the baseline CNN, training loops, the cache) is
:mod:`ood_utils.course.cac_experiment`.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from ._arrays import check_array, check_labels, is_tensor, to_numpy, to_tensor
from .metrics import auroc, threshold_at_tpr

DEFAULT_ALPHA = 10.0
DEFAULT_LAMBDA = 0.1
#: The rule of the original CAC project notebook (seed 004): unknown when ``min_j s_j > 0.5``.
ORIGINAL_THRESHOLD = 0.5
#: Share of known samples accepted by the data-driven threshold (:func:`metrics.threshold_at_tpr`).
DEFAULT_TPR = 0.95


# --------------------------------------------------------------------------------------------
# Anchors, distances and the model
# --------------------------------------------------------------------------------------------
def class_anchors(num_classes: int, *, alpha: float = DEFAULT_ALPHA,
                  dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """The fixed class anchors: row ``j`` is ``alpha * e_j`` -> ``(num_classes, num_classes)``."""
    if int(num_classes) < 2:
        raise ValueError(f"num_classes must be at least 2, got {num_classes}")
    if not alpha > 0:
        raise ValueError(f"alpha must be positive, got {alpha}")
    return float(alpha) * torch.eye(int(num_classes), dtype=dtype)


def anchor_distances(points: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
    """Euclidean (not squared) distances of every row of ``points`` to every anchor.

    Parameters
    ----------
    points : tensor, shape (B, N)
        Points ``z`` in the anchor space.
    anchors : tensor, shape (N, N)
        One anchor per row (:func:`class_anchors`).

    Returns
    -------
    tensor, shape (B, N): ``d[i, j] = ||points[i] - anchors[j]||_2``.

    Written out (rather than ``torch.cdist``) so that the gradient stays finite even for a
    point sitting exactly on an anchor.
    """
    if points.ndim != 2 or anchors.ndim != 2 or points.shape[1] != anchors.shape[1]:
        raise ValueError(f"points (B, N) and anchors (N, N) must share N, got "
                         f"{tuple(points.shape)} and {tuple(anchors.shape)}")
    diff = points.unsqueeze(1) - anchors.to(points.dtype).unsqueeze(0)
    return diff.pow(2).sum(-1).clamp_min(1e-12).sqrt()


class CACModel(nn.Module):
    """A classifier ``cnn`` followed by the CAC distance layer (optionally an ``N x N`` map first).

    Parameters
    ----------
    cnn : module mapping its input to ``num_classes`` logits (a whole CNN, or only its dense
        head when the convolutional features are fixed).
    num_classes : number of known classes ``N``.
    alpha : anchor magnitude; anchor ``j`` is ``alpha * e_j``. Ignored when ``anchors`` is given.
    anchors : ``(N, N)`` tensor of anchors to use instead of :func:`class_anchors` (e.g. a
        notebook's own implementation).
    distance_fn : ``distance_fn(points, anchors) -> (B, N)``; defaults to
        :func:`anchor_distances`.
    extra_layer : put one more ``N x N`` linear layer (``to_anchor_space``) between the logits
        and the anchors, as the CAC project notebook (seed 004) does. ``False``: the logits
        themselves are the anchor space, as in Miller et al. (notebook 07 uses that).

    ``forward(x)`` returns the distances ``(B, N)`` to the anchors; ``embed(x)`` the point
    ``z`` in the anchor space. The anchors are a buffer: saved with the weights, moved with
    ``.to()``, never updated by an optimiser.
    """

    def __init__(self, cnn: nn.Module, num_classes: int, *, alpha: float = DEFAULT_ALPHA,
                 anchors: torch.Tensor | None = None,
                 distance_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
                 extra_layer: bool = True):
        super().__init__()
        self.cnn = cnn
        self.num_classes = int(num_classes)
        self.alpha = float(alpha)
        if anchors is None:
            anchors = class_anchors(self.num_classes, alpha=alpha, dtype=torch.float32)
        anchors = torch.as_tensor(anchors).detach().clone()
        if anchors.shape != (self.num_classes, self.num_classes):
            raise ValueError(f"anchors must have shape ({self.num_classes}, {self.num_classes}), "
                             f"got {tuple(anchors.shape)}")
        self.to_anchor_space = (nn.Linear(self.num_classes, self.num_classes) if extra_layer
                                else nn.Identity())
        self.register_buffer("anchors", anchors.float())
        self.distance_fn = distance_fn or anchor_distances

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.cnn(x)
        if logits.ndim != 2 or logits.shape[1] != self.num_classes:
            raise ValueError(f"the cnn must output (B, {self.num_classes}) logits, "
                             f"got {tuple(logits.shape)}")
        return self.to_anchor_space(logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.embed(x)
        return self.distance_fn(z, self.anchors.to(z.dtype))


# --------------------------------------------------------------------------------------------
# Loss and scores
# --------------------------------------------------------------------------------------------
def _check_distances(distances: Any, name: str = "distances") -> None:
    check_array(distances, name, ndim=2)
    if distances.shape[1] < 2:
        raise ValueError(f"{name} must have one column per known class (at least 2), "
                         f"got shape {tuple(distances.shape)}")


def cac_loss(distances: Any, targets: Any, *, lambda_: float = DEFAULT_LAMBDA) -> Any:
    """The CAC loss, averaged over the batch.

    ``mean_i [ log(1 + sum_{j != y_i} exp(d_{i,y_i} - d_{i,j})) + lambda_ * d_{i,y_i} ]``.

    The first (tuplet) term equals ``logsumexp_j(d_y - d_j)`` (the ``j = y`` term is the 1),
    which is how it is computed here, without overflow for large distances.

    Parameters
    ----------
    distances : tensor or array, shape (B, N)
        Distances to the anchors (a tensor keeps the autograd graph; a numpy array gives a
        python float back).
    targets : shape (B,)
        Integer class ids in ``0..N-1``.
    lambda_ : float
        Weight of the anchor term.

    Returns
    -------
    0-d tensor (a python float for numpy input).
    """
    _check_distances(distances)
    check_labels(targets, "targets", distances.shape[0])
    d = distances if is_tensor(distances) else to_tensor(distances, "distances", torch.float64)
    y = to_tensor(targets, "targets").long().to(d.device)
    n = d.shape[1]
    if int(y.min()) < 0 or int(y.max()) >= n:
        raise ValueError(f"targets must lie in 0..{n - 1} (one column of distances per class), "
                         f"got values in {int(y.min())}..{int(y.max())}")
    d_true = d.gather(1, y[:, None])                      # (B, 1)
    tuplet = torch.logsumexp(d_true - d, dim=1)           # (B,)
    loss = (tuplet + lambda_ * d_true[:, 0]).mean()
    return loss if is_tensor(distances) else loss.item()


def _softmin(d: np.ndarray) -> np.ndarray:
    z = -d - (-d).max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def cac_class_scores(distances: Any) -> Any:
    """Per-class CAC scores ``s_j = d_j * (1 - softmin(d)_j)``; smaller = closer to class j.

    ``distances`` (N_samples, N) -> scores of the same shape and kind (numpy or torch).
    """
    _check_distances(distances)
    if is_tensor(distances):
        d = distances.detach()
        return d * (1 - torch.softmax(-d, dim=1))
    d = np.asarray(distances, dtype=np.float64)
    return d * (1 - _softmin(d))


def cac_predict(distances: Any) -> Any:
    """Closed-set prediction ``argmin_j s_j`` -> int64 ``(N_samples,)``, same kind as input."""
    s = cac_class_scores(distances)
    return s.argmin(dim=1) if is_tensor(s) else s.argmin(axis=1).astype(np.int64)


def cac_known_scores(distances: Any) -> Any:
    """Known-ness score ``-min_j s_j`` (higher = more likely a known class) -> ``(N_samples,)``.

    The paper thresholds ``min_j s_j`` from above (large = unknown); the sign is flipped here so
    that CAC follows the course convention shared by every other method.
    """
    s = cac_class_scores(distances)
    return -s.min(dim=1).values if is_tensor(s) else -s.min(axis=1)


def open_set_predict(distances: Any, *, threshold: float = ORIGINAL_THRESHOLD) -> Any:
    """Open-set prediction: ``argmin_j s_j``, or ``N`` (unknown) when ``min_j s_j > threshold``.

    Parameters
    ----------
    distances : shape (n, N)
    threshold : float
        On the paper's scale of ``min_j s_j`` (the original project notebook uses 0.5). A
        threshold ``t`` on the course's score :func:`cac_known_scores` is ``threshold = -t``.

    Returns
    -------
    int64, shape (n,), same kind as ``distances``: values ``0..N-1`` (a known class) or ``N``.
    """
    if not np.isfinite(threshold):
        raise ValueError(f"threshold must be a finite number, got {threshold}")
    s = cac_class_scores(distances)
    n = s.shape[1]
    if is_tensor(s):
        min_s, pred = s.min(dim=1)
        return torch.where(min_s > threshold, torch.full_like(pred, n), pred)
    pred = s.argmin(axis=1).astype(np.int64)
    return np.where(s.min(axis=1) > threshold, n, pred).astype(np.int64)


def open_set_confusion(labels: Any, predictions: Any, num_classes: int) -> np.ndarray:
    """The ``(N + 1) x (N + 1)`` open-set confusion matrix; the unknown class is the last.

    Parameters
    ----------
    labels : shape (n,)
        True classes ``0..N-1``, or ``N`` for an unknown sample.
    predictions : shape (n,)
        Predicted classes in the same coding (e.g. :func:`open_set_predict`).
    num_classes : int
        Number of known classes ``N``.

    Returns
    -------
    int64 array ``(N + 1, N + 1)``: entry ``[t, p]`` counts samples of true class ``t``
    predicted as ``p`` (rows: truth, columns: prediction, as scikit-learn's
    ``confusion_matrix``).
    """
    check_array(predictions, "predictions", ndim=1)
    check_labels(labels, "labels", predictions.shape[0])
    t = to_numpy(labels, "labels").astype(np.int64)
    p = to_numpy(predictions, "predictions").astype(np.int64)
    k = int(num_classes) + 1
    for name, v in (("labels", t), ("predictions", p)):
        if len(v) and (v.min() < 0 or v.max() >= k):
            raise ValueError(f"{name} must lie in 0..{k - 1} ({num_classes} known classes and "
                             f"{num_classes} for unknown), got {v.min()}..{v.max()}")
    return np.bincount(t * k + p, minlength=k * k).reshape(k, k).astype(np.int64)


def closed_set_accuracy(predictions: Any, labels: Any) -> float:
    """Percentage of ``predictions`` equal to ``labels`` (both ``(N,)`` integer arrays)."""
    check_array(predictions, "predictions", ndim=1)
    check_labels(labels, "labels", predictions.shape[0])
    return float((to_numpy(predictions, "predictions") == to_numpy(labels, "labels")).mean() * 100)


def original_threshold(raw_threshold: float = ORIGINAL_THRESHOLD) -> float:
    """The original project notebook's fixed rule on the course's score scale.

    "Unknown when ``min_j s_j > raw_threshold``" is "known when ``score >= -raw_threshold``"
    for ``score = -min_j s_j``; returns ``-raw_threshold``.
    """
    return -float(raw_threshold)


def known_unknown_confusion(scores_known: Any, scores_unknown: Any, threshold: float
                            ) -> tuple[np.ndarray, float, float]:
    """Known/unknown decision at ``threshold`` and its 2 x 2 confusion matrix.

    A sample is accepted as *known* when its score (higher = more known, e.g.
    :func:`cac_known_scores`) is ``>= threshold`` and rejected as *unknown* otherwise.

    Returns
    -------
    matrix : int64 ``(2, 2)``: ``[[known->known, known->unknown], [unknown->known,
        unknown->unknown]]`` (rows: truth, columns: decision).
    known_accepted : percentage of known samples accepted (``matrix[0, 0] / n_known``).
    unknown_rejected : percentage of unknown samples rejected (``matrix[1, 1] / n_unknown``).
    """
    check_array(scores_known, "scores_known", ndim=1)
    check_array(scores_unknown, "scores_unknown", ndim=1)
    if not np.isfinite(threshold):
        raise ValueError(f"threshold must be a finite number, got {threshold}")
    k = to_numpy(scores_known, "scores_known") >= threshold
    u = to_numpy(scores_unknown, "scores_unknown") >= threshold
    matrix = np.array([[k.sum(), (~k).sum()], [u.sum(), (~u).sum()]], dtype=np.int64)
    return matrix, float(k.mean() * 100), float((~u).mean() * 100)


def open_set_summary(dist_val: Any, dist_test: Any, test_labels: Any, dist_unknown: Any, *,
                     tpr: float = DEFAULT_TPR, raw_threshold: float = ORIGINAL_THRESHOLD) -> dict:
    """The numbers notebook 07 reports for a trained CAC model.

    Parameters
    ----------
    dist_val, dist_test, dist_unknown : shape (n, N)
        Distances of held-out known, known test and unknown test images.
    test_labels : shape (n_test,)
        Classes of the known test images.
    tpr : share of ``dist_val`` the data-driven threshold accepts.
    raw_threshold : the original notebook's fixed threshold on ``min_j s_j``.

    Returns
    -------
    dict: ``accuracy`` (closed-set, percent), ``auroc`` (known vs unknown, percent, via
    :func:`ood_utils.methods.metrics.auroc`), ``threshold_tpr`` (chosen on ``dist_val`` to accept
    ``tpr`` of it, :func:`ood_utils.methods.metrics.threshold_at_tpr`) with
    ``known_accepted_tpr``/``unknown_rejected_tpr``/``matrix_tpr`` on the test sets, and the
    same for the original notebook's fixed rule (``*_original``).
    """
    s_val, s_known, s_unknown = (cac_known_scores(to_tensor(d, n)) for d, n in
                                 ((dist_val, "dist_val"), (dist_test, "dist_test"),
                                  (dist_unknown, "dist_unknown")))
    out = {
        "accuracy": closed_set_accuracy(cac_predict(to_tensor(dist_test, "dist_test")),
                                        to_tensor(test_labels, "test_labels")),
        "auroc": auroc(s_known, s_unknown),
    }
    for tag, thr in (("tpr", threshold_at_tpr(s_val, tpr=tpr)),
                     ("original", original_threshold(raw_threshold))):
        matrix, known_ok, unknown_ok = known_unknown_confusion(s_known, s_unknown, thr)
        out.update({f"threshold_{tag}": thr, f"matrix_{tag}": matrix,
                    f"known_accepted_{tag}": known_ok, f"unknown_rejected_{tag}": unknown_ok})
    return out


#: The scalar numbers of :func:`open_set_summary` (percent) that the results file keeps.
SUMMARY_NUMBERS = ("accuracy", "known_accepted_tpr", "unknown_rejected_tpr",
                   "known_accepted_original", "unknown_rejected_original")


def summary_numbers(summary: dict) -> dict[str, float]:
    """``{name: value}`` of the :data:`SUMMARY_NUMBERS` in :func:`open_set_summary`'s dict.

    Passed as ``extra`` to :func:`ood_utils.course.results.record`, so that the course's results
    table can compare them with the answer key's further targets for ``cac``.
    """
    missing = [k for k in SUMMARY_NUMBERS if k not in summary]
    if missing:
        raise ValueError(f"summary lacks {missing}; pass the dict of open_set_summary")
    return {k: float(summary[k]) for k in SUMMARY_NUMBERS}
