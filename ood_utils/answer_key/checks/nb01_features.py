"""Self-checks of notebook 01: the visual trunk/head split and feature extraction."""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from ..registry import compares_with
from ._common import (ATOL, RTOL, _as_array, _clip_model_for_checks, _close, _compare, _fn_name,
                      _gen, _hide_check_frames, _normalize, _passed, _require_callable,
                      local_runner)

# --------------------------------------------------------------------------- features (01) and CLIP loss (00)

def _probe_split_visual(ns, name, model, x):
    """Kernel side of :func:`check_split_visual` (self-contained: the grader sends its source).

    Calls ``ns[name](model)`` (the shipped tiny CLIP, which the grader hands over by name) and
    returns plain values: whether a pair of modules came back (else the types),
    ``backbone(x)`` and ``projection(backbone(x))`` in evaluation mode.
    """
    import torch

    out = ns[name](model)
    if not isinstance(out, tuple) or len(out) != 2:
        return {"pair": False, "type": type(out).__name__}
    wrong = [type(o).__name__ if not isinstance(o, torch.nn.Module) else "" for o in out]
    if any(wrong):
        return {"pair": True, "not_modules": wrong}
    backbone, projection = out
    backbone.eval()
    projection.eval()
    res = {"pair": True, "not_modules": wrong, "emb": None}
    with torch.no_grad():
        res["feats"] = feats = backbone(x)
        try:  # judged only once the backbone's output is right
            res["emb"] = projection(feats) if isinstance(feats, torch.Tensor) else None
        except Exception as err:  # noqa: BLE001
            res["emb_error"] = "%s: %s" % (type(err).__name__, err)
    return res


def _judge_split_visual(run: Callable, name: str) -> None:
    """The verdict of :func:`check_split_visual` from what ``run(_probe_split_visual, ...)``
    returns (here for the self-check, from the kernel for the grader)."""
    model, _ = _clip_model_for_checks()
    x = torch.randn(5, 3, 32, 32, generator=_gen(90))
    with torch.no_grad():
        want_feats = model.visual.trunk(x).double().numpy()
        want_emb = model.encode_image(x).double().numpy()
    d, e = want_feats.shape[1], want_emb.shape[1]
    got = run(_probe_split_visual, name, model, x)  # computed above: changing it is allowed
    if not got.get("pair"):
        raise AssertionError(f"{name} must return a pair (backbone, projection), got "
                             f"{got.get('type')}")
    for part, kind in zip(("backbone", "projection"), got["not_modules"]):
        if kind:
            raise AssertionError(
                f"{name} returned a {kind} as the {part}; return torch.nn.Module "
                f"objects (submodules of model.visual, or an nn.Module you build) so that "
                f".eval() and .to(device) work on them")
    got_feats = _as_array(got.get("feats"), f"{name}: backbone", "trunk features")
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
    if got.get("emb_error"):
        raise AssertionError(f"{name}: projection(backbone(x)) failed ({case}): "
                             f"{got['emb_error']}")
    got_emb = _as_array(got.get("emb"), f"{name}: projection", "image embeddings")
    if got_emb.shape == (5, d) and d != e:
        raise AssertionError(f"the projection returned by {name} keeps {d} dimensions; it must "
                             f"map the trunk features to CLIP's {e}-d joint space (the image "
                             "tower's final linear layer)")
    _compare(got_emb, want_emb, f"{name}: projection(backbone(x))", case,
             "model.encode_image(x), without normalisation",
             hints={"the projection normalises its output: return W h itself, not W h / |W h|":
                    _normalize(want_emb)})


@compares_with('course.models:load_clip')
def check_split_visual(student_fn: Callable) -> None:
    """Self-check of ``split_visual_exercise(model) -> (backbone, projection)``.

    Runs on a copy of the shipped tiny CLIP (whatever the profile) with random images:
    ``backbone(x)`` must be the trunk's features ``(N, feature_dim)`` (the image tower *without*
    its final projection) and ``projection(backbone(x))`` must equal ``model.encode_image(x)``.
    Both halves must be ``torch.nn.Module`` objects (the extraction calls ``.eval()`` and
    ``.to(device)`` on the backbone). The grader runs the same verdict on what the kernel
    returns (:func:`_probe_split_visual`), on images of its own.
    """
    _require_callable(student_fn)
    name = _fn_name(student_fn)
    _judge_split_visual(local_runner({name: student_fn}), name)
    _passed(name)


def _probe_extract_features(ns, name, images, labels, weight, bias, batch_size):
    """Kernel side of :func:`check_extract_features` (self-contained: the grader sends it).

    Builds a tiny backbone with dropout (flatten, the given linear layer, dropout 0.5, ReLU),
    hands it over in training mode with a loader over ``images``/``labels``, and returns plain
    values: what ``ns[name](backbone, loader, "cpu")`` returned (tensors, their dtypes, whether
    they track gradients) and whether the backbone was left in training mode. What the loop
    writes to stderr (a progress bar) is swallowed.
    """
    import contextlib
    import io

    import torch
    from torch.utils.data import DataLoader, TensorDataset

    loader = DataLoader(TensorDataset(images, labels), batch_size=batch_size, shuffle=False)
    backbone = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(*weight.shape[::-1]),
                                   torch.nn.Dropout(0.5), torch.nn.ReLU())
    with torch.no_grad():
        backbone[1].weight.copy_(weight)
        backbone[1].bias.copy_(bias)
    backbone.train()  # the student's function must switch it to evaluation mode itself
    with contextlib.redirect_stderr(io.StringIO()):
        out = ns[name](backbone, loader, "cpu")
    res = {"left_in_training": bool(backbone.training), "pair": False,
           "type": type(out).__name__}
    if not isinstance(out, tuple) or len(out) != 2:
        return res
    feats, got_labels = out
    res["pair"] = True
    if not isinstance(feats, torch.Tensor) or not isinstance(got_labels, torch.Tensor):
        return dict(res, tensors=False)
    return dict(res, tensors=True, dtypes=[str(feats.dtype), str(got_labels.dtype)],
                requires_grad=bool(feats.requires_grad), feats=feats.detach(),
                labels=got_labels)


def _judge_extract_features(run: Callable, name: str) -> None:
    """The verdict of :func:`check_extract_features` from what the probe returns; the
    reference extraction runs here on the same backbone and images."""
    from ...course.features import extract_features

    g = _gen(0)
    images = torch.randn(37, 3, 8, 8, generator=g)
    labels = torch.randint(0, 5, (37,), generator=g)
    weight = torch.randn(16, 192, generator=g) / 192 ** 0.5
    bias = torch.randn(16, generator=g) * 0.1
    got = run(_probe_extract_features, name, images, labels, weight, bias, 10)
    if not got.get("pair"):
        raise AssertionError(f"{name} must return a pair (feats, labels), got {got.get('type')}")
    if not got.get("tensors"):
        raise AssertionError(f"{name} must return torch tensors (feats, labels)")
    if got["dtypes"] != ["torch.float32", "torch.int64"]:
        raise AssertionError(f"{name} returned dtypes {got['dtypes'][0]}/{got['dtypes'][1]}; "
                             "expected float32 features and int64 labels")
    if got.get("requires_grad"):
        raise AssertionError(f"{name} returned features that track gradients; "
                             "run the backbone under torch.no_grad()")
    ref = _probe_extract_features(  # the reference on the same backbone, through the probe
        {"ref": lambda b, ld, dev: extract_features(b, ld, dev, progress=False)}, "ref",
        images, labels, weight, bias, 10)
    want_feats, want_labels = ref["feats"], ref["labels"]
    got_labels = torch.as_tensor(got["labels"])
    got, left_in_training = got["feats"].double().numpy(), got.get("left_in_training")
    want = want_feats.double().numpy()
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


@compares_with('course.features:extract_features')
def check_extract_features(student_fn: Callable) -> None:
    """Compare a feature-extraction loop with :func:`ood_utils.course.features.extract_features`.

    Uses a tiny backbone with dropout (so forgetting ``eval()`` shows) on random images.
    Anything the student's loop writes to stderr (a tqdm bar) is swallowed, so that the graded
    cell stays clean. The grader runs the same verdict on what the kernel returns
    (:func:`_probe_extract_features`), on images and weights of its own.
    """
    _require_callable(student_fn)
    name = _fn_name(student_fn)
    _judge_extract_features(local_runner({name: student_fn}), name)
    _passed(name)


def _probe_real_features(ns, profile, indices, batch_size):
    """Kernel side of 01's graded feature part: the notebook's ``extract_features_exercise``
    with its ``backbone`` and ``preprocess`` on the in-distribution test images ``indices``.
    The images are handed over as a plain tensor dataset (no subset whose indices would point
    at the cached features)."""
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    from ood_utils.course.data import feature_dataset

    ds = feature_dataset(profile, "id_test", transform=ns["preprocess"])
    pairs = [ds[int(i)] for i in indices]
    images = torch.stack([torch.as_tensor(img) for img, _ in pairs])
    labels = torch.as_tensor([int(y) for _, y in pairs])
    out = ns["extract_features_exercise"](ns["backbone"], DataLoader(
        TensorDataset(images, labels), batch_size=batch_size, shuffle=False), "cpu")
    feats = out[0] if isinstance(out, tuple) and out else None
    return {"feats": feats.detach() if isinstance(feats, torch.Tensor) else None}


def _judge_real_features(run: Callable, profile, indices) -> None:
    """01's graded feature part: the student's extraction of the in-distribution test images
    ``indices`` (the grader draws them) must match the cached features within 1e-3."""
    from ...course.features import load_features
    from ...course.profiles import get_profile

    p = get_profile(profile)
    want = load_features(p, progress=False)["id_test_feats"][torch.as_tensor(indices)]
    got = run(_probe_real_features, p.name, list(map(int, indices)), 32)["feats"]
    feats = _as_array(got, "extract_features_exercise", "the trunk features")
    if feats.shape != (len(want), p.feature_dim):
        raise AssertionError(f"your features of {len(want)} test images have shape "
                             f"{feats.shape}, expected ({len(want)}, {p.feature_dim}): is the "
                             "projection still in your backbone?")
    gap = float(np.abs(feats - want.double().numpy()).max())
    if not gap < 1e-3:
        raise AssertionError(f"your features of {len(want)} test images (drawn by the grader) "
                             f"differ from the reference extraction by up to {gap:.2e}")


__all__ = [name for name in dir() if name.startswith("check_")]
_hide_check_frames(globals())  # keep this the last line of the module
