"""Answer key of notebook 07 (CAC): correct variants pass, planted mistakes are caught.

For each of the five exercises (anchors, distance layer, CAC loss, open-set prediction, N+1
confusion matrix) a list of CORRECT implementations a student may write (torch and NumPy,
loops and vectorised, the seed project's own shapes of code, scikit-learn) and a list of
PLANTED MISTAKES, each with the words the self-check's message must contain. Every correct
variant passes its self-check; combinations of them, trained through the notebook's pipeline
on the real miniclip data (cached baseline), pass the graded check ``check_cac_results``.
Every mistake fails its self-check with a message that points at it.

The notebook prescribes the Euclidean distance ``||z - c_j||`` (not squared), as the paper and
the seed project (``torch.norm``).

Runtime: about a minute on one thread (four CAC trainings of a few seconds each; the baseline
CNN comes from the feature cache, trained once if missing).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import confusion_matrix

from ood_utils import cac, cac_experiment, checks

# ============================================================================ anchors


def anchors_eye(num_classes, alpha=10.0):
    return alpha * torch.eye(num_classes)


def anchors_diag(num_classes, alpha=10.0):
    return torch.diag(torch.full((num_classes,), float(alpha)))


def anchors_seed_style(num_classes, alpha=10.0):
    # the seed project: torch.diag(torch.Tensor([10 for i in range(10)])).double()
    return torch.diag(torch.Tensor([alpha for _ in range(num_classes)])).double()


def anchors_loop(num_classes, alpha=10.0):
    a = torch.zeros(num_classes, num_classes, dtype=torch.float64)
    for j in range(num_classes):
        a[j, j] = alpha
    return a


def anchors_numpy(num_classes, alpha=10.0):
    return np.eye(num_classes) * alpha


def anchors_one_hot(num_classes, alpha=10.0):
    return alpha * F.one_hot(torch.arange(num_classes), num_classes).float()


ANCHORS_CORRECT = [anchors_eye, anchors_diag, anchors_seed_style, anchors_loop, anchors_numpy,
                   anchors_one_hot]


def anchors_not_scaled(num_classes, alpha=10.0):
    return torch.eye(num_classes)


def anchors_all_alpha(num_classes, alpha=10.0):
    return torch.full((num_classes, num_classes), float(alpha))


def anchors_vector(num_classes, alpha=10.0):
    return alpha * torch.ones(num_classes)


ANCHORS_MISTAKES = [(anchors_not_scaled, "not scaled"), (anchors_all_alpha, "every entry"),
                    (anchors_vector, "vector")]

# ============================================================================ distances


def dist_broadcast(points, anchors):
    return (points[:, None, :] - anchors[None].to(points.dtype)).pow(2).sum(-1).sqrt()


def dist_cdist(points, anchors):
    return torch.cdist(points, anchors.to(points.dtype))


def dist_seed_style(points, anchors):
    # the seed project's distance_classifier: expand both, then torch.norm over the last axis
    n, m, d = points.size(0), anchors.size(0), points.size(1)
    p = points.unsqueeze(1).expand(n, m, d).double()
    a = anchors.double().unsqueeze(0).expand(n, m, d)
    return torch.norm(p - a, 2, 2)


def dist_vector_norm(points, anchors):
    return torch.linalg.vector_norm(points.unsqueeze(1) - anchors.unsqueeze(0), dim=-1)


def dist_expanded_square(points, anchors):
    # ||p||^2 - 2 p.a + ||a||^2, then the square root
    a = anchors.to(points.dtype)
    sq = points.pow(2).sum(1, keepdim=True) - 2 * points @ a.T + a.pow(2).sum(1)[None]
    return sq.clamp_min(1e-12).sqrt()


def dist_loop(points, anchors):
    cols = [torch.sqrt(((points - anchors[j].to(points.dtype)) ** 2).sum(dim=1))
            for j in range(anchors.shape[0])]
    return torch.stack(cols, dim=1)


DIST_CORRECT = [dist_broadcast, dist_cdist, dist_seed_style, dist_vector_norm,
                dist_expanded_square, dist_loop]


def dist_squared(points, anchors):
    return (points[:, None, :] - anchors[None]).pow(2).sum(-1)


def dist_l1(points, anchors):
    return (points[:, None, :] - anchors[None]).abs().sum(-1)


def dist_transposed(points, anchors):
    return dist_broadcast(points, anchors).T


def dist_detached(points, anchors):
    d = np.sqrt(((points.detach().numpy()[:, None] - anchors.numpy()[None]) ** 2).sum(-1))
    return torch.from_numpy(d)


DIST_MISTAKES = [(dist_squared, "squared distances"), (dist_l1, "L1"),
                 (dist_transposed, "shape|swapped"), (dist_detached, "without a gradient")]

# ============================================================================ loss


def loss_logsumexp(distances, targets, lambda_=0.1):
    d_y = distances.gather(1, targets[:, None])
    return (torch.logsumexp(d_y - distances, dim=1) + lambda_ * d_y[:, 0]).mean()


def loss_one_hot_mask(distances, targets, lambda_=0.1):
    # log(1 + sum_{j != y} exp(d_y - d_j)) with a one-hot mask, written out as in the formula
    mask = F.one_hot(targets, distances.shape[1]).bool()
    d_y = (distances * mask).sum(1)
    others = torch.exp(d_y[:, None] - distances).masked_fill(mask, 0.0).sum(1)
    return (torch.log(1 + others) + lambda_ * d_y).mean()


def loss_cross_entropy(distances, targets, lambda_=0.1):
    # logsumexp_j(d_y - d_j) = cross-entropy with the negated distances as logits
    d_y = distances.gather(1, targets[:, None])[:, 0]
    return F.cross_entropy(-distances, targets) + lambda_ * d_y.mean()


def loss_paper_style(distances, targets, lambda_=0.1):
    # the paper's code: gather the other classes, tuplet mean plus lambda times anchor mean
    n = distances.shape[1]
    true = distances.gather(1, targets.view(-1, 1)).view(-1)
    non_gt = torch.tensor([[i for i in range(n) if i != int(t)] for t in targets])
    others = distances.gather(1, non_gt)
    tuplet = torch.log(1 + torch.exp(true[:, None] - others).sum(1)).mean()
    return tuplet + lambda_ * true.mean()


def loss_sum_over_batch(distances, targets, lambda_=0.1):
    d_y = distances[torch.arange(len(targets)), targets]
    total = torch.logsumexp(d_y[:, None] - distances, dim=1).sum() + lambda_ * d_y.sum()
    return total / distances.shape[0]


def loss_loop(distances, targets, lambda_=0.1):
    total = 0.0
    for i in range(distances.shape[0]):
        y = int(targets[i])
        d_y = distances[i, y]
        others = torch.cat([distances[i, :y], distances[i, y + 1:]])
        total = total + torch.log(1 + torch.exp(d_y - others).sum()) + lambda_ * d_y
    return total / distances.shape[0]


LOSS_CORRECT = [loss_logsumexp, loss_one_hot_mask, loss_cross_entropy, loss_paper_style,
                loss_sum_over_batch, loss_loop]


def loss_no_anchor_term(distances, targets, lambda_=0.1):
    d_y = distances.gather(1, targets[:, None])
    return torch.logsumexp(d_y - distances, dim=1).mean()


def loss_no_tuplet_term(distances, targets, lambda_=0.1):
    return lambda_ * distances.gather(1, targets[:, None]).mean()


def loss_flipped(distances, targets, lambda_=0.1):
    d_y = distances.gather(1, targets[:, None])
    return (torch.logsumexp(distances - d_y, dim=1) + lambda_ * d_y[:, 0]).mean()


def loss_summed(distances, targets, lambda_=0.1):
    return loss_logsumexp(distances, targets, lambda_) * distances.shape[0]


def loss_no_one(distances, targets, lambda_=0.1):
    mask = F.one_hot(targets, distances.shape[1]).bool()
    d_y = (distances * mask).sum(1)
    others = torch.exp(d_y[:, None] - distances).masked_fill(mask, 0.0).sum(1)
    return (torch.log(others) + lambda_ * d_y).mean()


def loss_item(distances, targets, lambda_=0.1):
    return torch.tensor(loss_logsumexp(distances, targets, lambda_).item())


LOSS_MISTAKES = [(loss_no_anchor_term, "anchor term"), (loss_no_tuplet_term, "tuplet term"),
                 (loss_flipped, "flipped"), (loss_summed, "summed"), (loss_no_one, "inside the log"),
                 (loss_item, "without a gradient")]

# ============================================================================ prediction


def predict_torch(distances, threshold):
    s = distances * (1 - torch.softmax(-distances, dim=1))
    min_s, pred = s.min(dim=1)
    return torch.where(min_s > threshold, torch.full_like(pred, distances.shape[1]), pred)


def predict_seed_style(distances, threshold):
    # the seed project's get_osr_prediction, with N instead of its hard-coded 10
    inverse = 1 - torch.nn.Softmin(dim=1)(distances)
    s = (distances * inverse).detach().cpu()
    smallest, label = torch.min(s, dim=1)
    label[smallest > threshold] = distances.shape[1]
    return label


def predict_numpy(distances, threshold):
    d = np.asarray(distances, dtype=np.float64)
    e = np.exp(-(d - d.min(axis=1, keepdims=True)))
    s = d * (1 - e / e.sum(axis=1, keepdims=True))
    pred = s.argmin(axis=1)
    pred[s.min(axis=1) > threshold] = d.shape[1]
    return pred


def predict_loop(distances, threshold):
    out = []
    for row in distances:
        s = row * (1 - torch.softmax(-row, dim=0))
        out.append(int(s.argmin()) if float(s.min()) <= threshold else len(row))
    return torch.tensor(out)


PREDICT_CORRECT = [predict_torch, predict_seed_style, predict_numpy, predict_loop]


def predict_wrong_side(distances, threshold):
    s = distances * (1 - torch.softmax(-distances, dim=1))
    min_s, pred = s.min(dim=1)
    return torch.where(min_s < threshold, torch.full_like(pred, distances.shape[1]), pred)


def predict_minus_one(distances, threshold):
    s = distances * (1 - torch.softmax(-distances, dim=1))
    min_s, pred = s.min(dim=1)
    return torch.where(min_s > threshold, torch.full_like(pred, -1), pred)


def predict_on_distances(distances, threshold):
    s = distances * (1 - torch.softmax(-distances, dim=1))
    pred = s.argmin(dim=1)
    return torch.where(distances.min(dim=1).values > threshold,
                       torch.full_like(pred, distances.shape[1]), pred)


def predict_softmax(distances, threshold):
    s = distances * (1 - torch.softmax(distances, dim=1))
    min_s, pred = s.min(dim=1)
    return torch.where(min_s > threshold, torch.full_like(pred, distances.shape[1]), pred)


def predict_no_threshold(distances, threshold):
    return (distances * (1 - torch.softmax(-distances, dim=1))).argmin(dim=1)


PREDICT_MISTAKES = [(predict_wrong_side, "wrong side"), (predict_minus_one, "not -1"),
                    (predict_on_distances, "min_j d_j"), (predict_softmax, "softmax instead"),
                    (predict_no_threshold, "threshold is missing")]

# ============================================================================ N+1 confusion


def confusion_sklearn(labels, predictions, num_classes):
    return confusion_matrix(np.asarray(labels), np.asarray(predictions),
                            labels=range(num_classes + 1))


def confusion_add_at(labels, predictions, num_classes):
    m = np.zeros((num_classes + 1, num_classes + 1), dtype=np.int64)
    np.add.at(m, (np.asarray(labels), np.asarray(predictions)), 1)
    return m


def confusion_loop(labels, predictions, num_classes):
    m = [[0] * (num_classes + 1) for _ in range(num_classes + 1)]
    for t, p in zip(labels.tolist(), predictions.tolist()):
        m[t][p] += 1
    return torch.tensor(m)


def confusion_bincount(labels, predictions, num_classes):
    k = num_classes + 1
    return torch.bincount(labels.long() * k + predictions.long(), minlength=k * k).reshape(k, k)


CONFUSION_CORRECT = [confusion_sklearn, confusion_add_at, confusion_loop, confusion_bincount]


def confusion_transposed(labels, predictions, num_classes):
    return confusion_sklearn(predictions, labels, num_classes)


def confusion_unknown_first(labels, predictions, num_classes):
    # unknown (N) as the first row and column: classes ordered N, 0, ..., N-1
    order = [num_classes] + list(range(num_classes))
    return confusion_matrix(np.asarray(labels), np.asarray(predictions), labels=order)


def confusion_known_only(labels, predictions, num_classes):
    return confusion_matrix(np.asarray(labels), np.asarray(predictions),
                            labels=range(num_classes))


CONFUSION_MISTAKES = [(confusion_transposed, "swapped"), (confusion_unknown_first, "LAST"),
                      (confusion_known_only, "one more row")]

# ============================================================================ self-checks

SELF_CHECKS = [
    (checks.check_cac_anchors, ANCHORS_CORRECT, ANCHORS_MISTAKES),
    (checks.check_anchor_distances, DIST_CORRECT, DIST_MISTAKES),
    (checks.check_cac_loss, LOSS_CORRECT, LOSS_MISTAKES),
    (checks.check_open_set_predict, PREDICT_CORRECT, PREDICT_MISTAKES),
    (checks.check_open_set_confusion, CONFUSION_CORRECT, CONFUSION_MISTAKES),
]
CORRECT = [(check, fn) for check, good, _ in SELF_CHECKS for fn in good]
MISTAKES = [(check, fn, words) for check, _, bad in SELF_CHECKS for fn, words in bad]


@pytest.mark.parametrize("check, fn", CORRECT, ids=lambda x: getattr(x, "__name__", ""))
def test_every_correct_variant_passes_its_self_check(check, fn, capsys):
    check(fn)
    assert "public checks passed" in capsys.readouterr().out


@pytest.mark.parametrize("check, fn, words", MISTAKES,
                         ids=lambda x: getattr(x, "__name__", "") if callable(x) else "")
def test_every_planted_mistake_fails_with_a_pointing_message(check, fn, words):
    with pytest.raises(AssertionError, match=words):
        check(fn)


# ============================================================================ graded check

# Each run trains the notebook's CAC stage with one combination of correct variants (every
# variant of anchors and distances appears once; the loss variants that differ most in
# rounding are spread over the runs). loss_loop is left out here: correct but slow in training.
RUNS = {
    "reference": (cac.class_anchors, cac.anchor_distances, cac.cac_loss),
    "mask-cdist-numpy": (anchors_numpy, dist_cdist, loss_one_hot_mask),
    "ce-seed-style": (anchors_seed_style, dist_seed_style, loss_cross_entropy),
    "paper-expanded-loop": (anchors_loop, dist_expanded_square, loss_paper_style),
}


@pytest.fixture(scope="module")
def pipeline():
    # both trainings (baseline, if not cached, and the CAC stage) run on one thread by design
    data = cac_experiment.cac_datasets("miniclip", seed=0)
    blob = cac_experiment.baseline_features(data, seed=0, profile="miniclip", progress=False)
    return data, blob


def _summary(pipeline, anchors_fn, dist_fn, loss_fn):
    data, blob = pipeline
    model, _ = cac_experiment.cac_on_features(
        blob, data.num_classes, seed=0, loss_fn=loss_fn,
        anchors=anchors_fn(data.num_classes, alpha=10.0), distance_fn=dist_fn, progress=False)
    dist = {s: cac_experiment.batched_forward(model, blob[f"{s}_feats"])
            for s in ("val", "test", "unknown")}
    return cac.open_set_summary(dist["val"], dist["test"], data.test_y, dist["unknown"]), dist


@pytest.fixture(scope="module")
def runs(pipeline):
    return {name: _summary(pipeline, *fns) for name, fns in RUNS.items()}


@pytest.mark.parametrize("name", list(RUNS))
def test_correct_variants_pass_the_graded_check(runs, name, capsys):
    summary, _ = runs[name]
    checks.check_cac_results(summary, "miniclip")
    out = capsys.readouterr().out
    assert "outside" not in out and "within tolerance" in out


def test_correct_variants_give_the_same_numbers(runs):
    """float64 training: rounding differences between correct variants do not add up."""
    ref = runs["reference"][0]
    for name, (summary, _) in runs.items():
        for key in ("auroc", "accuracy", "known_accepted_tpr", "unknown_rejected_tpr"):
            assert summary[key] == pytest.approx(ref[key], abs=0.02), (name, key)


@pytest.mark.parametrize("fn", PREDICT_CORRECT + CONFUSION_CORRECT, ids=lambda f: f.__name__)
def test_prediction_and_confusion_variants_agree_on_the_real_distances(runs, pipeline, fn):
    data, _ = pipeline
    summary, dist = runs["reference"]
    n = data.num_classes
    all_dist = torch.cat([dist["test"], dist["unknown"]])
    labels = torch.cat([data.test_y, torch.full((len(dist["unknown"]),), n)])
    threshold = -summary["threshold_tpr"]
    want_pred = cac.open_set_predict(all_dist, threshold=threshold)
    want = cac.open_set_confusion(labels, want_pred, n)
    if fn in PREDICT_CORRECT:
        got_pred = torch.as_tensor(np.asarray(fn(all_dist.clone(), threshold)))
        assert torch.equal(got_pred.long(), want_pred)
    else:
        got = np.asarray(fn(labels, want_pred, n))
        np.testing.assert_array_equal(got, want)
    # the N+1 matrix agrees with the 2 x 2 known/unknown table of the summary
    known_rows = want[:n].sum(0)
    assert known_rows[n] == summary["matrix_tpr"][0, 1]
    assert want[n, n] == summary["matrix_tpr"][1, 1]


def test_a_mistake_in_the_loss_also_moves_the_graded_numbers(pipeline):
    """Without the anchor term the known classes are not pulled onto their anchors."""
    summary, _ = _summary(pipeline, cac.class_anchors, cac.anchor_distances, loss_no_anchor_term)
    with pytest.raises(AssertionError, match="outside the expected"):
        checks.check_cac_results(summary, "miniclip")
