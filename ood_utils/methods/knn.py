"""kNN cosine score (Sun et al. 2022, "Out-of-distribution detection with deep nearest neighbors").

A higher score means "more in-distribution": the cosine similarity of a test feature to its
k-th nearest training feature."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ._arrays import check_same_dim
from ._common import _back, _device_of, _feature_tensor, _positive_int


#: Largest similarity block (number of float32 entries) :func:`knn_scores` builds at once
#: when no ``chunk_size`` is given: 2**26 entries = 256 MiB.
KNN_BLOCK_ELEMENTS = 1 << 26


# ----------------------------------------------------------------------------- kNN

def _knn_kernel(train: torch.Tensor, inv_norm: torch.Tensor, test: torch.Tensor, k: int,
                chunk_size: int) -> torch.Tensor:
    """Kernel of :func:`knn_scores` on validated float32 tensors of one device."""
    device = train.device
    with torch.no_grad():
        rows = min(chunk_size, test.shape[0])
        block = torch.empty(rows, train.shape[0], dtype=torch.float32, device=device)
        out = torch.empty(test.shape[0], dtype=torch.float32, device=device)
        for start in range(0, test.shape[0], rows):
            query = nn.functional.normalize(test[start:start + rows], dim=1)
            sim = block[:query.shape[0]]  # one buffer reused by every chunk
            torch.matmul(query, train.T, out=sim)
            sim.mul_(inv_norm)
            if k == 1:  # same value as topk(1), without sorting
                out[start:start + rows] = sim.amax(dim=1)
            else:
                out[start:start + rows] = torch.topk(sim, k, dim=1, sorted=True).values[:, -1]
        del block
        out.clamp_(-1.0, 1.0)
    return out


def knn_scores(train_feats: Any, test_feats: Any, k: int = 1,
               chunk_size: int | None = None) -> Any:
    """Cosine similarity of every test feature to its k-th nearest training feature.

    Both sets are L2-normalised, so the cosine similarity is a dot product. The test rows are
    processed in chunks: each chunk's similarity block ``(chunk, N_train)`` comes from one
    float32 matrix product on the features' device (written into one reused buffer), and
    :func:`torch.topk` keeps its ``k`` largest entries (for ``k = 1`` the row maximum, the
    same value). Memory therefore stays bounded however many test samples there are (the
    full ``(N_test, N_train)`` matrix is never built, nor a normalised copy of the training
    set: the block's columns are divided by the training norms instead). The cost is close
    to that of the plain matrix product ``test_feats @ train_feats.T``.

    Parameters
    ----------
    train_feats : array or tensor, shape (N_train, D)
        Features of the in-distribution training set.
    test_feats : array or tensor, shape (N_test, D)
        Features to score.
    k : int, default 1
        Which neighbour to use (1 = nearest, as in the course's seed; Sun et al. tune k).
        Must not exceed ``N_train``.
    chunk_size : int, optional
        Test rows per block. By default as many rows as keep one block within
        :data:`KNN_BLOCK_ELEMENTS` float32 entries (256 MiB).

    Returns
    -------
    scores : same kind as ``train_feats``, shape (N_test,), float32
        Similarities in [-1, 1]; higher = closer to the training set = more in-distribution.
        (An all-zero feature vector has similarity 0 to everything.)
    """
    device = _device_of(train_feats)
    train = _feature_tensor(train_feats, "train_feats", device)
    test = _feature_tensor(test_feats, "test_feats", device)
    check_same_dim(train, test, "train_feats", "test_feats")
    k = _positive_int(k, "k")
    if k > train.shape[0]:
        raise ValueError(f"k={k} exceeds the number of training samples ({train.shape[0]}); "
                         "choose a smaller k")
    if chunk_size is None:
        chunk_size = max(1, KNN_BLOCK_ELEMENTS // train.shape[0])
    chunk_size = _positive_int(chunk_size, "chunk_size")
    with torch.no_grad():
        # Dividing the columns of each block by the training norms gives the same cosines
        # as normalising the training set first, without a normalised copy of it.
        inv_norm = torch.linalg.vector_norm(train, dim=1).clamp_min(1e-12).reciprocal()
    return _back(_knn_kernel(train, inv_norm, test, k, chunk_size).clone(), train_feats)


