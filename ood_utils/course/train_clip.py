"""Train the tiny CLIP of the ``miniclip`` profile (``python -m ood_utils train-miniclip``).

The model is open_clip's own ``CLIP`` class built from the ``miniclip-fmnist`` config
(a timm ``convnext_atto`` image trunk at 32x32 and a two-layer text transformer).
Its "web data" are all ten Fashion-MNIST classes of the train split, each image paired with a
caption drawn from a few templates. With ten classes a batch holds many images of the same
class, so captions of the same class are not negatives: the contrastive targets spread the
probability mass evenly over every same-class pair (a supervised-contrastive variant of the
CLIP loss).
"""
from __future__ import annotations

import json
import logging
import math
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from ..methods.progress import progress_bar as tqdm  # a widget in JupyterLab, stdout lines in other kernels

from ._io import atomic_write
from .data import load_fashion_mnist
from .models import (MINICLIP_CONFIG, MINICLIP_NAME, MINICLIP_WEIGHTS, register_miniclip, sha256, tensor_digest)
from .profiles import FASHION_MNIST_CLASSES

CAPTION_TEMPLATES = (
    "a photo of a {}.",
    "a picture of a {}.",
    "an image of a {}.",
    "a grayscale photo of a {}.",
    "a low resolution photo of a {}.",
    "a product photo of a {}.",
    "a {} on a dark background.",
    "a small picture of a {}.",
)
EVAL_TEMPLATE = "a photo of a {}."


def images_to_tensor(images: np.ndarray, mean, std, pad_to: int = 32) -> torch.Tensor:
    """uint8 ``(N, 28, 28)`` -> float ``(N, 3, pad_to, pad_to)``, normalised like open_clip.

    Equals the model's eval ``preprocess`` on the padded RGB PIL image (its resize and crop are
    no-ops at 32x32), done for a whole array at once.
    """
    x = torch.from_numpy(np.array(images, dtype=np.float32)).div_(255.0)
    total = pad_to - x.shape[-1]
    x = F.pad(x, (total // 2, total - total // 2, total // 2, total - total // 2))
    x = x.unsqueeze(1).expand(-1, 3, -1, -1)
    m = torch.tensor(mean).view(1, 3, 1, 1)
    s = torch.tensor(std).view(1, 3, 1, 1)
    return ((x - m) / s).contiguous()


def soft_clip_loss(image_emb: torch.Tensor, text_emb: torch.Tensor, labels: torch.Tensor,
                   logit_scale: torch.Tensor) -> torch.Tensor:
    """Symmetric CLIP loss where every same-class image/caption pair is a positive.

    ``image_emb``, ``text_emb``: L2-normalised ``(B, E)``; ``labels``: ``(B,)``.
    """
    logits = logit_scale * image_emb @ text_emb.T
    same = (labels[:, None] == labels[None, :]).float()
    targets = same / same.sum(dim=1, keepdim=True)
    loss_i = -(targets * logits.log_softmax(dim=1)).sum(dim=1).mean()
    loss_t = -(targets * logits.T.log_softmax(dim=1)).sum(dim=1).mean()
    return (loss_i + loss_t) / 2


@torch.no_grad()
def zero_shot_accuracy(model, tokenizer, images: torch.Tensor, labels: np.ndarray,
                       class_names=FASHION_MNIST_CLASSES, template=EVAL_TEMPLATE,
                       batch_size: int = 1024) -> float:
    """Top-1 zero-shot accuracy (percent) of ``model`` with one prompt per class."""
    model.eval()
    text = F.normalize(model.encode_text(tokenizer([template.format(c) for c in class_names])),
                       dim=-1)
    correct = 0
    for start in range(0, len(images), batch_size):
        img = F.normalize(model.encode_image(images[start:start + batch_size]), dim=-1)
        pred = (img @ text.T).argmax(dim=1).numpy()
        correct += int((pred == labels[start:start + batch_size]).sum())
    return 100.0 * correct / len(images)


def build_model(seed: int):
    import open_clip

    register_miniclip()
    torch.manual_seed(seed)
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # open_clip warns that no pretrained weights are loaded
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(MINICLIP_NAME,
                                                                     pretrained=None)
    finally:
        root.setLevel(level)
    tokenizer = open_clip.get_tokenizer(MINICLIP_NAME)
    return model, preprocess, tokenizer


def train_miniclip(epochs: int = 2, batch_size: int = 256, lr: float = 2e-3,
                   weight_decay: float = 0.05, seed: int = 0, limit: int | None = None,
                   out: Path | str | None = MINICLIP_WEIGHTS, progress: bool = True,
                   eval_limit: int | None = None, loss_fn=None) -> dict:
    """Train the tiny CLIP from scratch and (optionally) save it with its model card.

    ``limit`` trains on the first ``limit`` images only and ``eval_limit`` measures the
    zero-shot accuracy on the first ``eval_limit`` test images only (quick demos and tests).

    ``loss_fn(image_emb, text_emb, logit_scale)`` replaces the default loss
    (:func:`soft_clip_loss`, where every same-class caption is a positive) by a plain CLIP loss
    such as the one written in notebook 00: it receives L2-normalised ``(B, E)`` embeddings of
    the batch's images and of their own captions, row ``i`` with row ``i``, and the exponentiated
    scale, and must return a scalar tensor that keeps the autograd graph. Captions of the same
    class are then negatives of each other (the plain loss knows nothing of classes).

    Returns a dict with the final loss, the smoothed loss per epoch, the raw loss and the batch
    size of every step (``loss_per_step``, ``batch_per_step``; the last batch of an epoch can be
    smaller), the zero-shot accuracy before/after, and the model.
    """
    torch.manual_seed(seed)
    np.random.seed(seed)
    rng = np.random.default_rng(seed)
    model, preprocess, tokenizer = build_model(seed)
    mean = model.visual.preprocess_cfg["mean"]
    std = model.visual.preprocess_cfg["std"]

    train_img, train_lab = load_fashion_mnist("train")
    test_img, test_lab = load_fashion_mnist("test")
    if limit is not None:
        train_img, train_lab = train_img[:limit], train_lab[:limit]
    if eval_limit is not None:
        test_img, test_lab = test_img[:eval_limit], test_lab[:eval_limit]
    x_train = images_to_tensor(train_img, mean, std)
    x_test = images_to_tensor(test_img, mean, std)
    y_train = torch.from_numpy(train_lab)

    captions = [t.format(c) for c in FASHION_MNIST_CLASSES for t in CAPTION_TEMPLATES]
    caption_tokens = tokenizer(captions)  # (10 * T, context_length)
    n_templates = len(CAPTION_TEMPLATES)

    acc_before = zero_shot_accuracy(model, tokenizer, x_test, test_lab)
    steps_per_epoch = math.ceil(len(x_train) / batch_size)
    total_steps = epochs * steps_per_epoch
    warmup = max(1, total_steps // 20)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * s / total_steps)))

    history, per_step, batch_sizes = [], [], []
    start = time.time()
    step = 0
    for epoch in range(epochs):
        model.train()
        order = torch.from_numpy(rng.permutation(len(x_train)))
        bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{epochs}", disable=not progress)
        running = 0.0
        for b in bar:
            idx = order[b * batch_size:(b + 1) * batch_size]
            labels = y_train[idx]
            caption_ids = labels * n_templates + torch.from_numpy(
                rng.integers(0, n_templates, size=len(idx)))
            unique_ids, inverse = torch.unique(caption_ids, return_inverse=True)
            img = F.normalize(model.encode_image(x_train[idx]), dim=-1)
            txt = F.normalize(model.encode_text(caption_tokens[unique_ids]), dim=-1)[inverse]
            if loss_fn is None:
                loss = soft_clip_loss(img, txt, labels, model.logit_scale.exp())
            else:
                loss = _user_loss(loss_fn, img, txt, model.logit_scale.exp())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            with torch.no_grad():
                model.logit_scale.clamp_(0, math.log(100))
            step += 1
            per_step.append(loss.item())
            batch_sizes.append(len(idx))
            running = 0.9 * running + 0.1 * loss.item() if b else loss.item()
            bar.set_postfix(loss=f"{running:.3f}")
        history.append(running)
    train_seconds = time.time() - start
    acc_after = zero_shot_accuracy(model, tokenizer, x_test, test_lab)
    result = {
        "epochs": epochs, "batch_size": batch_size, "lr": lr, "weight_decay": weight_decay,
        "seed": seed, "train_images": int(len(x_train)), "final_loss": round(history[-1], 4),
        "loss_per_epoch": [round(h, 4) for h in history],
        "loss_per_step": [round(v, 4) for v in per_step], "batch_per_step": batch_sizes,
        "loss": "soft_clip_loss" if loss_fn is None else getattr(loss_fn, "__name__", "custom"),
        "zero_shot_accuracy_before": round(acc_before, 2),
        "zero_shot_accuracy": round(acc_after, 2), "train_seconds": round(train_seconds, 1),
        "model": model, "tokenizer": tokenizer,
    }
    if out is not None:
        save_weights(model, Path(out), result)
    return result


def _user_loss(loss_fn, img: torch.Tensor, txt: torch.Tensor, scale: torch.Tensor
               ) -> torch.Tensor:
    """Call a user's loss and say clearly what is wrong when its result cannot be trained on."""
    loss = loss_fn(img, txt, scale)
    name = getattr(loss_fn, "__name__", "loss_fn")
    if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
        raise TypeError(f"{name} must return a scalar torch tensor, got {type(loss).__name__} "
                        f"{tuple(getattr(loss, 'shape', ()))}")
    if not loss.requires_grad:
        raise ValueError(f"{name} returned a loss without a gradient: do not call .item(), "
                         ".detach() or numpy inside it, and do not wrap it in torch.no_grad()")
    if not torch.isfinite(loss):
        raise ValueError(f"{name} returned {loss.item()} during training")
    return loss.reshape(())


def save_weights(model, out: Path, result: dict) -> None:
    """Write fp16 weights atomically and a model card ``MODEL_CARD.md`` beside them.

    Adds the weights' :func:`ood_utils.course.models.tensor_digest` to ``result`` as ``tensor_digest``.
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().half() if v.is_floating_point() else v
             for k, v in model.state_dict().items()}
    atomic_write(out, lambda tmp: torch.save(state, tmp))
    digest = tensor_digest(state)
    config = json.loads(Path(MINICLIP_CONFIG).read_text())
    card = {k: v for k, v in result.items()
            if k not in ("model", "tokenizer", "loss_per_step", "batch_per_step")}
    lines = [
        f"# Model card: {MINICLIP_NAME}",
        "",
        "A tiny CLIP trained by this project for the offline `miniclip` course profile.",
        "Reproduce it with `python -m ood_utils train-miniclip` (fixed seed; CPU results can",
        "differ in the last digits across machines and torch builds).",
        "",
        "- Architecture: open_clip `CLIP` with the config below (timm `convnext_atto` image trunk",
        "  through open_clip's timm adapter, 32x32 inputs, 320-d trunk features, projection to",
        f"  {config['embed_dim']}-d; text transformer of width {config['text_cfg']['width']}).",
        "- Data: the Fashion-MNIST train split, all ten classes (60,000 images), each paired with a",
        f"  caption drawn from {len(CAPTION_TEMPLATES)} templates such as \"{CAPTION_TEMPLATES[0]}\".",
        "  Images are zero-padded from 28 to 32 pixels and replicated to three channels.",
        "- Loss: symmetric contrastive loss where all same-class pairs of a batch are positives.",
        f"- Optimiser: AdamW, lr {result['lr']}, weight decay {result['weight_decay']}, batch "
        f"{result['batch_size']}, {result['epochs']} epochs, warm-up then cosine schedule.",
        f"- Final training loss (smoothed): {card['final_loss']}",
        f"- Zero-shot accuracy on the 10-class test split with \"{EVAL_TEMPLATE}\": "
        f"{card['zero_shot_accuracy']}% (before training: {card['zero_shot_accuracy_before']}%)",
        f"- Training time: {card['train_seconds']} s on {os.cpu_count()} CPU cores "
        f"({platform.processor() or platform.machine()}), torch {torch.__version__}",
        f"- Weights: `{out.name}`, fp16, SHA-256 `{sha256(out)}`",
        "- Tensor digest (`ood_utils.course.models.tensor_digest`; the same for every save of the same",
        f"  tensors, unlike the file hash): `{digest}`",
        "",
        "## Config",
        "```json",
        json.dumps(config, indent=2),
        "```",
        "",
        "## Training record",
        "```json",
        json.dumps(card, indent=2),
        "```",
        "",
    ]
    (out.parent / "MODEL_CARD.md").write_text("\n".join(lines))
    result["tensor_digest"] = digest
