"""The course's results file: every notebook records its scores here, notebook 08 reads them.

Layout under :func:`ood_utils.course.profiles.results_dir` (``results/`` by default)::

    <profile>.json            {"profile": ..., "aurocs": {check_id: float}, "fpr95": {...},
                               "aupr_in": {...}, "aupr_out": {...},   (percent)
                               "extra": {check_id: {name: float}}}    (e.g. CAC's rates)
    <profile>_scores/<id>.npz score_in, score_out (float64) of each recorded check, for ROC plots

Writes are atomic (temporary file + ``os.replace``) and serialised with a lock file; the JSON is
read, validated and merged before every write, so notebooks recording different checks never
lose each other's entries, and a damaged file is replaced (with a warning) instead of crashing.

Under nbgrader (``nbgrader validate`` / ``autograde`` set ``NBGRADER_EXECUTION`` in the
environment the kernel inherits) :func:`record` computes and prints the metrics but writes
nothing: nbgrader runs every submission with the same kernel environment, so each one would
overwrite the same file (the course's runner and notebook 08 would then show the last student's
numbers). The course's own grader gives each submission its own ``OOD_RESULTS_DIR`` instead.

This module knows the course's graded results (:data:`CHECK_IDS`, their :data:`LABELS` and
:data:`NOTEBOOKS`) but not their targets: :func:`table` and :func:`format_table` judge the
recorded values with the ``expected`` lookup their caller passes in (the answer key's
:func:`ood_utils.answer_key.expected.get_expected`).
"""
from __future__ import annotations

import json
import math
import os
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ._io import atomic_write, atomic_write_text, folder_lock
from ..methods import metrics
from ..methods._arrays import score_vector
from .profiles import Profile, get_profile, results_dir

#: The graded results of the course, in course order (the answer key has a target per id).
CHECK_IDS = (
    "knn", "msp", "plp", "plp_md", "plp_rmd", "md", "rmd",
    "kmeans10_md", "kmeans10_rmd", "kmeans50_md", "kmeans50_rmd",
    "kmeans100_md", "kmeans100_rmd", "cac",
)

#: Short human-readable names used in tables and plots.
LABELS = {
    "knn": "kNN (cosine, k=1)",
    "msp": "zero-shot MSP",
    "plp": "PLP (probe MSP)",
    "plp_md": "PLP + MD",
    "plp_rmd": "PLP + RMD",
    "md": "MD (real labels)",
    "rmd": "RMD (real labels)",
    "kmeans10_md": "k-means 10 + MD",
    "kmeans10_rmd": "k-means 10 + RMD",
    "kmeans50_md": "k-means 50 + MD",
    "kmeans50_rmd": "k-means 50 + RMD",
    "kmeans100_md": "k-means 100 + MD",
    "kmeans100_rmd": "k-means 100 + RMD",
    "cac": "CAC (open-set)",
}

#: Which notebook produces each check id (used in messages about missing results).
NOTEBOOKS = {
    "knn": "02_knn", "msp": "03_msp", "plp": "04_plp",
    "plp_md": "05_mahalanobis", "plp_rmd": "05_mahalanobis",
    "md": "05_mahalanobis", "rmd": "05_mahalanobis",
    "kmeans10_md": "06_kmeans", "kmeans10_rmd": "06_kmeans",
    "kmeans50_md": "06_kmeans", "kmeans50_rmd": "06_kmeans",
    "kmeans100_md": "06_kmeans", "kmeans100_rmd": "06_kmeans",
    "cac": "07_cac_osr",
}

METRIC_KEYS = ("aurocs", "fpr95", "aupr_in", "aupr_out")
# key of ood_utils.methods.metrics.ood_metrics() for every key of the JSON file
_FROM_METRICS = {"aurocs": "auroc", "fpr95": "fpr95", "aupr_in": "aupr_in", "aupr_out": "aupr_out"}


def under_nbgrader() -> bool:
    """Whether this process runs inside ``nbgrader validate`` or ``nbgrader autograde``.

    nbgrader 0.9.6 sets ``NBGRADER_EXECUTION`` (``"validate"`` or ``"autograde"``) in its own
    environment while it executes a notebook; the kernel it starts inherits it.
    """
    return bool(os.environ.get("NBGRADER_EXECUTION"))


def results_path(profile: str | Profile | None = None) -> Path:
    """``results/<profile>.json``."""
    return results_dir() / f"{get_profile(profile).name}.json"


def scores_dir(profile: str | Profile | None = None) -> Path:
    """``results/<profile>_scores/``: one ``<check_id>.npz`` per recorded check."""
    return results_dir() / f"{get_profile(profile).name}_scores"


def _empty(name: str) -> dict:
    return {"profile": name, **{k: {} for k in METRIC_KEYS}, "extra": {}}


def _finite_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.floating, np.integer)) and not isinstance(
        value, bool) and math.isfinite(float(value))


def _validated(data: Any, name: str) -> dict:
    """Keep the well-formed part of a results dict; raise ``ValueError`` if nothing is usable."""
    if not isinstance(data, dict):
        raise ValueError(f"expected a JSON object, found {type(data).__name__}")
    if data.get("profile") != name:
        raise ValueError(f"file belongs to profile {data.get('profile')!r}, not {name!r}")
    clean = _empty(name)
    for key in METRIC_KEYS:
        section = data.get(key, {})
        if not isinstance(section, dict):
            raise ValueError(f"section {key!r} is not an object")
        for cid, value in section.items():
            if cid in CHECK_IDS and isinstance(value, (int, float)) and math.isfinite(value):
                clean[key][cid] = float(value)
    extra = data.get("extra", {})
    if isinstance(extra, dict):
        for cid, numbers in extra.items():
            if cid in CHECK_IDS and isinstance(numbers, dict):
                kept = {k: float(v) for k, v in numbers.items() if _finite_number(v)}
                if kept:
                    clean["extra"][cid] = kept
    return clean


def load(profile: str | Profile | None = None) -> dict:
    """The recorded results of ``profile``; an empty structure when nothing is recorded.

    Returns ``{"profile": name, "aurocs": {...}, "fpr95": {...}, "aupr_in": {...},
    "aupr_out": {...}, "extra": {check_id: {name: value}}}`` with values in percent.
    """
    name = get_profile(profile).name
    path = results_path(name)
    if not path.is_file():
        return _empty(name)
    try:
        return _validated(json.loads(path.read_text()), name)
    except (OSError, ValueError) as err:
        warnings.warn(f"{path} is not a valid results file ({err}); treating it as empty")
        return _empty(name)


def record(check_id: str, score_in: Any, score_out: Any,
           profile: str | Profile | None = None, quiet: bool = False,
           extra: dict[str, float] | None = None) -> dict[str, float]:
    """Compute the four metrics of one method and store them with its scores.

    Parameters
    ----------
    check_id : one of :data:`CHECK_IDS`.
    score_in, score_out : array or tensor, shape (N_in,) and (N_out,)
        Scores of the ID and OOD test samples, higher = more in-distribution.
    profile : profile name (default: the active one).
    quiet : do not print the one-line summary.
    extra : further numbers of this check that the answer key may have targets for (its
        ``Expected.extra``), e.g. ``{"accuracy": 92.4, "known_accepted_tpr": 95.2}`` for CAC.
        Values must be finite real numbers; they replace the check's previous extras.

    Returns
    -------
    dict with keys ``auroc``, ``fpr95``, ``aupr_in``, ``aupr_out`` (percent), as in
    :func:`ood_utils.methods.metrics.ood_metrics`.

    Notes
    -----
    Under nbgrader (:func:`under_nbgrader`) nothing is written; the metrics are still
    returned and printed.
    """
    name = get_profile(profile).name
    if check_id not in CHECK_IDS:
        raise ValueError(f"check_id {check_id!r} is unknown; use one of {', '.join(CHECK_IDS)}")
    s_in = score_vector(score_in, "score_in")
    s_out = score_vector(score_out, "score_out")
    if extra is not None:
        if not isinstance(extra, dict) or not all(
                isinstance(k, str) and _finite_number(v) for k, v in extra.items()):
            raise ValueError("extra must be a dict of name -> finite number, e.g. "
                             "{'accuracy': 92.4}; pass only the scalar entries of a summary")
        extra = {k: float(v) for k, v in extra.items()}
    values = metrics._ood_metrics(s_in, s_out)  # validated just above
    if under_nbgrader():  # one shared environment for every submission: keep the file intact
        if not quiet:
            print(f"{check_id}: AUROC {values['auroc']:.2f}, FPR@95TPR {values['fpr95']:.2f}, "
                  f"AUPR-in {values['aupr_in']:.2f}, AUPR-out {values['aupr_out']:.2f} "
                  f"(not recorded: running under nbgrader)")
        return values

    npz = scores_dir(name) / f"{check_id}.npz"
    def write_npz(tmp):
        with open(tmp, "wb") as fh:  # a file object: np.savez would append ".npz" to a name
            np.savez(fh, score_in=s_in, score_out=s_out)

    atomic_write(npz, write_npz)

    path = results_path(name)
    with folder_lock(path.parent, path.name):  # serialise read-merge-write cycles
        data = load(name)
        for key in METRIC_KEYS:
            data[key][check_id] = round(values[_FROM_METRICS[key]], 6)
        if extra is not None:
            data["extra"][check_id] = {k: round(v, 6) for k, v in extra.items()}
        atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")
    if not quiet:
        print(f"recorded {check_id} in {path.name}: AUROC {values['auroc']:.2f}, "
              f"FPR@95TPR {values['fpr95']:.2f}, AUPR-in {values['aupr_in']:.2f}, "
              f"AUPR-out {values['aupr_out']:.2f}")
    return values


def load_scores(profile: str | Profile | None = None,
                check_ids=None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Saved ``(score_in, score_out)`` per check id, for the ones that were recorded.

    Unreadable files are skipped with a warning.
    """
    folder = scores_dir(profile)
    out = {}
    for cid in check_ids or CHECK_IDS:
        f = folder / f"{cid}.npz"
        if not f.is_file():
            continue
        try:
            with np.load(f) as z:
                out[cid] = (z["score_in"], z["score_out"])
        except (OSError, ValueError, KeyError) as err:
            warnings.warn(f"skipping unreadable scores file {f} ({type(err).__name__})")
    return out


def _answer_key(expected: Callable | None) -> Callable:
    if expected is None:
        raise TypeError("pass the answer key: expected=ood_utils.answer_key.expected.get_expected "
                        "(the results module does not import it)")
    return expected


def table(profile: str | Profile | None = None, expected: Callable | None = None) -> list[dict]:
    """One row per check id: measured metrics, expected AUROC, tolerance, pass/fail.

    ``expected(check_id, profile_name)`` gives the target of a check: an object with
    ``value``, ``tol``, ``extra`` (``{name: (target, tol)}``), ``is_set`` and ``accepts(v)``,
    as :func:`ood_utils.answer_key.expected.get_expected` returns.

    Row keys: ``check_id``, ``label``, ``notebook``, ``value`` (AUROC or ``None`` if not
    recorded), ``fpr95``, ``aupr_in``, ``aupr_out``, ``expected``, ``tol`` (``None`` where the
    answer key has no AUROC target), ``extra`` (``{name: (recorded or None, target, tol)}`` for
    the answer key's further targets, e.g. CAC's rates) and ``passed``: ``True`` when every
    target of the check is met, ``False`` when one is missed or a number it needs was not
    recorded, ``None`` when the check has not run or has no target at all.
    """
    name = get_profile(profile).name
    get_expected = _answer_key(expected)
    data = load(name)
    rows = []
    for cid in CHECK_IDS:
        exp = get_expected(cid, name)
        value = data["aurocs"].get(cid)
        recorded_extra = data["extra"].get(cid, {})
        extra = {k: (recorded_extra.get(k), target, tol) for k, (target, tol) in exp.extra.items()}
        if value is None or not (exp.is_set or extra):
            passed = None
        else:
            passed = (exp.accepts(value) if exp.is_set else True) and all(
                got is not None and abs(got - target) <= tol + 1e-9
                for got, target, tol in extra.values())
        rows.append({
            "check_id": cid, "label": LABELS[cid], "notebook": NOTEBOOKS[cid],
            "value": value,
            "fpr95": data["fpr95"].get(cid),
            "aupr_in": data["aupr_in"].get(cid),
            "aupr_out": data["aupr_out"].get(cid),
            "expected": exp.value, "tol": exp.tol, "extra": extra, "passed": passed,
        })
    return rows


def missing_notebooks(profile: str | Profile | None = None) -> list[str]:
    """Notebooks whose results are not recorded yet, in course order."""
    recorded = load(profile)["aurocs"]
    return sorted({NOTEBOOKS[cid] for cid in CHECK_IDS if cid not in recorded})


def format_table(profile: str | Profile | None = None, expected: Callable | None = None) -> str:
    """The results table as fixed-width text (used by ``python -m ood_utils course``);
    ``expected`` as for :func:`table`."""
    name = get_profile(profile).name

    def num(v):
        return "-" if v is None else f"{v:.2f}"

    header = (f"{'check':<14} {'method':<20} {'AUROC':>7} {'expected':>9} {'tol':>5} "
              f"{'FPR95':>7} {'AUPR-in':>8} {'AUPR-out':>8}  status")
    lines = [f"Results for profile {name} (percent; ID = positive class)", header,
             "-" * len(header)]
    for r in table(name, expected):
        if r["passed"] is True:
            status = "pass"
        elif r["passed"] is False:
            status = "FAIL"
        elif r["value"] is None:
            status = f"not run ({r['notebook']})"
        else:
            status = "no target"
        lines.append(f"{r['check_id']:<14} {r['label']:<20} {num(r['value']):>7} "
                     f"{num(r['expected']):>9} {num(r['tol']):>5} {num(r['fpr95']):>7} "
                     f"{num(r['aupr_in']):>8} {num(r['aupr_out']):>8}  {status}")
        for key, (got, target, tol) in r["extra"].items():
            if r["value"] is not None:
                lines.append(f"{'':<14}   {key}: {num(got)} (expected {target:.2f} +/- {tol:.2f})")
    return "\n".join(lines)
