"""Self-check of notebook 00: the symmetric contrastive (CLIP) loss."""
from __future__ import annotations

from typing import Callable

import torch

from ..registry import compares_with
from ._common import _compare, _fn_name, _gen, _hide_check_frames, _passed, _require_callable

@compares_with()
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


__all__ = [name for name in dir() if name.startswith("check_")]
_hide_check_frames(globals())  # keep this the last line of the module
