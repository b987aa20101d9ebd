"""The methods wing: the course's detectors, pure (tensors in, tensors out).

No profile, file, cache or plot is known here. One convention everywhere: **a higher score
means "more in-distribution"**. Every scorer accepts numpy arrays or torch tensors and returns
the kind of its first feature argument; inputs are validated once, at the public boundary.

==================  ============================================================================
module              detector (paper)
==================  ============================================================================
``knn``             kNN cosine score (Sun et al. 2022)
``msp``             maximum softmax probability (Hendrycks & Gimpel 2017; MCM, Ming et al. 2022)
``probe``           pseudo-label probing (Adaloglou et al. 2024)
``mahalanobis``     MD (Lee et al. 2018) and RMD (Ren et al. 2021), fit once / score many
``kmeans``          k-means clusters as classes of MD/RMD (SSD-style, Sehwag et al. 2021)
``cac``             class anchor clustering (Miller et al. 2021)
``metrics``         AUROC, ROC, AUPR, FPR@TPR on the course's conventions (over scikit-learn)
==================  ============================================================================
"""
from .kmeans import KMEANS_SETTINGS, kmeans_mahalanobis_scores
from .knn import knn_scores
from .mahalanobis import Mahalanobis, drop_degenerate_directions, mahalanobis_scores
from .msp import msp_scores, pseudo_labels
from .probe import PROBE_EPOCHS, PROBE_LR, ProbeOptions, ProbeResult, probe_logits, train_linear_probe

__all__ = [
    "knn_scores", "msp_scores", "pseudo_labels", "train_linear_probe", "ProbeOptions",
    "ProbeResult", "probe_logits", "PROBE_EPOCHS", "PROBE_LR", "drop_degenerate_directions", "Mahalanobis",
    "mahalanobis_scores", "kmeans_mahalanobis_scores", "KMEANS_SETTINGS",
]
