"""The package layout: four wings by audience, each importing only downward, no import loop.

The import graph is read from the source (every ``import`` statement, also those inside
functions), so a lazy import cannot hide an upward arrow.
"""
import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "ood_utils"
# lower rank = lower wing; a module may import its own rank or below
RANK = {"methods": 0, "course": 1, "answer_key": 2, "grader": 3}
TOP = 4  # ood_utils/__main__.py, run.py, workspace.py


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Absolute names of the ``ood_utils`` modules that ``path`` imports."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.split(".")[0] == "ood_utils"}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            if module.split(".")[0] != "ood_utils":
                continue
            out.add(module)
            # `from .pkg import submodule` imports the submodule too
            for alias in node.names:
                if (PACKAGE.parent / Path(*module.split("."), alias.name + ".py")).exists():
                    out.add(f"{module}.{alias.name}")
    return out


def _rank(module: str) -> int:
    parts = module.split(".")
    if len(parts) == 1:
        return -1  # the package itself (__version__)
    return RANK.get(parts[1], TOP)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
GRAPH = {name: _imports(path) for name, path in MODULES.items()}


def test_every_module_lives_in_a_wing():
    loose = sorted(n for n in MODULES if n.count(".") == 1
                   and n.split(".")[1] not in RANK
                   and n not in ("ood_utils.__main__", "ood_utils.run", "ood_utils.workspace"))
    assert loose == [], f"modules outside the four wings: {loose}"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_upward_import(module):
    upward = sorted(m for m in GRAPH[module] if _rank(m) > _rank(module))
    assert upward == [], f"{module} imports a higher wing: {upward}"


def test_import_graph_has_no_cycle():
    # imports of a package's own __init__ from its submodules are how Python loads a package,
    # not a dependency: drop edges from a module to a package that contains it
    edges = {m: {d for d in deps if d in MODULES and not m.startswith(d + ".")}
             for m, deps in GRAPH.items()}
    state, stack, cycles = {}, [], []

    def visit(m):
        state[m] = 1
        stack.append(m)
        for d in edges[m]:
            if state.get(d) == 1:
                cycles.append(stack[stack.index(d):] + [d])
            elif d not in state:
                visit(d)
        stack.pop()
        state[m] = 2

    for m in sorted(edges):
        if m not in state:
            visit(m)
    assert cycles == [], f"import cycles: {cycles}"


def test_no_module_reads_the_source_of_another():
    """The old screen parsed the text of checks.py: a dependency no import shows."""
    offenders = []
    for name, path in MODULES.items():
        text = path.read_text(encoding="utf-8")
        for other in ("checks", "registry", "expected"):
            if f'"{other}.py"' in text or f"'{other}.py'" in text:
                offenders.append((name, other))
    assert offenders == []


def test_methods_know_no_profile_file_or_plot():
    for name, path in MODULES.items():
        # progress reads OOD_PROGRESS and asks whether it runs in a kernel (os, sys): the one
        # display helper of every wing, kept in the lowest one so the probe's loop can use it
        if _rank(name) != 0 or name == "ood_utils.methods.progress":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                mods = [a.name for a in node.names] if isinstance(node, ast.Import) \
                    else [node.module or ""]
                for mod in mods:
                    assert mod.split(".")[0] not in ("matplotlib", "pathlib", "os", "nbformat"), \
                        f"{name} imports {mod}: the methods are pure"


def test_checks_declare_their_references():
    from ood_utils.answer_key import checks
    from ood_utils.answer_key.registry import REFERENCES

    public = sorted(n for n in dir(checks) if n.startswith("check_"))
    assert public and sorted(REFERENCES) == public
    # declared references resolve to real functions of the methods and course wings
    from ood_utils.answer_key.registry import reference_objects
    for name in public:
        for obj in reference_objects(name):
            assert callable(obj)
            assert obj.__module__.split(".")[1] in ("methods", "course")
