"""Measure the answer key of a profile by running the reference implementation.

This is how the ``miniclip`` results in ``ood_utils/answer_key/expected.json`` were produced. It runs the
same functions the notebooks call (``ood_utils.methods`` through ``ood_utils.course.pipeline`` and
``ood_utils.methods.cac``), once for deterministic methods and once per seed where randomness enters
(the PLP probe, the CAC stage; k-means runs with its fixed settings, see below), for the
PLP probe also a few other correct ways of writing notebook 04's training
(``PLP_VARIANTS``), and prints for every check id the per-seed values,
their mean and spread, and the tolerance given by the rule in ``expected.py``:

    value = mean over seeds, tol = max(0.1, 3 * (max - min))

except for the k-means rows (notebook 06), whose randomness is fixed (random_state=0): they
are measured over the correct variants that remain (KMeans input float32 or float64, one or
two threads), with value = midpoint of their range and tol = half the range + 0.5.

Nothing is tuned: the script reports, and with ``--write`` records what it measured in the
answer key's data file ``ood_utils/answer_key/expected.json`` (the runs, the value and
tolerance the rule gives, and how they were measured; other entries are left as they are).
Read the numbers before you commit the file.

Usage (from the repository root, with the feature cache in place or extractable)::

    .venv/bin/python tools/measure_expected.py                 # everything, seeds 0-4
    .venv/bin/python tools/measure_expected.py --only cac knn  # a subset
    .venv/bin/python tools/measure_expected.py --seeds 0 1 2
    .venv/bin/python tools/measure_expected.py --threads 1     # as the table was measured

Results are appended to ``results/measured_<profile>.json`` as they come, so an interrupted
run resumes where it stopped (delete the file to start over).
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

GROUPS = ("knn", "msp", "md", "plp", "kmeans", "cac")
# extra CAC numbers recorded next to its AUROC (keys of cac.open_set_summary)
CAC_EXTRA = ("accuracy", "known_accepted_tpr", "unknown_rejected_tpr")


PLP_VARIANTS = ("float64", "latest tie", "forward-pass accuracy")


def plp_variant(x: torch.Tensor, y: torch.Tensor, c: int, variant: str, seed: int = 0):
    """Notebook 04's probe written another correct way (see PLP_VARIANTS); returns the layer.

    Trained by the package's one training loop (:func:`ood_utils.methods.train_linear_probe`)
    with the variant's :class:`~ood_utils.methods.ProbeOptions`: float64 features and layer,
    the latest of tied best epochs, or the accuracy of each epoch's own forward pass.
    """
    from ood_utils import methods
    from ood_utils.methods._threads import one_cpu_thread

    change = {"float64": {"dtype": torch.float64}, "latest tie": {"ties": "latest"},
              "forward-pass accuracy": {"select": "forward_acc"}}[variant]
    options = methods.ProbeOptions(seed=seed, **change)
    with one_cpu_thread():
        return methods.train_linear_probe(x, y, options, num_classes=c).layer


def tolerance(values: list[float], rule: str = "mean") -> tuple[float, float, float]:
    """(value, spread, tol) of the measured runs under the answer key's rule
    (:func:`ood_utils.answer_key.expected.rule_value`)."""
    from ood_utils.answer_key.expected import rule_value

    value, tol = rule_value(rule, list(values))
    return value, float(max(values) - min(values)), tol


def _msp_variants(profile, te, oo, done):
    """AUROCs of correct implementations of notebook 03's MSP other than the reference.

    ``variant float32``: projection, normalisation, logits and softmax all in float32;
    ``variant float64``: everything after the projection in float64; ``variant numpy``:
    NumPy float64 with a hand-written softmax. Yields ``(key, auroc)`` for those not yet done.
    """
    import torch.nn.functional as F

    from ood_utils.methods import metrics
    from ood_utils.course import models
    from ood_utils.course.data import id_class_names

    todo = [k for k in ("variant float32", "variant float64", "variant numpy")
            if not done("msp", k)]
    if not todo:
        return
    model, _, tokenizer = models.load_clip(profile)
    _, projection = models.split_visual(model)
    scale = model.logit_scale.exp().item()
    with torch.no_grad():
        text = model.encode_text(tokenizer(id_class_names(profile))).float()
        emb = {"in": projection(te.float()), "out": projection(oo.float())}

    def torch_msp(z, t, dtype):
        z, t = F.normalize(z.to(dtype), dim=-1), F.normalize(t.to(dtype), dim=-1)
        return (scale * z @ t.T).softmax(dim=1).max(dim=1).values

    def numpy_msp(z, t):
        z, t = z.numpy().astype(np.float64), t.numpy().astype(np.float64)
        z = z / np.linalg.norm(z, axis=1, keepdims=True)
        t = t / np.linalg.norm(t, axis=1, keepdims=True)
        logits = scale * z @ t.T
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        return (e / e.sum(axis=1, keepdims=True)).max(axis=1)

    for key in todo:
        if key == "variant numpy":
            pair = [numpy_msp(emb[s], text) for s in ("in", "out")]
        else:
            dtype = torch.float32 if key == "variant float32" else torch.float64
            pair = [torch_msp(emb[s], text, dtype) for s in ("in", "out")]
        yield key, metrics.auroc(*pair)


def cac_variants() -> dict:
    """``{name: (anchors_fn, distance_fn, loss_fn)}``: the answer key's correct CAC variants."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "tests" / "answer_key" / "test_cac.py"
    spec = importlib.util.spec_from_file_location("answer_key_cac", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.RUNS


def measure_cac(profile, seed: int, key: str, save, anchors_fn=None, distance_fn=None,
                loss_fn=None, train_fn=None) -> None:
    """Notebook 07's pipeline (``tools/measure_cac.py``): the baseline and the CAC network,
    both with ``seed``, with the given implementations (default: the reference)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from measure_cac import measure

    row = measure(profile.name, seed, train_fn=train_fn, loss_fn=loss_fn, anchors_fn=anchors_fn,
                  distance_fn=distance_fn)
    for extra in CAC_EXTRA:
        save(f"cac.{extra}", key, row[extra])
    save("cac", key, row["cac_auroc"])


def kmeans_tolerance(values: list[float]) -> tuple[float, float, float]:
    """(midpoint, spread, tol) of the k-means variants: every correct variant lies inside
    with a margin of 0.5 points, ``tol = spread / 2 + 0.5``."""
    return tolerance(values, "midpoint")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default=os.environ.get("OOD_PROFILE", "miniclip"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--only", nargs="+", choices=GROUPS, default=list(GROUPS))
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--write", action="store_true",
                        help="record the measured entries in ood_utils/answer_key/expected.json")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for torch and BLAS/OpenMP (default: the machine's); "
                             "k-means results move slightly with it")
    args = parser.parse_args(argv)
    if args.threads:
        from threadpoolctl import threadpool_limits

        torch.set_num_threads(args.threads)
        threadpool_limits(args.threads)

    from ood_utils.methods import metrics
    from ood_utils.course import pipeline
    from ood_utils import methods
    from ood_utils.course.features import load_features
    from ood_utils.course.profiles import get_profile, results_dir

    profile = get_profile(args.profile)
    out = args.out or results_dir() / f"measured_{profile.name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    found: dict = json.loads(out.read_text()) if out.exists() else {}
    t0 = time.time()

    def save(cid: str, key: str, value: float) -> None:
        found.setdefault(cid, {})[key] = float(value)
        tmp = out.with_suffix(".tmp")
        tmp.write_text(json.dumps(found, indent=1, sort_keys=True))
        tmp.replace(out)
        print(f"[{time.time() - t0:7.1f} s] {cid:16s} {key:14s} {value:8.3f}", flush=True)

    def done(cid: str, key: str) -> bool:
        return key in found.get(cid, {})

    feats = load_features(profile, progress=False)
    tr, te, oo = feats["id_train_feats"], feats["id_test_feats"], feats["ood_test_feats"]
    ytr = feats["id_train_labels"]
    # notebooks 05/06 score the trunk features after removing their exactly constant
    # direction (an orthonormal change of basis; see methods.drop_degenerate_directions)
    rtr, rte, roo = methods.drop_degenerate_directions(tr, te, oo)

    if "knn" in args.only and not done("knn", "deterministic"):
        save("knn", "deterministic", metrics.auroc(methods.knn_scores(tr, te), methods.knn_scores(tr, oo)))
    if "msp" in args.only:
        # deterministic given the features: the reference pipeline, plus the other correct
        # ways a student computes the same score (precision of each step, NumPy), whose spread
        # is float noise; the tolerance rule is applied to all of them together
        if not done("msp", "deterministic"):
            zs = pipeline.zero_shot_logits(profile, progress=False)
            save("msp", "deterministic", metrics.auroc(methods.msp_scores(zs["id_test"]),
                                                       methods.msp_scores(zs["ood_test"])))
        for variant, value in _msp_variants(profile, te, oo, done):
            save("msp", variant, value)
    if "md" in args.only:
        for cid, rel in (("md", False), ("rmd", True)):
            if not done(cid, "deterministic"):
                md = methods.Mahalanobis(relative=rel).fit(rtr, ytr)  # one fit, two test sets
                save(cid, "deterministic", metrics.auroc(md.score_samples(rte),
                                                         md.score_samples(roo)))
    if "plp" in args.only:
        # correct ways of writing notebook 04's training other than the reference (seed 0):
        # float64 features, the latest best epoch on ties, and the accuracy of each epoch's
        # own forward pass (as the original assignment's loop measures it)
        targets = pipeline.pseudo_labels(profile)["id_train"]
        for variant in PLP_VARIANTS:
            key = f"seed 0, {variant}"
            if not done("plp", key):
                layer = plp_variant(tr, targets, profile.num_id_classes, variant, seed=0)
                with torch.no_grad():
                    s_in = methods.msp_scores(layer(te.to(layer.weight.dtype)))
                    s_out = methods.msp_scores(layer(oo.to(layer.weight.dtype)))
                save("plp", key, metrics.auroc(s_in, s_out))
    if "kmeans" in args.only:
        # k-means: the course fixes random_state=0, n_init=1, algorithm="lloyd" (notebook 06);
        # what still varies between correct solutions is the precision of the array given to
        # KMeans (float32 as stated, or float64) and the number of threads. Each (dtype,
        # threads) pair is one variant; run the script with --threads 1 and --threads 2.
        from sklearn.cluster import KMeans

        threads = torch.get_num_threads()
        for k in (10, 50, 100):
            for dtype in (np.float32, np.float64):
                key = f"{np.dtype(dtype).name} input, {threads} threads"
                if all(done(f"kmeans{k}_{kind}", key) for kind in ("md", "rmd")):
                    continue
                ids = KMeans(n_clusters=k, **methods.KMEANS_SETTINGS).fit(
                    rtr.numpy().astype(dtype)).labels_
                for rel in (False, True):
                    md = methods.Mahalanobis(relative=rel).fit(rtr, ids)
                    save(f"kmeans{k}_{'rmd' if rel else 'md'}", key,
                         metrics.auroc(md.score_samples(rte), md.score_samples(roo)))
    for seed in args.seeds:
        key = f"seed {seed}"
        if "plp" in args.only and not done("plp_rmd", key):
            probe = pipeline.plp_probe(seed, profile, progress=False)
            save("plp", key, metrics.auroc(methods.msp_scores(probe["id_test"]),
                                           methods.msp_scores(probe["ood_test"])))
            for cid, rel in (("plp_md", False), ("plp_rmd", True)):
                md = methods.Mahalanobis(relative=rel).fit(probe["id_train"],
                                                          probe["pseudo_id_train"])
                save(cid, key, metrics.auroc(md.score_samples(probe["id_test"]),
                                             md.score_samples(probe["ood_test"])))
        if "cac" in args.only and not done("cac", key):
            measure_cac(profile, seed, key, save)
    if "cac" in args.only:
        # correct variants of the notebook's exercises (tests/answer_key/test_cac.py), seed 0
        for name, fns in cac_variants().items():
            key = f"{name} seed 0"
            if name != "reference" and not done("cac", key):
                measure_cac(profile, 0, key, save, *fns)

    date = dt.date.today().isoformat()
    print(f"\n# {profile.name}: value = mean over seeds, tol = max(0.1, 3 * spread); {date}")
    for cid in sorted(found):
        runs = found[cid]
        values = list(runs.values())
        mean, spread, tol = (kmeans_tolerance if cid.startswith("kmeans") else tolerance)(values)
        per = ", ".join(f"{k}: {v:.3f}" for k, v in sorted(runs.items()))
        print(f"{cid:16s} value {mean:7.2f}  tol {tol:6.2f}  ({per}; spread {spread:.3f})")
    if args.write:
        written = write_answer_key(profile.name, found, date, torch.get_num_threads())
        print(f"\nrecorded {', '.join(written)} in {ANSWER_KEY}")
    return 0


ANSWER_KEY = Path(__file__).resolve().parent.parent / "ood_utils" / "answer_key" / "expected.json"


def write_answer_key(profile: str, found: dict, date: str, threads: int) -> list[str]:
    """Record ``found`` (``{check id: {run: AUROC}}``) in the answer key's data file.

    Each measured entry gets its runs, the value and tolerance of its rule (rounded to 2
    decimals) and a ``how`` that says when and with what they were measured; its ``note`` and
    ``extra`` stay. The file is replaced atomically.
    """
    from ood_utils.answer_key.expected import rule_value
    from ood_utils.course._io import atomic_write_text

    doc = json.loads(ANSWER_KEY.read_text(encoding="utf-8"))
    table = doc["results"].setdefault(profile, {})
    written = []
    for cid, runs in sorted(found.items()):
        if "." in cid:  # a further target of a check (cac.accuracy): the entry's extra
            base, name = cid.split(".", 1)
            value, tol = rule_value("mean", list(runs.values()))
            table.setdefault(base, {}).setdefault("extra", {})[name] = [round(value, 2),
                                                                         round(tol, 2)]
            continue
        entry = table.setdefault(cid, {})
        rule = "midpoint" if cid.startswith("kmeans") else "mean"
        value, tol = rule_value(rule, list(runs.values()))
        per = ", ".join(f"{k}: {v:.3f}" for k, v in sorted(runs.items()))
        entry.update(value=round(value, 2), tol=round(tol, 2), rule=rule,
                     runs={k: round(v, 4) for k, v in sorted(runs.items())},
                     how=f"measured {date} with tools/measure_expected.py ({threads} threads): "
                         f"{per}")
        written.append(cid)
    atomic_write_text(ANSWER_KEY, json.dumps(doc, indent=1, ensure_ascii=False) + "\n")
    return written


if __name__ == "__main__":
    sys.exit(main())
