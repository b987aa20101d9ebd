"""What a notebook cell is, by its nbgrader metadata: the one home of these rules.

Follows nbgrader's ``nbgrader/utils.py``: a *solution* cell is the student's to edit, a
*grade* cell carries points, a *locked* cell (a grade cell that is not a solution, or one marked
``locked``) is put back from the instructor copy before grading.

The release stamps cells the way ``nbgrader generate_assignment`` (0.9.6) does, so that
``nbgrader validate`` and ``nbgrader autograde`` treat the course's student copies like their
own: :func:`lock_for_release` follows nbgrader's ``LockCells`` preprocessor and
:func:`stamp_checksum` its ``ComputeChecksums`` (``metadata.nbgrader.checksum`` and
``metadata.nbgrader.cell_type``), with :func:`nbgrader_checksum` computed exactly as nbgrader's
``utils.compute_checksum``.
"""
from __future__ import annotations

import hashlib

__all__ = ["nbgrader_meta", "cell_source", "is_solution", "is_grade", "is_locked",
           "is_graded_part", "grade_id", "nbgrader_checksum", "stamp_checksum",
           "lock_for_release"]


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


# --------------------------------------------------------------------------- nbgrader's stamps
def _nbgrader_flags(cell) -> tuple:
    """``(grade, solution, locked)`` exactly as nbgrader's ``utils.is_grade``, ``is_solution``,
    ``is_locked`` return them (raw metadata values, no ``grade_id`` condition: these feed the
    checksum, whose text includes ``str()`` of each)."""
    if "nbgrader" not in (cell.get("metadata") or {}):
        return False, False, False
    meta = cell["metadata"]["nbgrader"]
    grade, solution = meta.get("grade", False), meta.get("solution", False)
    locked = False if solution else (True if grade else meta.get("locked", False))
    return grade, solution, locked


def nbgrader_checksum(cell) -> str:
    """The checksum nbgrader 0.9.6 stores in ``metadata.nbgrader.checksum`` (``compute_checksum``).

    MD5 over, in this order: the source, the cell type, ``str()`` of the grade, solution and
    locked flags, the ``grade_id`` and, for a grade cell, ``str(float(points))``; all UTF-8.
    ``nbgrader validate`` recomputes it for every locked cell of a submission and reports the
    cell as changed when it differs.

    Raises
    ------
    ValueError
        The cell has no nbgrader ``grade_id`` (or a grade cell has no ``points``).
    """
    meta = nbgrader_meta(cell)
    if not meta.get("grade_id"):
        raise ValueError("cell has no metadata.nbgrader.grade_id; nbgrader checksums only "
                         "cells with a grade_id")
    grade, solution, locked = _nbgrader_flags(cell)
    md5 = hashlib.md5()
    for part in (cell_source(cell), cell["cell_type"], str(grade), str(solution), str(locked),
                 meta["grade_id"]):
        md5.update(str(part).encode("utf-8"))
    if grade:
        if meta.get("points") is None:
            raise ValueError(f"grade cell {meta['grade_id']!r} has no metadata.nbgrader.points")
        md5.update(str(float(meta["points"])).encode("utf-8"))
    return md5.hexdigest()


def stamp_checksum(cell) -> bool:
    """Add ``checksum`` and ``cell_type`` to a grade, solution or locked cell (in place).

    nbgrader's ``ComputeChecksums``: call it on the final (released) source. Returns whether
    the cell was stamped.
    """
    if not any(_nbgrader_flags(cell)):
        return False
    meta = cell["metadata"]["nbgrader"]
    meta["checksum"] = nbgrader_checksum(cell)
    meta["cell_type"] = cell["cell_type"]
    return True


def lock_for_release(cell) -> None:
    """nbgrader's ``LockCells`` with its defaults (in place): a solution cell cannot be
    deleted, a grade or locked cell can be neither deleted nor edited."""
    grade, solution, locked = _nbgrader_flags(cell)
    if solution:
        cell["metadata"]["deletable"] = False
    elif grade or locked:
        cell["metadata"]["deletable"] = False
        cell["metadata"]["editable"] = False
