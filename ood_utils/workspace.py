"""Open the course in JupyterLab: a student folder of released copies, or the instructor copies.

``python -m ood_utils lab`` (``make lab``) creates the student folder (default ``student/`` in
the checkout, git-ignored) with the released notebooks (solutions removed, as
``python -m ood_utils release`` writes them) and starts JupyterLab there. Run again, it reuses
the folder and never overwrites a student's work:

* a notebook that is missing is released into the folder;
* a notebook the student has not changed since it was released (same SHA-256 as recorded in
  ``.released.json``) is replaced by the new release when the course changed;
* a notebook the student has changed stays as it is; when the course's release differs, the
  new copy is written beside it as ``<stem>.release-<YYYY-MM-DD>.ipynb`` and a line says so.

JupyterLab listens on 127.0.0.1 only, with a fresh token (``$JUPYTER_TOKEN`` if set); the URL
to open is printed first. As root (a container, CI) it adds ``--allow-root``, which JupyterLab
otherwise demands. ``--instructor`` (``make lab-instructor``) opens ``notebooks/`` instead:
the instructor copies, with the solutions in them.

Example: python -m ood_utils lab --no-browser --port 8888
"""
from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import json
import os
import secrets
import shutil
import socket
import sys
import tempfile
from pathlib import Path

from .course._io import atomic_write_text
from .grader.release import ReleaseError, release_course

__all__ = ["prepare_workspace", "lab_command", "free_port", "configure_parser", "run",
           "RECORD"]

RECORD = ".released.json"  # {notebook file name: SHA-256 of the copy released into the folder}


def _sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _read_record(folder: Path) -> dict:
    path = folder / RECORD
    if not path.exists():
        return {}
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def prepare_workspace(folder, source=None, today: _dt.date | None = None) -> list[str]:
    """Create or update the student folder ``folder`` from the instructor notebooks ``source``.

    Returns one message per notebook that was written or kept aside (empty when everything
    was up to date). Raises :class:`~ood_utils.release.ReleaseError` when the course cannot
    be released (nothing is written then).
    """
    from .course.profiles import notebooks_dir

    folder = Path(folder)
    source = Path(source) if source is not None else notebooks_dir()
    if folder.resolve() == source.resolve():
        raise ReleaseError(f"{folder}: the student folder cannot be the instructor folder")
    date = (today or _dt.date.today()).isoformat()
    folder.mkdir(parents=True, exist_ok=True)
    record = _read_record(folder)
    messages = []
    with tempfile.TemporaryDirectory(prefix="ood-release-") as tmp:
        for fresh in release_course(source, tmp):
            name, target = fresh.name, folder / fresh.name
            new_sha = _sha(fresh)
            if not target.exists():
                shutil.copyfile(fresh, target)
                os.chmod(target, 0o644)
                record[name] = new_sha
                messages.append(f"released {target}")
                continue
            old_sha = _sha(target)
            if old_sha == new_sha:
                record[name] = new_sha
                continue
            if record.get(name) == old_sha:  # untouched since its release: safe to update
                shutil.copyfile(fresh, target)
                record[name] = new_sha
                messages.append(f"updated {target} (you had not changed it)")
                continue
            beside = folder / f"{fresh.stem}.release-{date}.ipynb"
            if beside.exists() and _sha(beside) == new_sha:
                continue  # already told
            shutil.copyfile(fresh, beside)
            messages.append(f"kept your {target.name}: the course has a new release of it, "
                            f"written beside it as {beside.name} (copy what you need from it)")
    atomic_write_text(folder / RECORD, json.dumps(record, indent=1, sort_keys=True) + "\n")
    return messages


def free_port(preferred: int = 8888, host: str = "127.0.0.1") -> int:
    """``preferred`` if nothing listens there on ``host``, else a free port the system picks."""
    for port in (preferred, 0):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
            return sock.getsockname()[1]
    raise OSError(f"no free TCP port on {host}")


def lab_command(folder, port: int, *, browser: bool = True, root: bool | None = None,
                python: str | None = None) -> list[str]:
    """The ``jupyter lab`` command line for ``folder`` on 127.0.0.1:``port``.

    The token is not on the command line (other users could read it there): pass it in the
    environment as ``JUPYTER_TOKEN``.
    """
    root = (os.geteuid() == 0) if root is None and hasattr(os, "geteuid") else bool(root)
    cmd = [python or sys.executable, "-m", "jupyterlab", f"--ServerApp.root_dir={folder}",
           "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}",
           "--ServerApp.port_retries=0"]  # the printed URL must be the one it listens on
    if not browser:
        cmd.append("--no-browser")
    if root:
        cmd.append("--allow-root")
    return cmd


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``python -m ood_utils lab``."""
    from .course.profiles import project_root

    parser.add_argument("--folder", default=str(project_root() / "student"),
                        help="the student folder (default: student/ in the course checkout)")
    parser.add_argument("--instructor", action="store_true",
                        help="open the instructor notebooks (notebooks/, with solutions) instead")
    parser.add_argument("--port", type=int, default=8888,
                        help="port on 127.0.0.1 (default 8888, or a free one when taken)")
    parser.add_argument("--no-browser", action="store_true",
                        help="do not open a web browser; just print the URL")
    parser.add_argument("--prepare-only", action="store_true",
                        help="create or update the student folder, then stop")


def run(args) -> int:
    """Entry point of ``python -m ood_utils lab``."""
    from .course.profiles import notebooks_dir

    if args.instructor:
        folder = notebooks_dir()
        print(f"opening the INSTRUCTOR copies in {folder} (they hold the solutions)")
    else:
        folder = Path(args.folder)
        try:
            messages = prepare_workspace(folder)
        except ReleaseError as err:
            print(f"error: cannot release the course into {folder}: {err}", file=sys.stderr)
            return 1
        for line in messages:
            print(line)
        print(f"student folder: {folder.resolve()} (your work stays here; "
              f"`make lab` never overwrites a notebook you changed)")
    if args.prepare_only:
        return 0
    port = free_port(args.port)
    token = os.environ.get("JUPYTER_TOKEN") or secrets.token_hex(24)
    env = {**os.environ, "JUPYTER_TOKEN": token}
    print(f"JupyterLab: http://127.0.0.1:{port}/lab?token={token}", flush=True)
    print("(stop it with Ctrl+C twice)", flush=True)
    cmd = lab_command(Path(folder).resolve(), port, browser=not args.no_browser)
    os.execve(cmd[0], cmd, env)  # JupyterLab takes over this process (Ctrl+C goes to it)
    return 0  # not reached
