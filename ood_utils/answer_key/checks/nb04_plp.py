"""Self-checks of notebook 04: pseudo-labels, the linear probe, its MSP and the temperature sweep."""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from ..registry import compares_with
from ._common import _as_array, _auroc_pct, _close, _compare, _compare_sweep, _fn_name, _gen, _hide_check_frames, _passed, _random_feats, _require_callable, _softmax, _sweep_dict

# --------------------------------------------------------------------------- probe MSP (part V)

@compares_with('methods.msp:pseudo_labels')
def check_pseudo_labels(student_fn: Callable) -> None:
    """Self-check of ``pseudo_labels_exercise(logits)``.

    Expected: the index of the largest logit of every row (reference:
    :func:`ood_utils.methods.pseudo_labels`), as integers, on random logit tensors (more rows
    than classes, fewer rows than classes, and as many rows as classes).
    """
    from ...methods import pseudo_labels

    __tracebackhide__ = True
    _require_callable(student_fn)
    name = _fn_name(student_fn)
    for n, c, seed in [(9, 4, 0), (3, 7, 1), (5, 5, 2)]:
        logits = torch.randn(n, c, generator=_gen(70 + seed)) * 5
        case = f"logits of shape ({n}, {c})"
        result = student_fn(logits.clone())
        got = _as_array(result, name, "one class index per row")
        want = _as_array(pseudo_labels(logits), "pseudo_labels", "")
        z = logits.double().numpy()
        if got.shape == (c,) and n != c:
            raise AssertionError(f"{name} returned shape {got.shape} ({case}): that is one "
                                 f"value per CLASS; take the argmax over the classes (dim=1), "
                                 f"one label per row, shape {(n,)}")
        hints = {
            "the argmax runs over the rows (dim 0) instead of the classes (dim 1)":
                z.argmax(axis=0) if n == c else None,
            "argmin instead of argmax: the pseudo-label is the class with the LARGEST logit":
                z.argmin(axis=1),
            "this is the largest logit itself, not its index (use argmax, not max)":
                z.max(axis=1),
            "this is the largest softmax probability, not the class index (use argmax)":
                _softmax(z).max(axis=1),
        }
        _compare(got, want, name, case, "one class index per row", hints)
        dtype = result.dtype if isinstance(result, (torch.Tensor, np.ndarray)) else None
        if dtype is not None and (dtype.is_floating_point if isinstance(dtype, torch.dtype)
                                  else np.issubdtype(dtype, np.floating)):
            raise AssertionError(f"{name} returned {dtype} values ({case}); class indices must "
                                 f"be integers (torch.int64): cross-entropy needs them so")
        if dtype is not None and dtype not in (torch.int64, np.dtype(np.int64)):
            raise AssertionError(
                f"{name} returned {dtype} class indices ({case}); F.cross_entropy accepts "
                f"class indices only as int64 (torch.long) and fails on {dtype} with a dtype "
                f"error later, in the training: convert with .long() (argmax already returns "
                f"int64)")
    _passed(name)


def _probe_runs(x: torch.Tensor, y: torch.Tensor, c: int, epochs: int, lr: float, seed: int,
                optimizer: str = "adam", zero_grad: bool = True, bias: bool = True,
                batch_size: int | None = None) -> list[tuple[dict, float, float]]:
    """Full-batch training as notebook 04 prescribes; per epoch (weights after the step,
    training accuracy before the step, training accuracy after the step).

    The other arguments plant one mistake each (only to name it): SGD, no ``zero_grad``
    (gradients accumulate over the epochs), ``nn.Linear(..., bias=False)``, or mini-batches of
    ``batch_size`` rows in order (the accuracy "before" is then that of the last batch's
    forward pass and is not used)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        layer = torch.nn.Linear(x.shape[1], c, bias=bias)
    opt = (torch.optim.Adam(layer.parameters(), lr=lr) if optimizer == "adam"
           else torch.optim.SGD(layer.parameters(), lr=lr))
    runs = []
    step = len(x) if batch_size is None else batch_size
    for _ in range(epochs):
        for start in range(0, len(x), step):
            logits = layer(x[start:start + step])
            before = float((logits.argmax(dim=1) == y[start:start + step]).double().mean())
            loss = torch.nn.functional.cross_entropy(logits, y[start:start + step])
            if zero_grad:
                opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            after = float((layer(x).argmax(dim=1) == y).double().mean())
        state = {k: v.detach().clone() for k, v in layer.state_dict().items()}
        if not bias:
            state["bias"] = torch.zeros(c)
        runs.append((state, before, after))
    return runs


def _pick(runs, key: int, latest: bool) -> dict:
    accs = [r[key] for r in runs]
    best = max(accs)
    ids = [i for i, a in enumerate(accs) if a == best]
    return runs[ids[-1] if latest else ids[0]][0]


@compares_with()
def check_train_probe(student_fn: Callable) -> None:
    """Self-check of ``train_probe_exercise(train_feats, targets, num_classes, *, epochs, lr,
    seed)``.

    The prescription of notebook 04: ``torch.manual_seed(seed)`` immediately before
    ``nn.Linear(D, num_classes)``, full-batch Adam (one step per epoch on all rows) on the
    cross-entropy with ``targets``, and the weights of the epoch with the highest training
    accuracy are returned. The check trains the reference on small random problems and
    compares the returned layer's logits. Accepted selection rules: the accuracy after the
    epoch's step (earliest or latest epoch on ties), or the accuracy measured on the epoch's
    own forward pass (as the original assignment's training loop does). The third problem has
    more rows (600) than the usual mini-batch sizes, so mini-batches are told apart from the
    full batch.
    """
    __tracebackhide__ = True
    _require_callable(student_fn)
    name = _fn_name(student_fn)
    # every case reaches its best training accuracy before the last epoch
    for n, d, c, epochs, lr, seed in [(90, 5, 3, 14, 0.2, 0), (60, 4, 4, 12, 1.0, 3),
                                      (600, 5, 3, 10, 0.3, 5)]:
        g = _gen(80 + seed)
        centres = torch.randn(c, d, generator=g) * 1.5
        y = torch.randint(0, c, (n,), generator=g)
        x = (centres[y] + torch.randn(n, d, generator=g)).float()
        case = f"{n} rows, {d} features, {c} classes, epochs={epochs}, lr={lr}, seed={seed}"
        state = torch.get_rng_state()
        layer = student_fn(x.clone(), y.clone(), c, epochs=epochs, lr=lr, seed=seed)
        torch.set_rng_state(state)
        if isinstance(layer, tuple):
            raise AssertionError(f"{name} returned a tuple; return only the trained nn.Linear")
        if not isinstance(layer, torch.nn.Module):
            raise AssertionError(f"{name} returned {type(layer).__name__}; return the trained "
                                 f"torch.nn.Linear holding the best epoch's weights")
        with torch.no_grad():
            got = layer(x).detach().double().numpy()
        if got.shape != (n, c):
            raise AssertionError(f"{name}'s layer maps the features to shape {got.shape}, "
                                 f"expected {(n, c)} ({case}): nn.Linear(D, num_classes)")
        runs = _probe_runs(x, y, c, epochs, lr, seed)

        def logits_of(state_dict):
            return (x.double() @ state_dict["weight"].double().T
                    + state_dict["bias"].double()).numpy()

        accepted = [logits_of(_pick(runs, key, latest)) for key in (2, 1)
                    for latest in (False, True)]
        if any(_close(got, a, 1e-3, 1e-4) for a in accepted):
            continue
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            init = torch.nn.Linear(d, c).state_dict()
        has_bias = getattr(layer, "bias", 0) is not None

        def variant(**kw):
            return [logits_of(_pick(_probe_runs(x, y, c, epochs, lr, seed, **kw), key, latest))
                    for key in (2, 1) for latest in (False, True)]

        hints = {
            "the returned weights are those of the LAST epoch, not of the best one. Either "
            "the best epoch's copy is never loaded back (layer.load_state_dict(best) before "
            "returning), or no copy was kept: state_dict() alone returns the live tensors, "
            "which later steps overwrite (copy.deepcopy(layer.state_dict()))":
                [logits_of(runs[-1][0])],
            "the layer is untrained (its initial weights): run the optimizer steps":
                [logits_of(init)],
            "the layer has no bias (nn.Linear(..., bias=False)): the probe is A h + b, keep "
            "nn.Linear's default bias=True": variant(bias=False) if not has_bias else [],
            "optimizer.zero_grad() is missing: without it every backward() ADDS to the "
            "gradients of the earlier epochs, so each step follows their running sum; reset "
            "them once per step, before backward()": variant(zero_grad=False),
            "SGD instead of Adam: use torch.optim.Adam(layer.parameters(), lr=lr)":
                variant(optimizer="sgd"),
            "the epoch with the LOWEST training accuracy was kept: keep the highest":
                [logits_of(runs[int(np.argmin([r[2] for r in runs]))][0])],
        }
        for size in (32, 64, 128, 256, 512):
            if size < n:
                hints[f"mini-batches ({size} rows per step): the course trains full-batch, one "
                      f"step per epoch on ALL rows at once (no DataLoader, no shuffling)"] = \
                    variant(batch_size=size)
        for message, candidates in hints.items():
            if any(_close(got, cand, 1e-3, 1e-4) for cand in candidates):
                raise AssertionError(f"{name}: wrong probe ({case}). Likely cause: {message}.")
        raise AssertionError(
            f"{name}: the returned layer's logits differ from the prescribed training ({case}; "
            f"largest difference {np.max(np.abs(got - accepted[0])):.3g}). Check, in this "
            f"order: torch.manual_seed(seed) immediately before nn.Linear(D, num_classes) "
            f"(no other random call in between); torch.optim.Adam with lr; full batch (one "
            f"step per epoch on ALL rows, no shuffling or mini-batches); zero_grad before "
            f"every backward; cross-entropy with the targets passed in (not other labels); "
            f"the best training accuracy chooses the weights returned")
    _passed(name)


@compares_with('methods.msp:msp_scores', 'methods.probe:probe_logits')
def check_probe_msp(student_fn: Callable) -> None:
    """Self-check of ``probe_msp_exercise(layer, feats)``.

    Expected: the maximum softmax probability of ``layer(feats)`` per row (reference:
    :func:`ood_utils.methods.msp_scores` of :func:`ood_utils.methods.probe_logits`), on random
    linear layers; the layer's weights must not change.
    """
    from ...methods import msp_scores, probe_logits

    __tracebackhide__ = True
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
        result = student_fn(layer, feats.clone())
        got = _as_array(result, name, "one maximum softmax probability per row")
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
        if getattr(result, "dtype", None) in (torch.float32, torch.float16, torch.bfloat16,
                                              np.float32, np.float16):
            raise AssertionError(
                f"{name} returned {result.dtype} probabilities ({case}): take the softmax in "
                f"float64 (e.g. layer(feats).double().softmax(dim=1)). In float32 every "
                f"probability above 1 - 6e-8 rounds to exactly 1, so confident ID and OOD "
                f"images tie and the AUROC drops by several points")
    _passed(name)


@compares_with()
def check_temperature_sweep(student_fn: Callable) -> None:
    """Self-check of ``temperature_sweep_exercise(layer, id_feats, ood_feats, temperatures)``.

    Expected: ``{T: AUROC in percent of max softmax(layer(x) / T)}`` (softmax in float64), on
    a random linear layer with ID and OOD rows drawn differently, for several ``T``.
    """
    __tracebackhide__ = True
    _require_callable(student_fn)
    name = _fn_name(student_fn)
    torch.manual_seed(57)
    layer = torch.nn.Linear(6, 4)
    with torch.no_grad():
        layer.weight.mul_(4.0)
    id_feats = _random_feats(40, 6, 58)
    ood_feats = _random_feats(30, 6, 59) * 0.4
    temps = (0.01, 0.5, 1.0, 4.0)
    case = f"Linear(6, 4), 40 ID and 30 OOD rows, temperatures {temps}"
    before = [p.detach().clone() for p in layer.parameters()]
    got = _sweep_dict(student_fn(layer, id_feats.clone(), ood_feats.clone(), temps), name,
                      temps, "AUROC in percent")
    if any(not torch.equal(a, b) for a, b in zip(before, layer.parameters())):
        raise AssertionError(f"{name} changed the layer's weights; only evaluate it")
    with torch.no_grad():
        z_in = layer(id_feats).double().numpy()
        z_out = layer(ood_feats).double().numpy()
        z32_in, z32_out = layer(id_feats), layer(ood_feats)

    def sweep(f):
        return {t: _auroc_pct(*f(t)) for t in temps}

    want = sweep(lambda t: (_softmax(z_in / t).max(1), _softmax(z_out / t).max(1)))
    hints = {
        "the logits are multiplied by T: divide them, softmax(z / T)":
            sweep(lambda t: (_softmax(z_in * t).max(1), _softmax(z_out * t).max(1))),
        "the softmax is taken in float32: at small T almost every probability rounds to 1 "
        "and the scores tie; divide and take the softmax in float64":
            sweep(lambda t: ((z32_in / t).softmax(1).max(1).values.double().numpy(),
                             (z32_out / t).softmax(1).max(1).values.double().numpy())),
        "the temperature is not used: every entry is the T = 1 AUROC":
            {t: want[1.0] for t in temps},
        "the AUROC is a fraction: report it in percent (times 100)":
            {t: v / 100.0 for t, v in want.items()},
        "the scores point the wrong way (100 - AUROC): higher must mean more in-distribution":
            {t: 100.0 - v for t, v in want.items()},
    }
    _compare_sweep(got, want, name, case, hints, tol=1e-4)
    _passed(name)


__all__ = [name for name in dir() if name.startswith("check_")]
_hide_check_frames(globals())  # keep this the last line of the module
