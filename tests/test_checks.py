"""Tests of the exercise self-checks and the AUROC check (ood_utils.answer_key.checks).

The exercise checks must accept correct solutions written independently of the package (here:
plain numpy / scikit-learn brute force) and reject planted wrong ones with an AssertionError.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.cluster import KMeans

from ood_utils.answer_key import checks, expected
from ood_utils import methods


def np64(x):
    return x.detach().double().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, float)


def unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def softmax(z, axis=1):
    e = np.exp(z - z.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


# ============================================================================ kNN

def knn_good(train_feats, test_feats, k=1, chunk_size=None):  # one product: no chunks needed
    sims = unit(np64(test_feats)) @ unit(np64(train_feats)).T
    return torch.from_numpy(-np.sort(-sims, axis=1)[:, k - 1])


def knn_euclidean(train_feats, test_feats, k=1):
    d = torch.cdist(test_feats.float(), train_feats.float())
    return -d.topk(k, dim=1, largest=False).values[:, -1]


def knn_farthest(train_feats, test_feats, k=1):
    sims = unit(np64(test_feats)) @ unit(np64(train_feats)).T
    return torch.from_numpy(np.sort(sims, axis=1)[:, k - 1])


def knn_unnormalised(train_feats, test_feats, k=1):
    return (test_feats @ train_feats.T).topk(k, dim=1).values[:, -1]


def knn_per_train_row(train_feats, test_feats, k=1):
    sims = unit(np64(test_feats)) @ unit(np64(train_feats)).T
    return torch.from_numpy(-np.sort(-sims, axis=0)[k - 1])


def knn_ignores_k(train_feats, test_feats, k=1):
    return knn_good(train_feats, test_feats, k=1)


def knn_mean_topk(train_feats, test_feats, k=1):
    sims = unit(np64(test_feats)) @ unit(np64(train_feats)).T
    return torch.from_numpy(-np.sort(-sims, axis=1)[:, :k].mean(axis=1))


def knn_none(train_feats, test_feats, k=1):
    return None


def test_knn_check_accepts_independent_solution(capsys):
    checks.check_knn(knn_good)
    assert capsys.readouterr().out.strip() == "knn_good: public checks passed"


def test_knn_check_accepts_numpy_output_and_the_reference():
    checks.check_knn(lambda tr, te, k=1, chunk_size=4: knn_good(tr, te, k).numpy())
    checks.check_knn(methods.knn_scores)


@pytest.mark.parametrize("wrong, phrase", [
    (knn_euclidean, "Euclidean"),
    (knn_farthest, "FARTHEST"),
    (knn_unnormalised, "not L2-normalised"),
    (knn_per_train_row, "TEST row"),
    (knn_ignores_k, "k is ignored"),
    (knn_mean_topk, "mean of the k largest"),
    (knn_none, "returned None"),
    (lambda tr, te, k=1: -knn_good(tr, te, k), "sign is flipped"),
    (lambda tr, te, k=1: knn_good(tr, te, k).tolist(), "returned a list"),
])
def test_knn_check_rejects_planted_mistakes(wrong, phrase):
    with pytest.raises(AssertionError, match=re.escape(phrase)):
        checks.check_knn(wrong)


def test_knn_shape_message_names_the_shapes():
    with pytest.raises(AssertionError) as err:
        checks.check_knn(knn_per_train_row)
    msg = str(err.value)
    assert "returned shape (12,), expected (7,)" in msg


def test_check_rejects_non_callable():
    with pytest.raises(TypeError, match="pass your function itself"):
        checks.check_knn(knn_good(torch.ones(2, 2), torch.ones(1, 2)))


# ============================================================================ probe MSP

def probe_good(layer, feats):
    w = layer.weight.detach().double().numpy()
    b = layer.bias.detach().double().numpy()
    return torch.from_numpy(softmax(np64(feats) @ w.T + b).max(axis=1))


def probe_max_logit(layer, feats):
    with torch.no_grad():
        return layer(feats).max(dim=1).values


def probe_wrong_axis(layer, feats):
    with torch.no_grad():
        return layer(feats).softmax(dim=0).max(dim=1).values


def probe_trains(layer, feats):
    out = layer(feats)
    loss = out.sum()
    loss.backward()
    with torch.no_grad():
        for p in layer.parameters():
            p -= 0.1 * p.grad
    return probe_good(layer, feats)


def test_probe_check_accepts_independent_solution(capsys):
    checks.check_probe_msp(probe_good)
    assert "probe_good: public checks passed" in capsys.readouterr().out


@pytest.mark.parametrize("wrong, phrase", [
    (probe_max_logit, "no softmax"),
    (probe_wrong_axis, "over the rows"),
    (probe_trains, "changed the layer's weights"),
])
def test_probe_check_rejects_planted_mistakes(wrong, phrase):
    with pytest.raises(AssertionError, match=re.escape(phrase)):
        checks.check_probe_msp(wrong)


# ============================================================================ Mahalanobis

def _sq_dists(x, means, prec):
    return np.stack([(((x - m) @ prec) * (x - m)).sum(1) for m in means], axis=1)


def maha_numpy(train_feats, train_labels, test_feats, relative=False, per_class=False,
               weighted=False, sign=-1.0, background=True, sqrt=False):
    """Independent numpy implementation with switches that plant the typical mistakes."""
    x, y, t = np64(train_feats), np.asarray(train_labels), np64(test_feats)
    classes = [c for c in np.unique(y) if (y == c).sum() > 1]  # a single sample: no covariance
    means = [x[y == c].mean(0) for c in classes]
    covs = [np.cov(x[y == c], rowvar=False) for c in classes]
    if per_class:
        d = np.stack([_sq_dists(t, [m], np.linalg.inv(cv))[:, 0] for m, cv in zip(means, covs)],
                     axis=1)
    else:
        if weighted:
            centred = np.concatenate([x[y == c] - m for c, m in zip(classes, means)])
            shared = centred.T @ centred / len(x)
        else:
            shared = np.mean(covs, axis=0)
        d = _sq_dists(t, means, np.linalg.inv(shared))
    if sqrt:
        d = np.sqrt(d)
    if relative and background:
        d0 = _sq_dists(t, [x.mean(0)], np.linalg.inv(np.cov(x, rowvar=False)))
        d = d - d0
    return sign * d.min(axis=1)


def maha_good(train_feats, train_labels, test_feats, relative=False):
    return maha_numpy(train_feats, train_labels, test_feats, relative)


def maha_torch_float64_inv(train_feats, train_labels, test_feats, relative=False):
    train_feats, test_feats = train_feats.double(), test_feats.double()
    return maha_torch_float32(train_feats, train_labels, test_feats, relative)


def maha_torch_float32(train_feats, train_labels, test_feats, relative=False):
    classes = [c for c in torch.unique(train_labels) if (train_labels == c).sum() > 1]
    means = torch.stack([train_feats[train_labels == c].mean(0) for c in classes])
    cov = torch.stack([torch.cov(train_feats[train_labels == c].T) for c in classes]).mean(0)
    prec = torch.linalg.inv(cov)
    diff = test_feats[:, None, :] - means[None]
    d = torch.einsum("ncd,de,nce->nc", diff, prec, diff)
    if relative:
        dz = test_feats - train_feats.mean(0)
        d = d - torch.einsum("nd,de,ne->n", dz, torch.linalg.inv(torch.cov(train_feats.T)),
                             dz)[:, None]
    return -d.min(dim=1).values


def test_mahalanobis_check_accepts_independent_solutions(capsys):
    checks.check_mahalanobis(maha_good)
    checks.check_mahalanobis(maha_torch_float64_inv)
    checks.check_mahalanobis(methods.mahalanobis_scores)
    out = capsys.readouterr().out
    assert "maha_good: public checks passed" in out
    assert "maha_torch_float64_inv: public checks passed" in out


def test_mahalanobis_check_rejects_float32_on_a_nearly_singular_covariance():
    with pytest.raises(AssertionError, match="nearly singular covariance"):
        checks.check_mahalanobis(maha_torch_float32)


@pytest.mark.parametrize("planted, phrase", [
    (dict(per_class=True), "one covariance per class"),
    (dict(sign=1.0), "minus sign is missing"),
    (dict(weighted=True), "weighted by class size"),
    (dict(sqrt=True), "square root"),
])
def test_mahalanobis_check_rejects_planted_md_mistakes(planted, phrase):
    def wrong(tr, y, te, relative=False):
        return maha_numpy(tr, y, te, relative, **planted)
    with pytest.raises(AssertionError, match=re.escape(phrase)):
        checks.check_mahalanobis(wrong)


def test_mahalanobis_check_rejects_rmd_without_background():
    def wrong(tr, y, te, relative=False):
        return maha_numpy(tr, y, te, relative, background=False)
    with pytest.raises(AssertionError, match="background term is not subtracted"):
        checks.check_mahalanobis(wrong)


def test_mahalanobis_check_rejects_rmd_with_flipped_sign_only():
    def wrong(tr, y, te, relative=False):
        return maha_numpy(tr, y, te, relative, sign=1.0 if relative else -1.0)
    with pytest.raises(AssertionError, match="relative=True"):
        checks.check_mahalanobis(wrong)


def test_mahalanobis_check_rejects_ignoring_relative():
    def wrong(tr, y, te, relative=False):
        return maha_numpy(tr, y, te, relative=False)
    with pytest.raises(AssertionError, match="relative=True"):
        checks.check_mahalanobis(wrong)


# ============================================================================ k-means + MD

def kmeans_good(train_feats, test_feats, n_clusters, relative=False, seed=0):
    x = np64(train_feats)
    labels = KMeans(n_clusters=n_clusters, n_init=1, random_state=seed,
                    algorithm="lloyd").fit(x.astype(np.float32)).labels_
    return maha_numpy(x, labels, test_feats, relative)


def kmeans_fixed_k(train_feats, test_feats, n_clusters, relative=False, seed=0):
    return kmeans_good(train_feats, test_feats, 3, relative, seed)


def kmeans_no_sign(train_feats, test_feats, n_clusters, relative=False, seed=0):
    return -kmeans_good(train_feats, test_feats, n_clusters, relative, seed)


def kmeans_no_background(train_feats, test_feats, n_clusters, relative=False, seed=0):
    return kmeans_good(train_feats, test_feats, n_clusters, False, seed)


def kmeans_euclidean(train_feats, test_feats, n_clusters, relative=False, seed=0):
    km = KMeans(n_clusters=n_clusters, n_init=3, random_state=seed).fit(np64(train_feats))
    return -km.transform(np64(test_feats)).min(axis=1) ** 2


def test_kmeans_check_accepts_independent_solution(capsys):
    checks.check_kmeans_mahalanobis(kmeans_good)
    checks.check_kmeans_mahalanobis(methods.kmeans_mahalanobis_scores)
    assert "kmeans_good: public checks passed" in capsys.readouterr().out


@pytest.mark.parametrize("wrong", [kmeans_fixed_k, kmeans_no_sign, kmeans_no_background,
                                   kmeans_euclidean])
def test_kmeans_check_rejects_planted_mistakes(wrong):
    with pytest.raises(AssertionError, match="kmeans_"):
        checks.check_kmeans_mahalanobis(wrong)


def test_kmeans_check_names_a_flipped_sign():
    with pytest.raises(AssertionError, match="sign is flipped"):
        checks.check_kmeans_mahalanobis(kmeans_no_sign)


# ============================================================================ check_auroc

def _set_ids(profile):
    return [cid for cid, e in expected.EXPECTED[profile].items() if e.is_set]


@pytest.mark.parametrize("profile", sorted(expected.EXPECTED))
def test_check_auroc_passes_at_the_expected_value_and_at_the_edge(profile, capsys):
    ids = _set_ids(profile)
    assert ids, f"profile {profile} has no targets"
    for cid in ids:
        e = expected.get_expected(cid, profile)
        checks.check_auroc(cid, e.value, profile=profile)
        checks.check_auroc(cid, e.value + 0.99 * e.tol, profile=profile)
        checks.check_auroc(cid, e.value - 0.99 * e.tol, profile=profile)
    out = capsys.readouterr().out
    assert "within tolerance" in out
    assert "all tests passed" not in out.lower()


@pytest.mark.parametrize("profile", sorted(expected.EXPECTED))
def test_check_auroc_fails_outside_the_tolerance(profile):
    for cid in _set_ids(profile):
        e = expected.get_expected(cid, profile)
        for value in (e.value + e.tol + 0.02, e.value - e.tol - 0.02):
            with pytest.raises(AssertionError) as err:
                checks.check_auroc(cid, value, profile=profile)
            msg = str(err.value)
            assert f"{e.value:.2f}" in msg and f"{e.tol:.2f}" in msg and cid in msg


def test_check_auroc_prints_value_expected_and_tolerance(capsys):
    e = expected.get_expected("knn", "clip")
    checks.check_auroc("knn", 83.6, profile="clip")
    out = capsys.readouterr().out
    assert "83.60" in out and f"{e.value:.2f}" in out and f"{e.tol:.2f}" in out


def test_check_auroc_hints_at_fractions_and_flipped_scores():
    with pytest.raises(AssertionError, match="percent"):
        checks.check_auroc("knn", 0.8355, profile="clip")
    with pytest.raises(AssertionError, match="wrong way"):
        checks.check_auroc("knn", 100 - 83.55, profile="clip")


def test_check_auroc_rejects_unknown_ids_missing_targets_and_nan(monkeypatch):
    with pytest.raises(ValueError, match="unknown"):
        checks.check_auroc("knn2", 80.0, profile="clip")
    with pytest.raises(ValueError, match="number"):
        checks.check_auroc("knn", "high", profile="clip")
    with pytest.raises(AssertionError, match="NaN"):
        checks.check_auroc("knn", float("nan"), profile="clip")
    monkeypatch.setitem(expected.EXPECTED["clip"], "knn", expected.Expected(None, None, "x"))
    with pytest.raises(ValueError, match="no target"):
        checks.check_auroc("knn", 80.0, profile="clip")


# ============================================================================ tracebacks

def _raises_in_student_code(train_feats, test_feats, k=1, chunk_size=2048):
    return train_feats @ test_feats  # shapes (n, d) @ (m, d): a RuntimeError in the student's line


def test_every_public_check_hides_its_own_frame():
    import inspect

    public = [getattr(checks, n) for n in dir(checks) if n.startswith("check_")]
    assert public and all(getattr(f, "_hides_frames", False) for f in public)
    for f in public:  # the signature stays the one of the check (for help() and the docs)
        assert "student_fn" in inspect.signature(f).parameters or f.__name__ in (
            "check_auroc", "check_cac_results", "check_knn_sweep_result",
            "check_msp_sweep_result", "check_sweep", "check_threshold_sweep_results"), f.__name__


def test_stripping_leaves_the_students_frame_and_drops_the_checks_frames():
    """In a kernel, the traceback of a failure inside the student's function goes from the
    cell straight to the student's line: no frame of the checks package lies in between."""
    try:
        checks.check_knn(_raises_in_student_code)
    except AssertionError as err:  # check_knn names the case, chained to the RuntimeError
        caught = err
    checks._common._strip_own_frames(caught)
    for e in (caught, caught.__cause__):
        files = []
        tb = e.__traceback__
        while tb is not None:
            files.append(tb.tb_frame.f_code.co_filename)
            tb = tb.tb_next
        here = Path(checks.__file__).parent
        own = [i for i, f in enumerate(files) if Path(f).parent == here]
        assert own in ([], [len(files) - 1]), files  # at most the raising line, last
    names = []
    tb = caught.__cause__.__traceback__
    while tb is not None:
        names.append(tb.tb_frame.f_code.co_name)
        tb = tb.tb_next
    assert "_raises_in_student_code" in names and "check_knn" not in names


# ============================================================================ sweeps (02, 03)

def test_sweep_result_check_reports_each_point(capsys, monkeypatch):
    grid = {1: expected.Expected(80.0, 0.5, "test"), 5: expected.Expected(82.0, 0.5, "test")}
    monkeypatch.setitem(expected.SWEEPS["miniclip"], "knn_sweep", grid)
    checks.check_knn_sweep_result({1: 80.2, 5: 81.6, 7: 10.0}, "miniclip")  # extra k not graded
    out = capsys.readouterr().out
    assert "k = 1: 80.20" in out and "k = 5: 81.60" in out and "k = 7" not in out
    with pytest.raises(AssertionError, match=r"k = 5: 81.40.*outside"):
        checks.check_knn_sweep_result({1: 80.0, 5: 81.4}, "miniclip")
    with pytest.raises(AssertionError, match="fractions"):
        checks.check_knn_sweep_result({1: 0.80, 5: 0.82}, "miniclip")
    with pytest.raises(AssertionError, match="no value for k = 5"):
        checks.check_knn_sweep_result({1: 80.0}, "miniclip")
    with pytest.raises(AssertionError, match="dict"):
        checks.check_knn_sweep_result([80.0, 82.0], "miniclip")


def test_sweep_result_check_without_a_recorded_sweep_uses_the_reference(monkeypatch):
    monkeypatch.setitem(expected.SWEEPS, "miniclip", {})
    monkeypatch.setattr(checks.nb02_knn, "_knn_sweep_reference", lambda p, ks: {k: 70.0 + k for k in ks})
    checks.check_knn_sweep_result({1: 71.05, 3: 72.95}, "miniclip")
    with pytest.raises(AssertionError, match="reference run"):
        checks.check_knn_sweep_result({1: 71.2}, "miniclip")


def test_unknown_sweep_id_is_an_error():
    with pytest.raises(ValueError, match="knn_sweep"):
        expected.get_sweep_expected("k_sweep", "miniclip")


# ============================================================================ check_sweep (04-06)

@pytest.mark.parametrize("sweep_id", ["plp_temperature", "md_shrinkage", "kmeans_k"])
def test_check_sweep_passes_at_the_targets_and_fails_outside(sweep_id, capsys):
    targets = expected.get_sweep(sweep_id, "miniclip")
    assert targets and all(e.is_set for e in targets.values())
    checks.check_sweep(sweep_id, {s: e.value for s, e in targets.items()}, profile="miniclip")
    assert capsys.readouterr().out.count("within tolerance") == len(targets)
    setting, e = next(iter(targets.items()))
    off = {s: t.value for s, t in targets.items()} | {setting: e.value + e.tol + 0.05}
    with pytest.raises(AssertionError, match=re.escape(f"{setting}")):
        checks.check_sweep(sweep_id, off, profile="miniclip")


def test_check_sweep_names_missing_settings_unknown_sweeps_and_unmeasured_profiles():
    targets = expected.get_sweep("md_shrinkage", "miniclip")
    partial = {s: e.value for s, e in list(targets.items())[1:]}
    with pytest.raises(ValueError, match="no recorded value"):
        checks.check_sweep("md_shrinkage", partial, profile="miniclip")
    with pytest.raises(ValueError, match="unknown"):
        checks.check_sweep("md_shrink", {}, profile="miniclip")
    with pytest.raises(ValueError, match="no target"):
        checks.check_sweep("md_shrinkage", {s: 90.0 for s in targets}, profile="clip")
    with pytest.raises(ValueError, match="dict"):
        checks.check_sweep("md_shrinkage", [90.0], profile="miniclip")


def test_sweep_targets_follow_the_deterministic_floor_where_no_seed_enters():
    for setting, e in expected.get_sweep("md_shrinkage", "miniclip").items():
        assert e.tol == 0.1 and "deterministic" in e.how, setting
    # the graded k-means settings of notebook 06 are exactly those with a target
    from ood_utils.course import sweeps
    assert tuple(expected.get_sweep("kmeans_k", "miniclip")) == sweeps.KMEANS_GRADED
    assert tuple(expected.get_sweep("plp_temperature", "miniclip")) == sweeps.PROBE_TEMPERATURES
    assert tuple(expected.get_sweep("md_shrinkage", "miniclip")) == sweeps.SHRINKAGES


def test_sweep_references_agree_with_an_independent_computation():
    """ood_utils.course.sweeps against scikit-learn's AUROC and a NumPy Mahalanobis on a toy case."""
    from sklearn.metrics import roc_auc_score

    from ood_utils.course import sweeps

    g = torch.Generator().manual_seed(3)
    train = torch.randn(120, 3, generator=g) * torch.tensor([3.0, 1.0, 0.3])
    labels = torch.arange(120) % 3
    train = train + labels[:, None].float() * 2
    t_in, t_out = torch.randn(20, 3, generator=g), torch.randn(15, 3, generator=g) * 3
    got = sweeps.shrinkage_sweep(train, labels, t_in, t_out, (0.0, 0.5, 1.0))
    x = train.double().numpy()
    groups = [x[labels.numpy() == c] for c in range(3)]
    cov = np.mean([np.cov(gr, rowvar=False) for gr in groups], axis=0)
    for a, value in got.items():
        prec = np.linalg.inv((1 - a) * cov + a * np.trace(cov) / 3 * np.eye(3))
        def md(t):
            t = t.double().numpy()
            return -np.min([(((t - gr.mean(0)) @ prec) * (t - gr.mean(0))).sum(1)
                            for gr in groups], axis=0)
        y = np.r_[np.ones(20), np.zeros(15)]
        want = roc_auc_score(y, np.r_[md(t_in), md(t_out)]) * 100
        assert abs(value - want) < 1e-9, a
