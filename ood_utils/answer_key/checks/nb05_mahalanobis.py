"""Self-checks of notebook 05: class statistics, MD/RMD and the shrinkage sweep."""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from ..registry import compares_with
from ._common import _as_array, _auroc_pct, _compare, _compare_sweep, _fn_name, _gen, _hide_check_frames, _passed, _random_feats, _require_callable, _sweep_dict

# --------------------------------------------------------------------------- Mahalanobis (VI, VII)

_NOT_OUR_CONVENTION = (
    "the shared covariance is weighted by class size (the class-centred rows pooled): a valid "
    "estimator (Lee et al. 2018 divide the pooled scatter by N; dividing by N - C makes it "
    "unbiased), but not this course's convention, which is the PLP paper's unweighted mean "
    "(1/C) sum_c Sigma_c of the per-class covariances")
_POOLED_N_MINUS_C = _NOT_OUR_CONVENTION + " (here: pooled and divided by N - C)"
_POOLED_N = _NOT_OUR_CONVENTION + " (here: pooled and divided by N, as Lee et al. do)"
_SINGLETON = ("a class with a single training sample was kept: its covariance is undefined "
              "(0/0 for the unbiased estimator), so skip every class with fewer than two "
              "samples, for the means as well as for the shared covariance")


def _maha_variants(train: np.ndarray, labels: np.ndarray, test: np.ndarray) -> dict:
    """Squared distances of common wrong variants, used only to name the mistake.

    Keys: ``shared`` (the course's convention), ``pooled`` / ``weighted_n`` (class-size
    weighted, divided by N - C or N), ``per_class`` (one covariance per class),
    ``uncentred`` (second moments instead of covariances), ``bg`` (the right background),
    ``bg_test`` (background Gaussian fitted to the test rows), ``bg_means`` (background
    fitted to the class means instead of all training rows), ``bg_biased`` (background
    covariance divided by N), ``bg_shared`` (background distance with the shared covariance
    instead of Sigma_0); where a class has a single sample, ``single_kept`` (its mean kept as a
    class) and ``single_kept_zero`` (its mean kept and a zero covariance averaged in).
    """
    classes = np.unique(labels)
    groups = [train[labels == c] for c in classes if (labels == c).sum() > 1]
    singles = [train[labels == c] for c in classes if (labels == c).sum() == 1]
    means = np.stack([g.mean(0) for g in groups])
    covs = [np.cov(g, rowvar=False) for g in groups]
    shared = np.mean(covs, axis=0)
    centred = np.concatenate([g - g.mean(0) for g in groups])
    n, c = len(centred), len(groups)
    uncentred = np.mean([g.T @ g / (len(g) - 1) for g in groups], axis=0)

    def sq(x, mu, prec):
        diff = x - mu
        return ((diff @ prec) * diff).sum(1)

    def dists(cov, mus=means):
        prec = np.linalg.pinv(cov, hermitian=True)
        return np.stack([sq(test, m, prec) for m in mus], 1)

    out = {"shared": dists(shared), "pooled": dists(centred.T @ centred / (n - c)),
           "weighted_n": dists(centred.T @ centred / n), "uncentred": dists(uncentred),
           "per_class": np.stack([sq(test, m, np.linalg.pinv(cv, hermitian=True))
                                  for m, cv in zip(means, covs)], 1)}
    cov0 = np.cov(train, rowvar=False)
    out["bg"] = sq(test, train.mean(0), np.linalg.pinv(cov0))
    out["bg_test"] = sq(test, test.mean(0), np.linalg.pinv(np.cov(test, rowvar=False)))
    out["bg_means"] = sq(test, means.mean(0), np.linalg.pinv(
        np.cov(means, rowvar=False) if c > 1 else np.eye(train.shape[1])))
    out["bg_biased"] = sq(test, train.mean(0), np.linalg.pinv(cov0 * (len(train) - 1)
                                                              / len(train)))
    out["bg_shared"] = sq(test, train.mean(0), np.linalg.pinv(shared, hermitian=True))
    if singles:
        all_means = np.stack([train[labels == k].mean(0) for k in classes])
        out["single_kept"] = dists(shared, all_means)
        out["single_kept_zero"] = dists(np.sum(covs, axis=0) / len(classes), all_means)
    return out


def _maha_hints(v: dict, relative: bool) -> dict:
    """Failure messages and the scores of the wrong variant each one describes."""
    single = {}
    if relative:
        bg = v["bg"][:, None]
        if "single_kept" in v:
            single = {_SINGLETON: -(v["single_kept"] - bg).min(1),
                      _SINGLETON + " (here with a zero covariance averaged in)":
                          -(v["single_kept_zero"] - bg).min(1)}
        return {
            **single,
            "the background term is not subtracted (that is plain MD, not RMD)":
                -v["shared"].min(1),
            "the sign is flipped: RMD scores are -min_c (d_c^2 - d_0^2)":
                (v["shared"] - bg).min(1),
            "one covariance per class instead of the shared (averaged) covariance":
                -(v["per_class"] - bg).min(1),
            _POOLED_N_MINUS_C: -(v["pooled"] - bg).min(1),
            _POOLED_N: -(v["weighted_n"] - bg).min(1),
            "the covariances are computed without subtracting the class means (centre every "
            "class on its mean first)": -(v["uncentred"] - bg).min(1),
            "the background Gaussian is fitted to the TEST features; fit mu_0 and Sigma_0 to "
            "all TRAINING features (statistics never come from the test set)":
                -(v["shared"] - v["bg_test"][:, None]).min(1),
            "the background Gaussian is fitted to the class means; fit mu_0 and Sigma_0 to all "
            "training features": -(v["shared"] - v["bg_means"][:, None]).min(1),
            "the background covariance is biased (divided by N): Sigma_0 is the unbiased "
            "covariance of all training features (np.cov / torch.cov default, N - 1)":
                -(v["shared"] - v["bg_biased"][:, None]).min(1),
            "the background distance d_0^2 uses the shared class covariance: the background "
            "Gaussian has its own covariance Sigma_0, that of ALL training features around "
            "their mean": -(v["shared"] - v["bg_shared"][:, None]).min(1),
            "the max over classes instead of the min (wrong reduction)":
                -(v["shared"] - bg).max(1),
        }
    if "single_kept" in v:
        single = {_SINGLETON: -v["single_kept"].min(1),
                  _SINGLETON + " (here with a zero covariance averaged in)":
                      -v["single_kept_zero"].min(1)}
    return {
        **single,
        "the minus sign is missing: the score is -min_c d_c^2 (higher = more ID)":
            v["shared"].min(1),
        "one covariance per class instead of the shared (averaged) covariance":
            -v["per_class"].min(1),
        _POOLED_N_MINUS_C: -v["pooled"].min(1),
        _POOLED_N: -v["weighted_n"].min(1),
        "the covariances are computed without subtracting the class means (centre every class "
        "on its mean first)": -v["uncentred"].min(1),
        "the distance of the LAST/any class instead of the nearest class mean (min over c)":
            -v["shared"].max(1),
        "the square root was taken: use the squared distance d_c^2":
            -np.sqrt(v["shared"].min(1)),
    }


def _maha_data(seed: int, sizes=(30, 21, 14), d: int = 4, nearly_singular: bool = False):
    """Classes of unequal size with clearly different covariances, as float32 tensors (a class
    of size 1 is a single row near its centre)."""
    g = _gen(seed)
    rows, labels = [], []
    for c, n in enumerate(sizes):
        mix = torch.randn(d, d, generator=g) * (0.5 + c)
        centre = torch.randn(d, generator=g) * 4
        rows.append(torch.randn(n, d, generator=g) @ mix + centre)
        labels.append(torch.full((n,), c, dtype=torch.int64))
    train = torch.cat(rows)
    test = torch.randn(9, d, generator=g) * 5
    if 1 in sizes:  # test rows right next to the single sample: keeping it changes their score
        lone = rows[list(sizes).index(1)]
        test = torch.cat([test, lone + 0.1 * torch.randn(3, d, generator=g)])
    if nearly_singular:
        # the last column is almost the sum of the first two (up to 1e-4): the covariance has
        # an eigenvalue ~1e-8, as real network features do (LayerNorm, ReLU); float32 fails
        for x in (train, test):
            x[:, -1] = x[:, 0] + x[:, 1] + 1e-4 * torch.randn(len(x), generator=g)
    return train.float(), torch.cat(labels), test.float()


def _call_stats(student_fn, name, train, labels, case):
    """The student's class statistics; a known crash becomes a message naming its cause."""
    __tracebackhide__ = True
    try:
        return student_fn(train.clone(), labels.clone())
    except RuntimeError as err:
        if "stack expects each tensor to be equal size" in str(err):
            raise AssertionError(
                f"{name} failed in torch.stack ({case}): the per-class covariances have "
                f"different shapes. torch.cov treats each ROW as a variable and each column as "
                f"an observation, so torch.cov(g) of a (n_c, D) block is (n_c, n_c); use "
                f"torch.cov(g.T) (or np.cov(g, rowvar=False)) for the (D, D) covariance"
            ) from None
        raise


def _require_float64_tensor(value, name: str, what: str, case: str) -> None:
    __tracebackhide__ = True
    if isinstance(value, np.ndarray):
        raise AssertionError(
            f"{name} returned {what} as a NumPy array ({case}); return torch tensors "
            f"(torch.from_numpy(...) or torch.as_tensor(...)): mahalanobis_exercise and the "
            f"notebooks' cells compute on them with torch operations")
    if isinstance(value, torch.Tensor) and value.dtype != torch.float64:
        raise AssertionError(
            f"{name} returned {what} as {value.dtype} ({case}); compute and return them in "
            f"float64 (.double() on the features first): the inverse of a nearly singular "
            f"covariance is wrong in float32, and mixing float32 with float64 tensors in "
            f"mahalanobis_exercise fails with a dtype error")


@compares_with('methods.mahalanobis:_class_statistics')
def check_class_statistics(student_fn: Callable) -> None:
    """Self-check of ``class_statistics_exercise(train_feats, train_labels)``.

    The function returns ``(means, shared_cov)``: float64 torch tensors, the class means
    ``(C, D)`` in the order of the sorted class ids and the course's shared covariance
    ``(D, D)``, the unweighted mean of the per-class unbiased covariances. Classes of unequal
    size and spread tell the course's convention apart from the class-size-weighted (pooled)
    estimator; the third case has a class with a single sample, which must be skipped.
    """
    import warnings

    from ...methods.mahalanobis import _class_statistics

    __tracebackhide__ = True
    _require_callable(student_fn)
    name = _fn_name(student_fn)
    for seed, sizes in [(0, (30, 21, 14)), (1, (18, 25)), (4, (30, 1, 21, 14))]:
        train, labels, _ = _maha_data(seed, sizes)
        case = f"{len(sizes)} classes of sizes {sizes}, train {tuple(train.shape)}"
        if 1 in sizes:
            case += "; one class has a single sample"
        out = _call_stats(student_fn, name, train, labels, case)
        if not isinstance(out, (tuple, list)) or len(out) != 2:
            raise AssertionError(f"{name} must return a pair (means, shared_cov), got "
                                 f"{type(out).__name__}")
        means = _as_array(out[0], name, "the class means, shape (C, D)")
        cov = _as_array(out[1], name, "the shared covariance, shape (D, D)")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _, want_means, want_cov, _, _ = _class_statistics(train.double(), labels, False)
        want_means, want_cov = want_means.numpy(), want_cov.numpy()
        c, d = want_means.shape
        if means.shape == (len(sizes), d) and len(sizes) != c:
            raise AssertionError(f"{name} returned {len(sizes)} class means, expected {c} "
                                 f"({case}). Likely cause: {_SINGLETON}")
        if cov.shape == (c, c) and c != d or cov.shape[0] not in (d,):
            raise AssertionError(
                f"{name} returned a covariance of shape {cov.shape}, expected {(d, d)} ({case}). "
                "torch.cov treats each ROW as a variable and each column as an observation, so "
                "for a (n_c, D) block of rows use torch.cov(x.T) (or np.cov(x, rowvar=False))")
        _compare(means, want_means, name + " (means)", case, "one mean per class, rows in the "
                 "order of the sorted class ids")
        if 1 in sizes and not np.all(np.isfinite(cov)):
            raise AssertionError(f"{name} returned NaN in the shared covariance ({case}). "
                                 f"Likely cause: {_SINGLETON}")
        x, y = train.double().numpy(), labels.numpy()
        groups = [x[y == k] for k in np.unique(y) if (y == k).sum() > 1]
        centred = np.concatenate([g - g.mean(0) for g in groups])
        n = len(centred)
        hints = {
            _POOLED_N_MINUS_C: centred.T @ centred / (n - c),
            _POOLED_N: centred.T @ centred / n,
            "the per-class covariances are biased (divided by n_c instead of n_c - 1); use "
            "the unbiased estimator (np.cov / torch.cov default)":
                np.mean([np.cov(g, rowvar=False, bias=True) for g in groups], axis=0),
            "the class means are not subtracted (second moments instead of covariances)":
                np.mean([g.T @ g / (len(g) - 1) for g in groups], axis=0),
            "this is the covariance of ALL training rows (the background Sigma_0), not the "
            "mean of the per-class covariances": np.cov(x, rowvar=False),
        }
        if 1 in sizes:
            hints[_SINGLETON + " (here with a zero covariance averaged in)"] = \
                np.sum([np.cov(g, rowvar=False) for g in groups], axis=0) / len(sizes)
        _compare(cov, want_cov, name + " (shared covariance)", case, "a (D, D) matrix", hints)
        _require_float64_tensor(out[0], name, "the class means", case)
        _require_float64_tensor(out[1], name, "the shared covariance", case)
    _passed(name)


def _check_maha_case(student_fn, reference, name, train, labels, test, relative, case,
                     variants) -> None:
    import warnings

    __tracebackhide__ = True
    try:
        result = student_fn(train.clone(), labels.clone(), test.clone(), relative=relative)
    except Exception as err:
        if "single training sample" not in case:
            raise
        raise AssertionError(f"{name} failed ({type(err).__name__}: {err}) on a case with a "
                             f"single-sample class ({case}). Likely cause: {_SINGLETON}"
                             ) from None
    got = _as_array(result, name, "one score per test row")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the reference names skipped single-sample classes
        want = _as_array(reference(train, labels, test, relative=relative),
                         "mahalanobis_scores", "")
    _compare(got, want, name, case, "one score per TEST row (the min over classes is taken "
             "along the class axis)", _maha_hints(variants, relative), rtol=1e-3, atol=1e-3)


#: Work of notebook 06's scoring relative to the timing case of :func:`_maha_timing`, for an
#: implementation whose cost grows like rows x D^2 x classes (a loop over the classes with a
#: per-class (M, D) x (D, D) product or einsum): 10,000 test rows, D = 319 after the rotation,
#: 328 class Gaussians in all (k = 1, 3, 10, 50, 100, MD and RMD) against 1,000 rows, D = 128
#: and 40 classes.
_MAHA_TIMING_SCALE = (10_000 * 319 ** 2 * 2 * (1 + 3 + 10 + 50 + 100)) / (1_000 * 128 ** 2 * 40)


def _maha_timing(student_fn, name: str) -> None:
    """Warn (print) when the student's MD is correct but so slow that notebook 06's scoring
    cell would run past the grader's cell limit: NumPy's ``einsum`` without ``optimize`` in
    its source (torch's einsum uses BLAS), or a time on a mid-size case more than ten times
    that of a vectorised computation timed right before it (so a busy machine does not
    count)."""
    import inspect
    import time

    try:
        source = inspect.getsource(student_fn)
    except (OSError, TypeError):
        source = ""
    g = _gen(99)
    train = torch.randn(2000, 128, generator=g)
    labels = torch.arange(2000) % 40
    test = torch.randn(1000, 128, generator=g)
    start = time.perf_counter()
    x = train.double()
    cov = torch.stack([torch.cov(x[labels == c].T) for c in range(40)]).mean(0)
    means = torch.stack([x[labels == c].mean(0) for c in range(40)])
    prec = torch.linalg.pinv(cov, hermitian=True)
    tp = test.double() @ prec
    (tp * test.double()).sum(1, keepdim=True) - 2 * tp @ means.T + ((means @ prec) * means).sum(1)
    baseline = time.perf_counter() - start
    start = time.perf_counter()
    student_fn(train, labels, test, relative=False)
    seconds = time.perf_counter() - start
    slow_einsum = ("np.einsum(" in source or "numpy.einsum(" in source) \
        and "optimize" not in source
    if not slow_einsum and not (seconds > 1.0 and seconds > 10 * baseline):
        return
    predicted = seconds * _MAHA_TIMING_SCALE / 60
    cause = ("Your function calls NumPy's einsum without optimize=...: for a product of three "
             "operands such as 'nd,de,ne->n' it loops in C without BLAS, about a hundred times "
             "slower than a matrix product" if slow_einsum else
             "Usual causes: a loop over the test rows, or a per-class np.einsum")
    print(f"WARNING: {name} is correct but slow: {seconds:.2f} s for 1,000 test rows, D = 128 "
          f"and 40 classes ({seconds / max(baseline, 1e-9):.0f} times a vectorised "
          f"computation timed just before). Notebook 06 scores 10,000 rows of the D = 319 "
          f"features for k up to 100, MD and RMD: at this speed about {predicted:.0f} min, and "
          f"the grader stops a cell after 2 min (05's part B takes minutes too). {cause}. Use "
          f"matrix products, e.g. ((diff @ P) * diff).sum(1) per class, or the expansion "
          f"h P h - 2 h P mu_c + mu_c P mu_c for all classes at once.")


@compares_with('methods.mahalanobis:mahalanobis_scores')
def check_mahalanobis(student_fn: Callable) -> None:
    """Self-check of ``mahalanobis_exercise(train_feats, train_labels, test_feats, relative=False)``.

    Compares with :func:`ood_utils.methods.mahalanobis_scores` for ``relative=False`` (MD) and
    ``relative=True`` (RMD) on classes of unequal size and different spread (so the course's
    unweighted mean of class covariances differs from the class-size-weighted, pooled one),
    on a case whose covariance is nearly singular (condition number ~1e9), which float32
    arithmetic cannot handle but float64 with any correct inverse (``inv``, ``pinv``,
    ``pinvh``, ``solve``, ``lstsq``) can, and on a case with a single-sample class (to be
    skipped). Then times the function on a mid-size case and prints a warning when notebook
    06's scoring cell would take minutes at that speed.
    """
    from ...methods import mahalanobis_scores

    __tracebackhide__ = True
    _require_callable(student_fn)
    name = _fn_name(student_fn)
    for seed, sizes, singular in [(0, (30, 21, 14), False), (1, (18, 25), False),
                                  (2, (40, 35, 30), True), (4, (30, 1, 21, 14), False)]:
        train, labels, test = _maha_data(seed, sizes, d=5 if singular else 4,
                                         nearly_singular=singular)
        variants = _maha_variants(train.double().numpy(), labels.numpy(), test.double().numpy())
        for relative in (False, True):
            case = (f"{len(sizes)} classes of sizes {sizes}, test {tuple(test.shape)}, "
                    f"relative={relative}")
            if singular:
                case += ("; this case has a nearly singular covariance, like real features: "
                         "compute means, covariances and distances in float64")
            if 1 in sizes:
                case += ("; one class has a single training sample: skip classes with fewer "
                         "than two samples")
            _check_maha_case(student_fn, mahalanobis_scores, name, train, labels, test,
                             relative, case, variants)
    _maha_timing(student_fn, name)
    _passed(name)


@compares_with('course.sweeps:shrinkage_sweep')
def check_shrinkage_sweep(student_fn: Callable) -> None:
    """Self-check of ``shrinkage_sweep_exercise(train_feats, train_labels, id_feats,
    ood_feats, alphas)``.

    Expected: ``{a: MD AUROC in percent}`` with the course's shared covariance ``Sigma``
    replaced by ``(1 - a) Sigma + a (tr(Sigma) / D) I`` (reference:
    :func:`ood_utils.course.sweeps.shrinkage_sweep`), on classes of unequal size and spread.
    """
    from ...course.sweeps import shrinkage_sweep

    __tracebackhide__ = True
    _require_callable(student_fn)
    name = _fn_name(student_fn)
    train, labels, test = _maha_data(5, (40, 25, 30), d=5)
    ood = _random_feats(25, 5, 61) * 2.0 + 3.0
    alphas = (0.0, 0.2, 0.7, 1.0)
    case = f"3 classes of sizes (40, 25, 30), D = 5, 9 ID and 25 OOD test rows, alphas {alphas}"
    got = _sweep_dict(student_fn(train.clone(), labels.clone(), test.clone(), ood.clone(),
                                 alphas), name, alphas, "MD AUROC in percent")
    want = shrinkage_sweep(train, labels, test, ood, alphas)
    x, y = train.double().numpy(), labels.numpy()
    groups = [x[y == k] for k in np.unique(y)]
    means = np.stack([g.mean(0) for g in groups])
    cov = np.mean([np.cov(g, rowvar=False) for g in groups], axis=0)
    d = cov.shape[0]

    def md(target, weight):
        def auroc_at(a):
            shrunk = weight(a) * cov + (1 - weight(a)) * target
            prec = np.linalg.pinv(shrunk)
            def score(t):
                t = t.double().numpy()
                return -np.stack([(((t - m) @ prec) * (t - m)).sum(1) for m in means], 1).min(1)
            return _auroc_pct(score(test), score(ood))
        return {a: auroc_at(a) for a in alphas}

    scaled = np.trace(cov) / d * np.eye(d)
    hints = {
        "the shrinkage target is the identity I itself: scale it by tr(Sigma) / D, the "
        "average variance, so that the total variance stays the same":
            md(np.eye(d), lambda a: 1 - a),
        "the weights are swapped: alpha = 0 must leave Sigma unchanged, alpha = 1 give "
        "(tr(Sigma) / D) I": md(scaled, lambda a: a),
        "the target is the diagonal of Sigma (np.diag(np.diag(Sigma))), not the average "
        "variance times I": md(np.diag(np.diag(cov)), lambda a: 1 - a),
        "the AUROC is a fraction: report it in percent (times 100)":
            {a: v / 100.0 for a, v in want.items()},
        "the scores point the wrong way (100 - AUROC): the MD score is -min_c d_c^2":
            {a: 100.0 - v for a, v in want.items()},
    }
    _compare_sweep(got, want, name, case, hints, tol=1e-4)
    _passed(name)


__all__ = [name for name in dir() if name.startswith("check_")]
_hide_check_frames(globals())  # keep this the last line of the module
