"""Self-checks of notebook 01: the visual trunk/head split and feature extraction."""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from ..registry import compares_with
import contextlib
import io
from ._common import ATOL, RTOL, _as_array, _clip_model_for_checks, _close, _compare, _fn_name, _gen, _hide_check_frames, _normalize, _passed, _require_callable

# --------------------------------------------------------------------------- features (01) and CLIP loss (00)

@compares_with('course.models:load_clip')
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


@compares_with('course.features:extract_features')
def check_extract_features(student_fn: Callable) -> None:
    """Compare a feature-extraction loop with :func:`ood_utils.course.features.extract_features`.

    Uses a tiny backbone with dropout (so forgetting ``eval()`` shows) on random images.
    Anything the student's loop writes to stderr (a tqdm bar) is swallowed, so that the graded
    cell stays clean.
    """
    from torch.utils.data import DataLoader, TensorDataset

    from ...course.features import extract_features

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


__all__ = [name for name in dir() if name.startswith("check_")]
_hide_check_frames(globals())  # keep this the last line of the module
