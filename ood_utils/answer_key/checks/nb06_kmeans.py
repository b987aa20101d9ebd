"""Self-checks of notebook 06: k-means cluster ids, MD/RMD on clusters and the sweep over k."""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from ..registry import compares_with
from ._common import _as_array, _compare, _fn_name, _gen, _hide_check_frames, _passed, _require_callable
from .nb05_mahalanobis import _maha_hints, _maha_variants

# --------------------------------------------------------------------------- k-means (part VIII)

def _blobs(seed: int, sizes=(25, 25), d: int = 5):
    """Well-separated anisotropic blobs of unequal size and spread: every k-means run finds
    the same clusters, and a size-weighted covariance differs from the unweighted one."""
    g = _gen(seed)
    if len(sizes) > d:
        raise ValueError("use at most d blobs")
    centres = torch.eye(d)[:len(sizes)] * 60
    rows = []
    for b, n in enumerate(sizes):
        mix = (torch.randn(d, d, generator=g) * 0.3 + torch.eye(d)) * (0.6 + 0.8 * b)
        rows.append(torch.randn(n, d, generator=g) @ mix + centres[b])
    train = torch.cat(rows).float()
    # test rows: near training rows, a tight far-away group (OOD), and scattered points; k-means
    # fitted on these finds the far group as a cluster, unlike k-means on the training rows
    far = torch.randn(12, d, generator=g) + torch.full((d,), -50.0)
    test = torch.cat([train[::9] + 0.5 * torch.randn(len(train[::9]), d, generator=g),
                      far, torch.randn(4, d, generator=g) * 30]).float()
    return train, test


def _overlap_data(seed: int = 7, n: int = 300) -> torch.Tensor:
    """Overlapping anisotropic data: k-means lands in different partitions for different
    seeds, so only the same settings give the same clusters."""
    return (torch.randn(n, 6, generator=_gen(seed))
            * torch.tensor([3.0, 2, 1, 1, 0.5, 0.5])).float()


def _require_int64_ids(result, name: str, case: str) -> None:
    __tracebackhide__ = True
    if isinstance(result, np.ndarray):
        raise AssertionError(
            f"{name} returned a NumPy array ({case}); return a torch tensor of int64 "
            f"(torch.from_numpy(kmeans.labels_.astype(np.int64))): the next exercise and the "
            f"notebook's cells compare and index torch tensors with it")
    if isinstance(result, torch.Tensor) and result.dtype != torch.int64:
        raise AssertionError(
            f"{name} returned {result.dtype} cluster ids ({case}); return int64 (.long()): "
            f"scikit-learn's labels_ are int32, and torch.bincount / indexing in the next "
            f"cells expect int64")


@compares_with()
def check_kmeans_cluster_ids(student_fn: Callable) -> None:
    """Self-check of ``kmeans_cluster_ids_exercise(train_feats, n_clusters, seed=0)``.

    The function returns one cluster id per training row as an int64 torch tensor. Compared
    as a partition (the numbering of the clusters does not matter) with scikit-learn's
    ``KMeans`` under the course's fixed settings (:data:`ood_utils.methods.KMEANS_SETTINGS`):
    on separated blobs of unequal size (any k-means finds them), on overlapping random data,
    where only the same settings (``n_init=1``, ``random_state=seed``, ``algorithm="lloyd"``,
    float32 input) give the same partition, and with ``n_clusters=1`` (every row in cluster 0).
    """
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score

    from ...methods import KMEANS_SETTINGS

    __tracebackhide__ = True
    _require_callable(student_fn)
    name = _fn_name(student_fn)
    for train, k, seed, what in [(_blobs(0, (40, 12))[0], 2, 0, "2 separated blobs"),
                                 (_blobs(1, (30, 9, 22, 15))[0], 4, 0, "4 separated blobs"),
                                 (_overlap_data(), 7, 3, "overlapping random data"),
                                 (_blobs(2, (20, 20))[0], 1, 0, "one cluster")]:
        case = f"{what}, train {tuple(train.shape)}, n_clusters={k}, seed={seed}"
        got = student_fn(train.clone(), k, seed=seed)
        ids = _as_array(got, name, "one cluster id per training row")
        if ids.shape != (len(train),):
            raise AssertionError(f"{name} returned shape {ids.shape} ({case}); return the "
                                 f"cluster id of every TRAINING row, shape {(len(train),)}")
        want = KMeans(n_clusters=k, random_state=seed, n_init=KMEANS_SETTINGS["n_init"],
                      algorithm=KMEANS_SETTINGS["algorithm"]).fit(train.numpy()).labels_
        if len(np.unique(ids)) != k:
            raise AssertionError(f"{name} returned {len(np.unique(ids))} distinct ids ({case}); "
                                 f"expected {k} clusters")
        if k > 1 and adjusted_rand_score(want, ids) < 1.0 - 1e-9:
            raise AssertionError(
                f"{name} returned another partition than the course's k-means ({case}): "
                f"scikit-learn's KMeans with {k} clusters, one initialisation, `seed` as its "
                f"random state and Lloyd's algorithm, fitted on the float32 training features "
                f"as they are. Check each of these settings (the defaults of KMeans differ)")
        _require_int64_ids(got, name, case)
    _passed(name)


@compares_with('methods.kmeans:kmeans_mahalanobis_scores')
def check_kmeans_mahalanobis(student_fn: Callable) -> None:
    """Self-check of ``kmeans_mahalanobis_exercise(train_feats, test_feats, n_clusters,
    relative=False, seed=0)``.

    Uses blobs of unequal size and spread that are so far apart that any k-means run finds
    them, so the result does not depend on the initialisation; compares with
    :func:`ood_utils.methods.kmeans_mahalanobis_scores` for 2 and 4 clusters, MD and RMD.
    Because the cluster sizes differ, a class-size-weighted (pooled) covariance gives other
    scores than the course's unweighted mean of the cluster covariances. A last case on
    overlapping data with ``seed=3`` catches a function that ignores its ``seed``.
    """
    from sklearn.cluster import KMeans

    from ...methods import KMEANS_SETTINGS, kmeans_mahalanobis_scores

    __tracebackhide__ = True
    _require_callable(student_fn)
    name = _fn_name(student_fn)
    for sizes, seed in [((40, 12), 0), ((30, 9, 22, 15), 1)]:
        k = len(sizes)
        train, test = _blobs(seed, sizes)
        labels = KMeans(n_clusters=k, random_state=0, n_init=1,
                        algorithm=KMEANS_SETTINGS["algorithm"]).fit(train.numpy()).labels_
        v = _maha_variants(train.double().numpy(), labels, test.double().numpy())
        on_test = KMeans(n_clusters=k, random_state=0, n_init=1).fit(test.numpy())
        v_test = _maha_variants(train.double().numpy(), on_test.predict(train.numpy()),
                                test.double().numpy())
        for relative in (False, True):
            case = (f"{k} separated blobs of sizes {sizes}, train {tuple(train.shape)}, "
                    f"n_clusters={k}, relative={relative}")
            got = _as_array(student_fn(train.clone(), test.clone(), k, relative=relative,
                                       seed=0), name, "one score per test row")
            want = _as_array(kmeans_mahalanobis_scores(train, test, k, relative=relative,
                                                       seed=0), "kmeans_mahalanobis_scores", "")
            hints = {"the sign is flipped: scores must be higher for in-distribution rows "
                     "(score = -min_j of the squared distances)": -want,
                     "k-means was fitted on the TEST features; fit it on the training "
                     "features only": -(v_test["shared"] - (v_test["bg"][:, None] if relative
                                                            else 0)).min(1),
                     **_maha_hints(v, relative)}
            _compare(got, want, name, case, "one score per TEST row", hints, rtol=1e-3,
                     atol=1e-3)
    train = _overlap_data(11, 240)
    test = _overlap_data(12, 30) * 1.5
    case = f"overlapping random data, train {tuple(train.shape)}, n_clusters=5, seed=3"
    got = _as_array(student_fn(train.clone(), test.clone(), 5, relative=False, seed=3),
                    name, "one score per test row")
    want = _as_array(kmeans_mahalanobis_scores(train, test, 5, seed=3),
                     "kmeans_mahalanobis_scores", "")
    hints = {"the `seed` argument is not used (or fixed to 0): pass it on to your "
             "kmeans_cluster_ids_exercise, the partition depends on it":
                 kmeans_mahalanobis_scores(train, test, 5, seed=0).numpy()}
    _compare(got, want, name, case, "one score per TEST row", hints, rtol=1e-3, atol=1e-3)
    _passed(name)


@compares_with('course.sweeps:kmeans_sweep')
def check_kmeans_sweep(student_fn: Callable) -> None:
    """Self-check of ``kmeans_sweep_exercise(train_feats, test_feats, ks, seed=0)``.

    Expected: ``{k: {"cluster_ids": ..., "md": ..., "rmd": ...}}`` for every ``k`` in ``ks``:
    the course's k-means fitted once per ``k`` on the training rows (``k = 1``: one cluster)
    and the MD and RMD scores of every test row with the clusters as classes (reference:
    :func:`ood_utils.course.sweeps.kmeans_sweep`), on separated blobs of unequal size.
    """
    from sklearn.metrics import adjusted_rand_score

    from ...course.sweeps import kmeans_sweep

    __tracebackhide__ = True
    _require_callable(student_fn)
    name = _fn_name(student_fn)
    train, test = _blobs(3, (30, 9, 22, 15))
    ks = (1, 2, 4)
    case = f"4 separated blobs of sizes (30, 9, 22, 15), train {tuple(train.shape)}, ks {ks}"
    got = student_fn(train.clone(), test.clone(), ks, seed=0)
    if not isinstance(got, dict) or any(k not in got for k in ks):
        raise AssertionError(f"{name} must return a dict with one entry per k in ks ({case}), "
                             f"got {type(got).__name__}"
                             + (f" with keys {list(got)}" if isinstance(got, dict) else ""))
    want = kmeans_sweep(train, test, ks, seed=0)
    for k in ks:
        entry = got[k]
        if not isinstance(entry, dict) or not {"cluster_ids", "md", "rmd"} <= set(entry):
            raise AssertionError(f"{name}[{k}] must be a dict with the keys 'cluster_ids', "
                                 f"'md' and 'rmd' ({case})")
        ids = _as_array(entry["cluster_ids"], name, "one cluster id per training row")
        if ids.shape != (len(train),) or (
                k > 1 and adjusted_rand_score(want[k]["cluster_ids"].numpy(), ids) < 1 - 1e-9) \
                or len(np.unique(ids)) != k:
            raise AssertionError(f"{name}[{k}]['cluster_ids'] is not the course's k-means "
                                 f"partition with {k} clusters ({case}); call your "
                                 f"kmeans_cluster_ids_exercise once per k, with the seed")
        for kind in ("md", "rmd"):
            _compare(_as_array(entry[kind], name, "one score per test row"),
                     want[k][kind].numpy(), f"{name}[{k}]['{kind}']", case + f", k={k}",
                     "one score per TEST row",
                     {f"MD and RMD are swapped: '{kind}' must hold the "
                      f"{'relative' if kind == 'rmd' else 'plain'} score":
                          want[k]["md" if kind == "rmd" else "rmd"].numpy()},
                     rtol=1e-3, atol=1e-3)
    _passed(name)


__all__ = [name for name in dir() if name.startswith("check_")]
_hide_check_frames(globals())  # keep this the last line of the module
