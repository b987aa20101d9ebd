"""What a notebook cell is, by its nbgrader metadata: the one home of these rules.

Follows nbgrader's ``nbgrader/utils.py``: a *solution* cell is the student's to edit, a
*grade* cell carries points, a *locked* cell (a grade cell that is not a solution, or one marked
``locked``) is put back from the instructor copy before grading.
"""
from __future__ import annotations

__all__ = ["nbgrader_meta", "cell_source", "is_solution", "is_grade", "is_locked",
           "is_graded_part", "grade_id"]


def nbgrader_meta(cell) -> dict:
    """The cell's ``metadata.nbgrader`` dict (empty when absent)."""
    return (cell.get("metadata") or {}).get("nbgrader") or {}


def cell_source(cell) -> str:
    """The cell's source as one string (nbformat allows a list of lines)."""
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else str(src)


def grade_id(cell) -> str | None:
    return nbgrader_meta(cell).get("grade_id")


def is_solution(cell) -> bool:
    return bool(nbgrader_meta(cell).get("solution", False))


def is_grade(cell) -> bool:
    return bool(nbgrader_meta(cell).get("grade", False))


def is_locked(cell) -> bool:
    """Restored from the instructor copy: has a ``grade_id``, is graded or locked, no solution."""
    meta = nbgrader_meta(cell)
    return bool(meta.get("grade_id")) and bool(meta.get("grade") or meta.get("locked")) \
        and not meta.get("solution", False)


def is_graded_part(cell) -> bool:
    """A code cell that carries points (an autograded check)."""
    return is_grade(cell) and bool(grade_id(cell)) and cell.get("cell_type") == "code"
