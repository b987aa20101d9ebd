"""Benchmark the grader: N copies of one course notebook, graded in parallel.

    .venv/bin/python benchmarks/bench_grading.py                 # notebooks/02_knn.ipynb
    .venv/bin/python benchmarks/bench_grading.py tests/fixtures/toy_course/02_toy.ipynb -n 8

The copies are the instructor notebook itself (every part should earn full marks). Prints
the time of one plain run of the notebook, then runs ``python -m ood_utils grade`` on the
copies twice, in the bubblewrap sandbox and with --no-sandbox (in alternating order over
--rounds rounds; each a fresh process, start-up included), and prints the wall-clock time per
submission of each and their ratio (goal: sandboxed <= 1.15 x --no-sandbox).
``--no-compare`` grades once, in the sandbox when it is available. Falls back to the synthetic
toy notebook when the course notebook does not exist yet.
"""
from __future__ import annotations

import argparse
import csv
import subprocess
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
    parser.add_argument("--rounds", type=int, default=1,
                        help="sandboxed/--no-sandbox pairs to time (default 1)")
    parser.add_argument("--no-compare", action="store_true",
                        help="grade once (sandboxed if available), no --no-sandbox run")
    args = parser.parse_args(argv)

    from ood_utils.grader.execute import execute_notebook
    from ood_utils.grader.grading import _kernel_env
    from ood_utils.course.profiles import get_profile
    from ood_utils.grader.sandbox import unavailable_reason

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

        reason = unavailable_reason()
        if reason:
            print(f"no sandbox here ({reason}): timing --no-sandbox only")
        modes = [True, False] if not reason and not args.no_compare else [not reason]
        times: dict[bool, list[float]] = {True: [], False: []}
        full = total_rows = 0
        for r in range(max(1, args.rounds)):
            order = modes if r % 2 == 0 else modes[::-1]
            for sandbox in order:
                out = tmp / f"out{r}{sandbox}"
                # the command an instructor runs, in a fresh process: each mode pays its own
                # start-up (the sandboxed grader also verifies the feature cache once)
                cmd = [sys.executable, "-m", "ood_utils", "grade", "--out", str(out),
                       "--source", str(source.parent), "--profile", profile,
                       "--jobs", str(args.jobs), "--cell-timeout", str(args.cell_timeout),
                       "--timeout", str(args.timeout), str(subs)]
                if not sandbox:
                    cmd.insert(4, "--no-sandbox")
                start = time.perf_counter()
                proc = subprocess.run(cmd, capture_output=True, text=True)
                total = time.perf_counter() - start
                if proc.returncode != 0:
                    print(proc.stdout[-2000:], proc.stderr[-2000:], sep="\n")
                    return 2
                times[sandbox].append(total)
                with open(out / "grades.csv", newline="", encoding="utf-8") as fh:
                    rows = list(csv.DictReader(fh))
                full += sum(row["score"] == row["max_score"] for row in rows)
                total_rows += len(rows)
                label = "sandboxed " if sandbox else "--no-sandbox"
                print(f"round {r + 1} {label}: {args.copies} submissions in {total:.1f} s "
                      f"({total / max(args.copies, 1):.2f} s per submission)")

    per = {k: min(v) / max(args.copies, 1) for k, v in times.items() if v}
    for sandbox, value in per.items():
        label = "sandboxed   " if sandbox else "--no-sandbox"
        print(f"{label}: {value:.2f} s per submission (best of {len(times[sandbox])}), "
              f"{value / once:.2f} x one plain run")
    if len(per) == 2:
        print(f"sandboxed / --no-sandbox: {per[True] / per[False]:.3f} (goal <= 1.15)")
    print(f"{full}/{total_rows} parts at full marks")
    return 0 if full == total_rows else 1


if __name__ == "__main__":
    sys.exit(main())
