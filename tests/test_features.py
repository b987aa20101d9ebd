import dataclasses
import hashlib
import json

import pytest
import torch
from torch.utils.data import Subset

from ood_utils.course import data, features, models
from ood_utils.course.profiles import get_profile

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

    # freshly extracted features behave like loaded ones: a student may train on them
    w = torch.zeros(320, 2, requires_grad=True)
    (first["id_train_feats"] @ w).sum().backward()
    assert w.grad is not None

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
    features.cached("thing", compute, p, {"seed": 1})  # caught by its digest
    assert len(computed) == 3
    # a file replaced by another valid blob with the right key is caught as well
    blob = {"key": torch.load(folder / "thing.pt", weights_only=True)["key"],
            "value": {"x": torch.zeros(3, dtype=torch.int64)}}
    torch.save(blob, folder / "thing.pt")
    assert torch.equal(features.cached("thing", compute, p, {"seed": 1})["x"], torch.arange(3))
    assert len(computed) == 4
    with pytest.raises(ValueError, match="cache name"):
        features.cached("../escape", compute, p)


def test_same_shape_poisoning_is_caught_by_the_digest(small_profile, capsys):
    # the attack of issue 8: overwrite every cached tensor with zeros of the same shape
    p, folder, calls = small_profile
    first = features.load_features(p, device="cpu", progress=False)
    meta = json.loads((folder / "meta.json").read_text())
    assert set(meta["digests"]) == set(features.FEATURE_KEYS)
    for key in features.FEATURE_KEYS:  # the digest is the SHA-256 of the file's bytes
        assert meta["digests"][key] == hashlib.sha256((folder / f"{key}.pt").read_bytes()).hexdigest()
    for path in folder.glob("*_feats.pt"):
        torch.save(torch.zeros_like(torch.load(path, weights_only=True)), path)
    capsys.readouterr()
    again = features.load_features(p, device="cpu", progress=False)
    assert "does not match the SHA-256 digest" in capsys.readouterr().out
    assert calls[3:] == ["id_train", "id_test", "ood_test"]
    for key in features.FEATURE_KEYS:
        assert torch.equal(again[key], first[key])


def test_cache_without_digests_is_extracted_again(small_profile, capsys):
    p, folder, calls = small_profile
    features.load_features(p, device="cpu", progress=False)
    meta = json.loads((folder / "meta.json").read_text())
    del meta["digests"]
    (folder / "meta.json").write_text(json.dumps(meta))
    features.load_features(p, device="cpu", progress=False)
    assert "records no digest" in capsys.readouterr().out
    assert calls[3:] == ["id_train", "id_test", "ood_test"]


def test_read_only_cache_is_used_and_never_written(small_profile, monkeypatch):
    p, folder, calls = small_profile
    first = features.load_features(p, device="cpu", progress=False)
    before = {f.name: f.read_bytes() for f in folder.iterdir()}
    monkeypatch.setattr(features, "_writable", lambda folder: False)
    monkeypatch.setattr(features, "_atomic_save", lambda obj, path: (_ for _ in ()).throw(
        PermissionError(13, "Permission denied", str(path))))
    torch.save(torch.zeros(N, 320), folder / "id_test_feats.pt")  # damaged, folder "read-only"
    before["id_test_feats.pt"] = (folder / "id_test_feats.pt").read_bytes()
    out = features.load_features(p, device="cpu", progress=False)
    assert calls[3:] == ["id_test"] and torch.equal(out["id_test_feats"], first["id_test_feats"])
    value = features.cached("ro_thing", lambda: {"x": torch.ones(2)}, p)
    assert torch.equal(value["x"], torch.ones(2))
    assert {f.name: f.read_bytes() for f in folder.iterdir()} == before


def test_weights_are_hashed_once_per_process(monkeypatch):
    hashed = []
    real = features.sha256
    monkeypatch.setattr(features, "sha256", lambda path: hashed.append(path) or real(path))
    features._file_digest.cache_clear()
    first = features.expected_meta("miniclip")
    for _ in range(3):
        assert features.expected_meta("miniclip") == first
    assert len(hashed) == 1
    assert first["pretrained"].endswith(hashlib.sha256(models.MINICLIP_WEIGHTS.read_bytes()).hexdigest())


def _count_scans(monkeypatch):
    """Count every validation (``_arrays.check_array``, wherever it was imported) and every
    NaN/inf scan (``torch.isfinite``) by the data it reads; returns the two counters."""
    import collections
    import sys

    from ood_utils.methods import _arrays

    def key(x):
        ptr = x.data_ptr() if isinstance(x, torch.Tensor) else x.__array_interface__["data"][0]
        return ptr, tuple(x.shape)

    checks, scans = collections.Counter(), collections.Counter()
    real_check, real_isfinite = _arrays.check_array, torch.isfinite

    def check_array(x, *args, **kwargs):
        if hasattr(x, "shape"):
            checks[key(x)] += 1
        return real_check(x, *args, **kwargs)

    def isfinite(x, *args, **kwargs):
        scans[key(x)] += 1
        return real_isfinite(x, *args, **kwargs)

    for mod in [m for name, m in sys.modules.items() if name.startswith("ood_utils")]:
        if getattr(mod, "check_array", None) is real_check:
            monkeypatch.setattr(mod, "check_array", check_array)
    monkeypatch.setattr(torch, "isfinite", isfinite)
    return checks, scans


def test_nothing_is_validated_twice_from_the_cache_to_an_auroc(small_profile, monkeypatch,
                                                                 tmp_path):
    """load_features -> (rotation) -> a scorer fitted once -> the metrics: every tensor on the
    way is validated exactly once (at the public boundary it enters), and the cache read
    itself scans nothing (its digest proves the values are those checked at extraction)."""
    from ood_utils.methods import metrics
    from ood_utils.course import results
    from ood_utils import methods

    p, _, calls = small_profile
    features.load_features(p, device="cpu", progress=False)  # extract and write
    checks, scans = _count_scans(monkeypatch)
    feats = features.load_features(p, device="cpu", progress=False)
    assert calls == ["id_train", "id_test", "ood_test"]  # read from the cache
    assert not checks and not scans, "reading the cache validated the features"
    tr, te, oo = feats["id_train_feats"], feats["id_test_feats"], feats["ood_test_feats"]
    y = feats["id_train_labels"] % 2  # two classes of 12 rows at least
    monkeypatch.setenv("OOD_RESULTS_DIR", str(tmp_path / "results"))

    def knn():  # one call for both sets (two calls would validate the training set twice)
        both = torch.cat([te, oo])
        s = methods.knn_scores(tr, both)
        return metrics.ood_metrics(s[:N], s[N:]), [tr, both]

    def mahalanobis():
        rtr, rte, roo = methods.drop_degenerate_directions(tr, te, oo)
        md = methods.Mahalanobis(relative=True).fit(rtr, y)
        return metrics.ood_metrics(md.score_samples(rte), md.score_samples(roo)), [rtr, rte, y]

    def kmeans_wrapper():
        both = torch.cat([te, oo])
        s = methods.kmeans_mahalanobis_scores(tr, both, 2, relative=True)
        return results.record("kmeans10_rmd", s[:N], s[N:], profile="miniclip", quiet=True), \
            [tr, both]

    def md_wrapper():  # one call for both sets: one fit (two calls would fit twice)
        both = torch.cat([te, oo])
        s = methods.mahalanobis_scores(tr, y, both)
        return metrics.auroc(s[:N], s[N:]), [tr, y, both]

    for chain in (knn, mahalanobis, kmeans_wrapper, md_wrapper):
        checks.clear()
        scans.clear()
        _, inputs = chain()
        assert checks and max(checks.values()) == 1, (chain.__name__, checks)
        assert max(scans.values()) == 1, (chain.__name__, scans)
        for x in inputs:  # each was validated, once, where it entered
            assert checks[(x.data_ptr(), tuple(x.shape))] == 1, chain.__name__
