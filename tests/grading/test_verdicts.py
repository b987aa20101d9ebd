"""The grader's verdicts, the plain-data exchange and the stripped build (issue 16), fast parts.

The end-to-end cheats (a kernel that forges, hides or exits) are graded by the real grader in
``tests/grading/test_grader_cheats.py`` and ``tests/grading/test_hostile.py``.
"""
from __future__ import annotations

import ast
import json
import os
from pathlib import Path

import nbformat
import numpy as np
import pytest
import torch

from ood_utils.course.cells import is_graded_part, nbgrader_meta
from ood_utils.grader import build, course_parts
from ood_utils.grader.exchange import Exchange, NoAnswer, StudentError
from ood_utils.grader.verdicts import Outcome, SelfCheck

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("0*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_graded_cell_has_a_verdict(path):
    nb = nbformat.read(path, as_version=4)
    graded = {nbgrader_meta(c)["grade_id"] for c in nb.cells if is_graded_part(c)}
    declared = set(course_parts.VERDICTS.get(path.stem, {}))
    assert graded == declared, (f"{path.stem}: graded cells without a verdict "
                                f"{sorted(graded - declared)}, verdicts without a cell "
                                f"{sorted(declared - graded)}")


def test_selfchecks_name_existing_checks():
    from ood_utils.answer_key import checks

    for notebook, parts in course_parts.VERDICTS.items():
        for gid, verdict in parts.items():
            for v in getattr(verdict, "parts", (verdict,)):
                if isinstance(v, SelfCheck):
                    assert callable(getattr(checks, v.check)), (notebook, gid)


# --------------------------------------------------------------------------- exchange
class _FakeKernel:
    """Plays the kernel: runs the kernel-side snippet in a namespace of this process."""

    def __init__(self, namespace, tamper=None):
        self.ns, self.tamper = namespace, tamper

    def __call__(self, code):
        class Shell:
            user_ns = self.ns
        ns = {"get_ipython": lambda: Shell()}
        exec(compile(code, "<step>", "exec"), ns)
        if self.tamper is not None:
            step = sorted(p for p in self.folder.iterdir())[-1]
            self.tamper(step / "out")


def _exchange(tmp_path, namespace, tamper=None):
    kernel = _FakeKernel(namespace, tamper)
    kernel.folder = tmp_path
    return Exchange(tmp_path, kernel)


def test_call_round_trip_gives_fresh_plain_values(tmp_path):
    ns = {"f": lambda x, k=1, layer=None: {"s": x * k, "n": int(k), "w": layer}}
    lin = torch.nn.Linear(3, 2)
    out = _exchange(tmp_path, ns).call("f", torch.ones(2, 3), k=3, layer=lin)
    assert torch.equal(out["s"], torch.full((2, 3), 3.0)) and out["n"] == 3
    assert type(out["w"]) is torch.nn.Linear and torch.equal(out["w"].weight, lin.weight)


def test_gradients_come_back_through_the_sum(tmp_path):
    ns = {"f": lambda x: (x ** 2)}
    x = torch.tensor([1.0, -2.0, 3.0], requires_grad=True)
    y = _exchange(tmp_path, ns).call("f", x)
    y.sum().backward()
    assert torch.allclose(y.detach(), x.detach() ** 2)
    assert torch.allclose(x.grad, 2 * x.detach())


def test_a_numpy_subclass_does_not_cross(tmp_path):
    class Always(np.ndarray):
        def __sub__(self, other):
            return np.zeros(1)

    ns = {"f": lambda: np.arange(3.0).view(Always)}
    got = _exchange(tmp_path, ns).call("f")
    assert type(got) is np.ndarray and np.array_equal(got - np.ones(3), np.arange(3.0) - 1)


def test_object_arrays_and_pickles_are_refused(tmp_path):
    def forge(out):  # replace the answer's array by a pickled object array
        np.save(out / "v0.npy", np.array([object()], dtype=object), allow_pickle=True)

    with pytest.raises(NoAnswer):
        _exchange(tmp_path, {"f": lambda: np.arange(3.0)}, forge).call("f")


def test_a_link_instead_of_the_answer_is_refused(tmp_path):
    secret = tmp_path / "secret.json"
    secret.write_text(json.dumps({"ok": True, "value": {"t": "json", "v": 42}}))

    def link(out):
        os.remove(out / "answer.json")
        os.symlink(secret, out / "answer.json")

    with pytest.raises(NoAnswer):
        _exchange(tmp_path, {"f": lambda: 1}, link).call("f")


def test_no_answer_when_the_step_leaves_nothing(tmp_path):
    def wipe(out):
        os.remove(out / "answer.json")

    with pytest.raises(NoAnswer):
        _exchange(tmp_path, {"f": lambda: 1}, wipe).call("f")


def test_the_students_exception_is_rebuilt_by_name_only(tmp_path):
    class Sneaky(Exception):
        pass

    def boom():
        raise Sneaky("no")

    def todo():
        raise NotImplementedError("fill in")

    ex = _exchange(tmp_path, {"boom": boom, "todo": todo})
    with pytest.raises(StudentError, match="Sneaky: no"):
        ex.call("boom")
    with pytest.raises(NotImplementedError):
        ex.call("todo")


def test_a_selfcheck_fails_on_a_wrong_function_and_passes_on_the_reference(tmp_path):
    from ood_utils.grader.verdicts import Context
    from ood_utils.methods import knn_scores

    right = {"knn_scores_exercise": lambda tr, te, k=1, chunk_size=64: knn_scores(tr, te, k=k)}
    wrong = {"knn_scores_exercise": lambda tr, te, k=1, chunk_size=64: -knn_scores(tr, te, k=k)}
    verdict = SelfCheck("check_knn", ("knn_scores_exercise",))
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    ok = verdict.judge(Context(_exchange(tmp_path / "a", right), "miniclip", 12345))
    bad = verdict.judge(Context(_exchange(tmp_path / "b", wrong), "miniclip", 12345))
    assert ok == Outcome.ok()
    assert not bad.passed and bad.failure.kind == "mismatch" and "sign" in bad.failure.message


def test_the_grader_draws_other_inputs_than_the_public_check(tmp_path):
    from ood_utils.answer_key.checks import _common
    from ood_utils.grader.verdicts import _shifted_seeds

    public = _common._random_feats(4, 3, 10)
    with _shifted_seeds(777):
        secret = _common._random_feats(4, 3, 10)
    assert not torch.equal(public, secret)
    assert torch.equal(public, _common._random_feats(4, 3, 10))


# --------------------------------------------------------------------------- the build
def test_stripped_build_has_no_reference_source(tmp_path):
    pkg = build.stripped_package("02_knn", tmp_path)
    knn = (pkg / "methods" / "knn.py").read_text()
    tree = ast.parse(knn)
    fn = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "knn_scores")
    assert len(fn.body) == 1 and isinstance(fn.body[0], ast.Raise)
    assert "topk" not in knn and "normalize" not in knn
    checks = (pkg / "answer_key" / "checks" / "nb02_knn.py").read_text()
    assert "np.sort(cos" not in checks and "topk" not in checks  # hints and sweep reference
    assert not list(pkg.rglob("__pycache__"))
    real = json.loads((Path(build.__file__).parents[1] / "answer_key" / "expected.json")
                      .read_text())
    doc = json.loads((pkg / "answer_key" / "expected.json").read_text())
    assert real["sweeps"]["miniclip"]  # the real answer key records the sweeps ...
    assert doc["sweeps"] == {p: {} for p in real["sweeps"]}  # ... the sandbox's copy does not
    assert doc["results"] == real["results"]
    # helpers of the notebook stay
    assert "def auroc" in (pkg / "methods" / "metrics.py").read_text()


def test_stripped_reference_raises_not_available(tmp_path):
    import subprocess
    import sys

    pkg = build.stripped_package("05_mahalanobis", tmp_path)
    mirror = tmp_path / "site"
    mirror.mkdir()
    os.symlink(pkg, mirror / "ood_utils")
    code = ("import torch\nfrom ood_utils import methods\n"
            "x = torch.randn(30, 4)\n"
            "methods.drop_degenerate_directions(x, x)\n"  # a helper the locked cells use
            "try:\n    methods.mahalanobis_scores(x, torch.arange(30) % 3, x)\n"
            "except RuntimeError as e:\n    print('REFUSED', e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(mirror)}, cwd=tmp_path)
    assert "REFUSED not available while grading" in out.stdout, out.stderr[-2000:]


# --------------------------------------------------------------------------- sweeps called
def _notebook_function(notebook, name):
    """The instructor's solution of ``name`` (its exercise cell), defined in a fresh namespace."""
    import torch.nn.functional as F

    from ood_utils.methods import metrics

    nb = nbformat.read(Path(__file__).resolve().parents[2] / "notebooks" / f"{notebook}.ipynb",
                       as_version=4)
    ns = {"torch": torch, "np": np, "F": F, "nn": torch.nn, "metrics": metrics}
    cell = next(c for c in nb.cells if c.cell_type == "code" and (
        f"def {name}(" in c.source or f"class {name}(" in c.source))
    exec(compile(cell.source, name, "exec"), ns)
    return ns


@pytest.mark.parametrize("notebook, gid, fn", [
    ("02_knn", "knn_sweep_auroc", "knn_sweep_exercise"),
    ("04_plp", "plp_sweep_graded", "temperature_sweep_exercise")])
def test_a_sweep_is_called_on_the_graders_inputs(tmp_path, notebook, gid, fn):
    from ood_utils.answer_key.expected import get_sweep
    from ood_utils.grader.verdicts import AllOf, Context, SweepCall

    verdict = course_parts.verdict_for(notebook, gid)
    assert isinstance(verdict, AllOf) and isinstance(verdict.parts[0], SweepCall)
    sweep = verdict.parts[0]
    ns = _notebook_function(notebook, fn)
    sweep_id = {"02_knn": "knn_sweep", "04_plp": "plp_temperature"}[notebook]
    typed = {k: e.value for k, e in get_sweep(sweep_id, "miniclip").items()}
    forged = {fn: lambda *args, **kw: dict(typed)}  # the answer key's numbers, typed in
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    ok = sweep.judge(Context(_exchange(tmp_path / "a", ns), "miniclip", 4242))
    bad = sweep.judge(Context(_exchange(tmp_path / "b", forged), "miniclip", 4242))
    assert ok.passed, ok
    assert not bad.passed and bad.failure.kind == "mismatch" and "grader's own inputs" in \
        bad.failure.message
    # the inputs are new every run
    a = sweep.inputs("miniclip", np.random.default_rng(1))
    b = sweep.inputs("miniclip", np.random.default_rng(2))
    assert not torch.equal(a[1], b[1])


def test_the_cac_sweep_is_judged_on_the_graders_distances(tmp_path):
    from ood_utils.grader.verdicts import Computed, Context

    verdict = course_parts.verdict_for("07_cac_osr", "cac_sweep_results")
    assert isinstance(verdict, Computed)
    ns = _notebook_function("07_cac_osr", "threshold_sweep_exercise")
    ns["TPRS"] = [0.5, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99]
    made_up = {"TPRS": ns["TPRS"],  # plausible numbers, not computed
               "threshold_sweep_exercise": lambda v, k, u, tprs: (
                   [100 * t for t in tprs], [100 * (1 - t) for t in tprs])}
    numpy_items = dict(ns, threshold_sweep_exercise=lambda v, k, u, tprs: tuple(
        [np.float64(x) for x in part] for part in ns["threshold_sweep_exercise"](v, k, u, tprs)))
    few = dict(ns, TPRS=[0.9, 0.95])
    outcomes = []
    for name, space in (("ok", ns), ("made_up", made_up), ("few", few),
                        ("numpy_items", numpy_items)):
        (tmp_path / name).mkdir()
        outcomes.append(verdict.judge(Context(_exchange(tmp_path / name, space), "miniclip", 99)))
    ok, bad, short, items = outcomes
    assert ok.passed, ok
    assert items.passed, items  # lists of NumPy scalars (an honest variant's) count as numbers
    assert not bad.passed and "grader's own distances" in bad.failure.message
    assert not short.passed and "at least five" in short.failure.message


# --------------------------------------------------------------------------- probed objects
def _solutions(notebook, names):
    """The instructor's solutions of ``names`` (their exercise cells, in order), defined in
    one namespace, as in the notebook's kernel."""
    import torch.nn.functional as F

    from ood_utils.methods import metrics

    nb = nbformat.read(ROOT / "notebooks" / f"{notebook}.ipynb", as_version=4)
    from sklearn.cluster import KMeans

    ns = {"torch": torch, "np": np, "F": F, "nn": torch.nn, "metrics": metrics,
          "KMeans": KMeans}
    for name in names:
        cell = next(c for c in nb.cells if c.cell_type == "code" and (
            f"def {name}(" in c.source or f"class {name}(" in c.source))
        exec(compile(cell.source, name, "exec"), ns)
    return ns


def _cac_namespace():
    return _solutions("07_cac_osr", ("class_anchors_exercise", "anchor_distances_exercise",
                                     "cac_loss_exercise", "CACNetworkExercise",
                                     "train_cac_exercise"))


def test_the_cac_network_and_loop_are_judged_here_on_what_the_kernel_returns(tmp_path):
    from ood_utils.grader.verdicts import Context, Probed

    network = course_parts.verdict_for("07_cac_osr", "cac_network_selfcheck")
    training = course_parts.verdict_for("07_cac_osr", "cac_training_selfcheck")
    assert isinstance(network, Probed) and isinstance(training, Probed)
    ns = _cac_namespace()
    right = ns["CACNetworkExercise"]

    class MaxPool(right):  # the typical mistake: max instead of average pooling
        def embed(self, x):
            F = ns["F"]
            x = self.dropout(F.relu(self.conv1(x)))
            x = self.dropout(F.relu(F.max_pool2d(self.conv2(x), 2)))
            x = self.dropout(F.relu(F.max_pool2d(self.conv3(x), 2)))
            x = self.dropout(F.relu(self.hidden(x.flatten(1))))
            return self.logits(x)

    def no_schedule(model, loader, epochs, lr, lambda_):  # Adam at a constant rate
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        history = []
        model.train()
        for _ in range(epochs):
            total, count = 0.0, 0
            for x, y in loader:
                opt.zero_grad()
                loss = ns["cac_loss_exercise"](model(x), y, lambda_=lambda_)
                loss.backward()
                opt.step()
                total, count = total + loss.item() * len(y), count + len(y)
            history.append(total / count)
        model.eval()
        return history

    outcomes = {}
    for label, verdict, space in (
            ("net_ok", network, ns), ("net_bad", network, dict(ns, CACNetworkExercise=MaxPool)),
            ("loop_ok", training, ns),
            ("loop_bad", training, dict(ns, train_cac_exercise=no_schedule)),
            ("loop_none", training, dict(ns, train_cac_exercise=lambda *a: None))):
        (tmp_path / label).mkdir()
        outcomes[label] = verdict.judge(Context(_exchange(tmp_path / label, space), "miniclip",
                                                31337))
    assert outcomes["net_ok"].passed, outcomes["net_ok"]
    assert outcomes["loop_ok"].passed, outcomes["loop_ok"]
    assert not outcomes["net_bad"].passed and "max pooling" in outcomes["net_bad"].failure.message
    assert not outcomes["loop_bad"].passed and \
        "learning rate stays constant" in outcomes["loop_bad"].failure.message
    assert not outcomes["loop_none"].passed and "did not change" in \
        outcomes["loop_none"].failure.message


def test_the_cac_references_are_absent_from_07s_sandbox(tmp_path):
    pkg = build.stripped_package("07_cac_osr", tmp_path)
    experiment = (pkg / "course" / "cac_experiment.py").read_text()
    cac = (pkg / "methods" / "cac.py").read_text()
    checks = (pkg / "answer_key" / "checks" / "nb07_cac.py").read_text()
    assert "self.conv1 = nn.Conv2d" not in experiment  # CACNetwork
    tree = ast.parse(experiment)
    loop = next(n for n in tree.body if isinstance(n, ast.FunctionDef)
                and n.name == "train_cac_whole")  # the reference training loop
    assert len(loop.body) == 1 and isinstance(loop.body[0], ast.Raise)
    assert "logsumexp" not in cac and "torch.cdist" not in cac
    assert "nn.AvgPool2d if pool" not in checks  # the network's reference variants
    assert "torch.optim.Adam(chosen" not in checks  # the reference loop and its variants
    assert "class TensorBatches" in experiment and "class CACModel" in cac  # helpers stay


def test_the_cac_result_is_computed_here_from_the_students_weights(tmp_path):
    """The grader scores the student's weights with its own network: an untrained network
    fails (whatever distances the notebook holds), weights of the wrong shapes are named. (That
    trained weights pass is shown by the instructor's 07 under the real grader, in the hostile
    and nbgrader suites.)"""
    from ood_utils.course import cac_experiment as ce
    from ood_utils.grader.verdicts import Computed, Context

    verdict = course_parts.verdict_for("07_cac_osr", "cac_results")
    assert isinstance(verdict, Computed)
    cfg = ce.training_settings("miniclip")
    untrained = ce.CACNetwork(6, channels=cfg["channels"], dropout=cfg["dropout"])
    outcomes = {}
    for label, space in (("untrained", {"model": untrained}),
                         ("wrong", {"model": torch.nn.Linear(3, 2)})):
        (tmp_path / label).mkdir()
        outcomes[label] = verdict.judge(Context(_exchange(tmp_path / label, space), "miniclip", 5))
    assert not outcomes["untrained"].passed and outcomes["untrained"].failure.kind == "mismatch"
    assert not outcomes["wrong"].passed and "build the same CNN" in \
        outcomes["wrong"].failure.message


def test_the_kmeans_sweep_is_called_on_the_graders_rows(tmp_path):
    from ood_utils.grader.verdicts import AllOf, Computed, Context

    verdict = course_parts.verdict_for("06_kmeans", "kmeans_sweep_graded")
    assert isinstance(verdict, AllOf) and isinstance(verdict.parts[0], Computed)
    cells = _solutions("06_kmeans", ("class_statistics_exercise", "mahalanobis_exercise",
                                     "kmeans_cluster_ids_exercise", "kmeans_sweep_exercise"))
    right = cells["kmeans_sweep_exercise"]

    def swapped(train, test, ks, seed=0):  # MD and RMD swapped
        out = right(train, test, ks, seed=seed)
        return {k: dict(v, md=v["rmd"], rmd=v["md"]) for k, v in out.items()}

    outcomes = {}
    for label, space in (("ok", cells), ("swapped", dict(cells, kmeans_sweep_exercise=swapped))):
        (tmp_path / label).mkdir()
        outcomes[label] = verdict.parts[0].judge(Context(_exchange(tmp_path / label, space),
                                                         "miniclip", 2024))
    assert outcomes["ok"].passed, outcomes["ok"]
    assert not outcomes["swapped"].passed and "grader's own inputs" in \
        outcomes["swapped"].failure.message


def _judge_cases(notebook, cases, tmp_path, seed_shift):
    """``cases``: {label: (grade_id, kernel namespace, None or words of the failure)}; each
    judged by the part's verdict through a fresh exchange."""
    from ood_utils.grader.verdicts import Context

    parts = course_parts.VERDICTS[notebook]
    for label, (gid, space, words) in cases.items():
        (tmp_path / label).mkdir()
        outcome = parts[gid].judge(Context(_exchange(tmp_path / label, space), "miniclip",
                                           seed_shift))
        if words is None:
            assert outcome.passed, (label, outcome)
        else:
            assert not outcome.passed and words in outcome.failure.message, (label, outcome)


def test_01s_parts_are_judged_here_on_what_the_kernel_returns(tmp_path):
    """01's split, extraction loop and real features: probes in the kernel, verdicts here."""
    from ood_utils.course.models import load_clip

    ns = _solutions("01_features", ("split_visual_exercise", "extract_features_exercise"))
    model, preprocess, _ = load_clip("miniclip")
    backbone, _ = ns["split_visual_exercise"](model)
    ns.update(backbone=backbone, preprocess=preprocess)
    right_extract = ns["extract_features_exercise"]

    def normalised(backbone, loader, device):
        feats, labels = right_extract(backbone, loader, device)
        return torch.nn.functional.normalize(feats, dim=1), labels

    def with_head(model):  # the projection left in the backbone
        return model.visual, model.visual.head

    cases = {
        "split_ok": ("split_selfcheck", ns, None),
        "split_head": ("split_selfcheck", dict(ns, split_visual_exercise=with_head),
                       "still applies the projection"),
        "loop_ok": ("features_selfcheck", ns, None),
        "loop_normalised": ("features_selfcheck", dict(ns, extract_features_exercise=normalised),
                            "L2-normalised"),
        "real_ok": ("features_shapes", ns, None),
        "real_normalised": ("features_shapes", dict(ns, extract_features_exercise=normalised),
                            "differ from the reference extraction"),
    }
    _judge_cases("01_features", cases, tmp_path, 777)


def test_03s_clip_parts_are_judged_here_with_the_tiny_clip_sent_by_name(tmp_path):
    """03's text embeddings and sweep (SelfCheck; the tiny CLIP goes to the kernel by name) and
    its CLIP head (a probe): the instructor's code passes, a typical mistake fails."""
    ns = _solutions("03_msp", ("text_embeddings_exercise", "clip_head_exercise",
                               "zero_shot_logits_exercise", "msp_exercise",
                               "msp_sweep_exercise"))

    def unnormalised(model, tokenizer, class_names, template="{}"):
        with torch.no_grad():
            return model.encode_text(tokenizer([template.format(c) for c in class_names])).float()

    def raw_scale(model):
        return model.visual.head, model.logit_scale.item()

    cases = {
        "text_ok": ("text_embeddings_selfcheck", ns, None),
        "text_raw": ("text_embeddings_selfcheck", dict(ns, text_embeddings_exercise=unnormalised),
                     "not L2-normalised"),
        "head_ok": ("clip_head_selfcheck", ns, None),
        "head_raw": ("clip_head_selfcheck", dict(ns, clip_head_exercise=raw_scale),
                     "log(1/tau)"),
        "sweep_ok": ("msp_sweep_selfcheck", ns, None),
        "sweep_forged": ("msp_sweep_selfcheck", dict(
            ns, msp_sweep_exercise=lambda *a: {(t, T): 50.0 for t in a[5] for T in a[6]}),
                         "returned wrong AUROCs"),
    }
    _judge_cases("03_msp", cases, tmp_path, 4321)


@pytest.mark.parametrize("notebook, module, names", [
    ("01_features", "course/features.py", ("extract_features",)),
    ("03_msp", "course/models.py", ("text_embeddings", "zero_shot_logits")),
    ("03_msp", "methods/msp.py", ("msp_scores",)),
    ("07_cac_osr", "methods/cac.py", ("cac_loss", "class_anchors", "anchor_distances"))])
def test_the_references_of_the_probed_parts_raise_in_the_sandbox(tmp_path, notebook, module,
                                                                 names):
    tree = ast.parse((build.stripped_package(notebook, tmp_path) / module).read_text())
    functions = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
    for name in names:
        body = functions[name].body
        assert len(body) == 1 and isinstance(body[0], ast.Raise), (notebook, name)
    kept = {"01_features": "load_features", "03_msp": "load_clip"}.get(notebook)
    if kept and kept in functions:  # the helpers of the locked cells stay
        assert not isinstance(functions[kept].body[-1], ast.Raise)


def test_a_kmeans_part_is_judged_on_the_students_own_partition(tmp_path):
    """Another converged partition (float64 input: another local optimum) keeps the points; a
    partition that is not a k-means fixed point, or scores that do not follow the partition,
    lose them."""
    from sklearn.cluster import KMeans

    from ood_utils.grader.verdicts import Computed, Context
    from ood_utils.methods import mahalanobis_scores

    verdict = course_parts.verdict_for("06_kmeans", "kmeans10_auroc")
    assert isinstance(verdict, Computed)
    _, (train, id_test, ood_test) = course_parts._rotated("miniclip")
    both, n = torch.cat([id_test, ood_test]), len(id_test)

    def space(ids, shift=0.0):
        ids = torch.as_tensor(ids).long()
        scores = {f"kmeans10_{kind}": tuple(
            s + shift for s in torch.as_tensor(mahalanobis_scores(
                train, ids, both, relative=kind == "rmd")).double().split([n, len(both) - n]))
            for kind in ("md", "rmd")}
        return {"cluster_ids": {10: ids}, "kmeans_scores": scores}

    f64 = KMeans(10, random_state=0, n_init=1, algorithm="lloyd").fit(
        train.double().numpy()).labels_.astype(np.int64)
    proj = train.double().numpy() @ np.random.default_rng(1).normal(size=train.shape[1])
    quantiles = np.searchsorted(np.quantile(proj, np.linspace(0, 1, 11)[1:-1]), proj)
    outcomes = {}
    for label, ns in (("float64", space(f64)), ("quantiles", space(quantiles)),
                      ("shifted", space(f64, shift=5.0))):
        (tmp_path / label).mkdir()
        outcomes[label] = verdict.judge(Context(_exchange(tmp_path / label, ns), "miniclip", 1))
    assert outcomes["float64"].passed, outcomes["float64"]
    assert not outcomes["quantiles"].passed and "not a k-means partition" in \
        outcomes["quantiles"].failure.message
    assert not outcomes["shifted"].passed and "with your clusters as the classes" in \
        outcomes["shifted"].failure.message


def test_the_plp_part_is_judged_on_the_students_own_probe(tmp_path):
    from ood_utils.course import pipeline
    from ood_utils.course.features import load_features
    from ood_utils.grader.verdicts import Computed, Context

    verdict = course_parts.verdict_for("04_plp", "plp_auroc")
    assert isinstance(verdict, Computed)
    feats = load_features("miniclip", progress=False)
    probe = pipeline.plp_probe(seed=0, profile="miniclip", progress=False)
    good = torch.nn.Linear(*probe["weight"].shape[::-1])
    with torch.no_grad():
        good.weight.copy_(probe["weight"])
        good.bias.copy_(probe["bias"])
    torch.manual_seed(0)
    untrained = torch.nn.Linear(*probe["weight"].shape[::-1])

    def msp(layer, x):
        with torch.no_grad():
            return layer(x).double().softmax(dim=1).max(dim=1).values

    def space(layer, scorer=msp):
        return {"layer": layer, "score_in": scorer(layer, feats["id_test_feats"]),
                "score_out": scorer(layer, feats["ood_test_feats"])}

    outcomes = {}
    for label, ns in (("ok", space(good)), ("untrained", space(untrained)),
                      ("other_scores", space(good, lambda layer, x: msp(layer, x) ** 2))):
        (tmp_path / label).mkdir()
        outcomes[label] = verdict.judge(Context(_exchange(tmp_path / label, ns), "miniclip", 3))
    assert outcomes["ok"].passed, outcomes["ok"]
    assert not outcomes["untrained"].passed and "best epoch" in \
        outcomes["untrained"].failure.message
    assert not outcomes["other_scores"].passed and "maximum softmax probability" in \
        outcomes["other_scores"].failure.message
