"""Answer key of the CLIP notebooks (00 loss, 01 split + extraction, 03 text / logits / MSP).

For every graded value, a matrix of CORRECT variants a student may write (torch and NumPy,
float32 and float64, loops and vectorised, in-place and copied models, the seed's shapes of
code) and of PLANTED MISTAKES. Every correct variant must pass the self-check of its exercise
and the graded result downstream (the MSP AUROC check on the real miniclip features, the
feature gap of notebook 01, the training run of notebook 00); every mistake must fail at least
one of them, with a message that names it.

Run with ``python -m pytest -q tests/answer_key/test_clip.py`` (about a minute on one thread).
"""
from __future__ import annotations

import contextlib
import copy
import io

import numpy as np
import pytest
import scipy.special
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Subset

from ood_utils.answer_key import checks
from ood_utils.methods import metrics
from ood_utils.course import models
from ood_utils.course.data import feature_dataset, id_class_names
from ood_utils.course.features import load_features

from ._grader import assert_grader_accepts

PROFILE = "miniclip"


def passes(check, fn) -> str:
    """Run a self-check; return its printed line (it raises on failure)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        check(fn)
    return out.getvalue()


def fails(check, fn) -> str:
    with pytest.raises(AssertionError) as err:
        with contextlib.redirect_stdout(io.StringIO()):
            check(fn)
    return str(err.value)


@pytest.fixture(scope="module")
def clip():
    model, preprocess, tokenizer = models.load_clip(PROFILE)
    return model, preprocess, tokenizer


@pytest.fixture(scope="module")
def feats():
    return load_features(PROFILE, progress=False)


# =================================================================== 00: the CLIP loss

def loss_cross_entropy(u, v, s):
    logits = s * u @ v.T
    t = torch.arange(len(u))
    return (F.cross_entropy(logits, t) + F.cross_entropy(logits.T, t)) / 2


def loss_logits_per_text(u, v, s):  # open_clip's own shape: two logit matrices
    per_image, per_text = s * u @ v.T, s * v @ u.T
    t = torch.arange(len(u), device=u.device)
    return 0.5 * (F.cross_entropy(per_image, t) + F.cross_entropy(per_text, t))


def loss_log_softmax_diagonal(u, v, s):
    logits = s * u @ v.T
    rows = -torch.diagonal(torch.log_softmax(logits, dim=1)).mean()
    cols = -torch.diagonal(torch.log_softmax(logits, dim=0)).mean()
    return (rows + cols) / 2


def loss_logsumexp(u, v, s):
    logits = s * torch.einsum("ie,je->ij", u, v)
    diag = logits.diagonal()
    return ((logits.logsumexp(1) - diag).mean() + (logits.logsumexp(0) - diag).mean()) / 2


def loss_loop(u, v, s):
    total = 0.0
    b = len(u)
    for i in range(b):
        row = s * (u[i] @ v.T)
        col = s * (v[i] @ u.T)
        total = total - torch.log_softmax(row, 0)[i] - torch.log_softmax(col, 0)[i]
    return total / (2 * b)


def loss_open_clip(u, v, s):
    from open_clip.loss import ClipLoss

    return ClipLoss()(u, v, s)


def loss_one_direction(u, v, s):
    return F.cross_entropy(s * u @ v.T, torch.arange(len(u)))


def loss_text_direction_only(u, v, s):
    return F.cross_entropy(s * v @ u.T, torch.arange(len(u)))


def loss_no_temperature(u, v, s):
    return loss_cross_entropy(u, v, torch.tensor(1.0))


def loss_divides_by_scale(u, v, s):
    return loss_cross_entropy(u, v, 1 / s)


def loss_labels_off(u, v, s):
    logits = s * u @ v.T
    t = torch.roll(torch.arange(len(u)), 1)
    return (F.cross_entropy(logits, t) + F.cross_entropy(logits.T, t)) / 2


def loss_summed(u, v, s):
    return 2 * loss_cross_entropy(u, v, s)


def loss_detached(u, v, s):
    return torch.tensor(loss_cross_entropy(u, v, s).item())


def loss_scale_exponentiated_again(u, v, s):  # logit_scale.exp() on the exponentiated scale
    return loss_cross_entropy(u, v, s.exp())


def loss_reduction_sum(u, v, s):
    logits = s * u @ v.T
    t = torch.arange(len(u))
    return (F.cross_entropy(logits, t, reduction="sum")
            + F.cross_entropy(logits.T, t, reduction="sum")) / 2


def loss_sigmoid_pairs(u, v, s):  # SigLIP-style: every pair a binary problem
    logits = s * u @ v.T
    return F.binary_cross_entropy_with_logits(logits, torch.eye(len(u)))


def loss_sigmoid_siglip_sum(u, v, s):  # the SigLIP paper's normalisation: sum over pairs / B
    logits = s * u @ v.T
    signs = 2 * torch.eye(len(u)) - 1
    return -F.logsigmoid(signs * logits).sum() / len(u)


LOSS_CORRECT = [loss_cross_entropy, loss_logits_per_text, loss_log_softmax_diagonal,
                loss_logsumexp, loss_loop, loss_open_clip]
LOSS_MISTAKES = [
    (loss_one_direction, "only the image-to-text direction"),
    (loss_text_direction_only, "only the text-to-image direction"),
    (loss_no_temperature, "not multiplied by logit_scale"),
    (loss_divides_by_scale, "divided by"),
    (loss_labels_off, "targets are wrong"),
    (loss_summed, "summed instead of averaged"),
    (loss_detached, "without a gradient"),
    (loss_scale_exponentiated_again, "exponentiated again"),
    (loss_reduction_sum, "reduction='sum'"),
    (loss_sigmoid_pairs, "sigmoid loss"),
    (loss_sigmoid_siglip_sum, "sigmoid loss"),
]


@pytest.mark.parametrize("fn", LOSS_CORRECT, ids=lambda f: f.__name__)
def test_clip_loss_correct_variants_pass(fn):
    assert "public checks passed" in passes(checks.check_clip_loss, fn)


@pytest.mark.parametrize("fn, phrase", LOSS_MISTAKES, ids=lambda x: getattr(x, "__name__", ""))
def test_clip_loss_mistakes_are_named(fn, phrase):
    assert phrase in fails(checks.check_clip_loss, fn)


def test_training_runs_on_the_students_loss():
    """The short run of notebook 00 trains on the loss it is given: a correct variant follows
    the plain CLIP loss step for step, a wrong one gives other losses."""
    from ood_utils.course.train_clip import train_miniclip

    kw = dict(epochs=1, limit=512, eval_limit=100, out=None, progress=False, seed=1)
    ref = train_miniclip(loss_fn=loss_cross_entropy, **kw)["loss_per_step"]
    other = train_miniclip(loss_fn=loss_loop, **kw)["loss_per_step"]
    wrong = train_miniclip(loss_fn=loss_one_direction, **kw)["loss_per_step"]
    assert len(ref) == 2
    np.testing.assert_allclose(other, ref, rtol=1e-3, atol=1e-3)
    assert not np.allclose(wrong, ref, rtol=1e-3, atol=1e-3)
    with pytest.raises(ValueError, match="without a gradient"):
        train_miniclip(loss_fn=loss_detached, **kw)


# =================================================================== 01: split and extraction

def split_trunk_head(model):
    return model.visual.trunk, model.visual.head


def split_trunk_linear(model):
    return model.visual.trunk, model.visual.head.proj


def split_copy_identity(model):  # the seed's way: drop the final linear layer of a copy
    visual = copy.deepcopy(model.visual)
    visual.head.proj = nn.Identity()
    return visual, model.visual.head.proj


def split_in_place(model):
    proj = model.visual.head.proj
    model.visual.head.proj = nn.Identity()
    return model.visual, proj


class _Matmul(nn.Module):
    def __init__(self, weight):
        super().__init__()
        self.weight = weight

    def forward(self, h):
        return h @ self.weight.T


def split_hand_written_projection(model):
    return model.visual.trunk, _Matmul(model.visual.head.proj.weight)


def split_library(model):
    return models.split_visual(model)


def split_projection_kept(model):
    return model.visual, model.visual.head


def split_identity_projection(model):
    return model.visual.trunk, nn.Identity()


def split_forward_features(model):
    class Features(nn.Module):
        def forward(self, x):
            return model.visual.trunk.forward_features(x)

    return Features(), model.visual.head


def split_normalising_projection(model):
    class Unit(nn.Module):
        def forward(self, h):
            return F.normalize(model.visual.head(h), dim=-1)

    return model.visual.trunk, Unit()


def split_functions(model):
    return (lambda x: model.visual.trunk(x)), (lambda h: model.visual.head(h))


SPLIT_CORRECT = [split_trunk_head, split_trunk_linear, split_copy_identity, split_in_place,
                 split_hand_written_projection, split_library]
SPLIT_MISTAKES = [
    (split_projection_kept, "still applies the projection"),
    (split_identity_projection, "keeps 320 dimensions"),
    (split_forward_features, "forward_features"),
    (split_normalising_projection, "normalises its output"),
    (split_functions, "torch.nn.Module"),
]


def extract_reference_shape(backbone, loader, device):
    backbone = backbone.to(device).eval()
    chunks, targets = [], []
    with torch.inference_mode():
        for images, labels in loader:
            chunks.append(backbone(images.to(device)).float().cpu())
            targets.append(torch.as_tensor(labels))
    return torch.cat(chunks), torch.cat(targets).long()


def extract_no_grad_numpy(backbone, loader, device):
    backbone.eval()
    feats, labels = [], []
    with torch.no_grad():
        for x, y in loader:
            feats.append(backbone(x.to(device)).cpu().numpy())
            labels.append(y.numpy())
    return (torch.from_numpy(np.concatenate(feats)).float(),
            torch.from_numpy(np.concatenate(labels)).long())


def extract_with_tqdm(backbone, loader, device):  # a progress bar inside the graded call
    from tqdm.auto import tqdm

    backbone.eval()
    out, ys = [], []
    for x, y in tqdm(loader, desc="extracting"):
        with torch.inference_mode():
            out.append(backbone(x.to(device)))
        ys.append(y)
    return torch.cat(out).float(), torch.cat(ys).to(torch.int64)


def extract_preallocated(backbone, loader, device):
    backbone.eval()
    n = len(loader.dataset)
    feats, labels, pos = None, torch.empty(n, dtype=torch.long), 0
    with torch.inference_mode():
        for x, y in loader:
            f = backbone(x.to(device)).float().cpu()
            if feats is None:
                feats = torch.empty(n, f.shape[1])
            feats[pos:pos + len(f)], labels[pos:pos + len(f)] = f, y
            pos += len(f)
    return feats, labels


def extract_detach(backbone, loader, device):
    backbone.eval()
    feats = torch.cat([backbone(x.to(device)).detach() for x, _ in loader])
    labels = torch.cat([y for _, y in loader])
    return feats.float(), labels.long()


def extract_train_mode(backbone, loader, device):
    with torch.inference_mode():
        pairs = [(backbone(x), y) for x, y in loader]
    return torch.cat([p[0] for p in pairs]).float(), torch.cat([p[1] for p in pairs]).long()


def extract_with_grad(backbone, loader, device):
    backbone.eval()
    pairs = [(backbone(x), y) for x, y in loader]
    return torch.cat([p[0] for p in pairs]).float(), torch.cat([p[1] for p in pairs]).long()


def extract_float64(backbone, loader, device):
    f, y = extract_reference_shape(backbone, loader, device)
    return f.double(), y


def extract_shuffled_labels(backbone, loader, device):
    f, y = extract_reference_shape(backbone, loader, device)
    return f, y.flip(0)


def extract_feats_only(backbone, loader, device):
    return extract_reference_shape(backbone, loader, device)[0]


def extract_drops_last_batch(backbone, loader, device):
    backbone.eval()
    feats, labels = [], []
    with torch.no_grad():
        for images, y in loader:
            if len(images) < loader.batch_size:
                break  # the last, shorter batch is skipped
            feats.append(backbone(images).float())
            labels.append(y.long())
    return torch.cat(feats), torch.cat(labels)


def extract_reversed_batches(backbone, loader, device):
    backbone.eval()
    with torch.no_grad():
        pairs = [(backbone(x).float(), y.long()) for x, y in loader][::-1]
    return torch.cat([p[0] for p in pairs]), torch.cat([p[1] for p in pairs])


def extract_sorted_by_label(backbone, loader, device):
    f, y = extract_reference_shape(backbone, loader, device)
    order = torch.argsort(y, stable=True)
    return f[order], y[order]


def extract_normalised(backbone, loader, device):
    f, y = extract_reference_shape(backbone, loader, device)
    return F.normalize(f, dim=1), y


def extract_eval_on_a_copy(backbone, loader, device):  # correct: the copy is in eval mode
    frozen = copy.deepcopy(backbone).eval()
    return extract_reference_shape(frozen, loader, device)


EXTRACT_CORRECT = [extract_reference_shape, extract_no_grad_numpy, extract_with_tqdm,
                   extract_preallocated, extract_detach, extract_eval_on_a_copy]
EXTRACT_MISTAKES = [
    (extract_train_mode, "evaluation mode"),
    (extract_with_grad, "gradients"),
    (extract_float64, "float32"),
    (extract_shuffled_labels, "labels"),
    (extract_feats_only, "pair"),
    (extract_drops_last_batch, "the last, shorter batch (7 images) is missing"),
    (extract_reversed_batches, "another order"),
    (extract_sorted_by_label, "another order"),
    (extract_normalised, "L2-normalised"),
]


@pytest.mark.parametrize("fn", [extract_drops_last_batch, extract_reversed_batches,
                                extract_sorted_by_label, extract_normalised],
                         ids=lambda f: f.__name__)
def test_extract_mistakes_that_are_not_training_mode_do_not_blame_it(fn):
    """Only a backbone left in training mode hears about evaluation mode."""
    assert "evaluation mode" not in fails(checks.check_extract_features, fn)


@pytest.mark.parametrize("fn", SPLIT_CORRECT, ids=lambda f: f.__name__)
def test_split_correct_variants_pass(fn):
    assert "public checks passed" in passes(checks.check_split_visual, fn)


@pytest.mark.parametrize("fn, phrase", SPLIT_MISTAKES, ids=lambda x: getattr(x, "__name__", ""))
def test_split_mistakes_are_named(fn, phrase):
    assert phrase in fails(checks.check_split_visual, fn)


@pytest.mark.parametrize("fn", EXTRACT_CORRECT, ids=lambda f: f.__name__)
def test_extract_correct_variants_pass_silently(fn, capfd):
    assert "public checks passed" in passes(checks.check_extract_features, fn)
    assert capfd.readouterr().err == "", "the graded self-check must write nothing to stderr"


@pytest.mark.parametrize("fn, phrase", EXTRACT_MISTAKES, ids=lambda x: getattr(x, "__name__", ""))
def test_extract_mistakes_are_named(fn, phrase):
    assert phrase in fails(checks.check_extract_features, fn)


@pytest.mark.parametrize("split", SPLIT_CORRECT, ids=lambda f: f.__name__)
@pytest.mark.parametrize("extract", [extract_reference_shape, extract_no_grad_numpy],
                         ids=lambda f: f.__name__)
def test_split_and_extraction_reproduce_the_cached_features(split, extract, clip, feats):
    """Notebook 01's graded gap: the student's backbone and loop on real images give the cached
    trunk features (< 1e-3), for every correct split and loop."""
    model, preprocess, _ = clip
    backbone, _ = split(copy.deepcopy(model))
    subset = Subset(feature_dataset(PROFILE, "id_test", transform=preprocess), range(64))
    got, labels = extract(backbone, DataLoader(subset, batch_size=32), "cpu")
    gap = (got - feats["id_test_feats"][:64]).abs().max().item()
    assert gap < 1e-3, gap
    assert torch.equal(labels, feats["id_test_labels"][:64].long())


def test_forgetting_the_projection_split_fails_the_feature_gap(clip, feats):
    """Extracting with the whole image tower (projection kept) cannot reach the graded gap."""
    model, preprocess, _ = clip
    subset = Subset(feature_dataset(PROFILE, "id_test", transform=preprocess), range(16))
    got, _ = extract_reference_shape(model.visual, DataLoader(subset, batch_size=16), "cpu")
    assert got.shape[1] != feats["id_test_feats"].shape[1]


# =================================================================== 03: text, logits, MSP

def text_reference_shape(model, tokenizer, class_names, template="{}"):
    with torch.no_grad():
        tokens = tokenizer([template.format(c) for c in class_names])
        return F.normalize(model.encode_text(tokens).float(), dim=-1)


def text_manual_norm(model, tokenizer, class_names, template="{}"):
    emb = model.encode_text(tokenizer([template.replace("{}", c) for c in class_names]))
    return (emb / emb.norm(dim=1, keepdim=True)).detach()


def text_numpy_float64(model, tokenizer, class_names, template="{}"):
    with torch.inference_mode():
        emb = model.encode_text(tokenizer([template.format(c) for c in class_names])).numpy()
    emb = emb.astype(np.float64)
    return emb / np.linalg.norm(emb, axis=1, keepdims=True)


def text_one_by_one(model, tokenizer, class_names, template="{}"):
    rows = []
    with torch.no_grad():
        for c in class_names:
            e = model.encode_text(tokenizer([template.format(c)]))[0]
            rows.append(e / e.norm())
    return torch.stack(rows)


def text_library(model, tokenizer, class_names, template="{}"):
    return models.text_embeddings(model, tokenizer, class_names, (template,))


def text_not_normalised(model, tokenizer, class_names, template="{}"):
    with torch.no_grad():
        return model.encode_text(tokenizer([template.format(c) for c in class_names]))


def text_template_ignored(model, tokenizer, class_names, template="{}"):
    return text_reference_shape(model, tokenizer, class_names)


def text_wrong_axis(model, tokenizer, class_names, template="{}"):
    with torch.no_grad():
        return F.normalize(model.encode_text(tokenizer([template.format(c) for c in class_names])),
                           dim=0)


def text_transposed(model, tokenizer, class_names, template="{}"):
    return text_reference_shape(model, tokenizer, class_names, template).T


def text_sorted_names(model, tokenizer, class_names, template="{}"):
    return text_reference_shape(model, tokenizer, sorted(class_names), template)


TEXT_CORRECT = [text_reference_shape, text_manual_norm, text_numpy_float64, text_one_by_one,
                text_library]
TEXT_MISTAKES = [
    (text_not_normalised, "not L2-normalised"),
    (text_template_ignored, "template is ignored"),
    (text_wrong_axis, "wrong axis"),
    (text_transposed, "do not transpose"),
    (text_sorted_names, "sorted order"),
]


def logits_reference_shape(image_feats, projection, text_embeds, logit_scale):
    with torch.no_grad():
        img = F.normalize(projection(image_feats.float()).double(), dim=-1)
    txt = F.normalize(torch.as_tensor(text_embeds).double(), dim=-1)
    return logit_scale * img @ txt.T


def logits_float32(image_feats, projection, text_embeds, logit_scale):
    with torch.no_grad():
        img = projection(image_feats)
    img = img / img.norm(dim=-1, keepdim=True)
    txt = text_embeds / text_embeds.norm(dim=-1, keepdim=True)
    return logit_scale * img @ txt.T


def logits_numpy(image_feats, projection, text_embeds, logit_scale):
    with torch.no_grad():
        img = projection(image_feats).numpy().astype(np.float64)
    txt = np.asarray(text_embeds, dtype=np.float64)
    img /= np.linalg.norm(img, axis=1, keepdims=True)
    txt = txt / np.linalg.norm(txt, axis=1, keepdims=True)
    return float(logit_scale) * img @ txt.T


def logits_cosine_similarity(image_feats, projection, text_embeds, logit_scale):
    with torch.no_grad():
        img = projection(image_feats)
    txt = torch.as_tensor(text_embeds, dtype=img.dtype)
    return logit_scale * F.cosine_similarity(img[:, None, :], txt[None, :, :], dim=-1)


def logits_einsum_batched(image_feats, projection, text_embeds, logit_scale):
    txt = F.normalize(torch.as_tensor(text_embeds).float(), dim=-1)
    out = []
    with torch.inference_mode():
        for chunk in torch.split(image_feats, 4096):
            img = F.normalize(projection(chunk), dim=-1)
            out.append(torch.einsum("ne,ce->nc", img, txt) * logit_scale)
    return torch.cat(out)


def logits_with_autograd(image_feats, projection, text_embeds, logit_scale):
    img = projection(image_feats)  # no torch.no_grad(): the result tracks gradients
    img = img / torch.linalg.vector_norm(img, dim=1, keepdim=True)
    txt = text_embeds / torch.linalg.vector_norm(text_embeds, dim=1, keepdim=True)
    return (img @ txt.T) * logit_scale


def logits_no_projection(image_feats, projection, text_embeds, logit_scale):
    img = F.normalize(image_feats.double(), dim=-1)
    return logit_scale * img @ F.normalize(torch.as_tensor(text_embeds).double(), dim=-1).T


def logits_image_not_normalised(image_feats, projection, text_embeds, logit_scale):
    with torch.no_grad():
        img = projection(image_feats).double()
    return logit_scale * img @ F.normalize(torch.as_tensor(text_embeds).double(), dim=-1).T


def logits_text_not_normalised(image_feats, projection, text_embeds, logit_scale):
    with torch.no_grad():
        img = F.normalize(projection(image_feats).double(), dim=-1)
    return logit_scale * img @ torch.as_tensor(text_embeds).double().T


def logits_no_scale(image_feats, projection, text_embeds, logit_scale):
    return logits_reference_shape(image_feats, projection, text_embeds, 1.0)


def logits_scale_exponentiated_again(image_feats, projection, text_embeds, logit_scale):
    return logits_reference_shape(image_feats, projection, text_embeds,
                                  float(np.exp(float(logit_scale))))


def logits_transposed(image_feats, projection, text_embeds, logit_scale):
    return logits_reference_shape(image_feats, projection, text_embeds, logit_scale).T


def logits_divided_by_scale(image_feats, projection, text_embeds, logit_scale):
    return logits_reference_shape(image_feats, projection, text_embeds, 1.0) / logit_scale


LOGITS_CORRECT = [logits_reference_shape, logits_float32, logits_numpy, logits_cosine_similarity,
                  logits_einsum_batched, logits_with_autograd]
LOGITS_MISTAKES = [
    (logits_no_projection, "projection"),
    (logits_image_not_normalised, "image embeddings are not L2-normalised"),
    (logits_text_not_normalised, "text embeddings are not L2-normalised"),
    (logits_no_scale, "logit_scale is not applied"),
    (logits_scale_exponentiated_again, "exponentiated again"),
    (logits_transposed, "one row per IMAGE"),
    (logits_divided_by_scale, "divided by logit_scale"),
]


def msp_torch_float64(logits):
    return torch.as_tensor(logits).double().softmax(dim=1).max(dim=1).values


def msp_torch_float32(logits):
    return torch.as_tensor(logits).float().softmax(dim=-1).amax(dim=-1)


def msp_numpy(logits):
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    p = np.exp(z)
    return (p / p.sum(axis=1, keepdims=True)).max(axis=1)


def msp_scipy(logits):
    return scipy.special.softmax(np.asarray(logits, dtype=np.float64), axis=1).max(axis=1)


def msp_closed_form(logits):  # max_c p_c = 1 / sum_c exp(l_c - l_max)
    z = torch.as_tensor(logits).double()
    return 1.0 / torch.exp(z - z.max(dim=1, keepdim=True).values).sum(dim=1)


def msp_log_softmax(logits):
    return torch.as_tensor(logits).double().log_softmax(dim=1).max(dim=1).values.exp()


def msp_wrong_axis(logits):
    return torch.as_tensor(logits).double().softmax(dim=0).max(dim=1).values


def msp_one_minus(logits):
    return 1 - msp_torch_float64(logits)


def msp_max_logit(logits):
    return torch.as_tensor(logits).double().max(dim=1).values


def msp_min_probability(logits):
    return torch.as_tensor(logits).double().softmax(dim=1).min(dim=1).values


def msp_full_matrix(logits):
    return torch.as_tensor(logits).double().softmax(dim=1)


MSP_CORRECT = [msp_torch_float64, msp_torch_float32, msp_numpy, msp_scipy, msp_closed_form,
               msp_log_softmax]
MSP_MISTAKES = [
    (msp_wrong_axis, "over the images"),
    (msp_one_minus, "1 - MSP"),
    (msp_max_logit, "no softmax"),
    (msp_min_probability, "smallest probability"),
    (msp_full_matrix, "whole probability matrix"),
]


@pytest.fixture(scope="module")
def msp_inputs(clip, feats):
    model, _, tokenizer = clip
    _, projection = models.split_visual(model)
    return dict(model=model, tokenizer=tokenizer, projection=projection,
                names=id_class_names(PROFILE), scale=model.logit_scale.exp().item(),
                id_test=feats["id_test_feats"], ood_test=feats["ood_test_feats"])


def msp_pair(inp, text_fn=text_reference_shape, logits_fn=logits_reference_shape,
             msp_fn=msp_torch_float64):
    """The ID and OOD test scores of notebook 03's graded pipeline with these exercises."""
    with torch.no_grad():  # as the notebook's scoring cell
        text = text_fn(inp["model"], inp["tokenizer"], inp["names"])
        text = torch.as_tensor(np.asarray(text)) if not isinstance(text, torch.Tensor) else text
        return [msp_fn(logits_fn(inp[split], inp["projection"], text, inp["scale"]))
                for split in ("id_test", "ood_test")]


def msp_auroc(inp, **fns):
    """The graded AUROC of notebook 03's pipeline with the given exercise functions."""
    return metrics.auroc(*msp_pair(inp, **fns))


def accepted(inp, **fns) -> bool:
    """The AUROC check passes and the grader accepts the score vectors themselves."""
    pair = msp_pair(inp, **fns)
    assert_grader_accepts("msp", *pair)
    return auroc_passes(metrics.auroc(*pair))


def auroc_passes(value) -> bool:
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            checks.check_auroc("msp", value, PROFILE)
    except AssertionError:
        return False
    return True


@pytest.mark.parametrize("fn", TEXT_CORRECT, ids=lambda f: f.__name__)
def test_text_correct_variants_pass_both_checks(fn, msp_inputs):
    assert "public checks passed" in passes(checks.check_text_embeddings, fn)
    assert accepted(msp_inputs, text_fn=fn)


@pytest.mark.parametrize("fn, phrase", TEXT_MISTAKES, ids=lambda x: getattr(x, "__name__", ""))
def test_text_mistakes_are_named(fn, phrase):
    assert phrase in fails(checks.check_text_embeddings, fn)


@pytest.mark.parametrize("fn", LOGITS_CORRECT, ids=lambda f: f.__name__)
def test_logits_correct_variants_pass_both_checks(fn, msp_inputs):
    assert "public checks passed" in passes(checks.check_zero_shot_logits, fn)
    assert accepted(msp_inputs, logits_fn=fn)


@pytest.mark.parametrize("fn, phrase", LOGITS_MISTAKES, ids=lambda x: getattr(x, "__name__", ""))
def test_logits_mistakes_are_named(fn, phrase):
    assert phrase in fails(checks.check_zero_shot_logits, fn)


@pytest.mark.parametrize("fn", MSP_CORRECT, ids=lambda f: f.__name__)
def test_msp_correct_variants_pass_both_checks(fn, msp_inputs):
    assert "public checks passed" in passes(checks.check_msp, fn)
    assert accepted(msp_inputs, msp_fn=fn)


@pytest.mark.parametrize("fn, phrase", MSP_MISTAKES, ids=lambda x: getattr(x, "__name__", ""))
def test_msp_mistakes_are_named(fn, phrase):
    assert phrase in fails(checks.check_msp, fn)


@pytest.mark.parametrize("kind, fn", [
    ("logits", logits_image_not_normalised), ("logits", logits_no_scale),
    ("logits", logits_scale_exponentiated_again),
    ("msp", msp_wrong_axis), ("msp", msp_one_minus), ("msp", msp_max_logit),
], ids=lambda x: getattr(x, "__name__", x))
def test_mistakes_that_run_also_miss_the_graded_auroc(kind, fn, msp_inputs):
    """Mistakes that still produce one score per image land outside the AUROC tolerance too,
    so a student who ignores the self-check still loses the AUROC points."""
    value = msp_auroc(msp_inputs, **{f"{kind}_fn": fn})
    assert not auroc_passes(value), (fn.__name__, value)


def test_a_wrong_template_is_caught_by_the_self_check_only(msp_inputs):
    """"a photo of a {}." instead of the bare names moves the miniclip MSP AUROC by about 0.01:
    the AUROC check cannot see it, the self-check (which passes a template) does."""
    def photo(model, tokenizer, class_names, template="{}"):
        return text_reference_shape(model, tokenizer, class_names, "a photo of a {}.")

    assert "template is ignored" in fails(checks.check_text_embeddings, text_template_ignored)
    assert auroc_passes(msp_auroc(msp_inputs, text_fn=photo))


def test_text_normalised_nowhere_misses_the_auroc(msp_inputs):
    """The text rows may be normalised in either exercise (normalising twice changes nothing);
    normalised in neither, the AUROC check fails as well as both self-checks."""
    assert auroc_passes(msp_auroc(msp_inputs, text_fn=text_not_normalised))
    assert auroc_passes(msp_auroc(msp_inputs, logits_fn=logits_text_not_normalised))
    value = msp_auroc(msp_inputs, text_fn=text_not_normalised,
                      logits_fn=logits_text_not_normalised)
    assert not auroc_passes(value), value


# =================================================================== 03: projection and scale from the model

def head_module(model):
    return model.visual.head, model.logit_scale.exp().item()


def head_linear_inside(model):  # the Linear inside the head (its dropout has p = 0)
    return model.visual.head.proj, float(torch.exp(model.logit_scale))


def head_detached_tensor(model):  # a 0-d tensor without gradient is a number too
    return model.visual.head, model.logit_scale.detach().exp()


def head_math_exp(model):
    import math

    return dict(model.visual.named_children())["head"], math.exp(model.logit_scale.item())


def head_raw_parameter(model):
    return model.visual.head, model.logit_scale.item()


def head_tau(model):
    return model.visual.head, 1 / model.logit_scale.exp().item()


def head_parameter_with_grad(model):
    return model.visual.head, model.logit_scale.exp()


def head_trunk(model):
    return model.visual.trunk, model.logit_scale.exp().item()


def head_whole_tower(model):
    return model.visual, model.logit_scale.exp().item()


def head_normalising(model):
    class Unit(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, h):
            return F.normalize(self.inner(h), dim=-1)

    return Unit(model.visual.head), model.logit_scale.exp().item()


HEAD_CORRECT = [head_module, head_linear_inside, head_detached_tensor, head_math_exp]
HEAD_MISTAKES = [
    (head_raw_parameter, "log(1/tau)"),
    (head_tau, "this is tau"),
    (head_parameter_with_grad, "tracks gradients"),
    (head_trunk, "fails on trunk features"),
    (head_whole_tower, "fails on trunk features"),
    (head_normalising, "normalises its output"),
]


@pytest.mark.parametrize("fn", HEAD_CORRECT, ids=lambda f: f.__name__)
def test_head_correct_variants_pass_both_checks(fn, msp_inputs):
    assert "public checks passed" in passes(checks.check_clip_head, fn)
    projection, scale = fn(copy.deepcopy(msp_inputs["model"]))
    inp = dict(msp_inputs, projection=projection, scale=float(scale))
    assert accepted(inp)


@pytest.mark.parametrize("fn, phrase", HEAD_MISTAKES, ids=lambda x: getattr(x, "__name__", ""))
def test_head_mistakes_are_named(fn, phrase):
    assert phrase in fails(checks.check_clip_head, fn)


@pytest.mark.parametrize("fn", [head_raw_parameter, head_tau], ids=lambda f: f.__name__)
def test_a_wrong_scale_also_misses_the_graded_auroc(fn, msp_inputs):
    projection, scale = fn(copy.deepcopy(msp_inputs["model"]))
    value = msp_auroc(dict(msp_inputs, projection=projection, scale=float(scale)))
    assert not auroc_passes(value), (fn.__name__, value)


# =================================================================== 03: the sweep over templates and T

def _sweep_with(model, tokenizer, class_names, feats_in, feats_out, templates, temperatures,
                text_fn=text_reference_shape, logits_fn=logits_reference_shape,
                msp_fn=msp_torch_float64, how="divide"):
    projection = model.visual.head
    out = {}
    for template in templates:
        text = torch.as_tensor(np.asarray(text_fn(model, tokenizer, class_names, template)))
        for t in temperatures:
            with torch.no_grad():
                if how == "divide":  # cosines once, divided by T
                    pair = [msp_fn(logits_fn(f, projection, text, 1.0) / t)
                            for f in (feats_in, feats_out)]
                elif how == "scale":  # logits at scale 1/T
                    pair = [msp_fn(logits_fn(f, projection, text, 1 / t))
                            for f in (feats_in, feats_out)]
                else:  # the planted mistake: multiplied by T
                    pair = [msp_fn(logits_fn(f, projection, text, t)) for f in (feats_in, feats_out)]
            out[(template, t)] = metrics.auroc(*pair)
    return out


def sweep_solution(model, tokenizer, class_names, feats_in, feats_out, templates, temperatures):
    return _sweep_with(model, tokenizer, class_names, feats_in, feats_out, templates,
                       temperatures)


def sweep_scale_per_temperature(model, tokenizer, class_names, feats_in, feats_out, templates,
                                temperatures):
    return _sweep_with(model, tokenizer, class_names, feats_in, feats_out, templates,
                       temperatures, how="scale")


def sweep_float32_numpy(model, tokenizer, class_names, feats_in, feats_out, templates,
                        temperatures):
    return _sweep_with(model, tokenizer, class_names, feats_in, feats_out, templates,
                       temperatures, logits_fn=logits_float32, msp_fn=msp_numpy)


def sweep_scipy_closed_form(model, tokenizer, class_names, feats_in, feats_out, templates,
                            temperatures):
    return _sweep_with(model, tokenizer, class_names, feats_in, feats_out, templates,
                       temperatures, logits_fn=logits_numpy, msp_fn=msp_closed_form)


def sweep_multiplied_by_t(model, tokenizer, class_names, feats_in, feats_out, templates,
                          temperatures):
    return _sweep_with(model, tokenizer, class_names, feats_in, feats_out, templates,
                       temperatures, how="multiply")


def sweep_template_ignored(model, tokenizer, class_names, feats_in, feats_out, templates,
                           temperatures):
    return _sweep_with(model, tokenizer, class_names, feats_in, feats_out, templates,
                       temperatures, text_fn=text_template_ignored)


def sweep_fractions(model, tokenizer, class_names, feats_in, feats_out, templates, temperatures):
    out = sweep_solution(model, tokenizer, class_names, feats_in, feats_out, templates,
                         temperatures)
    return {k: v / 100 for k, v in out.items()}


def sweep_swapped(model, tokenizer, class_names, feats_in, feats_out, templates, temperatures):
    return sweep_solution(model, tokenizer, class_names, feats_out, feats_in, templates,
                          temperatures)


def sweep_temperature_ignored(model, tokenizer, class_names, feats_in, feats_out, templates,
                              temperatures):
    out = {}
    for template in templates:  # T never reaches the score: every T gives the T = 1 value
        one = sweep_solution(model, tokenizer, class_names, feats_in, feats_out, (template,),
                             (1.0,))[(template, 1.0)]
        out.update({(template, t): one for t in temperatures})
    return out


def sweep_float32_softmax(model, tokenizer, class_names, feats_in, feats_out, templates,
                          temperatures):  # msp_torch_float32: fine at tau, ties at small T
    return _sweep_with(model, tokenizer, class_names, feats_in, feats_out, templates,
                       temperatures, msp_fn=msp_torch_float32)


def sweep_list(model, tokenizer, class_names, feats_in, feats_out, templates, temperatures):
    return list(sweep_solution(model, tokenizer, class_names, feats_in, feats_out, templates,
                               temperatures).values())


SWEEP_CORRECT = [sweep_solution, sweep_scale_per_temperature, sweep_float32_numpy,
                 sweep_scipy_closed_form]
SWEEP_MISTAKES = [
    (sweep_multiplied_by_t, "multiplied by T"),
    (sweep_template_ignored, "bare-name row"),
    (sweep_fractions, "fractions"),
    (sweep_swapped, "100 minus"),
    (sweep_temperature_ignored, "temperature never reaches"),
    (sweep_list, "return a dict"),
    (sweep_float32_softmax, "softmax runs in float32"),
]


@pytest.fixture(scope="module")
def graded_sweep_grid():
    from ood_utils.answer_key.expected import get_sweep_expected

    grid = list(get_sweep_expected("msp_sweep", PROFILE))
    templates = tuple(dict.fromkeys(t for t, _ in grid))
    temperatures = tuple(dict.fromkeys(T for _, T in grid))
    return templates, temperatures


def _run_sweep(fn, inp, grid):
    templates, temperatures = grid
    return fn(inp["model"], inp["tokenizer"], inp["names"], inp["id_test"], inp["ood_test"],
              templates, temperatures)


def sweep_result_passes(values) -> bool:
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            checks.check_msp_sweep_result(values, PROFILE)
    except AssertionError:
        return False
    return True


@pytest.mark.parametrize("fn", SWEEP_CORRECT, ids=lambda f: f.__name__)
def test_sweep_correct_variants_pass_both_checks(fn, msp_inputs, graded_sweep_grid):
    assert "public checks passed" in passes(checks.check_msp_sweep, fn)
    assert sweep_result_passes(_run_sweep(fn, msp_inputs, graded_sweep_grid))


@pytest.mark.parametrize("fn, phrase", SWEEP_MISTAKES, ids=lambda x: getattr(x, "__name__", ""))
def test_sweep_mistakes_are_named(fn, phrase):
    assert phrase in fails(checks.check_msp_sweep, fn)


@pytest.mark.parametrize("fn", [sweep_multiplied_by_t, sweep_template_ignored, sweep_fractions,
                                sweep_swapped, sweep_temperature_ignored, sweep_float32_softmax],
                         ids=lambda f: f.__name__)
def test_sweep_mistakes_also_miss_the_graded_sweep(fn, msp_inputs, graded_sweep_grid):
    assert not sweep_result_passes(_run_sweep(fn, msp_inputs, graded_sweep_grid))


def test_graded_sweep_names_the_float32_softmax(msp_inputs, graded_sweep_grid):
    values = _run_sweep(sweep_float32_softmax, msp_inputs, graded_sweep_grid)
    with pytest.raises(AssertionError, match="softmax runs in float32"):
        with contextlib.redirect_stdout(io.StringIO()):
            checks.check_msp_sweep_result(values, PROFILE)


def test_graded_sweep_needs_every_grid_point_and_ignores_extra_ones(msp_inputs,
                                                                    graded_sweep_grid):
    templates, temperatures = graded_sweep_grid
    values = _run_sweep(sweep_solution, msp_inputs, (templates + ("a sketch of a {}.",),
                                                     temperatures + (0.0805,)))
    assert sweep_result_passes(values)
    missing = dict(values)
    missing.pop((templates[0], temperatures[0]))
    with pytest.raises(AssertionError, match="no value for"):
        with contextlib.redirect_stdout(io.StringIO()):
            checks.check_msp_sweep_result(missing, PROFILE)


def test_recorded_msp_sweep_is_the_reference_sweep(graded_sweep_grid):
    """The recorded miniclip grid equals the reference computed from the cached logits (the
    path a profile without a recorded sweep takes)."""
    from ood_utils.answer_key.expected import get_sweep_expected

    recorded = get_sweep_expected("msp_sweep", PROFILE)
    live = checks.nb03_msp._msp_sweep_reference(PROFILE, list(recorded))
    for key, entry in recorded.items():
        assert abs(live[key] - entry.value) <= entry.tol, (key, live[key], entry)
