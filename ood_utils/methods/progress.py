"""One progress bar for the whole package: a widget in JupyterLab, plain lines elsewhere.

A red stderr box under a notebook cell reads as an error to a student, and nbgrader scores a
graded cell with any stderr output as 0. So the package never draws tqdm's text bar (which
writes to stderr) inside a kernel. :func:`progress_bar` picks one of three forms:

``widget``  tqdm's ipywidgets bar (:mod:`tqdm.notebook`): a kernel started by a Jupyter server
            (JupyterLab, Notebook; the server sets ``JPY_SESSION_NAME`` for its kernels) with
            ipywidgets installed. Nothing goes to stderr.
``text``    plain lines on stdout: any other kernel (nbclient, nbval, nbgrader, the course's
            grader and runner), where no front end renders widgets. One line when the bar
            closes (``desc: 36000/36000 img in 12.3 s``) and, for long loops, one line every
            :data:`TEXT_INTERVAL` seconds before; bars made with ``leave=False`` (inner loops)
            only print those intermediate lines.
``tqdm``    tqdm's usual terminal bar (on stderr): plain Python processes, e.g. the command line.

``OOD_PROGRESS=widget|text|tqdm|off`` forces one form (``off`` draws nothing). The object
returned supports what the package uses of tqdm: iteration, ``update``, ``set_postfix``,
``close`` and ``with``.
"""
from __future__ import annotations

import os
import sys
import time

__all__ = ["progress_bar", "progress_mode", "TEXT_INTERVAL", "ENV_VAR"]

ENV_VAR = "OOD_PROGRESS"
MODES = ("widget", "text", "tqdm", "off")
TEXT_INTERVAL = 30.0  # seconds between two intermediate plain lines


def _in_kernel() -> bool:
    kernelapp = sys.modules.get("ipykernel.kernelapp")
    return kernelapp is not None and kernelapp.IPKernelApp.initialized()


def _widgets_available() -> bool:
    try:
        import ipywidgets  # noqa: F401
    except ImportError:
        return False
    return True


def progress_mode() -> str:
    """The form :func:`progress_bar` draws in this process (see the module docstring)."""
    forced = os.environ.get(ENV_VAR, "").strip().lower()
    if forced:
        if forced not in MODES:
            raise ValueError(f"{ENV_VAR}={forced!r} is not one of {', '.join(MODES)}; "
                             f"unset it to choose automatically")
        return forced
    if not _in_kernel():
        return "tqdm"
    if os.environ.get("JPY_SESSION_NAME") and _widgets_available():
        return "widget"
    return "text"


class _TextBar:
    """A tqdm look-alike that prints a few plain lines on stdout."""

    def __init__(self, iterable=None, total=None, desc=None, unit="it", leave=True,
                 disable=False, interval=TEXT_INTERVAL, file=None):
        self.iterable = iterable
        if total is None and iterable is not None:
            try:
                total = len(iterable)
            except TypeError:
                total = None
        self.total, self.desc, self.unit, self.leave = total, desc, unit, leave
        self.disable, self.interval = disable, interval
        self.file = file
        self.n = 0
        self.postfix = ""
        self.start = self.last = time.monotonic()
        self.closed = False

    def _write(self, text: str) -> None:
        out = self.file if self.file is not None else sys.stdout
        out.write(text + "\n")
        out.flush()

    def _line(self) -> str:
        count = f"{self.n}/{self.total}" if self.total is not None else f"{self.n}"
        seconds = time.monotonic() - self.start
        text = f"{self.desc + ': ' if self.desc else ''}{count} {self.unit} in {seconds:.1f} s"
        return text + (f" ({self.postfix})" if self.postfix else "")

    def update(self, n=1) -> None:
        self.n += n
        now = time.monotonic()
        if not self.disable and now - self.last >= self.interval:
            self.last = now
            self._write(self._line())

    def set_postfix(self, ordered_dict=None, refresh=True, **kwargs) -> None:
        items = dict(ordered_dict or {}, **kwargs)
        self.postfix = ", ".join(f"{k}={v}" for k, v in items.items())

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.leave and not self.disable:
            self._write(self._line())

    def __iter__(self):
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def progress_bar(iterable=None, *, total=None, desc=None, unit="it", leave=True,
                 disable=False, **kwargs):
    """A progress bar over ``iterable`` (or a manual one with ``total``), in the right form.

    Parameters
    ----------
    iterable : iterable, optional
        What to loop over; omit it and call ``update(n)`` instead.
    total, desc, unit, leave, disable
        As in :class:`tqdm.tqdm`. ``disable=True`` draws nothing in every form.
    **kwargs
        Passed to tqdm in the ``widget`` and ``tqdm`` forms (ignored by ``text``).
    """
    mode = "off" if disable else progress_mode()
    if mode in ("text", "off"):
        return _TextBar(iterable, total=total, desc=desc, unit=unit, leave=leave,
                        disable=mode == "off")
    if mode == "widget":
        from tqdm.notebook import tqdm
    else:
        from tqdm import tqdm
    return tqdm(iterable, total=total, desc=desc, unit=unit, leave=leave, **kwargs)
