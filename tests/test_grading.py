"""Tests of ood_utils.grader.grading on the synthetic toy notebook, with adversarial submissions.

One grading run (module fixture, --jobs 2) covers every submission; the tests then read its
rows, grades.csv, summary.md and the feedback notebooks.
"""
import argparse
import copy
import csv
import json
import os
from pathlib import Path

import nbformat
import pytest

from ood_utils.grader.grading import (COLUMNS, configure_parser, graded_parts, match_submission, restore_locked_cells, run)
from ood_utils.grader.grading import grade_submissions
from ood_utils.grader.release import release_notebook

FIXTURES = Path(__file__).resolve().parent / "fixtures"
TOY_DIR = FIXTURES / "toy_course"
TOY = TOY_DIR / "02_toy.ipynb"
POINTS = {"squares_public": 2, "squares_edge": 1, "centre_public": 3}
FULL = sum(POINTS.values())


def toy():
    return nbformat.read(TOY, as_version=4)


def cell_of(nb, gid):
    return next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == gid)


def with_exercise(nb, gid, old, new):
    cell = cell_of(nb, gid)
    assert old in cell.source
    cell.source = cell.source.replace(old, new)
    return nb


def prepend(nb, gid, code):
    cell = cell_of(nb, gid)
    cell.source = code + "\n" + cell.source
    return nb


def wrong_centre():
    return with_exercise(toy(), "centre_exercise", "v - mean_value", "v + mean_value")


def cheat_by_pass():
    nb = wrong_centre()
    with_exercise(nb, "squares_exercise", "total = sum(squared_entries)", "total = -1")
    for gid in POINTS:
        cell_of(nb, gid).source = "pass"
    return nb


def cheat_by_deleting():
    nb = wrong_centre()
    nb.cells = [c for c in nb.cells
                if c.metadata.get("nbgrader", {}).get("grade_id") != "centre_public"]
    return nb


def extra_part():
    nb = toy()
    fake = copy.deepcopy(cell_of(nb, "centre_public"))
    fake.metadata["nbgrader"]["grade_id"] = "bonus"
    fake.metadata["nbgrader"]["points"] = 100
    fake["id"] = "bonus-cell"
    nb.cells.append(fake)
    return nb


SUBMISSIONS = {
    # file name under the submissions folder -> notebook (or raw text)
    "good_02_toy.ipynb": toy,
    "blank/02_toy.ipynb": lambda: release_notebook(toy()),
    "wrong_02_toy.ipynb": wrong_centre,
    "loop_02_toy.ipynb": lambda: with_exercise(
        toy(), "squares_exercise", "    total = sum(squared_entries)",
        "    while True:\n        pass\n    total = sum(squared_entries)"),
    "sysexit_02_toy.ipynb": lambda: prepend(toy(), "squares_exercise",
                                            "import sys\nsys.exit(1)"),
    "killself_02_toy.ipynb": lambda: prepend(toy(), "centre_exercise",
                                             "import os, signal\nos.kill(os.getpid(), 9)"),
    "osexit/02_toy.ipynb": lambda: prepend(toy(), "centre_exercise", "import os\nos._exit(0)"),
    "killparent_02_toy.ipynb": lambda: prepend(toy(), "squares_exercise",
                                               "import os\nos.kill(os.getppid(), 9)"),
    "vandal_02_toy.ipynb": lambda: prepend(
        toy(), "squares_exercise",
        "import os, shutil\nfor name in os.listdir('.'):\n"
        "    shutil.rmtree(name, ignore_errors=True) if os.path.isdir(name) else os.remove(name)"
        "\nopen('junk.txt', 'w').write('x')"),
    "passcheat_02_toy.ipynb": cheat_by_pass,
    "deleter_02_toy.ipynb": cheat_by_deleting,
    "bonus_02_toy.ipynb": extra_part,
    "envprobe_02_toy.ipynb": lambda: prepend(
        toy(), "squares_exercise",
        "import os\nfor k in ('OOD_PROFILE', 'OOD_RESULTS_DIR', 'OOD_FEATURES_DIR', "
        "'MPLBACKEND'):\n    print(k, os.environ.get(k))\nprint('CWD', os.getcwd())"),
    "truncated_02_toy.ipynb": "TRUNCATED",
    "text_02_toy.ipynb": "just some notes, not a notebook\n",
    "stranger.ipynb": "{}",
}


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    root = tmp_path_factory.mktemp("grading")
    subs = root / "submissions"
    for name, make in SUBMISSIONS.items():
        path = subs / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if make == "TRUNCATED":
            path.write_text(nbformat.writes(toy())[:700])
        elif isinstance(make, str):
            path.write_text(make)
        else:
            nbformat.write(make(), path)
    course_results = root / "course_results"
    features = root / "feature_cache"
    saved = {k: os.environ.get(k) for k in ("OOD_RESULTS_DIR", "OOD_FEATURES_DIR")}
    os.environ["OOD_RESULTS_DIR"] = str(course_results)
    os.environ["OOD_FEATURES_DIR"] = str(features)
    try:
        rows = grade_submissions([subs], TOY_DIR, root / "out", profile="miniclip", jobs=2,
                                 cell_timeout=5, timeout=60)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return dict(root=root, rows=rows, out=root / "out", course_results=course_results,
                features=features)


def table(rows):
    out = {}
    for r in rows:
        out.setdefault(r["submission"].split("/")[0], {})[r["part"]] = r
    return out


def scores(graded, student):
    return {part: r["score"] for part, r in table(graded["rows"])[student].items()}


def total(graded, student):
    return sum(scores(graded, student).values())


def test_solution_gets_full_marks(graded):
    assert scores(graded, "good") == POINTS
    assert all(r["status"] == "ok" and r["message"] == ""
               for r in table(graded["rows"])["good"].values())


def test_released_blank_gets_zero_everywhere(graded):
    rows = table(graded["rows"])["blank"]
    assert {p: r["score"] for p, r in rows.items()} == dict.fromkeys(POINTS, 0)
    assert all(r["status"] == "failed" and r["message"].startswith("NotImplementedError")
               for r in rows.values())


def test_one_wrong_part_loses_exactly_that_part(graded):
    assert scores(graded, "wrong") == {**POINTS, "centre_public": 0}
    row = table(graded["rows"])["wrong"]["centre_public"]
    assert row["status"] == "failed" and row["message"].startswith("AssertionError: got [")


def test_infinite_loop_times_out_without_hurting_others(graded):
    rows = table(graded["rows"])["loop"]
    assert rows["squares_public"]["status"] == "timeout"
    assert "this cell" in rows["squares_public"]["message"]
    assert {r["status"] for r in rows.values()} == {"timeout"}
    assert total(graded, "loop") == 0


def test_sys_exit_only_breaks_its_own_part(graded):
    assert scores(graded, "sysexit") == {**POINTS, "squares_public": 0, "squares_edge": 0}
    assert table(graded["rows"])["sysexit"]["squares_public"]["message"].startswith("NameError")


@pytest.mark.parametrize("student", ["killself", "osexit"])
def test_dead_kernel_keeps_earlier_parts(graded, student):
    rows = table(graded["rows"])[student]
    assert scores(graded, student) == {**POINTS, "centre_public": 0}
    assert rows["centre_public"]["status"] == "error"
    assert "kernel died" in rows["centre_public"]["message"]


def test_the_grader_process_is_out_of_reach(graded):
    # in the sandbox (own PID namespace, unprivileged uid) the parent is bwrap's init process
    # and cannot be killed: the cell fails with PermissionError and only its parts are lost
    assert scores(graded, "killparent") == {**POINTS, "squares_public": 0, "squares_edge": 0}
    nb = nbformat.read(graded["out"] / "killparent" / "02_toy.ipynb", as_version=4)
    exercise = cell_of(nb, "squares_exercise")
    assert [o.get("ename") for o in exercise.outputs if o.output_type == "error"] == \
        ["PermissionError"]


def test_deleting_files_in_the_working_directory_is_harmless(graded):
    assert scores(graded, "vandal") == POINTS
    assert not (Path.cwd() / "junk.txt").exists()


def test_edited_or_deleted_check_cells_are_restored(graded):
    assert scores(graded, "passcheat") == dict.fromkeys(POINTS, 0)
    assert scores(graded, "deleter") == {**POINTS, "centre_public": 0}
    feedback = nbformat.read(graded["out"] / "deleter" / "02_toy.ipynb", as_version=4)
    assert "'centre_public' was missing and has been restored" in feedback.cells[0].source


def test_student_cannot_add_parts(graded):
    assert scores(graded, "bonus") == POINTS


def test_kernel_environment(graded):
    nb = nbformat.read(graded["out"] / "envprobe" / "02_toy.ipynb", as_version=4)
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                   for o in c.outputs)
    values = dict(line.split(" ", 1) for line in text.splitlines() if " " in line)
    assert values["OOD_PROFILE"] == "miniclip"
    assert values["MPLBACKEND"] == "Agg"
    assert values["OOD_FEATURES_DIR"] == str(graded["features"].resolve())
    assert values["OOD_RESULTS_DIR"] == values["CWD"]
    assert Path(values["OOD_RESULTS_DIR"]) != graded["course_results"]
    assert not Path(values["OOD_RESULTS_DIR"]).exists()  # temporary folder removed
    assert not graded["course_results"].exists()  # course results never written
    assert scores(graded, "envprobe") == POINTS


def test_unreadable_files_become_error_rows(graded):
    for student in ("truncated", "text"):
        rows = table(graded["rows"])[student]
        assert set(rows) == set(POINTS)
        assert {r["status"] for r in rows.values()} == {"error"}
        assert all("cannot read the submission" in r["message"] for r in rows.values())
    (row,) = table(graded["rows"])["stranger"].values()
    assert row["status"] == "error" and "no instructor notebook" in row["message"]


def test_grades_csv_and_summary(graded):
    with open(graded["out"] / "grades.csv", newline="") as fh:
        reader = csv.DictReader(fh)
        assert tuple(reader.fieldnames) == COLUMNS
        csv_rows = list(reader)
    assert len(csv_rows) == len(graded["rows"]) == 3 * (len(SUBMISSIONS) - 1) + 1
    assert {r["status"] for r in csv_rows} <= {"ok", "failed", "timeout", "error"}
    good = [r for r in csv_rows if r["submission"] == "good/02_toy.ipynb"]
    assert [(r["part"], r["score"], r["max_score"]) for r in good] == \
        [(p, str(v), str(v)) for p, v in POINTS.items()]
    summary = (graded["out"] / "summary.md").read_text()
    assert f"| good/02_toy.ipynb | {FULL} | {FULL} | 3/3 |" in summary
    assert "| blank/02_toy.ipynb | 0 | 6 | 0/3 | failed |" in summary
    n_ok = sum(1 for r in graded["rows"] if r["part"] == "squares_edge" and r["status"] == "ok")
    assert f"| 02_toy.ipynb | squares_edge | {n_ok}/{len(SUBMISSIONS) - 1} |" in summary


def test_feedback_notebooks(graded):
    nb = nbformat.read(graded["out"] / "wrong" / "02_toy.ipynb", as_version=4)
    nbformat.validate(nb)
    notes = [c for c in nb.cells if c.metadata.get("grader_feedback")]
    assert len(notes) == 1 + len(POINTS)
    assert notes[0].source.startswith(f"# Grading feedback: {FULL - 3} / {FULL} points")
    idx = {c.metadata.get("nbgrader", {}).get("grade_id"): i for i, c in enumerate(nb.cells)}
    for part, points in POINTS.items():
        after = nb.cells[idx[part] + 1]
        assert after.metadata.get("grader_feedback")
        earned = 0 if part == "centre_public" else points
        assert f"part `{part}`: {earned} / {points} points" in after.source
    assert "AssertionError" in nb.cells[idx["centre_public"] + 1].source
    assert any(o.get("text", "").startswith("sum_of_squares: public checks passed")
               for o in nb.cells[idx["squares_public"]].outputs)


def test_restore_puts_deleted_cells_back_in_place():
    inst = toy()
    student = release_notebook(inst)
    gid = lambda c: c.metadata.get("nbgrader", {}).get("grade_id")  # noqa: E731
    student.cells.insert(5, nbformat.v4.new_code_cell("print('scratch')"))  # after a check
    student.cells = [c for c in student.cells if gid(c) not in ("squares_edge", "setup")]
    cell_of(student, "centre_public").source = "pass"
    nb, notes = restore_locked_cells(student, inst)
    assert [gid(c) for c in nb.cells if gid(c)] == [gid(c) for c in inst.cells if gid(c)]
    order = [gid(c) or c.source[:14] for c in nb.cells if c.cell_type == "code"]
    # a deleted cell goes right after the cell matching its instructor predecessor
    assert order == ["setup", "squares_exercise", "squares_public", "squares_edge",
                     "print('scratch", "centre_exercise", "centre_public",
                     "RESULTS.mkdir("]
    assert nb.cells[0].cell_type == "markdown" and gid(nb.cells[1]) == "setup"
    for g in ("setup", "squares_edge", "centre_public"):
        assert cell_of(nb, g).source == cell_of(inst, g).source
    assert len(notes) == 3


def test_matching_rule():
    names = ["02_knn.ipynb", "02_knn_extra.ipynb", "03_msp.ipynb"]
    assert match_submission("subs/alice/02_knn.ipynb", names) == ("alice", "02_knn.ipynb")
    assert match_submission("subs/bob_02_knn.ipynb", names) == ("bob", "02_knn.ipynb")
    assert match_submission("x/carol_x-02_knn_extra.ipynb", names) == \
        ("carol_x", "02_knn_extra.ipynb")
    assert match_submission("dan-03_msp.ipynb", names) == ("dan", "03_msp.ipynb")
    assert match_submission("02_knn_copy.ipynb", names) == ("02_knn_copy", None)
    assert graded_parts(toy()) == [(p, float(v)) for p, v in POINTS.items()]


def test_command_line(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    configure_parser(parser)
    help_text = parser.format_help()
    for option in ("--out", "--source", "--profile", "--jobs", "--cell-timeout", "--timeout"):
        assert option in help_text
    args = parser.parse_args(["--out", str(tmp_path / "o"), "--source", str(tmp_path / "none"),
                              str(tmp_path)])
    assert run(args) == 2
    assert "not a folder" in capsys.readouterr().err
    bad = tmp_path / "broken_02_toy.ipynb"
    bad.write_text("{")
    args = parser.parse_args(["--out", str(tmp_path / "o"), "--source", str(TOY_DIR),
                              "--profile", "miniclip", str(bad)])
    assert run(args) == 0
    lines = (tmp_path / "o" / "grades.csv").read_text().splitlines()
    assert lines[0] == ",".join(COLUMNS)
    assert len(lines) == 1 + len(POINTS) and all(",error," in line for line in lines[1:])
    assert json.loads(json.dumps(lines))  # plain text


def test_later_calls_see_the_current_environment(graded, tmp_path, monkeypatch):
    # the worker processes come from a fork server started by the first call (the fixture);
    # a later call must still pass its own environment and working directory on
    monkeypatch.setenv("OOD_FEATURES_DIR", str(tmp_path / "other_cache"))
    monkeypatch.chdir(tmp_path)
    Path("subs").mkdir()
    nbformat.write(SUBMISSIONS["envprobe_02_toy.ipynb"](), "subs/late_02_toy.ipynb")
    rows = grade_submissions(["subs"], TOY_DIR, "out", profile="clip", jobs=1,
                             cell_timeout=30, timeout=60)
    assert [r["score"] for r in rows] == list(POINTS.values())
    nb = nbformat.read(tmp_path / "out" / "late" / "02_toy.ipynb", as_version=4)
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                   for o in c.outputs)
    assert f"OOD_FEATURES_DIR {tmp_path / 'other_cache'}" in text
    assert "OOD_PROFILE clip" in text


def test_nbgrader_layout_names_the_first_folder_below_the_root(tmp_path):
    from ood_utils.grader.grading import _submissions, find_submissions

    def put(rel):
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(toy(), path)

    # nbgrader's submitted/<student>/<assignment>/<notebook>.ipynb, next to the course's layouts
    put("submitted/alice/ood/02_toy.ipynb")
    put("submitted/bob/ood/02_toy.ipynb")
    put("submitted/bob/ood/.ipynb_checkpoints/02_toy-checkpoint.ipynb")
    put("submitted/carol/02_toy.ipynb")
    put("submitted/dan_02_toy.ipynb")
    put("submitted/eve/ood/eve-02_toy.ipynb")
    subs = _submissions(find_submissions([tmp_path / "submitted"]), TOY_DIR)
    assert sorted(s.key for s in subs) == ["alice/02_toy.ipynb", "bob/02_toy.ipynb",
                                          "carol/02_toy.ipynb", "dan/02_toy.ipynb",
                                          "eve/02_toy.ipynb"]
    assert all(s.source == TOY_DIR / "02_toy.ipynb" for s in subs)
    # a file given by itself has no root: the folder holding it names the student
    single = _submissions(find_submissions([tmp_path / "submitted/carol/02_toy.ipynb"]), TOY_DIR)
    assert [s.key for s in single] == ["carol/02_toy.ipynb"]
    # the root may be given explicitly, and a path outside it falls back to its folder
    names = ["02_toy.ipynb"]
    root = tmp_path / "submitted"
    assert match_submission(root / "alice/ood/02_toy.ipynb", names, root=root) == \
        ("alice", "02_toy.ipynb")
    assert match_submission(tmp_path / "elsewhere/ood/02_toy.ipynb", names, root=root) == \
        ("ood", "02_toy.ipynb")


def test_help_documents_the_sandbox_options():
    parser = argparse.ArgumentParser()
    configure_parser(parser)
    text = parser.format_help()
    for option in ("--memory", "--max-procs", "--cpu-time", "--no-sandbox", "bubblewrap"):
        assert option in text


def test_without_a_sandbox_grading_refuses_unless_told(tmp_path, monkeypatch, capsys):
    from ood_utils.grader import sandbox
    from ood_utils.grader.grading import SandboxUnavailable

    monkeypatch.setattr(sandbox, "unavailable_reason", lambda: "bwrap is not installed")
    sub = tmp_path / "subs" / "alice_02_toy.ipynb"
    sub.parent.mkdir()
    nbformat.write(toy(), sub)
    with pytest.raises(SandboxUnavailable, match="bwrap is not installed.*--no-sandbox"):
        grade_submissions([sub.parent], TOY_DIR, tmp_path / "out", profile="miniclip")
    assert not (tmp_path / "out").exists()
    parser = argparse.ArgumentParser()
    configure_parser(parser)
    args = parser.parse_args(["--out", str(tmp_path / "out"), "--source", str(TOY_DIR),
                              "--profile", "miniclip", str(sub.parent)])
    assert run(args) == 3
    assert "--no-sandbox" in capsys.readouterr().err
    args = parser.parse_args(["--out", str(tmp_path / "out"), "--source", str(TOY_DIR),
                              "--profile", "miniclip", "--no-sandbox", str(sub.parent)])
    assert run(args) == 0
    err = capsys.readouterr().err
    assert "WITHOUT a sandbox" in err and "instructor notebooks" in err
    lines = (tmp_path / "out" / "grades.csv").read_text().splitlines()
    assert [line.split(",")[2] for line in lines[1:]] == [str(v) for v in POINTS.values()]


def test_the_grader_repairs_a_poisoned_feature_cache_before_any_kernel_runs(tmp_path,
                                                                          monkeypatch):
    """The sandboxed kernels see the cache read-only: a damaged file must be replaced by the
    grader (trusted, once), not re-extracted by every submission or, worse, used."""
    import hashlib
    import shutil

    import torch

    from ood_utils.course.features import load_features
    from ood_utils.course.profiles import features_dir

    original = load_features("miniclip", progress=False)  # the course's own cache
    cache = tmp_path / "features"
    shutil.copytree(features_dir("miniclip"), cache / "miniclip")
    poisoned = cache / "miniclip" / "ood_test_feats.pt"
    torch.save(torch.zeros_like(original["ood_test_feats"]), poisoned)
    monkeypatch.setenv("OOD_FEATURES_DIR", str(cache))
    sub = tmp_path / "subs" / "alice_02_toy.ipynb"
    sub.parent.mkdir()
    nbformat.write(toy(), sub)
    rows = grade_submissions([sub.parent], TOY_DIR, tmp_path / "out", profile="miniclip")
    assert [r["score"] for r in rows] == list(POINTS.values())
    repaired = torch.load(poisoned, weights_only=True)
    assert torch.allclose(repaired, original["ood_test_feats"], atol=1e-5)
    meta = json.loads((cache / "miniclip" / "meta.json").read_text())
    for name, digest in meta["digests"].items():
        data = (cache / "miniclip" / f"{name}.pt").read_bytes()
        assert hashlib.sha256(data).hexdigest() == digest, name
