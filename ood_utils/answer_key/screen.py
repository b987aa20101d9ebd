"""Static screen of the student's cells: the points must measure the student's own code.

Before the grader runs a submission it screens every code cell the student controls (every
cell that is not restored from the instructor copy) for two things:

* **routes around the grading**: references to the self-checks (``checks``, ``check_*``), the
  answer key (``ood_utils.answer_key.expected``), ``builtins``/``__builtins__``, ``sys.modules``,
  ``importlib``/``__import__``, ``exec``/``eval``/``compile``, ``getattr``/``setattr``/
  ``delattr``/``globals``/``vars``, ``get_ipython`` (e.g. ``set_custom_exc``),
  ``sys.excepthook``, ``inspect``, ``ctypes``, ``gc``, ``pickle``, ``subprocess``, dunder
  attributes (``__dict__``, ``__code__``, ...), ``open`` or strings naming ``.ipynb``/``.py``
  files, assignments to attributes of modules or other global objects (``metrics.auroc =
  ...``), and rebinding a name that the notebook's locked cells define (``metrics = ...``);
* **the reference implementation** of the notebook's exercises: the functions the graded
  self-check compares with (read from :mod:`ood_utils.answer_key.checks`) and the course functions whose
  name contains the exercise's (``knn_scores_exercise`` -> ``knn_scores``), whether named
  directly, through an attribute, an import alias or a string.

Other ``ood_utils`` helpers (e.g. ``mahalanobis_scores`` in the k-means notebook) stay
allowed. A flagged cell is not run; the graded parts that follow it, up to the next exercise
cell, earn 0 with status ``rejected`` and a message naming what was found.

The screen reads code; it does not run it. Its rules are derived from cell metadata (nbgrader
``solution``/``grade``/``locked``) and from :mod:`ood_utils.answer_key.checks`, so new exercises need no
entry here. :func:`function_findings` applies the same rules to a function object; the
self-checks call :func:`warn_if_suspicious` so that students learn before they submit.
"""
from __future__ import annotations

import ast
import functools
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from ..course.cells import cell_source, is_graded_part, is_locked, is_solution, nbgrader_meta
from .registry import reference_names

__all__ = ["Finding", "IntegrityWarning", "exercise_references", "screen_source",
           "screen_notebook", "function_findings", "warn_if_suspicious"]

PACKAGE = Path(__file__).resolve().parents[1]  # ood_utils
DENY_NAMES = {
    "checks": "the self-checks", "builtins": "builtins", "__builtins__": "builtins",
    "__import__": "__import__", "importlib": "importlib", "exec": "exec", "eval": "eval",
    "compile": "compile", "globals": "globals()", "locals": "locals()", "vars": "vars()",
    "getattr": "getattr", "setattr": "setattr", "delattr": "delattr",
    "get_ipython": "get_ipython", "inspect": "inspect", "ctypes": "ctypes", "gc": "gc",
    "pickle": "pickle", "marshal": "marshal", "dill": "dill", "pydoc": "pydoc",
    "runpy": "runpy", "pkgutil": "pkgutil", "subprocess": "subprocess", "shelve": "shelve",
    "nbformat": "nbformat", "nbclient": "nbclient", "IPython": "IPython",
    "ipykernel": "ipykernel", "breakpoint": "breakpoint",
    "EXPECTED": "the answer key", "get_expected": "the answer key",
}
DENY_MODULES = {"builtins", "importlib", "inspect", "ctypes", "gc", "pickle", "marshal", "dill",
                "pydoc", "runpy", "pkgutil", "subprocess", "shelve", "nbformat", "nbclient",
                "IPython", "ipykernel", "multiprocessing", "code", "codeop", "types",
                "ood_utils.answer_key.checks", "ood_utils.answer_key.expected", "ood_utils.answer_key.screen",
                "ood_utils.grader.grading", "ood_utils.grader.execute", "ood_utils.grader.sandbox"}
DENY_ATTRS = {
    "checks": "the self-checks", "expected": "the answer key", "EXPECTED": "the answer key",
    "get_expected": "the answer key", "modules": "sys.modules", "excepthook": "sys.excepthook",
    "displayhook": "sys.displayhook", "settrace": "sys.settrace", "setprofile": "sys.setprofile",
    "_getframe": "frames", "monitoring": "sys.monitoring", "meta_path": "the import system",
    "path_hooks": "the import system", "set_custom_exc": "IPython's exception handling",
    "showtraceback": "IPython's exception handling", "run_cell": "IPython",
    "run_line_magic": "IPython", "run_cell_magic": "IPython", "system": "os.system",
    "popen": "os.popen", "execv": "os.exec*", "execve": "os.exec*", "execl": "os.exec*",
    "execlp": "os.exec*", "execvp": "os.exec*", "spawnv": "os.spawn*", "spawnl": "os.spawn*",
    "posix_spawn": "os.posix_spawn",
    "import_module": "importlib", "reload": "importlib", "exec_module": "the import system",
    "load_module": "the import system", "f_globals": "frames", "f_locals": "frames",
    "f_back": "frames", "tb_frame": "frames", "gi_frame": "frames", "attrgetter": "getattr",
    "methodcaller": "getattr",
}
ALLOWED_DUNDERS = {"__name__", "__doc__", "__init__", "__call__", "__len__", "__getitem__",
                   "__iter__", "__next__", "__enter__", "__exit__", "__repr__", "__str__",
                   "__class_getitem__", "__future__", "__main__"}


class IntegrityWarning(UserWarning):
    """A self-check saw a function that uses the reference or the grading machinery."""


@dataclass
class Finding:
    """A flagged student cell: what was found and which graded parts it costs."""

    cell_index: int
    label: str
    problems: list[str]
    parts: list[str] = field(default_factory=list)

    def message(self) -> str:
        return (f"{self.label} was not run by the grader: it " + "; ".join(self.problems[:3])
                + ". Write the exercise with your own code (numpy/torch), without the "
                  "reference implementation or the grading tools")


# --------------------------------------------------------------------------- reference names
@functools.cache
def _package_functions() -> dict[str, tuple[str, ...]]:
    """``{dotted module: top-level public function and class names}`` of the methods and
    course wings (by AST: nothing is imported)."""
    out = {}
    for wing in ("methods", "course"):
        for path in sorted((PACKAGE / wing).glob("*.py")):
            try:
                tree = ast.parse(path.read_text(encoding="utf-8"))
            except (OSError, SyntaxError):
                continue
            out[f"{wing}.{path.stem}"] = tuple(
                n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))
                and not n.name.startswith("_"))
    return out


def _check_references(check_name: str) -> frozenset[str]:
    """What ``check_name`` declares it compares with (:mod:`ood_utils.answer_key.registry`)."""
    return reference_names(check_name)


def _stem_references(function_name: str) -> set[str]:
    """Course functions whose name contains the exercise's (``knn_scores_exercise`` -> ...)."""
    stem = function_name[: -len("_exercise")] if function_name.endswith("_exercise") else ""
    if len(stem) < 3:
        return set()
    words = set(stem.lower().split("_"))  # train_probe -> train_linear_probe too
    return {name for names in _package_functions().values() for name in names
            if stem in name or words <= set(name.lower().split("_"))}


def references_for_check(check_name: str, function_name: str = "") -> set[str]:
    """Reference names behind ``checks.<check_name>`` (plus the exercise-name rule)."""
    return set(_check_references(check_name)) | _stem_references(function_name)


def exercise_references(nb) -> dict[str, set[str]]:
    """``{exercise grade_id: reference names}`` for an instructor notebook.

    An exercise owns the graded cells that follow it up to the next exercise cell; its
    references are what their ``checks.check_*`` calls compare with, plus the course functions
    named like the functions it defines.
    """
    out: dict[str, set[str]] = {}
    current = None
    for cell in nb.cells:
        if cell.get("cell_type") != "code":
            continue
        if is_solution(cell) and nbgrader_meta(cell).get("grade_id"):
            current = nbgrader_meta(cell)["grade_id"]
            refs = out.setdefault(current, set())
            tree = _parse(cell_source(cell))
            for node in ast.walk(tree) if tree is not None else ():
                if isinstance(node, ast.FunctionDef):
                    refs |= _stem_references(node.name)
        elif current and is_graded_part(cell):
            tree = _parse(cell_source(cell))
            for node in ast.walk(tree) if tree is not None else ():
                if isinstance(node, ast.Attribute) and node.attr.startswith("check_"):
                    out[current] |= set(_check_references(node.attr))
    return out


# --------------------------------------------------------------------------- parsing
def _parse(source: str):
    """AST of a cell after IPython's transformations (magics become calls); None if invalid."""
    try:
        from IPython.core.inputtransformer2 import TransformerManager
        source = TransformerManager().transform_cell(source)
    except Exception:  # IPython missing or a transformer failed: parse the raw text
        pass
    try:
        return ast.parse(source)
    except (SyntaxError, ValueError):
        return None


def _bound_names(tree) -> set[str]:
    """Names a cell defines for later cells: top-level imports, defs, classes and assignments.

    Loop variables and names bound inside functions or comprehensions are left out (an honest
    exercise may reuse ``i`` or ``key``).
    """
    names: set[str] = set()
    if tree is None:
        return names

    def targets(node):
        for n in ast.walk(node):
            if isinstance(n, ast.Name):
                names.add(n.id)

    def walk(body):
        for stmt in body:
            if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(stmt.name)
            elif isinstance(stmt, (ast.Import, ast.ImportFrom)):
                names.update((a.asname or a.name).split(".")[0] for a in stmt.names)
            elif isinstance(stmt, ast.Assign):
                for t in stmt.targets:
                    targets(t)
            elif isinstance(stmt, (ast.AnnAssign, ast.AugAssign)):
                targets(stmt.target)
            for field_name in ("body", "orelse", "finalbody"):
                inner = getattr(stmt, field_name, None)
                if isinstance(inner, list) and not isinstance(
                        stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    walk(inner)
            for handler in getattr(stmt, "handlers", []) or []:
                walk(handler.body)

    walk(tree.body)
    return names


def notebook_context(instructor) -> dict:
    """What the screen needs from the instructor notebook (references, protected names)."""
    locked, solution = set(), set()
    modules, imported = set(), {}
    for cell in instructor.cells:
        if cell.get("cell_type") != "code":
            continue
        tree = _parse(cell_source(cell))
        (solution if is_solution(cell) else locked).update(_bound_names(tree))
        for node in ast.walk(tree) if tree is not None else ():
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                modules.update((a.asname or a.name).split(".")[0] for a in node.names)
                for a in node.names:
                    bound = (a.asname or a.name).split(".")[0]
                    if isinstance(node, ast.Import):
                        imported[bound] = a.name if a.asname else a.name.split(".")[0]
                    else:
                        imported[bound] = f"{node.module}.{a.name}"
    refs = set().union(*exercise_references(instructor).values()) \
        if exercise_references(instructor) else set()
    return {"references": refs, "protected": locked - solution, "modules": modules,
            "imported": imported}


# --------------------------------------------------------------------------- the screen
def screen_source(source: str, references=(), protected=(), modules=(),
                  imported=None) -> list[str]:
    """Problems found in one student cell (``[]`` when it is clean).

    ``references``: names of the reference implementation; ``protected``: names the locked
    cells define (not to be rebound); ``modules``: names the notebook imports;
    ``imported``: ``{name: module}`` of the locked cells' imports (importing the same module
    under the same name again is not a rebinding).
    """
    imported = dict(imported or {})
    tree = _parse(source)
    if tree is None:
        return []  # it cannot run either (the kernel reports the SyntaxError)
    references, protected = set(references), set(protected)
    modules = set(modules) | {(a.asname or a.name).split(".")[0] for n in ast.walk(tree)
                              if isinstance(n, (ast.Import, ast.ImportFrom)) for a in n.names}
    found: list[str] = []

    def add(line, text):
        item = f"{text} (line {line})"
        if item not in found:
            found.append(item)

    def ref_or_route(name: str, line: int, what: str) -> None:
        if name in references:
            add(line, f"uses `{name}`, the reference implementation of this notebook's "
                      f"exercise ({what})")
        elif name.startswith("check_"):
            add(line, f"reaches the self-check `{name}` ({what})")

    scopes: list[set[str]] = []  # local names of the enclosing functions

    def root(node):
        while isinstance(node, (ast.Attribute, ast.Subscript, ast.Call)):
            node = node.value if not isinstance(node, ast.Call) else node.func
        return node.id if isinstance(node, ast.Name) else None

    def check_target(target, line):
        if isinstance(target, (ast.Tuple, ast.List)):
            for elt in target.elts:
                check_target(elt, line)
        elif isinstance(target, ast.Starred):
            check_target(target.value, line)
        elif isinstance(target, (ast.Attribute, ast.Subscript)):
            base = root(target)
            local = any(base in s for s in scopes)
            if isinstance(target, ast.Attribute) and not local:
                add(line, f"assigns to the attribute `{ast.unparse(target)}` of a global "
                          "object (patching a module or the checks)")
            elif isinstance(target, ast.Subscript) and not local and \
                    (base in modules or base in protected):
                add(line, f"changes `{ast.unparse(target)}`, which belongs to a module or to "
                          "the notebook")
        elif isinstance(target, ast.Name) and not scopes and target.id in protected:
            add(line, f"rebinds `{target.id}`, a name the notebook's locked cells define")

    class Visitor(ast.NodeVisitor):
        def visit_FunctionDef(self, node):
            if not scopes and node.name in protected:
                add(node.lineno, f"redefines `{node.name}`, a name the notebook's locked "
                                 "cells define")
            ref_or_route(node.name, node.lineno, "defined")
            for d in node.decorator_list:
                self.visit(d)
            a = node.args
            params = {x.arg for x in a.posonlyargs + a.args + a.kwonlyargs}
            params |= {x.arg for x in (a.vararg, a.kwarg) if x is not None}
            for default in a.defaults + a.kw_defaults:
                if default is not None:
                    self.visit(default)
            assigned = {n.id for b in node.body for n in ast.walk(b)
                        if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
            globals_ = {g for b in node.body for n in ast.walk(b)
                        if isinstance(n, (ast.Global, ast.Nonlocal)) for g in n.names}
            scopes.append((params | assigned) - globals_)
            for stmt in node.body:
                self.visit(stmt)
            scopes.pop()

        visit_AsyncFunctionDef = visit_FunctionDef

        def visit_Lambda(self, node):
            a = node.args
            scopes.append({x.arg for x in a.posonlyargs + a.args + a.kwonlyargs})
            self.visit(node.body)
            scopes.pop()

        def visit_ClassDef(self, node):
            if not scopes and node.name in protected:
                add(node.lineno, f"redefines `{node.name}`, a name the notebook's locked "
                                 "cells define")
            self.generic_visit(node)

        def visit_Global(self, node):
            for name in node.names:
                if name in protected:
                    add(node.lineno, f"rebinds `{name}` (global), a name the notebook's "
                                     "locked cells define")

        def visit_Name(self, node):
            if node.id in DENY_NAMES:
                add(node.lineno, f"uses `{node.id}` ({DENY_NAMES[node.id]})")
            ref_or_route(node.id, node.lineno, "by name")
            if isinstance(node.ctx, (ast.Store, ast.Del)) and not scopes \
                    and node.id in protected:
                add(node.lineno, f"rebinds `{node.id}`, a name the notebook's locked cells "
                                 "define")

        def visit_Attribute(self, node):
            attr = node.attr
            if attr in DENY_ATTRS:
                add(node.lineno, f"uses `.{attr}` ({DENY_ATTRS[attr]})")
            elif attr.startswith("__") and attr.endswith("__") and attr not in ALLOWED_DUNDERS:
                add(node.lineno, f"uses the special attribute `{attr}`")
            ref_or_route(attr, node.lineno, "as an attribute")
            self.generic_visit(node)

        def _import(self, node, module):
            top = module.split(".")[0]
            if module in DENY_MODULES or top in DENY_MODULES:
                add(node.lineno, f"imports `{module}`")
            for alias in node.names:
                full = f"{module}.{alias.name}" if module else alias.name
                if alias.name == "*" and top == "ood_utils":
                    add(node.lineno, f"imports everything from `{module}`")
                if full in DENY_MODULES or alias.name.split(".")[0] in DENY_MODULES:
                    add(node.lineno, f"imports `{full}`")
                if alias.name in DENY_NAMES:
                    add(node.lineno, f"imports `{alias.name}` ({DENY_NAMES[alias.name]})")
                ref_or_route(alias.name.split(".")[-1], node.lineno, "imported")
                bound = (alias.asname or alias.name).split(".")[0]
                if not scopes and bound in protected and imported.get(bound) != full:
                    add(node.lineno, f"rebinds `{bound}`, a name the notebook's locked cells "
                                     "define")

        def visit_Import(self, node):
            for alias in node.names:
                self._import(ast.ImportFrom(module=alias.name, names=[], level=0,
                                            lineno=node.lineno), alias.name)
                bound = (alias.asname or alias.name).split(".")[0]
                same = imported.get(bound) == (alias.name if alias.asname
                                               else alias.name.split(".")[0])
                if not scopes and bound in protected and not same:
                    add(node.lineno, f"rebinds `{bound}`, a name the notebook's locked cells "
                                     "define")

        def visit_ImportFrom(self, node):
            module = ("." * (node.level or 0)) + (node.module or "")
            if node.level:
                add(node.lineno, "uses a relative import")
            self._import(node, module)

        def visit_Constant(self, node):
            if isinstance(node.value, str):
                text = node.value
                for name in sorted(references):
                    if name in text:
                        add(node.lineno, f"names `{name}`, the reference implementation, in "
                                         "a string")
                if ".ipynb" in text or text.rstrip().endswith((".py", ".pyc")):
                    add(node.lineno, f"names a notebook or a source file in the string "
                                     f"{text[:40]!r}")

        def _targets(self, node, targets):
            for t in targets:
                check_target(t, node.lineno)
            self.generic_visit(node)

        def visit_Assign(self, node):
            self._targets(node, node.targets)

        def visit_AugAssign(self, node):
            self._targets(node, [node.target])

        def visit_AnnAssign(self, node):
            self._targets(node, [node.target])

        def visit_Delete(self, node):
            self._targets(node, node.targets)

        def visit_For(self, node):
            self._targets(node, [node.target])

        visit_AsyncFor = visit_For

        def visit_withitem(self, node):
            if node.optional_vars is not None:
                check_target(node.optional_vars, getattr(node.context_expr, "lineno", 0))
            self.generic_visit(node)

        def visit_NamedExpr(self, node):
            self._targets(node, [node.target])

    Visitor().visit(tree)
    return found


def screen_notebook(nb, instructor) -> list[Finding]:
    """Screen every student-controlled code cell of a (restored) submission.

    ``nb`` is the submission after :func:`ood_utils.grader.grading.restore_locked_cells` (its locked
    cells are the instructor's). Returns one :class:`Finding` per flagged cell, with the graded
    parts it costs: those after it up to the next exercise cell (if none lies in between, the
    parts after that next exercise, which a cell placed just before it could affect).
    """
    ctx = notebook_context(instructor)
    exercise_ids = {nbgrader_meta(c).get("grade_id") for c in instructor.cells
                    if is_solution(c) and nbgrader_meta(c).get("grade_id")}
    findings = []
    for i, cell in enumerate(nb.cells):
        if cell.get("cell_type") != "code" or is_locked(cell):
            continue
        problems = screen_source(cell_source(cell), ctx["references"], ctx["protected"],
                                 ctx["modules"], ctx["imported"])
        if not problems:
            continue
        gid = nbgrader_meta(cell).get("grade_id")
        label = f"exercise cell `{gid}`" if gid else f"code cell {i}"
        parts: list[str] = []
        for later in nb.cells[i + 1:]:
            if nbgrader_meta(later).get("grade_id") in exercise_ids and is_solution(later) \
                    and parts:
                break
            if is_graded_part(later):
                parts.append(nbgrader_meta(later)["grade_id"])
        findings.append(Finding(i, label, problems, parts))
    return findings


# --------------------------------------------------------------------------- functions
def _code_objects(code) -> list:
    """A code object and every code object nested in it (functions, lambdas, comprehensions)."""
    out, todo, seen = [], [code], set()
    while todo:
        current = todo.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        out.append(current)
        todo.extend(c for c in current.co_consts if hasattr(c, "co_names"))
    return out


def _code_names(code) -> set[str]:
    """Global/attribute names and string constants used by a code object and nested ones."""
    names: set[str] = set()
    for c in _code_objects(code):
        names |= set(c.co_names) | {k for k in c.co_consts if isinstance(k, str)}
    return names


def _global_names(code) -> set[str]:
    """Names a code object (and nested ones) looks up as globals/builtins or imports."""
    import dis

    return {ins.argval for c in _code_objects(code) for ins in dis.get_instructions(c)
            if ins.opname in ("LOAD_GLOBAL", "LOAD_NAME", "IMPORT_NAME", "STORE_GLOBAL")
            and isinstance(ins.argval, str)}


def function_findings(fn, check_name: str = "") -> list[str]:
    """Problems the screen would report for a student function (by its code, not its text)."""
    code = getattr(fn, "__code__", None)
    if code is None:
        return []
    refs = references_for_check(check_name, getattr(fn, "__name__", ""))
    names = _code_names(code) | set(code.co_freevars)
    free_names = _global_names(code) | set(code.co_freevars)  # not attributes: model.eval() is fine
    found = []
    for name in sorted(names):
        if name in refs:
            found.append(f"uses `{name}`, the reference implementation of this exercise")
        elif name.startswith("check_") or (name in free_names and name in (
                "checks", "builtins", "__builtins__", "__import__", "importlib", "exec", "eval",
                "setattr", "get_ipython")):
            found.append(f"uses `{name}`, which the grader does not accept in an exercise")
    glob = getattr(fn, "__globals__", {}) or {}
    ref_objects = _reference_objects(frozenset(refs))
    values = [(name, glob.get(name)) for name in code.co_names]
    for name, cell in zip(code.co_freevars, getattr(fn, "__closure__", None) or ()):
        try:
            values.append((name, cell.cell_contents))
        except ValueError:  # an empty cell
            pass
    for name, obj in values:
        if obj is not None and any(obj is r for r in ref_objects) and name not in refs:
            found.append(f"uses `{name}`, an alias of the reference implementation")
    return found


def _reference_objects(refs: frozenset) -> list:
    import importlib as _importlib
    out = []
    for stem, names in _package_functions().items():
        hit = [n for n in names if n in refs]
        if not hit:
            continue
        try:
            module = _importlib.import_module(f"ood_utils.{stem}")
        except Exception:  # a module that cannot be imported here has no objects to compare
            continue
        out.extend(getattr(module, n) for n in hit if hasattr(module, n))
    return out


def warn_if_suspicious(fn, check_name: str) -> None:
    """Warn (``IntegrityWarning``) when ``fn`` uses the reference or the grading tools."""
    try:
        found = function_findings(fn, check_name)
    except Exception:  # the warning is a courtesy: never break a self-check
        return
    if found:
        warnings.warn(
            f"{getattr(fn, '__name__', 'your function')} " + "; ".join(found) + ". The grader "
            "gives 0 points for this exercise: write it with your own code.",
            IntegrityWarning, stacklevel=3)
