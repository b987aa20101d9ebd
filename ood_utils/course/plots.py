"""Plots shared by the notebooks: score histograms, ROC curves, confusion matrices, image grids,
the highest-scored OOD and lowest-scored ID images (:func:`ranked_images`).

Every function draws on ``ax`` when given (so plots can share a figure) or on a new figure,
and returns the axes (or the figure for :func:`image_grid`). Scores follow the course
convention "higher = more in-distribution".
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np

from ..methods import metrics
from ..methods._arrays import check_array, score_vector, to_numpy


def _axes(ax, figsize=(6, 4)):
    if ax is None:
        _, ax = plt.subplots(figsize=figsize)
    return ax


def score_histograms(score_in: Any, score_out: Any, title: str = "", ax=None, bins: int = 60,
                     labels: tuple[str, str] = ("ID test", "OOD test")):
    """Overlaid, density-normalised histograms of ID and OOD scores, AUROC in the legend title.

    Parameters
    ----------
    score_in, score_out : array or tensor, shape (N_in,) and (N_out,)
    title : axes title.
    ax : matplotlib axes to draw on (default: a new figure).
    bins : number of shared bins.
    labels : legend entries of the two histograms.

    Returns
    -------
    matplotlib axes
    """
    s_in, s_out = score_vector(score_in, "score_in"), score_vector(score_out, "score_out")
    ax = _axes(ax)
    lo, hi = min(s_in.min(), s_out.min()), max(s_in.max(), s_out.max())
    if hi <= lo:
        hi = lo + 1.0
    edges = np.linspace(lo, hi, bins + 1)
    ax.hist(s_in, bins=edges, density=True, alpha=0.55, label=f"{labels[0]} (n={len(s_in)})",
            color="tab:blue")
    ax.hist(s_out, bins=edges, density=True, alpha=0.55, label=f"{labels[1]} (n={len(s_out)})",
            color="tab:red")
    ax.set_xlabel("score (higher = more in-distribution)")
    ax.set_ylabel("density")
    ax.legend(title=f"AUROC {metrics.auroc(s_in, s_out):.2f}", fontsize="small")
    if title:
        ax.set_title(title)
    return ax


def roc_curves(curves: Mapping[str, tuple[Any, Any]], ax=None, title: str = "ROC curves"):
    """ROC curves (ID positive) of several methods on one axes, with FPR@95TPR marked.

    A dotted horizontal line marks TPR = 95 % (95 % of the ID images accepted); on every
    curve a dot marks where it crosses that line, i.e. its FPR@95TPR
    (:func:`ood_utils.methods.metrics.fpr_at_95_tpr`), which the legend lists next to the AUROC.

    Parameters
    ----------
    curves : ``{name: (score_in, score_out)}``.
    ax : matplotlib axes (default: a new figure).
    title : axes title.

    Returns
    -------
    matplotlib axes
    """
    if not curves:
        raise ValueError("curves is empty; pass {name: (score_in, score_out)} for at least one method")
    ax = _axes(ax, figsize=(5.5, 5))
    ax.axhline(0.95, ls=":", color="grey", lw=1, label="TPR = 95 %")
    for name, pair in curves.items():
        if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
            raise ValueError(f"curves[{name!r}] must be a pair (score_in, score_out)")
        s_in, s_out = score_vector(pair[0], f"{name} score_in"), score_vector(pair[1], f"{name} score_out")
        fpr, tpr = metrics.roc_curve(s_in, s_out)
        fpr95 = metrics.fpr_at_95_tpr(s_in, s_out)
        line, = ax.plot(fpr, tpr, lw=1.5, label=f"{name} (AUROC {metrics.auroc(s_in, s_out):.1f}, "
                                                 f"FPR@95TPR {fpr95:.1f})")
        ax.plot([fpr95 / 100], [0.95], "o", color=line.get_color(), ms=6, mec="black", mew=0.6)
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="chance (50.0)")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("false positive rate (OOD accepted)")
    ax.set_ylabel("true positive rate (ID accepted)")
    ax.set_title(title)
    ax.legend(fontsize="small", loc="lower right")
    return ax


def _image_at(images: Any, i: int) -> np.ndarray:
    """Image ``i`` of an array, tensor or dataset (``(image, label)`` items) as numpy."""
    item = images[int(i)]
    if isinstance(item, tuple):
        item = item[0]
    if hasattr(item, "detach"):
        item = item.detach().cpu().numpy()
    return np.asarray(item)  # also PIL images


def ranked_images(score_in: Any, score_out: Any, images_in: Any, images_out: Any, n: int = 8,
                  names_in: Sequence[str] | None = None, names_out: Sequence[str] | None = None,
                  size: float = 1.6, title: str = ""):
    """The OOD images a score finds most in-distribution and the ID images it finds least.

    Top row: the ``n`` OOD test images with the HIGHEST scores (the worst false accepts);
    bottom row: the ``n`` ID test images with the LOWEST scores (the worst false rejects).
    Each title gives the score and, when names are given, the image's class.

    Parameters
    ----------
    score_in, score_out : array or tensor, shape (N_in,) and (N_out,); higher = more ID.
    images_in, images_out : the images in the order of the scores: an array or tensor
        (N, H, W), (N, H, W, C) or (N, C, H, W), or anything indexable by position that
        returns an image or an ``(image, label)`` pair (e.g. a torch ``Dataset``).
    n : images per row.
    names_in, names_out : optional class name of every image (length N_in / N_out).
    size : inches per image.
    title : figure title.

    Returns
    -------
    matplotlib figure
    """
    s_in, s_out = score_vector(score_in, "score_in"), score_vector(score_out, "score_out")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    for what, imgs, scores in (("images_in", images_in, s_in), ("images_out", images_out, s_out)):
        if len(imgs) != len(scores):
            raise ValueError(f"{what} has {len(imgs)} images but there are {len(scores)} "
                             f"scores; pass the images in the order of the scores")
    for what, names, scores in (("names_in", names_in, s_in), ("names_out", names_out, s_out)):
        if names is not None and len(names) != len(scores):
            raise ValueError(f"{what} has {len(names)} entries but there are {len(scores)} scores")
    top_out = np.argsort(-s_out, kind="stable")[:n]
    low_in = np.argsort(s_in, kind="stable")[:n]
    rows = [("OOD, highest scores", images_out, s_out, names_out, top_out),
            ("ID, lowest scores", images_in, s_in, names_in, low_in)]
    ncols = max(len(top_out), len(low_in))
    fig, axes = plt.subplots(2, ncols, figsize=(size * ncols, 2 * size + 0.9), squeeze=False)
    for r, (label, imgs, scores, names, idx) in enumerate(rows):
        for j, ax in enumerate(axes[r]):
            ax.axis("off")
            if j >= len(idx):
                continue
            img = _image_at(imgs, idx[j])
            if img.ndim == 3 and img.shape[0] in (1, 3) and img.shape[-1] not in (1, 3):
                img = img.transpose(1, 2, 0)
            if img.ndim == 3 and img.shape[-1] == 1:
                img = img[..., 0]
            if img.dtype.kind == "f":
                lo, hi = float(img.min()), float(img.max())
                img = (img - lo) / (hi - lo) if hi > lo else np.zeros_like(img)
            ax.imshow(img, cmap="gray" if img.ndim == 2 else None)
            text = f"{scores[idx[j]]:.3g}"
            if names is not None:
                text = f"{names[idx[j]]}\n{text}"
            ax.set_title(text, fontsize="small")
        axes[r][0].text(-0.15, 0.5, label, transform=axes[r][0].transAxes, rotation=90,
                        ha="right", va="center", fontsize="small")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def confusion_matrix_plot(cm: Any, labels: Sequence[str], title: str = "", ax=None,
                          normalize: bool = False, cmap: str = "Blues"):
    """Draw a confusion matrix (rows = true class, columns = prediction) with counts in cells.

    Parameters
    ----------
    cm : array or tensor, shape (C, C), counts.
    labels : C class names, in the order of the rows.
    title : axes title.
    ax : matplotlib axes (default: a new figure).
    normalize : show row fractions instead of counts.

    Returns
    -------
    matplotlib axes
    """
    check_array(cm, "cm", ndim=2)
    m = np.asarray(to_numpy(cm, "cm"), dtype=np.float64)
    if m.shape[0] != m.shape[1]:
        raise ValueError(f"cm must be square (C, C), got shape {m.shape}")
    if len(labels) != m.shape[0]:
        raise ValueError(f"labels has {len(labels)} names but cm has {m.shape[0]} rows")
    if normalize:
        m = m / np.maximum(m.sum(axis=1, keepdims=True), 1)
    size = max(4.0, 0.55 * len(labels) + 2)
    ax = _axes(ax, figsize=(size, size))
    im = ax.imshow(m, cmap=cmap)
    ax.figure.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    ticks = np.arange(len(labels))
    ax.set_xticks(ticks, labels=list(labels), rotation=45, ha="right")
    ax.set_yticks(ticks, labels=list(labels))
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if len(labels) <= 20:
        thresh = m.max() / 2 if m.size else 0
        for i in range(m.shape[0]):
            for j in range(m.shape[1]):
                text = f"{m[i, j]:.2f}" if normalize else f"{int(round(m[i, j]))}"
                ax.text(j, i, text, ha="center", va="center", fontsize="small",
                        color="white" if m[i, j] > thresh else "black")
    if title:
        ax.set_title(title)
    return ax


def image_grid(images: Any, titles: Sequence[str] | None = None, ncols: int = 8,
               cmap: str | None = None, size: float = 1.6):
    """Show images in a grid with optional titles.

    Parameters
    ----------
    images : array or tensor, (N, H, W) grey, (N, H, W, 3) or (N, 3, H, W) colour; uint8 or
        float (floats are rescaled to [0, 1] per image for display).
    titles : N strings, or ``None``.
    ncols : images per row.
    cmap : colour map for grey images (default ``"gray"``).
    size : inches per image.

    Returns
    -------
    matplotlib figure
    """
    arr = np.asarray(to_numpy(images, "images"))
    if arr.ndim not in (3, 4) or len(arr) == 0:
        raise ValueError(f"images must have shape (N, H, W) or (N, H, W, C)/(N, C, H, W) with "
                         f"N >= 1, got {arr.shape}")
    if arr.ndim == 4 and arr.shape[1] in (1, 3) and arr.shape[-1] not in (1, 3):
        arr = arr.transpose(0, 2, 3, 1)  # channels first -> last
    if arr.ndim == 4 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if titles is not None and len(titles) != len(arr):
        raise ValueError(f"titles has {len(titles)} entries but there are {len(arr)} images")
    if ncols < 1:
        raise ValueError(f"ncols must be >= 1, got {ncols}")
    n = len(arr)
    ncols = min(ncols, n)
    nrows = int(np.ceil(n / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows + 0.3 * nrows),
                             squeeze=False)
    for k, ax in enumerate(axes.flat):
        ax.axis("off")
        if k >= n:
            continue
        img = arr[k]
        if img.dtype.kind == "f":
            lo, hi = float(img.min()), float(img.max())
            img = (img - lo) / (hi - lo) if hi > lo else np.zeros_like(img)
        ax.imshow(img, cmap=cmap or ("gray" if img.ndim == 2 else None))
        if titles is not None:
            ax.set_title(str(titles[k]), fontsize="small")
    fig.tight_layout()
    return fig


def auroc_bars(values: Mapping[str, float], expected: Mapping[str, float] | None = None,
               ax=None, title: str = "AUROC per method"):
    """Horizontal bars of AUROC (percent) per method, with expected values as markers.

    Parameters
    ----------
    values : ``{name: auroc}`` of the recorded methods.
    expected : optional ``{name: expected auroc}``; drawn as black ticks.
    ax : matplotlib axes (default: a new figure).

    Returns
    -------
    matplotlib axes
    """
    if not values:
        raise ValueError("values is empty: record at least one method first")
    names = list(values)
    ax = _axes(ax, figsize=(7, 0.4 * len(names) + 1.2))
    y = np.arange(len(names))
    ax.barh(y, [values[n] for n in names], color="tab:blue", alpha=0.8, label="measured")
    if expected:
        pts = [(i, expected[n]) for i, n in enumerate(names) if expected.get(n) is not None]
        if pts:
            ax.scatter([v for _, v in pts], [i for i, _ in pts], marker="|", s=250, color="black",
                       label="expected", zorder=3)
    ax.axvline(50, color="grey", ls="--", lw=1)
    ax.set_yticks(y, labels=names)
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    ax.set_xlabel("AUROC (%)")
    ax.set_title(title)
    ax.legend(fontsize="small", loc="lower right")
    return ax


def anchor_space_plot(points_known: Any, labels_known: Any, points_unknown: Any, anchors: Any,
                      class_names: Sequence[str], ax=None, title: str = "CAC anchor space",
                      max_points: int = 1500, seed: int = 0):
    """2-D picture of CAC's anchor space: known points by class, unknown points, the anchors.

    The ``N``-dimensional points are projected linearly with the matrix whose column ``j`` is
    ``(cos 2 pi j / N, sin 2 pi j / N)``: anchor ``alpha * e_j`` lands on a circle of radius
    ``alpha`` at angle ``2 pi j / N``, so a point near anchor ``j`` lands near it. The map
    keeps nearness to an anchor but not every distance (points far from all anchors can land
    anywhere, often near the middle).

    Parameters
    ----------
    points_known : array or tensor, shape (n_known, N); points ``z`` of known images.
    labels_known : shape (n_known,), their classes ``0..N-1``.
    points_unknown : shape (n_unknown, N).
    anchors : shape (N, N), one anchor per row.
    class_names : N names.
    ax : matplotlib axes (default: a new figure).
    max_points : at most this many points of each group are drawn (seeded random subset).

    Returns
    -------
    matplotlib axes
    """
    zk = np.asarray(to_numpy(points_known, "points_known"), dtype=np.float64)
    yk = np.asarray(to_numpy(labels_known, "labels_known")).astype(np.int64)
    zu = np.asarray(to_numpy(points_unknown, "points_unknown"), dtype=np.float64)
    a = np.asarray(to_numpy(anchors, "anchors"), dtype=np.float64)
    n = a.shape[0]
    if zk.ndim != 2 or zk.shape[1] != n or zu.ndim != 2 or zu.shape[1] != n:
        raise ValueError(f"points must have shape (n, {n}) like the anchors, got "
                         f"{zk.shape} and {zu.shape}")
    if len(class_names) != n:
        raise ValueError(f"class_names must have {n} entries, got {len(class_names)}")
    angles = 2 * np.pi * np.arange(n) / n
    proj = np.stack([np.cos(angles), np.sin(angles)], axis=1)  # (N, 2)
    rng = np.random.default_rng(seed)
    pick_k = rng.permutation(len(zk))[:max_points]
    pick_u = rng.permutation(len(zu))[:max_points]
    ax = _axes(ax, figsize=(7, 7))
    colours = plt.get_cmap("tab10")
    pk, pu, pa = zk[pick_k] @ proj, zu[pick_u] @ proj, a @ proj
    ax.scatter(pu[:, 0], pu[:, 1], s=6, c="0.25", alpha=0.35, marker="x",
               label="unknown (test)")
    for j in range(n):
        m = yk[pick_k] == j
        ax.scatter(pk[m, 0], pk[m, 1], s=6, color=colours(j % 10), alpha=0.5)
    for j in range(n):
        ax.scatter(pa[j, 0], pa[j, 1], s=260, marker="*", color=colours(j % 10),
                   edgecolor="k", linewidth=1.2, zorder=5,
                   label=f"anchor of {class_names[j]}")
    ax.set_aspect("equal")
    ax.set_title(title)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, markerscale=0.8)
    return ax


def ranking_slopes(left: Mapping[str, float], right: Mapping[str, float],
                   titles: tuple[str, str] = ("left", "right"), ax=None,
                   title: str = "Ranking of the methods"):
    """Bump chart: each method's rank by AUROC in two settings, joined by a line.

    Methods present in both mappings are drawn, best at the top; a line that crosses others is
    a method whose rank changes between the settings. Each end is labelled with the method,
    its rank and its AUROC.

    Parameters
    ----------
    left, right : ``{method name: AUROC in percent}``.
    titles : names of the two settings (drawn under the two columns).
    ax : matplotlib axes (default: a new figure).

    Returns
    -------
    matplotlib axes
    """
    names = [k for k in left if k in right]
    if not names:
        raise ValueError("left and right share no method name")
    ax = _axes(ax, figsize=(9, 0.45 * len(names) + 1.5))
    rank_l = {k: i + 1 for i, k in enumerate(sorted(names, key=lambda k: -left[k]))}
    rank_r = {k: i + 1 for i, k in enumerate(sorted(names, key=lambda k: -right[k]))}
    colours = plt.get_cmap("tab20")
    for i, k in enumerate(names):
        c = colours(i % 20)
        ax.plot([0, 1], [rank_l[k], rank_r[k]], "-o", color=c, lw=2)
        ax.text(-0.04, rank_l[k], f"{k}  #{rank_l[k]} ({left[k]:.1f})", ha="right",
                va="center", fontsize=8, color=c)
        ax.text(1.04, rank_r[k], f"#{rank_r[k]} ({right[k]:.1f})  {k}", ha="left",
                va="center", fontsize=8, color=c)
    ax.set_xlim(-1.0, 2.0)
    ax.set_ylim(len(names) + 0.5, 0.5)
    ax.set_xticks([0, 1])
    ax.set_xticklabels(titles)
    ax.set_yticks([])
    ax.set_ylabel("rank by AUROC (1 = best)")
    for side in ("top", "right", "left"):
        ax.spines[side].set_visible(False)
    ax.set_title(title)
    return ax


# ----------------------------------------------------------------------------- notebooks 05/06
# (added by the Mahalanobis notebooks; kept at the end of the module)

def maha_extreme_images(score_in: Any, score_out: Any, profile=None, n: int = 8,
                        title: str = ""):
    """The ``n`` highest-scored OOD test images and the ``n`` lowest-scored ID test images.

    The OOD images a detector finds most in-distribution and the ID images it finds least so
    are its two kinds of failure; seeing them tells more than an AUROC.

    Parameters
    ----------
    score_in, score_out : scores of the ID test and OOD test splits (higher = more ID),
        in the order of the feature cache (the images of ``data.feature_dataset``).
    profile : profile name or object (default: the active one).
    n : images per row.
    title : figure title.

    Returns
    -------
    matplotlib figure with two rows: OOD images (top) and ID images (bottom), each titled
    with its class name and score.
    """
    from .data import all_class_names, feature_dataset, id_class_names
    from .profiles import get_profile

    s_in = score_vector(score_in, "score_in")
    s_out = score_vector(score_out, "score_out")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    p = get_profile(profile)
    worst_out = np.argsort(-s_out, kind="stable")[:n]
    worst_in = np.argsort(s_in, kind="stable")[:n]
    id_names = id_class_names(p)
    ood_names = all_class_names(p.ood_dataset)
    images, titles = [], []
    for split, idx, scores_, names in (("ood_test", worst_out, s_out, ood_names),
                                       ("id_test", worst_in, s_in, id_names)):
        ds = feature_dataset(p, split)
        for i in idx:
            img, label = ds[int(i)]
            grey = p.ood_dataset == "FashionMNIST" if split == "ood_test" else \
                p.id_dataset == "FashionMNIST"
            images.append(np.asarray(img.convert("L" if grey else "RGB")))
            name = names[label] if 0 <= label < len(names) else str(label)
            titles.append(f"{'OOD' if split == 'ood_test' else 'ID'} {name}\n{scores_[i]:.3g}")
    fig = image_grid(np.stack(images), titles, ncols=len(worst_out), size=1.5)
    fig.suptitle(title + ("\n" if title else "") + "top: highest-scored OOD images · "
                 "bottom: lowest-scored ID images", fontsize="medium")
    fig.tight_layout()
    return fig


def maha_toy_picture(seed: int = 0):
    """MD and RMD score maps of a 2-D toy problem (two elongated classes).

    Two classes share one covariance stretched along the first axis; their means differ
    along the second. The left panel shows the MD score (distance to the nearest class in
    the shared covariance's units), the right one RMD (MD minus the distance to the
    background Gaussian of all the data). Far along the common direction of spread MD still
    calls a point OOD, RMD much less so: it discounts the variation every image shares.

    Returns
    -------
    matplotlib figure
    """
    from ..methods import mahalanobis_scores

    rng = np.random.default_rng(seed)
    cov = np.array([[6.0, 0.0], [0.0, 0.3]])
    rot = np.array([[np.cos(0.5), -np.sin(0.5)], [np.sin(0.5), np.cos(0.5)]])
    cov = rot @ cov @ rot.T
    centres = np.array([[0.0, -1.5], [0.0, 1.5]]) @ rot.T
    train = np.concatenate([rng.multivariate_normal(c, cov, 200) for c in centres])
    labels = np.repeat([0, 1], 200)
    xs = np.linspace(-9, 9, 181)
    grid = np.stack(np.meshgrid(xs, xs), -1).reshape(-1, 2)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.6))
    for ax, relative, name in ((axes[0], False, "MD"), (axes[1], True, "RMD")):
        s = mahalanobis_scores(train, labels, grid, relative=relative).reshape(len(xs), len(xs))
        lo = np.quantile(s, 0.02)
        im = ax.contourf(xs, xs, np.maximum(s, lo), levels=20, cmap="viridis")
        fig.colorbar(im, ax=ax, label=f"{name} score (higher = more ID)")
        ax.scatter(*train[labels == 0].T, s=3, c="white", alpha=0.6)
        ax.scatter(*train[labels == 1].T, s=3, c="tab:orange", alpha=0.6)
        ax.set_title(f"{name} score of every point of the plane")
        ax.set_aspect("equal")
    fig.tight_layout()
    return fig


def covariance_spectrum(shared_covs: Mapping[str, Any], background_cov: Any, ax=None,
                        title: str = "shared covariance against the background covariance",
                        wider: float = 1.01):
    """Generalised eigenvalues of each shared covariance against the background one.

    For symmetric ``Sigma`` and positive definite ``Sigma_0`` the values ``lambda`` solve
    ``Sigma v = lambda Sigma_0 v``: along ``v`` the shared Gaussian is ``sqrt(lambda)`` times
    as wide as the background one. Where ``lambda > 1``, ``d_c^2 - d_0^2`` *decreases* as an
    image moves away along ``v``, so RMD calls far-away images more typical.

    Parameters
    ----------
    shared_covs : mapping label -> (D, D) covariance
    background_cov : (D, D) covariance of all training features
    ax : matplotlib axes, optional
    wider : float, default 1.01
        The legend counts the directions with ``lambda > wider`` (the shared Gaussian more
        than 1 % wider than the background one).

    Returns
    -------
    ax
    """
    import scipy.linalg

    ax = _axes(ax, (7, 4))
    cov0 = np.asarray(to_numpy(background_cov, "background_cov"), dtype=np.float64)
    for label, cov in shared_covs.items():
        c = np.asarray(to_numpy(cov, str(label)), dtype=np.float64)
        lam = scipy.linalg.eigh(c, cov0, eigvals_only=True)[::-1]
        ax.plot(np.arange(1, len(lam) + 1), lam, label=f"{label} ({int((lam > wider).sum())} above {wider:g})")
    ax.axhline(1.0, color="k", ls="--", lw=1)
    ax.set_yscale("log")
    ax.set_xlabel("direction (sorted)")
    ax.set_ylabel(r"$\lambda$: variance ratio $\Sigma$ / $\Sigma_0$")
    ax.set_title(title)
    ax.legend(fontsize="small")
    return ax


def batch_logit_matrix(logits: Any, labels: Any, class_names: Sequence[str], title: str = "",
                       ax=None):
    """A batch's B x B image-caption logits with rows and columns sorted by class (notebook 00).

    Row i is image i, column j caption j; thin lines separate the classes, so the blocks on the
    diagonal are the same-class pairs that the contrastive loss cannot tell apart.
    """
    z = to_numpy(logits, "logits").astype(np.float64)
    y = np.asarray(to_numpy(labels, "labels")).astype(int)
    if z.ndim != 2 or z.shape[0] != z.shape[1] or len(y) != len(z):
        raise ValueError(f"logits must be (B, B) and labels (B,); got {z.shape} and {y.shape}")
    order = np.argsort(y, kind="stable")
    z, y = z[np.ix_(order, order)], y[order]
    ax = _axes(ax, (5, 4.5))
    im = ax.imshow(z, cmap="magma", interpolation="nearest")
    edges = np.flatnonzero(np.diff(y)) + 0.5
    for e in edges:
        ax.axhline(e, color="white", lw=0.4)
        ax.axvline(e, color="white", lw=0.4)
    starts = np.r_[0, np.ceil(edges)].astype(int)
    ends = np.r_[np.ceil(edges), len(y)].astype(int)
    centres = (starts + ends - 1) / 2
    names = [class_names[c] for c in y[starts]]
    ax.set_yticks(centres, names, fontsize="x-small")
    ax.set_xticks(centres, names, fontsize="x-small", rotation=90)
    ax.set_xlabel("caption (sorted by class)")
    ax.set_ylabel("image (sorted by class)")
    ax.figure.colorbar(im, ax=ax, fraction=0.046, label="logit")
    if title:
        ax.set_title(title)
    return ax


def _subsample(n: int, most: int, seed: int = 0) -> np.ndarray:
    """Indices of at most ``most`` of ``n`` points (a fixed random subset, so the picture
    does not depend on the order of the test set and stays light)."""
    if n <= most:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=most, replace=False))


def score_scatter(x_in: Any, y_in: Any, x_out: Any, y_out: Any, xlabel: str, ylabel: str,
                  title: str = "", ax=None, diagonal: bool = False, most: int = 3000,
                  log: bool = False):
    """One point per test image: two scores of the same image against each other, ID blue,
    OOD red (at most ``most`` points of each, a fixed random subset).

    Parameters
    ----------
    x_in, y_in : array or tensor, shape (N_in,): the two scores of the ID test images.
    x_out, y_out : array or tensor, shape (N_out,): the same for the OOD test images.
    xlabel, ylabel, title : axis labels and title.
    ax : matplotlib axes (default: a new figure).
    diagonal : draw the line y = x (grey, dashed).
    most : largest number of points drawn per set.
    log : logarithmic axes (for squared distances; values must be positive).

    Returns
    -------
    matplotlib axes
    """
    xi, yi = score_vector(x_in, "x_in"), score_vector(y_in, "y_in")
    xo, yo = score_vector(x_out, "x_out"), score_vector(y_out, "y_out")
    if len(xi) != len(yi) or len(xo) != len(yo):
        raise ValueError("x_in/y_in and x_out/y_out must have one value per image each")
    ax = _axes(ax, figsize=(5.5, 5))
    ii, io = _subsample(len(xi), most, 0), _subsample(len(xo), most, 1)
    ax.scatter(xo[io], yo[io], s=3, alpha=0.35, color="tab:red", label="OOD test",
               rasterized=True)
    ax.scatter(xi[ii], yi[ii], s=3, alpha=0.35, color="tab:blue", label="ID test", rasterized=True)
    if log:
        ax.set_xscale("log")
        ax.set_yscale("log")
    if diagonal:
        lo = min(xi.min(), yi.min(), xo.min(), yo.min())
        hi = max(xi.max(), yi.max(), xo.max(), yo.max())
        ax.plot([lo, hi], [lo, hi], "--", color="grey", lw=1, label="y = x")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize="small", markerscale=4)
    if title:
        ax.set_title(title)
    return ax


def sweep_plot(sweeps: Mapping[str, Mapping[Any, float]], xlabel: str, ax=None,
               title: str = "", logx: bool = True, reference: Mapping[str, float] | None = None):
    """AUROC against a swept setting, one line per entry of ``sweeps`` (``{label: {setting:
    AUROC}}``); ``reference`` draws dashed horizontal lines (``{label: AUROC}``) and a dotted
    line marks chance (50)."""
    ax = _axes(ax)
    for label, values in sweeps.items():
        xs = list(values)
        ax.plot(xs, [values[x] for x in xs], "o-", label=label)
    for label, value in (reference or {}).items():
        ax.axhline(value, ls="--", lw=1, color="grey")
        ax.annotate(label, (1.0, value), xycoords=("axes fraction", "data"), ha="right",
                    va="bottom", fontsize="small", color="dimgrey")
    ax.axhline(50, ls=":", lw=1, color="black")
    if logx:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("AUROC (%)")
    ax.legend(fontsize="small")
    if title:
        ax.set_title(title)
    return ax
