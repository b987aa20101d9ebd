"""Correct and wrong ways a student may write the Mahalanobis exercises of notebooks 05/06.

Used by ``test_mahalanobis.py`` and ``test_kmeans.py`` (the answer key matrix). Every
function has the exercise's signature: ``class_statistics(train_feats, train_labels) ->
(means, shared_cov)`` or ``maha(train_feats, train_labels, test_feats, relative=False) ->
scores``. The correct ones differ in library (NumPy, SciPy, torch), inverse (``inv``,
``pinv`` with its default cut-off, ``pinvh``, ``solve``, ``lstsq``), covariance
(``np.cov``, ``torch.cov``, by hand) and shape (loops, vectorised, the seed notebook's
helper function); the wrong ones each plant one mistake.
"""
from __future__ import annotations

import numpy as np
import scipy.linalg
import torch


def _np(x, dtype=np.float64):
    if torch.is_tensor(x):
        x = x.detach().cpu().numpy()
    return np.asarray(x).astype(dtype)


def _groups(train, labels):
    labels = _np(labels, np.int64)
    return [train[labels == c] for c in np.unique(labels) if (labels == c).sum() > 1]


# ------------------------------------------------------------------ class statistics

def _stats_np_cov(train_feats, train_labels):
    """NumPy means and shared covariance (what the NumPy score variants build on)."""
    groups = _groups(_np(train_feats), train_labels)
    means = np.stack([g.mean(0) for g in groups])
    return means, np.mean([np.cov(g, rowvar=False) for g in groups], axis=0)


def stats_np_cov(train_feats, train_labels):
    # NumPy inside, torch tensors out (the exercise returns float64 tensors)
    means, cov = _stats_np_cov(train_feats, train_labels)
    return torch.from_numpy(means), torch.from_numpy(cov)


def _stats_by_hand(train_feats, train_labels):
    groups = _groups(_np(train_feats), train_labels)
    means, cov = [], 0.0
    for g in groups:
        mu = g.mean(axis=0)
        diff = g - mu
        cov = cov + diff.T @ diff / (len(g) - 1)
        means.append(mu)
    return np.array(means), cov / len(groups)


def stats_by_hand(train_feats, train_labels):
    means, cov = _stats_by_hand(train_feats, train_labels)
    return torch.as_tensor(means), torch.as_tensor(cov)


def stats_torch_loop_counts(train_feats, train_labels):
    # bincount to find the classes that have two samples or more
    x = torch.as_tensor(train_feats).double()
    y = torch.as_tensor(train_labels).long()
    counts = torch.bincount(y - y.min())
    keep = [int(c) + int(y.min()) for c in torch.nonzero(counts >= 2).flatten()]
    means = torch.stack([x[y == c].mean(0) for c in keep])
    cov = sum(torch.cov(x[y == c].T) for c in keep) / len(keep)
    return means, cov


def stats_torch(train_feats, train_labels):
    x = torch.as_tensor(train_feats).double()
    y = torch.as_tensor(train_labels)
    groups = [x[y == c] for c in torch.unique(y) if (y == c).sum() > 1]
    return (torch.stack([g.mean(0) for g in groups]),
            torch.stack([torch.cov(g.T) for g in groups]).mean(0))


# wrong ones
def stats_pooled(train_feats, train_labels):
    x = _np(train_feats)
    groups = _groups(x, train_labels)
    centred = np.concatenate([g - g.mean(0) for g in groups])
    return (np.stack([g.mean(0) for g in groups]),
            centred.T @ centred / (len(centred) - len(groups)))


def stats_biased(train_feats, train_labels):
    groups = _groups(_np(train_feats), train_labels)
    return (np.stack([g.mean(0) for g in groups]),
            np.mean([np.cov(g, rowvar=False, bias=True) for g in groups], axis=0))


def stats_uncentred(train_feats, train_labels):
    groups = _groups(_np(train_feats), train_labels)
    return (np.stack([g.mean(0) for g in groups]),
            np.mean([g.T @ g / (len(g) - 1) for g in groups], axis=0))


def stats_numpy_out(train_feats, train_labels):
    means, cov = stats_torch(train_feats, train_labels)
    return means.numpy(), cov.numpy()


def stats_float32_out(train_feats, train_labels):
    means, cov = stats_torch(train_feats, train_labels)
    return means.float(), cov.float()


def stats_single_kept(train_feats, train_labels):
    # torch.cov of one row divides by zero: NaN in the average
    x = torch.as_tensor(train_feats).double()
    y = torch.as_tensor(train_labels)
    groups = [x[y == c] for c in torch.unique(y)]
    return (torch.stack([g.mean(0) for g in groups]),
            torch.stack([torch.cov(g.T) for g in groups]).mean(0))


def stats_single_kept_guarded(train_feats, train_labels):
    # a by-hand covariance guarded against n_c = 1: the single sample's zero matrix counts
    x = torch.as_tensor(train_feats).double()
    y = torch.as_tensor(train_labels)
    means, covs = [], []
    for c in torch.unique(y):
        g = x[y == c]
        mu = g.mean(0)
        means.append(mu)
        covs.append((g - mu).T @ (g - mu) / max(len(g) - 1, 1))
    return torch.stack(means), torch.stack(covs).mean(0)


def stats_cov_without_transpose(train_feats, train_labels):
    x = torch.as_tensor(train_feats).double()
    y = torch.as_tensor(train_labels)
    groups = [x[y == c] for c in torch.unique(y) if (y == c).sum() > 1]
    return torch.stack([g.mean(0) for g in groups]), torch.stack([torch.cov(g) for g in groups]).mean(0)


def stats_total(train_feats, train_labels):
    x = _np(train_feats)
    groups = _groups(x, train_labels)
    return np.stack([g.mean(0) for g in groups]), np.cov(x, rowvar=False)


# ------------------------------------------------------------------ scores: correct

def _background(train):
    return train.mean(0), np.cov(train, rowvar=False)


def maha_np_inv_loop(train_feats, train_labels, test_feats, relative=False):
    """NumPy, np.cov, np.linalg.inv, a loop over the classes."""
    train, test = _np(train_feats), _np(test_feats)
    means, cov = _stats_np_cov(train, train_labels)
    prec = np.linalg.inv(cov)
    d2 = np.empty((len(test), len(means)))
    for c, mu in enumerate(means):
        diff = test - mu
        d2[:, c] = ((diff @ prec) * diff).sum(1)
    if relative:
        mu0, cov0 = _background(train)
        diff = test - mu0
        d2 -= (((diff @ np.linalg.inv(cov0)) * diff).sum(1))[:, None]
    return -d2.min(axis=1)


def maha_np_pinv(train_feats, train_labels, test_feats, relative=False):
    """NumPy, np.linalg.pinv with its default cut-off, the expansion (vectorised)."""
    train, test = _np(train_feats), _np(test_feats)
    means, cov = _stats_by_hand(train, train_labels)
    prec = np.linalg.pinv(cov)
    tp = test @ prec
    d2 = (tp * test).sum(1)[:, None] - 2 * tp @ means.T + ((means @ prec) * means).sum(1)
    if relative:
        mu0, cov0 = _background(train)
        diff = test - mu0
        d2 = d2 - ((diff @ np.linalg.pinv(cov0)) * diff).sum(1, keepdims=True)
    return -d2.min(axis=1)


def maha_scipy_pinvh(train_feats, train_labels, test_feats, relative=False):
    """SciPy pinvh, hand-written covariance, a (M, C, D) broadcast (small C only)."""
    train, test = _np(train_feats), _np(test_feats)
    means, cov = _stats_by_hand(train, train_labels)
    prec = scipy.linalg.pinvh(cov)
    diff = test[:, None, :] - means[None]
    d2 = np.einsum("mcd,de,mce->mc", diff, prec, diff, optimize=True)
    if relative:
        mu0 = train.mean(0)
        c0 = (train - mu0).T @ (train - mu0) / (len(train) - 1)
        diff0 = test - mu0
        d2 = d2 - np.einsum("md,de,me->m", diff0, scipy.linalg.pinvh(c0), diff0,
                            optimize=True)[:, None]
    return -d2.min(axis=1)


def maha_torch_pinv(train_feats, train_labels, test_feats, relative=False):
    """torch, torch.cov, torch.linalg.pinv (general, not hermitian), the expansion."""
    train = torch.as_tensor(train_feats).double()
    test = torch.as_tensor(test_feats).double()
    means, cov = stats_torch(train, train_labels)
    prec = torch.linalg.pinv(cov)
    tp = test @ prec
    d2 = (tp * test).sum(1, keepdim=True) - 2 * tp @ means.T + ((means @ prec) * means).sum(1)
    if relative:
        c = test - train.mean(0)
        d2 = d2 - ((c @ torch.linalg.pinv(torch.cov(train.T))) * c).sum(1, keepdim=True)
    return -d2.min(dim=1).values


def maha_torch_solve(train_feats, train_labels, test_feats, relative=False):
    """torch, torch.linalg.solve instead of an inverse, a loop over the classes."""
    train = torch.as_tensor(train_feats).double()
    test = torch.as_tensor(test_feats).double()
    means, cov = stats_torch(train, train_labels)
    cols = []
    for mu in means:
        diff = test - mu
        cols.append((diff * torch.linalg.solve(cov, diff.T).T).sum(1))
    d2 = torch.stack(cols, 1)
    if relative:
        diff = test - train.mean(0)
        d2 = d2 - (diff * torch.linalg.solve(torch.cov(train.T), diff.T).T).sum(1)[:, None]
    return -d2.min(dim=1).values


def maha_np_lstsq(train_feats, train_labels, test_feats, relative=False):
    """NumPy lstsq as the solver: the precision matrix solves cov @ P = I."""
    train, test = _np(train_feats), _np(test_feats)
    means, cov = _stats_np_cov(train, train_labels)
    eye = np.eye(cov.shape[0])
    prec = np.linalg.lstsq(cov, eye, rcond=None)[0]
    d2 = np.stack([(((test - mu) @ prec) * (test - mu)).sum(1) for mu in means], 1)
    if relative:
        mu0, cov0 = _background(train)
        prec0 = np.linalg.lstsq(cov0, eye, rcond=None)[0]
        d2 = d2 - (((test - mu0) @ prec0) * (test - mu0)).sum(1)[:, None]
    return -d2.min(axis=1)


def _calc_maha_distance(embeds, means_c, inv_cov_c):
    """The seed notebook's helper: squared distance of every row to one mean."""
    diff = embeds - means_c
    return np.sum((diff @ inv_cov_c) * diff, axis=1)


def maha_seed_shape(train_feats, train_labels, test_feats, relative=False):
    """Shaped like the seed notebook: class lists, a helper per distance, numpy arrays."""
    train_embeds, test_embeds = _np(train_feats), _np(test_feats)
    labels = _np(train_labels, np.int64)
    class_means, class_covs = [], []
    for c in np.unique(labels):
        rows = train_embeds[labels == c]
        if len(rows) < 2:
            continue
        class_means.append(rows.mean(axis=0))
        class_covs.append(np.cov(rows.T))
    inv_cov = np.linalg.inv(np.mean(class_covs, axis=0))
    dists = [_calc_maha_distance(test_embeds, m, inv_cov) for m in class_means]
    if relative:
        global_inv = np.linalg.inv(np.cov(train_embeds.T))
        background = _calc_maha_distance(test_embeds, train_embeds.mean(axis=0), global_inv)
        dists = [d - background for d in dists]
    return -np.min(np.stack(dists, axis=1), axis=1)


def float64_inputs(fn):
    """The same variant, called with float64 inputs."""
    def wrapped(train_feats, train_labels, test_feats, relative=False):
        return fn(torch.as_tensor(train_feats).double(), train_labels,
                  torch.as_tensor(test_feats).double(), relative=relative)
    wrapped.__name__ = fn.__name__ + "_float64_inputs"
    return wrapped


CORRECT = [maha_np_inv_loop, maha_np_pinv, maha_scipy_pinvh, maha_torch_pinv, maha_torch_solve,
           maha_np_lstsq, maha_seed_shape, float64_inputs(maha_np_pinv),
           float64_inputs(maha_torch_pinv)]
# the ones cheap enough for many classes (k-means with k = 100): no per-class (M, D) solves
VECTORISED = [maha_np_pinv, maha_torch_pinv, float64_inputs(maha_np_pinv)]


# ------------------------------------------------------------------ scores: wrong

def _with_stats(stats, relative_bg=None):
    def fn(train_feats, train_labels, test_feats, relative=False):
        train, test = _np(train_feats), _np(test_feats)
        means, cov = stats(train, train_labels)
        means, cov = _np(means), _np(cov)
        prec = np.linalg.pinv(cov)
        d2 = np.stack([(((test - m) @ prec) * (test - m)).sum(1) for m in means], 1)
        if relative:
            mu0, cov0 = (relative_bg or (lambda tr, te, mu: _background(tr)))(train, test, means)
            diff = test - mu0
            d2 = d2 - (((diff @ np.linalg.pinv(cov0)) * diff).sum(1))[:, None]
        return -d2.min(1)
    return fn


def wrong_sign(train_feats, train_labels, test_feats, relative=False):
    return -maha_np_pinv(train_feats, train_labels, test_feats, relative)


wrong_pooled = _with_stats(stats_pooled)
wrong_uncentred = _with_stats(stats_uncentred)
wrong_bg_from_test = _with_stats(_stats_np_cov, lambda tr, te, mu: _background(te))
wrong_bg_biased = _with_stats(
    _stats_np_cov, lambda tr, te, mu: (tr.mean(0), np.cov(tr, rowvar=False, bias=True)))
wrong_single_kept = _with_stats(stats_single_kept_guarded)


def wrong_bg_shared(train_feats, train_labels, test_feats, relative=False):
    train, test = _np(train_feats), _np(test_feats)
    means, cov = _stats_np_cov(train, train_labels)
    prec = np.linalg.pinv(cov)
    d2 = np.stack([(((test - m) @ prec) * (test - m)).sum(1) for m in means], 1)
    if relative:  # the background distance with the shared class covariance
        diff = test - train.mean(0)
        d2 = d2 - ((diff @ prec) * diff).sum(1)[:, None]
    return -d2.min(1)


def maha_np_einsum_loop(train_feats, train_labels, test_feats, relative=False):
    """Correct but slow: a per-class three-operand np.einsum (no BLAS). The self-check
    passes it and prints a warning that notebook 06 would run past the cell limit."""
    train, test = _np(train_feats), _np(test_feats)
    means, cov = _stats_np_cov(train, train_labels)
    prec = np.linalg.pinv(cov, hermitian=True)
    d2 = np.stack([np.einsum("nd,de,ne->n", test - m, prec, test - m) for m in means], 1)
    if relative:
        mu0, cov0 = _background(train)
        d2 = d2 - np.einsum("nd,de,ne->n", test - mu0, np.linalg.pinv(cov0), test - mu0)[:, None]
    return -d2.min(1)


wrong_bg_from_class_means = _with_stats(
    _stats_np_cov, lambda tr, te, mu: (mu.mean(0), np.cov(mu, rowvar=False)))


def wrong_per_class_cov(train_feats, train_labels, test_feats, relative=False):
    train, test = _np(train_feats), _np(test_feats)
    groups = _groups(train, train_labels)
    d2 = np.stack([(((test - g.mean(0)) @ np.linalg.pinv(np.cov(g, rowvar=False)))
                    * (test - g.mean(0))).sum(1) for g in groups], 1)
    if relative:
        mu0, cov0 = _background(train)
        d2 = d2 - (((test - mu0) @ np.linalg.pinv(cov0)) * (test - mu0)).sum(1)[:, None]
    return -d2.min(1)


def wrong_axis(train_feats, train_labels, test_feats, relative=False):
    train, test = _np(train_feats), _np(test_feats)
    means, cov = _stats_np_cov(train, train_labels)
    prec = np.linalg.inv(cov)
    d2 = np.stack([(((test - m) @ prec) * (test - m)).sum(1) for m in means], 1)
    return -d2.min(axis=0)


def wrong_max_over_classes(train_feats, train_labels, test_feats, relative=False):
    train, test = _np(train_feats), _np(test_feats)
    means, cov = _stats_np_cov(train, train_labels)
    prec = np.linalg.inv(cov)
    d2 = np.stack([(((test - m) @ prec) * (test - m)).sum(1) for m in means], 1)
    if relative:
        mu0, cov0 = _background(train)
        d2 = d2 - (((test - mu0) @ np.linalg.inv(cov0)) * (test - mu0)).sum(1)[:, None]
    return -d2.max(axis=1)


def wrong_float32_arithmetic(train_feats, train_labels, test_feats, relative=False):
    train = torch.as_tensor(train_feats).float()
    test = torch.as_tensor(test_feats).float()
    y = torch.as_tensor(train_labels)
    groups = [train[y == c] for c in torch.unique(y)]
    means = torch.stack([g.mean(0) for g in groups])
    prec = torch.linalg.inv(torch.stack([torch.cov(g.T) for g in groups]).mean(0))
    d2 = torch.stack([(((test - m) @ prec) * (test - m)).sum(1) for m in means], 1)
    if relative:
        c = test - train.mean(0)
        d2 = d2 - ((c @ torch.linalg.inv(torch.cov(train.T))) * c).sum(1, keepdim=True)
    return -d2.min(1).values


# (mistake, phrase its failure message must contain)
WRONG = [
    (wrong_sign, "minus sign"),
    (wrong_pooled, "not this course's convention"),
    (wrong_uncentred, "without subtracting the class means"),
    (wrong_bg_from_test, "fitted to the TEST features"),
    (wrong_bg_from_class_means, "fitted to the class means"),
    (wrong_per_class_cov, "one covariance per class"),
    (wrong_axis, "class axis"),
    (wrong_max_over_classes, "LAST/any class"),
    (wrong_float32_arithmetic, "float64"),
    (wrong_bg_biased, "background covariance is biased"),
    (wrong_bg_shared, "uses the shared class covariance"),
    (wrong_single_kept, "single training sample was kept"),
]
