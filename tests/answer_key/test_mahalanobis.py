"""Answer key of notebook 05: every correct way of writing the Mahalanobis exercises passes
the self-checks and the four AUROC checks on the real ``miniclip`` features, and every planted
mistake fails a check with a message that names it.

Runs the real features (the rotated trunk features the notebook uses, and the probe logits of
``pipeline.plp_probe(seed=0)``), so it needs the feature cache; about a minute on one thread.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ood_utils.answer_key import checks
from ood_utils.methods import metrics
from ood_utils.course import pipeline
from ood_utils import methods
from ood_utils.course.features import load_features

from ._grader import assert_grader_accepts

from . import _maha_variants as V

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(scope="module")
def real():
    feats = load_features("miniclip", progress=False)
    tr, te, oo = methods.drop_degenerate_directions(
        feats["id_train_feats"], feats["id_test_feats"], feats["ood_test_feats"])
    probe = pipeline.plp_probe(seed=0, profile="miniclip", progress=False)
    return {
        "md": (tr, feats["id_train_labels"], te, oo),
        "plp_md": (probe["id_train"], probe["pseudo_id_train"], probe["id_test"],
                   probe["ood_test"]),
    }


def _aurocs(fn, real):
    out = {}
    for base, (tr, y, te, oo) in real.items():
        both = torch.cat([te, oo])
        for relative in (False, True):
            s = torch.as_tensor(fn(tr, y, both, relative=relative)).double().numpy()
            cid = base.replace("md", "rmd") if relative else base
            out[cid] = metrics.auroc(s[:len(te)], s[len(te):])
    return out


@pytest.mark.parametrize("stats", [V.stats_np_cov, V.stats_by_hand, V.stats_torch,
                                   V.stats_torch_loop_counts],
                         ids=lambda f: f.__name__)
def test_correct_class_statistics_pass(stats, capsys):
    checks.check_class_statistics(stats)
    assert "public checks passed" in capsys.readouterr().out


@pytest.mark.parametrize("stats, phrase", [
    (V.stats_pooled, "not this course's convention"),
    (V.stats_biased, "biased"),
    (V.stats_uncentred, "class means are not subtracted"),
    (V.stats_total, "covariance of ALL training rows"),
    (V.stats_numpy_out, "NumPy array"),
    (V.stats_float32_out, "float32"),
    (V.stats_single_kept, "single training sample was kept"),
    (V.stats_single_kept_guarded, "single training sample was kept"),
    (V.stats_cov_without_transpose, r"torch\.cov\(g\.T\)"),
], ids=lambda x: getattr(x, "__name__", ""))
def test_wrong_class_statistics_fail(stats, phrase):
    with pytest.raises(AssertionError, match=phrase):
        checks.check_class_statistics(stats)


@pytest.mark.parametrize("fn", V.CORRECT, ids=lambda f: f.__name__)
def test_correct_variant_passes_both_checks(fn, real, capsys):
    checks.check_mahalanobis(fn)
    assert "public checks passed" in capsys.readouterr().out
    for cid, value in _aurocs(fn, real).items():
        checks.check_auroc(cid, value, profile="miniclip")
    for base, (tr, y, te, oo) in real.items():  # the vectors themselves, as the grader judges
        for relative in (False, True):
            s = torch.as_tensor(fn(tr, y, torch.cat([te, oo]), relative=relative)).double()
            assert_grader_accepts(base.replace("md", "rmd") if relative else base,
                                  s[:len(te)], s[len(te):])


def test_correct_variants_agree_on_the_real_features(real):
    """The point of the rotation: the inverses agree to far below the tolerance."""
    tr, y, te, _ = real["md"]
    ref = methods.mahalanobis_scores(tr, y, te[:500], relative=True)
    for fn in (V.maha_np_inv_loop, V.maha_np_pinv, V.maha_torch_solve):
        got = torch.as_tensor(fn(tr, y, te[:500], relative=True)).double().numpy()
        np.testing.assert_allclose(got, ref.numpy(), rtol=1e-6, atol=1e-6 * float(ref.abs().max()))


def test_without_the_rotation_the_inverses_disagree():
    """Why the notebooks rotate: on the raw trunk features np.linalg.pinv's cut-off keeps
    the degenerate direction in one covariance and drops it in the other."""
    feats = load_features("miniclip", progress=False)
    tr, y = feats["id_train_feats"], feats["id_train_labels"]
    te, oo = feats["id_test_feats"][:1500], feats["ood_test_feats"][:1000]
    both = torch.cat([te, oo])

    def auroc(fn):
        s = torch.as_tensor(fn(tr, y, both, relative=True)).double().numpy()
        return metrics.auroc(s[:len(te)], s[len(te):])

    ref = metrics.auroc(methods.mahalanobis_scores(tr, y, te, relative=True),
                        methods.mahalanobis_scores(tr, y, oo, relative=True))
    assert abs(auroc(V.maha_np_pinv) - ref) > 0.2


@pytest.mark.parametrize("fn, phrase", V.WRONG, ids=lambda x: getattr(x, "__name__", ""))
def test_planted_mistake_fails_with_a_message_naming_it(fn, phrase):
    with pytest.raises(AssertionError, match=phrase):
        checks.check_mahalanobis(fn)


def test_weighted_covariance_is_not_called_a_mistake():
    with pytest.raises(AssertionError) as err:
        checks.check_mahalanobis(V.wrong_pooled)
    assert "a valid estimator" in str(err.value)


def test_a_slow_correct_variant_passes_with_a_warning(capsys):
    """A per-class three-operand np.einsum is correct but would run past the grader's cell
    limit in notebook 06: the self-check passes it and warns before any graded cell."""
    checks.check_mahalanobis(V.maha_np_einsum_loop)
    out = capsys.readouterr().out
    assert "public checks passed" in out and "WARNING" in out and "einsum" in out


def test_fast_variants_get_no_timing_warning(capsys):
    for fn in (V.maha_np_pinv, V.maha_torch_pinv):
        checks.check_mahalanobis(fn)
    assert "WARNING" not in capsys.readouterr().out


# ------------------------------------------------------------------ the shrinkage sweep (Exercise 3)

def _md_with(means, cov, feats, inverse):
    x = torch.as_tensor(feats).double().numpy()
    prec = inverse(cov)
    return -np.min([(((x - m) @ prec) * (x - m)).sum(1) for m in means], axis=0)


def sweep_numpy_loop(train_feats, train_labels, id_feats, ood_feats, alphas):
    means, cov = (np.asarray(a) for a in V.stats_np_cov(train_feats, train_labels))
    d = cov.shape[0]
    out = {}
    for a in alphas:
        shrunk = (1 - a) * cov + a * np.trace(cov) / d * np.eye(d)
        out[a] = metrics.auroc(_md_with(means, shrunk, id_feats, np.linalg.inv),
                               _md_with(means, shrunk, ood_feats, np.linalg.inv))
    return out


def sweep_torch_solve(train_feats, train_labels, id_feats, ood_feats, alphas):
    means, cov = V.stats_torch(train_feats, train_labels)
    eye = torch.eye(cov.shape[0], dtype=torch.float64)
    out = {}
    for a in alphas:
        shrunk = (1 - a) * cov + a * cov.diagonal().mean() * eye
        scores_ = []
        for feats in (id_feats, ood_feats):
            x = torch.as_tensor(feats).double()
            d2 = torch.stack([(torch.linalg.solve(shrunk, (x - m).T).T * (x - m)).sum(1)
                              for m in means], 1)
            scores_.append(-d2.min(1).values)
        out[a] = metrics.auroc(*scores_)
    return out


def sweep_identity_target(train_feats, train_labels, id_feats, ood_feats, alphas):
    means, cov = (np.asarray(a) for a in V.stats_np_cov(train_feats, train_labels))
    out = {}
    for a in alphas:
        shrunk = (1 - a) * cov + a * np.eye(cov.shape[0])
        out[a] = metrics.auroc(_md_with(means, shrunk, id_feats, np.linalg.pinv),
                               _md_with(means, shrunk, ood_feats, np.linalg.pinv))
    return out


def sweep_swapped_weights(train_feats, train_labels, id_feats, ood_feats, alphas):
    means, cov = (np.asarray(a) for a in V.stats_np_cov(train_feats, train_labels))
    d = cov.shape[0]
    out = {}
    for a in alphas:
        shrunk = a * cov + (1 - a) * np.trace(cov) / d * np.eye(d)
        out[a] = metrics.auroc(_md_with(means, shrunk, id_feats, np.linalg.pinv),
                               _md_with(means, shrunk, ood_feats, np.linalg.pinv))
    return out


def sweep_fraction(train_feats, train_labels, id_feats, ood_feats, alphas):
    return {a: v / 100 for a, v in sweep_numpy_loop(train_feats, train_labels, id_feats,
                                                    ood_feats, alphas).items()}


@pytest.mark.parametrize("fn", [sweep_numpy_loop, sweep_torch_solve], ids=lambda f: f.__name__)
def test_correct_shrinkage_sweeps_pass_both_checks(fn, real, capsys):
    checks.check_shrinkage_sweep(fn)
    assert "public checks passed" in capsys.readouterr().out
    tr, y, te, oo = real["md"]
    from ood_utils.course.sweeps import SHRINKAGES
    checks.check_sweep("md_shrinkage", fn(tr, y, te, oo, SHRINKAGES), profile="miniclip")


@pytest.mark.parametrize("fn, phrase", [
    (sweep_identity_target, "identity I itself"), (sweep_swapped_weights, "swapped"),
    (sweep_fraction, "fraction")], ids=lambda x: getattr(x, "__name__", ""))
def test_shrinkage_sweep_mistakes_are_named(fn, phrase):
    with pytest.raises(AssertionError, match=phrase):
        checks.check_shrinkage_sweep(fn)
