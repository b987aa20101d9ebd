"""Tests of ood_utils.course.cac_experiment: notebook 07's data, baseline CNN and training loops."""
from __future__ import annotations

import copy
import socket

import numpy as np
import pytest
import torch

from ood_utils.methods import cac
from ood_utils.course import cac_experiment as ce
from ood_utils.course.data import DataMissingError


# --------------------------------------------------------------------------- models

def test_small_cnn_shapes():
    net = ce.SmallCNN(6).eval()
    assert net(torch.zeros(2, 1, 28, 28)).shape == (2, 6)
    assert net.classifier[0].in_features == 3 * 3 * 64
    with pytest.raises(ValueError, match="28, 28"):
        net(torch.zeros(2, 1, 32, 32))
    narrow = ce.SmallCNN(4, channels=(8, 8, 16)).eval()
    assert narrow(torch.zeros(3, 1, 28, 28)).shape == (3, 4)
    assert narrow.classifier[0].in_features == 3 * 3 * 16
    with pytest.raises(ValueError, match="channels"):
        ce.SmallCNN(4, channels=(8, 8))


def test_profiles_train_both_networks_alike():
    mini, clip = ce.training_settings("miniclip"), ce.training_settings("clip")
    assert mini["channels"] == (16, 16, 32) and not mini["init_from_baseline"]
    # the clip profile keeps the student project's network and its start from the baseline
    assert clip["channels"] == (32, 32, 64) and clip["init_from_baseline"]
    assert mini["lambda_"] == clip["lambda_"] == 0.1 and mini["alpha"] == 10.0
    assert mini["lr_decay"] and clip["lr_decay"] and mini["epochs"] == 3
    net = ce.new_cnn(6, "miniclip")
    assert net.features[0].out_channels == 16 and net.features[2].p == mini["dropout"]


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
    ce_hist = ce.train_classifier(net, ce.TensorBatches(x, y, batch_size=8), epochs=2, lr=1e-3,
                                  seed=seed, progress=False)
    model = cac.CACModel(net, 3)
    hist = ce.train_cac(model, ce.TensorBatches(x, y, batch_size=8), epochs=8, lr=1e-2,
                        seed=seed, progress=False)
    return ce_hist, hist, model


def test_training_reduces_the_loss_and_is_reproducible():
    ce1, hist1, model1 = _train_toy(seed=7)
    assert hist1[-1] < hist1[0]
    assert not model1.training  # left in eval mode
    ce2, hist2, model2 = _train_toy(seed=7)
    assert ce1 == ce2 and hist1 == hist2
    for (k, a), b in zip(model1.state_dict().items(), model2.state_dict().values()):
        assert torch.equal(a, b), k
    x, y = _toy_images(seed=1)
    d = ce.batched_forward(model1, x)
    assert cac.closed_set_accuracy(cac.cac_predict(d), y) == 100.0


def test_training_rejects_zero_epochs():
    with pytest.raises(ValueError, match="epochs"):
        ce.train_classifier(ce.SmallCNN(3), [], epochs=0)


def test_tensor_batches_cover_every_sample_once():
    x, y = torch.arange(10.0), torch.arange(10)
    torch.manual_seed(0)
    batches = list(ce.TensorBatches(x, y, batch_size=4))
    assert [len(b[1]) for b in batches] == [4, 4, 2]
    assert sorted(torch.cat([b[1] for b in batches]).tolist()) == list(range(10))
    assert len(ce.TensorBatches(x, y, batch_size=4)) == 3


# --------------------------------------------------------------------------- data

def test_miniclip_datasets():
    data = ce.cac_datasets("miniclip")
    assert data.source == "Fashion-MNIST, known vs unknown classes"
    assert data.unknown_classes == {3: "Dress", 6: "Shirt", 7: "Sneaker", 8: "Bag"}
    assert data.known_names == ("T-shirt/top", "Trouser", "Pullover", "Coat", "Sandal",
                                "Ankle boot")
    assert data.unknown_names == ("Dress", "Shirt", "Sneaker", "Bag")
    assert len(data.train_x) + len(data.val_x) == 36_000 and len(data.val_x) == 3_600
    assert data.test_x.shape == (6_000, 1, 28, 28) and data.unknown_x.shape == (4_000, 1, 28, 28)
    assert set(data.train_y.unique().tolist()) == set(range(6))
    assert set(data.unknown_y.unique().tolist()) == {3, 6, 7, 8}
    assert abs(float(data.train_x.mean())) < 1e-4 and float(data.train_x.std()) == pytest.approx(1, abs=1e-4)
    idx = ce.balanced_subset(data.train_y, 50, seed=0)
    assert torch.bincount(data.train_y[idx]).tolist() == [50] * 6


def test_clip_datasets_offline_raise_a_clear_error(tmp_path, monkeypatch):
    """Without the files and without network, the clip profile says what to do (quickly)."""
    def no_network(*args, **kwargs):
        raise OSError("network disabled in this test")

    monkeypatch.setenv("OOD_DATA_DIR", str(tmp_path))
    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    with pytest.raises(DataMissingError, match="MNIST.*download"):
        ce.cac_datasets("clip")


def test_training_runs_in_the_model_dtype_and_takes_a_custom_loss():
    x, y = _toy_images()
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(28 * 28, 3)).double()
    calls = []

    def my_loss(distances, targets, lambda_=0.1):
        calls.append((distances.dtype, lambda_))
        return cac.cac_loss(distances, targets, lambda_=lambda_)

    model = cac.CACModel(net, 3).double()
    ce.train_cac(model, ce.TensorBatches(x, y, batch_size=8), epochs=1, lambda_=0.2,
                 loss_fn=my_loss, progress=False)
    assert calls and all(c == (torch.float64, 0.2) for c in calls)
    with pytest.raises(TypeError, match="single-number tensor"):
        ce.train_cac(model, ce.TensorBatches(x, y, batch_size=8), epochs=1, progress=False,
                     loss_fn=lambda d, t, lambda_: d.sum(1))


def test_train_cac_whole_is_the_loop_the_notebook_describes():
    """The reference loop equals a hand-written Adam loop (learning rate set by hand to
    lr * (1 - k / K) before update k of K) from the same random state."""
    x, y = _toy_images()
    torch.manual_seed(3)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(28 * 28, 16), torch.nn.ReLU(),
                              torch.nn.Dropout(0.3), torch.nn.Linear(16, 3))
    a = cac.CACModel(net, 3).eval()
    b = copy.deepcopy(a)
    torch.manual_seed(5)
    hist = ce.train_cac_whole(a, ce.TensorBatches(x, y, batch_size=8), 2, 0.01, 0.3)
    assert not a.training and len(hist) == 2
    torch.manual_seed(5)
    opt = torch.optim.Adam(b.parameters(), lr=0.01)
    b.train()
    by_hand = []
    batches = ce.TensorBatches(x, y, batch_size=8)
    k, total_steps = 0, 2 * len(batches)
    for _ in range(2):
        losses = []
        for xb, yb in batches:
            opt.zero_grad()
            loss = cac.cac_loss(b(xb), yb, lambda_=0.3)
            loss.backward()
            opt.param_groups[0]["lr"] = 0.01 * (1 - k / total_steps)
            k += 1
            opt.step()
            losses.append(loss.item())
        by_hand.append(float(np.mean(losses)))  # equal batches of 8: same as the weighted mean
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)
    assert hist == pytest.approx(by_hand, rel=1e-6)


def test_threshold_sweep_matches_a_brute_force_count():
    g = np.random.default_rng(0)
    d_val, d_test, d_unk = (torch.from_numpy(g.random((n, 4)) * 10) for n in (50, 40, 30))
    tprs = [0.5, 0.9, 0.95]
    got = ce.threshold_sweep(d_val, d_test, d_unk, tprs)
    s_val, s_test, s_unk = (-cac.cac_class_scores(d.numpy()).min(1) for d in (d_val, d_test, d_unk))
    for i, tpr in enumerate(tprs):
        # the largest threshold that keeps at least ceil(tpr * 50) validation scores
        cands = [t for t in np.sort(s_val) if (s_val >= t).sum() >= np.ceil(tpr * 50)]
        thr = max(cands)
        assert got["known_accepted"][i] == pytest.approx((s_test >= thr).mean() * 100)
        assert got["unknown_rejected"][i] == pytest.approx((s_unk < thr).mean() * 100)


def test_sklearn_digits_look_like_mnist_digits():
    x = ce.sklearn_digits_images()
    assert x.shape == (1797, 1, 28, 28) and float(x.min()) >= 0 and float(x.max()) <= 1
    # a 4-pixel black frame, ink in the 20 x 20 centre
    assert float(x[:, :, :4].abs().max()) == 0 and float(x[:, :, :, -4:].abs().max()) == 0
    assert float(x[:, :, 4:24, 4:24].mean()) > 0.1


def test_train_open_set_on_a_tiny_profile_is_reproducible():
    """The notebook's pipeline end to end on a few images per class, with a custom loop."""
    import dataclasses

    from ood_utils.course.profiles import PROFILES

    tiny = dataclasses.replace(PROFILES["miniclip"], cac_baseline_per_class=6,
                               cac_baseline_epochs=1)
    x, y = _toy_images(n_per_class=10)
    data = ce.CACData(train_x=x, train_y=y, val_x=x[:6], val_y=y[:6], test_x=x, test_y=y,
                      unknown_x=-x[:5], unknown_y=torch.zeros(5, dtype=torch.long),
                      known_names=("a", "b", "c"), unknown_names=("u",), mean=0.0, std=1.0)
    calls = []

    def my_loop(model, loader, epochs, lr, lambda_):
        calls.append((epochs, lr, lambda_, len(loader.images)))  # no extra pass: RNG
        return ce.train_cac_whole(model, loader, epochs, lr, lambda_)

    m1, h1 = ce.train_open_set(data, seed=1, profile=tiny, train_fn=my_loop)
    m2, h2 = ce.train_open_set(data, seed=1, profile=tiny)
    assert calls == [(1, 1e-3, 0.1, 18)] and h1 == h2
    for p, q in zip(m1.parameters(), m2.parameters()):
        assert torch.equal(p, q)
    d = ce.open_set_distances(m1, data)
    assert set(d) == {"val", "test", "unknown"} and d["test"].shape == (30, 3)
    with pytest.raises(ValueError, match="returned None"):
        ce.train_open_set(data, seed=1, profile=tiny, train_fn=lambda *a: None)


def test_the_reference_network_starts_where_the_baseline_starts():
    """CACNetwork creates SmallCNN's parameters in the same order: same seed, same start."""
    torch.manual_seed(3)
    cnn = ce.SmallCNN(4, channels=(4, 4, 8), dropout=0.5).eval()
    torch.manual_seed(3)
    net = ce.CACNetwork(4, channels=(4, 4, 8), dropout=0.5, alpha=2.0).eval()
    assert [p.shape for p in net.parameters()] == [p.shape for p in cnn.parameters()]
    for p, q in zip(net.parameters(), cnn.parameters()):
        assert torch.equal(p, q)
    assert not any(b is p for b in net.buffers() for p in net.parameters())
    x = torch.randn(3, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(net.embed(x), cnn(x), rtol=1e-5, atol=1e-5)
        # forward: Euclidean distances to the anchors 2 * e_j, written out independently
        d = torch.sqrt(((cnn(x)[:, None, :] - 2.0 * torch.eye(4)[None]) ** 2).sum(-1))
        torch.testing.assert_close(net(x), d, rtol=1e-5, atol=1e-5)


def test_load_cnn_weights_copies_in_order_and_refuses_another_shape():
    cnn = ce.SmallCNN(3, channels=(4, 4, 8))
    net = ce.CACNetwork(3, channels=(4, 4, 8))
    ce.load_cnn_weights(net, cnn.state_dict())
    for p, q in zip(net.parameters(), cnn.parameters()):
        assert torch.equal(p, q)
    with pytest.raises(ValueError, match="do not match"):
        ce.load_cnn_weights(ce.CACNetwork(3, channels=(4, 4, 6)), cnn.state_dict())


def test_train_open_set_builds_a_notebook_network_from_the_baseline_start():
    import dataclasses

    from ood_utils.course.profiles import PROFILES

    tiny = dataclasses.replace(PROFILES["miniclip"], cac_baseline_per_class=6,
                               cac_baseline_epochs=1, cac_cnn_channels=(4, 4, 8))
    x, y = _toy_images(n_per_class=10)
    data = ce.CACData(train_x=x, train_y=y, val_x=x[:6], val_y=y[:6], test_x=x, test_y=y,
                      unknown_x=-x[:5], unknown_y=torch.zeros(5, dtype=torch.long),
                      known_names=("a", "b", "c"), unknown_names=("u",), mean=0.0, std=1.0)
    seen = {}

    def build(n, **kw):
        seen.update(kw, n=n)
        return ce.CACNetwork(n, **kw)

    m1, h1 = ce.train_open_set(data, seed=2, profile=tiny, build_fn=build)
    m2, h2 = ce.train_open_set(data, seed=2, profile=tiny)  # CACModel(SmallCNN), no N x N layer
    assert seen == {"n": 3, "channels": (4, 4, 8), "dropout": 0.5, "alpha": 10.0}
    assert isinstance(m2.to_anchor_space, torch.nn.Identity)
    assert len(h1) == len(h2) == 1 and all(np.isfinite(h1))
    # same start: the untrained networks are equal (checked through the first layer's shape)
    assert [p.shape for p in m1.parameters()] == [p.shape for p in m2.parameters()]
    with pytest.raises(TypeError, match="not a torch module"):
        ce.train_open_set(data, seed=2, profile=tiny, build_fn=lambda n, **kw: None)
