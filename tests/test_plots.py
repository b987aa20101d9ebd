"""plots: every figure draws and validates its input; ranked_images; the FPR@95TPR marks."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from ood_utils.course import plots# noqa: E402


def _shown(ax):
    """The constant grey value of the image drawn on ``ax`` (None if nothing is drawn)."""
    if not ax.images:
        return None
    return float(np.asarray(ax.images[0].get_array()).max())


def test_ranked_images_shows_highest_ood_and_lowest_id_in_order():
    s_in = np.array([0.9, 0.1, 0.5, 0.3, 0.8])
    s_out = torch.tensor([0.2, 0.95, 0.4, 0.7])
    # image i of each set is constant i + 1 (as uint8, so no rescaling), ID ones offset by 100
    images_in = np.stack([np.full((4, 4), 101 + i, dtype=np.uint8) for i in range(5)])
    images_out = [(np.full((4, 4), 1 + i, dtype=np.uint8), -1) for i in range(4)]  # dataset-like
    fig = plots.ranked_images(s_in, s_out, images_in, images_out, n=3,
                              names_out=["a", "b", "c", "d"])
    axes = np.array(fig.axes).reshape(2, 3)
    # OOD by decreasing score: 1 (0.95), 3 (0.7), 2 (0.4); ID by increasing: 1, 3, 2
    assert [_shown(a) for a in axes[0]] == [2, 4, 3]
    assert [_shown(a) for a in axes[1]] == [102, 104, 103]
    assert axes[0][0].get_title().startswith("b\n0.95")
    plt.close(fig)


def test_ranked_images_refuses_mismatched_inputs():
    with pytest.raises(ValueError, match="images_out has 2 images but there are 3 scores"):
        plots.ranked_images(np.ones(2), np.ones(3), np.zeros((2, 4, 4)), np.zeros((2, 4, 4)))
    with pytest.raises(ValueError, match="n must be a positive integer"):
        plots.ranked_images(np.ones(2), np.ones(2), np.zeros((2, 4, 4)), np.zeros((2, 4, 4)), n=0)


def test_roc_curves_marks_fpr_at_95_tpr_on_the_curve():
    rng = np.random.default_rng(0)
    s_in, s_out = rng.normal(1, 1, 200), rng.normal(0, 1, 300)
    ax = plots.roc_curves({"m": (s_in, s_out)})
    # brute force: threshold = the ceil(0.95 * 200) = 190-th largest ID score
    threshold = np.sort(s_in)[::-1][189]
    fpr95 = np.mean(s_out >= threshold)
    dots = [line for line in ax.lines if line.get_marker() == "o"]
    assert len(dots) == 1
    assert dots[0].get_xdata()[0] == pytest.approx(fpr95)
    assert dots[0].get_ydata()[0] == pytest.approx(0.95)
    assert any(line.get_ydata()[0] == 0.95 and line.get_linestyle() == ":" for line in ax.lines)
    assert f"FPR@95TPR {100 * fpr95:.1f}" in ax.get_legend().get_texts()[1].get_text()
    plt.close("all")


def _toy_scores(seed=0, n_in=50, n_out=40, shift=1.0):
    rng = np.random.default_rng(seed)
    return rng.normal(shift, 1, n_in), rng.normal(0, 1, n_out)


def test_plots_draw_and_validate():
    s_in, s_out = _toy_scores()
    fig, axes = plt.subplots(1, 3)
    assert plots.score_histograms(s_in, torch.from_numpy(s_out), "t", ax=axes[0]) is axes[0]
    assert plots.roc_curves({"a": (s_in, s_out), "b": (s_out, s_in)}, ax=axes[1]) is axes[1]
    # two methods with their FPR@95TPR dots, the TPR = 95 % line and the chance line
    assert len(axes[1].lines) == 6
    plots.confusion_matrix_plot(np.array([[5, 1], [2, 7]]), ["x", "y"], "cm", ax=axes[2])
    grid = plots.image_grid(np.zeros((5, 8, 8), np.uint8), [str(i) for i in range(5)], ncols=3)
    assert len(grid.axes) == 6
    plots.image_grid(torch.rand(2, 3, 8, 8), None, ncols=2)
    plots.auroc_bars({"a": 70.0, "b": 55.0}, {"a": 71.0})
    plt.close("all")
    with pytest.raises(ValueError, match="curves is empty"):
        plots.roc_curves({})
    with pytest.raises(ValueError, match="square"):
        plots.confusion_matrix_plot(np.ones((2, 3)), ["a", "b"])
    with pytest.raises(ValueError, match="titles"):
        plots.image_grid(np.zeros((2, 4, 4)), ["only one"], ncols=2)
    with pytest.raises(ValueError, match="score_in"):
        plots.score_histograms(np.ones((2, 2)), s_out, "t")


def test_batch_logit_matrix_sorts_rows_and_columns_by_class():
    import matplotlib.pyplot as plt

    labels = np.array([2, 0, 1, 0, 2])
    logits = np.arange(25, dtype=float).reshape(5, 5)  # entry (i, j) = 5 i + j
    ax = plots.batch_logit_matrix(logits, labels, ["a", "b", "c"], "t")
    shown = ax.images[0].get_array()
    order = [1, 3, 2, 0, 4]  # stable sort of the labels
    np.testing.assert_array_equal(np.asarray(shown), logits[np.ix_(order, order)])
    assert [t.get_text() for t in ax.get_yticklabels()] == ["a", "b", "c"]
    with pytest.raises(ValueError, match="B, B"):
        plots.batch_logit_matrix(np.zeros((2, 3)), [0, 1], ["a", "b"])
    plt.close("all")
