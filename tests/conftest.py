import os

import matplotlib
import pytest

matplotlib.use("Agg")
os.environ.setdefault("OOD_PROFILE", "miniclip")

# Synthetic notebooks used by the grading/release tests are inputs, not notebooks to collect.
collect_ignore_glob = ["fixtures/*"]


def pytest_collection_modifyitems(config, items):
    """The notebooks (nbval) run first: they are the longest group, so that under pytest-xdist
    the other worker works through the test modules meanwhile."""
    items.sort(key=lambda item: not str(item.fspath).endswith(".ipynb"))


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """`make test` runs pytest-xdist with two workers, each test module on one worker (its
    module fixtures run once) and every notebook on one worker, in order: nbval's cells of a
    notebook share one kernel, and 08_results reads what 00-07 recorded before it."""
    from xdist.scheduler import LoadScopeScheduling

    class CourseScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid):
            if ".ipynb::" in nodeid:
                return "notebooks"
            return super()._split_scope(nodeid)

    return CourseScheduling(config, log)
