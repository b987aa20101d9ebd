"""CLIP models of both profiles through open_clip, and the backbone/projection split.

The course stores the image trunk's features *before* the projection into the joint
image-text space (as the PLP code does). :func:`split_visual` returns the two halves, so that
``projection(backbone(x))`` equals ``model.encode_image(x)`` up to normalisation.
:func:`zero_shot_logits` turns stored trunk features into CLIP's zero-shot logits.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from ..methods._arrays import as_kind, check_array, to_tensor
from .profiles import Profile, get_profile, weights_cache_dir

ASSETS = Path(__file__).resolve().parent / "assets"
MINICLIP_NAME = "miniclip-fmnist"
MINICLIP_CONFIG = ASSETS / f"{MINICLIP_NAME}.json"
MINICLIP_WEIGHTS = ASSETS / f"{MINICLIP_NAME}.pt"

PLP_TEMPLATES = (
    "a photo of a {}.",
    "a blurry photo of a {}.",
    "a photo of many {}.",
    "a photo of the large {}.",
    "a photo of the small {}.",
)

_UNSET = object()


class WeightsMissingError(RuntimeError):
    """Pretrained weights are not available locally and cannot be downloaded here."""


def register_miniclip() -> None:
    """Make the tiny CLIP's architecture known to ``open_clip`` (idempotent)."""
    import open_clip

    if MINICLIP_NAME not in open_clip.list_models():
        open_clip.add_model_config(MINICLIP_CONFIG)


def sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def tensor_digest(state_dict: dict) -> str:
    """SHA-256 over the names, dtypes, shapes and values of a ``state_dict``, in name order.

    Unlike the hash of a ``torch.save`` file, it does not change between two saves of the same
    tensors (every save writes a fresh random ``serialization_id`` into the archive), so it
    tells whether a retrained checkpoint is the same model.
    """
    h = hashlib.sha256()
    for name in sorted(state_dict):
        t = state_dict[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def load_clip(profile: str | Profile | None = None, device: str | torch.device = "cpu",
              pretrained=_UNSET):
    """Load ``(model, preprocess, tokenizer)`` for a profile, in eval mode.

    ``pretrained`` overrides the profile's weights: ``None`` builds the architecture with
    random weights (used by tests of the ``clip`` code path offline), a path loads a file.
    Raises :class:`WeightsMissingError` when the ``clip`` weights cannot be fetched.
    """
    import open_clip

    p = get_profile(profile)
    if p.model_name == MINICLIP_NAME:
        register_miniclip()
    if pretrained is _UNSET:
        pretrained = p.pretrained
        if p.model_name == MINICLIP_NAME:  # the shipped weights, not a hub tag
            pretrained = str(MINICLIP_WEIGHTS)
            if not MINICLIP_WEIGHTS.is_file():
                raise WeightsMissingError(
                    f"the tiny CLIP weights {MINICLIP_WEIGHTS} are missing from the package; "
                    "re-create them with `python -m ood_utils train-miniclip`.")
    is_tag = pretrained not in (None, "") and not Path(str(pretrained)).is_file()
    if is_tag and not weights_available(p.model_name, str(pretrained)):
        raise WeightsMissingError(_missing_weights_message(p, str(pretrained), "not cached, and "
                                  "the Hugging Face hub is unreachable (no internet?)"))
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(
            p.model_name, pretrained=pretrained, device=device,
            cache_dir=str(weights_cache_dir()))
    except WeightsMissingError:
        raise
    except Exception as err:
        if not is_tag:
            raise
        raise WeightsMissingError(_missing_weights_message(
            p, str(pretrained), f"{type(err).__name__}: {str(err)[:200]}")) from err
    tokenizer = open_clip.get_tokenizer(p.model_name)
    model.eval()
    return model, preprocess, tokenizer


def _missing_weights_message(p: Profile, tag: str, why: str) -> str:
    return (f"open_clip weights {p.model_name!r}/{tag!r} could not be loaded ({why}). They are "
            f"downloaded from the Hugging Face hub on first use into {weights_cache_dir()}: run "
            f"`python -m ood_utils download --profile {p.name}` once on a machine with internet "
            "(or copy that folder here from one), or use the offline profile with "
            "OOD_PROFILE=miniclip.")


def weights_available(model_name: str, tag: str, timeout: float = 3.0) -> bool:
    """True when the weights are in the local cache or the Hugging Face hub answers.

    Lets an offline machine fail in seconds instead of after the hub client's retries.
    """
    import socket

    import open_clip

    cfg = open_clip.get_pretrained_cfg(model_name, tag) or {}
    hub = (cfg.get("hf_hub") or "").strip("/")
    if hub:
        from huggingface_hub import try_to_load_from_cache

        for fname in ("open_clip_model.safetensors", "open_clip_pytorch_model.bin"):
            if isinstance(try_to_load_from_cache(hub, fname, cache_dir=str(weights_cache_dir())),
                          str):
                return True
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        return False
    try:
        socket.create_connection(("huggingface.co", 443), timeout=timeout).close()
        return True
    except OSError:
        return False


class _ViTTrunk(nn.Module):
    """open_clip VisionTransformer without its final projection."""

    def __init__(self, visual: nn.Module):
        super().__init__()
        self.visual = visual

    def forward(self, x):
        proj, self.visual.proj = self.visual.proj, None
        try:
            return self.visual(x)
        finally:
            self.visual.proj = proj


class _MatrixProjection(nn.Module):
    def __init__(self, proj: torch.Tensor):
        super().__init__()
        self.proj = proj

    def forward(self, x):
        return x @ self.proj


def split_visual(model: nn.Module) -> tuple[nn.Module, nn.Module]:
    """Split a CLIP image tower into ``(backbone, projection)``.

    ``backbone`` maps images ``(N, 3, H, W)`` to trunk features ``(N, feature_dim)``;
    ``projection`` maps those to the joint space ``(N, embed_dim)``. For open_clip's timm
    towers these are ``model.visual.trunk`` and ``model.visual.head``.
    """
    visual = model.visual
    if hasattr(visual, "trunk") and hasattr(visual, "head"):
        return visual.trunk, visual.head
    if getattr(visual, "proj", None) is not None:
        return _ViTTrunk(visual), _MatrixProjection(visual.proj)
    raise TypeError(f"do not know how to split an image tower of type {type(visual).__name__}")


def _param_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def image_embeddings(model: nn.Module, feats: torch.Tensor, batch_size: int = 8192
                     ) -> torch.Tensor:
    """Project trunk features ``(N, feature_dim)`` and L2-normalise: ``(N, embed_dim)`` float32."""
    _, projection = split_visual(model)
    device = _param_device(model)
    dtype = next(model.parameters()).dtype
    out = []
    for start in range(0, len(feats), batch_size):
        chunk = feats[start:start + batch_size].to(device=device, dtype=dtype)
        out.append(nn.functional.normalize(projection(chunk).float(), dim=-1))
    return torch.cat(out).cpu() if out else torch.empty(0, 0)


@torch.no_grad()
def text_embeddings(model: nn.Module, tokenizer, class_names: Sequence[str],
                    templates: Sequence[str] = ("{}",)) -> torch.Tensor:
    """One L2-normalised text embedding per class, ``(C, embed_dim)`` float32.

    Each class name is put into every template; the normalised embeddings of a class are
    averaged and normalised again (CLIP's prompt ensembling). ``("{}",)`` uses the bare names.
    """
    if len(class_names) == 0:
        raise ValueError("class_names is empty")
    if len(templates) == 0 or any("{}" not in t for t in templates):
        raise ValueError("every template must contain '{}' where the class name goes")
    device = _param_device(model)
    prompts = [t.format(c) for c in class_names for t in templates]
    emb = model.encode_text(tokenizer(prompts).to(device)).float()
    emb = nn.functional.normalize(emb, dim=-1).reshape(len(class_names), len(templates), -1)
    return nn.functional.normalize(emb.mean(dim=1), dim=-1).cpu()


def zero_shot_logits(model: nn.Module, tokenizer, image_feats: Any, class_names: Sequence[str],
                     templates: Sequence[str] = ("{}",)) -> Any:
    """Zero-shot CLIP logits from stored trunk features.

    The trunk features are projected into the joint space and L2-normalised
    (:func:`image_embeddings`); each class name is embedded by the text tower
    (:func:`text_embeddings`). The logits are the cosine similarities times CLIP's learned
    temperature ``model.logit_scale.exp()`` (about 100 for trained models).

    Parameters
    ----------
    model : open_clip CLIP model
    tokenizer : its tokenizer (from :func:`load_clip`)
    image_feats : array or tensor, shape (N, feature_dim)
        Trunk features, i.e. the image tower's output *before* its projection.
    class_names : sequence of str, length C
        One name per in-distribution class.
    templates : sequence of str, default ``("{}",)``
        Prompt templates, each with ``{}`` where the name goes. The default tokenises the bare
        class names, as the course's seed notebook does; :data:`PLP_TEMPLATES` is the
        five-prompt ensemble of the PLP paper (embeddings averaged over the prompts and
        normalised again).

    Returns
    -------
    logits : same kind as ``image_feats``, shape (N, C), float32
    """
    check_array(image_feats, "image_feats", ndim=2)
    if isinstance(class_names, str) or len(class_names) == 0 or not all(
            isinstance(c, str) for c in class_names):
        raise ValueError("class_names must be a non-empty list of strings, one per class")
    if isinstance(templates, str):
        raise ValueError("templates must be a sequence of strings, e.g. ('a photo of a {}.',)")
    feats = to_tensor(image_feats, "image_feats").float()
    try:
        image = image_embeddings(model, feats)
    except RuntimeError as err:
        raise ValueError(
            f"image_feats has {feats.shape[1]} columns, which the model's projection does not "
            f"accept ({err}); pass the trunk features of the same CLIP model") from err
    text = text_embeddings(model, tokenizer, class_names, templates)
    with torch.no_grad():
        scale = model.logit_scale.detach().float().exp().cpu()
        logits = scale * image @ text.T
    return as_kind(logits.clone(), image_feats)
