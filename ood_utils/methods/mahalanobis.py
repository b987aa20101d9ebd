"""Mahalanobis distance (Lee et al. 2018) and relative Mahalanobis distance (Ren et al. 2021),
with the PLP paper's unweighted shared covariance by default: :class:`Mahalanobis` is fitted
once and scores any number of test sets; :func:`mahalanobis_scores` is its one-call form.

:func:`drop_degenerate_directions` rotates features onto the directions in which the training
features vary, removing exactly constant directions (see its docstring)."""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ._arrays import check_array, check_labels, check_same_dim, to_tensor
from ._threads import one_cpu_thread
from ._common import _back, _check_fitted_dim, _device_of, _feature_tensor, _positive_int


# ----------------------------------------------------------------------------- Mahalanobis

def _squared_distances(x: torch.Tensor, means: torch.Tensor, precision: torch.Tensor
                       ) -> torch.Tensor:
    """``d2[i, c] = (x_i - mu_c) P (x_i - mu_c)^T`` via the expansion, float64 ``(n, C)``."""
    xp = x @ precision
    xpx = (xp * x).sum(dim=1, keepdim=True)
    mpm = ((means @ precision) * means).sum(dim=1)
    return (xpx - 2.0 * (xp @ means.T) + mpm).clamp_(min=0.0)


class _Gram:
    """Accumulates ``sum Z^T Z`` over float64 chunks ``Z`` of shape (rows, D).

    On the CPU this uses BLAS ``dsyrk`` (SciPy), which fills one triangle and needs half the
    arithmetic of a general matrix product; elsewhere ``torch.addmm_``.
    """

    def __init__(self, dim: int, device: torch.device):
        self.cpu = device.type == "cpu"
        if self.cpu:
            self.acc = np.zeros((dim, dim), dtype=np.float64, order="F")
        else:
            self.acc = torch.zeros(dim, dim, dtype=torch.float64, device=device)

    def add(self, z: torch.Tensor) -> None:
        if self.cpu:
            from scipy.linalg import blas

            # z is C-ordered (rows, D), so z.T is a Fortran-ordered (D, rows) view: A A^T
            blas.dsyrk(1.0, z.numpy().T, beta=1.0, c=self.acc, trans=0, lower=1,
                       overwrite_c=1)
        else:
            self.acc.addmm_(z.T, z)

    def value(self) -> torch.Tensor:
        if not self.cpu:
            return self.acc
        lower = torch.from_numpy(np.tril(self.acc))
        return lower + lower.T - torch.diag(torch.diagonal(lower))


def _class_statistics(train: torch.Tensor, labels: torch.Tensor, relative: bool,
                      chunk_rows: int = 8192, pooled: bool = False):
    """Class means, the shared covariance, and (optionally) the global Gaussian.

    Everything is accumulated in float64 over chunks of ``chunk_rows`` training rows, so the
    training set is never copied to float64 as a whole and every matrix product is large
    enough to run at full speed. With ``w_c = 1 / ((n_c - 1) C)`` the shared covariance
    ``(1/C) sum_c S_c / (n_c - 1)`` (``S_c`` = scatter matrix of class ``c``) is the product
    ``Z^T Z`` of the class-centred rows scaled by ``sqrt(w_c)``. With ``pooled=True`` every
    weight is ``1 / (N - C)`` instead (Lee et al.'s pooled, class-size-weighted estimator).

    Returns ``(kept_ids, means, shared_cov, global_mean, global_cov)``, the last two ``None``
    unless ``relative``.
    """
    ids, inverse, counts = torch.unique(labels, return_inverse=True, return_counts=True)
    n, dim = train.shape
    f64 = dict(dtype=torch.float64, device=train.device)
    sums = torch.zeros(len(ids), dim, **f64)
    for start in range(0, n, chunk_rows):
        sums.index_add_(0, inverse[start:start + chunk_rows],
                        train[start:start + chunk_rows].to(torch.float64))
    counts64 = counts.to(**f64)
    means = sums / counts64[:, None]
    kept = counts >= 2
    if not bool(kept.any()):
        raise ValueError(
            "every class in train_labels has fewer than two samples, so no class covariance "
            "can be estimated; pass more samples per class (or fewer clusters)")
    if not bool(kept.all()):
        skipped = ids[~kept].tolist()
        shown = ", ".join(map(str, skipped[:20])) + (" ..." if len(skipped) > 20 else "")
        warnings.warn(f"mahalanobis_scores: skipped {len(skipped)} class(es) with fewer than two "
                      f"training samples (ids: {shown}); they get no Gaussian of their own",
                      stacklevel=3)
    if pooled:
        n_kept = float(counts64[kept].sum())
        weights = torch.where(kept, torch.full_like(counts64, 1.0 / (n_kept - int(kept.sum()))),
                              torch.zeros_like(counts64))
    else:
        weights = torch.where(kept, 1.0 / ((counts64 - 1).clamp_min(1) * int(kept.sum())),
                              torch.zeros_like(counts64))
    # with equal weights (all classes of one size) the within-class scatter is a multiple
    # of the shared covariance, so RMD needs no second product
    equal = bool(kept.all()) and bool((weights == weights[0]).all())
    root_w = weights.sqrt()
    shared = _Gram(dim, train.device)
    within = _Gram(dim, train.device) if relative and not equal else None
    for start in range(0, n, chunk_rows):
        idx = inverse[start:start + chunk_rows]
        z = train[start:start + chunk_rows].to(torch.float64, copy=True)  # never the input
        z.sub_(means.index_select(0, idx))  # class-centred rows
        if within is not None:
            within.add(z)
        z.mul_(root_w.index_select(0, idx)[:, None])
        shared.add(z)
    shared, within = shared.value(), (within.value() if within is not None else None)
    global_mean = global_cov = None
    if relative:
        if n < 2:
            raise ValueError("relative=True needs at least two training samples")
        if within is None:
            within = shared / weights[0]
        global_mean = (counts64[:, None] * means).sum(dim=0) / n
        between = means - global_mean
        # total scatter = within-class scatter + between-class scatter
        global_cov = (within + (between * counts64[:, None]).T @ between) / (n - 1)
    return ids[kept], means[kept], shared, global_mean, global_cov


def _pinv(cov: torch.Tensor) -> torch.Tensor:
    """Pseudo-inverse of a symmetric positive semi-definite matrix.

    The same operation as ``torch.linalg.pinv(cov, hermitian=True)`` or
    ``scipy.linalg.pinvh(cov)`` with their default cut-off (eigenvalues below
    ``D * eps * max|eigenvalue|`` are treated as zero), written with one ``eigh`` because
    ``torch.linalg.pinv`` is many times slower on the CPU here. NumPy's ``np.linalg.pinv``
    has a *different* default cut-off (``rcond=1e-15`` times the largest singular value,
    about 200 times smaller for D = 320), so on a covariance with an exactly zero eigenvalue
    (features after a LayerNorm) it may keep a direction this function drops; see
    :func:`drop_degenerate_directions` for how the course avoids the question.
    """
    cov = (cov + cov.T) / 2.0  # exact symmetry for the symmetric eigensolver
    with one_cpu_thread(cov.device):
        evals, evecs = torch.linalg.eigh(cov)
    cutoff = evals.abs().max() * cov.shape[0] * torch.finfo(cov.dtype).eps
    keep = evals.abs() > cutoff
    inv = torch.where(keep, 1.0 / torch.where(keep, evals, torch.ones_like(evals)),
                      torch.zeros_like(evals))
    return (evecs * inv) @ evecs.T


def drop_degenerate_directions(train_feats: Any, *other_feats: Any, rtol: float = 1e-9,
                               return_basis: bool = False):
    """Rotate features onto the directions in which the training features actually vary.

    Features read after a LayerNorm satisfy one exact linear constraint (a fixed weighted sum
    of the coordinates is the same for every image), so their covariance has an exactly zero
    eigenvalue (about 3e-14 against a largest of 62 for the ``miniclip`` trunk). Whether a
    Mahalanobis implementation then inverts, pseudo-inverts or drops that direction depends
    on its cut-off (``np.linalg.inv``, ``np.linalg.pinv``'s default and ``scipy.linalg.pinvh``
    give three different RMD AUROCs). This function removes the question at the features:
    with the eigenvectors ``Q`` (D, D') of the training covariance whose eigenvalues exceed
    ``rtol`` times the largest, every feature ``x`` becomes ``x @ Q``. ``Q`` is orthonormal,
    so distances, means and covariances are kept exactly within the kept directions, and the
    dropped ones are constant over the training set (and, for a LayerNorm constraint, over
    every image), so no distance changes either. Afterwards every correct inverse agrees.

    The columns of ``Q`` are ordered by decreasing variance, each with its largest entry
    positive (a reproducible sign).

    Parameters
    ----------
    train_feats : array or tensor, shape (N, D)
        Training features; the directions are found from their covariance.
    *other_feats : arrays or tensors, shape (M_i, D)
        Further sets (test, OOD) rotated with the same ``Q``.
    rtol : float, default 1e-9
        Relative eigenvalue cut-off. The ``miniclip`` trunk has a gap from 5e-13 to 9e-7
        (relative), so any value in between gives the same result.
    return_basis : bool, default False
        Also return ``Q`` (float64, same kind as ``train_feats``).

    Returns
    -------
    rotated : tuple of the same kind and dtype as each input, shapes (N, D'), (M_i, D')
        ``(train_rot, *others_rot)``; with ``return_basis`` the tuple ends with ``Q``.
    """
    check_array(train_feats, "train_feats", ndim=2)
    if not (isinstance(rtol, (int, float)) and 0 < rtol < 1):
        raise ValueError(f"rtol must be a number in (0, 1), got {rtol!r}")
    x = to_tensor(train_feats, "train_feats").to(torch.float64)
    if x.shape[0] < 2:
        raise ValueError("train_feats needs at least two rows to estimate a covariance")
    for i, other in enumerate(other_feats):
        check_array(other, f"other_feats[{i}]", ndim=2)
        check_same_dim(train_feats, other, "train_feats", f"other_feats[{i}]")
    with torch.no_grad():
        centred = x - x.mean(dim=0)
        cov = centred.T @ centred / (x.shape[0] - 1)
        with one_cpu_thread(x.device):
            evals, evecs = torch.linalg.eigh((cov + cov.T) / 2.0)
        keep = evals > rtol * evals.max()
        basis = evecs[:, keep].flip(1)  # decreasing variance
        signs = torch.sign(basis.gather(0, basis.abs().argmax(dim=0, keepdim=True)))
        basis = basis * signs

    def rotate(feats, name):
        t = to_tensor(feats, name)
        dtype = t.dtype if t.dtype in (torch.float32, torch.float64) else torch.float32
        out = (t.to(torch.float64) @ basis.to(t.device)).to(dtype)
        return _back(out, feats)

    rotated = [rotate(train_feats, "train_feats")]
    rotated += [rotate(o, f"other_feats[{i}]") for i, o in enumerate(other_feats)]
    if return_basis:
        rotated.append(_back(basis.clone(), train_feats))
    return tuple(rotated)


def _check_covariance(covariance: Any) -> None:
    if covariance not in ("class_mean", "pooled"):
        raise ValueError(f"covariance must be 'class_mean' (the course's convention) or "
                         f"'pooled' (class-size weighted), got {covariance!r}")


@dataclass(frozen=True)
class _MDFit:
    """A fitted Mahalanobis model (float64, on the training device): the class means and the
    test rows are taken relative to ``centre``; ``precision0`` is ``None`` for MD."""

    classes: torch.Tensor
    class_means: torch.Tensor
    centre: torch.Tensor
    means: torch.Tensor
    precision: torch.Tensor
    precision0: torch.Tensor | None


def _md_fit(train: torch.Tensor, labels: torch.Tensor, relative: bool, pooled: bool) -> _MDFit:
    """Kernel of :meth:`Mahalanobis.fit` on validated tensors (``labels`` int64, same device)."""
    with torch.no_grad():
        classes, means, shared, global_mean, global_cov = _class_statistics(
            train, labels, relative, pooled=pooled)
        # centring on a common point does not change any distance but helps the expansion
        centre = means.mean(dim=0) if global_mean is None else global_mean
        return _MDFit(classes=classes, class_means=means, centre=centre, means=means - centre,
                      precision=_pinv(shared),
                      precision0=_pinv(global_cov) if relative else None)


def _md_score(fit: _MDFit, test: torch.Tensor, chunk_size: int) -> torch.Tensor:
    """Kernel of :meth:`Mahalanobis.score_samples`: float64 scores ``(M,)`` of validated rows."""
    device = fit.means.device
    with torch.no_grad():
        if fit.precision0 is not None:
            origin = torch.zeros(1, fit.means.shape[1], dtype=torch.float64, device=device)
        out = torch.empty(test.shape[0], dtype=torch.float64, device=device)
        for start in range(0, test.shape[0], chunk_size):
            xt = test[start:start + chunk_size].to(device=device, dtype=torch.float64) - fit.centre
            d2 = _squared_distances(xt, fit.means, fit.precision)
            if fit.precision0 is not None:
                d2 = d2 - _squared_distances(xt, origin, fit.precision0)
            out[start:start + chunk_size] = -d2.min(dim=1).values
    return out


def _md_inputs(train_feats: Any, train_labels: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate the training features and labels of a Mahalanobis fit, once."""
    device = _device_of(train_feats)
    # keep float64 input exact; float32 is widened slice by slice, never as a whole
    train = _feature_tensor(train_feats, "train_feats", device, dtype=None)
    check_labels(train_labels, "train_labels", train.shape[0])
    return train, to_tensor(train_labels, "train_labels").to(device=device, dtype=torch.int64)


class Mahalanobis:
    """Mahalanobis (MD) or relative Mahalanobis (RMD) scorer, fitted once, then scoring any
    number of test sets (scikit-learn's convention: ``fit`` returns the estimator,
    ``score_samples`` gives one score per row, ``score`` their mean).

    Each class ``c`` of the training set is modelled by a Gaussian with its mean ``mu_c`` and
    one covariance shared by all classes. By default (``covariance="class_mean"``, the
    course's convention, from the PLP paper) ``Sigma = (1/C) sum_c Sigma_c``: the *unweighted*
    mean of the per-class unbiased covariances. Lee et al. 2018, OpenOOD and pytorch-ood
    instead pool the class-centred data, ``Sigma = sum_c S_c / (N - C)`` with ``S_c`` the
    scatter matrix of class ``c``, which weights classes by size (``covariance="pooled"``).
    With equal class sizes the two agree. With ``P = pinv(Sigma)`` and
    ``d_c^2(x) = (x - mu_c)^T P (x - mu_c)``:

    * MD (Lee et al. 2018): ``score = -min_c d_c^2(x)``;
    * RMD (Ren et al. 2021): a background Gaussian with the mean ``mu_0`` and unbiased
      covariance ``Sigma_0`` of *all* training features gives ``d_0^2``, and
      ``score = -min_c (d_c^2(x) - d_0^2(x))``.

    Everything is computed in float64; the pseudo-inverse (symmetric eigendecomposition with
    the default cut-off of ``scipy.linalg.pinvh`` and ``torch.linalg.pinv``, ``D * eps`` times
    the largest eigenvalue; *not* NumPy's ``np.linalg.pinv`` default, which is ``1e-15``)
    keeps a singular covariance, e.g. from duplicated or constant feature columns or fewer
    samples than dimensions, from breaking the computation. Where a covariance is exactly
    singular, different cut-offs give different scores; the notebooks therefore pass
    features through :func:`drop_degenerate_directions` first. The distances are evaluated
    for all classes at once with ``x P x^T - 2 x P mu_c^T + mu_c P mu_c^T`` on chunks of test
    rows.

    Parameters
    ----------
    relative : bool, default False
        RMD instead of MD.
    covariance : {"class_mean", "pooled"}, default "class_mean"
        The shared covariance estimator (see above).
    chunk_size : int, default 4096
        Test rows per block of the distance computation.

    Attributes (after :meth:`fit`)
    ------------------------------
    classes_ : int64 tensor (C,), the class ids that got a Gaussian (classes with fewer than
        two training samples are skipped with a warning naming them; they still count in
        RMD's background Gaussian; if no class has two samples, ``ValueError``).
    means_ : float64 tensor (C, D), the class means.
    precision_ : float64 tensor (D, D), the pseudo-inverse of the shared covariance.
    background_mean_, background_precision_ : the background Gaussian of RMD (``None`` for MD).
    n_features_in_ : int, D.

    Examples
    --------
    >>> md = Mahalanobis(relative=True).fit(train_feats, train_labels)
    >>> score_in, score_out = md.score_samples(id_test_feats), md.score_samples(ood_test_feats)
    """

    def __init__(self, relative: bool = False, covariance: str = "class_mean",
                 chunk_size: int = 4096):
        self.relative = relative
        self.covariance = covariance
        self.chunk_size = chunk_size

    def _check_params(self) -> None:
        _check_covariance(self.covariance)
        _positive_int(self.chunk_size, "chunk_size")

    def _fit(self, train: torch.Tensor, labels: torch.Tensor) -> "Mahalanobis":
        """:meth:`fit` on validated tensors (the kernel's entry for the package's wrappers)."""
        self._fitted = _md_fit(train, labels, bool(self.relative), self.covariance == "pooled")
        f = self._fitted
        self.classes_ = f.classes
        self.means_ = f.class_means
        self.precision_ = f.precision
        self.background_mean_ = f.centre if f.precision0 is not None else None
        self.background_precision_ = f.precision0
        self.n_features_in_ = int(train.shape[1])
        return self

    def fit(self, train_feats: Any, train_labels: Any) -> "Mahalanobis":
        """Fit the class Gaussians (and RMD's background Gaussian) on the training set.

        Parameters
        ----------
        train_feats : array or tensor, shape (N, D)
        train_labels : integer array or tensor, shape (N,)
            Class ids: real labels, pseudo-labels or cluster ids. Any integers will do,
            including non-contiguous or negative ones.

        Returns
        -------
        self
        """
        self._check_params()
        return self._fit(*_md_inputs(train_feats, train_labels))

    def _score(self, test: torch.Tensor) -> torch.Tensor:
        """:meth:`score_samples` on a validated tensor; float64 on the training device."""
        return _md_score(self._fitted, test, int(self.chunk_size))

    def score_samples(self, test_feats: Any) -> Any:
        """MD or RMD score of every row of ``test_feats`` (M, D): same kind as ``test_feats``,
        shape (M,), float64; higher = closer to some class = more in-distribution (MD scores
        are <= 0)."""
        if not hasattr(self, "_fitted"):
            raise RuntimeError("this Mahalanobis scorer is not fitted yet; call "
                               ".fit(train_feats, train_labels) first")
        self._check_params()
        test = _feature_tensor(test_feats, "test_feats", dtype=None)
        _check_fitted_dim(test, self.n_features_in_)
        return _back(self._score(test), test_feats)

    def score(self, test_feats: Any) -> float:
        """Mean of :meth:`score_samples` (scikit-learn's ``score``: one number per set)."""
        return float(torch.as_tensor(self.score_samples(test_feats)).mean())

    def __repr__(self) -> str:
        return (f"Mahalanobis(relative={self.relative!r}, covariance={self.covariance!r}, "
                f"chunk_size={self.chunk_size!r})")


def mahalanobis_scores(train_feats: Any, train_labels: Any, test_feats: Any,
                       relative: bool = False, chunk_size: int = 4096,
                       covariance: str = "class_mean") -> Any:
    """Mahalanobis (MD) or relative Mahalanobis (RMD) score of every test feature.

    A thin wrapper: ``Mahalanobis(relative, covariance, chunk_size).fit(train_feats,
    train_labels).score_samples(test_feats)``, returned as the kind of ``train_feats``. See
    :class:`Mahalanobis` for the formulas. To score several sets (ID and OOD test rows) from
    one fit, use the class.

    Parameters
    ----------
    train_feats : array or tensor, shape (N, D)
    train_labels : integer array or tensor, shape (N,)
        Class ids: real labels, pseudo-labels or cluster ids. Any integers will do, including
        non-contiguous or negative ones. Classes with fewer than two samples are skipped with
        a warning naming them (they still count in RMD's background Gaussian); if no class has
        two samples, ``ValueError``.
    test_feats : array or tensor, shape (M, D)
    relative : bool, default False
        Return RMD instead of MD.
    chunk_size : int, default 4096
        Test rows per block of the distance computation.
    covariance : {"class_mean", "pooled"}, default "class_mean"
        The shared covariance estimator (see :class:`Mahalanobis`).

    Returns
    -------
    scores : same kind as ``train_feats``, shape (M,), float64
        Higher = closer to some class = more in-distribution (MD scores are <= 0).
    """
    scorer = Mahalanobis(relative=relative, covariance=covariance, chunk_size=chunk_size)
    scorer._check_params()
    train, labels = _md_inputs(train_feats, train_labels)
    test = _feature_tensor(test_feats, "test_feats", train.device, dtype=None)
    check_same_dim(train, test, "train_feats", "test_feats")
    return _back(scorer._fit(train, labels)._score(test).clone(), train_feats)


#: The course's fixed k-means settings (notebook 06 states them): scikit-learn's ``KMeans``
#: with k-means++ initialisation, ``random_state=0``, one initialisation and Lloyd's algorithm,
#: fitted on the float32 training features. With several initialisations the best partition
#: would be found more reliably, but k = 100 would take minutes; one fixed start keeps the
#: result reproducible (see ``ood_utils/answer_key/expected.json`` for the spread over correct variants).
