"""Benchmark the grader: N copies of one course notebook, graded in parallel.

    .venv/bin/python benchmarks/bench_grading.py                 # notebooks/02_knn.ipynb
    .venv/bin/python benchmarks/bench_grading.py tests/fixtures/toy_course/02_toy.ipynb -n 8

The copies are the instructor notebook itself (every part should earn full marks). Prints
the time of one plain run of the notebook, the total grading time, the time per submission
and their ratio (grading overhead: restoring cells, process and kernel start, reports).
Falls back to the synthetic toy notebook when the course notebook does not exist yet.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
DEFAULT = ROOT / "notebooks" / "02_knn.ipynb"
TOY = ROOT / "tests" / "fixtures" / "toy_course" / "02_toy.ipynb"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("notebook", nargs="?", default=None,
                        help=f"instructor notebook (default {DEFAULT.relative_to(ROOT)}, "
                             "else the toy fixture)")
    parser.add_argument("-n", "--copies", type=int, default=20, help="submissions (default 20)")
    parser.add_argument("--jobs", type=int, default=2, help="parallel submissions (default 2)")
    parser.add_argument("--profile", default=None, help="course profile (default: active)")
    parser.add_argument("--cell-timeout", type=float, default=300)
    parser.add_argument("--timeout", type=float, default=900)
    args = parser.parse_args(argv)

    from ood_utils.execute import execute_notebook
    from ood_utils.grading import _kernel_env, grade_submissions
    from ood_utils.profiles import get_profile

    if args.notebook:
        source = Path(args.notebook)
    elif DEFAULT.exists():
        source = DEFAULT
    else:
        print(f"{DEFAULT.relative_to(ROOT)} does not exist yet: using the toy fixture")
        source = TOY
    profile = get_profile(args.profile).name
    print(f"notebook {source}, profile {profile}, {args.copies} copies, --jobs {args.jobs}")

    with tempfile.TemporaryDirectory(prefix="bench-grading-") as tmp:
        tmp = Path(tmp)
        once_dir = tmp / "once"
        once_dir.mkdir()
        nb = nbformat.read(source, as_version=4)
        start = time.perf_counter()
        res = execute_notebook(nb, cwd=once_dir, env=_kernel_env(once_dir, profile, 1),
                               cell_timeout=args.cell_timeout, timeout=args.timeout,
                               quiet_kernel=True)
        once = time.perf_counter() - start
        print(f"one plain run: {once:.2f} s (status {res.status})")

        subs = tmp / "submissions"
        subs.mkdir()
        text = source.read_text(encoding="utf-8")
        for i in range(args.copies):
            (subs / f"student{i:03d}_{source.name}").write_text(text, encoding="utf-8")
        start = time.perf_counter()
        rows = grade_submissions([subs], source.parent, tmp / "out", profile=profile,
                                 jobs=args.jobs, cell_timeout=args.cell_timeout,
                                 timeout=args.timeout, progress=True)
        total = time.perf_counter() - start

    per = total / max(args.copies, 1)
    full = sum(r["score"] == r["max_score"] for r in rows)
    print(f"graded {args.copies} submissions in {total:.1f} s "
          f"({per:.2f} s per submission, {full}/{len(rows)} parts at full marks)")
    print(f"time per submission / one plain run: {per / once:.2f} "
          f"(total / (copies x one run): {total / (args.copies * once):.2f})")
    return 0 if full == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
