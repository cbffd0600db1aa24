#!/usr/bin/env python
"""Export a trained run as the shipped model and write its model card.

    python scripts/export_pretrained.py --run runs/pretrained --real ../shared/data/brats-real

Saves ``brats_keras/pretrained/model.keras`` (weights and preprocessing info, no optimizer
state), predicts the run's validation cases from their original NIfTI files with and without
mirroring TTA, and writes ``model_card.json`` and ``MODEL_CARD.md`` beside it. The card's text and the rows
of earlier runs it compares with live in ``brats_keras.pretrained.card`` and ``card_history.json``.
"""
import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from brats_keras import io as bio  # noqa: E402
from brats_keras.checkpoint import load_model, read_info, save_model  # noqa: E402
from brats_keras.evaluation import score_case  # noqa: E402
from brats_keras.inference import Predictor  # noqa: E402
from brats_keras.models import count_params  # noqa: E402
from brats_keras.pretrained import CARD_FILE, CARD_JSON, MODEL_FILE  # noqa: E402
from brats_keras.pretrained.card import (augmentation_text, card_markdown, late_val_range,  # noqa: E402
                                         optimizer_text, train_command)
from brats_keras.training import read_log  # noqa: E402


def score(predictor, cases):
    out, seconds = {}, []
    for case in cases:
        pred = predictor.predict_case(case)
        seconds.append(pred["seconds"])
        spacing = tuple(float(z) for z in pred["header"].get_zooms()[:3])
        out[case.case_id] = score_case(pred["classes"], bio.load_classes(case.seg), spacing, report=False)
    mean = {r: {k: float(np.mean([c[r][k] for c in out.values()])) for k in ("dice", "hd95")} for r in ("WT", "TC", "ET")}
    return out, mean, float(np.mean(seconds))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True)
    ap.add_argument("--real", required=True, help="folder with the original NIfTI cases")
    ap.add_argument("--checkpoint", default="best", choices=["best", "last"])
    ap.add_argument("--hardware", default="2-core AMD EPYC CPU (no AVX-512), 24 GB RAM, TensorFlow 2.21, float32")
    ap.add_argument("--train-minutes", type=float, required=True)
    args = ap.parse_args(argv)
    run = Path(args.run)
    needed = [run / "checkpoints" / f"{args.checkpoint}.keras", run / "config.json", run / "split.json", run / "log.csv"]
    missing = [str(f) for f in needed if not f.exists()]
    if missing:
        sys.exit(f"export_pretrained: {', '.join(missing)}: not found (is {run} a training run folder?)")
    cfg = json.loads((run / "config.json").read_text())
    if cfg.get("init_from"):
        sys.exit(f"export_pretrained: {run} starts from {cfg['init_from']}; the card can only reproduce runs "
                 "trained from scratch with --recipe pretrained")
    try:
        command = train_command(cfg)
    except ValueError as exc:  # a setting no flag sets: refused before anything is written
        sys.exit(f"export_pretrained: {run / 'config.json'}: {exc}")
    model, info = load_model(needed[0], compile=False)
    save_model(model, MODEL_FILE, info, include_optimizer=False)
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
    monitor = "val_case_dice_mean"
    best_epoch = int(np.nanargmax([r.get(monitor, np.nan) for r in log])) if args.checkpoint == "best" else len(log) - 1
    card = {
        "model_file": MODEL_FILE.name,
        "size_mb": round(MODEL_FILE.stat().st_size / 1e6, 2),
        "architecture": {"name": cfg["model"], "base_filters": cfg["base_filters"], "depth": cfg["depth"],
                         "norm": cfg["norm"], "output": cfg["output"], "parameters": count_params(shipped)},
        "preprocessing": info,
        "training": {"recipe": "pretrained", "loss": cfg["loss"], "lr": cfg["lr"], "patch_size": cfg["patch_size"],
                     "batch_size": cfg["batch_size"], "optimizer": optimizer_text(cfg),
                     "augmentation": augmentation_text(cfg), "lr_schedule": cfg.get("lr_schedule", "plateau"),
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


if __name__ == "__main__":
    main()
