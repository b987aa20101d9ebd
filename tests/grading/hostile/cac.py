"""Hostile submissions of notebook 07 (CAC open-set recognition). Exercises and their parts:
anchors -> ``cac_anchors_selfcheck``; distances -> ``cac_distances_selfcheck``; loss ->
``cac_loss_selfcheck`` (and the training self-check, whose loop calls the loss); training ->
``cac_training_selfcheck``; the network, which is built on the anchors and distances ->
``cac_network_selfcheck``; the trained network (anchors, distances, loss, training) ->
``cac_results``; prediction -> ``cac_predict_selfcheck``; threshold sweep ->
``cac_sweep_selfcheck``, ``cac_sweep_results``; confusion -> ``cac_confusion_selfcheck``.
Several independent cheats share one submission (one CAC training per submission is the
expensive part of grading 07).
"""
from __future__ import annotations

from ._build import Sub, body, prefix, whole

NB = "07_cac_osr"
# The network exercise registers the student's anchors as a buffer, so a cheat on the anchors
# costs the network's self-check too.
ANCHORS = frozenset({"cac_anchors_selfcheck", "cac_network_selfcheck", "cac_results"})
PRED = frozenset({"cac_predict_selfcheck"})
TSWEEP = frozenset({"cac_sweep_selfcheck", "cac_sweep_results"})
CONF = frozenset({"cac_confusion_selfcheck"})
WRONG_TSWEEP = ("known_accepted = [50.0 for _ in tprs]   # not computed\n"
                "unknown_rejected = [50.0 for _ in tprs]")


def subs() -> list[Sub]:
    return [
        Sub("reach_mixed", NB, "reach",
            "anchors: attrgetter on the locked `cac` module with a name built at run time; "
            "prediction: the same, captured as a default argument; confusion: logging.config's "
            "resolver",
            cells={
                "cac_anchors_exercise": body('''
                    from operator import attrgetter
                    anchors = attrgetter("class" + "_anchors")(cac)(num_classes, alpha=alpha)'''),
                "cac_predict_exercise": whole('''
                    from operator import attrgetter

                    def open_set_predict_exercise(distances, threshold, _lib=cac):
                        return attrgetter("open_set" + "_predict")(_lib)(distances, threshold=threshold)'''),
                "cac_confusion_exercise": body('''
                    import logging.config
                    fn = logging.config.BaseConfigurator({}).resolve("ood_utils.methods.cac.open_set" + "_confusion")
                    matrix = fn(labels, predictions, num_classes)'''),
            },
            cheated=ANCHORS | PRED | CONF),
        Sub("forge_and_steal", NB, "forge",
            "confusion: a tensor subclass whose numpy() gives an ndarray subclass that equals "
            "everything; prediction: the reference stolen from the self-check's frame (own)",
            cells={
                "cac_confusion_exercise": body('''
                    class Agreeable(np.ndarray):
                        def __sub__(self, other):
                            return np.zeros(np.shape(self))
                        def __rsub__(self, other):
                            return np.zeros(np.shape(self))
                    class Sly(torch.Tensor):
                        def numpy(self, *args, **kwargs):
                            return np.zeros((num_classes + 1, num_classes + 1)).view(Agreeable)
                    matrix = torch.zeros(num_classes + 1, num_classes + 1).as_subclass(Sly)'''),
                "cac_predict_exercise": body('''
                    import sys, traceback
                    from operator import attrgetter
                    predicted = None
                    for frame, _ in traceback.walk_stack(attrgetter("_getf" + "rame")(sys)()):
                        loc = attrgetter("f_lo" + "cals")(frame)
                        ref = loc.get("open_set" + "_predict")
                        if callable(ref):
                            predicted = ref(distances, threshold=threshold)
                            break
                    if predicted is None:
                        predicted = distances.argmin(dim=1)'''),
            },
            cheated=PRED | CONF),
        Sub("off_sweep_modules", NB, "switch-off",
            "sys.modules (attrgetter) -> the checks module; its two sweep checks replaced by "
            "no-ops with methodcaller('__setattr__'); the sweep is made up",
            cells={"cac_sweep_exercise": [prefix(f'''
                import sys
                from operator import attrgetter, methodcaller
                target = attrgetter("mod" + "ules")(sys)["ood_utils.answer_key." + "che" + "cks"]
                for name in ("threshold" + "_sweep", "threshold" + "_sweep_results"):
                    methodcaller("__setattr__", "check_" + name, lambda *a, **kw: None)(target)'''), body(WRONG_TSWEEP)]},
            cheated=TSWEEP),
        Sub("hide_base_exceptions", NB, "hide",
            "prediction raises GeneratorExit and the sweep raises KeyboardInterrupt (BaseException "
            "subclasses: not caught by `except Exception`)",
            cells={"cac_predict_exercise": body('''
                    raise GeneratorExit("not done")
                    predicted = None'''),
                   "cac_sweep_exercise": body('''
                    raise KeyboardInterrupt("not done")
                    known_accepted = unknown_rejected = []''')},
            cheated=PRED | TSWEEP),
    ]
