"""Public self-checks of the notebook exercises, and the AUROC check of every graded result.

``check_<exercise>(student_fn)`` runs the student's function and the reference implementation
of :mod:`ood_utils.scores` on small random inputs (fixed seeds, a few cases each) and compares
type, shape and values. On a mismatch it raises ``AssertionError`` whose message says what
differs and, where a typical mistake explains the numbers, which one. Otherwise it prints
``"<function name>: public checks passed"``. These checks are public and not exhaustive: the
graded AUROC checks on the real features come on top.

:func:`check_auroc` compares a measured AUROC with the answer key (:mod:`ood_utils.expected`).
"""
from __future__ import annotations

import contextlib
import io
from typing import Any, Callable

import numpy as np
import torch

from .expected import get_expected
from .profiles import get_profile
from .streams import route_warnings_to_stdout

route_warnings_to_stdout()  # inside a kernel only: see ood_utils.streams

# A failed self-check should point at the student's line, not at this file. IPython skips a
# frame whose locals hold ``__tracebackhide__ = True`` (pytest does too), except the last one,
# which shows the line that raised and so the message. Every public ``check_*`` function is
# wrapped at the end of this module by :func:`_hide_check_frames`: the wrapper marks its own
# frame hidden and, inside a Jupyter kernel, removes the frames of this file that lie between
# the notebook cell and the student's code (the reference and the helpers it called) from the
# traceback of whatever the check raises, and from the tracebacks chained to it. A new check
# needs nothing of its own; helpers may also set ``__tracebackhide__ = True`` themselves.


def _strip_own_frames(err: BaseException) -> None:
    """Drop this module's frames from ``err``'s traceback (and its chain), keeping the last."""
    seen = set()
    todo = [err]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        frames = []
        tb = e.__traceback__
        while tb is not None:
            frames.append(tb)
            tb = tb.tb_next
        kept = [t for i, t in enumerate(frames)
                if t.tb_frame.f_code.co_filename != __file__ or i == len(frames) - 1]
        if kept and len(kept) < len(frames):
            for a, b in zip(kept, kept[1:] + [None]):
                a.tb_next = b
            e.__traceback__ = kept[0]
        todo += [e.__cause__, e.__context__]


def _hide_check_frames(namespace: dict) -> None:
    """Wrap every public ``check_*`` function of ``namespace`` (see the comment above)."""
    import functools

    from .streams import in_kernel

    def wrap(fn):
        @functools.wraps(fn)
        def check(*args, **kwargs):
            __tracebackhide__ = True  # noqa: F841 (read by IPython and pytest)
            try:
                return fn(*args, **kwargs)
            except BaseException as err:
                if in_kernel():
                    _strip_own_frames(err)
                raise

        check._hides_frames = True
        return check

    for name, obj in list(namespace.items()):
        if name.startswith("check_") and callable(obj) and not getattr(obj, "_hides_frames",
                                                                       False) \
                and getattr(obj, "__module__", None) == __name__:
            namespace[name] = wrap(obj)

# values are compared with |got - want| <= ATOL + RTOL * |want| (float32 work is fine)
RTOL = 1e-3
ATOL = 1e-4


# --------------------------------------------------------------------------- helpers

def _fn_name(fn: Callable) -> str:
    return getattr(fn, "__name__", type(fn).__name__)


def _require_callable(fn: Any) -> None:
    if not callable(fn):
        raise TypeError(f"pass your function itself (e.g. check_knn(knn_scores_exercise)), "
                        f"not {type(fn).__name__}")
    from sys import _getframe  # warn early when fn uses the reference (the grader gives 0)
    from .integrity import warn_if_suspicious
    warn_if_suspicious(fn, _getframe(1).f_code.co_name)


def _passed(name: str) -> None:
    print(f"{name}: public checks passed")


def _as_array(result: Any, name: str, what: str) -> np.ndarray:
    """The student's result as float64 numpy, or an AssertionError saying what came back."""
    if result is None:
        raise AssertionError(
            f"{name} returned None: complete the code between '### START CODE HERE ###' and "
            f"'### END CODE HERE ###' so that it returns {what}")
    if isinstance(result, tuple):
        raise AssertionError(f"{name} returned a tuple of {len(result)} items; return only {what}")
    if isinstance(result, torch.Tensor):
        return result.detach().cpu().double().numpy()
    if isinstance(result, np.ndarray):
        if not np.issubdtype(result.dtype, np.number):
            raise AssertionError(f"{name} returned an array of dtype {result.dtype}; "
                                 f"expected numbers ({what})")
        return result.astype(np.float64)
    raise AssertionError(f"{name} returned a {type(result).__name__}; expected a torch tensor "
                         f"or numpy array ({what})")


def _close(a: np.ndarray, b: np.ndarray, rtol: float = RTOL, atol: float = ATOL) -> bool:
    return a.shape == b.shape and bool(np.all(np.abs(a - b) <= atol + rtol * np.abs(b)))


def _compare(got: np.ndarray, want: np.ndarray, name: str, case: str, per_row: str,
             hints: dict[str, np.ndarray] | None = None, rtol: float = RTOL,
             atol: float = ATOL) -> None:
    """Assert equal shape and values; name the likely mistake when a hint matches."""
    if got.shape != want.shape:
        raise AssertionError(f"{name} returned shape {got.shape}, expected {want.shape} "
                             f"({case}): {per_row}")
    if not np.all(np.isfinite(got)):
        raise AssertionError(f"{name} returned NaN or infinite values ({case})")
    if _close(got, want, rtol, atol):
        return
    hint = ""
    for message, candidate in (hints or {}).items():
        if candidate is not None and _close(got, np.asarray(candidate, dtype=np.float64),
                                            rtol, atol):
            hint = f" Likely cause: {message}."
            break
    i = int(np.argmax(np.abs(got - want)))
    raise AssertionError(
        f"{name} returned wrong values ({case}): entry {i} is {got.flat[i]:.6g}, the reference "
        f"gives {want.flat[i]:.6g} (largest difference {np.max(np.abs(got - want)):.3g}).{hint}")


def _normalize(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _softmax(z: np.ndarray, axis: int = 1) -> np.ndarray:
    z = z - z.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _random_feats(n: int, d: int, seed: int) -> torch.Tensor:
    """Random float32 rows with clearly different lengths (so cosine != dot product)."""
    g = _gen(seed)
    x = torch.randn(n, d, generator=g)
    scale = torch.rand(n, 1, generator=g) * 4.5 + 0.5
    return (x * scale).float()


# --------------------------------------------------------------------------- kNN (part III)

def check_knn(student_fn: Callable) -> None:
    """Self-check of ``knn_scores_exercise(train_feats, test_feats, k=1, chunk_size=...)``.

    Compares with :func:`ood_utils.scores.knn_scores` (cosine similarity to the k-th nearest
    training row) on random float32 tensors whose rows have different lengths, for k = 1 and
    k = 3, a test set larger than the training set, and small ``chunk_size`` values that do
    not divide the number of test rows (so a last, shorter chunk must be handled).
    """
    from .scores import knn_scores

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


def _auroc_percent(s_in: Any, s_out: Any) -> float:
    """AUROC in percent, ID positive (scikit-learn, independent of ood_utils.metrics)."""
    from sklearn.metrics import roc_auc_score

    s_in, s_out = np.asarray(s_in, dtype=np.float64), np.asarray(s_out, dtype=np.float64)
    labels = np.r_[np.ones(len(s_in)), np.zeros(len(s_out))]
    return float(roc_auc_score(labels, np.r_[s_in, s_out]) * 100)


def _sweep_values(result: Any, keys: list, name: str, what: str, case: str) -> np.ndarray:
    """The student's sweep as float64 values in the order of ``keys`` (a dict keyed by them)."""
    if result is None:
        raise AssertionError(f"{name} returned None ({case}): complete the code between "
                             "'### START CODE HERE ###' and '### END CODE HERE ###' so that "
                             f"it returns {what}")
    if not isinstance(result, dict):
        raise AssertionError(f"{name} returned a {type(result).__name__} ({case}); return "
                             f"{what}")
    missing = [k for k in keys if k not in result]
    if missing:
        raise AssertionError(f"{name} returned no value for {missing} ({case}): {what}, every "
                             f"value of the sweep as a key (got the keys {list(result)})")
    try:
        return np.array([float(result[k]) for k in keys])
    except (TypeError, ValueError):
        raise AssertionError(f"{name} returned values that are not numbers ({case}): one AUROC "
                             "(a float, in percent) per key") from None


def _sweep_hints(got: np.ndarray, want: np.ndarray) -> str:
    """The typical mistakes of a sweep of AUROCs, as a sentence (or '')."""
    if np.all(got <= 1.0) and _close(got * 100, want, 0, 1e-6 + 0.01):
        return " Likely cause: the AUROCs are fractions; report them in percent (times 100)."
    if _close(100 - got, want, 0, 0.01):
        return (" Likely cause: 100 minus it would match: the scores point the wrong way "
                "(higher must mean more in-distribution).")
    if np.ptp(got) <= 1e-9 and np.ptp(want) > 1e-6:
        return (" Likely cause: every value of the sweep is the same: the swept setting never "
                "reaches the score (pass it on in each step of the loop).")
    return ""


def check_knn_sweep(student_fn: Callable) -> None:
    """Self-check of ``knn_sweep_exercise(train_feats, test_in, test_out, ks) -> {k: AUROC}``.

    Compared, on small clustered float32 inputs (ID test rows near the training clusters, OOD
    rows in between), with :func:`ood_utils.scores.knn_scores` for every ``k`` and
    scikit-learn's AUROC in percent. The keys must be the values of ``ks``.
    """
    from .scores import knn_scores

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
    from .features import load_features

    feats = load_features(profile, progress=False)
    train = torch.nn.functional.normalize(feats["id_train_feats"].float(), dim=1)
    kmax = max(ks)
    tops = {}
    for split in ("id_test", "ood_test"):
        test = torch.nn.functional.normalize(feats[f"{split}_feats"].float(), dim=1)
        tops[split] = torch.cat([(test[s:s + 2048] @ train.T).topk(kmax, dim=1).values
                                 for s in range(0, len(test), 2048)]).double().numpy()
    return {k: _auroc_percent(tops["id_test"][:, k - 1], tops["ood_test"][:, k - 1]) for k in ks}


def _check_sweep_result(sweep_id: str, values: dict, profile, reference, label,
                        extra_hint=None) -> None:
    """Compare a recorded sweep {key: AUROC} with the answer key's (or the reference's) sweep."""
    from .expected import get_sweep_expected

    p = get_profile(profile)
    if not isinstance(values, dict):
        raise AssertionError(f"{sweep_id}: expected the dict your sweep returned "
                             f"({{setting: AUROC}}), got {type(values).__name__}")
    targets = get_sweep_expected(sweep_id, p)
    keys = list(targets) if targets else None
    if keys is None:  # no recorded sweep for this profile: the reference's, computed here
        keys = list(values)
        live = reference(p, keys)
        targets = {k: (live[k], 0.1) for k in keys}
        source = "the reference run on this profile's features (no recorded sweep)"
    else:
        targets = {k: (e.value, e.tol) for k, e in targets.items()}
        source = "ood_utils/expected.py"
    missing = [label(k) for k in keys if k not in values]
    if missing:
        raise AssertionError(f"{sweep_id}: your sweep has no value for {', '.join(missing)}; "
                             f"the graded grid is {', '.join(label(k) for k in keys)}")
    lines, wrong = [], []
    for k in keys:
        try:
            v = float(values[k])
        except (TypeError, ValueError):
            raise AssertionError(f"{sweep_id}: the value for {label(k)} is not a number") from None
        want, tol = targets[k]
        ok = np.isfinite(v) and abs(v - want) <= tol + 1e-9
        lines.append(f"  {label(k)}: {v:.2f}, expected {want:.2f} +/- {tol:.2f}"
                     + ("" if ok else "  <- outside"))
        if not ok:
            wrong.append((k, v, want, tol))
    report = "\n".join(lines)
    if wrong:
        got = np.array([w[1] for w in wrong])
        want = np.array([w[2] for w in wrong])
        hint = _sweep_hints(got, want) if len(wrong) > 1 else ""
        if not hint and extra_hint is not None:
            hint = extra_hint(wrong)
        raise AssertionError(f"{sweep_id}: {len(wrong)} of {len(keys)} values of your sweep "
                             f"differ from {source} ({p.name}):\n{report}\n{hint.strip()}")
    print(f"{sweep_id}: all {len(keys)} values within tolerance ({p.name}, {source})\n{report}")


def check_knn_sweep_result(auroc_by_k: dict, profile=None) -> None:
    """Graded check of notebook 02's sweep: ``{k: AUROC}`` against the answer key's sweep.

    Every ``k`` of the recorded grid (:func:`ood_utils.expected.get_sweep_expected`) must be in
    the dict and within its tolerance; further keys are the student's own and not graded. For
    a profile without a recorded sweep, the reference sweep is computed from the cached
    features (tolerance 0.1).
    """
    _check_sweep_result("knn_sweep", auroc_by_k, profile, _knn_sweep_reference,
                        lambda k: f"k = {k}")


# --------------------------------------------------------------------------- MSP (part IV)

def _zero_shot_reference(image_embeds: torch.Tensor, text_embeds: torch.Tensor,
                         logit_scale: float) -> np.ndarray:
    from .scores import msp_scores

    img = torch.nn.functional.normalize(image_embeds.double(), dim=1)
    txt = torch.nn.functional.normalize(text_embeds.double(), dim=1)
    return _as_array(msp_scores(float(logit_scale) * img @ txt.T), "msp_scores", "")


def check_zero_shot_msp(student_fn: Callable) -> None:
    """Self-check of ``zero_shot_msp_exercise(image_embeds, text_embeds, logit_scale)``.

    The expected result is the maximum softmax probability over classes of
    ``logit_scale * cos(image_i, text_c)``, one value per image (reference:
    :func:`ood_utils.scores.msp_scores` on those logits). Inputs are random, not unit length,
    and ``logit_scale`` is given both as a float and as a 0-d tensor.
    """
    _require_callable(student_fn)
    name = _fn_name(student_fn)
    cases = [(8, 5, 6, 100.0, 0), (11, 3, 4, torch.tensor(30.0), 1), (5, 7, 6, 1.0, 2)]
    for n, c, e, scale, seed in cases:
        img = _random_feats(n, e, 30 + seed)
        txt = _random_feats(c, e, 40 + seed)
        s = float(scale)
        case = f"{n} images, {c} classes, embed dim {e}, logit_scale={s:g}"
        got = _as_array(student_fn(img.clone(), txt.clone(), scale), name,
                        "one maximum softmax probability per image")
        want = _zero_shot_reference(img, txt, s)
        im, tx = img.double().numpy(), txt.double().numpy()
        logits = s * _normalize(im) @ _normalize(tx).T
        raw = s * im @ tx.T
        hints = {
            "no softmax: this is the largest logit, not the largest probability":
                logits.max(axis=1),
            "the embeddings are not L2-normalised before the similarity":
                _softmax(raw).max(axis=1),
            "logit_scale is not applied (softmax of the plain cosines)":
                _softmax(logits / s).max(axis=1) if s != 1.0 else None,
            "the softmax runs over the images (dim 0) instead of the classes (dim 1)":
                _softmax(logits, axis=0).max(axis=1),
            "logit_scale is exponentiated again: it is already exp(model.logit_scale)":
                _softmax(np.exp(s) * logits / s).max(axis=1) if s < 50 else None,
            "the cosines are divided by logit_scale: it is 1/tau already, multiply by it":
                _softmax(logits / s ** 2).max(axis=1) if s != 1.0 else None,
            "the sign is flipped: return the probability (higher = more in-distribution)":
                -want,
        }
        if got.shape == (n, c):
            raise AssertionError(f"{name} returned shape {got.shape} ({case}): that is the "
                                 f"whole probability matrix; return its maximum per image, "
                                 f"shape {(n,)}")
        _compare(got, want, name, case, "one score per image", hints)
        if np.any(got > 1 + 1e-6) or np.any(got < 0):
            raise AssertionError(f"{name} returned values outside [0, 1] ({case})")
    _passed(name)


def _clip_model_for_checks():
    """The shipped tiny CLIP (small, offline): the model the text and split checks run on."""
    from .models import load_clip

    model, _, tokenizer = load_clip("miniclip")
    return model, tokenizer


def check_text_embeddings(student_fn: Callable) -> None:
    """Self-check of ``text_embeddings_exercise(model, tokenizer, class_names, template="{}")``.

    Runs on the shipped tiny CLIP (whatever the profile) and compares with
    :func:`ood_utils.models.text_embeddings` for one template: one L2-normalised row per class,
    shape ``(C, embed_dim)``, rows in the order of ``class_names``. Tried with the bare names
    (``"{}"``) and with ``"a photo of a {}."``.
    """
    import torch.nn.functional as F

    from .models import text_embeddings

    _require_callable(student_fn)
    name = _fn_name(student_fn)
    model, tokenizer = _clip_model_for_checks()
    for names, template in ((["Trouser", "Bag", "Sneaker"], "{}"),
                            (["Ankle boot", "Coat", "Pullover", "Sandal"], "a photo of a {}.")):
        case = f"{len(names)} class names, template {template!r}"
        got = _as_array(student_fn(model, tokenizer, list(names), template), name,
                        "one text embedding per class name")
        want = _as_array(text_embeddings(model, tokenizer, names, (template,)), "reference", "")
        with torch.no_grad():
            raw = model.encode_text(tokenizer([template.format(c) for c in names])).double()
            bare = model.encode_text(tokenizer(list(names))).double()
            raw_np = raw.numpy()
            hints = {
                "the text embeddings are not L2-normalised (divide each row by its norm)": raw_np,
                "the template is ignored: put each class name into it with template.format(name)":
                    F.normalize(bare, dim=-1).numpy() if template != "{}" else None,
                "the embeddings are normalised along the wrong axis (dim=0, over the classes): "
                "normalise each row, dim=-1": F.normalize(raw, dim=0).numpy(),
                "the sign is flipped": -want,
                "the rows follow the class names in sorted order: keep the order of "
                "class_names (row c belongs to label c)":
                    want[np.argsort(np.array(names, dtype=object), kind="stable")],
            }
        if got.shape == want.T.shape and got.shape != want.shape:
            raise AssertionError(f"{name} returned shape {got.shape} ({case}): one ROW per class, "
                                 f"shape {want.shape}; do not transpose")
        _compare(got, want, name, case, "one row per class name, in the given order", hints)
    _passed(name)


def check_zero_shot_logits(student_fn: Callable) -> None:
    """Self-check of ``zero_shot_logits_exercise(image_feats, projection, text_embeds, logit_scale)``.

    Expected: ``logit_scale * cos(projection(image_feats)_i, text_embeds_c)``, shape ``(N, C)``.
    Inputs are random, of clearly different lengths, the projection a random linear layer;
    ``logit_scale`` comes as a float and as a 0-d tensor; one case has a square projection so
    that forgetting it still gives numbers.
    """
    _require_callable(student_fn)
    name = _fn_name(student_fn)
    cases = [(8, 6, 5, 4, 12.4, 0), (11, 7, 7, 3, torch.tensor(100.0), 1), (5, 9, 4, 6, 1.0, 2)]
    for n, d, e, c, scale, seed in cases:
        feats = _random_feats(n, d, 50 + seed)
        txt = _random_feats(c, e, 60 + seed)
        torch.manual_seed(70 + seed)
        projection = torch.nn.Linear(d, e, bias=False).eval()
        for p in projection.parameters():
            p.requires_grad_(False)
        s = float(scale)
        case = (f"{n} images with {d} trunk features, projection {d}->{e}, {c} classes, "
                f"logit_scale={s:g}")
        try:
            out = student_fn(feats.clone(), projection, txt.clone(), scale)
        except RuntimeError as err:
            if "shape" in str(err) or "size" in str(err):
                raise AssertionError(
                    f"{name} failed with a shape error ({case}): {err}. The image features are "
                    f"trunk features of dimension {d}: apply projection(image_feats) first to get "
                    f"{e}-d image embeddings that can be compared with the text embeddings"
                ) from None
            raise
        got = _as_array(out, name, "the (N, C) matrix of zero-shot logits")
        with torch.no_grad():
            z = projection(feats).double().numpy()
        tx = txt.double().numpy()
        want = s * _normalize(z) @ _normalize(tx).T
        f = feats.double().numpy()
        hints = {
            "the projection is not applied: the stored features are trunk features, use "
            "projection(image_feats)": s * _normalize(f) @ _normalize(tx).T if d == e else None,
            "the image embeddings are not L2-normalised": s * z @ _normalize(tx).T,
            "the text embeddings are not L2-normalised": s * _normalize(z) @ tx.T,
            "neither embedding is L2-normalised (the logits must be scaled cosines)":
                s * z @ tx.T,
            "logit_scale is not applied (these are the plain cosines)":
                want / s if s != 1.0 else None,
            "logit_scale is exponentiated again: it is already exp(model.logit_scale)":
                np.exp(s) * want / s if s < 50 else None,
            "the cosines are divided by logit_scale: it is 1/tau already (the temperature tau "
            "divides, so its inverse multiplies)": want / s ** 2 if s != 1.0 else None,
            "the sign is flipped": -want,
        }
        if got.shape == (c, n) and c != n:
            raise AssertionError(f"{name} returned shape {got.shape} ({case}): one row per "
                                 f"IMAGE and one column per class, shape {(n, c)}")
        _compare(got, want, name, case, "one row per image, one column per class", hints)
    _passed(name)


def check_msp(student_fn: Callable) -> None:
    """Self-check of ``msp_exercise(logits)``: the largest softmax probability of each row.

    Compared with :func:`ood_utils.scores.msp_scores` on random logits of several scales,
    float32 and float64, including a case with as many rows as columns.
    """
    from .scores import msp_scores

    _require_callable(student_fn)
    name = _fn_name(student_fn)
    for n, c, spread, dtype, seed in ((7, 4, 3.0, torch.float32, 0), (6, 6, 10.0, torch.float64, 1),
                                      (9, 3, 0.5, torch.float32, 2)):
        g = _gen(80 + seed)
        logits = (torch.randn(n, c, generator=g) * spread).to(dtype)
        case = f"logits of shape {(n, c)}, {str(dtype).replace('torch.', '')}"
        out = student_fn(logits.clone())
        if out is not None and tuple(getattr(out, "shape", ())) == (n, c):
            raise AssertionError(f"{name} returned shape {(n, c)} ({case}): that is the whole "
                                 f"probability matrix; return its maximum per row, shape {(n,)}")
        got = _as_array(out, name, "one maximum softmax probability per image")
        want = _as_array(msp_scores(logits), "msp_scores", "")
        z = logits.double().numpy()
        hints = {
            "no softmax: this is the largest logit, not the largest probability": z.max(axis=1),
            "the softmax runs over the images (dim 0) instead of the classes (dim 1)":
                _softmax(z, axis=0).max(axis=1),
            "this is 1 - MSP: return the probability itself (higher = more in-distribution)":
                1 - want,
            "the sign is flipped: return the probability (higher = more in-distribution)": -want,
            "the smallest probability instead of the largest": _softmax(z).min(axis=1),
            "the softmax is taken of the negated logits (softmin)":
                _softmax(-z).max(axis=1),
        }
        _compare(got, want, name, case, "one score per row (image)", hints)
        if np.any(got > 1 + 1e-6) or np.any(got < 0):
            raise AssertionError(f"{name} returned values outside [0, 1] ({case})")
    _passed(name)


def check_clip_head(student_fn: Callable) -> None:
    """Self-check of ``clip_head_exercise(model) -> (projection, logit_scale)``.

    Runs on a copy of the shipped tiny CLIP (whatever the profile): ``projection`` must map
    trunk features ``(N, feature_dim)`` to the image embeddings of the joint space, exactly as
    the image tower's last layer does, and ``logit_scale`` must be the factor in front of the
    cosines, ``exp(model.logit_scale)`` = 1/tau, as a number or a 0-d tensor.
    """
    import copy

    from .models import split_visual

    _require_callable(student_fn)
    name = _fn_name(student_fn)
    model, _ = _clip_model_for_checks()
    model = copy.deepcopy(model)
    raw = float(model.logit_scale.detach())
    trunk, head = split_visual(model)
    with torch.no_grad():
        h = _random_feats(6, trunk(torch.zeros(1, 3, 32, 32)).shape[1], 95)
        want = head(h).double().numpy()
    d, e = h.shape[1], want.shape[1]
    out = student_fn(model)
    if not isinstance(out, tuple) or len(out) != 2:
        raise AssertionError(f"{name} must return a pair (projection, logit_scale), got "
                             f"{type(out).__name__}")
    projection, scale = out
    if not callable(projection):
        raise AssertionError(f"{name} returned a {type(projection).__name__} as the projection: "
                             "return the module (a torch.nn.Module) that maps trunk features "
                             "to the joint space, so that projection(h) works")
    case = f"6 random trunk feature vectors of dimension {d}, joint space of dimension {e}"
    try:
        with torch.no_grad():
            z = projection(h.clone())
    except Exception as err:
        raise AssertionError(
            f"the projection returned by {name} fails on trunk features ({case}): "
            f"{type(err).__name__}: {err}. It must take the stored trunk features (the output "
            "of the tower's trunk), not images: it is the image tower's LAST part, the one "
            "notebook 01 split off (print(model.visual) shows the parts)") from None
    got = _as_array(z, f"{name}: projection", "image embeddings")
    if got.shape == (6, d) and d != e:
        raise AssertionError(f"the projection returned by {name} keeps {d} dimensions ({case}); "
                             f"it must map them to the {e}-d joint space of image and text")
    _compare(got, want, f"{name}: projection(h)", case, "the image embeddings W h",
             hints={"the projection normalises its output: return the linear layer itself "
                    "(the logits exercise normalises)": _normalize(want)})
    if isinstance(scale, torch.Tensor) and scale.numel() != 1:
        raise AssertionError(f"{name} returned a logit_scale of shape {tuple(scale.shape)}; "
                             "return one number")
    if isinstance(scale, torch.Tensor) and scale.requires_grad:
        raise AssertionError(f"{name} returned logit_scale as a tensor that tracks gradients: "
                             "return a Python float (.item()), or every logit computed with it "
                             "would track them too")
    try:
        s = float(scale.detach()) if isinstance(scale, torch.Tensor) else float(scale)
    except (TypeError, ValueError):
        raise AssertionError(f"{name} returned a {type(scale).__name__} as logit_scale; return "
                             "a number (float, or a 0-d tensor)") from None
    want_s = float(np.exp(raw))
    if abs(s - want_s) <= 1e-4 * want_s:
        _passed(name)
        return
    hints = {
        f"this is the stored parameter model.logit_scale itself ({raw:.4g}), which is "
        f"log(1/tau): the factor in front of the cosines is its exponential": raw,
        "this is tau, the temperature; the factor in front of the cosines is 1/tau": 1 / want_s,
        "the parameter is exponentiated twice": float(np.exp(want_s)) if want_s < 50 else None,
    }
    hint = next((f" Likely cause: {m}." for m, v in hints.items()
                 if v is not None and abs(s - v) <= 1e-4 * abs(v)), "")
    raise AssertionError(f"{name} returned logit_scale = {s:.6g}; the tiny CLIP's factor "
                         f"1/tau is {want_s:.6g}.{hint}")


def check_msp_sweep(student_fn: Callable) -> None:
    """Self-check of ``msp_sweep_exercise(model, tokenizer, class_names, feats_in, feats_out,
    templates, temperatures) -> {(template, T): AUROC}``.

    Runs on the shipped tiny CLIP with random trunk features and compares with the reference:
    :func:`ood_utils.models.text_embeddings` of each template, the projected and normalised
    image features, :func:`ood_utils.scores.msp_scores` of the cosines at temperature ``T``,
    and scikit-learn's AUROC in percent. The student's function calls the notebook's own
    exercises (which must pass their checks first).
    """
    from .models import text_embeddings
    from .scores import msp_scores

    _require_callable(student_fn)
    name = _fn_name(student_fn)
    model, tokenizer = _clip_model_for_checks()
    head = model.visual.head
    names = ["Trouser", "Bag", "Sneaker", "Coat"]
    templates = ("{}", "a photo of a {}.")
    temps = (0.01, 0.1, 1.0)
    g = _gen(310)
    with torch.no_grad():  # trunk features that land near the prompts of the names
        text = text_embeddings(model, tokenizer, names, ("{}",)).double()
        w = head.proj.weight.double() if hasattr(head, "proj") else None
    if w is None:
        raise RuntimeError("check_msp_sweep needs open_clip's timm head (model.visual.head.proj)")
    lift = torch.linalg.pinv(w)  # (D, E): h = lift @ t gives W h ~ t
    pick = torch.randint(0, len(names), (30,), generator=g)
    base_in = (text[pick] @ lift.T).float()
    noise = 1.5 * base_in.norm(dim=1, keepdim=True) / np.sqrt(base_in.shape[1])
    feats_in = base_in + noise * torch.randn(base_in.shape, generator=g)
    # OOD rows between two prompts, as noisy: the AUROC then moves with T and the template
    mix = (text[torch.randint(0, len(names), (24,), generator=g)]
           + text[torch.randint(0, len(names), (24,), generator=g)]) @ lift.T
    feats_out = mix.float() + noise[:24] * torch.randn(mix.shape, generator=g)
    case = (f"{len(names)} class names, {len(feats_in)} ID and {len(feats_out)} OOD synthetic "
            f"trunk feature rows, templates {list(templates)}, temperatures {list(temps)}")
    keys = [(t, T) for t in templates for T in temps]
    result = student_fn(model, tokenizer, list(names), feats_in.clone(), feats_out.clone(),
                        templates, temps)
    got = _sweep_values(result, keys, name, "a dict {(template, T): AUROC in percent}", case)

    def sweep(scale_of, msp=msp_scores):
        out = []
        for t in templates:
            txt = text_embeddings(model, tokenizer, names, (t,)).double()
            with torch.no_grad():
                cos = [torch.nn.functional.normalize(head(f).double(), dim=1) @ txt.T
                       for f in (feats_in, feats_out)]
            for T in temps:
                out.append(_auroc_percent(msp(cos[0] * scale_of(T)), msp(cos[1] * scale_of(T))))
        return np.array(out)

    def msp_float32(z):
        return z.float().softmax(dim=1).max(dim=1).values.double()

    want = sweep(lambda T: 1 / T)
    if _close(got, want, 0, 1e-3):
        _passed(name)
        return
    hint = _sweep_hints(got, want)
    rows_got = got.reshape(len(templates), -1)
    if not hint and np.ptp(rows_got, axis=1).max() <= 1e-9 < np.ptp(want):
        hint = (" Likely cause: within each template every temperature gives the same AUROC: "
                "the temperature never reaches the score (the logits at temperature T are "
                "the cosines times 1/T)")
    if not hint:
        if _close(got, sweep(lambda T: T), 0, 1e-3):
            hint = (" Likely cause: the cosines are multiplied by T; the softmax at temperature T "
                    "is of cos / T, i.e. the logit scale is 1/T")
        elif _close(got, sweep(lambda T: 1 / T, msp_float32), 0, 1e-3):
            hint = (" Likely cause: " + _FLOAT32_SOFTMAX)
        elif _close(got, np.repeat(want.reshape(len(templates), -1)[:1], len(templates),
                                   axis=0).ravel(), 0, 1e-3):
            hint = (" Likely cause: every template gives the bare-name row: embed the class "
                    "names with each template (pass it on to your text embeddings)")
        else:
            hint = (" If your three exercises above pass their checks, look at how the sweep "
                    "calls them: one text embedding per template, logits at scale 1/T")
    i = int(np.argmax(np.abs(got - want)))
    raise AssertionError(f"{name} returned wrong AUROCs ({case}): for {keys[i]} it gives "
                         f"{got[i]:.4f}, the reference {want[i]:.4f}.{hint}")


_FLOAT32_SOFTMAX = ("the softmax runs in float32: at a small T the largest probability of a "
                    "confident image rounds to exactly 1, many images tie and the AUROC drops; "
                    "compute the softmax in float64 (.double()), as exercise 4 asks")


def _msp_sweep_hint(wrong) -> str:
    """Values too low only at small T: the float32 softmax of exercise 4."""
    if wrong and all(k[1] <= 0.05 and v < want for k, v, want, _ in wrong):
        return "Likely cause: " + _FLOAT32_SOFTMAX + "."
    return ""


def _msp_sweep_reference(profile, keys) -> dict:
    """The reference sweep on the profile's cached zero-shot logits."""
    from .pipeline import zero_shot_logits
    from .scores import msp_scores

    out = {}
    for template in dict.fromkeys(t for t, _ in keys):
        zs = zero_shot_logits(profile, templates=(template,), progress=False)
        scale = float(zs["logit_scale"])
        cos = [zs[s].double() / scale for s in ("id_test", "ood_test")]
        for t, T in keys:
            if t == template:
                out[(t, T)] = _auroc_percent(msp_scores(cos[0], temperature=T),
                                             msp_scores(cos[1], temperature=T))
    return out


def check_msp_sweep_result(auroc_by_setting: dict, profile=None) -> None:
    """Graded check of notebook 03's sweep: ``{(template, T): AUROC}`` against the answer key.

    Every (template, T) of the recorded grid must be in the dict and within its tolerance;
    further keys (other templates, CLIP's own tau) are the student's and not graded. For a
    profile without a recorded sweep, the reference is computed from the cached zero-shot
    logits (tolerance 0.1).
    """
    _check_sweep_result("msp_sweep", auroc_by_setting, profile, _msp_sweep_reference,
                        lambda k: f"{k[0]!r} at T = {k[1]:g}", _msp_sweep_hint)


# --------------------------------------------------------------------------- probe MSP (part V)

def check_pseudo_labels(student_fn: Callable) -> None:
    """Self-check of ``pseudo_labels_exercise(logits)``.

    Expected: the index of the largest logit of every row (reference:
    :func:`ood_utils.scores.pseudo_labels`), as integers, on random logit tensors (more rows
    than classes, fewer rows than classes, and as many rows as classes).
    """
    from .scores import pseudo_labels

    __tracebackhide__ = True
    _require_callable(student_fn)
    name = _fn_name(student_fn)
    for n, c, seed in [(9, 4, 0), (3, 7, 1), (5, 5, 2)]:
        logits = torch.randn(n, c, generator=_gen(70 + seed)) * 5
        case = f"logits of shape ({n}, {c})"
        result = student_fn(logits.clone())
        got = _as_array(result, name, "one class index per row")
        want = _as_array(pseudo_labels(logits), "pseudo_labels", "")
        z = logits.double().numpy()
        if got.shape == (c,) and n != c:
            raise AssertionError(f"{name} returned shape {got.shape} ({case}): that is one "
                                 f"value per CLASS; take the argmax over the classes (dim=1), "
                                 f"one label per row, shape {(n,)}")
        hints = {
            "the argmax runs over the rows (dim 0) instead of the classes (dim 1)":
                z.argmax(axis=0) if n == c else None,
            "argmin instead of argmax: the pseudo-label is the class with the LARGEST logit":
                z.argmin(axis=1),
            "this is the largest logit itself, not its index (use argmax, not max)":
                z.max(axis=1),
            "this is the largest softmax probability, not the class index (use argmax)":
                _softmax(z).max(axis=1),
        }
        _compare(got, want, name, case, "one class index per row", hints)
        dtype = result.dtype if isinstance(result, (torch.Tensor, np.ndarray)) else None
        if dtype is not None and (dtype.is_floating_point if isinstance(dtype, torch.dtype)
                                  else np.issubdtype(dtype, np.floating)):
            raise AssertionError(f"{name} returned {dtype} values ({case}); class indices must "
                                 f"be integers (torch.int64): cross-entropy needs them so")
        if dtype is not None and dtype not in (torch.int64, np.dtype(np.int64)):
            raise AssertionError(
                f"{name} returned {dtype} class indices ({case}); F.cross_entropy accepts "
                f"class indices only as int64 (torch.long) and fails on {dtype} with a dtype "
                f"error later, in the training: convert with .long() (argmax already returns "
                f"int64)")
    _passed(name)


def _probe_runs(x: torch.Tensor, y: torch.Tensor, c: int, epochs: int, lr: float, seed: int,
                optimizer: str = "adam", zero_grad: bool = True, bias: bool = True,
                batch_size: int | None = None) -> list[tuple[dict, float, float]]:
    """Full-batch training as notebook 04 prescribes; per epoch (weights after the step,
    training accuracy before the step, training accuracy after the step).

    The other arguments plant one mistake each (only to name it): SGD, no ``zero_grad``
    (gradients accumulate over the epochs), ``nn.Linear(..., bias=False)``, or mini-batches of
    ``batch_size`` rows in order (the accuracy "before" is then that of the last batch's
    forward pass and is not used)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        layer = torch.nn.Linear(x.shape[1], c, bias=bias)
    opt = (torch.optim.Adam(layer.parameters(), lr=lr) if optimizer == "adam"
           else torch.optim.SGD(layer.parameters(), lr=lr))
    runs = []
    step = len(x) if batch_size is None else batch_size
    for _ in range(epochs):
        for start in range(0, len(x), step):
            logits = layer(x[start:start + step])
            before = float((logits.argmax(dim=1) == y[start:start + step]).double().mean())
            loss = torch.nn.functional.cross_entropy(logits, y[start:start + step])
            if zero_grad:
                opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            after = float((layer(x).argmax(dim=1) == y).double().mean())
        state = {k: v.detach().clone() for k, v in layer.state_dict().items()}
        if not bias:
            state["bias"] = torch.zeros(c)
        runs.append((state, before, after))
    return runs


def _pick(runs, key: int, latest: bool) -> dict:
    accs = [r[key] for r in runs]
    best = max(accs)
    ids = [i for i, a in enumerate(accs) if a == best]
    return runs[ids[-1] if latest else ids[0]][0]


def check_train_probe(student_fn: Callable) -> None:
    """Self-check of ``train_probe_exercise(train_feats, targets, num_classes, *, epochs, lr,
    seed)``.

    The prescription of notebook 04: ``torch.manual_seed(seed)`` immediately before
    ``nn.Linear(D, num_classes)``, full-batch Adam (one step per epoch on all rows) on the
    cross-entropy with ``targets``, and the weights of the epoch with the highest training
    accuracy are returned. The check trains the reference on small random problems and
    compares the returned layer's logits. Accepted selection rules: the accuracy after the
    epoch's step (earliest or latest epoch on ties), or the accuracy measured on the epoch's
    own forward pass (as the original assignment's training loop does). The third problem has
    more rows (600) than the usual mini-batch sizes, so mini-batches are told apart from the
    full batch.
    """
    __tracebackhide__ = True
    _require_callable(student_fn)
    name = _fn_name(student_fn)
    # every case reaches its best training accuracy before the last epoch
    for n, d, c, epochs, lr, seed in [(90, 5, 3, 14, 0.2, 0), (60, 4, 4, 12, 1.0, 3),
                                      (600, 5, 3, 10, 0.3, 5)]:
        g = _gen(80 + seed)
        centres = torch.randn(c, d, generator=g) * 1.5
        y = torch.randint(0, c, (n,), generator=g)
        x = (centres[y] + torch.randn(n, d, generator=g)).float()
        case = f"{n} rows, {d} features, {c} classes, epochs={epochs}, lr={lr}, seed={seed}"
        state = torch.get_rng_state()
        layer = student_fn(x.clone(), y.clone(), c, epochs=epochs, lr=lr, seed=seed)
        torch.set_rng_state(state)
        if isinstance(layer, tuple):
            raise AssertionError(f"{name} returned a tuple; return only the trained nn.Linear")
        if not isinstance(layer, torch.nn.Module):
            raise AssertionError(f"{name} returned {type(layer).__name__}; return the trained "
                                 f"torch.nn.Linear holding the best epoch's weights")
        with torch.no_grad():
            got = layer(x).detach().double().numpy()
        if got.shape != (n, c):
            raise AssertionError(f"{name}'s layer maps the features to shape {got.shape}, "
                                 f"expected {(n, c)} ({case}): nn.Linear(D, num_classes)")
        runs = _probe_runs(x, y, c, epochs, lr, seed)

        def logits_of(state_dict):
            return (x.double() @ state_dict["weight"].double().T
                    + state_dict["bias"].double()).numpy()

        accepted = [logits_of(_pick(runs, key, latest)) for key in (2, 1)
                    for latest in (False, True)]
        if any(_close(got, a, 1e-3, 1e-4) for a in accepted):
            continue
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            init = torch.nn.Linear(d, c).state_dict()
        has_bias = getattr(layer, "bias", 0) is not None

        def variant(**kw):
            return [logits_of(_pick(_probe_runs(x, y, c, epochs, lr, seed, **kw), key, latest))
                    for key in (2, 1) for latest in (False, True)]

        hints = {
            "the returned weights are those of the LAST epoch, not of the best one. Either "
            "the best epoch's copy is never loaded back (layer.load_state_dict(best) before "
            "returning), or no copy was kept: state_dict() alone returns the live tensors, "
            "which later steps overwrite (copy.deepcopy(layer.state_dict()))":
                [logits_of(runs[-1][0])],
            "the layer is untrained (its initial weights): run the optimizer steps":
                [logits_of(init)],
            "the layer has no bias (nn.Linear(..., bias=False)): the probe is A h + b, keep "
            "nn.Linear's default bias=True": variant(bias=False) if not has_bias else [],
            "optimizer.zero_grad() is missing: without it every backward() ADDS to the "
            "gradients of the earlier epochs, so each step follows their running sum; reset "
            "them once per step, before backward()": variant(zero_grad=False),
            "SGD instead of Adam: use torch.optim.Adam(layer.parameters(), lr=lr)":
                variant(optimizer="sgd"),
            "the epoch with the LOWEST training accuracy was kept: keep the highest":
                [logits_of(runs[int(np.argmin([r[2] for r in runs]))][0])],
        }
        for size in (32, 64, 128, 256, 512):
            if size < n:
                hints[f"mini-batches ({size} rows per step): the course trains full-batch, one "
                      f"step per epoch on ALL rows at once (no DataLoader, no shuffling)"] = \
                    variant(batch_size=size)
        for message, candidates in hints.items():
            if any(_close(got, cand, 1e-3, 1e-4) for cand in candidates):
                raise AssertionError(f"{name}: wrong probe ({case}). Likely cause: {message}.")
        raise AssertionError(
            f"{name}: the returned layer's logits differ from the prescribed training ({case}; "
            f"largest difference {np.max(np.abs(got - accepted[0])):.3g}). Check, in this "
            f"order: torch.manual_seed(seed) immediately before nn.Linear(D, num_classes) "
            f"(no other random call in between); torch.optim.Adam with lr; full batch (one "
            f"step per epoch on ALL rows, no shuffling or mini-batches); zero_grad before "
            f"every backward; cross-entropy with the targets passed in (not other labels); "
            f"the best training accuracy chooses the weights returned")
    _passed(name)


def check_probe_msp(student_fn: Callable) -> None:
    """Self-check of ``probe_msp_exercise(layer, feats)``.

    Expected: the maximum softmax probability of ``layer(feats)`` per row (reference:
    :func:`ood_utils.scores.msp_scores` of :func:`ood_utils.scores.probe_logits`), on random
    linear layers; the layer's weights must not change.
    """
    from .scores import msp_scores, probe_logits

    __tracebackhide__ = True
    _require_callable(student_fn)
    name = _fn_name(student_fn)
    for n, d, c, seed in [(10, 6, 4, 0), (7, 3, 9, 1)]:
        torch.manual_seed(50 + seed)
        layer = torch.nn.Linear(d, c)
        with torch.no_grad():
            layer.weight.mul_(3.0)
        before = [p.detach().clone() for p in layer.parameters()]
        feats = _random_feats(n, d, 60 + seed)
        case = f"Linear({d}, {c}) on {n} rows"
        result = student_fn(layer, feats.clone())
        got = _as_array(result, name, "one maximum softmax probability per row")
        if any(not torch.equal(a, b) for a, b in zip(before, layer.parameters())):
            raise AssertionError(f"{name} changed the layer's weights; only evaluate it")
        want = _as_array(msp_scores(probe_logits(layer, feats)), "msp_scores", "")
        with torch.no_grad():
            logits = layer(feats).double().numpy()
        hints = {
            "no softmax: this is the largest logit, not the largest probability":
                logits.max(axis=1),
            "the softmax runs over the rows (dim 0) instead of the classes (dim 1)":
                _softmax(logits, axis=0).max(axis=1),
            "the sign is flipped: return the probability (higher = more in-distribution)":
                -want,
        }
        if got.shape == (n, c):
            raise AssertionError(f"{name} returned shape {got.shape} ({case}): return the "
                                 f"maximum probability per row, shape {(n,)}")
        _compare(got, want, name, case, "one score per row", hints)
        if getattr(result, "dtype", None) in (torch.float32, torch.float16, torch.bfloat16,
                                              np.float32, np.float16):
            raise AssertionError(
                f"{name} returned {result.dtype} probabilities ({case}): take the softmax in "
                f"float64 (e.g. layer(feats).double().softmax(dim=1)). In float32 every "
                f"probability above 1 - 6e-8 rounds to exactly 1, so confident ID and OOD "
                f"images tie and the AUROC drops by several points")
    _passed(name)


# --------------------------------------------------------------------------- Mahalanobis (VI, VII)

_NOT_OUR_CONVENTION = (
    "the shared covariance is weighted by class size (the class-centred rows pooled): a valid "
    "estimator (Lee et al. 2018 divide the pooled scatter by N; dividing by N - C makes it "
    "unbiased), but not this course's convention, which is the PLP paper's unweighted mean "
    "(1/C) sum_c Sigma_c of the per-class covariances")
_POOLED_N_MINUS_C = _NOT_OUR_CONVENTION + " (here: pooled and divided by N - C)"
_POOLED_N = _NOT_OUR_CONVENTION + " (here: pooled and divided by N, as Lee et al. do)"
_SINGLETON = ("a class with a single training sample was kept: its covariance is undefined "
              "(0/0 for the unbiased estimator), so skip every class with fewer than two "
              "samples, for the means as well as for the shared covariance")


def _maha_variants(train: np.ndarray, labels: np.ndarray, test: np.ndarray) -> dict:
    """Squared distances of common wrong variants, used only to name the mistake.

    Keys: ``shared`` (the course's convention), ``pooled`` / ``weighted_n`` (class-size
    weighted, divided by N - C or N), ``per_class`` (one covariance per class),
    ``uncentred`` (second moments instead of covariances), ``bg`` (the right background),
    ``bg_test`` (background Gaussian fitted to the test rows), ``bg_means`` (background
    fitted to the class means instead of all training rows), ``bg_biased`` (background
    covariance divided by N), ``bg_shared`` (background distance with the shared covariance
    instead of Sigma_0); where a class has a single sample, ``single_kept`` (its mean kept as a
    class) and ``single_kept_zero`` (its mean kept and a zero covariance averaged in).
    """
    classes = np.unique(labels)
    groups = [train[labels == c] for c in classes if (labels == c).sum() > 1]
    singles = [train[labels == c] for c in classes if (labels == c).sum() == 1]
    means = np.stack([g.mean(0) for g in groups])
    covs = [np.cov(g, rowvar=False) for g in groups]
    shared = np.mean(covs, axis=0)
    centred = np.concatenate([g - g.mean(0) for g in groups])
    n, c = len(centred), len(groups)
    uncentred = np.mean([g.T @ g / (len(g) - 1) for g in groups], axis=0)

    def sq(x, mu, prec):
        diff = x - mu
        return ((diff @ prec) * diff).sum(1)

    def dists(cov, mus=means):
        prec = np.linalg.pinv(cov, hermitian=True)
        return np.stack([sq(test, m, prec) for m in mus], 1)

    out = {"shared": dists(shared), "pooled": dists(centred.T @ centred / (n - c)),
           "weighted_n": dists(centred.T @ centred / n), "uncentred": dists(uncentred),
           "per_class": np.stack([sq(test, m, np.linalg.pinv(cv, hermitian=True))
                                  for m, cv in zip(means, covs)], 1)}
    cov0 = np.cov(train, rowvar=False)
    out["bg"] = sq(test, train.mean(0), np.linalg.pinv(cov0))
    out["bg_test"] = sq(test, test.mean(0), np.linalg.pinv(np.cov(test, rowvar=False)))
    out["bg_means"] = sq(test, means.mean(0), np.linalg.pinv(
        np.cov(means, rowvar=False) if c > 1 else np.eye(train.shape[1])))
    out["bg_biased"] = sq(test, train.mean(0), np.linalg.pinv(cov0 * (len(train) - 1)
                                                              / len(train)))
    out["bg_shared"] = sq(test, train.mean(0), np.linalg.pinv(shared, hermitian=True))
    if singles:
        all_means = np.stack([train[labels == k].mean(0) for k in classes])
        out["single_kept"] = dists(shared, all_means)
        out["single_kept_zero"] = dists(np.sum(covs, axis=0) / len(classes), all_means)
    return out


def _maha_hints(v: dict, relative: bool) -> dict:
    """Failure messages and the scores of the wrong variant each one describes."""
    single = {}
    if relative:
        bg = v["bg"][:, None]
        if "single_kept" in v:
            single = {_SINGLETON: -(v["single_kept"] - bg).min(1),
                      _SINGLETON + " (here with a zero covariance averaged in)":
                          -(v["single_kept_zero"] - bg).min(1)}
        return {
            **single,
            "the background term is not subtracted (that is plain MD, not RMD)":
                -v["shared"].min(1),
            "the sign is flipped: RMD scores are -min_c (d_c^2 - d_0^2)":
                (v["shared"] - bg).min(1),
            "one covariance per class instead of the shared (averaged) covariance":
                -(v["per_class"] - bg).min(1),
            _POOLED_N_MINUS_C: -(v["pooled"] - bg).min(1),
            _POOLED_N: -(v["weighted_n"] - bg).min(1),
            "the covariances are computed without subtracting the class means (centre every "
            "class on its mean first)": -(v["uncentred"] - bg).min(1),
            "the background Gaussian is fitted to the TEST features; fit mu_0 and Sigma_0 to "
            "all TRAINING features (statistics never come from the test set)":
                -(v["shared"] - v["bg_test"][:, None]).min(1),
            "the background Gaussian is fitted to the class means; fit mu_0 and Sigma_0 to all "
            "training features": -(v["shared"] - v["bg_means"][:, None]).min(1),
            "the background covariance is biased (divided by N): Sigma_0 is the unbiased "
            "covariance of all training features (np.cov / torch.cov default, N - 1)":
                -(v["shared"] - v["bg_biased"][:, None]).min(1),
            "the background distance d_0^2 uses the shared class covariance: the background "
            "Gaussian has its own covariance Sigma_0, that of ALL training features around "
            "their mean": -(v["shared"] - v["bg_shared"][:, None]).min(1),
            "the max over classes instead of the min (wrong reduction)":
                -(v["shared"] - bg).max(1),
        }
    if "single_kept" in v:
        single = {_SINGLETON: -v["single_kept"].min(1),
                  _SINGLETON + " (here with a zero covariance averaged in)":
                      -v["single_kept_zero"].min(1)}
    return {
        **single,
        "the minus sign is missing: the score is -min_c d_c^2 (higher = more ID)":
            v["shared"].min(1),
        "one covariance per class instead of the shared (averaged) covariance":
            -v["per_class"].min(1),
        _POOLED_N_MINUS_C: -v["pooled"].min(1),
        _POOLED_N: -v["weighted_n"].min(1),
        "the covariances are computed without subtracting the class means (centre every class "
        "on its mean first)": -v["uncentred"].min(1),
        "the distance of the LAST/any class instead of the nearest class mean (min over c)":
            -v["shared"].max(1),
        "the square root was taken: use the squared distance d_c^2":
            -np.sqrt(v["shared"].min(1)),
    }


def _maha_data(seed: int, sizes=(30, 21, 14), d: int = 4, nearly_singular: bool = False):
    """Classes of unequal size with clearly different covariances, as float32 tensors (a class
    of size 1 is a single row near its centre)."""
    g = _gen(seed)
    rows, labels = [], []
    for c, n in enumerate(sizes):
        mix = torch.randn(d, d, generator=g) * (0.5 + c)
        centre = torch.randn(d, generator=g) * 4
        rows.append(torch.randn(n, d, generator=g) @ mix + centre)
        labels.append(torch.full((n,), c, dtype=torch.int64))
    train = torch.cat(rows)
    test = torch.randn(9, d, generator=g) * 5
    if 1 in sizes:  # test rows right next to the single sample: keeping it changes their score
        lone = rows[list(sizes).index(1)]
        test = torch.cat([test, lone + 0.1 * torch.randn(3, d, generator=g)])
    if nearly_singular:
        # the last column is almost the sum of the first two (up to 1e-4): the covariance has
        # an eigenvalue ~1e-8, as real network features do (LayerNorm, ReLU); float32 fails
        for x in (train, test):
            x[:, -1] = x[:, 0] + x[:, 1] + 1e-4 * torch.randn(len(x), generator=g)
    return train.float(), torch.cat(labels), test.float()


def _call_stats(student_fn, name, train, labels, case):
    """The student's class statistics; a known crash becomes a message naming its cause."""
    __tracebackhide__ = True
    try:
        return student_fn(train.clone(), labels.clone())
    except RuntimeError as err:
        if "stack expects each tensor to be equal size" in str(err):
            raise AssertionError(
                f"{name} failed in torch.stack ({case}): the per-class covariances have "
                f"different shapes. torch.cov treats each ROW as a variable and each column as "
                f"an observation, so torch.cov(g) of a (n_c, D) block is (n_c, n_c); use "
                f"torch.cov(g.T) (or np.cov(g, rowvar=False)) for the (D, D) covariance"
            ) from None
        raise


def _require_float64_tensor(value, name: str, what: str, case: str) -> None:
    __tracebackhide__ = True
    if isinstance(value, np.ndarray):
        raise AssertionError(
            f"{name} returned {what} as a NumPy array ({case}); return torch tensors "
            f"(torch.from_numpy(...) or torch.as_tensor(...)): mahalanobis_exercise and the "
            f"notebooks' cells compute on them with torch operations")
    if isinstance(value, torch.Tensor) and value.dtype != torch.float64:
        raise AssertionError(
            f"{name} returned {what} as {value.dtype} ({case}); compute and return them in "
            f"float64 (.double() on the features first): the inverse of a nearly singular "
            f"covariance is wrong in float32, and mixing float32 with float64 tensors in "
            f"mahalanobis_exercise fails with a dtype error")


def check_class_statistics(student_fn: Callable) -> None:
    """Self-check of ``class_statistics_exercise(train_feats, train_labels)``.

    The function returns ``(means, shared_cov)``: float64 torch tensors, the class means
    ``(C, D)`` in the order of the sorted class ids and the course's shared covariance
    ``(D, D)``, the unweighted mean of the per-class unbiased covariances. Classes of unequal
    size and spread tell the course's convention apart from the class-size-weighted (pooled)
    estimator; the third case has a class with a single sample, which must be skipped.
    """
    import warnings

    from .scores import _class_statistics

    __tracebackhide__ = True
    _require_callable(student_fn)
    name = _fn_name(student_fn)
    for seed, sizes in [(0, (30, 21, 14)), (1, (18, 25)), (4, (30, 1, 21, 14))]:
        train, labels, _ = _maha_data(seed, sizes)
        case = f"{len(sizes)} classes of sizes {sizes}, train {tuple(train.shape)}"
        if 1 in sizes:
            case += "; one class has a single sample"
        out = _call_stats(student_fn, name, train, labels, case)
        if not isinstance(out, (tuple, list)) or len(out) != 2:
            raise AssertionError(f"{name} must return a pair (means, shared_cov), got "
                                 f"{type(out).__name__}")
        means = _as_array(out[0], name, "the class means, shape (C, D)")
        cov = _as_array(out[1], name, "the shared covariance, shape (D, D)")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _, want_means, want_cov, _, _ = _class_statistics(train.double(), labels, False)
        want_means, want_cov = want_means.numpy(), want_cov.numpy()
        c, d = want_means.shape
        if means.shape == (len(sizes), d) and len(sizes) != c:
            raise AssertionError(f"{name} returned {len(sizes)} class means, expected {c} "
                                 f"({case}). Likely cause: {_SINGLETON}")
        if cov.shape == (c, c) and c != d or cov.shape[0] not in (d,):
            raise AssertionError(
                f"{name} returned a covariance of shape {cov.shape}, expected {(d, d)} ({case}). "
                "torch.cov treats each ROW as a variable and each column as an observation, so "
                "for a (n_c, D) block of rows use torch.cov(x.T) (or np.cov(x, rowvar=False))")
        _compare(means, want_means, name + " (means)", case, "one mean per class, rows in the "
                 "order of the sorted class ids")
        if 1 in sizes and not np.all(np.isfinite(cov)):
            raise AssertionError(f"{name} returned NaN in the shared covariance ({case}). "
                                 f"Likely cause: {_SINGLETON}")
        x, y = train.double().numpy(), labels.numpy()
        groups = [x[y == k] for k in np.unique(y) if (y == k).sum() > 1]
        centred = np.concatenate([g - g.mean(0) for g in groups])
        n = len(centred)
        hints = {
            _POOLED_N_MINUS_C: centred.T @ centred / (n - c),
            _POOLED_N: centred.T @ centred / n,
            "the per-class covariances are biased (divided by n_c instead of n_c - 1); use "
            "the unbiased estimator (np.cov / torch.cov default)":
                np.mean([np.cov(g, rowvar=False, bias=True) for g in groups], axis=0),
            "the class means are not subtracted (second moments instead of covariances)":
                np.mean([g.T @ g / (len(g) - 1) for g in groups], axis=0),
            "this is the covariance of ALL training rows (the background Sigma_0), not the "
            "mean of the per-class covariances": np.cov(x, rowvar=False),
        }
        if 1 in sizes:
            hints[_SINGLETON + " (here with a zero covariance averaged in)"] = \
                np.sum([np.cov(g, rowvar=False) for g in groups], axis=0) / len(sizes)
        _compare(cov, want_cov, name + " (shared covariance)", case, "a (D, D) matrix", hints)
        _require_float64_tensor(out[0], name, "the class means", case)
        _require_float64_tensor(out[1], name, "the shared covariance", case)
    _passed(name)


def _check_maha_case(student_fn, reference, name, train, labels, test, relative, case,
                     variants) -> None:
    import warnings

    __tracebackhide__ = True
    try:
        result = student_fn(train.clone(), labels.clone(), test.clone(), relative=relative)
    except Exception as err:
        if "single training sample" not in case:
            raise
        raise AssertionError(f"{name} failed ({type(err).__name__}: {err}) on a case with a "
                             f"single-sample class ({case}). Likely cause: {_SINGLETON}"
                             ) from None
    got = _as_array(result, name, "one score per test row")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the reference names skipped single-sample classes
        want = _as_array(reference(train, labels, test, relative=relative),
                         "mahalanobis_scores", "")
    _compare(got, want, name, case, "one score per TEST row (the min over classes is taken "
             "along the class axis)", _maha_hints(variants, relative), rtol=1e-3, atol=1e-3)


#: Work of notebook 06's scoring relative to the timing case of :func:`_maha_timing`, for an
#: implementation whose cost grows like rows x D^2 x classes (a loop over the classes with a
#: per-class (M, D) x (D, D) product or einsum): 10,000 test rows, D = 319 after the rotation,
#: 328 class Gaussians in all (k = 1, 3, 10, 50, 100, MD and RMD) against 1,000 rows, D = 128
#: and 40 classes.
_MAHA_TIMING_SCALE = (10_000 * 319 ** 2 * 2 * (1 + 3 + 10 + 50 + 100)) / (1_000 * 128 ** 2 * 40)


def _maha_timing(student_fn, name: str) -> None:
    """Warn (print) when the student's MD is correct but so slow that notebook 06's scoring
    cell would run past the grader's cell limit: NumPy's ``einsum`` without ``optimize`` in
    its source (torch's einsum uses BLAS), or a time on a mid-size case more than ten times
    that of a vectorised computation timed right before it (so a busy machine does not
    count)."""
    import inspect
    import time

    try:
        source = inspect.getsource(student_fn)
    except (OSError, TypeError):
        source = ""
    g = _gen(99)
    train = torch.randn(2000, 128, generator=g)
    labels = torch.arange(2000) % 40
    test = torch.randn(1000, 128, generator=g)
    start = time.perf_counter()
    x = train.double()
    cov = torch.stack([torch.cov(x[labels == c].T) for c in range(40)]).mean(0)
    means = torch.stack([x[labels == c].mean(0) for c in range(40)])
    prec = torch.linalg.pinv(cov, hermitian=True)
    tp = test.double() @ prec
    (tp * test.double()).sum(1, keepdim=True) - 2 * tp @ means.T + ((means @ prec) * means).sum(1)
    baseline = time.perf_counter() - start
    start = time.perf_counter()
    student_fn(train, labels, test, relative=False)
    seconds = time.perf_counter() - start
    slow_einsum = ("np.einsum(" in source or "numpy.einsum(" in source) \
        and "optimize" not in source
    if not slow_einsum and not (seconds > 1.0 and seconds > 10 * baseline):
        return
    predicted = seconds * _MAHA_TIMING_SCALE / 60
    cause = ("Your function calls NumPy's einsum without optimize=...: for a product of three "
             "operands such as 'nd,de,ne->n' it loops in C without BLAS, about a hundred times "
             "slower than a matrix product" if slow_einsum else
             "Usual causes: a loop over the test rows, or a per-class np.einsum")
    print(f"WARNING: {name} is correct but slow: {seconds:.2f} s for 1,000 test rows, D = 128 "
          f"and 40 classes ({seconds / max(baseline, 1e-9):.0f} times a vectorised "
          f"computation timed just before). Notebook 06 scores 10,000 rows of the D = 319 "
          f"features for k up to 100, MD and RMD: at this speed about {predicted:.0f} min, and "
          f"the grader stops a cell after 2 min (05's part B takes minutes too). {cause}. Use "
          f"matrix products, e.g. ((diff @ P) * diff).sum(1) per class, or the expansion "
          f"h P h - 2 h P mu_c + mu_c P mu_c for all classes at once.")


def check_mahalanobis(student_fn: Callable) -> None:
    """Self-check of ``mahalanobis_exercise(train_feats, train_labels, test_feats, relative=False)``.

    Compares with :func:`ood_utils.scores.mahalanobis_scores` for ``relative=False`` (MD) and
    ``relative=True`` (RMD) on classes of unequal size and different spread (so the course's
    unweighted mean of class covariances differs from the class-size-weighted, pooled one),
    on a case whose covariance is nearly singular (condition number ~1e9), which float32
    arithmetic cannot handle but float64 with any correct inverse (``inv``, ``pinv``,
    ``pinvh``, ``solve``, ``lstsq``) can, and on a case with a single-sample class (to be
    skipped). Then times the function on a mid-size case and prints a warning when notebook
    06's scoring cell would take minutes at that speed.
    """
    from .scores import mahalanobis_scores

    __tracebackhide__ = True
    _require_callable(student_fn)
    name = _fn_name(student_fn)
    for seed, sizes, singular in [(0, (30, 21, 14), False), (1, (18, 25), False),
                                  (2, (40, 35, 30), True), (4, (30, 1, 21, 14), False)]:
        train, labels, test = _maha_data(seed, sizes, d=5 if singular else 4,
                                         nearly_singular=singular)
        variants = _maha_variants(train.double().numpy(), labels.numpy(), test.double().numpy())
        for relative in (False, True):
            case = (f"{len(sizes)} classes of sizes {sizes}, test {tuple(test.shape)}, "
                    f"relative={relative}")
            if singular:
                case += ("; this case has a nearly singular covariance, like real features: "
                         "compute means, covariances and distances in float64")
            if 1 in sizes:
                case += ("; one class has a single training sample: skip classes with fewer "
                         "than two samples")
            _check_maha_case(student_fn, mahalanobis_scores, name, train, labels, test,
                             relative, case, variants)
    _maha_timing(student_fn, name)
    _passed(name)


# --------------------------------------------------------------------------- k-means (part VIII)

def _blobs(seed: int, sizes=(25, 25), d: int = 5):
    """Well-separated anisotropic blobs of unequal size and spread: every k-means run finds
    the same clusters, and a size-weighted covariance differs from the unweighted one."""
    g = _gen(seed)
    if len(sizes) > d:
        raise ValueError("use at most d blobs")
    centres = torch.eye(d)[:len(sizes)] * 60
    rows = []
    for b, n in enumerate(sizes):
        mix = (torch.randn(d, d, generator=g) * 0.3 + torch.eye(d)) * (0.6 + 0.8 * b)
        rows.append(torch.randn(n, d, generator=g) @ mix + centres[b])
    train = torch.cat(rows).float()
    # test rows: near training rows, a tight far-away group (OOD), and scattered points; k-means
    # fitted on these finds the far group as a cluster, unlike k-means on the training rows
    far = torch.randn(12, d, generator=g) + torch.full((d,), -50.0)
    test = torch.cat([train[::9] + 0.5 * torch.randn(len(train[::9]), d, generator=g),
                      far, torch.randn(4, d, generator=g) * 30]).float()
    return train, test


def _overlap_data(seed: int = 7, n: int = 300) -> torch.Tensor:
    """Overlapping anisotropic data: k-means lands in different partitions for different
    seeds, so only the same settings give the same clusters."""
    return (torch.randn(n, 6, generator=_gen(seed))
            * torch.tensor([3.0, 2, 1, 1, 0.5, 0.5])).float()


def _require_int64_ids(result, name: str, case: str) -> None:
    __tracebackhide__ = True
    if isinstance(result, np.ndarray):
        raise AssertionError(
            f"{name} returned a NumPy array ({case}); return a torch tensor of int64 "
            f"(torch.from_numpy(kmeans.labels_.astype(np.int64))): the next exercise and the "
            f"notebook's cells compare and index torch tensors with it")
    if isinstance(result, torch.Tensor) and result.dtype != torch.int64:
        raise AssertionError(
            f"{name} returned {result.dtype} cluster ids ({case}); return int64 (.long()): "
            f"scikit-learn's labels_ are int32, and torch.bincount / indexing in the next "
            f"cells expect int64")


def check_kmeans_cluster_ids(student_fn: Callable) -> None:
    """Self-check of ``kmeans_cluster_ids_exercise(train_feats, n_clusters, seed=0)``.

    The function returns one cluster id per training row as an int64 torch tensor. Compared
    as a partition (the numbering of the clusters does not matter) with scikit-learn's
    ``KMeans`` under the course's fixed settings (:data:`ood_utils.scores.KMEANS_SETTINGS`):
    on separated blobs of unequal size (any k-means finds them), on overlapping random data,
    where only the same settings (``n_init=1``, ``random_state=seed``, ``algorithm="lloyd"``,
    float32 input) give the same partition, and with ``n_clusters=1`` (every row in cluster 0).
    """
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score

    from .scores import KMEANS_SETTINGS

    __tracebackhide__ = True
    _require_callable(student_fn)
    name = _fn_name(student_fn)
    for train, k, seed, what in [(_blobs(0, (40, 12))[0], 2, 0, "2 separated blobs"),
                                 (_blobs(1, (30, 9, 22, 15))[0], 4, 0, "4 separated blobs"),
                                 (_overlap_data(), 7, 3, "overlapping random data"),
                                 (_blobs(2, (20, 20))[0], 1, 0, "one cluster")]:
        case = f"{what}, train {tuple(train.shape)}, n_clusters={k}, seed={seed}"
        got = student_fn(train.clone(), k, seed=seed)
        ids = _as_array(got, name, "one cluster id per training row")
        if ids.shape != (len(train),):
            raise AssertionError(f"{name} returned shape {ids.shape} ({case}); return the "
                                 f"cluster id of every TRAINING row, shape {(len(train),)}")
        want = KMeans(n_clusters=k, random_state=seed, n_init=KMEANS_SETTINGS["n_init"],
                      algorithm=KMEANS_SETTINGS["algorithm"]).fit(train.numpy()).labels_
        if len(np.unique(ids)) != k:
            raise AssertionError(f"{name} returned {len(np.unique(ids))} distinct ids ({case}); "
                                 f"expected {k} clusters")
        if k > 1 and adjusted_rand_score(want, ids) < 1.0 - 1e-9:
            raise AssertionError(
                f"{name} returned another partition than the course's k-means ({case}): "
                f"scikit-learn's KMeans with {k} clusters, one initialisation, `seed` as its "
                f"random state and Lloyd's algorithm, fitted on the float32 training features "
                f"as they are. Check each of these settings (the defaults of KMeans differ)")
        _require_int64_ids(got, name, case)
    _passed(name)


def check_kmeans_mahalanobis(student_fn: Callable) -> None:
    """Self-check of ``kmeans_mahalanobis_exercise(train_feats, test_feats, n_clusters,
    relative=False, seed=0)``.

    Uses blobs of unequal size and spread that are so far apart that any k-means run finds
    them, so the result does not depend on the initialisation; compares with
    :func:`ood_utils.scores.kmeans_mahalanobis_scores` for 2 and 4 clusters, MD and RMD.
    Because the cluster sizes differ, a class-size-weighted (pooled) covariance gives other
    scores than the course's unweighted mean of the cluster covariances. A last case on
    overlapping data with ``seed=3`` catches a function that ignores its ``seed``.
    """
    from sklearn.cluster import KMeans

    from .scores import KMEANS_SETTINGS, kmeans_mahalanobis_scores

    __tracebackhide__ = True
    _require_callable(student_fn)
    name = _fn_name(student_fn)
    for sizes, seed in [((40, 12), 0), ((30, 9, 22, 15), 1)]:
        k = len(sizes)
        train, test = _blobs(seed, sizes)
        labels = KMeans(n_clusters=k, random_state=0, n_init=1,
                        algorithm=KMEANS_SETTINGS["algorithm"]).fit(train.numpy()).labels_
        v = _maha_variants(train.double().numpy(), labels, test.double().numpy())
        on_test = KMeans(n_clusters=k, random_state=0, n_init=1).fit(test.numpy())
        v_test = _maha_variants(train.double().numpy(), on_test.predict(train.numpy()),
                                test.double().numpy())
        for relative in (False, True):
            case = (f"{k} separated blobs of sizes {sizes}, train {tuple(train.shape)}, "
                    f"n_clusters={k}, relative={relative}")
            got = _as_array(student_fn(train.clone(), test.clone(), k, relative=relative,
                                       seed=0), name, "one score per test row")
            want = _as_array(kmeans_mahalanobis_scores(train, test, k, relative=relative,
                                                       seed=0), "kmeans_mahalanobis_scores", "")
            hints = {"the sign is flipped: scores must be higher for in-distribution rows "
                     "(score = -min_j of the squared distances)": -want,
                     "k-means was fitted on the TEST features; fit it on the training "
                     "features only": -(v_test["shared"] - (v_test["bg"][:, None] if relative
                                                            else 0)).min(1),
                     **_maha_hints(v, relative)}
            _compare(got, want, name, case, "one score per TEST row", hints, rtol=1e-3,
                     atol=1e-3)
    train = _overlap_data(11, 240)
    test = _overlap_data(12, 30) * 1.5
    case = f"overlapping random data, train {tuple(train.shape)}, n_clusters=5, seed=3"
    got = _as_array(student_fn(train.clone(), test.clone(), 5, relative=False, seed=3),
                    name, "one score per test row")
    want = _as_array(kmeans_mahalanobis_scores(train, test, 5, seed=3),
                     "kmeans_mahalanobis_scores", "")
    hints = {"the `seed` argument is not used (or fixed to 0): pass it on to your "
             "kmeans_cluster_ids_exercise, the partition depends on it":
                 kmeans_mahalanobis_scores(train, test, 5, seed=0).numpy()}
    _compare(got, want, name, case, "one score per TEST row", hints, rtol=1e-3, atol=1e-3)
    _passed(name)


# --------------------------------------------------------------------------- the sweeps (04-06)

def _auroc_pct(s_in, s_out) -> float:
    """AUROC in percent, ID positive, ties half (scikit-learn; the student may use metrics)."""
    from sklearn.metrics import roc_auc_score

    s_in, s_out = np.asarray(s_in, dtype=np.float64), np.asarray(s_out, dtype=np.float64)
    y = np.r_[np.ones(len(s_in)), np.zeros(len(s_out))]
    return float(roc_auc_score(y, np.r_[s_in, s_out]) * 100.0)


def _sweep_dict(result, name: str, settings, what: str) -> dict:
    """The student's sweep as ``{setting: float}``, or an AssertionError saying what is off."""
    __tracebackhide__ = True
    if result is None:
        raise AssertionError(f"{name} returned None: complete the code between the markers so "
                             f"that it returns a dict {{setting: {what}}}")
    if not isinstance(result, dict):
        raise AssertionError(f"{name} returned a {type(result).__name__}; return a dict with "
                             f"one entry per setting, {{setting: {what}}}")
    missing = [t for t in settings if t not in result]
    if missing:
        raise AssertionError(f"{name}'s dict has no entry for {missing} (its keys: "
                             f"{list(result)[:8]}); use the settings passed in as the keys")
    out = {}
    for t in settings:
        try:
            out[t] = float(result[t])
        except (TypeError, ValueError):
            raise AssertionError(f"{name}[{t!r}] is a {type(result[t]).__name__}; expected one "
                                 f"number, the {what}") from None
    return out


def _compare_sweep(got: dict, want: dict, name: str, case: str, hints: dict,
                   tol: float = 1e-6) -> None:
    __tracebackhide__ = True
    bad = [t for t in want if not abs(got[t] - want[t]) <= tol + 1e-9 * abs(want[t])]
    if not bad:
        return
    for message, candidate in hints.items():
        if all(abs(got[t] - candidate[t]) <= max(tol, 1e-6) for t in want):
            raise AssertionError(f"{name}: wrong values ({case}). Likely cause: {message}.")
    t = bad[0]
    raise AssertionError(f"{name}: wrong value for setting {t!r} ({case}): {got[t]:.4f}, the "
                         f"reference gives {want[t]:.4f}")


def check_temperature_sweep(student_fn: Callable) -> None:
    """Self-check of ``temperature_sweep_exercise(layer, id_feats, ood_feats, temperatures)``.

    Expected: ``{T: AUROC in percent of max softmax(layer(x) / T)}`` (softmax in float64), on
    a random linear layer with ID and OOD rows drawn differently, for several ``T``.
    """
    __tracebackhide__ = True
    _require_callable(student_fn)
    name = _fn_name(student_fn)
    torch.manual_seed(57)
    layer = torch.nn.Linear(6, 4)
    with torch.no_grad():
        layer.weight.mul_(4.0)
    id_feats = _random_feats(40, 6, 58)
    ood_feats = _random_feats(30, 6, 59) * 0.4
    temps = (0.01, 0.5, 1.0, 4.0)
    case = f"Linear(6, 4), 40 ID and 30 OOD rows, temperatures {temps}"
    before = [p.detach().clone() for p in layer.parameters()]
    got = _sweep_dict(student_fn(layer, id_feats.clone(), ood_feats.clone(), temps), name,
                      temps, "AUROC in percent")
    if any(not torch.equal(a, b) for a, b in zip(before, layer.parameters())):
        raise AssertionError(f"{name} changed the layer's weights; only evaluate it")
    with torch.no_grad():
        z_in = layer(id_feats).double().numpy()
        z_out = layer(ood_feats).double().numpy()
        z32_in, z32_out = layer(id_feats), layer(ood_feats)

    def sweep(f):
        return {t: _auroc_pct(*f(t)) for t in temps}

    want = sweep(lambda t: (_softmax(z_in / t).max(1), _softmax(z_out / t).max(1)))
    hints = {
        "the logits are multiplied by T: divide them, softmax(z / T)":
            sweep(lambda t: (_softmax(z_in * t).max(1), _softmax(z_out * t).max(1))),
        "the softmax is taken in float32: at small T almost every probability rounds to 1 "
        "and the scores tie; divide and take the softmax in float64":
            sweep(lambda t: ((z32_in / t).softmax(1).max(1).values.double().numpy(),
                             (z32_out / t).softmax(1).max(1).values.double().numpy())),
        "the temperature is not used: every entry is the T = 1 AUROC":
            {t: want[1.0] for t in temps},
        "the AUROC is a fraction: report it in percent (times 100)":
            {t: v / 100.0 for t, v in want.items()},
        "the scores point the wrong way (100 - AUROC): higher must mean more in-distribution":
            {t: 100.0 - v for t, v in want.items()},
    }
    _compare_sweep(got, want, name, case, hints, tol=1e-4)
    _passed(name)


def check_shrinkage_sweep(student_fn: Callable) -> None:
    """Self-check of ``shrinkage_sweep_exercise(train_feats, train_labels, id_feats,
    ood_feats, alphas)``.

    Expected: ``{a: MD AUROC in percent}`` with the course's shared covariance ``Sigma``
    replaced by ``(1 - a) Sigma + a (tr(Sigma) / D) I`` (reference:
    :func:`ood_utils.sweeps.shrinkage_sweep`), on classes of unequal size and spread.
    """
    from .sweeps import shrinkage_sweep

    __tracebackhide__ = True
    _require_callable(student_fn)
    name = _fn_name(student_fn)
    train, labels, test = _maha_data(5, (40, 25, 30), d=5)
    ood = _random_feats(25, 5, 61) * 2.0 + 3.0
    alphas = (0.0, 0.2, 0.7, 1.0)
    case = f"3 classes of sizes (40, 25, 30), D = 5, 9 ID and 25 OOD test rows, alphas {alphas}"
    got = _sweep_dict(student_fn(train.clone(), labels.clone(), test.clone(), ood.clone(),
                                 alphas), name, alphas, "MD AUROC in percent")
    want = shrinkage_sweep(train, labels, test, ood, alphas)
    x, y = train.double().numpy(), labels.numpy()
    groups = [x[y == k] for k in np.unique(y)]
    means = np.stack([g.mean(0) for g in groups])
    cov = np.mean([np.cov(g, rowvar=False) for g in groups], axis=0)
    d = cov.shape[0]

    def md(target, weight):
        def auroc_at(a):
            shrunk = weight(a) * cov + (1 - weight(a)) * target
            prec = np.linalg.pinv(shrunk)
            def score(t):
                t = t.double().numpy()
                return -np.stack([(((t - m) @ prec) * (t - m)).sum(1) for m in means], 1).min(1)
            return _auroc_pct(score(test), score(ood))
        return {a: auroc_at(a) for a in alphas}

    scaled = np.trace(cov) / d * np.eye(d)
    hints = {
        "the shrinkage target is the identity I itself: scale it by tr(Sigma) / D, the "
        "average variance, so that the total variance stays the same":
            md(np.eye(d), lambda a: 1 - a),
        "the weights are swapped: alpha = 0 must leave Sigma unchanged, alpha = 1 give "
        "(tr(Sigma) / D) I": md(scaled, lambda a: a),
        "the target is the diagonal of Sigma (np.diag(np.diag(Sigma))), not the average "
        "variance times I": md(np.diag(np.diag(cov)), lambda a: 1 - a),
        "the AUROC is a fraction: report it in percent (times 100)":
            {a: v / 100.0 for a, v in want.items()},
        "the scores point the wrong way (100 - AUROC): the MD score is -min_c d_c^2":
            {a: 100.0 - v for a, v in want.items()},
    }
    _compare_sweep(got, want, name, case, hints, tol=1e-4)
    _passed(name)


def check_kmeans_sweep(student_fn: Callable) -> None:
    """Self-check of ``kmeans_sweep_exercise(train_feats, test_feats, ks, seed=0)``.

    Expected: ``{k: {"cluster_ids": ..., "md": ..., "rmd": ...}}`` for every ``k`` in ``ks``:
    the course's k-means fitted once per ``k`` on the training rows (``k = 1``: one cluster)
    and the MD and RMD scores of every test row with the clusters as classes (reference:
    :func:`ood_utils.sweeps.kmeans_sweep`), on separated blobs of unequal size.
    """
    from sklearn.metrics import adjusted_rand_score

    from .sweeps import kmeans_sweep

    __tracebackhide__ = True
    _require_callable(student_fn)
    name = _fn_name(student_fn)
    train, test = _blobs(3, (30, 9, 22, 15))
    ks = (1, 2, 4)
    case = f"4 separated blobs of sizes (30, 9, 22, 15), train {tuple(train.shape)}, ks {ks}"
    got = student_fn(train.clone(), test.clone(), ks, seed=0)
    if not isinstance(got, dict) or any(k not in got for k in ks):
        raise AssertionError(f"{name} must return a dict with one entry per k in ks ({case}), "
                             f"got {type(got).__name__}"
                             + (f" with keys {list(got)}" if isinstance(got, dict) else ""))
    want = kmeans_sweep(train, test, ks, seed=0)
    for k in ks:
        entry = got[k]
        if not isinstance(entry, dict) or not {"cluster_ids", "md", "rmd"} <= set(entry):
            raise AssertionError(f"{name}[{k}] must be a dict with the keys 'cluster_ids', "
                                 f"'md' and 'rmd' ({case})")
        ids = _as_array(entry["cluster_ids"], name, "one cluster id per training row")
        if ids.shape != (len(train),) or (
                k > 1 and adjusted_rand_score(want[k]["cluster_ids"].numpy(), ids) < 1 - 1e-9) \
                or len(np.unique(ids)) != k:
            raise AssertionError(f"{name}[{k}]['cluster_ids'] is not the course's k-means "
                                 f"partition with {k} clusters ({case}); call your "
                                 f"kmeans_cluster_ids_exercise once per k, with the seed")
        for kind in ("md", "rmd"):
            _compare(_as_array(entry[kind], name, "one score per test row"),
                     want[k][kind].numpy(), f"{name}[{k}]['{kind}']", case + f", k={k}",
                     "one score per TEST row",
                     {f"MD and RMD are swapped: '{kind}' must hold the "
                      f"{'relative' if kind == 'rmd' else 'plain'} score":
                          want[k]["md" if kind == "rmd" else "rmd"].numpy()},
                     rtol=1e-3, atol=1e-3)
    _passed(name)


def check_sweep(sweep_id: str, recorded: Any, profile=None) -> None:
    """Graded: compare a recorded sweep ``{setting: AUROC in percent}`` with the answer key's
    measurement of the same sweep (:data:`ood_utils.expected.SWEEPS`).

    Prints one line per setting; raises ``AssertionError`` naming every setting outside its
    tolerance, ``ValueError`` for an unknown sweep, a missing setting or a profile without
    targets for the sweep.
    """
    from .expected import get_sweep

    __tracebackhide__ = True
    p = get_profile(profile)
    targets = get_sweep(sweep_id, p)
    if not isinstance(recorded, dict):
        raise ValueError(f"{sweep_id}: pass the sweep as a dict {{setting: AUROC}}, got "
                         f"{type(recorded).__name__}")
    bad = []
    for setting, exp in targets.items():
        if setting not in recorded:
            raise ValueError(f"{sweep_id}: no recorded value for setting {setting!r} (recorded: "
                             f"{list(recorded)}); run the sweep over every setting given")
        if not exp.is_set:
            raise ValueError(f"{sweep_id}: the answer key has no target for {setting!r} on "
                             f"profile {p.name!r} ({exp.how})")
        v = float(recorded[setting])
        ok = np.isfinite(v) and exp.accepts(v)
        print(f"{sweep_id} {setting}: AUROC {v:.2f}, expected {exp.value:.2f} +/- "
              f"{exp.tol:.2f} -> {'within tolerance' if ok else 'OUTSIDE'}")
        if not ok:
            bad.append(f"{setting} ({v:.2f} vs {exp.value:.2f} +/- {exp.tol:.2f})")
    if bad:
        raise AssertionError(f"{sweep_id}: outside the answer key for {', '.join(bad)} "
                             f"({p.name}). If your self-checks pass, check that the sweep runs "
                             f"on the inputs the notebook gives and over its settings")


# --------------------------------------------------------------------------- AUROC checks

def check_auroc(check_id: str, value: Any, profile=None) -> None:
    """Assert that an AUROC (percent) is within the answer key's tolerance for ``profile``.

    Prints the value, the expected value and the tolerance; raises ``AssertionError`` naming
    both when it is outside, and ``ValueError`` for an unknown check id or a check without a
    recorded target.
    """
    p = get_profile(profile)
    exp = get_expected(check_id, p)
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"value must be a number (AUROC in percent), got {type(value).__name__}"
                         ) from None
    if not np.isfinite(v):
        raise AssertionError(f"{check_id}: AUROC is {v}; the scores contain NaN or inf")
    if not exp.is_set:
        raise ValueError(f"{check_id}: the answer key has no target for profile {p.name!r} "
                         f"({exp.how})")
    line = f"{check_id}: AUROC {v:.2f}, expected {exp.value:.2f} +/- {exp.tol:.2f} ({p.name})"
    if exp.accepts(v):
        print(line + " -> within tolerance")
        return
    hint = ""
    if 0.0 <= v <= 1.0:
        hint = " It looks like a fraction: report the AUROC in percent (multiply by 100)."
    elif abs((100.0 - v) - exp.value) <= exp.tol:
        hint = (" 100 minus it would match: the scores point the wrong way "
                "(higher must mean more in-distribution).")
    raise AssertionError(f"{check_id}: AUROC {v:.2f} is outside the expected {exp.value:.2f} "
                         f"+/- {exp.tol:.2f} for profile {p.name}.{hint}")


# --------------------------------------------------------------------------- features (01) and CLIP loss (00)

def check_split_visual(student_fn: Callable) -> None:
    """Self-check of ``split_visual_exercise(model) -> (backbone, projection)``.

    Runs on a copy of the shipped tiny CLIP (whatever the profile) with random images:
    ``backbone(x)`` must be the trunk's features ``(N, feature_dim)`` (the image tower *without*
    its final projection) and ``projection(backbone(x))`` must equal ``model.encode_image(x)``.
    Both halves must be ``torch.nn.Module`` objects (the extraction calls ``.eval()`` and
    ``.to(device)`` on the backbone).
    """
    import copy

    _require_callable(student_fn)
    name = _fn_name(student_fn)
    model, _ = _clip_model_for_checks()
    x = torch.randn(5, 3, 32, 32, generator=_gen(90))
    with torch.no_grad():
        want_feats = model.visual.trunk(x).double().numpy()
        want_emb = model.encode_image(x).double().numpy()
    d, e = want_feats.shape[1], want_emb.shape[1]
    out = student_fn(copy.deepcopy(model))  # a copy: changing the model in place is allowed
    if not isinstance(out, tuple) or len(out) != 2:
        raise AssertionError(f"{name} must return a pair (backbone, projection), got "
                             f"{type(out).__name__}")
    backbone, projection = out
    for part, obj in (("backbone", backbone), ("projection", projection)):
        if not isinstance(obj, torch.nn.Module):
            raise AssertionError(
                f"{name} returned a {type(obj).__name__} as the {part}; return torch.nn.Module "
                f"objects (submodules of model.visual, or an nn.Module you build) so that "
                f".eval() and .to(device) work on them")
    backbone.eval()
    projection.eval()
    with torch.no_grad():
        feats = backbone(x)
        got_feats = _as_array(feats, f"{name}: backbone", "trunk features")
        case = f"5 random images of 32x32, trunk dim {d}, embed dim {e}"
        if got_feats.shape == (5, e) and _close(got_feats, want_emb):
            raise AssertionError(
                f"the backbone returned by {name} still applies the projection (its output is "
                f"model.encode_image(x), {e}-d): remove the final linear layer, the backbone "
                f"must output the {d}-d trunk features")
        if got_feats.ndim != 2:
            raise AssertionError(
                f"the backbone returned by {name} gives an output of shape {got_feats.shape} "
                f"({case}); expected one {d}-d feature vector per image, shape (5, {d}). "
                "forward_features() stops before the pooling and the final norm: use the whole "
                "trunk")
        _compare(got_feats, want_feats, f"{name}: backbone", case,
                 f"one {d}-d trunk feature vector per image")
        got_emb = _as_array(projection(feats), f"{name}: projection", "image embeddings")
    if got_emb.shape == (5, d) and d != e:
        raise AssertionError(f"the projection returned by {name} keeps {d} dimensions; it must "
                             f"map the trunk features to CLIP's {e}-d joint space (the image "
                             "tower's final linear layer)")
    _compare(got_emb, want_emb, f"{name}: projection(backbone(x))", case,
             "model.encode_image(x), without normalisation",
             hints={"the projection normalises its output: return W h itself, not W h / |W h|":
                    _normalize(want_emb)})
    _passed(name)


def check_extract_features(student_fn: Callable) -> None:
    """Compare a feature-extraction loop with :func:`ood_utils.features.extract_features`.

    Uses a tiny backbone with dropout (so forgetting ``eval()`` shows) on random images.
    Anything the student's loop writes to stderr (a tqdm bar) is swallowed, so that the graded
    cell stays clean.
    """
    from torch.utils.data import DataLoader, TensorDataset

    from .features import extract_features

    _require_callable(student_fn)
    name = _fn_name(student_fn)
    g = _gen(0)
    images = torch.randn(37, 3, 8, 8, generator=g)
    labels = torch.randint(0, 5, (37,), generator=g)
    loader = DataLoader(TensorDataset(images, labels), batch_size=10, shuffle=False)
    torch.manual_seed(0)
    backbone = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(192, 16),
                                   torch.nn.Dropout(0.5), torch.nn.ReLU())
    backbone.train()  # the student's function must switch it to evaluation mode itself
    # a progress bar inside the student's loop would write to stderr, which nbgrader scores as
    # a failure of this graded cell: keep whatever the loop prints to stderr out of the output
    with contextlib.redirect_stderr(io.StringIO()):
        out = student_fn(backbone, loader, "cpu")
    if not isinstance(out, tuple) or len(out) != 2:
        raise AssertionError(f"{name} must return a pair (feats, labels), got {type(out).__name__}")
    feats, got_labels = out
    if not isinstance(feats, torch.Tensor) or not isinstance(got_labels, torch.Tensor):
        raise AssertionError(f"{name} must return torch tensors (feats, labels)")
    if feats.dtype != torch.float32 or got_labels.dtype != torch.int64:
        raise AssertionError(f"{name} returned dtypes {feats.dtype}/{got_labels.dtype}; "
                             "expected float32 features and int64 labels")
    if feats.requires_grad:
        raise AssertionError(f"{name} returned features that track gradients; "
                             "run the backbone under torch.no_grad()")
    left_in_training = backbone.training  # the student's loop never called .eval() on it
    backbone.eval()
    with torch.no_grad():
        want_feats, want_labels = extract_features(backbone, loader, "cpu", progress=False)
    got, want = feats.detach().double().numpy(), want_feats.double().numpy()
    case = "37 images in batches of 10, 10 + 10 + 10 + 7"
    n, last = len(want), len(want) % 10
    if got.ndim == 2 and len(got) < n:
        what = (f"the last, shorter batch ({last} images) is missing: keep every batch, "
                "drop_last belongs to training loaders, not to feature extraction"
                if len(got) == n - last else
                f"only {len(got)} of {n} rows came back: concatenate the features of every "
                "batch")
        raise AssertionError(f"{name} returned {len(got)} feature rows for {n} images ({case}): "
                             f"{what}")
    if got.ndim == 2 and len(got) > n:
        raise AssertionError(f"{name} returned {len(got)} feature rows for {n} images ({case}): "
                             "some batches are there twice; append each batch once")
    if got.shape == want.shape and not _close(got, want):
        # every row of the reference somewhere among the student's rows: same rows, other order
        dist = np.abs(got[:, None, :] - want[None, :, :]).max(axis=2)
        match = dist.min(axis=0) <= ATOL + RTOL * np.abs(want).max()
        if match.all():
            raise AssertionError(
                f"{name} returned the right feature rows in another order ({case}): row i must "
                "belong to the loader's i-th image; keep the batches in the order the loader "
                "yields them and do not sort or shuffle")
        if left_in_training:
            raise AssertionError(
                f"{name} returned features that differ from the reference ({case}), and the "
                "backbone was still in training mode after your function ran: put it in "
                "evaluation mode (backbone.eval()) before the loop, so that dropout (and batch "
                "norm) behave as at test time")
    _compare(got, want, name, case, "one row of features per image, in the loader's order",
             hints={"the features are L2-normalised: return the trunk output as it is":
                    _normalize(want)})
    if got_labels.shape != want_labels.shape:
        raise AssertionError(f"{name} returned {tuple(got_labels.shape)} labels for {n} images "
                             f"({case}): one label per image, shape ({n},)")
    if not torch.equal(got_labels, want_labels):
        what = ("they are the loader's labels in another order: keep the order of the batches"
                if torch.equal(got_labels.sort().values, want_labels.sort().values)
                else "collect the labels of each batch as the loader yields them")
        raise AssertionError(f"{name} returned labels that differ from the loader's labels "
                             f"({case}): {what}")
    _passed(name)


def check_clip_loss(student_fn: Callable) -> None:
    """Compare a CLIP loss with open_clip's own ``ClipLoss`` on random embeddings.

    The embeddings require gradients, as in training: the loss must keep the autograd graph
    (notebook 00 trains the tiny CLIP with it).
    """
    from open_clip.loss import ClipLoss

    F = torch.nn.functional
    _require_callable(student_fn)
    name = _fn_name(student_fn)
    reference = ClipLoss()
    for case, (b, e, scale) in enumerate([(4, 8, 1.0), (9, 16, 14.3), (32, 5, 100.0)]):
        g = _gen(10 + case)
        u = F.normalize(torch.randn(b, e, generator=g), dim=-1).requires_grad_(True)
        v = F.normalize(torch.randn(b, e, generator=g), dim=-1).requires_grad_(True)
        s = torch.tensor(scale)
        got = student_fn(u, v, s)
        if not isinstance(got, torch.Tensor) or got.numel() != 1:
            raise AssertionError(f"{name} must return a scalar tensor, got "
                                 f"{type(got).__name__} {getattr(got, 'shape', '')}")
        if not got.requires_grad:
            raise AssertionError(f"{name} returned a loss without a gradient: training needs "
                                 "the autograd graph (no .item(), .detach(), numpy or "
                                 "torch.no_grad() inside the loss)")
        with torch.no_grad():
            want = reference(u, v, s)
            logits = s * u @ v.T
            t = torch.arange(b)
            shifted = torch.roll(t, 1)

            def one(x):
                return x.double().reshape(1).numpy()

            hints = {
                "only the image-to-text direction is averaged in": one(F.cross_entropy(logits, t)),
                "only the text-to-image direction is averaged in":
                    one(F.cross_entropy(logits.T, t)),
                "the logits were not multiplied by logit_scale (left out, or divided by it; "
                "logit_scale is already 1/tau)":
                    one((F.cross_entropy(u @ v.T, t) + F.cross_entropy(v @ u.T, t)) / 2),
                "the logits were divided by logit_scale: it is already 1/tau, multiply by it":
                    one((F.cross_entropy(u @ v.T / s, t) + F.cross_entropy(v @ u.T / s, t)) / 2),
                "the two directions are summed instead of averaged":
                    one(F.cross_entropy(logits, t) + F.cross_entropy(logits.T, t)),
                "the targets are wrong: image i belongs to caption i (torch.arange(B))":
                    one((F.cross_entropy(logits, shifted) + F.cross_entropy(logits.T, shifted)) / 2),
                "logit_scale is exponentiated again: it arrives as exp(model.logit_scale) = "
                "1/tau already, multiply the cosines by it as it is":
                    one((F.cross_entropy(torch.exp(s) * u @ v.T, t)
                         + F.cross_entropy(torch.exp(s) * v @ u.T, t)) / 2),
                "the cross-entropies add up the B rows (reduction='sum'): the loss is the "
                "MEAN over the batch, F.cross_entropy's default reduction='mean'":
                    one(b * want),
                "the cross-entropies add up the B rows (reduction='sum') and the two "
                "directions are summed: take the mean over the batch and average the two":
                    one(2 * b * want),
                "this is a sigmoid loss (binary cross-entropy on every image-caption pair, "
                "as in SigLIP), averaged over the B x B pairs; CLIP's loss is a softmax "
                "cross-entropy over each row and each column of the logits":
                    one(F.binary_cross_entropy_with_logits(logits, torch.eye(b))),
                "this is a sigmoid loss (binary cross-entropy on every image-caption pair, "
                "as in SigLIP), summed over the pairs and divided by B; CLIP's loss is a "
                "softmax cross-entropy over each row and each column of the logits":
                    one(F.binary_cross_entropy_with_logits(logits, torch.eye(b),
                                                           reduction="sum") / b),
            }
        _compare(one(got.detach()), one(want), name, f"batch {b}, logit scale {scale}",
                 "a single number", hints=hints)
    _passed(name)


# --- CAC (open-set recognition) ---

def _cac_compare(*args, **kwargs) -> None:
    """:func:`_compare`, raising from a frame IPython hides (the traceback ends at the check)."""
    __tracebackhide__ = True
    try:
        _compare(*args, **kwargs)
        return
    except AssertionError as err:
        message = str(err)
    raise AssertionError(message)


def _cac_array(result: Any, name: str, what: str) -> np.ndarray:
    """:func:`_as_array`, raising from a frame IPython hides."""
    __tracebackhide__ = True
    try:
        return _as_array(result, name, what)
    except AssertionError as err:
        message = str(err)
    raise AssertionError(message)


def _tensor_result(result: Any, name: str, what: str, case: str) -> torch.Tensor:
    """The student's result as a tensor, or an AssertionError saying what came back."""
    __tracebackhide__ = True
    if result is None:
        raise AssertionError(f"{name} returned None: complete the code between "
                             "'### START CODE HERE ###' and '### END CODE HERE ###' so that it "
                             f"returns {what}")
    if isinstance(result, np.ndarray):
        return torch.from_numpy(result)
    if not isinstance(result, torch.Tensor):
        raise AssertionError(f"{name} returned a {type(result).__name__} ({case}); expected a "
                             f"torch tensor ({what})")
    return result


def check_cac_anchors(student_fn: Callable) -> None:
    """Self-check of ``class_anchors_exercise(num_classes, alpha=10.0)`` (notebook 07).

    The anchors are the rows of ``alpha * I`` (anchor ``j`` is ``alpha * e_j``); compared with
    :func:`ood_utils.cac.class_anchors` for several sizes and magnitudes.
    """
    __tracebackhide__ = True
    from .cac import class_anchors

    _require_callable(student_fn)
    name = _fn_name(student_fn)
    for n, alpha in ((3, 10.0), (6, 2.5), (10, 10.0), (2, 1.0)):
        case = f"num_classes={n}, alpha={alpha:g}"
        got = _cac_array(_tensor_result(student_fn(n, alpha=alpha), name,
                                       "an (N, N) tensor of anchors", case),
                        name, "an (N, N) tensor of anchors")
        want = class_anchors(n, alpha=alpha).numpy()
        hints = {"the anchors are not scaled: multiply the one-hot vectors by alpha":
                     np.eye(n) if alpha != 1 else None,
                 "every entry is alpha: anchor j has alpha at position j and zeros elsewhere":
                     np.full((n, n), alpha) if n > 1 else None,
                 "alpha is hard-coded to 10: scale by the function's `alpha` argument":
                     10.0 * np.eye(n) if alpha != 10 else None}
        if got.shape == (n,):
            raise AssertionError(f"{name} returned a vector of shape ({n},) ({case}); return "
                                 f"the ({n}, {n}) matrix whose row j is the anchor alpha * e_j")
        _cac_compare(got, want, name, case, "row j is the anchor of class j, alpha * e_j", hints)
    _passed(name)


def check_anchor_distances(student_fn: Callable) -> None:
    """Self-check of ``anchor_distances_exercise(points, anchors)`` (notebook 07).

    Compares with :func:`ood_utils.cac.anchor_distances` (Euclidean, not squared) on random
    points, with the course's anchors and with arbitrary anchors (which reveal a swapped axis),
    and checks that gradients flow back to the points.
    """
    __tracebackhide__ = True
    from .cac import anchor_distances, class_anchors

    _require_callable(student_fn)
    name = _fn_name(student_fn)
    cases = [(7, 3, "course anchors 10 * e_j"), (5, 6, "course anchors 10 * e_j"),
             (4, 4, "arbitrary anchors"), (9, 2, "arbitrary anchors")]
    for b, n, kind in cases:
        g = _gen(300 + 10 * b + n)
        points = (torch.randn(b, n, generator=g, dtype=torch.float64) * 6)
        anchors = (class_anchors(n, alpha=10.0) if kind.startswith("course")
                   else torch.randn(n, n, generator=g, dtype=torch.float64) * 5)
        case = f"{b} points, {n} classes, {kind}"
        p_in = points.clone().requires_grad_(True)
        raw = _tensor_result(student_fn(p_in, anchors.clone()), name,
                             "a (B, N) tensor of distances", case)
        got = _cac_array(raw, name, "a (B, N) tensor of distances")
        want = anchor_distances(points, anchors).numpy()
        diff = points.numpy()[:, None, :] - anchors.numpy()[None]
        hints = {"these are squared distances: take the square root (the notebook uses the "
                 "Euclidean distance ||z - c_j||, as the paper)": want ** 2,
                 "these are L1 distances (sum of absolute differences): use the Euclidean "
                 "norm": np.abs(diff).sum(-1),
                 "rows and columns are swapped: entry [i, j] is the distance of point i to "
                 "anchor j": want.T if b == n else None}
        _cac_compare(got, want, name, case, "entry [i, j] = ||points[i] - anchors[j]||", hints)
        if not raw.requires_grad:
            raise AssertionError(f"{name} returned distances without a gradient ({case}); use "
                                 "torch operations on `points` (no numpy, .item() or "
                                 "torch.no_grad()) so that training can back-propagate")
        raw.sum().backward()
        if p_in.grad is None or not torch.isfinite(p_in.grad).all():
            raise AssertionError(f"{name}: the gradient with respect to the points is missing or "
                                 f"not finite ({case})")
    _passed(name)


def check_cac_loss(student_fn: Callable) -> None:
    """Self-check of ``cac_loss_exercise(distances, targets, lambda_=0.1)`` (notebook 07).

    Compares with :func:`ood_utils.cac.cac_loss` on random float32 and float64 distances (up
    to 60, the range training reaches and more), checks that the result is a scalar tensor that
    gradients flow through, and names common mistakes when the value matches one of them.
    """
    __tracebackhide__ = True
    from .cac import cac_loss

    _require_callable(student_fn)
    name = _fn_name(student_fn)
    cases = [(8, 6, 0.1, 1.0, torch.float32), (5, 3, 0.0, 1.0, torch.float64),
             (16, 10, 0.5, 1.0, torch.float32), (6, 4, 0.1, 4.0, torch.float64),
             (12, 6, 0.1, 4.0, torch.float32)]
    for b, n, lam, scale, dtype in cases:
        g = _gen(70 + b)
        dist = (torch.rand(b, n, generator=g) * 15 * scale).to(dtype)
        y = torch.randint(0, n, (b,), generator=g)
        case = (f"{b} samples, {n} classes, lambda_={lam:g}, {str(dtype)[6:]} distances up to "
                f"{15 * scale:g}")
        d_in = dist.clone().requires_grad_(True)
        got = student_fn(d_in, y.clone(), lambda_=lam)
        if got is None:
            raise AssertionError(f"{name} returned None: complete the code between "
                                 "'### START CODE HERE ###' and '### END CODE HERE ###'")
        if not isinstance(got, torch.Tensor) or got.numel() != 1:
            raise AssertionError(f"{name} must return a single-number torch tensor (the batch "
                                 f"mean), got {type(got).__name__} {tuple(getattr(got, 'shape', ()))}"
                                 f" ({case}); reduce with .mean() over the batch")
        if not got.requires_grad:
            raise AssertionError(f"{name} returned a value without a gradient ({case}); compute "
                                 "it with torch operations on `distances` (no .item(), numpy or "
                                 "torch.no_grad()) so that training can back-propagate")
        want = float(cac_loss(dist.double(), y, lambda_=lam))
        d = dist.double().numpy()
        d_y = d[np.arange(b), y.numpy()]
        diff = d_y[:, None] - d
        mask = np.ones_like(d, dtype=bool)
        mask[np.arange(b), y.numpy()] = False
        with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
            tuplet = np.log(1 + np.where(mask, np.exp(diff), 0).sum(1))
            no_one = np.log(np.where(mask, np.exp(diff), 0).sum(1))
            flipped = np.log(1 + np.where(mask, np.exp(-diff), 0).sum(1))
        hints = {
            "the batch is summed instead of averaged (use .mean())":
                np.array([want * b]),
            "the anchor term lambda_ * d_y is missing": np.array([tuplet.mean()]),
            "the tuplet term log(1 + sum_j exp(d_y - d_j)) is missing":
                np.array([lam * d_y.mean()]),
            "the anchor term is not multiplied by lambda_":
                np.array([(tuplet + d_y).mean()]) if lam != 1 else None,
            "the '1 +' inside the log is missing (or the sum skips j = y incorrectly)":
                np.array([(no_one + lam * d_y).mean()]),
            "lambda_ is hard-coded to 0.1: use the function's `lambda_` argument":
                np.array([(tuplet + 0.1 * d_y).mean()]) if lam != 0.1 else None,
            "the anchor term is d_y squared: the paper's anchor term is the distance d_y "
            "itself (lambda_ * d_y)":
                np.array([(tuplet + lam * d_y ** 2).mean()]) if lam != 0 else None,
            "the exponent is flipped (or the distances were used as logits): use "
            "exp(d_y - d_j), so that a large distance to the true anchor costs more":
                np.array([(flipped + lam * d_y).mean()]),
        }
        value = float(got.detach())
        if not np.isfinite(value):
            raise AssertionError(
                f"{name} returned {value} ({case}): exp(d_y - d_j) overflows for large "
                "distances; compute log(1 + sum exp(...)) with torch.logsumexp (the j = y term "
                "of logsumexp_j (d_y - d_j) is exp(0) = 1)")
        _cac_compare(np.array([value]), np.array([want]), name, case, "a single number", hints,
                 rtol=1e-5, atol=1e-5)
        got.backward()
        if d_in.grad is None or not torch.isfinite(d_in.grad).all():
            raise AssertionError(f"{name}: the gradient with respect to the distances is "
                                 f"missing or not finite ({case})")
    _passed(name)


def _open_set_cases():
    """Random distance matrices with thresholds that put samples on both sides."""
    from .cac import cac_class_scores

    out = []
    for b, n, seed in ((12, 4, 0), (30, 6, 1), (9, 3, 2)):
        g = _gen(500 + seed)
        d = torch.rand(b, n, generator=g, dtype=torch.float64) * 12
        d[: b // 2] = d[: b // 2] * 0.3  # some samples close to an anchor
        min_s = cac_class_scores(d).min(dim=1).values.sort().values
        threshold = float(min_s[b // 2 - 1] + min_s[b // 2]) / 2  # between two samples
        out.append((d, n, threshold))
    d, n, threshold = out[0]
    tie = float(cac_class_scores(d).min(dim=1).values[0])  # a sample exactly at the threshold
    out.append((d, n, tie))
    return out


def check_open_set_predict(student_fn: Callable) -> None:
    """Self-check of ``open_set_predict_exercise(distances, threshold)`` (notebook 07).

    The prediction is ``argmin_j s_j`` with ``s_j = d_j (1 - softmin(d)_j)``, replaced by ``N``
    (unknown) when ``min_j s_j > threshold``; compared with
    :func:`ood_utils.cac.open_set_predict` with thresholds that put samples on both sides
    (and one sample exactly at the threshold, which stays known).
    """
    __tracebackhide__ = True
    from .cac import cac_class_scores, open_set_predict

    _require_callable(student_fn)
    name = _fn_name(student_fn)
    for d, n, threshold in _open_set_cases():
        case = f"{d.shape[0]} samples, {n} classes, threshold {threshold:.4g}"
        got = student_fn(d.clone(), threshold)
        got = _cac_array(_tensor_result(got, name, "one class id per sample", case), name,
                        "one class id per sample")
        want = open_set_predict(d, threshold=threshold).numpy().astype(np.float64)
        s = cac_class_scores(d).numpy()
        pred, min_s = s.argmin(1), s.min(1)
        dd = d.numpy()
        soft = np.exp(-dd) / np.exp(-dd).sum(1, keepdims=True)
        s_max = dd * (1 - np.exp(dd) / np.exp(dd).sum(1, keepdims=True))
        hints = {
            "the threshold is applied on the wrong side: a sample is UNKNOWN when "
            "min_j s_j > threshold (far from every anchor)": np.where(min_s <= threshold, n, pred),
            "'>=' instead of '>': a sample exactly at the threshold stays known":
                np.where(min_s >= threshold, n, pred),
            "unknown samples must get the class id N (= number of known classes), not -1":
                np.where(min_s > threshold, -1, pred),
            "the threshold is applied to min_j d_j instead of min_j s_j":
                np.where(dd.min(1) > threshold, n, pred),
            "softmax instead of softmin: s_j = d_j * (1 - softmin(d)_j) with "
            "softmin(d) = softmax(-d)": np.where(s_max.min(1) > threshold, n, s_max.argmin(1)),
            "the threshold is missing: every sample gets a known class": pred,
            "the scores are d_j * softmin(d)_j: use (1 - softmin(d)_j)":
                np.where((dd * soft).min(1) > threshold, n, (dd * soft).argmin(1)),
        }
        _cac_compare(got, want, name, case, "one class id per sample (0..N-1, or N for unknown)",
                 hints, rtol=0, atol=0)
    _passed(name)


def check_open_set_confusion(student_fn: Callable) -> None:
    """Self-check of ``open_set_confusion_exercise(labels, predictions, num_classes)`` (07).

    The ``(N + 1) x (N + 1)`` matrix counts samples of true class ``t`` (row) predicted as
    ``p`` (column), the unknown class ``N`` last; compared with
    :func:`ood_utils.cac.open_set_confusion` on random labels with every class present.
    """
    __tracebackhide__ = True
    from .cac import open_set_confusion

    _require_callable(student_fn)
    name = _fn_name(student_fn)
    for n, size, seed in ((3, 40, 0), (6, 200, 1), (2, 25, 2)):
        g = np.random.default_rng(600 + seed)
        labels = g.integers(0, n + 1, size)
        pred = np.where(g.random(size) < 0.6, labels, g.integers(0, n + 1, size))
        labels[: n + 1] = np.arange(n + 1)
        case = f"{size} samples, {n} known classes + unknown"
        got = _cac_array(_tensor_result(student_fn(torch.from_numpy(labels),
                                                  torch.from_numpy(pred), n),
                                       name, "an (N+1, N+1) matrix of counts", case),
                        name, "an (N+1, N+1) matrix of counts")
        want = open_set_confusion(labels, pred, n).astype(np.float64)
        if got.shape == (n, n):
            raise AssertionError(f"{name} returned shape {got.shape} ({case}); the open-set "
                                 f"matrix has one more row and column, for the unknown class N "
                                 f"(e.g. labels=range(N + 1) in sklearn's confusion_matrix)")
        roll = np.roll(np.roll(want, 1, axis=0), 1, axis=1)
        hints = {"rows and columns are swapped: rows are the TRUE classes, columns the "
                 "predictions": want.T,
                 "the unknown class must be the LAST row and column (index N), not the first":
                     roll,
                 "the unknown row and column are misplaced: keep classes in the order 0..N-1, "
                 "then unknown (N)": roll.T}
        _cac_compare(got, want, name, case, "entry [t, p] counts true class t predicted as p",
                 hints, rtol=0, atol=0)
    _passed(name)


def check_cac_results(summary: dict, profile=None) -> None:
    """Graded check of notebook 07: compare its open-set numbers with the answer key.

    ``summary`` is the dict of :func:`ood_utils.cac.open_set_summary`. The answer key's ``cac``
    entry gives the AUROC target (``value``/``tol``, checked with :func:`check_auroc`) and, in
    ``extra``, ``{key: (value, tol)}`` targets for other entries of ``summary`` (closed-set
    accuracy, recognised rates). Prints one line per number; raises ``AssertionError`` naming
    the first number outside its tolerance.
    """
    __tracebackhide__ = True
    if not isinstance(summary, dict):
        raise TypeError("pass the dict returned by ood_utils.cac.open_set_summary")
    p = get_profile(profile)
    exp = get_expected("cac", p)
    if not exp.is_set and not exp.extra:
        raise ValueError(f"cac: the answer key has no target for profile {p.name!r} ({exp.how})")
    if exp.is_set:
        check_auroc("cac", summary.get("auroc", float("nan")), p)
    for key, (value, tol) in exp.extra.items():
        if key not in summary:
            raise ValueError(f"cac: summary has no entry {key!r}; pass open_set_summary's dict")
        v = float(summary[key])
        line = f"cac: {key} {v:.2f}, expected {value:.2f} +/- {tol:.2f} ({p.name})"
        if not np.isfinite(v) or abs(v - value) > tol + 1e-9:
            raise AssertionError(line.replace(", expected", " is outside the expected"))
        print(line + " -> within tolerance")


# --- CAC: the training loop and the threshold sweep (notebook 07) ---

def _hidden_assert(message: str) -> None:
    """Raise the check's AssertionError from a frame IPython hides (``__tracebackhide__``)."""
    __tracebackhide__ = True
    raise AssertionError(message)


def _cac_toy_problem(seed: int):
    """A tiny CAC network (float64, with dropout) and three separable classes of 4 x 4 images."""
    from .cac import CACModel
    from .cac_experiment import TensorBatches

    g = _gen(900 + seed)
    x = torch.randn(45, 1, 4, 4, generator=g, dtype=torch.float64)
    y = torch.arange(45) % 3
    x[:, 0, 0, :] += 2.0 * (y[:, None] == 0)
    x[:, 0, 3, :] += 2.0 * (y[:, None] == 1)
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 8), torch.nn.ReLU(),
                              torch.nn.Dropout(0.3), torch.nn.Linear(8, 3))
    model = CACModel(net, 3, extra_layer=False).double().eval()  # in eval mode: the loop must switch
    return model, TensorBatches(x, y, batch_size=16)


def _cac_train_variant(model, loader, epochs, lr, lambda_, *, zero_grad=True, train_mode=True,
                       optimiser_per_epoch=False, optimiser="adam", params="all", step=True,
                       loss="cac", schedule="batch"):
    """The reference training loop, or one of its typical mistakes (see check_cac_training)."""
    from .cac import cac_loss

    def make():
        chosen = {"all": model.parameters(), "layer": model.cnn[-1].parameters(),
                  "trunk": model.cnn[:-1].parameters()}[params]
        if optimiser == "sgd":
            return torch.optim.SGD(chosen, lr=lr)
        return torch.optim.Adam(chosen, lr=lr)

    total_steps = epochs * len(loader)
    done = 0

    def set_lr():  # lr * (1 - k / K) before update k (batch) or before epoch k (epoch)
        k = done if schedule == "batch" else done * len(loader)
        for group in opt.param_groups:
            group["lr"] = lr * (1 - k / total_steps)

    opt = make()
    batch_losses, history = [], []
    if train_mode:
        model.train()
    for epoch in range(epochs):
        if optimiser_per_epoch:
            opt = make()
        if schedule == "epoch":
            done = epoch
            set_lr()
        total, count, losses = 0.0, 0, []
        for x, y in loader:
            if zero_grad:
                opt.zero_grad()
            d = model(x)
            value = (cac_loss(d, y, lambda_=lambda_) if loss == "cac"
                     else torch.nn.functional.cross_entropy(d, y))
            value.backward()
            if schedule == "batch":
                set_lr()
            if step:
                opt.step()
            if schedule == "batch":
                done += 1
            total += value.item() * len(y)
            count += len(y)
            losses.append(value.item())
        history.append((total / count, float(np.mean(losses)), losses[-1], total))
    model.eval()
    return history


def _flat_params(model) -> np.ndarray:
    return torch.cat([p.detach().flatten() for p in model.parameters()]).double().numpy()


def check_cac_training(student_fn: Callable) -> None:
    """Self-check of ``train_cac_exercise(model, loader, epochs, lr, lambda_)`` (notebook 07).

    Trains a tiny CAC network (float64, with dropout, handed over in evaluation mode) with the
    student's loop and with the reference loop from the same random state, and compares the
    trained weights, the returned per-epoch losses and the mode the model is left in. When the
    weights differ, the loop is compared with typical mistakes (no ``zero_grad``, no
    ``model.train()``, a new optimiser every epoch, a hard-coded learning rate or lambda, SGD,
    part of the network only, no ``step``, cross-entropy on the distances, a constant learning
    rate or a schedule stepped per epoch) and the message
    names the one that matches.
    """
    __tracebackhide__ = True
    import copy

    _require_callable(student_fn)
    name = _fn_name(student_fn)
    for seed, epochs, lr, lam in ((0, 3, 0.05, 0.5), (1, 2, 0.02, 0.25)):
        model, loader = _cac_toy_problem(seed)
        start = copy.deepcopy(model)
        case = f"tiny network, {epochs} epochs, lr={lr:g}, lambda_={lam:g}"
        torch.manual_seed(100 + seed)
        history = student_fn(model, loader, epochs, lr, lam)
        got = _flat_params(model)
        ref_model = copy.deepcopy(start)
        torch.manual_seed(100 + seed)
        ref_hist = _cac_train_variant(ref_model, loader, epochs, lr, lam)
        want = _flat_params(ref_model)
        if np.allclose(got, _flat_params(start), rtol=0, atol=0):
            _hidden_assert(f"{name} did not change any weight ({case}): call "
                           "optimizer.step() after loss.backward() for every batch")
        if got.shape != want.shape or not _close(got, want, rtol=1e-6, atol=1e-8):
            mistakes = {
                "optimizer.zero_grad() is missing: gradients of earlier batches add up; clear "
                "them before every backward()": dict(zero_grad=False),
                "model.train() is missing: the model arrives in evaluation mode, so dropout "
                "stays off during training; switch to training mode before the loop":
                    dict(train_mode=False),
                "the optimiser is created anew in every epoch, which resets Adam's running "
                "averages: create it once, before the loop": dict(optimiser_per_epoch=True),
                "the learning rate is hard-coded: pass the `lr` argument to the optimiser":
                    dict(lr_override=1e-3),
                "lambda_ is hard-coded: pass the function's `lambda_` argument to your loss "
                "(cac_loss_exercise(distances, y, lambda_=lambda_))": dict(lam_override=0.1),
                "plain SGD instead of Adam: use torch.optim.Adam(model.parameters(), lr=lr)":
                    dict(optimiser="sgd"),
                "only the output layer is trained: give the optimiser model.parameters() "
                "so that the WHOLE network learns": dict(params="layer"),
                "the output layer is not trained: give the optimiser model.parameters() (the "
                "whole network)": dict(params="trunk"),
                "the loss is cross-entropy on the distances: train with your CAC loss, "
                "cac_loss_exercise(model(x), y, lambda_=lambda_)": dict(loss="ce"),
                "the learning rate stays constant: lower it linearly to 0 over the "
                "epochs * len(loader) batches, one scheduler step after every optimiser step":
                    dict(schedule="none"),
                "the schedule steps once per epoch: step it after every batch, so that the "
                "learning rate falls over epochs * len(loader) steps": dict(schedule="epoch"),
            }
            for hint, kw in mistakes.items():
                m = copy.deepcopy(start)
                torch.manual_seed(100 + seed)
                _cac_train_variant(m, loader, epochs, kw.pop("lr_override", lr),
                                   kw.pop("lam_override", lam), **kw)
                if got.shape == _flat_params(m).shape and _close(got, _flat_params(m),
                                                                 rtol=1e-6, atol=1e-8):
                    _hidden_assert(f"{name}: {hint} ({case})")
            _hidden_assert(
                f"{name}: the trained weights differ from the reference loop's ({case}). "
                "Check: one Adam optimiser over model.parameters() with lr, created before the "
                "loop; model.train() first; for every batch zero_grad, distances = model(x), "
                "your cac_loss_exercise(distances, y, lambda_=lambda_), backward, step, "
                "then the learning-rate schedule's step; no "
                "extra random numbers (no torch.manual_seed, no second pass over the loader)")
        if model.training:
            _hidden_assert(f"{name} left the model in training mode ({case}): call "
                           "model.eval() at the end, or dropout stays on when the notebook "
                           "evaluates the network")
        if history is None:
            _hidden_assert(f"{name} returned None ({case}): return the list of the mean loss "
                           "of every epoch")
        try:
            hist = np.asarray([float(v) for v in history], dtype=np.float64)
        except (TypeError, ValueError):
            _hidden_assert(f"{name} returned a {type(history).__name__} ({case}); return a "
                           "list of numbers, the mean loss of every epoch (use loss.item())")
        if hist.shape != (epochs,):
            _hidden_assert(f"{name} returned {hist.shape[0]} losses for {epochs} epochs "
                           f"({case}): append one number per epoch, after its last batch")
        weighted, plain, last, total = (np.array(v) for v in zip(*ref_hist))
        if not (_close(hist, weighted, 1e-5, 1e-7) or _close(hist, plain, 1e-5, 1e-7)):
            hints = {"these are the losses of the LAST batch of each epoch: average over the "
                     "epoch's batches": last,
                     "these are sums over the epoch: divide by the number of samples (or "
                     "average the batch losses)": total}
            for hint, values in hints.items():
                if _close(hist, values, 1e-5, 1e-7):
                    _hidden_assert(f"{name}: {hint} ({case})")
            _hidden_assert(f"{name}: the returned losses {np.round(hist, 4).tolist()} are not "
                           f"the per-epoch means {np.round(weighted, 4).tolist()} ({case})")
    _passed(name)


def _threshold_for(s_val: np.ndarray, tpr: float) -> float:
    """The largest score that at least ceil(tpr * n) held-out known scores reach (written out
    here, independently of :func:`ood_utils.metrics.threshold_at_tpr`)."""
    k = max(1, int(np.ceil(tpr * len(s_val) - 1e-9)))
    return float(np.sort(s_val)[::-1][k - 1])


def _sweep_reference(s_val, s_known, s_unknown, tprs):
    acc, rej = [], []
    for t in tprs:
        thr = _threshold_for(s_val, t)
        acc.append(float((s_known >= thr).mean() * 100))
        rej.append(float((s_unknown < thr).mean() * 100))
    return np.array(acc), np.array(rej)


def _sweep_result(result, name: str, n: int, case: str) -> tuple[np.ndarray, np.ndarray]:
    __tracebackhide__ = True
    what = "two sequences (known accepted %, unknown rejected %), one number per tpr"
    if result is None:
        _hidden_assert(f"{name} returned None: complete the code and return {what}")
    if not isinstance(result, (tuple, list)) or len(result) != 2:
        _hidden_assert(f"{name} returned {type(result).__name__}; return {what} ({case})")
    out = []
    for part in result:
        a = np.asarray(part.detach().cpu() if isinstance(part, torch.Tensor) else part,
                       dtype=np.float64).reshape(-1)
        if a.shape != (n,):
            _hidden_assert(f"{name}: each returned sequence must hold one number per tpr "
                           f"({n}), got shape {a.shape} ({case})")
        out.append(a)
    return out[0], out[1]


def check_threshold_sweep(student_fn: Callable) -> None:
    """Self-check of ``threshold_sweep_exercise(scores_val, scores_known, scores_unknown, tprs)``.

    For every target share ``tpr`` the threshold is chosen on the held-out known scores
    ``scores_val`` (:func:`ood_utils.metrics.threshold_at_tpr`: accepted when
    ``score >= threshold``); the function returns the percentages of known test images
    accepted and of unknown test images rejected. Compared on random scores with ties.
    """
    __tracebackhide__ = True
    _require_callable(student_fn)
    name = _fn_name(student_fn)
    for seed, tprs in ((0, [0.8, 0.9, 0.95, 0.99]), (1, [0.5, 0.95]), (2, [0.6, 0.7, 0.999])):
        g = np.random.default_rng(700 + seed)
        s_val = np.round(g.normal(1.0, 1.0, 200), 1)  # rounded: ties at the threshold
        s_known = np.round(g.normal(1.0, 1.0, 150), 1)
        s_unknown = np.round(g.normal(-0.5, 1.0, 120), 1)
        case = f"tprs={tprs}"
        got = student_fn(torch.from_numpy(s_val), torch.from_numpy(s_known),
                         torch.from_numpy(s_unknown), list(tprs))
        acc, rej = _sweep_result(got, name, len(tprs), case)
        want_acc, want_rej = _sweep_reference(s_val, s_known, s_unknown, tprs)
        on_test = _sweep_reference(s_known, s_known, s_unknown, tprs)
        strict = []
        for t in tprs:
            thr = _threshold_for(s_val, t)
            strict.append((float((s_known > thr).mean() * 100),
                           float((s_unknown <= thr).mean() * 100)))
        strict_acc, strict_rej = (np.array(v) for v in zip(*strict))
        hints = [
            ("the outputs are fractions: return percentages (times 100)",
             (want_acc / 100, want_rej / 100)),
            ("the two outputs are swapped: first the known accepted, then the unknown rejected",
             (want_rej, want_acc)),
            ("the threshold is chosen on the known TEST scores: choose it on the held-out "
             "scores_val, as a deployed system would", on_test),
            ("'>' instead of '>=': a sample whose score equals the threshold is accepted",
             (strict_acc, strict_rej)),
            ("the second output is the share of unknown images ACCEPTED: report the share "
             "rejected (score below the threshold)", (want_acc, 100 - want_rej)),
            ("the threshold accepts 1 - tpr of the held-out known images instead of tpr",
             _sweep_reference(s_val, s_known, s_unknown, [1 - t if t < 1 else t for t in tprs])),
        ]
        if _close(acc, want_acc, 0, 1e-3) and _close(rej, want_rej, 0, 1e-3):
            continue
        for hint, (a, r) in hints:
            if _close(acc, a, 0, 1e-3) and _close(rej, r, 0, 1e-3):
                _hidden_assert(f"{name}: {hint} ({case})")
        _hidden_assert(f"{name}: known accepted {np.round(acc, 2).tolist()} / unknown rejected "
                       f"{np.round(rej, 2).tolist()}, expected {np.round(want_acc, 2).tolist()}"
                       f" / {np.round(want_rej, 2).tolist()} ({case}); the threshold for each "
                       "tpr is metrics.threshold_at_tpr(scores_val, tpr=tpr), accepted means "
                       "score >= threshold")
    _passed(name)


def check_threshold_sweep_results(tprs, known_accepted, unknown_rejected, dist_val, dist_test,
                                  dist_unknown) -> None:
    """Graded check of notebook 07's sweep: the recorded numbers against the reference sweep.

    ``tprs`` must hold at least five distinct targets in ``[0.5, 1]`` including 0.95; the
    reference (:func:`ood_utils.cac_experiment.threshold_sweep`) is computed on the same
    distances, and every recorded percentage must agree to 0.01 points.
    """
    __tracebackhide__ = True
    from .cac_experiment import threshold_sweep

    t = np.asarray(list(tprs), dtype=np.float64).reshape(-1)
    if len(np.unique(t)) < 5 or t.min() < 0.5 or t.max() > 1 or not np.isclose(t, 0.95).any():
        _hidden_assert(f"the sweep needs at least five different tprs between 0.5 and 1, 0.95 "
                       f"among them; got {t.tolist()}")
    acc, rej = _sweep_result((known_accepted, unknown_rejected), "the sweep", len(t),
                             f"tprs={t.tolist()}")
    ref = threshold_sweep(dist_val, dist_test, dist_unknown, t)
    for label, got, want in (("known accepted", acc, ref["known_accepted"]),
                             ("unknown rejected", rej, ref["unknown_rejected"])):
        if not _close(got, want, 0, 0.01):
            _hidden_assert(f"sweep: {label} {np.round(got, 2).tolist()} differs from the "
                           f"reference {np.round(want, 2).tolist()} on the same distances")
    print(f"sweep: {len(t)} thresholds agree with the reference on the same distances")


# --- CAC: the network (notebook 07) ---

def _cnn_variant(n: int, channels, dropout: float, *, pool="avg", relu_first=False,
                 hidden=True, extra_layer=False):
    """:class:`SmallCNN`'s architecture, or one of its typical mistakes (see check_cac_network)."""
    from torch import nn

    c1, c2, c3 = channels
    pool_layer = nn.AvgPool2d if pool == "avg" else nn.MaxPool2d

    def block(cin, cout, pooled):
        conv = nn.Conv2d(cin, cout, kernel_size=5)
        if not pooled:
            return [conv, nn.ReLU(), nn.Dropout(dropout)]
        if relu_first:
            return [conv, nn.ReLU(), pool_layer(2), nn.Dropout(dropout)]
        return [conv, pool_layer(2), nn.ReLU(), nn.Dropout(dropout)]

    layers = block(1, c1, False) + block(c1, c2, True) + block(c2, c3, True) + [nn.Flatten()]
    if hidden:
        layers += [nn.Linear(c3 * 9, 256), nn.ReLU(), nn.Dropout(dropout), nn.Linear(256, n)]
    else:
        layers += [nn.Linear(c3 * 9, n)]
    if extra_layer:
        layers += [nn.Linear(n, n)]
    return nn.Sequential(*layers)


def _trainable(module) -> list:
    return [q for q in module.parameters() if q.requires_grad]


def check_cac_network(student_fn: Callable) -> None:
    """Self-check of the class ``CACNetworkExercise(num_classes, channels, dropout, alpha)`` (notebook 07).

    Builds the student's network and :class:`ood_utils.cac_experiment.SmallCNN` after the same
    ``torch.manual_seed`` and compares: the trainable parameters (same shapes, same order, same
    initial values, so that the CAC network starts where the baseline starts), the anchors (a
    buffer or a frozen parameter equal to ``alpha * I``), ``embed(x)`` against the CNN's logits
    in evaluation mode (twice: dropout must be off) and in training mode (the same dropout
    masks), and ``forward(x)`` against the distances to the anchors. Names the typical
    mistakes: an extra ``N x N`` layer, a missing hidden layer, max pooling, ReLU before the
    pooling, trainable or hard-coded anchors, dropout left on in evaluation, logits instead of
    distances.
    """
    __tracebackhide__ = True
    from torch import nn

    from .cac import anchor_distances, class_anchors
    from .cac_experiment import SmallCNN

    _require_callable(student_fn)
    name = getattr(student_fn, "__name__", "your network")
    for seed, n, channels, dropout, alpha in ((0, 6, (4, 4, 8), 0.5, 10.0),
                                              (1, 3, (3, 5, 6), 0.3, 2.5)):
        case = f"num_classes={n}, channels={channels}, dropout={dropout}, alpha={alpha:g}"
        torch.manual_seed(seed)
        ref = SmallCNN(n, channels=channels, dropout=dropout)
        torch.manual_seed(seed)
        try:
            net = student_fn(n, channels=channels, dropout=dropout, alpha=alpha)
        except TypeError as err:
            _hidden_assert(f"{name}({case}) failed: {err}; keep the signature "
                           "(num_classes, channels, dropout, alpha=10.0)")
        if not isinstance(net, nn.Module):
            _hidden_assert(f"{name} must be a torch.nn.Module subclass (call super().__init__())")
        got_shapes = [tuple(q.shape) for q in _trainable(net)]
        want_shapes = [tuple(q.shape) for q in ref.parameters()]
        if got_shapes != want_shapes:
            variants = {
                "an extra N x N linear layer after the logits: in the paper (and here) the "
                "logit layer itself is the anchor space; that layer came from a student "
                "project": dict(extra_layer=True),
                "the 256-unit hidden layer is missing: flatten, Linear(c3 * 3 * 3, 256), ReLU, "
                "dropout, then Linear(256, num_classes)": dict(hidden=False),
            }
            for hint, kw in variants.items():
                if got_shapes == [tuple(q.shape) for q in
                                  _cnn_variant(n, channels, dropout, **kw).parameters()]:
                    _hidden_assert(f"{name}: {hint} ({case})")
            if any(s == (n, n) for s in got_shapes) and len(got_shapes) == len(want_shapes) + 1:
                _hidden_assert(f"{name}: the anchors are a trainable parameter: store them with "
                               "register_buffer (or nn.Parameter(..., requires_grad=False)), "
                               f"they must stay fixed ({case})")
            _hidden_assert(f"{name}: its trainable parameters have shapes {got_shapes}, the "
                           f"course's CNN {want_shapes} ({case}); three 5 x 5 convolutions "
                           "(1 -> c1 -> c2 -> c3), Linear(c3 * 3 * 3, 256), "
                           "Linear(256, num_classes), nothing else trainable")
        if not all(torch.equal(a.detach(), b.detach()) for a, b in
                   zip(_trainable(net), ref.parameters())):
            _hidden_assert(f"{name}: after the same torch.manual_seed its initial weights differ "
                           f"from the course CNN's ({case}): create the layers in the order "
                           "they are used (conv1, conv2, conv3, hidden, output) and draw no other "
                           "random numbers in __init__, so that CAC starts where the baseline "
                           "starts")
        anchors = getattr(net, "anchors", None)
        if not isinstance(anchors, torch.Tensor):
            _hidden_assert(f"{name} has no tensor attribute `anchors` ({case}): store the "
                           "anchors of class_anchors_exercise(num_classes, alpha) on the module")
        buffers = dict(net.named_buffers())
        frozen = {k: v for k, v in net.named_parameters() if not v.requires_grad}
        if not any(v is anchors for v in list(buffers.values()) + list(frozen.values())):
            _hidden_assert(f"{name}: `anchors` is a plain attribute ({case}); register it "
                           "(self.register_buffer('anchors', ...)) so that it is saved with the "
                           "weights and moves with .to(device)")
        want_anchors = class_anchors(n, alpha=alpha)
        if not _close(anchors.detach().double().numpy(), want_anchors.numpy(), 1e-6, 1e-6):
            hint = ("alpha is hard-coded: pass the `alpha` argument to class_anchors_exercise"
                    if alpha != 10 and _close(anchors.detach().double().numpy(),
                                              10 * np.eye(n), 1e-6, 1e-6)
                    else "the anchors are not alpha * I (use class_anchors_exercise)")
            _hidden_assert(f"{name}: {hint} ({case})")
        x = torch.randn(5, 1, 28, 28, generator=_gen(950 + seed))
        embed = getattr(net, "embed", None)
        if not callable(embed):
            _hidden_assert(f"{name} has no method embed(x) returning the logits ({case})")
        net.eval()
        ref.eval()
        with torch.no_grad():
            z1, z2, want = embed(x), embed(x), ref(x)
            forward = net(x)
        got = _cac_array(_tensor_result(z1, f"{name}.embed", "(B, N) logits", case),
                         f"{name}.embed", "(B, N) logits")
        if got.shape != tuple(want.shape):
            _hidden_assert(f"{name}.embed returned shape {got.shape}, expected "
                           f"{tuple(want.shape)} ({case})")
        if not _close(got, want.double().numpy(), 1e-4, 1e-5):
            if not _close(z1.double().numpy(), z2.double().numpy(), 1e-6, 1e-7):
                _hidden_assert(f"{name}.embed: two calls in evaluation mode give different "
                               f"logits ({case}): dropout is still on; use nn.Dropout "
                               "modules, or F.dropout(x, p, training=self.training)")
            variants = {"max pooling instead of average pooling (nn.AvgPool2d(2))":
                            dict(pool="max"),
                        "ReLU before the pooling: the course CNN (like the source) pools "
                        "the convolution's output, then applies ReLU": dict(relu_first=True)}
            for hint, kw in variants.items():
                var = _cnn_variant(n, channels, dropout, **kw).eval()
                with torch.no_grad():
                    for q, v in zip(var.parameters(), ref.parameters()):
                        q.copy_(v)
                    if _close(got, var(x).double().numpy(), 1e-4, 1e-5):
                        _hidden_assert(f"{name}.embed: {hint} ({case})")
            _hidden_assert(f"{name}.embed(x) differs from the course CNN's logits in "
                           f"evaluation mode ({case}); check the order conv -> pool -> "
                           "ReLU -> dropout, the ReLU after every convolution and after the "
                           "hidden layer, and that embed returns the last layer's output")
        dist = _cac_array(_tensor_result(forward, name, "(B, N) distances", case), name,
                          "(B, N) distances")
        want_d = anchor_distances(want.double(), want_anchors).numpy()
        if not _close(dist, want_d, 1e-4, 1e-4):
            hint = ("forward returns the logits: return the distances of embed(x) to the "
                    "anchors (anchor_distances_exercise)"
                    if _close(dist, want.double().numpy(), 1e-4, 1e-5) else
                    "forward(x) is not the distance of embed(x) to every anchor")
            _hidden_assert(f"{name}: {hint} ({case})")
        plain = _cnn_variant(n, channels, dropout)  # SmallCNN in the default memory format,
        with torch.no_grad():                      # whose dropout masks a plain module shares
            for q, v in zip(plain.parameters(), ref.parameters()):
                q.copy_(v)
        net.train()
        plain.train()
        torch.manual_seed(77 + seed)
        got_t = embed(x)
        torch.manual_seed(77 + seed)
        want_t = plain(x)
        if not _close(got_t.detach().double().numpy(), want_t.detach().double().numpy(),
                      1e-4, 1e-5):
            _hidden_assert(f"{name}.embed in training mode differs from the course CNN "
                           f"({case}): dropout (p = the `dropout` argument) belongs after each "
                           "of the four ReLUs, as in the baseline printed above")
        net.eval()
    _passed(name)


_hide_check_frames(globals())  # keep this the last line of the module (see the top)
