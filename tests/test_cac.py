"""Tests of ood_utils.cac (Class Anchor Clustering) against hand-worked and independent results."""
from __future__ import annotations

import math
import socket

import numpy as np
import pytest
import torch
from scipy.special import softmax

from ood_utils import cac
from ood_utils.data import DataMissingError


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
    s, pred, unk = cac.cac_class_scores(x), cac.cac_predict(x), cac.cac_unknown_scores(x)
    expected_type = np.ndarray if kind == "numpy" else torch.Tensor
    for out in (s, pred, unk):
        assert isinstance(out, expected_type)
    np.testing.assert_allclose(np.asarray(s), s_ref, rtol=1e-12)
    np.testing.assert_array_equal(np.asarray(pred), pred_ref)
    np.testing.assert_allclose(np.asarray(unk), unk_ref, rtol=1e-12)


def test_score_prefers_the_near_anchor_and_flags_far_samples():
    d = np.array([[0.5, 9.0, 9.5], [9.0, 9.2, 9.1]])
    assert list(cac.cac_predict(d)) == [0, 0]
    unk = cac.cac_unknown_scores(d)
    assert unk[0] > unk[1]  # the sample near an anchor is "more known"


def test_seed_threshold_is_the_same_rule_on_the_course_scale():
    rng = np.random.default_rng(0)
    d = rng.uniform(0, 3, size=(200, 4))
    min_s = _numpy_scores(d)[0].min(axis=1)
    score = cac.cac_unknown_scores(d)
    unknown_by_seed_rule = min_s > 0.5
    unknown_by_course_rule = score < cac.seed_threshold(0.5)
    np.testing.assert_array_equal(unknown_by_seed_rule, unknown_by_course_rule)


def test_max_softmax_matches_scipy():
    logits = np.random.default_rng(1).normal(size=(7, 4)) * 3
    np.testing.assert_allclose(cac.max_softmax(logits), softmax(logits, axis=1).max(axis=1))
    t = cac.max_softmax(torch.from_numpy(logits).float())
    assert isinstance(t, torch.Tensor) and t.dtype == torch.float32


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


def test_threshold_at_tpr_accepts_the_asked_share():
    scores = np.random.default_rng(5).permutation(np.arange(1, 101) / 100.0)
    t = cac.threshold_at_tpr(scores, 0.95)
    assert t == pytest.approx(0.06)            # 0.06 ... 1.00 are 95 values
    assert (scores >= t).sum() == 95
    assert (scores >= np.nextafter(t, 2)).sum() < 95  # no larger threshold keeps 95 %
    assert cac.threshold_at_tpr(scores, 1.0) == pytest.approx(0.01)
    with pytest.raises(ValueError, match="tpr"):
        cac.threshold_at_tpr(scores, 0.0)


def test_closed_set_accuracy():
    assert cac.closed_set_accuracy(np.array([0, 1, 2, 2]), np.array([0, 1, 1, 2])) == 75.0
    with pytest.raises(ValueError, match="labels"):
        cac.closed_set_accuracy(np.array([0, 1]), np.array([0, 1, 2]))


# --------------------------------------------------------------------------- models

def test_small_cnn_shapes():
    net = cac.SmallCNN(6).eval()
    assert net(torch.zeros(2, 1, 28, 28)).shape == (2, 6)
    assert net.classifier[0].in_features == 3 * 3 * 64
    with pytest.raises(ValueError, match="28, 28"):
        net(torch.zeros(2, 1, 32, 32))


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


def _toy_images(n_per_class=8, seed=0):
    """Three trivially separable classes: a bright square in one of three places, plus noise."""
    g = torch.Generator().manual_seed(seed)
    xs, ys = [], []
    for c, (r, col) in enumerate([(2, 2), (2, 18), (18, 10)]):
        x = 0.1 * torch.randn(n_per_class, 1, 28, 28, generator=g)
        x[:, :, r:r + 8, col:col + 8] += 3.0
        xs.append(x)
        ys.append(torch.full((n_per_class,), c))
    return torch.cat(xs), torch.cat(ys)


def _train_toy(seed):
    """Cross-entropy pretraining then CAC training of a small MLP (fast; same code paths)."""
    x, y = _toy_images()
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(28 * 28, 32), torch.nn.ReLU(),
                              torch.nn.Dropout(0.2), torch.nn.Linear(32, 3))
    ce = cac.train_classifier(net, cac.TensorBatches(x, y, 8), epochs=2, lr=1e-3, seed=seed,
                              progress=False)
    model = cac.CACModel(net, 3)
    hist = cac.train_cac(model, cac.TensorBatches(x, y, 8), epochs=8, lr=1e-2, seed=seed,
                         progress=False)
    return ce, hist, model


def test_training_reduces_the_loss_and_is_reproducible():
    ce1, hist1, model1 = _train_toy(seed=7)
    assert hist1[-1] < hist1[0]
    assert not model1.training  # left in eval mode
    ce2, hist2, model2 = _train_toy(seed=7)
    assert ce1 == ce2 and hist1 == hist2
    for (k, a), b in zip(model1.state_dict().items(), model2.state_dict().values()):
        assert torch.equal(a, b), k
    x, y = _toy_images(seed=1)
    d = cac.batched_forward(model1, x)
    assert cac.closed_set_accuracy(cac.cac_predict(d), y) == 100.0


def test_training_rejects_zero_epochs():
    with pytest.raises(ValueError, match="epochs"):
        cac.train_classifier(cac.SmallCNN(3), [], epochs=0)


def test_tensor_batches_cover_every_sample_once():
    x, y = torch.arange(10.0), torch.arange(10)
    torch.manual_seed(0)
    batches = list(cac.TensorBatches(x, y, batch_size=4))
    assert [len(b[1]) for b in batches] == [4, 4, 2]
    assert sorted(torch.cat([b[1] for b in batches]).tolist()) == list(range(10))
    assert len(cac.TensorBatches(x, y, batch_size=4)) == 3


# --------------------------------------------------------------------------- data

def test_miniclip_datasets():
    data = cac.cac_datasets("miniclip")
    assert data.known_names == ("T-shirt/top", "Trouser", "Pullover", "Coat", "Sandal",
                                "Ankle boot")
    assert data.unknown_names == ("Dress", "Shirt", "Sneaker", "Bag")
    assert len(data.train_x) + len(data.val_x) == 36_000 and len(data.val_x) == 3_600
    assert data.test_x.shape == (6_000, 1, 28, 28) and data.unknown_x.shape == (4_000, 1, 28, 28)
    assert set(data.train_y.unique().tolist()) == set(range(6))
    assert set(data.unknown_y.unique().tolist()) == {3, 6, 7, 8}
    assert abs(float(data.train_x.mean())) < 1e-4 and float(data.train_x.std()) == pytest.approx(1, abs=1e-4)
    idx = cac.balanced_subset(data.train_y, 50, seed=0)
    assert torch.bincount(data.train_y[idx]).tolist() == [50] * 6


def test_clip_datasets_offline_raise_a_clear_error(tmp_path, monkeypatch):
    """Without the files and without network, the clip profile says what to do (quickly)."""
    def no_network(*args, **kwargs):
        raise OSError("network disabled in this test")

    monkeypatch.setenv("OOD_DATA_DIR", str(tmp_path))
    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    with pytest.raises(DataMissingError, match="MNIST.*download"):
        cac.cac_datasets("clip")


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
    assert out["unknown_rejected_seed"] == pytest.approx((min_s_unknown > 0.5).mean() * 100)
    assert out["matrix_seed"].sum() == 450


def test_check_cac_loss_accepts_the_reference_and_names_mistakes(capsys):
    from ood_utils import checks

    checks.check_cac_loss(cac.cac_loss)
    assert "public checks passed" in capsys.readouterr().out

    def no_anchor_term(distances, targets, lambda_=0.1):
        d_y = distances.gather(1, targets[:, None])
        return torch.logsumexp(d_y - distances, dim=1).mean()

    def overflowing(distances, targets, lambda_=0.1):
        d_y = distances.gather(1, targets[:, None])
        others = torch.exp(d_y - distances).sum(1) - 1
        return (torch.log(1 + others) + lambda_ * d_y[:, 0]).mean()

    with pytest.raises(AssertionError, match="anchor term"):
        checks.check_cac_loss(no_anchor_term)
    with pytest.raises(AssertionError, match="logsumexp"):
        checks.check_cac_loss(overflowing)
