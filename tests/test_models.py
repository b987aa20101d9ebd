import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from ood_utils.course import models
from ood_utils.course.data import feature_dataset, load_fashion_mnist
from ood_utils.course.profiles import FASHION_MNIST_CLASSES
from ood_utils.course.train_clip import images_to_tensor


@pytest.fixture(scope="module")
def miniclip():
    return models.load_clip("miniclip")


def test_split_visual_recomposes_encode_image(miniclip):
    model, preprocess, _ = miniclip
    ds = feature_dataset("miniclip", "id_test", transform=preprocess)
    x = torch.stack([ds[i][0] for i in range(8)])
    backbone, projection = models.split_visual(model)
    with torch.no_grad():
        feats = backbone(x)
        assert feats.shape == (8, 320)
        torch.testing.assert_close(projection(feats), model.encode_image(x), rtol=1e-4, atol=1e-5)
        emb = models.image_embeddings(model, feats)
        torch.testing.assert_close(emb, F.normalize(model.encode_image(x), dim=-1),
                                   rtol=1e-4, atol=1e-5)


def test_text_embeddings_average_normalised_prompts(miniclip):
    model, _, tokenizer = miniclip
    names, templates = ["Trouser", "Bag"], ["a photo of a {}.", "a {}."]
    got = models.text_embeddings(model, tokenizer, names, templates)
    with torch.no_grad():
        rows = []
        for n in names:
            e = F.normalize(model.encode_text(tokenizer([t.format(n) for t in templates])), dim=-1)
            rows.append(F.normalize(e.mean(0), dim=0))
    torch.testing.assert_close(got, torch.stack(rows), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="template"):
        models.text_embeddings(model, tokenizer, names, ["no placeholder"])


def test_batched_preprocessing_equals_open_clip_preprocess(miniclip):
    model, preprocess, _ = miniclip
    images, _ = load_fashion_mnist("test")
    cfg = model.visual.preprocess_cfg
    batched = images_to_tensor(images[:5], cfg["mean"], cfg["std"])
    by_hand = torch.stack([preprocess(Image.fromarray(np.pad(im, 2)).convert("RGB"))
                           for im in images[:5]])
    torch.testing.assert_close(batched, by_hand, rtol=0, atol=1e-5)


def test_shipped_tiny_clip_zero_shot_accuracy_at_least_80(miniclip):
    model, _, tokenizer = miniclip
    images, labels = load_fashion_mnist("test")
    cfg = model.visual.preprocess_cfg
    x = images_to_tensor(images, cfg["mean"], cfg["std"])
    with torch.no_grad():
        text = F.normalize(model.encode_text(
            tokenizer([f"a photo of a {c}." for c in FASHION_MNIST_CLASSES])), dim=-1)
        pred = torch.cat([(F.normalize(model.encode_image(x[i:i + 2000]), dim=-1) @ text.T).argmax(1)
                          for i in range(0, len(x), 2000)])
    accuracy = (pred.numpy() == labels).mean() * 100
    print(f"zero-shot accuracy {accuracy:.2f}%")
    assert accuracy >= 80


def test_shipped_weights_match_model_card():
    import hashlib

    card = (models.ASSETS / "MODEL_CARD.md").read_text()
    assert hashlib.sha256(models.MINICLIP_WEIGHTS.read_bytes()).hexdigest() in card
    assert models.MINICLIP_WEIGHTS.stat().st_size <= 20 * 2**20
    state = torch.load(models.MINICLIP_WEIGHTS, map_location="cpu", weights_only=True)
    assert models.tensor_digest(state) in card


def test_tensor_digest_sees_values_names_and_dtypes_but_not_the_file():
    state = {"b": torch.arange(6, dtype=torch.float16).reshape(2, 3), "a": torch.ones(2)}
    digest = models.tensor_digest(state)
    assert models.tensor_digest(dict(reversed(list(state.items())))) == digest
    changed = {**state, "a": torch.tensor([1.0, 1.0 + 2 ** -20])}
    renamed = {"c" if k == "a" else k: v for k, v in state.items()}
    widened = {**state, "b": state["b"].float()}
    assert len({digest, *(models.tensor_digest(s) for s in (changed, renamed, widened))}) == 4


def test_clip_profile_code_path_with_random_weights():
    """The convnext_base_w architecture of the `clip` profile, offline (no pretrained weights)."""
    model, preprocess, tokenizer = models.load_clip("clip", pretrained=None)
    rng = np.random.default_rng(0)
    imgs = [Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)) for _ in range(2)]
    x = torch.stack([preprocess(im) for im in imgs])
    assert x.shape == (2, 3, 256, 256)
    backbone, projection = models.split_visual(model)
    with torch.no_grad():
        feats = backbone(x)
        assert feats.shape == (2, 1024)
        assert projection(feats).shape == (2, 640)
    assert tokenizer(["a photo of a cat."]).shape == (1, 77)


def test_clip_weights_missing_offline_is_a_clear_fast_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("OOD_WEIGHTS_DIR", str(tmp_path))
    with pytest.raises(models.WeightsMissingError, match="python -m ood_utils download"):
        models.load_clip("clip")


def test_short_training_is_reproducible_and_its_card_names_the_saved_tensors(tmp_path):
    """Two runs from one seed give the same tensors; the card's digest is that of the file."""
    from ood_utils.course.train_clip import train_miniclip

    digests = []
    for run in ("a", "b"):
        out = tmp_path / run / "m.pt"
        result = train_miniclip(epochs=1, limit=256, eval_limit=200, seed=3, out=out,
                                progress=False)
        saved = torch.load(out, map_location="cpu", weights_only=True)
        assert result["tensor_digest"] == models.tensor_digest(saved)
        assert result["tensor_digest"] in (out.parent / "MODEL_CARD.md").read_text()
        digests.append(result["tensor_digest"])
    assert digests[0] == digests[1]
    other = train_miniclip(epochs=1, limit=256, eval_limit=200, seed=4, out=tmp_path / "c.pt",
                           progress=False)
    assert other["tensor_digest"] != digests[0]


def test_training_with_a_given_loss_uses_it_and_rejects_unusable_losses():
    """``loss_fn`` replaces the soft loss (notebook 00 trains on the student's loss): the first
    step's loss differs from the soft loss's on the same batch and weights; a loss without a gradient or of the wrong shape is refused with
    a message that says why."""
    from ood_utils.course.train_clip import train_miniclip

    def plain(u, v, s):
        t = torch.arange(len(u))
        logits = s * u @ v.T
        return (F.cross_entropy(logits, t) + F.cross_entropy(logits.T, t)) / 2

    kw = dict(epochs=1, limit=256, eval_limit=50, out=None, progress=False, seed=2)
    mine = train_miniclip(loss_fn=plain, **kw)
    soft = train_miniclip(**kw)
    assert mine["loss"] == "plain" and soft["loss"] == "soft_clip_loss"
    assert len(mine["loss_per_step"]) == 1
    # same seed, same batch, same initial weights: only the loss differs
    assert mine["loss_per_step"][0] != soft["loss_per_step"][0]
    assert mine["zero_shot_accuracy_before"] == soft["zero_shot_accuracy_before"]
    with pytest.raises(ValueError, match="without a gradient"):
        train_miniclip(loss_fn=lambda u, v, s: plain(u, v, s).detach(), **kw)
    with pytest.raises(TypeError, match="scalar"):
        train_miniclip(loss_fn=lambda u, v, s: s * u @ v.T, **kw)


# ----------------------------------------------------------------------------- zero-shot logits

@pytest.fixture(scope="module")
def random_miniclip():
    from ood_utils.course.models import load_clip

    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model, _, tokenizer = load_clip("miniclip", pretrained=None)
    return model, tokenizer


def _by_hand(model, tokenizer, images, prompts_per_class):
    with torch.no_grad():
        img = torch.nn.functional.normalize(model.encode_image(images), dim=-1)
        text = []
        for prompts in prompts_per_class:
            t = torch.nn.functional.normalize(model.encode_text(tokenizer(prompts)), dim=-1)
            text.append(torch.nn.functional.normalize(t.mean(dim=0), dim=-1))
        return model.logit_scale.exp() * img @ torch.stack(text).T


def test_zero_shot_logits_match_clip(random_miniclip):
    model, tokenizer = random_miniclip
    images = torch.randn(5, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    names = ["T-shirt/top", "Trouser", "Sandal"]
    with torch.no_grad():
        trunk = model.visual.trunk(images)
    got = models.zero_shot_logits(model, tokenizer, trunk, names)
    assert isinstance(got, torch.Tensor) and got.shape == (5, 3)
    expected = _by_hand(model, tokenizer, images, [[n] for n in names])
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    got_np = models.zero_shot_logits(model, tokenizer, trunk.numpy(), names)
    assert isinstance(got_np, np.ndarray)


def test_zero_shot_logits_template_ensemble(random_miniclip):
    from ood_utils.course.models import PLP_TEMPLATES

    model, tokenizer = random_miniclip
    images = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    names = ["Coat", "Ankle boot"]
    with torch.no_grad():
        trunk = model.visual.trunk(images)
    got = models.zero_shot_logits(model, tokenizer, trunk, names, templates=PLP_TEMPLATES)
    expected = _by_hand(model, tokenizer, images,
                        [[t.format(n) for t in PLP_TEMPLATES] for n in names])
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_zero_shot_logits_bad_input(random_miniclip):
    model, tokenizer = random_miniclip
    with pytest.raises(ValueError, match="class_names"):
        models.zero_shot_logits(model, tokenizer, torch.zeros(2, 320), "Coat")
    with pytest.raises(ValueError, match="columns"):
        models.zero_shot_logits(model, tokenizer, torch.zeros(2, 100), ["Coat"])
    with pytest.raises(ValueError, match="NaN"):
        models.zero_shot_logits(model, tokenizer, torch.full((2, 320), float("nan")), ["Coat"])
