"""Notebook 07's open-set experiment: data, the baseline CNN, training loops and the cache.

The method itself (anchors, distances, loss, scores, thresholds) is :mod:`ood_utils.methods.cac`; this
module is the plumbing around it, sized for a laptop CPU:

* :func:`cac_datasets`: the known/unknown images of a profile (``profile.cac_*`` fields): on
  ``miniclip`` six known Fashion-MNIST classes against the four others; on ``clip`` MNIST (ten
  known digits) against 500 grayscale CIFAR-10 test images, as in the CAC project notebook
  (seed 004).
* :func:`train_baseline`: trains a :class:`SmallCNN` with cross-entropy and caches it with
  its logits on every split (:func:`ood_utils.course.features.cached`).
* :func:`train_open_set`: the CAC network (the same CNN, its logits the anchor space) trained end to end
  with the CAC loss, on the same images, for as many epochs, seeded, on one CPU thread
  (reproducible bit for bit); the notebook passes its own training loop, loss, anchors and
  distance layer. :func:`train_cac_whole` is the reference of that loop.
* :func:`threshold_sweep`: the reference of the notebook's threshold sweep.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from ..methods.progress import progress_bar as tqdm  # a widget in JupyterLab, stdout lines in other kernels

from . import data as datasets
from ..methods.cac import DEFAULT_ALPHA, DEFAULT_LAMBDA, CACModel, cac_loss
from .features import cached
from .profiles import CIFAR10_CLASSES, FASHION_MNIST_CLASSES, MNIST_CLASSES, Profile, get_profile
from ..methods._threads import one_cpu_thread


# --------------------------------------------------------------------------------------------
# The baseline network
# --------------------------------------------------------------------------------------------
class SmallCNN(nn.Module):
    """A small convolutional classifier for 28 x 28 single-channel images.

    Three 5 x 5 convolutions (by default 32, 32 and 64 filters, as the CAC project notebook;
    ReLU after each; 2 x 2 average pooling after the second and the third; dropout after each),
    then a 256-unit hidden layer and a linear output layer. Spatial sizes:
    28 -> 24 -> 20 -> 10 -> 6 -> 3.

    Parameters
    ----------
    num_classes : size of the output (one logit per known class).
    in_channels : image channels (1 for grayscale).
    dropout : dropout probability used throughout.
    channels : filters of the three convolutions (``profile.cac_cnn_channels``).

    ``forward(x)`` maps ``(B, in_channels, 28, 28)`` to logits ``(B, num_classes)``.
    """

    def __init__(self, num_classes: int, *, in_channels: int = 1, dropout: float = 0.5,
                 channels: tuple[int, int, int] = (32, 32, 64)):
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes must be at least 2, got {num_classes}")
        if len(channels) != 3 or min(channels) < 1:
            raise ValueError(f"channels must be three positive filter counts, got {channels}")
        self.num_classes = int(num_classes)
        self.in_channels = int(in_channels)
        c1, c2, c3 = (int(c) for c in channels)
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, c1, kernel_size=5), nn.ReLU(), nn.Dropout(dropout),
            nn.Conv2d(c1, c2, kernel_size=5), nn.AvgPool2d(2), nn.ReLU(), nn.Dropout(dropout),
            nn.Conv2d(c2, c3, kernel_size=5), nn.AvgPool2d(2), nn.ReLU(), nn.Dropout(dropout),
            nn.Flatten(),
        )
        self.classifier = nn.Sequential(
            nn.Linear(c3 * 3 * 3, 256), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(256, num_classes),
        )
        # channels-last convolutions are about 1.5x faster on CPUs (oneDNN)
        self.features.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1:] != (self.in_channels, 28, 28):
            raise ValueError(f"x must have shape (B, {self.in_channels}, 28, 28), "
                             f"got {tuple(x.shape)}")
        return self.classifier(self.features(x.contiguous(memory_format=torch.channels_last)))


# --------------------------------------------------------------------------------------------
# Batching and training
# --------------------------------------------------------------------------------------------
class TensorBatches:
    """Mini-batches ``(x, y)`` of in-memory tensors, reshuffled on every pass.

    Faster than a ``DataLoader`` for data already in memory. Shuffling draws from torch's
    global generator, so ``torch.manual_seed`` (done by the training functions) fixes it.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, *, batch_size: int = 128,
                 shuffle: bool = True):
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.images, self.labels = images, labels
        self.batch_size, self.shuffle = int(batch_size), shuffle

    def __len__(self) -> int:
        return math.ceil(len(self.images) / self.batch_size)

    def __iter__(self):
        n = len(self.images)
        order = torch.randperm(n) if self.shuffle else torch.arange(n)
        for start in range(0, n, self.batch_size):
            idx = order[start:start + self.batch_size]
            yield self.images[idx], self.labels[idx]


def _fit(model: nn.Module, loader: Iterable, *, epochs: int, lr: float, seed: int, loss_fn,
         desc: str, progress: bool, lr_decay: bool = False) -> list[float]:
    if epochs < 1:
        raise ValueError(f"epochs must be at least 1, got {epochs}")
    torch.manual_seed(seed)
    np.random.seed(seed)
    params = [p for p in model.parameters() if p.requires_grad]
    device = params[0].device if params else torch.device("cpu")
    dtype = params[0].dtype if params else torch.float32
    optimiser = torch.optim.Adam(params, lr=lr)
    steps = epochs * len(loader) if lr_decay else 0
    schedule = (torch.optim.lr_scheduler.LambdaLR(optimiser, lambda k: 1 - k / steps)
                if lr_decay else None)
    history = []
    model.train()
    for epoch in range(epochs):
        total, count = 0.0, 0
        bar = tqdm(loader, desc=f"{desc} epoch {epoch + 1}/{epochs}", disable=not progress,
                   leave=False)
        for x, y in bar:
            x, y = x.to(device, dtype), y.to(device)
            optimiser.zero_grad()
            loss = loss_fn(model(x), y)
            if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
                raise TypeError(f"{desc}: the loss must be a single-number tensor, got "
                                f"{type(loss).__name__} {tuple(getattr(loss, 'shape', ()))}")
            if not torch.isfinite(loss):
                raise FloatingPointError(f"{desc}: the loss became {loss.item()} in epoch "
                                         f"{epoch + 1}; lower the learning rate")
            loss.backward()
            optimiser.step()
            if schedule is not None:
                schedule.step()
            total += loss.item() * len(y)
            count += len(y)
            bar.set_postfix(loss=f"{total / count:.4f}")
        history.append(total / max(count, 1))
        if progress:
            print(f"{desc} epoch {epoch + 1}/{epochs}: mean loss {history[-1]:.4f}")
    model.eval()
    return history


def train_classifier(cnn: nn.Module, loader: Iterable, *, epochs: int = 2, lr: float = 1e-3,
                     seed: int = 0, progress: bool = True, lr_decay: bool = False
                     ) -> list[float]:
    """Train ``cnn`` with cross-entropy and Adam; returns the mean loss of every epoch.

    ``loader`` yields ``(images (B, C, 28, 28), labels (B,))`` batches, e.g.
    :class:`TensorBatches`. ``seed`` fixes shuffling and dropout (CPU, same thread count:
    bit-for-bit reproducible). ``lr_decay`` lowers the learning rate linearly to 0 over the
    run (after batch ``k`` of ``K`` it is ``lr * (1 - k / K)``). The model is left in eval mode.
    """
    return _fit(cnn, loader, epochs=epochs, lr=lr, seed=seed, loss_fn=F.cross_entropy,
                desc="cross-entropy", progress=progress, lr_decay=lr_decay)


def train_cac(model: CACModel, loader: Iterable, *, epochs: int = 2, lr: float = 1e-3,
              seed: int = 0, lambda_: float = DEFAULT_LAMBDA, loss_fn: Callable | None = None,
              lr_decay: bool = False, progress: bool = True) -> list[float]:
    """Train a :class:`ood_utils.methods.cac.CACModel` with the CAC loss and Adam; per-epoch mean losses.

    ``loss_fn(distances, targets, lambda_=...)`` defaults to :func:`ood_utils.methods.cac.cac_loss` (a
    notebook passes its own implementation). The anchors stay fixed. ``lr_decay`` lowers the
    learning rate linearly to 0 over the run. Batches are cast to the model's dtype. The model
    is left in eval mode.
    """
    fn = loss_fn or cac_loss
    return _fit(model, loader, epochs=epochs, lr=lr, seed=seed,
                loss_fn=lambda d, y: fn(d, y, lambda_=lambda_), desc="CAC", progress=progress,
                lr_decay=lr_decay)


@torch.no_grad()
def batched_forward(module: nn.Module, images: torch.Tensor, *, batch_size: int = 1000,
                    progress: bool = False) -> torch.Tensor:
    """``module(images)`` in eval mode, batch by batch (on the module's device and dtype).

    Returns the outputs on the CPU.
    """
    module.eval()
    first = next(module.parameters())
    outs = [module(images[i:i + batch_size].to(first.device, first.dtype)).cpu()
            for i in tqdm(range(0, len(images), batch_size), disable=not progress, leave=False)]
    return torch.cat(outs)


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------
@dataclass
class CACData:
    """In-memory images of the open-set experiment, normalised and shaped ``(N, 1, 28, 28)``.

    ``train_*``: known classes for training; ``val_*``: known classes held out from the
    training split (for choosing the threshold); ``test_*``: known classes of the test split;
    ``unknown_*``: unknown test images (labels are the original class ids, for display).
    ``far_x``: a second, far set of unknown images (``profile.cac_far_unknown``, e.g. the
    handwritten digits that scikit-learn ships), or ``None``; ``far_source`` names it.
    Known labels are ``0..len(known_names)-1``; ``unknown_classes`` maps an original unknown
    class id to its name.
    """

    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    unknown_x: torch.Tensor
    unknown_y: torch.Tensor
    known_names: tuple[str, ...]
    unknown_names: tuple[str, ...]
    mean: float
    std: float
    source: str = ""
    unknown_classes: dict = field(default_factory=dict)
    far_x: torch.Tensor | None = None
    far_source: str = ""

    @property
    def num_classes(self) -> int:
        return len(self.known_names)

    def denormalise(self, x: torch.Tensor) -> torch.Tensor:
        """Back to ``[0, 1]`` pixel values for display."""
        return (x * self.std + self.mean).clamp(0, 1)


_CLASS_NAMES = {"FashionMNIST": FASHION_MNIST_CLASSES, "MNIST": MNIST_CLASSES,
                "CIFAR10": CIFAR10_CLASSES}


def _images(dataset: str, train: bool) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images ``(n, H, W[, 3])`` and int64 labels of one split of a dataset."""
    if dataset == "FashionMNIST":
        return datasets.load_fashion_mnist("train" if train else "test")
    ds = datasets.torchvision_dataset(dataset, train)
    images = ds.data.numpy() if torch.is_tensor(ds.data) else np.asarray(ds.data)
    return images, np.asarray(ds.targets, dtype=np.int64)


def _split_val(images: torch.Tensor, labels: torch.Tensor, val_fraction: float, seed: int):
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(images), generator=g)
    n_val = int(round(val_fraction * len(images)))
    val, train = order[:n_val].sort().values, order[n_val:].sort().values
    return images[train], labels[train], images[val], labels[val]


def _to_gray28(images_uint8: np.ndarray) -> torch.Tensor:
    """uint8 ``(N, H, W)`` or ``(N, H, W, 3)`` -> float ``(N, 1, 28, 28)`` in ``[0, 1]``."""
    x = torch.from_numpy(np.ascontiguousarray(images_uint8)).float() / 255.0
    if x.ndim == 4:  # RGB -> luminance (ITU-R 601, as PIL's "L" mode)
        x = x @ torch.tensor([0.299, 0.587, 0.114])
    x = x.unsqueeze(1)
    if x.shape[-2:] != (28, 28):
        x = F.interpolate(x, size=(28, 28), mode="bilinear", antialias=True, align_corners=False)
    return x.clamp(0, 1)


#: Second unknown sets (``profile.cac_far_unknown``) that need no download.
FAR_UNKNOWN = ("sklearn-digits",)


def sklearn_digits_images() -> torch.Tensor:
    """scikit-learn's 1,797 handwritten digits (8 x 8, shipped with the package) as 28 x 28.

    Pixel values 0..16 are scaled to ``[0, 1]``, the 8 x 8 image is resized to 20 x 20
    (bilinear) and padded with 4 black pixels on every side, as MNIST centres its digits in a
    20 x 20 box of a 28 x 28 image. Returns float ``(1797, 1, 28, 28)`` in ``[0, 1]``.
    """
    from sklearn.datasets import load_digits

    x = torch.from_numpy(load_digits().images.astype(np.float32) / 16.0).unsqueeze(1)
    x = F.interpolate(x, size=(20, 20), mode="bilinear", align_corners=False)
    return F.pad(x, (4, 4, 4, 4)).clamp(0, 1)


def cac_datasets(profile: str | Profile | None = None, *, val_fraction: float = 0.1,
                 seed: int = 0) -> CACData:
    """Images of the open-set experiment of ``profile``, as its ``cac_*`` fields say.

    Known: the train and test splits of ``profile.cac_known`` restricted to
    ``profile.cac_known_classes`` (labels remapped to ``0..N-1``). Unknown: the test split of
    ``profile.cac_unknown`` restricted to ``profile.cac_unknown_classes``, of which
    ``profile.cac_unknown_limit`` seeded random images are kept; colour images are turned
    grayscale and resized to 28 x 28. MNIST and CIFAR-10 need the torchvision downloads;
    offline they raise :class:`ood_utils.course.data.DataMissingError`.

    ``profile.cac_far_unknown`` adds a second unknown set (``far_x``, see :class:`CACData`).

    A seeded ``val_fraction`` of the known training images is held out as ``val_*``. All
    images are normalised with the mean and standard deviation of the known training pixels.
    """
    p = get_profile(profile)
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if p.cac_known not in _CLASS_NAMES or p.cac_unknown not in _CLASS_NAMES:
        raise ValueError(f"profile {p.name} has no open-set data (cac_known={p.cac_known!r}, "
                         f"cac_unknown={p.cac_unknown!r}; known: {sorted(_CLASS_NAMES)})")
    known, unknown = p.cac_known_classes, p.cac_unknown_classes
    tr_img, tr_lab = _images(p.cac_known, True)
    te_img, te_lab = _images(p.cac_known, False)
    keep_tr = datasets.select_classes(tr_lab, known)
    keep_te = datasets.select_classes(te_lab, known)
    train_x, train_y = _to_gray28(tr_img[keep_tr]), datasets.remap_labels(tr_lab[keep_tr], known)
    test_x, test_y = _to_gray28(te_img[keep_te]), datasets.remap_labels(te_lab[keep_te], known)
    if p.cac_unknown == p.cac_known:
        un_img, un_lab = te_img, te_lab
    else:
        un_img, un_lab = _images(p.cac_unknown, False)
    keep_un = datasets.select_classes(un_lab, unknown)
    if p.cac_unknown_limit is not None and p.cac_unknown_limit < len(keep_un):
        keep_un = np.sort(np.random.default_rng(seed).choice(
            keep_un, size=p.cac_unknown_limit, replace=False))
    unknown_x, unknown_y = _to_gray28(un_img[keep_un]), un_lab[keep_un]

    names_k, names_u = _CLASS_NAMES[p.cac_known], _CLASS_NAMES[p.cac_unknown]
    known_ids = range(len(names_k)) if known is None else known
    unknown_ids = range(len(names_u)) if unknown is None else unknown
    unknown_classes = {int(c): names_u[c] for c in unknown_ids}
    shown = {"FashionMNIST": "Fashion-MNIST", "CIFAR10": "CIFAR-10"}
    k_name, u_name = (shown.get(n, n) for n in (p.cac_known, p.cac_unknown))
    source = (f"{k_name}, known vs unknown classes" if p.cac_known == p.cac_unknown else
              f"{k_name} known vs {len(keep_un)} grayscale {u_name} test images")

    train_y = torch.as_tensor(np.asarray(train_y, dtype=np.int64))
    train_x, train_y, val_x, val_y = _split_val(train_x, train_y, val_fraction, seed)
    mean, std = float(train_x.mean()), float(train_x.std())
    norm = lambda x: (x - mean) / std  # noqa: E731
    far_x, far_source = None, ""
    if p.cac_far_unknown:
        if p.cac_far_unknown not in FAR_UNKNOWN:
            raise ValueError(f"profile {p.name}: cac_far_unknown={p.cac_far_unknown!r} is not "
                             f"one of {FAR_UNKNOWN}")
        far_x = norm(sklearn_digits_images())
        far_source = f"{len(far_x)} handwritten digits of scikit-learn, 8 x 8 resized to 28 x 28"
    return CACData(
        train_x=norm(train_x), train_y=train_y, val_x=norm(val_x), val_y=val_y,
        test_x=norm(test_x), test_y=torch.as_tensor(np.asarray(test_y, dtype=np.int64)),
        unknown_x=norm(unknown_x), unknown_y=torch.as_tensor(np.asarray(unknown_y, np.int64)),
        known_names=tuple(names_k[c] for c in known_ids),
        unknown_names=tuple(unknown_classes.values()),
        mean=mean, std=std, source=source, unknown_classes=unknown_classes, far_x=far_x,
        far_source=far_source)


def balanced_subset(labels: torch.Tensor, per_class: int, *, seed: int = 0) -> torch.Tensor:
    """Sorted indices of ``per_class`` seeded random samples of every class in ``labels``."""
    g = torch.Generator().manual_seed(seed)
    picks = []
    for c in torch.unique(labels):
        idx = torch.nonzero(labels == c).flatten()
        if len(idx) < per_class:
            raise ValueError(f"class {int(c)} has only {len(idx)} samples, asked for {per_class}")
        picks.append(idx[torch.randperm(len(idx), generator=g)[:per_class]])
    return torch.cat(picks).sort().values


# --------------------------------------------------------------------------------------------
# The notebook's pipeline: a cached cross-entropy baseline and the CAC network, trained alike
# --------------------------------------------------------------------------------------------
#: Optimiser settings shared by the baseline and the CAC network (the per-profile ones are
#: ``profile.cac_*``): Adam, learning rate 1e-3, batches of 128, as the CAC project notebook.
BASELINE_LR = 1e-3
BASELINE_BATCH_SIZE = 128
#: Both trainings lower the learning rate linearly from ``BASELINE_LR`` to 0 over the run, one
#: step per batch (the project notebook keeps it constant; measured in tools/measure_cac.py).
LR_DECAY = True


def training_settings(profile: str | Profile | None = None) -> dict[str, Any]:
    """The settings of notebook 07's two trainings for ``profile`` (from its ``cac_*`` fields).

    ``per_class`` (training images per known class, ``None``: all), ``epochs`` (of each
    network), ``lr``, ``batch_size``, ``channels`` and ``dropout`` of :class:`SmallCNN`,
    ``lambda_`` and ``alpha`` of the CAC loss and anchors, and ``init_from_baseline`` (the CAC
    network starts from the baseline's weights, as in the CAC project notebook, instead of
    from the same random initialisation as the baseline).
    """
    p = get_profile(profile)
    return {"per_class": p.cac_baseline_per_class, "epochs": p.cac_baseline_epochs,
            "lr": BASELINE_LR, "batch_size": BASELINE_BATCH_SIZE,
            "channels": tuple(p.cac_cnn_channels), "dropout": p.cac_dropout,
            "lambda_": DEFAULT_LAMBDA, "alpha": DEFAULT_ALPHA,
            "init_from_baseline": p.cac_init_from_baseline, "lr_decay": LR_DECAY}


def training_subset(data: CACData, profile: str | Profile | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """The known training images both networks learn from (a seeded, class-balanced subset)."""
    per_class = training_settings(profile)["per_class"]
    if per_class is None:
        return data.train_x, data.train_y
    idx = balanced_subset(data.train_y, per_class, seed=0)
    return data.train_x[idx], data.train_y[idx]


def new_cnn(num_classes: int, profile: str | Profile | None = None) -> SmallCNN:
    """A freshly initialised :class:`SmallCNN` with the profile's widths and dropout."""
    cfg = training_settings(profile)
    return SmallCNN(num_classes, channels=cfg["channels"], dropout=cfg["dropout"])


def train_baseline(data: CACData, *, seed: int = 0, profile: str | Profile | None = None,
                   progress: bool = True, device: str | torch.device = "cpu") -> dict[str, Any]:
    """Train (or load from the cache) the cross-entropy baseline and its logits on every split.

    ``torch.manual_seed(seed)``, then a :func:`new_cnn` is trained with
    :func:`train_classifier` on :func:`training_subset` (``epochs`` of
    :func:`training_settings`). The result is cached with :func:`ood_utils.course.features.cached`
    under ``cac_baseline_seed<seed>``, keyed by the settings, so a second run takes a second.
    On the CPU the training runs on one thread, so that it is reproducible bit for bit whatever
    the machine's number of cores; ``device`` only decides where the training runs (GPU
    results may differ slightly); everything returned is on the CPU.

    Returns a dict of tensors: ``state`` (the CNN's ``state_dict``) and ``val_logits``,
    ``test_logits``, ``unknown_logits`` (and ``far_logits`` when ``data.far_x`` is set),
    each ``(n, num_classes)``.
    """
    p = get_profile(profile)
    cfg = training_settings(p)

    def compute() -> dict:
        x, y = training_subset(data, p)
        torch.manual_seed(seed)
        cnn = new_cnn(data.num_classes, p).to(device)
        with one_cpu_thread(device):  # the result must not depend on the number of cores
            train_classifier(cnn, TensorBatches(x, y, batch_size=cfg["batch_size"]),
                             epochs=cfg["epochs"], lr=cfg["lr"], seed=seed, progress=progress,
                             lr_decay=cfg["lr_decay"])
            out: dict[str, Any] = {"state": {k: v.cpu().clone()
                                             for k, v in cnn.state_dict().items()}}
            for name, images in split_images(data).items():
                out[f"{name}_logits"] = batched_forward(cnn, images)
        return out

    meta = {"kind": "cac baseline", "version": 4, "threads": 1, "seed": seed,
            "source": data.source, "far": data.far_source, "n_train": len(data.train_y),
            "n_val": len(data.val_y), **{k: (list(v) if isinstance(v, tuple) else v)
                                         for k, v in cfg.items()}}
    return cached(f"cac_baseline_seed{seed}", compute, p, meta)


def load_baseline(blob: dict, num_classes: int, profile: str | Profile | None = None
                  ) -> SmallCNN:
    """The baseline :class:`SmallCNN` (eval mode) from :func:`train_baseline`'s ``state``."""
    cnn = new_cnn(num_classes, profile)
    cnn.load_state_dict(blob["state"])
    return cnn.eval()


def split_images(data: CACData) -> dict[str, torch.Tensor]:
    """``{"val", "test", "unknown"[, "far"]}`` -> images: every split the notebook scores."""
    out = {"val": data.val_x, "test": data.test_x, "unknown": data.unknown_x}
    if data.far_x is not None:
        out["far"] = data.far_x
    return out


def train_cac_whole(model: nn.Module, loader: Iterable, epochs: int, lr: float,
                    lambda_: float, loss_fn: Callable | None = None) -> list[float]:
    """The reference of notebook 07's training-loop exercise: the whole ``model``, CAC loss, Adam.

    One Adam optimiser over every parameter of ``model`` (learning rate ``lr``), the model in
    training mode; per batch: ``zero_grad``, distances ``model(x)``,
    ``loss_fn(distances, y, lambda_=lambda_)`` (default :func:`ood_utils.methods.cac.cac_loss`),
    ``backward``, ``step``, and one step of a schedule that lowers the learning rate linearly
    to 0 over the ``epochs * len(loader)`` batches (as the baseline's ``lr_decay``). Returns the mean loss of every epoch (weighted by batch size) and
    leaves the model in evaluation mode. It draws no random numbers of its own: the batch
    order and dropout come from torch's global generator, seeded by the caller.
    """
    fn = loss_fn or cac_loss
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    steps = int(epochs) * len(loader)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda k: 1 - k / steps)
    history = []
    model.train()
    for _ in range(int(epochs)):
        total, count = 0.0, 0
        for x, y in loader:
            optimiser.zero_grad()
            loss = fn(model(x), y, lambda_=lambda_)
            loss.backward()
            optimiser.step()
            schedule.step()
            total += loss.item() * len(y)
            count += len(y)
        history.append(total / max(count, 1))
    model.eval()
    return history


def train_open_set(data: CACData, *, seed: int = 0, profile: str | Profile | None = None,
                   train_fn: Callable | None = None, loss_fn: Callable | None = None,
                   anchors: torch.Tensor | None = None, distance_fn: Callable | None = None,
                   baseline: dict | None = None, lambda_: float | None = None,
                   build_fn: Callable | None = None,
                   device: str | torch.device = "cpu") -> tuple[nn.Module, list[float]]:
    """Notebook 07's CAC network, trained end to end: ``(model, per-epoch losses)``.

    ``torch.manual_seed(seed)``; a :func:`new_cnn` (from the baseline's weights ``baseline``
    when the profile's ``init_from_baseline`` is set, otherwise initialised exactly like the
    baseline), wrapped in :class:`ood_utils.methods.cac.CACModel` with ``anchors`` and
    ``distance_fn``; then ``train_fn(model, loader, epochs, lr, lambda_)`` on the same images
    and for as many epochs as the baseline, on one CPU thread (reproducible bit for bit).
    ``train_fn`` defaults to :func:`train_cac_whole` with ``loss_fn``; a notebook passes its
    own loop (which calls its own loss). ``lambda_`` overrides the profile's. ``device``
    decides where the training runs (a GPU for the ``clip`` profile's full MNIST; results may
    differ slightly from the CPU's); the model is returned on the CPU, in evaluation mode.

    The network is, as in the paper, the CNN whose ``N`` logits are the anchor space (no extra
    ``N x N`` layer). ``build_fn(num_classes, channels=..., dropout=..., alpha=...)`` (a
    notebook's own network class, see :func:`ood_utils.answer_key.checks.check_cac_network`) replaces
    :class:`ood_utils.methods.cac.CACModel` around :func:`new_cnn`; it is called right after
    ``torch.manual_seed(seed)`` and must create its parameters in :class:`SmallCNN`'s order, so
    that it starts from the baseline's random initialisation (or is loaded with the baseline's
    weights parameter by parameter).
    """
    p = get_profile(profile)
    cfg = training_settings(p)
    lam = cfg["lambda_"] if lambda_ is None else float(lambda_)
    x, y = training_subset(data, p)
    if cfg["init_from_baseline"] and baseline is None:
        raise ValueError(f"profile {p.name} starts CAC from the baseline's weights: pass "
                         "baseline=train_baseline(...)")
    torch.manual_seed(seed)
    if build_fn is not None:
        model = build_fn(data.num_classes, channels=cfg["channels"], dropout=cfg["dropout"],
                         alpha=cfg["alpha"])
        if not isinstance(model, nn.Module):
            raise TypeError(f"build_fn returned a {type(model).__name__}, not a torch module")
        if cfg["init_from_baseline"]:
            load_cnn_weights(model, baseline["state"])
    else:
        cnn = new_cnn(data.num_classes, p)
        if cfg["init_from_baseline"]:
            cnn.load_state_dict(baseline["state"])
        model = CACModel(cnn, data.num_classes, alpha=cfg["alpha"], anchors=anchors,
                         distance_fn=distance_fn, extra_layer=False)
    # channels-last convolution weights (as SmallCNN's) are about 1.5x faster on CPUs
    model = model.to(device).to(memory_format=torch.channels_last)
    loader = TensorBatches(x.to(device), y.to(device), batch_size=cfg["batch_size"])
    if train_fn is None:
        train_fn = lambda m, ld, e, lr, lm: train_cac_whole(m, ld, e, lr, lm, loss_fn)  # noqa: E731
    with one_cpu_thread(device):
        history = train_fn(model, loader, cfg["epochs"], cfg["lr"], lam)
    model = model.cpu().eval()
    if history is None:
        raise ValueError("the training function returned None: return the list of the mean "
                         "loss of every epoch")
    return model, [float(v) for v in history]


def load_cnn_weights(model: nn.Module, state: dict) -> None:
    """Copy a :class:`SmallCNN` ``state`` into ``model``'s trainable parameters, in order.

    For a network written in a notebook, whose parameter names differ from :class:`SmallCNN`'s
    but whose parameters (checked: same number, same shapes) come in the same order.
    """
    params = [q for q in model.parameters() if q.requires_grad]
    values = list(state.values())
    if len(params) != len(values) or any(q.shape != v.shape for q, v in zip(params, values)):
        raise ValueError("the network's trainable parameters do not match the baseline CNN's "
                         f"({[tuple(q.shape) for q in params]} vs "
                         f"{[tuple(v.shape) for v in values]}); build the same CNN")
    with torch.no_grad():
        for q, v in zip(params, values):
            q.copy_(v)


def open_set_distances(model: nn.Module, data: CACData) -> dict[str, torch.Tensor]:
    """Distances of every split (:func:`split_images`) to the anchors, in eval mode, one thread."""
    with one_cpu_thread():
        return {name: batched_forward(model, images) for name, images in split_images(data).items()}


def threshold_sweep(dist_val: Any, dist_test: Any, dist_unknown: Any,
                    tprs: Iterable[float]) -> dict[str, np.ndarray]:
    """Reference of notebook 07's sweep: for every target share of accepted known images.

    For each ``tpr`` in ``tprs`` the threshold on :func:`ood_utils.methods.cac.cac_known_scores` is
    chosen on ``dist_val`` (:func:`ood_utils.methods.metrics.threshold_at_tpr`); the returned arrays
    give, in percent, the known test images accepted and the unknown test images rejected.
    """
    from ..methods.cac import cac_known_scores, known_unknown_confusion
    from ..methods.metrics import threshold_at_tpr

    s_val, s_known, s_unknown = (cac_known_scores(torch.as_tensor(d))
                                 for d in (dist_val, dist_test, dist_unknown))
    accepted, rejected = [], []
    for tpr in tprs:
        _, k, u = known_unknown_confusion(s_known, s_unknown, threshold_at_tpr(s_val, tpr=tpr))
        accepted.append(k)
        rejected.append(u)
    return {"known_accepted": np.array(accepted), "unknown_rejected": np.array(rejected)}


class CACNetwork(nn.Module):
    """Reference of notebook 07's network exercise: :class:`SmallCNN`'s layers, logits = anchor space.

    The same three convolutions and two dense layers as :class:`SmallCNN`, created in the same
    order (so that, after the same ``torch.manual_seed``, it starts from the baseline's
    initialisation), with the anchors ``alpha * I`` as a buffer. As in Miller et al., the
    ``N`` logits themselves are the point ``z`` of the anchor space (the CAC project notebook
    of seed 004 adds an ``N x N`` layer; :class:`ood_utils.methods.cac.CACModel` with
    ``extra_layer=True``). ``embed(x)``: the logits ``(B, N)``; ``forward(x)``: the distances
    ``(B, N)`` to the anchors. ``anchors_fn``/``distance_fn`` default to
    :func:`ood_utils.methods.cac.class_anchors`/:func:`ood_utils.methods.cac.anchor_distances`.
    """

    def __init__(self, num_classes: int, channels: tuple[int, int, int] = (32, 32, 64),
                 dropout: float = 0.5, alpha: float = DEFAULT_ALPHA, *,
                 anchors_fn: Callable | None = None, distance_fn: Callable | None = None):
        super().__init__()
        from ..methods.cac import anchor_distances, class_anchors

        c1, c2, c3 = (int(c) for c in channels)
        self.conv1 = nn.Conv2d(1, c1, kernel_size=5)
        self.conv2 = nn.Conv2d(c1, c2, kernel_size=5)
        self.conv3 = nn.Conv2d(c2, c3, kernel_size=5)
        self.hidden = nn.Linear(c3 * 3 * 3, 256)
        self.logits = nn.Linear(256, num_classes)
        self.dropout = nn.Dropout(dropout)
        anchors = (anchors_fn or class_anchors)(num_classes, alpha=alpha)
        self.register_buffer("anchors", torch.as_tensor(anchors).float())
        self.distance_fn = distance_fn or anchor_distances

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        x = self.dropout(F.relu(self.conv1(x)))
        x = self.dropout(F.relu(F.avg_pool2d(self.conv2(x), 2)))
        x = self.dropout(F.relu(F.avg_pool2d(self.conv3(x), 2)))
        x = self.dropout(F.relu(self.hidden(x.flatten(1))))
        return self.logits(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.distance_fn(self.embed(x), self.anchors)
