"""Tests of ood_utils.metrics: hand-worked cases and scikit-learn as the independent reference."""
import numpy as np
import pytest
import torch
from sklearn import metrics as skm

from ood_utils import metrics


def sk_inputs(s_in, s_out):
    labels = np.r_[np.ones(len(s_in)), np.zeros(len(s_out))]
    return labels, np.r_[s_in, s_out].astype(np.float64)


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


# ---------------------------------------------------------------- scikit-learn

@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("rounding", [None, 1])
def test_matches_sklearn(seed, rounding):
    rng = np.random.default_rng(seed)
    s_in = rng.normal(0.8, 1.0, rng.integers(5, 300))
    s_out = rng.normal(0.0, 1.2, rng.integers(5, 300))
    if rounding is not None:  # many ties between and within the groups
        s_in, s_out = s_in.round(rounding), s_out.round(rounding)
    labels, scores = sk_inputs(s_in, s_out)
    assert metrics.auroc(s_in, s_out) == pytest.approx(100 * skm.roc_auc_score(labels, scores))
    assert metrics.aupr_in(s_in, s_out) == pytest.approx(
        100 * skm.average_precision_score(labels, scores))
    assert metrics.aupr_out(s_in, s_out) == pytest.approx(
        100 * skm.average_precision_score(1 - labels, -scores))
    fpr_ref, tpr_ref, _ = skm.roc_curve(labels, scores, drop_intermediate=False)
    fpr, tpr = metrics.roc_curve(s_in, s_out)
    np.testing.assert_allclose(fpr, fpr_ref)
    np.testing.assert_allclose(tpr, tpr_ref)


@pytest.mark.parametrize("seed", range(5))
def test_fpr95_against_sklearn_roc(seed):
    # independent route: first ROC point whose TPR reaches 95%, read from scikit-learn
    rng = np.random.default_rng(seed)
    s_in = rng.normal(1.0, 1.0, rng.integers(20, 400)).round(2)
    s_out = rng.normal(0.0, 1.0, rng.integers(20, 400)).round(2)
    labels, scores = sk_inputs(s_in, s_out)
    fpr_ref, tpr_ref, _ = skm.roc_curve(labels, scores, drop_intermediate=False)
    first = np.flatnonzero(tpr_ref >= 0.95 - 1e-12)[0]
    assert metrics.fpr_at_95_tpr(s_in, s_out) == pytest.approx(100 * fpr_ref[first])


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
