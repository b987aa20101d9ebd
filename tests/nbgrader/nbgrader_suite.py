"""The course under real nbgrader: ``make test-nbgrader`` (not collected by ``make test``).

1. ``stderr_suite.py`` (same target): no graded cell of any notebook writes to stderr.
2. The nbgrader tests install nbgrader (pinned, :data:`NBGRADER`) into ``.venv-nbgrader``
   (git-ignored; reused when it holds that version), register a kernelspec that runs the
   course's Python with ``OOD_FEATURES_DIR``/``OOD_RESULTS_DIR``/``OOD_PROFILE`` set, build an
   nbgrader course folder for :data:`NOTEBOOKS` (``$OOD_NBGRADER_NOTEBOOKS``, comma-separated
   stems, default ``02_knn,05_mahalanobis``) and run ``generate_assignment``, ``validate`` and
   ``autograde`` on five submissions per notebook:

   ``solution``  the instructor copy;
   ``warner``    the instructor copy whose exercise function also emits a torch UserWarning;
   ``blank``     the course's release, untouched;
   ``gutted``    the course's release with every check cell's source replaced by ``pass``;
   ``deleted``   the course's release with every check cell deleted.

   Scores are read from nbgrader's gradebook (its API) and compared with the instructor
   notebook's points (from its metadata) and with the course's own grader run on nbgrader's
   ``submitted/`` folder.
"""
from __future__ import annotations

import ast
import copy
import csv
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import nbformat
import pytest

from ood_utils.course.cells import is_graded_part, nbgrader_meta
from ood_utils.grader.grading import grade_submissions, graded_parts
from ood_utils.course.profiles import features_dir
from ood_utils.grader.release import release_files
from stderr_suite import CELL_TIMEOUT  # one cell time limit for both suites

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK_DIR = ROOT / "notebooks"
NBGRADER = "0.9.6"
VENV = ROOT / ".venv-nbgrader"
KERNEL = "ood-course"
ASSIGNMENT = "ood"
NOTEBOOKS = [s.strip() for s in os.environ.get("OOD_NBGRADER_NOTEBOOKS",
                                               "02_knn,05_mahalanobis").split(",") if s.strip()]
STUDENTS = ("solution", "warner", "blank", "gutted", "deleted")


def readme_config() -> str:
    """The ``nbgrader_config.py`` of README's nbgrader recipe: the suite runs exactly that."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    head = "cat > ~/ood-course/nbgrader_config.py <<'PY'\n"
    assert head in text, "README.md lost its nbgrader recipe (nbgrader_config.py block)"
    body = text.split(head, 1)[1].split("\nPY\n", 1)[0] + "\n"
    for line in (f'c.Execute.kernel_name = "{KERNEL}"', f"c.Execute.timeout = {CELL_TIMEOUT}",
                 f'c.CourseDirectory.course_id = "{ASSIGNMENT}"'):
        assert line in body, f"README's nbgrader_config.py lacks {line!r}"
    return body


GRADEBOOK = '''\
import json, sys
from nbgrader.api import Gradebook, MissingEntry
out = {}
with Gradebook("sqlite:///gradebook.db") as gb:
    for nb in gb.find_assignment(sys.argv[1]).notebooks:
        for student in gb.students:
            try:
                sub = gb.find_submission_notebook(nb.name, sys.argv[1], student.id)
            except MissingEntry:
                continue
            out[f"{student.id}/{nb.name}"] = {
                "score": sub.score, "max_score": sub.max_score,
                "needs_manual_grade": sub.needs_manual_grade,
                "grades": {g.name: {"auto": g.auto_score, "max": g.max_score,
                                    "manual": g.needs_manual_grade} for g in sub.grades}}
print(json.dumps(out))
'''


def _run(cmd, cwd, env=None, timeout=900, check=True) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, cmd))} exited {proc.returncode}\n"
                             f"stdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}")
    return proc


def _instructor(stem):
    return nbformat.read(NOTEBOOK_DIR / f"{stem}.ipynb", as_version=4)


def total_points(stem) -> float:
    """Autograded points of the instructor notebook (graded code cells), from its metadata."""
    return sum(points for _, points in graded_parts(_instructor(stem)))


def answer_points(stem) -> dict[str, float]:
    """``{grade_id: points}`` of the manually graded answer cells (markdown) of a notebook."""
    out = {}
    for cell in _instructor(stem).cells:
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if cell.cell_type == "markdown" and meta.get("grade"):
            out[meta["grade_id"]] = float(meta.get("points", 0))
    return out


# --------------------------------------------------------------------------- 2. nbgrader
@pytest.fixture(scope="session")
def nbgrader_bin() -> Path:
    """``.venv-nbgrader/bin`` holding nbgrader == NBGRADER (installed when missing)."""
    python = VENV / "bin" / "python"
    probe = [python, "-c", "import nbgrader; print(nbgrader.__version__)"]
    if not (python.exists() and _run(probe, ROOT, check=False).stdout.strip() == NBGRADER):
        if not python.exists():
            _run([sys.executable, "-m", "venv", VENV], ROOT)
        _run([python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
              f"nbgrader=={NBGRADER}"], ROOT, timeout=1200)
        assert _run(probe, ROOT).stdout.strip() == NBGRADER
    return VENV / "bin"


def _with_warning(nb):
    """The notebook whose first exercise function also emits a torch UserWarning per call."""
    nb = copy.deepcopy(nb)
    cell = next(c for c in nb.cells if nbgrader_meta(c).get("solution") and c.cell_type == "code")
    name = next(n.name for n in ast.parse(cell.source).body if isinstance(n, ast.FunctionDef))
    cell.source += textwrap.dedent(f"""

        import functools as _functools
        import torch as _torch

        def _noisy(_fn):
            @_functools.wraps(_fn)
            def _wrapped(*args, **kwargs):
                _torch.tensor(_torch.ones(2))  # UserWarning: copy-constructing from a tensor
                return _fn(*args, **kwargs)
            return _wrapped

        {name} = _noisy({name})
        """)
    return nb


@pytest.fixture(scope="session")
def course(nbgrader_bin, tmp_path_factory):
    """An nbgrader course folder, graded by nbgrader and by the course's grader."""
    base = tmp_path_factory.mktemp("nbgrader")
    home = base / "course"
    (home / "source" / ASSIGNMENT).mkdir(parents=True)
    (home / "nbgrader_config.py").write_text(readme_config())
    results_dir = base / "course_results"  # the kernels' OOD_RESULTS_DIR: must stay unchanged
    results_dir.mkdir()
    sentinel = results_dir / "miniclip.json"
    sentinel.write_text('{"profile": "miniclip", "aurocs": {}}\n')
    spec_dir = base / "jupyter" / "kernels" / KERNEL
    spec_dir.mkdir(parents=True)
    (spec_dir / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "OOD course", "language": "python",
        "env": {"OOD_PROFILE": "miniclip", "MPLBACKEND": "Agg",
                "OOD_FEATURES_DIR": str(features_dir("miniclip").parent.resolve()),
                "OOD_RESULTS_DIR": str(results_dir),
                "PYTHONPATH": str(ROOT)},  # this checkout's ood_utils, also in a worktree
    }, indent=1))
    env = {**os.environ, "JUPYTER_PATH": str(base / "jupyter"),
           # nbgrader runs `alembic` (its database migrations) from PATH: as if activated
           "PATH": f"{nbgrader_bin}{os.pathsep}{os.environ.get('PATH', '')}",
           "JUPYTER_CONFIG_DIR": str(base / "jupyter_config"),
           "JUPYTER_DATA_DIR": str(base / "jupyter_data")}
    env.pop("NBGRADER_EXECUTION", None)
    nbgrader = [nbgrader_bin / "nbgrader"]
    times = {}

    for stem in NOTEBOOKS:
        shutil.copy(NOTEBOOK_DIR / f"{stem}.ipynb", home / "source" / ASSIGNMENT)
    t = time.monotonic()
    _run(nbgrader + ["generate_assignment", ASSIGNMENT, "--force"], home, env)
    times["generate_assignment"] = time.monotonic() - t
    released = release_files([NOTEBOOK_DIR / f"{s}.ipynb" for s in NOTEBOOKS],
                             base / "course_release")
    for stem, path in zip(NOTEBOOKS, released):
        blank = nbformat.read(path, as_version=4)
        gutted, deleted = copy.deepcopy(blank), copy.deepcopy(blank)
        for cell in gutted.cells:
            if is_graded_part(cell):
                cell.source = "pass"
        deleted.cells = [c for c in deleted.cells if not is_graded_part(c)]
        subs = {"solution": _instructor(stem), "warner": _with_warning(_instructor(stem)),
                "blank": blank, "gutted": gutted, "deleted": deleted}
        for student, nb in subs.items():
            target = home / "submitted" / student / ASSIGNMENT / f"{stem}.ipynb"
            target.parent.mkdir(parents=True, exist_ok=True)
            nbformat.write(nb, target)

    validate = {}
    t = time.monotonic()
    for student in ("solution", "blank", "gutted"):
        for stem in NOTEBOOKS:
            proc = _run(nbgrader + ["validate", home / "submitted" / student / ASSIGNMENT /
                                    f"{stem}.ipynb"], home, env, check=False)
            validate[f"{student}/{stem}"] = " ".join((proc.stdout + proc.stderr).split())
    times["validate"] = time.monotonic() - t
    t = time.monotonic()
    _run(nbgrader + ["autograde", ASSIGNMENT, "--force"], home, env, timeout=1800)
    times["autograde"] = time.monotonic() - t
    scores = json.loads(_run([nbgrader_bin / "python", "-c", GRADEBOOK, ASSIGNMENT], home,
                             env).stdout)
    _run(nbgrader + ["export"], home, env)  # README's last step: grades.csv per assignment
    with open(home / "grades.csv", newline="") as fh:
        exported = {row["student_id"]: float(row["score"]) for row in csv.DictReader(fh)
                    if row["assignment"] == ASSIGNMENT}
    t = time.monotonic()
    rows = grade_submissions([home / "submitted"], NOTEBOOK_DIR, base / "course_grades",
                             profile="miniclip", jobs=2, cell_timeout=CELL_TIMEOUT)
    times["course grader"] = time.monotonic() - t
    print("nbgrader course timings (s):", {k: round(v, 1) for k, v in times.items()})
    return {"home": home, "validate": validate, "scores": scores, "rows": rows,
            "exported": exported,
            "sentinel": sentinel, "sentinel_text": '{"profile": "miniclip", "aurocs": {}}\n',
            "results_dir": results_dir, "base": base}


def _course_totals(rows) -> dict[str, float]:
    totals: dict[str, float] = {}
    for row in rows:
        totals[row["submission"]] = totals.get(row["submission"], 0) + float(row["score"])
    return totals


def test_nbgrader_accepts_the_course_and_checksums_agree(course):
    home = course["home"]
    for stem in NOTEBOOKS:
        theirs = nbformat.read(home / "release" / ASSIGNMENT / f"{stem}.ipynb", as_version=4)
        ours = nbformat.read(course["base"] / "course_release" / f"{stem}.ipynb", as_version=4)
        compared = 0
        for a, b in zip(theirs.cells, ours.cells):
            ma, mb = nbgrader_meta(a), nbgrader_meta(b)
            assert ma.get("grade_id") == mb.get("grade_id")
            assert ma.get("cell_type") == mb.get("cell_type")
            assert a.metadata.get("deletable") == b.metadata.get("deletable")
            assert a.metadata.get("editable") == b.metadata.get("editable")
            if ma.get("checksum") and not ma.get("solution"):  # same source: same checksum
                assert a.source == b.source
                assert ma["checksum"] == mb["checksum"], (stem, ma.get("grade_id"))
                compared += 1
        assert len(theirs.cells) == len(ours.cells)
        assert compared >= len(graded_parts(_instructor(stem))) + 1


def test_validate_passes_the_solution_and_catches_gutted_checks(course):
    for stem in NOTEBOOKS:
        solution = course["validate"][f"solution/{stem}"]
        assert "Success! Your notebook passes all the tests." in solution, solution[-2000:]
        blank = course["validate"][f"blank/{stem}"]
        assert "HAVE CHANGED" not in blank, blank[-2000:]
        assert "VALIDATION FAILED ON" in blank and "NotImplementedError" in blank, blank[-2000:]
        gutted = course["validate"][f"gutted/{stem}"]
        n = len(graded_parts(_instructor(stem)))
        assert f"THE CONTENTS OF {n} TEST CELL(S) HAVE CHANGED!" in gutted, gutted[-2000:]


def test_autograde_scores(course):
    scores, totals = course["scores"], _course_totals(course["rows"])
    for stem in NOTEBOOKS:
        total = total_points(stem)
        parts = dict(graded_parts(_instructor(stem)))
        answers = answer_points(stem)  # questions: nbgrader leaves them to the instructor
        got = {s: scores[f"{s}/{stem}"] for s in STUDENTS}
        for student in STUDENTS:
            assert got[student]["max_score"] == pytest.approx(total + sum(answers.values())), \
                (student, stem)
        # the solution, also with a torch UserWarning from its own code, earns every
        # autograded point; only the answer cells wait for a manual grade
        for student in ("solution", "warner"):
            assert got[student]["score"] == pytest.approx(total), (student, stem, got[student])
            assert got[student]["needs_manual_grade"] == bool(answers)
            for gid, points in parts.items():
                assert got[student]["grades"][gid]["auto"] == pytest.approx(points), gid
            assert all(got[student]["grades"][gid]["manual"] for gid in answers)
        # the untouched release fails; the gutted checks are put back, so it scores as blank
        assert got["blank"]["score"] < total
        assert got["gutted"]["score"] == pytest.approx(got["blank"]["score"])
        # nbgrader does not restore a deleted check: its part waits for a manual grade
        deleted = got["deleted"]
        assert deleted["needs_manual_grade"]
        assert set(deleted["grades"]) == set(parts) | set(answers)
        assert all(deleted["grades"][gid]["manual"] and deleted["grades"][gid]["auto"] is None
                   for gid in parts)
        # untouched answer cells ("YOUR ANSWER HERE") get 0 from nbgrader without review
        assert all(deleted["grades"][gid]["auto"] == 0 for gid in answers)
        # the course's grader read nbgrader's layout (student = first folder) and agrees
        for student in ("solution", "warner", "blank", "gutted"):
            assert totals[f"{student}/{stem}.ipynb"] == pytest.approx(got[student]["score"])
        # ... except that it restores deleted checks: the deleted copy scores as blank
        assert totals[f"deleted/{stem}.ipynb"] == pytest.approx(got["blank"]["score"])
    assert sorted(totals) == sorted(f"{s}/{stem}.ipynb" for s in STUDENTS for stem in NOTEBOOKS)
    # `nbgrader export` sums the notebooks of the assignment
    assert course["exported"] == pytest.approx(
        {s: sum(scores[f"{s}/{stem}"]["score"] for stem in NOTEBOOKS) for s in STUDENTS})


def test_warning_is_shown_on_stdout_in_the_graded_cell(course):
    for stem in NOTEBOOKS:
        nb = nbformat.read(course["home"] / "autograded" / "warner" / ASSIGNMENT /
                           f"{stem}.ipynb", as_version=4)
        text = "".join(o.get("text", "") for c in nb.cells if is_graded_part(c)
                       for o in c.outputs if o.output_type == "stream" and o.name == "stdout")
        assert "UserWarning" in text, stem


def test_results_file_untouched_under_nbgrader(course):
    assert course["sentinel"].read_text() == course["sentinel_text"]
    assert sorted(p.name for p in course["results_dir"].iterdir()) == ["miniclip.json"]
    # the kernels saw nbgrader's NBGRADER_EXECUTION: record() said why it wrote nothing
    home, text = course["home"], ""
    for stem in NOTEBOOKS:
        nb = nbformat.read(home / "autograded" / "solution" / ASSIGNMENT / f"{stem}.ipynb",
                           as_version=4)
        text += "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                        for o in c.outputs if o.output_type == "stream")
    assert "not recorded: running under nbgrader" in text
