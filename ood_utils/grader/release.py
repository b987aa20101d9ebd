"""Build the student copies of the course notebooks (solutions removed, outputs cleared).

Every ``### BEGIN SOLUTION`` ... ``### END SOLUTION`` block of an exercise cell (nbgrader
metadata ``solution: true``) becomes an empty frame

    ### START CODE HERE ### (≈ N lines of code)
    raise NotImplementedError("...")
    ### END CODE HERE ###

where N counts the non-blank, non-comment lines of the solution. A block at the top level of
a cell keeps every variable the solution assigns as ``name = ...`` above the ``raise``.
Outputs and execution counts are cleared, nbgrader metadata is kept, check cells (nbgrader
``grade: true``) are locked (``locked: true``). Cells are then stamped as
``nbgrader generate_assignment`` stamps them (see :mod:`ood_utils.course.cells`): exercise cells get
``deletable: false``, check and locked cells ``deletable: false`` and ``editable: false``, and
every exercise, check and locked cell gets nbgrader's ``checksum`` of its released source and
its ``cell_type``, so ``nbgrader validate`` reports a student copy whose checks were edited.
Files are written with permission 0644 (readable by a course exchange), like nbgrader's.

Before anything is written, every string of the released notebook (sources, outputs,
metadata, attachments) is searched for every solution line of 12 or more non-space characters
that does not also occur in code outside the solution blocks; the release stops if one is found.
Malformed markers (missing END, nested BEGIN, END without BEGIN, markers in a cell that is not
an nbgrader solution cell, a solution cell without markers) stop it too, naming the notebook,
the cell (0-based index in the notebook) and the line (1-based within the cell).

Example: python -m ood_utils release --out release/ notebooks/02_knn.ipynb
"""
from __future__ import annotations

import argparse
import ast
import base64
import copy
import json
import re
import sys
import textwrap
from pathlib import Path

import nbformat

from ..course._io import atomic_write_text
from ..course.cells import cell_source, is_solution, lock_for_release, nbgrader_meta, stamp_checksum

__all__ = ["ReleaseError", "release_notebook", "release_course", "find_leaks",
           "solution_lines", "configure_parser", "run"]

BEGIN_RE = re.compile(r"^(?P<indent>[ \t]*)###\s*BEGIN SOLUTION\s*$")
END_RE = re.compile(r"^[ \t]*###\s*END SOLUTION\s*$")
ANY_MARKER_RE = re.compile(r"###\s*(BEGIN|END) SOLUTION")
START_RE = re.compile(r"^[ \t]*###\s*START CODE HERE\s*###.*$")
STOP_RE = re.compile(r"^[ \t]*###\s*END CODE HERE\s*###\s*$")
MIN_SECRET_CHARS = 12
RAISE_TEXT = "replace this line with your code"
MARKDOWN_BLANK = "YOUR ANSWER HERE"


class ReleaseError(ValueError):
    """A notebook cannot be released (malformed markers or solution text left behind)."""


def _where(name: str, index: int, line: int | None = None) -> str:
    return f"{name}: cell {index}" + (f", line {line}" if line is not None else "")


# --------------------------------------------------------------------------- parsing blocks
def _solution_blocks(lines: list[str], name: str, index: int) -> list[tuple[int, int]]:
    """``(begin, end)`` line indices (0-based, inclusive markers) of every solution block."""
    blocks, begin = [], None
    for i, line in enumerate(lines):
        if BEGIN_RE.match(line):
            if begin is not None:
                raise ReleaseError(f"{_where(name, index, i + 1)}: '### BEGIN SOLUTION' inside "
                                   f"the block opened on line {begin + 1}; close it with "
                                   "'### END SOLUTION' first")
            begin = i
        elif END_RE.match(line):
            if begin is None:
                raise ReleaseError(f"{_where(name, index, i + 1)}: '### END SOLUTION' without "
                                   "a matching '### BEGIN SOLUTION'")
            blocks.append((begin, i))
            begin = None
        elif ANY_MARKER_RE.search(line):
            raise ReleaseError(f"{_where(name, index, i + 1)}: solution marker must stand "
                               f"alone on its line, found {line.strip()!r}")
    if begin is not None:
        raise ReleaseError(f"{_where(name, index, begin + 1)}: '### BEGIN SOLUTION' is never "
                           "closed; add '### END SOLUTION'")
    return blocks


def _count_code_lines(body: list[str]) -> int:
    return sum(1 for line in body if line.strip() and not line.strip().startswith("#"))


def _assigned_names(body: list[str]) -> list[str]:
    """Names bound by top-level assignments of a code block, in order of first appearance."""
    try:
        tree = ast.parse(textwrap.dedent("\n".join(body)))
    except SyntaxError:
        return []
    names: list[str] = []

    def add(target):
        if isinstance(target, ast.Name) and target.id not in names:
            names.append(target.id)
        elif isinstance(target, (ast.Tuple, ast.List)):
            for elt in target.elts:
                add(elt.value if isinstance(elt, ast.Starred) else elt)

    for node in tree.body:
        if isinstance(node, ast.Assign):
            for target in node.targets:
                add(target)
        elif isinstance(node, (ast.AnnAssign, ast.AugAssign)):
            add(node.target)
    return names


def _blank_code(lines: list[str], blocks) -> list[str]:
    out: list[str] = []
    pos = 0
    for begin, end in blocks:
        indent = BEGIN_RE.match(lines[begin]).group("indent")
        body = lines[begin + 1:end]
        head = lines[pos:begin]
        filled = [i for i, line in enumerate(head) if line.strip()]
        if filled and START_RE.match(head[filled[-1]]):
            head = head[:filled[-1]]  # the frame is already there: rewrite its line count
        out.extend(head)
        out.append(f"{indent}### START CODE HERE ### (≈ {_count_code_lines(body)} lines of code)")
        if not indent:
            out.extend(f"{name} = ..." for name in _assigned_names(body))
        out.append(f'{indent}raise NotImplementedError("{RAISE_TEXT}")')
        out.append(f"{indent}### END CODE HERE ###")
        pos = end + 1
        after = pos
        while after < len(lines) and not lines[after].strip():
            after += 1
        if after < len(lines) and STOP_RE.match(lines[after]):
            pos = after + 1
    out.extend(lines[pos:])
    return out


def _blank_markdown(lines: list[str], blocks) -> list[str]:
    out: list[str] = []
    pos = 0
    for begin, end in blocks:
        out.extend(lines[pos:begin])
        out.append(MARKDOWN_BLANK)
        pos = end + 1
    out.extend(lines[pos:])
    return out


def solution_lines(nb, name: str = "notebook") -> list[str]:
    """Solution lines of ``nb`` that must not survive a release.

    Stripped lines inside solution blocks with at least 12 non-space characters, excluding
    those that also occur in code outside every solution block (public code anyway, e.g. an
    import repeated from the setup cell).
    """
    inside, outside = [], []
    for index, cell in enumerate(nb.cells):
        lines = cell_source(cell).splitlines()
        blocks = _solution_blocks(lines, name, index) if is_solution(cell) else []
        taken = set()
        for begin, end in blocks:
            taken.update(range(begin, end + 1))
            inside.extend(lines[begin + 1:end])
        if cell.cell_type == "code":  # prose quoting a solution line is still a leak
            outside.extend(line for i, line in enumerate(lines) if i not in taken)
    public = "\n".join(_norm(line) for line in outside)
    secrets = []
    for line in inside:
        text = _norm(line)
        if len(text.replace(" ", "")) >= MIN_SECRET_CHARS and text not in public \
                and text not in secrets:
            secrets.append(text)
    return secrets


def _norm(text: str) -> str:
    return " ".join(str(text).split())


def _strings(obj, path="") -> list[tuple[str, str]]:
    """Every string (keys included) inside a JSON-like object, with a readable path."""
    found = []
    if isinstance(obj, dict):
        for key, value in obj.items():
            found.append((f"{path}/{key}", str(key)))
            found.extend(_strings(value, f"{path}/{key}"))
    elif isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            found.extend(_strings(value, f"{path}[{i}]"))
    elif isinstance(obj, str):
        found.append((path, obj))
        if "/attachments/" in path:  # attachment payloads are base64: search the decoded bytes
            try:
                decoded = base64.b64decode(obj, validate=True).decode("utf-8", "ignore")
                found.append((path + " (decoded)", decoded))
            except (ValueError, TypeError):
                pass
    return found


def find_leaks(released, secrets: list[str]) -> list[str]:
    """Places in ``released`` (a notebook or its JSON text) where a secret line appears."""
    if isinstance(released, str):
        released = json.loads(released)
    haystack = [(path, _norm(text)) for path, text in _strings(dict(released))]
    leaks = []
    for secret in secrets:
        for path, text in haystack:
            if secret in text:
                leaks.append(f"{path}: {secret[:60]!r}")
    return leaks


# --------------------------------------------------------------------------- one notebook
def release_notebook(nb, name: str = "notebook"):
    """Student copy of an instructor notebook (a new object; ``nb`` is not modified).

    Parameters
    ----------
    nb : nbformat.NotebookNode
        Instructor notebook (nbformat 4) with solution blocks in nbgrader solution cells.
    name : str
        Used in error messages (usually the file name).

    Returns
    -------
    nbformat.NotebookNode

    Raises
    ------
    ReleaseError
        Malformed markers (message names notebook, cell and line) or solution text left
        anywhere in the result.
    """
    out = copy.deepcopy(nb)
    for index, cell in enumerate(out.cells):
        lines = cell_source(cell).splitlines()
        if not is_solution(cell):
            for i, line in enumerate(lines):
                if ANY_MARKER_RE.search(line):
                    raise ReleaseError(
                        f"{_where(name, index, i + 1)}: solution marker in a cell that is not "
                        "an nbgrader solution cell; set metadata nbgrader.solution = true or "
                        "remove the marker")
        else:
            blocks = _solution_blocks(lines, name, index)
            if not blocks and cell.cell_type == "code":
                raise ReleaseError(f"{_where(name, index)}: nbgrader solution cell without "
                                   "'### BEGIN SOLUTION' / '### END SOLUTION'; the whole cell "
                                   "would be released as is")
            if blocks:
                blank = _blank_markdown if cell.cell_type != "code" else _blank_code
                cell.source = "\n".join(blank(lines, blocks))
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
        cell.get("metadata", {}).pop("execution", None)
        meta = nbgrader_meta(cell)
        if meta.get("grade", False) and not meta.get("solution", False):
            meta["locked"] = True
        meta.pop("checksum", None)  # stale stamps of the instructor copy
        meta.pop("cell_type", None)
        lock_for_release(cell)
        try:
            stamp_checksum(cell)  # on the released source, as nbgrader does
        except ValueError as err:
            raise ReleaseError(f"{_where(name, index)}: {err}") from None
    leaks = find_leaks(out, solution_lines(nb, name))
    if leaks:
        raise ReleaseError(f"{name}: solution text would be released: " + "; ".join(leaks[:5]))
    return out


def lock_readonly_cells(nb, prefix: str) -> int:
    """Mark every code cell that is neither a solution nor a check cell as locked (in place).

    Each gets nbgrader metadata ``{"grade": false, "solution": false, "locked": true,
    "grade_id": "<prefix>_cellNN"}`` so that the grader restores it from the instructor copy
    (a student cannot edit the setup or plotting code to change a grade). Returns how many
    cells were marked; cells that already have nbgrader metadata are left alone.
    """
    marked = 0
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code" or "nbgrader" in cell.get("metadata", {}):
            continue
        cell.metadata["nbgrader"] = {"grade": False, "solution": False, "locked": True,
                                     "grade_id": f"{prefix}_cell{index:02d}",
                                     "schema_version": 3}
        marked += 1
    return marked


# --------------------------------------------------------------------------- files
def release_files(paths, out_dir) -> list[Path]:
    """Release the given notebook files into ``out_dir`` (same file names).

    Every notebook is built and checked before the first one is written, so a bad notebook
    leaves ``out_dir`` untouched. Returns the written paths.
    """
    out_dir = Path(out_dir)
    built = []
    for path in map(Path, paths):
        if path.suffix != ".ipynb":
            raise ReleaseError(f"{path}: not a notebook (expected a .ipynb file)")
        try:
            nb = nbformat.read(path, as_version=4)
        except Exception as err:
            raise ReleaseError(f"{path}: cannot read the notebook ({err})") from err
        released = release_notebook(nb, name=path.name)
        built.append((released, out_dir / path.name, solution_lines(nb, path.name)))
    for src, (_, dst, _) in zip(paths, built):
        if Path(src).resolve() == dst.resolve():
            raise ReleaseError(f"{src}: --out would overwrite the instructor copy")
    for nb, dst, secrets in built:
        # what students get is the file text: check its serialised form as well
        leaks = find_leaks(nbformat.writes(nb), secrets)
        if leaks:
            raise ReleaseError(f"{dst.name}: solution text would be released: {leaks[0]}")
    for nb, dst, _ in built:
        atomic_write_text(dst, nbformat.writes(nb), mode=0o644)  # nbgrader writes 0644 too
    return [dst for _, dst, _ in built]


def release_course(src_dir, out_dir) -> list[Path]:
    """Release every ``*.ipynb`` directly in ``src_dir`` into ``out_dir``; nothing else is copied."""
    paths = sorted(Path(src_dir).glob("*.ipynb"))
    if not paths:
        raise ReleaseError(f"{src_dir}: no notebooks (*.ipynb) found")
    return release_files(paths, out_dir)


# --------------------------------------------------------------------------- command line
def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``python -m ood_utils release``."""
    parser.add_argument("--out", required=True, metavar="DIR",
                        help="folder for the student notebooks (created if missing)")
    parser.add_argument("notebooks", nargs="*", metavar="NOTEBOOK",
                        help="instructor notebooks to release (default: every notebook in "
                             "the course's notebooks/ folder)")


def run(args) -> int:
    """Entry point of ``python -m ood_utils release``; returns the exit status."""
    from ..course.profiles import notebooks_dir

    try:
        if args.notebooks:
            written = release_files(args.notebooks, args.out)
        else:
            written = release_course(notebooks_dir(), args.out)
    except ReleaseError as err:
        print(f"release failed, nothing written: {err}", file=sys.stderr)
        return 1
    for path in written:
        print(f"released {path}")
    return 0
