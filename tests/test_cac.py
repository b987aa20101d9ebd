"""Tests of ood_utils.methods.cac (Class Anchor Clustering) against hand-worked and independent results."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.special import softmax

from ood_utils.methods import cac


# --------------------------------------------------------------------------- loss

def test_cac_loss_matches_hand_worked_example():
    # Two samples, three classes, lambda = 0.1.
    # Sample 1: d = (1, 2, 3), true class 0:
    #   tuplet = log(1 + e^(1-2) + e^(1-3)) = log(1 + 0.367879 + 0.135335) = log(1.503215)
    #          = 0.407606;  anchor term = 0.1 * 1 = 0.1;  total 0.507606
    # Sample 2: d = (2, 0.5, 1.5), true class 2:
    #   tuplet = log(1 + e^(1.5-2) + e^(1.5-0.5)) = log(1 + 0.606531 + 2.718282) = log(4.324812)
    #          = 1.464369;  anchor term = 0.1 * 1.5 = 0.15;  total 1.614369
    # Batch mean: (0.507606 + 1.614369) / 2 = 1.060987
    first = math.log(1 + math.exp(1 - 2) + math.exp(1 - 3)) + 0.1 * 1.0
    second = math.log(1 + math.exp(1.5 - 2) + math.exp(1.5 - 0.5)) + 0.1 * 1.5
    by_hand = (first + second) / 2
    assert by_hand == pytest.approx(1.060987, abs=1e-6)

    d = torch.tensor([[1.0, 2.0, 3.0], [2.0, 0.5, 1.5]], dtype=torch.float64)
    y = torch.tensor([0, 2])
    got = cac.cac_loss(d, y, lambda_=0.1)
    assert isinstance(got, torch.Tensor) and got.ndim == 0
    assert got.item() == pytest.approx(by_hand, rel=1e-12)
    # numpy in, python float out; lambda_ = 0 leaves the tuplet term only
    assert cac.cac_loss(d.numpy(), y.numpy(), lambda_=0.1) == pytest.approx(by_hand, rel=1e-12)
    tuplet_only = (first - 0.1 + second - 0.15) / 2
    assert cac.cac_loss(d, y, lambda_=0.0).item() == pytest.approx(tuplet_only, rel=1e-12)


def test_cac_loss_is_stable_and_differentiable_for_large_distances():
    d = torch.tensor([[1000.0, 0.0, 2000.0]], requires_grad=True)
    loss = cac.cac_loss(d, torch.tensor([0]), lambda_=0.1)
    # log(1 + e^1000 + e^-1000) is 1000 up to float precision, plus 0.1 * 1000
    assert loss.item() == pytest.approx(1100.0, rel=1e-6)
    loss.backward()
    assert torch.isfinite(d.grad).all()


def test_cac_loss_rejects_bad_targets():
    d = torch.rand(4, 3)
    with pytest.raises(ValueError, match="targets"):
        cac.cac_loss(d, torch.tensor([0, 1, 2, 3]))
    with pytest.raises(ValueError, match="targets"):
        cac.cac_loss(d, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="distances"):
        cac.cac_loss(torch.rand(4), torch.tensor([0, 1, 2, 0]))


# --------------------------------------------------------------------------- scores

def _numpy_scores(d):
    s = d * (1 - softmax(-d, axis=1))
    return s, s.argmin(axis=1), -s.min(axis=1)


@pytest.mark.parametrize("kind", ["numpy", "torch"])
def test_scores_match_an_independent_numpy_version(kind):
    rng = np.random.default_rng(3)
    d = rng.uniform(0, 15, size=(50, 6))
    s_ref, pred_ref, unk_ref = _numpy_scores(d)
    x = d if kind == "numpy" else torch.from_numpy(d)
    s, pred, unk = cac.cac_class_scores(x), cac.cac_predict(x), cac.cac_known_scores(x)
    expected_type = np.ndarray if kind == "numpy" else torch.Tensor
    for out in (s, pred, unk):
        assert isinstance(out, expected_type)
    np.testing.assert_allclose(np.asarray(s), s_ref, rtol=1e-12)
    np.testing.assert_array_equal(np.asarray(pred), pred_ref)
    np.testing.assert_allclose(np.asarray(unk), unk_ref, rtol=1e-12)


def test_score_prefers_the_near_anchor_and_flags_far_samples():
    d = np.array([[0.5, 9.0, 9.5], [9.0, 9.2, 9.1]])
    assert list(cac.cac_predict(d)) == [0, 0]
    unk = cac.cac_known_scores(d)
    assert unk[0] > unk[1]  # the sample near an anchor is "more known"


def test_original_threshold_is_the_same_rule_on_the_course_scale():
    rng = np.random.default_rng(0)
    d = rng.uniform(0, 3, size=(200, 4))
    min_s = _numpy_scores(d)[0].min(axis=1)
    score = cac.cac_known_scores(d)
    unknown_by_original_rule = min_s > 0.5
    unknown_by_course_rule = score < cac.original_threshold(0.5)
    np.testing.assert_array_equal(unknown_by_original_rule, unknown_by_course_rule)


# --------------------------------------------------------------------------- decisions

def test_known_unknown_confusion_on_a_hand_made_case():
    known = np.array([0.9, 0.5, 0.1, 0.7])   # accepted (>= 0.5): 0.9, 0.5, 0.7 -> 3 of 4
    unknown = np.array([0.2, 0.6, 0.05])      # accepted: 0.6 -> 1 of 3; rejected 2 of 3
    matrix, known_ok, unknown_ok = cac.known_unknown_confusion(known, unknown, 0.5)
    np.testing.assert_array_equal(matrix, [[3, 1], [1, 2]])
    assert known_ok == pytest.approx(75.0)
    assert unknown_ok == pytest.approx(200 / 3)
    matrix_t, *_ = cac.known_unknown_confusion(torch.tensor(known), torch.tensor(unknown), 0.5)
    np.testing.assert_array_equal(matrix_t, matrix)


def test_closed_set_accuracy():
    assert cac.closed_set_accuracy(np.array([0, 1, 2, 2]), np.array([0, 1, 1, 2])) == 75.0
    with pytest.raises(ValueError, match="labels"):
        cac.closed_set_accuracy(np.array([0, 1]), np.array([0, 1, 2]))


def test_open_set_predict_by_hand_and_on_both_sides_of_the_threshold():
    # row 0 near anchor 0 (min s small), row 1 far from everything (min s large)
    d = np.array([[0.5, 9.0, 9.5], [9.0, 9.2, 9.1]])
    s = _numpy_scores(d)[0]
    assert s[0].min() < 0.5 < s[1].min()
    np.testing.assert_array_equal(cac.open_set_predict(d, threshold=0.5), [0, 3])
    # a threshold above both minima accepts both (closed-set prediction)
    np.testing.assert_array_equal(cac.open_set_predict(d, threshold=100.0), cac.cac_predict(d))
    # ties: min s == threshold is still known ("unknown when min s > threshold")
    np.testing.assert_array_equal(cac.open_set_predict(d, threshold=float(s[1].min())), [0, 0])
    t = cac.open_set_predict(torch.from_numpy(d), threshold=0.5)
    assert isinstance(t, torch.Tensor) and t.tolist() == [0, 3]


def test_open_set_predict_agrees_with_the_course_threshold():
    d = np.random.default_rng(2).uniform(0, 6, size=(300, 5))
    t_course = -1.3  # a threshold on cac_known_scores
    rejected = cac.cac_known_scores(d) < t_course
    pred = cac.open_set_predict(d, threshold=-t_course)
    np.testing.assert_array_equal(pred == 5, rejected)


def test_open_set_confusion_matches_sklearn():
    from sklearn.metrics import confusion_matrix

    rng = np.random.default_rng(4)
    labels, pred = rng.integers(0, 5, 200), rng.integers(0, 5, 200)
    want = confusion_matrix(labels, pred, labels=range(5))
    got = cac.open_set_confusion(labels, pred, num_classes=4)
    np.testing.assert_array_equal(got, want)
    assert got.dtype == np.int64 and got.shape == (5, 5)
    # the unknown class is the last row (truth) and column (prediction)
    one = cac.open_set_confusion(np.array([4]), np.array([0]), num_classes=4)
    assert one[4, 0] == 1 and one.sum() == 1
    with pytest.raises(ValueError, match="0..4"):
        cac.open_set_confusion(np.array([5]), np.array([0]), num_classes=4)


def test_class_anchors():
    a = cac.class_anchors(3, alpha=10.0)
    np.testing.assert_array_equal(a.numpy(), np.diag([10.0, 10.0, 10.0]))
    assert a.dtype == torch.float64
    with pytest.raises(ValueError, match="alpha"):
        cac.class_anchors(3, alpha=0.0)


def test_anchors_are_fixed_and_distances_are_euclidean():
    torch.manual_seed(0)
    trunk = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(8, 4))
    model = cac.CACModel(trunk, num_classes=4, alpha=10.0)
    anchors = 10.0 * torch.eye(4)
    assert torch.equal(model.anchors, anchors)
    assert "anchors" in dict(model.named_buffers())
    assert all(p is not model.anchors for p in model.parameters())

    x, y = torch.randn(16, 2, 4), torch.randint(0, 4, (16,))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(3):
        opt.zero_grad()
        cac.cac_loss(model(x), y).backward()
        opt.step()
    assert torch.equal(model.anchors, anchors)
    with torch.no_grad():
        d = model(x)
        ref = torch.cdist(model.embed(x), anchors)
    torch.testing.assert_close(d, ref, rtol=1e-5, atol=1e-5)
    assert "anchors" in model.state_dict()


def test_cac_model_takes_its_own_anchors_and_distance_function():
    trunk = torch.nn.Linear(3, 3)
    seen = []

    def squared(points, anchors):
        seen.append(anchors.clone())
        return ((points[:, None, :] - anchors[None]) ** 2).sum(-1)

    model = cac.CACModel(trunk, 3, anchors=2 * torch.eye(3), distance_fn=squared)
    x = torch.randn(5, 3)
    with torch.no_grad():
        want = ((model.embed(x)[:, None, :] - 2 * torch.eye(3)[None]) ** 2).sum(-1)
        torch.testing.assert_close(model(x), want)
    assert torch.equal(seen[0], 2 * torch.eye(3))
    with pytest.raises(ValueError, match="anchors must have shape"):
        cac.CACModel(trunk, 3, anchors=torch.eye(4))


def test_without_the_extra_layer_the_logits_are_the_anchor_space():
    torch.manual_seed(1)
    trunk = torch.nn.Linear(3, 4)
    plain = cac.CACModel(trunk, 4, extra_layer=False)
    with_layer = cac.CACModel(trunk, 4)
    assert sum(p.numel() for p in plain.parameters()) == 3 * 4 + 4
    assert sum(p.numel() for p in with_layer.parameters()) == 3 * 4 + 4 + 4 * 4 + 4
    x = torch.randn(6, 3)
    with torch.no_grad():
        torch.testing.assert_close(plain.embed(x), trunk(x))
        want = torch.sqrt(((trunk(x)[:, None, :] - 10 * torch.eye(4)[None]) ** 2).sum(-1))
        torch.testing.assert_close(plain(x), want)


# --------------------------------------------------------------------------- summary and checks

def test_open_set_summary_matches_independent_computations():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(11)
    n = 4
    near = lambda m: np.abs(rng.normal(0, 1.5, size=(m, n))) + 10 * (1 - np.eye(n)[rng.integers(0, n, m)])  # noqa: E731
    d_val, d_test, d_unknown = near(200), near(300), rng.uniform(4, 12, size=(150, n))
    labels = _numpy_scores(d_test)[1].copy()
    labels[:30] = (labels[:30] + 1) % n  # 30 of 300 wrong -> 90 % accuracy
    out = cac.open_set_summary(d_val, d_test, labels, d_unknown)
    s_test, s_unk, s_val = (_numpy_scores(d)[2] for d in (d_test, d_unknown, d_val))
    assert out["accuracy"] == pytest.approx(90.0)
    auc = roc_auc_score(np.r_[np.ones(300), np.zeros(150)], np.r_[s_test, s_unk]) * 100
    assert out["auroc"] == pytest.approx(auc, abs=1e-9)
    t = out["threshold_tpr"]
    assert (s_val >= t).mean() >= 0.95 and (s_val > t).mean() < 0.95
    assert out["known_accepted_tpr"] == pytest.approx((s_test >= t).mean() * 100)
    assert out["unknown_rejected_tpr"] == pytest.approx((s_unk < t).mean() * 100)
    min_s_unknown = -s_unk
    assert out["unknown_rejected_original"] == pytest.approx((min_s_unknown > 0.5).mean() * 100)
    assert out["matrix_original"].sum() == 450


def test_check_cac_loss_accepts_the_reference_and_names_mistakes(capsys):
    from ood_utils.answer_key import checks

    checks.check_cac_loss(cac.cac_loss)
    assert "public checks passed" in capsys.readouterr().out

    def no_anchor_term(distances, targets, lambda_=0.1):
        d_y = distances.gather(1, targets[:, None])
        return torch.logsumexp(d_y - distances, dim=1).mean()

    def no_tuplet_term(distances, targets, lambda_=0.1):
        return lambda_ * distances.gather(1, targets[:, None]).mean()

    with pytest.raises(AssertionError, match="anchor term"):
        checks.check_cac_loss(no_anchor_term)
    with pytest.raises(AssertionError, match="tuplet term"):
        checks.check_cac_loss(no_tuplet_term)


def test_the_method_module_knows_no_profile_file_or_cache():
    import subprocess
    import sys

    code = ("import sys, ood_utils.methods.cac; "
            "print(sorted(m for m in sys.modules if m.startswith('ood_utils')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    loaded = eval(out)  # a printed list of module names
    assert "ood_utils.methods.cac" in loaded
    assert [m for m in loaded if m != "ood_utils" and not m.startswith("ood_utils.methods")] == []


# --------------------------------------------------------------------------- pictures (07, 08)

def test_anchor_space_plot_puts_the_anchors_on_a_circle():
    import matplotlib.pyplot as plt

    from ood_utils.course import plots

    n = 6
    anchors = cac.class_anchors(n, alpha=10.0)
    rng = np.random.default_rng(0)
    ax = plots.anchor_space_plot(rng.normal(size=(30, n)), rng.integers(0, n, 30),
                                 rng.normal(size=(20, n)), anchors, [str(i) for i in range(n)])
    stars = ax.collections[-n:]
    got = np.array([s.get_offsets()[0] for s in stars])
    angles = 2 * np.pi * np.arange(n) / n
    np.testing.assert_allclose(got, 10 * np.c_[np.cos(angles), np.sin(angles)], atol=1e-12)
    with pytest.raises(ValueError, match="shape"):
        plots.anchor_space_plot(np.zeros((3, 4)), np.zeros(3), np.zeros((2, 6)), anchors,
                                [str(i) for i in range(n)])
    plt.close("all")


def test_ranking_slopes_draws_ranks():
    import matplotlib.pyplot as plt

    from ood_utils.course import plots

    ax = plots.ranking_slopes({"a": 90.0, "b": 80.0, "c": 70.0}, {"a": 60.0, "b": 85.0, "c": 75.0})
    ends = {tuple(line.get_ydata()) for line in ax.lines}
    assert ends == {(1, 3), (2, 1), (3, 2)}
    with pytest.raises(ValueError, match="share no method"):
        plots.ranking_slopes({"a": 1.0}, {"b": 2.0})
    plt.close("all")
