"""Reference implementations of the experiments the students design in notebooks 04-06.

Each function runs one sweep of the course's graded experiments and returns
``{setting: AUROC in percent}`` (or, for k-means, the scores the notebook also plots). They are
the reference behind :func:`ood_utils.answer_key.checks.check_sweep`'s targets in
:data:`ood_utils.answer_key.expected.SWEEPS` (measured with them) and behind the self-checks of the sweep
exercises; the notebooks never call them.

* :func:`probe_temperature_sweep` (notebook 04): the AUROC of the probe's MSP when its logits
  are divided by a temperature ``T`` before the softmax.
* :func:`shrinkage_sweep` (notebook 05): MD with the shared covariance shrunk towards a
  multiple of the identity, ``(1 - a) Sigma + a (tr Sigma / D) I``.
* :func:`kmeans_sweep` (notebook 06): MD and RMD with k-means clusters as the classes, for
  several ``k`` including ``k = 1`` (one cluster: the background Gaussian alone).
"""
from __future__ import annotations

from typing import Any, Iterable

import numpy as np
import torch

from ..methods import metrics
from ..methods.kmeans import KMEANS_SETTINGS
from ..methods.mahalanobis import _class_statistics, mahalanobis_scores
from ..methods.msp import msp_scores
from ..methods.probe import probe_logits

#: The settings of the graded sweeps (the notebooks print them; the targets are measured on them)
PROBE_TEMPERATURES = (0.1, 1.0, 10.0, 100.0)
SHRINKAGES = (0.0, 0.01, 0.1, 0.5, 1.0)
KMEANS_KS = (1, 3, 10, 50, 100)
#: The settings of the k-means sweep graded by ``check_sweep('kmeans_k', ...)`` (10, 50, 100 have
#: their own AUROC checks; k = 1 RMD is zero up to rounding)
KMEANS_GRADED = ("k=1 md", "k=3 md", "k=3 rmd")


def probe_temperature_sweep(layer: torch.nn.Module, id_feats: Any, ood_feats: Any,
                            temperatures: Iterable[float] = PROBE_TEMPERATURES) -> dict:
    """``{T: AUROC of max softmax(layer(x) / T)}`` on the ID and OOD features (float64)."""
    z_in = torch.as_tensor(probe_logits(layer, id_feats)).double()
    z_out = torch.as_tensor(probe_logits(layer, ood_feats)).double()
    return {float(t): metrics.auroc(msp_scores(z_in, temperature=float(t)),
                                    msp_scores(z_out, temperature=float(t)))
            for t in temperatures}


def shrunk_md_scores(means: torch.Tensor, shared_cov: torch.Tensor, test: Any,
                     alpha: float) -> torch.Tensor:
    """MD score ``-min_c d_c^2`` with ``Sigma_a = (1 - a) Sigma + a (tr Sigma / D) I``."""
    cov = torch.as_tensor(shared_cov).double()
    d = cov.shape[0]
    shrunk = (1.0 - alpha) * cov + alpha * torch.trace(cov) / d * torch.eye(d, dtype=cov.dtype)
    precision = torch.linalg.pinv(shrunk, hermitian=True)
    x = torch.as_tensor(test).double()
    mu = torch.as_tensor(means).double()
    xp = x @ precision
    d2 = (xp * x).sum(1, keepdim=True) - 2 * xp @ mu.T + ((mu @ precision) * mu).sum(1)
    return -d2.min(dim=1).values


def shrinkage_sweep(train_feats: Any, train_labels: Any, id_feats: Any, ood_feats: Any,
                    alphas: Iterable[float] = SHRINKAGES) -> dict:
    """``{a: MD AUROC}`` with the course's shared covariance shrunk by ``a`` (see above)."""
    train = torch.as_tensor(train_feats).double()
    labels = torch.as_tensor(train_labels).long()
    _, means, shared, _, _ = _class_statistics(train, labels, False)
    return {float(a): metrics.auroc(shrunk_md_scores(means, shared, id_feats, float(a)),
                                    shrunk_md_scores(means, shared, ood_feats, float(a)))
            for a in alphas}


def kmeans_ids(train_feats: Any, k: int, seed: int = 0, float64: bool = False) -> torch.Tensor:
    """Cluster ids under the course's k-means settings; ``k = 1`` puts every row in cluster 0."""
    n = len(train_feats)
    if k == 1:
        return torch.zeros(n, dtype=torch.int64)
    from sklearn.cluster import KMeans

    x = np.asarray(torch.as_tensor(train_feats).numpy(),
                   dtype=np.float64 if float64 else np.float32)
    km = KMeans(n_clusters=k, random_state=seed, n_init=KMEANS_SETTINGS["n_init"],
                algorithm=KMEANS_SETTINGS["algorithm"]).fit(x)
    return torch.from_numpy(km.labels_.astype(np.int64))


def kmeans_sweep(train_feats: Any, test_feats: Any, ks: Iterable[int] = KMEANS_KS,
                 seed: int = 0, float64: bool = False) -> dict:
    """``{k: {"cluster_ids", "md", "rmd"}}``: k-means fitted once per ``k`` on the training
    rows, MD and RMD scores of every test row with the clusters as the classes."""
    out = {}
    for k in ks:
        ids = kmeans_ids(train_feats, int(k), seed, float64)
        out[int(k)] = {"cluster_ids": ids,
                       "md": mahalanobis_scores(train_feats, ids, test_feats),
                       "rmd": mahalanobis_scores(train_feats, ids, test_feats,
                                                        relative=True)}
    return out


def kmeans_sweep_aurocs(sweep: dict, n_in: int) -> dict:
    """``{"k=<k> md": AUROC, "k=<k> rmd": AUROC}`` of a :func:`kmeans_sweep` result whose test
    rows are ``n_in`` ID rows followed by the OOD rows."""
    out = {}
    for k, entry in sweep.items():
        for kind in ("md", "rmd"):
            s = torch.as_tensor(entry[kind]).double().numpy()
            out[f"k={k} {kind}"] = metrics.auroc(s[:n_in], s[n_in:])
    return out
