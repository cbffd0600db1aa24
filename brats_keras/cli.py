"""The ``brats-keras`` command line: a thin layer that parses arguments and calls the library.

Sub-commands: convert, synth, train, predict, evaluate, demo. Keras is imported only
by the sub-commands that need it, so ``convert`` and ``synth`` start in about a second.
"""
from __future__ import annotations

import argparse
import sys


def _add_convert_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--input", required=True, help="folder of BraTS cases (any supported layout)")
    p.add_argument("--output", required=True, help="output folder: images/, masks/, manifest.json")
    p.add_argument("--modalities", default="flair,t1ce,t2",
                   help="comma-separated modalities in channel order, either vocabulary (default: flair,t1ce,t2)")
    p.add_argument("--crop", choices=["fixed", "brain"], default="fixed",
                   help="fixed: the report's [56:184, 56:184, 13:141]; brain: nonzero bounding box + margin")
    p.add_argument("--margin", type=int, default=4, help="voxels around the brain box with --crop brain")
    p.add_argument("--scale", choices=["minmax", "zscore"], default="minmax",
                   help="minmax over the whole volume (report) or z-score over brain voxels")
    p.add_argument("--dtype", choices=["float16", "float32"], default="float16")
    p.add_argument("--min-tumor", type=float, default=None, metavar="FRAC",
                   help="drop cases whose crop holds less tumor than FRAC of its voxels (listed in the manifest)")
    p.add_argument("--workers", type=int, default=None, help="processes (default: number of cores)")
    p.add_argument("--overwrite", action="store_true", help="convert cases again even if complete")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def cmd_convert(args) -> int:
    from .convert import convert_folder
    from .io import BratsInputError

    try:
        manifest = convert_folder(args.input, args.output, modalities=args.modalities, crop=args.crop,
                                  scale=args.scale, dtype=args.dtype, margin=args.margin,
                                  min_tumor=args.min_tumor, workers=args.workers,
                                  overwrite=args.overwrite, progress=not args.quiet)
    except (BratsInputError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    n_ok, n_fail = len(manifest["cases"]), len(manifest["failed"])
    print(f"converted {n_ok} case(s) into {args.output}; {len(manifest['dropped'])} dropped; {n_fail} failed")
    return 1 if n_fail else 0


def cmd_synth(args) -> int:
    from .synthetic import make_dataset

    shape = tuple(int(s) for s in args.shape.split(","))
    make_dataset(args.out, args.cases, seed=args.seed, shape=shape, workers=args.workers,
                 progress=not args.quiet)
    print(f"wrote {args.cases} synthetic case(s) to {args.out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="brats-keras", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("convert", help="convert BraTS NIfTI cases into .npy training arrays")
    _add_convert_args(p)
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("synth", help="write synthetic BraTS-like cases (NIfTI, BraTS 2021 layout)")
    p.add_argument("--out", required=True)
    p.add_argument("--cases", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--shape", default="240,240,155", help="volume shape, default 240,240,155")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_synth)

    for register in _EXTRA:
        register(sub)
    return parser


#: functions adding further sub-commands (train, predict, evaluate, demo)
_EXTRA: list = []


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
