"""Measure the answer key of a profile by running the reference implementation.

This is how the ``miniclip`` numbers in ``ood_utils/expected.py`` were produced. It runs the
same functions the notebooks call (``ood_utils.scores`` through ``ood_utils.pipeline`` and
``ood_utils.cac``), once for deterministic methods and once per seed where randomness enters
(the PLP probe, the CAC networks; k-means runs with its fixed seed, see below), and prints
for every check id the per-seed values,
their mean and spread, and the tolerance given by the rule in ``expected.py``:

    value = mean over seeds, tol = max(0.1, 3 * (max - min))

except for the k-means rows (notebook 06), whose randomness is fixed (random_state=0): they
are measured over the correct variants that remain (KMeans input float32 or float64, one or
two threads), with value = midpoint of their range and tol = half the range + 0.5.

Nothing is tuned: the script only reports. Paste its last block into ``expected.py`` by hand,
after reading the numbers.

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


def tolerance(values: list[float]) -> tuple[float, float, float]:
    """(mean, spread, tol) of a list of per-seed values under the answer key's rule."""
    mean = float(np.mean(values))
    spread = float(np.max(values) - np.min(values))
    return mean, spread, max(0.1, 3 * spread)


def kmeans_tolerance(values: list[float]) -> tuple[float, float, float]:
    """(midpoint, spread, tol) of the k-means variants: every correct variant lies inside
    with a margin of 0.5 points, ``tol = spread / 2 + 0.5``."""
    lo, hi = float(np.min(values)), float(np.max(values))
    return (lo + hi) / 2, hi - lo, (hi - lo) / 2 + 0.5


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default=os.environ.get("OOD_PROFILE", "miniclip"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--only", nargs="+", choices=GROUPS, default=list(GROUPS))
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for torch and BLAS/OpenMP (default: the machine's); "
                             "k-means results move slightly with it")
    args = parser.parse_args(argv)
    if args.threads:
        from threadpoolctl import threadpool_limits

        torch.set_num_threads(args.threads)
        threadpool_limits(args.threads)

    from ood_utils import cac, metrics, pipeline, scores
    from ood_utils.features import load_features
    from ood_utils.profiles import get_profile, results_dir

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
    # direction (an orthonormal change of basis; see scores.drop_degenerate_directions)
    rtr, rte, roo = scores.drop_degenerate_directions(tr, te, oo)

    if "knn" in args.only and not done("knn", "deterministic"):
        save("knn", "deterministic", metrics.auroc(scores.knn_scores(tr, te), scores.knn_scores(tr, oo)))
    if "msp" in args.only and not done("msp", "deterministic"):
        zs = pipeline.zero_shot_logits(profile, progress=False)
        save("msp", "deterministic", metrics.auroc(scores.msp_scores(zs["id_test"]),
                                                   scores.msp_scores(zs["ood_test"])))
    if "md" in args.only:
        for cid, rel in (("md", False), ("rmd", True)):
            if not done(cid, "deterministic"):
                save(cid, "deterministic", metrics.auroc(
                    scores.mahalanobis_scores(rtr, ytr, rte, relative=rel),
                    scores.mahalanobis_scores(rtr, ytr, roo, relative=rel)))
    if "kmeans" in args.only:
        # k-means: the course fixes random_state=0, n_init=1, algorithm="lloyd" (notebook 06);
        # what still varies between correct solutions is the precision of the array given to
        # KMeans (float32 as stated, or float64) and the number of threads. Each (dtype,
        # threads) pair is one variant; run the script with --threads 1 and --threads 2.
        from sklearn.cluster import KMeans

        both = torch.cat([rte, roo])
        threads = torch.get_num_threads()
        for k in (10, 50, 100):
            for dtype in (np.float32, np.float64):
                key = f"{np.dtype(dtype).name} input, {threads} threads"
                if all(done(f"kmeans{k}_{kind}", key) for kind in ("md", "rmd")):
                    continue
                ids = KMeans(n_clusters=k, **scores.KMEANS_SETTINGS).fit(
                    rtr.numpy().astype(dtype)).labels_
                for rel in (False, True):
                    s = scores.mahalanobis_scores(rtr, ids, both, relative=rel)
                    save(f"kmeans{k}_{'rmd' if rel else 'md'}", key,
                         metrics.auroc(s[:len(te)], s[len(te):]))
    for seed in args.seeds:
        key = f"seed {seed}"
        if "plp" in args.only and not done("plp_rmd", key):
            probe = pipeline.plp_probe(seed, profile, progress=False)
            save("plp", key, metrics.auroc(scores.msp_scores(probe["id_test"]),
                                           scores.msp_scores(probe["ood_test"])))
            for cid, rel in (("plp_md", False), ("plp_rmd", True)):
                pair = [scores.mahalanobis_scores(probe["id_train"], probe["pseudo_id_train"],
                                                  probe[s], relative=rel)
                        for s in ("id_test", "ood_test")]
                save(cid, key, metrics.auroc(*pair))
        if "cac" in args.only and not done("cac", key):
            data = cac.cac_datasets(profile, seed=seed)
            blob = cac.baseline_features(data, seed=seed, profile=profile, progress=False)
            model, _ = cac.cac_on_features(blob, data.num_classes, seed=seed, progress=False)
            dist = {s: cac.batched_forward(model, blob[f"{s}_feats"])
                    for s in ("val", "test", "unknown")}
            summary = cac.open_set_summary(dist["val"], dist["test"], data.test_y, dist["unknown"])
            for extra in CAC_EXTRA:
                save(f"cac.{extra}", key, summary[extra])
            save("cac", key, summary["auroc"])

    date = dt.date.today().isoformat()
    print(f"\n# {profile.name}: value = mean over seeds, tol = max(0.1, 3 * spread); {date}")
    for cid in sorted(found):
        runs = found[cid]
        values = list(runs.values())
        mean, spread, tol = (kmeans_tolerance if cid.startswith("kmeans") else tolerance)(values)
        per = ", ".join(f"{k}: {v:.3f}" for k, v in sorted(runs.items()))
        print(f"{cid:16s} value {mean:7.2f}  tol {tol:6.2f}  ({per}; spread {spread:.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
