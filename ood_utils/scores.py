"""Reference implementations of the OOD scores taught in the course (the answer key).

One convention everywhere: **a higher score means "more in-distribution"**.

Every scorer accepts numpy arrays or torch tensors and returns the same kind as its first
feature argument (a tensor comes back on that argument's device). Inputs are validated at the
boundary: wrong rank, non-numeric dtype, NaN/inf, empty input or mismatched feature dimensions
raise ``ValueError`` naming the argument.

=============================  ==============================================================
scorer                         paper
=============================  ==============================================================
:func:`knn_scores`             Sun et al. 2022, "Out-of-distribution detection with deep
                               nearest neighbors" (cosine similarity, k-th neighbour)
:func:`msp_scores`             Hendrycks & Gimpel 2017 (MSP); Ming et al. 2022 (MCM) on
                               zero-shot CLIP logits
:func:`train_linear_probe`     Adaloglou et al. 2024 (PLP): linear probe on pseudo-labels,
+ :func:`probe_logits`         scored with the MSP of its logits
:func:`mahalanobis_scores`     Lee et al. 2018 (MD); Ren et al. 2021 (relative MD), with
                               the PLP paper's unweighted shared covariance by default
:func:`kmeans_mahalanobis_     SSD-style (Sehwag et al. 2021), simplified as in the course's
scores`                        assignment: k-means clusters play the classes
=============================  ==============================================================

:func:`drop_degenerate_directions` rotates features onto the directions in which the training
features vary, removing exactly constant directions (see its docstring)
"""
from __future__ import annotations

import contextlib
import copy
import warnings
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from . import models
from ._arrays import check_array, check_labels, check_same_dim, is_tensor, like, to_numpy, to_tensor

__all__ = [
    "knn_scores",
    "zero_shot_logits",
    "msp_scores",
    "pseudo_labels",
    "train_linear_probe",
    "ProbeResult",
    "probe_logits",
    "drop_degenerate_directions",
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


def _back(result: torch.Tensor, reference: Any) -> Any:
    """Return ``result`` as the kind of ``reference`` (on its device when it is a tensor)."""
    if is_tensor(reference):
        return result.to(reference.device)
    return like(result.detach().cpu(), reference)


# ----------------------------------------------------------------------------- kNN

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
    return _back(out.clone(), train_feats)


# ----------------------------------------------------------------------------- zero-shot

def zero_shot_logits(model: nn.Module, tokenizer, image_feats: Any, class_names: Sequence[str],
                     templates: Sequence[str] = ("{}",)) -> Any:
    """Zero-shot CLIP logits from stored trunk features.

    The trunk features are projected into the joint space and L2-normalised
    (:func:`ood_utils.models.image_embeddings`); each class name is embedded by the text
    tower (:func:`ood_utils.models.text_embeddings`). The logits are the cosine similarities
    times CLIP's learned temperature ``model.logit_scale.exp()`` (about 100 for trained models).

    Parameters
    ----------
    model : open_clip CLIP model
    tokenizer : its tokenizer (from :func:`ood_utils.models.load_clip`)
    image_feats : array or tensor, shape (N, feature_dim)
        Trunk features, i.e. the image tower's output *before* its projection.
    class_names : sequence of str, length C
        One name per in-distribution class.
    templates : sequence of str, default ``("{}",)``
        Prompt templates, each with ``{}`` where the name goes. The default tokenises the bare
        class names, as the course's seed notebook does; ``models.PLP_TEMPLATES`` is the
        five-prompt ensemble of the PLP paper (embeddings averaged over the prompts and
        normalised again).

    Returns
    -------
    logits : same kind as ``image_feats``, shape (N, C), float32
    """
    check_array(image_feats, "image_feats", ndim=2)
    if isinstance(class_names, str) or len(class_names) == 0 or not all(
            isinstance(c, str) for c in class_names):
        raise ValueError("class_names must be a non-empty list of strings, one per class")
    if isinstance(templates, str):
        raise ValueError("templates must be a sequence of strings, e.g. ('a photo of a {}.',)")
    feats = to_tensor(image_feats, "image_feats").float()
    try:
        image = models.image_embeddings(model, feats)
    except RuntimeError as err:
        raise ValueError(
            f"image_feats has {feats.shape[1]} columns, which the model's projection does not "
            f"accept ({err}); pass the trunk features of the same CLIP model") from err
    text = models.text_embeddings(model, tokenizer, class_names, templates)
    with torch.no_grad():
        scale = model.logit_scale.detach().float().exp().cpu()
        logits = scale * image @ text.T
    return _back(logits.clone(), image_feats)


# ----------------------------------------------------------------------------- MSP

def msp_scores(logits: Any, temperature: float = 1.0) -> Any:
    """Maximum softmax probability of ``logits / temperature``.

    Applied to zero-shot CLIP logits this is MCM (Ming et al. 2022); applied to a classifier's
    logits it is the MSP baseline. Zero-shot logits already contain CLIP's scale (about 100),
    which corresponds to MCM's temperature of 0.01 on the raw cosines; ``temperature`` divides
    the logits further.

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
class ProbeResult:
    """What :func:`train_linear_probe` returns.

    Attributes
    ----------
    layer : torch.nn.Linear(D, C) in eval mode, holding the best epoch's weights.
    history : tuple of dicts, one per epoch: ``epoch`` (1-based), ``loss`` (mean training
        cross-entropy during the epoch), ``train_acc`` (accuracy on the training targets after
        the epoch, 0..1) and, when validation data was given, ``val_acc``.
    best_epoch : int, 1-based epoch whose weights ``layer`` holds.
    """

    layer: nn.Linear
    history: tuple
    best_epoch: int


def train_linear_probe(train_feats: Any, targets: Any, *, epochs: int = PROBE_EPOCHS,
                       lr: float = PROBE_LR, batch_size: int | None = None, seed: int = 0,
                       val_feats: Any = None, val_targets: Any = None,
                       num_classes: int | None = None, weight_decay: float = 0.0,
                       progress: bool = False) -> ProbeResult:
    """Train one linear layer with cross-entropy and keep the weights of its best epoch.

    This is the probe of PLP (Adaloglou et al. 2024) as the course prescribes it (notebook 04):
    ``torch.manual_seed(seed)`` immediately before ``nn.Linear(D, C)`` (PyTorch's default
    initialisation), Adam with learning rate ``lr``, and by default **full-batch** training
    (one step per epoch on all rows, so no batch order enters). After every epoch the
    accuracy on the training targets is measured; the weights of the epoch with the highest
    accuracy are kept (the earliest one on ties), as the original assignment keeps its best
    training accuracy. With ``val_feats``/``val_targets`` the validation accuracy chooses
    instead. The targets are usually pseudo-labels (:func:`pseudo_labels` of the zero-shot
    logits). The paper also standardises the features and uses weight decay and a cosine
    schedule; ``weight_decay`` is exposed, the rest is left to the caller.

    Training is deterministic for a given ``seed``: the initial weights are drawn inside
    :func:`torch.random.fork_rng` (the global random state is left untouched) and, with
    mini-batches, the shuffling uses a local :class:`torch.Generator` seeded with ``seed``.
    It runs on the device of ``train_feats``.

    Parameters
    ----------
    train_feats : array or tensor, shape (N, D)
    targets : integer array or tensor, shape (N,), values in 0..C-1
    epochs : int, default :data:`PROBE_EPOCHS`
    lr : float, default :data:`PROBE_LR`
    batch_size : int, optional
        Rows per step; ``None`` (the course's setting) = all rows, one step per epoch.
    seed : int, default 0
    val_feats, val_targets : optional (M, D) features and (M,) targets that choose the best
        epoch instead of the training accuracy.
    num_classes : int, optional
        Output size C; by default ``max(targets) + 1``.
    weight_decay : float, default 0.0
        Adam's L2 penalty (the seed uses none).
    progress : bool, default False
        Show a progress bar over epochs.

    Returns
    -------
    :class:`ProbeResult` (``layer``, ``history``, ``best_epoch``)
    """
    device = _device_of(train_feats)
    x = _feature_tensor(train_feats, "train_feats", device)
    y = _label_tensor(targets, "targets", x.shape[0], device)
    if (val_feats is None) != (val_targets is None):
        raise ValueError("pass val_feats and val_targets together, or neither")
    xv = yv = None
    if val_feats is not None:
        xv = _feature_tensor(val_feats, "val_feats", device)
        check_same_dim(x, xv, "train_feats", "val_feats")
        yv = _label_tensor(val_targets, "val_targets", xv.shape[0], device)
    epochs = _positive_int(epochs, "epochs")
    if batch_size is not None:
        batch_size = _positive_int(batch_size, "batch_size")
    if not (isinstance(lr, (int, float, np.floating)) and np.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a positive number, got {lr!r}")
    needed = int(max(y.max(), yv.max() if yv is not None else 0)) + 1
    if num_classes is None:
        num_classes = needed
    num_classes = _positive_int(num_classes, "num_classes")
    if num_classes < needed:
        raise ValueError(f"num_classes={num_classes} but the targets go up to {needed - 1}")

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        layer = nn.Linear(x.shape[1], num_classes)
    layer = layer.to(device)
    optimizer = torch.optim.Adam(layer.parameters(), lr=lr, weight_decay=weight_decay)
    loss_fn = nn.CrossEntropyLoss()
    generator = torch.Generator().manual_seed(seed)
    step = x.shape[0] if batch_size is None else batch_size

    history: list[dict] = []
    best_acc, best_epoch, best_state = -1.0, 0, None
    bar = tqdm(range(1, epochs + 1), desc="linear probe", unit="epoch", disable=not progress)
    for epoch in bar:
        layer.train()
        if batch_size is None:
            order = None
        else:
            order = torch.randperm(x.shape[0], generator=generator).to(device)
        total = 0.0
        for start in range(0, x.shape[0], step):
            idx = slice(None) if order is None else order[start:start + step]
            xb, yb = x[idx], y[idx]
            loss = loss_fn(layer(xb), yb)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(yb)
        layer.eval()
        record = {"epoch": epoch, "loss": total / x.shape[0],
                  "train_acc": _accuracy(layer, x, y, 1 << 16)}
        if xv is not None:
            record["val_acc"] = _accuracy(layer, xv, yv, 1 << 16)
        history.append(record)
        acc = record["val_acc" if xv is not None else "train_acc"]
        if acc > best_acc:
            best_acc, best_epoch = acc, epoch
            best_state = copy.deepcopy(layer.state_dict())
        bar.set_postfix(loss=f"{record['loss']:.4f}", acc=f"{acc:.4f}", best=f"{best_acc:.4f}")
    bar.close()
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


@contextlib.contextmanager
def one_cpu_thread(device: torch.device | str = "cpu"):
    """Run the block on one torch CPU thread, then restore the previous setting.

    Used where many small operations or a LAPACK call synchronise threads very often: on a
    busy two-core machine one thread was 3 to 40 times faster than two for the eigensolver
    (0.3 s against 1-16 s for D = 1024) and about 20 times faster for the linear probe's tiny
    matrix products. Does nothing for a GPU ``device``.
    """
    if torch.device(device).type != "cpu":
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


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


def mahalanobis_scores(train_feats: Any, train_labels: Any, test_feats: Any,
                       relative: bool = False, chunk_size: int = 4096,
                       covariance: str = "class_mean") -> Any:
    """Mahalanobis (MD) or relative Mahalanobis (RMD) score of every test feature.

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
        The shared covariance estimator (see above).

    Returns
    -------
    scores : same kind as ``train_feats``, shape (M,), float64
        Higher = closer to some class = more in-distribution (MD scores are <= 0).
    """
    if covariance not in ("class_mean", "pooled"):
        raise ValueError(f"covariance must be 'class_mean' (the course's convention) or "
                         f"'pooled' (class-size weighted), got {covariance!r}")
    device = _device_of(train_feats)
    # keep float64 input exact; float32 is widened slice by slice, never as a whole
    train = _feature_tensor(train_feats, "train_feats", device, dtype=None)
    check_labels(train_labels, "train_labels", train.shape[0])
    labels = to_tensor(train_labels, "train_labels").to(device=device, dtype=torch.int64)
    test = _feature_tensor(test_feats, "test_feats", device, dtype=None)
    check_same_dim(train, test, "train_feats", "test_feats")
    chunk_size = _positive_int(chunk_size, "chunk_size")

    with torch.no_grad():
        _, means, shared, global_mean, global_cov = _class_statistics(
            train, labels, relative, pooled=covariance == "pooled")
        # centring on a common point does not change any distance but helps the expansion
        centre = means.mean(dim=0) if global_mean is None else global_mean
        means = means - centre
        precision = _pinv(shared)
        if relative:
            precision0 = _pinv(global_cov)
            origin = torch.zeros(1, train.shape[1], dtype=torch.float64, device=device)
        out = torch.empty(test.shape[0], dtype=torch.float64, device=device)
        for start in range(0, test.shape[0], chunk_size):
            xt = test[start:start + chunk_size].to(torch.float64) - centre
            d2 = _squared_distances(xt, means, precision)
            if relative:
                d2 = d2 - _squared_distances(xt, origin, precision0)
            out[start:start + chunk_size] = -d2.min(dim=1).values
    return _back(out.clone(), train_feats)


#: The course's fixed k-means settings (notebook 06 states them): scikit-learn's ``KMeans``
#: with k-means++ initialisation, ``random_state=0``, one initialisation and Lloyd's algorithm,
#: fitted on the float32 training features. With several initialisations the best partition
#: would be found more reliably, but k = 100 would take minutes; one fixed start keeps the
#: result reproducible (see ``ood_utils/expected.py`` for the spread over correct variants).
KMEANS_SETTINGS = {"n_init": 1, "algorithm": "lloyd", "random_state": 0}


def kmeans_mahalanobis_scores(train_feats: Any, test_feats: Any, n_clusters: int,
                              relative: bool = False, seed: int = 0, n_init: int = 1,
                              return_kmeans: bool = False, covariance: str = "class_mean"):
    """SSD-style score, simplified as in the course's assignment: k-means clusters of the
    training features play the classes of :func:`mahalanobis_scores`.

    SSD (Sehwag et al. 2021) keeps one covariance per cluster; the course, like its
    assignment, shares one covariance over the clusters (by default the unweighted mean of
    the cluster covariances). scikit-learn's ``KMeans(n_clusters, random_state=seed,
    n_init=n_init, algorithm="lloyd")`` (k-means++ initialisation, :data:`KMEANS_SETTINGS`)
    is fitted on the training features as float32; its cluster assignments are passed as
    labels to :func:`mahalanobis_scores`. The class means are recomputed from those labels;
    they equal the fitted cluster centres whenever k-means has converged.

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
        Passed to :func:`mahalanobis_scores`.

    Returns
    -------
    scores : same kind as ``train_feats``, shape (M,), float64
    kmeans : sklearn.cluster.KMeans, only if ``return_kmeans``
    """
    from sklearn.cluster import KMeans

    check_array(train_feats, "train_feats", ndim=2)
    check_array(test_feats, "test_feats", ndim=2)
    check_same_dim(train_feats, test_feats, "train_feats", "test_feats")
    n_clusters = _positive_int(n_clusters, "n_clusters")
    n_init = _positive_int(n_init, "n_init")
    if not 2 <= n_clusters <= train_feats.shape[0]:
        raise ValueError(f"n_clusters must be between 2 and the number of training samples "
                         f"({train_feats.shape[0]}), got {n_clusters}")
    x = np.ascontiguousarray(to_numpy(train_feats, "train_feats"), dtype=np.float32)
    kmeans = KMeans(n_clusters=n_clusters, random_state=seed, n_init=n_init,
                    algorithm=KMEANS_SETTINGS["algorithm"]).fit(x)
    labels = kmeans.labels_.astype(np.int64)
    if is_tensor(train_feats):
        labels = torch.from_numpy(labels).to(train_feats.device)
    scores = mahalanobis_scores(train_feats, labels, test_feats, relative=relative,
                                covariance=covariance)
    return (scores, kmeans) if return_kmeans else scores
