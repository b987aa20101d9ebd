"""Measure notebook 07's answer key: the baseline MSP and CAC, trained alike, over seeds.

For every seed: the cross-entropy baseline (``cac_experiment.train_baseline``, seed s) and the
CAC network trained end to end (``cac_experiment.train_open_set``, seed s; by default with the
reference loop, loss, anchors and distances), both on one CPU thread. Prints one JSON line per
seed (AUROC of MSP and of CAC on the unknown test images and, where the profile has one, on the
far unknown set; closed-set accuracy; the rates under the 95 % rule; the threshold sweep) and
appends it to ``--out``. Copy the numbers into ``ood_utils/answer_key/expected.json`` (``results.<profile>.cac`` and ``cac_comparison``).

    OMP_NUM_THREADS=1 python tools/measure_cac.py --seeds 0 1 2 3 4 --out results/cac_seeds.jsonl
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from ood_utils.methods import cac, metrics
from ood_utils.course import cac_experiment
from ood_utils.methods import msp_scores

SWEEP_TPRS = (0.80, 0.85, 0.90, 0.95, 0.99)


def measure(profile: str, seed: int, *, train_fn=None, loss_fn=None, anchors_fn=None,
            distance_fn=None, lambda_=None, baseline_too: bool = True) -> dict:
    data = cac_experiment.cac_datasets(profile, seed=0)
    t0 = time.process_time()
    blob = cac_experiment.train_baseline(data, seed=seed, profile=profile, progress=False)
    t_base = time.process_time() - t0
    anchors = anchors_fn(data.num_classes, alpha=10.0) if anchors_fn else None
    t0 = time.process_time()
    model, history = cac_experiment.train_open_set(
        data, seed=seed, profile=profile, train_fn=train_fn, loss_fn=loss_fn, anchors=anchors,
        distance_fn=distance_fn, baseline=blob, lambda_=lambda_)
    dist = cac_experiment.open_set_distances(model, data)
    t_cac = time.process_time() - t0
    summary = cac.open_set_summary(dist["val"], dist["test"], data.test_y, dist["unknown"])
    out = {"profile": profile, "seed": seed, "cpu_baseline_s": round(t_base, 1),
           "cpu_cac_s": round(t_cac, 1), "history": history,
           "msp_auroc": metrics.auroc(msp_scores(blob["test_logits"]),
                                      msp_scores(blob["unknown_logits"])),
           "baseline_accuracy": cac.closed_set_accuracy(blob["test_logits"].argmax(1),
                                                        data.test_y),
           "cac_auroc": summary["auroc"]}
    out.update({k: summary[k] for k in cac.SUMMARY_NUMBERS})
    if "far" in dist:
        out["msp_far_auroc"] = metrics.auroc(msp_scores(blob["test_logits"]),
                                             msp_scores(blob["far_logits"]))
        out["cac_far_auroc"] = metrics.auroc(cac.cac_known_scores(dist["test"]),
                                             cac.cac_known_scores(dist["far"]))
    sweep = cac_experiment.threshold_sweep(dist["val"], dist["test"], dist["unknown"],
                                           SWEEP_TPRS)
    out["sweep"] = {k: v.tolist() for k, v in sweep.items()}
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="miniclip")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    for seed in args.seeds:
        row = measure(args.profile, seed)
        line = json.dumps(row)
        print(line, flush=True)
        if args.out:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            with open(args.out, "a") as f:
                f.write(line + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
