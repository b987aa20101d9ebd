"""Grade student notebooks: run each in its own kernel and score the nbgrader check cells.

A part is one graded check cell of the instructor notebook (nbgrader ``grade: true`` with
``points``); it earns its points only on the grader's own verdict
(:mod:`ood_utils.grader.verdicts`, one per part in :mod:`ood_utils.grader.course_parts`):
after the cell has run, the grader calls the student's functions in the kernel on inputs of
its own and judges the plain values that come back, against references computed in this
process; a cell that leaves no verdict earns 0. Before a
submission runs, every locked cell (nbgrader ``grade: true`` or ``locked: true``) is restored
from the instructor copy, matched by ``grade_id``; a deleted one is put back after the cell
that precedes it in the instructor notebook. Each submission runs in a fresh temporary folder,
in its own kernel, under a cell time limit and a notebook time limit, with
``OOD_RESULTS_DIR`` pointing at that folder (course results are never overwritten) and
``OOD_FEATURES_DIR`` at the shared feature cache. A broken submission (syntax error, infinite
loop, dead kernel, invalid JSON) gives rows with a status and never stops the others.

Trust: each kernel runs in a bubblewrap sandbox (:mod:`ood_utils.grader.sandbox`: read-only course
and feature cache, no view of the instructor notebooks, the other submissions or the grades,
no network, an unprivileged uid, limits on memory, processes and CPU time); without a working
sandbox the grader refuses unless ``--no-sandbox`` is given; the sandbox mounts a build of the
package without the graded notebook's reference implementations (:mod:`ood_utils.grader.build`).
Every cell the student controls is screened (:mod:`ood_utils.answer_key.screen`); its findings
appear in the feedback as an early warning and decide nothing for the course's parts (for a
notebook without declared verdicts a flagged cell is not run and its parts are ``rejected``).

Matching a submission to its instructor notebook (``--source``, default ``notebooks/``):
  DIR/<student>/02_knn.ipynb    the file name is an instructor notebook's name;
                                the student id is the first folder below DIR
  DIR/<student>/<assignment>/02_knn.ipynb   (nbgrader's submitted/ layout) likewise
  DIR/<student>_02_knn.ipynb    the file name ends with "_" + an instructor notebook's name;
                                the student id is the part before it
A FOLDER argument is searched recursively for *.ipynb files (checkpoints skipped).

Output in --out DIR:
  grades.csv                    submission, part, score, max_score, status, message
                                (status: ok, failed, timeout, error, rejected)
  summary.md                    totals per student and notebook, pass rate per part
  <student>/<notebook>.ipynb    the executed notebook with a feedback cell after each part

Example: python -m ood_utils grade --out grades/ --jobs 2 submissions/
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import os
import re
import shutil
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import nbformat

from ..course._io import atomic_write_text
from ..course.cells import cell_source, is_graded_part, is_locked, nbgrader_meta
from ..course.profiles import PROFILES, notebooks_dir
from .course_parts import verdict_for
from .sandbox import NOT_PROTECTED, UID_BASE, Limits, limit_note, parse_size
from .verdicts import Outcome

__all__ = ["COLUMNS", "GradeOptions", "SandboxUnavailable", "Submission", "find_submissions", "match_submission", "graded_parts",
           "restore_locked_cells", "grade_notebook", "grade_submissions", "write_grades_csv",
           "write_summary", "configure_parser", "run"]

COLUMNS = ("submission", "part", "score", "max_score", "status", "message")
DEFAULT_CELL_TIMEOUT = 120
DEFAULT_TIMEOUT = 900
DEFAULT_MAX_OUTPUT_CHARS = 200_000
DEFAULT_MEMORY = "4G"
DEFAULT_MAX_PROCS = 256


class SandboxUnavailable(RuntimeError):
    """No working sandbox here and ``--no-sandbox`` was not given."""
_MSG = 300  # characters of a message kept in grades.csv


# --------------------------------------------------------------------------- parts
def graded_parts(nb) -> list[tuple[str, float]]:
    """``[(grade_id, points), ...]`` of the graded check cells of an instructor notebook."""
    parts = []
    for cell in nb.cells:
        if is_graded_part(cell):
            points = nbgrader_meta(cell).get("points", 0) or 0
            parts.append((nbgrader_meta(cell)["grade_id"], float(points)))
    return parts


def _short(text, limit=_MSG) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _fmt_points(x: float) -> str:
    return f"{x:g}"


# --------------------------------------------------------------------------- submissions
@dataclass
class Submission:
    """A submitted file and what it was matched to.

    ``key`` (the ``submission`` column of grades.csv) is ``<student>/<notebook name>``;
    ``source`` is the instructor notebook, or ``None`` when no match was found.
    """

    path: Path
    student: str
    notebook: str
    source: Path | None
    key: str


class _Found(type(Path())):
    """A submission file found under a folder argument; remembers that folder (``search_root``)."""

    search_root: Path | None = None


def find_submissions(args) -> list[Path]:
    """Expand files and folders into a list of files (folders: ``*.ipynb`` recursively).

    A file found under a folder argument remembers that folder (attribute ``search_root``), so
    that :func:`match_submission` can take the first folder below it as the student's id.
    """
    found: list[Path] = []
    for arg in map(Path, args):
        if arg.is_dir():
            for p in sorted(arg.rglob("*.ipynb")):
                if ".ipynb_checkpoints" not in p.parts and p.is_file():
                    item = _Found(p)
                    item.search_root = arg
                    found.append(item)
        else:
            found.append(arg)
    return found


def _student_id(text: str) -> str:
    """A safe folder name for a student id (other characters become ``_``)."""
    text = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._-")
    return text or "unknown"


def match_submission(path, source_names, root=None) -> tuple[str, str | None]:
    """``(student, instructor notebook name or None)`` for a submitted file.

    Rules: a file named exactly like an instructor notebook belongs to the student named by
    the first folder below ``root`` (the folder given on the command line) when the file lies
    in a subfolder of it, else by the folder holding the file. So both
    ``root/<student>/02_knn.ipynb`` and nbgrader's ``submitted/<student>/<assignment>/02_knn.ipynb``
    (with ``root = submitted``) name ``<student>``. A file named ``<student>_<notebook>`` (or
    ``<student>-<notebook>``) belongs to ``<student>`` (the longest matching notebook name
    wins). Otherwise no match.
    """
    if root is None:
        root = getattr(path, "search_root", None)
    path = Path(path)
    names = sorted(source_names, key=len, reverse=True)
    if path.name in names:
        if root is not None:
            try:
                rel = path.resolve().relative_to(Path(root).resolve())
            except ValueError:
                rel = None
            if rel is not None and len(rel.parts) >= 2:
                return _student_id(rel.parts[0]), path.name
        return _student_id(path.parent.resolve().name), path.name
    for name in names:
        for sep in ("_", "-"):
            if path.name.endswith(sep + name) and len(path.name) > len(name) + 1:
                return _student_id(path.name[: -len(name) - 1]), name
    return _student_id(path.stem), None


def _submissions(paths, source_dir: Path) -> list[Submission]:
    names = {p.name: p for p in sorted(source_dir.glob("*.ipynb"))}
    subs, seen = [], {}
    for path in paths:
        student, name = match_submission(path, names)
        key = f"{student}/{name or Path(path).name}"
        if key in seen:  # the same student handed in the same notebook twice
            seen[key] += 1
            key = f"{key}#{seen[key]}"
        else:
            seen[key] = 1
        subs.append(Submission(Path(path).absolute(), student, name or Path(path).name,
                               names.get(name) if name else None, key))
    return subs


# --------------------------------------------------------------------------- preparation
def _clean_copy(cell):
    new = nbformat.from_dict(json.loads(json.dumps(cell)))
    if new.cell_type == "code":
        new.outputs, new.execution_count = [], None
    return new


def restore_locked_cells(student_nb, instructor_nb):
    """Put the instructor's locked cells into a submission; returns ``(nb, notes)``.

    Locked cells (nbgrader ``grade: true`` or ``locked: true``, not solution cells) are
    matched by ``grade_id``; their source and metadata come from the instructor copy. A missing
    one is inserted after the cell matching its predecessor in the instructor notebook (cells
    are matched by ``grade_id``, else by nbformat cell ``id``). Student cells that claim a
    ``grade_id`` that is unknown or already used lose their nbgrader metadata, so a student
    cannot add or duplicate parts. All outputs are cleared. ``notes`` lists what was changed.
    """
    nb = nbformat.from_dict(json.loads(json.dumps(student_nb)))
    nb.cells = [_clean_copy(c) for c in nb.cells]
    known = {(nbgrader_meta(c).get("grade_id")) for c in instructor_nb.cells if nbgrader_meta(c).get("grade_id")}
    notes: list[str] = []
    used: set[str] = set()
    for cell in nb.cells:
        gid = nbgrader_meta(cell).get("grade_id")
        if gid is None:
            continue
        if gid not in known or gid in used:
            cell.metadata.pop("nbgrader", None)
            notes.append(f"cell with grade_id {gid!r} is not part of the assignment (ignored)")
        else:
            used.add(gid)

    def position(icell):
        gid = nbgrader_meta(icell).get("grade_id")
        for i, cell in enumerate(nb.cells):
            if gid and nbgrader_meta(cell).get("grade_id") == gid:
                return i
        cid = icell.get("id")
        if cid and not gid:
            for i, cell in enumerate(nb.cells):
                if cell.get("id") == cid and not nbgrader_meta(cell).get("grade_id"):
                    return i
        return None

    anchor = -1  # position in nb of the latest matched instructor cell
    for icell in instructor_nb.cells:
        pos = position(icell)
        if is_locked(icell):
            gid = nbgrader_meta(icell)["grade_id"]
            fresh = _clean_copy(icell)
            if pos is None:
                pos = anchor + 1
                nb.cells.insert(pos, fresh)
                notes.append(f"check cell {gid!r} was missing and has been restored")
            else:
                old = nb.cells[pos]
                if old.get("source") != icell.get("source") or old.cell_type != icell.cell_type:
                    notes.append(f"check cell {gid!r} was edited and has been restored")
                nb.cells[pos] = fresh
        if pos is not None:
            anchor = pos
    return nb, notes


# --------------------------------------------------------------------------- one submission
def _kernel_env(workdir: Path, profile: str | None, jobs: int) -> dict[str, str]:
    from ..course.profiles import data_dir, features_dir, get_profile, project_root

    prof = get_profile(profile)
    env = {
        "OOD_PROFILE": prof.name,
        "OOD_RESULTS_DIR": str(workdir),
        "OOD_FEATURES_DIR": str(features_dir(prof).parent.resolve()),
        "OOD_DATA_DIR": str(data_dir().resolve()),
        "OOD_ROOT": str(project_root()),
        "MPLBACKEND": "Agg",
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    if jobs > 1:  # parallel kernels share the cores: keep each one's thread pools small
        threads = str(max(1, (os.cpu_count() or 1) // jobs))
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            env.setdefault(var, os.environ.get(var, threads))
    return env


def _rows_for_all(sub: Submission, parts, status: str, message: str) -> list[dict]:
    if not parts:
        return [dict(submission=sub.key, part="(notebook)", score=0, max_score=0,
                     status=status, message=_short(message))]
    return [dict(submission=sub.key, part=gid, score=0, max_score=points, status=status,
                 message=_short(message)) for gid, points in parts]


def _feedback_cell(row) -> nbformat.NotebookNode:
    earned = f"{_fmt_points(row['score'])} / {_fmt_points(row['max_score'])} points"
    text = f"**Grader, part `{row['part']}`: {earned}**"
    if row["status"] != "ok":
        text += f" ({row['status']})\n\n" + "> " + row["message"].replace("\n", " ")
    cell = nbformat.v4.new_markdown_cell(text)
    cell.metadata["grader_feedback"] = True
    return cell


def _sandbox_paths(profile) -> list[Path]:
    """What a sandboxed kernel may read besides the system and Python: the course package,
    the data folder and the feature cache (all read-only)."""
    # not from .models: importing torch would cost every grading process seconds
    from ..course.profiles import data_dir, features_dir, weights_cache_dir

    return [Path(__file__).resolve().parents[1], data_dir(), features_dir(profile).parent,
            weights_cache_dir()]


def _stub(finding) -> str:
    return ("raise RuntimeError(" + repr("grader: this cell was not run. " + finding.message())
            + ")\n")


def judge_part(verdict, exchange_dir, run_code, box, profile, seed_shift, private_dir
               ) -> Outcome:
    """The grader's verdict on one part, from plain data the kernel hands over."""
    from .exchange import Exchange, KernelFailure
    from .execute import GraderStepFailed
    from .verdicts import Context

    def run(code):
        try:
            run_code(code)
        except GraderStepFailed as err:
            raise KernelFailure(f"the kernel stopped during the grader's step ({err})") from None

    exchange = Exchange(Path(exchange_dir) / f"part{len(list(Path(exchange_dir).iterdir())):02d}",
                        run, give=(box.give if box is not None else None))
    exchange.folder.mkdir(mode=0o755)
    exchange.kernel_folder = exchange.folder
    ctx = Context(exchange, profile, seed_shift,
                  references=_ReferenceStore(Path(private_dir) / "references"
                                             if private_dir else None))
    try:
        return verdict.judge(ctx)
    except Exception as err:  # noqa: BLE001 - a bug of the grader: no points, say so
        return Outcome.fail("grader", f"grader error: {type(err).__name__}: {err}")


class _ReferenceStore(dict):
    """Reference score vectors, kept in the grader's private folder for the whole run."""

    def __init__(self, folder):
        super().__init__()
        self.folder = folder

    def _path(self, key):
        return self.folder / ("-".join(map(str, key)) + ".npz")

    def __contains__(self, key):
        if dict.__contains__(self, key):
            return True
        if self.folder is not None and self._path(key).is_file():
            import numpy as np
            with np.load(self._path(key), allow_pickle=False) as z:
                dict.__setitem__(self, key, (z["a"], z["b"]))
            return True
        return False

    def __setitem__(self, key, value):
        import numpy as np
        import torch
        value = tuple(torch.as_tensor(v).detach().double().cpu().numpy() for v in value)
        dict.__setitem__(self, key, value)
        if self.folder is not None:
            self.folder.mkdir(parents=True, exist_ok=True)
            tmp = self._path(key).with_suffix(f".tmp{os.getpid()}.npz")
            np.savez(tmp, a=value[0], b=value[1])
            os.replace(tmp, self._path(key))


@dataclass(frozen=True)
class GradeOptions:
    """How one submission is graded (what :func:`grade_submissions` hands every worker).

    ``profile``: course profile of the kernel; ``cell_timeout``/``timeout``: seconds per cell
    and per notebook; ``max_output_chars``: output kept per cell; ``jobs``: submissions graded
    at once (the kernel's thread pools are sized by it); ``sandbox``, ``limits``, ``uid``,
    ``hidden``: the bubblewrap sandbox, its limits, the kernel's uid and the folders it must
    not see; ``private_dir``: the grader's own folder (stripped builds, reference cache; never
    mounted); ``seed_shift``: the secret shift of the self-checks' seeds for this run.
    """

    profile: str | None = None
    cell_timeout: float = DEFAULT_CELL_TIMEOUT
    timeout: float = DEFAULT_TIMEOUT
    max_output_chars: int = DEFAULT_MAX_OUTPUT_CHARS
    jobs: int = 1
    sandbox: bool = False
    limits: Limits | None = None
    hidden: tuple = ()
    uid: int = UID_BASE
    private_dir: str | None = None
    seed_shift: int = 0


def grade_notebook(sub: Submission, out_dir, options: GradeOptions | None = None, **changes
                   ) -> list[dict]:
    """Run one submission and return its rows (one per part); writes its feedback notebook.

    ``options`` (:class:`GradeOptions`, default: its defaults) with ``changes`` applied
    (keyword arguments named like its fields).

    Never raises for problems of the submission itself: they become rows with status
    ``error`` (unreadable file, kernel died), ``timeout``, ``failed`` or ``rejected`` (the
    screen of :mod:`ood_utils.answer_key.screen` found the checks patched or the reference used).
    With ``sandbox=True`` the kernel runs in a :class:`ood_utils.grader.sandbox.Sandbox` with
    ``limits`` as user ``uid``; ``hidden`` are folders it must not see.
    """
    import dataclasses

    from ..answer_key import checks, screen  # noqa: F401 (checks fill the registry the screen reads)
    from .execute import execute_notebook

    o = dataclasses.replace(options or GradeOptions(), **changes)
    profile, cell_timeout, timeout, max_output_chars = (o.profile, o.cell_timeout, o.timeout,
                                                        o.max_output_chars)
    jobs, sandbox, limits, hidden, uid = o.jobs, o.sandbox, o.limits, o.hidden, o.uid
    private_dir, seed_shift = o.private_dir, o.seed_shift

    out_dir = Path(out_dir)
    if sub.source is None:
        return _rows_for_all(sub, [], "error",
                             f"{sub.path.name}: no instructor notebook of that name; name the "
                             "file <student>_<notebook>.ipynb or <student>/<notebook>.ipynb")
    instructor = nbformat.read(sub.source, as_version=4)
    parts = graded_parts(instructor)
    try:
        text = Path(sub.path).read_text(encoding="utf-8")
        student_nb = nbformat.reads(text, as_version=4)
        if not isinstance(student_nb.get("cells"), list):
            raise ValueError("no list of cells")
        for cell in student_nb.cells:
            if not isinstance(cell, dict) or cell.get("cell_type") not in (
                    "code", "markdown", "raw"):
                raise ValueError("a cell is not a code, markdown or raw cell")
    except Exception as err:  # invalid JSON, not a notebook, unreadable bytes
        return _rows_for_all(sub, parts, "error", "cannot read the submission as a notebook "
                             f"(invalid JSON or not an .ipynb file): {type(err).__name__}")

    nb, notes = restore_locked_cells(student_nb, instructor)
    nb.metadata["kernelspec"] = instructor.metadata.get(
        "kernelspec", {"name": "python3", "display_name": "Python 3", "language": "python"})
    findings = screen.screen_notebook(nb, instructor)
    # the screen decides nothing for a part the grader judges outside the kernel; it still
    # guards the parts of a notebook without declared verdicts (not one of the course's):
    # those flagged cells are not run
    stem = Path(sub.source).stem
    verdicts = {gid: verdict_for(stem, gid) for gid, _ in parts}
    trusted_kernel = {gid for gid, v in verdicts.items() if v is None}
    findings = [f for f in findings if set(f.parts) & trusted_kernel] + \
        [f for f in findings if not set(f.parts) & trusted_kernel]
    originals = {}
    for finding in findings:  # a flagged cell is not run: it could patch what comes after
        if not set(finding.parts) & trusted_kernel:
            continue
        cell = nb.cells[finding.cell_index]
        originals[finding.cell_index] = cell_source(cell)
        cell.source = _stub(finding)
    limits = limits or Limits()
    root = Path(tempfile.mkdtemp(prefix="ood-grade-"))
    by_index = {i: nbgrader_meta(c).get("grade_id") for i, c in enumerate(nb.cells)
                if is_graded_part(c)}
    outcomes: dict[str, Outcome] = {}
    try:
        box = None
        readable = _sandbox_paths(profile)
        hide = list(hidden)
        if private_dir is not None:
            from .build import hidden_cache_files, stripped_package
            from ..course.profiles import features_dir
            package = stripped_package(stem, Path(private_dir))
            readable = [(package, readable[0])] + readable[1:]
            hide += [str(p) for p in hidden_cache_files(stem, features_dir(profile))]
        if sandbox:
            from .sandbox import Sandbox
            box = Sandbox(root, readable=readable, hidden=hide, limits=limits, uid=uid)
            box.seed_home()
            workdir = box.workdir
            exchange_dir = box.exchange_dir
        else:
            workdir = root / "work"
            workdir.mkdir()
            exchange_dir = root / "exchange"
            exchange_dir.mkdir()

        def after_cell(index, run_code):
            gid = by_index.get(index)
            verdict = verdicts.get(gid)
            if gid is None or verdict is None:
                return
            outcomes[gid] = judge_part(verdict, exchange_dir, run_code, box, profile,
                                       seed_shift, private_dir)

        result = execute_notebook(nb, cwd=workdir, env=_kernel_env(workdir, profile, jobs),
                                  cell_timeout=cell_timeout, timeout=timeout, allow_errors=True,
                                  max_output_chars=max_output_chars, quiet_kernel=True,
                                  sandbox=box, after_cell=after_cell)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    for index, source in originals.items():  # the feedback shows what the student wrote
        nb.cells[index].source = source
    rejected = {part: f for f in findings for part in f.parts if part in trusted_kernel}

    index = {(nbgrader_meta(c).get("grade_id")): i for i, c in enumerate(nb.cells) if is_graded_part(c)}
    stop = result.cell_index if result.status in ("timeout", "dead_kernel") else None
    rows = []
    for gid, points in parts:
        i = index.get(gid)
        row = dict(submission=sub.key, part=gid, score=0, max_score=points)
        if i is None:  # cannot happen after restoring, kept for safety
            row.update(status="error", message="check cell missing")
        elif gid in outcomes:  # the grader's own verdict, whatever the kernel printed
            outcome = outcomes[gid]
            if outcome.passed:
                row.update(score=points, status="ok", message=outcome.note)
            else:
                row.update(status="failed", message=outcome.failure.message)
        elif gid not in trusted_kernel and i in result.completed and result.status not in (
                "timeout", "dead_kernel"):
            row.update(status="error", message="no verdict: the grader could not judge this part")
        elif gid in rejected:
            row.update(status="rejected", message=rejected[gid].message())
        elif i in result.errors:
            ename, evalue = result.errors[i]
            note = limit_note(ename, evalue, limits) if sandbox else ""
            row.update(status="failed", message=(f"{ename}: {evalue}" if evalue else ename)
                       + (f" ({note})" if note else ""))
        elif i in result.completed:
            row.update(score=points, status="ok", message="")
        elif result.status == "timeout":
            where = "this cell" if i == stop else f"cell {stop}"
            row.update(status="timeout", message=f"not run: {where} stopped the notebook "
                                                 f"({result.evalue})")
        elif result.status == "dead_kernel":
            where = "this cell" if i == stop else f"cell {stop}"
            why = ""
            if "(" in result.evalue:  # the sandbox said why (e.g. the CPU time limit)
                why = " (" + result.evalue.split("(", 1)[1].rstrip(")") + ")"
            elif sandbox:
                why = f" (possibly at a sandbox limit: {limits.describe()})"
            row.update(status="error", message=f"not run: the kernel died in {where}{why}")
        else:
            row.update(status="error", message=f"not run: {result.ename}: {result.evalue}")
        row["message"] = _short(row["message"])
        rows.append(row)

    # feedback copy for the student
    for row in sorted(rows, key=lambda r: -index.get(r["part"], -1)):
        if row["part"] in index:  # from the bottom up, so the indices stay valid
            nb.cells.insert(index[row["part"]] + 1, _feedback_cell(row))
    total = sum(r["score"] for r in rows)
    possible = sum(r["max_score"] for r in rows)
    head = [f"# Grading feedback: {_fmt_points(total)} / {_fmt_points(possible)} points",
            f"Submission `{sub.key}`, run in {result.seconds:.0f} s, status `{result.status}`."]
    head += [f"- {n}" for n in notes]
    head += [f"- {f.label}: {f.message()}" for f in findings]
    top = nbformat.v4.new_markdown_cell("\n\n".join(head[:2]) + ("\n\n" + "\n".join(head[2:])
                                                                   if len(head) > 2 else ""))
    top.metadata["grader_feedback"] = True
    nb.cells.insert(0, top)
    target = out_dir / sub.student / Path(sub.key.split("/", 1)[1]).name
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(target, nbformat.writes(nb))
    return rows


# --------------------------------------------------------------------------- many submissions
def _worker(conn, sub, out_dir, options, environ, cwd):
    """Body of the child process that grades one submission; sends its rows back as JSON."""
    try:
        # the fork server was started by an earlier call: take the caller's current state
        os.environ.clear()
        os.environ.update(environ)
        os.chdir(cwd)
        rows = grade_notebook(sub, out_dir, options)
        conn.send(json.dumps(rows))
    except BaseException:  # a bug in the grader: report it as rows, do not hang the parent
        conn.send(json.dumps({"crash": traceback.format_exc(limit=3)}))
    finally:
        conn.close()


def grade_submissions(paths, source_dir=None, out_dir="grades", profile=None, jobs=1,
                      cell_timeout=DEFAULT_CELL_TIMEOUT, timeout=DEFAULT_TIMEOUT,
                      max_output_chars=DEFAULT_MAX_OUTPUT_CHARS, progress=False,
                      sandbox: bool = True, memory=DEFAULT_MEMORY,
                      max_procs: int = DEFAULT_MAX_PROCS, cpu_time: float | None = None
                      ) -> list[dict]:
    """Grade submissions and write ``grades.csv``, ``summary.md`` and feedback notebooks.

    Parameters
    ----------
    paths : list of str or Path
        Submitted files, or folders searched recursively for ``*.ipynb``.
    source_dir : str or Path
        Folder of the instructor notebooks.
    out_dir : str or Path
        Output folder (created).
    profile : str, optional
        Course profile for the kernels (``OOD_PROFILE``); default: the active profile.
    jobs : int
        Submissions graded at the same time. Each runs in its own child process driving its
        own kernel, so a submission that kills its parent process only loses its own rows.
    cell_timeout, timeout : float
        Seconds per cell and per submission.
    max_output_chars : int
        Bound on the stored output of each cell.
    sandbox : bool, default True
        Run every kernel in a bubblewrap sandbox (:mod:`ood_utils.grader.sandbox`). When the sandbox
        does not work here, :class:`SandboxUnavailable` is raised; ``False`` grades without it
        and prints what is then not protected.
    memory : str or int, default "4G"
        Data memory per kernel process (``RLIMIT_DATA``); ``0`` for no limit.
    max_procs : int, default 256
        Processes and threads per submission (``RLIMIT_NPROC``); ``0`` for no limit.
    cpu_time : float, optional
        CPU seconds per kernel process (all threads); default ``timeout`` times the threads
        a kernel may use.

    Returns
    -------
    list of dict
        One row per (submission, part) with the keys of :data:`COLUMNS`, in submission order.
    """
    import dataclasses
    import multiprocessing as mp

    source_dir = Path(source_dir if source_dir is not None else notebooks_dir()).resolve()
    out_dir = Path(out_dir).resolve()
    if not source_dir.is_dir():
        raise FileNotFoundError(f"source_dir={str(source_dir)!r} is not a folder; pass the "
                                "folder of the instructor notebooks (--source)")
    if not any(source_dir.glob("*.ipynb")):
        raise FileNotFoundError(f"no instructor notebooks (*.ipynb) in {source_dir}")
    if sandbox:
        from .sandbox import unavailable_reason
        reason = unavailable_reason()
        if reason:
            raise SandboxUnavailable(
                f"no sandbox for the submissions: {reason}. Install bubblewrap and grade as "
                "root on Linux, or pass --no-sandbox (sandbox=False) to grade without one, "
                "which leaves your files, the solutions and the grades open to the "
                "submissions")
    else:
        print(NOT_PROTECTED, file=sys.stderr)
    os.makedirs(out_dir, exist_ok=True)
    found = find_submissions(paths)
    subs = _submissions(found, source_dir)
    if profile is None:
        from ..course.profiles import get_profile
        profile = get_profile().name
    jobs = max(1, int(jobs))
    threads = max(1, (os.cpu_count() or 1) // jobs)
    limits = Limits(memory=parse_size(memory), procs=int(max_procs or 0),
                    cpu=int(cpu_time if cpu_time is not None
                            else (timeout or DEFAULT_TIMEOUT) * threads + 60))
    hidden = sorted({str(source_dir), str(out_dir), str(Path(notebooks_dir()).resolve())}
                    | {str(Path(p).resolve() if Path(p).is_dir() else Path(p).resolve().parent)
                       for p in paths})
    import secrets
    private_dir = Path(tempfile.mkdtemp(prefix="ood-grader-private-"))  # never mounted
    hidden.append(str(private_dir))
    options = GradeOptions(profile=profile, cell_timeout=cell_timeout, timeout=timeout,
                           max_output_chars=max_output_chars, jobs=jobs, sandbox=bool(sandbox),
                           limits=limits, hidden=tuple(hidden), private_dir=str(private_dir),
                           seed_shift=1000 + secrets.randbelow(1 << 30))
    # children are forked from a server that imported the grader once (a fresh interpreter
    # per submission would spend seconds importing nbformat/nbclient); started now, it does
    # those imports while this process verifies the feature cache
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["ood_utils.grader.grading", "ood_utils.grader.execute", "nbclient",
                               "ood_utils.answer_key.screen", "ood_utils.grader.sandbox",
                               "IPython.core.inputtransformer2"])
    from multiprocessing import forkserver
    forkserver.ensure_running()
    if subs:
        _prepare_feature_cache(profile, progress)
        from .build import stripped_package
        for stem in sorted({Path(s.source).stem for s in subs if s.source is not None}):
            stripped_package(stem, private_dir)  # once, before the children need it
    # one uid per running submission (the process limit counts per uid); another grader
    # running at the same time gets other uids
    uid_base = UID_BASE + (os.getpid() % 4096) * 64
    free_slots = list(range(min(jobs, 64)))
    hard_limit = (timeout or 24 * 3600) + 120  # the child enforces `timeout`; this is a backstop

    results: dict[int, list[dict]] = {}
    pending = list(enumerate(subs))
    running: dict[int, tuple] = {}
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=len(subs), unit="submission", desc="grading")

    def finish(i, rows):
        results[i] = rows
        if bar is not None:
            bar.update(1)

    while pending or running:
        while pending and len(running) < max(1, int(jobs)):
            i, sub = pending.pop(0)
            parent, child = ctx.Pipe(duplex=False)
            slot = free_slots.pop(0)
            proc = ctx.Process(target=_worker, daemon=True,
                               args=(child, sub, str(out_dir),
                                     dataclasses.replace(options, uid=uid_base + slot),
                                     dict(os.environ),
                                     os.getcwd()))
            proc.start()
            child.close()
            running[i] = (proc, parent, time.monotonic(), slot)
        for i, (proc, conn, started, slot) in list(running.items()):
            sub = subs[i]
            payload = None
            if conn.poll():
                try:
                    payload = json.loads(conn.recv())
                except (EOFError, OSError, ValueError):
                    payload = None
            elif proc.is_alive() and time.monotonic() - started < hard_limit:
                continue
            proc.join(timeout=5)
            if proc.is_alive():
                proc.kill()
                proc.join()
            conn.close()
            del running[i]
            free_slots.append(slot)
            parts = graded_parts(nbformat.read(sub.source, as_version=4)) if sub.source else []
            if isinstance(payload, list):
                finish(i, payload)
            elif isinstance(payload, dict):
                finish(i, _rows_for_all(sub, parts, "error",
                                        "grader error: " + payload["crash"].splitlines()[-1]))
            else:
                finish(i, _rows_for_all(sub, parts, "error",
                                        f"the grading process died (exit code {proc.exitcode}); "
                                        "did the submission kill its parent process?"))
        time.sleep(0.05)
    if bar is not None:
        bar.close()
    shutil.rmtree(private_dir, ignore_errors=True)
    rows = [row for i in range(len(subs)) for row in results[i]]
    write_grades_csv(rows, out_dir / "grades.csv")
    write_summary(rows, out_dir / "summary.md")
    return rows


def _prepare_feature_cache(profile, progress: bool = False) -> None:
    """Verify the feature cache (digests included) once, before any kernel sees it.

    Trusted work done here, once: a damaged, stale or missing cache is extracted and saved
    now; otherwise every sandboxed kernel, which sees the cache read-only, would extract the
    features again for itself (tens of seconds per submission) without saving them.
    """
    from ..course.features import load_features

    try:
        load_features(profile, progress=progress)
    except Exception as err:  # weights or data missing here: the kernels will say so per part
        print(f"grader: could not prepare the feature cache of profile {profile!r} "
              f"({type(err).__name__}: {_short(err)}); every submission that needs features "
              "will try to extract them itself", file=sys.stderr)


# --------------------------------------------------------------------------- reports
def write_grades_csv(rows, path) -> None:
    """``grades.csv`` with the columns of :data:`COLUMNS` (scores without trailing ``.0``)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({**row, "score": _fmt_points(row["score"]),
                         "max_score": _fmt_points(row["max_score"])})
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, buf.getvalue())


def write_summary(rows, path) -> None:
    """``summary.md``: totals per submission and pass rate per part."""
    by_sub: dict[str, list[dict]] = {}
    for row in rows:
        by_sub.setdefault(row["submission"], []).append(row)
    lines = ["# Grading summary", "",
             f"{len(by_sub)} submission(s), {len(rows)} graded part(s).", "",
             "## Totals", "", "| submission | score | max | parts ok | problems |",
             "|---|---:|---:|---:|---|"]
    for key, rs in by_sub.items():
        ok = sum(r["status"] == "ok" for r in rs)
        probs = sorted({r["status"] for r in rs if r["status"] != "ok"})
        lines.append(f"| {key} | {_fmt_points(sum(r['score'] for r in rs))} | "
                     f"{_fmt_points(sum(r['max_score'] for r in rs))} | {ok}/{len(rs)} | "
                     f"{', '.join(probs)} |")
    lines += ["", "## Parts", "", "| notebook | part | passed | rate |", "|---|---|---:|---:|"]
    by_part: dict[tuple[str, str], list[dict]] = {}
    for row in rows:
        notebook = row["submission"].split("/", 1)[-1].split("#")[0]
        by_part.setdefault((notebook, row["part"]), []).append(row)
    for (notebook, part), rs in by_part.items():
        ok = sum(r["status"] == "ok" for r in rs)
        lines.append(f"| {notebook} | {part} | {ok}/{len(rs)} | {100.0 * ok / len(rs):.0f}% |")
    problems = [r for r in rows if r["status"] in ("error", "timeout")]
    if problems:
        lines += ["", "## Problems", ""]
        seen = set()
        for r in problems:
            item = (r["submission"], r["status"], r["message"])
            if item not in seen:
                seen.add(item)
                lines.append(f"- `{r['submission']}` ({r['status']}): {r['message']}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, "\n".join(lines) + "\n")


# --------------------------------------------------------------------------- command line
def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``python -m ood_utils grade``."""
    parser.add_argument("submissions", nargs="+", metavar="SUBMISSION",
                        help="submitted .ipynb files, or folders searched recursively")
    parser.add_argument("--out", required=True, metavar="DIR",
                        help="folder for grades.csv, summary.md and feedback notebooks")
    parser.add_argument("--source", default=None, metavar="DIR",
                        help="folder of the instructor notebooks (default: the course's "
                             "notebooks/)")
    parser.add_argument("--profile", choices=sorted(PROFILES), default=None,
                        help="course profile for the kernels (default: $OOD_PROFILE or "
                             "miniclip)")
    parser.add_argument("--jobs", type=int, default=1, metavar="N",
                        help="submissions graded in parallel (default 1)")
    parser.add_argument("--cell-timeout", type=float, default=DEFAULT_CELL_TIMEOUT,
                        metavar="SECONDS",
                        help=f"time limit per cell (default {DEFAULT_CELL_TIMEOUT})")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, metavar="SECONDS",
                        help=f"time limit per submission (default {DEFAULT_TIMEOUT})")
    parser.add_argument("--max-output-chars", type=int, default=DEFAULT_MAX_OUTPUT_CHARS,
                        metavar="N", help="characters of output kept per cell in the "
                                          f"feedback notebooks (default {DEFAULT_MAX_OUTPUT_CHARS})")
    box = parser.add_argument_group(
        "sandbox", "Each submission's kernel runs in a bubblewrap sandbox: read-only system, "
        "course package and feature cache; a private working folder, HOME and /tmp; no view "
        "of the instructor notebooks, other submissions or the grades; no network; an "
        "unprivileged uid; the limits below. A submission that reaches a limit gets status "
        "error/failed/timeout with a message naming the limit. Needs Linux, root and "
        "bubblewrap (`apt-get install bubblewrap`; `make` installs it).")
    box.add_argument("--memory", default=DEFAULT_MEMORY, metavar="SIZE",
                     help=f"data memory per kernel process, e.g. 2G, 512M, 0 = no limit "
                          f"(default {DEFAULT_MEMORY})")
    box.add_argument("--max-procs", type=int, default=DEFAULT_MAX_PROCS, metavar="N",
                     help="processes and threads per submission, 0 = no limit "
                          f"(default {DEFAULT_MAX_PROCS})")
    box.add_argument("--cpu-time", type=float, default=None, metavar="SECONDS",
                     help="CPU seconds per kernel process, all threads together (default: "
                          "--timeout times the threads each kernel may use)")
    box.add_argument("--no-sandbox", action="store_true",
                     help="grade WITHOUT the sandbox (when none is available): submissions then "
                          "run with your permissions and can read the solutions and change "
                          "files; only the time limits and the static screen of the cells "
                          "apply. The grader says so loudly")


def run(args) -> int:
    """Entry point of ``python -m ood_utils grade``; returns the exit status."""

    source = Path(args.source) if args.source else notebooks_dir()
    if args.jobs < 1:
        print("error: --jobs must be at least 1", file=sys.stderr)
        return 2
    try:
        parse_size(args.memory)
    except ValueError as err:
        print(f"error: --memory: {err}", file=sys.stderr)
        return 2
    try:
        rows = grade_submissions(args.submissions, source, args.out, profile=args.profile,
                                 jobs=args.jobs, cell_timeout=args.cell_timeout,
                                 timeout=args.timeout, max_output_chars=args.max_output_chars,
                                 progress=True, sandbox=not args.no_sandbox,
                                 memory=args.memory, max_procs=args.max_procs,
                                 cpu_time=args.cpu_time)
    except SandboxUnavailable as err:
        print(f"error: {err}", file=sys.stderr)
        return 3
    except FileNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if not rows:
        print("error: no submissions found", file=sys.stderr)
        return 2
    subs = {r["submission"] for r in rows}
    print(f"graded {len(subs)} submission(s); see {Path(args.out) / 'grades.csv'} and "
          f"{Path(args.out) / 'summary.md'}")
    return 0
