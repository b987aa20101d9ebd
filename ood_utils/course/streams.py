"""Keep warnings off stderr in a notebook kernel, so graders do not score them as failures.

``nbgrader autograde`` gives 0 points to a graded cell with *any* output on stderr, even when
the cell ran without error (``nbgrader.utils.determine_grade``). Library warnings (a torch
``UserWarning`` from a student's correct code, a deprecation in a dependency) are printed on
stderr by Python's default :func:`warnings.showwarning` and would cost the student the part.

:func:`route_warnings_to_stdout` replaces :func:`warnings.showwarning` with a version that
prints the same text to stdout, so the warning stays visible in the notebook but no longer
fails the cell. :mod:`ood_utils.answer_key.checks` (imported by every course notebook's setup cell)
installs it when it is imported inside a Jupyter kernel; plain Python processes (scripts,
pytest) keep the default. Warning filters are unchanged: what was shown before is shown now,
once per location by default. Errors still go to stderr (a traceback is an ``error`` output,
not a stream), and tqdm progress bars are not warnings: graded cells must not draw them.
"""
from __future__ import annotations

import sys
import warnings

__all__ = ["route_warnings_to_stdout", "in_kernel"]



def in_kernel() -> bool:
    """Whether this process is a Jupyter (ipykernel) kernel."""
    kernelapp = sys.modules.get("ipykernel.kernelapp")
    return kernelapp is not None and kernelapp.IPKernelApp.initialized()


def _show_on_stdout(message, category, filename, lineno, file=None, line=None):
    """:func:`warnings.showwarning` that writes to ``sys.stdout`` unless a file is given."""
    target = sys.stdout if file is None or file is sys.stderr else file
    try:
        target.write(warnings.formatwarning(message, category, filename, lineno, line))
    except (AttributeError, OSError, ValueError):  # closed or missing stream: like Python's
        pass


def route_warnings_to_stdout(force: bool = False) -> bool:
    """Print warnings on stdout instead of stderr from now on (this process only).

    Parameters
    ----------
    force : bool
        Install even outside a Jupyter kernel (default: only inside one).

    Returns
    -------
    bool
        Whether the hook is installed after the call (calling it again is harmless).
    """
    if warnings.showwarning is _show_on_stdout:
        return True
    if not (force or in_kernel()):
        return False
    warnings.showwarning = _show_on_stdout
    return True
