"""How a hostile (or honest) submission is described and turned into a notebook.

A :class:`Sub` names an instructor notebook (``notebooks/NN_name.ipynb``) and says what the
student wrote: for an exercise cell (found by its nbgrader ``grade_id``) the code between
``### START CODE HERE ###`` and ``### END CODE HERE ###`` (:func:`body`), or the whole cell
(:func:`whole`), or lines put in front of the cell (:func:`prefix`); ``added`` holds cells the
student inserted before a given cell. Every other cell stays as in the instructor copy (the
instructor's solution is what an honest student writes).

``cheated`` lists the graded parts (``grade_id`` of check cells) that the submission did NOT
compute honestly: they must earn 0. Every other graded part was computed honestly by the
instructor's code (or by the honest alternative) and must keep its points.
"""
from __future__ import annotations

import json
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
NOTEBOOKS = ROOT / "notebooks"
START, END = "### START CODE HERE ###", "### END CODE HERE ###"
FAMILIES = {
    "reach": "reaches the reference by a route a deny list does not name",
    "switch-off": "switches the checks off",
    "hide": "hides a failure",
    "forge": "forges the result",
    "own": "other routes (this suite's own)",
    "honest": "an honest alternative (full marks)",
    "reference": "the instructor's solution (full marks)",
}


@dataclass(frozen=True)
class Edit:
    mode: str   # "body" | "whole" | "prefix"
    text: str
    block: int = 0  # which START/END block of the cell (07's sweep cell has two)


def body(text: str, block: int = 0) -> Edit:
    """The student's code between the markers (indented like the marker line)."""
    return Edit("body", textwrap.dedent(text).strip("\n"), block)


def whole(text: str) -> Edit:
    return Edit("whole", textwrap.dedent(text).strip("\n"))


def prefix(text: str) -> Edit:
    return Edit("prefix", textwrap.dedent(text).strip("\n"))


@dataclass(frozen=True)
class Sub:
    student: str
    notebook: str                       # stem, e.g. "02_knn"
    family: str
    what: str                           # one line: the route
    cells: dict = field(default_factory=dict)    # exercise grade_id -> Edit (or several)
    added: dict = field(default_factory=dict)    # grade_id -> source of a cell put before it
    cheated: frozenset = frozenset()    # graded parts not computed honestly: must earn 0

    @property
    def file_name(self) -> str:
        return f"{self.student}_{self.notebook}.ipynb"


def _meta(cell) -> dict:
    return (cell.get("metadata") or {}).get("nbgrader") or {}


def _source(cell) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def instructor(notebook: str) -> dict:
    return json.loads((NOTEBOOKS / f"{notebook}.ipynb").read_text(encoding="utf-8"))


def graded_parts(notebook: str) -> dict:
    """``{grade_id: points}`` of the check cells of an instructor notebook (nbgrader metadata:
    a code cell with ``grade: true`` and ``points``), read here without the course's code."""
    out = {}
    for cell in instructor(notebook)["cells"]:
        meta = _meta(cell)
        if cell.get("cell_type") == "code" and meta.get("grade") and meta.get("grade_id"):
            out[meta["grade_id"]] = float(meta.get("points") or 0)
    return out


def _replace_block(source: str, code: str, block: int) -> str:
    lines = source.split("\n")
    starts = [i for i, line in enumerate(lines) if START in line]
    ends = [i for i, line in enumerate(lines) if END in line]
    if block >= len(starts) or block >= len(ends):
        raise ValueError(f"the cell has no START/END block number {block}")
    s, e = starts[block], ends[block]
    indent = lines[s][: len(lines[s]) - len(lines[s].lstrip())]
    new = [indent + line if line.strip() else "" for line in code.split("\n")]
    return "\n".join(lines[: s + 1] + new + lines[e:])


def build(sub: Sub) -> dict:
    """The submitted notebook (nbformat 4 JSON as a dict), outputs cleared."""
    nb = instructor(sub.notebook)
    by_id = {_meta(c).get("grade_id"): c for c in nb["cells"] if _meta(c).get("grade_id")}
    for gid, edits in sub.cells.items():
        if gid not in by_id:
            raise KeyError(f"{sub.student}: {sub.notebook} has no cell with grade_id {gid!r}")
        cell = by_id[gid]
        if not _meta(cell).get("solution"):
            raise ValueError(f"{sub.student}: {gid!r} is not an exercise cell; a student "
                             "cannot change it (the grader restores it)")
        src = _source(cell)
        for edit in edits if isinstance(edits, (list, tuple)) else [edits]:
            if edit.mode == "body":
                src = _replace_block(src, edit.text, edit.block)
            elif edit.mode == "whole":
                src = edit.text
            elif edit.mode == "prefix":
                src = edit.text + "\n\n" + src
        cell["source"] = src
    for n, (gid, text) in enumerate(sub.added.items()):
        index = next(i for i, c in enumerate(nb["cells"]) if _meta(c).get("grade_id") == gid)
        cell = {"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [],
                "source": textwrap.dedent(text).strip("\n")}
        if nb.get("nbformat_minor", 0) >= 5:
            cell["id"] = f"student-added-{n}"
        nb["cells"].insert(index, cell)
    for cell in nb["cells"]:
        if cell.get("cell_type") == "code":
            cell["outputs"], cell["execution_count"] = [], None
    parts = graded_parts(sub.notebook)
    unknown = set(sub.cheated) - set(parts)
    if unknown:
        raise KeyError(f"{sub.student}: no graded parts {sorted(unknown)} in {sub.notebook}")
    return nb


def write(sub: Sub, folder: Path) -> Path:
    path = Path(folder) / sub.file_name
    path.write_text(json.dumps(build(sub), indent=1), encoding="utf-8")
    return path
