"""Self-checks of notebook 03: prompts, zero-shot logits, MSP, the CLIP head and the MSP sweep."""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from ..registry import compares_with
from ._common import (_as_array, _auroc_percent, _check_sweep_result, _clip_model_for_checks,
                      _close, _compare, _fn_name, _gen, _hide_check_frames, _normalize, _passed,
                      _random_feats, _require_callable, _softmax, _sweep_hints, _sweep_values,
                      local_runner)

# --------------------------------------------------------------------------- MSP (part IV)

def _zero_shot_reference(image_embeds: torch.Tensor, text_embeds: torch.Tensor,
                         logit_scale: float) -> np.ndarray:
    from ...methods import msp_scores

    img = torch.nn.functional.normalize(image_embeds.double(), dim=1)
    txt = torch.nn.functional.normalize(text_embeds.double(), dim=1)
    return _as_array(msp_scores(float(logit_scale) * img @ txt.T), "msp_scores", "")





@compares_with('course.models:load_clip', 'course.models:text_embeddings')
def check_text_embeddings(student_fn: Callable) -> None:
    """Self-check of ``text_embeddings_exercise(model, tokenizer, class_names, template="{}")``.

    Runs on the shipped tiny CLIP (whatever the profile) and compares with
    :func:`ood_utils.course.models.text_embeddings` for one template: one L2-normalised row per class,
    shape ``(C, embed_dim)``, rows in the order of ``class_names``. Tried with the bare names
    (``"{}"``) and with ``"a photo of a {}."``.
    """
    import torch.nn.functional as F

    from ...course.models import text_embeddings

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


@compares_with()
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


@compares_with('methods.msp:msp_scores')
def check_msp(student_fn: Callable) -> None:
    """Self-check of ``msp_exercise(logits)``: the largest softmax probability of each row.

    Compared with :func:`ood_utils.methods.msp_scores` on random logits of several scales,
    float32 and float64, including a case with as many rows as columns.
    """
    from ...methods import msp_scores

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


def _probe_clip_head(ns, name, model, h):
    """Kernel side of :func:`check_clip_head` (self-contained: the grader sends its source).

    Calls ``ns[name](model)`` (the shipped tiny CLIP, which the grader hands over by name) and
    returns plain values: ``projection(h)`` (or its error) and what ``logit_scale`` is (a
    number, a tensor's size, whether it tracks gradients).
    """
    import torch

    out = ns[name](model)
    if not isinstance(out, tuple) or len(out) != 2:
        return {"pair": False, "type": type(out).__name__}
    projection, scale = out
    res = {"pair": True, "callable": callable(projection),
           "projection_type": type(projection).__name__, "z": None, "error": None,
           "scale": None, "scale_type": type(scale).__name__, "scale_numel": 1,
           "scale_grad": False}
    if res["callable"]:
        try:
            with torch.no_grad():
                res["z"] = projection(h.clone())
        except Exception as err:  # noqa: BLE001 - named in the verdict
            res["error"] = "%s: %s" % (type(err).__name__, err)
    if isinstance(scale, torch.Tensor):
        res.update(scale_numel=int(scale.numel()), scale_grad=bool(scale.requires_grad))
        if scale.numel() == 1:
            res["scale"] = float(scale.detach())
    else:
        try:
            res["scale"] = float(scale)
        except (TypeError, ValueError):
            pass
    return res


def _judge_clip_head(run: Callable, name: str) -> None:
    """The verdict of :func:`check_clip_head` from what ``run(_probe_clip_head, ...)`` returns."""
    from ...course.models import split_visual

    model, _ = _clip_model_for_checks()
    raw = float(model.logit_scale.detach())
    trunk, head = split_visual(model)
    with torch.no_grad():
        h = _random_feats(6, trunk(torch.zeros(1, 3, 32, 32)).shape[1], 95)
        want = head(h).double().numpy()
    d, e = h.shape[1], want.shape[1]
    got = run(_probe_clip_head, name, model, h)  # computed above: changing the model is allowed
    if not got.get("pair"):
        raise AssertionError(f"{name} must return a pair (projection, logit_scale), got "
                             f"{got.get('type')}")
    if not got.get("callable"):
        raise AssertionError(f"{name} returned a {got.get('projection_type')} as the projection: "
                             "return the module (a torch.nn.Module) that maps trunk features "
                             "to the joint space, so that projection(h) works")
    case = f"6 random trunk feature vectors of dimension {d}, joint space of dimension {e}"
    if got.get("error"):
        raise AssertionError(
            f"the projection returned by {name} fails on trunk features ({case}): "
            f"{got['error']}. It must take the stored trunk features (the output "
            "of the tower's trunk), not images: it is the image tower's LAST part, the one "
            "notebook 01 split off (print(model.visual) shows the parts)")
    z = _as_array(got.get("z"), f"{name}: projection", "image embeddings")
    if z.shape == (6, d) and d != e:
        raise AssertionError(f"the projection returned by {name} keeps {d} dimensions ({case}); "
                             f"it must map them to the {e}-d joint space of image and text")
    _compare(z, want, f"{name}: projection(h)", case, "the image embeddings W h",
             hints={"the projection normalises its output: return the linear layer itself "
                    "(the logits exercise normalises)": _normalize(want)})
    if got.get("scale_numel") != 1:
        raise AssertionError(f"{name} returned a logit_scale of {got.get('scale_numel')} "
                             "numbers; return one number")
    if got.get("scale_grad"):
        raise AssertionError(f"{name} returned logit_scale as a tensor that tracks gradients: "
                             "return a Python float (.item()), or every logit computed with it "
                             "would track them too")
    if got.get("scale") is None:
        raise AssertionError(f"{name} returned a {got.get('scale_type')} as logit_scale; return "
                             "a number (float, or a 0-d tensor)")
    s = float(got["scale"])
    want_s = float(np.exp(raw))
    if abs(s - want_s) <= 1e-4 * want_s:
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


@compares_with('course.models:load_clip', 'course.models:split_visual')
def check_clip_head(student_fn: Callable) -> None:
    """Self-check of ``clip_head_exercise(model) -> (projection, logit_scale)``.

    Runs on a copy of the shipped tiny CLIP (whatever the profile): ``projection`` must map
    trunk features ``(N, feature_dim)`` to the image embeddings of the joint space, exactly as
    the image tower's last layer does, and ``logit_scale`` must be the factor in front of the
    cosines, ``exp(model.logit_scale)`` = 1/tau, as a number or a 0-d tensor. The grader runs
    the same verdict on what the kernel returns (:func:`_probe_clip_head`), on features of its
    own.
    """
    _require_callable(student_fn)
    name = _fn_name(student_fn)
    _judge_clip_head(local_runner({name: student_fn}), name)
    _passed(name)


@compares_with('course.models:load_clip', 'course.models:text_embeddings', 'methods.msp:msp_scores')
def check_msp_sweep(student_fn: Callable) -> None:
    """Self-check of ``msp_sweep_exercise(model, tokenizer, class_names, feats_in, feats_out,
    templates, temperatures) -> {(template, T): AUROC}``.

    Runs on the shipped tiny CLIP with random trunk features and compares with the reference:
    :func:`ood_utils.course.models.text_embeddings` of each template, the projected and normalised
    image features, :func:`ood_utils.methods.msp_scores` of the cosines at temperature ``T``,
    and scikit-learn's AUROC in percent. The student's function calls the notebook's own
    exercises (which must pass their checks first).
    """
    from ...course.models import text_embeddings
    from ...methods import msp_scores

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
    from ...course.pipeline import zero_shot_logits
    from ...methods import msp_scores

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


@compares_with()
def check_msp_sweep_result(auroc_by_setting: dict, profile=None) -> None:
    """Graded check of notebook 03's sweep: ``{(template, T): AUROC}`` against the answer key.

    Every (template, T) of the recorded grid must be in the dict and within its tolerance;
    further keys (other templates, CLIP's own tau) are the student's and not graded. For a
    profile without a recorded sweep, the reference is computed from the cached zero-shot
    logits (tolerance 0.1).
    """
    _check_sweep_result("msp_sweep", auroc_by_setting, profile, _msp_sweep_reference,
                        lambda k: f"{k[0]!r} at T = {k[1]:g}", _msp_sweep_hint)


__all__ = [name for name in dir() if name.startswith("check_")]
_hide_check_frames(globals())  # keep this the last line of the module
