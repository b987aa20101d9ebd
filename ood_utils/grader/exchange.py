"""The grader's side of the plain-data exchange with a student's kernel.

The grader writes a request (JSON and NumPy files of its own inputs) into a fresh step folder,
runs :func:`ood_utils.grader.kernel_side.snippet` in the kernel, and reads the answer back:
JSON (at most :data:`MAX_JSON` bytes) and ``.npy`` files read with ``allow_pickle=False``,
numeric dtypes only, at most :data:`MAX_ARRAY_BYTES` each, opened without following links.
What comes back are fresh NumPy arrays, torch tensors, numbers, strings and containers built
here: no object of the student's crosses. The kernel's own report of success means nothing:
:mod:`ood_utils.grader.verdicts` compares the values with the reference computed here.
"""
from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any, Callable

import numpy as np

from . import kernel_side

__all__ = ["Exchange", "KernelFailure", "NoAnswer", "StudentError", "MAX_JSON",
           "MAX_ARRAY_BYTES"]

MAX_JSON = 4 << 20
MAX_ARRAY_BYTES = 256 << 20
_MAX_ITEMS = 100_000
# exceptions of the student's function that the checks may treat specially are rebuilt as
# the same builtin class (by name, from this list only); anything else is a StudentError
_BUILTIN_ERRORS = {e.__name__: e for e in (
    NotImplementedError, ValueError, TypeError, RuntimeError, IndexError, KeyError,
    AssertionError, ZeroDivisionError, AttributeError, NameError, ArithmeticError)}


class KernelFailure(Exception):
    """The kernel could not run a grader step (it died, timed out, or the step failed)."""


class NoAnswer(KernelFailure):
    """The step ran but left no readable answer (``os._exit``, a patched kernel, bad files)."""


class StudentError(RuntimeError):
    """The student's function raised an exception that is not one of the common builtins."""


def _read_regular(path: Path, limit: int) -> bytes:
    """The bytes of a regular file, not following a link, at most ``limit`` bytes."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_NONBLOCK", 0))
    except OSError as err:
        raise NoAnswer(f"no answer file {path.name} ({err.strerror})") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise NoAnswer(f"{path.name} is not a regular file")
        if info.st_size > limit:
            raise NoAnswer(f"{path.name} is larger than {limit} bytes")
        with os.fdopen(fd, "rb", closefd=False) as fh:
            return fh.read(limit + 1)[:limit]
    finally:
        os.close(fd)


class Exchange:
    """Call functions of a kernel with the grader's inputs; read their results as plain data.

    ``run_code(code)`` runs code in the kernel and returns once it finished (raising
    :class:`KernelFailure` when the kernel died or timed out); ``folder`` is the exchange folder
    as the grader sees it, ``kernel_folder`` the same folder as the kernel sees it; ``give``
    hands a folder to the kernel's uid (so that it can write its answer there).
    """

    def __init__(self, folder: Path, run_code: Callable[[str], None],
                 kernel_folder: Path | None = None, give: Callable[[Path], None] | None = None):
        self.folder = Path(folder)
        self.kernel_folder = Path(kernel_folder) if kernel_folder is not None else self.folder
        self.run_code = run_code
        self.give = give or (lambda path: None)
        self.steps = 0

    # ------------------------------------------------------------------ encode
    def _encode(self, x: Any, step: Path, grad_inputs: dict) -> dict:
        import torch

        from ..answer_key.checks._common import tiny_clip_part

        if x is None:
            return {"t": "none"}
        if type(x) in (bool, int, float, str):
            return {"t": "json", "v": x}
        part = tiny_clip_part(x)
        if part is not None:  # the kernel loads the same shipped model itself
            return {"t": "tiny_clip", "part": part}
        if isinstance(x, (np.integer, np.floating, np.bool_)):
            return {"t": "json", "v": x.item()}
        if type(x) is torch.nn.Linear:
            return {"t": "linear",
                    "weight": self._encode(x.weight.detach().clone(), step, {}),
                    "bias": self._encode(None if x.bias is None else x.bias.detach().clone(),
                                         step, {})}
        if isinstance(x, torch.Tensor):
            name = f"a{len(list(step.glob('a*.npy')))}.npy"
            np.save(step / name, x.detach().cpu().numpy(), allow_pickle=False)
            if x.requires_grad:
                grad_inputs[name] = x
            return {"t": "array", "file": name, "torch": True, "grad": bool(x.requires_grad)}
        if isinstance(x, np.ndarray):
            name = f"a{len(list(step.glob('a*.npy')))}.npy"
            np.save(step / name, x, allow_pickle=False)
            return {"t": "array", "file": name, "torch": False}
        if type(x) in (list, tuple):
            return {"t": type(x).__name__,
                    "items": [self._encode(i, step, grad_inputs) for i in x]}
        if isinstance(x, dict):
            return {"t": "dict", "items": [[self._encode(k, step, grad_inputs),
                                            self._encode(v, step, grad_inputs)]
                                           for k, v in x.items()]}
        raise TypeError(f"the grader cannot hand a {type(x).__name__} to the kernel")

    # ------------------------------------------------------------------ decode
    def _decode(self, spec: Any, out: Path, budget: list, depth: int = 0) -> Any:
        import torch

        if depth > 10 or not isinstance(spec, dict):
            raise NoAnswer("malformed answer")
        budget[0] -= 1
        if budget[0] < 0:
            raise NoAnswer("too many items in the answer")
        t = spec.get("t")
        if t == "none":
            return None
        if t == "json":
            v = spec.get("v")
            if type(v) not in (bool, int, float, str):
                raise NoAnswer("malformed answer")
            return v
        if t == "array":
            name = spec.get("file")
            if not isinstance(name, str) or "/" in name or name.startswith("."):
                raise NoAnswer("malformed answer")
            import io
            raw = _read_regular(out / name, MAX_ARRAY_BYTES)
            try:
                a = np.load(io.BytesIO(raw), allow_pickle=False)
            except Exception as err:
                raise NoAnswer(f"unreadable array {name}: {type(err).__name__}") from None
            if not isinstance(a, np.ndarray) or type(a) is not np.ndarray \
                    or a.dtype.kind not in "biuf" or a.dtype.byteorder not in "=|<":
                raise NoAnswer(f"array {name} is not a plain numeric array")
            a = np.array(a, copy=True)
            return torch.from_numpy(a) if spec.get("torch") is True else a
        if t in ("list", "tuple"):
            items = spec.get("items")
            if not isinstance(items, list):
                raise NoAnswer("malformed answer")
            vals = [self._decode(s, out, budget, depth + 1) for s in items]
            return vals if t == "list" else tuple(vals)
        if t == "dict":
            items = spec.get("items")
            if not isinstance(items, list):
                raise NoAnswer("malformed answer")
            result = {}
            for pair in items:
                if not isinstance(pair, list) or len(pair) != 2:
                    raise NoAnswer("malformed answer")
                key = self._decode(pair[0], out, budget, depth + 1)
                if isinstance(key, (list, dict, np.ndarray, torch.Tensor)):
                    raise NoAnswer("a dictionary key that is not a number or string")
                result[key] = self._decode(pair[1], out, budget, depth + 1)
            return result
        if t == "linear":
            w = self._decode(spec.get("weight"), out, budget, depth + 1)
            b = self._decode(spec.get("bias"), out, budget, depth + 1)
            if not isinstance(w, torch.Tensor) or w.ndim != 2 or \
                    (b is not None and (not isinstance(b, torch.Tensor) or b.shape != w.shape[:1])):
                raise NoAnswer("malformed linear layer")
            layer = torch.nn.Linear(w.shape[1], w.shape[0], bias=b is not None,
                                    dtype=w.dtype if w.is_floating_point() else torch.float32)
            with torch.no_grad():
                layer.weight.copy_(w)
                if b is not None:
                    layer.bias.copy_(b)
            return layer
        if t == "other":
            return _Opaque(str(spec.get("type", "object"))[:80])
        raise NoAnswer("malformed answer")

    # ------------------------------------------------------------------ steps
    def _step(self, request: dict, encode) -> tuple[dict, Path]:
        self.steps += 1
        step = self.folder / f"step{self.steps:03d}"
        step.mkdir(mode=0o755)
        out = step / "out"
        out.mkdir(mode=0o700)
        grad_inputs: dict = {}
        request.update(encode(step, grad_inputs))
        (step / "request.json").write_text(json.dumps(request))
        self.give(out)
        self.run_code(kernel_side.snippet(str(self.kernel_folder / step.name)))
        raw = _read_regular(out / "answer.json", MAX_JSON)
        try:
            answer = json.loads(raw)
        except ValueError:
            raise NoAnswer("the answer is not JSON") from None
        if not isinstance(answer, dict) or answer.get("ok") not in (True, False):
            raise NoAnswer("malformed answer")
        return answer, out, grad_inputs

    def call(self, fn: str, *args, **kwargs) -> Any:
        """The result of ``fn(*args, **kwargs)`` in the kernel, rebuilt from plain data.

        Raises the student's exception as the same builtin class when it is a common one
        (``NotImplementedError``, ``ValueError``, ...), else :class:`StudentError`. A tensor
        result computed from inputs that require gradients comes back attached to them, with
        the gradients of its sum that the kernel computed.
        """
        def encode(step, grad_inputs):
            return {"args": [self._encode(a, step, grad_inputs) for a in args],
                    "kwargs": {str(k): self._encode(v, step, grad_inputs)
                               for k, v in kwargs.items()}}

        answer, out, grad_inputs = self._step({"op": "call", "fn": fn}, encode)
        if answer["ok"] is False:
            _raise_students_error(answer)
        budget = [_MAX_ITEMS]
        value = self._decode(answer.get("value"), out, budget)
        grads = answer.get("grads") or {}
        if grad_inputs and isinstance(grads, dict) and grads and \
                _is_tensor(value) and value.is_floating_point():
            value = _attach_gradients(value, {name: (grad_inputs[name],
                                                     self._decode(spec, out, budget))
                                              for name, spec in grads.items()
                                              if name in grad_inputs})
        return value

    def run(self, probe: Callable, *args, **kwargs) -> Any:
        """The result of ``probe(user_ns, *args, **kwargs)`` run in the kernel, as plain data.

        ``probe`` is a self-contained function (imports inside, no globals); its source is sent
        with the request. The kernel may lie about what it returns: the caller judges it.
        """
        import inspect
        import textwrap

        source = textwrap.dedent(inspect.getsource(probe))

        def encode(step, grad_inputs):
            return {"args": [self._encode(a, step, {}) for a in args],
                    "kwargs": {str(k): self._encode(v, step, {}) for k, v in kwargs.items()}}

        answer, out, _ = self._step({"op": "run", "source": source, "entry": probe.__name__},
                                    encode)
        if answer["ok"] is False:
            _raise_students_error(answer)
        return self._decode(answer.get("value"), out, [_MAX_ITEMS])

    def capture(self, exprs: dict[str, str]) -> dict:
        """``{key: value of the expression in the kernel's namespace}`` as plain data."""
        answer, out, _ = self._step({"op": "capture", "exprs": dict(exprs)},
                                    lambda step, grads: {})
        if answer["ok"] is False:
            err = answer.get("error") or {}
            raise StudentError(f"{str(err.get('type', 'Error'))[:80]}: "
                               f"{str(err.get('message', ''))[:300]}")
        value = self._decode(answer.get("value"), out, [_MAX_ITEMS])
        if not isinstance(value, dict):
            raise NoAnswer("malformed answer")
        return value


def _raise_students_error(answer: dict) -> None:
    """Raise the kernel's exception as the same builtin class when it is a common one."""
    err = answer.get("error") or {}
    ename, message = str(err.get("type", "Error"))[:80], str(err.get("message", ""))[:2000]
    cls = _BUILTIN_ERRORS.get(ename)
    if cls is not None:
        raise cls(message)
    raise StudentError(f"{ename}: {message}")


class _Opaque:
    """Stands for an object the kernel could not hand over as plain data."""

    def __init__(self, type_name: str):
        self.type_name = type_name

    def __repr__(self):
        return f"<{self.type_name} (not plain data)>"


def _is_tensor(x) -> bool:
    import torch
    return isinstance(x, torch.Tensor)


def _attach_gradients(value, pairs: dict):
    """``value`` as a tensor whose sum has the given gradients with respect to the inputs."""
    import torch

    link = None
    for _, (x, g) in pairs.items():
        if not isinstance(g, torch.Tensor) or g.shape != x.shape:
            continue
        term = (x * g.to(x.dtype)).sum()
        link = term if link is None else link + term
    if link is None:
        return value
    # the values stay the kernel's; sum(result) has exactly the kernel's gradients
    return value + ((link - link.detach()) / max(value.numel(), 1)).to(value.dtype)
