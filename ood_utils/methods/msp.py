"""Maximum softmax probability (Hendrycks & Gimpel 2017; MCM, Ming et al. 2022, on zero-shot CLIP
logits) and the pseudo-labels PLP trains on. The zero-shot logits themselves need a CLIP model and
live in :mod:`ood_utils.course.models`."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ._arrays import check_array, to_tensor
from ._common import _back


# ----------------------------------------------------------------------------- MSP

def msp_scores(logits: Any, temperature: float = 1.0) -> Any:
    """Maximum softmax probability of ``logits / temperature``.

    Applied to a classifier's logits this is the MSP baseline (Hendrycks & Gimpel 2017).
    Applied to zero-shot CLIP logits it is MCM (Ming et al. 2022), which divides the raw
    cosine similarities by a temperature ``T``; **MCM's default is T = 1** (in the MCM code).
    Zero-shot logits already carry CLIP's learned scale (about 100), so ``msp_scores(logits)``
    is MCM with ``T = 1 / scale`` (about 0.01, the default of pytorch-ood), and MCM's own
    default is ``msp_scores(logits / scale)``, or ``msp_scores(cosines, temperature=1.0)``.
    ``temperature`` divides whatever is passed in.

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


