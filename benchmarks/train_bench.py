"""Training step time and peak memory of the 3D U-Net: patch size, batch, base filters, float32 vs
mixed_bfloat16, and TensorFlow's oneDNN kernels off vs on.

Every configuration runs in a fresh Python subprocess, so the peak resident set size
(``resource.getrusage(RUSAGE_SELF).ru_maxrss``) of one does not mix with another's, and so
``TF_ENABLE_ONEDNN_OPTS`` can be set before TensorFlow is imported. Model:
``unet3d(in_channels=3, base_filters=B, depth=4, norm="instance", output="regions")``, Adam,
``get_loss("dice+bce", output="regions")``, ``jit_compile=False`` (what training uses on a CPU),
``train_on_batch`` on one random batch: warm-up steps (graph tracing) then timed steps.
Configurations that are compared run one after the other; a configuration that passes
``--timeout`` is stopped and reported with the steps it finished.

On a CPU without native bf16 (no AVX512-BF16 / AMX) mixed_bfloat16 is emulated and about 20x
slower; a 128^3 step takes many seconds even in float32. ``--quick`` keeps to 64^3 and base 16.

    python benchmarks/train_bench.py --quick
    python benchmarks/train_bench.py --sizes 128 --bases 16 --precisions float32
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


# ----------------------------------------------------------------------------- child process
def child(cfg: dict) -> None:
    """Run one configuration; print one JSON line per event on stdout."""
    os.environ["TF_ENABLE_ONEDNN_OPTS"] = cfg["onednn"]  # before TensorFlow is imported
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    import resource

    def emit(**kw):
        kw["rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        kw["load1"] = os.getloadavg()[0]
        print(json.dumps(kw), flush=True)

    t0 = time.perf_counter()
    import keras
    import numpy as np

    import brats_keras  # noqa: F401  (its setdefault must not override the value set above)
    from brats_keras.losses import get_loss
    from brats_keras.models import build_model, count_params

    onednn = None
    if keras.backend.backend() == "tensorflow":
        try:
            from tensorflow.python.util import _pywrap_util_port

            onednn = bool(_pywrap_util_port.IsMklEnabled())
        except ImportError:
            pass
    keras.mixed_precision.set_global_policy(cfg["precision"])
    keras.utils.set_random_seed(0)
    p, b = cfg["size"], cfg["batch"]
    name = cfg.get("model", "unet3d")  # other models (segresnet_bench.py) with their own default depth and norm
    layout = cfg.get("layout") or (dict(depth=4, norm="instance") if name == "unet3d" else {})
    model = build_model(name, in_channels=3, base_filters=cfg["base"], output="regions", **layout)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=get_loss("dice+bce", output="regions"),
                  jit_compile=False)
    rng = np.random.default_rng(0)
    shape = (b,) + (p,) * (len(model.inputs[0].shape) - 2) + (3,)  # a 2D model (unet2d_bench.py): (b, p, p, 3)
    x = rng.standard_normal(shape, dtype=np.float32)
    y = (rng.random(shape) < 0.1).astype(np.float32)
    emit(event="built", params=count_params(model), seconds=time.perf_counter() - t0,
         env=os.environ.get("TF_ENABLE_ONEDNN_OPTS"), onednn=onednn, policy=model.dtype_policy.name,
         backend=keras.backend.backend())
    for i in range(cfg["warmup"] + cfg["steps"]):
        t0 = time.perf_counter()
        loss = model.train_on_batch(x, y)
        emit(event="step", i=i, warmup=i < cfg["warmup"], seconds=time.perf_counter() - t0,
             loss=float(np.asarray(loss).ravel()[0]))
    emit(event="done")


# ----------------------------------------------------------------------------- parent
def run_config(cfg: dict, timeout: float, bar=None) -> dict:
    """Run one configuration in a subprocess; collect its events (partial when it times out)."""
    env = dict(os.environ)
    env["TF_ENABLE_ONEDNN_OPTS"] = cfg["onednn"]
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(cfg)]
    errf = tempfile.TemporaryFile(mode="w+")  # a file, not a pipe: a chatty child never blocks on it
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=errf, text=True, env=env)
    res = {"cfg": cfg, "built": None, "steps": [], "done": False, "timed_out": False, "error": None}
    start = time.monotonic()
    deadline = start + timeout
    res["last_event_at"] = 0.0

    import selectors

    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            res["timed_out"] = True
            res["unfinished_for"] = time.monotonic() - start - res["last_event_at"]
            proc.kill()
            break
        if not sel.select(timeout=min(left, 5)):
            if proc.poll() is not None:
                break
            continue
        line = proc.stdout.readline()
        if not line:
            break
        try:
            ev = json.loads(line)
        except ValueError:
            continue
        res["last_event_at"] = time.monotonic() - start
        if ev["event"] == "built":
            res["built"] = ev
        elif ev["event"] == "step":
            res["steps"].append(ev)
            if bar is not None:
                bar.set_postfix_str(f"step {ev['i'] + 1}: {ev['seconds']:.1f} s")
        elif ev["event"] == "done":
            res["done"] = True
    sel.close()
    try:
        proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
    errf.seek(0)
    err = errf.read()
    errf.close()
    if not res["done"] and not res["timed_out"]:
        tail = [ln for ln in (err or "").splitlines() if ln.strip()][-1:] or ["(no message)"]
        res["error"] = f"exit {proc.returncode}: {tail[0][:160]}"
    return res


def summarize(res: dict) -> dict:
    cfg, steps = res["cfg"], res["steps"]
    timed = [s["seconds"] for s in steps if not s["warmup"]]
    warm = [s["seconds"] for s in steps if s["warmup"]]
    last = steps[-1] if steps else res["built"] or {}
    if res["error"]:
        status = res["error"]
    elif res["timed_out"]:
        status = f"stopped at {res['timeout']:.0f} s after {len(warm)} warm-up + {len(timed)} timed step(s)"
    else:
        status = "ok"
    step = sum(timed) / len(timed) if timed else None
    note, warm_cell = None, warm[0] if warm else None
    if res["timed_out"] and res["built"] is not None and not timed:
        # the step running when it was stopped had taken at least this long
        running = f"> {res['unfinished_for']:.0f}"
        if len(warm) < cfg["warmup"]:
            warm_cell = running + " (unfinished)"
        else:
            note = running + " (unfinished)"
    return {
        "step": step, "step_note": note, "best": min(timed) if timed else None, "warm": warm_cell,
        "ips": cfg["batch"] / step if step else None, "rss_built": (res["built"] or {}).get("rss_mb"),
        "rss_peak": last.get("rss_mb"), "params": (res["built"] or {}).get("params"),
        "onednn": (res["built"] or {}).get("onednn"), "policy": (res["built"] or {}).get("policy"),
        "load": last.get("load1"), "status": status, "n_timed": len(timed),
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--quick", action="store_true", help="64^3 and base 16 only (minutes instead of hours on a CPU)")
    ap.add_argument("--sizes", type=int, nargs="+", default=None, help="patch sizes (default 128; --quick: 64)")
    ap.add_argument("--bases", type=int, nargs="+", default=None, help="base filters (default 16 32; --quick: 16)")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 2], help="batch sizes (default 1 2)")
    ap.add_argument("--precisions", nargs="+", default=["float32", "mixed_bfloat16"],
                    help="Keras dtype policies (default float32 mixed_bfloat16)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed steps first (default %(default)s)")
    ap.add_argument("--steps", type=int, default=2, help="timed steps (default %(default)s)")
    ap.add_argument("--timeout", type=float, default=600,
                    help="seconds per configuration before it is stopped (default %(default)s)")
    ap.add_argument("--onednn-size", type=int, default=64,
                    help="patch size of the oneDNN off/on comparison (float32, base 16, batch 1; default 64)")
    ap.add_argument("--no-onednn", action="store_true", help="skip the oneDNN off/on comparison")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    if args.child:
        child(json.loads(args.child))
        return
    sizes = args.sizes or ([64] if args.quick else [128])
    bases = args.bases or ([16] if args.quick else [16, 32])
    step_kw = dict(warmup=args.warmup, steps=args.steps)

    configs = []
    for size in sizes:
        for base in bases:
            for batch in args.batches:
                for prec in args.precisions:  # the precisions compared run back to back
                    configs.append(dict(group="precision", size=size, base=base, batch=batch, precision=prec,
                                        onednn=os.environ.get("TF_ENABLE_ONEDNN_OPTS", "1"), **step_kw))
    if not args.no_onednn:
        for flag in ("0", "1"):
            configs.append(dict(group="onednn", size=args.onednn_size, base=16, batch=1, precision="float32",
                                onednn=flag, **step_kw))

    bf16 = any(f in C.cpu_flags() for f in ("avx512_bf16", "amx_bf16"))
    C.print_header("training step time and peak memory, one subprocess per configuration",
                   modules=("numpy", "keras", "tensorflow"),
                   extra={"native bf16 on this CPU": "yes" if bf16 else "no (mixed_bfloat16 is emulated)",
                          "configurations": f"{len(configs)}, each {args.warmup} warm-up + {args.steps} timed "
                                            f"step(s), stopped after {args.timeout:.0f} s"})
    results = []
    bar = C.progress(len(configs), "configurations", not args.no_progress, "cfg")
    for cfg in configs:
        bar.set_description(f"{cfg['size']}^3 b{cfg['batch']} base{cfg['base']} {cfg['precision']} "
                            f"onednn={cfg['onednn']}")
        t0 = time.perf_counter()
        res = run_config(cfg, args.timeout, bar)
        res["timeout"] = args.timeout
        res["wall"] = time.perf_counter() - t0
        results.append(res)
        bar.update(1)
    bar.close()

    def row(res, extra):
        s = summarize(res)
        cfg = res["cfg"]
        return [f"{cfg['size']}^3", cfg["batch"], cfg["base"], *extra(cfg, s),
                s["params"] if s["params"] is not None else "-",
                s["warm"], s["step"] if s["step"] is not None else (s["step_note"] or "-"), s["best"], s["ips"],
                s["rss_built"], s["rss_peak"], s["load"], s["status"]]

    common = ["params", "warm-up s", "mean step s", "best step s", "patches/s", "RSS after build MB",
              "peak RSS MB", "load 1m", "status"]
    prec_rows = [row(r, lambda c, s: [s["policy"] or c["precision"]]) for r in results
                 if r["cfg"]["group"] == "precision"]
    if prec_rows:
        C.print_table(["patch", "batch", "base", "policy"] + common, prec_rows,
                      "float32 vs mixed_bfloat16 (TF_ENABLE_ONEDNN_OPTS as in the environment, default 1):")
        # side by side: bf16 / float32 step time for each (size, batch, base)
        by = {}
        for r in results:
            if r["cfg"]["group"] == "precision":
                c = r["cfg"]
                by.setdefault((c["size"], c["batch"], c["base"]), {})[c["precision"]] = summarize(r)
        side = []
        for (size, batch, base), d in by.items():
            f32, b16 = d.get("float32"), d.get("mixed_bfloat16")
            if f32 and b16:
                side.append([f"{size}^3", batch, base, f32["step"], b16["step"] or b16["step_note"] or "-",
                             C.ratio(b16["step"], f32["step"]), f32["rss_peak"], b16["rss_peak"]])
        if side:
            C.print_table(["patch", "batch", "base", "float32 step s", "bf16 step s", "bf16 / float32",
                           "float32 peak MB", "bf16 peak MB"], side, "side by side:")
    dnn = [r for r in results if r["cfg"]["group"] == "onednn"]
    if dnn:
        C.print_table(["patch", "batch", "base", "TF_ENABLE_ONEDNN_OPTS", "oneDNN on (TF)"] + common,
                      [row(r, lambda c, s: [c["onednn"], s["onednn"] if s["onednn"] is not None else "?"])
                       for r in dnn], "oneDNN off vs on (float32):")
        s0, s1 = summarize(dnn[0]), summarize(dnn[-1])
        print(f"oneDNN speed-up (off step / on step, same run): {C.fmt(C.ratio(s0['step'], s1['step']))}x")
    C.print_footer()


if __name__ == "__main__":
    main()
