"""Answer key of notebook 06: the k-means exercises.

Correct cluster-id functions (torch or NumPy input, ``fit`` or ``fit_predict``, any integer
type) and correct compositions with every family of Mahalanobis variants pass the self-checks
and the six AUROC checks on the real ``miniclip`` features (k = 10, 50, 100, MD and RMD, with
the course's fixed k-means settings); planted mistakes fail with a message that names them.
k-means is fitted once per k (module fixture); about a minute and a half on one thread.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.cluster import KMeans

from ood_utils.answer_key import checks
from ood_utils.methods import metrics
from ood_utils import methods
from ood_utils.course.features import load_features

from ._grader import assert_kmeans_accepted

from . import _maha_variants as V

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


# ------------------------------------------------------------------ cluster ids

def ids_torch(train_feats, n_clusters, seed=0):
    km = KMeans(n_clusters=n_clusters, random_state=seed, n_init=1, algorithm="lloyd")
    return torch.from_numpy(km.fit(train_feats.numpy()).labels_.astype(np.int64))


def ids_fit_predict(train_feats, n_clusters, seed=0):
    x = np.asarray(train_feats)
    ids = KMeans(n_clusters, random_state=seed, n_init=1, algorithm="lloyd").fit_predict(x)
    return torch.as_tensor(ids).long()


def ids_settings_dict(train_feats, n_clusters, seed=0):
    settings = dict(methods.KMEANS_SETTINGS, random_state=seed)
    labels = KMeans(n_clusters=n_clusters, **settings).fit(train_feats.numpy()).labels_
    return torch.from_numpy(labels.astype(np.int64))


def ids_float64_input(train_feats, n_clusters, seed=0):
    """Against the notebook's advice, float64: accepted where the partition is the same,
    and the AUROC targets include it (see expected.py)."""
    km = KMeans(n_clusters=n_clusters, random_state=seed, n_init=1, algorithm="lloyd")
    return torch.from_numpy(km.fit(train_feats.double().numpy()).labels_.astype(np.int64))


def ids_numpy(train_feats, n_clusters, seed=0):
    km = KMeans(n_clusters=n_clusters, random_state=seed, n_init=1, algorithm="lloyd")
    return km.fit(train_feats.numpy()).labels_


def ids_int32(train_feats, n_clusters, seed=0):
    return torch.from_numpy(ids_numpy(train_feats, n_clusters, seed))


def ids_wrong_n_init(train_feats, n_clusters, seed=0):
    km = KMeans(n_clusters, random_state=seed, n_init=10).fit(train_feats.numpy())
    return torch.from_numpy(km.labels_.astype(np.int64))


def ids_wrong_seed(train_feats, n_clusters, seed=0):
    km = KMeans(n_clusters, random_state=42, n_init=1).fit(train_feats.numpy())
    return torch.from_numpy(km.labels_.astype(np.int64))


def ids_of_test_rows(train_feats, n_clusters, seed=0):
    km = KMeans(n_clusters, random_state=seed, n_init=1).fit(train_feats.numpy())
    return km.labels_[: len(train_feats) // 2]


@pytest.mark.parametrize("fn", [ids_torch, ids_fit_predict, ids_settings_dict],
                         ids=lambda f: f.__name__)
def test_correct_cluster_ids_pass(fn, capsys):
    checks.check_kmeans_cluster_ids(fn)
    assert "public checks passed" in capsys.readouterr().out


@pytest.mark.parametrize("fn, phrase", [
    (ids_wrong_n_init, "another partition"),
    (ids_wrong_seed, "another partition"),
    (ids_of_test_rows, "shape"),
    (ids_numpy, "NumPy array"),
    (ids_int32, "int64"),
], ids=lambda x: getattr(x, "__name__", ""))
def test_wrong_cluster_ids_fail(fn, phrase):
    with pytest.raises(AssertionError, match=phrase):
        checks.check_kmeans_cluster_ids(fn)


# ------------------------------------------------------------------ composition

def compose(ids_fn, maha_fn):
    def kmeans_mahalanobis(train_feats, test_feats, n_clusters, relative=False, seed=0):
        ids = ids_fn(train_feats, n_clusters, seed=seed)
        return maha_fn(train_feats, ids, test_feats, relative=relative)
    kmeans_mahalanobis.__name__ = f"{ids_fn.__name__}+{maha_fn.__name__}"
    return kmeans_mahalanobis


def wrong_fit_on_test(train_feats, test_feats, n_clusters, relative=False, seed=0):
    km = KMeans(n_clusters, random_state=seed, n_init=1).fit(test_feats.numpy())
    return V.maha_np_pinv(train_feats, km.predict(train_feats.numpy()), test_feats, relative)


def wrong_ignores_seed(train_feats, test_feats, n_clusters, relative=False, seed=0):
    ids = ids_torch(train_feats, n_clusters, seed=0)  # the seed argument is never passed on
    return V.maha_torch_pinv(train_feats, ids, test_feats, relative)


COMPOSED = [compose(ids_torch, fn) for fn in V.CORRECT] + [
    compose(ids_fit_predict, V.maha_np_inv_loop), compose(ids_float64_input, V.maha_torch_pinv)]
WRONG = [
    (wrong_fit_on_test, "fitted on the TEST features"),
    (compose(ids_torch, V.wrong_pooled), "not this course's convention"),
    (compose(ids_torch, V.wrong_sign), "sign is flipped"),
    (compose(ids_torch, V.wrong_per_class_cov), "one covariance per class"),
    (compose(ids_torch, V.wrong_bg_from_test), "fitted to the TEST features"),
    (wrong_ignores_seed, "seed` argument is not used"),
]


def test_a_single_sample_cluster_kept_is_caught_before_the_kmeans_cells():
    """k-means rarely leaves a cluster with one row on the check's blobs, but on the real
    features it can: the mistake is caught by 06's first self-check, the same
    check_mahalanobis as in 05, which has a single-sample class."""
    with pytest.raises(AssertionError, match="single training sample was kept"):
        checks.check_mahalanobis(V.wrong_single_kept)
    with pytest.raises(AssertionError, match="single training sample was kept"):
        checks.check_class_statistics(V.stats_single_kept_guarded)


@pytest.mark.parametrize("fn", COMPOSED, ids=lambda f: f.__name__)
def test_correct_composition_passes_the_selfcheck(fn, capsys):
    checks.check_kmeans_mahalanobis(fn)
    assert "public checks passed" in capsys.readouterr().out


@pytest.mark.parametrize("fn, phrase", WRONG, ids=lambda x: getattr(x, "__name__", ""))
def test_planted_mistake_fails_with_a_message_naming_it(fn, phrase):
    with pytest.raises(AssertionError, match=phrase):
        checks.check_kmeans_mahalanobis(fn)


# ------------------------------------------------------------------ the real features

@pytest.fixture(scope="module")
def real():
    feats = load_features("miniclip", progress=False)
    tr, te, oo = methods.drop_degenerate_directions(
        feats["id_train_feats"], feats["id_test_feats"], feats["ood_test_feats"])
    ids = {k: ids_torch(tr, k) for k in (10, 50, 100)}
    return tr, torch.cat([te, oo]), len(te), ids


@pytest.mark.parametrize("k", (10, 50, 100))
def test_correct_variants_reach_the_targets(k, real):
    tr, both, n_in, ids = real
    # the loops cost one (M, D) product per cluster: only for k = 10
    variants = V.CORRECT if k == 10 else V.VECTORISED
    for fn in variants:
        scores = {}
        for relative in (False, True):
            s = torch.as_tensor(fn(tr, ids[k], both, relative=relative)).double().numpy()
            cid = f"kmeans{k}_{'rmd' if relative else 'md'}"
            checks.check_auroc(cid, metrics.auroc(s[:n_in], s[n_in:]), profile="miniclip")
            scores[relative] = s
        assert_kmeans_accepted(tr, both, ids[k], k, scores[False], scores[True])


def test_cluster_id_variants_agree_on_the_real_features(real):
    tr, _, _, ids = real
    from sklearn.metrics import adjusted_rand_score

    assert adjusted_rand_score(ids[10], ids_fit_predict(tr, 10)) == 1.0
    assert adjusted_rand_score(ids[10], ids_settings_dict(tr, 10)) == 1.0


def test_float64_kmeans_input_reaches_the_targets(real):
    """A different partition (another local optimum) but inside every tolerance."""
    tr, both, n_in, _ = real
    ids = ids_float64_input(tr, 10)
    scores = {}
    for relative in (False, True):
        s = methods.mahalanobis_scores(tr, ids, both, relative=relative)
        cid = f"kmeans10_{'rmd' if relative else 'md'}"
        checks.check_auroc(cid, metrics.auroc(s[:n_in], s[n_in:]), profile="miniclip")
        scores[relative] = s
    assert_kmeans_accepted(tr, both, ids, 10, scores[False], scores[True])


# ------------------------------------------------------------------ the sweep over k (Exercise 4)

def sweep_of(ids_fn, maha_fn):
    def kmeans_sweep(train_feats, test_feats, ks, seed=0):
        out = {}
        for k in ks:
            ids = ids_fn(train_feats, k, seed=seed)
            out[k] = {"cluster_ids": ids, "md": maha_fn(train_feats, ids, test_feats),
                      "rmd": maha_fn(train_feats, ids, test_feats, relative=True)}
        return out
    kmeans_sweep.__name__ = f"sweep_{ids_fn.__name__}+{maha_fn.__name__}"
    return kmeans_sweep


def sweep_swapped(train_feats, test_feats, ks, seed=0):
    out = sweep_of(ids_torch, V.maha_torch_pinv)(train_feats, test_feats, ks, seed)
    return {k: {"cluster_ids": v["cluster_ids"], "md": v["rmd"], "rmd": v["md"]}
            for k, v in out.items()}


def sweep_skips_one(train_feats, test_feats, ks, seed=0):
    # a sweep that leaves out k = 1 because "k-means needs two clusters"
    return sweep_of(ids_torch, V.maha_torch_pinv)(train_feats, test_feats,
                                                    [k for k in ks if k > 1], seed)


SWEEPS = [sweep_of(ids_torch, V.maha_torch_pinv), sweep_of(ids_fit_predict, V.maha_np_pinv),
          sweep_of(ids_settings_dict, V.maha_seed_shape)]


@pytest.mark.parametrize("fn", SWEEPS, ids=lambda f: f.__name__)
def test_correct_sweeps_pass_the_selfcheck(fn, capsys):
    checks.check_kmeans_sweep(fn)
    assert "public checks passed" in capsys.readouterr().out


@pytest.mark.parametrize("fn, phrase", [(sweep_swapped, "swapped"),
                                        (sweep_skips_one, "one entry per k")],
                         ids=lambda x: getattr(x, "__name__", ""))
def test_sweep_mistakes_are_named(fn, phrase):
    with pytest.raises(AssertionError, match=phrase):
        checks.check_kmeans_sweep(fn)


def test_correct_sweep_reaches_the_sweep_targets(real):
    """k = 1 and 3 on the real features (10, 50, 100 are the AUROC checks above)."""
    tr, both, n_in, _ = real
    for fn in SWEEPS[:2]:
        out = fn(tr, both, (1, 3), seed=0)
        got = {}
        for k in (1, 3):
            for kind in ("md", "rmd"):
                s = torch.as_tensor(out[k][kind]).double().numpy()
                got[f"k={k} {kind}"] = metrics.auroc(s[:n_in], s[n_in:])
        checks.check_sweep("kmeans_k", {s: got[s] for s in ("k=1 md", "k=3 md", "k=3 rmd")},
                           profile="miniclip")
        # one cluster is the background Gaussian: RMD is zero up to rounding
        rmd1 = torch.as_tensor(out[1]["rmd"]).double().abs().max().item()
        md1 = torch.as_tensor(out[1]["md"]).double().abs().median().item()
        assert rmd1 < 1e-6 * md1
