"""Reference implementations of the OOD scores taught in the course (the answer key).

One convention everywhere: **a higher score means "more in-distribution"**.

This module is pure: tensors in, tensors out. It knows no profile, file, cache or plot (the
zero-shot logits, which need a CLIP model, live in :mod:`ood_utils.models`).

Every scorer accepts numpy arrays or torch tensors and returns the same kind as its first
feature argument (a tensor comes back on that argument's device). Inputs are validated once,
at the public boundary: wrong rank, non-numeric dtype, NaN/inf, empty input or mismatched
feature dimensions raise ``ValueError`` naming the argument. Public functions that build on
each other call the private kernels (``_md_fit``, ``_md_score``, ``_kmeans_labels``,
``_probe_epochs``), which take validated tensors and check nothing again.

=============================  ==============================================================
scorer                         paper
=============================  ==============================================================
:func:`knn_scores`             Sun et al. 2022, "Out-of-distribution detection with deep
                               nearest neighbors" (cosine similarity, k-th neighbour)
:func:`msp_scores`             Hendrycks & Gimpel 2017 (MSP); Ming et al. 2022 (MCM) on
                               zero-shot CLIP logits
:func:`train_linear_probe`     Adaloglou et al. 2024 (PLP): linear probe on pseudo-labels,
+ :func:`probe_logits`         scored with the MSP of its logits
:class:`Mahalanobis`           Lee et al. 2018 (MD); Ren et al. 2021 (relative MD), with
(:func:`mahalanobis_scores`)   the PLP paper's unweighted shared covariance by default;
                               fitted once, then scores any number of test sets
:func:`kmeans_mahalanobis_     SSD-style (Sehwag et al. 2021), simplified as in the course's
scores`                        assignment: k-means clusters play the classes
=============================  ==============================================================

:func:`drop_degenerate_directions` rotates features onto the directions in which the training
features vary, removing exactly constant directions (see its docstring)
"""
from __future__ import annotations

import copy
import dataclasses
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from .progress import progress_bar as tqdm  # a widget in JupyterLab, stdout lines in other kernels

from ._arrays import as_kind, check_array, check_labels, check_same_dim, is_tensor, to_tensor
from ._threads import one_cpu_thread

__all__ = [
    "knn_scores",
    "msp_scores",
    "pseudo_labels",
    "train_linear_probe",
    "ProbeOptions",
    "ProbeResult",
    "probe_logits",
    "drop_degenerate_directions",
    "Mahalanobis",
    "mahalanobis_scores",
    "kmeans_mahalanobis_scores",
    "KMEANS_SETTINGS",
]


#: Largest similarity block (number of float32 entries) :func:`knn_scores` builds at once
#: when no ``chunk_size`` is given: 2**26 entries = 256 MiB.
KNN_BLOCK_ELEMENTS = 1 << 26


# ----------------------------------------------------------------------------- helpers

def _feature_tensor(x: Any, name: str, device: torch.device | None = None,
                    dtype: torch.dtype | None = torch.float32) -> torch.Tensor:
    """Validate a ``(N, D)`` feature matrix and return it as a tensor of ``dtype``.

    ``dtype=None`` keeps float32/float64 as they are and turns other dtypes into float32.
    """
    check_array(x, name, ndim=2)
    t = to_tensor(x, name)
    if device is not None:
        t = t.to(device)
    if dtype is None:
        dtype = t.dtype if t.dtype in (torch.float32, torch.float64) else torch.float32
    return t.to(dtype)


def _device_of(x: Any) -> torch.device:
    return x.device if is_tensor(x) else torch.device("cpu")


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _check_fitted_dim(test: torch.Tensor, fitted: int) -> None:
    if test.shape[1] != fitted:
        raise ValueError(f"test_feats has {test.shape[1]} columns but the scorer was fitted on "
                         f"{fitted}; both must come from the same feature extractor")


_back = as_kind  # the result as the kind of its reference argument


# ----------------------------------------------------------------------------- kNN

def _knn_kernel(train: torch.Tensor, inv_norm: torch.Tensor, test: torch.Tensor, k: int,
                chunk_size: int) -> torch.Tensor:
    """Kernel of :func:`knn_scores` on validated float32 tensors of one device."""
    device = train.device
    with torch.no_grad():
        rows = min(chunk_size, test.shape[0])
        block = torch.empty(rows, train.shape[0], dtype=torch.float32, device=device)
        out = torch.empty(test.shape[0], dtype=torch.float32, device=device)
        for start in range(0, test.shape[0], rows):
            query = nn.functional.normalize(test[start:start + rows], dim=1)
            sim = block[:query.shape[0]]  # one buffer reused by every chunk
            torch.matmul(query, train.T, out=sim)
            sim.mul_(inv_norm)
            if k == 1:  # same value as topk(1), without sorting
                out[start:start + rows] = sim.amax(dim=1)
            else:
                out[start:start + rows] = torch.topk(sim, k, dim=1, sorted=True).values[:, -1]
        del block
        out.clamp_(-1.0, 1.0)
    return out


def knn_scores(train_feats: Any, test_feats: Any, k: int = 1,
               chunk_size: int | None = None) -> Any:
    """Cosine similarity of every test feature to its k-th nearest training feature.

    Both sets are L2-normalised, so the cosine similarity is a dot product. The test rows are
    processed in chunks: each chunk's similarity block ``(chunk, N_train)`` comes from one
    float32 matrix product on the features' device (written into one reused buffer), and
    :func:`torch.topk` keeps its ``k`` largest entries (for ``k = 1`` the row maximum, the
    same value). Memory therefore stays bounded however many test samples there are (the
    full ``(N_test, N_train)`` matrix is never built, nor a normalised copy of the training
    set: the block's columns are divided by the training norms instead). The cost is close
    to that of the plain matrix product ``test_feats @ train_feats.T``.

    Parameters
    ----------
    train_feats : array or tensor, shape (N_train, D)
        Features of the in-distribution training set.
    test_feats : array or tensor, shape (N_test, D)
        Features to score.
    k : int, default 1
        Which neighbour to use (1 = nearest, as in the course's seed; Sun et al. tune k).
        Must not exceed ``N_train``.
    chunk_size : int, optional
        Test rows per block. By default as many rows as keep one block within
        :data:`KNN_BLOCK_ELEMENTS` float32 entries (256 MiB).

    Returns
    -------
    scores : same kind as ``train_feats``, shape (N_test,), float32
        Similarities in [-1, 1]; higher = closer to the training set = more in-distribution.
        (An all-zero feature vector has similarity 0 to everything.)
    """
    device = _device_of(train_feats)
    train = _feature_tensor(train_feats, "train_feats", device)
    test = _feature_tensor(test_feats, "test_feats", device)
    check_same_dim(train, test, "train_feats", "test_feats")
    k = _positive_int(k, "k")
    if k > train.shape[0]:
        raise ValueError(f"k={k} exceeds the number of training samples ({train.shape[0]}); "
                         "choose a smaller k")
    if chunk_size is None:
        chunk_size = max(1, KNN_BLOCK_ELEMENTS // train.shape[0])
    chunk_size = _positive_int(chunk_size, "chunk_size")
    with torch.no_grad():
        # Dividing the columns of each block by the training norms gives the same cosines
        # as normalising the training set first, without a normalised copy of it.
        inv_norm = torch.linalg.vector_norm(train, dim=1).clamp_min(1e-12).reciprocal()
    return _back(_knn_kernel(train, inv_norm, test, k, chunk_size).clone(), train_feats)


# ----------------------------------------------------------------------------- MSP

def msp_scores(logits: Any, temperature: float = 1.0) -> Any:
    """Maximum softmax probability of ``logits / temperature``.

    Applied to a classifier's logits this is the MSP baseline (Hendrycks & Gimpel 2017).
    Applied to zero-shot CLIP logits it is MCM (Ming et al. 2022), which divides the raw
    cosine similarities by a temperature ``T``; **MCM's default is T = 1** (in the MCM code).
    Zero-shot logits already carry CLIP's learned scale (about 100), so ``msp_scores(logits)``
    is MCM with ``T = 1 / scale`` (about 0.01, the default of pytorch-ood), and MCM's own
    default is ``msp_scores(logits / scale)``, or ``msp_scores(cosines, temperature=1.0)``.
    ``temperature`` divides whatever is passed in.

    The softmax is computed in float64: in float32 every probability above ``1 - 6e-8``
    rounds to exactly 1, which would turn confident samples into ties and distort AUROC.

    Parameters
    ----------
    logits : array or tensor, shape (N, C)
    temperature : float > 0, default 1.0

    Returns
    -------
    scores : same kind as ``logits``, shape (N,), float64, in [1/C, 1]
    """
    check_array(logits, "logits", ndim=2)
    if not (isinstance(temperature, (int, float, np.floating)) and np.isfinite(temperature)
            and temperature > 0):
        raise ValueError(f"temperature must be a positive number, got {temperature!r}")
    z = to_tensor(logits, "logits").to(torch.float64) / float(temperature)
    with torch.no_grad():
        scores = torch.softmax(z, dim=1).max(dim=1).values
    return _back(scores.clone(), logits)


def pseudo_labels(logits: Any) -> Any:
    """Predicted class of every row: ``argmax`` over the columns.

    Parameters
    ----------
    logits : array or tensor, shape (N, C)

    Returns
    -------
    labels : same kind as ``logits``, shape (N,), int64
    """
    check_array(logits, "logits", ndim=2)
    labels = to_tensor(logits, "logits").argmax(dim=1).to(torch.int64)
    return _back(labels, logits)


# ----------------------------------------------------------------------------- linear probe

def _label_tensor(y: Any, name: str, n: int, device: torch.device) -> torch.Tensor:
    check_labels(y, name, n)
    t = to_tensor(y, name).to(device=device, dtype=torch.int64)
    if int(t.min()) < 0:
        raise ValueError(f"{name} contains negative class ids; use labels 0..C-1")
    return t


@torch.no_grad()
def _accuracy(layer: nn.Module, feats: torch.Tensor, targets: torch.Tensor,
              batch_size: int) -> float:
    correct = 0
    for start in range(0, len(feats), batch_size):
        pred = layer(feats[start:start + batch_size]).argmax(dim=1)
        correct += int((pred == targets[start:start + batch_size]).sum())
    return correct / len(feats)


#: The course's probe settings (notebook 04 prescribes them): full-batch Adam, this many epochs
#: at this learning rate, the weights of the epoch with the best training accuracy kept.
PROBE_EPOCHS = 100
PROBE_LR = 0.03


@dataclass(frozen=True)
class ProbeOptions:
    """How :func:`train_linear_probe` trains; the defaults are the course's settings.

    Attributes
    ----------
    epochs : int, default :data:`PROBE_EPOCHS`
    lr : float, default :data:`PROBE_LR`
    batch_size : int or None, default None
        Rows per step; ``None`` (the course's setting) = all rows, one step per epoch.
    seed : int, default 0
        ``torch.manual_seed(seed)`` immediately before ``nn.Linear``; also seeds the shuffling
        of mini-batches.
    weight_decay : float, default 0.0
        The optimizer's L2 penalty (the seed uses none; the PLP paper 1e-3).
    optimizer : {"adam", "sgd"}, default "adam"
    dtype : torch.float32 or torch.float64, default float32
        Precision of the features and the layer during training.
    select : {"train_acc", "forward_acc"}, default "train_acc"
        Which accuracy chooses the epoch kept: on the training targets after the epoch's
        step, or that of the epoch's own forward passes (before its step, as the original
        assignment's loop measures it). Validation data, when given, chooses instead.
    ties : {"earliest", "latest"}, default "earliest"
        Which of several epochs with the same best accuracy is kept.
    """

    epochs: int = PROBE_EPOCHS
    lr: float = PROBE_LR
    batch_size: int | None = None
    seed: int = 0
    weight_decay: float = 0.0
    optimizer: str = "adam"
    dtype: torch.dtype = torch.float32
    select: str = "train_acc"
    ties: str = "earliest"

    def __post_init__(self):
        _positive_int(self.epochs, "epochs")
        if self.batch_size is not None:
            _positive_int(self.batch_size, "batch_size")
        for name in ("lr", "weight_decay"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float, np.floating)) and np.isfinite(value)
                    and (value > 0 if name == "lr" else value >= 0)):
                raise ValueError(f"{name} must be a {'positive' if name == 'lr' else 'non-negative'}"
                                 f" number, got {value!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)):
            raise ValueError(f"seed must be an integer, got {self.seed!r}")
        choices = {"optimizer": ("adam", "sgd"), "select": ("train_acc", "forward_acc"),
                   "ties": ("earliest", "latest"), "dtype": (torch.float32, torch.float64)}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")


@dataclass(frozen=True)
class ProbeResult:
    """What :func:`train_linear_probe` returns.

    Attributes
    ----------
    layer : torch.nn.Linear(D, C) in eval mode, holding the best epoch's weights.
    history : tuple of dicts, one per epoch: ``epoch`` (1-based), ``loss`` (mean training
        cross-entropy during the epoch), ``train_acc`` (accuracy on the training targets after
        the epoch, 0..1), ``forward_acc`` (accuracy of the epoch's own forward passes, before
        its steps) and, when validation data was given, ``val_acc``.
    best_epoch : int, 1-based epoch whose weights ``layer`` holds.
    """

    layer: nn.Linear
    history: tuple
    best_epoch: int


def _probe_epochs(x: torch.Tensor, y: torch.Tensor, num_classes: int, options: ProbeOptions,
                  val: tuple | None = None, progress: bool = False):
    """Train the probe; yield ``(record, layer)`` after every epoch (the live layer: copy its
    ``state_dict`` to keep an epoch). The single training loop of the package.

    ``x`` (N, D) in ``options.dtype`` and ``y`` (N,) int64 are validated tensors on one device;
    ``val`` is an optional validated pair ``(x_val, y_val)`` on the same device.
    """
    device = x.device
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(options.seed)
        layer = nn.Linear(x.shape[1], num_classes)
    layer = layer.to(device=device, dtype=options.dtype)
    if options.optimizer == "adam":
        optimizer = torch.optim.Adam(layer.parameters(), lr=options.lr,
                                     weight_decay=options.weight_decay)
    else:
        optimizer = torch.optim.SGD(layer.parameters(), lr=options.lr,
                                    weight_decay=options.weight_decay)
    loss_fn = nn.CrossEntropyLoss()
    generator = torch.Generator().manual_seed(int(options.seed))
    full = options.batch_size is None
    step = x.shape[0] if full else options.batch_size

    bar = tqdm(range(1, options.epochs + 1), desc="linear probe", unit="epoch",
               disable=not progress)
    for epoch in bar:
        layer.train()
        order = None if full else torch.randperm(x.shape[0], generator=generator).to(device)
        total, seen_correct = 0.0, 0
        for start in range(0, x.shape[0], step):
            idx = slice(None) if order is None else order[start:start + step]
            xb, yb = x[idx], y[idx]
            logits = layer(xb)
            loss = loss_fn(logits, yb)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(yb)
            seen_correct += int((logits.detach().argmax(dim=1) == yb).sum())
        layer.eval()
        record = {"epoch": epoch, "loss": total / x.shape[0],
                  "train_acc": _accuracy(layer, x, y, 1 << 16),
                  "forward_acc": seen_correct / x.shape[0]}
        if val is not None:
            record["val_acc"] = _accuracy(layer, val[0], val[1], 1 << 16)
        bar.set_postfix(loss=f"{record['loss']:.4f}", acc=f"{record['train_acc']:.4f}")
        yield record, layer
    bar.close()


def train_linear_probe(train_feats: Any, targets: Any, options: ProbeOptions | None = None, *,
                       validation: tuple | None = None, num_classes: int | None = None,
                       progress: bool = False, **settings) -> ProbeResult:
    """Train one linear layer with cross-entropy and keep the weights of its best epoch.

    This is the probe of PLP (Adaloglou et al. 2024) as the course prescribes it (notebook 04):
    ``torch.manual_seed(seed)`` immediately before ``nn.Linear(D, C)`` (PyTorch's default
    initialisation), Adam with learning rate ``lr``, and by default **full-batch** training
    (one step per epoch on all rows, so no batch order enters). After every epoch the
    accuracy on the training targets is measured; the weights of the epoch with the highest
    accuracy are kept (the earliest one on ties), as the original assignment keeps its best
    training accuracy. With ``validation`` the validation accuracy chooses instead. The
    targets are usually pseudo-labels (:func:`pseudo_labels` of the zero-shot logits). The
    paper also standardises the features and uses weight decay and a cosine schedule;
    ``weight_decay`` is exposed, the rest is left to the caller.

    Training is deterministic for a given ``seed``: the initial weights are drawn inside
    :func:`torch.random.fork_rng` (the global random state is left untouched) and, with
    mini-batches, the shuffling uses a local :class:`torch.Generator` seeded with ``seed``.
    It runs on the device of ``train_feats``.

    Parameters
    ----------
    train_feats : array or tensor, shape (N, D)
    targets : integer array or tensor, shape (N,), values in 0..C-1
    options : :class:`ProbeOptions`, optional
        The training settings (default: the course's).
    validation : pair ``(val_feats (M, D), val_targets (M,))``, optional
        Data whose accuracy chooses the best epoch instead of the training accuracy.
    num_classes : int, optional
        Output size C; by default ``max(targets) + 1``.
    progress : bool, default False
        Show a progress bar over epochs.
    **settings
        Fields of :class:`ProbeOptions` given one by one (``epochs=20, lr=1e-3, seed=1``);
        they replace those of ``options``.

    Returns
    -------
    :class:`ProbeResult` (``layer``, ``history``, ``best_epoch``)
    """
    if options is None:
        options = ProbeOptions()
    elif not isinstance(options, ProbeOptions):
        raise TypeError(f"options must be a ProbeOptions, got {type(options).__name__}; give "
                        "single settings by keyword (epochs=..., lr=...)")
    if settings:
        fields = {f.name for f in dataclasses.fields(ProbeOptions)}
        unknown = sorted(set(settings) - fields)
        if unknown:
            raise TypeError(f"train_linear_probe got unknown setting(s) {unknown}; the settings "
                            f"are {sorted(fields)}, validation=(feats, targets), num_classes, "
                            "progress")
        options = dataclasses.replace(options, **settings)
    device = _device_of(train_feats)
    x = _feature_tensor(train_feats, "train_feats", device, dtype=options.dtype)
    y = _label_tensor(targets, "targets", x.shape[0], device)
    val = None
    if validation is not None:
        if not (isinstance(validation, (tuple, list)) and len(validation) == 2):
            raise ValueError("validation must be a pair (val_feats, val_targets)")
        xv = _feature_tensor(validation[0], "val_feats", device, dtype=options.dtype)
        check_same_dim(x, xv, "train_feats", "val_feats")
        val = (xv, _label_tensor(validation[1], "val_targets", xv.shape[0], device))
    needed = int(max(y.max(), val[1].max() if val is not None else 0)) + 1
    if num_classes is None:
        num_classes = needed
    num_classes = _positive_int(num_classes, "num_classes")
    if num_classes < needed:
        raise ValueError(f"num_classes={num_classes} but the targets go up to {needed - 1}")

    key = "val_acc" if val is not None else options.select
    history: list[dict] = []
    best_acc, best_epoch, best_state = -1.0, 0, None
    for record, layer in _probe_epochs(x, y, num_classes, options, val, progress):
        history.append(record)
        acc = record[key]
        if acc > best_acc or (options.ties == "latest" and acc == best_acc):
            best_acc, best_epoch = acc, record["epoch"]
            best_state = copy.deepcopy(layer.state_dict())
    layer.load_state_dict(best_state)
    layer.eval()
    return ProbeResult(layer=layer, history=tuple(history), best_epoch=best_epoch)


def probe_logits(layer: nn.Module, feats: Any, batch_size: int = 8192) -> Any:
    """Logits of a trained probe (or any module) for ``feats``, without gradients.

    The PLP score is ``msp_scores(probe_logits(layer, feats))``.

    Parameters
    ----------
    layer : torch.nn.Module mapping (B, D) to (B, C)
    feats : array or tensor, shape (N, D)
    batch_size : int, default 8192

    Returns
    -------
    logits : same kind as ``feats``, shape (N, C), float32
    """
    check_array(feats, "feats", ndim=2)
    batch_size = _positive_int(batch_size, "batch_size")
    param = next(layer.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    x = to_tensor(feats, "feats").float()
    in_features = getattr(layer, "in_features", None)
    if in_features is not None and x.shape[1] != in_features:
        raise ValueError(f"feats has {x.shape[1]} columns but the layer expects {in_features}")
    was_training = layer.training
    layer.eval()
    try:
        with torch.no_grad():
            out = [layer(x[s:s + batch_size].to(device)).float()
                   for s in range(0, x.shape[0], batch_size)]
            logits = torch.cat(out).to(x.device)
    finally:
        layer.train(was_training)
    return _back(logits.clone(), feats)


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
#: result reproducible (see ``ood_utils/expected.py`` for the spread over correct variants).
KMEANS_SETTINGS = {"n_init": 1, "algorithm": "lloyd", "random_state": 0}


def _kmeans_labels(train: torch.Tensor, n_clusters: int, seed: int, n_init: int):
    """Kernel: ``(fitted KMeans, int64 cluster ids on train's device)`` of validated rows."""
    from sklearn.cluster import KMeans

    x = np.ascontiguousarray(train.detach().cpu().numpy(), dtype=np.float32)
    kmeans = KMeans(n_clusters=n_clusters, random_state=seed, n_init=n_init,
                    algorithm=KMEANS_SETTINGS["algorithm"]).fit(x)
    labels = torch.from_numpy(kmeans.labels_.astype(np.int64)).to(train.device)
    return kmeans, labels


def kmeans_mahalanobis_scores(train_feats: Any, test_feats: Any, n_clusters: int,
                              relative: bool = False, seed: int = 0, n_init: int = 1,
                              return_kmeans: bool = False, covariance: str = "class_mean"):
    """SSD-style score, simplified as in the course's assignment: k-means clusters of the
    training features play the classes of :class:`Mahalanobis`.

    SSD (Sehwag et al. 2021) keeps one covariance per cluster; the course, like its
    assignment, shares one covariance over the clusters (by default the unweighted mean of
    the cluster covariances). scikit-learn's ``KMeans(n_clusters, random_state=seed,
    n_init=n_init, algorithm="lloyd")`` (k-means++ initialisation, :data:`KMEANS_SETTINGS`)
    is fitted on the training features as float32; its cluster assignments are the labels of
    one :class:`Mahalanobis` fit, which scores ``test_feats``. The class means are recomputed
    from those labels; they equal the fitted cluster centres whenever k-means has converged.
    To score several sets from one clustering, pass ``return_kmeans=True`` once and fit
    ``Mahalanobis().fit(train_feats, kmeans.labels_)``, or concatenate the sets.

    ``n_init=1`` (scikit-learn's own choice for k-means++) keeps k = 100 on 36,000 x 320
    features to a few seconds. The partition found depends on ``seed``: for k = 10 on the
    ``miniclip`` trunk, seeds land in different local optima whose RMD AUROCs differ by
    more than 20 points, which is why the course fixes ``seed=0``.

    Parameters
    ----------
    train_feats : array or tensor, shape (N, D)
    test_feats : array or tensor, shape (M, D)
    n_clusters : int, 2 <= n_clusters <= N
    relative : bool, default False
        RMD instead of MD.
    seed : int, default 0
        ``random_state`` of KMeans.
    n_init : int, default 1
        Number of k-means restarts (the best inertia is kept).
    return_kmeans : bool, default False
        Also return the fitted ``KMeans`` object.
    covariance : {"class_mean", "pooled"}, default "class_mean"
        The shared covariance estimator of :class:`Mahalanobis`.

    Returns
    -------
    scores : same kind as ``train_feats``, shape (M,), float64
    kmeans : sklearn.cluster.KMeans, only if ``return_kmeans``
    """
    device = _device_of(train_feats)
    train = _feature_tensor(train_feats, "train_feats", device, dtype=None)
    test = _feature_tensor(test_feats, "test_feats", device, dtype=None)
    check_same_dim(train, test, "train_feats", "test_feats")
    n_clusters = _positive_int(n_clusters, "n_clusters")
    n_init = _positive_int(n_init, "n_init")
    if not 2 <= n_clusters <= train.shape[0]:
        raise ValueError(f"n_clusters must be between 2 and the number of training samples "
                         f"({train.shape[0]}), got {n_clusters}")
    scorer = Mahalanobis(relative=relative, covariance=covariance)
    scorer._check_params()
    kmeans, labels = _kmeans_labels(train, n_clusters, seed, n_init)
    scores = _back(scorer._fit(train, labels)._score(test).clone(), train_feats)
    return (scores, kmeans) if return_kmeans else scores
