#!/usr/bin/env python
"""Export a trained run, or the fold runs of a cross-validation, as the shipped model and write its model card.

    python scripts/export_pretrained.py --run runs/pretrained --real ../shared/data/brats-real --train-minutes 105
    python scripts/export_pretrained.py --folds runs/cv28/fold0 runs/cv28/fold1 runs/cv28/fold2 runs/cv28/fold3 \
        runs/cv28/fold4 --crossval cv28 --data data/cv28_2mm --train-minutes 70

``--run``: saves ``brats_keras/pretrained/model.keras`` (weights and preprocessing info, no optimizer
state), predicts the run's validation cases from their original NIfTI files with and without
mirroring TTA, and writes ``model_card.json`` and ``MODEL_CARD.md`` beside it.

``--folds``: the fold ensemble. The cross-validation must have been scored and its post-processing chosen
(``brats-keras crossval --runs ... --out CV --choose-postprocessing``). Writes ``fold-<k>.keras`` (float16
weights, or int8 kernels with ``--int8``; the chosen post-processing stored) in place of ``model.keras`` and
``ensemble.json`` (each file's run, validation cases and sha256: prediction uses exactly those files), checks
on a few out-of-fold cases that the stored files with the stored post-processing score as the cross-validation
table says, times the ensemble, and writes the card with the cross-validated estimate as its headline and where
the out-of-fold predictions under-segment (scripts/undersegmentation.py). Repeat
``--folds`` once per recipe (with ``--crossval`` the table ``crossval --combine`` wrote from theirs) to ship
them as one ensemble, ``fold-<k>a.keras``, ``fold-<k>b.keras``, ...; files over the 60 MB budget are refused.

A two-stage recipe: fold runs started (``train --init-from``) from the fold files of an ensemble exported before
(stage 1) are shipped with ``--stage1 STAGE1/ensemble.json``. Each run's start file must be the stage-1 file of
its fold (the sha256 that ensemble.json records); the card records them and its commands rebuild both stages:
stage 1's own commands (from the ``model_card.json`` beside that ensemble.json, exported with ``--to stage1``),
then the fold runs with ``--init-from stage1/fold-$k.keras``.

    python scripts/export_pretrained.py --folds runs/ft/fold0 ... runs/ft/fold4 --stage1 stage1/ensemble.json \
        --crossval cv_ft --data data/cv28_2mm --train-minutes 46

The card's text and the rows of earlier runs it compares with live in ``brats_keras.model_card`` and
``card_history.json``. Unusable input (a folder that is no run, a cross-validation of other runs, fold runs
with different settings): one line, exit 2, nothing written.
"""
import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from brats_keras import io as bio  # noqa: E402
from brats_keras.checkpoint import load_model, read_info, save_model  # noqa: E402
from brats_keras.crossval import crossval_file, member_path, read_crossval  # noqa: E402
from brats_keras.data import ConvertedCases, fold_runs  # noqa: E402
from brats_keras.ensemble import MEMBER_LETTERS  # noqa: E402
from brats_keras.evaluation import grid_dice, label_contrast, resolution_ceiling, score_case  # noqa: E402
from brats_keras.inference import Predictor  # noqa: E402
from brats_keras.io import file_checksum  # noqa: E402
from brats_keras.model_card import (augmentation_text, card_markdown, patches_text, late_val_range,  # noqa: E402
                                    loss_text, optimizer_text, train_command)
from brats_keras.models import count_params, main_output  # noqa: E402
from brats_keras.postprocessing import choice_rule_flags, read_postprocessing_file  # noqa: E402
from brats_keras.pretrained import CARD_FILE, CARD_JSON, MODEL_FILE  # noqa: E402
from brats_keras.runs import CASE_DICE_MEAN, read_log  # noqa: E402
from brats_keras.spec import MANIFEST  # noqa: E402


def undersegmentation(cv_dir: Path, data) -> dict | None:
    """The card's ``undersegmentation`` (scripts/undersegmentation.py, beside this script) from the out-of-fold
    table; None for a table without stored probabilities (a softmax model)."""
    import importlib.util

    table = read_crossval(cv_dir)
    if not all(r.get("probabilities") for r in table["cases"].values()):
        return None
    spec = importlib.util.spec_from_file_location("undersegmentation", Path(__file__).with_name("undersegmentation.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.card_summary(module.analyse(cv_dir, data))


def score(predictor, cases):
    out, seconds = {}, []
    for case in cases:
        pred = predictor.predict_case(case)
        seconds.append(pred["seconds"])
        spacing = tuple(float(z) for z in pred["header"].get_zooms()[:3])
        out[case.case_id] = score_case(pred["classes"], bio.load_classes(case.seg), spacing, report=False)
    mean = {r: {k: float(np.mean([c[r][k] for c in out.values()])) for k in ("dice", "hd95")} for r in ("WT", "TC", "ET")}
    return out, mean, float(np.mean(seconds))


def fail(message: str):
    """Unusable input: one line, exit 2 (nothing has been written when this is called)."""
    print(f"export_pretrained: {message}", file=sys.stderr)
    sys.exit(2)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    what = ap.add_mutually_exclusive_group(required=True)
    what.add_argument("--run", help="one training run: ships model.keras")
    what.add_argument("--folds", nargs="+", action="append", metavar="RUN",
                      help="the fold runs of a cross-validation: ships the fold ensemble; repeat --folds for each "
                           "further recipe (the same folds), with --crossval the table that crossval --combine "
                           "wrote from the recipes' tables, in the same order")
    ap.add_argument("--real", nargs="+", help="folder(s) with the original NIfTI cases (--run: required)")
    ap.add_argument("--crossval", help="--folds: the crossval output folder (crossval.json, postprocessing.json)")
    ap.add_argument("--data", default="data/real_2mm", help="--folds: the converted data folder the card's "
                                                            "commands name")
    ap.add_argument("--to", help="--folds: where to write the files (default: brats_keras/pretrained)")
    ap.add_argument("--stage1", help="--folds: the ensemble.json of the exported ensemble whose fold files the runs "
                                     "started from (train --init-from): a two-stage recipe; the model_card.json "
                                     "beside it gives stage 1's commands")
    ap.add_argument("--check-cases", type=int, default=3, help="--folds: out-of-fold cases predicted again to check "
                                                               "the stored files and time the ensemble")
    ap.add_argument("--int8", action="store_true", help="--folds: kernels in int8 (ensemble --int8): twice the models "
                                                        "within the size budget")
    ap.add_argument("--checkpoint", choices=["best", "last"],
                    help="--run: which checkpoint (default best); --folds: the cross-validation's (crossval --checkpoint)")
    ap.add_argument("--hardware", default="2-core AMD EPYC CPU (no AVX-512), 24 GB RAM, TensorFlow 2.21, float32")
    ap.add_argument("--train-minutes", type=float, required=True, help="minutes of training (--folds: per fold)")
    args = ap.parse_args(argv)
    if args.folds:
        return export_ensemble(args)
    if args.stage1:
        fail("--stage1 goes with --folds (the second stage's fold runs of a two-stage recipe)")
    if not args.real:
        fail("--run needs --real (the folder of the original NIfTI cases)")
    args.checkpoint = args.checkpoint or "best"
    args.real = args.real[0]
    run = Path(args.run)
    needed = [run / "checkpoints" / f"{args.checkpoint}.keras", run / "config.json", run / "split.json", run / "log.csv"]
    missing = [str(f) for f in needed if not f.exists()]
    if missing:
        fail(f"{', '.join(missing)}: not found (is {run} a training run folder?)")
    cfg = json.loads((run / "config.json").read_text())
    if cfg.get("init_from"):
        fail(f"{run} starts from {cfg['init_from']}; the card can only reproduce runs "
             "trained from scratch with --recipe pretrained")
    try:
        command = train_command(cfg)
    except ValueError as exc:  # a setting no flag sets: refused before anything is written
        fail(f"{run / 'config.json'}: {exc}")
    model, info = load_model(needed[0], compile=False)
    save_model(main_output(model), MODEL_FILE, info, include_optimizer=False)  # no deep-supervision heads
    split = json.loads((run / "split.json").read_text())
    log = read_log(run)
    found = bio.find_cases(args.real)
    cases = [c for c in found if c.case_id in split["val"]]
    train_cases = [c for c in found if c.case_id in split["train"]]
    shipped, _ = load_model(MODEL_FILE, compile=False)
    predictor = Predictor(shipped, info=read_info(MODEL_FILE))
    plain = score(predictor, cases)
    tta = score(Predictor(shipped, info=predictor.info, tta=True), cases)
    train_mean = score(predictor, train_cases)[1] if train_cases else None
    last_ckpt = run / "checkpoints" / "last.keras"
    last = None
    if args.checkpoint == "best" and last_ckpt.exists():  # the unselected checkpoint: an honest check on selection
        last_model, last_info = load_model(last_ckpt, compile=False)
        last_scores = score(Predictor(last_model, info=last_info), cases)
        last = {"cases": last_scores[0], "mean": last_scores[1]}
    monitor = CASE_DICE_MEAN
    best_epoch = int(np.nanargmax([r.get(monitor, np.nan) for r in log])) if args.checkpoint == "best" else len(log) - 1
    card = {
        "model_file": MODEL_FILE.name,
        "size_mb": round(MODEL_FILE.stat().st_size / 1e6, 2),
        "architecture": {"name": cfg["model"], "base_filters": cfg["base_filters"], "depth": cfg["depth"],
                         "norm": cfg["norm"], "output": cfg["output"], "parameters": count_params(shipped)},
        "preprocessing": info,
        "training": {"recipe": "pretrained", "loss": loss_text(cfg), "lr": cfg["lr"], "patch_size": cfg["patch_size"],
                     "batch_size": cfg["batch_size"], "optimizer": optimizer_text(cfg),
                     "augmentation": augmentation_text(cfg), "patches": patches_text(cfg), "lr_schedule": cfg.get("lr_schedule", "plateau"),
                     "spatial_augment": cfg.get("spatial_augment", 0.0),
                     "epochs_run": len(log), "steps_per_epoch": cfg["steps_per_epoch"],
                     "steps": len(log) * cfg["steps_per_epoch"], "checkpoint_epoch": best_epoch + 1,
                     "checkpoint_steps": (best_epoch + 1) * cfg["steps_per_epoch"], "minutes": args.train_minutes,
                     "time_limit": cfg.get("time_limit"),
                     "final_train_dice": {r: log[-1][f"dice_{r}"] for r in ("WT", "TC", "ET")},
                     "late_val_range": late_val_range(log),
                     "hardware": args.hardware, "command": command},
        "data": {"source": "23 real BraTS cases in ../shared/data/brats-real (22 BraTS 2018, 1 BraTS 2021)",
                 "split": split},
        "validation": {"cases": plain[0], "mean": plain[1], "seconds_per_case": plain[2],
                       "tta_mean": tta[1], "tta_seconds_per_case": tta[2], "last_checkpoint": last},
        "training_cases": train_mean,
    }
    from brats_keras.io import atomic_write_json

    atomic_write_json(CARD_JSON, card)
    from brats_keras.io import atomic_write_text

    atomic_write_text(CARD_FILE, card_markdown(card))
    print(json.dumps({"mean": plain[1], "tta_mean": tta[1], "s_per_case": plain[2]}, indent=1))



#: the most the package's model files may take (MB)
SIZE_BUDGET_MB = 60.0

#: fold-run settings that may differ between the folds of one recipe
_PER_FOLD = {"fold", "out"}


#: the folder of links that the card's commands gather the case folders of several roots into
ALL_CASES = "data/all_cases"


def convert_inputs(data) -> tuple[list[str], str]:
    """``(lines, folder)``: the ``--input`` folder that gives ``convert.py`` the cases ``data`` was converted from,
    and the shell lines that make it. One data root named by the manifest is the folder itself (no lines);
    several (``../shared/data/brats-real`` and ``../shared/data/brats-extra`` for the shipped ensemble) are
    gathered as links to their case folders in :data:`ALL_CASES`. Paths are relative to where this runs.

    The cases are those training read (:class:`brats_keras.data.ConvertedCases`: the labelled ones), each
    with the path of its original label map.

    Raises:
        ValueError (BratsInputError from ConvertedCases) in one line naming the folder or the manifest when it is
        missing, unreadable or malformed, or names no converted case.
    """
    manifest = Path(data) / MANIFEST
    cases = ConvertedCases(data)  # BratsInputError in one line naming the folder or manifest: missing, malformed, ...
    roots = sorted({os.path.relpath(Path(c["seg"]).parent.parent) for c in cases.entries.values() if c.get("seg")})
    if not roots:
        raise ValueError(f"{manifest}: names no converted case with a label map")
    if len(roots) == 1:
        return [], roots[0]
    folders = " ".join(f"{root}/*/" for root in roots)
    return [f"mkdir -p {ALL_CASES}",
            f'for d in {folders}; do ln -sfn "$(realpath "$d")" {ALL_CASES}/; done'], ALL_CASES


def _same_run(recorded: str, given) -> bool:
    """Whether the run path a crossval table recorded names the fold run folder ``given``. crossval records the
    paths as it was given them, often relative to the folder it ran in; a relative one matches a given run that
    resolves to it from here or whose resolved path ends with it (the same run named from another folder)."""
    recorded, given = Path(recorded), Path(given).resolve()
    if recorded.resolve() == given:
        return True
    parts = Path(os.path.normpath(recorded)).parts
    return not recorded.is_absolute() and ".." not in parts and given.parts[-len(parts):] == parts


#: where the card's commands put the stage-1 ensemble of a two-stage recipe
STAGE1_DIR = "stage1"


def read_stage1(path) -> dict:
    """The stage-1 ensemble of a two-stage recipe: ``{"path", "record" (its ensemble.json), "card" (the
    model_card.json beside it)}``. Fails in one line when either is unreadable, a model has no sha256, or the card
    has no commands that rebuild the ensemble."""
    path = Path(path)
    path = path / "ensemble.json" if path.is_dir() else path
    card_path = path.with_name(CARD_JSON.name)
    read = {}
    for name, f in (("record", path), ("card", card_path)):
        try:
            read[name] = json.loads(f.read_text())
        except (OSError, ValueError) as exc:
            fail(f"{f}: cannot be read as the stage-1 ensemble's {'ensemble.json' if name == 'record' else 'card'} "
                 f"({exc.__class__.__name__}: {str(exc).splitlines()[0] if str(exc) else ''})")
    models = read["record"].get("models") if isinstance(read["record"], dict) else None
    if not isinstance(models, dict) or not models:
        fail(f"{path}: lists no models (not the ensemble.json of an exported ensemble)")
    unsummed = [n for n, m in models.items() if not str(m.get("checksum", "")).startswith("sha256:")]
    if unsummed:
        fail(f"{path}: records no sha256 for {', '.join(unsummed)}: the runs' start files cannot be checked")
    card = read["card"]
    if not isinstance(card, dict) or card.get("kind") != "fold ensemble" or not card.get("commands"):
        fail(f"{card_path}: not the card of an exported fold ensemble (no commands that rebuild stage 1)")
    if card.get("stage1"):
        fail(f"{card_path}: stage 1 is itself a two-stage recipe; a third stage is not supported")
    if not card["commands"].splitlines()[-1].startswith("python scripts/export_pretrained.py "):
        fail(f"{card_path}: its commands do not end with the export that makes the stage-1 files")
    return {"path": path, **read}


def _stage1_start(run, cfg, stage1) -> dict:
    """Which stage-1 file fold run ``run`` (its ``config.json`` read into ``cfg``) started from: its
    ``init_from`` file, whose sha256 must be the one ``stage1``'s ensemble.json records for a file of the run's
    fold. Fails in one line otherwise."""
    init, fold = cfg.get("init_from"), cfg.get("fold")
    if not init:
        fail(f"{run / 'config.json'}: the run starts from no model (no init_from), but --stage1 says the runs "
             "start from the stage-1 fold files")
    if not Path(init).is_file():
        fail(f"{init}: not found (the file {run} started from; --stage1 checks its sha256)")
    digest = file_checksum(init)
    models = stage1["record"]["models"]
    of_fold = {n: m["checksum"] for n, m in models.items() if m.get("fold") == fold}
    match = [n for n, c in of_fold.items() if c == digest]
    if not match:
        fail(f"{run} starts from {init} ({digest}), not the stage-1 fold-{fold} file that {stage1['path']} records ("
             + (", ".join(f"{n} {c}" for n, c in of_fold.items()) or "none") + ")")
    return {"fold": fold, "run": str(run), "init_from": str(init), "sha256": digest, "stage1_file": match[0],
            "stage1_run": models[match[0]].get("run")}


def _fold_runs(groups, cv_dir, stage1=None):
    """Check the fold runs (one list per recipe) and the cross-validation before anything is written;
    ``(configs per recipe, crossval results, choice, post-processed results, the recipes' own tables, the stage-1
    file each run started from (``stage1`` given; else None))``.

    One recipe: ``cv_dir`` is its crossval folder. Several: ``cv_dir`` is the table ``crossval --combine`` wrote,
    whose ``combined`` folders are the recipes' own tables, in the order of ``groups``."""
    cv_dir = Path(cv_dir)
    for name in ("crossval.json", "postprocessing.json", "crossval_postprocessed.json"):
        if not (cv_dir / name).is_file():
            fail(f"{cv_dir / name}: not found (run brats-keras crossval --runs ... --out {cv_dir} "
                 "--choose-postprocessing first)")
    try:
        results, choice, post = (read_crossval(cv_dir), read_postprocessing_file(cv_dir / "postprocessing.json"),
                                 read_crossval(cv_dir, postprocessed=True))
    except bio.BratsInputError as exc:
        fail(str(exc))
    members = results.get("combined")
    if members and len(members) != len(groups):
        fail(f"{cv_dir / 'crossval.json'}: combines {len(members)} cross-validations ({', '.join(members)}); give "
             f"--folds once for each, in that order ({len(groups)} given)")
    if not members and len(groups) > 1:
        fail(f"{cv_dir / 'crossval.json'}: the table of one recipe; for {len(groups)} recipes give the table that "
             "crossval --combine wrote from theirs")
    tables = []
    for runs, member in zip(groups, members or [None]):
        table = results
        if member is not None:
            try:
                table = read_crossval(member)
            except bio.BratsInputError as exc:
                fail(str(exc))
        tables.append(table)
        where = Path(member) if member is not None else cv_dir
        scored = [f["run"] for f in table["folds"].values()]
        unmatched = [str(r) for r in runs if not any(_same_run(s, r) for s in scored)]
        if len(scored) != len(runs) or unmatched:
            fail(f"{where}: its table scores the runs {', '.join(scored)}, not the ones given "
                 f"({', '.join(map(str, runs))})")
        try:
            planned = fold_runs(runs, table["checkpoint"])  # split.json and the checkpoint, as the ensemble reads them
        except bio.BratsInputError as exc:
            fail(str(exc))
        for run, split, _ in planned:  # a run matched by name alone (the same path under another folder) must be the
            scored_fold = table["folds"].get(str(split.get("fold")), {})  # fold the table scored: same held-out cases
            if sorted(split.get("val", [])) != sorted(scored_fold.get("cases", [])):
                fail(f"{run / 'split.json'}: fold {split.get('fold')} holds out "
                     f"{', '.join(sorted(split.get('val', [])))}, but {where / 'crossval.json'} scored its fold "
                     f"{split.get('fold')} on {', '.join(scored_fold.get('cases', [])) or 'no cases'}: not the runs "
                     "the table scores")
    cfg_groups, starts = [], [] if stage1 else None
    per_fold = _PER_FOLD | ({"init_from"} if stage1 else set())  # stage 2: each fold starts from its own file
    for runs in groups:
        cfgs = []
        for run in map(Path, runs):
            for name in ("config.json", "log.csv"):
                if not (run / name).is_file():
                    fail(f"{run / name}: not found (is {run} a fold run folder?)")
            cfg = json.loads((run / "config.json").read_text())
            if stage1:
                starts.append(_stage1_start(run, cfg, stage1))
            elif cfg.get("init_from"):
                fail(f"{run} starts from {cfg['init_from']}; the card reproduces runs trained from scratch, or "
                     "the second stage of a two-stage recipe (--stage1 STAGE1/ensemble.json)")
            cfgs.append(cfg)
        for run, cfg in zip(runs[1:], cfgs[1:]):
            for key in sorted(set(cfg) | set(cfgs[0])):
                if key not in per_fold and cfg.get(key) != cfgs[0].get(key):
                    fail(f"{runs[0]} and {run} were trained with different {key} ({cfgs[0].get(key)!r} and "
                         f"{cfg.get(key)!r}): the fold runs of one --folds are one recipe")
        cfg_groups.append(cfgs)
    return cfg_groups, results, choice, post, tables, starts


def export_ensemble(args):
    import tempfile

    from brats_keras.io import BratsInputError, atomic_write_json, atomic_write_text
    from brats_keras.pretrained import HERE

    if not args.crossval:
        fail("--folds needs --crossval (the folder written by brats-keras crossval --choose-postprocessing)")
    groups = [[Path(r) for r in g] for g in args.folds]
    stage1 = None
    if args.stage1:
        if len(groups) > 1:
            fail("--stage1: a two-stage recipe ships one --folds (the second stage's fold runs)")
        stage1 = read_stage1(args.stage1)
        if f"--output {args.data} " not in stage1["card"]["commands"]:
            fail(f"--data {args.data}: not the conversion stage 1's commands make "
                 f"({stage1['path'].with_name(CARD_JSON.name)}); the second stage trains on the same data")
    cfg_groups, results, choice, post, tables, starts = _fold_runs(groups, args.crossval, stage1)
    if args.checkpoint and args.checkpoint != results["checkpoint"]:
        fail(f"--checkpoint {args.checkpoint}: {args.crossval} scored the {results['checkpoint']} checkpoints, and the "
             "ensemble ships what the cross-validation scored (run crossval --checkpoint "
             f"{args.checkpoint} first)")
    commands = []
    for g, (runs, cfgs) in enumerate(zip(groups, cfg_groups)):
        try:
            commands.append(train_command(cfgs[0], out=f"runs/{_recipe_dir(g, len(groups), stage1)}/fold$k",
                                          data=args.data, init_from=_stage1_init(starts)))
        except ValueError as exc:
            fail(f"{runs[0] / 'config.json'}: {exc}")
    to = Path(args.to) if args.to else HERE
    to.mkdir(parents=True, exist_ok=True)
    # everything that can fail (the fold files, the check, the card) happens in a staging folder: the package
    # folder changes only once all of it succeeded, so a failure leaves the shipped model and its card as they were
    with tempfile.TemporaryDirectory(dir=to, prefix=".export-") as staging:
        staging = Path(staging)
        try:
            card = _ensemble_card(args, groups, cfg_groups, results, choice, post, commands, tables, staging, to,
                                  stage1, starts)
            markdown = card_markdown(card)
        except (BratsInputError, FileNotFoundError, ValueError) as exc:
            fail(str(exc).splitlines()[0])
        for f in card["model_files"]:
            os.replace(staging / f["file"], to / f["file"])
        os.replace(staging / "ensemble.json", to / "ensemble.json")
        keep = {f["file"] for f in card["model_files"]}
        for stale in [to / "model.keras", *(p for p in to.glob("fold-*.keras") if p.name not in keep)]:
            if stale.exists():  # the ensemble replaces the single model (60 MB for all that ships)
                stale.unlink()
                print(f"removed {stale}")
        atomic_write_json(to / CARD_JSON.name, card)
        atomic_write_text(to / CARD_FILE.name, markdown)
    print(json.dumps({"crossval_mean": {r: results["mean"][r]["dice"] for r in ("WT", "TC", "ET")},
                      "with_postprocessing": {r: post["mean"][r]["dice"] for r in ("WT", "TC", "ET")},
                      "check": card["check"]}, indent=1))
    return 0


#: a labelled ET less than this many brain standard deviations above the brain's mean T1ce is barely enhancing
LOW_CONTRAST = 1.0


def et_contrast_summary(contrast: dict, rows: dict) -> dict | None:
    """The model card's ``et_contrast``: each case's labelled-ET contrast in T1ce (``label_contrast``), the cases
    under :data:`LOW_CONTRAST`, and the recipe's mean out-of-fold ET Dice on those and on the others."""
    if not contrast:
        return None
    low = sorted(c for c, z in contrast.items() if z < LOW_CONTRAST)
    rest = sorted(set(contrast) - set(low))

    def mean_et(ids):
        return float(np.mean([rows[c]["ET"]["dice"] for c in ids])) if ids else None

    return {"modality": "t1ce", "threshold": LOW_CONTRAST, "cases": contrast, "low": low,
            "et_dice_low": mean_et(low), "et_dice_rest": mean_et(rest)}


def _recipe_dir(g: int, n: int, stage1=None) -> str:
    """The folder name the card's commands give recipe ``g`` of ``n``: ``cv`` for one, ``cv_a``, ``cv_b``, ...;
    ``ft`` for the second stage of a two-stage recipe (stage 1 keeps ``cv``)."""
    if stage1:
        return "ft"
    return "cv" if n == 1 else f"cv_{MEMBER_LETTERS[g]}"


def _stage1_init(starts) -> str | None:
    """The ``--init-from`` of the second stage's command: the stage-1 file of fold ``$k`` where the card's
    commands export stage 1 (``stage1/fold-$k.keras``); None for a one-stage recipe."""
    if not starts:
        return None
    names = {s["stage1_file"].replace(f"fold-{s['fold']}", "fold-$k", 1) for s in starts}
    if len(names) != 1:
        raise ValueError(f"the runs start from stage-1 files of different names ({', '.join(sorted(names))})")
    return f"{STAGE1_DIR}/{names.pop()}"


def _stage1_card(stage1, starts) -> dict:
    """The card's ``stage1``: where stage 1 came from and what it scored, and the file each fold run started
    from with its sha256 (the stage-1 ensemble.json's own)."""
    card, record = stage1["card"], stage1["record"]
    return {"ensemble": str(stage1["path"]), "weights_dtype": record.get("weights_dtype"),
            "models": {n: {k: m.get(k) for k in ("fold", "run", "checksum")} for n, m in record["models"].items()},
            "checkpoint": record.get("checkpoint"),
            "starts": starts, "training": card.get("training"),
            "crossval_mean": card.get("crossval", {}).get("mean"),
            "crossval_postprocessed_mean": card.get("crossval_postprocessed", {}).get("mean"),
            # per case, the Dice of each region before and after stage 1's post-processing: its choice stays checkable
            **{f"{table}_dice": {cid: {r: row[r]["dice"] for r in ("WT", "TC", "ET") if r in row}
                                 for cid, row in card.get(table, {}).get("cases", {}).items()}
               for table in ("crossval", "crossval_postprocessed")},
            "undersegmentation": card.get("undersegmentation"), "commands": card["commands"]}


def _training_text(cfgs, runs, args, command) -> dict:
    cfg = cfgs[0]
    steps = sorted({len(read_log(r)) * c["steps_per_epoch"] for r, c in zip(runs, cfgs)})
    return {"recipe": "pretrained", "loss": loss_text(cfg), "lr": cfg["lr"], "patch_size": cfg["patch_size"],
            "batch_size": cfg["batch_size"], "optimizer": optimizer_text(cfg),
            "augmentation": augmentation_text(cfg), "patches": patches_text(cfg), "steps_per_fold": steps[-1], "steps_range": steps,
            "minutes_per_fold": args.train_minutes, "hardware": args.hardware, "command": command}


def _ensemble_card(args, groups, cfg_groups, results, choice, post, commands, tables, staging, to, stage1=None,
                   starts=None):
    """Write the fold files and ensemble.json into ``staging``, check and time them, and return the card."""
    import time

    from brats_keras.ensemble import ensemble_file_fold, ensemble_from_runs

    links, source = convert_inputs(cfg_groups[0][0]["data"])  # first: an unreadable manifest stops it before any file
    written = ensemble_from_runs(groups if len(groups) > 1 else groups[0], staging, checkpoint=results["checkpoint"],
                                 postprocessing=choice, weights_dtype="int8" if args.int8 else "float16",
                                 log=lambda line: print(line.replace(str(staging), str(to))))
    size = sum(p.stat().st_size for p in written) / 1e6
    if size > SIZE_BUDGET_MB:  # before any check: nothing of the package changes
        raise ValueError(f"the ensemble's {len(written)} files would ship {size:.1f} MB, over the "
                         f"{SIZE_BUDGET_MB:g} MB budget" + ("" if args.int8 else ": try --int8"))
    # the check: each case's own-fold files (one per recipe) with the stored post-processing against the
    # post-processed table
    cases = {c.case_id: c for root in {Path(r["truth"]).parent.parent for r in results["cases"].values()}
             for c in bio.find_cases(root)}
    ids = sorted(cid for cid in post["cases"] if cid in cases)[:args.check_cases]
    by_fold = {}
    for path in written:
        by_fold.setdefault(ensemble_file_fold(path.name), []).append(path)
    diffs, single = [], []
    for cid in ids:
        pred = Predictor(by_fold[post["cases"][cid]["fold"]], tta=results.get("tta", False),
                         overlap=results.get("overlap", 0.5)).predict_case(cases[cid])
        single.append(pred["seconds"])
        got = score_case(pred["classes"], bio.load_classes(cases[cid].seg),
                         tuple(float(z) for z in pred["header"].get_zooms()[:3]), report=False, distances=False)
        diffs += [abs(got[r]["dice"] - post["cases"][cid][r]["dice"]) for r in ("WT", "TC", "ET")]
    ensemble = Predictor(written)
    seconds = []
    for cid in ids:
        t0 = time.time()
        ensemble.predict_case(cases[cid])
        seconds.append(time.time() - t0)
    info = read_info(written[0])
    factor = int(info.get("downsample") or 1)
    cv_dir = crossval_file(args.crossval).parent
    ceiling, on_grid, contrast = [], [], {}  # per case: the grid's ceiling, the out-of-fold prediction scored on the
    for cid, r in results["cases"].items():  # grid, and how bright the labelled ET is in T1ce
        truth = bio.load_classes(Path(r["truth"]))
        ceiling.append(resolution_ceiling(truth, factor))
        on_grid.append(grid_dice(bio.load_classes(member_path(cv_dir, "predictions", r["prediction"])), truth, factor))
        if cid in cases and "t1ce" in cases[cid].images and (truth == 3).any():
            contrast[cid] = label_contrast(bio.load_nifti(cases[cid].path("t1ce"), np.float32)[0], truth)["ET"]
    model, _ = load_model(written[0], compile=False)
    n_fold_cases = {k: len(f["cases"]) for k, f in results["folds"].items()}
    cfg = cfg_groups[0][0]
    recipes = [_training_text(cfgs, runs, args, command) for runs, cfgs, command in zip(groups, cfg_groups, commands)]
    folds = sorted(by_fold)
    dirs = [_recipe_dir(g, len(groups), stage1) for g in range(len(groups))]
    fold_runs_of = [" ".join(f"runs/{d}/fold{k}" for k in folds) for d in dirs]
    table = "cv_ft" if stage1 else "cv"
    if len(groups) == 1:
        scoring = ["brats-keras crossval --runs " + fold_runs_of[0] + f" --out {table} --choose-postprocessing"
                   + choice_rule_flags(choice)]
    else:
        scoring = [f"brats-keras crossval --runs {runs} --out {d}" for runs, d in zip(fold_runs_of, dirs)]
        scoring.append("brats-keras crossval --combine " + " ".join(dirs) + " --out cv --choose-postprocessing"
                       + choice_rule_flags(choice))
    training = []
    for command in commands:
        training += [f"for k in {' '.join(str(k) for k in folds)}; do", "  " + command.replace("\n", "\n  "), "done"]
    card = {
        "kind": "fold ensemble",
        "model_files": [{"file": p.name, "fold": ensemble_file_fold(p.name), "size_mb": round(p.stat().st_size / 1e6, 2),
                         **({"recipe": MEMBER_LETTERS.index(p.stem[-1])} if len(groups) > 1 else {})}
                        for k in folds for p in by_fold[k]],
        "architecture": {"name": cfg["model"], "base_filters": cfg["base_filters"], "depth": cfg["depth"],
                         "norm": cfg["norm"], "output": cfg["output"], "parameters": count_params(model)},
        "preprocessing": {k: v for k, v in read_info(written[0]).items() if k != "postprocess"},
        "postprocessing": {k: choice.get(k) for k in ("postprocess", "dice_before", "dice_after", "cases",
                                                      "min_gain", "confidence", "chosen_on")},
        "training": recipes[0],
        "data": {"cases": len(results["cases"]), "folds": {k: f["cases"] for k, f in results["folds"].items()},
                 "folds_text": ", ".join(f"fold {k}: {n} cases" for k, n in n_fold_cases.items()),
                 "stratified_by": json.loads((groups[0][0] / "split.json").read_text()).get("stratified_by")},
        "crossval": {k: results[k] for k in ("checkpoint", "tta", "overlap", "cases", "folds", "mean", "median",
                                             "std", "failed") if k in results},
        "crossval_postprocessed": {k: post[k] for k in ("cases", "folds", "mean", "median", "std") if k in post},
        "resolution_ceiling": {r: float(np.mean([c[r] for c in ceiling])) for r in ("WT", "TC", "ET")},
        "grid_dice": {r: float(np.mean([c[r] for c in on_grid])) for r in ("WT", "TC", "ET")},
        "et_contrast": et_contrast_summary(contrast, results["cases"]),
        "undersegmentation": undersegmentation(cv_dir, cfg["data"]),  # the conversion the folds trained on
        "check": {"cases": ids, "max_dice_difference": float(max(diffs)) if diffs else 0.0,
                  "single_seconds_per_case": float(np.mean(single)) if single else float("nan"),
                  "ensemble_seconds_per_case": float(np.mean(seconds)) if seconds else float("nan")},
        "commands": "\n".join([
            *(_stage1_commands(stage1) if stage1 else [
                *links,
                f"python data_prep/convert.py --input {source} --output {args.data} \\",
                f"    --modalities {','.join(info['modalities'])} --crop {info.get('crop', 'brain')} "
                f"--scale {info['scale']} --downsample {info.get('downsample', 1)}"]),
            *training, *scoring,
            "python scripts/export_pretrained.py " + " ".join(f"--folds {runs}" for runs in fold_runs_of)
            + (f" --stage1 {STAGE1_DIR}/ensemble.json" if stage1 else "")
            + f" --crossval {table} --data {args.data} --train-minutes {args.train_minutes:g}"
            + (" --int8" if args.int8 else "")]),
    }
    if stage1:
        card["stage1"] = _stage1_card(stage1, starts)
    if len(groups) > 1:  # each recipe's own out-of-fold mean, beside the combined headline
        card["recipes"] = [{**recipe, "crossval_mean": table["mean"], "crossval_dir": str(member)}
                           for recipe, table, member in zip(recipes, tables, results["combined"])]
    card["ensemble"] = json.loads((staging / "ensemble.json").read_text())
    return card


def _stage1_commands(stage1) -> list[str]:
    """Stage 1's commands, from its card, with its export writing into :data:`STAGE1_DIR` (where the second
    stage's ``--init-from`` finds its files) instead of the package."""
    lines = stage1["card"]["commands"].splitlines()
    return [f"# stage 1: {stage1['card'].get('kind', 'fold ensemble')} (its files in {STAGE1_DIR}/)", *lines[:-1],
            lines[-1] + f" --to {STAGE1_DIR}", f"# stage 2: each fold continues from its stage-1 file"]


if __name__ == "__main__":
    sys.exit(main())
