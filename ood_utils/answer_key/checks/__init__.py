"""Public self-checks of the notebook exercises, and the AUROC check of every graded result.

``check_<exercise>(student_fn)`` runs the student's function and the reference implementation
of :mod:`ood_utils.methods` on small random inputs (fixed seeds, a few cases each) and compares
type, shape and values. On a mismatch it raises ``AssertionError`` whose message says what
differs and, where a typical mistake explains the numbers, which one. Otherwise it prints
``"<function name>: public checks passed"``. These checks are public and not exhaustive: the
graded AUROC checks on the real features come on top.

:func:`check_auroc` (``results``) compares a measured AUROC with the answer key (:mod:`ood_utils.answer_key.expected`).
"""
from .nb00_tiny_clip import *  # noqa: F401,F403
from .nb01_features import *  # noqa: F401,F403
from .nb02_knn import *  # noqa: F401,F403
from .nb03_msp import *  # noqa: F401,F403
from .nb04_plp import *  # noqa: F401,F403
from .nb05_mahalanobis import *  # noqa: F401,F403
from .nb06_kmeans import *  # noqa: F401,F403
from .nb07_cac import *  # noqa: F401,F403
from .results import *  # noqa: F401,F403


def references() -> dict[str, frozenset[str]]:
    """``{check name: names of the references it compares with}`` for every check."""
    from ..registry import REFERENCES, reference_names

    return {name: reference_names(name) for name in REFERENCES}
