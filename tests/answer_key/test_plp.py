"""Answer key of notebook 04 (PLP): pseudo-labels, the probe's training and its MSP.

Every correct variant passes its self-check (:func:`ood_utils.answer_key.checks.check_pseudo_labels`,
:func:`~ood_utils.answer_key.checks.check_train_probe`, :func:`~ood_utils.answer_key.checks.check_probe_msp`) and,
put together as the notebook does (pseudo-labels -> training -> MSP on the real ``miniclip``
features), reaches the expected ``plp`` AUROC. Every planted mistake fails a self-check with a
message that names it, or the AUROC check.
"""
from __future__ import annotations

import copy

import numpy as np
import pytest
import scipy.special
import torch
import torch.nn.functional as F
from torch import nn

from ood_utils.answer_key import checks
from ood_utils.methods import metrics
from ood_utils.course import pipeline
from ood_utils import methods
from ood_utils.course.features import load_features

from ._grader import assert_plp_accepted

EPOCHS, LR, SEED = methods.PROBE_EPOCHS, methods.PROBE_LR, 0


# --------------------------------------------------------------------------- pseudo-labels

def labels_argmax(logits):
    return logits.argmax(dim=1)


def labels_torch_max_indices(logits):
    return torch.max(logits, dim=1).indices


def labels_numpy(logits):
    return np.argmax(np.asarray(logits), axis=1)


def labels_of_softmax(logits):
    return F.softmax(logits, dim=-1).argmax(dim=-1)


def labels_wrong_axis(logits):
    return logits.argmax(dim=0)


def labels_argmin(logits):
    return logits.argmin(dim=1)


def labels_max_value(logits):
    return logits.max(dim=1).values


def labels_int32(logits):
    return logits.argmax(dim=1).to(torch.int32)


def labels_numpy_int32(logits):
    return np.argmax(np.asarray(logits), axis=1).astype(np.int32)


# --------------------------------------------------------------------------- training

def train_reference_shape(train_feats, targets, num_classes, *, epochs, lr, seed):
    torch.manual_seed(seed)
    layer = nn.Linear(train_feats.shape[1], num_classes)
    optimizer = torch.optim.Adam(layer.parameters(), lr=lr)
    best, state = -1.0, None
    for _ in range(epochs):
        loss = F.cross_entropy(layer(train_feats), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            acc = (layer(train_feats).argmax(dim=1) == targets).float().mean().item()
        if acc > best:
            best, state = acc, copy.deepcopy(layer.state_dict())
    layer.load_state_dict(state)
    return layer


def train_float64_module_loss(train_feats, targets, num_classes, *, epochs, lr, seed):
    torch.manual_seed(seed)
    layer = nn.Linear(train_feats.shape[1], num_classes).double()
    x = train_feats.double()
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.Adam(layer.parameters(), lr=lr)
    best_correct, best_state = -1, None
    for _ in range(epochs):
        layer.train()
        optimizer.zero_grad()
        criterion(layer(x), targets).backward()
        optimizer.step()
        layer.eval()
        with torch.no_grad():
            correct = int((layer(x).argmax(1) == targets).sum())
        if correct > best_correct:
            best_correct = correct
            best_state = {name: t.clone() for name, t in layer.state_dict().items()}
    layer.load_state_dict(best_state)
    return layer.float()


def train_seed_loop_shape(train_feats, targets, num_classes, *, epochs, lr, seed):
    # the original assignment's loop: the training accuracy is counted on the epoch's own
    # forward pass; the weights saved at the end of that epoch
    torch.manual_seed(seed)
    layer = nn.Linear(train_feats.shape[1], num_classes)
    optimizer = torch.optim.Adam(layer.parameters(), lr=lr)
    best_acc = 0.0
    best = None
    for epoch in range(1, epochs + 1):
        out = layer(train_feats)
        loss = F.cross_entropy(out, targets)
        train_acc = 100.0 * (out.argmax(1) == targets).sum().item() / len(targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if train_acc > best_acc:
            best_acc, best = train_acc, copy.deepcopy(layer.state_dict())
    layer.load_state_dict(best)
    return layer


def train_latest_tie_manual_copy(train_feats, targets, num_classes, *, epochs, lr, seed):
    torch.manual_seed(seed)
    probe = nn.Sequential(nn.Linear(train_feats.shape[1], num_classes))
    optimizer = torch.optim.Adam(probe.parameters(), lr=lr)
    best_acc, best_w, best_b = -1.0, None, None
    for _ in range(epochs):
        optimizer.zero_grad()
        F.cross_entropy(probe(train_feats), targets).backward()
        optimizer.step()
        with torch.no_grad():
            acc = (probe(train_feats).argmax(-1) == targets).double().mean().item()
        if acc >= best_acc:  # the latest of equally good epochs
            best_acc = acc
            best_w, best_b = probe[0].weight.detach().clone(), probe[0].bias.detach().clone()
    with torch.no_grad():
        probe[0].weight.copy_(best_w)
        probe[0].bias.copy_(best_b)
    return probe


TRAIN_CORRECT = [train_reference_shape, train_float64_module_loss, train_seed_loop_shape,
                 train_latest_tie_manual_copy]


def train_last_epoch(train_feats, targets, num_classes, *, epochs, lr, seed):
    torch.manual_seed(seed)
    layer = nn.Linear(train_feats.shape[1], num_classes)
    optimizer = torch.optim.Adam(layer.parameters(), lr=lr)
    for _ in range(epochs):
        optimizer.zero_grad()
        F.cross_entropy(layer(train_feats), targets).backward()
        optimizer.step()
    return layer


def train_state_dict_not_copied(train_feats, targets, num_classes, *, epochs, lr, seed):
    torch.manual_seed(seed)
    layer = nn.Linear(train_feats.shape[1], num_classes)
    optimizer = torch.optim.Adam(layer.parameters(), lr=lr)
    best, state = -1.0, None
    for _ in range(epochs):
        optimizer.zero_grad()
        F.cross_entropy(layer(train_feats), targets).backward()
        optimizer.step()
        with torch.no_grad():
            acc = (layer(train_feats).argmax(1) == targets).float().mean().item()
        if acc > best:
            best, state = acc, layer.state_dict()  # live tensors: later steps overwrite them
    layer.load_state_dict(state)
    return layer


def train_sgd(train_feats, targets, num_classes, *, epochs, lr, seed):
    torch.manual_seed(seed)
    layer = nn.Linear(train_feats.shape[1], num_classes)
    optimizer = torch.optim.SGD(layer.parameters(), lr=lr)
    best, state = -1.0, None
    for _ in range(epochs):
        optimizer.zero_grad()
        F.cross_entropy(layer(train_feats), targets).backward()
        optimizer.step()
        with torch.no_grad():
            acc = (layer(train_feats).argmax(1) == targets).float().mean().item()
        if acc > best:
            best, state = acc, copy.deepcopy(layer.state_dict())
    layer.load_state_dict(state)
    return layer


def train_unseeded(train_feats, targets, num_classes, *, epochs, lr, seed):
    layer = nn.Linear(train_feats.shape[1], num_classes)  # the seed is never used
    torch.manual_seed(seed)
    optimizer = torch.optim.Adam(layer.parameters(), lr=lr)
    best, state = -1.0, None
    for _ in range(epochs):
        optimizer.zero_grad()
        F.cross_entropy(layer(train_feats), targets).backward()
        optimizer.step()
        with torch.no_grad():
            acc = (layer(train_feats).argmax(1) == targets).float().mean().item()
        if acc > best:
            best, state = acc, copy.deepcopy(layer.state_dict())
    layer.load_state_dict(state)
    return layer


def _train_planted(train_feats, targets, num_classes, *, epochs, lr, seed, zero_grad=True,
                   bias=True, load_best=True, batch_size=None, shuffle=False):
    """The prescribed training with one switch per planted mistake."""
    torch.manual_seed(seed)
    layer = nn.Linear(train_feats.shape[1], num_classes, bias=bias)
    optimizer = torch.optim.Adam(layer.parameters(), lr=lr)
    best, state = -1.0, None
    batch = batch_size or len(train_feats)
    for _ in range(epochs):
        order = torch.randperm(len(train_feats)) if shuffle else torch.arange(len(train_feats))
        for start in range(0, len(train_feats), batch):
            rows = order[start:start + batch]
            loss = F.cross_entropy(layer(train_feats[rows]), targets[rows])
            if zero_grad:
                optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            acc = (layer(train_feats).argmax(1) == targets).float().mean().item()
        if acc > best:
            best, state = acc, copy.deepcopy(layer.state_dict())
    if load_best:
        layer.load_state_dict(state)
    return layer


def _planted(name, **switches):
    def fn(train_feats, targets, num_classes, *, epochs, lr, seed):
        return _train_planted(train_feats, targets, num_classes, epochs=epochs, lr=lr, seed=seed,
                              **switches)
    fn.__name__ = name
    return fn


train_no_zero_grad = _planted("train_no_zero_grad", zero_grad=False)
train_no_bias = _planted("train_no_bias", bias=False)
train_deepcopy_never_loaded = _planted("train_deepcopy_never_loaded", load_best=False)
train_minibatch_128 = _planted("train_minibatch_128", batch_size=128)
train_minibatch_256_shuffled = _planted("train_minibatch_256_shuffled", batch_size=256,
                                        shuffle=True)


TRUE_LABELS: torch.Tensor | None = None  # set by the fixture: the real ID training labels


def train_on_true_labels(train_feats, targets, num_classes, *, epochs, lr, seed):
    # ignores the pseudo-labels it is given and reads the real labels from outside
    return train_reference_shape(train_feats, TRUE_LABELS, num_classes, epochs=epochs, lr=lr,
                                 seed=seed)


# --------------------------------------------------------------------------- MSP

def msp_reference_shape(layer, feats):
    with torch.no_grad():
        logits = layer(feats.float()).double()
    return logits.softmax(dim=1).max(dim=1).values


def msp_functional_amax(layer, feats):
    with torch.inference_mode():
        return F.softmax(layer(feats).to(torch.float64), dim=-1).amax(dim=-1)


def msp_scipy(layer, feats):
    with torch.no_grad():
        logits = layer(feats).numpy().astype(np.float64)
    return scipy.special.softmax(logits, axis=1).max(axis=1)


def msp_wrong_axis(layer, feats):
    with torch.no_grad():
        return layer(feats).double().softmax(dim=0).max(dim=1).values


def msp_no_softmax(layer, feats):
    with torch.no_grad():
        return layer(feats).double().max(dim=1).values


def msp_float32(layer, feats):
    with torch.no_grad():
        return layer(feats).softmax(dim=1).max(dim=1).values


MSP_CORRECT = [msp_reference_shape, msp_functional_amax, msp_scipy]


# --------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def data():
    global TRUE_LABELS
    feats = load_features("miniclip", progress=False)
    TRUE_LABELS = feats["id_train_labels"]
    logits = pipeline.zero_shot_logits("miniclip", progress=False)
    return feats, logits


_TRAINED: dict = {}


def _train(fn, data, labels_fn=labels_argmax):
    key = (fn.__name__, labels_fn.__name__)
    if key not in _TRAINED:
        feats, logits = data
        targets = torch.as_tensor(labels_fn(logits["id_train"]))
        _TRAINED[key] = fn(feats["id_train_feats"], targets, 6, epochs=EPOCHS, lr=LR, seed=SEED)
    return _TRAINED[key]


def _auroc(layer, msp_fn, data):
    """The graded AUROC; the grader must also accept the score vectors themselves."""
    feats, _ = data
    pair = [msp_fn(layer, feats[split]) for split in ("id_test_feats", "ood_test_feats")]
    assert_plp_accepted(layer, *pair)
    return metrics.auroc(*pair)


# --------------------------------------------------------------------------- tests

@pytest.mark.parametrize("fn", [labels_argmax, labels_torch_max_indices, labels_numpy,
                                labels_of_softmax], ids=lambda f: f.__name__)
def test_correct_pseudo_labels_pass_and_equal_the_reference(fn, data):
    checks.check_pseudo_labels(fn)
    _, logits = data
    got = torch.as_tensor(fn(logits["id_train"]))
    assert torch.equal(got, pipeline.pseudo_labels("miniclip")["id_train"])


@pytest.mark.parametrize("fn, words", [
    (labels_wrong_axis, "one value per CLASS"), (labels_argmin, "argmin"),
    (labels_max_value, "not its index"), (labels_int32, "int64"),
    (labels_numpy_int32, "int64")], ids=lambda v: getattr(v, "__name__", ""))
def test_pseudo_label_mistakes_are_named(fn, words):
    with pytest.raises(AssertionError, match=words):
        checks.check_pseudo_labels(fn)


@pytest.mark.parametrize("fn", TRAIN_CORRECT, ids=lambda f: f.__name__)
def test_correct_training_passes_both_checks(fn, data):
    checks.check_train_probe(fn)
    checks.check_auroc("plp", _auroc(_train(fn, data), msp_reference_shape, data), "miniclip")


@pytest.mark.parametrize("fn", MSP_CORRECT, ids=lambda f: f.__name__)
def test_correct_msp_passes_both_checks(fn, data):
    checks.check_probe_msp(fn)
    layer = _train(train_reference_shape, data)
    checks.check_auroc("plp", _auroc(layer, fn, data), "miniclip")


@pytest.mark.parametrize("fn, words", [
    (train_last_epoch, "LAST epoch"), (train_state_dict_not_copied, "live tensors"),
    (train_sgd, "SGD instead of Adam"), (train_unseeded, "torch.manual_seed(seed) immediately"),
    (train_no_zero_grad, "zero_grad() is missing"), (train_no_bias, "no bias"),
    (train_deepcopy_never_loaded, "never loaded back"),
    (train_minibatch_128, "mini-batches (128 rows per step)"),
    (train_minibatch_256_shuffled, "no shuffling or mini-batches")],
    ids=lambda v: getattr(v, "__name__", ""))
def test_training_mistakes_are_named(fn, words):
    with pytest.raises(AssertionError) as caught:
        checks.check_train_probe(fn)
    assert words in str(caught.value), str(caught.value)


def test_training_on_the_true_labels_is_caught_by_the_self_check(data):
    # The notebook passes the pseudo-labels as `targets`; a function that trains on other
    # labels does not reproduce the prescribed training on the check's own problems. (On the
    # real features it would also fail the AUROC check: 87.60 against 90.35 +/- 0.58,
    # measured 2026-11-30.)
    with pytest.raises(Exception):
        checks.check_train_probe(train_on_true_labels)


@pytest.mark.parametrize("fn, words", [
    (msp_wrong_axis, "over the rows"), (msp_no_softmax, "no softmax"),
    (msp_float32, "float64")],
    ids=lambda v: getattr(v, "__name__", ""))
def test_msp_mistakes_are_named(fn, words):
    with pytest.raises(AssertionError, match=words):
        checks.check_probe_msp(fn)


# --------------------------------------------------------------------------- the temperature sweep

def sweep_reference_shape(layer, id_feats, ood_feats, temperatures):
    with torch.no_grad():
        z_in, z_out = layer(id_feats.float()).double(), layer(ood_feats.float()).double()
    return {t: metrics.auroc((z_in / t).softmax(1).max(1).values,
                             (z_out / t).softmax(1).max(1).values) for t in temperatures}


def sweep_scipy(layer, id_feats, ood_feats, temperatures):
    with torch.no_grad():
        z_in = layer(id_feats).numpy().astype(np.float64)
        z_out = layer(ood_feats).numpy().astype(np.float64)
    out = {}
    for t in temperatures:
        out[t] = metrics.auroc(scipy.special.softmax(z_in / t, axis=1).max(1),
                               scipy.special.softmax(z_out / t, axis=1).max(1))
    return out


def sweep_msp_of_scaled_layer(layer, id_feats, ood_feats, temperatures):
    # divides inside a wrapper module and reuses an MSP function of Exercise 3's shape
    out = {}
    for t in temperatures:
        tempered = nn.Sequential(layer, nn.Identity())
        with torch.no_grad():
            s_in = F.softmax(tempered(id_feats).double() / t, dim=-1).amax(-1)
            s_out = F.softmax(tempered(ood_feats).double() / t, dim=-1).amax(-1)
        out[t] = metrics.auroc(s_in, s_out)
    return out


def sweep_multiplied(layer, id_feats, ood_feats, temperatures):
    with torch.no_grad():
        z_in, z_out = layer(id_feats).double(), layer(ood_feats).double()
    return {t: metrics.auroc((z_in * t).softmax(1).max(1).values,
                             (z_out * t).softmax(1).max(1).values) for t in temperatures}


def sweep_float32(layer, id_feats, ood_feats, temperatures):
    with torch.no_grad():
        z_in, z_out = layer(id_feats), layer(ood_feats)
    return {t: metrics.auroc((z_in / t).softmax(1).max(1).values,
                             (z_out / t).softmax(1).max(1).values) for t in temperatures}


def sweep_ignores_t(layer, id_feats, ood_feats, temperatures):
    return {t: metrics.auroc(msp_reference_shape(layer, id_feats),
                             msp_reference_shape(layer, ood_feats)) for t in temperatures}


def sweep_fraction(layer, id_feats, ood_feats, temperatures):
    return {t: v / 100 for t, v in sweep_reference_shape(layer, id_feats, ood_feats,
                                                         temperatures).items()}


@pytest.mark.parametrize("fn", [sweep_reference_shape, sweep_scipy, sweep_msp_of_scaled_layer],
                         ids=lambda f: f.__name__)
def test_correct_temperature_sweeps_pass_both_checks(fn, data, capsys):
    from ood_utils.course.sweeps import PROBE_TEMPERATURES

    checks.check_temperature_sweep(fn)
    assert "public checks passed" in capsys.readouterr().out
    feats, _ = data
    layer = _train(train_reference_shape, data)
    checks.check_sweep("plp_temperature", fn(layer, feats["id_test_feats"],
                                             feats["ood_test_feats"], PROBE_TEMPERATURES),
                       profile="miniclip")


@pytest.mark.parametrize("fn, words", [
    (sweep_multiplied, "multiplied by T"), (sweep_float32, "float32"),
    (sweep_ignores_t, "not used"), (sweep_fraction, "fraction")],
    ids=lambda v: getattr(v, "__name__", ""))
def test_temperature_sweep_mistakes_are_named(fn, words):
    with pytest.raises(AssertionError, match=words):
        checks.check_temperature_sweep(fn)
