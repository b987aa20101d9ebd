"""ood_utils.methods.progress: widgets in JupyterLab kernels, plain stdout lines in other kernels."""
import nbformat
import pytest
from nbclient import NotebookClient

from ood_utils.methods import progress
from ood_utils.methods.progress import progress_bar, progress_mode


def test_mode_outside_a_kernel_is_tqdm_and_can_be_forced(monkeypatch):
    monkeypatch.delenv("OOD_PROGRESS", raising=False)
    assert progress_mode() == "tqdm"
    for mode in ("widget", "text", "tqdm", "off"):
        monkeypatch.setenv("OOD_PROGRESS", mode)
        assert progress_mode() == mode
    monkeypatch.setenv("OOD_PROGRESS", "fancy")
    with pytest.raises(ValueError, match="OOD_PROGRESS='fancy' is not one of"):
        progress_mode()


def test_text_bar_prints_one_line_on_stdout_and_nothing_on_stderr(monkeypatch, capsys):
    monkeypatch.setenv("OOD_PROGRESS", "text")
    seen = [x for x in progress_bar(range(5), desc="demo", unit="img")]
    assert seen == [0, 1, 2, 3, 4]
    out, err = capsys.readouterr()
    assert err == ""
    lines = out.splitlines()
    assert len(lines) == 1 and lines[0].startswith("demo: 5/5 img in ") and \
        lines[0].endswith(" s")


def test_text_bar_manual_updates_postfix_leave_and_disable(monkeypatch, capsys):
    monkeypatch.setenv("OOD_PROGRESS", "text")
    with progress_bar(total=100, desc="extract", unit="img") as bar:
        bar.update(60)
        bar.update(40)
        bar.set_postfix(loss="0.1234")
    assert capsys.readouterr().out.splitlines()[0].startswith("extract: 100/100 img in ")
    bar = progress_bar(range(3), desc="x")
    bar.set_postfix(loss="0.5")
    list(bar)
    assert capsys.readouterr().out.strip().endswith("(loss=0.5)")
    list(progress_bar(range(3), desc="inner", leave=False))  # an inner loop: no closing line
    list(progress_bar(range(3), desc="off", disable=True))
    assert capsys.readouterr() == ("", "")


def test_text_bar_prints_intermediate_lines_for_long_loops(monkeypatch, capsys):
    monkeypatch.setattr(progress, "TEXT_INTERVAL", 0.0)
    bar = progress._TextBar(range(3), desc="long", interval=0.0, leave=False)
    list(bar)
    assert [line.split(" in ")[0] for line in capsys.readouterr().out.splitlines()] == \
        ["long: 1/3 it", "long: 2/3 it", "long: 3/3 it"]


def test_disable_draws_nothing_in_every_mode(monkeypatch, capsys):
    for mode in ("tqdm", "text", "widget"):
        monkeypatch.setenv("OOD_PROGRESS", mode)
        assert list(progress_bar(range(2), disable=True)) == [0, 1]
    assert capsys.readouterr() == ("", "")


def _run_in_kernel(env_lines: str):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(
        "import os\n" + env_lines +
        "from ood_utils.methods.progress import progress_bar, progress_mode\n"
        "print(progress_mode())\n"
        "for _ in progress_bar(range(3), desc='kernel', unit='img'):\n"
        "    pass\n")]
    NotebookClient(nb, timeout=120, kernel_name="python3").execute()
    return nb.cells[0].outputs


def test_in_a_plain_kernel_the_bar_is_stdout_text():
    outputs = _run_in_kernel("os.environ.pop('JPY_SESSION_NAME', None)\n"
                             "os.environ.pop('OOD_PROGRESS', None)\n")
    streams = [(o.name, o.text) for o in outputs if o.output_type == "stream"]
    text = "".join(t for _, t in streams)
    assert all(name == "stdout" for name, _ in streams), streams
    assert text.startswith("text\n") and "kernel: 3/3 img in " in text


def test_in_a_jupyterlab_kernel_the_bar_is_a_widget():
    # a kernel started by a Jupyter server has JPY_SESSION_NAME (jupyter_server sets it)
    outputs = _run_in_kernel("os.environ['JPY_SESSION_NAME'] = 'demo.ipynb'\n"
                             "os.environ.pop('OOD_PROGRESS', None)\n")
    assert not [o for o in outputs if o.output_type == "stream" and o.name == "stderr"], outputs
    assert any(o.output_type == "stream" and o.text.startswith("widget") for o in outputs)
    widgets = [o for o in outputs if o.output_type == "display_data"
               and "application/vnd.jupyter.widget-view+json" in o.data]
    assert len(widgets) == 1, outputs
