"""The built-in demo: the whole workflow on synthetic BraTS-like cases, no data needed.

synth -> convert -> train -> predict (sliding window, NIfTI) -> evaluate (BraTS regions) -> pictures.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np


def run_demo(out="demo_out", n_cases=16, minutes=6.5, seed=0, n_test=4, n_val=2, log=print,
             shape=(240, 240, 155), downsample=2, overrides=None) -> dict:
    """Run the demo into ``out``; return the held-out mean Dice ``{"WT", "TC", "ET", ...}``.

    Writes ``out/metrics.json`` and pictures under ``out/figures``. ``shape`` and ``overrides``
    (training settings) let tests run the same path on tiny cases and models. ``downsample`` is the
    working resolution in mm (2: a 64^3 patch sees the whole brain, and prediction is 8x cheaper).
    """
    from .convert import convert_folder
    from .data import split_cases
    from .evaluation import evaluate_folder, format_table
    from .io import atomic_write_json
    from .synthetic import make_dataset
    from .training import TrainConfig, train

    out = Path(out)
    t_start = time.time()
    log(f"[1/6] writing {n_cases} synthetic cases (240 x 240 x 155, BraTS 2021 layout)")
    make_dataset(out / "synthetic", n_cases, seed=seed, shape=shape, workers=2)
    log(f"[2/6] converting: FLAIR, T1ce, T2; z-score over brain voxels; brain crop; {downsample} mm")
    convert_folder(out / "synthetic", out / "converted", crop="brain", scale="zscore", workers=2,
                   downsample=downsample)
    split = split_cases([f"Synth_{i:05d}" for i in range(n_cases)], val=n_val, test=n_test, seed=seed)
    atomic_write_json(out / "split.json", split)

    cfg = TrainConfig.from_recipe("demo", **{"data": str(out / "converted"), "out": str(out / "run"),
                                             "split_file": str(out / "split.json"), "epochs": 1000,
                                             "steps_per_epoch": 25, "val_steps": 2, "seed": seed,
                                             "time_limit": minutes, "verbose": 2, **(overrides or {})})
    log(f"[3/6] training a {cfg.model} (base {cfg.base_filters}, {cfg.output} output, {cfg.loss}) "
        f"on {cfg.patch_size}^3 patches for {minutes:g} minutes")
    res = train(cfg, overwrite=True)  # out/run is the demo's own: a second demo trains it again

    log("[4/6] predicting the held-out cases with the sliding window")
    from .inference import predict_folder

    predict_folder(out / "synthetic", out / "predictions", model=res["best"], batch_size=4, case_ids=split["test"])

    log("[5/6] evaluating (BraTS regions WT, TC, ET)")
    results = evaluate_folder(out / "predictions", out / "synthetic", json_path=out / "evaluation.json",
                              csv_path=out / "evaluation.csv", case_ids=split["test"])
    log(format_table(results))
    mean = results["mean"]
    metrics = {r: round(float(mean[r]["dice"]), 4) for r in ("WT", "TC", "ET")}
    metrics.update({f"hd95_{r}": round(float(mean[r]["hd95"]), 2) for r in ("WT", "TC", "ET")})
    metrics["test_cases"] = split["test"]
    metrics["train_seconds"] = round(res["seconds"], 1)
    metrics["total_seconds"] = round(time.time() - t_start, 1)
    atomic_write_json(out / "metrics.json", metrics)

    log("[6/6] pictures")
    _pictures(out, split["test"][0])
    log("\nheld-out synthetic cases, mean Dice:")
    log("  " + "  ".join(f"{r} {metrics[r]:.3f}" for r in ("WT", "TC", "ET")))
    log(f"written: {out / 'metrics.json'}, {out / 'figures'}, predictions in {out / 'predictions'}")
    return metrics


def _pictures(out: Path, case_id: str) -> None:
    from .io import find_cases, load_classes, load_modalities
    from .visualize import compare, montage, plot_history, show_case

    fig_dir = out / "figures"
    fig_dir.mkdir(exist_ok=True)
    (case,) = [c for c in find_cases(out / "synthetic" / case_id)]
    vols, _, _ = load_modalities(case, ["flair", "t1ce", "t2"])
    image = np.stack([v.astype(np.float32) for v in vols], -1)
    truth = load_classes(case.seg)
    pred = load_classes(out / "predictions" / f"{case_id}.nii.gz")
    show_case(image, truth, save=fig_dir / "case.png", title=case_id)
    compare(image[..., 0], truth, pred, save=fig_dir / "truth_vs_prediction.png", title=case_id)
    montage(image[..., 0], truth, pred=pred, save=fig_dir / "montage.png")
    plot_history(out / "run" / "log.csv", save=fig_dir / "loss_curves.png")
    import matplotlib.pyplot as plt

    plt.close("all")
