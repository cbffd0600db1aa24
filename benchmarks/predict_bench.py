"""Whole-case prediction time on real cases: one fixed crop (the report's way) vs the sliding
window of ``brats_keras.inference.Predictor`` without and with mirroring TTA, in one process.

* single crop: read the case, scale it as the model's info says, cut the report's fixed crop
  ``[56:184, 56:184, 13:141]`` (down-sampled when the model works at 2 mm), one forward pass,
  paste the classes back into the full volume. Fast, but anything outside the crop is missed;
* window:  ``Predictor(...).predict_case``: brain box, overlapping windows (Gaussian weighting);
* tta:     the same with ``tta=True``: each window also mirrored along every axis combination (8x).

Seconds are per case, end to end (reading the NIfTI files included), with the part spent in the
model's forward passes next to it. The modes run case by case in rotating order, after a
warm-up forward pass at each batch shape (graph tracing is not counted).

By default the model is an untrained ``unet3d(in_channels=3, base_filters=16, depth=4,
norm="instance", output="regions")`` saved with its info by ``brats_keras.checkpoint.save_model``
(the time of a forward pass does not depend on the weights); ``--model PATH`` (or ``--model
pretrained``) times a trained model file instead and then also prints whole-tumor Dice.

    python benchmarks/predict_bench.py                 # 1 mm, 128^3 windows, 1 case (TTA: ~20 min on a busy 2-core CPU)
    python benchmarks/predict_bench.py --quick         # 2 mm, 64^3 windows (the shipped model's set-up), 2 cases
    python benchmarks/predict_bench.py --modes single window --cases 3
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

C.quiet_tensorflow()
MODES = ("single", "window", "tta")


class Counted:
    """Wraps a predictor's ``predict_batch`` to count windows, forward passes and their seconds."""

    def __init__(self, fn):
        self.fn = fn
        self.reset()

    def reset(self):
        self.windows, self.calls, self.seconds = 0, 0, 0.0

    def __call__(self, batch):
        t0 = time.perf_counter()
        out = np.asarray(self.fn(batch))
        self.seconds += time.perf_counter() - t0
        self.windows += len(batch)
        self.calls += 1
        return out


def single_crop(predictor, case, counter):
    """The report's way: one fixed 128^3 crop (at 1 mm) through the model; classes in the full volume."""
    from brats_keras import io as bio
    from brats_keras.preprocessing import REPORT_CROP, box_slices, downsample_image, stack_scaled, upsample_probs

    spec = predictor.spec
    vols, _, _ = bio.load_modalities(case, spec.modalities)
    image, _ = stack_scaled(vols, REPORT_CROP, spec.scale)
    factor = spec.downsample
    probs = counter(downsample_image(image, factor)[None])[0]
    if factor > 1:
        probs = upsample_probs(probs, image.shape[:3], factor)
    classes = np.zeros(vols[0].shape, np.uint8)
    classes[box_slices(REPORT_CROP)] = predictor.to_classes(probs)
    return classes


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(C.REAL_DATA), help="folder of BraTS cases (default: %(default)s)")
    ap.add_argument("--cases", type=int, default=None,
                    help="cases to predict (first N by id; default 1, or 2 with --quick)")
    ap.add_argument("--quick", action="store_true",
                    help="untrained model at 2 mm with 64^3 windows (the shipped model's set-up): about 8x less "
                         "compute per case than 1 mm with 128^3 windows")
    ap.add_argument("--model", default=None,
                    help="a brats-keras .keras model file, or 'pretrained' for the shipped one "
                         "(default: an untrained unet3d base 16)")
    ap.add_argument("--downsample", type=int, default=1,
                    help="untrained model only: its info's down-sampling (2 = 2 mm, as the shipped model)")
    ap.add_argument("--patch", type=int, default=None,
                    help="window size (default: the model info's patch size; untrained: 128, or 64 at --downsample 2)")
    ap.add_argument("--overlap", type=float, default=0.5, help="window overlap (default %(default)s)")
    ap.add_argument("--batch", type=int, default=2, help="windows per forward pass (default %(default)s)")
    ap.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES), help="default: all three")
    ap.add_argument("--tmp", default=None, help="parent folder for the temporary model file")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    if args.quick and not args.model:
        args.downsample = 2
    if args.cases is None:
        args.cases = 2 if args.quick else 1

    import keras

    from brats_keras import io as bio
    from brats_keras.checkpoint import save_model
    from brats_keras.inference import Predictor
    from brats_keras.models import count_params, unet3d

    C.print_header("whole-case prediction: single crop vs sliding window vs sliding window + TTA",
                   modules=("numpy", "keras", "tensorflow"),
                   extra={"keras backend": keras.backend.backend(),
                          "TensorFlow oneDNN kernels": C.onednn_state()})
    cases = C.pick_cases(args.data, args.cases)
    tmp = Path(tempfile.mkdtemp(prefix="brats_predict_bench_", dir=args.tmp))
    try:
        if args.model:
            path = args.model
            if path == "pretrained":
                from brats_keras.pretrained import pretrained_path

                path = pretrained_path()
            model_desc = f"trained model {path}"
        else:
            keras.utils.set_random_seed(0)
            model = unet3d(in_channels=3, base_filters=16, depth=4, norm="instance", output="regions")
            patch = args.patch or (128 // args.downsample if args.downsample > 1 else 128)
            info = {"modalities": ["flair", "t1ce", "t2"], "scale": "zscore", "output": "regions",
                    "patch_size": patch}
            if args.downsample > 1:
                info["downsample"] = args.downsample
            path = save_model(model, tmp / "untrained.keras", info=info)
            model_desc = "untrained unet3d base 16 depth 4 instance norm regions (random weights, seed 0)"
        t0 = time.perf_counter()
        base = Predictor(str(path), patch_size=args.patch, overlap=args.overlap, batch_size=args.batch)
        load_s = time.perf_counter() - t0
        info = base.info
        predictors = {"window": base}
        if "tta" in args.modes:
            predictors["tta"] = Predictor(base.model, info=info, patch_size=args.patch, overlap=args.overlap,
                                          batch_size=args.batch, tta=True)
        counter = Counted(base.predict_batch)
        for p in predictors.values():
            p.predict_batch = counter
        n_in = base.model.inputs[0].shape[-1]
        spec = base.spec
        factor = spec.downsample
        print(f"model: {model_desc}; {count_params(base.model):,} parameters; loaded in {load_s:.1f} s")
        print(f"info: modalities {list(spec.modalities)}, scale {spec.scale}, output {spec.output}, "
              f"downsample {factor}, window {base.patch}^3, overlap {args.overlap}, {args.batch} window(s) per pass")

        # warm-up: trace every batch shape the modes will use
        t0 = time.perf_counter()
        crop = tuple(128 // factor for _ in range(3))
        shapes = {(1, *crop, n_in), (1, base.patch, base.patch, base.patch, n_in),
                  (args.batch, base.patch, base.patch, base.patch, n_in)}
        for shape in sorted(shapes):
            base.model.predict_on_batch(np.zeros(shape, np.float32))
        print(f"warm-up forward passes at shapes {sorted(shapes)}: {time.perf_counter() - t0:.1f} s\n", flush=True)

        modes = [m for m in MODES if m in args.modes]
        rows, agg = [], {m: [] for m in modes}
        dice_rows = []
        bar = C.progress(len(cases) * len(modes), "predicting", not args.no_progress, "pred")
        for i, case in enumerate(cases):
            k0 = i % len(modes)
            results = {}
            for mode in modes[k0:] + modes[:k0]:
                counter.reset()
                t0 = time.perf_counter()
                if mode == "single":
                    classes = single_crop(base, case, counter)
                else:
                    classes = predictors[mode].predict_case(case)["classes"]
                dt = time.perf_counter() - t0
                results[mode] = classes
                agg[mode].append((dt, counter.seconds, counter.windows, counter.calls))
                rows.append([case.case_id, mode, dt, counter.seconds, dt - counter.seconds, counter.windows,
                             counter.calls, C.load1()])
                bar.update(1)
            if args.model and case.seg is not None:
                from brats_keras.evaluation import dice

                truth = bio.load_classes(case.seg) > 0
                dice_rows.append([case.case_id] + [dice(results[m] > 0, truth) if m in results else None
                                                   for m in MODES])
        bar.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    C.print_table(["case", "mode", "total s", "model s", "other s (read, scale, weights)", "windows",
                   "forward passes", "load 1m"], rows, "per case (modes in rotating order):")
    summary = []
    for m in modes:
        t = [a[0] for a in agg[m]]
        summary.append([m, statistics.fmean(t), min(t), statistics.fmean(a[1] for a in agg[m]),
                        statistics.fmean(a[2] for a in agg[m])])
    C.print_table(["mode", "mean s/case", "best s/case", "mean model s/case", "windows/case"], summary,
                  f"summary over {len(cases)} case(s):")
    mean = {m: statistics.fmean(a[0] for a in agg[m]) for m in modes}
    ratios = []
    if "single" in mean and "window" in mean:
        ratios.append(["window / single crop", C.ratio(mean["window"], mean["single"])])
    if "window" in mean and "tta" in mean:
        ratios.append(["tta / window", C.ratio(mean["tta"], mean["window"])])
    if "single" in mean and "tta" in mean:
        ratios.append(["tta / single crop", C.ratio(mean["tta"], mean["single"])])
    if ratios:
        C.print_table(["ratio (same run)", "value"], ratios)
    if dice_rows:
        C.print_table(["case", "WT Dice single", "WT Dice window", "WT Dice tta"], dice_rows,
                      "whole-tumor Dice against the label map:")
    C.print_footer()


if __name__ == "__main__":
    main()
