"""Pseudo-label probing (Adaloglou et al. 2024, PLP): a linear probe trained on zero-shot
pseudo-labels, scored with the MSP of its logits."""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from .progress import progress_bar as tqdm  # a widget in JupyterLab, stdout lines in other kernels

from ._arrays import check_array, check_labels, check_same_dim, to_tensor
from ._common import _back, _device_of, _feature_tensor, _positive_int


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


