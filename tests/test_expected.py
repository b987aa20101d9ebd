"""The answer key table: every profile and check id, the assignment's figures, the stated rule."""
from __future__ import annotations

import re

import numpy as np
import pytest

from ood_utils import expected


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
    """Each entry states its measurements; value and tolerance follow from them by the rule."""
    for cid in SEED_CLIP:
        e = expected.get_expected(cid, "miniclip")
        assert e.is_set, f"{cid} has no miniclip target"
        if cid.startswith("kmeans"):  # fixed seed; midpoint rule over the correct variants
            vals = [float(v) for v in re.findall(r"float(?:32|64) input: ([0-9.]+)", e.how)]
            assert len(vals) == 2, f"{cid}: 'how' must list the measured variants"
            assert e.value == pytest.approx((max(vals) + min(vals)) / 2, abs=0.006), cid
            assert e.tol == pytest.approx((max(vals) - min(vals)) / 2 + 0.5, abs=0.006), cid
            continue
        once = re.findall(r"deterministic \(no seed\): ([0-9.]+)", e.how)
        # every measured run is listed as "<seed or variant>: 12.345"
        per_seed = [float(v) for v in re.findall(r": ([0-9]+\.[0-9]{3})(?![0-9])", e.how)]
        assert once or len(per_seed) >= 3, f"{cid}: 'how' must list the measured values"
        vals = [float(once[0])] if once else per_seed
        assert e.tol == pytest.approx(max(0.1, 3 * (max(vals) - min(vals))), abs=0.011), cid
        assert abs(np.mean(vals) - e.value) <= 0.006, cid


def test_get_expected_validates_its_arguments():
    with pytest.raises(ValueError, match="check_id"):
        expected.get_expected("nope", "clip")
    with pytest.raises(ValueError, match="profile"):
        expected.get_expected("knn", "imagenet")


def test_the_cac_verdict_needs_every_seed_and_an_interval_without_zero():
    from ood_utils.expected import comparison_verdict

    # mean 3.32, sd 0.444, t(0.975, 4) = 2.776: interval 2.77 to 3.87
    assert comparison_verdict([3.0, 3.5, 4.0, 2.9, 3.2]).startswith("CAC above MSP")
    assert "+2.77 to +3.87" in comparison_verdict([3.0, 3.5, 4.0, 2.9, 3.2])
    # ahead in every seed but the interval (mean 2.2, sd 2.58) holds 0
    assert comparison_verdict([0.2, 0.3, 4.5, 0.5, 5.5]).startswith("no clear difference")
    assert comparison_verdict([1.0, -0.5, 0.3]).startswith("no clear difference")
    assert comparison_verdict([-2.0, -2.2, -1.9]).startswith("MSP above CAC")
    with pytest.raises(ValueError):
        comparison_verdict([1.0])
