"""The graded results every notebook ends with: AUROCs and recorded sweeps against the answer key."""
from __future__ import annotations

from typing import Any

import numpy as np

from ..registry import compares_with
from ...course.profiles import get_profile
from ..expected import get_expected
from ._common import _hide_check_frames

@compares_with()
def check_sweep(sweep_id: str, recorded: Any, profile=None) -> None:
    """Graded: compare a recorded sweep ``{setting: AUROC in percent}`` with the answer key's
    measurement of the same sweep (:data:`ood_utils.answer_key.expected.SWEEPS`).

    Prints one line per setting; raises ``AssertionError`` naming every setting outside its
    tolerance, ``ValueError`` for an unknown sweep, a missing setting or a profile without
    targets for the sweep.
    """
    from ..expected import get_sweep

    __tracebackhide__ = True
    p = get_profile(profile)
    targets = get_sweep(sweep_id, p)
    if not isinstance(recorded, dict):
        raise ValueError(f"{sweep_id}: pass the sweep as a dict {{setting: AUROC}}, got "
                         f"{type(recorded).__name__}")
    bad = []
    for setting, exp in targets.items():
        if setting not in recorded:
            raise ValueError(f"{sweep_id}: no recorded value for setting {setting!r} (recorded: "
                             f"{list(recorded)}); run the sweep over every setting given")
        if not exp.is_set:
            raise ValueError(f"{sweep_id}: the answer key has no target for {setting!r} on "
                             f"profile {p.name!r} ({exp.how})")
        v = float(recorded[setting])
        ok = np.isfinite(v) and exp.accepts(v)
        print(f"{sweep_id} {setting}: AUROC {v:.2f}, expected {exp.value:.2f} +/- "
              f"{exp.tol:.2f} -> {'within tolerance' if ok else 'OUTSIDE'}")
        if not ok:
            bad.append(f"{setting} ({v:.2f} vs {exp.value:.2f} +/- {exp.tol:.2f})")
    if bad:
        raise AssertionError(f"{sweep_id}: outside the answer key for {', '.join(bad)} "
                             f"({p.name}). If your self-checks pass, check that the sweep runs "
                             f"on the inputs the notebook gives and over its settings")


# --------------------------------------------------------------------------- AUROC checks

@compares_with()
def check_auroc(check_id: str, value: Any, profile=None) -> None:
    """Assert that an AUROC (percent) is within the answer key's tolerance for ``profile``.

    Prints the value, the expected value and the tolerance; raises ``AssertionError`` naming
    both when it is outside, and ``ValueError`` for an unknown check id or a check without a
    recorded target.
    """
    p = get_profile(profile)
    exp = get_expected(check_id, p)
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"value must be a number (AUROC in percent), got {type(value).__name__}"
                         ) from None
    if not np.isfinite(v):
        raise AssertionError(f"{check_id}: AUROC is {v}; the scores contain NaN or inf")
    if not exp.is_set:
        raise ValueError(f"{check_id}: the answer key has no target for profile {p.name!r} "
                         f"({exp.how})")
    line = f"{check_id}: AUROC {v:.2f}, expected {exp.value:.2f} +/- {exp.tol:.2f} ({p.name})"
    if exp.accepts(v):
        print(line + " -> within tolerance")
        return
    hint = ""
    if 0.0 <= v <= 1.0:
        hint = " It looks like a fraction: report the AUROC in percent (multiply by 100)."
    elif abs((100.0 - v) - exp.value) <= exp.tol:
        hint = (" 100 minus it would match: the scores point the wrong way "
                "(higher must mean more in-distribution).")
    raise AssertionError(f"{check_id}: AUROC {v:.2f} is outside the expected {exp.value:.2f} "
                         f"+/- {exp.tol:.2f} for profile {p.name}.{hint}")


__all__ = [name for name in dir() if name.startswith("check_")]
_hide_check_frames(globals())  # keep this the last line of the module
