"""The answer key: which AUROC each graded result should reach, per profile.

One table, :data:`EXPECTED`, maps ``profile -> check_id -> Expected``. Every notebook's AUROC
check (:func:`ood_utils.checks.check_auroc`) and the results table of notebook 08
(:func:`ood_utils.results.table`) read it through :func:`get_expected`; nothing else holds a
target number.

Check ids
---------
``knn`` (part III), ``msp`` (IV), ``plp`` (V), ``plp_md``/``plp_rmd`` (VI), ``md``/``rmd`` (VII),
``kmeans{10,50,100}_{md,rmd}`` (VIII) and ``cac`` (the open-set notebook 07).

How the tolerances are chosen
-----------------------------
``clip``: the numbers printed under "Expected result" in the original assignment, which could not
be re-measured offline. Rule: 0.5 points for the deterministic methods (kNN, MSP, MD, RMD; the
slack covers GPU vs CPU arithmetic and library versions), 2.0 points where the assignment says the
linear probe's random start moves the result (PLP and the two Mahalanobis scores on its logits),
and 3.0 points for the k-means rows, which the assignment says depend on the clustering.

``miniclip``: measured by running the reference implementation (the very code the notebooks
call: :mod:`ood_utils.scores` through :mod:`ood_utils.pipeline`, and :mod:`ood_utils.cac`) on
the cached features of the shipped tiny CLIP with ``tools/measure_expected.py``, which prints
the numbers of the rule below. Methods with a random step (the linear probe: initialisation and
shuffling; k-means: initialisation; the CAC networks) were run with seeds 0, 1, 2, 3, 4; the
others once. Each entry's ``how`` lists the date and the per-seed AUROCs. Never tuned towards a
target. Rule: ``value`` = mean over the seeds, ``tol = max(0.1, 3 * spread)`` with ``spread`` =
max - min of the per-seed AUROCs; without randomness the spread is 0 and the 0.1 floor (float
noise between machines and between correct float64 implementations, e.g. ``inv`` vs ``pinv``)
applies. The notebooks use seed 0.

Notebooks 05/06 (``md``, ``rmd``, ``kmeans*``) score the trunk features after
:func:`ood_utils.scores.drop_degenerate_directions` (the exactly constant LayerNorm direction
rotated away), so every correct inverse gives the same value. The k-means rows use the course's
fixed settings (``random_state=0``, ``n_init=1``, ``algorithm="lloyd"``); what remains variable
between correct solutions is the precision of the array handed to KMeans (float32 as the
notebook says, or float64: another local optimum) and the thread count. Rule for these rows:
``value`` = midpoint of the range over those variants, ``tol`` = half the range + 0.5 (every
measured correct variant lies inside with a 0.5-point margin).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .profiles import PROFILES, get_profile

CHECK_IDS = (
    "knn", "msp", "plp", "plp_md", "plp_rmd", "md", "rmd",
    "kmeans10_md", "kmeans10_rmd", "kmeans50_md", "kmeans50_rmd",
    "kmeans100_md", "kmeans100_rmd", "cac",
)

# Short human-readable names used in tables and plots.
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

# Which notebook produces each check id (used in messages about missing results).
NOTEBOOKS = {
    "knn": "02_knn", "msp": "03_msp", "plp": "04_plp",
    "plp_md": "05_mahalanobis", "plp_rmd": "05_mahalanobis",
    "md": "05_mahalanobis", "rmd": "05_mahalanobis",
    "kmeans10_md": "06_kmeans", "kmeans10_rmd": "06_kmeans",
    "kmeans50_md": "06_kmeans", "kmeans50_rmd": "06_kmeans",
    "kmeans100_md": "06_kmeans", "kmeans100_rmd": "06_kmeans",
    "cac": "07_cac_osr",
}


@dataclass(frozen=True)
class Expected:
    """One target of the answer key.

    Attributes
    ----------
    value: expected AUROC in percent, or ``None`` while no target is recorded.
    tol: accepted absolute deviation in percentage points (``|auroc - value| <= tol``).
    how: where the number comes from (source, date, seeds, per-seed values).
    extra: further targets of the same check (e.g. recognition rates of the CAC notebook).
    """

    value: float | None
    tol: float | None
    how: str
    extra: dict = field(default_factory=dict)

    @property
    def is_set(self) -> bool:
        return self.value is not None and self.tol is not None

    def accepts(self, auroc: float) -> bool:
        """True when ``auroc`` lies within ``tol`` of ``value`` (``False`` if no target is set)."""
        return self.is_set and abs(float(auroc) - self.value) <= self.tol + 1e-9


_SEED_TEXT = "original assignment, 'Expected result' (CIFAR100-->CIFAR10)"

EXPECTED: dict[str, dict[str, Expected]] = {
    "clip": {
        "knn": Expected(83.55, 0.5, _SEED_TEXT),
        "msp": Expected(76.38, 0.5, _SEED_TEXT),
        "plp": Expected(74.81, 2.0, _SEED_TEXT + "; varies with the probe's initialisation"),
        "plp_md": Expected(83.31, 2.0, _SEED_TEXT + "; depends on the trained probe"),
        "plp_rmd": Expected(80.88, 2.0, _SEED_TEXT + "; depends on the trained probe"),
        "md": Expected(71.71, 0.5, _SEED_TEXT),
        "rmd": Expected(84.93, 0.5, _SEED_TEXT),
        "kmeans10_md": Expected(67.87, 3.0, _SEED_TEXT + "; depends on the clustering"),
        "kmeans10_rmd": Expected(42.38, 3.0, _SEED_TEXT + "; depends on the clustering"),
        "kmeans50_md": Expected(72.18, 3.0, _SEED_TEXT + "; depends on the clustering"),
        "kmeans50_rmd": Expected(58.73, 3.0, _SEED_TEXT + "; depends on the clustering"),
        "kmeans100_md": Expected(72.84, 3.0, _SEED_TEXT + "; depends on the clustering"),
        "kmeans100_rmd": Expected(68.59, 3.0, _SEED_TEXT + "; depends on the clustering"),
        # The original open-set notebook reports recognition rates under its fixed threshold
        # (min_j s_j > 0.5 -> unknown), not an AUROC: 95.16 % of the known MNIST test images
        # and 85.40 % of the unknown CIFAR-10 images. The network is trained from scratch, so
        # the rates move with the run: 3 points each.
        "cac": Expected(None, None,
            "original open-set notebook: recognition rates under the fixed threshold 0.5",
            extra={"known_accepted_seed": (95.16, 3.0), "unknown_rejected_seed": (85.40, 3.0)}),
    },
    "miniclip": {
        # Measured by running ood_utils.scores through ood_utils.pipeline
        # on the cached features of the shipped weights (SHA-256 5b294108...), one CPU thread,
        # torch 2.14.1, scikit-learn 1.9.1; probe and k-means over seeds 0-4. See the rule in
        # the module docstring. `tools/measure_expected.py --threads 1` reproduces every value
        # below except cac to the printed digits; on two threads scikit-learn's KMeans sums in
        # another order and k = 100 moves a little (seed 1: 83.800 instead of 84.027), well
        # inside the tolerance (k-means is now measured separately, see below).
        "knn": Expected(82.69, 0.1,
            "measured 2026-11-22, deterministic (no seed): 82.690"),
        "msp": Expected(91.66, 0.1,
            "measured 2026-11-22, deterministic (no seed): 91.665"),
        "plp": Expected(87.36, 3.23,
            "measured 2026-11-22, mean of 5 seeds (seed 0: 87.242, seed 1: 86.798, seed 2: 87.874, seed 3: 87.382, seed 4: 87.512; spread 1.077)"),
        "plp_md": Expected(94.48, 1.02,
            "measured 2026-11-22, re-measured 2026-11-30 unchanged (tools/measure_expected.py "
            "--only plp --threads 1), mean of 5 probe seeds (seed 0: 94.474, seed 1: 94.433, "
            "seed 2: 94.692, seed 3: 94.353, seed 4: 94.471; spread 0.339); the correct "
            "Mahalanobis variants of tests/answer_key agree on the probe logits (6-d, no "
            "degenerate direction)"),
        "plp_rmd": Expected(93.78, 0.75,
            "measured 2026-11-22, re-measured 2026-11-30 unchanged, mean of 5 probe seeds (seed "
            "0: 93.688, seed 1: 93.783, seed 2: 93.914, seed 3: 93.826, seed 4: 93.664; spread "
            "0.250)"),
        "md": Expected(90.56, 0.1,
            "measured 2026-11-30 on the rotated trunk features (drop_degenerate_directions), "
            "deterministic (no seed): 90.564; correct variants (np.linalg.inv, np.linalg.pinv "
            "default, scipy.linalg.pinvh, torch.linalg.pinv, float32 arithmetic) 90.5636 for "
            "all"),
        "rmd": Expected(93.03, 0.1,
            "measured 2026-11-30 on the rotated trunk features, deterministic (no seed): 93.031; "
            "correct variants 93.0309 for all (float32 arithmetic 93.0308). Without the rotation "
            "np.linalg.pinv gave 92.50 and np.linalg.inv 93.07"),
        # k-means (notebook 06): rotated features, KMeans(random_state=0, n_init=1,
        # algorithm="lloyd"); tools/measure_expected.py --only kmeans --threads 1 and
        # --threads 2 (identical); variants = KMeans input float32 / float64. Rule in the
        # module docstring. For information, other random_states (float32, 1 thread; before
        # the settings were fixed) gave k=10 RMD 6.9 / 30.4 / 30.4 / 10.8 / 30.3 (seeds 0-4):
        # bimodal, which is why the seed is fixed.
        "kmeans10_md": Expected(86.90, 0.67,
            "measured 2026-11-30, fixed seed 0 (float32 input: 86.737, float64 input: 87.071; "
            "1 and 2 threads identical; spread 0.334)"),
        "kmeans10_rmd": Expected(6.98, 0.59,
            "measured 2026-11-30, fixed seed 0 (float32 input: 6.893, float64 input: 7.068; "
            "1 and 2 threads identical; spread 0.175)"),
        "kmeans50_md": Expected(84.92, 1.37,
            "measured 2026-11-30, fixed seed 0 (float32 input: 85.781, float64 input: 84.049; "
            "1 and 2 threads identical; spread 1.732)"),
        "kmeans50_rmd": Expected(6.33, 0.56,
            "measured 2026-11-30, fixed seed 0 (float32 input: 6.387, float64 input: 6.276; "
            "1 and 2 threads identical; spread 0.111)"),
        "kmeans100_md": Expected(83.86, 0.80,
            "measured 2026-11-30, fixed seed 0 (float32 input: 84.156, float64 input: 83.566; "
            "1 and 2 threads identical; spread 0.590)"),
        "kmeans100_rmd": Expected(6.51, 0.56,
            "measured 2026-11-30, fixed seed 0 (float32 input: 6.568, float64 input: 6.446; "
            "1 and 2 threads identical; spread 0.122)"),
        # Notebook 07 (baseline CNN + CAC on its frozen convolutional features), seed s used for
        # the baseline and the CAC stage alike; measured with tools/measure_expected.py
        # --only cac on two threads (the notebook's default). The extras are the closed-set
        # accuracy and the rates under the 95 % rule.
        "cac": Expected(75.91, 8.33,
            "measured 2026-11-22, mean of 5 seeds (seed 0: 77.568, seed 1: 74.792, seed 2: "
            "75.594, seed 3: 75.966, seed 4: 75.652; spread 2.776); accuracy 92.400/92.367/"
            "92.333/91.750/92.300, known accepted 95.200/93.933/95.067/95.083/94.433, unknown "
            "rejected 26.850/25.625/25.975/24.775/27.700",
            extra={"accuracy": (92.23, 1.95), "known_accepted_tpr": (94.74, 3.80),
                   "unknown_rejected_tpr": (26.19, 8.78)}),
    },
}


def get_expected(check_id: str, profile=None) -> Expected:
    """The :class:`Expected` entry of ``check_id`` for ``profile`` (default: the active one).

    Raises ``ValueError`` for an unknown check id or a profile without a table.
    """
    name = get_profile(profile).name
    if check_id not in CHECK_IDS:
        raise ValueError(f"check_id {check_id!r} is unknown; use one of {', '.join(CHECK_IDS)}")
    table = EXPECTED.get(name)
    if table is None:
        raise ValueError(f"profile {name!r} has no expected values; known: {sorted(EXPECTED)}")
    return table.get(check_id, Expected(None, None, "no entry"))


assert set(EXPECTED) == set(PROFILES), "every profile needs an answer-key table"
