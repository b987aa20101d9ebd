"""Answer key of notebook 07 (CAC): correct variants pass, planted mistakes are caught.

For each exercise (anchors, distance layer, the network, CAC loss, training loop, open-set
prediction, threshold sweep, N+1 confusion matrix) a list of CORRECT implementations a student may write (torch and NumPy,
loops and vectorised, the seed project's own shapes of code, scikit-learn) and a list of
PLANTED MISTAKES, each with the words the self-check's message must contain (the threshold
sweep also through the graded ``check_threshold_sweep_results``). Every
correct variant passes its self-check; combinations of them, trained end to end through the
notebook's pipeline on the real miniclip data (cached baseline), pass the graded check
``check_cac_results``. Every mistake fails its self-check with a message that points at it.

The notebook prescribes the Euclidean distance ``||z - c_j||`` (not squared), as the paper and
the seed project (``torch.norm``).

Runtime: about two minutes on one thread (three end-to-end CAC trainings of about half a
minute of CPU each; the baseline CNN comes from the cache, trained once if missing).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import confusion_matrix

from ood_utils.methods import cac
from ood_utils.course import cac_experiment
from ood_utils.answer_key import checks

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

# ============================================================================ training loop
# Each loop calls the loss the way a notebook's loop calls cac_loss_exercise (here the answer
# key's loss_logsumexp, a correct variant).


def train_solution(model, loader, epochs, lr, lambda_):
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    total_steps = epochs * len(loader)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda k: 1 - k / total_steps)
    history = []
    model.train()
    for _ in range(epochs):
        total, count = 0.0, 0
        for x, y in loader:
            optimizer.zero_grad()
            loss = loss_logsumexp(model(x), y, lambda_=lambda_)
            loss.backward()
            optimizer.step()
            schedule.step()
            total += loss.item() * len(y)
            count += len(y)
        history.append(total / count)
    model.eval()
    return history


def train_seed_style(model, loader, epochs, lr, lambda_):
    # the seed project's train(): enumerate, zero_grad first, criterion(outputs, targets)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    # torch's linear schedule from factor 1 to 0 (computed recursively: rounding may differ)
    scheduler = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=1.0, end_factor=0.0,
                                                  total_iters=epochs * len(loader))
    criterion = loss_logsumexp
    model.train()
    history = []
    for epoch in range(epochs):
        losses = []
        for batch_idx, (inputs, targets) in enumerate(loader):
            optimizer.zero_grad()
            outputs = model(inputs)
            loss = criterion(outputs, targets, lambda_=lambda_)
            loss.backward()
            optimizer.step()
            scheduler.step()
            losses.append(loss.item())
        history.append(sum(losses) / len(losses))  # mean of the batch losses
    model.eval()
    return history


def train_zero_grad_after_step(model, loader, epochs, lr, lambda_):
    opt = torch.optim.Adam(params=list(model.parameters()), lr=lr)
    model.train(True)
    out, k, total_steps = [], 0, epochs * len(loader)
    for _ in range(epochs):
        running = []
        for x, y in loader:
            loss = loss_one_hot_mask(model(x), y, lambda_)
            loss.backward()
            for group in opt.param_groups:  # the schedule written by hand
                group["lr"] = lr * (1 - k / total_steps)
            k += 1
            opt.step()
            model.zero_grad(set_to_none=True)
            running.append(loss.detach() * len(y))
        out.append(float(torch.stack(running).sum()) / len(loader.images))
    model.train(False)
    return out


TRAIN_CORRECT = [train_solution, train_seed_style, train_zero_grad_after_step]


def _loop(model, loader, epochs, lr, lambda_, *, zero_grad=True, train_first=True, eval_last=True,
          per_epoch_opt=False, opt_cls=torch.optim.Adam, params=None, step=True, loss=None,
          record="mean", schedule="batch"):
    make = lambda: opt_cls(params(model) if params else model.parameters(), lr=lr)  # noqa: E731
    optimizer = make()
    history = []
    k, total_steps = 0, epochs * len(loader)
    if train_first:
        model.train()
    for epoch in range(epochs):
        if per_epoch_opt:
            optimizer = make()
        if schedule == "epoch":
            for group in optimizer.param_groups:
                group["lr"] = lr * (1 - epoch / epochs)
        total, count, last = 0.0, 0, 0.0
        for x, y in loader:
            if zero_grad:
                optimizer.zero_grad()
            d = model(x)
            value = loss(d, y) if loss else loss_logsumexp(d, y, lambda_=lambda_)
            value.backward()
            if schedule == "batch":
                for group in optimizer.param_groups:
                    group["lr"] = lr * (1 - k / total_steps)
                k += 1
            if step:
                optimizer.step()
            total += value.item() * len(y)
            count += len(y)
            last = value.item()
        history.append({"mean": total / count, "last": last}[record])
    if eval_last:
        model.eval()
    return history


def train_no_zero_grad(model, loader, epochs, lr, lambda_):
    return _loop(model, loader, epochs, lr, lambda_, zero_grad=False)


def train_no_train_mode(model, loader, epochs, lr, lambda_):
    return _loop(model, loader, epochs, lr, lambda_, train_first=False)


def train_left_in_train_mode(model, loader, epochs, lr, lambda_):
    return _loop(model, loader, epochs, lr, lambda_, eval_last=False)


def train_optimizer_per_epoch(model, loader, epochs, lr, lambda_):
    return _loop(model, loader, epochs, lr, lambda_, per_epoch_opt=True)


def train_hard_coded_lr(model, loader, epochs, lr, lambda_):
    return _loop(model, loader, epochs, 1e-3, lambda_)


def train_hard_coded_lambda(model, loader, epochs, lr, lambda_):
    return _loop(model, loader, epochs, lr, 0.1)


def train_sgd(model, loader, epochs, lr, lambda_):
    return _loop(model, loader, epochs, lr, lambda_, opt_cls=torch.optim.SGD)


def train_only_output_layer(model, loader, epochs, lr, lambda_):
    return _loop(model, loader, epochs, lr, lambda_, params=lambda m: m.cnn[-1].parameters())


def train_no_step(model, loader, epochs, lr, lambda_):
    return _loop(model, loader, epochs, lr, lambda_, step=False)


def train_cross_entropy(model, loader, epochs, lr, lambda_):
    return _loop(model, loader, epochs, lr, lambda_, loss=F.cross_entropy)


def train_last_batch_loss(model, loader, epochs, lr, lambda_):
    return _loop(model, loader, epochs, lr, lambda_, record="last")


def train_constant_lr(model, loader, epochs, lr, lambda_):
    return _loop(model, loader, epochs, lr, lambda_, schedule="none")


def train_schedule_per_epoch(model, loader, epochs, lr, lambda_):
    return _loop(model, loader, epochs, lr, lambda_, schedule="epoch")


def train_returns_none(model, loader, epochs, lr, lambda_):
    _loop(model, loader, epochs, lr, lambda_)


TRAIN_MISTAKES = [(train_no_zero_grad, "zero_grad"), (train_no_train_mode, r"model\.train\(\)"),
                  (train_left_in_train_mode, "left the model in training mode"),
                  (train_optimizer_per_epoch, "anew in every epoch"),
                  (train_hard_coded_lr, "learning rate is hard-coded"),
                  (train_hard_coded_lambda, "lambda_ is hard-coded"), (train_sgd, "SGD"),
                  (train_only_output_layer, "only the output layer"),
                  (train_no_step, "step"), (train_cross_entropy, "cross-entropy"),
                  (train_last_batch_loss, "LAST batch"), (train_returns_none, "returned None"),
                  (train_constant_lr, "stays constant"),
                  (train_schedule_per_epoch, "once per epoch")]

# ============================================================================ threshold sweep


def sweep_metrics(scores_val, scores_known, scores_unknown, tprs):
    from ood_utils.methods import metrics
    acc, rej = [], []
    for tpr in tprs:
        t = metrics.threshold_at_tpr(scores_val, tpr=tpr)
        acc.append(float((scores_known >= t).double().mean()) * 100)
        rej.append(float((scores_unknown < t).double().mean()) * 100)
    return acc, rej


def sweep_numpy_sort(scores_val, scores_known, scores_unknown, tprs):
    v = np.sort(np.asarray(scores_val))[::-1]
    k, u = np.asarray(scores_known), np.asarray(scores_unknown)
    thr = [v[max(1, int(np.ceil(t * len(v) - 1e-9))) - 1] for t in tprs]
    return (np.array([(k >= t).mean() * 100 for t in thr]),
            np.array([(u < t).mean() * 100 for t in thr]))


def sweep_torch_float32(scores_val, scores_known, scores_unknown, tprs):
    from ood_utils.methods import metrics
    out = torch.zeros(2, len(tprs))
    for i, tpr in enumerate(tprs):
        t = metrics.threshold_at_tpr(scores_val, tpr=tpr)
        out[0, i] = (scores_known >= t).float().mean() * 100
        out[1, i] = 100 - (scores_unknown >= t).float().mean() * 100
    return out[0], out[1]


SWEEP_CORRECT = [sweep_metrics, sweep_numpy_sort, sweep_torch_float32]


def sweep_fractions(sv, sk, su, tprs):
    a, r = sweep_metrics(sv, sk, su, tprs)
    return [x / 100 for x in a], [x / 100 for x in r]


def sweep_swapped(sv, sk, su, tprs):
    a, r = sweep_metrics(sv, sk, su, tprs)
    return r, a


def sweep_on_test(sv, sk, su, tprs):
    return sweep_metrics(sk, sk, su, tprs)


def sweep_strict(sv, sk, su, tprs):
    from ood_utils.methods import metrics
    acc, rej = [], []
    for tpr in tprs:
        t = metrics.threshold_at_tpr(sv, tpr=tpr)
        acc.append(float((sk > t).double().mean()) * 100)
        rej.append(float((su <= t).double().mean()) * 100)
    return acc, rej


def sweep_unknown_accepted(sv, sk, su, tprs):
    a, r = sweep_metrics(sv, sk, su, tprs)
    return a, [100 - x for x in r]


def sweep_one_minus_tpr(sv, sk, su, tprs):
    return sweep_metrics(sv, sk, su, [1 - t if t < 1 else t for t in tprs])


SWEEP_MISTAKES = [(sweep_fractions, "fractions"), (sweep_swapped, "swapped"),
                  (sweep_on_test, "TEST scores"), (sweep_strict, "'>' instead of '>='"),
                  (sweep_unknown_accepted, "ACCEPTED"), (sweep_one_minus_tpr, "1 - tpr")]

# ============================================================================ anchors / loss: new


def anchors_hard_coded_alpha(num_classes, alpha=10.0):
    return 10.0 * torch.eye(num_classes)


def loss_hard_coded_lambda(distances, targets, lambda_=0.1):
    return loss_logsumexp(distances, targets, 0.1)


def loss_squared_anchor_term(distances, targets, lambda_=0.1):
    d_y = distances.gather(1, targets[:, None])
    return (torch.logsumexp(d_y - distances, dim=1) + lambda_ * d_y[:, 0] ** 2).mean()


ANCHORS_MISTAKES.append((anchors_hard_coded_alpha, "alpha is hard-coded"))
LOSS_MISTAKES += [(loss_hard_coded_lambda, "lambda_ is hard-coded"),
                  (loss_squared_anchor_term, "d_y squared")]

# ============================================================================ the network

from torch import nn  # noqa: E402


class NetModules(cac_experiment.CACNetwork):
    """The notebook's solution (the answer key's reference class)."""


class NetSequential(nn.Module):
    # SmallCNN's layout: two nn.Sequential blocks with nn.Dropout modules; numpy anchors
    def __init__(self, num_classes, channels=(16, 16, 32), dropout=0.5, alpha=10.0, *,
                 anchors_fn=None, distance_fn=None):
        super().__init__()
        c1, c2, c3 = channels
        self.features = nn.Sequential(
            nn.Conv2d(1, c1, 5), nn.ReLU(), nn.Dropout(dropout),
            nn.Conv2d(c1, c2, 5), nn.AvgPool2d(2), nn.ReLU(), nn.Dropout(dropout),
            nn.Conv2d(c2, c3, 5), nn.AvgPool2d(2), nn.ReLU(), nn.Dropout(dropout), nn.Flatten())
        self.head = nn.Sequential(nn.Linear(c3 * 9, 256), nn.ReLU(), nn.Dropout(dropout),
                                  nn.Linear(256, num_classes))
        anchors = (anchors_fn or anchors_numpy)(num_classes, alpha=alpha)
        self.register_buffer("anchors", torch.as_tensor(np.asarray(anchors)).float())
        self.distance_fn = distance_fn or dist_broadcast

    def embed(self, x):
        return self.head(self.features(x))

    def forward(self, x):
        return self.distance_fn(self.embed(x), self.anchors)


class NetSeedStyle(nn.Module):
    # the seed project's CNN class: F.dropout(training=self.training), view(-1, ...), frozen
    # nn.Parameter anchors in float64
    def __init__(self, num_classes, channels=(16, 16, 32), dropout=0.5, alpha=10.0):
        super().__init__()
        c1, c2, c3 = channels
        self.c3, self.p = c3, dropout
        self.conv1 = nn.Conv2d(1, c1, kernel_size=5)
        self.conv2 = nn.Conv2d(c1, c2, kernel_size=5)
        self.conv3 = nn.Conv2d(c2, c3, kernel_size=5)
        self.fc1 = nn.Linear(3 * 3 * c3, 256)
        self.fc2 = nn.Linear(256, num_classes)
        self.anchors = nn.Parameter(anchors_seed_style(num_classes, alpha), requires_grad=False)

    def embed(self, x):
        x = F.dropout(F.relu(self.conv1(x)), p=self.p, training=self.training)
        x = F.dropout(F.relu(F.avg_pool2d(self.conv2(x), 2)), p=self.p, training=self.training)
        x = F.dropout(F.relu(F.avg_pool2d(self.conv3(x), 2)), p=self.p, training=self.training)
        x = F.relu(self.fc1(x.view(-1, 3 * 3 * self.c3)))
        return self.fc2(F.dropout(x, p=self.p, training=self.training))

    def forward(self, x):
        return dist_seed_style(self.embed(x), self.anchors)


NETWORK_CORRECT = [NetModules, NetSequential, NetSeedStyle]


def _embed_with(pool, relu_first=False, first_dropout=True, eval_dropout=False):
    def embed(self, x):
        def block(x, conv, pooled):
            x = conv(x)
            if pooled and not relu_first:
                x = pool(x, 2)
            x = F.relu(x)
            if pooled and relu_first:
                x = pool(x, 2)
            return x
        x = block(x, self.conv1, False)
        if first_dropout:
            x = F.dropout(x, self.dropout.p, training=True) if eval_dropout else self.dropout(x)
        x = self.dropout(block(x, self.conv2, True))
        x = self.dropout(block(x, self.conv3, True))
        x = self.dropout(F.relu(self.hidden(x.flatten(1))))
        return self.logits(x)
    return embed


class NetMaxPool(NetModules):
    embed = _embed_with(F.max_pool2d)


class NetReluBeforePool(NetModules):
    embed = _embed_with(F.avg_pool2d, relu_first=True)


class NetMissingDropout(NetModules):
    embed = _embed_with(F.avg_pool2d, first_dropout=False)


class NetDropoutInEval(NetModules):
    embed = _embed_with(F.avg_pool2d, eval_dropout=True)


class NetExtraLayer(NetModules):
    def __init__(self, num_classes, channels=(16, 16, 32), dropout=0.5, alpha=10.0):
        super().__init__(num_classes, channels, dropout, alpha)
        self.to_anchor_space = nn.Linear(num_classes, num_classes)

    def embed(self, x):
        return self.to_anchor_space(super().embed(x))


class NetNoHidden(nn.Module):
    def __init__(self, num_classes, channels=(16, 16, 32), dropout=0.5, alpha=10.0):
        super().__init__()
        c1, c2, c3 = channels
        self.conv1 = nn.Conv2d(1, c1, 5)
        self.conv2 = nn.Conv2d(c1, c2, 5)
        self.conv3 = nn.Conv2d(c2, c3, 5)
        self.out = nn.Linear(c3 * 9, num_classes)
        self.register_buffer("anchors", cac.class_anchors(num_classes, alpha=alpha))

    def embed(self, x):
        x = F.relu(F.avg_pool2d(self.conv3(F.relu(F.avg_pool2d(self.conv2(F.relu(
            self.conv1(x))), 2))), 2))
        return self.out(x.flatten(1))

    def forward(self, x):
        return cac.anchor_distances(self.embed(x), self.anchors)


class NetTrainableAnchors(NetModules):
    def __init__(self, num_classes, channels=(16, 16, 32), dropout=0.5, alpha=10.0):
        super().__init__(num_classes, channels, dropout, alpha)
        anchors = self.anchors
        del self.anchors
        self.anchors = nn.Parameter(anchors.clone())


class NetPlainAttribute(NetModules):
    def __init__(self, num_classes, channels=(16, 16, 32), dropout=0.5, alpha=10.0):
        super().__init__(num_classes, channels, dropout, alpha)
        anchors = self.anchors
        del self.anchors
        self.anchors = anchors.clone()


class NetHardCodedAlpha(NetModules):
    def __init__(self, num_classes, channels=(16, 16, 32), dropout=0.5, alpha=10.0):
        super().__init__(num_classes, channels, dropout, 10.0)


class NetReturnsLogits(NetModules):
    def forward(self, x):
        return self.embed(x)


class NetOtherOrder(NetModules):
    def __init__(self, num_classes, channels=(16, 16, 32), dropout=0.5, alpha=10.0):
        super().__init__(num_classes, channels, dropout, alpha)
        c1, c2, c3 = channels
        # the output layer created first: same shapes, another random start
        self.logits = nn.Linear(256, num_classes)
        self.hidden = nn.Linear(c3 * 9, 256)


NETWORK_MISTAKES = [(NetMaxPool, "max pooling"), (NetReluBeforePool, "ReLU before the pooling"),
                    (NetMissingDropout, "dropout"), (NetDropoutInEval, "dropout is still on"),
                    (NetExtraLayer, "extra N x N"), (NetNoHidden, "hidden layer is missing"),
                    (NetTrainableAnchors, "trainable parameter"),
                    (NetPlainAttribute, "plain attribute"), (NetHardCodedAlpha, "alpha is hard-coded"),
                    (NetReturnsLogits, "returns the logits"), (NetOtherOrder, "initial weights")]

# ============================================================================ self-checks

SELF_CHECKS = [
    (checks.check_cac_anchors, ANCHORS_CORRECT, ANCHORS_MISTAKES),
    (checks.check_anchor_distances, DIST_CORRECT, DIST_MISTAKES),
    (checks.check_cac_loss, LOSS_CORRECT, LOSS_MISTAKES),
    (checks.check_open_set_predict, PREDICT_CORRECT, PREDICT_MISTAKES),
    (checks.check_open_set_confusion, CONFUSION_CORRECT, CONFUSION_MISTAKES),
    (checks.check_cac_network, NETWORK_CORRECT, NETWORK_MISTAKES),
    (checks.check_cac_training, TRAIN_CORRECT, TRAIN_MISTAKES),
    (checks.check_threshold_sweep, SWEEP_CORRECT, SWEEP_MISTAKES),
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

# Each run trains the notebook's CAC network end to end (seed 0, as the notebook) with one
# combination of correct variants; "reference" is the answer key's own code. A run takes
# about half a minute of CPU (one thread).
def _sequential_cdist(n, **kw):
    return NetSequential(n, **kw, anchors_fn=anchors_numpy, distance_fn=dist_cdist)


RUNS = {
    "reference": (cac.class_anchors, cac.anchor_distances, cac.cac_loss, None,
                  cac_experiment.CACNetwork),
    "sequential-numpy-cdist-mask-zero-grad-after-step": (
        anchors_numpy, dist_cdist, loss_one_hot_mask, train_zero_grad_after_step,
        _sequential_cdist),
}


@pytest.fixture(scope="module")
def pipeline():
    # both trainings (the baseline, if not cached, and the CAC network) run on one thread
    data = cac_experiment.cac_datasets("miniclip", seed=0)
    blob = cac_experiment.train_baseline(data, seed=0, profile="miniclip", progress=False)
    return data, blob


def _summary(pipeline, anchors_fn, dist_fn, loss_fn, train_fn, build_fn=None):
    data, blob = pipeline
    if train_fn is None:  # the reference loop with the variant's loss
        def train_fn(m, ld, e, lr, lm):
            return cac_experiment.train_cac_whole(m, ld, e, lr, lm, loss_fn)
    model, _ = cac_experiment.train_open_set(
        data, seed=0, profile="miniclip", train_fn=train_fn, loss_fn=loss_fn,
        anchors=torch.as_tensor(np.asarray(anchors_fn(data.num_classes, alpha=10.0))),
        distance_fn=dist_fn, baseline=blob, build_fn=build_fn)
    dist = cac_experiment.open_set_distances(model, data)
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


@pytest.mark.parametrize("fn", SWEEP_CORRECT, ids=lambda f: f.__name__)
def test_sweep_variants_pass_the_graded_sweep_check(runs, fn, capsys):
    _, dist = runs["reference"]
    tprs = [0.5, 0.8, 0.9, 0.95, 0.99]
    scores = [cac.cac_known_scores(dist[s]) for s in ("val", "test", "unknown")]
    acc, rej = fn(*scores, tprs)
    checks.check_threshold_sweep_results(tprs, acc, rej, dist["val"], dist["test"],
                                         dist["unknown"])
    assert "agree with the reference" in capsys.readouterr().out


@pytest.mark.parametrize("fn, words", [(sweep_swapped, "differs from the reference"),
                                       (sweep_on_test, "differs from the reference")],
                         ids=["swapped", "on-test"])
def test_sweep_mistakes_fail_the_graded_sweep_check(runs, fn, words):
    _, dist = runs["reference"]
    tprs = [0.5, 0.8, 0.9, 0.95, 0.99]
    scores = [cac.cac_known_scores(dist[s]) for s in ("val", "test", "unknown")]
    acc, rej = fn(*scores, tprs)
    with pytest.raises(AssertionError, match=words):
        checks.check_threshold_sweep_results(tprs, acc, rej, dist["val"], dist["test"],
                                             dist["unknown"])


def test_a_sweep_without_enough_targets_is_refused(runs):
    _, dist = runs["reference"]
    with pytest.raises(AssertionError, match="at least five"):
        checks.check_threshold_sweep_results([0.9, 0.95], [1, 2], [3, 4], dist["val"],
                                             dist["test"], dist["unknown"])


def test_a_mistake_in_the_training_also_moves_the_graded_numbers(pipeline):
    """With the exponent flipped the network learns to move away from its own anchor."""
    summary, _ = _summary(pipeline, cac.class_anchors, cac.anchor_distances, loss_flipped, None)
    with pytest.raises(AssertionError, match="outside the expected"):
        checks.check_cac_results(summary, "miniclip")
