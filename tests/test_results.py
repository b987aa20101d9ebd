"""The results file: recorded metrics agree with scikit-learn, merge, validate and are judged."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, roc_auc_score

from ood_utils.answer_key import expected
from ood_utils.course import results


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


def _key(**entries):
    """A stand-in answer key: ``expected(check_id, profile)`` as the course runner passes it."""
    return lambda cid, profile: entries.get(cid, expected.Expected(None, None, "no entry"))


def test_results_know_no_answer_key():
    code = ("import sys, ood_utils.course.results as r; "
            "assert 'ood_utils.answer_key.expected' not in sys.modules, 'results imports the answer key'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_table_and_format_table(results_tmp):
    s_in, s_out = _toy_scores(0, 400, 400, shift=1.19)  # AUROC close to 80
    v = results.record("knn", s_in, s_out, profile="miniclip", quiet=True)["auroc"]
    results.record("msp", s_in, s_out, profile="miniclip", quiet=True)
    key = _key(knn=expected.Expected(v, 1.0, "t"), msp=expected.Expected(10.0, 1.0, "t"))
    rows = {r["check_id"]: r for r in results.table("miniclip", expected=key)}
    assert list(rows) == list(results.CHECK_IDS)
    assert rows["knn"]["passed"] is True and rows["msp"]["passed"] is False
    assert rows["md"]["value"] is None and rows["md"]["passed"] is None
    assert rows["knn"]["expected"] == v and rows["knn"]["tol"] == 1.0
    text = results.format_table("miniclip", expected=key)
    assert "pass" in text and "FAIL" in text and "not run (05_mahalanobis)" in text
    knn_line = next(line for line in text.splitlines() if line.startswith("knn "))
    assert knn_line == (f"{'knn':<14} {'kNN (cosine, k=1)':<20} {v:>7.2f} {v:>9.2f} {1.0:>5.2f} "
                        f"{rows['knn']['fpr95']:>7.2f} {rows['knn']['aupr_in']:>8.2f} "
                        f"{rows['knn']['aupr_out']:>8.2f}  pass")
    assert "05_mahalanobis" in results.missing_notebooks("miniclip")
    assert "02_knn" not in results.missing_notebooks("miniclip")


def test_without_a_key_the_table_says_what_to_pass(results_tmp):
    """results knows no targets: a table without the answer key is an error that names it."""
    results.record("knn", *_toy_scores(), profile="miniclip", quiet=True)
    for build in (results.table, results.format_table):
        with pytest.raises(TypeError, match="expected=ood_utils.answer_key.expected.get_expected"):
            build("miniclip")


def test_extras_are_stored_validated_and_judged(results_tmp):
    """A check with targets beyond its AUROC (CAC) passes only when every target is met."""
    key = _key(cac=expected.Expected(
        None, None, "t", extra={"known_accepted_seed": (95.0, 1.0),
                                "unknown_rejected_seed": (85.0, 1.0)}))
    s_in, s_out = _toy_scores(0)
    results.record("cac", s_in, s_out, profile="clip", quiet=True,
                   extra={"known_accepted_seed": 95.5, "unknown_rejected_seed": np.float64(84.2)})
    stored = json.loads((results_tmp / "clip.json").read_text())["extra"]["cac"]
    assert stored == {"known_accepted_seed": 95.5, "unknown_rejected_seed": 84.2}
    row = {r["check_id"]: r for r in results.table("clip", key)}["cac"]
    assert row["passed"] is True and row["expected"] is None
    assert row["extra"]["unknown_rejected_seed"] == (84.2, 85.0, 1.0)
    assert "unknown_rejected_seed: 84.20 (expected 85.00 +/- 1.00)" in results.format_table(
        "clip", key)

    results.record("cac", s_in, s_out, profile="clip", quiet=True,
                   extra={"known_accepted_seed": 95.5, "unknown_rejected_seed": 80.0})
    assert {r["check_id"]: r for r in results.table("clip", key)}["cac"]["passed"] is False
    # a number the key needs but nobody recorded fails the check instead of passing it
    results.record("cac", s_in, s_out, profile="clip", quiet=True,
                   extra={"known_accepted_seed": 95.5})
    assert {r["check_id"]: r for r in results.table("clip", key)}["cac"]["passed"] is False
    for bad in ({"x": float("nan")}, {"x": "95"}, {1: 2.0}, [("x", 1.0)], {"x": True}):
        with pytest.raises(ValueError, match="extra"):
            results.record("cac", s_in, s_out, profile="clip", quiet=True, extra=bad)


def test_concurrent_records_keep_every_entry(results_tmp):
    """Several processes recording at once (the lock is _io.folder_lock) lose no entry."""
    code = ("import sys, numpy as np; from ood_utils.course import results; "
            "results.record(sys.argv[1], np.arange(5.0), np.arange(4.0) - 1, "
            "profile='miniclip', quiet=True)")
    ids = ["knn", "msp", "md"]
    procs = [subprocess.Popen([sys.executable, "-c", code, cid]) for cid in ids]
    assert [p.wait() for p in procs] == [0] * len(ids)
    assert set(results.load("miniclip")["aurocs"]) == set(ids)
