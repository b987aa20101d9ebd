"""The cached building blocks shared by notebooks (pipeline)."""
from __future__ import annotations

import torch

from ood_utils.course import pipeline
from ood_utils import methods


def test_plp_probe_is_trained_once_per_seed_and_reused(tmp_path, monkeypatch):
    monkeypatch.setenv("OOD_FEATURES_DIR", str(tmp_path))
    g = torch.Generator().manual_seed(0)
    feats = {"id_train_feats": torch.randn(60, 5, generator=g),
             "id_test_feats": torch.randn(20, 5, generator=g),
             "ood_test_feats": torch.randn(10, 5, generator=g)}
    monkeypatch.setattr(pipeline, "load_features", lambda p, progress=True: feats)
    logits = {"id_train": torch.randn(60, 3, generator=g), "id_test": torch.randn(20, 3,
                                                                              generator=g)}
    monkeypatch.setattr(pipeline, "zero_shot_logits", lambda p, templates=pipeline.BARE: logits)
    calls = []
    real = methods.train_linear_probe

    def counting(*args, **kwargs):
        calls.append(args[2].seed)  # the ProbeOptions
        return real(*args, **kwargs)

    monkeypatch.setattr(pipeline, "train_linear_probe", counting)
    first = pipeline.plp_probe(0, "miniclip", epochs=3, progress=False)
    again = pipeline.plp_probe(0, "miniclip", epochs=3, progress=False)
    other = pipeline.plp_probe(1, "miniclip", epochs=3, progress=False)
    assert calls == [0, 1]
    assert torch.equal(first["weight"], again["weight"])
    assert not torch.equal(first["weight"], other["weight"])
    assert first["id_train"].shape == (60, 3) and first["ood_test"].shape == (10, 3)
    assert torch.equal(first["pseudo_id_train"], logits["id_train"].argmax(1))
    assert first["history_loss"].shape == (3,)
    # the stored logits are those of the stored weights
    by_hand = feats["id_test_feats"] @ first["weight"].T + first["bias"]
    assert torch.allclose(by_hand, first["id_test"], atol=1e-6)
    assert first["history_train_acc"].shape == (3,) and 1 <= int(first["best_epoch"]) <= 3
