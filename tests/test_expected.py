"""The answer key table: every profile and check id, the assignment's figures, the stated rule."""
from __future__ import annotations


import numpy as np
import pytest

from ood_utils.answer_key import expected


SEED_CLIP = dict(zip(
    ["knn", "msp", "plp", "plp_md", "plp_rmd", "md", "rmd", "kmeans10_md", "kmeans10_rmd",
     "kmeans50_md", "kmeans50_rmd", "kmeans100_md", "kmeans100_rmd"],
    [83.55, 76.38, 74.81, 83.31, 80.88, 71.71, 84.93, 67.87, 42.38, 72.18, 58.73, 72.84, 68.59]))


def test_expected_table_has_every_profile_and_check_id():
    assert set(expected.EXPECTED) == {"clip", "miniclip"}
    for profile, table in expected.EXPECTED.items():
        assert set(table) == set(expected.CHECK_IDS), profile
        for cid, e in table.items():
            assert isinstance(e, expected.Expected) and e.how
            if e.is_set:
                assert 0 <= e.value <= 100 and e.tol > 0


def test_clip_values_are_the_assignment_figures():
    for cid, value in SEED_CLIP.items():
        assert expected.get_expected(cid, "clip").value == value


def test_miniclip_targets_are_measured_with_the_stated_rule():
    """Each entry records its measured runs; value and tolerance follow from them by the rule
    (recomputed here, not taken from the module)."""
    for cid in SEED_CLIP:
        e = expected.get_expected(cid, "miniclip")
        assert e.is_set, f"{cid} has no miniclip target"
        runs = list(e.runs.values())
        assert runs, f"{cid}: the entry must list its measured runs"
        if cid.startswith("kmeans"):  # fixed seed; midpoint rule over the correct variants
            assert e.rule == "midpoint" and len(runs) == 2, cid
            assert e.value == pytest.approx((max(runs) + min(runs)) / 2, abs=0.006), cid
            assert e.tol == pytest.approx((max(runs) - min(runs)) / 2 + 0.5, abs=0.006), cid
            continue
        assert e.rule == "mean", cid
        assert len(runs) == 1 or len(runs) >= 5, f"{cid}: one deterministic run or 5 seeds"
        assert e.tol == pytest.approx(max(0.1, 3 * (max(runs) - min(runs))), abs=0.011), cid
        assert abs(np.mean(runs) - e.value) <= 0.006, cid
        for run, value in e.runs.items():  # what 'how' says is what 'runs' holds
            assert f"{value:.3f}" in e.how, (cid, run)


def test_a_broken_answer_key_file_is_refused_with_a_clear_message(tmp_path):
    import json

    doc = json.loads(expected.DATA.read_text())
    doc["results"]["miniclip"]["knn"]["tol"] = -1
    bad = tmp_path / "expected.json"
    bad.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="tol > 0"):
        expected._load(bad)
    doc["results"]["miniclip"]["knn"]["tol"] = 0.1
    doc["results"]["miniclip"]["nope"] = {"value": 1.0, "tol": 1.0, "how": "x"}
    bad.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="unknown check ids"):
        expected._load(bad)
    bad.write_text("{ truncated")
    with pytest.raises(RuntimeError, match="cannot be read"):
        expected._load(bad)


def test_the_measuring_tool_writes_the_rule_into_the_data_file(tmp_path, monkeypatch):
    import importlib.util
    import json
    import shutil

    spec = importlib.util.spec_from_file_location(
        "measure_expected", expected.DATA.parents[2] / "tools" / "measure_expected.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    copy = tmp_path / "expected.json"
    shutil.copy(expected.DATA, copy)
    monkeypatch.setattr(tool, "ANSWER_KEY", copy)
    tool.write_answer_key("miniclip", {"plp": {"seed 0": 90.0, "seed 1": 91.0, "seed 2": 90.5},
                                       "kmeans10_md": {"float32 input": 80.0,
                                                       "float64 input": 82.0},
                                       "cac.accuracy": {"seed 0": 80.0, "seed 1": 80.1}},
                          "2026-12-02", 1)
    doc = json.loads(copy.read_text())
    plp, km = doc["results"]["miniclip"]["plp"], doc["results"]["miniclip"]["kmeans10_md"]
    assert (plp["value"], plp["tol"]) == (90.5, 3.0)  # mean; 3 x spread of 1.0
    assert (km["value"], km["tol"]) == (81.0, 1.5)  # midpoint; half range + 0.5
    assert plp["note"] and "91.000" in plp["how"]  # the note stays, the runs are stated
    assert doc["results"]["miniclip"]["cac"]["extra"]["accuracy"] == [80.05, 0.3]
    assert "cac.accuracy" not in doc["results"]["miniclip"]
    reloaded = expected._load(copy)[0]["miniclip"]["plp"]
    assert reloaded.runs == {"seed 0": 90.0, "seed 1": 91.0, "seed 2": 90.5}


def test_get_expected_validates_its_arguments():
    with pytest.raises(ValueError, match="check_id"):
        expected.get_expected("nope", "clip")
    with pytest.raises(ValueError, match="profile"):
        expected.get_expected("knn", "imagenet")
