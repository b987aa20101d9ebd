"""Tests of ood_utils.grader.execute on tiny notebooks built in the tests (one kernel each)."""
import os

import nbformat
import pytest

from ood_utils.grader.execute import ExecutionResult, describe_failure, execute_notebook, truncate_outputs

v4 = nbformat.v4


def notebook(*sources):
    return v4.new_notebook(cells=[v4.new_markdown_cell("# t")]
                           + [v4.new_code_cell(s) for s in sources])


def stdout(cell):
    return "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")


def test_environment_and_cwd_reach_the_kernel(tmp_path, monkeypatch):
    monkeypatch.setenv("OOD_EXEC_TEST_PARENT", "from-parent")
    monkeypatch.setenv("OOD_EXEC_TEST_DROP", "x")
    nb = notebook("import os\nprint(os.getpid())",
                  "print(os.environ['OOD_EXEC_TEST_VALUE'], os.environ['OOD_EXEC_TEST_PARENT'],"
                  " os.environ.get('OOD_EXEC_TEST_DROP', 'gone'))",
                  "print(os.getcwd())")
    res = execute_notebook(nb, cwd=tmp_path, env={"OOD_EXEC_TEST_VALUE": 7,
                                                  "OOD_EXEC_TEST_DROP": None})
    assert isinstance(res, ExecutionResult)
    assert res.status == "ok" and res.cell_index is None and res.ok
    assert int(stdout(nb.cells[1])) != os.getpid()  # its own process
    assert stdout(nb.cells[2]).split() == ["7", "from-parent", "gone"]
    assert os.path.samefile(stdout(nb.cells[3]).strip(), tmp_path)
    assert "OOD_EXEC_TEST_VALUE" not in os.environ
    assert [c.execution_count for c in nb.cells[1:]] == [1, 2, 3]
    assert res.completed == [1, 2, 3] and res.seconds > 0


def test_error_stops_unless_allowed(tmp_path):
    src = ("x = 1", "raise ValueError('bad value\\nsecond line')", "print('after')")
    res = execute_notebook(notebook(*src), cwd=tmp_path)
    assert (res.status, res.cell_index, res.ename, res.evalue) == \
        ("error", 2, "ValueError", "bad value")
    assert res.nb.cells[3].outputs == []  # never ran
    assert describe_failure(res) == "cell 2 failed: ValueError: bad value " \
                                    "(raise ValueError('bad value\\nsecond line'))"

    res = execute_notebook(notebook(*src, "1 / 0"), cwd=tmp_path, allow_errors=True)
    assert res.status == "error" and res.cell_index == 2  # the first failure
    assert stdout(res.nb.cells[3]) == "after\n"
    assert res.errors == {2: ("ValueError", "bad value"), 4: ("ZeroDivisionError",
                                                              "division by zero")}
    assert res.completed == [1, 2, 3, 4]


def test_cell_timeout_and_progress(tmp_path, capsys):
    nb = notebook("import time", "while True:\n    time.sleep(0.01)", "print('never')")
    res = execute_notebook(nb, cwd=tmp_path, cell_timeout=2, allow_errors=True, progress=True)
    assert (res.status, res.cell_index, res.ename) == ("timeout", 2, "CellTimeoutError")
    assert "longer than 2 s" in res.evalue
    assert res.completed == [1] and res.nb.cells[3].outputs == []
    assert res.seconds < 30
    assert "cell" in capsys.readouterr().err  # the tqdm bar


def test_notebook_timeout_counts_all_cells(tmp_path):
    nb = notebook(*["import time; time.sleep(1)"] * 8)
    res = execute_notebook(nb, cwd=tmp_path, cell_timeout=60, timeout=3)
    assert res.status == "timeout"
    assert "notebook time limit of 3 s" in res.evalue
    assert 1 <= len(res.completed) < 8
    assert res.seconds < 15


@pytest.mark.parametrize("kill", ["import os\nos._exit(3)",
                                  "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)"])
def test_dead_kernel(tmp_path, kill):
    res = execute_notebook(notebook("x = 1", kill, "print(x)"), cwd=tmp_path,
                           allow_errors=True)
    assert (res.status, res.cell_index, res.ename) == ("dead_kernel", 2, "DeadKernelError")
    assert describe_failure(res).startswith("cell 2 failed: DeadKernelError")
    assert res.completed == [1]


def test_outputs_are_bounded(tmp_path):
    nb = notebook("print('a' * 50_000)", "for i in range(2000):\n    print(i, 'b' * 100)",
                  "raise KeyError('k' * 5000)")
    res = execute_notebook(nb, cwd=tmp_path, max_output_chars=1000, allow_errors=True)
    for cell in res.nb.cells[1:]:
        text = "".join(o.get("text", "") for o in cell.outputs)
        assert len(text) < 1200
    assert "[output truncated" in stdout(res.nb.cells[1])
    assert res.errors[3][0] == "KeyError"
    assert res.nb.cells[3].outputs[0].output_type == "error"


def test_truncate_outputs_replaces_large_rich_outputs():
    cell = v4.new_code_cell("x")
    cell.outputs = [v4.new_output("stream", name="stdout", text="hello\n"),
                    v4.new_output("display_data", data={"image/png": "A" * 5000}),
                    v4.new_output("display_data", data={"text/plain": "small"})]
    truncate_outputs(cell, 100)
    kinds = [o.output_type for o in cell.outputs]
    assert kinds == ["stream", "stream"]
    assert "dropped" in cell.outputs[1].text
    assert sum(len(o.get("text", "")) for o in cell.outputs) < 200


def test_missing_kernel_is_reported(tmp_path):
    res = execute_notebook(notebook("1"), cwd=tmp_path, kernel_name="no-such-kernel-xyz")
    assert res.status == "error" and res.cell_index is None
    assert "no-such-kernel-xyz" in describe_failure(res)


def test_cwd_must_exist(tmp_path):
    with pytest.raises(ValueError, match="cwd"):
        execute_notebook(notebook("1"), cwd=tmp_path / "missing")


def test_kernels_talk_over_unix_sockets_not_tcp(tmp_path, capfd):
    # the kernel's own start-up messages go to the inherited stderr; over TCP, ipykernel
    # warns that the traffic is unencrypted (once per notebook of `make course`)
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        "import ipykernel.connect\n"
        "info = ipykernel.connect.get_connection_info(unpack=True)\n"
        "print(info['transport'])")])
    res = execute_notebook(nb, cwd=tmp_path)
    assert res.status == "ok", res.evalue
    assert nb.cells[0].outputs[0]["text"].strip() == "ipc"
    assert "without encryption" not in capfd.readouterr().err
