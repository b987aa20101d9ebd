"""Tests of ood_utils.cac_experiment: notebook 07's data, baseline CNN and training loops."""
from __future__ import annotations

import socket

import pytest
import torch

from ood_utils import cac
from ood_utils import cac_experiment as ce
from ood_utils.data import DataMissingError


# --------------------------------------------------------------------------- models

def test_small_cnn_shapes():
    net = ce.SmallCNN(6).eval()
    assert net(torch.zeros(2, 1, 28, 28)).shape == (2, 6)
    assert net.classifier[0].in_features == 3 * 3 * 64
    with pytest.raises(ValueError, match="28, 28"):
        net(torch.zeros(2, 1, 32, 32))


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
