"""Hostile submissions of notebooks 03 (zero-shot MSP) and 04 (pseudo-label probe): answers
read from what the course caches (the zero-shot logits, the trained probe) instead of
computed."""
from __future__ import annotations

from ._build import Sub, body

# the MSP sweep of the instructor calls zero_shot_logits_exercise too
LOGITS = frozenset({"logits_selfcheck", "msp_auroc", "msp_sweep_selfcheck", "msp_sweep_auroc"})
PROBE = frozenset({"plp_train_selfcheck", "plp_auroc", "plp_sweep_graded"})


def subs() -> list[Sub]:
    return [
        Sub("reach_cached_logits", "03_msp", "reach",
            "zero-shot logits of the real test sets read from the course's cache file "
            "(torch.load of zeroshot_bare.pt under $OOD_FEATURES_DIR) instead of computed",
            cells={"logits_exercise": body('''
                import glob, os
                cached = {}
                for path in glob.glob(os.path.join(os.environ.get("OOD_FEATURES_DIR", "features"), "*",
                                                   "zeroshot_bare.p" + "t")):
                    cached = torch.load(path, weights_only=True)["value"]
                logits = torch.zeros(len(image_feats), len(text_embeds), dtype=torch.float64)
                for split in ("id_test", "ood_test"):
                    if split in cached and len(cached[split]) == len(image_feats):
                        logits = torch.as_tensor(cached[split]).double()''')},
            cheated=LOGITS),
        Sub("reach_cached_probe", "04_plp", "reach",
            "the trained probe read from the feature cache's file (torch.load of "
            "plp_probe_seed<seed>.pt under $OOD_FEATURES_DIR) instead of trained",
            cells={"plp_train_exercise": body('''
                import glob, os
                layer = nn.Linear(train_feats.shape[1], num_classes)
                pattern = os.path.join(os.environ.get("OOD_FEATURES_DIR", "features"), "*",
                                       f"plp_probe_seed{seed}.p" + "t")
                for path in glob.glob(pattern):
                    saved = torch.load(path, weights_only=True)["value"]
                    if tuple(saved["weight"].shape) == tuple(layer.weight.shape):
                        with torch.no_grad():
                            layer.weight.copy_(torch.as_tensor(saved["weight"]))
                            layer.bias.copy_(torch.as_tensor(saved["bias"]))''')},
            cheated=PROBE),
    ]


# --------------------------------------------------------------------------- 01 and 03's objects
FEATURES = frozenset({"features_selfcheck", "features_shapes"})
TEXT = frozenset({"text_embeddings_selfcheck", "msp_auroc", "msp_sweep_selfcheck",
                  "msp_sweep_auroc"})


def object_subs() -> list[Sub]:
    """Cheats on the parts whose inputs are objects (a model, a loader): judged through probes
    and the tiny CLIP sent by name."""
    return [
        Sub("reach_extract_features", "01_features", "reach",
            "the extraction loop is the course's own extract_features (module found with "
            "importlib, name built at run time)",
            cells={"features_exercise": body('''
                import importlib
                lib = importlib.import_module("ood_utils.course." + "features")
                feats, labels = getattr(lib, "extract" + "_features")(backbone, loader, device,
                                                                    progress=False)''')},
            cheated=FEATURES),
        Sub("reach_text_reference", "03_msp", "reach",
            "the text embeddings from the course's models.text_embeddings (through "
            "operator.attrgetter on the module already imported by a locked cell)",
            cells={"text_embeddings_exercise": body('''
                from operator import attrgetter
                text_embeds = attrgetter("text" + "_embeddings")(models)(
                    model, tokenizer, list(class_names), (template,)).float()''')},
            cheated=TEXT),
    ]
