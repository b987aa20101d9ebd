"""Which reference implementation each self-check compares with.

Every public ``check_*`` function declares its references with :func:`compares_with`
(``"wing.module:name"`` below :mod:`ood_utils`, e.g. ``"methods.knn:knn_scores"``; an empty
declaration means the check compares with values computed inside it). The static screen
(:mod:`ood_utils.answer_key.screen`) reads this registry to warn a student whose function calls
the reference, and the grader reads it to screen a submission.
"""
from __future__ import annotations

import importlib
from typing import Callable

#: ``{check function name: ("wing.module:name", ...)}``, filled as the check modules load
REFERENCES: dict[str, tuple[str, ...]] = {}


def compares_with(*references: str) -> Callable:
    """Declare the references of the decorated check (returns the check unchanged)."""
    for ref in references:
        module, _, name = ref.partition(":")
        if not module or not name:
            raise ValueError(f"reference {ref!r}: write it as 'wing.module:name'")

    def register(check: Callable) -> Callable:
        if check.__name__ in REFERENCES:
            raise ValueError(f"{check.__name__} is declared twice")
        REFERENCES[check.__name__] = tuple(references)
        return check

    return register


def reference_names(check_name: str) -> frozenset[str]:
    """The bare names (``knn_scores``) of the references of ``check_name`` (empty if unknown)."""
    return frozenset(ref.partition(":")[2] for ref in REFERENCES.get(check_name, ()))


def reference_objects(check_name: str) -> list:
    """The reference functions and classes themselves (modules imported on demand)."""
    out = []
    for ref in REFERENCES.get(check_name, ()):
        module, _, name = ref.partition(":")
        out.append(getattr(importlib.import_module(f"ood_utils.{module}"), name))
    return out

