"""The ``brats-keras`` command line: a thin layer that parses arguments and calls the library.

Sub-commands: convert, merge, synth, train, predict, evaluate, crossval, crossval-compare, set-postprocessing,
ensemble, export, demo, view. Keras is imported only by the sub-commands that need it, so ``convert`` and ``synth``
start in about a second.
"""
from __future__ import annotations

import argparse
import sys

from .cli_support import (OneLineParser, _one_line_errors, below_one, import_keras_quietly, positive, run_command,
                          whole_number)
from .labels import OUTPUTS
from .preprocessing import DEFAULT_MARGIN


def add_convert_args(p: argparse.ArgumentParser) -> None:
    """Add the ``convert`` options to a parser; ``brats-keras convert`` and ``python data_prep/convert.py`` share
    them (run the parsed arguments with :func:`cmd_convert`)."""
    p.add_argument("--input", required=True,
                   help="folder of BraTS cases (any supported layout), co-registered modalities in any voxel size "
                        "and orientation (resampled onto the 1 mm LPS grid); a case whose files lie on different "
                        "grids fails in one line")
    p.add_argument("--output", required=True,
                   help="output folder: images/, masks/, manifest.json; locked while written; one converted with "
                        "other settings is refused (see --overwrite)")
    p.add_argument("--modalities", default="flair,t1ce,t2",
                   help="comma-separated modalities in channel order, either vocabulary (default: flair,t1ce,t2)")
    p.add_argument("--crop", choices=["fixed", "brain"], default="fixed",
                   help="fixed: the report's [56:184, 56:184, 13:141]; brain: nonzero bounding box + margin")
    p.add_argument("--margin", type=int, default=DEFAULT_MARGIN, help="voxels around the brain box with --crop brain")
    p.add_argument("--scale", choices=["minmax", "zscore"], default="minmax",
                   help="minmax over the whole volume (report) or z-score over brain voxels")
    p.add_argument("--dtype", choices=["float16", "float32", "uint8"], default="float16",
                   help="image storage; uint8 (with --scale minmax) stores round(255 * value), half the size")
    p.add_argument("--min-tumor", type=float, default=None, metavar="FRAC",
                   help="drop cases whose crop holds less tumor than FRAC of its voxels (listed in the manifest)")
    p.add_argument("--downsample", type=int, default=1, choices=[1, 2, 3, 4],
                   help="average NxNxN voxel blocks (2: 1 mm -> 2 mm) for fast training on a CPU")
    p.add_argument("--workers", type=int, default=None, help="processes (default: number of cores)")
    p.add_argument("--overwrite", action="store_true",
                   help="convert every case again, even if complete or converted with other settings")
    p.add_argument("--shard", metavar="K/N",
                   help="convert only part K of N (every N-th case by id), each part into its own --output, "
                        "e.g. one per machine; brats-keras merge joins the parts")
    p.add_argument("--task", metavar="NAME|FILE",
                   help="the cases' task: a built-in task (glioma2021, brats2023, glioma2024-post, pediatric2024, "
                        "msd-task01) or a task JSON file (default: detected from each case's naming and labels; "
                        "see docs/convert.md)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def cmd_convert(args) -> int:
    """Exit status 0: every case converted; 1: some failed and the rest were written; 2: nothing done."""
    from .convert import ManifestWriteError, convert_folder

    try:
        with _one_line_errors(ValueError):
            manifest = convert_folder(args.input, args.output, modalities=args.modalities, crop=args.crop,
                                      scale=args.scale, dtype=args.dtype, margin=args.margin,
                                      min_tumor=args.min_tumor, workers=args.workers, overwrite=args.overwrite,
                                      progress=not args.quiet, downsample=args.downsample, shard=args.shard,
                                      task=args.task)
    except ManifestWriteError as exc:  # the cases written stay; a rerun finds them by their outputs
        print(f"error: {exc}", file=sys.stderr)
        return 1 if exc.manifest["cases"] else 2
    n_ok, n_fail = len(manifest["cases"]), len(manifest["failed"])
    print(f"converted {n_ok} case(s) into {args.output}; {len(manifest['dropped'])} dropped; {n_fail} failed")
    return 1 if n_fail else 0


def cmd_merge(args) -> int:
    """Exit status 0: merged; 2: unusable input (one line naming the folder), nothing written."""
    from .convert import merge_conversions

    with _one_line_errors(OSError):
        merge_conversions(args.inputs, args.output)
    return 0


def cmd_synth(args) -> int:
    from .synthetic import make_dataset

    from .synthetic import check_task

    with _one_line_errors(ValueError):  # an unknown task, a task file with a mistake, a task not drawn here
        task = check_task(args.task)
    try:
        shape = tuple(int(s) for s in args.shape.split(","))
        make_dataset(args.out, args.cases, seed=args.seed, shape=shape, workers=args.workers,
                     progress=not args.quiet, task=task)
    except ValueError as exc:  # a shape that is not three sizes, or too small for a brain
        print(f"error: --shape {args.shape}: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 2
    print(f"wrote {args.cases} synthetic case(s) to {args.out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="brats-keras", description=__doc__.splitlines()[0])
    parser.add_argument("--verbose", action="store_true",
                        help="show TensorFlow's start-up messages (hidden unless the import fails)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("convert", help="convert BraTS NIfTI cases into .npy training arrays")
    add_convert_args(p)
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("merge", help="join the folders of a conversion split with convert --shard K/N into one")
    p.add_argument("inputs", nargs="+", metavar="PART_DIR", help="the output folder of every part 1/N ... N/N")
    p.add_argument("--output", required=True, help="the joined conversion folder (arrays hard-linked or copied)")
    p.set_defaults(func=cmd_merge)

    p = sub.add_parser("synth", help="write synthetic BraTS-like cases (NIfTI, in the task's naming)")
    p.add_argument("--out", required=True)
    p.add_argument("--cases", type=whole_number(1), default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--shape", default="240,240,155", help="volume shape, default 240,240,155")
    p.add_argument("--workers", type=whole_number(1), default=1)
    p.add_argument("--task", metavar="NAME|FILE",
                   help="draw this task's structures and write its label values (default glioma2021; see "
                        "docs/converting.md)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_synth)

    for register in _EXTRA:
        register(sub)
    return parser


#: functions adding further sub-commands (train, predict, evaluate, demo, crossval, crossval-compare,
#: set-postprocessing, ensemble, export)
_EXTRA: list = []


# ----------------------------------------------------------------------------- train
def _add_train(sub):

    p = sub.add_parser("train", help="train a model on converted cases (see brats-keras convert)")
    p.add_argument("--data", help="conversion folder (with manifest.json); with --resume: where the run's data "
                                   "folder moved to (it must hold the run's cases, converted alike)")
    p.add_argument("--out", help="run folder: checkpoints, log.csv, config.json, figures (default runs/unet3d); "
                                 "a folder that holds an earlier run is refused: --resume it, or --overwrite it")
    p.add_argument("--resume", metavar="RUN_DIR",
                   help="continue a run from its last checkpoint with the settings in its config.json; only a "
                        "larger --epochs, --data (a moved data folder) and --verify may be given with it")
    p.add_argument("--overwrite", action="store_true",
                   help="start a new run in an --out folder that holds an earlier one, deleting its checkpoints, "
                        "log and TensorBoard files")
    p.add_argument("--verify", action="store_true", default=None,
                   help="before training, also compare every converted array's sha256 with the manifest's (the "
                        "size and header of every array are always checked)")
    p.add_argument("--recipe", help="a named recipe (e.g. 'pretrained') that sets the defaults below")
    p.add_argument("--model", choices=["unet3d", "vnet", "residual_unet", "sm_unet", "segresnet", "unet2d"],
                   help="unet2d: a 2D U-Net on axial slices (--patch-size N: N x N slices)")
    p.add_argument("--backbone", help="segmentation-models-3D backbone for --model sm_unet")
    p.add_argument("--vae", action="store_true", default=None,
                   help="--model segresnet: add the paper's variational auto-encoder branch, a regulariser of "
                        "training (0.1 x (L2 + KL) on the loss); the model then takes --patch-size inputs only")
    p.add_argument("--base-filters", type=int)
    p.add_argument("--depth", type=int)
    p.add_argument("--norm", choices=["batch", "instance", "group", "none"])
    p.add_argument("--dropout", type=float)
    p.add_argument("--deep-supervision", type=int, metavar="N",
                   help="--model unet3d, residual_unet or unet2d: also train outputs of the N decoder levels below full "
                        "resolution (up-sampled, loss weights 1, 1/2, 1/4, ... normalised; N < --depth); predictions "
                        "and exports use the main output only")
    p.add_argument("--head", dest="output", choices=OUTPUTS, help="the model's output: softmax (4 classes) or "
                   "regions (WT/TC/ET sigmoids)")
    p.add_argument("--output", dest="old_output", choices=OUTPUTS, help=argparse.SUPPRESS)  # deprecated: --head
    p.add_argument("--loss", help="e.g. dice+tversky (default), dice+ce, dice+focal, dice+bce")
    p.add_argument("--patch-size", type=int, help="N: N^3 patches (N x N axial slices for --model unet2d)")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--epochs", type=int)
    p.add_argument("--steps-per-epoch", type=int)
    p.add_argument("--val-steps", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--min-lr", type=float)
    p.add_argument("--val", type=float, help="validation cases: fraction (<1) or count")
    p.add_argument("--test", type=float, help="held-out test cases: fraction (<1) or count")
    p.add_argument("--split-file", help="JSON with train/val/test case ids")
    p.add_argument("--folds", type=int, metavar="K",
                   help="cross-validation: train fold --fold of K (validation = that fold, stratified by tumor size; "
                        "not with --val or --split-file)")
    p.add_argument("--fold", type=int, metavar="I", help="which fold to train with --folds, 0 .. K-1")
    p.add_argument("--seed", type=int)
    p.add_argument("--foreground-ratio", type=float)
    p.add_argument("--foreground-sampling", choices=["voxels", "classes"],
                   help="centre of a tumor-centred patch: any tumor voxel alike (voxels, the default) or a tumor "
                        "class of the case first, each alike, then a voxel of it (classes, nnU-Net's way)")
    p.add_argument("--no-augment", action="store_true")
    p.add_argument("--spatial-augment", type=float, metavar="PROB",
                   help="probability of a random rotation and of a random zoom per training patch")
    p.add_argument("--intensity-augment", choices=["basic", "strong"],
                   help="basic: per-channel scale, shift and gamma; strong: also noise, blur, brightness, contrast, "
                        "simulated low resolution and inverted gamma, per channel (brats_keras.augment)")
    p.add_argument("--lr-schedule", choices=["plateau", "poly"], help="plateau (the report) or poly (nnU-Net)")
    p.add_argument("--early-stopping", type=int, metavar="PATIENCE")
    p.add_argument("--mixed-precision", choices=["auto", "off", "float16", "bfloat16"])
    p.add_argument("--jit-compile", choices=["auto", "on", "off"])
    p.add_argument("--distribute", action="store_true",
                   help="data-parallel over the local GPUs, or over several processes / machines: TensorFlow "
                        "reads TF_CONFIG (or SLURM), JAX KERAS_DISTRIBUTION_JOB_ADDRESSES / _NUM_PROCESSES / "
                        "_PROCESS_ID (or SLURM); worker 0 alone writes the run folder (docs/distributed.md)")
    p.add_argument("--workers", type=int, help="data loader threads")
    p.add_argument("--tf-data", action="store_true", default=None,
                   help="TensorFlow backend: feed through tf.data (parallel reads, prefetch)")
    p.add_argument("--time-limit", type=float, metavar="MINUTES", help="stop after the epoch that passes this time")
    p.add_argument("--init-from", metavar="MODEL",
                   help="start from these weights (a .keras file, or 'pretrained' for the shipped model): fine-tuning")
    p.add_argument("--whole-case-every", type=int, metavar="N",
                   help="every N epochs, predict whole validation cases and keep the best by their Dice")
    p.add_argument("--tensorboard", action=argparse.BooleanOptionalAction, default=None,
                   help="TensorBoard event files in RUN/tensorboard: losses, Dice, learning rate, whole-case Dice "
                        "(default: on with the TensorFlow backend)")
    # what a resume may be given: the rest is in the run's config.json
    p.set_defaults(func=cmd_train, flags={a.dest: (a.option_strings[0], a.default) for a in p._actions
                                          if a.option_strings
                                          and a.dest not in ("help", "resume", "epochs", "data", "verify")})


def cmd_train(args) -> int:
    """Exit status 0: trained (or resumed to the end); 2: unusable input or settings, one line on stderr
    naming the file or setting, and no run folder written or changed."""
    from dataclasses import fields

    from .training import TrainConfig, train

    if args.old_output:
        print("warning: brats-keras train --output is deprecated: use --head (softmax or regions)", file=sys.stderr)
        if args.output not in (None, args.old_output):
            print(f"error: --head {args.output} and --output {args.old_output} disagree: give --head only",
                  file=sys.stderr)
            return 2
        args.output = args.old_output
    if args.resume:
        given = [name for dest, (name, default) in args.flags.items() if getattr(args, dest) != default]
        if given:
            print(f"error: {', '.join(given)} with --resume: a resumed run keeps the settings in its config.json "
                  f"(only a larger --epochs, --data for a moved data folder and --verify may be given)",
                  file=sys.stderr)
            return 2
        cfg = TrainConfig(epochs=0 if args.epochs is None else args.epochs, data=args.data or "",
                          verify=bool(args.verify))
        resume = args.resume
    else:
        if not args.data:
            print("error: --data is required (or --resume RUN_DIR)", file=sys.stderr)
            return 2
        if args.folds and (args.split_file or args.val is not None):
            print("error: --folds chooses the validation cases itself: drop --val and --split-file", file=sys.stderr)
            return 2
        if args.fold is not None and not args.folds:
            print("error: --fold needs --folds K", file=sys.stderr)
            return 2
        flags = {f.name: getattr(args, f.name) for f in fields(TrainConfig)
                 if f.name != "augment" and getattr(args, f.name, None) is not None}
        if args.no_augment:
            flags["augment"] = False
        with _one_line_errors(ValueError):  # an unknown recipe
            cfg, resume = TrainConfig.from_recipe(args.recipe, **flags), None
        if cfg.vae and cfg.model != "segresnet":
            print(f"error: --vae works with --model segresnet only, not {cfg.model}", file=sys.stderr)
            return 2
    with _one_line_errors(FileNotFoundError):  # bad input: one line; train() has written nothing yet
        res = train(cfg, resume=resume, overwrite=args.overwrite)
    last = res["history"][-1] if res["history"] else {}
    shown = {k: round(v, 4) for k, v in last.items() if "dice" in k or "loss" in k}
    print(f"run folder: {res['run']}  best: {res['best']}  ({res['seconds']:.0f} s)")
    print(f"last epoch: {shown}")
    return 0


# ----------------------------------------------------------------------------- predict
def _add_predict(sub):
    p = sub.add_parser("predict", help="segment whole cases into NIfTI label maps",
                       description="Exit status: 0 every case predicted; 1 some cases failed, one line FAILED "
                                   "<case>: ... each (unreadable input, or a file that could not be written, e.g. "
                                   "no space left on device: none of that case's files is left), the rest are "
                                   "written; 2 unusable input or settings (no case found, a model that cannot be "
                                   "used, an --output that is a file or cannot be written): one line, nothing "
                                   "written.")
    p.add_argument("--model", action="append",
                   help=".keras model file or export folder (default: the shipped pretrained model); repeat it, or "
                        "give a folder, for an ensemble that averages their probabilities: a folder with "
                        "ensemble.json (brats-keras ensemble) uses exactly the files it lists, each checked against "
                        "its recorded sha256 (a missing, unlisted or changed .keras file: exit 2); a folder without "
                        "one uses all its *.keras files")
    p.add_argument("--input", required=True,
                   help="one case folder, a folder of cases, or one image file (e.g. a Decathlon 4-D image, "
                        "imagesTs/BRATS_001.nii.gz); co-registered modalities, any voxel size and orientation: "
                        "predicted on the 1 mm LPS grid, written back on the input's own")
    p.add_argument("--output", required=True,
                   help="folder for <case>.nii.gz (made if missing; a file there, or a folder that cannot be "
                        "written, is refused before any work)")
    p.add_argument("--patch-size", type=whole_number(1), help="window size (default: the training patch size; N: N x N "
                                                                    "slices for a 2D model)")
    p.add_argument("--overlap", type=below_one, default=0.5, help="share of a window its neighbour overlaps, "
                                                                 "0 to below 1 (default 0.5)")
    p.add_argument("--batch-size", type=whole_number(1), default=2, help="windows per forward pass")
    p.add_argument("--tta", action="store_true", help="average over the 8 mirrored copies")
    p.add_argument("--min-component", type=int, help="drop tumor islands smaller than N voxels")
    p.add_argument("--keep-largest", type=int, help="keep only the N largest tumor components")
    p.add_argument("--et-threshold", type=int,
                   help="predicted ET below N voxels becomes necrosis (BraTS rule)")
    p.add_argument("--thresholds", type=_thresholds_arg, metavar="WT,TC,ET",
                   help="region probabilities above which a voxel is in WT, TC, ET (region models: one per region "
                        "of the model's task, or one for all; default 0.5 each); any of these four flags replaces "
                        "the post-processing stored in the model file")
    p.add_argument("--no-postprocess", action="store_true",
                   help="no post-processing, not even the one stored in the model file")
    p.add_argument("--labels", metavar="TASK",
                   help="write the label values of this task, one with the model's classes (the model of a glioma "
                        "task: glioma2021, brats2023, msd-task01; 2021 and 2023 stand for glioma2021 and "
                        "brats2023; default: the values of each case's own naming, else of the model's task)")
    p.add_argument("--save-probs", action="store_true", help="also save <case>_probs.npy (float16)")
    p.add_argument("--trust-export", action="store_true",
                   help="run a SavedModel export given to --model: it is a TensorFlow program that can read and "
                        "write files, so it runs only with this flag; give it only for exports you made or trust "
                        "(ONNX exports run without it)")
    p.add_argument("--report", action="store_true",
                   help="also write OUTPUT/report/index.html and OUTPUT/report/<case>.html: each case with its "
                        "prediction in a 3D viewer that opens offline (brats-keras view; docs/report.md)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_predict)


def _thresholds_arg(text: str):
    """``--thresholds 0.5,0.5,0.7`` (WT, TC, ET: one per head region of the model's task, which the model's
    Predictor checks), or one value for all of them."""
    from .postprocessing import postprocessing_spec

    try:
        values = [float(v) for v in text.split(",")]
        if len(values) == 2:  # no built-in task's region head has two (a user task of two: one value for both)
            raise ValueError("two values")
        for value in values:
            postprocessing_spec(thresholds=value)  # the one check of what a threshold may be
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: one probability between 0 and 1, or one per region the model "
                                         "predicts (WT,TC,ET; WT,TC,ET,RC for post-treatment), e.g. "
                                         "0.5,0.5,0.7") from None
    return values[0] if len(values) == 1 else values


def _postprocess_arg(args):
    """Predictor's one post-processing value from the flags: False for --no-postprocess, the flags given
    (they replace the model file's choice), else True (the model file's choice)."""
    if args.no_postprocess:
        return False
    given = {k: getattr(args, k) for k in ("min_component", "keep_largest", "et_threshold", "thresholds")}
    return {k: v for k, v in given.items() if v is not None} or True


def cmd_predict(args) -> int:
    from pathlib import Path

    from .inference import predict_folder
    from .io import check_output_path

    with _one_line_errors(FileNotFoundError, ValueError):
        if args.report:
            check_output_path(Path(args.output) / "report", folder=True, flag="--report")
        res = predict_folder(args.input, args.output, model=args.model, labels=args.labels,
                             save_probs=args.save_probs, progress=not args.quiet, patch_size=args.patch_size,
                             overlap=args.overlap, batch_size=args.batch_size, tta=args.tta,
                             postprocess=_postprocess_arg(args), trust_export=args.trust_export)
    print(f"predicted {len(res['ok'])} case(s) into {args.output}; {len(res['failed'])} failed")
    if args.report:
        from .report import report_predictions

        from .tasks import TASKS

        # the model's task; one known only by its name here (a task file's) is detected from each prediction
        rep = report_predictions(args.input, args.output, ok=res["ok"], failed=res["failed"], log=_stderr,
                                 task=res["task"] if res["task"] in TASKS else None)
        print(f"report: {rep['index']} ({len(rep['ok'])} case page(s))")
        return 1 if rep["failed"] else 0
    return 1 if res["failed"] else 0


def _stderr(line: str) -> None:
    print(line, file=sys.stderr)


# ----------------------------------------------------------------------------- evaluate
def _add_evaluate(sub):
    p = sub.add_parser(
        "evaluate", help="BraTS scores (WT/TC/ET Dice, HD95, ...) of predicted label maps",
        description="Exit status: 0 every truth case predicted and scored; 1 some cases failed (unreadable, "
                    "or a prediction on another grid than its label map: shape, orientation, voxel size), "
                    "predictions were missing, or --json / --csv could not be written (the rest is scored "
                    "and written); 2 unusable input (a folder not found, no predictions, no label maps, a "
                    "--json / --csv path that cannot be written): one line, nothing written.")
    p.add_argument("--pred", required=True, help="folder of <case>.nii.gz predictions")
    p.add_argument("--truth", required=True, help="BraTS folder with _seg files, or folder of <case>.nii.gz")
    p.add_argument("--json")
    p.add_argument("--csv")
    p.add_argument("--lesion-wise", action="store_true",
                   help="also BraTS lesion-wise Dice and HD95, with the official settings of the task (glioma: "
                        "dilation 3, lesions over 50 mm^3)")
    p.add_argument("--task", type=_task_arg, metavar="NAME|FILE",
                   help="the task whose labels the maps hold and whose regions are scored: a built-in task "
                        "(glioma2021, brats2023, glioma2024-post, pediatric2024, msd-task01) or a task JSON file "
                        "(default: told by the first label map's values and file names)")
    p.add_argument("--only-predicted", action="store_true",
                   help="score only the cases that have a prediction (default: a truth case without one "
                        "scores Dice 0 and HD95 373.13, as in BraTS)")
    p.add_argument("--report", nargs="?", const="", metavar="DIR",
                   help="also write DIR/index.html and DIR/<case>.html (default DIR: PRED/report): each case with "
                        "its prediction, truth and their disagreement in a 3D viewer, with these scores; --truth "
                        "must then be a folder of BraTS cases (the images are drawn; docs/report.md)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_evaluate)


def _task_arg(text: str):
    """``--task NAME|FILE``: a built-in task or a task JSON file (:func:`brats_keras.tasks.get_task`)."""
    from .tasks import TaskError, get_task

    try:
        return get_task(text)
    except TaskError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def cmd_evaluate(args) -> int:
    from .evaluation import evaluate_folder, format_table

    with _one_line_errors(FileNotFoundError):  # bad input: one line, nothing written
        if args.report is not None:
            from pathlib import Path

            from .io import check_output_path
            from .report import report_cases_of

            report_dir = check_output_path(args.report or Path(args.pred) / "report", folder=True, flag="--report")
            report_cases_of(args.truth)
        res = evaluate_folder(args.pred, args.truth, json_path=args.json, csv_path=args.csv,
                              progress=not args.quiet, lesion_wise=args.lesion_wise,
                              only_predicted=args.only_predicted, task=args.task)
    print(format_table(res))
    for msg in res["notes"].values():
        print(f"note: {msg}", file=sys.stderr)
    for msg in res["errors"].values():
        print(f"FAILED {msg}", file=sys.stderr)
    if res["missing"]:
        print(f"MISSING {len(res['missing'])} prediction(s) in {args.pred}: {', '.join(res['missing'])}",
              file=sys.stderr)
    for msg in res["write_errors"]:
        print(f"error: {msg}", file=sys.stderr)
    failed = bool(res["errors"] or res["write_errors"] or (res["missing"] and not args.only_predicted))
    if args.report is not None:
        from .report import report_evaluation

        # evaluate's own FAILED and MISSING lines above name the cases it could not score
        # a FAILED line for each case whose page fails; evaluate's lines above name the cases it could not score
        rep = report_evaluation(res, args.pred, args.truth, report_dir, log=_stderr)
        print(f"report: {rep['index']} ({len(rep['ok'])} case page(s))")
        failed = failed or bool(set(rep["failed"]) - set(res["errors"]) - set(res["missing"]))
    return 1 if failed else 0


# ----------------------------------------------------------------------------- demo
def _add_demo(sub):
    p = sub.add_parser("demo", help="the whole workflow on synthetic cases: synth, convert, train, predict, evaluate, pictures")
    p.add_argument("--out", default="demo_out")
    # 4 held-out and 2 validation cases, so at least one case to train on
    p.add_argument("--cases", type=whole_number(7), default=16, help="synthetic cases to write (at least 7)")
    p.add_argument("--minutes", type=positive, default=6.5, help="training time budget")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_demo)


def cmd_demo(args) -> int:
    from .demo import run_demo

    metrics = run_demo(args.out, n_cases=args.cases, minutes=args.minutes, seed=args.seed)
    return 0 if metrics else 1


# ----------------------------------------------------------------------------- view
def _add_view(sub):
    p = sub.add_parser(
        "view", help="write one case's page: its modalities with a prediction and / or truth in a 3D viewer "
                     "(one HTML file that opens offline)",
        description="Exit status: 0 written; 2 unusable input (not one case folder, a missing modality, a "
                    "prediction or truth on another grid than the case's images, an --out that cannot be "
                    "written): one line, nothing written.")
    p.add_argument("case", metavar="CASE", help="one case folder (any supported layout)")
    p.add_argument("--pred", metavar="FILE", help="a predicted label map of the case (either label convention)")
    p.add_argument("--truth", metavar="FILE",
                   help="the true label map (default: the case's own, if it has one); with --pred the page adds "
                        "their disagreement and the case's scores")
    p.add_argument("--out", metavar="FILE", help="the page to write (default: ./<case>.html)")
    p.add_argument("--task", type=_task_arg, metavar="NAME|FILE",
                   help="the task whose labels the maps hold (their names and colours, the regions scored): a "
                        "built-in task or a task JSON file (default: detected from the truth's values and the "
                        "case's naming, else the prediction's, as evaluate detects it)")
    p.set_defaults(func=cmd_view)


def cmd_view(args) -> int:
    from .io import BratsInputError, check_output_path, find_cases
    from .report import write_case_page

    with _one_line_errors(FileNotFoundError):
        cases = find_cases(args.case)
        if len(cases) != 1:
            raise BratsInputError(f"{args.case}: not one case folder ({len(cases)} cases found)")
        case = cases[0]
        out = check_output_path(args.out or f"{case.case_id}.html", flag="--out" if args.out else None)
        row = write_case_page(case, out, prediction=args.pred, truth=args.truth or case.seg, task=args.task)
    print(f"wrote {out} ({row['bytes'] / 1e6:.1f} MB)")
    return 0


_EXTRA.extend([_add_train, _add_predict, _add_evaluate, _add_demo, _add_view])


# ----------------------------------------------------------------------------- cross-validation
def _add_crossval(sub):
    p = sub.add_parser(
        "crossval", help="predict and score every fold run's validation cases (out-of-fold) in one table",
        description="Exit status: 0 done; 1 some cases could not be read (one line each; the others are "
                    "scored); 2 unusable input (a folder that is not a fold run, a missing or unreadable "
                    "checkpoint, overlapping folds, a case without a label map; with --combine, tables of other cases "
                    "or folds, or without stored probabilities; with --ensemble, an ensemble.json that does not "
                    "record its folds' validation cases): one line, nothing written.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--runs", nargs="+", metavar="RUN_DIR", help="the fold run folders")
    src.add_argument("--combine", nargs="+", metavar="CV_DIR",
                     help="predict nothing: average the probabilities that these crossval folders (two or more "
                          "recipes, the same folds) stored, case by case: the ensemble of all their fold models, "
                          "scored out-of-fold")
    src.add_argument("--ensemble", metavar="DIR",
                     help="a fold ensemble folder written by brats-keras ensemble, or 'pretrained' (the shipped "
                          "one): each fold's validation cases, recorded in its ensemble.json, predicted by that "
                          "fold's file(s); the cross-validation again without the training runs (needs --data-root)")
    p.add_argument("--data-root", action="append", metavar="DIR",
                   help="folder of the original NIfTI cases with label maps (repeatable; default: where the runs' "
                        "conversion manifests say the label maps are)")
    p.add_argument("--out", required=True, help="output folder: predictions/, crossval.json, crossval.csv")
    p.add_argument("--checkpoint", choices=["last", "best"],
                   help="which checkpoint of each run (default last: picking by 4-5 validation cases misleads; "
                        "--runs only)")
    p.add_argument("--tta", action="store_true")
    p.add_argument("--batch-size", type=whole_number(1), default=2, help="windows per forward pass")
    p.add_argument("--reuse", action="store_true",
                   help="do not predict again: read out/crossval.json (with --choose-postprocessing)")
    p.add_argument("--choose-postprocessing", action="store_true",
                   help="choose post-processing on the out-of-fold predictions; writes out/postprocessing.json and "
                        "out/crossval_postprocessed.json (the scores with it)")
    p.add_argument("--min-gain", type=float, default=None, metavar="DICE",
                   help="least rise of a region's mean Dice for a post-processing setting to be chosen (default 0.001)")
    p.add_argument("--confidence", type=float, default=None, metavar="LEVEL",
                   help="paired test for a post-processing setting: the lower end of this two-sided bootstrap "
                        "interval of its per-case Dice gain must not be below 0 (default 0.9; 0 = mean gain only)")
    p.add_argument("--write-to", action="append", metavar="MODEL",
                   help="store the chosen post-processing in this .keras file (repeatable; implies "
                        "--choose-postprocessing)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_crossval)


def _crossval_flags(args) -> None:
    """Refuse (BratsInputError, one line) the flags that the chosen source would silently ignore."""
    from .io import BratsInputError

    source = "--combine" if args.combine else "--ensemble" if args.ensemble else None
    ignored = {"--combine": [("--checkpoint", args.checkpoint), ("--tta", args.tta), ("--data-root", args.data_root)],
               "--ensemble": [("--checkpoint", args.checkpoint)]}.get(source, [])
    given = [flag for flag, value in ignored if value]
    if given and not args.reuse:
        raise BratsInputError(f"{', '.join(given)} with {source}: "
                              + ("it predicts nothing (the tables' own predictions are averaged)"
                                 if source == "--combine" else "an ensemble holds one file per fold and recipe"))


def cmd_crossval(args) -> int:
    from pathlib import Path

    from .crossval import (choose_postprocessing_from_crossval, crossval_combine, crossval_ensemble,
                           crossval_markdown, crossval_postprocessed, crossval_predict, format_crossval, read_crossval)
    from .postprocessing import format_choice, set_postprocessing
    from .io import BratsInputError, atomic_write_json, atomic_write_text

    with _one_line_errors(FileNotFoundError):
        rule = {} if args.min_gain is None else {"min_gain": args.min_gain}
        if args.confidence is not None:  # checked before any case is predicted
            if not 0.0 <= args.confidence < 1.0:
                raise BratsInputError(f"--confidence {args.confidence}: must be at least 0 and below 1")
            rule["confidence"] = args.confidence or None
        _crossval_flags(args)
        if args.reuse:
            res = read_crossval(Path(args.out) / "crossval.json")
        elif args.combine:
            res = crossval_combine(args.combine, args.out, progress=not args.quiet)
        elif args.ensemble:
            res = crossval_ensemble(args.ensemble, args.out, data_roots=args.data_root, tta=args.tta,
                                    batch_size=args.batch_size, progress=not args.quiet)
        else:
            res = crossval_predict(args.runs, args.out, data_roots=args.data_root, checkpoint=args.checkpoint or "last",
                                   tta=args.tta, batch_size=args.batch_size, progress=not args.quiet)
        print(format_crossval(res))
        if args.choose_postprocessing or args.write_to:
            choice = choose_postprocessing_from_crossval(args.out, **rule)
            atomic_write_json(Path(args.out) / "postprocessing.json", choice)
            post = crossval_postprocessed(args.out, choice)
            atomic_write_json(Path(args.out) / "crossval_postprocessed.json", post)
            atomic_write_text(Path(args.out) / "crossval.md", crossval_markdown(res, choice, postprocessed=post))
            print(format_choice(choice))
            for model in args.write_to or []:
                set_postprocessing(model, choice)
                print(f"stored in {model}")
    return 1 if res.get("failed") else 0  # each failed case was reported in one line as it failed


def _add_crossval_compare(sub):
    p = sub.add_parser(
        "crossval-compare", help="paired comparison of two cross-validations of the same cases (B against A)",
        description="Per region and score: means of A and B, the mean paired difference B - A with a bootstrap "
                    "confidence interval over cases, the Wilcoxon signed-rank p-value, the cases where B is "
                    "better / worse / tied, and a verdict per region. Exit status: 0 done; 2 a missing or "
                    "unreadable table, or tables of different cases without --common: one line.")
    p.add_argument("a", metavar="A", help="the baseline: a crossval --out folder or its crossval.json")
    p.add_argument("b", metavar="B", help="the candidate: a crossval --out folder or its crossval.json")
    p.add_argument("--postprocessed", action="store_true",
                   help="compare the crossval_postprocessed.json tables (scores with the chosen post-processing)")
    p.add_argument("--common", action="store_true",
                   help="compare the cases both tables hold (else tables of different cases are refused)")
    p.add_argument("--json", metavar="FILE", help="also write the comparison to this JSON file")
    p.add_argument("--resamples", type=int, default=10_000, help="bootstrap resamples (default 10000)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    p.set_defaults(func=cmd_crossval_compare)


def cmd_crossval_compare(args) -> int:
    from .compare import compare_crossval, format_comparison
    from .io import atomic_write_json

    with _one_line_errors(OSError):
        result = compare_crossval(args.a, args.b, common=args.common, postprocessed=args.postprocessed,
                                  resamples=args.resamples, seed=args.seed)
        print(format_comparison(result))
        if args.json:
            atomic_write_json(args.json, result)
            print(f"wrote {args.json}")
    return 0


def _add_set_postprocessing(sub):
    p = sub.add_parser("set-postprocessing",
                       help="store a post-processing choice in model files (applied by predict automatically)")
    p.add_argument("--model", action="append", required=True, help=".keras file (repeatable)")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--from", dest="source", metavar="JSON",
                   help="postprocessing.json written by crossval --choose-postprocessing, or a spec")
    g.add_argument("--none", action="store_true", help="remove the stored post-processing")
    p.set_defaults(func=cmd_set_postprocessing)


def cmd_set_postprocessing(args) -> int:
    import json

    from .postprocessing import read_postprocessing_file, set_postprocessing

    with _one_line_errors(FileNotFoundError, ValueError):
        choice = read_postprocessing_file(args.source) if args.source else None
        for model in args.model:
            info = set_postprocessing(model, choice)
            print(f"{model}: post-processing {json.dumps(info.get('postprocess', 'none'))}")
    return 0


def _add_ensemble(sub):
    p = sub.add_parser("ensemble", help="gather the fold models of a cross-validation into one folder that predict "
                                        "averages (fold-<k>.keras, float16 weights, the chosen post-processing)",
                       description="Exit status: 0 written; 2 unusable input (a folder that is not a fold run, a "
                                   "missing or unreadable checkpoint, two runs of one fold, runs with different "
                                   "preprocessing, an unreadable post-processing file, a weight beyond float16, an "
                                   "OUT holding other .keras files): one line, nothing written. fold-<k>.keras files "
                                   "of an earlier ensemble in OUT that are not among the folds given are removed.")
    p.add_argument("--runs", nargs="+", required=True, action="append", metavar="RUN_DIR",
                   help="the fold run folders of one recipe; repeat --runs for each further recipe (the same folds): "
                        "fold-<k>a.keras, fold-<k>b.keras, ... (score such an ensemble with crossval --combine)")
    p.add_argument("--out", required=True, help="output folder (then: brats-keras predict --model OUT ...)")
    p.add_argument("--checkpoint", choices=["last", "best"], default="last")
    p.add_argument("--postprocessing", metavar="JSON",
                   help="postprocessing.json written by crossval --choose-postprocessing: stored in every model")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--float32", action="store_true", help="keep the weights in float32 (default: float16, half "
                                                             "the size, the same Dice)")
    size.add_argument("--int8", action="store_true",
                      help="kernels in int8 with a scale per channel, other weights in float16: a quarter of "
                           "float32, for more models within a size budget (check the Dice with crossval first); "
                           "only brats-keras reads such files")
    p.set_defaults(func=cmd_ensemble)


def cmd_ensemble(args) -> int:
    from .ensemble import ensemble_from_runs

    with _one_line_errors(FileNotFoundError):
        ensemble_from_runs(args.runs if len(args.runs) > 1 else args.runs[0], args.out, checkpoint=args.checkpoint,
                           postprocessing=args.postprocessing,
                           weights_dtype="float32" if args.float32 else "int8" if args.int8 else "float16")
    return 0


_EXTRA.extend([_add_crossval, _add_crossval_compare, _add_set_postprocessing, _add_ensemble])


# ----------------------------------------------------------------------------- export
def _add_export(sub):
    p = sub.add_parser("export", help="export a model for deployment (TensorFlow SavedModel or ONNX) with its "
                                      "preprocessing spec (brats_keras.json) beside it")
    p.add_argument("--model", default="pretrained", help=".keras model file (default: the shipped pretrained model)")
    p.add_argument("--format", choices=["savedmodel", "onnx"], default="savedmodel")
    p.add_argument("--out", required=True,
                   help="a new or empty folder to write (brats-keras predict --model accepts it); never the working "
                        "directory, the home folder or a folder holding the model file")
    p.add_argument("--overwrite", action="store_true",
                   help="replace --out when it is an earlier export (its brats_keras.json has an 'export' record and "
                        "it holds nothing else); the old one stays until the new one is complete")
    p.set_defaults(func=cmd_export)


def cmd_export(args) -> int:
    """Exit status 0: exported; 2: unusable input (model file, format, output folder, missing converter) or
    an export that could not be written (the earlier one at --out, if any, is kept)."""
    from .export import export_model

    with _one_line_errors(OSError, describe_os=True):  # OSError: e.g. a model file that cannot be read
        out = export_model(args.model, args.out, format=args.format, overwrite=args.overwrite)
    print(f"exported {args.model} as {args.format} into {out} (preprocessing in {out}/brats_keras.json)")
    return 0


_EXTRA.append(_add_export)


#: sub-commands that import Keras (and so, by default, TensorFlow)
_KERAS_COMMANDS = {"train", "predict", "crossval", "set-postprocessing", "ensemble", "export", "demo"}


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command in _KERAS_COMMANDS and not args.verbose:
        import_keras_quietly()
    return run_command(args.func, args)


if __name__ == "__main__":
    sys.exit(main())
