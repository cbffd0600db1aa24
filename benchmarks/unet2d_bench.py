"""The 2D U-Net on axial slices against the 3D U-Net of the shipped recipe: parameters, training step time,
peak memory, and the voxels each step trains on.

Both train on a random batch as in ``train_bench.py`` (one fresh subprocess per run, Adam, ``dice+bce`` on 3
regions, ``jit_compile=False``, ``train_on_batch``), both with the shipped recipe's layout (depth 4, batch
norm): ``unet3d(base_filters=16)`` on 64^3 patches, batch 2 (``--recipe pretrained``), and ``unet2d`` on
128 x 128 slices, batch 16, at each of ``--bases2d``. The runs alternate for ``--rounds`` rounds, so a busy
machine slows all alike.

    python benchmarks/unet2d_bench.py                           # 64^3 b2 vs 128^2 b16 (base 16 and 32), 2 rounds
    python benchmarks/unet2d_bench.py --size2d 96 --batch2d 32 --rounds 1
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402
import train_bench as TB  # noqa: E402

LAYOUT = dict(depth=4, norm="batch")  # the shipped recipe's (--recipe pretrained)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size3d", type=int, default=64, help="3D patch size (default %(default)s)")
    ap.add_argument("--batch3d", type=int, default=2, help="3D batch size (default %(default)s)")
    ap.add_argument("--base3d", type=int, default=16, help="3D base filters (default %(default)s)")
    ap.add_argument("--size2d", type=int, default=128, help="2D slice size (default %(default)s)")
    ap.add_argument("--batch2d", type=int, default=16, help="2D batch size (default %(default)s)")
    ap.add_argument("--bases2d", type=int, nargs="+", default=[16, 32], help="2D base filters (default 16 32)")
    ap.add_argument("--precision", default="float32", help="Keras dtype policy (default %(default)s)")
    ap.add_argument("--rounds", type=int, default=2, help="runs of each model, alternating (default %(default)s)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed steps first (default %(default)s)")
    ap.add_argument("--steps", type=int, default=3, help="timed steps (default %(default)s)")
    ap.add_argument("--timeout", type=float, default=600, help="seconds per run (default %(default)s)")
    args = ap.parse_args(argv)

    common = dict(group="model", precision=args.precision, onednn=os.environ.get("TF_ENABLE_ONEDNN_OPTS", "1"),
                  warmup=args.warmup, steps=args.steps, layout=LAYOUT)
    kinds = [dict(model="unet3d", size=args.size3d, batch=args.batch3d, base=args.base3d)]
    kinds += [dict(model="unet2d", size=args.size2d, batch=args.batch2d, base=b) for b in args.bases2d]
    configs = [{**common, **k} for _ in range(args.rounds) for k in kinds]
    C.print_header("2D U-Net (slices) vs 3D U-Net training step, one subprocess per run",
                   modules=("numpy", "keras", "tensorflow"),
                   extra={"runs": f"{len(configs)}, each {args.warmup} warm-up + {args.steps} timed step(s)"})

    def label(cfg):
        dims = 3 if cfg["model"] == "unet3d" else 2
        return f"{cfg['model']} base {cfg['base']}", f"{cfg['size']}^{dims}", cfg["batch"] * cfg["size"] ** dims

    rows, by_kind = [], {}
    for cfg in configs:
        t0 = time.perf_counter()
        res = TB.run_config(cfg, args.timeout)
        res["timeout"] = args.timeout
        s = TB.summarize(res)
        name, patch, voxels = label(cfg)
        by_kind.setdefault(name, []).append((s, voxels))
        rows.append([name, patch, cfg["batch"], s["policy"] or cfg["precision"], s["params"], s["warm"], s["step"],
                     s["best"], s["rss_peak"], s["load"], time.perf_counter() - t0, s["status"]])
    C.print_table(["model", "patch", "batch", "policy", "params", "warm-up s", "mean step s", "best step s",
                   "peak RSS MB", "load 1m", "wall s", "status"], rows, "every run:")
    summary = []
    for name, runs in by_kind.items():
        steps = [s["step"] for s, _ in runs if s["step"]]
        mean = sum(steps) / len(steps) if steps else None
        voxels = runs[0][1]
        summary.append([name, runs[0][0]["params"], mean, voxels, voxels / mean / 1e6 if mean else None,
                        max((s["rss_peak"] for s, _ in runs if s["rss_peak"]), default=None)])
    C.print_table(["model", "params", "mean step s over runs", "voxels per step", "M voxels per s",
                   "peak RSS MB"], summary, "per model:")
    ref = summary[0]
    for row in summary[1:]:
        if ref[2] and row[2]:
            print(f"{row[0]} / {ref[0]}: step time {C.ratio(row[2], ref[2]):.2f}x, voxels per second "
                  f"{C.ratio(row[4], ref[4]):.2f}x")


if __name__ == "__main__":
    main()
