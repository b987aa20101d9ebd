"""Run a notebook kernel inside a bubblewrap (``bwrap``) sandbox, for the grader.

The grader (trusted) stays outside; only the kernel process of a submission runs inside::

    bwrap <namespaces, mounts> -- setpriv <unprivileged uid> -- prlimit <limits> -- python -m ipykernel_launcher -f ...

What the kernel sees and may do:

* the system folders (``/usr``, ``/etc``, ...), the Python installation, the course package,
  the data folder and the feature cache: **read-only**;
* a private working directory (its ``cwd`` and ``OOD_RESULTS_DIR``), a private ``HOME`` and a
  private ``/tmp`` (a size-limited tmpfs): writable, removed after the run;
* nothing else: the instructor notebooks, the other submissions, the grades folder, other
  users' homes and the course's git history are not mounted (a folder that sits inside a
  mounted one, such as ``notebooks/`` next to the package, is covered by an empty tmpfs);
* no network (own network namespace with only a loopback device), own PID, IPC and UTS
  namespaces; the kernel talks to the grader over Unix sockets (ZeroMQ ``ipc`` transport) in
  a folder that only this sandbox mounts;
* an unprivileged user id of its own (no capabilities, ``no_new_privs``), so that the process
  limit applies (Linux does not apply ``RLIMIT_NPROC`` to root);
* resource limits: data memory (``RLIMIT_DATA``: heap and anonymous mappings), processes and
  threads (``RLIMIT_NPROC``), CPU time (``RLIMIT_CPU``), size of one written file
  (``RLIMIT_FSIZE``), no core dumps.

Needs Linux, ``bwrap`` (Debian package ``bubblewrap``), ``setpriv`` and ``prlimit``
(util-linux) and permission to create namespaces (root, as on the course machines).
:func:`unavailable_reason` tells whether the sandbox works here (it runs a self-test once).
"""
from __future__ import annotations

import functools
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Limits", "Sandbox", "parse_size", "format_size", "unavailable_reason",
           "NOT_PROTECTED", "SYSTEM_DIRS"]

SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc", "/opt")
# environment variables passed from the grader's environment into the sandbox (besides the
# ones the grader sets itself); everything else (tokens, credentials, ...) stays outside
PASSED_ENV = ("PATH", "LANG", "LANGUAGE", "LC_ALL", "LC_CTYPE", "TZ", "PYTHONPATH",
              "VIRTUAL_ENV", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
              "HF_HUB_OFFLINE", "CUDA_VISIBLE_DEVICES")
PASSED_PREFIXES = ("OOD_",)
# uids given to sandboxed kernels: one per concurrently running submission (the process limit
# counts the processes of a uid); far from the uids Debian hands out to people and daemons
UID_BASE = 200_000

NOT_PROTECTED = """\
WARNING: grading WITHOUT a sandbox (--no-sandbox). Submissions run as YOUR user, with YOUR
permissions, and nothing stops a submission from:
  - reading the instructor notebooks (the solutions), the other submissions and the grades;
  - overwriting or deleting your files, the feature cache (caught on the next read by its
    digests) or the grades written so far;
  - using the network, starting processes without limit (fork bomb) or using all the memory
    and CPU time (only the wall-clock limits --cell-timeout/--timeout apply).
The static screen of the exercise cells (patching the checks, calling the reference) still
applies. Grade untrusted submissions only with the sandbox (Linux + bubblewrap)."""


def parse_size(text: str | int | float) -> int:
    """Bytes from ``"4G"``, ``"512M"``, ``"1.5GiB"``, ``"2000000"``; ``"0"``/``"none"`` -> 0 (no limit)."""
    if isinstance(text, (int, float)):
        return int(text)
    s = str(text).strip().lower().replace(" ", "")
    if s in ("0", "none", "unlimited", "off"):
        return 0
    for suffix in ("ib", "b"):
        if s.endswith(suffix) and s[:-len(suffix)][-1:].isalpha():
            s = s[: -len(suffix)]
            break
    scale = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
    try:
        if s and s[-1] in scale:
            return int(float(s[:-1]) * scale[s[-1]])
        return int(float(s.rstrip("b")))
    except ValueError:
        raise ValueError(f"cannot read {text!r} as a size; write e.g. 4G, 512M or a number "
                         "of bytes") from None


def format_size(n: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:g} {unit}"
    return f"{n} B"


@dataclass
class Limits:
    """Per-submission resource limits (0 = no limit).

    memory : bytes of data memory per process (``RLIMIT_DATA``)
    procs : processes and threads of the sandbox's uid (``RLIMIT_NPROC``)
    cpu : CPU seconds per process, all threads together (``RLIMIT_CPU``)
    file_size : bytes of one written file (``RLIMIT_FSIZE``)
    tmp_size : bytes of the private ``/tmp``
    """

    memory: int = 4 << 30
    procs: int = 256
    cpu: int = 0
    file_size: int = 1 << 30
    tmp_size: int = 1 << 30

    def describe(self) -> str:
        parts = [f"memory {format_size(self.memory)}" if self.memory else "memory unlimited",
                 f"{self.procs} processes/threads" if self.procs else "processes unlimited",
                 f"CPU {self.cpu} s" if self.cpu else "CPU time unlimited"]
        return ", ".join(parts)


def _tool(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for folder in ("/usr/bin", "/bin", "/usr/sbin", "/sbin"):
        if os.access(os.path.join(folder, name), os.X_OK):
            return os.path.join(folder, name)
    return None


def _matplotlib_cache_dir() -> Path:
    """matplotlib's cache folder, found by its own rule (MPLCONFIGDIR, else XDG_CACHE_HOME or
    ~/.cache, + /matplotlib) without importing it, which would cost every submission 0.2 s;
    falls back to asking matplotlib when that folder holds no font list."""
    if os.environ.get("MPLCONFIGDIR"):
        folder = Path(os.environ["MPLCONFIGDIR"])
    else:
        folder = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "matplotlib"
    if any(folder.glob("fontlist-*.json")):
        return folder
    try:
        import matplotlib
        return Path(matplotlib.get_cachedir())
    except Exception:  # matplotlib missing or broken: nothing to copy
        return folder


@dataclass
class Sandbox:
    """One kernel's sandbox: what it may read, where it may write, its uid and its limits.

    Parameters
    ----------
    root : Path
        Private folder of this submission (outside the sandbox); holds ``work/`` (the cwd),
        ``home/`` and ``conn/`` (connection file and sockets). Made writable for ``uid``.
    readable : list of Path
        Folders mounted read-only at their own path (besides :data:`SYSTEM_DIRS` and Python).
    hidden : list of Path
        Folders that must not be visible even if they lie inside a readable one (covered by an
        empty tmpfs).
    limits : Limits
    uid : int
        Unprivileged uid (and gid) the kernel runs as.
    """

    root: Path
    readable: list = field(default_factory=list)
    hidden: list = field(default_factory=list)
    limits: Limits = field(default_factory=Limits)
    uid: int = UID_BASE

    def __post_init__(self):
        self.root = Path(self.root)
        for sub in ("work", "home", "conn"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        self._give(self.root)
        self.exchange_dir.mkdir(mode=0o755, exist_ok=True)  # stays the grader's

    @property
    def workdir(self) -> Path:
        return self.root / "work"

    @property
    def home(self) -> Path:
        return self.root / "home"

    @property
    def conn_dir(self) -> Path:
        return self.root / "conn"

    @property
    def exchange_dir(self) -> Path:
        """The grader's folder for plain-data steps (root-owned; ``out/`` folders are given)."""
        return self.root / "exchange"

    def give(self, path) -> None:
        """Hand one folder to the kernel's uid (an answer folder of the exchange)."""
        if os.geteuid() == 0:
            os.chown(path, self.uid, self.uid)

    def _give(self, path: Path) -> None:
        """Make ``path`` (and below) belong to the sandbox's uid."""
        if os.geteuid() != 0:
            return
        for dirpath, dirnames, filenames in os.walk(path):
            os.chown(dirpath, self.uid, self.uid)
            for name in filenames:
                os.chown(os.path.join(dirpath, name), self.uid, self.uid)
        os.chmod(path, 0o700)

    def prepare_connection_file(self, path) -> None:
        """Called after the connection file is written: the kernel must be able to read it."""
        self._give(self.conn_dir)

    def seed_home(self) -> None:
        """Copy matplotlib's font list into the private HOME (building it costs seconds)."""
        target = self.home / ".cache" / "matplotlib"
        for font_list in _matplotlib_cache_dir().glob("fontlist-*.json"):
            target.mkdir(parents=True, exist_ok=True)
            shutil.copy2(font_list, target / font_list.name)
        self._give(self.home)

    # ------------------------------------------------------------------ command
    def python_dirs(self) -> list[Path]:
        """The Python installation and its package folders (shortest paths first)."""
        dirs = {Path(sys.prefix), Path(sys.base_prefix), Path(sys.exec_prefix),
                Path(os.path.realpath(sys.executable)).parent.parent}
        for entry in sys.path:
            p = Path(entry or ".").resolve()
            if p.exists() and ("site-packages" in p.parts or "dist-packages" in p.parts
                               or p.name.startswith("lib-dynload")
                               or p.name.startswith("python3")):
                dirs.add(p)
        return sorted(dirs, key=lambda d: (len(d.parts), str(d)))

    def command(self, kernel_cmd: list[str], cwd) -> list[str]:
        """The bwrap command line that runs ``kernel_cmd`` in this sandbox."""
        lim = self.limits
        cmd = [_tool("bwrap") or "bwrap", "--die-with-parent", "--new-session",
               "--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts",
               "--unshare-cgroup-try", "--hostname", "grader",
               # the kernel would watch for a parent pid it cannot see from its namespace
               "--unsetenv", "JPY_PARENT_PID"]
        for d in SYSTEM_DIRS:
            if os.path.islink(d):
                cmd += ["--symlink", os.readlink(d), d]
            elif os.path.isdir(d):
                cmd += ["--ro-bind", d, d]
        cmd += ["--dev", "/dev", "--proc", "/proc"]
        for device in sorted(Path("/dev").glob("nvidia*")):  # GPUs stay usable (clip profile)
            cmd += ["--dev-bind", str(device), str(device)]
        if lim.tmp_size:
            cmd += ["--size", str(lim.tmp_size)]
        cmd += ["--perms", "1777", "--tmpfs", "/tmp"]
        made = {"/", "/tmp"}

        def parents(path: Path) -> list[str]:
            # bwrap would copy the host's modes for the folders it creates on the way (e.g.
            # /root is 0700): create them traversable first
            out = []
            for parent in reversed(path.parents):
                if str(parent) not in made:
                    made.add(str(parent))
                    out += ["--perms", "0755", "--dir", str(parent)]
            return out

        seen: list[str] = []
        overlays = [x for x in self.readable if isinstance(x, tuple)]
        for p in self.python_dirs() + [Path(x) for x in self.readable
                                       if not isinstance(x, tuple)]:
            p = Path(os.path.realpath(p))
            if not p.exists() or \
                    any(str(p) == s or str(p).startswith(s + "/") for s in seen):
                continue
            seen.append(str(p))
            cmd += parents(p) + ["--ro-bind", str(p), str(p)]
        for src, dest in overlays:  # (source, path inside): e.g. the stripped package
            dest = Path(os.path.realpath(dest))
            cmd += parents(dest) + ["--ro-bind", str(src), str(dest)]
        for p in self.hidden:
            p = Path(os.path.realpath(p))
            if any(str(p) == s or str(p).startswith(s + "/") for s in seen):
                if p.is_file():  # a cache file that holds an answer: an empty file instead
                    cmd += ["--ro-bind", "/dev/null", str(p)]
                else:
                    cmd += ["--tmpfs", str(p)]
        for sub in (self.workdir, self.home, self.conn_dir, self.exchange_dir):
            cmd += parents(sub) + ["--bind", str(sub), str(sub)]
        cmd += ["--chdir", str(cwd)]
        cmd += ["--", _tool("setpriv") or "setpriv", f"--reuid={self.uid}",
                f"--regid={self.uid}", "--clear-groups", "--inh-caps=-all",
                "--bounding-set=-all", "--no-new-privs"]
        cmd += ["--", _tool("prlimit") or "prlimit", "--core=0"]
        if lim.memory:
            cmd.append(f"--data={lim.memory}")
        if lim.procs:
            cmd.append(f"--nproc={lim.procs}")
        if lim.cpu:
            cmd.append(f"--cpu={lim.cpu}:{lim.cpu + 5}")
        if lim.file_size:
            cmd.append(f"--fsize={lim.file_size}")
        return cmd + ["--"] + list(kernel_cmd)

    def environment(self, env: dict) -> dict:
        """The kernel's environment: the grader's choice of variables, HOME inside the sandbox."""
        out = {k: v for k, v in env.items()
               if k in PASSED_ENV or k.startswith(PASSED_PREFIXES)
               or k in ("MPLBACKEND", "PYTHONDONTWRITEBYTECODE")}
        out.update(HOME=str(self.home), TMPDIR="/tmp", USER="student", LOGNAME="student",
                   MPLCONFIGDIR=str(self.home / ".cache" / "matplotlib"),
                   JUPYTER_RUNTIME_DIR=str(self.home / "runtime"),
                   IPYTHONDIR=str(self.home / ".ipython"))
        out.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
        return out

    def describe_exit(self, returncode: int | None) -> str:
        """Why the sandboxed kernel ended, from bwrap's exit status (128 + signal number)."""
        if returncode is None:
            return ""
        sig = returncode - 128 if returncode > 128 else (-returncode if returncode < 0 else 0)
        if sig == signal.SIGXCPU:
            return f"killed at the CPU time limit of {self.limits.cpu} s (--cpu-time)"
        if sig == signal.SIGXFSZ:
            return (f"killed for writing a file larger than {format_size(self.limits.file_size)}"
                    " (file size limit)")
        if sig:
            try:
                name = signal.Signals(sig).name
            except ValueError:
                name = f"signal {sig}"
            return f"killed by {name}"
        return f"exit status {returncode}"


def limit_note(ename: str, evalue: str, limits: Limits) -> str:
    """A sentence naming the sandbox limit behind an error, or ``""``."""
    text = f"{ename}: {evalue}".lower()
    if ename == "MemoryError" or "can't allocate memory" in text or "cannot allocate memory" in text \
            or "out of memory" in text:
        if limits.memory:
            return (f"the submission reached the memory limit of {format_size(limits.memory)} "
                    "(--memory)")
    if ename == "BlockingIOError" or "resource temporarily unavailable" in text \
            or "can't start new thread" in text:
        if limits.procs:
            return f"the submission reached the limit of {limits.procs} processes/threads (--max-procs)"
    if "file too large" in text and limits.file_size:
        return f"the submission wrote a file larger than {format_size(limits.file_size)}"
    return ""


@functools.cache
def unavailable_reason() -> str | None:
    """``None`` when the sandbox works here, else why not (checked once per process).

    The self-test runs ``true`` in a sandbox with every option the grader uses and checks that
    the uid is unprivileged, the network is gone and the process limit holds.
    """
    if not sys.platform.startswith("linux"):
        return f"the sandbox needs Linux (this is {sys.platform})"
    for tool, package in (("bwrap", "bubblewrap"), ("setpriv", "util-linux"),
                          ("prlimit", "util-linux")):
        if _tool(tool) is None:
            return (f"{tool} is not installed (Debian: apt-get install {package}; "
                    "`make` installs it when run as root)")
    if os.geteuid() != 0:
        return ("the sandbox must be started as root (it switches each kernel to an "
                "unprivileged uid of its own); run the grader as root or pass --no-sandbox")
    import tempfile
    with tempfile.TemporaryDirectory(prefix="ood-sandbox-test-") as tmp:
        box = Sandbox(Path(tmp), limits=Limits(memory=1 << 30, procs=64, cpu=10))
        probe = ("import os, socket\n"
                 "assert os.getuid() != 0, 'still root'\n"
                 "try:\n    socket.create_connection(('1.1.1.1', 53), timeout=1)\n"
                 "except OSError:\n    pass\nelse:\n    raise SystemExit('network reachable')\n"
                 "open(os.path.join(os.environ['HOME'], 'ok'), 'w').write('ok')\n")
        cmd = box.command([sys.executable, "-I", "-c", probe], box.workdir)
        try:
            res = subprocess.run(cmd, env=box.environment(dict(os.environ)),
                                 capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as err:
            return f"bwrap could not run its self-test ({type(err).__name__}: {err})"
        if res.returncode != 0:
            tail = (res.stderr or res.stdout).strip().splitlines()[-1:] or [""]
            return f"bwrap failed its self-test (exit {res.returncode}): {tail[0]}"
        if not (box.home / "ok").is_file():
            return "bwrap failed its self-test: the private HOME is not writable"
    return None
