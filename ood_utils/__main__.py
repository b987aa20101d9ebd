"""Command line of the course: ``python -m ood_utils <command> --help``."""
from __future__ import annotations

import argparse
import importlib
import os
import sys
import time

from .course.profiles import PROFILES


def _add_profile(p: argparse.ArgumentParser) -> None:
    p.add_argument("--profile", choices=sorted(PROFILES), default=None,
                   help="course profile (default: $OOD_PROFILE or miniclip)")


def _use_profile(args) -> str:
    from .course.profiles import ENV_VAR, get_profile

    name = get_profile(getattr(args, "profile", None)).name
    os.environ[ENV_VAR] = name  # notebooks and kernels started from here inherit it
    return name


def cmd_extract(args) -> int:
    from .course.data import FEATURE_SPLITS
    from .course.features import load_features

    name = _use_profile(args)
    start = time.time()
    feats = load_features(name, device=args.device, batch_size=args.batch_size)
    print(f"profile {name}: features ready in {time.time() - start:.1f} s")
    for key in FEATURE_SPLITS:
        f, y = feats[f"{key}_feats"], feats[f"{key}_labels"]
        print(f"  {key:9s} feats {tuple(f.shape)}  labels {tuple(y.shape)}  "
              f"classes {sorted(set(y.tolist()))}")
    return 0


def cmd_check_data(args) -> int:
    from .course.data import DataMissingError, find_fashion_mnist

    try:
        print(f"Fashion-MNIST found in {find_fashion_mnist()}")
        return 0
    except DataMissingError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


def cmd_zero_shot(args) -> int:
    """Zero-shot accuracy of the shipped tiny CLIP on the 10-class Fashion-MNIST test split."""
    from .course.data import load_fashion_mnist
    from .course.models import load_clip
    from .course.train_clip import EVAL_TEMPLATE, images_to_tensor, zero_shot_accuracy

    model, _, tokenizer = load_clip("miniclip")
    images, labels = load_fashion_mnist("test")
    cfg = model.visual.preprocess_cfg
    acc = zero_shot_accuracy(model, tokenizer, images_to_tensor(images, cfg["mean"], cfg["std"]),
                             labels)
    print(f"tiny CLIP zero-shot accuracy (Fashion-MNIST test, 10 classes, "
          f"\"{EVAL_TEMPLATE}\"): {acc:.2f}%")
    return 0


def cmd_train_miniclip(args) -> int:
    from .course.models import MINICLIP_WEIGHTS
    from .course.train_clip import train_miniclip

    args.out = args.out or str(MINICLIP_WEIGHTS)
    result = train_miniclip(epochs=args.epochs, seed=args.seed, limit=args.limit, out=args.out,
                            batch_size=args.batch_size)
    print(f"final loss {result['final_loss']}, zero-shot accuracy "
          f"{result['zero_shot_accuracy']}% (before: {result['zero_shot_accuracy_before']}%), "
          f"{result['train_seconds']} s; weights written to {args.out}")
    print(f"tensor digest {result['tensor_digest']} (compare with MODEL_CARD.md to check a "
          "reproduction)")
    return 0


def cmd_download(args) -> int:
    """Fetch what a profile needs from the internet (weights and datasets)."""
    from .course.data import FEATURE_SPLITS, DataMissingError, feature_dataset
    from .course.models import WeightsMissingError, load_clip
    from .course.profiles import get_profile

    name = _use_profile(args)
    try:
        load_clip(name)
        for split in FEATURE_SPLITS:
            feature_dataset(name, split)
        p = get_profile(name)
        if p.cac_known == "MNIST":
            from .course.data import torchvision_dataset
            torchvision_dataset("MNIST", True)
            torchvision_dataset("MNIST", False)
    except (WeightsMissingError, DataMissingError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"profile {name}: weights and datasets are present")
    return 0


def cmd_course(args) -> int:
    from .run import run_course

    name = _use_profile(args)
    only = [s.strip() for s in args.only.split(",")] if args.only else None
    return run_course(name, only=only, cell_timeout=args.cell_timeout)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ood_utils",
        description="CLIP out-of-distribution course: run the notebooks, extract features, "
                    "train the tiny CLIP, release and grade exercises.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("course", help="execute the notebooks in order and print the results table")
    _add_profile(p)
    p.add_argument("--only", help="comma-separated notebook numbers or names, e.g. 02,03")
    p.add_argument("--cell-timeout", type=int, default=900, help="seconds per cell (default 900)")
    p.set_defaults(func=cmd_course)

    p = sub.add_parser("extract", help="extract (or read from the cache) the three feature sets")
    _add_profile(p)
    p.add_argument("--device", default=None, help="torch device (default: cuda if available)")
    p.add_argument("--batch-size", type=int, default=None)
    p.set_defaults(func=cmd_extract)

    p = sub.add_parser("check-data", help="say where Fashion-MNIST is, or how to install it")
    p.set_defaults(func=cmd_check_data)

    p = sub.add_parser("zero-shot", help="zero-shot accuracy of the shipped tiny CLIP")
    p.set_defaults(func=cmd_zero_shot)

    p = sub.add_parser("train-miniclip", help="re-create the tiny CLIP weights from a fixed seed")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--limit", type=int, default=None, help="train on the first N images only")
    p.add_argument("--out", default=None,
                   help="where to write the weights (default: the package's own file)")
    p.set_defaults(func=cmd_train_miniclip)

    p = sub.add_parser("download", help="download the weights and datasets of a profile "
                                        "(needs internet)")
    _add_profile(p)
    p.set_defaults(func=cmd_download)

    for name, module in (("release", "grader.release"), ("grade", "grader.grading"),
                         ("lab", "workspace")):
        mod = importlib.import_module(f".{module}", __package__)  # a broken module fails loudly
        helptext = (mod.__doc__ or name).strip().splitlines()[0]
        p = sub.add_parser(name, help=helptext, description=mod.__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        mod.configure_parser(p)
        p.set_defaults(func=mod.run)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
