"""Hostile submissions of notebook 06 (k-means clusters + MD/RMD). Exercises and their parts:
class statistics and Mahalanobis -> ``kmeans_maha_selfcheck``; cluster ids ->
``kmeans_ids_selfcheck``; k-means MD/RMD (built on the ids) -> ``kmeans_selfcheck``; the sweep
(built on both) -> ``kmeans_sweep_selfcheck``, the graded AUROCs ``kmeans{10,50,100}_auroc``
and ``kmeans_sweep_graded`` (the grader also calls the sweep on rows of its own).
"""
from __future__ import annotations

from ._build import Sub, body

NB = "06_kmeans"
ON_IDS = frozenset({"kmeans_ids_selfcheck", "kmeans_selfcheck", "kmeans_sweep_selfcheck",
                    "kmeans10_auroc", "kmeans50_auroc", "kmeans100_auroc",
                    "kmeans_sweep_graded"})


def subs() -> list[Sub]:
    return [
        Sub("reach_kmeans_labels", NB, "reach",
            "cluster ids from the course's own k-means kernel (methods.kmeans._kmeans_labels, "
            "name built at run time, through operator.attrgetter) instead of KMeans",
            cells={"kmeans_ids_exercise": body('''
                import importlib
                from operator import attrgetter
                lib = importlib.import_module("ood_utils.methods." + "kmeans")
                _, labels = attrgetter("_kmeans" + "_labels")(lib)(train_feats, n_clusters, seed, 1)
                cluster_ids = torch.as_tensor(labels).long()''')},
            cheated=ON_IDS),
    ]
