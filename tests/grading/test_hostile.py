"""Issue 16: grades are decided outside the student's interpreter.

Every submission of the hostile set (``tests/grading/hostile/``: cheats in five families and
honest alternatives) is built from the instructor notebooks and graded, beside the instructor's
own solution of each notebook, by ONE run of the course grader as an instructor runs it::

    python -m ood_utils grade --jobs 2 --out DIR FILES...

Then, per submission and graded part:

* a part the submission did NOT compute honestly (``Sub.cheated``) earns 0;
* every other part keeps its full points (the instructor's code, or an honest alternative);
* the instructor's solutions and the honest alternatives get full marks.

The expectations depend only on the notebooks' nbgrader metadata (``grade_id``, ``points``)
and on the grader's ``grades.csv`` (columns ``submission``, ``part``, ``score``,
``max_score``), read by :func:`read_grades`; nothing here imports the grader. The harm cases
(files, processes, network) stay in ``tests/test_sandbox.py``.

Slow (one kernel per submission): ``make test-hostile`` (which ``.ci/run`` calls). The report
printed with ``-s`` names every submission that earned points it should not have.
"""
from __future__ import annotations

import csv
import os
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest

from .hostile import all_subs
from .hostile._build import FAMILIES, ROOT, NOTEBOOKS, Sub, graded_parts, write

REFERENCE_NOTEBOOKS = ("02_knn", "05_mahalanobis", "07_cac_osr", "03_msp", "04_plp", "06_kmeans")
GRADER_TIMEOUT = 3600  # seconds for the whole grader run (about 15 minutes on 2 cores)


def read_grades(path: Path) -> dict:
    """``{(student, notebook stem): {part: (score, max_score)}}`` from the grader's CSV.

    The adapter to the grader's output: the ``submission`` column is
    ``<student>/<notebook file name>`` (a second hand-in of the same notebook gets ``#2``
    appended, which never happens here); ``score`` and ``max_score`` are numbers.
    """
    table: dict = defaultdict(dict)
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            student, _, name = row["submission"].partition("/")
            stem = Path(name.split("#")[0]).stem
            table[(student, stem)][row["part"]] = (float(row["score"]), float(row["max_score"]))
    return dict(table)


def _references() -> list[Sub]:
    return [Sub("reference", nb, "reference", "the instructor's solution, unchanged")
            for nb in REFERENCE_NOTEBOOKS]


def _warm_caches() -> None:
    """What an instructor's `make course` leaves behind and the grader expects: the feature
    cache, the zero-shot logits, the probe of 04/05 and 07's CAC baseline, computed here in
    the trusted process (else every sandboxed kernel would train them again, a minute each)."""
    code = """
import importlib
def mod(*names):
    for name in names:
        try:
            return importlib.import_module(name)
        except ImportError:
            pass
    raise ImportError(names)
pipeline = mod("ood_utils.course.pipeline", "ood_utils.pipeline")
experiment = mod("ood_utils.course.cac_experiment", "ood_utils.cac_experiment")
pipeline.zero_shot_logits("miniclip", progress=False)
pipeline.plp_probe(seed=0, profile="miniclip", progress=False)
data = experiment.cac_datasets("miniclip", seed=0)
experiment.train_baseline(data, seed=0, profile="miniclip")
"""
    env = dict(os.environ, OOD_PROFILE="miniclip", MPLBACKEND="Agg")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, check=True, timeout=1800)


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    subs = all_subs() + _references()
    folder = tmp_path_factory.mktemp("hostile")
    files = folder / "submissions"
    files.mkdir()
    paths = [str(write(sub, files)) for sub in subs]
    _warm_caches()
    out = folder / "grades"
    env = dict(os.environ, OOD_PROFILE="miniclip", MPLBACKEND="Agg", OMP_NUM_THREADS="1",
               MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    start = time.monotonic()
    run = subprocess.run([sys.executable, "-m", "ood_utils", "grade", "--jobs", "2",
                          "--out", str(out), "--source", str(NOTEBOOKS), *paths],
                         cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=GRADER_TIMEOUT)
    seconds = time.monotonic() - start
    assert run.returncode == 0, f"the grader failed ({run.returncode}):\n{run.stderr[-3000:]}"
    table = read_grades(out / "grades.csv")
    report = _report(subs, table, seconds)
    (folder / "report.md").write_text(report, encoding="utf-8")
    print(report)
    return dict(subs=subs, table=table, out=out, seconds=seconds, report=report)


def _verdicts(sub: Sub, table: dict) -> list[tuple[str, float, float, float]]:
    """``[(part, score, max, wanted), ...]`` for every graded part of the notebook."""
    rows = table.get((sub.student, sub.notebook), {})
    out = []
    for part, points in graded_parts(sub.notebook).items():
        score, max_score = rows.get(part, (float("nan"), float("nan")))
        wanted = 0.0 if part in sub.cheated else points
        out.append((part, score, max_score, wanted))
    return out


def _report(subs, table, seconds) -> str:
    lines = [f"# Hostile set: {len(subs)} submissions graded in {seconds:.0f} s", "",
             "| student | notebook | family | cheated parts: points earned | honest parts "
             "lost | verdict |", "|---|---|---|---|---|---|"]
    for sub in subs:
        v = _verdicts(sub, table)
        earned = {p: s for p, s, _, w in v if p in sub.cheated and s != 0}
        lost = {p: f"{s:g}/{w:g}" for p, s, _, w in v if p not in sub.cheated and s != w}
        ok = not earned and not lost
        lines.append(f"| {sub.student} | {sub.notebook} | {sub.family} | "
                     f"{', '.join(f'{p} {s:g}' for p, s in earned.items()) or '-'} | "
                     f"{', '.join(f'{p} {s}' for p, s in lost.items()) or '-'} | "
                     f"{'ok' if ok else 'WRONG'} |")
    return "\n".join(lines) + "\n"


def test_the_hostile_set_is_large_enough():
    subs = all_subs()
    by_family = defaultdict(int)
    for sub in subs:
        by_family[sub.family] += 1
        assert sub.family in FAMILIES, sub
        if sub.family == "honest":
            assert not sub.cheated, sub.student
        else:
            assert sub.cheated, f"{sub.student}: a cheat must name the parts it did not compute"
    for family in ("reach", "switch-off", "hide", "forge", "own"):
        assert by_family[family] >= 5, (family, by_family[family])
    assert by_family["honest"] >= 5


def test_every_submission_was_graded_on_every_part(graded):
    for sub in graded["subs"]:
        rows = graded["table"].get((sub.student, sub.notebook))
        assert rows is not None, f"{sub.file_name}: no rows in grades.csv"
        assert set(rows) == set(graded_parts(sub.notebook)), sub.file_name
        for part, (_, max_score) in rows.items():
            assert max_score == graded_parts(sub.notebook)[part], (sub.file_name, part)


def test_reference_solutions_get_full_marks(graded):
    for sub in graded["subs"]:
        if sub.family == "reference":
            wrong = [(p, s, w) for p, s, _, w in _verdicts(sub, graded["table"]) if s != w]
            assert not wrong, f"{sub.notebook}: the instructor's solution lost {wrong}"


def test_honest_alternatives_get_full_marks(graded):
    wrong = {sub.student: [(p, s, w) for p, s, _, w in _verdicts(sub, graded["table"])
                           if s != w]
             for sub in graded["subs"] if sub.family == "honest"}
    wrong = {k: v for k, v in wrong.items() if v}
    assert not wrong, f"honest alternatives lost points: {wrong}"


@pytest.mark.parametrize("family", ["reach", "switch-off", "hide", "forge", "own"])
def test_cheats_earn_nothing_on_what_they_did_not_compute(graded, family):
    earned = {}
    for sub in graded["subs"]:
        if sub.family != family:
            continue
        got = {p: s for p, s, _, w in _verdicts(sub, graded["table"])
               if p in sub.cheated and s != 0}
        if got:
            earned[f"{sub.student} ({sub.notebook}: {sub.what})"] = got
    assert not earned, (f"{len(earned)} cheat(s) of family {family!r} earned points:\n"
                        + "\n".join(f"  {k}: {v}" for k, v in earned.items()))


@pytest.mark.parametrize("family", ["reach", "switch-off", "hide", "forge", "own"])
def test_cheats_keep_the_points_of_what_they_computed_honestly(graded, family):
    lost = {}
    for sub in graded["subs"]:
        if sub.family != family:
            continue
        got = {p: (s, w) for p, s, _, w in _verdicts(sub, graded["table"])
               if p not in sub.cheated and s != w}
        if got:
            lost[f"{sub.student} ({sub.notebook})"] = got
    assert not lost, f"honest parts of cheating submissions lost points: {lost}"
