"""Numbers a student can read in the released notebook (the notebook prints the answer key's
expected AUROC and its sweep), used by the cheats that return them instead of computing.

Read from the course's answer key at build time; the import path is looked up in both the
current layout (``ood_utils.expected``) and the one of issue 19 (``ood_utils.answer_key``).
"""
from __future__ import annotations

import importlib

PROFILE = "miniclip"


def _key():
    for name in ("ood_utils.expected", "ood_utils.answer_key.expected", "ood_utils.answer_key"):
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        if hasattr(module, "get_expected"):
            return module
    raise ImportError("the answer key (get_expected) is in none of ood_utils.expected, "
                      "ood_utils.answer_key.expected, ood_utils.answer_key")


def auroc(check_id: str) -> float:
    return float(_key().get_expected(check_id, PROFILE).value)


def sweep(sweep_id: str) -> dict:
    key = _key()
    getter = getattr(key, "get_sweep")
    return {k: float(e.value) for k, e in getter(sweep_id, PROFILE).items()}
