"""The hostile set of issue 16: cheating submissions (and honest alternatives) described as
edits of the instructor notebooks; see ``_build.py`` for the format and
``tests/grading/test_hostile.py`` for how they are graded and judged."""
from __future__ import annotations

from . import cac, honest, kmeans, knn, mahalanobis, others


def all_subs():
    subs = (knn.subs() + mahalanobis.subs() + cac.subs() + kmeans.subs() + others.subs()
            + others.object_subs()
            + honest.subs())
    names = [(s.student, s.notebook) for s in subs]
    assert len(names) == len(set(names)), "two submissions share a student and notebook"
    return subs
