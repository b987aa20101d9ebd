"""The course runner (`python -m ood_utils course`) on a small synthetic course."""
import nbformat
from nbformat.v4 import new_code_cell, new_notebook

from ood_utils import __main__ as cli
from ood_utils.run import course_notebooks


def _write(path, *sources):
    nb = new_notebook(cells=[new_code_cell(s) for s in sources])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


def _course(tmp_path, monkeypatch):
    books = tmp_path / "notebooks"
    books.mkdir()
    _write(books / "01_fine.ipynb", "import os\nprint('profile', os.environ['OOD_PROFILE'])")
    _write(books / "02_broken.ipynb", "x = 1", "raise ValueError('planted failure')", "y = 2")
    _write(books / "03_after.ipynb", "print('still runs')")
    monkeypatch.setenv("OOD_NOTEBOOKS_DIR", str(books))
    monkeypatch.setenv("OOD_RESULTS_DIR", str(tmp_path / "results"))
    return books


def test_only_selects_by_number_or_name(tmp_path, monkeypatch):
    _course(tmp_path, monkeypatch)
    assert [p.name for p in course_notebooks(["01", "03_after"])] == ["01_fine.ipynb", "03_after.ipynb"]
    assert [p.name for p in course_notebooks()] == ["01_fine.ipynb", "02_broken.ipynb", "03_after.ipynb"]


def test_failing_cell_is_reported_and_the_rest_still_runs(tmp_path, monkeypatch, capsys):
    _course(tmp_path, monkeypatch)
    code = cli.main(["course", "--profile", "miniclip", "--cell-timeout", "60"])
    out = capsys.readouterr()
    text = out.out + out.err
    assert code == 1
    assert "ok      01_fine.ipynb" in text and "ok      03_after.ipynb" in text
    assert "FAILED  02_broken.ipynb" in text
    assert "ValueError" in text and "planted failure" in text
    executed = nbformat.read(tmp_path / "results" / "executed" / "miniclip" / "01_fine.ipynb", 4)
    assert "profile miniclip" in executed.cells[0].outputs[0]["text"]


def test_only_a_passing_notebook_exits_zero(tmp_path, monkeypatch, capsys):
    _course(tmp_path, monkeypatch)
    assert cli.main(["course", "--only", "01"]) == 0
    assert "Results for profile miniclip" in capsys.readouterr().out
