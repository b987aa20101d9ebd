"""Measure the sweeps of notebooks 02 (k of kNN) and 03 (prompt template x temperature of MSP).

These are the numbers of ``sweeps`` in ``ood_utils/answer_key/expected.json``. Both sweeps are
deterministic (no seed enters), so what varies is only how a correct student writes them.
The script runs the reference (the code the checks compare with) and other correct variants
and prints, per grid point, every variant's AUROC, their spread and the tolerance of the rule
in ``expected.py``: ``value`` = mean over the variants, ``tol = max(0.1, 3 * (max - min))``.

kNN variants: torch float32 topk of max(k) per chunk (the reference), float64 topk, one
``knn_scores`` call per k, scikit-learn ``NearestNeighbors`` (cosine, brute force).
MSP variants: the cached zero-shot logits divided by the scale (the reference), notebook 03's
solution functions (text embeddings in float32, logits in float64), logits in float32
throughout with a float64 softmax, and a float32 softmax (``msp_torch_float32`` of the
answer key), which rounds confident probabilities to 1 at small T.

Nothing is tuned: the script only reports; copy the printed numbers into the ``sweeps`` of ``expected.json``.

    OMP_NUM_THREADS=1 .venv/bin/python tools/measure_sweeps.py [--only knn msp]
"""
from __future__ import annotations

import argparse
import json

import numpy as np
import torch
import torch.nn.functional as F

KS = (1, 5, 10, 50, 200)
TEMPLATES = ("{}", "a photo of a {}.", "an image of a {}.")
TEMPERATURES = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)


def knn_variants(feats):
    from sklearn.neighbors import NearestNeighbors

    from ood_utils.methods import metrics
    from ood_utils import methods

    train = feats["id_train_feats"]
    tests = (feats["id_test_feats"], feats["ood_test_feats"])
    out = {}

    def tops(dtype):
        bank = F.normalize(train.to(dtype), dim=1)
        res = []
        for t in tests:
            q = F.normalize(t.to(dtype), dim=1)
            res.append(torch.cat([(q[s:s + 2048] @ bank.T).topk(max(KS), dim=1).values
                                  for s in range(0, len(q), 2048)]))
        return res

    for label, dtype in (("topk float32", torch.float32), ("topk float64", torch.float64)):
        a, b = tops(dtype)
        out[label] = {k: metrics.auroc(a[:, k - 1], b[:, k - 1]) for k in KS}
    out["knn_scores per k"] = {k: metrics.auroc(methods.knn_scores(train, tests[0], k=k),
                                                methods.knn_scores(train, tests[1], k=k))
                               for k in KS}
    nn = NearestNeighbors(n_neighbors=max(KS), metric="cosine", algorithm="brute")
    nn.fit(train.numpy())
    d = [1 - nn.kneighbors(t.numpy())[0] for t in tests]
    out["sklearn cosine"] = {k: metrics.auroc(d[0][:, k - 1], d[1][:, k - 1]) for k in KS}
    return out


def msp_variants(feats):
    from ood_utils.methods import metrics
    from ood_utils.course import models, pipeline
    from ood_utils.course.data import id_class_names
    from ood_utils.methods import msp_scores

    model, _, tokenizer = models.load_clip("miniclip")
    names = id_class_names("miniclip")
    head = model.visual.head
    scale = model.logit_scale.exp().item()
    tests = (feats["id_test_feats"], feats["ood_test_feats"])
    out = {"reference": {}, "solution (float64 logits)": {}, "float32 logits": {},
           "float32 softmax": {}}
    for template in TEMPLATES:
        zs = pipeline.zero_shot_logits("miniclip", templates=(template,), progress=False)
        ref = [zs[s].double() / float(zs["logit_scale"]) for s in ("id_test", "ood_test")]
        with torch.no_grad():
            text = F.normalize(model.encode_text(tokenizer([template.format(n) for n in names]))
                               .float(), dim=-1)
            sol = [F.normalize(head(t).double(), dim=-1) @ text.double().T for t in tests]
            f32 = [F.normalize(head(t), dim=-1) @ text.T for t in tests]
        for T in TEMPERATURES:
            key = json.dumps([template, T])
            out["reference"][key] = metrics.auroc(msp_scores(ref[0], temperature=T),
                                                  msp_scores(ref[1], temperature=T))
            out["solution (float64 logits)"][key] = metrics.auroc(
                *[(c / T).softmax(dim=1).max(dim=1).values for c in sol])
            out["float32 logits"][key] = metrics.auroc(
                *[(c / T).double().softmax(dim=1).max(dim=1).values for c in f32])
            out["float32 softmax"][key] = metrics.auroc(
                *[(c / T).float().softmax(dim=1).max(dim=1).values for c in f32])
    print(f"logit_scale of the tiny CLIP: {scale:.4f} (tau = {1 / scale:.5f})")
    return out


def report(name, variants):
    keys = list(next(iter(variants.values())))
    print(f"\n== {name}: variants {list(variants)}")
    for k in keys:
        vals = np.array([v[k] for v in variants.values()])
        spread = vals.max() - vals.min()
        tol = max(0.1, 3 * spread)
        print(f"{k}: {' / '.join(f'{x:.3f}' for x in vals)}  mean {vals.mean():.3f} "
              f"spread {spread:.4f} -> value {vals.mean():.2f} tol {tol:.2f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", default=["knn", "msp"])
    args = parser.parse_args()
    from ood_utils.course.features import load_features

    feats = load_features("miniclip", progress=False)
    if "knn" in args.only:
        report("knn_sweep", knn_variants(feats))
    if "msp" in args.only:
        report("msp_sweep", msp_variants(feats))


if __name__ == "__main__":
    main()
