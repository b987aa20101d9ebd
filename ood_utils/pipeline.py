"""Cached building blocks that several notebooks share.

Each step is stored with :func:`ood_utils.features.cached` under ``features/<profile>/``, keyed
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

from . import scores
from .features import cached, load_features
from .profiles import Profile, get_profile

SPLITS = ("id_train", "id_test", "ood_test")
BARE = ("{}",)
# fraction of the ID training rows held out to pick the probe's best epoch
PROBE_VAL_FRACTION = 0.1
PROBE_SPLIT_SEED = 1234


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
        ensembled as in :func:`ood_utils.models.text_embeddings`.

    Returns
    -------
    dict with float32 tensors ``id_train`` (N_train, C), ``id_test`` (N_test, C),
    ``ood_test`` (N_ood, C), and ``logit_scale`` (0-d).
    """
    from .data import id_class_names
    from .models import load_clip

    p = get_profile(profile)
    templates = tuple(templates)
    names = id_class_names(p)

    def compute():
        feats = load_features(p, progress=progress)
        model, _, tokenizer = load_clip(p)
        out = {}
        for split in SPLITS:
            logits = scores.zero_shot_logits(model, tokenizer, feats[f"{split}_feats"], names,
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
    return {s: torch.as_tensor(scores.pseudo_labels(logits[s])).long()
            for s in ("id_train", "id_test")}


def probe_split(n: int, fraction: float = PROBE_VAL_FRACTION, seed: int = PROBE_SPLIT_SEED
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Fixed random split of ``n`` training rows into (train indices, validation indices)."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_val = max(1, int(round(n * fraction)))
    return perm[n_val:].sort().values, perm[:n_val].sort().values


def plp_probe(seed: int = 0, profile: str | Profile | None = None, epochs: int = 20,
              lr: float = 1e-3, batch_size: int = 256, progress: bool = True
              ) -> dict[str, torch.Tensor]:
    """The PLP linear probe for ``seed``: trained once, then read from the cache.

    The probe maps trunk features to the ID classes and is trained with cross-entropy on the
    zero-shot pseudo-labels of 90% of the ID training rows; the other 10% (a fixed split,
    :func:`probe_split`) with their pseudo-labels choose the best epoch. No real label is used.

    Returns
    -------
    dict with ``weight`` (C, D), ``bias`` (C,), the probe's logits ``id_train``, ``id_test``,
    ``ood_test`` (float32, (N, C)), the pseudo-labels ``pseudo_id_train`` (int64), the
    per-epoch training history ``history_epoch``, ``history_loss`` (mean training loss) and
    ``history_val_acc`` (validation accuracy on pseudo-labels, 0..1) as float32 tensors, and
    ``best_epoch`` (0-d int64, 1-based: the epoch whose weights were kept).
    """
    p = get_profile(profile)
    meta = {"seed": int(seed), "epochs": int(epochs), "lr": float(lr), "threads": 1,
            "batch_size": int(batch_size), "val_fraction": PROBE_VAL_FRACTION,
            "split_seed": PROBE_SPLIT_SEED, "targets": "zero-shot pseudo-labels, bare names"}

    def compute():
        feats = load_features(p, progress=progress)
        targets = pseudo_labels(p)["id_train"]
        x = feats["id_train_feats"]
        tr, va = probe_split(len(x))
        with scores.one_cpu_thread():
            layer = scores.train_linear_probe(x[tr], targets[tr], x[va], targets[va],
                                              epochs=epochs, lr=lr, batch_size=batch_size,
                                              seed=seed, progress=progress)
        out = {"weight": layer.weight.detach().clone().float(),
               "bias": layer.bias.detach().clone().float(),
               "pseudo_id_train": targets}
        for split in SPLITS:
            out[split] = torch.as_tensor(scores.probe_logits(layer, feats[f"{split}_feats"])
                                         ).float().contiguous()
        history = getattr(layer, "history", None) or []  # list of per-epoch dicts
        for key in ("epoch", "loss", "val_acc"):
            values = [h[key] for h in history if key in h]
            if values:
                out[f"history_{key}"] = torch.tensor(values, dtype=torch.float32)
        out["best_epoch"] = torch.tensor(int(getattr(layer, "best_epoch", 0)))
        return out

    return cached(f"plp_probe_seed{int(seed)}", compute, p, meta=meta)


def plp_layer(seed: int = 0, profile: str | Profile | None = None, **kwargs) -> torch.nn.Linear:
    """The trained probe of :func:`plp_probe` as an ``nn.Linear`` in eval mode."""
    state = plp_probe(seed, profile, **kwargs)
    c, d = state["weight"].shape
    layer = torch.nn.Linear(d, c)
    layer.load_state_dict({"weight": state["weight"], "bias": state["bias"]})
    return layer.eval()
