"""Atomic file writes: a reader sees the old file or the new one, never half of either."""
from __future__ import annotations

import contextlib
import os
import tempfile
import threading
from pathlib import Path
from typing import Callable, Iterator

__all__ = ["atomic_write", "atomic_write_text", "folder_lock"]


def atomic_write(path: str | Path, write: Callable[[str], None], mode: int = 0o644) -> Path:
    """Write ``path`` through ``write(tmp_path)`` into a temporary file, then rename it.

    The temporary file lies in the same folder (so the rename is atomic), gets permission
    ``mode`` and is removed if ``write`` raises. Returns ``path`` as a :class:`Path`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def atomic_write_text(path: str | Path, text: str, mode: int = 0o644) -> Path:
    """:func:`atomic_write` of a UTF-8 text (newlines written as given)."""
    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
    return atomic_write(path, write, mode)


_held: dict[tuple, int] = {}  # (lock file, thread) -> how deep that thread holds it
_held_guard = threading.RLock()


@contextlib.contextmanager
def folder_lock(folder: str | Path, name: str = "cache") -> Iterator[bool]:
    """Hold an exclusive lock on ``folder`` across processes (``fcntl.flock`` on
    ``folder/.<name>.lock``) while the block runs; yields whether it was taken.

    Two notebooks (or test workers) that find the same cache entry missing then compute it
    once: the second waits and reads what the first wrote. Re-entrant within a thread; other
    threads and processes wait. A folder that cannot be written (the grader's read-only
    cache) or a system without ``fcntl`` is not locked: nothing will be written there anyway.
    """
    folder = Path(folder)
    path = str(folder / f".{name}.lock")
    key = (path, threading.get_ident())
    try:
        import fcntl
    except ImportError:  # not POSIX
        yield False
        return
    with _held_guard:
        depth = _held.get(key, 0)
        if depth:
            _held[key] = depth + 1
    if depth:
        try:
            yield True
        finally:
            with _held_guard:
                _held[key] -= 1
        return
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:  # read-only
        yield False
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with _held_guard:
            _held[key] = 1
        try:
            yield True
        finally:
            with _held_guard:
                _held.pop(key, None)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
