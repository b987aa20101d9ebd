"""Hostile submissions of notebook 02 (kNN): two exercises, ``knn_exercise`` (parts
``knn_selfcheck``, ``knn_auroc``) and ``knn_sweep_exercise`` (``knn_sweep_selfcheck``,
``knn_sweep_auroc``). A cheat on one exercise leaves the other one the instructor's solution,
which must keep its points. Cheats whose effect reaches every later cell (switching checks
off, hooks, a dead kernel) sit in the sweep, the last exercise, so that the parts before them
stay honest.
"""
from __future__ import annotations

from . import _answers
from ._build import Sub, body, prefix

NB = "02_knn"
KNN = frozenset({"knn_selfcheck", "knn_auroc"})
SWEEP = frozenset({"knn_sweep_selfcheck", "knn_sweep_auroc"})
WRONG_SWEEP = "auroc_by_k = {k: 50.0 for k in ks}   # not computed"


def _synthetic_scores_body(target: float) -> str:
    # ID and OOD scores from fixed normal quantiles, the ID ones shifted until the AUROC
    # (scikit-learn, on these made-up numbers) is the printed expected value: no kNN at all
    return f'''
from statistics import NormalDist
from sklearn.metrics import roc_auc_score
import numpy as np
n_id, n_ood = 6000, 4000          # the sizes the notebook prints
grid = lambda n: np.array([NormalDist().inv_cdf((i + 0.5) / n) for i in range(n)])
base_in, base_out = grid(n_id), grid(n_ood)
labels = np.r_[np.ones(n_id), np.zeros(n_ood)]
lo, hi = 0.0, 5.0
for _ in range(60):
    mu = (lo + hi) / 2
    if roc_auc_score(labels, np.r_[base_in + mu, base_out]) * 100 < {target!r}:
        lo = mu
    else:
        hi = mu
made_up = base_in + mu if len(test_feats) == n_id else base_out
if len(test_feats) not in (n_id, n_ood):
    made_up = np.resize(made_up, len(test_feats))
scores = torch.as_tensor(made_up, dtype=torch.float32)'''


def subs() -> list[Sub]:
    expected_sweep = _answers.sweep("knn_sweep")
    return [
        # ------------------------------------------------------------ reach the reference
        Sub("reach_attrgetter", NB, "reach",
            "operator.attrgetter with the reference's name built at run time ('knn' + "
            "'_scores'); the sweep built on base64-decoded name",
            cells={"knn_exercise": body('''
                from operator import attrgetter
                import ood_utils.methods as library
                scores = attrgetter("knn" + "_sco" + "res")(library)(train_feats, test_feats, k=k)'''),
                   "knn_sweep_exercise": body('''
                import base64
                from operator import attrgetter
                import ood_utils.methods as library
                fn = attrgetter(base64.b64decode("a25uX3Njb3Jlcw==").decode())(library)
                auroc_by_k = {k: metrics.auroc(fn(train_feats, test_in, k=k), fn(train_feats, test_out, k=k))
                              for k in ks}''')},
            cheated=KNN | SWEEP),
        Sub("reach_formatter", NB, "reach",
            "string.Formatter().get_field('0.' + name, [module], {}) returns the reference",
            cells={"knn_exercise": body('''
                import string
                import ood_utils.methods as library
                field = "0." + "".join(reversed("serocs_nnk"))
                fn, _ = string.Formatter().get_field(field, [library], {})
                scores = fn(train_feats, test_feats, k=k)''')},
            cheated=KNN),
        Sub("reach_logging_resolver", NB, "reach",
            "logging.config.BaseConfigurator.resolve imports a dotted name built from chr codes",
            cells={"knn_exercise": body('''
                import logging.config
                dotted = "ood_utils.methods.knn." + "".join(map(chr, (107, 110, 110, 95, 115, 99, 111, 114, 101, 115)))
                fn = logging.config.BaseConfigurator({}).resolve(dotted)
                scores = fn(train_feats, test_feats, k=k)''')},
            cheated=KNN),
        Sub("reach_timeit", NB, "reach",
            "timeit.Timer's setup string imports the reference; the statement hands it out",
            cells={"knn_exercise": body('''
                import timeit
                box = []
                setup = "from ood_utils.methods import " + "knn" + "_scores as f"
                timeit.Timer("box.append(f)", setup=setup, globals={"box": box}).timeit(1)
                scores = box[0](train_feats, test_feats, k=k)''')},
            cheated=KNN),
        Sub("reach_dir_scan", NB, "reach",
            "scans dir() of the course's modules for a function whose parameters are "
            "(train_feats, test_feats, k)",
            cells={"knn_exercise": body('''
                from operator import attrgetter
                import ood_utils.methods as library
                found = None
                for name in dir(library):
                    obj = attrgetter(name)(library)
                    try:
                        params = attrgetter("__code__.co_varnames")(obj)[:3]
                    except AttributeError:
                        continue
                    if params == ("train_feats", "test_feats", "k"):
                        found = obj
                scores = found(train_feats, test_feats, k=k)''')},
            cheated=KNN),
        Sub("reach_source_text", NB, "reach",
            "reads the text of ood_utils/methods/knn.py, writes it (relative imports made absolute) "
            "as a new module in the working folder, imports it and calls its copy of the reference",
            cells={"knn_exercise": body('''
                import ast, os, sys
                from operator import attrgetter
                import ood_utils
                folder = os.path.dirname(attrgetter("__fi" + "le__")(ood_utils))
                text = open(os.path.join(folder, "meth" + "ods", "kn" + "n.p" + "y")).read()
                text = text.replace("from .", "from ood_utils.methods.")
                with open("my_copy" + ".p" + "y", "w") as out:
                    out.write(text)
                sys.path.insert(0, os.getcwd())
                import my_copy
                mine = attrgetter("knn" + "_scores")(my_copy)
                scores = mine(train_feats, test_feats, k=k)''')},
            cheated=KNN),
        Sub("reach_exit_ip", NB, "reach",
            "the IPython shell reached through exit._ip evaluates the reference's name",
            cells={"knn_exercise": body('''
                shell = exit._ip
                shell.ex("import ood_utils.methods as _lib")
                fn = shell.ev("_lib." + "knn" + "_scores")
                scores = fn(train_feats, test_feats, k=k)''')},
            cheated=KNN),
        Sub("own_caller_frame", NB, "own",
            "walks the call stack into the self-check, takes the reference it imported (a local "
            "of check_knn) and keeps it for the later, graded calls",
            cells={"knn_exercise": [prefix('''
                import sys, traceback
                from operator import attrgetter
                STOLEN = {}'''), body('''
                for frame, _ in traceback.walk_stack(attrgetter("_getf" + "rame")(sys)()):
                    loc = attrgetter("f_lo" + "cals")(frame)
                    value = loc.get("knn" + "_scores")
                    if callable(value):
                        STOLEN["fn"] = value
                scores = STOLEN["fn"](train_feats, test_feats, k=k)''')]},
            cheated=KNN),
        # ------------------------------------------------------------ switch the checks off
        Sub("off_mock_patch", NB, "switch-off",
            "unittest.mock.patch(...).start() on the checks module's functions (the name "
            "built at run time); the sweep returns made-up AUROCs",
            cells={"knn_sweep_exercise": [prefix(f'''
                from unittest import mock
                where = "ood_utils.answer_key." + "che" + "cks."
                for name in ("knn_sweep", "knn_sweep_result"):
                    mock.patch(where + "check_" + name, lambda *a, **kw: None).start()'''), body(WRONG_SWEEP)]},
            cheated=SWEEP),
        Sub("off_subclasses", NB, "switch-off",
            "object.__subclasses__() -> os._wrap_close.__init__.__globals__ -> sys.modules -> "
            "the checks module, patched with methodcaller('__setattr__')",
            cells={"knn_sweep_exercise": [prefix(f'''
                from operator import attrgetter, methodcaller
                classes = attrgetter("__subcl" + "asses__")(object)()
                wrap = next(c for c in classes if c.__name__ == "_wrap_close")
                sysmod = attrgetter("__init__.__glo" + "bals__")(wrap)["sys"]
                target = attrgetter("mod" + "ules")(sysmod)["ood_utils.answer_key." + "che" + "cks"]
                for name in ("knn_sweep", "knn_sweep_result"):
                    methodcaller("__setattr__", "check_" + name, lambda *a, **kw: None)(target)'''), body(WRONG_SWEEP)]},
            cheated=SWEEP),
        Sub("off_numpy_all", NB, "switch-off",
            "patches numpy.all (mock.patch.object, never undone) so that every comparison of "
            "the self-check holds; the sweep returns made-up AUROCs",
            cells={"knn_sweep_exercise": body(f'''
                from unittest import mock
                mock.patch.object(np, "all", lambda *a, **kw: True).start()
                {WRONG_SWEEP}''')},
            cheated=SWEEP),
        Sub("off_expected_update", NB, "switch-off",
            "dict.update on the answer key's sweep table (reached with logging.config's "
            "resolver) so that the made-up sweep is 'expected'",
            cells={"knn_sweep_exercise": [prefix(f'''
                import logging.config
                key = logging.config.BaseConfigurator({{}}).resolve("ood_utils.answer_key." + "exp" + "ected")
                table = logging.config.BaseConfigurator({{}}).resolve("ood_utils.answer_key." + "exp" + "ected.SWE" + "EPS")
                sweep_row = table["miniclip"]["knn_sweep"]
                made = {{k: type(sweep_row[k])(50.0, 1.0, "made up") for k in sweep_row}}
                dict.update(sweep_row, made)'''), body(WRONG_SWEEP)]},
            cheated=SWEEP),
        Sub("off_input_transformer", NB, "switch-off",
            "registers an IPython input transformer (exit._ip.input_transformers_post) that "
            "rewrites every later check cell into a no-op",
            cells={"knn_sweep_exercise": [prefix(f'''
                def _neuter(lines):
                    if any("checks." in line for line in lines):
                        return ["None\\n"]
                    return lines
                exit._ip.input_transformers_post.append(_neuter)'''), body(WRONG_SWEEP)]},
            cheated=SWEEP),
        Sub("off_post_run_cell", NB, "switch-off",
            "a post_run_cell hook that sends clear_output after every cell, so the error output "
            "of a failed check disappears from the notebook",
            cells={"knn_sweep_exercise": body(f'''
                shell = exit._ip
                def _wipe(result):
                    shell.display_pub.clear_output(wait=False)
                shell.events.register("post_run_cell", _wipe)
                {WRONG_SWEEP}''')},
            cheated=SWEEP),
        Sub("off_user_ns", NB, "switch-off",
            "replaces `checks` in the shell's user namespace by an object whose every "
            "function does nothing",
            cells={"knn_sweep_exercise": [prefix(f'''
                class _Quiet:
                    def __getattr__(self, name):
                        return lambda *a, **kw: None
                exit._ip.user_ns["che" + "cks"] = _Quiet()'''), body(WRONG_SWEEP)]},
            cheated=SWEEP),
        Sub("off_percent_run", NB, "switch-off",
            "an added cell `run -i patch.txt`: not Python (the screen skips it), IPython's "
            "automagic runs it as %run, and the file rebinds the check functions",
            cells={"knn_sweep_exercise": [prefix(f'''
                with open("patch.txt", "w") as f:
                    f.write("checks.check_knn_sweep = lambda *a, **kw: None\\n"
                            "checks.check_knn_sweep_result = lambda *a, **kw: None\\n")'''), body(WRONG_SWEEP)]},
            added={"knn_sweep_selfcheck": "run -i patch.txt"},
            cheated=SWEEP),
        # ------------------------------------------------------------ hide a failure
        Sub("hide_exception_group", NB, "hide",
            "the sweep raises an ExceptionGroup inside a chained exception instead of returning",
            cells={"knn_sweep_exercise": body('''
                try:
                    raise ExceptionGroup("sweep", [ValueError("not done"), KeyError(1)])
                except ExceptionGroup as group:
                    raise RuntimeError("sweep") from group
                auroc_by_k = {}''')},
            cheated=SWEEP),
        Sub("hide_render_traceback", NB, "hide",
            "raises an exception whose _render_traceback_ itself raises",
            cells={"knn_sweep_exercise": body('''
                class Quiet(Exception):
                    def _render_traceback_(self):
                        raise RuntimeError("no traceback for you")
                raise Quiet("not done")
                auroc_by_k = {}''')},
            cheated=SWEEP),
        Sub("hide_os_exit", NB, "hide",
            "os._exit(0) inside the sweep: the kernel ends during the check",
            cells={"knn_sweep_exercise": body('''
                import os
                os._exit(0)
                auroc_by_k = {}''')},
            cheated=SWEEP),
        Sub("hide_sigkill", NB, "hide",
            "kills its own kernel (SIGKILL) from the check",
            cells={"knn_sweep_exercise": body('''
                import os, signal
                os.kill(os.getpid(), signal.SIGKILL)
                auroc_by_k = {}''')},
            cheated=SWEEP),
        Sub("hide_sys_exit", NB, "hide",
            "sys.exit(0) raised in the check cell (SystemExit passes the checks' except "
            "Exception)",
            cells={"knn_sweep_exercise": body('''
                import sys
                sys.exit(0)
                auroc_by_k = {}''')},
            cheated=SWEEP),
        Sub("hide_showtraceback", NB, "hide",
            "replaces the shell's showtraceback by a no-op (methodcaller('__setattr__')): "
            "failed checks print nothing",
            cells={"knn_sweep_exercise": body(f'''
                from operator import methodcaller
                methodcaller("__setattr__", "showtraceback", lambda *a, **kw: None)(exit._ip)
                {WRONG_SWEEP}''')},
            cheated=SWEEP),
        # ------------------------------------------------------------ forge the result
        Sub("forge_ndarray_subclass", NB, "forge",
            "returns a NumPy subclass whose subtraction gives zeros, so |got - want| <= tol "
            "holds for any values; the AUROC part gets what that array holds",
            cells={"knn_exercise": body('''
                class Agreeable(np.ndarray):
                    def __sub__(self, other):
                        return np.zeros(np.shape(self))
                    def __rsub__(self, other):
                        return np.zeros(np.shape(self))
                scores = np.linspace(0, 1, len(test_feats)).view(Agreeable)''')},
            cheated=KNN),
        Sub("forge_synthetic_scores", NB, "forge",
            "made-up scores (shifted normal quantiles) tuned to the printed expected AUROC; "
            "no kNN computed",
            cells={"knn_exercise": body(_synthetic_scores_body(_answers.auroc("knn")))},
            cheated=KNN),
        Sub("forge_expected_numbers", NB, "forge",
            "the sweep returns the expected AUROCs the notebook prints, typed in",
            cells={"knn_sweep_exercise": body(
                f"auroc_by_k = {{k: v for k, v in {expected_sweep!r}.items() if k in ks}}\n"
                "auroc_by_k.update({k: 50.0 for k in ks if k not in auroc_by_k})")},
            cheated=SWEEP),
        Sub("forge_roc_auc_score", NB, "forge",
            "patches scikit-learn's roc_auc_score (which metrics.auroc calls) to return the "
            "expected AUROC; the kNN scores are zeros",
            cells={"knn_exercise": body(f'''
                from unittest import mock
                mock.patch("sklearn.metrics.roc_auc_score", lambda *a, **kw: {_answers.auroc("knn") / 100!r}).start()
                scores = torch.zeros(len(test_feats))''')},
            cheated=KNN | SWEEP),  # the patch also sets every AUROC the sweep measures
        # ------------------------------------------------------------ this suite's own
        Sub("own_lazy_dict", NB, "own",
            "the sweep returns a dict whose items are read, when the check asks, from the "
            "checking function's own frame (its table of targets)",
            cells={"knn_sweep_exercise": body('''
                import sys, traceback
                from operator import attrgetter
                class Lazy(dict):
                    def __getitem__(self, k):
                        for frame, _ in traceback.walk_stack(attrgetter("_getf" + "rame")(sys)()):
                            loc = attrgetter("f_lo" + "cals")(frame)
                            table = loc.get("targets")
                            if isinstance(table, dict) and k in table:
                                want = table[k]
                                return float(want[0] if isinstance(want, tuple) else want.value)
                        return 50.0
                auroc_by_k = Lazy({k: 50.0 for k in ks})''')},
            cheated=SWEEP),
        Sub("own_thread_patcher", NB, "own",
            "a background thread that keeps rebinding the checks' comparison helper (_close) "
            "to 'always equal' while later cells run",
            cells={"knn_sweep_exercise": body(f'''
                import threading, time
                from operator import attrgetter, methodcaller
                import ood_utils
                def _keep_patching():
                    target = attrgetter("answer_key.che" + "cks")(ood_utils)
                    while True:
                        methodcaller("__setattr__", "_close", lambda *a, **kw: True)(target)
                        methodcaller("__setattr__", "_check_sweep_result", lambda *a, **kw: None)(target)
                        time.sleep(0.01)
                threading.Thread(target=_keep_patching, daemon=True).start()
                time.sleep(0.1)
                {WRONG_SWEEP}''')},
            cheated=SWEEP),
        Sub("own_verdict_forger", NB, "own",
            "prints the 'passed' lines a grader might look for, writes forged verdict files "
            "(JSON with passed/ok/status/score) into every folder it can write, and ends the "
            "kernel before the check can fail",
            cells={"knn_sweep_exercise": body('''
                import json, os, sys
                print("knn_sweep_exercise: public checks passed")
                print("knn_sweep: all 5 values within tolerance")
                verdict = {"passed": True, "ok": True, "status": "ok", "score": 3, "verdict": "pass"}
                for folder in {os.getcwd(), os.path.expanduser("~"), "/tmp",
                               os.environ.get("OOD_RESULTS_DIR", ".")}:
                    for name in ("verdict.json", "result.json", "grade.json", "knn_sweep_selfcheck.json",
                                 "knn_sweep_auroc.json"):
                        try:
                            with open(os.path.join(folder, name), "w") as f:
                                json.dump(verdict, f)
                        except OSError:
                            pass
                sys.stdout.flush()
                os._exit(0)
                auroc_by_k = {}''')},
            cheated=SWEEP),
    ]
