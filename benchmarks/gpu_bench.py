"""GPU training throughput and peak GPU memory of the 3D U-Net with the JAX backend.

For each precision (float32, mixed_float16, mixed_bfloat16) and batch size (2, 4) at 128^3, a
fresh subprocess builds ``unet3d(in_channels=3, base_filters=16, depth=4, norm="instance",
output="regions")`` with ``dice+bce``, Adam and XLA (``jit_compile=True``, what training picks on
a GPU), runs warm-up steps (compilation) and timed ``train_on_batch`` steps, and reports images
(patches) per second and the device's ``peak_bytes_in_use``. One subprocess per configuration
keeps the peaks apart; ``XLA_PYTHON_CLIENT_PREALLOCATE=false`` so memory is allocated on demand.

Without JAX or without a GPU it says so and exits with status 0, so it is safe anywhere.

    KERAS_BACKEND=jax python benchmarks/gpu_bench.py
    KERAS_BACKEND=jax python benchmarks/gpu_bench.py --batches 2 --precisions float32 --steps 5
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402


def gpu_or_reason() -> str | None:
    """None when JAX sees a GPU, else why not (checked in a subprocess: JAX stays out of this one)."""
    code = ("import jax, json; d = [x for x in jax.devices() if x.platform == 'gpu']; "
            "print(json.dumps([str(x.device_kind) for x in d]))")
    env = dict(os.environ, XLA_PYTHON_CLIENT_PREALLOCATE="false", TF_CPP_MIN_LOG_LEVEL="3")
    try:
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    except subprocess.TimeoutExpired:
        return "JAX did not answer within 300 s"
    if out.returncode != 0:
        last = [ln for ln in out.stderr.splitlines() if ln.strip()][-1:] or ["?"]
        return f"JAX is not usable here ({last[0][:160]})"
    try:
        kinds = json.loads(out.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return "could not read JAX's device list"
    return None if kinds else "JAX sees no GPU (CPU only)"


def child(cfg: dict) -> None:
    os.environ["KERAS_BACKEND"] = "jax"
    os.environ["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"
    import jax
    import keras
    import numpy as np

    from brats_keras.losses import get_loss
    from brats_keras.models import count_params, unet3d

    dev = [d for d in jax.devices() if d.platform == "gpu"][0]

    def peak():
        stats = dev.memory_stats() or {}
        return stats.get("peak_bytes_in_use", float("nan")) / 2**30

    keras.mixed_precision.set_global_policy(cfg["precision"])
    keras.utils.set_random_seed(0)
    p, b = cfg["size"], cfg["batch"]
    model = unet3d(in_channels=3, base_filters=cfg["base"], depth=4, norm="instance", output="regions")
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=get_loss("dice+bce", output="regions"),
                  jit_compile=True)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((b, p, p, p, 3), dtype=np.float32)
    y = (rng.random((b, p, p, p, 3)) < 0.1).astype(np.float32)
    t0 = time.perf_counter()
    for _ in range(cfg["warmup"]):
        model.train_on_batch(x, y)
    warm = time.perf_counter() - t0
    times = []
    for _ in range(cfg["steps"]):
        t0 = time.perf_counter()
        loss = model.train_on_batch(x, y)  # returns host values: the step has finished
        times.append(time.perf_counter() - t0)
    print(json.dumps({"device": str(dev.device_kind), "params": count_params(model), "warm": warm,
                      "times": times, "peak_gib": peak(), "policy": model.dtype_policy.name,
                      "loss": float(np.asarray(loss).ravel()[0])}), flush=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--size", type=int, default=128, help="patch size (default %(default)s)")
    ap.add_argument("--base", type=int, default=16, help="base filters (default %(default)s)")
    ap.add_argument("--batches", type=int, nargs="+", default=[2, 4], help="batch sizes (default 2 4)")
    ap.add_argument("--precisions", nargs="+", default=["float32", "mixed_float16", "mixed_bfloat16"])
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps (XLA compilation; default %(default)s)")
    ap.add_argument("--steps", type=int, default=10, help="timed steps (default %(default)s)")
    ap.add_argument("--timeout", type=float, default=300, help="seconds per configuration (default %(default)s)")
    args = ap.parse_args(argv)
    if args.child:
        child(json.loads(args.child))
        return

    C.print_header("GPU training throughput and peak memory (JAX backend)",
                   modules=("numpy", "keras", "jax", "jaxlib"), extra={"KERAS_BACKEND (children)": "jax"})
    reason = gpu_or_reason()
    if reason:
        print(f"no GPU run: {reason}. Nothing measured.")
        return
    rows = []
    for batch in args.batches:
        for prec in args.precisions:
            cfg = dict(size=args.size, base=args.base, batch=batch, precision=prec, warmup=args.warmup,
                       steps=args.steps)
            env = dict(os.environ, KERAS_BACKEND="jax", XLA_PYTHON_CLIENT_PREALLOCATE="false",
                       TF_CPP_MIN_LOG_LEVEL="3")
            with tempfile.TemporaryFile(mode="w+") as errf:
                try:
                    out = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(cfg)],
                                         stdout=subprocess.PIPE, stderr=errf, text=True, env=env,
                                         timeout=args.timeout)
                    errf.seek(0)
                    err = errf.read()
                    lines = out.stdout.strip().splitlines()
                    res = json.loads(lines[-1]) if out.returncode == 0 and lines else None
                    status = "ok" if res else f"exit {out.returncode}: " + (
                        [ln for ln in err.splitlines() if ln.strip()][-1:] or ["?"])[0][:140]
                except subprocess.TimeoutExpired:
                    res, status = None, f"stopped after {args.timeout:.0f} s"
            if res:
                step = sum(res["times"]) / len(res["times"])
                rows.append([f"{args.size}^3", batch, res["policy"], res["device"], res["params"], res["warm"],
                             step * 1000, min(res["times"]) * 1000, batch / step, res["peak_gib"], status])
            else:
                rows.append([f"{args.size}^3", batch, prec, "-", "-", "-", "-", "-", "-", "-", status])
            print(f"done: batch {batch} {prec}: {status}", file=sys.stderr, flush=True)
    C.print_table(["patch", "batch", "policy", "device", "params", "warm-up s", "mean step ms", "best step ms",
                   "images/s", "peak GPU GiB", "status"], rows,
                  f"unet3d base {args.base} depth 4 instance norm, regions, dice+bce, Adam, XLA "
                  f"({args.warmup} warm-up + {args.steps} timed steps):")
    C.print_footer()


if __name__ == "__main__":
    main()
