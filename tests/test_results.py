"""The results file: recorded metrics agree with scikit-learn, merge, validate and are judged."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, roc_auc_score

from ood_utils import expected, results


@pytest.fixture
def results_tmp(tmp_path, monkeypatch):
    monkeypatch.setenv("OOD_RESULTS_DIR", str(tmp_path))
    return tmp_path


def _toy_scores(seed=0, n_in=50, n_out=40, shift=1.0):
    rng = np.random.default_rng(seed)
    return rng.normal(shift, 1, n_in), rng.normal(0, 1, n_out)


def test_record_matches_sklearn_and_merges(results_tmp):
    s_in, s_out = _toy_scores()
    values = results.record("knn", torch.from_numpy(s_in), torch.from_numpy(s_out),
                            profile="miniclip", quiet=True)
    labels = np.r_[np.ones(50), np.zeros(40)]
    pooled = np.r_[s_in, s_out]
    assert values["auroc"] == pytest.approx(roc_auc_score(labels, pooled) * 100)
    assert values["aupr_in"] == pytest.approx(average_precision_score(labels, pooled) * 100)
    assert values["aupr_out"] == pytest.approx(
        average_precision_score(1 - labels, -pooled) * 100)
    thr = np.sort(s_in)[::-1][int(np.ceil(0.95 * 50)) - 1]
    assert values["fpr95"] == pytest.approx(np.mean(s_out >= thr) * 100)

    results.record("msp", *_toy_scores(1, shift=2.0), profile="miniclip", quiet=True)
    data = json.loads((results_tmp / "miniclip.json").read_text())
    assert data["profile"] == "miniclip"
    assert set(data) == {"profile", "aurocs", "fpr95", "aupr_in", "aupr_out", "extra"}
    assert set(data["aurocs"]) == {"knn", "msp"}
    assert data["aurocs"]["knn"] == pytest.approx(values["auroc"], abs=1e-5)
    assert results.load("miniclip")["aurocs"] == data["aurocs"]
    saved = results.load_scores("miniclip")
    np.testing.assert_allclose(saved["knn"][0], s_in)
    np.testing.assert_allclose(saved["knn"][1], s_out)
    assert not list(results_tmp.glob(".*.tmp")), "temporary files left behind"


def test_record_overwrites_one_check_and_rejects_bad_input(results_tmp):
    results.record("md", *_toy_scores(0), profile="miniclip", quiet=True)
    second = results.record("md", *_toy_scores(0, shift=-1.0), profile="miniclip", quiet=True)
    assert results.load("miniclip")["aurocs"]["md"] == pytest.approx(second["auroc"], abs=1e-5)
    with pytest.raises(ValueError, match="check_id"):
        results.record("mdd", *_toy_scores(0), profile="miniclip")
    with pytest.raises(ValueError, match="score_in"):
        results.record("md", np.ones((3, 2)), np.ones(3), profile="miniclip")
    with pytest.raises(ValueError, match="score_out"):
        results.record("md", np.ones(3), np.array([1.0, np.nan]), profile="miniclip")


def test_corrupt_or_foreign_results_file_is_replaced(results_tmp):
    path = results_tmp / "miniclip.json"
    path.write_text("{not json")
    with pytest.warns(UserWarning, match="not a valid results file"):
        assert results.load("miniclip")["aurocs"] == {}
    with pytest.warns(UserWarning):
        results.record("knn", *_toy_scores(), profile="miniclip", quiet=True)
    assert set(json.loads(path.read_text())["aurocs"]) == {"knn"}
    path.write_text(json.dumps({"profile": "clip", "aurocs": {"knn": 1.0}}))
    with pytest.warns(UserWarning, match="profile"):
        assert results.load("miniclip")["aurocs"] == {}
    # entries with unknown ids or non-numbers are dropped, valid ones kept
    path.write_text(json.dumps({"profile": "miniclip", "aurocs": {"knn": 90.0, "bogus": 1.0,
                                                                   "md": "x"}}))
    assert results.load("miniclip")["aurocs"] == {"knn": 90.0}


def test_table_and_format_table(results_tmp, monkeypatch):
    monkeypatch.setitem(expected.EXPECTED["miniclip"], "knn", expected.Expected(80.0, 1.0, "t"))
    monkeypatch.setitem(expected.EXPECTED["miniclip"], "msp", expected.Expected(10.0, 1.0, "t"))
    s_in, s_out = _toy_scores(0, 400, 400, shift=1.19)  # AUROC close to 80
    v = results.record("knn", s_in, s_out, profile="miniclip", quiet=True)["auroc"]
    monkeypatch.setitem(expected.EXPECTED["miniclip"], "knn", expected.Expected(v, 1.0, "t"))
    results.record("msp", s_in, s_out, profile="miniclip", quiet=True)
    rows = {r["check_id"]: r for r in results.table("miniclip")}
    assert list(rows) == list(expected.CHECK_IDS)
    assert rows["knn"]["passed"] is True and rows["msp"]["passed"] is False
    assert rows["md"]["value"] is None and rows["md"]["passed"] is None
    text = results.format_table("miniclip")
    assert "pass" in text and "FAIL" in text and "not run (05_mahalanobis)" in text
    assert "05_mahalanobis" in results.missing_notebooks("miniclip")


def test_extras_are_stored_validated_and_judged(results_tmp, monkeypatch):
    """A check with targets beyond its AUROC (CAC) passes only when every target is met."""
    monkeypatch.setitem(expected.EXPECTED["clip"], "cac", expected.Expected(
        None, None, "t", extra={"known_accepted_seed": (95.0, 1.0),
                                "unknown_rejected_seed": (85.0, 1.0)}))
    s_in, s_out = _toy_scores(0)
    results.record("cac", s_in, s_out, profile="clip", quiet=True,
                   extra={"known_accepted_seed": 95.5, "unknown_rejected_seed": np.float64(84.2)})
    stored = json.loads((results_tmp / "clip.json").read_text())["extra"]["cac"]
    assert stored == {"known_accepted_seed": 95.5, "unknown_rejected_seed": 84.2}
    row = {r["check_id"]: r for r in results.table("clip")}["cac"]
    assert row["passed"] is True and row["expected"] is None
    assert row["extra"]["unknown_rejected_seed"] == (84.2, 85.0, 1.0)
    assert "unknown_rejected_seed: 84.20 (expected 85.00 +/- 1.00)" in results.format_table("clip")

    results.record("cac", s_in, s_out, profile="clip", quiet=True,
                   extra={"known_accepted_seed": 95.5, "unknown_rejected_seed": 80.0})
    assert {r["check_id"]: r for r in results.table("clip")}["cac"]["passed"] is False
    # a number the key needs but nobody recorded fails the check instead of passing it
    results.record("cac", s_in, s_out, profile="clip", quiet=True,
                   extra={"known_accepted_seed": 95.5})
    assert {r["check_id"]: r for r in results.table("clip")}["cac"]["passed"] is False
    for bad in ({"x": float("nan")}, {"x": "95"}, {1: 2.0}, [("x", 1.0)], {"x": True}):
        with pytest.raises(ValueError, match="extra"):
            results.record("cac", s_in, s_out, profile="clip", quiet=True, extra=bad)
