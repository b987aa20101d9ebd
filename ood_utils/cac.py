"""Open-set recognition with Class Anchor Clustering (CAC; Miller et al., WACV 2021).

A classifier over ``N`` known classes is turned into a distance-based open-set recogniser:

* the network's ``N`` logits go through one more ``N x N`` linear layer, giving a point ``z``;
* every known class ``j`` owns a fixed anchor ``c_j = alpha * e_j`` (a scaled one-hot vector);
* the network outputs the Euclidean distances ``d_j = ||z - c_j||`` (shape ``(B, N)``).

Training pulls each sample towards its own anchor and away from the others with

    L(x, y) = log(1 + sum_{j != y} exp(d_y - d_j)) + lambda * d_y

and a test sample is scored with ``s_j = d_j * (1 - softmin(d)_j)``: the predicted class is
``argmin_j s_j`` and the sample is called *unknown* when ``min_j s_j`` exceeds a threshold.
Following the course convention (higher = more in-distribution), :func:`cac_unknown_scores`
returns ``-min_j s_j``.

Data (:func:`cac_datasets`): on ``miniclip`` the six known Fashion-MNIST classes against the
four others; on ``clip`` MNIST (ten known digits) against 500 grayscale CIFAR-10 test images,
as in the course's original open-set notebook.

Notebook 07's pipeline, sized for a laptop CPU: :func:`baseline_features` trains a
:class:`SmallCNN` with cross-entropy and caches it with its convolutional features;
:func:`cac_on_features` then trains the dense layers plus the anchor layer with the CAC loss on
those fixed features (seconds); :func:`open_set_summary` gives accuracy, AUROC and the
known/unknown decisions under two thresholds (:func:`threshold_at_tpr`, :func:`seed_threshold`).
End-to-end CAC training of a whole network is :func:`train_cac` on ``CACModel(SmallCNN(N), N)``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ._arrays import check_array, check_labels, is_tensor, like, to_numpy, to_tensor
from .profiles import MNIST_CLASSES, Profile, get_profile

DEFAULT_ALPHA = 10.0
DEFAULT_LAMBDA = 0.1
#: The original notebook's rule: a sample is unknown when ``min_j s_j > 0.5``.
SEED_THRESHOLD = 0.5
#: Share of known samples accepted by the data-driven threshold (see :func:`threshold_at_tpr`).
DEFAULT_TPR = 0.95


# --------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------
class SmallCNN(nn.Module):
    """A small convolutional classifier for 28 x 28 single-channel images.

    Three 5 x 5 convolutions with 32, 32 and 64 filters (ReLU after each; 2 x 2 average
    pooling after the second and the third; dropout after each), then a 256-unit hidden layer
    and a linear output layer. Spatial sizes: 28 -> 24 -> 20 -> 10 -> 6 -> 3.

    Parameters
    ----------
    num_classes: size of the output (one logit per known class).
    in_channels: image channels (1 for grayscale).
    dropout: dropout probability used throughout.

    ``forward(x)`` maps ``(B, in_channels, 28, 28)`` to logits ``(B, num_classes)``.
    """

    def __init__(self, num_classes: int, in_channels: int = 1, dropout: float = 0.5):
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes must be at least 2, got {num_classes}")
        self.num_classes = int(num_classes)
        self.in_channels = int(in_channels)
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 32, kernel_size=5), nn.ReLU(), nn.Dropout(dropout),
            nn.Conv2d(32, 32, kernel_size=5), nn.AvgPool2d(2), nn.ReLU(), nn.Dropout(dropout),
            nn.Conv2d(32, 64, kernel_size=5), nn.AvgPool2d(2), nn.ReLU(), nn.Dropout(dropout),
            nn.Flatten(),
        )
        self.classifier = nn.Sequential(
            nn.Linear(64 * 3 * 3, 256), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(256, num_classes),
        )
        # channels-last convolutions are about 1.5x faster on CPUs (oneDNN)
        self.features.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1:] != (self.in_channels, 28, 28):
            raise ValueError(f"x must have shape (B, {self.in_channels}, 28, 28), "
                             f"got {tuple(x.shape)}")
        return self.classifier(self.features(x.contiguous(memory_format=torch.channels_last)))


def anchor_distances(points: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
    """Euclidean distances between rows of ``points`` (B, N) and ``anchors`` (N, N) -> (B, N).

    Written out (rather than ``torch.cdist``) so that the gradient stays finite even for a
    point sitting exactly on an anchor.
    """
    diff = points.unsqueeze(1) - anchors.unsqueeze(0)
    return diff.pow(2).sum(-1).clamp_min(1e-12).sqrt()


class CACModel(nn.Module):
    """A classifier ``cnn`` followed by the CAC distance layer.

    Parameters
    ----------
    cnn: module mapping images to ``num_classes`` logits (e.g. a pretrained :class:`SmallCNN`).
    num_classes: number of known classes ``N``.
    alpha: anchor magnitude; anchor ``j`` is ``alpha * e_j``.

    ``forward(x)`` returns the distances ``(B, N)`` to the anchors; ``embed(x)`` the point
    ``z`` in the anchor space (the output of the extra ``N x N`` linear layer). The anchors are
    a buffer: saved with the weights, moved with ``.to()``, never updated by an optimiser.
    """

    def __init__(self, cnn: nn.Module, num_classes: int, alpha: float = DEFAULT_ALPHA):
        super().__init__()
        if alpha <= 0:
            raise ValueError(f"alpha must be positive, got {alpha}")
        self.cnn = cnn
        self.num_classes = int(num_classes)
        self.alpha = float(alpha)
        self.to_anchor_space = nn.Linear(self.num_classes, self.num_classes)
        self.register_buffer("anchors", self.alpha * torch.eye(self.num_classes))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.cnn(x)
        if logits.ndim != 2 or logits.shape[1] != self.num_classes:
            raise ValueError(f"the cnn must output (B, {self.num_classes}) logits, "
                             f"got {tuple(logits.shape)}")
        return self.to_anchor_space(logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return anchor_distances(self.embed(x), self.anchors)


# --------------------------------------------------------------------------------------------
# Loss and scores
# --------------------------------------------------------------------------------------------
def _check_distances(distances: Any, name: str = "distances") -> None:
    check_array(distances, name, ndim=2)
    if distances.shape[1] < 2:
        raise ValueError(f"{name} must have one column per known class (at least 2), "
                         f"got shape {tuple(distances.shape)}")


def cac_loss(distances: torch.Tensor, targets: torch.Tensor,
             lambda_: float = DEFAULT_LAMBDA) -> torch.Tensor:
    """The CAC loss, averaged over the batch.

    ``mean_i [ log(1 + sum_{j != y_i} exp(d_{i,y_i} - d_{i,j})) + lambda_ * d_{i,y_i} ]``.

    The first (tuplet) term equals ``logsumexp_j(d_y - d_j)`` (the ``j = y`` term is the 1),
    which is how it is computed here, without overflow for large distances.

    Parameters
    ----------
    distances: ``(B, N)`` distances to the anchors (a tensor keeps the autograd graph; a numpy
        array is accepted and gives a python float back).
    targets: ``(B,)`` integer class ids in ``0..N-1``.
    lambda_: weight of the anchor term.

    Returns a 0-d tensor (a python float for numpy input).
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


def cac_unknown_scores(distances: Any) -> Any:
    """Known-ness score ``-min_j s_j`` (higher = more likely a known class) -> ``(N_samples,)``.

    The paper thresholds ``min_j s_j`` from above (large = unknown); the sign is flipped here so
    that CAC follows the course convention shared by every other method.
    """
    s = cac_class_scores(distances)
    return -s.min(dim=1).values if is_tensor(s) else -s.min(axis=1)


def closed_set_accuracy(predictions: Any, labels: Any) -> float:
    """Percentage of ``predictions`` equal to ``labels`` (both ``(N,)`` integer arrays)."""
    check_array(predictions, "predictions", ndim=1)
    check_labels(labels, "labels", predictions.shape[0])
    return float((to_numpy(predictions, "predictions") == to_numpy(labels, "labels")).mean() * 100)


def seed_threshold(raw_threshold: float = SEED_THRESHOLD) -> float:
    """The original notebook's fixed rule on the course's score scale.

    "Unknown when ``min_j s_j > raw_threshold``" is "known when ``score >= -raw_threshold``"
    for ``score = -min_j s_j``; returns ``-raw_threshold``.
    """
    return -float(raw_threshold)


def threshold_at_tpr(scores_known: Any, tpr: float = DEFAULT_TPR) -> float:
    """Score threshold that accepts a fraction ``tpr`` of the given known samples.

    Returns the largest ``t`` with ``mean(scores_known >= t) >= tpr`` (the ``(1 - tpr)``
    lower quantile). Compute it on held-out *known* data (never on unknowns, which a deployed
    system does not have); on other known data it then accepts about ``tpr`` of them.
    """
    check_array(scores_known, "scores_known", ndim=1)
    if not 0 < tpr <= 1:
        raise ValueError(f"tpr must be in (0, 1], got {tpr}")
    s = np.sort(to_numpy(scores_known, "scores_known").astype(np.float64))
    k = int(math.floor((1 - tpr) * len(s) + 1e-9))  # at most k samples may fall below t
    return float(s[min(k, len(s) - 1)])


def known_unknown_confusion(scores_known: Any, scores_unknown: Any, threshold: float
                            ) -> tuple[np.ndarray, float, float]:
    """Known/unknown decision at ``threshold`` and its 2 x 2 confusion matrix.

    A sample is accepted as *known* when its score (higher = more known, e.g.
    :func:`cac_unknown_scores`) is ``>= threshold`` and rejected as *unknown* otherwise.

    Returns
    -------
    matrix: int64 ``(2, 2)``: ``[[known->known, known->unknown], [unknown->known,
        unknown->unknown]]`` (rows: truth, columns: decision).
    known_accepted: percentage of known samples accepted (``matrix[0, 0] / n_known``).
    unknown_rejected: percentage of unknown samples rejected (``matrix[1, 1] / n_unknown``).
    """
    check_array(scores_known, "scores_known", ndim=1)
    check_array(scores_unknown, "scores_unknown", ndim=1)
    if not np.isfinite(threshold):
        raise ValueError(f"threshold must be a finite number, got {threshold}")
    k = to_numpy(scores_known, "scores_known") >= threshold
    u = to_numpy(scores_unknown, "scores_unknown") >= threshold
    matrix = np.array([[k.sum(), (~k).sum()], [u.sum(), (~u).sum()]], dtype=np.int64)
    return matrix, float(k.mean() * 100), float((~u).mean() * 100)


# --------------------------------------------------------------------------------------------
# Batching and training
# --------------------------------------------------------------------------------------------
class TensorBatches:
    """Mini-batches ``(x, y)`` of in-memory tensors, reshuffled on every pass.

    Faster than a ``DataLoader`` for data already in memory. Shuffling draws from torch's
    global generator, so ``torch.manual_seed`` (done by the training functions) fixes it.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 128,
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


def _fit(model: nn.Module, loader: Iterable, epochs: int, lr: float, seed: int, loss_fn,
         desc: str, progress: bool) -> list[float]:
    if epochs < 1:
        raise ValueError(f"epochs must be at least 1, got {epochs}")
    torch.manual_seed(seed)
    np.random.seed(seed)
    params = [p for p in model.parameters() if p.requires_grad]
    device = params[0].device if params else torch.device("cpu")
    optimiser = torch.optim.Adam(params, lr=lr)
    history = []
    model.train()
    for epoch in range(epochs):
        total, count = 0.0, 0
        bar = tqdm(loader, desc=f"{desc} epoch {epoch + 1}/{epochs}", disable=not progress,
                   leave=False)
        for x, y in bar:
            x, y = x.to(device), y.to(device)
            optimiser.zero_grad()
            loss = loss_fn(model(x), y)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"{desc}: the loss became {loss.item()} in epoch "
                                         f"{epoch + 1}; lower the learning rate")
            loss.backward()
            optimiser.step()
            total += loss.item() * len(y)
            count += len(y)
            bar.set_postfix(loss=f"{total / count:.4f}")
        history.append(total / max(count, 1))
        if progress:
            print(f"{desc} epoch {epoch + 1}/{epochs}: mean loss {history[-1]:.4f}")
    model.eval()
    return history


def train_classifier(cnn: nn.Module, loader: Iterable, epochs: int = 2, lr: float = 1e-3,
                     seed: int = 0, progress: bool = True) -> list[float]:
    """Train ``cnn`` with cross-entropy and Adam; returns the mean loss of every epoch.

    ``loader`` yields ``(images (B, C, 28, 28), labels (B,))`` batches, e.g.
    :class:`TensorBatches`. ``seed`` fixes initial shuffling and dropout (CPU: bit-for-bit
    reproducible). The model is left in eval mode.
    """
    return _fit(cnn, loader, epochs, lr, seed, F.cross_entropy, "cross-entropy", progress)


def train_cac(model: CACModel, loader: Iterable, epochs: int = 2, lr: float = 1e-3,
              seed: int = 0, lambda_: float = DEFAULT_LAMBDA, loss_fn=None,
              progress: bool = True) -> list[float]:
    """Train a :class:`CACModel` with the CAC loss and Adam; returns per-epoch mean losses.

    ``loss_fn(distances, targets, lambda_)`` defaults to :func:`cac_loss` (a notebook can pass
    its own implementation). The anchors stay fixed. The model is left in eval mode.
    """
    fn = loss_fn or cac_loss
    return _fit(model, loader, epochs, lr, seed, lambda d, y: fn(d, y, lambda_), "CAC", progress)


@torch.no_grad()
def batched_forward(module: nn.Module, images: torch.Tensor, batch_size: int = 1000,
                    progress: bool = False) -> torch.Tensor:
    """``module(images)`` in eval mode, batch by batch (on the module's device), on the CPU."""
    module.eval()
    device = next(module.parameters()).device
    outs = [module(images[i:i + batch_size].to(device)).cpu()
            for i in tqdm(range(0, len(images), batch_size), disable=not progress, leave=False)]
    return torch.cat(outs)


def max_softmax(logits: Any) -> Any:
    """Maximum softmax probability of ``logits`` (N, C) -> ``(N,)``; higher = more known."""
    check_array(logits, "logits", ndim=2)
    t = to_tensor(logits, "logits", torch.float64)
    return like(torch.softmax(t, dim=1).max(dim=1).values.to(
        logits.dtype if is_tensor(logits) else torch.float64), logits)


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------
@dataclass
class CACData:
    """In-memory images of the open-set experiment, normalised and shaped ``(N, 1, 28, 28)``.

    ``train_*``: known classes for training; ``val_*``: known classes held out from the
    training split (for choosing the threshold); ``test_*``: known classes of the test split;
    ``unknown_*``: unknown test images (labels are the original class ids, for display).
    Known labels are ``0..len(known_names)-1``.
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
    extra: dict = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.known_names)

    def denormalise(self, x: torch.Tensor) -> torch.Tensor:
        """Back to ``[0, 1]`` pixel values for display."""
        return (x * self.std + self.mean).clamp(0, 1)


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


def cac_datasets(profile: str | Profile | None = None, val_fraction: float = 0.1,
                 seed: int = 0) -> CACData:
    """Images of the open-set experiment of ``profile`` (see the module docstring).

    * ``miniclip``: Fashion-MNIST; known = ``profile.cac_known_classes`` (labels remapped to
      ``0..5``), unknown = ``profile.cac_unknown_classes`` from the test split.
    * ``clip``: MNIST train/test (ten known digits) and ``profile.cac_unknown_limit`` random
      (seeded) CIFAR-10 test images turned grayscale and resized to 28 x 28. Needs the
      torchvision downloads; offline it raises :class:`ood_utils.data.DataMissingError`.

    A seeded ``val_fraction`` of the known training images is held out as ``val_*``. All
    images are normalised with the mean and standard deviation of the known training pixels.
    """
    from . import data

    p = get_profile(profile)
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if p.cac_known == "FashionMNIST":
        known, unknown = p.cac_known_classes, p.cac_unknown_classes
        tr_img, tr_lab = data.load_fashion_mnist("train")
        te_img, te_lab = data.load_fashion_mnist("test")
        keep_tr, keep_te = data.select_classes(tr_lab, known), data.select_classes(te_lab, known)
        keep_un = data.select_classes(te_lab, unknown)
        train_x, train_y = _to_gray28(tr_img[keep_tr]), data.remap_labels(tr_lab[keep_tr], known)
        test_x, test_y = _to_gray28(te_img[keep_te]), data.remap_labels(te_lab[keep_te], known)
        unknown_x, unknown_y = _to_gray28(te_img[keep_un]), te_lab[keep_un]
        names = data.all_class_names("FashionMNIST")
        known_names = tuple(names[c] for c in known)
        unknown_names = tuple(names[c] for c in unknown)
        source = "Fashion-MNIST, known vs unknown classes"
    elif p.cac_known == "MNIST" and p.cac_unknown == "CIFAR10":
        mnist_train = data.torchvision_dataset("MNIST", True)
        mnist_test = data.torchvision_dataset("MNIST", False)
        cifar = data.torchvision_dataset("CIFAR10", False)
        train_x, train_y = _to_gray28(mnist_train.data.numpy()), mnist_train.targets.numpy()
        test_x, test_y = _to_gray28(mnist_test.data.numpy()), mnist_test.targets.numpy()
        limit = p.cac_unknown_limit or len(cifar.data)
        pick = np.sort(np.random.default_rng(seed).choice(len(cifar.data), size=limit,
                                                          replace=False))
        unknown_x = _to_gray28(np.asarray(cifar.data)[pick])
        unknown_y = np.asarray(cifar.targets, dtype=np.int64)[pick]
        known_names = MNIST_CLASSES
        unknown_names = data.all_class_names("CIFAR10")
        source = f"MNIST known vs {limit} grayscale CIFAR-10 test images"
    else:
        raise ValueError(f"profile {p.name} has no open-set data (cac_known={p.cac_known!r})")

    train_y = torch.as_tensor(np.asarray(train_y, dtype=np.int64))
    train_x, train_y, val_x, val_y = _split_val(train_x, train_y, val_fraction, seed)
    mean, std = float(train_x.mean()), float(train_x.std())
    norm = lambda x: (x - mean) / std  # noqa: E731
    return CACData(
        train_x=norm(train_x), train_y=train_y, val_x=norm(val_x), val_y=val_y,
        test_x=norm(test_x), test_y=torch.as_tensor(np.asarray(test_y, dtype=np.int64)),
        unknown_x=norm(unknown_x), unknown_y=torch.as_tensor(np.asarray(unknown_y, np.int64)),
        known_names=tuple(known_names), unknown_names=tuple(unknown_names),
        mean=mean, std=std, source=source)


def balanced_subset(labels: torch.Tensor, per_class: int, seed: int = 0) -> torch.Tensor:
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
# The notebook's pipeline: a cached baseline, then CAC on the baseline's convolutional features
# --------------------------------------------------------------------------------------------
#: Settings of the notebook's baseline (also the cache key). ``per_class=None`` uses every
#: known training image.
BASELINE_SETTINGS = {
    "miniclip": {"per_class": 2000, "epochs": 2, "lr": 1e-3, "batch_size": 128},
    "clip": {"per_class": None, "epochs": 5, "lr": 1e-3, "batch_size": 128},
}
#: Settings of the CAC stage (dense layers + anchor layer, on frozen convolutional features).
CAC_SETTINGS = {"epochs": 10, "lr": 3e-3, "batch_size": 256, "alpha": DEFAULT_ALPHA,
                "lambda_": DEFAULT_LAMBDA}


def baseline_features(data: CACData, seed: int = 0, profile: str | Profile | None = None,
                      settings: dict | None = None, progress: bool = True,
                      device: str | torch.device = "cpu") -> dict[str, Any]:
    """Train (or load from the cache) the cross-entropy baseline and its convolutional features.

    A :class:`SmallCNN` is trained with :func:`train_classifier` on a seeded, class-balanced
    subset of ``data.train_*`` (``settings["per_class"]`` images per class) and then run once
    over every split. The result is cached with :func:`ood_utils.features.cached` under
    ``cac_baseline_seed<seed>``, keyed by the settings, so a second run takes a second.
    ``device`` only decides where the training runs (CPU results are reproducible bit for bit;
    GPU results may differ slightly); everything returned is on the CPU.

    Returns a dict of tensors: ``state`` (the CNN's ``state_dict``), ``train_feats`` /
    ``train_y`` (the subset actually used), ``val_feats``, ``test_feats``, ``unknown_feats``
    (float32 ``(n, 576)`` outputs of ``cnn.features``) and ``val_logits``, ``test_logits``,
    ``unknown_logits`` (``(n, num_classes)``).
    """
    from .features import cached

    p = get_profile(profile)
    cfg = dict(BASELINE_SETTINGS.get(p.name, BASELINE_SETTINGS["miniclip"]), **(settings or {}))

    def compute() -> dict:
        if cfg["per_class"] is None:
            idx = torch.arange(len(data.train_y))
        else:
            idx = balanced_subset(data.train_y, cfg["per_class"], seed=0)
        x, y = data.train_x[idx], data.train_y[idx]
        torch.manual_seed(seed)
        cnn = SmallCNN(data.num_classes).to(device)
        train_classifier(cnn, TensorBatches(x, y, cfg["batch_size"]), cfg["epochs"], cfg["lr"],
                         seed, progress=progress)
        out: dict[str, Any] = {"state": {k: v.cpu().clone() for k, v in cnn.state_dict().items()},
                               "train_y": y.clone()}
        splits = {"train": x, "val": data.val_x, "test": data.test_x, "unknown": data.unknown_x}
        for name, images in tqdm(splits.items(), desc="baseline features", disable=not progress,
                                 leave=False):
            feats = batched_forward(cnn.features, images)
            out[f"{name}_feats"] = feats
            if name != "train":
                out[f"{name}_logits"] = batched_forward(cnn.classifier, feats)
        return out

    meta = {"kind": "cac baseline", "version": 1, "seed": seed, "source": data.source,
            "n_train": len(data.train_y), "n_val": len(data.val_y), **cfg}
    return cached(f"cac_baseline_seed{seed}", compute, p, meta)


def load_baseline(blob: dict, num_classes: int) -> SmallCNN:
    """The baseline :class:`SmallCNN` (eval mode) from :func:`baseline_features`'s ``state``."""
    cnn = SmallCNN(num_classes)
    cnn.load_state_dict(blob["state"])
    return cnn.eval()


def cac_on_features(blob: dict, num_classes: int, seed: int = 0, loss_fn=None,
                    settings: dict | None = None, progress: bool = True
                    ) -> tuple[CACModel, list[float]]:
    """CAC training of the baseline's dense layers plus the anchor layer, on cached features.

    The convolutional part of the baseline stays fixed (its outputs are ``blob["*_feats"]``);
    a copy of its dense classifier, followed by the ``N x N`` layer and the anchors, is trained
    with :func:`train_cac` (``loss_fn`` defaults to :func:`cac_loss`). Returns the
    :class:`CACModel` (whose ``cnn`` is the dense head: feed it features, not images) and the
    per-epoch losses.

    The layers are small, so this runs on one CPU thread: faster than several threads on a
    busy machine, and the result does not depend on the machine's thread count.
    """
    cfg = dict(CAC_SETTINGS, **(settings or {}))
    head = load_baseline(blob, num_classes).classifier
    torch.manual_seed(seed)
    model = CACModel(head, num_classes, alpha=cfg["alpha"])
    loader = TensorBatches(blob["train_feats"], blob["train_y"], cfg["batch_size"])
    from .scores import one_cpu_thread

    with one_cpu_thread():
        history = train_cac(model, loader, cfg["epochs"], cfg["lr"], seed, cfg["lambda_"],
                            loss_fn=loss_fn, progress=progress)
    return model, history


def open_set_summary(dist_val: Any, dist_test: Any, test_labels: Any, dist_unknown: Any,
                     tpr: float = DEFAULT_TPR, raw_threshold: float = SEED_THRESHOLD) -> dict:
    """The numbers the notebook reports for a trained CAC model.

    Parameters: distances ``(n, N)`` of held-out known (``dist_val``), known test and unknown
    test images, and the known test labels.

    Returns a dict: ``accuracy`` (closed-set, percent), ``auroc`` (known vs unknown, percent,
    via :func:`ood_utils.metrics.auroc`), ``threshold_tpr`` (chosen on ``dist_val`` to accept
    ``tpr`` of it) with ``known_accepted_tpr``/``unknown_rejected_tpr``/``matrix_tpr`` on the
    test sets, and the same for the original notebook's fixed rule (``*_seed``).
    """
    from .metrics import auroc

    s_val, s_known, s_unknown = (cac_unknown_scores(to_tensor(d, n)) for d, n in
                                 ((dist_val, "dist_val"), (dist_test, "dist_test"),
                                  (dist_unknown, "dist_unknown")))
    out = {
        "accuracy": closed_set_accuracy(cac_predict(to_tensor(dist_test, "dist_test")),
                                        to_tensor(test_labels, "test_labels")),
        "auroc": auroc(s_known, s_unknown),
    }
    for tag, thr in (("tpr", threshold_at_tpr(s_val, tpr)), ("seed", seed_threshold(raw_threshold))):
        matrix, known_ok, unknown_ok = known_unknown_confusion(s_known, s_unknown, thr)
        out.update({f"threshold_{tag}": thr, f"matrix_{tag}": matrix,
                    f"known_accepted_{tag}": known_ok, f"unknown_rejected_{tag}": unknown_ok})
    return out


#: The scalar numbers of :func:`open_set_summary` (percent) that the results file keeps.
SUMMARY_NUMBERS = ("accuracy", "known_accepted_tpr", "unknown_rejected_tpr",
                   "known_accepted_seed", "unknown_rejected_seed")


def summary_numbers(summary: dict) -> dict[str, float]:
    """``{name: value}`` of the :data:`SUMMARY_NUMBERS` in :func:`open_set_summary`'s dict.

    Passed as ``extra`` to :func:`ood_utils.results.record`, so that the course's results
    table can compare them with the answer key's further targets for ``cac``.
    """
    missing = [k for k in SUMMARY_NUMBERS if k not in summary]
    if missing:
        raise ValueError(f"summary lacks {missing}; pass the dict of open_set_summary")
    return {k: float(summary[k]) for k in SUMMARY_NUMBERS}
