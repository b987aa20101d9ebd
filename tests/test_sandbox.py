"""Hostile submissions of notebooks/02_knn.ipynb, graded in the sandbox next to a good one.

One grading run (module fixture, --jobs 2) grades: the instructor's solution ("good"), a
student who tries every way out of the sandbox and still solves the exercise ("intruder":
poisons the feature cache, reads the instructor notebook and another submission, writes into
the grades folder and the course, opens a network connection), a memory hog, a fork bomb, a
student who patches the self-checks and one who returns the reference implementation. Then
the tests compare rows, messages and the SHA-256 of every file that must not change.

The sandbox must work here (Linux, root, bubblewrap: `make` installs it; CI runs as root).
"""
import hashlib
import os
import shutil
from pathlib import Path

import nbformat
import pytest

from ood_utils.grader.grading import grade_submissions
from ood_utils.course.profiles import features_dir
from ood_utils.grader.sandbox import unavailable_reason

ROOT = Path(__file__).resolve().parent.parent
KNN = ROOT / "notebooks" / "02_knn.ipynb"
TOY = ROOT / "tests" / "fixtures" / "toy_course" / "02_toy.ipynb"
KNN_POINTS = {"knn_selfcheck": 2, "knn_auroc": 3}  # the parts up to the next exercise
SWEEP_POINTS = {"knn_sweep_selfcheck": 1, "knn_sweep_auroc": 2}  # the k sweep, its own exercise
POINTS = {**KNN_POINTS, **SWEEP_POINTS}
TOY_POINTS = {"squares_public": 2, "squares_edge": 1, "centre_public": 3}
MEMORY = "3G"
MAX_PROCS = 128


def exercise(nb):
    return next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id")
                == "knn_exercise")


def with_body(body: str, prefix: str = ""):
    """The instructor notebook with the exercise function's body replaced by ``body``."""
    nb = nbformat.read(KNN, as_version=4)
    cell = exercise(nb)
    head = cell.source.split('"""', 2)
    cell.source = prefix + head[0] + '"""' + head[1] + '"""\n' + body
    return nb


def with_prefix(code: str):
    nb = nbformat.read(KNN, as_version=4)
    cell = exercise(nb)
    cell.source = code + "\n" + cell.source
    return nb


def toy_with(gid, old, new):
    """The toy notebook (fast kernel) with a line of an exercise replaced."""
    nb = nbformat.read(TOY, as_version=4)
    cell = next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == gid)
    assert old in cell.source
    cell.source = cell.source.replace(old, new + "\n" + old)
    return nb


def digests(*folders) -> dict:
    out = {}
    for folder in folders:
        for path in sorted(Path(folder).rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                out[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


INTRUDER = '''
import glob, os, shutil, socket, torch
report = []
def attempt(what, action):
    try:
        action()
        report.append(f"ATTACK {what}: succeeded")
    except Exception as err:
        report.append(f"ATTACK {what}: blocked ({type(err).__name__})")
def poison():
    found = glob.glob(os.path.join(os.environ["OOD_FEATURES_DIR"], "**", "*.pt"), recursive=True)
    assert found, "no cache files visible"
    for path in found:
        t = torch.load(path, weights_only=True)
        torch.save(torch.zeros_like(t) if isinstance(t, torch.Tensor) else t, path)
attempt("poison the feature cache", poison)
NAME = "02_knn.ipy" + "nb"  # (a literal file name would be caught by the screen)
attempt("read the instructor notebook", lambda: shutil.copy(os.path.join(SOURCE, NAME), "x"))
attempt("list the instructor notebooks", lambda: os.listdir(SOURCE) or 1/0)
attempt("read the course's notebooks", lambda: os.listdir(NOTEBOOKS) or 1/0)
attempt("read another submission", lambda: shutil.copy(os.path.join(SUBS, "good_" + NAME), "y"))
attempt("write into the grades", lambda: open(os.path.join(GRADES, "grades.csv"), "w").write("a"))
attempt("make a folder in the grades", lambda: os.makedirs(os.path.join(GRADES, "pwned")))
attempt("write into the course package", lambda: open(os.path.join(PACKAGE, "pwned"), "w"))
attempt("open a network connection", lambda: socket.create_connection(("1.1.1.1", 80), timeout=3))
print("\\n".join(report))
'''

FORK_BOMB = '''    import os
    child = False
    while True:  # every process forks again; a process that cannot fork stops
        try:
            pid = os.fork()
        except OSError:
            if child:
                os._exit(0)
            raise
        if pid == 0:
            child = True'''

MEMORY_HOG = '''    import numpy as np
    hoard = []
    while True:  # allocate without bound (np.empty: address space, no RAM touched)
        hoard.append(np.empty(50_000_000))'''

PATCHER = '''
from ood_utils.answer_key import checks as grader_checks
grader_checks.check_knn = lambda *a, **k: None
grader_checks.check_auroc = lambda *a, **k: None
'''


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    reason = unavailable_reason()
    assert reason is None, f"the grader's sandbox does not work here: {reason}"
    root = tmp_path_factory.mktemp("sandbox")
    source = root / "instructor"
    source.mkdir()
    shutil.copy(KNN, source / KNN.name)
    cache = root / "features"
    shutil.copytree(features_dir("miniclip"), cache / "miniclip")
    subs, out = root / "submissions", root / "out"
    out.mkdir()
    (out / "earlier_grades.csv").write_text("left by an earlier run\n")
    paths = {"SOURCE": source, "SUBS": subs, "GRADES": out, "PACKAGE": ROOT / "ood_utils",
             "NOTEBOOKS": ROOT / "notebooks"}
    intruder = "\n".join(f"{k} = {str(v)!r}" for k, v in paths.items()) + INTRUDER
    made = {
        "good": nbformat.read(KNN, as_version=4),
        "intruder": with_prefix(intruder),
        "patcher": with_body("    return torch.zeros(len(test_feats))\n", prefix=PATCHER),
        "copier": with_body("    from ood_utils.methods import knn_scores\n"
                            "    return knn_scores(train_feats, test_feats, k=k)\n"),
    }
    subs.mkdir()
    for student, nb in made.items():
        nbformat.write(nb, subs / f"{student}_02_knn.ipynb")
    shutil.copy(TOY, source / TOY.name)  # the fast toy kernel for the limits
    toys = {"hog": toy_with("centre_exercise", "    mean_value = sum(values) / len(values)",
                            MEMORY_HOG),
            "bomb": toy_with("squares_exercise", "    squared_entries = [v * v for v in values]",
                             FORK_BOMB)}
    for student, nb in toys.items():
        nbformat.write(nb, subs / f"{student}_02_toy.ipynb")
    protected = [source, cache, subs, ROOT / "ood_utils", ROOT / "notebooks"]
    before = digests(*protected)
    saved = os.environ.get("OOD_FEATURES_DIR")
    os.environ["OOD_FEATURES_DIR"] = str(cache)
    try:
        rows = grade_submissions([subs], source, out, profile="miniclip", jobs=2,
                                 cell_timeout=120, timeout=400, memory=MEMORY,
                                 max_procs=MAX_PROCS)
    finally:
        if saved is None:
            os.environ.pop("OOD_FEATURES_DIR", None)
        else:
            os.environ["OOD_FEATURES_DIR"] = saved
    table = {}
    for r in rows:
        table.setdefault(r["submission"].split("/")[0], {})[r["part"]] = r
    return dict(rows=rows, table=table, out=out, before=before, after=digests(*protected),
                students=set(made), toys=set(toys))


def scores(graded, student):
    return {part: r["score"] for part, r in graded["table"][student].items()}


def outputs(graded, student) -> str:
    nb = nbformat.read(graded["out"] / student / "02_knn.ipynb", as_version=4)
    return "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                   for o in c.get("outputs", []))


def test_good_submission_keeps_full_marks(graded):
    assert scores(graded, "good") == POINTS
    assert all(r["status"] == "ok" for r in graded["table"]["good"].values())


def test_nothing_outside_the_sandbox_changed(graded):
    # cache, instructor notebook, submissions, course package and notebooks: byte for byte
    assert graded["after"] == graded["before"]


def test_every_escape_is_blocked_and_the_exercise_still_counts(graded):
    text = outputs(graded, "intruder")
    attacks = [line for line in text.splitlines() if line.startswith("ATTACK")]
    assert len(attacks) == 9, text[-2000:]
    assert all("blocked" in line for line in attacks), attacks
    assert scores(graded, "intruder") == POINTS  # honest apart from the attacks


def test_grades_folder_holds_only_what_the_grader_wrote(graded):
    out = graded["out"]
    files = {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()}
    assert files == {"grades.csv", "summary.md", "earlier_grades.csv"} | {
        f"{s}/02_knn.ipynb" for s in graded["students"]} | {
        f"{s}/02_toy.ipynb" for s in graded["toys"]}
    assert (out / "earlier_grades.csv").read_text() == "left by an earlier run\n"
    lines = (out / "grades.csv").read_text().splitlines()
    assert len(lines) == 1 + len(POINTS) * len(graded["students"]) + \
        len(TOY_POINTS) * len(graded["toys"])


def test_memory_hog_fails_at_the_memory_limit(graded):
    row = graded["table"]["hog"]["centre_public"]
    assert row["score"] == 0 and row["status"] == "failed"
    assert row["message"].startswith("MemoryError")
    assert "memory limit of 3 GiB" in row["message"] and "--memory" in row["message"]
    assert scores(graded, "hog") == {**TOY_POINTS, "centre_public": 0}  # the rest counts


def test_fork_bomb_stops_at_the_process_limit(graded):
    row = graded["table"]["bomb"]["squares_public"]
    assert row["score"] == 0 and row["status"] == "failed"
    assert row["message"].startswith("BlockingIOError")
    assert f"limit of {MAX_PROCS} processes" in row["message"]
    # the bomb ended by itself: the notebook went on and the next part ran
    assert scores(graded, "bomb") == {**TOY_POINTS, "squares_public": 0, "squares_edge": 0}
    assert graded["table"]["bomb"]["centre_public"]["status"] == "ok"


def test_patching_the_checks_earns_nothing(graded):
    # issue 16: the grader decides outside the kernel, so patching the kernel's checks changes
    # no verdict; the screen only warns (in the feedback's head), it rejects nothing
    rows = graded["table"]["patcher"]
    assert scores(graded, "patcher") == {**dict.fromkeys(KNN_POINTS, 0), **SWEEP_POINTS}
    for row in (rows[p] for p in KNN_POINTS):
        assert row["status"] == "failed", row
    assert "differ from the reference" in rows["knn_auroc"]["message"]
    feedback = nbformat.read(graded["out"] / "patcher" / "02_knn.ipynb", as_version=4)
    assert "ood_utils.answer_key.checks" in feedback.cells[0].source


def test_returning_the_reference_earns_nothing(graded):
    # the sandbox mounts a build without the reference: calling it raises
    rows = graded["table"]["copier"]
    assert scores(graded, "copier") == {**dict.fromkeys(KNN_POINTS, 0), **SWEEP_POINTS}
    for row in (rows[p] for p in KNN_POINTS):
        assert row["status"] == "failed", row
    assert "not available while grading" in rows["knn_selfcheck"]["message"]
    feedback = nbformat.read(graded["out"] / "copier" / "02_knn.ipynb", as_version=4)
    assert "reference implementation" in feedback.cells[0].source  # the screen's warning
    assert "from ood_utils.methods import knn_scores" in "".join(c.source for c in feedback.cells)


def test_cpu_time_limit_names_the_limit(tmp_path):
    from ood_utils.grader.execute import execute_notebook
    from ood_utils.grader.sandbox import Limits, Sandbox

    assert unavailable_reason() is None, unavailable_reason()
    v4 = nbformat.v4
    nb = v4.new_notebook(cells=[v4.new_code_cell("import os\nprint(os.getuid())"),
                                v4.new_code_cell("while True:\n    pass"),
                                v4.new_code_cell("print('never')")])
    box = Sandbox(tmp_path / "box", limits=Limits(cpu=3))
    res = execute_notebook(nb, cwd=box.workdir, env={}, cell_timeout=120, sandbox=box,
                           quiet_kernel=True)
    assert int(nb.cells[0].outputs[0]["text"]) == box.uid != os.getuid()
    assert res.status == "dead_kernel" and res.cell_index == 1
    assert "CPU time limit of 3 s" in res.evalue
    assert res.seconds < 100  # stopped by the CPU limit, long before the cell time limit


def test_sandbox_hides_what_it_must(tmp_path):
    import subprocess
    import sys

    from ood_utils.grader.sandbox import Sandbox

    secret = ROOT / "notebooks"
    box = Sandbox(tmp_path / "box", readable=[ROOT], hidden=[secret])
    probe = ("import os, sys\n"
             f"print(os.path.exists({str(secret)!r}) and os.listdir({str(secret)!r}))\n"
             f"print(os.path.isdir({str(ROOT / 'ood_utils')!r}))\n"
             "print(sorted(k for k in os.environ if 'SECRET' in k))\n"
             "print(os.getuid())\n")
    env = box.environment(dict(os.environ, MY_SECRET_TOKEN="x", OOD_PROFILE="miniclip"))
    assert "MY_SECRET_TOKEN" not in env and env["OOD_PROFILE"] == "miniclip"
    res = subprocess.run(box.command([sys.executable, "-c", probe], box.workdir), env=env,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    # the tmpfs over notebooks/ is empty; the package is there; no secret; not root
    assert res.stdout.split("\n")[:4] == ["[]", "True", "[]", str(box.uid)]


def _run_python(code: str, **env) -> str:
    import subprocess
    import sys

    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, env=dict(os.environ, **env), cwd=ROOT)
    assert res.returncode == 0, res.stderr
    return res.stdout


def test_setting_up_a_sandbox_imports_neither_torch_nor_matplotlib(tmp_path):
    # each grading process sets up one sandbox; importing torch for it cost ~2 s per
    # submission (measured: the whole of the sandbox's slowdown in issue 8's benchmark)
    out = _run_python(
        "import sys\n"
        "from pathlib import Path\n"
        "from ood_utils.grader.grading import _sandbox_paths\n"
        "from ood_utils.grader.sandbox import Sandbox\n"
        f"box = Sandbox(Path({str(tmp_path / 'box')!r}), readable=_sandbox_paths('miniclip'))\n"
        "box.seed_home()\n"
        "print(sorted(m for m in ('torch', 'matplotlib') if m in sys.modules))\n"
        "print(_sandbox_paths('miniclip')[-1])\n",
        OOD_WEIGHTS_DIR=str(tmp_path / "weights"))
    lines = out.splitlines()
    assert lines[0] == "[]"
    assert lines[1] == str(tmp_path / "weights")  # $OOD_WEIGHTS_DIR still honoured


@pytest.mark.parametrize("variable", ["MPLCONFIGDIR", "XDG_CACHE_HOME"])
def test_seed_home_copies_the_font_list_matplotlib_itself_uses(tmp_path, variable):
    folder = tmp_path / "cfg"
    cache = folder if variable == "MPLCONFIGDIR" else folder / "matplotlib"
    cache.mkdir(parents=True)
    (cache / "fontlist-v999.json").write_text('{"fake": true}')
    env = {variable: str(folder)}
    if variable == "XDG_CACHE_HOME":
        env["MPLCONFIGDIR"] = ""
    # matplotlib's own answer, in a process of its own
    theirs = _run_python("import matplotlib; print(matplotlib.get_cachedir())", **env).strip()
    assert Path(theirs) == cache
    out = _run_python(
        "from pathlib import Path\n"
        "from ood_utils.grader.sandbox import Sandbox\n"
        f"box = Sandbox(Path({str(tmp_path / 'box')!r}))\n"
        "box.seed_home()\n"
        "print((box.home / '.cache' / 'matplotlib' / 'fontlist-v999.json').read_text())\n",
        **env)
    assert out.strip() == '{"fake": true}'
