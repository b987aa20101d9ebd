"""The stripped build of ``ood_utils`` that a grading sandbox mounts instead of the real one.

For a notebook being graded, :func:`stripped_package` copies the package (without byte-code
caches) and rewrites, with :mod:`ast`, the bodies of the reference implementations named in
:data:`ood_utils.grader.course_parts.STRIP` (and of the checks the grader runs outside the
kernel, whose hints recompute the reference) so that they raise
``NotAvailableWhileGrading``; their source text is gone from the copy. The answer key's
recorded sweep values (``expected.json``) are emptied. Everything else (helpers, plots, data, the locked cells'
tools) stays. :func:`hidden_cache_files` lists the cache files that hold an exercise's
answer; the sandbox does not mount them.
"""
from __future__ import annotations

import ast
import hashlib
import json
import os
import shutil
from pathlib import Path

from . import course_parts
from .verdicts import AllOf, Computed, Probed, SelfCheck, Values

__all__ = ["stripped_package", "hidden_cache_files", "NOT_AVAILABLE", "stripped_names"]

NOT_AVAILABLE = "not available while grading"
_RAISE = ("raise RuntimeError(" + repr(NOT_AVAILABLE + ": the grader removed the reference "
                                       "implementation from this kernel") + ")")
_CHECK_BODY = ("print('@NAME@: decided by the grader outside this kernel (see the feedback "
               "notebook)')")


def _package_root() -> Path:
    return Path(__file__).resolve().parents[1]


def _graded_checks(notebook: str) -> set[str]:
    """The checks (and judges) of ``notebook`` that the grader runs outside the kernel."""
    outside: set[str] = set()

    def walk(v):
        if isinstance(v, AllOf):
            for p in v.parts:
                walk(p)
        elif isinstance(v, SelfCheck):
            outside.add(v.check)
        elif isinstance(v, Probed):
            outside.update((v.check, v.judge_name))
        elif isinstance(v, (Values, Computed)):
            outside.update(getattr(v.judge_fn, "checks", ()))

    for verdict in course_parts.VERDICTS.get(notebook, {}).values():
        walk(verdict)
    return outside


def stripped_names(notebook: str) -> dict[str, set[str] | None]:
    """``{relative module path: names to strip, or None for every function of it}``."""
    out: dict[str, set[str] | None] = {}
    for entry in course_parts.STRIP.get(notebook, []):
        module, _, name = entry.partition(":")
        if not name:
            out[module] = None
        elif out.get(module, set()) is not None:
            out.setdefault(module, set()).add(name)
    return out


class _Stripper(ast.NodeTransformer):
    def __init__(self, names: set[str] | None, keep: set[str], body: str):
        self.names, self.keep, self.body = names, keep, body
        self.depth = 0
        self.changed = []

    def _wanted(self, name: str) -> bool:
        if name in self.keep:
            return False
        return self.names is None or name in self.names

    def _strip_fn(self, node, inside_class=False):
        fmt = self.body.replace("@NAME@", node.name)
        node.body = ast.parse(fmt).body
        node.decorator_list = [d for d in node.decorator_list
                               if not (isinstance(d, ast.Call) and getattr(d.func, "id", "")
                                       == "compares_with")]
        self.changed.append(node.name)
        return node

    def visit_FunctionDef(self, node):
        if self.depth == 0 and self._wanted(node.name):
            return self._strip_fn(node)
        return node

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_ClassDef(self, node):
        if self.depth == 0 and self._wanted(node.name):
            for item in node.body:
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    item.body = ast.parse(_RAISE).body
            self.changed.append(node.name)
        return node


def _strip_source(text: str, names: set[str] | None, keep: set[str], body: str = _RAISE
                  ) -> tuple[str, list[str]]:
    tree = ast.parse(text)
    stripper = _Stripper(names, keep, body)
    tree = stripper.visit(tree)
    ast.fix_missing_locations(tree)
    return ast.unparse(tree) + "\n", stripper.changed


def _empty_sweeps(text: str) -> str:
    """The answer key's data file (``expected.json``) without its sweep tables."""
    doc = json.loads(text)
    doc["sweeps"] = {profile: {} for profile in doc.get("sweeps", {})}
    return json.dumps(doc, indent=1) + "\n"


def stripped_package(notebook: str, cache_dir: Path) -> Path:
    """A stripped copy of ``ood_utils`` for grading ``notebook`` (built once, then reused).

    Returns the folder to mount at the package's own path. The copy lives in ``cache_dir``
    (the grader's private folder), named after a digest of the package and the strip list.
    """
    root = _package_root()
    digest = hashlib.sha256()
    files = sorted(p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts
                   and p.suffix != ".pyc")
    for p in files:
        digest.update(str(p.relative_to(root)).encode())
        digest.update(str(p.stat().st_mtime_ns).encode())
    digest.update(repr(sorted(course_parts.STRIP.get(notebook, []))).encode())
    outside = _graded_checks(notebook)
    digest.update(repr(sorted(outside)).encode())
    target = Path(cache_dir) / f"ood_utils-{notebook}-{digest.hexdigest()[:12]}"
    if target.is_dir():
        return target
    # built under a name of this process's own, then renamed: two grading processes that
    # build the same copy at once (--jobs) never see each other's half-written files
    tmp = target.with_name(f"{target.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    for p in files:
        dest = tmp / p.relative_to(root)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(p, dest)
    for module, names in stripped_names(notebook).items():
        path = tmp / module
        keep = course_parts.KEEP.get(module, set())
        text, _ = _strip_source(path.read_text(encoding="utf-8"), names, keep)
        path.write_text(text, encoding="utf-8")
    # the checks the grader runs outside: their hints recompute the reference
    for path in sorted((tmp / "answer_key" / "checks").glob("*.py")):
        if path.name.startswith("__"):
            continue
        text = path.read_text(encoding="utf-8")
        tree = ast.parse(text)
        names = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
        wanted = (names & outside) | {n for n in names if "reference" in n}
        if wanted:
            new, _ = _strip_source(text, wanted & outside, set(), _CHECK_BODY)
            refs = {n for n in names if "reference" in n}
            if refs:
                new, _ = _strip_source(new, refs, set())
            path.write_text(new, encoding="utf-8")
    # the recorded sweep tables are the answers of the sweep exercises: emptied in the copy
    expected = tmp / "answer_key" / "expected.json"
    expected.write_text(_empty_sweeps(expected.read_text(encoding="utf-8")), encoding="utf-8")
    for p in tmp.rglob("*"):
        p.chmod(0o755 if p.is_dir() else 0o644)
    tmp.chmod(0o755)
    try:
        tmp.rename(target)
    except OSError:  # another process renamed its copy first: keep that one
        shutil.rmtree(tmp, ignore_errors=True)
        if not target.is_dir():
            raise
    return target


def hidden_cache_files(notebook: str, features_dir: Path) -> list[Path]:
    """Cache files of the profile's feature folder that hold an answer of ``notebook``."""
    out = []
    for pattern in course_parts.HIDDEN_CACHES.get(notebook, []):
        out += sorted(Path(features_dir).glob(pattern))
    return out
