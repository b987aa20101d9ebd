"""README's "Grading with nbgrader" recipe for a class: ``make test-nbgrader(-class)``.

Not collected by ``make test``. The bash blocks of README's numbered steps (1-8) are taken
from README.md and run as written, in one bash process, from an empty ``HOME`` (a temporary
folder), with the course checkout as the starting folder:

* steps 1 and 2 once (nbgrader's venv ``.venv-nbgrader`` is reused when it holds 0.9.6);
* for each notebook of :data:`NOTEBOOKS` (``$OOD_CLASS_NOTEBOOKS``, comma-separated stems):
  step 3 with ``02_knn`` replaced by the notebook, then for each of two students steps 4, the
  student's work (this suite writes the fetched notebook: :func:`student_notebook`), 5 (only
  for :data:`VALIDATE`, 02 when selected: ``validate`` runs the whole notebook) and 6, with
  ``alice`` replaced by the student; then step 7;
* step 8 once: the course's grader on the same ``submitted/`` folder.

The students of each notebook: ``<stem>-good`` pastes the instructor's solution into every
exercise cell and answers every question; ``<stem>-wrong`` does the same with the planted
mistake of :data:`WRONG` and leaves the questions. Asserted: nbgrader gives the good student
every autograded point and the wrong one every point except exactly the parts :data:`WRONG`
names; ``grades.csv`` has one row per student and assignment with these scores and the
notebook's own maximum; the course's grader (step 8) gives the same score for every part;
``validate`` says Success for the good student and VALIDATION FAILED for the wrong one.
"""
from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import time
from pathlib import Path

import nbformat
import pytest

from ood_utils.course.cells import nbgrader_meta
from ood_utils.grader.grading import graded_parts

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK_DIR = ROOT / "notebooks"
NBGRADER_VENV = ROOT / ".venv-nbgrader"

# One planted mistake per notebook: (text in the instructor's solution, what the wrong student
# wrote instead, the graded parts that must lose all their points). Every other part keeps its
# points: a mistake costs its own self-check and what is computed from it, nothing else.
WRONG = {
    "00_tiny_clip": (  # the loss in one direction only (images -> texts)
        "(F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2",
        "F.cross_entropy(logits, targets)",
        {"clip_loss_selfcheck"}),
    "01_features": (  # the batches concatenated in reverse order: rows no longer match labels
        # (features_shapes also compares the student's extraction with the cached features)
        "feats = torch.cat(chunks)", "feats = torch.cat(chunks[::-1])",
        {"features_selfcheck", "features_shapes"}),
    "02_knn": (  # always the nearest neighbour, whatever k: the AUROC check (k = 1) still passes
        "values[:, k - 1])", "values[:, 0])",
        {"knn_selfcheck"}),
    "03_msp": (  # the sweep multiplies by the temperature instead of dividing
        "metrics.auroc(msp_exercise(cos_in / t),", "metrics.auroc(msp_exercise(cos_in * t),",
        {"msp_sweep_selfcheck", "msp_sweep_auroc"}),
    "04_plp": (  # the probe's minimum softmax probability instead of the maximum
        "msp = logits.softmax(dim=1).max(dim=1).values",
        "msp = logits.softmax(dim=1).min(dim=1).values",
        {"plp_selfcheck", "plp_auroc"}),
    "05_mahalanobis": (  # the sweep scores OOD as ID and ID as OOD
        "metrics.auroc(md_scores(id_feats, precision), md_scores(ood_feats, precision))",
        "metrics.auroc(md_scores(ood_feats, precision), md_scores(id_feats, precision))",
        {"maha_sweep_selfcheck", "maha_sweep_graded"}),
    "06_kmeans": (  # the sweep's "rmd" is plain MD
        '"rmd": mahalanobis_exercise(train_feats, ids, test_feats, relative=True)',
        '"rmd": mahalanobis_exercise(train_feats, ids, test_feats, relative=False)',
        {"kmeans_sweep_selfcheck", "kmeans10_auroc", "kmeans50_auroc", "kmeans100_auroc",
         "kmeans_sweep_graded"}),
    "07_cac_osr": (  # reports the unknown images accepted, not rejected
        "unknown_rejected.append(float((scores_unknown < threshold)",
        "unknown_rejected.append(float((scores_unknown >= threshold)",
        {"cac_sweep_selfcheck", "cac_sweep_results"}),
}
DEFAULT = "00_tiny_clip,01_features,02_knn,03_msp"
NOTEBOOKS = [s.strip() for s in os.environ.get("OOD_CLASS_NOTEBOOKS", DEFAULT).split(",")
             if s.strip()]
_unknown = sorted(set(NOTEBOOKS) - set(WRONG))
if _unknown:
    raise ValueError(f"OOD_CLASS_NOTEBOOKS names {_unknown}; choose from {sorted(WRONG)}")
# step 5 (validate runs the whole notebook once more per student) on one notebook: 02 is quick
VALIDATE = os.environ.get("OOD_CLASS_VALIDATE") or ("02_knn" if "02_knn" in NOTEBOOKS
                                                    else NOTEBOOKS[0])
ANSWER = "My answer: the scores of the two test sets overlap less here."

GRADEBOOK = '''\
import json, sys
from nbgrader.api import Gradebook, MissingEntry
out = {}
with Gradebook("sqlite:///gradebook.db") as gb:
    for assignment in gb.assignments:
        for nb in assignment.notebooks:
            for student in gb.students:
                try:
                    sub = gb.find_submission_notebook(nb.name, assignment.name, student.id)
                except MissingEntry:
                    continue
                out[f"{student.id}/{assignment.name}/{nb.name}"] = {
                    "score": sub.score, "max_score": sub.max_score,
                    "grades": {g.name: {"auto": g.auto_score, "max": g.max_score}
                               for g in sub.grades}}
print(json.dumps(out))
'''


# --------------------------------------------------------------------------- README's steps
def readme_steps() -> dict[int, str]:
    """``{step number: bash block}`` of README's "Grading with nbgrader" section."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("### Grading with nbgrader", 1)[1].split("\n### ", 1)[0]
    steps = {}
    for match in re.finditer(r"\*\*Step (\d+) [^*]*\*\*.*?```bash\n(.*?)```", section, re.S):
        steps[int(match.group(1))] = match.group(2)
    assert sorted(steps) == list(range(1, 9)), \
        f"README's nbgrader recipe should have bash blocks for steps 1-8, found {sorted(steps)}"
    return steps


def _instructor(stem):
    return nbformat.read(NOTEBOOK_DIR / f"{stem}.ipynb", as_version=4)


def solved_source(source: str) -> str:
    return "\n".join(line for line in source.splitlines()
                     if not re.match(r"^\s*###\s*(BEGIN|END) SOLUTION\s*$", line))


def student_notebook(fetched: Path, stem: str, wrong: bool) -> None:
    """Write a student's work into the notebook nbgrader fetched (in place).

    Every exercise cell gets the instructor's solution (``wrong``: with the planted mistake of
    :data:`WRONG`), every question an answer unless ``wrong``; all other cells stay as fetched.
    """
    nb = nbformat.read(fetched, as_version=4)
    source = {nbgrader_meta(c).get("grade_id"): c.source for c in _instructor(stem).cells}
    planted = 0
    for cell in nb.cells:
        meta = nbgrader_meta(cell)
        if not meta.get("solution"):
            continue
        if cell.cell_type == "code":
            text = solved_source(source[meta["grade_id"]])
            if wrong and WRONG[stem][0] in text:
                text = text.replace(WRONG[stem][0], WRONG[stem][1])
                planted += 1
            cell.source = text
        elif not wrong:
            cell.source = ANSWER
    assert planted == (1 if wrong else 0), f"{stem}: the planted mistake matched {planted} cells"
    nbformat.write(nb, fetched)


def points(stem) -> tuple[dict[str, float], dict[str, float]]:
    """``({grade_id: points} of the autograded parts, {grade_id: points} of the questions)``."""
    nb = _instructor(stem)
    answers = {nbgrader_meta(c)["grade_id"]: float(nbgrader_meta(c).get("points", 0))
               for c in nb.cells if c.cell_type == "markdown" and nbgrader_meta(c).get("grade")}
    return dict(graded_parts(nb)), answers


@pytest.fixture(scope="session")
def recipe(tmp_path_factory):
    steps = readme_steps()
    home = tmp_path_factory.mktemp("class") / "home"
    home.mkdir()
    py = ROOT / ".venv" / "bin" / "python"
    lines = ["set -eo pipefail", f"cd {ROOT}", 'echo "== step 1 $(date +%s)"', steps[1],
             'echo "== step 2 $(date +%s)"', steps[2]]
    for stem in NOTEBOOKS:
        lines += [f'echo "== step 3 {stem} $(date +%s)"', steps[3].replace("02_knn", stem)]
        for student, wrong in ((f"{stem}-good", False), (f"{stem}-wrong", True)):
            def mine(block, student=student, stem=stem):
                return block.replace("02_knn", stem).replace("alice", student)
            lines += [f'echo "== step 4 {student} $(date +%s)"', mine(steps[4]),
                      f'echo "== {student} works $(date +%s)"',
                      f"{py} {Path(__file__).resolve()} {home / student / stem / (stem + '.ipynb')}"
                      f" {stem} {int(wrong)}"]
            if stem == VALIDATE:
                lines += [f'echo "== step 5 {student} $(date +%s)"', mine(steps[5])]
            lines += [f'echo "== step 6 {student} $(date +%s)"', mine(steps[6])]
        lines += [f'echo "== step 7 {stem} $(date +%s)"', steps[7].replace("02_knn", stem)]
    lines += ['echo "== step 8 $(date +%s)"', steps[8], 'echo "== end $(date +%s)"']
    script = home.parent / "recipe.sh"
    script.write_text("\n".join(lines) + "\n")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("JUPYTER", "NBGRADER", "OOD_", "VIRTUAL_ENV"))}
    env.update(HOME=str(home), OOD_PROFILE="miniclip")
    start = time.monotonic()
    proc = subprocess.run(["bash", str(script)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=3600, stdin=subprocess.DEVNULL)
    seconds = time.monotonic() - start
    (home.parent / "recipe.log").write_text(proc.stdout + "\n--- stderr\n" + proc.stderr)
    assert proc.returncode == 0, (f"README's recipe failed (exit {proc.returncode}); "
                                  f"log {home.parent / 'recipe.log'}\n{proc.stdout[-3000:]}\n"
                                  f"{proc.stderr[-3000:]}")
    print(f"README's nbgrader recipe for {NOTEBOOKS}: {seconds:.0f} s")
    marks = re.findall(r"^== (.*) (\d+)$", proc.stdout, re.M)
    spans = [(label, int(b) - int(a)) for (label, a), (_, b) in zip(marks, marks[1:])]
    print("slowest steps (s):", sorted(spans, key=lambda x: -x[1])[:8])
    course = home / "ood-course"
    gb = subprocess.run([NBGRADER_VENV / "bin" / "python", "-c", GRADEBOOK], cwd=course,
                        capture_output=True, text=True, check=True)
    with open(course / "grades.csv", newline="") as fh:
        exported = list(csv.DictReader(fh))
    with open(course / "course-grades" / "grades.csv", newline="") as fh:
        ours = list(csv.DictReader(fh))
    return {"log": proc.stdout, "stderr": proc.stderr, "scores": json.loads(gb.stdout),
            "exported": exported, "ours": ours, "home": home}


def _expected(stem, wrong):
    parts, _ = points(stem)
    lost = WRONG[stem][2] if wrong else set()
    assert lost <= set(parts), f"{stem}: WRONG names parts that do not exist: {lost - set(parts)}"
    return {gid: (0.0 if gid in lost else pts) for gid, pts in parts.items()}


@pytest.mark.parametrize("stem", NOTEBOOKS)
def test_nbgrader_scores_each_part(recipe, stem):
    parts, answers = points(stem)
    for student, wrong in ((f"{stem}-good", False), (f"{stem}-wrong", True)):
        got = recipe["scores"][f"{student}/{stem}/{stem}"]
        expected = _expected(stem, wrong)
        auto = {gid: got["grades"][gid]["auto"] for gid in parts}
        assert auto == pytest.approx(expected), (student, auto, expected)
        assert got["score"] == pytest.approx(sum(expected.values())), student
        assert got["max_score"] == pytest.approx(sum(parts.values()) + sum(answers.values()))
        # the questions wait for the instructor (the wrong student left them blank: 0)
        for gid in answers:
            assert got["grades"][gid]["auto"] in (None, 0), (student, gid, got["grades"][gid])


@pytest.mark.parametrize("stem", NOTEBOOKS)
def test_export_has_one_row_per_student_and_assignment(recipe, stem):
    parts, answers = points(stem)
    rows = {r["student_id"]: r for r in recipe["exported"] if r["assignment"] == stem}
    for student, wrong in ((f"{stem}-good", False), (f"{stem}-wrong", True)):
        assert float(rows[student]["score"]) == pytest.approx(sum(_expected(stem, wrong).values()))
        assert float(rows[student]["max_score"]) == pytest.approx(
            sum(parts.values()) + sum(answers.values()))


@pytest.mark.parametrize("stem", NOTEBOOKS)
def test_course_grader_agrees_with_nbgrader(recipe, stem):
    parts, _ = points(stem)
    for student, wrong in ((f"{stem}-good", False), (f"{stem}-wrong", True)):
        mine = {r["part"]: float(r["score"]) for r in recipe["ours"]
                if r["submission"] == f"{student}/{stem}.ipynb"}
        assert mine == pytest.approx(_expected(stem, wrong)), (student, mine)
        nbg = recipe["scores"][f"{student}/{stem}/{stem}"]["grades"]
        assert mine == pytest.approx({gid: nbg[gid]["auto"] for gid in parts}), student


def test_validate_tells_the_student(recipe):
    log = recipe["log"]
    stem = VALIDATE
    good = log.split(f"== step 5 {stem}-good", 1)[1].split("== step 6", 1)[0]
    wrong = log.split(f"== step 5 {stem}-wrong", 1)[1].split("== step 6", 1)[0]
    assert "Success! Your notebook passes all the tests." in good, good[-2000:]
    assert "VALIDATION FAILED ON" in wrong, wrong[-2000:]


def test_every_step_ran(recipe):
    log = recipe["log"] + recipe["stderr"]
    for stem in NOTEBOOKS:
        for student in (f"{stem}-good", f"{stem}-wrong"):
            assert f"== step 6 {student}" in log
    assert "== step 8" in log


if __name__ == "__main__":  # the student's work between fetch and submit: PATH STEM WRONG
    import sys

    student_notebook(Path(sys.argv[1]), sys.argv[2], bool(int(sys.argv[3])))
