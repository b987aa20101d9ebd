"""Public self-checks of the notebook exercises, and the AUROC check of every graded result.

``check_<exercise>(student_fn)`` runs the student's function and the reference implementation
of :mod:`ood_utils.scores` on small random inputs (fixed seeds, a few cases each) and compares
type, shape and values. On a mismatch it raises ``AssertionError`` whose message says what
differs and, where a typical mistake explains the numbers, which one. Otherwise it prints
``"<function name>: public checks passed"``. These checks are public and not exhaustive: the
graded AUROC checks on the real features come on top.

:func:`check_auroc` compares a measured AUROC with the answer key (:mod:`ood_utils.expected`).
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch

from .expected import get_expected
from .profiles import get_profile

# values are compared with |got - want| <= ATOL + RTOL * |want| (float32 work is fine)
RTOL = 1e-3
ATOL = 1e-4


# --------------------------------------------------------------------------- helpers

def _fn_name(fn: Callable) -> str:
    return getattr(fn, "__name__", type(fn).__name__)


def _require_callable(fn: Any) -> None:
    if not callable(fn):
        raise TypeError(f"pass your function itself (e.g. check_knn(knn_scores_exercise)), "
                        f"not {type(fn).__name__}")


def _passed(name: str) -> None:
    print(f"{name}: public checks passed")


def _as_array(result: Any, name: str, what: str) -> np.ndarray:
    """The student's result as float64 numpy, or an AssertionError saying what came back."""
    if result is None:
        raise AssertionError(
            f"{name} returned None: complete the code between '### START CODE HERE ###' and "
            f"'### END CODE HERE ###' so that it returns {what}")
    if isinstance(result, tuple):
        raise AssertionError(f"{name} returned a tuple of {len(result)} items; return only {what}")
    if isinstance(result, torch.Tensor):
        return result.detach().cpu().double().numpy()
    if isinstance(result, np.ndarray):
        if not np.issubdtype(result.dtype, np.number):
            raise AssertionError(f"{name} returned an array of dtype {result.dtype}; "
                                 f"expected numbers ({what})")
        return result.astype(np.float64)
    raise AssertionError(f"{name} returned a {type(result).__name__}; expected a torch tensor "
                         f"or numpy array ({what})")


def _close(a: np.ndarray, b: np.ndarray, rtol: float = RTOL, atol: float = ATOL) -> bool:
    return a.shape == b.shape and bool(np.all(np.abs(a - b) <= atol + rtol * np.abs(b)))


def _compare(got: np.ndarray, want: np.ndarray, name: str, case: str, per_row: str,
             hints: dict[str, np.ndarray] | None = None, rtol: float = RTOL,
             atol: float = ATOL) -> None:
    """Assert equal shape and values; name the likely mistake when a hint matches."""
    if got.shape != want.shape:
        raise AssertionError(f"{name} returned shape {got.shape}, expected {want.shape} "
                             f"({case}): {per_row}")
    if not np.all(np.isfinite(got)):
        raise AssertionError(f"{name} returned NaN or infinite values ({case})")
    if _close(got, want, rtol, atol):
        return
    hint = ""
    for message, candidate in (hints or {}).items():
        if candidate is not None and _close(got, np.asarray(candidate, dtype=np.float64),
                                            rtol, atol):
            hint = f" Likely cause: {message}."
            break
    i = int(np.argmax(np.abs(got - want)))
    raise AssertionError(
        f"{name} returned wrong values ({case}): entry {i} is {got.flat[i]:.6g}, the reference "
        f"gives {want.flat[i]:.6g} (largest difference {np.max(np.abs(got - want)):.3g}).{hint}")


def _normalize(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _softmax(z: np.ndarray, axis: int = 1) -> np.ndarray:
    z = z - z.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _random_feats(n: int, d: int, seed: int) -> torch.Tensor:
    """Random float32 rows with clearly different lengths (so cosine != dot product)."""
    g = _gen(seed)
    x = torch.randn(n, d, generator=g)
    scale = torch.rand(n, 1, generator=g) * 4.5 + 0.5
    return (x * scale).float()


# --------------------------------------------------------------------------- kNN (part III)

def check_knn(student_fn: Callable) -> None:
    """Self-check of ``knn_scores_exercise(train_feats, test_feats, k=1)``.

    Compares with :func:`ood_utils.scores.knn_scores` (cosine similarity to the k-th nearest
    training row) on random float32 tensors, for k = 1 and k = 3, including a test set larger
    than the training set.
    """
    from .scores import knn_scores

    _require_callable(student_fn)
    name = _fn_name(student_fn)
    cases = [((12, 6), (7, 6), 1, 0), ((12, 6), (7, 6), 3, 1), ((9, 4), (15, 4), 1, 2)]
    for (n_train, d), (n_test, _), k, seed in cases:
        train = _random_feats(n_train, d, 10 + seed)
        test = _random_feats(n_test, d, 20 + seed)
        case = f"train {tuple(train.shape)}, test {tuple(test.shape)}, k={k}"
        got = _as_array(student_fn(train.clone(), test.clone(), k=k), name,
                        "one similarity per test row")
        want = _as_array(knn_scores(train, test, k=k), "knn_scores", "")
        tr, te = train.double().numpy(), test.double().numpy()
        cos = _normalize(te) @ _normalize(tr).T
        dot = te @ tr.T
        dist = np.sqrt(((te[:, None, :] - tr[None, :, :]) ** 2).sum(-1))
        srt = np.sort(cos, axis=1)[:, ::-1]
        hints = {
            "the sign is flipped: return the similarity itself (higher = more in-distribution)":
                -want,
            "the features are not L2-normalised before the dot product (that is not a cosine)":
                np.sort(dot, axis=1)[:, ::-1][:, k - 1],
            "Euclidean distance instead of cosine similarity":
                -np.sort(dist, axis=1)[:, k - 1],
            "the similarity to the FARTHEST training row: sort in decreasing order":
                np.sort(cos, axis=1)[:, k - 1],
            "the mean of the k largest similarities instead of the k-th largest":
                srt[:, :k].mean(axis=1),
            "k is ignored (this is the nearest neighbour, not the k-th nearest)":
                srt[:, 0] if k > 1 else None,
            "the scores are computed per TRAINING row: reduce over the training rows (axis 1)":
                np.sort(cos, axis=0)[::-1][k - 1] if n_test == n_train else None,
        }
        if got.shape == (n_train,) and n_train != n_test:
            raise AssertionError(
                f"{name} returned shape {got.shape}, expected {want.shape} ({case}): one score "
                f"per TEST row; you reduced over the test rows instead of the training rows")
        _compare(got, want, name, case, "one score per TEST row", hints)
    _passed(name)


# --------------------------------------------------------------------------- MSP (part IV)

def _zero_shot_reference(image_embeds: torch.Tensor, text_embeds: torch.Tensor,
                         logit_scale: float) -> np.ndarray:
    from .scores import msp_scores

    img = torch.nn.functional.normalize(image_embeds.double(), dim=1)
    txt = torch.nn.functional.normalize(text_embeds.double(), dim=1)
    return _as_array(msp_scores(float(logit_scale) * img @ txt.T), "msp_scores", "")


def check_zero_shot_msp(student_fn: Callable) -> None:
    """Self-check of ``zero_shot_msp_exercise(image_embeds, text_embeds, logit_scale)``.

    The expected result is the maximum softmax probability over classes of
    ``logit_scale * cos(image_i, text_c)``, one value per image (reference:
    :func:`ood_utils.scores.msp_scores` on those logits). Inputs are random, not unit length,
    and ``logit_scale`` is given both as a float and as a 0-d tensor.
    """
    _require_callable(student_fn)
    name = _fn_name(student_fn)
    cases = [(8, 5, 6, 100.0, 0), (11, 3, 4, torch.tensor(30.0), 1), (5, 7, 6, 1.0, 2)]
    for n, c, e, scale, seed in cases:
        img = _random_feats(n, e, 30 + seed)
        txt = _random_feats(c, e, 40 + seed)
        s = float(scale)
        case = f"{n} images, {c} classes, embed dim {e}, logit_scale={s:g}"
        got = _as_array(student_fn(img.clone(), txt.clone(), scale), name,
                        "one maximum softmax probability per image")
        want = _zero_shot_reference(img, txt, s)
        im, tx = img.double().numpy(), txt.double().numpy()
        logits = s * _normalize(im) @ _normalize(tx).T
        raw = s * im @ tx.T
        hints = {
            "no softmax: this is the largest logit, not the largest probability":
                logits.max(axis=1),
            "the embeddings are not L2-normalised before the similarity":
                _softmax(raw).max(axis=1),
            "logit_scale is not applied (softmax of the plain cosines)":
                _softmax(logits / s).max(axis=1) if s != 1.0 else None,
            "the softmax runs over the images (dim 0) instead of the classes (dim 1)":
                _softmax(logits, axis=0).max(axis=1),
            "logit_scale is exponentiated again: it is already exp(model.logit_scale)":
                _softmax(np.exp(s) * logits / s).max(axis=1) if s < 50 else None,
            "the sign is flipped: return the probability (higher = more in-distribution)":
                -want,
        }
        if got.shape == (n, c):
            raise AssertionError(f"{name} returned shape {got.shape} ({case}): that is the "
                                 f"whole probability matrix; return its maximum per image, "
                                 f"shape {(n,)}")
        _compare(got, want, name, case, "one score per image", hints)
        if np.any(got > 1 + 1e-6) or np.any(got < 0):
            raise AssertionError(f"{name} returned values outside [0, 1] ({case})")
    _passed(name)


# --------------------------------------------------------------------------- probe MSP (part V)

def check_probe_msp(student_fn: Callable) -> None:
    """Self-check of ``probe_msp_exercise(layer, feats)``.

    Expected: the maximum softmax probability of ``layer(feats)`` per row (reference:
    :func:`ood_utils.scores.msp_scores` of :func:`ood_utils.scores.probe_logits`), on random
    linear layers; the layer's weights must not change.
    """
    from .scores import msp_scores, probe_logits

    _require_callable(student_fn)
    name = _fn_name(student_fn)
    for n, d, c, seed in [(10, 6, 4, 0), (7, 3, 9, 1)]:
        torch.manual_seed(50 + seed)
        layer = torch.nn.Linear(d, c)
        with torch.no_grad():
            layer.weight.mul_(3.0)
        before = [p.detach().clone() for p in layer.parameters()]
        feats = _random_feats(n, d, 60 + seed)
        case = f"Linear({d}, {c}) on {n} rows"
        got = _as_array(student_fn(layer, feats.clone()), name,
                        "one maximum softmax probability per row")
        if any(not torch.equal(a, b) for a, b in zip(before, layer.parameters())):
            raise AssertionError(f"{name} changed the layer's weights; only evaluate it")
        want = _as_array(msp_scores(probe_logits(layer, feats)), "msp_scores", "")
        with torch.no_grad():
            logits = layer(feats).double().numpy()
        hints = {
            "no softmax: this is the largest logit, not the largest probability":
                logits.max(axis=1),
            "the softmax runs over the rows (dim 0) instead of the classes (dim 1)":
                _softmax(logits, axis=0).max(axis=1),
            "the sign is flipped: return the probability (higher = more in-distribution)":
                -want,
        }
        if got.shape == (n, c):
            raise AssertionError(f"{name} returned shape {got.shape} ({case}): return the "
                                 f"maximum probability per row, shape {(n,)}")
        _compare(got, want, name, case, "one score per row", hints)
    _passed(name)


# --------------------------------------------------------------------------- Mahalanobis (VI, VII)

_NOT_OUR_CONVENTION = (
    "the shared covariance is weighted by class size (the pooled estimator of Lee et al. "
    "2018): a valid estimator, but not this course's convention, which is the PLP paper's "
    "unweighted mean (1/C) sum_c Sigma_c of the per-class covariances")


def _maha_variants(train: np.ndarray, labels: np.ndarray, test: np.ndarray) -> dict:
    """Squared distances of common wrong variants, used only to name the mistake.

    Keys: ``shared`` (the course's convention), ``pooled`` / ``weighted_n`` (class-size
    weighted, divided by N - C or N), ``per_class`` (one covariance per class),
    ``uncentred`` (second moments instead of covariances), ``bg`` (the right background),
    ``bg_test`` (background Gaussian fitted to the test rows), ``bg_means`` (background
    fitted to the class means instead of all training rows).
    """
    classes = np.unique(labels)
    groups = [train[labels == c] for c in classes if (labels == c).sum() > 1]
    means = np.stack([g.mean(0) for g in groups])
    covs = [np.cov(g, rowvar=False) for g in groups]
    shared = np.mean(covs, axis=0)
    centred = np.concatenate([g - g.mean(0) for g in groups])
    n, c = len(centred), len(groups)
    uncentred = np.mean([g.T @ g / (len(g) - 1) for g in groups], axis=0)

    def sq(x, mu, prec):
        diff = x - mu
        return np.einsum("nd,de,ne->n", diff, prec, diff)

    def dists(cov):
        prec = np.linalg.pinv(cov, hermitian=True)
        return np.stack([sq(test, m, prec) for m in means], 1)

    out = {"shared": dists(shared), "pooled": dists(centred.T @ centred / (n - c)),
           "weighted_n": dists(centred.T @ centred / n), "uncentred": dists(uncentred),
           "per_class": np.stack([sq(test, m, np.linalg.pinv(cv, hermitian=True))
                                  for m, cv in zip(means, covs)], 1)}
    out["bg"] = sq(test, train.mean(0), np.linalg.pinv(np.cov(train, rowvar=False)))
    out["bg_test"] = sq(test, test.mean(0), np.linalg.pinv(np.cov(test, rowvar=False)))
    out["bg_means"] = sq(test, means.mean(0), np.linalg.pinv(
        np.cov(means, rowvar=False) if c > 1 else np.eye(train.shape[1])))
    return out


def _maha_hints(v: dict, relative: bool) -> dict:
    """Failure messages and the scores of the wrong variant each one describes."""
    if relative:
        bg = v["bg"][:, None]
        return {
            "the background term is not subtracted (that is plain MD, not RMD)":
                -v["shared"].min(1),
            "the sign is flipped: RMD scores are -min_c (d_c^2 - d_0^2)":
                (v["shared"] - bg).min(1),
            "one covariance per class instead of the shared (averaged) covariance":
                -(v["per_class"] - bg).min(1),
            _NOT_OUR_CONVENTION: -(v["pooled"] - bg).min(1),
            _NOT_OUR_CONVENTION + " (and divided by N instead of N - C)":
                -(v["weighted_n"] - bg).min(1),
            "the covariances are computed without subtracting the class means (centre every "
            "class on its mean first)": -(v["uncentred"] - bg).min(1),
            "the background Gaussian is fitted to the TEST features; fit mu_0 and Sigma_0 to "
            "all TRAINING features (statistics never come from the test set)":
                -(v["shared"] - v["bg_test"][:, None]).min(1),
            "the background Gaussian is fitted to the class means; fit mu_0 and Sigma_0 to all "
            "training features": -(v["shared"] - v["bg_means"][:, None]).min(1),
            "the max over classes instead of the min (wrong reduction)":
                -(v["shared"] - bg).max(1),
        }
    return {
        "the minus sign is missing: the score is -min_c d_c^2 (higher = more ID)":
            v["shared"].min(1),
        "one covariance per class instead of the shared (averaged) covariance":
            -v["per_class"].min(1),
        _NOT_OUR_CONVENTION: -v["pooled"].min(1),
        _NOT_OUR_CONVENTION + " (and divided by N instead of N - C)": -v["weighted_n"].min(1),
        "the covariances are computed without subtracting the class means (centre every class "
        "on its mean first)": -v["uncentred"].min(1),
        "the distance of the LAST/any class instead of the nearest class mean (min over c)":
            -v["shared"].max(1),
        "the square root was taken: use the squared distance d_c^2":
            -np.sqrt(v["shared"].min(1)),
    }


def _maha_data(seed: int, sizes=(30, 21, 14), d: int = 4, nearly_singular: bool = False):
    """Classes of unequal size with clearly different covariances, as float32 tensors."""
    g = _gen(seed)
    rows, labels = [], []
    for c, n in enumerate(sizes):
        mix = torch.randn(d, d, generator=g) * (0.5 + c)
        centre = torch.randn(d, generator=g) * 4
        rows.append(torch.randn(n, d, generator=g) @ mix + centre)
        labels.append(torch.full((n,), c, dtype=torch.int64))
    train = torch.cat(rows)
    test = torch.randn(9, d, generator=g) * 5
    if nearly_singular:
        # the last column is almost the sum of the first two (up to 1e-4): the covariance has
        # an eigenvalue ~1e-8, as real network features do (LayerNorm, ReLU); float32 fails
        for x in (train, test):
            x[:, -1] = x[:, 0] + x[:, 1] + 1e-4 * torch.randn(len(x), generator=g)
    return train.float(), torch.cat(labels), test.float()


def check_class_statistics(student_fn: Callable) -> None:
    """Self-check of ``class_statistics_exercise(train_feats, train_labels)``.

    The function returns ``(means, shared_cov)``: the class means ``(C, D)`` in the order of
    the sorted class ids and the course's shared covariance ``(D, D)``, the unweighted mean of
    the per-class unbiased covariances. Classes of unequal size and spread tell the course's
    convention apart from the class-size-weighted (pooled) estimator.
    """
    from .scores import _class_statistics

    _require_callable(student_fn)
    name = _fn_name(student_fn)
    for seed, sizes in [(0, (30, 21, 14)), (1, (18, 25))]:
        train, labels, _ = _maha_data(seed, sizes)
        case = f"{len(sizes)} classes of sizes {sizes}, train {tuple(train.shape)}"
        out = student_fn(train.clone(), labels.clone())
        if not isinstance(out, (tuple, list)) or len(out) != 2:
            raise AssertionError(f"{name} must return a pair (means, shared_cov), got "
                                 f"{type(out).__name__}")
        means = _as_array(out[0], name, "the class means, shape (C, D)")
        cov = _as_array(out[1], name, "the shared covariance, shape (D, D)")
        _, want_means, want_cov, _, _ = _class_statistics(train.double(), labels, False)
        want_means, want_cov = want_means.numpy(), want_cov.numpy()
        c, d = want_means.shape
        if cov.shape == (c, c) and c != d or cov.shape[0] not in (d,):
            raise AssertionError(
                f"{name} returned a covariance of shape {cov.shape}, expected {(d, d)} ({case}). "
                "torch.cov treats each ROW as a variable and each column as an observation, so "
                "for a (n_c, D) block of rows use torch.cov(x.T) (or np.cov(x, rowvar=False))")
        _compare(means, want_means, name + " (means)", case, "one mean per class, rows in the "
                 "order of the sorted class ids")
        x, y = train.double().numpy(), labels.numpy()
        groups = [x[y == k] for k in np.unique(y)]
        centred = np.concatenate([g - g.mean(0) for g in groups])
        n = len(x)
        hints = {
            _NOT_OUR_CONVENTION: centred.T @ centred / (n - c),
            _NOT_OUR_CONVENTION + " (and divided by N instead of N - C)":
                centred.T @ centred / n,
            "the per-class covariances are biased (divided by n_c instead of n_c - 1); use "
            "the unbiased estimator (np.cov / torch.cov default)":
                np.mean([np.cov(g, rowvar=False, bias=True) for g in groups], axis=0),
            "the class means are not subtracted (second moments instead of covariances)":
                np.mean([g.T @ g / (len(g) - 1) for g in groups], axis=0),
            "this is the covariance of ALL training rows (the background Sigma_0), not the "
            "mean of the per-class covariances": np.cov(x, rowvar=False),
        }
        _compare(cov, want_cov, name + " (shared covariance)", case, "a (D, D) matrix", hints)
    _passed(name)


def _check_maha_case(student_fn, reference, name, train, labels, test, relative, case,
                     variants) -> None:
    got = _as_array(student_fn(train.clone(), labels.clone(), test.clone(), relative=relative),
                    name, "one score per test row")
    want = _as_array(reference(train, labels, test, relative=relative),
                     "mahalanobis_scores", "")
    _compare(got, want, name, case, "one score per TEST row (the min over classes is taken "
             "along the class axis)", _maha_hints(variants, relative), rtol=1e-3, atol=1e-3)


def check_mahalanobis(student_fn: Callable) -> None:
    """Self-check of ``mahalanobis_exercise(train_feats, train_labels, test_feats, relative=False)``.

    Compares with :func:`ood_utils.scores.mahalanobis_scores` for ``relative=False`` (MD) and
    ``relative=True`` (RMD) on classes of unequal size and different spread (so the course's
    unweighted mean of class covariances differs from the class-size-weighted, pooled one),
    and on a case whose covariance is nearly singular (condition number ~1e9), which float32
    arithmetic cannot handle but float64 with any correct inverse (``inv``, ``pinv``,
    ``pinvh``, ``solve``, ``lstsq``) can.
    """
    from .scores import mahalanobis_scores

    _require_callable(student_fn)
    name = _fn_name(student_fn)
    for seed, sizes, singular in [(0, (30, 21, 14), False), (1, (18, 25), False),
                                  (2, (40, 35, 30), True)]:
        train, labels, test = _maha_data(seed, sizes, d=5 if singular else 4,
                                         nearly_singular=singular)
        variants = _maha_variants(train.double().numpy(), labels.numpy(), test.double().numpy())
        for relative in (False, True):
            case = (f"{len(sizes)} classes of sizes {sizes}, test {tuple(test.shape)}, "
                    f"relative={relative}")
            if singular:
                case += ("; this case has a nearly singular covariance, like real features: "
                         "compute means, covariances and distances in float64")
            _check_maha_case(student_fn, mahalanobis_scores, name, train, labels, test,
                             relative, case, variants)
    _passed(name)


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


def check_kmeans_cluster_ids(student_fn: Callable) -> None:
    """Self-check of ``kmeans_cluster_ids_exercise(train_feats, n_clusters, seed=0)``.

    The function returns one cluster id per training row (``(N,)`` integers). Compared as a
    partition (the numbering of the clusters does not matter) with scikit-learn's ``KMeans``
    under the course's fixed settings (:data:`ood_utils.scores.KMEANS_SETTINGS`): on separated
    blobs of unequal size (any k-means finds them) and on overlapping random data, where only
    the same settings (``n_init=1``, ``random_state=seed``, ``algorithm="lloyd"``, float32
    input) give the same partition.
    """
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score

    from .scores import KMEANS_SETTINGS

    _require_callable(student_fn)
    name = _fn_name(student_fn)
    overlap = torch.randn(300, 6, generator=_gen(7)) * torch.tensor([3.0, 2, 1, 1, 0.5, 0.5])
    for train, k, seed, what in [(_blobs(0, (40, 12))[0], 2, 0, "2 separated blobs"),
                                 (_blobs(1, (30, 9, 22, 15))[0], 4, 0, "4 separated blobs"),
                                 (overlap.float(), 7, 3, "overlapping random data")]:
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
        if adjusted_rand_score(want, ids) < 1.0 - 1e-9:
            raise AssertionError(
                f"{name} returned another partition than KMeans(n_clusters={k}, "
                f"random_state={seed}, n_init={KMEANS_SETTINGS['n_init']}, "
                f"algorithm='{KMEANS_SETTINGS['algorithm']}') fitted on the float32 training "
                f"features ({case}); use exactly these settings, pass `seed` as random_state, "
                "and fit on the training features as they are (float32)")
    _passed(name)


def check_kmeans_mahalanobis(student_fn: Callable) -> None:
    """Self-check of ``kmeans_mahalanobis_exercise(train_feats, test_feats, n_clusters,
    relative=False, seed=0)``.

    Uses blobs of unequal size and spread that are so far apart that any k-means run finds
    them, so the result does not depend on the initialisation; compares with
    :func:`ood_utils.scores.kmeans_mahalanobis_scores` for 2 and 4 clusters, MD and RMD.
    Because the cluster sizes differ, a class-size-weighted (pooled) covariance gives other
    scores than the course's unweighted mean of the cluster covariances.
    """
    from sklearn.cluster import KMeans

    from .scores import KMEANS_SETTINGS, kmeans_mahalanobis_scores

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
    _passed(name)


# --------------------------------------------------------------------------- AUROC checks

def check_auroc(check_id: str, value: Any, profile=None) -> None:
    """Assert that an AUROC (percent) is within the answer key's tolerance for ``profile``.

    Prints the value, the expected value and the tolerance; raises ``AssertionError`` naming
    both when it is outside, and ``ValueError`` for an unknown check id or a check without a
    recorded target.
    """
    p = get_profile(profile)
    exp = get_expected(check_id, p)
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"value must be a number (AUROC in percent), got {type(value).__name__}"
                         ) from None
    if not np.isfinite(v):
        raise AssertionError(f"{check_id}: AUROC is {v}; the scores contain NaN or inf")
    if not exp.is_set:
        raise ValueError(f"{check_id}: the answer key has no target for profile {p.name!r} "
                         f"({exp.how})")
    line = f"{check_id}: AUROC {v:.2f}, expected {exp.value:.2f} +/- {exp.tol:.2f} ({p.name})"
    if exp.accepts(v):
        print(line + " -> within tolerance")
        return
    hint = ""
    if 0.0 <= v <= 1.0:
        hint = " It looks like a fraction: report the AUROC in percent (multiply by 100)."
    elif abs((100.0 - v) - exp.value) <= exp.tol:
        hint = (" 100 minus it would match: the scores point the wrong way "
                "(higher must mean more in-distribution).")
    raise AssertionError(f"{check_id}: AUROC {v:.2f} is outside the expected {exp.value:.2f} "
                         f"+/- {exp.tol:.2f} for profile {p.name}.{hint}")


# --------------------------------------------------------------------------- features (01) and CLIP loss (00)

def check_extract_features(student_fn: Callable) -> None:
    """Compare a feature-extraction loop with :func:`ood_utils.features.extract_features`.

    Uses a tiny backbone with dropout (so forgetting ``eval()`` shows) on random images.
    """
    from torch.utils.data import DataLoader, TensorDataset

    from .features import extract_features

    _require_callable(student_fn)
    name = _fn_name(student_fn)
    g = _gen(0)
    images = torch.randn(37, 3, 8, 8, generator=g)
    labels = torch.randint(0, 5, (37,), generator=g)
    loader = DataLoader(TensorDataset(images, labels), batch_size=10, shuffle=False)
    torch.manual_seed(0)
    backbone = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(192, 16),
                                   torch.nn.Dropout(0.5), torch.nn.ReLU())
    backbone.train()  # the student's function must switch it to evaluation mode itself
    out = student_fn(backbone, loader, "cpu")
    if not isinstance(out, tuple) or len(out) != 2:
        raise AssertionError(f"{name} must return a pair (feats, labels), got {type(out).__name__}")
    feats, got_labels = out
    if not isinstance(feats, torch.Tensor) or not isinstance(got_labels, torch.Tensor):
        raise AssertionError(f"{name} must return torch tensors (feats, labels)")
    if feats.dtype != torch.float32 or got_labels.dtype != torch.int64:
        raise AssertionError(f"{name} returned dtypes {feats.dtype}/{got_labels.dtype}; "
                             "expected float32 features and int64 labels")
    if feats.requires_grad:
        raise AssertionError(f"{name} returned features that track gradients; "
                             "run the backbone under torch.inference_mode()")
    want_feats, want_labels = extract_features(backbone, loader, "cpu", progress=False)
    try:
        _compare(feats.double().numpy(), want_feats.double().numpy(), name,
                 "37 images, batches of 10", "one row of features per image, in the loader's order")
    except AssertionError as err:
        raise AssertionError(f"{err} Did you put the backbone in evaluation mode "
                             "(backbone.eval()) so that dropout is off?") from None
    if not torch.equal(got_labels, want_labels):
        raise AssertionError(f"{name} returned labels that differ from the loader's labels "
                             "(keep them in the loader's order)")
    _passed(name)


def check_clip_loss(student_fn: Callable) -> None:
    """Compare a CLIP loss with open_clip's own ``ClipLoss`` on random embeddings."""
    from open_clip.loss import ClipLoss

    _require_callable(student_fn)
    name = _fn_name(student_fn)
    reference = ClipLoss()
    for case, (b, e, scale) in enumerate([(4, 8, 1.0), (9, 16, 14.3), (32, 5, 100.0)]):
        g = _gen(10 + case)
        u = torch.nn.functional.normalize(torch.randn(b, e, generator=g), dim=-1)
        v = torch.nn.functional.normalize(torch.randn(b, e, generator=g), dim=-1)
        s = torch.tensor(scale)
        got = student_fn(u, v, s)
        if not isinstance(got, torch.Tensor) or got.numel() != 1:
            raise AssertionError(f"{name} must return a scalar tensor, got "
                                 f"{type(got).__name__} {getattr(got, 'shape', '')}")
        want = reference(u, v, s)
        logits = s * u @ v.T
        one_way = torch.nn.functional.cross_entropy(logits, torch.arange(b))
        _compare(got.detach().double().reshape(1).numpy(), want.double().reshape(1).numpy(), name,
                 f"batch {b}, logit scale {scale}", "a single number",
                 hints={"only the image-to-text direction is averaged in":
                        one_way.double().reshape(1).numpy(),
                        "the logits were not multiplied by logit_scale":
                        ((torch.nn.functional.cross_entropy(u @ v.T, torch.arange(b)) +
                          torch.nn.functional.cross_entropy(v @ u.T, torch.arange(b))) / 2)
                        .double().reshape(1).numpy()})
    _passed(name)


# --- CAC (open-set recognition) ---

def check_cac_loss(student_fn: Callable) -> None:
    """Self-check of ``cac_loss_exercise(distances, targets, lambda_=0.1)`` (notebook 07).

    Compares with :func:`ood_utils.cac.cac_loss` on random distances (including distances in
    the hundreds, where a naive ``exp`` overflows), checks that the result is a scalar tensor
    that gradients flow through, and names common mistakes when the value matches one of them.
    """
    from .cac import cac_loss

    _require_callable(student_fn)
    name = _fn_name(student_fn)
    cases = [(8, 6, 0.1, 1.0), (5, 3, 0.0, 1.0), (16, 10, 0.5, 1.0), (6, 4, 0.1, 60.0)]
    for b, n, lam, scale in cases:
        g = _gen(70 + b)
        dist = (torch.rand(b, n, generator=g) * 15 * scale).float()
        y = torch.randint(0, n, (b,), generator=g)
        case = f"{b} samples, {n} classes, lambda_={lam:g}, distances up to {15 * scale:g}"
        d_in = dist.clone().requires_grad_(True)
        got = student_fn(d_in, y.clone(), lambda_=lam)
        if got is None:
            raise AssertionError(f"{name} returned None: complete the code between "
                                 "'### START CODE HERE ###' and '### END CODE HERE ###'")
        if not isinstance(got, torch.Tensor) or got.numel() != 1:
            raise AssertionError(f"{name} must return a single-number torch tensor (the batch "
                                 f"mean), got {type(got).__name__} {tuple(getattr(got, 'shape', ()))}"
                                 f" ({case}); reduce with .mean() over the batch")
        if not got.requires_grad:
            raise AssertionError(f"{name} returned a value without a gradient ({case}); compute "
                                 "it with torch operations on `distances` (no .item(), numpy or "
                                 "torch.no_grad()) so that training can back-propagate")
        want = float(cac_loss(dist.double(), y, lambda_=lam))
        d = dist.double().numpy()
        d_y = d[np.arange(b), y.numpy()]
        diff = d_y[:, None] - d
        mask = np.ones_like(d, dtype=bool)
        mask[np.arange(b), y.numpy()] = False
        with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
            tuplet = np.log(1 + np.where(mask, np.exp(diff), 0).sum(1))
            no_one = np.log(np.where(mask, np.exp(diff), 0).sum(1))
            flipped = np.log(1 + np.where(mask, np.exp(-diff), 0).sum(1))
        hints = {
            "the batch is summed instead of averaged (use .mean())":
                np.array([want * b]),
            "the anchor term lambda_ * d_y is missing": np.array([tuplet.mean()]),
            "the anchor term is not multiplied by lambda_":
                np.array([(tuplet + d_y).mean()]) if lam != 1 else None,
            "the '1 +' inside the log is missing (or the sum skips j = y incorrectly)":
                np.array([(no_one + lam * d_y).mean()]),
            "the exponent is flipped (or the distances were used as logits): use "
            "exp(d_y - d_j), so that a large distance to the true anchor costs more":
                np.array([(flipped + lam * d_y).mean()]),
        }
        value = float(got.detach())
        if not np.isfinite(value):
            raise AssertionError(
                f"{name} returned {value} ({case}): exp(d_y - d_j) overflows for large "
                "distances; compute log(1 + sum exp(...)) with torch.logsumexp (the j = y term "
                "of logsumexp_j (d_y - d_j) is exp(0) = 1)")
        _compare(np.array([value]), np.array([want]), name, case, "a single number", hints,
                 rtol=1e-5, atol=1e-5)
        got.backward()
        if d_in.grad is None or not torch.isfinite(d_in.grad).all():
            raise AssertionError(f"{name}: the gradient with respect to the distances is "
                                 f"missing or not finite ({case})")
    _passed(name)


def check_cac_results(summary: dict, profile=None) -> None:
    """Graded check of notebook 07: compare its open-set numbers with the answer key.

    ``summary`` is :func:`ood_utils.cac.open_set_summary`'s dict. The answer key's ``cac``
    entry gives the AUROC target (``value``/``tol``, checked with :func:`check_auroc`) and, in
    ``extra``, ``{key: (value, tol)}`` targets for other entries of ``summary`` (closed-set
    accuracy, recognised rates). Prints one line per number; raises ``AssertionError`` naming
    the first number outside its tolerance.
    """
    if not isinstance(summary, dict):
        raise TypeError("pass the dict returned by ood_utils.cac.open_set_summary")
    p = get_profile(profile)
    exp = get_expected("cac", p)
    if not exp.is_set and not exp.extra:
        raise ValueError(f"cac: the answer key has no target for profile {p.name!r} ({exp.how})")
    if exp.is_set:
        check_auroc("cac", summary.get("auroc", float("nan")), p)
    for key, (value, tol) in exp.extra.items():
        if key not in summary:
            raise ValueError(f"cac: summary has no entry {key!r}; pass open_set_summary's dict")
        v = float(summary[key])
        line = f"cac: {key} {v:.2f}, expected {value:.2f} +/- {tol:.2f} ({p.name})"
        if not np.isfinite(v) or abs(v - value) > tol + 1e-9:
            raise AssertionError(line.replace(", expected", " is outside the expected"))
        print(line + " -> within tolerance")
