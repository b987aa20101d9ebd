"""Thread control shared by the methods (the eigensolver) and the course (probe, CAC training)."""
from __future__ import annotations

import contextlib

import torch

__all__ = ["one_cpu_thread"]


@contextlib.contextmanager
def one_cpu_thread(device: torch.device | str = "cpu"):
    """Run the block on one torch CPU thread, then restore the previous setting.

    Used where many small operations or a LAPACK call synchronise threads very often: on a
    busy two-core machine one thread was 3 to 40 times faster than two for the eigensolver
    (0.3 s against 1-16 s for D = 1024) and about 20 times faster for the linear probe's tiny
    matrix products. Does nothing for a GPU ``device``.
    """
    if torch.device(device).type != "cpu":
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
