"""The grader's own verdict on the score vectors of a correct variant (issue 16).

The AUROC parts are graded by comparing the student's score vectors with the reference's,
element by element (:class:`ood_utils.grader.verdicts.Scores`, tolerances in
:mod:`ood_utils.grader.course_parts`). :func:`assert_grader_accepts` runs exactly that verdict
on a variant's vectors, so that every correct variant of the answer key is shown to meet the
grader's tolerance, not only the instructor's solution.
"""
from __future__ import annotations

import numpy as np
import torch

from ood_utils.grader import course_parts
from ood_utils.grader.verdicts import Context, Scores

SCORES = {p.result_id: p for parts in course_parts.VERDICTS.values() for v in parts.values()
          for p in getattr(v, "parts", (v,)) if isinstance(p, Scores)}
_REFERENCES: dict = {}  # the references, computed once per test process


def _plain(v):
    if isinstance(v, (list, tuple)):
        return [_plain(i) for i in v]
    return torch.as_tensor(np.array(torch.as_tensor(v).detach().double().numpy()))


class _Given:
    """Plays the kernel: hands over the given values (by key) as fresh plain tensors."""

    def __init__(self, **values):
        self.values = values

    def capture(self, exprs):
        return {k: _plain(self.values[k]) for k in exprs}


def assert_grader_accepts(result_id: str, score_in, score_out) -> None:
    """The grader gives the part of ``result_id`` its points for these score vectors."""
    outcome = SCORES[result_id].judge(Context(_Given(**{"in": score_in, "out": score_out}),
                                              "miniclip", 0, references=_REFERENCES))
    assert outcome.passed, f"the grader rejects these {result_id} scores: {outcome.failure}"


def assert_kmeans_accepted(train, test, ids, k: int, md, rmd) -> None:
    """The grader accepts this partition and these MD/RMD scores of the test rows (06's
    k-means parts are judged on the student's own partition:
    :func:`ood_utils.grader.course_parts.judge_kmeans_partition`)."""
    course_parts.judge_kmeans_partition(train, test, np.asarray(ids), k, np.asarray(md),
                                        np.asarray(rmd), f"k = {k}")


def assert_plp_accepted(layer, score_in, score_out) -> None:
    """The grader gives 04's AUROC part its points for this probe and these scores (judged on
    the student's own probe: :func:`ood_utils.grader.course_parts._plp_from_the_students_probe`)."""
    verdict = course_parts.verdict_for("04_plp", "plp_auroc")
    given = _Given(p=[q.detach() for q in layer.parameters()], **{"in": score_in,
                                                                   "out": score_out})
    outcome = verdict.judge(Context(given, "miniclip", 0))
    assert outcome.passed, f"the grader rejects this probe: {outcome.failure}"
