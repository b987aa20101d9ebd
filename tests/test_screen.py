"""Tests of ood_utils.answer_key.screen: the static screen of student cells (no kernel needed)."""
import warnings
from pathlib import Path

import nbformat
import pytest
import torch

from ood_utils.answer_key import checks
from ood_utils.answer_key import screen as static_screen
from ood_utils.course.cells import is_solution, nbgrader_meta
from ood_utils.grader.grading import restore_locked_cells

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
KNN = ROOT / "notebooks" / "02_knn.ipynb"


def knn_context():
    return static_screen.notebook_context(nbformat.read(KNN, as_version=4))


def screen(source, ctx=None):
    ctx = ctx or knn_context()
    return static_screen.screen_source(source, ctx["references"], ctx["protected"],
                                   ctx["modules"], ctx["imported"])


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_no_instructor_solution_is_flagged(path):
    nb = nbformat.read(path, as_version=4)
    restored, _ = restore_locked_cells(nb, nb)
    assert static_screen.screen_notebook(restored, nb) == []


def test_every_exercise_has_its_reference():
    found = {}
    for path in NOTEBOOKS:
        found.update(static_screen.exercise_references(nbformat.read(path, as_version=4)))
    assert "knn_scores" in found["knn_exercise"]
    assert "msp_scores" in found["msp_exercise"]
    assert "zero_shot_logits" in found["logits_exercise"]
    assert "text_embeddings" in found["text_embeddings_exercise"]
    assert "pseudo_labels" in found["plp_labels_exercise"]
    assert "train_linear_probe" in found["plp_train_exercise"]  # train_probe -> its words
    assert {"msp_scores", "probe_logits"} <= found["plp_exercise"]
    assert "mahalanobis_scores" in found["maha_exercise"]
    # 06 asks for the student's 05 function again, so the reference MD guards that cell
    assert "mahalanobis_scores" in found["kmeans_maha_exercise"]
    assert found["kmeans_exercise"] == {"kmeans_mahalanobis_scores"}
    assert "cac_loss" in found["cac_loss_exercise"]
    assert "anchor_distances" in found["cac_distances_exercise"]
    assert "split_visual" in found["split_exercise"]
    assert "extract_features" in found["features_exercise"]
    assert "soft_clip_loss" in found["clip_loss_exercise"]
    # a library call is the whole exercise here (KMeans with the stated settings): the
    # settings constant is not a reference, and scikit-learn is the student's to use
    no_course_function = {"kmeans_ids_exercise"}
    assert found["kmeans_ids_exercise"] == set()
    # every other exercise cell of every notebook has at least one reference name
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        for cell in nb.cells:
            gid = nbgrader_meta(cell).get("grade_id")
            if is_solution(cell) and cell.cell_type == "code" and gid not in no_course_function:
                assert found[gid], (path.name, cell.source[:80])


@pytest.mark.parametrize("code, needle", [
    # switching the checks off
    ("from ood_utils.answer_key import checks as c\nc.check_knn = lambda *a, **k: None", "ood_utils.answer_key.checks"),
    ("checks.check_auroc = print", "checks"),
    ("import ood_utils.answer_key.checks", "ood_utils.answer_key.checks"),
    ("import sys\nsys.modules['ood_utils.answer_key.checks'].check_knn = print", "sys.modules"),
    ("import builtins\nbuiltins.AssertionError = Warning", "builtins"),
    ("__builtins__.AssertionError = Warning", "__builtins__"),
    ("get_ipython().set_custom_exc((AssertionError,), lambda *a, **k: None)", "set_custom_exc"),
    ("import sys\nsys.excepthook = lambda *a: None", "excepthook"),
    ("metrics.auroc = lambda *a: 99.0", "metrics.auroc"),
    ("import ood_utils.methods.metrics as m\nm.auroc = lambda *a: 99.0", "m.auroc"),
    ("metrics = None", "rebinds `metrics`"),
    ("def helper():\n    global metrics\n    metrics = None", "rebinds `metrics`"),
    ("from ood_utils.answer_key.expected import EXPECTED", "ood_utils.answer_key.expected"),
    ("import gc\n[o for o in gc.get_objects()]", "gc"),
    ("import ctypes", "ctypes"),
    ("x = vars()['checks']", "vars"),
    ("setattr(metrics, 'auroc', print)", "setattr"),
    ("f = lambda: None\nf.__code__ = print.__code__", "__code__"),
    ("import os\nos.environ['OOD_PROFILE'] = 'clip'", "os.environ"),
    ("%run -i helper", "get_ipython"),
    # calling the reference implementation
    ("from ood_utils.methods import knn_scores", "knn_scores"),
    ("from ood_utils.methods import knn_scores as mine", "knn_scores"),
    ("from ood_utils import methods\ns = methods.knn_scores", "knn_scores"),
    ("import ood_utils.methods as s\nf = getattr(s, 'knn_' + 'scores')", "getattr"),
    ("import importlib\nf = importlib.import_module('ood_utils.methods')", "importlib"),
    ("f = __import__('ood_utils.methods')", "__import__"),
    ("exec(open('/course/ood_utils/methods/knn.py').read())", "exec"),
    ("code = compile(text, 'x', 'exec')", "compile"),
    ("import nbformat\nnb = nbformat.read(path, 4)", "nbformat"),
    ("text = open('/course/notebooks/02_knn.ipynb').read()", ".ipynb"),
    ("import inspect\nsrc = inspect.getsource(knn_scores_exercise)", "inspect"),
    ("name = 'knn_scores'", "knn_scores"),
    ("import subprocess", "subprocess"),
    ("import pickle", "pickle"),
    ("from ood_utils.methods import *", "everything"),
])
def test_hostile_routes_are_flagged(code, needle):
    problems = screen(code)
    assert problems, code
    assert any(needle in p for p in problems), problems


@pytest.mark.parametrize("code", [
    "import numpy as np\nimport torch.nn.functional as F\nimport os",
    "from ood_utils.methods import metrics",  # the same import as the setup cell
    "def knn_scores_exercise(a, b, k=1, chunk_size=2048):\n"
    "    out = torch.zeros(3)\n    out[0] = 1\n    return out",
    "class Box:\n    def __init__(self):\n        self.value = 1\n",
    "for i in range(3):\n    print(i, 'checks passed')",
    "values = []\nvalues.append(1)\nvalues[0] = 2",
    "import sys\nprint(sys.version)",
    "x = torch.randn(4, 3)\nprint(x.shape, x.T.__len__())",
    "this is not python",  # a syntax error is the kernel's to report
])
def test_honest_code_is_not_flagged(code):
    assert screen(code) == []


def test_other_helpers_of_the_notebook_stay_allowed():
    ctx = static_screen.notebook_context(
        nbformat.read(ROOT / "notebooks" / "06_kmeans.ipynb", as_version=4))
    # scikit-learn, the stated settings and the metrics stay allowed ...
    assert screen("def f(x, k):\n    return KMeans(n_clusters=k, **scores.KMEANS_SETTINGS)"
                  ".fit(x.numpy()).labels_", ctx) == []
    assert screen("def f(a, b):\n    return metrics.auroc(a, b)", ctx) == []
    # ... the reference of an exercise of this notebook does not
    assert screen("from ood_utils.methods import kmeans_mahalanobis_scores", ctx)
    assert screen("def f(a, b, c):\n    return mahalanobis_scores(a, b, c)", ctx)


def test_flagged_cells_cost_the_parts_that_follow():
    inst = nbformat.read(KNN, as_version=4)
    nb, _ = restore_locked_cells(inst, inst)
    ex = next(i for i, c in enumerate(nb.cells) if nbgrader_meta(c).get("grade_id")
              == "knn_exercise")
    nb.cells[ex].source = nb.cells[ex].source.replace(
        "train_unit = ", "from ood_utils.methods import knn_scores\n    train_unit = ")
    # a scratch cell placed just before the exercise (no part in between) costs its parts
    nb.cells.insert(ex, nbformat.v4.new_code_cell("import ood_utils.answer_key.checks"))
    found = static_screen.screen_notebook(nb, inst)
    assert [(f.label, f.parts) for f in found] == [
        (f"code cell {ex}", ["knn_selfcheck", "knn_auroc"]),
        ("exercise cell `knn_exercise`", ["knn_selfcheck", "knn_auroc"])]
    assert "knn_scores" in found[1].message() and "was not run" in found[1].message()


def test_self_check_warns_early_about_the_reference():
    from ood_utils.methods import knn_scores

    def knn_scores_exercise(train_feats, test_feats, k=1, chunk_size=2048):
        return knn_scores(train_feats, test_feats, k=k)

    shortcut = knn_scores

    def aliased_exercise(train_feats, test_feats, k=1, chunk_size=2048):
        return shortcut(train_feats, test_feats, k=k)

    def own_exercise(train_feats, test_feats, k=1, chunk_size=2048):
        sim = torch.nn.functional.normalize(test_feats.float(), dim=1) @ \
            torch.nn.functional.normalize(train_feats.float(), dim=1).T
        return sim.topk(k, dim=1).values[:, k - 1]

    with pytest.warns(static_screen.IntegrityWarning, match="knn_scores"):
        checks.check_knn(knn_scores_exercise)
    with pytest.warns(static_screen.IntegrityWarning, match="alias of the reference"):
        checks.check_knn(aliased_exercise)
    with warnings.catch_warnings():
        warnings.simplefilter("error", static_screen.IntegrityWarning)
        checks.check_knn(own_exercise)


def test_early_warning_tells_methods_from_builtins():
    def honest(model, x):
        model.eval()  # a method named like a builtin
        return model(x)

    def hostile(x):
        return eval("x")

    assert static_screen.function_findings(honest, "check_extract_features") == []
    assert any("`eval`" in f for f in static_screen.function_findings(hostile, "check_knn"))
