"""ood_utils.workspace: the student folder (never overwrites a student's work) and `lab`."""
import datetime as dt
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import nbformat
import pytest

from ood_utils.grader.release import release_files
from ood_utils.workspace import RECORD, free_port, lab_command, prepare_workspace

ROOT = Path(__file__).resolve().parents[1]
DAY = dt.date(2026, 3, 9)


@pytest.fixture
def source(tmp_path):
    src = tmp_path / "instructor"
    src.mkdir()
    shutil.copy(ROOT / "notebooks" / "02_knn.ipynb", src)
    return src


def _edit_instructor(src):
    nb = nbformat.read(src / "02_knn.ipynb", as_version=4)
    nb.cells.append(nbformat.v4.new_markdown_cell("A new remark from the instructor."))
    nbformat.write(nb, src / "02_knn.ipynb")


def test_first_run_releases_the_student_copies(source, tmp_path):
    folder = tmp_path / "student"
    messages = prepare_workspace(folder, source, today=DAY)
    assert messages == [f"released {folder / '02_knn.ipynb'}"]
    expected = release_files([source / "02_knn.ipynb"], tmp_path / "ref")[0]
    assert (folder / "02_knn.ipynb").read_bytes() == expected.read_bytes()
    assert "BEGIN SOLUTION" not in (folder / "02_knn.ipynb").read_text()
    assert (folder / RECORD).exists()
    assert prepare_workspace(folder, source, today=DAY) == []  # nothing changed: silent


def test_an_edited_notebook_is_never_overwritten(source, tmp_path):
    folder = tmp_path / "student"
    prepare_workspace(folder, source, today=DAY)
    mine = folder / "02_knn.ipynb"
    nb = nbformat.read(mine, as_version=4)
    nb.cells[3].source = "def knn_scores_exercise(*a):\n    return 42  # my work"
    nbformat.write(nb, mine)
    work = mine.read_bytes()
    _edit_instructor(source)
    messages = prepare_workspace(folder, source, today=DAY)
    assert mine.read_bytes() == work
    beside = folder / "02_knn.release-2026-03-09.ipynb"
    assert beside.read_bytes() == release_files([source / "02_knn.ipynb"],
                                                tmp_path / "ref")[0].read_bytes()
    assert len(messages) == 1 and "kept your 02_knn.ipynb" in messages[0] and \
        beside.name in messages[0]
    assert prepare_workspace(folder, source, today=DAY) == []  # told once
    assert mine.read_bytes() == work


def test_an_untouched_notebook_is_updated(source, tmp_path):
    folder = tmp_path / "student"
    prepare_workspace(folder, source, today=DAY)
    _edit_instructor(source)
    messages = prepare_workspace(folder, source, today=DAY)
    assert messages == [f"updated {folder / '02_knn.ipynb'} (you had not changed it)"]
    assert "A new remark from the instructor." in (folder / "02_knn.ipynb").read_text()
    assert not list(folder.glob("*.release-*"))


def test_student_folder_cannot_be_the_instructor_folder(source):
    from ood_utils.grader.release import ReleaseError

    with pytest.raises(ReleaseError, match="cannot be the instructor folder"):
        prepare_workspace(source, source)


def test_lab_command():
    cmd = lab_command(Path("/x/student"), 8123, browser=False, root=True, python="py")
    assert cmd[:3] == ["py", "-m", "jupyterlab"]
    assert "--ServerApp.ip=127.0.0.1" in cmd and "--ServerApp.port=8123" in cmd
    assert "--allow-root" in cmd and "--no-browser" in cmd and "--ServerApp.port_retries=0" in cmd
    assert not any("token" in part.lower() for part in cmd)  # the token travels in the env
    plain = lab_command(Path("/x"), 8123, root=False)
    assert "--allow-root" not in plain and "--no-browser" not in plain


def test_lab_starts_and_wants_the_token(tmp_path):
    """`python -m ood_utils lab` starts JupyterLab (as root too) on 127.0.0.1 with a token."""
    port = free_port(8931)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("JUPYTER_TOKEN", None)
    proc = subprocess.Popen([sys.executable, "-m", "ood_utils", "lab", "--no-browser",
                             "--port", str(port), "--folder", str(tmp_path / "student")],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env={**env, "JUPYTER_CONFIG_DIR": str(tmp_path / "cfg"),
                                 "JUPYTER_RUNTIME_DIR": str(tmp_path / "rt")})
    try:
        url = None
        for line in proc.stdout:
            match = re.match(r"JupyterLab: (http://127\.0\.0\.1:(\d+)/lab\?token=(\w+))", line)
            if match:
                url, got_port, token = match.group(1), int(match.group(2)), match.group(3)
                break
        assert url and got_port == port and len(token) >= 32
        assert (tmp_path / "student" / "02_knn.ipynb").exists()
        deadline = time.monotonic() + 90
        while True:
            try:
                status = urllib.request.urlopen(
                    f"http://127.0.0.1:{port}/api/contents?token={token}", timeout=5)
                names = {item["name"] for item in __import__("json").load(status)["content"]}
                break
            except (urllib.error.URLError, ConnectionError):
                assert proc.poll() is None, "JupyterLab exited"
                assert time.monotonic() < deadline, "JupyterLab did not answer"
                time.sleep(0.5)
        assert "02_knn.ipynb" in names and "notebooks" not in names
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/contents", timeout=5)
        assert err.value.code == 403
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
