"""Run the course notebooks in order (``python -m ood_utils course``).

Each notebook is executed in a fresh kernel with nbclient, from the ``notebooks/`` folder, with
the profile passed through ``OOD_PROFILE``. The notebooks record their scores in
``results/<profile>.json``; at the end the results table is printed with the expected value and
pass/fail of every check. Executed copies (with outputs) are kept in
``results/executed/<profile>/`` so the committed notebooks stay output-free.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import nbformat

from .course.profiles import get_profile, notebooks_dir, results_dir



def course_notebooks(only: list[str] | None = None) -> list[Path]:
    """The numbered notebooks ``NN_topic.ipynb`` in order, filtered by number or name."""
    books = sorted(p for p in notebooks_dir().glob("[0-9][0-9]_*.ipynb"))
    if only:
        wanted = [w.removesuffix(".ipynb") for w in only]
        books = [b for b in books if any(b.stem == w or b.stem.split("_")[0] == w for w in wanted)]
        if not books:
            raise SystemExit(f"--only {','.join(only)} matches no notebook in {notebooks_dir()}")
    return books


def run_course(profile: str | None = None, only: list[str] | None = None,
               cell_timeout: int = 900) -> int:
    """Execute the notebooks and print the results table; returns a process exit code."""
    from .grader.execute import describe_failure, execute_notebook
    from .answer_key.expected import get_expected
    from .course.results import format_table, table

    p = get_profile(profile)
    books = course_notebooks(only)
    executed_dir = results_dir() / "executed" / p.name
    executed_dir.mkdir(parents=True, exist_ok=True)
    env = {"OOD_PROFILE": p.name, "MPLBACKEND": "module://matplotlib_inline.backend_inline"}
    print(f"Running {len(books)} notebooks on profile {p.name} ({p.title})")
    failures = []
    total_start = time.time()
    for book in books:
        nb = nbformat.read(book, as_version=4)
        start = time.time()
        result = execute_notebook(nb, cwd=book.parent, env=env, cell_timeout=cell_timeout,
                                  progress=book.stem)
        seconds = time.time() - start
        nbformat.write(result.nb, executed_dir / book.name)
        if result.status == "ok":
            print(f"  ok      {book.name}  ({seconds:.0f} s)")
        else:
            failures.append(book.name)
            print(f"  FAILED  {book.name}  ({seconds:.0f} s): {describe_failure(result)}")
            print(f"          executed copy with the traceback: {executed_dir / book.name}")
    print(f"Notebooks finished in {time.time() - total_start:.0f} s")
    print()
    # the runner joins the recorded results with the answer key's targets
    print(format_table(p.name, expected=get_expected))
    rows = table(p.name, expected=get_expected)
    bad_checks = [r for r in rows if r.get("passed") is False]
    missing = [r for r in rows if r.get("value") is None]
    if failures:
        print(f"\n{len(failures)} notebook(s) failed: {', '.join(failures)}", file=sys.stderr)
        return 1
    if bad_checks:
        print(f"\n{len(bad_checks)} check(s) outside their tolerance", file=sys.stderr)
        return 1
    if missing and not only:
        print(f"\n{len(missing)} check(s) have no result", file=sys.stderr)
        return 1
    return 0
