"""Hostile submissions of notebook 05 (Mahalanobis): exercises ``maha_stats_exercise``
(part ``maha_stats_selfcheck``), ``maha_exercise`` (``maha_selfcheck`` and the four AUROC
parts, which run the student's ``mahalanobis_exercise``) and ``maha_sweep_exercise``
(``maha_sweep_selfcheck``, ``maha_sweep_graded``). The class statistics stay the
instructor's unless said otherwise.
"""
from __future__ import annotations

from . import _answers
from ._build import Sub, body, whole

NB = "05_mahalanobis"
STATS = frozenset({"maha_stats_selfcheck"})
MAHA = frozenset({"maha_selfcheck", "plp_md_auroc", "plp_rmd_auroc", "md_auroc", "rmd_auroc"})
SWEEP = frozenset({"maha_sweep_selfcheck", "maha_sweep_graded"})
WRONG_SWEEP = "aurocs = {alpha: 50.0 for alpha in alphas}   # not computed"

MAHA_DEF = "def mahalanobis_exercise(train_feats, train_labels, test_feats, relative=False"


def _forged_maha(targets: dict) -> str:
    # which of the four graded calls this is: by the width of the features (probe logits or
    # trunk features), the number of test rows (ID or OOD) and `relative`
    return f'''
from statistics import NormalDist
from sklearn.metrics import roc_auc_score
TARGETS = {targets!r}
n_id, n_ood = 6000, 4000
key = ("plp_" if train_feats.shape[1] < 50 else "") + ("rmd" if relative else "md")
grid = lambda n: np.array([NormalDist().inv_cdf((i + 0.5) / n) for i in range(n)])
base_in, base_out = grid(n_id), grid(n_ood)
labels = np.r_[np.ones(n_id), np.zeros(n_ood)]
lo, hi = 0.0, 6.0
for _ in range(60):
    mu = (lo + hi) / 2
    if roc_auc_score(labels, np.r_[base_in + mu, base_out]) * 100 < TARGETS[key]:
        lo = mu
    else:
        hi = mu
made = base_in + mu if len(test_feats) == n_id else base_out
scores = torch.as_tensor(np.resize(made, len(test_feats)), dtype=torch.float64)'''


def subs() -> list[Sub]:
    targets = {k: _answers.auroc(k) for k in ("md", "rmd", "plp_md", "plp_rmd")}
    sweep = _answers.sweep("md_shrinkage")
    return [
        Sub("reach_default_arg", NB, "reach",
            "captures `methods`, a module the locked setup cell imports, as a default argument "
            "and takes the reference from it by a name built at run time",
            cells={"maha_exercise": whole(f'''
                from operator import attrgetter

                {MAHA_DEF}, _lib=methods):
                    name = "mahalanobis" + "_" + "scores"
                    return attrgetter(name)(_lib)(train_feats, train_labels, test_feats, relative=relative)''')},
            cheated=MAHA),
        Sub("reach_runpy", NB, "reach",
            "runpy.run_module (reached through logging.config's resolver) runs the reference's "
            "module afresh and the function is taken from its globals",
            cells={"maha_sweep_exercise": body('''
                import logging.config
                run = logging.config.BaseConfigurator({}).resolve("run" + "py.run_module")
                space = run("ood_utils.course.swe" + "eps")
                aurocs = space["shrinkage" + "_sweep"](train_feats, train_labels, id_feats, ood_feats, alphas)''')},
            cheated=SWEEP),
        Sub("reach_scores_attr", NB, "reach",
            "the reference from ood_utils.methods by a reversed string",
            cells={"maha_exercise": body('''
                from operator import attrgetter
                import ood_utils.methods as lib
                fn = attrgetter("serocs_sibonalaham"[::-1])(lib)
                scores = fn(train_feats, train_labels, test_feats, relative=relative)''')},
            cheated=MAHA),
        Sub("off_numpy_abs", NB, "switch-off",
            "patches numpy.abs to return zeros (mock.patch.object), so that the self-check's "
            "|got - want| <= tol always holds; the sweep returns made-up AUROCs",
            cells={"maha_sweep_exercise": body(f'''
                from unittest import mock
                mock.patch.object(np, "abs", lambda x, *a, **kw: np.zeros(np.shape(x))).start()
                {WRONG_SWEEP}''')},
            cheated=SWEEP),
        Sub("hide_error_in_str", NB, "hide",
            "raises an AssertionError subclass whose __str__ raises, so no message can be "
            "shown",
            cells={"maha_sweep_exercise": body('''
                class Mute(AssertionError):
                    def __str__(self):
                        raise RuntimeError("unprintable")
                    def __repr__(self):
                        raise RuntimeError("unprintable")
                raise Mute()
                aurocs = {}''')},
            cheated=SWEEP),
        Sub("forge_synthetic_scores", NB, "forge",
            "made-up scores for the four graded calls, tuned to the printed expected AUROCs "
            "(plp_md, plp_rmd, md, rmd); no Mahalanobis distance computed",
            cells={"maha_exercise": body(_forged_maha(targets))},
            cheated=MAHA),
        Sub("forge_expected_numbers", NB, "forge",
            "the shrinkage sweep returns the expected AUROCs, typed in",
            cells={"maha_sweep_exercise": body(
                f"aurocs = {{a: v for a, v in {sweep!r}.items()}}")},
            cheated=SWEEP),
        Sub("own_lazy_sweep", NB, "own",
            "a dict whose items come, when the graded check asks, from the `exp` target in the "
            "checking function's frame",
            cells={"maha_sweep_exercise": body('''
                import sys, traceback
                from operator import attrgetter
                class Lazy(dict):
                    def __getitem__(self, key):
                        for frame, _ in traceback.walk_stack(attrgetter("_getf" + "rame")(sys)()):
                            loc = attrgetter("f_lo" + "cals")(frame)
                            if "exp" in loc and hasattr(loc["exp"], "value"):
                                return float(loc["exp"].value)
                        return 50.0
                aurocs = Lazy({alpha: 50.0 for alpha in alphas})''')},
            cheated=SWEEP),
        Sub("own_settrace_jump", NB, "own",
            "sys.settrace: a tracer that, on every `raise` line of the checks' own file, sets "
            "frame.f_lineno to the function's last line, jumping over the failure",
            cells={"maha_sweep_exercise": body(f'''
                import linecache, sys
                from operator import attrgetter
                suffix = "che" + "cks.p" + "y"
                jumped = set()
                def _local(frame, event, arg):
                    if event == "line" and (id(frame), frame.f_lineno) not in jumped:
                        code = frame.f_code
                        lines = linecache.getlines(code.co_filename)
                        text = lines[frame.f_lineno - 1].strip() if frame.f_lineno <= len(lines) else ""
                        if text.startswith("raise ") or text.startswith("_hidden_assert("):
                            last = code.co_firstlineno
                            for number, _, line in code.co_lines():
                                if line is not None:
                                    last = max(last, line)
                            jumped.add((id(frame), frame.f_lineno))
                            try:
                                frame.f_lineno = last
                            except ValueError:
                                pass
                    return _local
                def _global(frame, event, arg):
                    if frame.f_code.co_filename.endswith(suffix):
                        return _local
                    return None
                attrgetter("settr" + "ace")(sys)(_global)
                {WRONG_SWEEP}''')},
            cheated=SWEEP),
    ]
