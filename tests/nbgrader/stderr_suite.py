"""Graded cells write nothing to stderr: ``make test-nbgrader`` (not collected by ``make test``).

Every instructor notebook runs in a kernel of the course's environment; no graded cell
(nbgrader ``grade: true``) may have a stderr stream or an error, since nbgrader scores either
as 0 points. One notebook: ``pytest tests/nbgrader/stderr_suite.py -k 02_knn``. A module of
its own so that pytest-xdist runs it beside ``nbgrader_suite.py``.
"""
from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

from ood_utils.course.cells import is_graded_part, nbgrader_meta
from ood_utils.grader.execute import execute_notebook

NOTEBOOK_DIR = Path(__file__).resolve().parents[2] / "notebooks"
# nbgrader's default is 30 s per cell; the course's slowest graded-path cells take 17-24 s on
# two busy cores, so a slower machine would fail them: 300 s leaves room and still stops loops
# (README's nbgrader_config.py must say the same; nbgrader_suite.readme_config() checks it)
CELL_TIMEOUT = 300


@pytest.mark.parametrize("stem", sorted(p.stem for p in NOTEBOOK_DIR.glob("*.ipynb")))
def test_graded_cells_write_no_stderr(stem, tmp_path):
    nb = nbformat.read(NOTEBOOK_DIR / f"{stem}.ipynb", as_version=4)
    graded = [i for i, c in enumerate(nb.cells) if is_graded_part(c)]
    res = execute_notebook(nb, cwd=tmp_path, allow_errors=True, cell_timeout=CELL_TIMEOUT,
                           env={"OOD_RESULTS_DIR": str(tmp_path), "OOD_PROFILE": "miniclip",
                                "MPLBACKEND": "Agg"})
    assert res.status == "ok", f"{stem}: the instructor copy fails: {res.ename}: {res.evalue}"
    noisy = {}
    for i in graded:
        text = "".join(o.get("text", "") for o in res.nb.cells[i].outputs
                       if o.output_type == "stream" and o.name == "stderr")
        if text:
            noisy[nbgrader_meta(nb.cells[i])["grade_id"]] = text[-300:]
    assert not noisy, (f"{stem}: graded cells write to stderr (nbgrader scores them 0): "
                       f"{noisy}")
