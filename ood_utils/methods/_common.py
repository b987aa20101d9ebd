"""Validation shared by the detectors (public boundary only; kernels trust their input)."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ._arrays import as_kind, check_array, is_tensor, to_tensor


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


