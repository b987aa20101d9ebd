"""Time and peak memory of the reference scorers, with reference points from the same run.

Two synthetic cases (random float32 features, no model needed):

* ``miniclip``: 36,000 x 320 training features, 10,000 test rows (the course's default sizes);
* ``cifar``:    50,000 x 1024 training features, 4,000 test rows (the ``clip`` profile's
  trunk dimension).

Reference points measured in the same run:

* ``matmul``: one dense float32 product ``test @ train.T`` of the same shapes, the arithmetic
  a brute-force cosine k-NN cannot avoid on a CPU (its floor);
* ``sklearn``: scikit-learn's ``NearestNeighbors(metric="cosine", algorithm="brute")``.

Every measurement runs in a fresh child process, so the peak resident memory it reports
(``VmHWM`` after resetting it, minus the memory held before the call) belongs to that call only.
Goals (from the methods issue): ``knn_scores`` within 15 % of ``matmul`` with peak memory under
1.5 GB; Mahalanobis on the ``cifar`` case under 5 s.

Usage::

    .venv/bin/python benchmarks/bench_scores.py [--repeat 3] [--threads 2] [--case miniclip]
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import time

CASES = {"miniclip": (36_000, 4_000 + 6_000, 320), "cifar": (50_000, 4_000, 1024)}


def _rss_kib(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
        return True
    except OSError:
        return False


def _job(name: str, case: str, repeat: int, threads: int, queue) -> None:
    import numpy as np
    import torch

    torch.set_num_threads(threads)
    from threadpoolctl import threadpool_limits

    threadpool_limits(threads)
    from ood_utils import methods

    n_train, n_test, dim = CASES[case]
    g = torch.Generator().manual_seed(0)
    train = torch.randn(n_train, dim, generator=g)
    test = torch.randn(n_test, dim, generator=g)
    labels = torch.randint(0, 10, (n_train,), generator=g)
    logits = torch.randn(n_test, 100, generator=g)
    half = n_test // 2  # "ID" and "OOD" halves of the test rows

    def sklearn_knn():
        from sklearn.neighbors import NearestNeighbors

        nn_ = NearestNeighbors(n_neighbors=1, metric="cosine", algorithm="brute")
        nn_.fit(train.numpy())
        return nn_.kneighbors(test.numpy())

    jobs = {
        "matmul": lambda: test @ train.T,
        "sklearn": sklearn_knn,
        "knn_scores": lambda: methods.knn_scores(train, test, k=1),
        "knn_scores k=50": lambda: methods.knn_scores(train, test, k=50),
        "mahalanobis MD": lambda: methods.mahalanobis_scores(train, labels, test),
        "mahalanobis RMD": lambda: methods.mahalanobis_scores(train, labels, test, relative=True),
        # ID and OOD rows as the notebooks score them: two wrapper calls (two fits) against
        # one fit of the estimator scoring both sets
        "RMD 2 sets, 2 fits": lambda: [methods.mahalanobis_scores(train, labels, t, relative=True)
                                       for t in (test[:half], test[half:])],
        "RMD 2 sets, 1 fit": lambda: [m.score_samples(t) for m in
                                      [methods.Mahalanobis(relative=True).fit(train, labels)]
                                      for t in (test[:half], test[half:])],
        "kmeans10 + MD": lambda: methods.kmeans_mahalanobis_scores(train, test, 10),
        "kmeans100 + MD": lambda: methods.kmeans_mahalanobis_scores(train, test, 100),
        "msp_scores": lambda: methods.msp_scores(logits),
    }
    fn = jobs[name]
    fn()  # warm-up: thread pools, lazy imports, allocator
    times = []
    base = _rss_kib("VmRSS")
    peak_ok = _reset_peak()
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
        del out
    peak = (_rss_kib("VmHWM") - base) / 1024 if peak_ok else float("nan")
    queue.put((name, float(np.median(times)), peak))


def measure(name: str, case: str, repeat: int, threads: int) -> tuple[float, float]:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_job, args=(name, case, repeat, threads, queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result[1], result[2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--case", choices=list(CASES), nargs="+", default=list(CASES))
    args = parser.parse_args()
    names = ["matmul", "sklearn", "knn_scores", "knn_scores k=50", "mahalanobis MD",
             "mahalanobis RMD", "RMD 2 sets, 2 fits", "RMD 2 sets, 1 fit", "kmeans10 + MD", "kmeans100 + MD", "msp_scores"]
    print(f"{args.threads} thread(s), median of {args.repeat} runs, peak = extra resident memory")
    for case in args.case:
        n_train, n_test, dim = CASES[case]
        print(f"\n== {case}: train {n_train:,} x {dim}, test {n_test:,} ==")
        print(f"{'scorer':18s}{'seconds':>9s}{'peak MiB':>10s}{'/ matmul':>10s}{'/ sklearn':>10s}")
        found = {}
        for name in names:
            if case == "cifar" and name.startswith("kmeans100"):
                continue  # minutes of k-means; the miniclip case shows its cost
            seconds, peak = measure(name, case, args.repeat, args.threads)
            found[name] = seconds
            ratio_mm = seconds / found["matmul"]
            ratio_sk = seconds / found["sklearn"] if "sklearn" in found else float("nan")
            print(f"{name:18s}{seconds:9.3f}{peak:10.0f}{ratio_mm:10.2f}{ratio_sk:10.2f}",
                  flush=True)
        knn = found["knn_scores"] / found["matmul"]
        print(f"goal knn_scores <= 1.15 x matmul: {knn:.2f} x "
              f"({'met' if knn <= 1.15 else 'NOT met'})")
        if case == "cifar":
            md = max(found["mahalanobis MD"], found["mahalanobis RMD"])
            print(f"goal Mahalanobis < 5 s: {md:.2f} s ({'met' if md < 5 else 'NOT met'})")


if __name__ == "__main__":
    main()
