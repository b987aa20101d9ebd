"""No cell writes to stderr: ``make test-nbgrader`` (not collected by ``make test``).

Every instructor notebook runs in a kernel of the course's environment (nbclient, as nbval
and nbgrader run them); no cell may have a stderr stream (a red box in JupyterLab, which a
student reads as an error; 0 points for a graded cell under nbgrader) and no graded cell an
error. 01 and 07 run a second time on an empty feature cache (``cold``): 01 extracts the
features and 07 trains its baseline, the two places that draw progress bars, which must come
out as plain stdout lines here (``ood_utils/progress.py``). One notebook:
``pytest tests/nbgrader/stderr_suite.py -k 02_knn``. A module of its own so that pytest-xdist
runs it beside ``nbgrader_suite.py``.
"""
from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

from ood_utils.course.cells import nbgrader_meta
from ood_utils.grader.execute import execute_notebook

NOTEBOOK_DIR = Path(__file__).resolve().parents[2] / "notebooks"
# nbgrader's default is 30 s per cell; the course's slowest graded-path cells take 17-24 s on
# two busy cores, so a slower machine would fail them: 300 s leaves room and still stops loops
# (README's nbgrader_config.py must say the same; nbgrader_suite.readme_config() checks it)
CELL_TIMEOUT = 300


COLD = ("01_features", "07_cac_osr")  # draw progress bars on an empty cache
CASES = [(p.stem, False) for p in sorted(NOTEBOOK_DIR.glob("*.ipynb"))] + \
    [(stem, True) for stem in COLD]


@pytest.mark.parametrize("stem,cold", CASES,
                         ids=[f"{s}-cold" if c else s for s, c in CASES])
def test_no_cell_writes_stderr(stem, cold, tmp_path):
    nb = nbformat.read(NOTEBOOK_DIR / f"{stem}.ipynb", as_version=4)
    env = {"OOD_RESULTS_DIR": str(tmp_path), "OOD_PROFILE": "miniclip", "MPLBACKEND": "Agg"}
    if cold:
        (tmp_path / "features").mkdir()
        env["OOD_FEATURES_DIR"] = str(tmp_path / "features")
    res = execute_notebook(nb, cwd=tmp_path, allow_errors=True, cell_timeout=CELL_TIMEOUT,
                           env=env)
    assert res.status == "ok", f"{stem}: the instructor copy fails: {res.ename}: {res.evalue}"
    noisy = {}
    for i, cell in enumerate(res.nb.cells):
        if cell.cell_type != "code":
            continue
        text = "".join(o.get("text", "") for o in cell.outputs
                       if o.output_type == "stream" and o.name == "stderr")
        if text:
            name = nbgrader_meta(nb.cells[i]).get("grade_id", f"cell {i}")
            noisy[name] = text[-300:]
    assert not noisy, (f"{stem}{' (cold cache)' if cold else ''}: cells write to stderr (red "
                       f"boxes in JupyterLab; nbgrader scores a graded one 0): {noisy}")
    if cold and stem == "01_features":  # the extraction's bar came out as lines on stdout
        out = "".join(o.get("text", "") for c in res.nb.cells if c.cell_type == "code"
                      for o in c.outputs if o.output_type == "stream")
        assert re.search(r"\d+/\d+ img in [\d.]+ s", out), out[-1000:]
