"""Self-checks of notebook 02: the kNN cosine score and the sweep over k."""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from ..registry import compares_with
from ._common import _as_array, _auroc_percent, _check_sweep_result, _close, _compare, _fn_name, _gen, _hide_check_frames, _normalize, _passed, _random_feats, _require_callable, _sweep_hints, _sweep_values

# --------------------------------------------------------------------------- kNN (part III)

@compares_with('methods.knn:knn_scores')
def check_knn(student_fn: Callable) -> None:
    """Self-check of ``knn_scores_exercise(train_feats, test_feats, k=1, chunk_size=...)``.

    Compares with :func:`ood_utils.methods.knn_scores` (cosine similarity to the k-th nearest
    training row) on random float32 tensors whose rows have different lengths, for k = 1 and
    k = 3, a test set larger than the training set, and small ``chunk_size`` values that do
    not divide the number of test rows (so a last, shorter chunk must be handled).
    """
    from ...methods import knn_scores

    _require_callable(student_fn)
    name = _fn_name(student_fn)
    # (n_train, d), (n_test, d), k, seed, chunk_size (None: the function's default)
    cases = [((12, 6), (7, 6), 1, 0, None), ((12, 6), (7, 6), 3, 1, None),
             ((9, 4), (15, 4), 1, 2, None), ((10, 5), (11, 5), 2, 3, 4),
             ((8, 3), (5, 3), 1, 4, 1), ((10, 5), (6, 5), 3, 5, 50)]
    for (n_train, d), (n_test, _), k, seed, chunk in cases:
        train = _random_feats(n_train, d, 10 + seed)
        test = _random_feats(n_test, d, 20 + seed)
        case = f"train {tuple(train.shape)}, test {tuple(test.shape)}, k={k}"
        kwargs = {"k": k}
        if chunk is not None:
            kwargs["chunk_size"] = chunk
            case += f", chunk_size={chunk}"
        try:
            result = student_fn(train.clone(), test.clone(), **kwargs)
        except NotImplementedError:  # the blank exercise: let it say so itself
            raise
        except Exception as err:  # name the case and the likely chunking problem
            size = chunk if chunk is not None else "its default"
            raise AssertionError(
                f"{name} raised {type(err).__name__}: {err} ({case}, chunk_size {size}). With "
                f"fewer test rows than chunk_size there is one chunk, shorter than chunk_size; "
                f"range(0, N_test, chunk_size) gives every chunk start, including the last "
                f"one") from err
        got = _as_array(result, name, "one similarity per test row")
        want = _as_array(knn_scores(train, test, k=k), "knn_scores", "")
        tr, te = train.double().numpy(), test.double().numpy()
        cos = _normalize(te) @ _normalize(tr).T
        dot = te @ tr.T
        dist = np.sqrt(((te[:, None, :] - tr[None, :, :]) ** 2).sum(-1))
        srt = np.sort(cos, axis=1)[:, ::-1]
        col = (te / np.linalg.norm(te, axis=0)) @ (tr / np.linalg.norm(tr, axis=0)).T
        hints = {
            "the sign is flipped: return the similarity itself (higher = more in-distribution)":
                -want,
            "the features are not L2-normalised before the dot product (that is not a cosine)":
                np.sort(dot, axis=1)[:, ::-1][:, k - 1],
            "the features are normalised over the wrong axis: normalise every ROW (dim=1), "
            "so that each feature vector has length 1":
                np.sort(col, axis=1)[:, ::-1][:, k - 1],
            "Euclidean distance instead of cosine similarity":
                -np.sort(dist, axis=1)[:, k - 1],
            "the similarity to the FARTHEST training row: take the largest similarities "
            "(topk, or sort in decreasing order)":
                np.sort(cos, axis=1)[:, k - 1],
            "the (k+1)-th neighbour instead of the k-th: Python counts from 0, so the k-th "
            "largest value is at index k - 1":
                srt[:, k] if k < n_train else None,
            "the mean of the k largest similarities instead of the k-th largest":
                srt[:, :k].mean(axis=1),
            "k is ignored (this is the nearest neighbour, not the k-th nearest)":
                srt[:, 0] if k > 1 else None,
            "the scores are computed per TRAINING row: reduce over the training rows (axis 1)":
                np.sort(cos, axis=0)[::-1][k - 1] if n_test == n_train else None,
        }
        if got.shape == (n_train,) and n_train != n_test:
            raise AssertionError(
                f"{name} returned shape {got.shape}, expected {want.shape} ({case}): one score "
                f"per TEST row; you reduced over the test rows instead of the training rows")
        if chunk is not None and chunk < n_test and got.ndim == 1 and len(got) < n_test:
            full = (n_test // chunk) * chunk
            what = ("the last, shorter chunk is missing" if len(got) == full else
                    f"only {len(got)} rows came back")
            raise AssertionError(
                f"{name} returned {len(got)} scores for {n_test} test rows ({case}): {what}. "
                f"Loop over the chunk starts with range(0, N_test, chunk_size) and slice "
                f"test_feats[start:start + chunk_size], which also covers the last, shorter "
                f"chunk")
        if chunk is not None and got.shape == want.shape and not _close(got, want):
            if _close(np.sort(got), np.sort(want)):
                raise AssertionError(
                    f"{name} returned the right scores in the wrong order ({case}): keep the "
                    f"chunks in the order of the test rows (torch.cat of the parts in loop "
                    f"order)")
            if _close(got[:chunk], want[:chunk]):
                raise AssertionError(
                    f"{name} is right on the first chunk but wrong after it ({case}): every "
                    f"chunk must compare test_feats[start:start + chunk_size] with ALL training "
                    f"rows and write its scores at positions start..start + chunk_size")
        _compare(got, want, name, case, "one score per TEST row", hints)
    _passed(name)








@compares_with('methods.knn:knn_scores')
def check_knn_sweep(student_fn: Callable) -> None:
    """Self-check of ``knn_sweep_exercise(train_feats, test_in, test_out, ks) -> {k: AUROC}``.

    Compared, on small clustered float32 inputs (ID test rows near the training clusters, OOD
    rows in between), with :func:`ood_utils.methods.knn_scores` for every ``k`` and
    scikit-learn's AUROC in percent. The keys must be the values of ``ks``.
    """
    from ...methods import knn_scores

    _require_callable(student_fn)
    name = _fn_name(student_fn)
    for seed, (n_train, n_in, n_out, d), ks in ((0, (40, 15, 12, 6), (1, 2, 5)),
                                                (1, (25, 9, 14, 4), (3, 1, 10))):
        g = _gen(300 + seed)
        centres = torch.randn(4, d, generator=g) * 3
        pick = torch.randint(0, 4, (n_train + n_in,), generator=g)
        rows = centres[pick] + torch.randn(n_train + n_in, d, generator=g)
        train, test_in = rows[:n_train].float(), rows[n_train:].float()
        test_out = (torch.randn(n_out, d, generator=g) * 3).float()
        case = (f"train {tuple(train.shape)}, ID test {tuple(test_in.shape)}, OOD test "
                f"{tuple(test_out.shape)}, ks={list(ks)}")
        result = student_fn(train.clone(), test_in.clone(), test_out.clone(), ks)
        got = _sweep_values(result, list(ks), name, "a dict {k: AUROC in percent}", case)
        want = np.array([_auroc_percent(knn_scores(train, test_in, k=k),
                                        knn_scores(train, test_out, k=k)) for k in ks])
        if _close(got, want, 0, 1e-6):
            continue
        hint = _sweep_hints(got, want)
        if not hint:
            shifted = np.array([_auroc_percent(knn_scores(train, test_in, k=k + 1),
                                               knn_scores(train, test_out, k=k + 1))
                                for k in ks])
            swapped = np.array([_auroc_percent(knn_scores(train, test_out, k=k),
                                               knn_scores(train, test_in, k=k)) for k in ks])
            if _close(got, shifted, 0, 1e-6):
                hint = (" Likely cause: the (k+1)-th neighbour: the k-th largest similarity of "
                        "a topk(kmax) result sits at index k - 1")
            elif _close(got, swapped, 0, 1e-6):
                hint = (" Likely cause: the ID and OOD scores are swapped in the AUROC "
                        "(the ID test scores come first, as positives)")
        i = int(np.argmax(np.abs(got - want)))
        raise AssertionError(f"{name} returned wrong AUROCs ({case}): for k = {ks[i]} it gives "
                             f"{got[i]:.4f}, the reference {want[i]:.4f}.{hint}")
    _passed(name)


def _knn_sweep_reference(profile, ks) -> dict:
    """The reference sweep on the profile's cached features (one topk(max k) per chunk)."""
    from ...course.features import load_features

    feats = load_features(profile, progress=False)
    train = torch.nn.functional.normalize(feats["id_train_feats"].float(), dim=1)
    kmax = max(ks)
    tops = {}
    for split in ("id_test", "ood_test"):
        test = torch.nn.functional.normalize(feats[f"{split}_feats"].float(), dim=1)
        tops[split] = torch.cat([(test[s:s + 2048] @ train.T).topk(kmax, dim=1).values
                                 for s in range(0, len(test), 2048)]).double().numpy()
    return {k: _auroc_percent(tops["id_test"][:, k - 1], tops["ood_test"][:, k - 1]) for k in ks}




@compares_with()
def check_knn_sweep_result(auroc_by_k: dict, profile=None) -> None:
    """Graded check of notebook 02's sweep: ``{k: AUROC}`` against the answer key's sweep.

    Every ``k`` of the recorded grid (:func:`ood_utils.answer_key.expected.get_sweep_expected`) must be in
    the dict and within its tolerance; further keys are the student's own and not graded. For
    a profile without a recorded sweep, the reference sweep is computed from the cached
    features (tolerance 0.1).
    """
    _check_sweep_result("knn_sweep", auroc_by_k, profile, _knn_sweep_reference,
                        lambda k: f"k = {k}")


__all__ = [name for name in dir() if name.startswith("check_")]
_hide_check_frames(globals())  # keep this the last line of the module
