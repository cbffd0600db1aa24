"""Training steps per second with 1 and 2 worker processes on this machine (CPU, localhost), for one engine.

Both counts run in the same invocation, one after the other, on the same small synthetic conversion:
1 worker is a plain ``brats-keras train``; 2 workers are two ``brats-keras train --distribute`` processes
on localhost (TensorFlow: ``TF_CONFIG``; JAX: ``KERAS_DISTRIBUTION_*``). The global batch is the same in
both (``--batch-size``), so 2 workers each compute half of it; on a 2-core CPU the two processes share the
same 2 cores, so this measures the cost of the protocol, not a speed-up. Steps per second = the chief's
training steps / the seconds ``train`` reports for its epochs (validation included, start-up excluded).

    python benchmarks/multiworker_bench.py                      # TensorFlow
    KERAS_BACKEND=jax python benchmarks/multiworker_bench.py    # JAX
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

from brats_keras.distributed import free_ports  # noqa: E402


def run(workers: int, data: Path, out: Path, args, backend: str) -> dict:
    """Train with ``workers`` processes; return the chief's seconds and steps per second."""
    base = [sys.executable, "-m", "brats_keras.cli", "train", "--data", str(data), "--base-filters",
            str(args.base), "--depth", str(args.depth), "--norm", "instance", "--patch-size", str(args.patch),
            "--batch-size", str(args.batch), "--epochs", str(args.epochs), "--steps-per-epoch", str(args.steps),
            "--val-steps", "1", "--val", "2", "--mixed-precision", "off", "--no-tensorboard"]
    env = dict(os.environ, KERAS_BACKEND=backend, PYTHONPATH=str(C.REPO), TF_CPP_MIN_LOG_LEVEL="3",
               JAX_PLATFORMS="cpu", CUDA_VISIBLE_DEVICES="")
    env.pop("TF_CONFIG", None)
    ports = free_ports(workers)
    procs = []
    for k in range(workers):
        e = dict(env)
        cmd = base + ["--out", str(out / f"w{workers}_{k}")]
        if workers > 1:
            cmd.append("--distribute")
            if backend == "tensorflow":
                e["TF_CONFIG"] = json.dumps({"cluster": {"worker": [f"localhost:{p}" for p in ports]},
                                             "task": {"type": "worker", "index": k}})
            else:
                e.update(KERAS_DISTRIBUTION_JOB_ADDRESSES=f"localhost:{ports[0]}",
                         KERAS_DISTRIBUTION_NUM_PROCESSES=str(workers), KERAS_DISTRIBUTION_PROCESS_ID=str(k))
        procs.append(subprocess.Popen(cmd, env=e, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    try:  # a worker that fails or hangs leaves the others waiting in an all-reduce: never leave them running
        texts = [p.communicate(timeout=args.timeout)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    found = re.search(r"\((\d+(?:\.\d+)?) s\)", texts[0])
    failed = [k for k, p in enumerate(procs) if p.returncode != 0]
    if failed or not found:
        k = failed[0] if failed else 0
        raise SystemExit(f"{workers} worker(s): worker {k} failed:\n" + texts[k][-3000:])
    seconds = float(found.group(1))
    steps = args.epochs * args.steps
    return {"seconds": seconds, "steps_per_s": steps / seconds if seconds else float("nan")}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", type=int, default=6)
    p.add_argument("--base", type=int, default=8)
    p.add_argument("--depth", type=int, default=3)
    p.add_argument("--patch", type=int, default=32)
    p.add_argument("--batch", type=int, default=2, help="global batch (each of 2 workers computes half)")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--timeout", type=int, default=1200)
    args = p.parse_args(argv)
    backend = os.environ.get("KERAS_BACKEND", "tensorflow")
    C.print_header(f"Multi-worker training on localhost ({backend}, CPU)", modules=("numpy", "keras", backend))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        sys.path.insert(0, str(C.REPO))
        from brats_keras.convert import convert_folder
        from brats_keras.synthetic import make_dataset

        make_dataset(tmp / "src", args.cases, shape=(96, 96, 64), progress=False)
        convert_folder(tmp / "src", tmp / "conv", crop="brain", scale="zscore", workers=1, progress=False)
        rows = []
        for workers in (1, 2):
            t = time.time()
            res = run(workers, tmp / "conv", tmp, args, backend)
            rows.append([workers, args.batch, args.batch // workers, args.epochs * args.steps, res["seconds"],
                         res["steps_per_s"], time.time() - t, C.load1()])
    C.print_table(["workers", "global batch", "batch per worker", "steps", "train s", "steps/s",
                   "wall s (with start-up)", "load"], rows,
                  title=f"unet3d base {args.base} depth {args.depth}, {args.patch}^3 patches, float32, instance norm")
    C.print_footer()
    return 0


if __name__ == "__main__":
    sys.exit(main())
