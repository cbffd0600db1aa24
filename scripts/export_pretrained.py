#!/usr/bin/env python
"""Export a trained run as the shipped model and write its model card.

    python scripts/export_pretrained.py --run runs/pretrained --real ../shared/data/brats-real

Saves ``brats_keras/pretrained/model.keras`` (weights and preprocessing info, no optimizer
state), predicts the run's validation cases from their original NIfTI files with and without
mirroring TTA, and writes ``model_card.json`` and ``MODEL_CARD.md`` beside it.
"""
import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from brats_keras import io as bio  # noqa: E402
from brats_keras.checkpoint import load_model, read_info, save_model  # noqa: E402
from brats_keras.evaluation import region_scores  # noqa: E402
from brats_keras.inference import Predictor  # noqa: E402
from brats_keras.models import count_params  # noqa: E402
from brats_keras.pretrained import CARD_FILE, CARD_JSON, MODEL_FILE  # noqa: E402
from brats_keras.training import read_log  # noqa: E402


def score(predictor, cases):
    out, seconds = {}, []
    for case in cases:
        pred = predictor.predict_case(case)
        seconds.append(pred["seconds"])
        truth = bio.load_classes(case.seg)
        spacing = tuple(float(z) for z in pred["header"].get_zooms()[:3])
        out[case.case_id] = region_scores(pred["classes"], truth, spacing)
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
    model, info = load_model(run / "checkpoints" / f"{args.checkpoint}.keras", compile=False)
    save_model(model, MODEL_FILE, info, include_optimizer=False)
    cfg = json.loads((run / "config.json").read_text())
    split = json.loads((run / "split.json").read_text())
    log = read_log(run)
    cases = [c for c in bio.find_cases(args.real) if c.case_id in split["val"]]
    shipped, _ = load_model(MODEL_FILE, compile=False)
    plain = score(Predictor(shipped, info=read_info(MODEL_FILE)), cases)
    tta = score(Predictor(shipped, info=read_info(MODEL_FILE), tta=True), cases)
    monitor = "val_case_dice_mean"
    best_epoch = int(np.nanargmax([r.get(monitor, np.nan) for r in log])) if args.checkpoint == "best" else len(log) - 1
    card = {
        "model_file": MODEL_FILE.name,
        "size_mb": round(MODEL_FILE.stat().st_size / 1e6, 2),
        "architecture": {"name": cfg["model"], "base_filters": cfg["base_filters"], "depth": cfg["depth"],
                         "norm": cfg["norm"], "output": cfg["output"], "parameters": count_params(shipped)},
        "preprocessing": info,
        "training": {"recipe": "pretrained", "loss": cfg["loss"], "patch_size": cfg["patch_size"],
                     "batch_size": cfg["batch_size"], "optimizer": f"Adam lr {cfg['lr']} with ReduceLROnPlateau",
                     "epochs_run": len(log), "steps_per_epoch": cfg["steps_per_epoch"],
                     "steps": len(log) * cfg["steps_per_epoch"], "checkpoint_epoch": best_epoch + 1,
                     "checkpoint_steps": (best_epoch + 1) * cfg["steps_per_epoch"], "minutes": args.train_minutes,
                     "hardware": args.hardware},
        "data": {"source": "23 real BraTS cases in ../shared/data/brats-real (22 BraTS 2018, 1 BraTS 2021)",
                 "split": split},
        "validation": {"cases": plain[0], "mean": plain[1], "seconds_per_case": plain[2],
                       "tta_mean": tta[1], "tta_seconds_per_case": tta[2]},
    }
    from brats_keras.io import atomic_write_json

    atomic_write_json(CARD_JSON, card)
    print(json.dumps({"mean": plain[1], "tta_mean": tta[1], "s_per_case": plain[2]}, indent=1))


if __name__ == "__main__":
    main()
