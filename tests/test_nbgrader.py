"""Fast tests of what makes the course gradable by nbgrader (no nbgrader needed).

- ``ood_utils.course.streams``: inside a kernel, warnings raised while checks or student code run
  print on stdout, so nbgrader does not score the graded cell 0 for stderr output;
- ``ood_utils.course.results.record`` writes nothing while nbgrader runs (``NBGRADER_EXECUTION``).

The end-to-end runs with nbgrader itself are in ``tests/nbgrader/nbgrader_suite.py``
(``make test-nbgrader``).
"""
import json
import warnings

import nbformat
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from ood_utils.course import results
from ood_utils.grader.execute import execute_notebook
from ood_utils.course.streams import route_warnings_to_stdout


def _streams(cell):
    return {o.name: o.text for o in cell.outputs if o.output_type == "stream"}


def test_warnings_in_a_kernel_print_on_stdout_after_importing_checks(tmp_path):
    v4 = nbformat.v4
    nb = v4.new_notebook(cells=[
        v4.new_code_cell("import warnings, sys\nwarnings.warn('before the hook', UserWarning)"),
        v4.new_code_cell("from ood_utils.answer_key import checks"),
        v4.new_code_cell("warnings.warn('after the hook', UserWarning)"),
        # a torch UserWarning from correct code: copy-constructing a tensor from a tensor
        v4.new_code_cell("import torch\nx = torch.tensor(torch.ones(3))\nprint(float(x.sum()))"),
        v4.new_code_cell("with warnings.catch_warnings():\n"
                         "    warnings.simplefilter('always')\n"
                         "    warnings.warn('inside catch_warnings', RuntimeWarning)"),
        v4.new_code_cell("print('explicit', file=sys.stderr)"),
        v4.new_code_cell("raise ValueError('still an error')"),
    ])
    res = execute_notebook(nb, cwd=tmp_path, allow_errors=True, cell_timeout=120)
    cells = res.nb.cells
    # the default before the hook: Python prints the warning on stderr
    assert "before the hook" in _streams(cells[0]).get("stderr", "")
    for index, text in ((2, "UserWarning: after the hook"), (3, "UserWarning"),
                        (4, "RuntimeWarning: inside catch_warnings")):
        streams = _streams(cells[index])
        assert "stderr" not in streams, (index, streams)
        assert text in streams.get("stdout", ""), (index, streams)
    assert "3.0" in _streams(cells[3])["stdout"]
    # only warnings move: explicit stderr writes and errors stay what they are
    assert _streams(cells[5]) == {"stderr": "explicit\n"}
    assert [o.output_type for o in cells[6].outputs] == ["error"]


def test_the_hook_stays_out_of_plain_python_processes():
    before = warnings.showwarning
    assert route_warnings_to_stdout() is False  # pytest is not a kernel
    assert warnings.showwarning is before


def _auroc(score_in, score_out):
    labels = np.r_[np.ones(len(score_in)), np.zeros(len(score_out))]
    return 100 * roc_auc_score(labels, np.r_[score_in, score_out])


def test_record_under_nbgrader_leaves_the_course_results_alone(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("OOD_RESULTS_DIR", str(tmp_path))
    monkeypatch.delenv("NBGRADER_EXECUTION", raising=False)
    rng = np.random.default_rng(0)
    a_in, a_out = rng.normal(1, 1, 200), rng.normal(0, 1, 300)
    results.record("knn", a_in, a_out, profile="miniclip", quiet=True)
    path = results.results_path("miniclip")
    before = path.read_bytes()
    npz_before = sorted(p.name for p in results.scores_dir("miniclip").iterdir())
    assert npz_before == ["knn.npz"]

    for stage in ("validate", "autograde"):  # the two values nbgrader 0.9.6 sets
        monkeypatch.setenv("NBGRADER_EXECUTION", stage)
        b_in, b_out = rng.normal(2, 1, 100), rng.normal(0, 1, 150)
        values = results.record("msp", b_in, b_out, profile="miniclip")
        assert values["auroc"] == pytest.approx(_auroc(b_in, b_out), abs=1e-6)
        assert "not recorded: running under nbgrader" in capsys.readouterr().out
        values = results.record("knn", b_in, b_out, profile="miniclip", quiet=True)
        assert capsys.readouterr().out == ""
        assert path.read_bytes() == before
        assert sorted(p.name for p in results.scores_dir("miniclip").iterdir()) == npz_before
    recorded = json.loads(before)["aurocs"]["knn"]
    assert recorded == pytest.approx(_auroc(a_in, a_out), abs=1e-5)

    monkeypatch.setenv("NBGRADER_EXECUTION", "")  # empty: not under nbgrader
    results.record("msp", b_in, b_out, profile="miniclip", quiet=True)
    assert set(results.load("miniclip")["aurocs"]) == {"knn", "msp"}
