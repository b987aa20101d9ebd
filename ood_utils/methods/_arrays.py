"""Input validation shared by every public function of the package.

Public functions accept either numpy arrays or torch tensors and give back the same kind.
They call the helpers below at their boundary so that bad input fails early with a message
that names the argument and says how to fix it.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch


def is_tensor(x: Any) -> bool:
    return isinstance(x, torch.Tensor)


def to_numpy(x: Any, name: str) -> np.ndarray:
    """Return ``x`` as a numpy array (detached, on the CPU); lists are accepted too."""
    if is_tensor(x):
        return x.detach().cpu().numpy()
    if isinstance(x, np.ndarray):
        return x
    if isinstance(x, (list, tuple)):
        return np.asarray(x)
    raise TypeError(f"{name} must be a numpy array or a torch tensor, got {type(x).__name__}")


def to_tensor(x: Any, name: str, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Return ``x`` as a torch tensor without copying when it already is one."""
    if is_tensor(x):
        t = x.detach()
    elif isinstance(x, (np.ndarray, list, tuple)):
        t = torch.as_tensor(np.asarray(x))
    else:
        raise TypeError(f"{name} must be a numpy array or a torch tensor, got {type(x).__name__}")
    return t.to(dtype) if dtype is not None else t


def like(result: Any, reference: Any) -> Any:
    """Give ``result`` back as the same kind (numpy or torch) as ``reference``."""
    if is_tensor(reference):
        if is_tensor(result):
            return result
        return torch.as_tensor(np.ascontiguousarray(result))
    if is_tensor(result):
        return result.detach().cpu().numpy()
    return np.asarray(result)


def as_kind(result: torch.Tensor, reference: Any) -> Any:
    """Give a computed tensor back as the kind of ``reference``: a tensor on ``reference``'s
    device when it is a tensor, else a numpy array."""
    if is_tensor(reference):
        return result.to(reference.device)
    return like(result.detach().cpu(), reference)


def check_array(
    x: Any,
    name: str,
    ndim: int | None = None,
    numeric: bool = True,
    finite: bool = True,
    allow_empty: bool = False,
) -> None:
    """Validate rank, dtype, emptiness and finiteness of a numpy array or torch tensor.

    Raises ``ValueError`` (or ``TypeError`` for a wrong container) naming ``name``.
    """
    if not (is_tensor(x) or isinstance(x, np.ndarray)):
        raise TypeError(f"{name} must be a numpy array or a torch tensor, got {type(x).__name__}")
    shape = tuple(x.shape)
    if ndim is not None and len(shape) != ndim:
        expected = {1: "(N,)", 2: "(N, D)"}.get(ndim, f"{ndim} dimensions")
        raise ValueError(f"{name} must have shape {expected}, got shape {shape}")
    if not allow_empty and (len(shape) == 0 or 0 in shape):
        raise ValueError(f"{name} is empty (shape {shape}); pass at least one sample")
    if numeric:
        if is_tensor(x):
            ok = x.dtype.is_floating_point or x.dtype in (
                torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8)
        else:
            ok = np.issubdtype(x.dtype, np.number)
        if not ok or (is_tensor(x) and x.is_complex()) or (
                isinstance(x, np.ndarray) and np.iscomplexobj(x)):
            raise ValueError(f"{name} must hold real numbers, got dtype {x.dtype}")
    if finite and 0 not in shape:
        bad = (~torch.isfinite(x)).any().item() if is_tensor(x) else not np.isfinite(x).all()
        if bad:
            raise ValueError(f"{name} contains NaN or infinite values; clean or drop those rows first")


def score_vector(x: Any, name: str) -> np.ndarray:
    """Validate a 1-d vector of scores and return it as float64 numpy (a copy if converted)."""
    check_array(x, name, ndim=1)  # TypeError for lists and scalars, ValueError otherwise
    return np.asarray(to_numpy(x, name), dtype=np.float64)


def check_labels(y: Any, name: str, n: int) -> None:
    """Validate a 1-d integer label vector of length ``n``."""
    check_array(y, name, ndim=1)
    if is_tensor(y):
        integer = not y.dtype.is_floating_point and y.dtype != torch.bool
    else:
        integer = np.issubdtype(y.dtype, np.integer)
    if not integer:
        raise ValueError(f"{name} must hold integer class ids, got dtype {y.dtype}")
    if y.shape[0] != n:
        raise ValueError(f"{name} has {y.shape[0]} entries but the features have {n} rows")


def check_same_dim(a: Any, b: Any, name_a: str, name_b: str) -> None:
    if a.shape[1] != b.shape[1]:
        raise ValueError(
            f"{name_a} has {a.shape[1]} columns but {name_b} has {b.shape[1]}; "
            "both must come from the same feature extractor")
