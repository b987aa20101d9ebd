"""Honest alternatives: other correct ways to write the exercises (other libraries, other
algorithms). They must get full marks, like the instructor's solution."""
from __future__ import annotations

from ._build import Sub, body


def subs() -> list[Sub]:
    return [
        Sub("honest_sklearn_argpartition", "02_knn", "honest",
            "kNN with scikit-learn's NearestNeighbors (cosine); the sweep with NumPy "
            "argpartition on float64",
            cells={"knn_exercise": body('''
                from sklearn.neighbors import NearestNeighbors
                index = NearestNeighbors(n_neighbors=k, metric="cosine", algorithm="brute")
                index.fit(np.asarray(train_feats, dtype=np.float64))
                distance, _ = index.kneighbors(np.asarray(test_feats, dtype=np.float64))
                scores = torch.as_tensor(1.0 - distance[:, k - 1])'''),
                   "knn_sweep_exercise": body('''
                bank = np.asarray(train_feats, dtype=np.float64)
                bank /= np.linalg.norm(bank, axis=1, keepdims=True)
                kmax = max(ks)
                tops = []
                for queries in (test_in, test_out):
                    q = np.asarray(queries, dtype=np.float64)
                    q = q / np.linalg.norm(q, axis=1, keepdims=True)
                    rows = []
                    for s in range(0, len(q), chunk_size):
                        sim = q[s:s + chunk_size] @ bank.T
                        part = -np.partition(-sim, kmax - 1, axis=1)[:, :kmax]
                        rows.append(-np.sort(-part, axis=1))
                    tops.append(np.concatenate(rows))
                auroc_by_k = {k: metrics.auroc(tops[0][:, k - 1], tops[1][:, k - 1]) for k in ks}''')}),
        Sub("honest_cdist_loop", "02_knn", "honest",
            "kNN from torch.cdist on unit vectors (cosine = 1 - d^2 / 2) and kthvalue; the "
            "sweep one k at a time with einsum",
            cells={"knn_exercise": body('''
                train_unit = F.normalize(train_feats.double(), dim=1)
                test_unit = F.normalize(test_feats.double(), dim=1)
                out = []
                for first in range(0, len(test_unit), chunk_size):
                    d = torch.cdist(test_unit[first:first + chunk_size], train_unit)
                    out.append(1.0 - torch.kthvalue(d, k, dim=1).values ** 2 / 2)
                scores = torch.cat(out)'''),
                   "knn_sweep_exercise": body('''
                bank = F.normalize(train_feats.float(), dim=1)
                def kth(queries, k):
                    q = F.normalize(queries.float(), dim=1)
                    return torch.cat([torch.einsum("nd,md->nm", q[s:s + chunk_size], bank).topk(k, dim=1).values[:, -1]
                                      for s in range(0, len(q), chunk_size)])
                auroc_by_k = {}
                for k in ks:
                    auroc_by_k[k] = metrics.auroc(kth(test_in, k), kth(test_out, k))''')}),
        Sub("honest_scipy_solve", "05_mahalanobis", "honest",
            "statistics by hand in NumPy; Mahalanobis with scipy.linalg.pinvh and einsum; "
            "the shrinkage sweep with scipy.linalg.solve",
            cells={"maha_stats_exercise": body('''
                x = np.asarray(train_feats, dtype=np.float64)
                y = np.asarray(train_labels)
                mus, cov, n = [], 0.0, 0
                for c in np.unique(y):
                    g = x[y == c]
                    if len(g) < 2:
                        continue
                    mu = g.mean(axis=0)
                    cov = cov + (g - mu).T @ (g - mu) / (len(g) - 1)
                    mus.append(mu)
                    n += 1
                means, shared_cov = torch.as_tensor(np.array(mus)), torch.as_tensor(cov / n)'''),
                   "maha_exercise": body('''
                import scipy.linalg
                means, cov = (t.numpy() for t in class_statistics_exercise(train_feats, train_labels))
                train = np.asarray(train_feats, dtype=np.float64)
                test = np.asarray(test_feats, dtype=np.float64)
                prec = scipy.linalg.pinvh(cov)
                d2 = np.stack([np.einsum("md,de,me->m", test - mu, prec, test - mu) for mu in means], axis=1)
                if relative:
                    mu0 = train.mean(axis=0)
                    prec0 = scipy.linalg.pinvh(np.cov(train, rowvar=False))
                    d2 = d2 - np.einsum("md,de,me->m", test - mu0, prec0, test - mu0)[:, None]
                scores = torch.as_tensor(-d2.min(axis=1))'''),
                   "maha_sweep_exercise": body('''
                import scipy.linalg
                means, cov = (t.numpy() for t in class_statistics_exercise(train_feats, train_labels))
                d = cov.shape[0]
                def md(x, sigma):
                    x = np.asarray(x, dtype=np.float64)
                    best = None
                    for mu in means:
                        diff = x - mu
                        d2 = (diff * scipy.linalg.solve(sigma, diff.T, assume_a="pos").T).sum(axis=1)
                        best = d2 if best is None else np.minimum(best, d2)
                    return -best
                aurocs = {}
                for alpha in alphas:
                    sigma = (1 - alpha) * cov + alpha * np.trace(cov) / d * np.eye(d)
                    aurocs[alpha] = metrics.auroc(md(id_feats, sigma), md(ood_feats, sigma))''')}),
        Sub("honest_sklearn_covariance", "05_mahalanobis", "honest",
            "class statistics with scikit-learn's EmpiricalCovariance (rescaled to the unbiased "
            "estimate); Mahalanobis with torch.linalg.solve per class",
            cells={"maha_stats_exercise": body('''
                from sklearn.covariance import EmpiricalCovariance
                x = train_feats.double().numpy()
                y = train_labels.numpy()
                mus, covs = [], []
                for c in np.unique(y):
                    g = x[y == c]
                    if len(g) > 1:
                        est = EmpiricalCovariance(assume_centered=False).fit(g)
                        mus.append(est.location_)
                        covs.append(est.covariance_ * len(g) / (len(g) - 1))
                means = torch.as_tensor(np.array(mus))
                shared_cov = torch.as_tensor(np.mean(covs, axis=0))'''),
                   "maha_exercise": body('''
                means, shared_cov = class_statistics_exercise(train_feats, train_labels)
                train, test = train_feats.double(), test_feats.double()
                d2 = torch.stack([((test - mu) * torch.linalg.lstsq(shared_cov, (test - mu).T).solution.T).sum(dim=1)
                                  for mu in means], dim=1)
                if relative:
                    c0 = test - train.mean(dim=0)
                    cov0 = torch.cov(train.T)
                    d2 = d2 - (c0 * torch.linalg.lstsq(cov0, c0.T).solution.T).sum(dim=1, keepdim=True)
                scores = -d2.min(dim=1).values''')}),
        Sub("honest_cac_variants", "07_cac_osr", "honest",
            "anchors from torch.diag; distances with torch.cdist; prediction by an explicit "
            "softmin; the sweep's thresholds from a sorted NumPy array; the confusion matrix "
            "counted with np.add.at",
            cells={"cac_anchors_exercise": body('''
                anchors = torch.diag(torch.full((num_classes,), float(alpha), dtype=torch.float64))'''),
                   "cac_distances_exercise": body('''
                distances = torch.cdist(points, anchors.to(points.dtype))'''),
                   "cac_predict_exercise": body('''
                e = torch.exp(-(distances - distances.min(dim=1, keepdim=True).values))
                softmin = e / e.sum(dim=1, keepdim=True)
                s = distances * (1 - softmin)
                min_s, predicted = s.min(dim=1)
                predicted[min_s > threshold] = distances.shape[1]'''),
                   "cac_sweep_exercise": body('''
                known_accepted, unknown_rejected = [], []
                val = np.sort(np.asarray(scores_val, dtype=np.float64))[::-1]
                known = np.asarray(scores_known, dtype=np.float64)
                unknown = np.asarray(scores_unknown, dtype=np.float64)
                for tpr in tprs:
                    need = max(1, int(np.ceil(tpr * len(val) - 1e-9)))
                    threshold = val[need - 1]
                    known_accepted.append(100.0 * np.mean(known >= threshold))
                    unknown_rejected.append(100.0 * np.mean(unknown < threshold))'''),
                   "cac_confusion_exercise": body('''
                matrix = np.zeros((num_classes + 1, num_classes + 1), dtype=np.int64)
                np.add.at(matrix, (np.asarray(labels), np.asarray(predictions)), 1)''')}),
    ]
