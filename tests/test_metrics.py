"""Tests of ood_utils.methods.metrics (a layer over scikit-learn) against hand-worked cases and brute
force computed from the definitions, never against scikit-learn called the same way."""
from unittest import mock

import numpy as np
import pytest
import torch

from ood_utils.methods import _arrays, metrics


def brute_auroc(s_in, s_out):
    """P(ID score > OOD score) + P(tie) / 2 over all pairs, in percent."""
    diff = s_in[:, None] - s_out[None, :]
    return 100.0 * ((diff > 0).mean() + 0.5 * (diff == 0).mean())


def brute_roc(s_in, s_out):
    """(0, 0), then (share of OOD >= t, share of ID >= t) for every distinct t, high to low."""
    ts = np.unique(np.r_[s_in, s_out])[::-1]
    return (np.r_[0.0, [(s_out >= t).mean() for t in ts]],
            np.r_[0.0, [(s_in >= t).mean() for t in ts]])


def brute_average_precision(pos, neg):
    """sum over the distinct positive scores t of (share of positives at t) * precision(>= t)."""
    total = 0.0
    for t in np.unique(pos):
        precision = (pos >= t).sum() / ((pos >= t).sum() + (neg >= t).sum())
        total += (pos == t).mean() * precision
    return 100.0 * total


def brute_fpr95(s_in, s_out):
    """Share of OOD accepted by the largest threshold (an ID score) accepting >= 95 % of ID."""
    t = max(c for c in s_in if np.mean(s_in >= c) >= 0.95 - 1e-12)
    return 100.0 * np.mean(s_out >= t)


# ---------------------------------------------------------------- hand-worked cases

def test_perfect_separation():
    s_in, s_out = np.array([3.0, 4.0, 5.0]), np.array([0.0, 1.0, 2.0])
    out = metrics.ood_metrics(s_in, s_out)
    assert out == {"auroc": 100.0, "fpr95": 0.0, "aupr_in": 100.0, "aupr_out": 100.0}


def test_reversed_scores():
    s_in, s_out = np.array([0.0, 1.0, 2.0]), np.array([3.0, 4.0, 5.0])
    assert metrics.auroc(s_in, s_out) == 0.0
    assert metrics.fpr_at_95_tpr(s_in, s_out) == 100.0


def test_all_ties_is_chance():
    s = np.full(4, 0.7)
    assert metrics.auroc(s, s) == pytest.approx(50.0)
    # every OOD sample ties with the threshold and is accepted
    assert metrics.fpr_at_95_tpr(s, s) == 100.0
    # precision is 1/2 at the only threshold
    assert metrics.aupr_in(s, s) == pytest.approx(50.0)


def test_three_plus_three_by_hand():
    # ranking (high to low): .9 I, .6 O, .5 I, .3 O, .2 I, .1 O
    s_in, s_out = np.array([0.9, 0.5, 0.2]), np.array([0.6, 0.3, 0.1])
    # pairs where the ID score wins: 3 + 2 + 1 out of 9
    assert metrics.auroc(s_in, s_out) == pytest.approx(600 / 9)
    # 95% of 3 ID samples -> all 3 must be accepted -> t = 0.2; OOD .6 and .3 pass
    assert metrics.fpr_at_95_tpr(s_in, s_out) == pytest.approx(200 / 3)
    # precision at each ID hit: 1/1, 2/3, 3/5
    assert metrics.aupr_in(s_in, s_out) == pytest.approx(100 * (1 + 2 / 3 + 3 / 5) / 3)
    # OOD positive on negated scores: order .1 O, .2 I, .3 O, .5 I, .6 O -> 1/1, 2/3, 3/5
    assert metrics.aupr_out(s_in, s_out) == pytest.approx(100 * (1 + 2 / 3 + 3 / 5) / 3)


def test_fpr95_exact_95_percent_and_ties_at_threshold():
    # 20 ID scores 0..19: 19 of them (95% exactly) are >= 1, so t = 1
    s_in = np.arange(20, dtype=float)
    s_out = np.array([0.5, 1.0, 1.5])
    # 1.0 ties with t and is accepted, 1.5 is accepted, 0.5 is not
    assert metrics.fpr_at_95_tpr(s_in, s_out) == pytest.approx(200 / 3)


def test_fpr95_ties_inside_id():
    s_in = np.array([1.0, 1.0, 1.0, 2.0])
    s_out = np.array([0.0, 1.0, 0.5, 3.0])
    # need all 4 ID accepted -> t = 1; OOD 1.0 and 3.0 accepted
    assert metrics.fpr_at_95_tpr(s_in, s_out) == 50.0
    # a lower target needs 2 of 4 (ceil(0.5 * 4)) -> the 2nd largest ID score is 1.0 again
    assert metrics.fpr_at_95_tpr(s_in, s_out, tpr=0.5) == 50.0
    assert metrics.fpr_at_95_tpr(s_in, s_out, tpr=0.25) == 25.0


def test_shift_and_scale_invariance():
    rng = np.random.default_rng(0)
    s_in, s_out = rng.normal(1, 1, 50), rng.normal(0, 1, 40)
    base = metrics.ood_metrics(s_in, s_out)
    moved = metrics.ood_metrics(3 * s_in + 7, 3 * s_out + 7)
    assert base == pytest.approx(moved)


# ---------------------------------------------------------------- brute force

@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("rounding", [None, 1])
def test_matches_brute_force(seed, rounding):
    rng = np.random.default_rng(seed)
    s_in = rng.normal(0.8, 1.0, rng.integers(5, 300))
    s_out = rng.normal(0.0, 1.2, rng.integers(5, 300))
    if rounding is not None:  # many ties between and within the groups
        s_in, s_out = s_in.round(rounding), s_out.round(rounding)
    assert metrics.auroc(s_in, s_out) == pytest.approx(brute_auroc(s_in, s_out))
    assert metrics.aupr_in(s_in, s_out) == pytest.approx(brute_average_precision(s_in, s_out))
    assert metrics.aupr_out(s_in, s_out) == pytest.approx(
        brute_average_precision(-s_out, -s_in))
    assert metrics.fpr_at_95_tpr(s_in, s_out) == pytest.approx(brute_fpr95(s_in, s_out))
    fpr_ref, tpr_ref = brute_roc(s_in, s_out)
    fpr, tpr = metrics.roc_curve(s_in, s_out)
    np.testing.assert_allclose(fpr, fpr_ref)
    np.testing.assert_allclose(tpr, tpr_ref)
    # the area under the returned curve is the AUROC (trapezoids: ties count one half)
    assert np.trapezoid(tpr, fpr) * 100 == pytest.approx(brute_auroc(s_in, s_out))
    assert metrics.ood_metrics(s_in, s_out) == pytest.approx({
        "auroc": brute_auroc(s_in, s_out), "fpr95": brute_fpr95(s_in, s_out),
        "aupr_in": brute_average_precision(s_in, s_out),
        "aupr_out": brute_average_precision(-s_out, -s_in)})


def test_ood_metrics_validates_each_vector_once():
    s_in, s_out = np.linspace(0, 1, 30), np.linspace(-0.5, 0.5, 20)
    with mock.patch.object(_arrays, "check_array", wraps=_arrays.check_array) as spy:
        metrics.ood_metrics(s_in, s_out)
    assert [c.args[1] for c in spy.call_args_list] == ["scores_in", "scores_out"]


def test_torch_and_numpy_agree():
    rng = np.random.default_rng(1)
    s_in, s_out = rng.normal(1, 1, 30).astype(np.float32), rng.normal(0, 1, 20).astype(np.float32)
    a = metrics.ood_metrics(s_in, s_out)
    b = metrics.ood_metrics(torch.from_numpy(s_in), torch.from_numpy(s_out))
    assert a == b
    assert all(isinstance(v, float) for v in b.values())
    fpr, tpr = metrics.roc_curve(torch.from_numpy(s_in), torch.from_numpy(s_out))
    assert isinstance(fpr, np.ndarray) and isinstance(tpr, np.ndarray)
    assert fpr[0] == tpr[0] == 0.0 and fpr[-1] == tpr[-1] == 1.0


def test_integer_scores_are_accepted():
    assert metrics.auroc(np.array([2, 3]), torch.tensor([0, 1])) == 100.0


# ---------------------------------------------------------------- validation

@pytest.mark.parametrize("fn", [metrics.auroc, metrics.fpr_at_95_tpr, metrics.aupr_in,
                                metrics.aupr_out, metrics.roc_curve, metrics.ood_metrics])
@pytest.mark.parametrize("bad, pattern", [
    (np.array([0.1, np.nan]), "NaN"),
    (np.array([0.1, np.inf]), "NaN or infinite"),
    (np.array([]), "empty"),
    (np.zeros((3, 2)), "shape"),
    (np.array(1.0), "shape"),
    (torch.tensor([0.0, float("nan")]), "NaN"),
    (np.array(["a", "b"]), "real numbers"),
])
def test_bad_input_raises(fn, bad, pattern):
    good = np.array([0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match=pattern):
        fn(bad, good)
    with pytest.raises(ValueError, match="scores_out"):
        fn(good, bad)


def test_wrong_container_is_a_type_error():
    with pytest.raises(TypeError, match="scores_in must be a numpy array or a torch tensor"):
        metrics.auroc([0.1, 0.2], np.array([0.3]))


def test_bad_tpr():
    with pytest.raises(ValueError, match="tpr"):
        metrics.fpr_at_95_tpr(np.ones(3), np.ones(3), tpr=1.5)


# ---------------------------------------------------------------- threshold at a TPR

@pytest.mark.parametrize("n", [1, 3, 19, 20, 21, 100, 3600, 6001])
def test_threshold_at_tpr_is_the_largest_threshold_accepting_the_share(n):
    s = np.random.default_rng(n).normal(size=n)
    t = metrics.threshold_at_tpr(s, tpr=0.95)
    # brute force over every candidate: the largest t with mean(s >= t) >= 0.95
    ok = [c for c in s if np.mean(s >= c) >= 0.95 - 1e-12]
    assert t == max(ok)
    assert metrics.fpr_at_95_tpr(s, s) == pytest.approx(np.mean(s >= t) * 100)


def test_threshold_at_tpr_by_hand_and_bad_input():
    scores = np.random.default_rng(5).permutation(np.arange(1, 101) / 100.0)
    assert metrics.threshold_at_tpr(scores, tpr=0.95) == pytest.approx(0.06)  # 0.06..1.00: 95
    assert metrics.threshold_at_tpr(scores, tpr=1.0) == pytest.approx(0.01)
    assert metrics.threshold_at_tpr(torch.from_numpy(scores), tpr=0.5) == pytest.approx(0.51)
    with pytest.raises(ValueError, match="tpr"):
        metrics.threshold_at_tpr(scores, tpr=0.0)
