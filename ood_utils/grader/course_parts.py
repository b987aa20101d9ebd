"""The verdict of every graded part of the course, and what a grading sandbox must not hold.

``VERDICTS[notebook stem][grade_id]`` says how the grader decides the part
(:mod:`ood_utils.grader.verdicts`); ``STRIP[notebook stem]`` names the reference
implementations removed from the package the sandbox mounts while that notebook is graded
(:mod:`ood_utils.grader.build`), ``HIDDEN_CACHES`` the cache files that hold an exercise's
answer. ``tests/grading/test_verdicts.py`` checks that every graded cell of every instructor
notebook has a verdict.
"""
from __future__ import annotations

import numpy as np

from .verdicts import AllOf, Computed, Probed, Scores, SelfCheck, SweepCall, Values, Verdict

__all__ = ["VERDICTS", "STRIP", "HIDDEN_CACHES", "declare", "verdict_for"]

VERDICTS: dict[str, dict[str, Verdict]] = {}


def declare(notebook: str, grade_id: str, verdict: Verdict) -> None:
    """Declare the verdict of one graded cell (``grade_id``) of ``notebook`` (a stem)."""
    parts = VERDICTS.setdefault(notebook, {})
    if grade_id in parts:
        raise ValueError(f"{notebook}/{grade_id}: declared twice")
    parts[grade_id] = verdict


def verdict_for(notebook: str, grade_id: str) -> Verdict | None:
    return VERDICTS.get(notebook, {}).get(grade_id)


# --------------------------------------------------------------------------- references
def _feats(profile):
    from ..course.features import load_features

    return load_features(profile, progress=False)


def _knn_reference(profile):
    from ..methods import knn_scores

    f = _feats(profile)
    return (knn_scores(f["id_train_feats"], f["id_test_feats"], k=1),
            knn_scores(f["id_train_feats"], f["ood_test_feats"], k=1))


def _msp_reference(profile):
    from ..course import pipeline
    from ..methods import msp_scores

    z = pipeline.zero_shot_logits(profile, progress=False)
    return msp_scores(z["id_test"]), msp_scores(z["ood_test"])


def _probe(profile):
    from ..course import pipeline

    return pipeline.plp_probe(seed=0, profile=profile, progress=False)


def _plp_md_reference(relative):
    def reference(profile):
        from ..methods import mahalanobis_scores

        p = _probe(profile)
        return tuple(mahalanobis_scores(p["id_train"], p["pseudo_id_train"], p[split],
                                        relative=relative) for split in ("id_test", "ood_test"))
    return reference


def _rotated(profile):
    from ..methods import drop_degenerate_directions

    f = _feats(profile)
    return f, drop_degenerate_directions(f["id_train_feats"], f["id_test_feats"],
                                         f["ood_test_feats"])


def _md_reference(relative):
    def reference(profile):
        from ..methods import mahalanobis_scores

        f, (train, id_test, ood_test) = _rotated(profile)
        return tuple(mahalanobis_scores(train, f["id_train_labels"], x, relative=relative)
                     for x in (id_test, ood_test))
    return reference


def _runs(*checks):
    """Mark a judge with the graded checks it runs here (the sandbox's copy of them only
    says that the grader decides: :mod:`ood_utils.grader.build`)."""
    def mark(fn):
        fn.checks = checks
        return fn
    return mark


def _sweep(sweep_id, arg):
    @_runs("check_sweep")
    def judge(profile, **values):
        from ..answer_key.checks import check_sweep

        check_sweep(sweep_id, values[arg], profile)
    return judge


def _result_check(name, arg):
    @_runs(name)
    def judge(profile, **values):
        from ..answer_key import checks

        getattr(checks, name)(values[arg], profile)
    return judge


@_runs("check_threshold_sweep_results")
def _cac_sweep_called(exchange, profile, rng):
    """07's sweep: the student's TPRS (captured) and threshold_sweep_exercise called on
    distances the grader draws (six classes; known rows near one anchor), against the
    reference sweep on the same distances (0.01 points)."""
    import torch

    from ..course.cac_experiment import threshold_sweep
    from ..methods.cac import cac_known_scores

    tprs = exchange.capture({"t": "list(TPRS)"})["t"]
    try:
        t = np.asarray(tprs, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise AssertionError("TPRS must be a list of numbers") from None
    if len(np.unique(t)) < 5 or t.min() < 0.5 or t.max() > 1 or not np.isclose(t, 0.95).any():
        raise AssertionError(f"the sweep needs at least five different tprs between 0.5 and 1, "
                             f"0.95 among them; got {t.tolist()}")
    n = 6

    def draw(rows, known):
        d = rng.gamma(4.0, 2.0, size=(rows, n))
        if known:
            d[np.arange(rows), rng.integers(0, n, rows)] = rng.gamma(2.0, 1.5, rows)
        return torch.as_tensor(d)

    dist_val, dist_test = draw(int(rng.integers(300, 500)), True), draw(
        int(rng.integers(300, 500)), True)
    dist_unknown = draw(int(rng.integers(200, 400)), False)
    got = exchange.call("threshold_sweep_exercise", *(cac_known_scores(d) for d in (
        dist_val, dist_test, dist_unknown)), list(t))
    if not isinstance(got, (list, tuple)) or len(got) != 2:
        raise AssertionError("threshold_sweep_exercise must return (known_accepted, "
                             "unknown_rejected)")
    ref = threshold_sweep(dist_val, dist_test, dist_unknown, t)
    for label, g, want in (("known accepted", got[0], ref["known_accepted"]),
                           ("unknown rejected", got[1], ref["unknown_rejected"])):
        try:  # numbers, 0-d or one-element arrays (NumPy scalars come back as arrays)
            g = np.asarray([np.asarray(v, dtype=np.float64).reshape(-1)[0]
                            if np.size(v) == 1 else np.nan for v in g], dtype=np.float64)
        except (TypeError, ValueError):
            raise AssertionError(f"{label}: not a list of numbers") from None
        if g.shape != want.shape or not np.allclose(g, want, rtol=0, atol=0.01):
            raise AssertionError(f"threshold_sweep_exercise on the grader's own distances: "
                                 f"{label} {np.round(g, 2).tolist()} differs from the reference "
                                 f"{np.round(want, 2).tolist()}")


@_runs("check_cac_results")
def _cac_results_from_weights(exchange, profile, rng):
    """07's result: the student's trained weights (captured from ``model``, in order) loaded
    into the course's network here, which computes the distances of every split to
    ``alpha * I`` itself and judges their summary (the kernel's distances are not used)."""
    import torch

    from ..answer_key.checks import check_cac_results
    from ..course import cac_experiment as ce
    from ..methods import cac

    got = exchange.capture({"w": "[p.detach() for p in model.parameters() if p.requires_grad]"})
    weights = got["w"]
    if not isinstance(weights, list) or not all(isinstance(t, torch.Tensor) and
                                                t.is_floating_point() for t in weights):
        raise AssertionError("`model` (the trained CAC network of the training cell) has no "
                             "trainable weights the grader can read")
    data = ce.cac_datasets(profile, seed=0)
    cfg = ce.training_settings(profile)
    net = ce.CACNetwork(data.num_classes, channels=cfg["channels"], dropout=cfg["dropout"],
                        alpha=cfg["alpha"])
    try:
        ce.load_cnn_weights(net, {str(i): w.float() for i, w in enumerate(weights)})
    except ValueError as err:
        raise AssertionError(str(err)) from None
    dist = ce.open_set_distances(net.eval(), data)
    check_cac_results(cac.open_set_summary(dist["val"], dist["test"], data.test_y,
                                           dist["unknown"]), profile)


#: a converged k-means partition leaves almost no training row nearer another cluster's mean
#: (measured on 06's miniclip features, k = 10, 50, 100, float32 and float64 input, two
#: seeds: at most 0.025 % of the rows); random or quantile partitions leave 60-99 %
LLOYD_MISMATCH = 0.005


def judge_kmeans_partition(train, test, ids, k: int, md, rmd, what: str):
    """A k-means part judged on the student's own partition (k-means has many local optima:
    the thread count or a float64 input gives another, equally valid one).

    ``ids`` must be a partition of the ``train`` rows into ``k`` clusters that Lloyd's algorithm
    leaves as it is (at most :data:`LLOYD_MISMATCH` of the rows nearer another cluster's mean),
    and the student's ``md``/``rmd`` scores of the ``test`` rows must equal the reference
    Mahalanobis scores with these clusters as classes (computed here), element by element
    (rtol = atol = 1e-3, as the other Mahalanobis parts). Returns ``(md, rmd)`` as float64
    arrays; raises ``AssertionError`` naming what is wrong.
    """
    import torch

    from ..methods import mahalanobis_scores

    try:
        ids = np.asarray(ids).reshape(-1)
    except (TypeError, ValueError):
        raise AssertionError(f"{what}: the cluster ids are not an array") from None
    if ids.shape != (len(train),) or ids.dtype.kind not in "iu":
        raise AssertionError(f"{what}: expected {len(train)} integer cluster ids, got "
                             f"{ids.shape} of dtype {ids.dtype}")
    if ids.min() < 0 or ids.max() >= k or len(np.unique(ids)) != k:
        raise AssertionError(f"{what}: the cluster ids must use every value 0..{k - 1}")
    x = torch.as_tensor(train).double()
    y = torch.as_tensor(ids).long()
    centres = torch.zeros(k, x.shape[1], dtype=torch.float64).index_add_(0, y, x) / \
        torch.bincount(y, minlength=k).double()[:, None]
    nearest = torch.cdist(x, centres).argmin(dim=1)
    off = float((nearest != y).double().mean())
    if off > LLOYD_MISMATCH:
        raise AssertionError(f"{what}: {100 * off:.1f} % of the training rows are nearer the mean "
                             "of another cluster: these cluster ids are not a k-means partition")
    out = []
    for kind, got in (("md", md), ("rmd", rmd)):
        if not hasattr(got, "shape"):
            raise AssertionError(f"{what}: the {kind.upper()} scores are not an array")
        g = np.asarray(got, dtype=np.float64).reshape(-1)
        want = np.asarray(mahalanobis_scores(train, y, test, relative=kind == "rmd"),
                          dtype=np.float64)
        if g.shape != want.shape or not np.allclose(g, want, rtol=1e-3, atol=1e-3):
            raise AssertionError(f"{what}: the {kind.upper()} scores differ from the Mahalanobis "
                                 "scores with your clusters as the classes")
        out.append(g)
    return tuple(out)


def _kmeans_auroc(k):
    def judge(exchange, profile, rng):
        """06's k-means AUROCs for one k: the student's partition (``cluster_ids[k]``) and MD/RMD
        scores judged by :func:`judge_kmeans_partition`; the AUROCs are the grader's own."""
        import torch

        from ..answer_key.checks import check_auroc
        from ..methods import metrics

        got = exchange.capture({
            "ids": f"cluster_ids[{k}]",
            **{f"{kind}_{side}": f'kmeans_scores["kmeans{k}_{kind}"][{i}]'
               for kind in ("md", "rmd") for i, side in enumerate(("in", "out"))}})
        _, (train, id_test, ood_test) = _rotated(profile)
        n_in = len(id_test)
        for kind in ("md", "rmd"):
            if not all(hasattr(got[f"{kind}_{side}"], "shape") for side in ("in", "out")):
                raise AssertionError(f"kmeans{k}_{kind}: the scores are not arrays")
        md, rmd = judge_kmeans_partition(
            train, torch.cat([id_test, ood_test]), got["ids"], k,
            np.concatenate([np.asarray(got["md_in"]).reshape(-1),
                            np.asarray(got["md_out"]).reshape(-1)]),
            np.concatenate([np.asarray(got["rmd_in"]).reshape(-1),
                            np.asarray(got["rmd_out"]).reshape(-1)]),
            f"k = {k} (the graded features)")
        for kind, s in (("md", md), ("rmd", rmd)):
            check_auroc(f"kmeans{k}_{kind}", metrics.auroc(s[:n_in], s[n_in:]), profile)
    return judge


@_runs("check_kmeans_sweep")
def _kmeans_sweep_called(exchange, profile, rng):
    """06's sweep: kmeans_sweep_exercise called on a random subset of the real (rotated)
    features that the grader draws; for k = 1, 3, 10 its partition and MD/RMD scores judged by
    :func:`judge_kmeans_partition` on those rows."""
    import torch

    _, (train, id_test, ood_test) = _rotated(profile)
    tr = train[_rows(rng, len(train), 3000)].clone()
    te = torch.cat([id_test[_rows(rng, len(id_test), 300)],
                    ood_test[_rows(rng, len(ood_test), 300)]]).clone()
    ks = (1, 3, 10)
    got = exchange.call("kmeans_sweep_exercise", tr, te, ks, seed=0)
    if not isinstance(got, dict):
        raise AssertionError("kmeans_sweep_exercise must return a dict {k: {'cluster_ids', "
                             "'md', 'rmd'}}")
    for k in ks:
        entry = got.get(k)
        if not isinstance(entry, dict):
            raise AssertionError(f"kmeans_sweep_exercise: no entry for k={k}")
        judge_kmeans_partition(tr, te, entry.get("cluster_ids"), k, entry.get("md"),
                               entry.get("rmd"), f"kmeans_sweep_exercise on the grader's own "
                               f"inputs (a random subset of the features), k = {k}")


def _real_features(exchange, profile, rng):
    """01's graded features: the student's extraction (their function, backbone and
    preprocessing, run in the kernel) of in-distribution test images the grader draws,
    against the cached reference features of the same images."""
    from ..answer_key.checks import nb01_features
    from ..course.profiles import get_profile

    n = get_profile(profile).counts["id_test"]
    rows = np.sort(rng.choice(n, size=min(48, n), replace=False))
    nb01_features._judge_real_features(exchange.run, profile, rows)


#: the training accuracy on the pseudo-labels a probe must reach, below the reference probe's
#: best epoch (04's correct variants, which choose the best epoch differently, all reach it
#: exactly on miniclip: 99.88 % of 36,000 images; 0.1 points = 36 images)
PROBE_ACCURACY_MARGIN = 0.001


def _plp_from_the_students_probe(exchange, profile, rng):
    """04's AUROC, judged on the student's own probe (how the best epoch is chosen, ties
    included, moves the scores by up to 0.03 without being wrong): the probe's weights
    (``layer``) must classify the training features as well as the reference probe's best
    epoch does on the pseudo-labels (within :data:`PROBE_ACCURACY_MARGIN`), the student's
    scores must be the MSP of that probe (computed here, element by element), and the AUROC
    of the probe, computed here, must be within the answer key's tolerance."""
    import torch

    from ..answer_key.checks import check_auroc
    from ..methods import metrics, msp_scores

    got = exchange.capture({"p": "[q.detach() for q in layer.parameters()]",
                            "in": "score_in", "out": "score_out"})
    params = got["p"]
    probe = _probe(profile)
    weight_shape = tuple(probe["weight"].shape)
    if not (isinstance(params, list) and len(params) == 2 and
            all(isinstance(q, torch.Tensor) and q.is_floating_point() for q in params) and
            tuple(params[0].shape) == weight_shape and
            tuple(params[1].shape) == weight_shape[:1]):
        raise AssertionError(f"`layer` must be one linear layer {weight_shape[1]} -> "
                             f"{weight_shape[0]} (weight and bias)")
    w, b = (q.double() for q in params)
    f = _feats(profile)
    y = torch.as_tensor(probe["pseudo_id_train"]).long()
    acc = float(((f["id_train_feats"].double() @ w.T + b).argmax(1) == y).double().mean())
    best = float(torch.as_tensor(probe["history_train_acc"]).max())
    if acc < best - PROBE_ACCURACY_MARGIN:
        raise AssertionError(f"your probe agrees with the pseudo-labels on {100 * acc:.2f} % of "
                             f"the training images, the reference probe's best epoch on "
                             f"{100 * best:.2f} %: keep the weights of the best epoch")
    want = [np.asarray(msp_scores(f[split].double() @ w.T + b), dtype=np.float64)
            for split in ("id_test_feats", "ood_test_feats")]
    for side, w_side in zip(("in", "out"), want):
        g = got[side]
        if not hasattr(g, "shape"):
            raise AssertionError(f"score_{side} is not an array of scores")
        g = np.asarray(g, dtype=np.float64).reshape(-1)
        if g.shape != w_side.shape or not np.allclose(g, w_side, rtol=1e-3, atol=1e-3):
            raise AssertionError(f"score_{side} is not the maximum softmax probability of your "
                                 "probe's logits")
    check_auroc("plp", metrics.auroc(*want), profile)


# --------------------------------------------------------------------------- sweeps called
def _rows(rng, n, size):
    import torch

    return torch.as_tensor(np.sort(rng.choice(n, size=min(size, n), replace=False)))


def _knn_sweep_inputs(profile, rng):
    f = _feats(profile)
    train, id_test, ood_test = f["id_train_feats"], f["id_test_feats"], f["ood_test_feats"]
    return (train[_rows(rng, len(train), 4000)].clone(),
            id_test[_rows(rng, len(id_test), 800)].clone(),
            ood_test[_rows(rng, len(ood_test), 800)].clone(), (1, 5, 10, 50, 200))


def _knn_sweep_on(train, id_test, ood_test, ks):
    from ..methods import knn_scores, metrics

    return {k: metrics.auroc(knn_scores(train, id_test, k=k), knn_scores(train, ood_test, k=k))
            for k in ks}


def _shrinkage_inputs(profile, rng):
    f, (train, id_test, ood_test) = _rotated(profile)
    rows = _rows(rng, len(train), 6000)
    import torch

    return (train[rows].clone(), torch.as_tensor(f["id_train_labels"])[rows].clone(),
            id_test[_rows(rng, len(id_test), 800)].clone(),
            ood_test[_rows(rng, len(ood_test), 800)].clone(), (0.0, 0.01, 0.1, 0.5, 1.0))


def _shrinkage_on(train, labels, id_test, ood_test, alphas):
    from ..course.sweeps import shrinkage_sweep

    return shrinkage_sweep(train, labels, id_test, ood_test, alphas)


def _temperature_inputs(profile, rng):
    import torch

    f = _feats(profile)
    id_test, ood_test = f["id_test_feats"], f["ood_test_feats"]
    classes = int(torch.as_tensor(f["id_train_labels"]).max()) + 1
    layer = torch.nn.Linear(id_test.shape[1], classes)
    with torch.no_grad():  # a probe of the grader's own: random, new every run
        layer.weight.copy_(torch.as_tensor(rng.normal(0, 3.0 / id_test.shape[1] ** 0.5,
                                                      layer.weight.shape)))
        layer.bias.copy_(torch.as_tensor(rng.normal(0, 0.5, layer.bias.shape)))
    return (layer, id_test[_rows(rng, len(id_test), 800)].clone(),
            ood_test[_rows(rng, len(ood_test), 800)].clone(), (0.1, 1.0, 10.0, 100.0))


def _temperature_on(layer, id_test, ood_test, temperatures):
    from ..course.sweeps import probe_temperature_sweep

    return probe_temperature_sweep(layer, id_test, ood_test, temperatures)


# --------------------------------------------------------------------------- 00-01
declare("00_tiny_clip", "clip_loss_selfcheck", SelfCheck("check_clip_loss", ("clip_loss_exercise",)))
declare("01_features", "split_selfcheck", Probed("check_split_visual", "_judge_split_visual",
                                                 "split_visual_exercise"))
declare("01_features", "features_selfcheck", Probed("check_extract_features",
                                                    "_judge_extract_features",
                                                    "extract_features_exercise"))
declare("01_features", "features_shapes", Computed(_real_features))
# --------------------------------------------------------------------------- 02
declare("02_knn", "knn_selfcheck", SelfCheck("check_knn", ("knn_scores_exercise",)))
declare("02_knn", "knn_auroc", Scores("knn", ("score_in", "score_out"), _knn_reference,
                                      rtol=1e-4, atol=1e-5))
declare("02_knn", "knn_sweep_selfcheck", SelfCheck("check_knn_sweep", ("knn_sweep_exercise",)))
declare("02_knn", "knn_sweep_auroc", AllOf((
    SweepCall("knn_sweep_exercise", _knn_sweep_inputs, _knn_sweep_on),
    Values((("v", "knn_auroc_by_k"),), _result_check("check_knn_sweep_result", "v")))))
# --------------------------------------------------------------------------- 03
# the tiny CLIP and its tokenizer go to the kernel by name (it loads the same shipped model)
declare("03_msp", "text_embeddings_selfcheck", SelfCheck("check_text_embeddings",
                                                         ("text_embeddings_exercise",)))
declare("03_msp", "clip_head_selfcheck", Probed("check_clip_head", "_judge_clip_head",
                                                "clip_head_exercise"))
declare("03_msp", "logits_selfcheck", SelfCheck("check_zero_shot_logits",
                                                ("zero_shot_logits_exercise",)))
declare("03_msp", "msp_selfcheck", SelfCheck("check_msp", ("msp_exercise",)))
declare("03_msp", "msp_auroc", Scores("msp", ("score_in", "score_out"), _msp_reference,
                                      rtol=1e-3, atol=1e-5))
declare("03_msp", "msp_sweep_selfcheck", SelfCheck("check_msp_sweep", ("msp_sweep_exercise",)))
declare("03_msp", "msp_sweep_auroc", Values((("v", "msp_auroc_by_setting"),),
                                            _result_check("check_msp_sweep_result", "v")))
# --------------------------------------------------------------------------- 04
declare("04_plp", "plp_labels_selfcheck", SelfCheck("check_pseudo_labels",
                                                    ("pseudo_labels_exercise",)))
declare("04_plp", "plp_train_selfcheck", SelfCheck("check_train_probe", ("train_probe_exercise",)))
declare("04_plp", "plp_selfcheck", SelfCheck("check_probe_msp", ("probe_msp_exercise",)))
declare("04_plp", "plp_auroc", Computed(_plp_from_the_students_probe))
declare("04_plp", "plp_sweep_selfcheck", SelfCheck("check_temperature_sweep",
                                                   ("temperature_sweep_exercise",)))
declare("04_plp", "plp_sweep_graded", AllOf((
    SweepCall("temperature_sweep_exercise", _temperature_inputs, _temperature_on),
    Values((("v", "plp_sweep"),), _sweep("plp_temperature", "v")))))
# --------------------------------------------------------------------------- 05
declare("05_mahalanobis", "maha_stats_selfcheck", SelfCheck("check_class_statistics",
                                                            ("class_statistics_exercise",)))
declare("05_mahalanobis", "maha_selfcheck", SelfCheck("check_mahalanobis",
                                                      ("mahalanobis_exercise",)))
for _id, _rel in (("plp_md", False), ("plp_rmd", True)):
    declare("05_mahalanobis", f"{_id}_auroc",
            Scores(_id, (f'part_a["{_id}"][0]', f'part_a["{_id}"][1]'), _plp_md_reference(_rel),
                   rtol=1e-3, atol=1e-3))
for _id, _rel in (("md", False), ("rmd", True)):
    declare("05_mahalanobis", f"{_id}_auroc",
            Scores(_id, (f'part_b["{_id}"][0]', f'part_b["{_id}"][1]'), _md_reference(_rel),
                   rtol=1e-3, atol=1e-3))
declare("05_mahalanobis", "maha_sweep_selfcheck", SelfCheck("check_shrinkage_sweep",
                                                            ("shrinkage_sweep_exercise",)))
declare("05_mahalanobis", "maha_sweep_graded", AllOf((
    SweepCall("shrinkage_sweep_exercise", _shrinkage_inputs, _shrinkage_on),
    Values((("v", "md_sweep"),), _sweep("md_shrinkage", "v")))))
# --------------------------------------------------------------------------- 06
declare("06_kmeans", "kmeans_maha_selfcheck", AllOf((
    SelfCheck("check_class_statistics", ("class_statistics_exercise",)),
    SelfCheck("check_mahalanobis", ("mahalanobis_exercise",)))))
declare("06_kmeans", "kmeans_ids_selfcheck", SelfCheck("check_kmeans_cluster_ids",
                                                       ("kmeans_cluster_ids_exercise",)))
declare("06_kmeans", "kmeans_selfcheck", SelfCheck("check_kmeans_mahalanobis",
                                                   ("kmeans_mahalanobis_exercise",)))
declare("06_kmeans", "kmeans_sweep_selfcheck", SelfCheck("check_kmeans_sweep",
                                                         ("kmeans_sweep_exercise",)))
for _k in (10, 50, 100):
    declare("06_kmeans", f"kmeans{_k}_auroc", Computed(_kmeans_auroc(_k)))
declare("06_kmeans", "kmeans_sweep_graded", AllOf((
    Computed(_kmeans_sweep_called),
    Values((("v", "kmeans_sweep"),), _sweep("kmeans_k", "v")))))
# --------------------------------------------------------------------------- 07
for _gid, _check, _fn in (
        ("cac_anchors_selfcheck", "check_cac_anchors", "class_anchors_exercise"),
        ("cac_distances_selfcheck", "check_anchor_distances", "anchor_distances_exercise"),
        ("cac_loss_selfcheck", "check_cac_loss", "cac_loss_exercise"),
        ("cac_predict_selfcheck", "check_open_set_predict", "open_set_predict_exercise"),
        ("cac_sweep_selfcheck", "check_threshold_sweep", "threshold_sweep_exercise"),
        ("cac_confusion_selfcheck", "check_open_set_confusion", "open_set_confusion_exercise")):
    declare("07_cac_osr", _gid, SelfCheck(_check, (_fn,)))
declare("07_cac_osr", "cac_network_selfcheck", Probed("check_cac_network", "_judge_cac_network",
                                                      "CACNetworkExercise"))
declare("07_cac_osr", "cac_training_selfcheck", Probed("check_cac_training", "_judge_cac_training",
                                                       "train_cac_exercise"))
declare("07_cac_osr", "cac_sweep_results", Computed(_cac_sweep_called))
declare("07_cac_osr", "cac_results", Computed(_cac_results_from_weights))

# --------------------------------------------------------------------------- the build
#: ``{notebook: ["wing/module.py" or "wing/module.py:name", ...]}``: module = every function
#: and method of it; ``:name`` = that function or class only. Checks of the notebook that the
#: grader runs outside are stripped as well (:mod:`ood_utils.grader.build`).
STRIP: dict[str, list[str]] = {
    "00_tiny_clip": [],
    "01_features": ["course/features.py:extract_features"],
    "02_knn": ["methods/knn.py", "course/sweeps.py"],
    "03_msp": ["course/models.py:zero_shot_logits", "course/models.py:text_embeddings",
               "methods/msp.py", "course/pipeline.py:zero_shot_logits",
               "course/pipeline.py:pseudo_labels"],
    "04_plp": ["methods/msp.py", "methods/probe.py", "course/pipeline.py:plp_probe",
               "course/pipeline.py:pseudo_labels", "course/sweeps.py"],
    "05_mahalanobis": ["methods/mahalanobis.py", "course/sweeps.py"],
    "06_kmeans": ["methods/mahalanobis.py", "methods/kmeans.py", "course/sweeps.py"],
    "07_cac_osr": ["methods/cac.py:class_anchors", "methods/cac.py:anchor_distances",
                   "methods/cac.py:cac_loss", "methods/cac.py:open_set_predict",
                   "methods/cac.py:open_set_confusion",
                   "course/cac_experiment.py:threshold_sweep",
                   # the references of the network and the training loop
                   "course/cac_experiment.py:CACNetwork",
                   "course/cac_experiment.py:train_cac_whole",
                   "course/cac_experiment.py:train_cac"],
}
#: functions kept in a stripped module (helpers the locked cells use)
KEEP: dict[str, set[str]] = {
    "methods/mahalanobis.py": {"drop_degenerate_directions", "_check_covariance"},
    "methods/probe.py": set(),
}
#: cache files (glob patterns in the profile's feature folder) not mounted for a notebook
HIDDEN_CACHES: dict[str, list[str]] = {
    "03_msp": ["zeroshot*", "zero_shot*", "pseudo*"],
    "04_plp": ["plp_probe*", "probe*", "pseudo*"],
}
