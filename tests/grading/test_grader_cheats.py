"""A few cheats of my own against 02's kNN, graded by the real grader beside honest code.

Each submission is the instructor's 02 with the kNN exercise cell replaced; one grader run
(sandboxed, two jobs) grades them all. Cheats must earn 0 on ``knn_selfcheck`` and
``knn_auroc`` (the parts they did not compute); the honest NumPy variant and the instructor's
solution keep full marks. Slow (a kernel per submission): part of ``make test-hostile``.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

import nbformat
import pytest

from ood_utils.course.cells import nbgrader_meta

ROOT = Path(__file__).resolve().parents[2]
HEAD = "import torch\nimport numpy as np\n"

CHEATS = {
    # forging: an array subclass whose comparisons always succeed, scores of the wrong sign
    "forged_subclass": HEAD + """
class _Yes(np.ndarray):
    def __sub__(self, other): return np.zeros(self.shape)
    def __rsub__(self, other): return np.zeros(self.shape)
    def __eq__(self, other): return np.ones(self.shape, bool)
def knn_scores_exercise(train_feats, test_feats, k=1, chunk_size=1024):
    return np.zeros(len(test_feats)).view(_Yes)
""",
    # switching the checks off in the kernel and recording made-up scores
    "checks_patched": HEAD + """
from ood_utils.answer_key import checks as _c
_c.check_knn = lambda *a, **k: print("knn_scores_exercise: public checks passed")
_c.check_auroc = lambda *a, **k: None
def knn_scores_exercise(train_feats, test_feats, k=1, chunk_size=1024):
    return torch.rand(len(test_feats))
""",
    # the reference by a name built at run time
    "attrgetter_reference": HEAD + """
from operator import attrgetter
import ood_utils.methods as _m
def knn_scores_exercise(train_feats, test_feats, k=1, chunk_size=1024):
    return attrgetter("knn" + "_scores")(_m)(train_feats, test_feats, k=k)
""",
    # compiling the reference's source text into a new function
    "compiled_source": HEAD + """
import ood_utils.methods.knn as _k
_src = open(_k.__file__.replace(".pyc", ".py")).read()
_ns = {}
exec(compile(_src, "x", "exec"), _ns)
def knn_scores_exercise(train_feats, test_feats, k=1, chunk_size=1024):
    return _ns["knn_scores"](train_feats, test_feats, k=k)
""",
    # hiding a failure: an error whose rendering raises, and a hook that clears outputs
    "hidden_failure": HEAD + """
class _Quiet(Exception):
    def _render_traceback_(self): raise RuntimeError("no")
get_ipython().events.register("post_run_cell", lambda result: None)
def knn_scores_exercise(train_feats, test_feats, k=1, chunk_size=1024):
    raise _Quiet("hidden")
""",
    # ending the kernel as soon as the grader calls
    "exit_on_call": HEAD + """
import os
def knn_scores_exercise(train_feats, test_feats, k=1, chunk_size=1024):
    os._exit(0)
""",
}
HONEST = {
    "numpy_argpartition": HEAD + """
def knn_scores_exercise(train_feats, test_feats, k=1, chunk_size=1024):
    tr = np.asarray(train_feats, dtype=np.float64)
    te = np.asarray(test_feats, dtype=np.float64)
    tr = tr / np.linalg.norm(tr, axis=1, keepdims=True)
    out = []
    for s in range(0, len(te), chunk_size):
        c = te[s:s + chunk_size]
        sim = (c / np.linalg.norm(c, axis=1, keepdims=True)) @ tr.T
        part = np.partition(sim, sim.shape[1] - k, axis=1)[:, sim.shape[1] - k]
        out.append(part)
    return torch.from_numpy(np.concatenate(out))
""",
}


def _submission(source: str | None, path: Path) -> None:
    nb = nbformat.read(ROOT / "notebooks" / "02_knn.ipynb", as_version=4)
    if source is not None:
        cell = next(c for c in nb.cells if nbgrader_meta(c).get("grade_id") == "knn_exercise")
        cell.source = source
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)


@pytest.fixture(scope="module")
def grades(tmp_path_factory):
    from ood_utils.grader.grading import grade_submissions
    from ood_utils.grader.sandbox import unavailable_reason

    reason = unavailable_reason()
    if reason:
        pytest.fail(f"the grader's sandbox does not work here: {reason}")
    root = tmp_path_factory.mktemp("cheats")
    subs = root / "subs"
    _submission(None, subs / "instructor" / "02_knn.ipynb")
    for name, src in {**CHEATS, **HONEST}.items():
        _submission(src, subs / name / "02_knn.ipynb")
    grade_submissions([subs], ROOT / "notebooks", root / "out", profile="miniclip", jobs=2)
    table = {}
    with open(root / "out" / "grades.csv", newline="") as f:
        for row in csv.DictReader(f):
            table.setdefault(row["submission"].split("/")[0], {})[row["part"]] = \
                (float(row["score"]), float(row["max_score"]), row["status"], row["message"])
    return table


@pytest.mark.parametrize("name", sorted(CHEATS))
def test_cheat_earns_nothing_for_the_knn_parts(grades, name):
    for part in ("knn_selfcheck", "knn_auroc"):
        score, _, status, message = grades[name][part]
        assert score == 0, f"{name} earned {score} on {part} ({status}: {message})"


@pytest.mark.parametrize("name", ["instructor", *sorted(HONEST)])
def test_honest_code_keeps_full_marks(grades, name):
    for part, (score, top, status, message) in grades[name].items():
        assert score == top, f"{name} lost {part}: {status}: {message}"
