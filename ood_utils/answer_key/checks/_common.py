"""Helpers shared by the self-checks: comparisons, hints, random inputs, hidden frames."""
from __future__ import annotations

import os
import weakref
from typing import Any, Callable

import numpy as np
import torch

from ...course.profiles import get_profile
from ...course.streams import route_warnings_to_stdout

route_warnings_to_stdout()  # inside a kernel only: see ood_utils.course.streams

_HERE = os.path.dirname(os.path.abspath(__file__))  # the checks package: its frames are hidden

# A failed self-check should point at the student's line, not at the checks. IPython skips a
# frame whose locals hold ``__tracebackhide__ = True`` (pytest does too), except the last one,
# which shows the line that raised and so the message. Every public ``check_*`` function is
# wrapped at the end of its module by :func:`_hide_check_frames`: the wrapper marks its own
# frame hidden and, inside a Jupyter kernel, removes the frames of the checks package that lie between
# the notebook cell and the student's code (the reference and the helpers it called) from the
# traceback of whatever the check raises, and from the tracebacks chained to it. A new check
# needs nothing of its own; helpers may also set ``__tracebackhide__ = True`` themselves.


def _strip_own_frames(err: BaseException) -> None:
    """Drop the checks' frames from ``err``'s traceback (and its chain), keeping the last."""
    seen = set()
    todo = [err]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        frames = []
        tb = e.__traceback__
        while tb is not None:
            frames.append(tb)
            tb = tb.tb_next
        kept = [t for i, t in enumerate(frames)
                if os.path.dirname(t.tb_frame.f_code.co_filename) != _HERE
                or i == len(frames) - 1]
        if kept and len(kept) < len(frames):
            for a, b in zip(kept, kept[1:] + [None]):
                a.tb_next = b
            e.__traceback__ = kept[0]
        todo += [e.__cause__, e.__context__]


def _hide_check_frames(namespace: dict) -> None:
    """Wrap every public ``check_*`` function of ``namespace`` (see the comment above).

    The wrapper also warns early (:func:`ood_utils.answer_key.screen.warn_if_suspicious`) when
    the student's function uses the reference that the check declares (:mod:`..registry`):
    the grader gives such an exercise 0 points.
    """
    import functools

    from ...course.streams import in_kernel
    from ..screen import warn_if_suspicious

    def wrap(fn):
        @functools.wraps(fn)
        def check(*args, **kwargs):
            __tracebackhide__ = True  # noqa: F841 (read by IPython and pytest)
            if args and callable(args[0]):
                warn_if_suspicious(args[0], fn.__name__)
            try:
                return fn(*args, **kwargs)
            except BaseException as err:
                if in_kernel():
                    _strip_own_frames(err)
                raise

        check._hides_frames = True
        return check

    for name, obj in list(namespace.items()):
        if name.startswith("check_") and callable(obj) and not getattr(obj, "_hides_frames",
                                                                       False) \
                and getattr(obj, "__module__", None) == namespace["__name__"]:
            namespace[name] = wrap(obj)

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


def local_runner(namespace: dict) -> Callable:
    """``run(probe, *args)`` = ``probe(namespace, *args)``, here: how a public self-check runs
    its probe on the student's objects. The grader's runner sends the same probe to the
    kernel instead (:meth:`ood_utils.grader.exchange.Exchange.run`) and the same judge decides."""
    def run(probe: Callable, *args, **kwargs):
        return probe(namespace, *args, **kwargs)
    return run


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


#: added to every seed of the checks' random inputs; 0 for the public checks, a secret per
#: run when the grader runs a check outside the kernel (ood_utils.grader.verdicts)
SEED_SHIFT = 0


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed + SEED_SHIFT)


def _random_feats(n: int, d: int, seed: int) -> torch.Tensor:
    """Random float32 rows with clearly different lengths (so cosine != dot product)."""
    g = _gen(seed)
    x = torch.randn(n, d, generator=g)
    scale = torch.rand(n, 1, generator=g) * 4.5 + 0.5
    return (x * scale).float()



# --------------------------------------------------------------------------- the sweeps (04-06)

def _auroc_pct(s_in, s_out) -> float:
    """AUROC in percent, ID positive, ties half (scikit-learn; the student may use metrics)."""
    from sklearn.metrics import roc_auc_score

    s_in, s_out = np.asarray(s_in, dtype=np.float64), np.asarray(s_out, dtype=np.float64)
    y = np.r_[np.ones(len(s_in)), np.zeros(len(s_out))]
    return float(roc_auc_score(y, np.r_[s_in, s_out]) * 100.0)


def _sweep_dict(result, name: str, settings, what: str, case: str = "") -> dict:
    """The student's sweep as ``{setting: float}`` in the order of ``settings``, or an
    AssertionError saying what is off."""
    __tracebackhide__ = True
    where = f" ({case})" if case else ""
    if result is None:
        raise AssertionError(f"{name} returned None{where}: complete the code between "
                             "'### START CODE HERE ###' and '### END CODE HERE ###' so that it "
                             f"returns a dict {{setting: {what}}}")
    if not isinstance(result, dict):
        raise AssertionError(f"{name} returned a {type(result).__name__}{where}; return a dict "
                             f"with one entry per setting, {{setting: {what}}}")
    missing = [t for t in settings if t not in result]
    if missing:
        raise AssertionError(f"{name} returned no value for {missing}{where} (its keys: "
                             f"{list(result)[:8]}); use the settings passed in as the keys")
    out = {}
    for t in settings:
        try:
            out[t] = float(result[t])
        except (TypeError, ValueError):
            raise AssertionError(f"{name}[{t!r}] is a {type(result[t]).__name__}{where}; "
                                 f"expected one number, the {what}") from None
    return out


def _compare_sweep(got: dict, want: dict, name: str, case: str, hints: dict,
                   tol: float = 1e-6) -> None:
    __tracebackhide__ = True
    bad = [t for t in want if not abs(got[t] - want[t]) <= tol + 1e-9 * abs(want[t])]
    if not bad:
        return
    for message, candidate in hints.items():
        if all(abs(got[t] - candidate[t]) <= max(tol, 1e-6) for t in want):
            raise AssertionError(f"{name}: wrong values ({case}). Likely cause: {message}.")
    t = bad[0]
    raise AssertionError(f"{name}: wrong value for setting {t!r} ({case}): {got[t]:.4f}, the "
                         f"reference gives {want[t]:.4f}")


def _auroc_percent(s_in: Any, s_out: Any) -> float:
    """AUROC in percent, ID positive (scikit-learn, independent of ood_utils.methods.metrics)."""
    from sklearn.metrics import roc_auc_score

    s_in, s_out = np.asarray(s_in, dtype=np.float64), np.asarray(s_out, dtype=np.float64)
    labels = np.r_[np.ones(len(s_in)), np.zeros(len(s_out))]
    return float(roc_auc_score(labels, np.r_[s_in, s_out]) * 100)


def _sweep_values(result: Any, keys: list, name: str, what: str, case: str) -> np.ndarray:
    """The student's sweep as float64 values in the order of ``keys`` (a dict keyed by them)."""
    __tracebackhide__ = True
    return np.array(list(_sweep_dict(result, name, keys, what, case).values()))


def _sweep_hints(got: np.ndarray, want: np.ndarray) -> str:
    """The typical mistakes of a sweep of AUROCs, as a sentence (or '')."""
    if np.all(got <= 1.0) and _close(got * 100, want, 0, 1e-6 + 0.01):
        return " Likely cause: the AUROCs are fractions; report them in percent (times 100)."
    if _close(100 - got, want, 0, 0.01):
        return (" Likely cause: 100 minus it would match: the scores point the wrong way "
                "(higher must mean more in-distribution).")
    if np.ptp(got) <= 1e-9 and np.ptp(want) > 1e-6:
        return (" Likely cause: every value of the sweep is the same: the swept setting never "
                "reaches the score (pass it on in each step of the loop).")
    return ""


def _check_sweep_result(sweep_id: str, values: dict, profile, reference, label,
                        extra_hint=None) -> None:
    """Compare a recorded sweep {key: AUROC} with the answer key's (or the reference's) sweep."""
    from ..expected import get_sweep_expected

    p = get_profile(profile)
    if not isinstance(values, dict):
        raise AssertionError(f"{sweep_id}: expected the dict your sweep returned "
                             f"({{setting: AUROC}}), got {type(values).__name__}")
    targets = get_sweep_expected(sweep_id, p)
    keys = list(targets) if targets else None
    if keys is None:  # no recorded sweep for this profile: the reference's, computed here
        keys = list(values)
        live = reference(p, keys)
        targets = {k: (live[k], 0.1) for k in keys}
        source = "the reference run on this profile's features (no recorded sweep)"
    else:
        targets = {k: (e.value, e.tol) for k, e in targets.items()}
        source = "ood_utils/answer_key/expected.json"
    missing = [label(k) for k in keys if k not in values]
    if missing:
        raise AssertionError(f"{sweep_id}: your sweep has no value for {', '.join(missing)}; "
                             f"the graded grid is {', '.join(label(k) for k in keys)}")
    lines, wrong = [], []
    for k in keys:
        try:
            v = float(values[k])
        except (TypeError, ValueError):
            raise AssertionError(f"{sweep_id}: the value for {label(k)} is not a number") from None
        want, tol = targets[k]
        ok = np.isfinite(v) and abs(v - want) <= tol + 1e-9
        lines.append(f"  {label(k)}: {v:.2f}, expected {want:.2f} +/- {tol:.2f}"
                     + ("" if ok else "  <- outside"))
        if not ok:
            wrong.append((k, v, want, tol))
    report = "\n".join(lines)
    if wrong:
        got = np.array([w[1] for w in wrong])
        want = np.array([w[2] for w in wrong])
        hint = _sweep_hints(got, want) if len(wrong) > 1 else ""
        if not hint and extra_hint is not None:
            hint = extra_hint(wrong)
        raise AssertionError(f"{sweep_id}: {len(wrong)} of {len(keys)} values of your sweep "
                             f"differ from {source} ({p.name}):\n{report}\n{hint.strip()}")
    print(f"{sweep_id}: all {len(keys)} values within tolerance ({p.name}, {source})\n{report}")


_TINY_CLIP_PARTS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _clip_model_for_checks():
    """The shipped tiny CLIP (small, offline): the model the text and split checks run on.

    A fresh copy per call. Both objects are remembered (weakly) as the tiny CLIP's parts, so
    that the grader hands them to a student's kernel by name (the kernel loads the same
    shipped model) instead of as objects: :func:`tiny_clip_part`.
    """
    from ...course.models import load_clip

    model, _, tokenizer = load_clip("miniclip")
    _TINY_CLIP_PARTS[model] = "model"
    _TINY_CLIP_PARTS[tokenizer] = "tokenizer"
    return model, tokenizer


def tiny_clip_part(obj) -> str | None:
    """``"model"``/``"tokenizer"`` if ``obj`` is one returned by :func:`_clip_model_for_checks`."""
    try:
        return _TINY_CLIP_PARTS.get(obj)
    except TypeError:  # unhashable
        return None
