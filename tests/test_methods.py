"""Tests of ood_utils.methods against independent computations (scikit-learn, SciPy, by hand)."""
import subprocess
import sys

import numpy as np
import pytest
import torch
from scipy.spatial.distance import mahalanobis as scipy_mahalanobis
from scipy.special import softmax as scipy_softmax
from sklearn.cluster import KMeans
from sklearn.neighbors import NearestNeighbors

from ood_utils import methods


def rng_feats(seed, n, d, dtype=np.float32):
    return np.random.default_rng(seed).standard_normal((n, d)).astype(dtype)


def blobs(seed, centres, n_per, spread, sizes=None):
    """Gaussian blobs around ``centres``; returns (features float64, labels int64)."""
    rng = np.random.default_rng(seed)
    sizes = sizes or [n_per] * len(centres)
    x = np.concatenate([c + spread * rng.standard_normal((n, len(c)))
                        for c, n in zip(centres, sizes)])
    y = np.concatenate([np.full(n, i) for i, n in enumerate(sizes)]).astype(np.int64)
    return x, y


# ----------------------------------------------------------------------------- kNN

@pytest.mark.parametrize("k", [1, 3])
def test_knn_matches_sklearn_cosine(k):
    train, test = rng_feats(0, 300, 12), rng_feats(1, 50, 12)
    nn_ = NearestNeighbors(n_neighbors=k, metric="cosine", algorithm="brute").fit(train)
    dist, _ = nn_.kneighbors(test)
    expected = 1.0 - dist[:, k - 1]
    got = methods.knn_scores(train, test, k=k)
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_knn_training_point_has_similarity_one():
    train = rng_feats(2, 40, 5)
    got = methods.knn_scores(train, train[:7] * 3.0)  # scaling does not change the cosine
    np.testing.assert_allclose(got, 1.0, atol=1e-6)


def test_knn_chunked_equals_unchunked():
    train, test = rng_feats(3, 500, 16), rng_feats(4, 103, 16)
    whole = methods.knn_scores(train, test, k=2, chunk_size=1000)
    for chunk in (1, 7, 50):
        np.testing.assert_allclose(methods.knn_scores(train, test, k=2, chunk_size=chunk),
                                   whole, atol=1e-6)


def test_knn_kinds():
    train, test = rng_feats(5, 60, 4), rng_feats(6, 9, 4)
    out_np = methods.knn_scores(train, test)
    out_t = methods.knn_scores(torch.from_numpy(train), torch.from_numpy(test))
    assert isinstance(out_np, np.ndarray) and out_np.shape == (9,)
    assert isinstance(out_t, torch.Tensor) and out_t.shape == (9,)
    assert out_t.dtype == torch.float32 and not out_t.is_inference()
    np.testing.assert_allclose(out_t.numpy(), out_np, atol=1e-6)
    # float64 input is accepted (computed in float32)
    np.testing.assert_allclose(methods.knn_scores(train.astype(np.float64), test), out_np,
                               atol=1e-6)


def test_knn_bad_k():
    train, test = rng_feats(7, 5, 3), rng_feats(8, 2, 3)
    with pytest.raises(ValueError, match="k=6 exceeds"):
        methods.knn_scores(train, test, k=6)
    with pytest.raises(ValueError, match="k must be a positive integer"):
        methods.knn_scores(train, test, k=0)


# ----------------------------------------------------------------------------- Mahalanobis

def scipy_md(train, labels, test, relative, inverse=np.linalg.inv):
    """Direct computation with scipy.spatial.distance.mahalanobis, one point at a time."""
    classes = [c for c in np.unique(labels) if (labels == c).sum() >= 2]
    means = [train[labels == c].mean(axis=0) for c in classes]
    cov = np.mean([np.cov(train[labels == c], rowvar=False) for c in classes], axis=0)
    vi = inverse(cov)
    vi0 = inverse(np.cov(train, rowvar=False))
    mu0 = train.mean(axis=0)
    out = []
    for x in test:
        d2 = np.array([scipy_mahalanobis(x, mu, vi) ** 2 for mu in means])
        if relative:
            d2 = d2 - scipy_mahalanobis(x, mu0, vi0) ** 2
        out.append(-d2.min())
    return np.array(out)


@pytest.mark.parametrize("relative", [False, True])
def test_mahalanobis_matches_scipy(relative):
    rng = np.random.default_rng(10)
    # unequal class sizes and class-specific covariances: the unweighted mean of per-class
    # covariances then differs from one covariance of the class-centred data
    centres = rng.normal(0, 3, (3, 5))
    x, y = blobs(11, centres, 0, 1.0, sizes=[40, 90, 25])
    x[y == 1] *= np.array([1.0, 2.0, 0.5, 1.0, 3.0])
    labels = np.array([-3, 5, 100])[y]  # arbitrary, non-contiguous ids
    test = rng.normal(0, 3, (8, 5))
    expected = scipy_md(x, labels, test, relative)
    got = methods.mahalanobis_scores(x, labels, test, relative=relative)
    assert isinstance(got, np.ndarray) and got.dtype == np.float64
    np.testing.assert_allclose(got, expected, rtol=1e-8, atol=1e-8)


def test_mahalanobis_gaussian_mixture_ordering():
    centres = np.array([[0.0, 0.0, 0.0], [10.0, 0.0, 0.0], [0.0, 10.0, 0.0]])
    x, y = blobs(12, centres, 200, 1.0)
    far = np.array([[40.0, 40.0, 40.0], [-30.0, 5.0, 0.0], [5.0, 5.0, 25.0]])
    for relative in (False, True):
        at_means = methods.mahalanobis_scores(x, y, centres, relative=relative)
        at_far = methods.mahalanobis_scores(x, y, far, relative=relative)
        assert at_means.min() > at_far.max()
    # a point at a class mean has MD score close to 0 (the exact class mean gives exactly 0)
    exact = np.stack([x[y == c].mean(axis=0) for c in range(3)])
    np.testing.assert_allclose(methods.mahalanobis_scores(x, y, exact), 0.0, atol=1e-9)


def test_mahalanobis_singular_covariance_from_duplicate_column():
    x, y = blobs(13, np.array([[0.0, 0.0, 0.0], [4.0, 4.0, 0.0]]), 60, 1.0)
    test = np.random.default_rng(14).normal(0, 3, (10, 3))
    dup = lambda a: np.concatenate([a, a[:, :1]], axis=1)  # noqa: E731
    for relative in (False, True):
        got = methods.mahalanobis_scores(dup(x), y, dup(test), relative=relative)
        assert np.isfinite(got).all()
        # the pseudo-inverse ignores the redundant direction: same as without the copy
        np.testing.assert_allclose(
            got, methods.mahalanobis_scores(x, y, test, relative=relative), rtol=1e-6)
        np.testing.assert_allclose(
            got, scipy_md(dup(x), y, dup(test), relative, inverse=np.linalg.pinv), rtol=1e-6)


def test_mahalanobis_more_dims_than_samples_does_not_crash():
    x = rng_feats(15, 12, 30, np.float64)
    y = np.repeat([0, 1, 2], 4)
    got = methods.mahalanobis_scores(x, y, rng_feats(16, 5, 30, np.float64), relative=True)
    assert got.shape == (5,) and np.isfinite(got).all()


def test_mahalanobis_single_sample_class_is_skipped_with_warning():
    x, y = blobs(17, np.array([[0.0, 0.0], [5.0, 5.0]]), 30, 1.0)
    lonely = np.array([[50.0, -50.0]])
    x2, y2 = np.concatenate([x, lonely]), np.r_[y, 42]
    test = np.array([[50.0, -50.0], [0.0, 0.0], [5.0, 4.0]])
    with pytest.warns(UserWarning, match=r"ids: 42"):
        got = methods.mahalanobis_scores(x2, y2, test)
    # same as never having seen that sample: its class gets no Gaussian
    np.testing.assert_allclose(got, methods.mahalanobis_scores(x, y, test), rtol=1e-10)
    assert got[0] < got[1]  # the lonely point is not treated as a class mean


def test_scorers_leave_inputs_unchanged():
    x, y = blobs(23, np.array([[0.0, 0.0], [5.0, 5.0]]), 30, 1.0)
    for train in (x.copy(), torch.from_numpy(x.copy()), x.astype(np.float32)):
        before = train.clone() if isinstance(train, torch.Tensor) else train.copy()
        methods.mahalanobis_scores(train, y, train[:5], relative=True)
        methods.knn_scores(train, train[:5], k=2)
        methods.kmeans_mahalanobis_scores(train, train[:5], 2)
        if isinstance(train, torch.Tensor):
            assert torch.equal(before, train)
        else:
            np.testing.assert_array_equal(before, train)


def test_mahalanobis_all_classes_singletons():
    x = rng_feats(18, 4, 3)
    with pytest.raises(ValueError, match="fewer than two samples"):
        methods.mahalanobis_scores(x, np.arange(4), x)


def test_mahalanobis_torch_in_torch_out():
    x, y = blobs(19, np.array([[0.0, 0.0], [5.0, 5.0]]), 30, 1.0)
    t = torch.from_numpy(x).float()
    got = methods.mahalanobis_scores(t, torch.from_numpy(y), t[:4], relative=True)
    assert isinstance(got, torch.Tensor) and got.shape == (4,)
    np.testing.assert_allclose(
        got.numpy(), scipy_md(x.astype(np.float32).astype(np.float64), y, x[:4], True),
        rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------- k-means (SSD)

def test_kmeans_mahalanobis_blobs():
    centres = np.array([[0.0, 0.0], [20.0, 0.0], [0.0, 20.0], [20.0, 20.0]])
    x, _ = blobs(20, centres, 100, 1.0)
    inside = centres + 0.5
    far = np.array([[60.0, -40.0], [-50.0, 10.0], [10.0, 80.0]])
    for relative in (False, True):
        s_in = methods.kmeans_mahalanobis_scores(x, inside, 4, relative=relative)
        s_far = methods.kmeans_mahalanobis_scores(x, far, 4, relative=relative)
        assert s_in.min() > s_far.max()


def test_kmeans_mahalanobis_uses_sklearn_clusters():
    x = rng_feats(21, 300, 4, np.float64)
    test = rng_feats(22, 20, 4, np.float64)
    got, km = methods.kmeans_mahalanobis_scores(x, test, 5, seed=3, return_kmeans=True)
    assert km.n_clusters == 5
    labels = KMeans(5, random_state=3, n_init=1).fit(x.astype(np.float32)).labels_
    np.testing.assert_allclose(got, scipy_md(x, labels, test, False), rtol=1e-6, atol=1e-8)
    t = methods.kmeans_mahalanobis_scores(torch.from_numpy(x), torch.from_numpy(test), 5, seed=3)
    assert isinstance(t, torch.Tensor)
    np.testing.assert_allclose(t.numpy(), got, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("relative", [False, True])
def test_mahalanobis_pooled_covariance_matches_lee_et_al(relative):
    """covariance="pooled": one covariance of the class-centred rows, divided by N - C."""
    rng = np.random.default_rng(40)
    x, y = blobs(41, rng.normal(0, 3, (3, 4)), 0, 1.0, sizes=[50, 12, 30])
    x[y == 1] *= 3.0
    test = rng.normal(0, 3, (7, 4))
    centred = np.concatenate([x[y == c] - x[y == c].mean(0) for c in range(3)])
    vi = np.linalg.inv(centred.T @ centred / (len(x) - 3))
    vi0 = np.linalg.inv(np.cov(x, rowvar=False))
    want = []
    for t in test:
        d2 = np.array([scipy_mahalanobis(t, x[y == c].mean(0), vi) ** 2 for c in range(3)])
        if relative:
            d2 = d2 - scipy_mahalanobis(t, x.mean(0), vi0) ** 2
        want.append(-d2.min())
    got = methods.mahalanobis_scores(x, y, test, relative=relative, covariance="pooled")
    np.testing.assert_allclose(got, want, rtol=1e-8, atol=1e-8)
    default = methods.mahalanobis_scores(x, y, test, relative=relative)
    assert np.abs(default - got).max() > 1e-3  # unequal classes: the estimators differ
    with pytest.raises(ValueError, match="covariance"):
        methods.mahalanobis_scores(x, y, test, covariance="weighted")


def _layernorm_like(seed, n, d=8):
    """Rows obeying one exact linear constraint w.x = 2, like features after a LayerNorm."""
    rng = np.random.default_rng(seed)
    w = rng.uniform(0.5, 2.0, d)
    x = rng.standard_normal((n, d)) * rng.uniform(0.2, 3.0, d)
    return x - np.outer(x @ w - 2.0, w) / (w @ w), w


def test_drop_degenerate_directions_keeps_every_distance():
    from scipy.spatial.distance import cdist

    train, w = _layernorm_like(50, 200)
    test, _ = _layernorm_like(51, 30)
    test = test - np.outer(test @ w - 2.0, w) / (w @ w)
    assert np.linalg.eigvalsh(np.cov(train, rowvar=False))[0] < 1e-12
    rtrain, rtest, basis = methods.drop_degenerate_directions(train, test, return_basis=True)
    assert rtrain.shape == (200, 7) and rtest.shape == (30, 7) and basis.shape == (8, 7)
    np.testing.assert_allclose(basis.T @ basis, np.eye(7), atol=1e-12)
    np.testing.assert_allclose(cdist(rtest, rtrain), cdist(test, train), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(basis.T @ w, 0.0, atol=1e-9)  # the constant direction is gone
    assert np.linalg.eigvalsh(np.cov(rtrain, rowvar=False))[0] > 1e-3
    # kinds and dtypes are kept
    t32 = methods.drop_degenerate_directions(torch.from_numpy(train).float())[0]
    assert isinstance(t32, torch.Tensor) and t32.dtype == torch.float32 and t32.shape == (200, 7)
    with pytest.raises(ValueError, match="other_feats"):
        methods.drop_degenerate_directions(train, test[:, :5])


def test_after_the_rotation_every_inverse_gives_the_same_rmd():
    train, _ = _layernorm_like(52, 300)
    y = (train[:, 0] > 0).astype(np.int64) + (train[:, 1] > 0.5)
    test, _ = _layernorm_like(53, 40)
    rtrain, rtest = methods.drop_degenerate_directions(train, test)
    ref = methods.mahalanobis_scores(rtrain, y, rtest, relative=True)
    for inverse in (np.linalg.inv, np.linalg.pinv):
        np.testing.assert_allclose(scipy_md(rtrain, y, rtest, True, inverse), ref, rtol=1e-7)


def test_kmeans_settings_are_the_course_ones():
    assert methods.KMEANS_SETTINGS == {"n_init": 1, "algorithm": "lloyd", "random_state": 0}
    x = rng_feats(60, 400, 5, np.float64)
    _, km = methods.kmeans_mahalanobis_scores(x, x[:5], 6, return_kmeans=True)
    want = KMeans(6, **methods.KMEANS_SETTINGS).fit(x.astype(np.float32)).labels_
    np.testing.assert_array_equal(km.labels_, want)


# ----------------------------------------------------------------------------- MSP, labels

def test_msp_matches_scipy_softmax():
    logits = rng_feats(30, 25, 6, np.float64) * 4
    for temperature in (1.0, 0.5, 3.0):
        expected = scipy_softmax(logits / temperature, axis=1).max(axis=1)
        np.testing.assert_allclose(methods.msp_scores(logits, temperature), expected, rtol=1e-12)
    t = methods.msp_scores(torch.from_numpy(logits).float())
    assert isinstance(t, torch.Tensor) and t.shape == (25,)
    np.testing.assert_allclose(t.numpy(), scipy_softmax(logits, axis=1).max(axis=1), rtol=1e-6)


def test_msp_does_not_saturate_in_float32():
    logits = torch.tensor([[0.0, 20.0], [0.0, 25.0]], dtype=torch.float32)
    s = methods.msp_scores(logits)
    assert s[0] > 0.5 and s[1] > s[0]  # float32 softmax would give 1.0 for both
    assert s[0] < 1.0


def test_pseudo_labels():
    logits = rng_feats(31, 40, 7)
    np.testing.assert_array_equal(methods.pseudo_labels(logits), np.argmax(logits, axis=1))
    t = methods.pseudo_labels(torch.from_numpy(logits))
    assert t.dtype == torch.int64
    assert methods.pseudo_labels(logits).dtype == np.int64


# ----------------------------------------------------------------------------- linear probe

@pytest.fixture(scope="module")
def probe_data():
    rng = np.random.default_rng(40)
    centres = rng.normal(0, 1, (3, 20)) * 2.5
    x, y = blobs(41, centres, 200, 1.0)
    xv, yv = blobs(42, centres, 100, 1.0)
    return x.astype(np.float32), y, xv.astype(np.float32), yv


def test_probe_learns_separable_data(probe_data):
    x, y, xv, yv = probe_data
    fit = methods.train_linear_probe(x, y, epochs=10, lr=1e-2)
    assert isinstance(fit, methods.ProbeResult)
    layer = fit.layer
    assert isinstance(layer, torch.nn.Linear) and (layer.in_features, layer.out_features) == (20, 3)
    acc = (methods.probe_logits(layer, xv).argmax(axis=1) == yv).mean()
    assert acc > 0.9  # chance is 1/3
    assert len(fit.history) == 10 and 1 <= fit.best_epoch <= 10
    assert set(fit.history[0]) == {"epoch", "loss", "train_acc", "forward_acc"}


def _numpy_full_batch_adam(x, y, w, b, epochs, lr, betas=(0.9, 0.999), eps=1e-8):
    """Independent full-batch Adam on softmax cross-entropy (float64 NumPy), every epoch's
    (weights, bias, training accuracy after the step)."""
    n, c = len(x), w.shape[0]
    onehot = np.eye(c)[y]
    params = [w.astype(np.float64), b.astype(np.float64)]
    m = [np.zeros_like(p) for p in params]
    v = [np.zeros_like(p) for p in params]
    out = []
    for t in range(1, epochs + 1):
        z = x @ params[0].T + params[1]
        p = np.exp(z - z.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        g = (p - onehot) / n
        grads = [g.T @ x, g.sum(axis=0)]
        for i in range(2):
            m[i] = betas[0] * m[i] + (1 - betas[0]) * grads[i]
            v[i] = betas[1] * v[i] + (1 - betas[1]) * grads[i] ** 2
            mhat, vhat = m[i] / (1 - betas[0] ** t), v[i] / (1 - betas[1] ** t)
            params[i] = params[i] - lr * mhat / (np.sqrt(vhat) + eps)
        acc = ((x @ params[0].T + params[1]).argmax(axis=1) == y).mean()
        out.append((params[0].copy(), params[1].copy(), acc))
    return out


def test_probe_matches_an_independent_full_batch_adam(probe_data):
    # the course's prescription: manual_seed(seed) then nn.Linear, full-batch Adam, the epoch
    # with the best training accuracy (earliest on ties)
    x, y, _, _ = probe_data
    x64 = x.astype(np.float64)
    torch.manual_seed(3)
    init = torch.nn.Linear(20, 3)
    runs = _numpy_full_batch_adam(x64, y, init.weight.detach().numpy(),
                                  init.bias.detach().numpy(), epochs=8, lr=0.05)
    fit = methods.train_linear_probe(x64, y, epochs=8, lr=0.05, seed=3)
    accs = [a for _, _, a in runs]
    assert [h["train_acc"] for h in fit.history] == pytest.approx(accs)
    best = int(np.argmax(accs))  # argmax returns the earliest maximum
    assert fit.best_epoch == best + 1
    np.testing.assert_allclose(fit.layer.weight.detach().numpy(), runs[best][0], rtol=1e-6,
                               atol=1e-9)
    np.testing.assert_allclose(fit.layer.bias.detach().numpy(), runs[best][1], rtol=1e-6,
                               atol=1e-9)


def test_probe_is_reproducible_and_leaves_global_rng_alone(probe_data):
    x, y, xv, yv = probe_data
    state = torch.get_rng_state()
    a = methods.train_linear_probe(x, y, epochs=3, seed=7, batch_size=64)
    assert torch.equal(state, torch.get_rng_state())
    b = methods.train_linear_probe(torch.from_numpy(x), torch.from_numpy(y), epochs=3, seed=7,
                                  batch_size=64)
    assert torch.equal(a.layer.weight, b.layer.weight) and torch.equal(a.layer.bias, b.layer.bias)
    assert a.history == b.history
    c = methods.train_linear_probe(x, y, epochs=3, seed=8, batch_size=64)
    assert not torch.equal(a.layer.weight, c.layer.weight)


def test_probe_keeps_best_validation_epoch(probe_data):
    x, y, xv, yv = probe_data
    # validation targets shifted by one class: the better the probe learns the training
    # targets, the worse its validation accuracy, so the first epoch must be kept
    wrong = (yv + 1) % 3
    fit = methods.train_linear_probe(x, y, validation=(xv, wrong), epochs=6, lr=0.05)
    accs = [h["val_acc"] for h in fit.history]
    assert fit.best_epoch == int(np.argmax(accs)) + 1 == 1
    first = methods.train_linear_probe(x, y, methods.ProbeOptions(epochs=1, lr=0.05),
                                      validation=(xv, wrong))
    assert torch.equal(fit.layer.weight, first.layer.weight)
    own = (methods.probe_logits(fit.layer, xv).argmax(axis=1) == wrong).mean()
    assert own == pytest.approx(accs[0])


def test_probe_hyperparameters_are_keyword_only_and_validated(probe_data):
    x, y, xv, yv = probe_data
    with pytest.raises(TypeError, match="ProbeOptions"):
        methods.train_linear_probe(x, y, 5)  # epochs only by keyword or in the options
    with pytest.raises(TypeError, match="unknown setting"):
        methods.train_linear_probe(x, y, epoch=3)
    fit = methods.train_linear_probe(x, y, epochs=1, num_classes=5)
    assert fit.layer.out_features == 5
    with pytest.raises(ValueError, match="num_classes"):
        methods.train_linear_probe(x, y, epochs=1, num_classes=2)
    with pytest.raises(ValueError, match="negative"):
        methods.train_linear_probe(x, y - 1, epochs=1)
    with pytest.raises(ValueError, match="integer"):
        methods.train_linear_probe(x, y.astype(float), epochs=1)
    with pytest.raises(ValueError, match="pair"):
        methods.train_linear_probe(x, y, epochs=1, validation=xv)
    for bad in ({"epochs": 0}, {"lr": float("nan")}, {"weight_decay": -1.0}, {"ties": "last"},
                {"select": "val"}, {"optimizer": "rmsprop"}, {"dtype": torch.float16},
                {"seed": 1.5}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            methods.ProbeOptions(**bad)
    with pytest.raises(ValueError, match="lr"):
        methods.train_linear_probe(x, y, epochs=1, lr=-1.0)
    with pytest.raises(ValueError, match="columns"):
        methods.probe_logits(torch.nn.Linear(20, 3), x[:, :5])


def test_probe_logits_kind_and_values(probe_data):
    x = probe_data[0]
    layer = torch.nn.Linear(20, 3)
    got = methods.probe_logits(layer, x, batch_size=7)
    expected = x @ layer.weight.detach().numpy().T + layer.bias.detach().numpy()
    assert isinstance(got, np.ndarray)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    assert isinstance(methods.probe_logits(layer, torch.from_numpy(x)), torch.Tensor)


# ----------------------------------------------------------------------------- validation

def _two_feature_scorers():
    y = np.repeat([0, 1], 5)
    return {
        "knn": lambda tr, te: methods.knn_scores(tr, te),
        "md": lambda tr, te: methods.mahalanobis_scores(tr, y[:len(tr)], te),
        "kmeans": lambda tr, te: methods.kmeans_mahalanobis_scores(tr, te, 2),
    }


@pytest.mark.parametrize("name", ["knn", "md", "kmeans"])
def test_feature_validation(name):
    fn = _two_feature_scorers()[name]
    good = rng_feats(50, 10, 3)
    nan = good.copy()
    nan[2, 1] = np.nan
    with pytest.raises(ValueError, match="train_feats contains NaN"):
        fn(nan, good)
    with pytest.raises(ValueError, match="test_feats contains NaN"):
        fn(good, nan)
    with pytest.raises(ValueError, match="test_feats is empty"):
        fn(good, good[:0])
    with pytest.raises(ValueError, match=r"train_feats must have shape \(N, D\)"):
        fn(good[0], good)
    with pytest.raises(ValueError, match="train_feats has 3 columns but test_feats has 2"):
        fn(good, good[:, :2])


def test_label_validation():
    x = rng_feats(51, 10, 3)
    with pytest.raises(ValueError, match="train_labels has 9 entries"):
        methods.mahalanobis_scores(x, np.zeros(9, dtype=int), x)
    with pytest.raises(ValueError, match="train_labels must hold integer"):
        methods.mahalanobis_scores(x, np.zeros(10), x)


def test_logit_validation():
    with pytest.raises(ValueError, match="logits must have shape"):
        methods.msp_scores(np.zeros(4))
    with pytest.raises(ValueError, match="temperature"):
        methods.msp_scores(np.zeros((2, 3)), temperature=0.0)
    with pytest.raises(ValueError, match="logits contains NaN"):
        methods.pseudo_labels(np.full((2, 3), np.nan))


def test_one_cpu_thread_restores_the_setting_even_after_an_error():
    from ood_utils.methods._threads import one_cpu_thread

    before = torch.get_num_threads()
    with pytest.raises(RuntimeError):
        with one_cpu_thread():
            assert torch.get_num_threads() == 1
            raise RuntimeError("boom")
    assert torch.get_num_threads() == before


# ----------------------------------------------------------------------------- estimators

@pytest.mark.parametrize("relative", [False, True])
@pytest.mark.parametrize("covariance", ["class_mean", "pooled"])
def test_mahalanobis_estimator_fits_once_and_scores_many_sets(relative, covariance):
    rng = np.random.default_rng(60)
    x, y = blobs(61, rng.normal(0, 3, (3, 5)), 0, 1.0, sizes=[40, 70, 25])
    x[y == 2] *= 2.0
    id_test, ood_test = rng.normal(0, 3, (9, 5)), rng.normal(4, 3, (6, 5))
    md = methods.Mahalanobis(relative=relative, covariance=covariance)
    assert md.fit(x, y) is md  # scikit-learn's convention
    for test in (id_test, ood_test):
        got = md.score_samples(test)
        assert isinstance(got, np.ndarray) and got.dtype == np.float64
        if covariance == "class_mean":  # the direct, one-point-at-a-time computation
            np.testing.assert_allclose(got, scipy_md(x, y, test, relative), rtol=1e-8, atol=1e-8)
        np.testing.assert_array_equal(got, methods.mahalanobis_scores(
            x, y, test, relative=relative, covariance=covariance))
    assert md.score(id_test) == pytest.approx(md.score_samples(id_test).mean())
    np.testing.assert_array_equal(md.classes_.numpy(), [0, 1, 2])
    np.testing.assert_allclose(md.means_.numpy(), [x[y == c].mean(0) for c in range(3)])
    assert (md.background_precision_ is None) == (not relative)
    # torch in, torch out, as the test set's kind
    t = md.score_samples(torch.from_numpy(ood_test))
    assert isinstance(t, torch.Tensor)
    np.testing.assert_array_equal(t.numpy(), md.score_samples(ood_test))


def test_mahalanobis_estimator_errors():
    x, y = blobs(62, np.array([[0.0, 0.0], [5.0, 5.0]]), 20, 1.0)
    with pytest.raises(RuntimeError, match="not fitted"):
        methods.Mahalanobis().score_samples(x)
    md = methods.Mahalanobis().fit(x, y)
    with pytest.raises(ValueError, match="test_feats has 3 columns but the scorer was fitted on 2"):
        md.score_samples(np.ones((4, 3)))
    with pytest.raises(ValueError, match="test_feats contains NaN"):
        md.score_samples(np.full((2, 2), np.nan))
    with pytest.raises(ValueError, match="covariance"):
        methods.Mahalanobis(covariance="weighted").fit(x, y)
    with pytest.raises(ValueError, match="train_labels has 39 entries"):
        methods.Mahalanobis().fit(x, y[:-1])


def test_kmeans_wrapper_is_one_mahalanobis_fit_on_sklearn_clusters():
    x = rng_feats(63, 300, 4, np.float64)
    test = np.concatenate([rng_feats(64, 20, 4, np.float64), rng_feats(65, 15, 4, np.float64) + 2])
    got, km = methods.kmeans_mahalanobis_scores(x, test, 5, relative=True, seed=3,
                                               return_kmeans=True)
    labels = KMeans(5, random_state=3, n_init=1).fit(x.astype(np.float32)).labels_
    np.testing.assert_array_equal(km.labels_, labels)
    np.testing.assert_allclose(got, scipy_md(x, labels, test, True), rtol=1e-6, atol=1e-8)
    # the same as fitting the estimator on those clusters once
    np.testing.assert_array_equal(
        got, methods.Mahalanobis(relative=True).fit(x, km.labels_).score_samples(test))
    with pytest.raises(ValueError, match="n_clusters must be between 2"):
        methods.kmeans_mahalanobis_scores(x, test, 301)


def _hand_probe(x, y, c, epochs, lr, seed, select, latest, dtype=torch.float32):
    """The probe written out by hand (as a student would), one selection rule."""
    x = torch.as_tensor(x).to(dtype)
    y = torch.as_tensor(y)
    torch.manual_seed(seed)
    layer = torch.nn.Linear(x.shape[1], c).to(dtype)
    opt = torch.optim.Adam(layer.parameters(), lr=lr)
    best, state = -1.0, None
    for _ in range(epochs):
        logits = layer(x)
        before = (logits.argmax(1) == y).double().mean().item()
        loss = torch.nn.functional.cross_entropy(logits, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            after = (layer(x).argmax(1) == y).double().mean().item()
        acc = before if select == "forward_acc" else after
        if acc > best or (latest and acc == best):
            best, state = acc, {k: v.clone() for k, v in layer.state_dict().items()}
    return state


@pytest.mark.parametrize("change", [{}, {"ties": "latest"}, {"select": "forward_acc"},
                                    {"dtype": torch.float64}])
def test_probe_options_match_a_hand_written_loop(change):
    # a small problem whose accuracy plateaus, so that ties and the selection rule matter
    rng = np.random.default_rng(70)
    x = rng.normal(0, 1, (60, 4)).astype(np.float32)
    y = (x[:, 0] + 0.3 * rng.normal(size=60) > 0).astype(np.int64)
    opts = methods.ProbeOptions(epochs=25, lr=0.3, seed=2, **change)
    fit = methods.train_linear_probe(x, y, opts, num_classes=2)
    want = _hand_probe(x, y, 2, 25, 0.3, 2, opts.select, opts.ties == "latest", opts.dtype)
    assert fit.layer.weight.dtype == opts.dtype
    torch.testing.assert_close(fit.layer.weight.detach(), want["weight"], rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(fit.layer.bias.detach(), want["bias"], rtol=1e-6, atol=1e-7)


def test_probe_selection_rules_differ_on_this_problem():
    """The case above is not trivial: the rules pick different epochs there."""
    rng = np.random.default_rng(70)
    x = rng.normal(0, 1, (60, 4)).astype(np.float32)
    y = (x[:, 0] + 0.3 * rng.normal(size=60) > 0).astype(np.int64)
    picked = {methods.train_linear_probe(x, y, methods.ProbeOptions(
        epochs=25, lr=0.3, seed=2, **change), num_classes=2).best_epoch
        for change in ({}, {"ties": "latest"}, {"select": "forward_acc"})}
    assert len(picked) >= 2


def test_the_methods_know_no_profile_file_or_model():
    code = ("import sys, ood_utils.methods, ood_utils.methods.metrics; "
            "bad = sorted(m for m in ('ood_utils.course.models', 'ood_utils.course.profiles', "
            "'ood_utils.course.features', 'ood_utils.answer_key.expected', 'ood_utils.course.plots', 'ood_utils.course._io') "
            "if m in sys.modules); assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)
