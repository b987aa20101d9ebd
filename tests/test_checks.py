"""Tests of the notebook support modules: checks, expected, results, plots, pipeline.

The exercise checks must accept correct solutions written independently of the package (here:
plain numpy / scikit-learn brute force) and reject planted wrong ones with an AssertionError.
"""
from __future__ import annotations

import json
import re

import matplotlib
import numpy as np
import pytest
import torch
from sklearn.cluster import KMeans
from sklearn.metrics import average_precision_score, roc_auc_score

from ood_utils import checks, expected, pipeline, plots, results, scores

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402



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
    checks.check_knn(scores.knn_scores)


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


# ============================================================================ zero-shot MSP

def msp_good(image_embeds, text_embeds, logit_scale):
    logits = float(logit_scale) * unit(np64(image_embeds)) @ unit(np64(text_embeds)).T
    return torch.from_numpy(softmax(logits).max(axis=1))


def msp_float32_torch(image_embeds, text_embeds, logit_scale):
    img = torch.nn.functional.normalize(image_embeds, dim=-1)
    txt = torch.nn.functional.normalize(text_embeds, dim=-1)
    return (logit_scale * img @ txt.T).softmax(dim=-1).max(dim=-1).values


def msp_no_softmax(image_embeds, text_embeds, logit_scale):
    logits = float(logit_scale) * unit(np64(image_embeds)) @ unit(np64(text_embeds)).T
    return torch.from_numpy(logits.max(axis=1))


def msp_no_normalisation(image_embeds, text_embeds, logit_scale):
    logits = float(logit_scale) * np64(image_embeds) @ np64(text_embeds).T
    return torch.from_numpy(softmax(logits).max(axis=1))


def msp_wrong_axis(image_embeds, text_embeds, logit_scale):
    logits = float(logit_scale) * unit(np64(image_embeds)) @ unit(np64(text_embeds)).T
    return torch.from_numpy(softmax(logits, axis=0).max(axis=1))


def msp_full_matrix(image_embeds, text_embeds, logit_scale):
    logits = float(logit_scale) * unit(np64(image_embeds)) @ unit(np64(text_embeds)).T
    return torch.from_numpy(softmax(logits))


def msp_no_scale(image_embeds, text_embeds, logit_scale):
    return msp_good(image_embeds, text_embeds, 1.0)


def test_msp_check_accepts_independent_solutions(capsys):
    checks.check_zero_shot_msp(msp_good)
    checks.check_zero_shot_msp(msp_float32_torch)
    out = capsys.readouterr().out
    assert "msp_good: public checks passed" in out
    assert "msp_float32_torch: public checks passed" in out


@pytest.mark.parametrize("wrong, phrase", [
    (msp_no_softmax, "no softmax"),
    (msp_no_normalisation, "not L2-normalised"),
    (msp_wrong_axis, "over the images"),
    (msp_full_matrix, "whole probability matrix"),
    (msp_no_scale, "logit_scale is not applied"),
])
def test_msp_check_rejects_planted_mistakes(wrong, phrase):
    with pytest.raises(AssertionError, match=re.escape(phrase)):
        checks.check_zero_shot_msp(wrong)


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
    return np.stack([np.einsum("nd,de,ne->n", x - m, prec, x - m) for m in means], axis=1)


def maha_numpy(train_feats, train_labels, test_feats, relative=False, per_class=False,
               weighted=False, sign=-1.0, background=True, sqrt=False):
    """Independent numpy implementation with switches that plant the typical mistakes."""
    x, y, t = np64(train_feats), np.asarray(train_labels), np64(test_feats)
    classes = np.unique(y)
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
    classes = torch.unique(train_labels)
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
    checks.check_mahalanobis(scores.mahalanobis_scores)
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
    labels = KMeans(n_clusters=n_clusters, n_init=3, random_state=seed).fit(x).labels_
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
    checks.check_kmeans_mahalanobis(scores.kmeans_mahalanobis_scores)
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


# ============================================================================ expected table

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
        per_seed = [float(v) for v in re.findall(r"seed \d+: ([0-9.]+)", e.how)]
        assert once or len(per_seed) >= 3, f"{cid}: 'how' must list the measured values"
        vals = [float(once[0])] if once else per_seed
        assert e.tol == pytest.approx(max(0.1, 3 * (max(vals) - min(vals))), abs=0.011), cid
        assert abs(np.mean(vals) - e.value) <= 0.006, cid


def test_get_expected_validates_its_arguments():
    with pytest.raises(ValueError, match="check_id"):
        expected.get_expected("nope", "clip")
    with pytest.raises(ValueError, match="profile"):
        expected.get_expected("knn", "imagenet")


# ============================================================================ results

@pytest.fixture
def results_tmp(tmp_path, monkeypatch):
    monkeypatch.setenv("OOD_RESULTS_DIR", str(tmp_path))
    return tmp_path


def _toy_scores(seed=0, n_in=50, n_out=40, shift=1.0):
    rng = np.random.default_rng(seed)
    return rng.normal(shift, 1, n_in), rng.normal(0, 1, n_out)


def test_record_matches_sklearn_and_merges(results_tmp):
    s_in, s_out = _toy_scores()
    values = results.record("knn", torch.from_numpy(s_in), torch.from_numpy(s_out),
                            profile="miniclip", quiet=True)
    labels = np.r_[np.ones(50), np.zeros(40)]
    pooled = np.r_[s_in, s_out]
    assert values["auroc"] == pytest.approx(roc_auc_score(labels, pooled) * 100)
    assert values["aupr_in"] == pytest.approx(average_precision_score(labels, pooled) * 100)
    assert values["aupr_out"] == pytest.approx(
        average_precision_score(1 - labels, -pooled) * 100)
    thr = np.sort(s_in)[::-1][int(np.ceil(0.95 * 50)) - 1]
    assert values["fpr95"] == pytest.approx(np.mean(s_out >= thr) * 100)

    results.record("msp", *_toy_scores(1, shift=2.0), profile="miniclip", quiet=True)
    data = json.loads((results_tmp / "miniclip.json").read_text())
    assert data["profile"] == "miniclip"
    assert set(data) == {"profile", "aurocs", "fpr95", "aupr_in", "aupr_out", "extra"}
    assert set(data["aurocs"]) == {"knn", "msp"}
    assert data["aurocs"]["knn"] == pytest.approx(values["auroc"], abs=1e-5)
    assert results.load("miniclip")["aurocs"] == data["aurocs"]
    saved = results.load_scores("miniclip")
    np.testing.assert_allclose(saved["knn"][0], s_in)
    np.testing.assert_allclose(saved["knn"][1], s_out)
    assert not list(results_tmp.glob(".*.tmp")), "temporary files left behind"


def test_record_overwrites_one_check_and_rejects_bad_input(results_tmp):
    results.record("md", *_toy_scores(0), profile="miniclip", quiet=True)
    second = results.record("md", *_toy_scores(0, shift=-1.0), profile="miniclip", quiet=True)
    assert results.load("miniclip")["aurocs"]["md"] == pytest.approx(second["auroc"], abs=1e-5)
    with pytest.raises(ValueError, match="check_id"):
        results.record("mdd", *_toy_scores(0), profile="miniclip")
    with pytest.raises(ValueError, match="score_in"):
        results.record("md", np.ones((3, 2)), np.ones(3), profile="miniclip")
    with pytest.raises(ValueError, match="score_out"):
        results.record("md", np.ones(3), np.array([1.0, np.nan]), profile="miniclip")


def test_corrupt_or_foreign_results_file_is_replaced(results_tmp):
    path = results_tmp / "miniclip.json"
    path.write_text("{not json")
    with pytest.warns(UserWarning, match="not a valid results file"):
        assert results.load("miniclip")["aurocs"] == {}
    with pytest.warns(UserWarning):
        results.record("knn", *_toy_scores(), profile="miniclip", quiet=True)
    assert set(json.loads(path.read_text())["aurocs"]) == {"knn"}
    path.write_text(json.dumps({"profile": "clip", "aurocs": {"knn": 1.0}}))
    with pytest.warns(UserWarning, match="profile"):
        assert results.load("miniclip")["aurocs"] == {}
    # entries with unknown ids or non-numbers are dropped, valid ones kept
    path.write_text(json.dumps({"profile": "miniclip", "aurocs": {"knn": 90.0, "bogus": 1.0,
                                                                   "md": "x"}}))
    assert results.load("miniclip")["aurocs"] == {"knn": 90.0}


def test_table_and_format_table(results_tmp, monkeypatch):
    monkeypatch.setitem(expected.EXPECTED["miniclip"], "knn", expected.Expected(80.0, 1.0, "t"))
    monkeypatch.setitem(expected.EXPECTED["miniclip"], "msp", expected.Expected(10.0, 1.0, "t"))
    s_in, s_out = _toy_scores(0, 400, 400, shift=1.19)  # AUROC close to 80
    v = results.record("knn", s_in, s_out, profile="miniclip", quiet=True)["auroc"]
    monkeypatch.setitem(expected.EXPECTED["miniclip"], "knn", expected.Expected(v, 1.0, "t"))
    results.record("msp", s_in, s_out, profile="miniclip", quiet=True)
    rows = {r["check_id"]: r for r in results.table("miniclip")}
    assert list(rows) == list(expected.CHECK_IDS)
    assert rows["knn"]["passed"] is True and rows["msp"]["passed"] is False
    assert rows["md"]["value"] is None and rows["md"]["passed"] is None
    text = results.format_table("miniclip")
    assert "pass" in text and "FAIL" in text and "not run (05_mahalanobis)" in text
    assert "05_mahalanobis" in results.missing_notebooks("miniclip")


def test_extras_are_stored_validated_and_judged(results_tmp, monkeypatch):
    """A check with targets beyond its AUROC (CAC) passes only when every target is met."""
    monkeypatch.setitem(expected.EXPECTED["clip"], "cac", expected.Expected(
        None, None, "t", extra={"known_accepted_seed": (95.0, 1.0),
                                "unknown_rejected_seed": (85.0, 1.0)}))
    s_in, s_out = _toy_scores(0)
    results.record("cac", s_in, s_out, profile="clip", quiet=True,
                   extra={"known_accepted_seed": 95.5, "unknown_rejected_seed": np.float64(84.2)})
    stored = json.loads((results_tmp / "clip.json").read_text())["extra"]["cac"]
    assert stored == {"known_accepted_seed": 95.5, "unknown_rejected_seed": 84.2}
    row = {r["check_id"]: r for r in results.table("clip")}["cac"]
    assert row["passed"] is True and row["expected"] is None
    assert row["extra"]["unknown_rejected_seed"] == (84.2, 85.0, 1.0)
    assert "unknown_rejected_seed: 84.20 (expected 85.00 +/- 1.00)" in results.format_table("clip")

    results.record("cac", s_in, s_out, profile="clip", quiet=True,
                   extra={"known_accepted_seed": 95.5, "unknown_rejected_seed": 80.0})
    assert {r["check_id"]: r for r in results.table("clip")}["cac"]["passed"] is False
    # a number the key needs but nobody recorded fails the check instead of passing it
    results.record("cac", s_in, s_out, profile="clip", quiet=True,
                   extra={"known_accepted_seed": 95.5})
    assert {r["check_id"]: r for r in results.table("clip")}["cac"]["passed"] is False
    for bad in ({"x": float("nan")}, {"x": "95"}, {1: 2.0}, [("x", 1.0)], {"x": True}):
        with pytest.raises(ValueError, match="extra"):
            results.record("cac", s_in, s_out, profile="clip", quiet=True, extra=bad)


# ============================================================================ plots

def test_plots_draw_and_validate():
    s_in, s_out = _toy_scores()
    fig, axes = plt.subplots(1, 3)
    assert plots.score_histograms(s_in, torch.from_numpy(s_out), "t", ax=axes[0]) is axes[0]
    assert plots.roc_curves({"a": (s_in, s_out), "b": (s_out, s_in)}, ax=axes[1]) is axes[1]
    # two methods with their FPR@95TPR dots, the TPR = 95 % line and the chance line
    assert len(axes[1].lines) == 6
    plots.confusion_matrix_plot(np.array([[5, 1], [2, 7]]), ["x", "y"], "cm", ax=axes[2])
    grid = plots.image_grid(np.zeros((5, 8, 8), np.uint8), [str(i) for i in range(5)], ncols=3)
    assert len(grid.axes) == 6
    plots.image_grid(torch.rand(2, 3, 8, 8), None, ncols=2)
    plots.auroc_bars({"a": 70.0, "b": 55.0}, {"a": 71.0})
    plt.close("all")
    with pytest.raises(ValueError, match="curves is empty"):
        plots.roc_curves({})
    with pytest.raises(ValueError, match="square"):
        plots.confusion_matrix_plot(np.ones((2, 3)), ["a", "b"])
    with pytest.raises(ValueError, match="titles"):
        plots.image_grid(np.zeros((2, 4, 4)), ["only one"], ncols=2)
    with pytest.raises(ValueError, match="score_in"):
        plots.score_histograms(np.ones((2, 2)), s_out, "t")


# ============================================================================ pipeline cache

def test_plp_probe_is_trained_once_per_seed_and_reused(tmp_path, monkeypatch):
    monkeypatch.setenv("OOD_FEATURES_DIR", str(tmp_path))
    g = torch.Generator().manual_seed(0)
    feats = {"id_train_feats": torch.randn(60, 5, generator=g),
             "id_test_feats": torch.randn(20, 5, generator=g),
             "ood_test_feats": torch.randn(10, 5, generator=g)}
    monkeypatch.setattr(pipeline, "load_features", lambda p, progress=True: feats)
    logits = {"id_train": torch.randn(60, 3, generator=g), "id_test": torch.randn(20, 3,
                                                                              generator=g)}
    monkeypatch.setattr(pipeline, "zero_shot_logits", lambda p, templates=pipeline.BARE: logits)
    calls = []
    real = scores.train_linear_probe

    def counting(*args, **kwargs):
        calls.append(kwargs["seed"])
        return real(*args, **kwargs)

    monkeypatch.setattr(scores, "train_linear_probe", counting)
    first = pipeline.plp_probe(0, "miniclip", epochs=3, progress=False)
    again = pipeline.plp_probe(0, "miniclip", epochs=3, progress=False)
    other = pipeline.plp_probe(1, "miniclip", epochs=3, progress=False)
    assert calls == [0, 1]
    assert torch.equal(first["weight"], again["weight"])
    assert not torch.equal(first["weight"], other["weight"])
    assert first["id_train"].shape == (60, 3) and first["ood_test"].shape == (10, 3)
    assert torch.equal(first["pseudo_id_train"], logits["id_train"].argmax(1))
    assert first["history_loss"].shape == (3,)
    layer = pipeline.plp_layer(0, "miniclip", epochs=3, progress=False)
    assert torch.allclose(layer(feats["id_test_feats"]), first["id_test"], atol=1e-6)
    assert first["history_train_acc"].shape == (3,) and 1 <= int(first["best_epoch"]) <= 3
