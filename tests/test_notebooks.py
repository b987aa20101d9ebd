"""Course-level tests of the real notebooks: structure, answer key coverage, release, grading.

The nbval run (``pytest --nbval-lax notebooks``) executes the instructor copies; these tests
check what nbval cannot see: that a released copy leaks no solution, that every code cell a
student could edit to change a grade is restored by the grader, and that grading a real
notebook gives the solution full marks and an untouched student copy none.
"""
import re
from pathlib import Path

import nbformat
import pytest

from ood_utils.answer_key import expected
from ood_utils.grader.grading import graded_parts, grade_submissions
from ood_utils.grader.release import find_leaks, release_notebook, solution_lines

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
ALL = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
EXERCISES = [p for p in ALL if p.stem != "08_results"]


def read(path):
    return nbformat.read(path, as_version=4)


def nbgrader(cell):
    return cell.metadata.get("nbgrader", {})


def test_the_course_is_complete():
    stems = [p.stem for p in ALL]
    assert stems == ["00_tiny_clip", "01_features", "02_knn", "03_msp", "04_plp",
                     "05_mahalanobis", "06_kmeans", "07_cac_osr", "08_results"]


@pytest.mark.parametrize("path", ALL, ids=lambda p: p.name)
def test_nbgrader_structure(path):
    """Kernel, stripped outputs, markers, and nbgrader metadata on every code cell."""
    nb = read(path)
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3", path.name
    ids = []
    n_exercises = n_checks = 0
    for i, cell in enumerate(nb.cells):
        where = f"{path.name} cell {i}"
        src, meta = cell.source, nbgrader(cell)
        if "BEGIN SOLUTION" in src or "START CODE HERE" in src:
            assert meta.get("solution") is True, f"{where}: markers outside a solution cell"
        if cell.cell_type != "code":
            continue
        assert not cell.get("outputs") and cell.get("execution_count") is None, \
            f"{where}: outputs must be stripped"
        assert meta.get("schema_version") == 3 and meta.get("grade_id"), \
            f"{where}: no nbgrader metadata (run release.lock_readonly_cells)"
        ids.append(meta["grade_id"])
        if meta.get("solution"):
            n_exercises += 1
            assert meta.get("grade") is False and meta.get("locked") is False, where
            markers = ("### START CODE HERE ###", "### BEGIN SOLUTION", "### END SOLUTION",
                       "### END CODE HERE ###")
            assert all(m in src for m in markers), f"{where}: missing a marker"
            assert [src.index(m) for m in markers] == sorted(src.index(m) for m in markers), where
        elif meta.get("grade"):
            n_checks += 1
            assert meta.get("locked") is True, f"{where}: check cells are locked"
            assert isinstance(meta.get("points"), int) and meta["points"] > 0, \
                f"{where}: check cells carry points"
            assert "all tests passed" not in src.lower(), where
        else:
            assert meta.get("locked") is True, \
                f"{where}: neither an exercise nor locked, so a student could edit it"
    assert len(ids) == len(set(ids)), f"{path.name}: duplicate grade_id"
    if path in EXERCISES:
        assert n_exercises >= 1, f"{path.name}: at least one exercise cell expected"
        if path.stem != "00_tiny_clip":  # the bonus part has a self-check but no AUROC
            assert n_checks >= 2, f"{path.name}: a self-check and a graded result expected"


@pytest.mark.parametrize("path", ALL, ids=lambda p: p.name)
def test_every_part_states_its_goal_and_method(path):
    nb = read(path)
    first = nb.cells[0]
    assert first.cell_type == "markdown" and first.source.startswith(f"# {path.stem[:2]}"), \
        f"{path.name}: the first cell is the numbered title"
    text = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    assert "goal" in text.lower(), f"{path.name}: state the goal of the part"
    assert "question" in text.lower(), f"{path.name}: end with a question to think about"
    if path in EXERCISES:
        assert "$" in text, f"{path.name}: explain the method with its formula"
        code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
        assert "plt.show()" in code, f"{path.name}: a picture (histogram, ROC, matrix ...)"


def test_every_check_id_is_recorded_and_checked_in_its_notebook():
    cells = {p.stem: read(p).cells for p in ALL}
    for cid, stem in expected.NOTEBOOKS.items():
        assert stem in cells, f"{cid}: notebook {stem} is missing"
        graded = "\n".join(c.source for c in cells[stem] if nbgrader(c).get("grade"))
        call = "checks.check_cac_results(" if cid == "cac" else f'checks.check_auroc("{cid}"'
        assert call in graded, f"{cid}: no graded cell of {stem} calls {call}...)"
        assert "results.record(" in "\n".join(c.source for c in cells[stem]), stem


@pytest.mark.parametrize("path", EXERCISES, ids=lambda p: p.name)
def test_release_blanks_the_exercise_and_leaks_nothing(path):
    nb = read(path)
    released = release_notebook(nb, path.name)
    secrets = solution_lines(nb, path.name)
    assert secrets, f"{path.name}: no solution lines found"
    assert find_leaks(released, secrets) == []
    cells = [c for c in released.cells if nbgrader(c).get("solution") and c.cell_type == "code"]
    announced = [c for c in nb.cells if nbgrader(c).get("solution") and c.cell_type == "code"]
    assert len(cells) == len(announced) >= 1, path.name
    length = re.compile(r"START CODE HERE ### \(≈ (\d+) lines? of code\)")
    for before, cell in zip(announced, cells):
        src = cell.source
        assert "raise NotImplementedError" in src and "BEGIN SOLUTION" not in src
        assert "### START CODE HERE ###" in src and "### END CODE HERE ###" in src
        assert length.search(before.source).group(1) == length.search(src).group(1), path.name
    # manually graded answers are blanked too
    for cell in released.cells:
        if cell.cell_type == "markdown" and nbgrader(cell).get("solution"):
            assert "YOUR ANSWER HERE" in cell.source, path.name
    # the graded parts are the same in both copies
    assert graded_parts(released) == graded_parts(nb)


def test_the_answer_key_covers_every_graded_auroc():
    for profile in ("miniclip", "clip"):
        for cid in expected.CHECK_IDS:
            e = expected.get_expected(cid, profile)
            assert e.is_set or e.extra, f"{profile}/{cid} has no target"


def test_cac_target_follows_the_rule_from_its_measurements():
    e = expected.get_expected("cac", "miniclip")
    seeds = [float(v) for v in re.findall(r"seed \d+: ([0-9.]+)", e.how)]
    assert len(seeds) >= 3
    assert e.value == pytest.approx(sum(seeds) / len(seeds), abs=0.006)
    assert e.tol == pytest.approx(max(0.1, 3 * (max(seeds) - min(seeds))), abs=0.011)
    for key, pattern in (("accuracy", r"accuracy ([0-9./]+)"),
                         ("known_accepted_tpr", r"known accepted ([0-9./]+)"),
                         ("unknown_rejected_tpr", r"unknown rejected ([0-9./]+)")):
        values = [float(v) for v in re.search(pattern, e.how).group(1).split("/")]
        value, tol = e.extra[key]
        assert value == pytest.approx(sum(values) / len(values), abs=0.006), key
        assert tol == pytest.approx(max(0.1, 3 * (max(values) - min(values))), abs=0.011), key


@pytest.fixture(scope="module")
def graded_knn(tmp_path_factory):
    """Grade the real 02_knn notebook: the instructor copy and the untouched released copy."""
    root = tmp_path_factory.mktemp("grade_knn")
    source = NOTEBOOKS / "02_knn.ipynb"
    nb = read(source)
    for student, copy in (("solution", nb), ("blank", release_notebook(nb, source.name))):
        (root / "subs" / student).mkdir(parents=True)
        nbformat.write(copy, root / "subs" / student / source.name)
    rows = grade_submissions([root / "subs"], NOTEBOOKS, root / "out", profile="miniclip",
                             jobs=2, cell_timeout=300, timeout=900)
    return {"rows": rows, "out": root / "out", "parts": graded_parts(nb)}


def test_grading_the_real_knn_notebook(graded_knn):
    parts = dict(graded_knn["parts"])
    assert parts == {"knn_selfcheck": 2, "knn_auroc": 3, "knn_sweep_selfcheck": 1,
                     "knn_sweep_auroc": 2}
    by_student = {}
    for row in graded_knn["rows"]:
        by_student.setdefault(row["submission"].split("/")[0], {})[row["part"]] = row
    solution, blank = by_student["solution"], by_student["blank"]
    assert {p: r["score"] for p, r in solution.items()} == parts, solution
    assert {p: r["score"] for p, r in blank.items()} == {p: 0 for p in parts}
    assert "NotImplementedError" in blank["knn_selfcheck"]["message"]
    assert (graded_knn["out"] / "grades.csv").exists()
    feedback = read(graded_knn["out"] / "blank" / "02_knn.ipynb")
    assert feedback.cells[0].source.startswith("# Grading feedback: 0 / 8 points")


# ------------------------------------------------------------------ self-checks of 00 and 01
# (the other exercises' checks are tested with planted mistakes in test_checks.py / test_cac.py)

def _clip_loss_by_hand(img, txt, scale):
    import torch
    logits = scale * img @ txt.T
    target = torch.arange(len(img))
    # symmetric cross-entropy written out with log-softmax, independent of open_clip
    rows = -torch.log_softmax(logits, dim=1)[target, target].mean()
    cols = -torch.log_softmax(logits, dim=0)[target, target].mean()
    return (rows + cols) / 2


def test_clip_loss_check_accepts_a_hand_written_loss(capsys):
    from ood_utils.answer_key import checks
    checks.check_clip_loss(_clip_loss_by_hand)
    assert "public checks passed" in capsys.readouterr().out


@pytest.mark.parametrize("wrong, phrase", [
    (lambda i, t, s: __import__("torch").nn.functional.cross_entropy(
        s * i @ t.T, __import__("torch").arange(len(i))), "image-to-text"),
    (lambda i, t, s: _clip_loss_by_hand(i, t, 1.0), "logit_scale"),
    (lambda i, t, s: 2 * _clip_loss_by_hand(i, t, s), "differ"),
])
def test_clip_loss_check_rejects_planted_mistakes(wrong, phrase):
    from ood_utils.answer_key import checks
    with pytest.raises(AssertionError, match=phrase):
        checks.check_clip_loss(wrong)


def _extract(backbone, loader, device, eval_mode=True, grad=False):
    import torch
    if eval_mode:
        backbone.eval()
    feats, labels = [], []
    ctx = torch.enable_grad() if grad else torch.inference_mode()
    with ctx:
        for x, y in loader:
            feats.append(backbone(x.to(device)).float())
            labels.append(y.long())
    return torch.cat(feats), torch.cat(labels)


def test_extract_check_accepts_a_plain_loop(capsys):
    from ood_utils.answer_key import checks
    checks.check_extract_features(_extract)
    assert "public checks passed" in capsys.readouterr().out


@pytest.mark.parametrize("wrong, phrase", [
    (lambda b, l, d: _extract(b, l, d, eval_mode=False), "evaluation mode"),
    (lambda b, l, d: _extract(b, l, d, grad=True), "gradients"),
    (lambda b, l, d: (_extract(b, l, d)[0], _extract(b, l, d)[1].flip(0)), "labels"),
    (lambda b, l, d: _extract(b, l, d)[0], "pair"),
])
def test_extract_check_rejects_planted_mistakes(wrong, phrase):
    from ood_utils.answer_key import checks
    with pytest.raises(AssertionError, match=phrase):
        checks.check_extract_features(wrong)


# ------------------------------------------------------------------ released copies run
@pytest.mark.parametrize("path", EXERCISES, ids=lambda p: p.name)
def test_released_notebook_runs_until_its_exercise_and_stops_there(path, tmp_path):
    """Everything before the exercise runs; the first failure is NotImplementedError in the
    first cell that calls the blank exercise function."""
    from ood_utils.grader.execute import execute_notebook

    released = release_notebook(read(path), path.name)
    exercise = next(i for i, c in enumerate(released.cells) if nbgrader(c).get("solution")
                    and c.cell_type == "code")
    fn = re.search(r"def (\w+)\(", released.cells[exercise].source).group(1)
    res = execute_notebook(released, cwd=tmp_path, env={"OOD_RESULTS_DIR": str(tmp_path)},
                           cell_timeout=600)
    assert res.status == "error", f"{path.name}: the released copy ran to the end"
    assert res.ename == "NotImplementedError", (path.name, res.ename, res.evalue)
    assert res.cell_index > exercise
    assert fn in released.cells[res.cell_index].source, (path.name, res.cell_index)
    # every code cell before the failing one ran, without error
    before = [i for i, c in enumerate(released.cells[:res.cell_index]) if c.cell_type == "code"]
    assert set(before) <= set(res.completed) and not set(before) & set(res.errors)
