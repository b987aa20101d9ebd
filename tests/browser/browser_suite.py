"""The course as a student sees it: JupyterLab in headless Chromium (``make test-browser``).

Not collected by ``make test``. Needs Debian's ``chromium`` (``apt-get install chromium``; the
path is ``$OOD_CHROMIUM`` or ``chromium`` on PATH) and Playwright for Python (pinned in
requirements.txt), which drives that browser through ``executable_path``: Playwright's own
browser download is never used.

One JupyterLab server (the command ``python -m ood_utils lab`` runs, on 127.0.0.1 with a token,
``--allow-root`` as root) serves a student folder made by :func:`ood_utils.workspace.
prepare_workspace` in a temporary folder, with an empty feature cache (cold: 01 extracts the
features, 07 trains its baseline, both with progress bars) unless ``OOD_BROWSER_WARM=1``.
For each graded notebook (``$OOD_BROWSER_NOTEBOOKS``, comma-separated stems, default every
notebook with graded code cells), in course order:

``solved``  open the released copy, paste the instructor's solution into every exercise cell
            through the page (a paste event in the cell's editor), Run All from the Run menu,
            save, then assert: every code cell ran; every check cell shows its pass line; no
            cell shows an error or any stderr output (in the page and in the saved file);
            every plot cell shows an image; progress bars are rendered widgets (01 and 07 on a
            cold cache); the browser console logged no error.
``blank``   a fresh released copy, Run All: execution stops at the first exercise cell, which
            shows NotImplementedError "replace this line with your code"; nothing after it ran.

Screenshots go to ``$OOD_BROWSER_SHOTS`` (default ``build/browser-screenshots/``), one folder
per notebook; the path is printed. One notebook: ``make test-browser
OOD_BROWSER_NOTEBOOKS=02_knn``.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest

from ood_utils.course.cells import nbgrader_meta
from ood_utils.grader.release import RAISE_TEXT
from ood_utils.workspace import free_port, lab_command, prepare_workspace

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK_DIR = ROOT / "notebooks"
SHOTS = Path(os.environ.get("OOD_BROWSER_SHOTS", ROOT / "build" / "browser-screenshots"))
WARM = os.environ.get("OOD_BROWSER_WARM", "") == "1"
RUN_TIMEOUT = float(os.environ.get("OOD_BROWSER_TIMEOUT", 1500))  # seconds per Run All
PASS_RE = re.compile(r"public checks passed|within tolerance|agree with the reference")
# notebooks that draw progress bars on a cold cache: 01 extracts the features, 07 trains the
# cross-entropy baseline
WIDGET_NOTEBOOKS = {"01_features", "07_cac_osr"}
PLOT_RE = re.compile(r"\b(plots\.\w+|plt\.show)\(")
STDERR_MIME = "application/vnd.jupyter.stderr"
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
PANEL = ".jp-NotebookPanel:not(.lm-mod-hidden)"  # the notebook on screen
NB = f"{PANEL} .jp-Notebook"


def _instructor(stem):
    return nbformat.read(NOTEBOOK_DIR / f"{stem}.ipynb", as_version=4)


def _graded_stems() -> list[str]:
    stems = []
    for path in sorted(NOTEBOOK_DIR.glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        if any(c.cell_type == "code" and nbgrader_meta(c).get("grade") for c in nb.cells):
            stems.append(path.stem)
    return stems


ALL = _graded_stems()
NOTEBOOKS = [s.strip() for s in os.environ.get("OOD_BROWSER_NOTEBOOKS", "").split(",")
             if s.strip()] or ALL
unknown = sorted(set(NOTEBOOKS) - set(ALL))
if unknown:
    raise ValueError(f"OOD_BROWSER_NOTEBOOKS names {unknown}, which are not graded notebooks "
                     f"of notebooks/; choose from {ALL}")


def chromium_path() -> str:
    path = os.environ.get("OOD_CHROMIUM") or shutil.which("chromium") or \
        shutil.which("chromium-browser")
    if not path:
        raise RuntimeError("Chromium is missing: apt-get install chromium (or set OOD_CHROMIUM "
                           "to its binary); the browser test never downloads a browser")
    return path


def solved_source(cell) -> str:
    """An instructor exercise cell as a student who wrote the solution would have it."""
    return "\n".join(line for line in cell.source.splitlines()
                     if not re.match(r"^\s*###\s*(BEGIN|END) SOLUTION\s*$", line))


def exercise_cells(nb) -> list[int]:
    return [i for i, c in enumerate(nb.cells)
            if c.cell_type == "code" and nbgrader_meta(c).get("solution")]


def check_cells(nb) -> list[int]:
    return [i for i, c in enumerate(nb.cells)
            if c.cell_type == "code" and nbgrader_meta(c).get("grade")]


def plot_cells(nb) -> list[int]:
    return [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and PLOT_RE.search(c.source)]


# --------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="session")
def lab(tmp_path_factory):
    """A JupyterLab server on a fresh student folder; yields its URL, token and folders."""
    base = tmp_path_factory.mktemp("browser")
    student = base / "student"
    prepare_workspace(student)
    (student / "blank").mkdir()
    for stem in NOTEBOOKS:
        shutil.copy(student / f"{stem}.ipynb", student / "blank" / f"{stem}.ipynb")
    settings = base / "lab-settings" / "@jupyterlab" / "notebook-extension"
    settings.mkdir(parents=True)
    # every cell stays in the page (JupyterLab 4 otherwise renders only the visible ones)
    (settings / "tracker.jupyterlab-settings").write_text(json.dumps({"windowingMode": "none"}))
    news = base / "lab-settings" / "@jupyterlab" / "apputils-extension"
    news.mkdir(parents=True)
    (news / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    features = ROOT / "features" if WARM else base / "features"
    features.mkdir(exist_ok=True)
    token = os.urandom(16).hex()
    env = {**os.environ, "JUPYTER_TOKEN": token, "OOD_PROFILE": "miniclip",
           "OOD_FEATURES_DIR": str(features), "OOD_RESULTS_DIR": str(base / "results"),
           "JUPYTERLAB_SETTINGS_DIR": str(base / "lab-settings"),
           "JUPYTERLAB_WORKSPACES_DIR": str(base / "lab-workspaces"),
           "JUPYTER_CONFIG_DIR": str(base / "jupyter-config"),
           "JUPYTER_RUNTIME_DIR": str(base / "jupyter-runtime"),
           "PYTHONPATH": str(ROOT)}  # this checkout's ood_utils, also in a worktree
    for name in ("MPLBACKEND", "OOD_PROGRESS", "NBGRADER_EXECUTION"):  # as a student has it
        env.pop(name, None)
    port = free_port(8899)
    log = open(base / "jupyterlab.log", "w")
    server = subprocess.Popen(lab_command(student, port, browser=False), env=env, stdout=log,
                              stderr=subprocess.STDOUT, cwd=student)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=5)
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"JupyterLab did not start: "
                                       f"{(base / 'jupyterlab.log').read_text()[-3000:]}")
                time.sleep(0.5)
        print(f"browser screenshots: {SHOTS}")
        yield {"url": url, "token": token, "student": student, "features": features,
               "log": base / "jupyterlab.log"}
    finally:
        server.terminate()
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        # root (CI) needs --no-sandbox: Chromium's own sandbox refuses to run as root
        b = p.chromium.launch(executable_path=chromium_path(), args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1500, "height": 950})
    page = context.new_page()
    page.console_errors = []
    page.on("console", lambda m: m.type == "error" and page.console_errors.append(m.text))
    page.on("pageerror", lambda e: page.console_errors.append(f"page error: {e}"))
    yield page
    context.close()


@pytest.fixture(autouse=True)
def shut_down_kernels(lab):
    """After each test, shut the notebook's kernel down, as a student closing it would."""
    yield
    api = f"{lab['url']}/api/sessions"
    headers = {"Authorization": f"token {lab['token']}"}
    sessions = json.load(urllib.request.urlopen(urllib.request.Request(api, headers=headers),
                                                timeout=30))
    for session in sessions:
        urllib.request.urlopen(urllib.request.Request(f"{api}/{session['id']}", method="DELETE",
                                                      headers=headers), timeout=60)


# --------------------------------------------------------------------------- page actions
def open_notebook(page, lab, relpath: str, n_cells: int) -> None:
    # ?reset: a fresh layout, not the tabs the last test left open
    page.goto(f"{lab['url']}/lab/tree/{relpath}?reset&token={lab['token']}")
    page.wait_for_function(f"document.querySelectorAll('{NB} .jp-Cell').length == {n_cells}",
                           timeout=120_000)
    page.wait_for_selector(f"{PANEL} .jp-Notebook-ExecutionIndicator[data-status='idle']",
                           timeout=180_000)
    # the status bar says "Python 3 (ipykernel) | Idle" once the kernel is connected (before
    # that, Run All sends nothing)
    page.wait_for_function("(document.querySelector('#jp-main-statusbar') || {textContent: ''})"
                           ".textContent.includes('| Idle')", timeout=180_000)


def cell(page, index: int):
    return page.locator(f"{NB} .jp-Cell").nth(index)


PASTE_JS = """(editor, text) => {
    const data = new DataTransfer();
    data.setData('text/plain', text);
    editor.dispatchEvent(new ClipboardEvent('paste', {clipboardData: data, bubbles: true,
                                                       cancelable: true}));
}"""


def paste_into(page, index: int, text: str) -> None:
    """Select all of a code cell's editor and paste ``text`` over it, as a student would."""
    editor = cell(page, index).locator(".cm-content")
    editor.scroll_into_view_if_needed()
    editor.click()
    page.keyboard.press("Control+A")
    editor.evaluate(PASTE_JS, text)


def menu(page, top: str, item: str) -> None:
    page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(f"^{re.escape(top)}$")).click()
    page.locator(".lm-Menu-itemLabel", has_text=re.compile(f"^{re.escape(item)}$")).click()


STATE_JS = """() => {
    const panel = '""" + PANEL + """';
    const prompts = [...document.querySelectorAll(
        panel + ' .jp-CodeCell .jp-InputArea-prompt')].map(e => e.textContent.trim());
    const ind = document.querySelector(panel + ' .jp-Notebook-ExecutionIndicator');
    return {busy: prompts.some(t => t.includes('*')),
            ran: prompts.filter(t => /\\d/.test(t)).length,
            widgets: document.querySelectorAll(panel + ' .jp-OutputArea-output .widget-hprogress')
                .length,
            status: ind ? ind.getAttribute('data-status') : null};
}"""


def run_all_and_wait(page, timeout: float = RUN_TIMEOUT, stem: str | None = None
                     ) -> tuple[float, int]:
    """Run > Run All Cells, then wait until no cell is queued or running.

    Returns the seconds it took and the most progress bar widgets seen at once while it ran
    (a bar made with ``leave=False`` is removed from the page when its loop ends); with
    ``stem``, the first bar seen is photographed (``05-progress-widget-running``).
    """
    start = time.monotonic()
    menu(page, "Run", "Run All Cells")
    quiet, widgets, retried = 0, 0, False
    while quiet < 3:
        if time.monotonic() - start > timeout:
            raise AssertionError(f"Run All did not finish within {timeout:.0f} s")
        time.sleep(1.0)
        state = page.evaluate(STATE_JS)
        if stem and state["widgets"] and not widgets:
            try:
                page.locator(f"{NB} .jp-OutputArea-output .widget-hprogress").first \
                    .scroll_into_view_if_needed(timeout=5000)
                shot(page, stem, "05-progress-widget-running")
            except Exception as err:  # the bar may be gone already: not a failure
                print(f"{stem}: no screenshot of the running bar ({err})")
        widgets = max(widgets, state["widgets"])
        if not state["ran"] and not state["busy"] and not retried and \
                time.monotonic() - start > 60:  # the click went nowhere: say so, try again
            print("Run All started nothing within 60 s; choosing Run > Run All Cells again")
            if stem:
                shot(page, stem, "XX-run-all-started-nothing")
            menu(page, "Run", "Run All Cells")
            retried = True
        quiet = quiet + 1 if (not state["busy"] and state["ran"] and
                              state["status"] == "idle") else 0
    return time.monotonic() - start, widgets


def save(page, path: Path):
    """File > Save Notebook; returns the notebook as saved on disk."""
    before = path.stat().st_mtime_ns
    menu(page, "File", "Save Notebook")
    deadline = time.monotonic() + 60
    while path.stat().st_mtime_ns == before:
        if time.monotonic() > deadline:
            raise AssertionError(f"{path.name} was not saved")
        time.sleep(0.3)
    time.sleep(0.5)
    return nbformat.read(path, as_version=4)


def shot(page, stem: str, name: str, index: int | None = None) -> Path:
    folder = SHOTS / stem
    folder.mkdir(parents=True, exist_ok=True)
    if index is not None:
        cell(page, index).scroll_into_view_if_needed()
    path = folder / f"{name}.png"
    page.screenshot(path=str(path))
    return path


def _stream(cell_, name) -> str:
    return "".join(o.get("text", "") for o in cell_.get("outputs", [])
                   if o.output_type == "stream" and o.name == name)


# --------------------------------------------------------------------------- the tests
@pytest.mark.parametrize("stem", NOTEBOOKS)
def test_solved_notebook_runs_clean_in_jupyterlab(stem, lab, page):
    instructor = _instructor(stem)
    n = len(instructor.cells)
    open_notebook(page, lab, f"{stem}.ipynb", n)
    shot(page, stem, "01-opened")
    exercises = exercise_cells(instructor)
    for i in exercises:
        paste_into(page, i, solved_source(instructor.cells[i]))
    shot(page, stem, "02-pasted", exercises[0])
    seconds, seen_widgets = run_all_and_wait(page, stem=stem)
    print(f"{stem}: Run All of the solved copy took {seconds:.0f} s")
    saved = save(page, lab["student"] / f"{stem}.ipynb")

    # the pasted code is what the saved notebook holds
    for i in exercises:
        assert saved.cells[i].source == solved_source(instructor.cells[i]), (stem, i)
    problems = []
    for i, c in enumerate(saved.cells):
        if c.cell_type != "code":
            continue
        if c.execution_count is None:
            problems.append(f"cell {i} did not run")
        for o in c.outputs:
            if o.output_type == "error":
                problems.append(f"cell {i}: {o.ename}: {o.evalue[:200]}")
        if _stream(c, "stderr"):
            problems.append(f"cell {i} wrote to stderr: {_stream(c, 'stderr')[-300:]!r}")
        if "IProgress not found" in json.dumps(c.outputs):
            problems.append(f"cell {i}: tqdm found no ipywidgets")
    assert not problems, f"{stem}: " + "; ".join(problems)

    # what the page shows
    stderr_boxes = page.locator(f"{NB} .jp-OutputArea-output[data-mime-type="
                                f"'{STDERR_MIME}']")
    if stderr_boxes.count():
        shot(page, stem, "XX-stderr", None)
        stderr_boxes.first.scroll_into_view_if_needed()
        shot(page, stem, "XX-stderr-box")
    assert stderr_boxes.count() == 0, (f"{stem}: {stderr_boxes.count()} red stderr/error boxes: "
                                       f"{stderr_boxes.first.inner_text()[:300]}")
    for i in check_cells(instructor):
        text = cell(page, i).locator(".jp-OutputArea").inner_text()
        assert PASS_RE.search(text), f"{stem}: check cell {i} shows no pass line: {text[-400:]!r}"
    shot(page, stem, "03-check", check_cells(instructor)[0])
    for k, i in enumerate(plot_cells(instructor)):
        images = cell(page, i).locator(".jp-OutputArea-output img")
        assert images.count() >= 1, f"{stem}: plot cell {i} shows no image"
        assert images.first.evaluate("img => img.naturalWidth") > 100, (stem, i)
        shot(page, stem, f"04-plot-{k}", i)
    # tqdm's bar is an ipywidgets 8 FloatProgress: a .widget-hprogress element
    widgets = page.locator(f"{NB} .jp-OutputArea-output .widget-hprogress")
    texts = page.locator(f"{NB} .jp-OutputArea").all_inner_texts()
    assert not any("Error displaying widget" in t or "Loading widget" in t for t in texts), stem
    if stem in WIDGET_NOTEBOOKS and not WARM:
        assert max(seen_widgets, widgets.count()) >= 1, \
            f"{stem}: no progress bar widget on a cold cache"
        saved_widgets = sum(1 for c in saved.cells for o in c.get("outputs", [])
                            if WIDGET_MIME in o.get("data", {}))
        assert saved_widgets >= 1, stem
        if widgets.count():
            widgets.first.scroll_into_view_if_needed()
            shot(page, stem, "05-progress-widget")
    assert not page.console_errors, f"{stem}: browser console errors: {page.console_errors[:5]}"


@pytest.mark.parametrize("stem", NOTEBOOKS)
def test_blank_copy_stops_at_the_first_exercise(stem, lab, page):
    instructor = _instructor(stem)
    exercises = exercise_cells(instructor)
    # the first exercise raises where its code first runs: the exercise cell itself when it
    # has code at the top level, else the first check cell after it that calls it
    first = next(i for i in [exercises[0]] + check_cells(instructor) if i >= exercises[0]
                 and (i == exercises[0] and not re.search(r"^def ", instructor.cells[i].source,
                                                          re.M) or i > exercises[0]))
    open_notebook(page, lab, f"blank/{stem}.ipynb", len(instructor.cells))
    seconds, _ = run_all_and_wait(page, stem=stem)
    print(f"{stem}: Run All of the blank copy took {seconds:.0f} s")
    saved = save(page, lab["student"] / "blank" / f"{stem}.ipynb")
    shot(page, stem, "06-blank-stops", first)
    for i, c in enumerate(saved.cells):
        if c.cell_type != "code":
            continue
        errors = [o for o in c.outputs if o.output_type == "error"]
        if i < first:
            assert c.execution_count is not None and not errors, (stem, i, errors)
            assert not _stream(c, "stderr"), (stem, i, _stream(c, "stderr"))
        elif i == first:
            assert [(e.ename, e.evalue) for e in errors] == \
                [("NotImplementedError", RAISE_TEXT)], (stem, i, errors)
        else:
            assert c.execution_count is None and not c.outputs, f"{stem}: cell {i} ran"
    text = cell(page, first).locator(".jp-OutputArea").inner_text()
    assert "NotImplementedError" in text and RAISE_TEXT in text, text[-500:]
    assert not page.console_errors, f"{stem}: browser console errors: {page.console_errors[:5]}"
