"""Self-checks of notebook 07: CAC anchors, distances, loss, training, open-set rule and sweep."""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch

from ..registry import compares_with
from ...course.profiles import get_profile
from ..expected import get_expected
from ._common import (_as_array, _close, _compare, _fn_name, _gen, _hide_check_frames, _passed,
                      _require_callable, local_runner)
from .results import check_auroc

# --- CAC (open-set recognition) ---

def _cac_compare(*args, **kwargs) -> None:
    """:func:`_compare`, raising from a frame IPython hides (the traceback ends at the check)."""
    __tracebackhide__ = True
    try:
        _compare(*args, **kwargs)
        return
    except AssertionError as err:
        message = str(err)
    raise AssertionError(message)


def _cac_array(result: Any, name: str, what: str) -> np.ndarray:
    """:func:`_as_array`, raising from a frame IPython hides."""
    __tracebackhide__ = True
    try:
        return _as_array(result, name, what)
    except AssertionError as err:
        message = str(err)
    raise AssertionError(message)


def _tensor_result(result: Any, name: str, what: str, case: str) -> torch.Tensor:
    """The student's result as a tensor, or an AssertionError saying what came back."""
    __tracebackhide__ = True
    if result is None:
        raise AssertionError(f"{name} returned None: complete the code between "
                             "'### START CODE HERE ###' and '### END CODE HERE ###' so that it "
                             f"returns {what}")
    if isinstance(result, np.ndarray):
        return torch.from_numpy(result)
    if not isinstance(result, torch.Tensor):  # (what the grader could not read says its type)
        kind = getattr(result, "type_name", type(result).__name__)
        raise AssertionError(f"{name} returned a {kind} ({case}); expected a "
                             f"torch tensor ({what})")
    return result


@compares_with('methods.cac:class_anchors')
def check_cac_anchors(student_fn: Callable) -> None:
    """Self-check of ``class_anchors_exercise(num_classes, alpha=10.0)`` (notebook 07).

    The anchors are the rows of ``alpha * I`` (anchor ``j`` is ``alpha * e_j``); compared with
    :func:`ood_utils.methods.cac.class_anchors` for several sizes and magnitudes.
    """
    __tracebackhide__ = True
    from ...methods.cac import class_anchors

    _require_callable(student_fn)
    name = _fn_name(student_fn)
    for n, alpha in ((3, 10.0), (6, 2.5), (10, 10.0), (2, 1.0)):
        case = f"num_classes={n}, alpha={alpha:g}"
        got = _cac_array(_tensor_result(student_fn(n, alpha=alpha), name,
                                       "an (N, N) tensor of anchors", case),
                        name, "an (N, N) tensor of anchors")
        want = class_anchors(n, alpha=alpha).numpy()
        hints = {"the anchors are not scaled: multiply the one-hot vectors by alpha":
                     np.eye(n) if alpha != 1 else None,
                 "every entry is alpha: anchor j has alpha at position j and zeros elsewhere":
                     np.full((n, n), alpha) if n > 1 else None,
                 "alpha is hard-coded to 10: scale by the function's `alpha` argument":
                     10.0 * np.eye(n) if alpha != 10 else None}
        if got.shape == (n,):
            raise AssertionError(f"{name} returned a vector of shape ({n},) ({case}); return "
                                 f"the ({n}, {n}) matrix whose row j is the anchor alpha * e_j")
        _cac_compare(got, want, name, case, "row j is the anchor of class j, alpha * e_j", hints)
    _passed(name)


@compares_with('methods.cac:anchor_distances', 'methods.cac:class_anchors')
def check_anchor_distances(student_fn: Callable) -> None:
    """Self-check of ``anchor_distances_exercise(points, anchors)`` (notebook 07).

    Compares with :func:`ood_utils.methods.cac.anchor_distances` (Euclidean, not squared) on random
    points, with the course's anchors and with arbitrary anchors (which reveal a swapped axis),
    and checks that gradients flow back to the points.
    """
    __tracebackhide__ = True
    from ...methods.cac import anchor_distances, class_anchors

    _require_callable(student_fn)
    name = _fn_name(student_fn)
    cases = [(7, 3, "course anchors 10 * e_j"), (5, 6, "course anchors 10 * e_j"),
             (4, 4, "arbitrary anchors"), (9, 2, "arbitrary anchors")]
    for b, n, kind in cases:
        g = _gen(300 + 10 * b + n)
        points = (torch.randn(b, n, generator=g, dtype=torch.float64) * 6)
        anchors = (class_anchors(n, alpha=10.0) if kind.startswith("course")
                   else torch.randn(n, n, generator=g, dtype=torch.float64) * 5)
        case = f"{b} points, {n} classes, {kind}"
        p_in = points.clone().requires_grad_(True)
        raw = _tensor_result(student_fn(p_in, anchors.clone()), name,
                             "a (B, N) tensor of distances", case)
        got = _cac_array(raw, name, "a (B, N) tensor of distances")
        want = anchor_distances(points, anchors).numpy()
        diff = points.numpy()[:, None, :] - anchors.numpy()[None]
        hints = {"these are squared distances: take the square root (the notebook uses the "
                 "Euclidean distance ||z - c_j||, as the paper)": want ** 2,
                 "these are L1 distances (sum of absolute differences): use the Euclidean "
                 "norm": np.abs(diff).sum(-1),
                 "rows and columns are swapped: entry [i, j] is the distance of point i to "
                 "anchor j": want.T if b == n else None}
        _cac_compare(got, want, name, case, "entry [i, j] = ||points[i] - anchors[j]||", hints)
        if not raw.requires_grad:
            raise AssertionError(f"{name} returned distances without a gradient ({case}); use "
                                 "torch operations on `points` (no numpy, .item() or "
                                 "torch.no_grad()) so that training can back-propagate")
        raw.sum().backward()
        if p_in.grad is None or not torch.isfinite(p_in.grad).all():
            raise AssertionError(f"{name}: the gradient with respect to the points is missing or "
                                 f"not finite ({case})")
    _passed(name)


@compares_with('methods.cac:cac_loss')
def check_cac_loss(student_fn: Callable) -> None:
    """Self-check of ``cac_loss_exercise(distances, targets, lambda_=0.1)`` (notebook 07).

    Compares with :func:`ood_utils.methods.cac.cac_loss` on random float32 and float64 distances (up
    to 60, the range training reaches and more), checks that the result is a scalar tensor that
    gradients flow through, and names common mistakes when the value matches one of them.
    """
    __tracebackhide__ = True
    from ...methods.cac import cac_loss

    _require_callable(student_fn)
    name = _fn_name(student_fn)
    cases = [(8, 6, 0.1, 1.0, torch.float32), (5, 3, 0.0, 1.0, torch.float64),
             (16, 10, 0.5, 1.0, torch.float32), (6, 4, 0.1, 4.0, torch.float64),
             (12, 6, 0.1, 4.0, torch.float32)]
    for b, n, lam, scale, dtype in cases:
        g = _gen(70 + b)
        dist = (torch.rand(b, n, generator=g) * 15 * scale).to(dtype)
        y = torch.randint(0, n, (b,), generator=g)
        case = (f"{b} samples, {n} classes, lambda_={lam:g}, {str(dtype)[6:]} distances up to "
                f"{15 * scale:g}")
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
            "the tuplet term log(1 + sum_j exp(d_y - d_j)) is missing":
                np.array([lam * d_y.mean()]),
            "the anchor term is not multiplied by lambda_":
                np.array([(tuplet + d_y).mean()]) if lam != 1 else None,
            "the '1 +' inside the log is missing (or the sum skips j = y incorrectly)":
                np.array([(no_one + lam * d_y).mean()]),
            "lambda_ is hard-coded to 0.1: use the function's `lambda_` argument":
                np.array([(tuplet + 0.1 * d_y).mean()]) if lam != 0.1 else None,
            "the anchor term is d_y squared: the paper's anchor term is the distance d_y "
            "itself (lambda_ * d_y)":
                np.array([(tuplet + lam * d_y ** 2).mean()]) if lam != 0 else None,
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
        _cac_compare(np.array([value]), np.array([want]), name, case, "a single number", hints,
                 rtol=1e-5, atol=1e-5)
        got.backward()
        if d_in.grad is None or not torch.isfinite(d_in.grad).all():
            raise AssertionError(f"{name}: the gradient with respect to the distances is "
                                 f"missing or not finite ({case})")
    _passed(name)


def _open_set_cases():
    """Random distance matrices with thresholds that put samples on both sides."""
    from ...methods.cac import cac_class_scores

    out = []
    for b, n, seed in ((12, 4, 0), (30, 6, 1), (9, 3, 2)):
        g = _gen(500 + seed)
        d = torch.rand(b, n, generator=g, dtype=torch.float64) * 12
        d[: b // 2] = d[: b // 2] * 0.3  # some samples close to an anchor
        min_s = cac_class_scores(d).min(dim=1).values.sort().values
        threshold = float(min_s[b // 2 - 1] + min_s[b // 2]) / 2  # between two samples
        out.append((d, n, threshold))
    d, n, threshold = out[0]
    tie = float(cac_class_scores(d).min(dim=1).values[0])  # a sample exactly at the threshold
    out.append((d, n, tie))
    return out


@compares_with('methods.cac:cac_class_scores', 'methods.cac:open_set_predict')
def check_open_set_predict(student_fn: Callable) -> None:
    """Self-check of ``open_set_predict_exercise(distances, threshold)`` (notebook 07).

    The prediction is ``argmin_j s_j`` with ``s_j = d_j (1 - softmin(d)_j)``, replaced by ``N``
    (unknown) when ``min_j s_j > threshold``; compared with
    :func:`ood_utils.methods.cac.open_set_predict` with thresholds that put samples on both sides
    (and one sample exactly at the threshold, which stays known).
    """
    __tracebackhide__ = True
    from ...methods.cac import cac_class_scores, open_set_predict

    _require_callable(student_fn)
    name = _fn_name(student_fn)
    for d, n, threshold in _open_set_cases():
        case = f"{d.shape[0]} samples, {n} classes, threshold {threshold:.4g}"
        got = student_fn(d.clone(), threshold)
        got = _cac_array(_tensor_result(got, name, "one class id per sample", case), name,
                        "one class id per sample")
        want = open_set_predict(d, threshold=threshold).numpy().astype(np.float64)
        s = cac_class_scores(d).numpy()
        pred, min_s = s.argmin(1), s.min(1)
        dd = d.numpy()
        soft = np.exp(-dd) / np.exp(-dd).sum(1, keepdims=True)
        s_max = dd * (1 - np.exp(dd) / np.exp(dd).sum(1, keepdims=True))
        hints = {
            "the threshold is applied on the wrong side: a sample is UNKNOWN when "
            "min_j s_j > threshold (far from every anchor)": np.where(min_s <= threshold, n, pred),
            "'>=' instead of '>': a sample exactly at the threshold stays known":
                np.where(min_s >= threshold, n, pred),
            "unknown samples must get the class id N (= number of known classes), not -1":
                np.where(min_s > threshold, -1, pred),
            "the threshold is applied to min_j d_j instead of min_j s_j":
                np.where(dd.min(1) > threshold, n, pred),
            "softmax instead of softmin: s_j = d_j * (1 - softmin(d)_j) with "
            "softmin(d) = softmax(-d)": np.where(s_max.min(1) > threshold, n, s_max.argmin(1)),
            "the threshold is missing: every sample gets a known class": pred,
            "the scores are d_j * softmin(d)_j: use (1 - softmin(d)_j)":
                np.where((dd * soft).min(1) > threshold, n, (dd * soft).argmin(1)),
        }
        _cac_compare(got, want, name, case, "one class id per sample (0..N-1, or N for unknown)",
                 hints, rtol=0, atol=0)
    _passed(name)


@compares_with('methods.cac:open_set_confusion')
def check_open_set_confusion(student_fn: Callable) -> None:
    """Self-check of ``open_set_confusion_exercise(labels, predictions, num_classes)`` (07).

    The ``(N + 1) x (N + 1)`` matrix counts samples of true class ``t`` (row) predicted as
    ``p`` (column), the unknown class ``N`` last; compared with
    :func:`ood_utils.methods.cac.open_set_confusion` on random labels with every class present.
    """
    __tracebackhide__ = True
    from ...methods.cac import open_set_confusion

    _require_callable(student_fn)
    name = _fn_name(student_fn)
    for n, size, seed in ((3, 40, 0), (6, 200, 1), (2, 25, 2)):
        g = np.random.default_rng(600 + seed)
        labels = g.integers(0, n + 1, size)
        pred = np.where(g.random(size) < 0.6, labels, g.integers(0, n + 1, size))
        labels[: n + 1] = np.arange(n + 1)
        case = f"{size} samples, {n} known classes + unknown"
        got = _cac_array(_tensor_result(student_fn(torch.from_numpy(labels),
                                                  torch.from_numpy(pred), n),
                                       name, "an (N+1, N+1) matrix of counts", case),
                        name, "an (N+1, N+1) matrix of counts")
        want = open_set_confusion(labels, pred, n).astype(np.float64)
        if got.shape == (n, n):
            raise AssertionError(f"{name} returned shape {got.shape} ({case}); the open-set "
                                 f"matrix has one more row and column, for the unknown class N "
                                 f"(e.g. labels=range(N + 1) in sklearn's confusion_matrix)")
        roll = np.roll(np.roll(want, 1, axis=0), 1, axis=1)
        hints = {"rows and columns are swapped: rows are the TRUE classes, columns the "
                 "predictions": want.T,
                 "the unknown class must be the LAST row and column (index N), not the first":
                     roll,
                 "the unknown row and column are misplaced: keep classes in the order 0..N-1, "
                 "then unknown (N)": roll.T}
        _cac_compare(got, want, name, case, "entry [t, p] counts true class t predicted as p",
                 hints, rtol=0, atol=0)
    _passed(name)


@compares_with()
def check_cac_results(summary: dict, profile=None) -> None:
    """Graded check of notebook 07: compare its open-set numbers with the answer key.

    ``summary`` is the dict of :func:`ood_utils.methods.cac.open_set_summary`. The answer key's ``cac``
    entry gives the AUROC target (``value``/``tol``, checked with :func:`check_auroc`) and, in
    ``extra``, ``{key: (value, tol)}`` targets for other entries of ``summary`` (closed-set
    accuracy, recognised rates). Prints one line per number; raises ``AssertionError`` naming
    the first number outside its tolerance.
    """
    __tracebackhide__ = True
    if not isinstance(summary, dict):
        raise TypeError("pass the dict returned by ood_utils.methods.cac.open_set_summary")
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


# --- CAC: the training loop and the threshold sweep (notebook 07) ---

def _hidden_assert(message: str) -> None:
    """Raise the check's AssertionError from a frame IPython hides (``__tracebackhide__``)."""
    __tracebackhide__ = True
    raise AssertionError(message)


def _cac_train_reference_variant(model, loader, epochs, lr, lambda_, *, zero_grad=True,
                                 train_mode=True, optimiser_per_epoch=False, optimiser="adam",
                                 params="all", step=True, loss="cac", schedule="batch"):
    """The reference training loop, or one of its typical mistakes (see check_cac_training)."""
    from ...methods.cac import cac_loss

    def make():
        chosen = {"all": model.parameters(), "layer": model.cnn[-1].parameters(),
                  "trunk": model.cnn[:-1].parameters()}[params]
        if optimiser == "sgd":
            return torch.optim.SGD(chosen, lr=lr)
        return torch.optim.Adam(chosen, lr=lr)

    total_steps = epochs * len(loader)
    done = 0

    def set_lr():  # lr * (1 - k / K) before update k (batch) or before epoch k (epoch)
        k = done if schedule == "batch" else done * len(loader)
        for group in opt.param_groups:
            group["lr"] = lr * (1 - k / total_steps)

    opt = make()
    history = []
    if train_mode:
        model.train()
    for epoch in range(epochs):
        if optimiser_per_epoch:
            opt = make()
        if schedule == "epoch":
            done = epoch
            set_lr()
        total, count, losses = 0.0, 0, []
        for x, y in loader:
            if zero_grad:
                opt.zero_grad()
            d = model(x)
            value = (cac_loss(d, y, lambda_=lambda_) if loss == "cac"
                     else torch.nn.functional.cross_entropy(d, y))
            value.backward()
            if schedule == "batch":
                set_lr()
            if step:
                opt.step()
            if schedule == "batch":
                done += 1
            total += value.item() * len(y)
            count += len(y)
            losses.append(value.item())
        history.append((total / count, float(np.mean(losses)), losses[-1], total))
    model.eval()
    return history


def _cac_toy_data(seed: int) -> dict:
    """Three separable classes of 4 x 4 images, anchors, and the initial weights of a tiny
    CAC network (float64): the inputs of :func:`_probe_cac_training`."""
    g = _gen(900 + seed)
    x = torch.randn(45, 1, 4, 4, generator=g, dtype=torch.float64)
    y = torch.arange(45) % 3
    x[:, 0, 0, :] += 2.0 * (y[:, None] == 0)
    x[:, 0, 3, :] += 2.0 * (y[:, None] == 1)
    # a check of the loop only: its own anchors and distance (L1), not the exercises'
    anchors = torch.randn(3, 3, generator=g, dtype=torch.float64) * 3
    init = [torch.randn(8, 16, generator=g, dtype=torch.float64) * 0.25,
            torch.randn(8, generator=g, dtype=torch.float64) * 0.1,
            torch.randn(3, 8, generator=g, dtype=torch.float64) * 0.35,
            torch.randn(3, generator=g, dtype=torch.float64) * 0.1]
    return {"x": x, "y": y, "anchors": anchors, "init": init}


def _probe_cac_training(ns, name, x, y, anchors, init, epochs, lr, lambda_, seed):
    """Kernel side of :func:`check_cac_training` (self-contained: the grader sends its source).

    Builds the tiny CAC network (flatten, 16 -> 8, ReLU, dropout 0.3, 8 -> 3; L1 distances to
    ``anchors``) with the weights ``init``, handed over in evaluation mode, and runs
    ``ns[name](model, loader, epochs, lr, lambda_)`` after ``torch.manual_seed(seed)``.
    Returns plain values: the weights before and after (flattened), the returned losses as
    numbers (or ``None`` and what came back), and whether the model was left in training mode.
    """
    import torch

    from ood_utils.course.cac_experiment import TensorBatches
    from ood_utils.methods.cac import CACModel

    def l1(points, a):
        return (points.unsqueeze(1) - a.unsqueeze(0)).abs().sum(-1)

    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 8), torch.nn.ReLU(),
                              torch.nn.Dropout(0.3), torch.nn.Linear(8, 3))
    model = CACModel(net, 3, anchors=anchors, distance_fn=l1, extra_layer=False).double()
    with torch.no_grad():
        for p, v in zip(model.parameters(), init):
            p.copy_(v)
    model.eval()  # starts in evaluation mode: the loop must switch

    def flat():
        return torch.cat([p.detach().flatten() for p in model.parameters()]).double()

    start = flat()
    torch.manual_seed(seed)
    history = ns[name](model, TensorBatches(x, y, batch_size=16), epochs, lr, lambda_)
    out = {"start": start, "trained": flat(), "training": bool(model.training),
           "history": None, "returned": type(history).__name__}
    try:
        out["history"] = [float(v) for v in history]
    except (TypeError, ValueError):
        pass
    return out


@compares_with('course.cac_experiment:TensorBatches', 'methods.cac:CACModel', 'methods.cac:cac_loss')
def check_cac_training(student_fn: Callable) -> None:
    """Self-check of ``train_cac_exercise(model, loader, epochs, lr, lambda_)`` (notebook 07).

    Trains a tiny CAC network (float64, with dropout, handed over in evaluation mode) with the
    student's loop and with the reference loop from the same random state, and compares the
    trained weights, the returned per-epoch losses and the mode the model is left in. When the
    weights differ, the loop is compared with typical mistakes (no ``zero_grad``, no
    ``model.train()``, a new optimiser every epoch, a hard-coded learning rate or lambda, SGD,
    part of the network only, no ``step``, cross-entropy on the distances, a constant learning
    rate or a schedule stepped per epoch) and the message names the one that matches. The
    grader runs the same verdict on what the kernel returns (:func:`_probe_cac_training`).
    """
    __tracebackhide__ = True
    _require_callable(student_fn)
    name = _fn_name(student_fn)
    _judge_cac_training(local_runner({name: student_fn}), name)
    _passed(name)


def _judge_cac_training(run: Callable, name: str) -> None:
    """The verdict of :func:`check_cac_training` from what ``run(_probe_cac_training, ...)``
    returns; the reference loop and its typical mistakes run here through the same probe."""
    __tracebackhide__ = True
    from . import _common

    for seed, epochs, lr, lam in ((0, 3, 0.05, 0.5), (1, 2, 0.02, 0.25)):
        toy = _cac_toy_data(seed)
        torch_seed = 100 + seed + _common.SEED_SHIFT
        inputs = (toy["x"], toy["y"], toy["anchors"], toy["init"])
        case = f"tiny network, {epochs} epochs, lr={lr:g}, lambda_={lam:g}"
        got = run(_probe_cac_training, name, *inputs, epochs, lr, lam, torch_seed)
        if not isinstance(got, dict) or not isinstance(got.get("trained"), torch.Tensor):
            _hidden_assert(f"{name}: the check could not read the trained network ({case})")

        def reference(**kw):
            full = []

            def loop(model, loader, epochs_, lr_, lam_):
                full.extend(_cac_train_reference_variant(
                    model, loader, epochs_, kw.pop("lr_override", lr_),
                    kw.pop("lam_override", lam_), **kw))
                return [h[0] for h in full]
            result = _probe_cac_training({"loop": loop}, "loop", *inputs, epochs, lr, lam,
                                         torch_seed)
            return result["trained"].numpy(), full

        trained = got["trained"].double().numpy()
        want, ref_hist = reference()
        if trained.shape == want.shape and np.array_equal(
                trained, torch.as_tensor(got.get("start")).double().numpy()):
            _hidden_assert(f"{name} did not change any weight ({case}): call "
                           "optimizer.step() after loss.backward() for every batch")
        if trained.shape != want.shape or not _close(trained, want, rtol=1e-6, atol=1e-8):
            mistakes = {
                "optimizer.zero_grad() is missing: gradients of earlier batches add up; clear "
                "them before every backward()": dict(zero_grad=False),
                "model.train() is missing: the model arrives in evaluation mode, so dropout "
                "stays off during training; switch to training mode before the loop":
                    dict(train_mode=False),
                "the optimiser is created anew in every epoch, which resets Adam's running "
                "averages: create it once, before the loop": dict(optimiser_per_epoch=True),
                "the learning rate is hard-coded: pass the `lr` argument to the optimiser":
                    dict(lr_override=1e-3),
                "lambda_ is hard-coded: pass the function's `lambda_` argument to your loss "
                "(cac_loss_exercise(distances, y, lambda_=lambda_))": dict(lam_override=0.1),
                "plain SGD instead of Adam: use torch.optim.Adam(model.parameters(), lr=lr)":
                    dict(optimiser="sgd"),
                "only the output layer is trained: give the optimiser model.parameters() "
                "so that the WHOLE network learns": dict(params="layer"),
                "the output layer is not trained: give the optimiser model.parameters() (the "
                "whole network)": dict(params="trunk"),
                "the loss is cross-entropy on the distances: train with your CAC loss, "
                "cac_loss_exercise(model(x), y, lambda_=lambda_)": dict(loss="ce"),
                "the learning rate stays constant: lower it linearly to 0 over the "
                "epochs * len(loader) batches, one scheduler step after every optimiser step":
                    dict(schedule="none"),
                "the schedule steps once per epoch: step it after every batch, so that the "
                "learning rate falls over epochs * len(loader) steps": dict(schedule="epoch"),
            }
            for hint, kw in mistakes.items():
                variant, _ = reference(**kw)
                if trained.shape == variant.shape and _close(trained, variant, rtol=1e-6,
                                                             atol=1e-8):
                    _hidden_assert(f"{name}: {hint} ({case})")
            _hidden_assert(
                f"{name}: the trained weights differ from the reference loop's ({case}). "
                "Check: one Adam optimiser over model.parameters() with lr, created before the "
                "loop; model.train() first; for every batch zero_grad, distances = model(x), "
                "your cac_loss_exercise(distances, y, lambda_=lambda_), backward, step, "
                "then the learning-rate schedule's step; no "
                "extra random numbers (no torch.manual_seed, no second pass over the loader)")
        if got.get("training"):
            _hidden_assert(f"{name} left the model in training mode ({case}): call "
                           "model.eval() at the end, or dropout stays on when the notebook "
                           "evaluates the network")
        if got.get("returned") == "NoneType":
            _hidden_assert(f"{name} returned None ({case}): return the list of the mean loss "
                           "of every epoch")
        if got.get("history") is None:
            _hidden_assert(f"{name} returned a {got.get('returned')} ({case}); return a "
                           "list of numbers, the mean loss of every epoch (use loss.item())")
        hist = np.asarray(got["history"], dtype=np.float64).reshape(-1)
        if hist.shape != (epochs,):
            _hidden_assert(f"{name} returned {hist.shape[0]} losses for {epochs} epochs "
                           f"({case}): append one number per epoch, after its last batch")
        weighted, plain, last, total = (np.array(v) for v in zip(*ref_hist))
        if not (_close(hist, weighted, 1e-5, 1e-7) or _close(hist, plain, 1e-5, 1e-7)):
            hints = {"these are the losses of the LAST batch of each epoch: average over the "
                     "epoch's batches": last,
                     "these are sums over the epoch: divide by the number of samples (or "
                     "average the batch losses)": total}
            for hint, values in hints.items():
                if _close(hist, values, 1e-5, 1e-7):
                    _hidden_assert(f"{name}: {hint} ({case})")
            _hidden_assert(f"{name}: the returned losses {np.round(hist, 4).tolist()} are not "
                           f"the per-epoch means {np.round(weighted, 4).tolist()} ({case})")


def _threshold_for(s_val: np.ndarray, tpr: float) -> float:
    """The largest score that at least ceil(tpr * n) held-out known scores reach (written out
    here, independently of :func:`ood_utils.methods.metrics.threshold_at_tpr`)."""
    k = max(1, int(np.ceil(tpr * len(s_val) - 1e-9)))
    return float(np.sort(s_val)[::-1][k - 1])


def _sweep_reference(s_val, s_known, s_unknown, tprs):
    acc, rej = [], []
    for t in tprs:
        thr = _threshold_for(s_val, t)
        acc.append(float((s_known >= thr).mean() * 100))
        rej.append(float((s_unknown < thr).mean() * 100))
    return np.array(acc), np.array(rej)


def _sweep_result(result, name: str, n: int, case: str) -> tuple[np.ndarray, np.ndarray]:
    __tracebackhide__ = True
    what = "two sequences (known accepted %, unknown rejected %), one number per tpr"
    if result is None:
        _hidden_assert(f"{name} returned None: complete the code and return {what}")
    if not isinstance(result, (tuple, list)) or len(result) != 2:
        _hidden_assert(f"{name} returned {type(result).__name__}; return {what} ({case})")
    out = []
    for part in result:
        a = np.asarray(part.detach().cpu() if isinstance(part, torch.Tensor) else part,
                       dtype=np.float64).reshape(-1)
        if a.shape != (n,):
            _hidden_assert(f"{name}: each returned sequence must hold one number per tpr "
                           f"({n}), got shape {a.shape} ({case})")
        out.append(a)
    return out[0], out[1]


@compares_with()
def check_threshold_sweep(student_fn: Callable) -> None:
    """Self-check of ``threshold_sweep_exercise(scores_val, scores_known, scores_unknown, tprs)``.

    For every target share ``tpr`` the threshold is chosen on the held-out known scores
    ``scores_val`` (:func:`ood_utils.methods.metrics.threshold_at_tpr`: accepted when
    ``score >= threshold``); the function returns the percentages of known test images
    accepted and of unknown test images rejected. Compared on random scores with ties.
    """
    __tracebackhide__ = True
    _require_callable(student_fn)
    name = _fn_name(student_fn)
    for seed, tprs in ((0, [0.8, 0.9, 0.95, 0.99]), (1, [0.5, 0.95]), (2, [0.6, 0.7, 0.999])):
        g = np.random.default_rng(700 + seed)
        s_val = np.round(g.normal(1.0, 1.0, 200), 1)  # rounded: ties at the threshold
        s_known = np.round(g.normal(1.0, 1.0, 150), 1)
        s_unknown = np.round(g.normal(-0.5, 1.0, 120), 1)
        case = f"tprs={tprs}"
        got = student_fn(torch.from_numpy(s_val), torch.from_numpy(s_known),
                         torch.from_numpy(s_unknown), list(tprs))
        acc, rej = _sweep_result(got, name, len(tprs), case)
        want_acc, want_rej = _sweep_reference(s_val, s_known, s_unknown, tprs)
        on_test = _sweep_reference(s_known, s_known, s_unknown, tprs)
        strict = []
        for t in tprs:
            thr = _threshold_for(s_val, t)
            strict.append((float((s_known > thr).mean() * 100),
                           float((s_unknown <= thr).mean() * 100)))
        strict_acc, strict_rej = (np.array(v) for v in zip(*strict))
        hints = [
            ("the outputs are fractions: return percentages (times 100)",
             (want_acc / 100, want_rej / 100)),
            ("the two outputs are swapped: first the known accepted, then the unknown rejected",
             (want_rej, want_acc)),
            ("the threshold is chosen on the known TEST scores: choose it on the held-out "
             "scores_val, as a deployed system would", on_test),
            ("'>' instead of '>=': a sample whose score equals the threshold is accepted",
             (strict_acc, strict_rej)),
            ("the second output is the share of unknown images ACCEPTED: report the share "
             "rejected (score below the threshold)", (want_acc, 100 - want_rej)),
            ("the threshold accepts 1 - tpr of the held-out known images instead of tpr",
             _sweep_reference(s_val, s_known, s_unknown, [1 - t if t < 1 else t for t in tprs])),
        ]
        if _close(acc, want_acc, 0, 1e-3) and _close(rej, want_rej, 0, 1e-3):
            continue
        for hint, (a, r) in hints:
            if _close(acc, a, 0, 1e-3) and _close(rej, r, 0, 1e-3):
                _hidden_assert(f"{name}: {hint} ({case})")
        _hidden_assert(f"{name}: known accepted {np.round(acc, 2).tolist()} / unknown rejected "
                       f"{np.round(rej, 2).tolist()}, expected {np.round(want_acc, 2).tolist()}"
                       f" / {np.round(want_rej, 2).tolist()} ({case}); the threshold for each "
                       "tpr is metrics.threshold_at_tpr(scores_val, tpr=tpr), accepted means "
                       "score >= threshold")
    _passed(name)


@compares_with('course.cac_experiment:threshold_sweep')
def check_threshold_sweep_results(tprs, known_accepted, unknown_rejected, dist_val, dist_test,
                                  dist_unknown) -> None:
    """Graded check of notebook 07's sweep: the recorded numbers against the reference sweep.

    ``tprs`` must hold at least five distinct targets in ``[0.5, 1]`` including 0.95; the
    reference (:func:`ood_utils.course.cac_experiment.threshold_sweep`) is computed on the same
    distances, and every recorded percentage must agree to 0.01 points.
    """
    __tracebackhide__ = True
    from ...course.cac_experiment import threshold_sweep

    t = np.asarray(list(tprs), dtype=np.float64).reshape(-1)
    if len(np.unique(t)) < 5 or t.min() < 0.5 or t.max() > 1 or not np.isclose(t, 0.95).any():
        _hidden_assert(f"the sweep needs at least five different tprs between 0.5 and 1, 0.95 "
                       f"among them; got {t.tolist()}")
    acc, rej = _sweep_result((known_accepted, unknown_rejected), "the sweep", len(t),
                             f"tprs={t.tolist()}")
    ref = threshold_sweep(dist_val, dist_test, dist_unknown, t)
    for label, got, want in (("known accepted", acc, ref["known_accepted"]),
                             ("unknown rejected", rej, ref["unknown_rejected"])):
        if not _close(got, want, 0, 0.01):
            _hidden_assert(f"sweep: {label} {np.round(got, 2).tolist()} differs from the "
                           f"reference {np.round(want, 2).tolist()} on the same distances")
    print(f"sweep: {len(t)} thresholds agree with the reference on the same distances")


# --- CAC: the network (notebook 07) ---

def _cnn_reference_variant(n: int, channels, dropout: float, *, pool="avg", relu_first=False,
                 hidden=True, extra_layer=False):
    """:class:`SmallCNN`'s architecture, or one of its typical mistakes (see check_cac_network)."""
    from torch import nn

    c1, c2, c3 = channels
    pool_layer = nn.AvgPool2d if pool == "avg" else nn.MaxPool2d

    def block(cin, cout, pooled):
        conv = nn.Conv2d(cin, cout, kernel_size=5)
        if not pooled:
            return [conv, nn.ReLU(), nn.Dropout(dropout)]
        if relu_first:
            return [conv, nn.ReLU(), pool_layer(2), nn.Dropout(dropout)]
        return [conv, pool_layer(2), nn.ReLU(), nn.Dropout(dropout)]

    layers = block(1, c1, False) + block(c1, c2, True) + block(c2, c3, True) + [nn.Flatten()]
    if hidden:
        layers += [nn.Linear(c3 * 9, 256), nn.ReLU(), nn.Dropout(dropout), nn.Linear(256, n)]
    else:
        layers += [nn.Linear(c3 * 9, n)]
    if extra_layer:
        layers += [nn.Linear(n, n)]
    return nn.Sequential(*layers)


def _trainable(module) -> list:
    return [q for q in module.parameters() if q.requires_grad]


def _probe_cac_network(ns, name, seed, n, channels, dropout, alpha, x, train_seed):
    """Kernel side of :func:`check_cac_network` (self-contained: the grader sends its source).

    Builds ``ns[name](n, channels, dropout, alpha)`` after ``torch.manual_seed(seed)`` and
    returns plain values only: whether it is a module, its trainable parameters in order, its
    ``anchors`` and whether they are registered (a buffer or a frozen parameter), ``embed(x)``
    twice and ``forward(x)`` in evaluation mode, ``embed(x)`` in training mode after
    ``torch.manual_seed(train_seed)``. What the student's code raises propagates (a
    ``TypeError`` of the constructor comes back as ``{"error": ...}``, to name the signature).
    """
    import torch

    torch.manual_seed(seed)
    try:
        net = ns[name](n, channels=tuple(channels), dropout=dropout, alpha=alpha)
    except TypeError as err:
        return {"error": str(err)}
    if not isinstance(net, torch.nn.Module):
        return {"module": False}
    out = {"module": True,
           "trainable": [p.detach().clone() for p in net.parameters() if p.requires_grad]}
    anchors = getattr(net, "anchors", None)
    if not isinstance(anchors, torch.Tensor):
        return dict(out, anchors=None)
    fixed = list(dict(net.named_buffers()).values()) + [
        p for p in net.parameters() if not p.requires_grad]
    out.update(anchors=anchors.detach().clone(), registered=any(v is anchors for v in fixed))
    embed = getattr(net, "embed", None)
    out["has_embed"] = callable(embed)
    if not callable(embed):
        return out
    net.eval()
    with torch.no_grad():
        out["embed_eval"] = [embed(x), embed(x)]
        out["forward_eval"] = net(x)
    net.train()
    torch.manual_seed(train_seed)
    with torch.no_grad():
        out["embed_train"] = embed(x)
    net.eval()
    return out


def _judge_cac_network(run: Callable, name: str) -> None:
    """The verdict of :func:`check_cac_network` from what ``run(_probe_cac_network, ...)``
    returns (here for the self-check, from the kernel for the grader)."""
    __tracebackhide__ = True
    from ...course.cac_experiment import SmallCNN
    from . import _common

    for seed, n, channels, dropout, alpha in ((0, 6, (4, 4, 8), 0.5, 10.0),
                                              (1, 3, (3, 5, 6), 0.3, 2.5)):
        case = f"num_classes={n}, channels={channels}, dropout={dropout}, alpha={alpha:g}"
        torch_seed = seed + _common.SEED_SHIFT
        x = torch.randn(5, 1, 28, 28, generator=_gen(950 + seed))
        got = run(_probe_cac_network, name, torch_seed, n, list(channels), dropout, alpha, x,
                  77 + torch_seed)
        if not isinstance(got, dict):
            _hidden_assert(f"{name}: the check could not read the network ({case})")
        if "error" in got:
            _hidden_assert(f"{name}({case}) failed: {got['error']}; keep the signature "
                           "(num_classes, channels, dropout, alpha=10.0)")
        if not got.get("module"):
            _hidden_assert(f"{name} must be a torch.nn.Module subclass (call super().__init__())")
        torch.manual_seed(torch_seed)
        ref = SmallCNN(n, channels=channels, dropout=dropout)
        trainable = list(got.get("trainable") or [])
        got_shapes = [tuple(getattr(q, "shape", ())) for q in trainable]
        want_shapes = [tuple(q.shape) for q in ref.parameters()]
        if got_shapes != want_shapes:
            variants = {
                "an extra N x N linear layer after the logits: in the paper (and here) the "
                "logit layer itself is the anchor space; that layer came from a student "
                "project": dict(extra_layer=True),
                "the 256-unit hidden layer is missing: flatten, Linear(c3 * 3 * 3, 256), ReLU, "
                "dropout, then Linear(256, num_classes)": dict(hidden=False),
            }
            for hint, kw in variants.items():
                if got_shapes == [tuple(q.shape) for q in
                                  _cnn_reference_variant(n, channels, dropout, **kw).parameters()]:
                    _hidden_assert(f"{name}: {hint} ({case})")
            if any(s == (n, n) for s in got_shapes) and len(got_shapes) == len(want_shapes) + 1:
                _hidden_assert(f"{name}: the anchors are a trainable parameter: store them with "
                               "register_buffer (or nn.Parameter(..., requires_grad=False)), "
                               f"they must stay fixed ({case})")
            _hidden_assert(f"{name}: its trainable parameters have shapes {got_shapes}, the "
                           f"course's CNN {want_shapes} ({case}); three 5 x 5 convolutions "
                           "(1 -> c1 -> c2 -> c3), Linear(c3 * 3 * 3, 256), "
                           "Linear(256, num_classes), nothing else trainable")
        if not all(torch.equal(torch.as_tensor(a).double(), b.detach().double())
                   for a, b in zip(trainable, ref.parameters())):
            _hidden_assert(f"{name}: after the same torch.manual_seed its initial weights differ "
                           f"from the course CNN's ({case}): create the layers in the order "
                           "they are used (conv1, conv2, conv3, hidden, output) and draw no other "
                           "random numbers in __init__, so that CAC starts where the baseline "
                           "starts")
        anchors = got.get("anchors")
        if not isinstance(anchors, torch.Tensor):
            _hidden_assert(f"{name} has no tensor attribute `anchors` ({case}): store the "
                           "anchors of class_anchors_exercise(num_classes, alpha) on the module")
        if not got.get("registered"):
            _hidden_assert(f"{name}: `anchors` is a plain attribute ({case}); register it "
                           "(self.register_buffer('anchors', ...)) so that it is saved with the "
                           "weights and moves with .to(device)")
        want_anchors = float(alpha) * torch.eye(n, dtype=torch.float64)  # alpha * I
        got_anchors = anchors.detach().double().numpy()
        if not _close(got_anchors, want_anchors.numpy(), 1e-6, 1e-6):
            hint = ("alpha is hard-coded: pass the `alpha` argument to class_anchors_exercise"
                    if alpha != 10 and _close(got_anchors, 10 * np.eye(n), 1e-6, 1e-6)
                    else "the anchors are not alpha * I (use class_anchors_exercise)")
            _hidden_assert(f"{name}: {hint} ({case})")
        if not got.get("has_embed"):
            _hidden_assert(f"{name} has no method embed(x) returning the logits ({case})")
        ref.eval()
        with torch.no_grad():
            want = ref(x)
        z1, z2 = got["embed_eval"]
        z1 = _tensor_result(z1, f"{name}.embed", "(B, N) logits", case)
        got_z = _cac_array(z1, f"{name}.embed", "(B, N) logits")
        if got_z.shape != tuple(want.shape):
            _hidden_assert(f"{name}.embed returned shape {got_z.shape}, expected "
                           f"{tuple(want.shape)} ({case})")
        if not _close(got_z, want.double().numpy(), 1e-4, 1e-5):
            z2 = _tensor_result(z2, f"{name}.embed", "(B, N) logits", case)
            if not _close(got_z, z2.double().numpy(), 1e-6, 1e-7):
                _hidden_assert(f"{name}.embed: two calls in evaluation mode give different "
                               f"logits ({case}): dropout is still on; use nn.Dropout "
                               "modules, or F.dropout(x, p, training=self.training)")
            variants = {"max pooling instead of average pooling (nn.AvgPool2d(2))":
                            dict(pool="max"),
                        "ReLU before the pooling: the course CNN (like the source) pools "
                        "the convolution's output, then applies ReLU": dict(relu_first=True)}
            for hint, kw in variants.items():
                var = _cnn_reference_variant(n, channels, dropout, **kw).eval()
                with torch.no_grad():
                    for q, v in zip(var.parameters(), ref.parameters()):
                        q.copy_(v)
                    if _close(got_z, var(x).double().numpy(), 1e-4, 1e-5):
                        _hidden_assert(f"{name}.embed: {hint} ({case})")
            _hidden_assert(f"{name}.embed(x) differs from the course CNN's logits in "
                           f"evaluation mode ({case}); check the order conv -> pool -> "
                           "ReLU -> dropout, the ReLU after every convolution and after the "
                           "hidden layer, and that embed returns the last layer's output")
        forward = _tensor_result(got.get("forward_eval"), name, "(B, N) distances", case)
        dist = _cac_array(forward, name, "(B, N) distances")
        want_d = torch.cdist(want.double(), want_anchors).numpy()  # ||z - alpha e_j||
        if not _close(dist, want_d, 1e-4, 1e-4):
            hint = ("forward returns the logits: return the distances of embed(x) to the "
                    "anchors (anchor_distances_exercise)"
                    if _close(dist, want.double().numpy(), 1e-4, 1e-5) else
                    "forward(x) is not the distance of embed(x) to every anchor")
            _hidden_assert(f"{name}: {hint} ({case})")
        plain = _cnn_reference_variant(n, channels, dropout)  # SmallCNN in the default memory
        with torch.no_grad():                   # format, whose dropout masks a plain module shares
            for q, v in zip(plain.parameters(), ref.parameters()):
                q.copy_(v)
        plain.train()
        torch.manual_seed(77 + torch_seed)
        with torch.no_grad():
            want_t = plain(x)
        got_t = _tensor_result(got.get("embed_train"), f"{name}.embed", "(B, N) logits", case)
        if not _close(got_t.detach().double().numpy(), want_t.double().numpy(), 1e-4, 1e-5):
            _hidden_assert(f"{name}.embed in training mode differs from the course CNN "
                           f"({case}): dropout (p = the `dropout` argument) belongs after each "
                           "of the four ReLUs, as in the baseline printed above")


@compares_with('course.cac_experiment:CACNetwork', 'course.cac_experiment:SmallCNN')
def check_cac_network(student_fn: Callable) -> None:
    """Self-check of the class ``CACNetworkExercise(num_classes, channels, dropout, alpha)`` (notebook 07).

    Builds the student's network and :class:`ood_utils.course.cac_experiment.SmallCNN` after the same
    ``torch.manual_seed`` and compares: the trainable parameters (same shapes, same order, same
    initial values, so that the CAC network starts where the baseline starts), the anchors (a
    buffer or a frozen parameter equal to ``alpha * I``), ``embed(x)`` against the CNN's logits
    in evaluation mode (twice: dropout must be off) and in training mode (the same dropout
    masks), and ``forward(x)`` against the distances to the anchors. Names the typical
    mistakes: an extra ``N x N`` layer, a missing hidden layer, max pooling, ReLU before the
    pooling, trainable or hard-coded anchors, dropout left on in evaluation, logits instead of
    distances. The grader runs the same verdict on what the kernel returns
    (:func:`_probe_cac_network`), on seeds of its own.
    """
    __tracebackhide__ = True
    _require_callable(student_fn)
    name = getattr(student_fn, "__name__", "your network")
    _judge_cac_network(local_runner({name: student_fn}), name)
    _passed(name)




__all__ = [name for name in dir() if name.startswith("check_")]
_hide_check_frames(globals())  # keep this the last line of the module
