import dataclasses
import json

import pytest
import torch
from torch.utils.data import Subset

from ood_utils import data, features, models
from ood_utils.profiles import get_profile

N = 24


@pytest.fixture
def small_profile(tmp_path, monkeypatch):
    """The miniclip profile cut to N images per split, with its cache in a temp folder."""
    monkeypatch.setenv("OOD_FEATURES_DIR", str(tmp_path))
    p = dataclasses.replace(get_profile("miniclip"),
                            counts={"id_train": N, "id_test": N, "ood_test": N}, batch_size=10)
    real = data.feature_dataset

    def small_dataset(profile, split, transform=None):
        return Subset(real("miniclip", split, transform), range(N))

    monkeypatch.setattr(features, "feature_dataset", small_dataset)
    calls = []
    real_extract = features.extract_features

    def counting_extract(*args, **kwargs):
        calls.append(kwargs.get("desc"))
        return real_extract(*args, **kwargs)

    monkeypatch.setattr(features, "extract_features", counting_extract)
    return p, tmp_path / "miniclip", calls


def test_features_match_the_trunk_and_are_cached(small_profile):
    p, folder, calls = small_profile
    first = features.load_features(p, device="cpu", progress=False)
    assert calls == ["id_train", "id_test", "ood_test"]
    assert first["id_train_feats"].shape == (N, 320)
    assert first["ood_test_labels"].dtype == torch.int64
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["model"] == "miniclip-fmnist" and meta["splits"]["id_train"]["count"] == N

    # independent computation: the trunk applied to preprocessed images one by one
    model, preprocess, _ = models.load_clip("miniclip")
    ds = data.feature_dataset("miniclip", "id_test", transform=preprocess)
    with torch.no_grad():
        by_hand = model.visual.trunk(torch.stack([ds[i][0] for i in range(3)]))
    torch.testing.assert_close(first["id_test_feats"][:3], by_hand, rtol=1e-4, atol=1e-4)

    second = features.load_features(p, device="cpu", progress=False)
    assert calls == ["id_train", "id_test", "ood_test"]  # read from the cache
    for key in features.FEATURE_KEYS:
        assert torch.equal(first[key], second[key])


def test_truncated_file_is_detected_and_re_extracted(small_profile):
    p, folder, calls = small_profile
    features.load_features(p, device="cpu", progress=False)
    path = folder / "id_test_feats.pt"
    path.write_bytes(path.read_bytes()[:100])
    again = features.load_features(p, device="cpu", progress=False)
    assert calls[3:] == ["id_test"]
    assert again["id_test_feats"].shape == (N, 320)


def test_meta_of_another_setup_forces_re_extraction(small_profile):
    p, folder, calls = small_profile
    features.load_features(p, device="cpu", progress=False)
    meta = json.loads((folder / "meta.json").read_text())
    meta["pretrained"] = "some-other-weights"
    (folder / "meta.json").write_text(json.dumps(meta))
    features.load_features(p, device="cpu", progress=False)
    assert calls[3:] == ["id_train", "id_test", "ood_test"]


def test_wrong_shape_in_cache_is_not_used(small_profile):
    p, folder, calls = small_profile
    features.load_features(p, device="cpu", progress=False)
    torch.save(torch.zeros(N, 7), folder / "ood_test_feats.pt")
    out = features.load_features(p, device="cpu", progress=False)
    assert calls[3:] == ["ood_test"] and out["ood_test_feats"].shape == (N, 320)


def test_generic_cache_recomputes_on_new_meta_or_corruption(small_profile):
    p, folder, _ = small_profile
    computed = []

    def compute():
        computed.append(1)
        return {"x": torch.arange(3)}

    assert torch.equal(features.cached("thing", compute, p, {"seed": 0})["x"], torch.arange(3))
    features.cached("thing", compute, p, {"seed": 0})
    assert len(computed) == 1
    features.cached("thing", compute, p, {"seed": 1})
    assert len(computed) == 2
    (folder / "thing.pt").write_bytes(b"garbage")
    with pytest.warns(UserWarning, match="unreadable"):
        features.cached("thing", compute, p, {"seed": 1})
    assert len(computed) == 3
    with pytest.raises(ValueError, match="cache name"):
        features.cached("../escape", compute, p)
