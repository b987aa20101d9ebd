"""Answer key of notebook 02 (kNN): every correct way passes both checks, every mistake fails one.

Each variant is a function with the exercise's signature
``knn_scores_exercise(train_feats, test_feats, k=1, chunk_size=2048)``. A correct variant must
pass :func:`ood_utils.answer_key.checks.check_knn` and reach the expected ``knn`` AUROC on the real
``miniclip`` features (:func:`ood_utils.answer_key.checks.check_auroc`). A planted mistake must fail the
self-check with a message naming it, or fail the AUROC check.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.neighbors import NearestNeighbors

from ood_utils.answer_key import checks
from ood_utils.methods import metrics
from ood_utils.course.features import load_features

from ._grader import assert_grader_accepts


# --------------------------------------------------------------------------- correct variants

@torch.no_grad()
def torch_topk_chunked(train_feats, test_feats, k=1, chunk_size=2048):
    train = F.normalize(train_feats.float(), dim=1)
    test = F.normalize(test_feats.float(), dim=1)
    parts = []
    for start in range(0, len(test), chunk_size):
        parts.append((test[start:start + chunk_size] @ train.T).topk(k, dim=1).values[:, k - 1])
    return torch.cat(parts)


@torch.no_grad()
def torch_float64_divide_by_norm_max(train_feats, test_feats, k=1, chunk_size=2048):
    train = train_feats.double()
    train = train / train.norm(dim=1, keepdim=True)
    test = test_feats.double()
    test = test / test.norm(dim=1, keepdim=True)
    out = torch.empty(len(test), dtype=torch.float64)
    for start in range(0, len(test), chunk_size):
        sim = test[start:start + chunk_size] @ train.T
        # k = 1 is the row maximum; other k from topk
        out[start:start + chunk_size] = (sim.max(dim=1).values if k == 1
                                         else sim.topk(k, dim=1).values[:, -1])
    return out


@torch.no_grad()
def torch_kthvalue_while_loop(train_feats, test_feats, k=1, chunk_size=2048):
    train = F.normalize(train_feats, p=2.0, dim=-1)
    parts, start = [], 0
    while start < test_feats.shape[0]:
        query = F.normalize(test_feats[start:start + chunk_size], dim=-1)
        # the k-th largest similarity is the k-th smallest negated similarity
        parts.append(-torch.kthvalue(-(query @ train.T), k, dim=1).values)
        start += chunk_size
    return torch.cat(parts)


def numpy_partition_float32(train_feats, test_feats, k=1, chunk_size=2048):
    train = np.asarray(train_feats, dtype=np.float32)
    test = np.asarray(test_feats, dtype=np.float32)
    train = train / np.linalg.norm(train, axis=1, keepdims=True)
    test = test / np.linalg.norm(test, axis=1, keepdims=True)
    scores = []
    for start in range(0, len(test), chunk_size):
        sim = test[start:start + chunk_size] @ train.T
        scores.append(-np.partition(-sim, k - 1, axis=1)[:, k - 1])
    return np.concatenate(scores)


def numpy_sort_float64_rows_ceil(train_feats, test_feats, k=1, chunk_size=2048):
    train = np.asarray(train_feats, dtype=np.float64)
    test = np.asarray(test_feats, dtype=np.float64)
    train /= np.linalg.norm(train, axis=1)[:, None]
    scores = np.empty(len(test))
    n_chunks = int(np.ceil(len(test) / chunk_size))
    for i in range(n_chunks):
        rows = slice(i * chunk_size, (i + 1) * chunk_size)
        q = test[rows] / np.linalg.norm(test[rows], axis=1)[:, None]
        scores[rows] = np.sort(q @ train.T, axis=1)[:, ::-1][:, k - 1]
    return scores


def sklearn_nearest_neighbors(train_feats, test_feats, k=1, chunk_size=2048):
    nn = NearestNeighbors(n_neighbors=k, metric="cosine", algorithm="brute")
    nn.fit(np.asarray(train_feats))
    distances, _ = nn.kneighbors(np.asarray(test_feats))
    return 1.0 - distances[:, k - 1]  # cosine distance = 1 - cosine similarity


CORRECT = [torch_topk_chunked, torch_float64_divide_by_norm_max, torch_kthvalue_while_loop,
           numpy_partition_float32, numpy_sort_float64_rows_ceil, sklearn_nearest_neighbors]


# --------------------------------------------------------------------------- planted mistakes

@torch.no_grad()
def no_normalisation(train_feats, test_feats, k=1, chunk_size=2048):
    return torch.cat([(test_feats[s:s + chunk_size] @ train_feats.T).topk(k, dim=1).values[:, -1]
                      for s in range(0, len(test_feats), chunk_size)])


@torch.no_grad()
def k_plus_one_neighbour(train_feats, test_feats, k=1, chunk_size=2048):
    train, test = F.normalize(train_feats, dim=1), F.normalize(test_feats, dim=1)
    return torch.cat([(test[s:s + chunk_size] @ train.T).topk(k + 1, dim=1).values[:, k]
                      for s in range(0, len(test), chunk_size)])


@torch.no_grad()
def smallest_similarity(train_feats, test_feats, k=1, chunk_size=2048):
    train, test = F.normalize(train_feats, dim=1), F.normalize(test_feats, dim=1)
    return torch.cat([(test[s:s + chunk_size] @ train.T).topk(k, dim=1, largest=False).values[:, -1]
                      for s in range(0, len(test), chunk_size)])


@torch.no_grad()
def negative_sign(train_feats, test_feats, k=1, chunk_size=2048):
    return -torch_topk_chunked(train_feats, test_feats, k, chunk_size)


@torch.no_grad()
def drops_last_chunk(train_feats, test_feats, k=1, chunk_size=2048):
    train, test = F.normalize(train_feats, dim=1), F.normalize(test_feats, dim=1)
    n_full = max(1, len(test) // chunk_size)  # the remainder is never scored
    return torch.cat([(test[i * chunk_size:(i + 1) * chunk_size] @ train.T).topk(k, dim=1)
                      .values[:, -1] for i in range(n_full)])


@torch.no_grad()
def normalises_wrong_axis(train_feats, test_feats, k=1, chunk_size=2048):
    train, test = F.normalize(train_feats, dim=0), F.normalize(test_feats, dim=0)
    return torch.cat([(test[s:s + chunk_size] @ train.T).topk(k, dim=1).values[:, -1]
                      for s in range(0, len(test), chunk_size)])


@torch.no_grad()
def repeats_first_chunk(train_feats, test_feats, k=1, chunk_size=2048):
    train, test = F.normalize(train_feats, dim=1), F.normalize(test_feats, dim=1)
    parts = []
    for start in range(0, len(test), chunk_size):
        rows = len(test[start:start + chunk_size])
        parts.append((test[:rows] @ train.T).topk(k, dim=1).values[:, -1])
    return torch.cat(parts)


# mistake -> words the self-check's message must contain
MISTAKES = {
    no_normalisation: "not L2-normalised",
    k_plus_one_neighbour: "(k+1)-th neighbour",
    smallest_similarity: "FARTHEST",
    negative_sign: "sign is flipped",
    drops_last_chunk: "last, shorter chunk",
    normalises_wrong_axis: "wrong axis",
    repeats_first_chunk: "first chunk",
}


# --------------------------------------------------------------------------- tests

@pytest.fixture(scope="module")
def feats():
    return load_features("miniclip", progress=False)


def _auroc(fn, feats):
    train = feats["id_train_feats"]
    return metrics.auroc(fn(train, feats["id_test_feats"], k=1),
                         fn(train, feats["ood_test_feats"], k=1))


@pytest.mark.parametrize("fn", CORRECT, ids=lambda f: f.__name__)
def test_correct_variant_passes_both_checks(fn, feats):
    checks.check_knn(fn)
    train = feats["id_train_feats"]
    pair = [fn(train, feats[split], k=1) for split in ("id_test_feats", "ood_test_feats")]
    checks.check_auroc("knn", metrics.auroc(*pair), "miniclip")
    assert_grader_accepts("knn", *pair)  # the score vectors themselves, as the grader judges


@pytest.mark.parametrize("fn", list(MISTAKES), ids=lambda f: f.__name__)
def test_mistake_is_named_by_the_self_check(fn):
    with pytest.raises(AssertionError) as caught:
        checks.check_knn(fn)
    assert MISTAKES[fn] in str(caught.value), str(caught.value)


def test_no_normalisation_also_fails_the_auroc_check(feats):
    # the mistake with the least obvious effect on real features is also caught there
    with pytest.raises(AssertionError, match="knn"):
        checks.check_auroc("knn", _auroc(no_normalisation, feats), "miniclip")


# =========================================================================== the sweep over k

def sweep_per_k(train_feats, test_in, test_out, ks, chunk_size=2048):  # one call per k
    return {k: metrics.auroc(torch_topk_chunked(train_feats, test_in, k, chunk_size),
                             torch_topk_chunked(train_feats, test_out, k, chunk_size))
            for k in ks}


@torch.no_grad()
def sweep_one_topk(train_feats, test_in, test_out, ks, chunk_size=2048):
    bank = F.normalize(train_feats.float(), dim=1)
    tops = []
    for q in (test_in, test_out):
        q = F.normalize(q.float(), dim=1)
        tops.append(torch.cat([(q[s:s + chunk_size] @ bank.T).topk(max(ks), dim=1).values
                               for s in range(0, len(q), chunk_size)]))
    return {k: metrics.auroc(tops[0][:, k - 1], tops[1][:, k - 1]) for k in ks}


def sweep_numpy_sklearn_auc(train_feats, test_in, test_out, ks, chunk_size=2048):
    from sklearn.metrics import roc_auc_score

    out = {}
    for k in ks:
        a = numpy_partition_float32(train_feats, test_in, k, chunk_size)
        b = numpy_partition_float32(train_feats, test_out, k, chunk_size)
        out[k] = 100 * roc_auc_score(np.r_[np.ones(len(a)), np.zeros(len(b))], np.r_[a, b])
    return out


def sweep_sklearn_neighbors(train_feats, test_in, test_out, ks, chunk_size=2048):
    nn = NearestNeighbors(n_neighbors=min(max(ks), len(train_feats)), metric="cosine",
                          algorithm="brute").fit(np.asarray(train_feats))
    sims = [1 - nn.kneighbors(np.asarray(t))[0] for t in (test_in, test_out)]
    return {k: metrics.auroc(sims[0][:, k - 1], sims[1][:, k - 1]) for k in ks}


def sweep_k_plus_one(train_feats, test_in, test_out, ks, chunk_size=2048):
    return {k: metrics.auroc(k_plus_one_neighbour(train_feats, test_in, k, chunk_size),
                             k_plus_one_neighbour(train_feats, test_out, k, chunk_size))
            for k in ks}


def sweep_fractions(train_feats, test_in, test_out, ks, chunk_size=2048):
    return {k: v / 100 for k, v in sweep_per_k(train_feats, test_in, test_out, ks).items()}


def sweep_swapped(train_feats, test_in, test_out, ks, chunk_size=2048):
    return sweep_per_k(train_feats, test_out, test_in, ks)


def sweep_k_ignored(train_feats, test_in, test_out, ks, chunk_size=2048):
    return {k: metrics.auroc(torch_topk_chunked(train_feats, test_in, 1),
                             torch_topk_chunked(train_feats, test_out, 1)) for k in ks}


def sweep_list(train_feats, test_in, test_out, ks, chunk_size=2048):
    return list(sweep_per_k(train_feats, test_in, test_out, ks).values())


SWEEP_CORRECT = [sweep_per_k, sweep_one_topk, sweep_numpy_sklearn_auc, sweep_sklearn_neighbors]
SWEEP_MISTAKES = {
    sweep_k_plus_one: "(k+1)-th neighbour",
    sweep_fractions: "fractions",
    sweep_swapped: "100 minus",
    sweep_k_ignored: "value of the sweep is the same",
    sweep_list: "return a dict",
}


@pytest.fixture(scope="module")
def graded_ks():
    from ood_utils.answer_key.expected import get_sweep_expected

    return tuple(get_sweep_expected("knn_sweep", "miniclip"))


def _sweep_passes(values) -> bool:
    try:
        checks.check_knn_sweep_result(values, "miniclip")
    except AssertionError:
        return False
    return True


def _real_sweep(fn, feats, ks):
    return fn(feats["id_train_feats"], feats["id_test_feats"], feats["ood_test_feats"], ks)


@pytest.mark.parametrize("fn", SWEEP_CORRECT, ids=lambda f: f.__name__)
def test_sweep_correct_variant_passes_both_checks(fn, feats, graded_ks):
    checks.check_knn_sweep(fn)
    assert _sweep_passes(_real_sweep(fn, feats, graded_ks))


@pytest.mark.parametrize("fn", list(SWEEP_MISTAKES), ids=lambda f: f.__name__)
def test_sweep_mistake_is_named_by_the_self_check(fn):
    with pytest.raises(AssertionError) as caught:
        checks.check_knn_sweep(fn)
    assert SWEEP_MISTAKES[fn] in str(caught.value), str(caught.value)


@pytest.mark.parametrize("fn", [sweep_k_plus_one, sweep_fractions, sweep_swapped,
                                sweep_k_ignored], ids=lambda f: f.__name__)
def test_sweep_mistake_also_misses_the_graded_sweep(fn, feats, graded_ks):
    assert not _sweep_passes(_real_sweep(fn, feats, graded_ks))


def test_graded_sweep_names_missing_k_and_ignores_extra_k(feats, graded_ks):
    values = _real_sweep(sweep_one_topk, feats, graded_ks + (2, 20))
    assert _sweep_passes(values)
    del values[graded_ks[-1]]
    with pytest.raises(AssertionError, match=f"k = {graded_ks[-1]}"):
        checks.check_knn_sweep_result(values, "miniclip")


def test_recorded_knn_sweep_is_the_reference_sweep(graded_ks):
    """The recorded miniclip grid equals the reference computed from the cached features (the
    path a profile without a recorded sweep takes); k = 1 is the graded kNN entry."""
    from ood_utils.answer_key.expected import get_expected, get_sweep_expected

    recorded = get_sweep_expected("knn_sweep", "miniclip")
    live = checks.nb02_knn._knn_sweep_reference("miniclip", graded_ks)
    for k, entry in recorded.items():
        assert abs(live[k] - entry.value) <= entry.tol, (k, live[k], entry)
    assert abs(recorded[1].value - get_expected("knn", "miniclip").value) <= 0.1
