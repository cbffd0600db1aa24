"""SegResNet against the 3D U-Net at equal patch size: parameters, training step time, peak memory.

Both models train on the same random batch as in ``train_bench.py`` (one fresh subprocess per
run, Adam, ``dice+bce`` on 3 regions, ``jit_compile=False``, ``train_on_batch``):
``unet3d(base_filters=16, depth=4, norm="instance")`` (train_bench's U-Net) and
``segresnet(base_filters=16)`` (MONAI's layout: ``init_filters=16``, blocks (1, 2, 2, 4) / (1, 1, 1),
group norm). The two alternate for ``--rounds`` rounds, so a busy machine slows both alike.

    python benchmarks/segresnet_bench.py                     # 64^3, batch 2, float32, 2 rounds
    python benchmarks/segresnet_bench.py --size 128 --batch 1 --rounds 1
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

MODELS = ("unet3d", "segresnet")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=64, help="patch size (default %(default)s)")
    ap.add_argument("--batch", type=int, default=2, help="batch size (default %(default)s)")
    ap.add_argument("--base", type=int, default=16, help="base / initial filters (default %(default)s)")
    ap.add_argument("--precision", default="float32", help="Keras dtype policy (default %(default)s)")
    ap.add_argument("--rounds", type=int, default=2, help="runs of each model, alternating (default %(default)s)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed steps first (default %(default)s)")
    ap.add_argument("--steps", type=int, default=3, help="timed steps (default %(default)s)")
    ap.add_argument("--timeout", type=float, default=600, help="seconds per run (default %(default)s)")
    args = ap.parse_args(argv)

    configs = [dict(group="model", model=m, size=args.size, base=args.base, batch=args.batch,
                    precision=args.precision, onednn=os.environ.get("TF_ENABLE_ONEDNN_OPTS", "1"),
                    warmup=args.warmup, steps=args.steps)
               for _ in range(args.rounds) for m in MODELS]
    C.print_header("SegResNet vs 3D U-Net training step, one subprocess per run",
                   modules=("numpy", "keras", "tensorflow"),
                   extra={"runs": f"{len(configs)}, each {args.warmup} warm-up + {args.steps} timed step(s)"})
    rows, by_model = [], {m: [] for m in MODELS}
    for cfg in configs:
        t0 = time.perf_counter()
        res = TB.run_config(cfg, args.timeout)
        res["timeout"] = args.timeout
        s = TB.summarize(res)
        by_model[cfg["model"]].append(s)
        rows.append([cfg["model"], f"{cfg['size']}^3", cfg["batch"], cfg["base"], s["policy"] or cfg["precision"],
                     s["params"], s["warm"], s["step"], s["best"], s["rss_peak"], s["load"],
                     time.perf_counter() - t0, s["status"]])
    C.print_table(["model", "patch", "batch", "base", "policy", "params", "warm-up s", "mean step s",
                   "best step s", "peak RSS MB", "load 1m", "wall s", "status"], rows, "every run:")
    summary = []
    for m, runs in by_model.items():
        steps = [s["step"] for s in runs if s["step"]]
        peaks = [s["rss_peak"] for s in runs if s["rss_peak"]]
        summary.append([m, runs[0]["params"], min(steps) if steps else None,
                        sum(steps) / len(steps) if steps else None, max(peaks) if peaks else None])
    C.print_table(["model", "params", "fastest run's mean step s", "mean step s over runs", "peak RSS MB"],
                  summary, "per model:")
    u, s = summary
    if u[3] and s[3]:
        print(f"segresnet / unet3d: parameters {C.ratio(s[1], u[1]):.2f}x, step time {C.ratio(s[3], u[3]):.2f}x, "
              f"peak RSS {C.ratio(s[4], u[4]):.2f}x")


if __name__ == "__main__":
    main()
