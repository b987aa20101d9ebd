"""Run a notebook in its own kernel process, with time limits, for the course runner and grader.

:func:`execute_notebook` wraps :class:`nbclient.NotebookClient` and adds what nbclient leaves
out: environment variables for the kernel process, a wall-clock limit for the whole notebook,
a progress bar over cells, a bound on the size of the stored outputs, and a result object
instead of an exception.

Example
-------
>>> import nbformat
>>> from ood_utils.grader.execute import execute_notebook, describe_failure
>>> nb = nbformat.read("notebooks/02_knn.ipynb", as_version=4)        # doctest: +SKIP
>>> res = execute_notebook(nb, cwd="notebooks", env={"OOD_PROFILE": "miniclip"})  # doctest: +SKIP
>>> if res.status != "ok":                                            # doctest: +SKIP
...     print(describe_failure(res))
cell 7 failed: AssertionError: AUROC 61.2 is outside ... (knn_check_auroc(...))
"""
from __future__ import annotations

import asyncio
import math
import os
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError
from nbclient.util import run_sync

from ..course.cells import cell_source

__all__ = ["ExecutionResult", "GraderStepFailed", "execute_notebook", "describe_failure", "truncate_outputs",
           "cell_errors"]

_SHORT = 300  # characters kept of an error message in ExecutionResult


@dataclass
class ExecutionResult:
    """Outcome of :func:`execute_notebook`.

    Attributes
    ----------
    nb : nbformat.NotebookNode
        The notebook with the outputs produced so far (cells after a timeout or a dead kernel
        keep whatever outputs they had before).
    status : str
        ``"ok"`` (every code cell ran without error), ``"error"`` (a cell raised; with
        ``allow_errors=True`` execution went on after it), ``"timeout"`` (a cell or the whole
        notebook ran past its limit; execution stopped there), ``"dead_kernel"`` (the kernel
        process died, e.g. ``os._exit``; execution stopped there). A kernel that cannot be
        started gives ``"error"`` with ``cell_index=None``.
    cell_index : int or None
        0-based index in ``nb.cells`` of the cell that stopped execution (timeout, dead
        kernel), else of the first cell that raised; ``None`` when ``status == "ok"``.
    ename, evalue : str
        Exception name and the first line of its message (at most 300 characters), or
        ``"CellTimeoutError"`` / ``"DeadKernelError"`` with a sentence.
    seconds : float
        Wall-clock time of the whole call, kernel start and shutdown included.
    completed : list of int
        Indices of the code cells whose execution finished (with or without error).
    errors : dict
        ``{cell_index: (ename, evalue)}`` for every cell that raised.
    """

    nb: nbformat.NotebookNode
    status: str = "ok"
    cell_index: int | None = None
    ename: str = ""
    evalue: str = ""
    seconds: float = 0.0
    completed: list[int] = field(default_factory=list)
    errors: dict[int, tuple[str, str]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def _first_line(text: str, limit: int = _SHORT) -> str:
    for line in str(text).splitlines():
        if line.strip():
            line = line.strip()
            return line if len(line) <= limit else line[: limit - 3] + "..."
    return ""


def describe_failure(result: ExecutionResult) -> str:
    """One line for a report: ``cell N failed: <ename>: <evalue> (<first line of the cell>)``.

    ``N`` is the 0-based index in ``nb.cells``. Returns ``"ok"`` for a successful run.
    """
    if result.status == "ok":
        return "ok"
    if result.cell_index is None:
        return f"notebook failed: {result.ename}: {result.evalue}"
    cells = result.nb.get("cells", [])
    first = ""
    if 0 <= result.cell_index < len(cells):
        first = _first_line(cell_source(cells[result.cell_index]), 80)
    tail = f" ({first})" if first else ""
    msg = f": {result.evalue}" if result.evalue else ""
    return f"cell {result.cell_index} failed: {result.ename}{msg}{tail}"


def cell_errors(cell) -> tuple[str, str] | None:
    """``(ename, first line of evalue)`` of the first error output of a cell, else ``None``."""
    for out in cell.get("outputs", []) or []:
        if out.get("output_type") == "error":
            return str(out.get("ename", "Error")), _first_line(out.get("evalue", ""))
    return None


# --------------------------------------------------------------------------- output bounds
def _output_size(out) -> int:
    kind = out.get("output_type")
    if kind == "stream":
        return len(out.get("text", ""))
    if kind == "error":
        return len(str(out.get("evalue", ""))) + sum(len(t) for t in out.get("traceback", []))
    size = 0
    for value in (out.get("data") or {}).values():
        size += len(value) if isinstance(value, str) else len(str(value))
    return size


def _cut(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return text[:limit] + f"\n... [output truncated: {len(text) - limit} more characters]\n"


def truncate_outputs(cell, max_chars: int) -> None:
    """Bound the outputs of one cell to about ``max_chars`` characters, in place.

    Streams and tracebacks are cut with a note; rich outputs (images, HTML) that do not fit
    are replaced by a short text note. Error outputs are always kept (their name and message
    are what reports and grades are based on).
    """
    budget = max(int(max_chars), 0)
    kept = []
    for out in cell.get("outputs", []) or []:
        size = _output_size(out)
        kind = out.get("output_type")
        if size <= budget:
            kept.append(out)
            budget -= size
            continue
        if kind == "stream":
            out["text"] = _cut(out.get("text", ""), budget)
            kept.append(out)
            budget = 0
        elif kind == "error":
            out["evalue"] = _cut(str(out.get("evalue", "")), min(_SHORT * 4, max(budget, _SHORT)))
            tb, room = [], max(budget, 2000)
            for line in out.get("traceback", []):
                if room <= 0:
                    tb.append("... [traceback truncated]")
                    break
                tb.append(_cut(line, room))
                room -= len(line)
            out["traceback"] = tb
            kept.append(out)
            budget = 0
        else:
            if kept and kept[-1].get("output_type") == "stream" and \
                    "[output truncated" in kept[-1].get("text", ""):
                continue
            kept.append(nbformat.v4.new_output(
                "stream", name="stdout",
                text=f"[output truncated: a {kind} output of {size} characters was dropped]\n"))
            budget = 0
    cell["outputs"] = kept


class _Client(NotebookClient):
    """NotebookClient that stops storing outputs of a cell once they pass a size bound."""

    max_output_chars: int | None = None

    def output(self, outs, msg, display_id, cell_index):  # nbclient hook, one per message
        if self.max_output_chars is not None:
            seen = self.__dict__.setdefault("_chars", {})
            content = msg.get("content", {})
            size = len(str(content.get("text", ""))) + sum(
                len(v) if isinstance(v, str) else 0
                for v in (content.get("data") or {}).values())
            before = seen.get(cell_index, 0)
            seen[cell_index] = before + size
            if before > self.max_output_chars and msg["msg_type"] != "error":
                # a flood of output: keep memory bounded, store a single note instead
                notes = self.__dict__.setdefault("_noted", set())
                if cell_index not in notes:
                    notes.add(cell_index)
                    outs.append(nbformat.v4.new_output(
                        "stream", name="stderr", text="\n... [further output dropped]\n"))
                return None
        return super().output(outs, msg, display_id, cell_index)


def _sandbox_kernel_manager():
    """An AsyncKernelManager that starts its kernel inside a :class:`~ood_utils.grader.sandbox.Sandbox`.

    The kernel is reached over ZeroMQ's ``ipc`` transport (Unix sockets in the sandbox's
    ``conn/`` folder), because TCP on the loopback does not cross network namespaces.
    """
    from jupyter_client import AsyncKernelManager

    class SandboxKernelManager(AsyncKernelManager):
        sandbox = None

        def configure_sandbox(self, sandbox) -> None:
            self.sandbox = sandbox
            self.transport = "ipc"
            self.ip = str(sandbox.conn_dir / "kernel")
            self.connection_file = str(sandbox.conn_dir / "kernel.json")

        async def _async_launch_kernel(self, kernel_cmd, **kw):
            box = self.sandbox
            box.prepare_connection_file(self.connection_file)
            kw["env"] = box.environment(kw.get("env") or dict(os.environ))
            cwd = kw.get("cwd") or str(box.workdir)
            await super()._async_launch_kernel(box.command(kernel_cmd, cwd), **kw)

    return SandboxKernelManager


def _kernel_exit(client) -> int | None:
    """Exit status of the kernel process (for a sandbox: of bwrap), or None while it runs."""
    try:
        proc = client.km.provisioner.process
        for _ in range(20):  # the process may still be on its way out
            code = proc.poll()
            if code is not None:
                return code
            time.sleep(0.05)
    except AttributeError:
        pass
    return None


def _finish_cell(cell, max_output_chars):
    if max_output_chars is not None:
        truncate_outputs(cell, max_output_chars)


# --------------------------------------------------------------------------- execution
def execute_notebook(nb, cwd, env: Mapping[str, str | None] | None = None,
                     cell_timeout: float | None = 600, timeout: float | None = None,
                     allow_errors: bool = False, kernel_name: str = "python3",
                     progress: bool | str = False, max_output_chars: int | None = None,
                     quiet_kernel: bool = False, sandbox=None, after_cell=None
                     ) -> ExecutionResult:
    """Execute every code cell of ``nb`` in a new kernel process and report what happened.

    Parameters
    ----------
    nb : nbformat.NotebookNode
        Notebook (nbformat 4). It is executed in place and also returned as ``result.nb``.
    cwd : str or Path
        Working directory of the kernel (also ``resources["metadata"]["path"]``).
    env : mapping, optional
        Environment variables for the kernel process, merged over ``os.environ``; a value of
        ``None`` removes the variable. The parent's environment is not modified.
    cell_timeout : float or None, default 600
        Seconds one cell may run; ``None`` for no limit.
    timeout : float or None
        Seconds for the whole notebook (kernel start included); ``None`` for no limit. When it
        is reached the running cell is stopped and the kernel is killed.
    allow_errors : bool, default False
        Keep executing after a cell raises (status is still ``"error"`` and
        ``cell_index`` names the first failing cell). A timeout or a dead kernel always stops.
    kernel_name : str, default "python3"
    progress : bool or str
        Show a tqdm progress bar over the code cells (a string is used as its label).
    max_output_chars : int, optional
        Bound on the characters of output stored per cell (see :func:`truncate_outputs`).
    quiet_kernel : bool, default False
        Send the kernel process's own stdout/stderr (start-up warnings, crash dumps; not the
        cell outputs, which always go to the notebook) to ``/dev/null``.
    sandbox : ood_utils.grader.sandbox.Sandbox, optional
        Start the kernel inside this sandbox (see :mod:`ood_utils.grader.sandbox`): ``cwd`` must then
        be ``sandbox.workdir``, and only the variables the sandbox passes on reach the kernel.
        When the sandboxed kernel dies, ``evalue`` says why when it can (e.g. the CPU limit).
    after_cell : callable, optional
        ``after_cell(index, run_code)`` is called (in a worker thread) after every code cell
        that finished; ``run_code(code)`` runs more code in the same kernel and returns when it
        is done, raising :class:`GraderStepFailed` when the kernel died or timed out (the
        grader's steps, :mod:`ood_utils.grader.exchange`). Their outputs are not stored.

    Returns
    -------
    ExecutionResult
    """
    return run_sync(_execute_async)(nb, Path(cwd), env, cell_timeout, timeout, allow_errors,
                                    kernel_name, progress, max_output_chars, quiet_kernel,
                                    sandbox, after_cell)


class GraderStepFailed(Exception):
    """A grader step could not run in the kernel (``status``: ``dead_kernel`` or ``timeout``)."""

    def __init__(self, status: str, message: str):
        super().__init__(message)
        self.status = status


async def _grader_steps(client, after_cell, index, cell_timeout, deadline):
    """Run ``after_cell(index, run_code)`` in a thread; None, or (status, ename, evalue)."""
    loop = asyncio.get_running_loop()
    stopped: list = []

    async def run(code):
        remaining = None if deadline is None else deadline - time.monotonic()
        limits = [t for t in (cell_timeout, remaining) if t is not None]
        limit = min(limits) if limits else None
        if limit is not None and limit <= 0:
            raise GraderStepFailed("timeout", "notebook time limit reached")
        client.timeout = None if limit is None else max(1, int(math.ceil(limit)))
        cell = nbformat.v4.new_code_cell(code)
        try:
            await asyncio.wait_for(client.async_execute_cell(cell, -1, store_history=False),
                                   None if limit is None else limit + 30)
        except CellTimeoutError:
            raise GraderStepFailed("timeout", "a grader step ran past the time limit") from None
        except asyncio.TimeoutError:
            raise GraderStepFailed("timeout", "no reply from the kernel") from None
        except DeadKernelError:
            raise GraderStepFailed("dead_kernel", "the kernel died") from None
        except CellExecutionError:
            pass  # the answer file says what happened (or nothing: no verdict)

    def run_code(code):
        if stopped:
            raise GraderStepFailed(*stopped[0])
        try:
            asyncio.run_coroutine_threadsafe(run(code), loop).result()
        except GraderStepFailed as err:
            stopped.append((err.status, str(err)))
            raise

    await loop.run_in_executor(None, after_cell, index, run_code)
    if stopped:
        status, message = stopped[0]
        return status, ("DeadKernelError" if status == "dead_kernel" else "CellTimeoutError"), \
            message
    return None


def _kernel_env(env) -> dict[str, str]:
    merged = dict(os.environ)
    for key, value in (env or {}).items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[str(key)] = str(value)
    return merged


async def _execute_async(nb, cwd, env, cell_timeout, timeout, allow_errors, kernel_name,
                         progress, max_output_chars, quiet_kernel, sandbox=None,
                         after_cell=None) -> ExecutionResult:
    start = time.monotonic()
    deadline = None if timeout is None else start + float(timeout)
    result = ExecutionResult(nb=nb)
    if not cwd.is_dir():
        raise ValueError(f"cwd={str(cwd)!r} is not a directory; pass the folder the notebook "
                         "should run in")

    client = _Client(nb, timeout=None, kernel_name=kernel_name, allow_errors=allow_errors,
                     resources={"metadata": {"path": str(cwd)}}, shutdown_kernel="immediate",
                     startup_timeout=60)
    client.max_output_chars = max_output_chars
    sockets = None
    if sandbox is not None:
        client.kernel_manager_class = _sandbox_kernel_manager()
        client.km = client.create_kernel_manager()
        client.km.configure_sandbox(sandbox)
    else:
        # Unix sockets in a private folder instead of TCP ports on the loopback: no port that
        # other users of the machine can reach, and no "running over TCP without encryption"
        # warning from every kernel
        import tempfile
        sockets = tempfile.mkdtemp(prefix="ood-kernel-")
        client.km = client.create_kernel_manager()
        client.km.transport = "ipc"
        client.km.ip = os.path.join(sockets, "kernel")

    def died() -> str:
        why = sandbox.describe_exit(_kernel_exit(client)) if sandbox is not None else ""
        return "the kernel process died while running this cell" + (f" ({why})" if why else "")
    code_cells = [i for i, c in enumerate(nb.cells)
                  if c.cell_type == "code" and cell_source(c).strip()]
    bar = None
    if progress:
        from ..methods.progress import progress_bar as tqdm
        bar = tqdm(total=len(code_cells), unit="cell",
                   desc=progress if isinstance(progress, str) else "cells")

    def fail(status, index, ename, evalue):
        if result.status == "ok" or status != "error":
            result.status, result.cell_index = status, index
            result.ename, result.evalue = ename, _first_line(evalue)

    try:
        launch = {"env": _kernel_env(env), "cwd": str(cwd)}
        if quiet_kernel:
            launch.update(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        async with client.async_setup_kernel(**launch):
            for index in code_cells:
                cell = nb.cells[index]
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    fail("timeout", index, "CellTimeoutError",
                         f"notebook time limit of {timeout:g} s reached before this cell")
                    break
                limits = [t for t in (cell_timeout, remaining) if t is not None]
                limit = min(limits) if limits else None
                client.timeout = None if limit is None else max(1, int(math.ceil(limit)))
                whole = remaining is not None and (cell_timeout is None
                                                   or remaining < cell_timeout)
                try:
                    guard = None if limit is None else limit + 30
                    await asyncio.wait_for(client.async_execute_cell(cell, index), guard)
                except CellTimeoutError:
                    why = (f"notebook time limit of {timeout:g} s reached" if whole
                           else f"cell ran longer than {cell_timeout:g} s")
                    fail("timeout", index, "CellTimeoutError", why)
                    break
                except asyncio.TimeoutError:
                    fail("timeout", index, "CellTimeoutError",
                         "no reply from the kernel within the time limit")
                    break
                except DeadKernelError:
                    fail("dead_kernel", index, "DeadKernelError", died())
                    break
                except CellExecutionError as err:
                    result.completed.append(index)
                    ename = getattr(err, "ename", "Error")
                    evalue = getattr(err, "evalue", str(err))
                    result.errors[index] = (ename, _first_line(evalue))
                    fail("error", index, ename, evalue)
                    break
                finally:
                    _finish_cell(cell, max_output_chars)
                    if bar is not None:
                        bar.update(1)
                result.completed.append(index)
                err = cell_errors(cell)
                if err is not None:  # allow_errors=True: recorded, execution goes on
                    result.errors[index] = err
                    fail("error", index, *err)
                if after_cell is not None:
                    stop = await _grader_steps(client, after_cell, index, cell_timeout,
                                               deadline)
                    if stop is not None:
                        fail(stop[0], index, stop[1], died() if stop[0] == "dead_kernel"
                             else stop[2])
                        break
    except DeadKernelError as err:  # died at start-up or during the kernel_info handshake
        fail("dead_kernel", None, "DeadKernelError", str(err))
    except Exception as err:  # kernel could not be started
        if result.status == "ok":
            fail("error", None, type(err).__name__, str(err) or repr(err))
    finally:
        if bar is not None:
            bar.close()
        if sockets is not None:
            import shutil
            shutil.rmtree(sockets, ignore_errors=True)
        result.seconds = time.monotonic() - start
    return result
