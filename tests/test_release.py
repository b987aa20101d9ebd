"""Tests of ood_utils.grader.release on the synthetic toy notebook (tests/fixtures/toy_course)."""
import argparse
import base64
import copy
import shutil
from pathlib import Path

import nbformat
import pytest

from ood_utils.grader.execute import execute_notebook
from ood_utils.grader.release import ReleaseError, configure_parser, release_course, release_notebook, run

FIXTURES = Path(__file__).resolve().parent / "fixtures"
TOY_DIR = FIXTURES / "toy_course"
TOY = TOY_DIR / "02_toy.ipynb"
SECRET = "zz_secret_marker_42"
CHECKS = {"squares_public": 4, "squares_edge": 5, "centre_public": 8}
EXERCISES = {"squares_exercise": 3, "centre_exercise": 7}  # grade_id -> cell index


def toy():
    return nbformat.read(TOY, as_version=4)


def by_gid(nb):
    return {c.metadata.get("nbgrader", {}).get("grade_id"): c for c in nb.cells
            if c.metadata.get("nbgrader", {}).get("grade_id")}


def with_outputs(nb):
    """The instructor notebook as it looks after running it: outputs and counts."""
    nb = copy.deepcopy(nb)
    for n, cell in enumerate(c for c in nb.cells if c.cell_type == "code"):
        cell.execution_count = n + 1
        cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=f"{SECRET} = 1\n"),
                        nbformat.v4.new_output("execute_result", execution_count=n + 1,
                                               data={"text/plain": "42"})]
        cell.metadata["execution"] = {"iopub.status.idle": "2026-01-01T00:00:00Z"}
    return nb


def test_line_counts_follow_the_solution():
    out = by_gid(release_notebook(toy(), "02_toy.ipynb"))
    # counted by hand from make_toy_course.py: comment, blank line excluded
    assert "### START CODE HERE ### (≈ 3 lines of code)" in out["squares_exercise"].source
    # the instructor frame said 1; the solution has 2 lines
    assert "### START CODE HERE ### (≈ 2 lines of code)" in out["centre_exercise"].source
    for gid in EXERCISES:
        src = out[gid].source
        assert src.count("### START CODE HERE ###") == 1
        assert src.count("### END CODE HERE ###") == 1
        assert "SOLUTION" not in src


def test_blanks_keep_indentation_and_raise_not_implemented():
    out = by_gid(release_notebook(toy(), "02_toy.ipynb"))
    for gid, func in (("squares_exercise", "sum_of_squares_exercise"),
                      ("centre_exercise", "centre_exercise")):
        lines = out[gid].source.splitlines()
        start = next(i for i, line in enumerate(lines) if "START CODE HERE" in line)
        assert lines[start].startswith("    ###")
        assert lines[start + 1].startswith("    raise NotImplementedError(")
        assert lines[start + 2] == "    ### END CODE HERE ###"
        namespace = {}
        exec(out[gid].source, namespace)  # the definition itself must run
        with pytest.raises(NotImplementedError):
            namespace[func]([1.0, 2.0])


def test_top_level_block_keeps_assigned_names():
    v4 = nbformat.v4
    meta = {"nbgrader": {"grade": False, "solution": True, "locked": False,
                         "grade_id": "load", "schema_version": 3}}
    nb = v4.new_notebook(cells=[v4.new_code_cell(
        "### START CODE HERE ### (≈ 9 lines of code)\n"
        "### BEGIN SOLUTION\n"
        "train_values, test_values = [1, 2], [3]\n"
        "# a comment line\n"
        "total_count = len(train_values) + len(test_values)\n"
        "total_count += 0\n"
        "### END SOLUTION\n"
        "### END CODE HERE ###\n"
        "print(total_count)", metadata=meta)])
    src = release_notebook(nb, "t.ipynb").cells[0].source
    lines = src.splitlines()
    assert lines[0] == "### START CODE HERE ### (≈ 3 lines of code)"
    assert lines[1:4] == ["train_values = ...", "test_values = ...", "total_count = ..."]
    assert lines[4].startswith("raise NotImplementedError(")
    assert lines[5] == "### END CODE HERE ###"
    with pytest.raises(NotImplementedError):
        exec(src, {})


def test_outputs_cleared_metadata_kept_checks_locked():
    src = with_outputs(toy())
    out = release_notebook(src, "02_toy.ipynb")
    assert out.metadata["kernelspec"] == src.metadata["kernelspec"]
    assert len(out.cells) == len(src.cells)
    for before, after in zip(src.cells, out.cells):
        assert after.cell_type == before.cell_type
        if after.cell_type == "code":
            assert after.outputs == [] and after.execution_count is None
        assert "execution" not in after.metadata
        nbg_before = before.metadata.get("nbgrader")
        nbg_after = after.metadata.get("nbgrader")
        assert (nbg_before is None) == (nbg_after is None)
        if nbg_before is None:
            continue
        stamps = ("locked", "checksum", "cell_type")  # added by the release
        assert {k: v for k, v in nbg_after.items() if k not in stamps} == \
               {k: v for k, v in nbg_before.items() if k not in stamps}
        if nbg_before["grade"]:
            assert nbg_after["locked"] is True
            assert after.metadata["editable"] is False
            assert after.metadata["deletable"] is False
        if nbg_before["solution"]:
            assert nbg_after["locked"] is False
            assert after.metadata.get("editable", True) is True
            assert after.metadata["deletable"] is False  # as nbgrader's LockCells
    assert src.cells[3].outputs, "release must not modify its input"


def test_no_solution_text_in_any_released_byte(tmp_path):
    course = tmp_path / "course"
    course.mkdir()
    nbformat.write(with_outputs(toy()), course / "02_toy.ipynb")
    (course / "notes.txt").write_text("not a notebook: must not be copied")
    assert SECRET in (course / "02_toy.ipynb").read_text()
    out = tmp_path / "release" / "nested"
    written = release_course(course, out)
    assert [p.name for p in written] == ["02_toy.ipynb"]
    files = [p for p in out.rglob("*") if p.is_file()]
    assert [p.name for p in files] == ["02_toy.ipynb"]
    instructor = toy()
    solution_lines = []
    for cell in instructor.cells:
        lines = cell.source.splitlines()
        if "    ### BEGIN SOLUTION" in lines:
            body = lines[lines.index("    ### BEGIN SOLUTION") + 1:lines.index("    ### END SOLUTION")]
            solution_lines += [line.strip() for line in body if len(line.strip()) >= 12]
    assert len(solution_lines) >= 4
    for path in files:
        data = path.read_bytes()
        assert SECRET.encode() not in data
        for line in solution_lines:
            assert line.encode() not in data, line
        assert b"BEGIN SOLUTION" not in data and b"END SOLUTION" not in data


@pytest.mark.parametrize("where", ["metadata", "attachment", "markdown"])
def test_planted_leak_stops_the_release(where):
    nb = toy()
    line = f"{SECRET} = 1"
    if where == "metadata":
        nb.cells[4].metadata["note"] = f"hint: {line}"
    elif where == "attachment":
        nb.cells[0].attachments = {"hint.txt": {
            "text/plain": base64.b64encode(line.encode()).decode()}}
    else:  # prose that quotes the answer
        nb.cells.append(nbformat.v4.new_markdown_cell(f"Answer:\n```\n    {line}  \n```"))
    with pytest.raises(ReleaseError, match="solution text would be released"):
        release_notebook(nb, "02_toy.ipynb")


def _solution_cell(source):
    return nbformat.v4.new_code_cell(source, metadata={"nbgrader": {
        "grade": False, "solution": True, "locked": False, "grade_id": "ex",
        "schema_version": 3}})


BAD = {
    "missing_end": ("def f():\n    ### BEGIN SOLUTION\n    return 1\n", 2, "never closed"),
    "nested_begin": ("def f():\n    ### BEGIN SOLUTION\n    x = 1\n    ### BEGIN SOLUTION\n"
                     "    return x\n    ### END SOLUTION\n", 4, "inside the block"),
    "end_without_begin": ("def f():\n    x = 1\n    ### END SOLUTION\n    return x\n", 3,
                          "without a matching"),
    "inline_marker": ("def f():\n    ### BEGIN SOLUTION\n    x = 1  ### END SOLUTION\n", 3,
                      "alone on its line"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_malformed_markers_name_notebook_cell_and_line(case):
    source, line, words = BAD[case]
    nb = toy()
    nb.cells.insert(6, _solution_cell(source))
    with pytest.raises(ReleaseError) as err:
        release_notebook(nb, "02_toy.ipynb")
    msg = str(err.value)
    assert msg.startswith(f"02_toy.ipynb: cell 6, line {line}:"), msg
    assert words in msg


def test_marker_outside_a_solution_cell_is_refused():
    nb = toy()
    nb.cells[3].metadata["nbgrader"]["solution"] = False
    with pytest.raises(ReleaseError, match=r"02_toy\.ipynb: cell 3, line 4: .*not an nbgrader "
                                           r"solution cell"):
        release_notebook(nb, "02_toy.ipynb")
    nb = toy()
    del nb.cells[7].metadata["nbgrader"]
    with pytest.raises(ReleaseError, match=r"02_toy\.ipynb: cell 7, line 4"):
        release_notebook(nb, "02_toy.ipynb")


def test_solution_cell_without_markers_is_refused():
    nb = toy()
    nb.cells.insert(2, _solution_cell("def f():\n    return 42\n"))
    with pytest.raises(ReleaseError, match=r"02_toy\.ipynb: cell 2: .*without"):
        release_notebook(nb, "02_toy.ipynb")


def test_command_writes_nothing_when_one_notebook_is_bad(tmp_path, capsys):
    good = tmp_path / "02_toy.ipynb"
    shutil.copy(TOY, good)
    bad_nb = toy()
    bad_nb.cells[3].source = bad_nb.cells[3].source.replace("    ### END SOLUTION\n", "")
    bad = tmp_path / "03_bad.ipynb"
    nbformat.write(bad_nb, bad)
    parser = argparse.ArgumentParser()
    configure_parser(parser)
    out = tmp_path / "out"
    assert run(parser.parse_args(["--out", str(out), str(good), str(bad)])) == 1
    assert "03_bad.ipynb: cell 3, line 4" in capsys.readouterr().err
    assert not out.exists() or not any(out.iterdir())
    assert run(parser.parse_args(["--out", str(out), str(good)])) == 0
    assert sorted(p.name for p in out.iterdir()) == ["02_toy.ipynb"]
    assert nbformat.read(out / "02_toy.ipynb", as_version=4) == release_notebook(toy())


def test_released_notebook_fails_only_at_the_exercises(tmp_path):
    released = release_notebook(toy(), "02_toy.ipynb")
    res = execute_notebook(released, cwd=tmp_path, allow_errors=True, cell_timeout=60,
                           env={"OOD_RESULTS_DIR": str(tmp_path)})
    assert res.status == "error"
    # the first failure is the first check of the first exercise ...
    assert res.cell_index == CHECKS["squares_public"]
    # ... and every failure is a check cell calling an unfinished exercise
    assert sorted(res.errors) == sorted(CHECKS.values())
    assert {ename for ename, _ in res.errors.values()} == {"NotImplementedError"}
    assert [p.suffix for p in tmp_path.glob("*.json")] == [".json"]  # the last cell ran


def test_frame_found_across_blank_lines_and_output_is_valid():
    nb = nbformat.v4.new_notebook(cells=[_solution_cell(
        "def f(a):\n    ### START CODE HERE ### (≈ 7 lines of code)\n\n"
        "    ### BEGIN SOLUTION\n    shifted_value = a + 1000\n    ### END SOLUTION\n\n"
        "    ### END CODE HERE ###\n    return shifted_value\n")])
    out = release_notebook(nb, "t.ipynb")
    nbformat.validate(out)
    assert out.cells[0].source.splitlines() == [
        "def f(a):", "    ### START CODE HERE ### (≈ 1 lines of code)",
        '    raise NotImplementedError("replace this line with your code")',
        "    ### END CODE HERE ###", "    return shifted_value"]
    nbformat.validate(release_notebook(toy()))


def test_lock_readonly_cells_protects_setup_code_from_edits():
    from ood_utils.grader.grading import restore_locked_cells
    from ood_utils.grader.release import lock_readonly_cells

    v4 = nbformat.v4
    nb = v4.new_notebook(cells=[
        v4.new_markdown_cell("# title"),
        v4.new_code_cell("THRESHOLD = 0.5"),
        _solution_cell("def f():\n    ### BEGIN SOLUTION\n    return 1\n    ### END SOLUTION"),
        v4.new_code_cell("assert f() == 1"),
    ])
    nb.cells[3].metadata["nbgrader"] = {"grade": True, "solution": False, "locked": True,
                                        "points": 1, "grade_id": "t_check", "schema_version": 3}
    before = copy.deepcopy(nb)
    assert lock_readonly_cells(nb, "t") == 1
    assert nb.cells[1].metadata["nbgrader"] == {"grade": False, "solution": False,
                                                "locked": True, "grade_id": "t_cell01",
                                                "schema_version": 3}
    assert [c.metadata for c in nb.cells[2:]] == [c.metadata for c in before.cells[2:]]
    assert "nbgrader" not in nb.cells[0].metadata
    assert lock_readonly_cells(nb, "t") == 0  # idempotent
    # a student who loosens the setup cell gets the instructor's version back
    student = copy.deepcopy(nb)
    student.cells[1].source = "THRESHOLD = 0.0"
    restored, _ = restore_locked_cells(student, nb)
    assert restored.cells[1].source == "THRESHOLD = 0.5"


def _md5(*parts):
    import hashlib
    return hashlib.md5("".join(parts).encode("utf-8")).hexdigest()


def test_checksums_are_nbgraders():
    from ood_utils.course.cells import nbgrader_checksum

    # nbgrader 0.9.6 utils.compute_checksum, worked by hand: md5 of source, cell type,
    # str(is_grade), str(is_solution), str(is_locked), grade_id, str(float(points)) if graded
    v4 = nbformat.v4
    check = v4.new_code_cell("assert f(2) == 4\n")
    check.metadata["nbgrader"] = {"grade": True, "solution": False, "points": 2,
                                  "grade_id": "g1", "schema_version": 3}
    assert nbgrader_checksum(check) == _md5("assert f(2) == 4\n", "code", "True", "False",
                                            "True", "g1", "2.0")
    exercise = v4.new_code_cell("def f(x):\n    raise NotImplementedError()")
    exercise.metadata["nbgrader"] = {"grade": False, "solution": True, "locked": True,
                                     "grade_id": "ex"}
    # a solution cell is never locked for nbgrader, whatever its "locked" says
    assert nbgrader_checksum(exercise) == _md5(exercise.source, "code", "False", "True",
                                               "False", "ex")
    prose = v4.new_markdown_cell("Read me.")
    prose.metadata["nbgrader"] = {"locked": True, "grade_id": "intro"}
    assert nbgrader_checksum(prose) == _md5("Read me.", "markdown", "False", "False", "True",
                                            "intro")
    no_id = v4.new_code_cell("x = 1")
    no_id.metadata["nbgrader"] = {"locked": True}
    with pytest.raises(ValueError, match="grade_id"):
        nbgrader_checksum(no_id)


def test_release_stamps_cells_like_nbgrader_and_a_gutted_check_is_detectable():
    from ood_utils.course.cells import nbgrader_checksum

    out = release_notebook(toy(), "02_toy.ipynb")
    stamped = 0
    for cell in out.cells:
        meta = cell.metadata.get("nbgrader")
        if not meta:
            assert "checksum" not in str(cell.metadata)
            continue
        stamped += 1
        assert meta["cell_type"] == cell.cell_type
        assert meta["checksum"] == nbgrader_checksum(cell)  # of the released source
        assert cell.metadata["deletable"] is False
        assert cell.metadata.get("editable", True) is (not meta.get("locked", False))
    assert stamped == len(CHECKS) + len(EXERCISES) + 1  # + the locked setup cell
    checks = [c for c in out.cells if c.metadata.get("nbgrader", {}).get("grade")]
    for check in checks:  # what `nbgrader validate` recomputes for a student's copy
        gutted = copy.deepcopy(check)
        gutted.source = "pass"
        assert nbgrader_checksum(gutted) != check.metadata["nbgrader"]["checksum"]
        worth_less = copy.deepcopy(check)
        worth_less.metadata["nbgrader"]["points"] = 0
        assert nbgrader_checksum(worth_less) != check.metadata["nbgrader"]["checksum"]
    # the instructor copy's stale stamps are replaced, not kept
    src = toy()
    src.cells[CHECKS["squares_public"]].metadata["nbgrader"]["checksum"] = "stale"
    again = release_notebook(src, "02_toy.ipynb")
    assert again.cells[CHECKS["squares_public"]].metadata["nbgrader"]["checksum"] == \
        out.cells[CHECKS["squares_public"]].metadata["nbgrader"]["checksum"]


def test_released_files_are_world_readable_whatever_the_umask(tmp_path):
    import os
    import stat

    old = os.umask(0o077)
    try:
        written = release_course(TOY_DIR, tmp_path / "out")
    finally:
        os.umask(old)
    assert written
    for path in written:
        assert stat.S_IMODE(path.stat().st_mode) == 0o644
