"""Cached building blocks that several notebooks share.

Each step is stored with :func:`ood_utils.course.features.cached` under ``features/<profile>/``, keyed
by its settings and by the feature cache itself, so that (for example) notebook 05 reuses the
probe that notebook 04 trained, and trains it itself when 04 has not run. Changing a setting
(templates, seed, epochs, ...) or the model recomputes the step.

* :func:`zero_shot_logits` - CLIP zero-shot logits of the three feature splits.
* :func:`pseudo_labels` - argmax of those logits (the PLP targets).
* :func:`plp_probe` - the linear probe trained on the pseudo-labels: weights, training history
  and its logits on the three splits, per seed.
"""
from __future__ import annotations

import hashlib
import json
from typing import Sequence

import torch

from ..methods import msp
from ..methods.probe import PROBE_EPOCHS, PROBE_LR, ProbeOptions, probe_logits, train_linear_probe
from ..methods._threads import one_cpu_thread
from .features import cached, load_features
from .profiles import Profile, get_profile

SPLITS = ("id_train", "id_test", "ood_test")
BARE = ("{}",)


def _templates_key(templates: Sequence[str]) -> str:
    if tuple(templates) == BARE:
        return "bare"
    return hashlib.sha1(json.dumps(list(templates)).encode()).hexdigest()[:12]


def zero_shot_logits(profile: str | Profile | None = None,
                     templates: Sequence[str] = BARE, progress: bool = True
                     ) -> dict[str, torch.Tensor]:
    """Zero-shot logits ``logit_scale * cos(image, text)`` of the three splits.

    Parameters
    ----------
    profile : profile name (default: the active one).
    templates : prompt templates with ``{}`` for the class name; the default ``("{}",)`` uses
        the bare class names (as the original assignment does). Several templates are
        ensembled as in :func:`ood_utils.course.models.text_embeddings`.

    Returns
    -------
    dict with float32 tensors ``id_train`` (N_train, C), ``id_test`` (N_test, C),
    ``ood_test`` (N_ood, C), and ``logit_scale`` (0-d).
    """
    from .data import id_class_names
    from .models import load_clip, zero_shot_logits as logits_of

    p = get_profile(profile)
    templates = tuple(templates)
    names = id_class_names(p)

    def compute():
        feats = load_features(p, progress=progress)
        model, _, tokenizer = load_clip(p)
        out = {}
        for split in SPLITS:
            logits = logits_of(model, tokenizer, feats[f"{split}_feats"], names,
                               templates=templates)
            out[split] = torch.as_tensor(logits).float().contiguous()
        out["logit_scale"] = model.logit_scale.exp().detach().float().reshape(())
        return out

    return cached(f"zeroshot_{_templates_key(templates)}", compute, p,
                  meta={"templates": list(templates), "class_names": list(names)})


def pseudo_labels(profile: str | Profile | None = None, templates: Sequence[str] = BARE
                  ) -> dict[str, torch.Tensor]:
    """Zero-shot pseudo-labels (argmax of :func:`zero_shot_logits`) of the ID splits.

    Returns
    -------
    dict with int64 tensors ``id_train`` (N_train,) and ``id_test`` (N_test,).
    """
    logits = zero_shot_logits(profile, templates)
    return {s: torch.as_tensor(msp.pseudo_labels(logits[s])).long()
            for s in ("id_train", "id_test")}


def plp_probe(seed: int = 0, profile: str | Profile | None = None, *,
              epochs: int = PROBE_EPOCHS, lr: float = PROBE_LR,
              progress: bool = True) -> dict[str, torch.Tensor]:
    """The PLP linear probe for ``seed``: trained once, then read from the cache.

    The probe maps trunk features to the ID classes and is trained with
    :func:`ood_utils.methods.train_linear_probe` as notebook 04 prescribes: cross-entropy on
    the zero-shot pseudo-labels of all ID training rows, ``torch.manual_seed(seed)`` before
    ``nn.Linear``, full-batch Adam, the epoch with the best training accuracy (on the
    pseudo-labels) kept. No real label is used. Deterministic for a given seed (one thread).

    Returns
    -------
    dict with ``weight`` (C, D), ``bias`` (C,), the probe's logits ``id_train``, ``id_test``,
    ``ood_test`` (float32, (N, C)), the pseudo-labels ``pseudo_id_train`` (int64), the
    per-epoch training history ``history_epoch``, ``history_loss`` (mean training loss) and
    ``history_train_acc`` (accuracy on the pseudo-labels, 0..1) as float32 tensors, and
    ``best_epoch`` (0-d int64, 1-based: the epoch whose weights were kept).
    """
    p = get_profile(profile)
    meta = {"seed": int(seed), "epochs": int(epochs), "lr": float(lr), "threads": 1,
            "batch_size": "full", "select": "best training accuracy",
            "targets": "zero-shot pseudo-labels, bare names"}

    def compute():
        feats = load_features(p, progress=progress)
        targets = pseudo_labels(p)["id_train"]
        options = ProbeOptions(epochs=epochs, lr=lr, seed=seed)
        with one_cpu_thread():
            fit = train_linear_probe(feats["id_train_feats"], targets, options,
                                            progress=progress)
        layer = fit.layer
        out = {"weight": layer.weight.detach().clone().float(),
               "bias": layer.bias.detach().clone().float(),
               "pseudo_id_train": targets}
        for split in SPLITS:
            out[split] = torch.as_tensor(probe_logits(layer, feats[f"{split}_feats"])
                                         ).float().contiguous()
        for key in ("epoch", "loss", "train_acc"):
            out[f"history_{key}"] = torch.tensor([h[key] for h in fit.history],
                                                 dtype=torch.float32)
        out["best_epoch"] = torch.tensor(int(fit.best_epoch))
        return out

    return cached(f"plp_probe_seed{int(seed)}", compute, p, meta=meta)

