"""Time a cold feature extraction of the miniclip profile (46,000 images) on this machine.

Usage: .venv/bin/python benchmarks/bench_extract.py [--profile miniclip] [--workers 0]

Extracts into a temporary cache folder (the real cache is untouched) and prints images/s per
split and the total time as a ratio of the 60 s goal on 2 CPU cores.
"""
import argparse
import os
import tempfile
import time

import torch

GOAL_SECONDS = 60.0


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="miniclip")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["OOD_FEATURES_DIR"] = tmp
        from ood_utils.course.features import load_features

        start = time.perf_counter()
        feats = load_features(args.profile, device="cpu", num_workers=args.workers)
        seconds = time.perf_counter() - start
    n = sum(len(feats[f"{s}_feats"]) for s in ("id_train", "id_test", "ood_test"))
    print(f"threads: {torch.get_num_threads()}, cores: {os.cpu_count()}, workers: {args.workers}")
    print(f"cold extraction of {n} images (model load included): {seconds:.1f} s, "
          f"{n / seconds:.0f} images/s")
    print(f"ratio to the {GOAL_SECONDS:.0f} s goal: {seconds / GOAL_SECONDS:.2f} "
          f"({'within' if seconds <= GOAL_SECONDS else 'over'} the goal)")


if __name__ == "__main__":
    main()
