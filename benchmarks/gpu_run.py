"""The one command for a lent GPU machine: measure, then train, writing every result as soon as it exists.

A GPU is lent to this project rarely and for 15 minutes, start-up included, on a machine with JAX but
no TensorFlow or Keras (``benchmarks/gpu_run.sh`` installs the carried wheels and calls this). The run
is one call with a time budget; its steps run in order, each time-boxed, and each rewrites
``OUT/results.json`` when it finishes, so a stop at any point still returns what was measured:

1. ``env``: GPU name, driver, memory, Python / JAX / Keras / numpy versions.
2. ``throughput``: training images per second and peak GPU memory of ``unet3d`` (base 16 and 32) at
   128^3, batch 2 and 4, float32 / mixed_float16 / mixed_bfloat16. One child process per
   configuration (so each peak is its own); children compile in parallel and take turns for the
   timed steps (a file lock), so XLA compilation on 16 cores does not eat the budget one at a time.
3. ``max_batch``: the largest batch that trains at 128^3 (base 16, mixed_float16), growing until a
   child fails or runs out of its time box.
4. ``inference``: whole-case prediction of the packed validation cases with the shipped model,
   without and with mirroring TTA (seconds per case after the first call, and Dice at 1 mm).
5. ``train``: with the time left, ``brats_keras.training.train`` on the packed training cases with
   a larger recipe than the CPU can run (``GPU_RECIPE``); the weights come back in float16 parts of
   at most 15 MiB (``weights-K.npz``) with the run's config, preprocessing and log in results.json,
   and the validation cases are scored with the trained model.

Data travels packed (``--pack``): real cases converted as the shipped model expects (4 modalities,
brain crop, z-score, 2 mm), images quantized to int8 steps of 1/16 and compressed, plus each case's
1 mm label map in its crop box for scoring. Everything here is rehearsed on the CPU by ``--dry-run``
(tiny sizes, JAX on the CPU; ``tests/test_gpu_run.py`` runs it in CI).

    python benchmarks/gpu_run.py --pack --real ../shared/data/brats-real ../shared/data/brats-extra \\
        --fold 0 --to .gpu/pack                                              # here, before the call
    python benchmarks/gpu_run.py --check-trip      # here: the tree, .whl and .gpu fit in one call's 64 MiB?
    bash benchmarks/gpu_run.sh                                               # there (OUT is set)
    python benchmarks/gpu_run.py --import-weights DIR --to runs/gpu/model.keras   # here, afterwards
"""
from __future__ import annotations

import argparse
import datetime
import fcntl
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

#: int8 step of the packed z-scored images (values beyond +-127/16 = 7.9 standard deviations are clipped)
QUANT = 16.0
#: the largest file that may come back from the GPU machine is 16 MiB; weights are split below this
PART_BYTES = 15 * 2**20
#: what the GPU trains with the time left: the shipped recipe, twice as wide, larger patches and batch
GPU_RECIPE = dict(model="unet3d", base_filters=32, depth=4, norm="batch", output="regions", loss="dice+bce",
                  patch_size=80, batch_size=4, epochs=1000, steps_per_epoch=25, val_steps=2, lr=1e-3,
                  lr_schedule="poly", spatial_augment=0.2, foreground_ratio=0.33, whole_case_every=0,
                  mixed_precision="auto", jit_compile="auto", workers=8)
#: the same steps at sizes a CPU runs in a minute or two
#: the dry run's sizes: each step's code path at the least cost (one epoch of two steps; one 16^3 window)
DRY = dict(size=16, bases=[4], batches=[1], warmup=1, steps=2, max_batches=[2],
           train=dict(base_filters=4, depth=2, patch_size=16, batch_size=2, epochs=1, steps_per_epoch=2,
                      val_steps=1, workers=1), model_base=4, inference_patch=16)
FULL = dict(size=128, bases=[16, 32], batches=[2, 4], warmup=3, steps=10,
            max_batches=[8, 12, 16, 24, 32, 48, 64], train={}, model_base=None, inference_patch=None)
PRECISIONS = ["float32", "mixed_float16", "mixed_bfloat16"]
#: seconds each step may take at most (the budget may cut them shorter); train takes what is left
BOXES = {"env": 60, "throughput": 240, "max_batch": 90, "inference": 90}


# ============================================================================ packing (here, on the CPU)
def fold_split(fold: int) -> dict:
    """``{"val": [...]}``: the cases fold ``fold`` of the shipped ensemble held out, as its ``ensemble.json``
    records them (the cases it can be scored on unseen). ValueError when no shipped model is that fold."""
    from brats_keras.ensemble_record import read_record
    from brats_keras.pretrained import HERE

    for entry in read_record(HERE)["models"].values():
        if entry.get("fold") == fold:
            return {"val": list(entry["val"])}
    raise ValueError(f"{HERE / 'ensemble.json'}: no shipped model is fold {fold}")


def pack(roots, split_file, to, limit_mib: float = 36.0) -> dict:
    """Convert the cases under ``roots`` the shipped model's way and pack them small into ``to``.

    Writes ``to/<case>.npz`` (``image`` int8 ``(d, h, w, 4)`` = round(16 * z), ``mask`` uint8 classes at
    2 mm, ``truth`` uint8 classes at 1 mm inside the crop box) and ``to/pack.json`` (conversion
    settings, per-case crop box and shapes, the split). ``split_file``: a split JSON file or such a dict
    (:func:`fold_split`); its ``val`` cases are scored, the rest but ``test`` train. Raises ValueError when the pack exceeds
    ``limit_mib``; whether it travels beside the working tree and the wheels is :func:`check_trip`'s answer.
    """
    from brats_keras import io as bio
    from brats_keras.convert import convert_folder
    from brats_keras.preprocessing import box_slices

    split = split_file if isinstance(split_file, dict) else json.loads(Path(split_file).read_text())
    to = Path(to)
    to.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "in"
        src.mkdir()
        cases = {}
        for root in roots:
            for case in bio.find_cases(root, require_seg=True):
                cases.setdefault(case.case_id, case)
                (src / case.case_id).symlink_to(Path(case.folder).resolve())
        manifest = convert_folder(src, Path(tmp) / "conv", modalities="flair,t1,t1ce,t2", crop="brain",
                                  scale="zscore", downsample=2, workers=1, progress=False)
        if manifest["failed"]:
            raise ValueError(f"cases failed to convert: {manifest['failed']}")
        meta = {"settings": manifest["settings"], "quant": QUANT, "cases": {}}
        for cid, entry in sorted(manifest["cases"].items()):
            image = np.load(Path(tmp) / "conv" / entry["image"]).astype(np.float32)
            mask = np.load(Path(tmp) / "conv" / entry["mask"])
            box = tuple(tuple(p) for p in entry["crop_box"])
            truth = bio.load_classes(cases[cid].seg)[box_slices(box)]
            q = np.clip(np.round(image * QUANT), -127, 127).astype(np.int8)
            np.savez_compressed(to / f"{cid}.npz", image=q, mask=mask, truth=truth)
            meta["cases"][cid] = {"crop_box": entry["crop_box"], "shape": entry["shape"],
                                  "truth_shape": list(truth.shape)}
    ids = set(meta["cases"])
    meta["split"] = {"val": sorted(ids & set(split.get("val", []))),
                     "train": sorted(ids - set(split.get("val", [])) - set(split.get("test", [])))}
    (to / "pack.json").write_text(json.dumps(meta, indent=1))
    size = sum(p.stat().st_size for p in to.iterdir()) / 2**20
    meta["size_mib"] = round(size, 2)
    if size > limit_mib:
        raise ValueError(f"{to}: the pack is {size:.1f} MiB, over the {limit_mib} MiB that may travel beside the code")
    return meta


#: what one device call may carry: the working tree git does not ignore plus the carried folders (device README)
TRIP_MIB = 64.0
#: the ignored folders the GPU call carries (benchmarks/gpu_run.sh: carry=[".whl", ".gpu"])
CARRY = (".whl", ".gpu")
#: where shipped fold files wait during the call (git-ignored, not carried)
ASIDE = ".gpu-aside"


def trip_sizes(repo=None, carry=CARRY) -> dict:
    """``{path: bytes}`` of what a device call carries from ``repo``: the files git does not ignore (tracked or
    not; a tracked file moved away does not travel) and the files under the ``carry`` folders."""
    repo = Path(repo or REPO)
    done = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=repo,
                          capture_output=True)
    if done.returncode != 0:  # what travels is what git does not ignore: only a checkout can say
        raise ValueError(f"{repo}: not a git checkout, so what a device call carries from it is unknown "
                         f"(git ls-files: {done.stderr.decode().strip().splitlines()[-1] if done.stderr else 'failed'})")
    listed = done.stdout.decode().split("\0")
    sizes = {}
    for name in listed:
        path = repo / name
        if name and path.is_file() and not path.is_symlink():
            sizes[name] = path.stat().st_size
    for folder in carry:
        for path in sorted((repo / folder).rglob("*")):
            if path.is_file() and not path.is_symlink():
                sizes[str(path.relative_to(repo))] = path.stat().st_size
    return sizes


def check_trip(repo=None, carry=CARRY, limit_mib: float | None = None) -> float:
    """MiB that a device call carries from ``repo``; ValueError in one line when that is over ``limit_mib``,
    naming the shipped fold files to move aside for the call: all but the one network the GPU run loads (the
    file ``load_pretrained`` gives: ``model.keras``, else ``fold-0.keras``)."""
    limit_mib = TRIP_MIB if limit_mib is None else limit_mib
    sizes = trip_sizes(repo, carry)
    total = sum(sizes.values()) / 2**20
    if total <= limit_mib:
        return total
    parts = [f"{folder} {sum(v for k, v in sizes.items() if k.startswith(folder + '/')) / 2**20:.1f}"
             for folder in carry]
    tree = sum(v for k, v in sizes.items() if not any(k.startswith(f + "/") for f in carry)) / 2**20
    folds = sorted(k for k in sizes if k.startswith("brats_keras/pretrained/fold-") and k.endswith(".keras"))
    move = folds if "brats_keras/pretrained/model.keras" in sizes else folds[1:]
    head = (f"a device call would carry {total:.1f} MiB (working tree {tree:.1f}, {', '.join(parts)}), over its "
            f"{limit_mib:g} MiB")
    if not move or total - sum(sizes[k] for k in move) / 2**20 > limit_mib:
        largest = ", ".join(f"{k} ({sizes[k] / 2**20:.1f})" for k in sorted(sizes, key=lambda k: -sizes[k])[:3])
        raise ValueError(f"{head}: carry less (largest: {largest})")
    raise ValueError(f"{head}: move {' '.join(move)} aside for the call (the GPU run loads one network): "
                     f"mkdir -p {ASIDE} && mv {' '.join(move)} {ASIDE}/; afterwards "
                     f"mv {ASIDE}/*.keras brats_keras/pretrained/")


def read_pack(folder) -> tuple[dict, dict]:
    """``(meta, arrays)`` of a pack: arrays[case] = {"image": float32 (d,h,w,4), "mask", "truth"}."""
    folder = Path(folder)
    meta = json.loads((folder / "pack.json").read_text())
    arrays = {}
    for cid in meta["cases"]:
        with np.load(folder / f"{cid}.npz") as z:
            arrays[cid] = {"image": z["image"].astype(np.float32) / meta["quant"], "mask": z["mask"],
                           "truth": z["truth"]}
    return meta, arrays


def unpack_to_conversion(meta, arrays, out) -> Path:
    """Write the pack as a conversion folder (``images/``, ``masks/``, ``manifest.json``) for ``train``."""
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    cases = {}
    for cid, a in arrays.items():
        np.save(out / "images" / f"{cid}.npy", a["image"].astype(np.float16))
        np.save(out / "masks" / f"{cid}.npy", a["mask"])
        cases[cid] = {"status": "ok", "image": f"images/{cid}.npy", "mask": f"masks/{cid}.npy",
                      "shape": list(a["image"].shape), "crop_box": meta["cases"][cid]["crop_box"], "seg": None}
    manifest = {"settings": meta["settings"], "cases": cases, "failed": {}, "dropped": {}}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return out


# ============================================================================ weights that travel back
def save_weight_parts(model, out, prefix="weights", part_bytes=PART_BYTES) -> list[str]:
    """Write the model's weights as float16 ``.npz`` parts of at most ``part_bytes`` each; return the names."""
    out = Path(out)
    parts, current, size = [], {}, 0
    for i, w in enumerate(model.get_weights()):
        a = np.asarray(w).astype(np.float16)
        if a.nbytes > part_bytes:
            raise ValueError(f"weight {i} alone is {a.nbytes} bytes, over a part's {part_bytes}")
        if current and size + a.nbytes > part_bytes:
            parts.append(current)
            current, size = {}, 0
        current[f"w{i:04d}"] = a
        size += a.nbytes
    if current:
        parts.append(current)
    names = []
    for k, part in enumerate(parts):
        name = f"{prefix}-{k}.npz"
        np.savez(out / name, **part)
        names.append(name)
    return names


def load_weight_parts(files) -> list[np.ndarray]:
    """The float32 weights of :func:`save_weight_parts`' files, in model order."""
    weights = {}
    for f in files:
        with np.load(f) as z:
            weights.update({k: z[k].astype(np.float32) for k in z.files})
    return [weights[k] for k in sorted(weights)]


def fingerprint(model, channels: int, size: int = 32) -> list[float]:
    """Mean probability per output channel on a fixed random input: the same model gives the same numbers."""
    x = np.random.default_rng(11).standard_normal((1, size, size, size, channels)).astype(np.float32)
    return [float(v) for v in np.asarray(model.predict_on_batch(x), np.float32).mean(axis=(0, 1, 2, 3))]


def import_weights(folder, to) -> dict:
    """Rebuild the model trained on the GPU from ``folder`` (results.json + weights-K.npz) into a ``.keras``."""
    import brats_keras  # noqa: F401
    from brats_keras.checkpoint import save_model
    from brats_keras.training import TrainConfig, build_from_config

    folder = Path(folder)
    res = json.loads((folder / "results.json").read_text())["steps"]["train"]
    if res.get("status") != "ok":
        raise ValueError(f"{folder}/results.json: the training step did not finish ({res.get('status')})")
    cfg = TrainConfig.from_dict(res["config"])
    model = build_from_config(cfg, len(res["info"]["modalities"]))
    model.set_weights(load_weight_parts([folder / n for n in res["weights"]]))
    save_model(model, to, res["info"], include_optimizer=False)
    got = fingerprint(model, len(res["info"]["modalities"]))
    return {"model": str(to), "fingerprint": got, "fingerprint_gpu": res["fingerprint"]}


# ============================================================================ the steps (there)
def gpu_devices():
    import jax

    return [d for d in jax.devices() if d.platform == "gpu"]


def step_env(ctx, box):
    import jax
    import keras

    info = {"python": platform.python_version(), "jax": jax.__version__, "keras": keras.__version__,
            "numpy": np.__version__, "backend": keras.backend.backend(),
            "devices": [f"{d.platform}:{d.device_kind}" for d in jax.devices()], "cpu_count": os.cpu_count()}
    try:
        import jaxlib

        info["jaxlib"] = jaxlib.__version__
    except ImportError:
        pass
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.sm",
                              "--format=csv,noheader"], capture_output=True, text=True, timeout=min(30, box))
        info["nvidia_smi"] = out.stdout.strip() or out.stderr.strip()[:200]
    except (OSError, subprocess.SubprocessError) as exc:
        info["nvidia_smi"] = f"not available ({type(exc).__name__})"
    return info


def _child_train_speed(cfg):
    """In a child process: build, compile (warm-up steps), then time steps while holding the lock."""
    import brats_keras  # noqa: F401
    import keras

    from brats_keras.training import TrainConfig, build_from_config, compile_model

    keras.mixed_precision.set_global_policy(cfg["precision"])
    keras.utils.set_random_seed(0)
    tc = TrainConfig(base_filters=cfg["base"], depth=4 if cfg["size"] >= 64 else 2, norm="batch",
                     output="regions", loss="dice+bce", jit_compile="auto")
    model = compile_model(build_from_config(tc, 4), tc, cfg["precision"])
    rng = np.random.default_rng(0)
    b, p = cfg["batch"], cfg["size"]
    x = rng.standard_normal((b, p, p, p, 4), dtype=np.float32)
    y = (rng.random((b, p, p, p, 3)) < 0.1).astype(np.float32)
    t0 = time.perf_counter()
    for _ in range(cfg["warmup"]):
        model.train_on_batch(x, y)
    warm = time.perf_counter() - t0
    with open(cfg["lock"], "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        times = []
        for _ in range(cfg["steps"]):
            t0 = time.perf_counter()
            loss = model.train_on_batch(x, y)  # returns host values: the step has finished
            times.append(time.perf_counter() - t0)
        fcntl.flock(lock, fcntl.LOCK_UN)
    devs = gpu_devices()
    stats = (devs[0].memory_stats() or {}) if devs else {}
    peak = stats.get("peak_bytes_in_use")
    from brats_keras.models import count_params

    return {"params": count_params(model), "warm_s": round(warm, 2), "step_ms": round(1000 * np.mean(times), 2),
            "best_step_ms": round(1000 * min(times), 2), "images_per_s": round(b / np.mean(times), 2),
            "peak_gib": None if peak is None else round(peak / 2**30, 3), "loss": float(np.ravel(loss)[0]),
            "policy": model.dtype_policy.name}


def _run_children(cfgs, box, parallel, lock):
    """Run child configurations, ``parallel`` at a time, within ``box`` seconds; return their results."""
    deadline = time.time() + box
    env = dict(os.environ, XLA_PYTHON_CLIENT_PREALLOCATE="false", TF_CPP_MIN_LOG_LEVEL="3")
    pending, running, done = list(cfgs), [], []
    while pending or running:
        while pending and len(running) < parallel and time.time() < deadline:
            cfg = dict(pending.pop(0), lock=str(lock))
            errf = tempfile.TemporaryFile(mode="w+")
            proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(cfg)],
                                    stdout=subprocess.PIPE, stderr=errf, text=True, env=env)
            running.append((cfg, proc, errf))
        if not running:
            break
        time.sleep(0.2)
        for item in list(running):
            cfg, proc, errf = item
            over = time.time() > deadline
            if proc.poll() is None and not over:
                continue
            if proc.poll() is None:
                proc.kill()
            out = proc.stdout.read() if proc.stdout else ""
            proc.wait()
            errf.seek(0)
            err = errf.read()
            errf.close()
            running.remove(item)
            row = {k: cfg[k] for k in ("size", "base", "batch", "precision")}
            lines = out.strip().splitlines()
            if proc.returncode == 0 and lines:
                row.update(json.loads(lines[-1]), status="ok")
            elif over:
                row["status"] = f"stopped at the step's {box:.0f} s time box"
            else:
                last = [ln for ln in err.splitlines() if ln.strip()][-1:] or ["?"]
                row["status"] = f"exit {proc.returncode}: {last[0][:200]}"
            done.append(row)
            print(f"  {row}", flush=True)
        if time.time() > deadline and not running:
            break
    for cfg in pending:
        done.append({**{k: cfg[k] for k in ("size", "base", "batch", "precision")}, "status": "not started: no time"})
    return done


def step_throughput(ctx, box):
    s = ctx["sizes"]
    cfgs = [dict(size=s["size"], base=b, batch=n, precision=p, warmup=s["warmup"], steps=s["steps"])
            for b in s["bases"] for n in s["batches"] for p in PRECISIONS]
    return {"rows": _run_children(cfgs, box, parallel=3, lock=ctx["lock"])}


def step_max_batch(ctx, box):
    s = ctx["sizes"]
    deadline = time.time() + box
    rows, largest = [], None
    for n in s["max_batches"]:
        left = deadline - time.time()
        if left < 5:
            break
        row = _run_children([dict(size=s["size"], base=s["bases"][0], batch=n, precision="mixed_float16",
                                  warmup=1, steps=2)], left, parallel=1, lock=ctx["lock"])[0]
        rows.append(row)
        if row["status"] != "ok":
            break
        largest = n
    return {"largest_batch": largest, "size": s["size"], "base": s["bases"][0], "precision": "mixed_float16",
            "rows": rows}


def _score(pred_classes, truth):
    from brats_keras.evaluation import score_case

    sc = score_case(pred_classes, truth, report=False)
    return {r: {"dice": round(sc[r]["dice"], 4), "hd95": round(sc[r]["hd95"], 2)} for r in ("WT", "TC", "ET")}


def _predict_packed(predictor, a, meta_case, factor, tta):
    from brats_keras.labels import regions_to_classes
    from brats_keras.preprocessing import upsample_probs

    predictor.tta = tta
    t0 = time.perf_counter()
    probs = predictor.predict_image(a["image"])
    probs = upsample_probs(probs, a["truth"].shape, factor) if factor > 1 else probs
    classes = regions_to_classes(probs)
    return classes, time.perf_counter() - t0


def _mean_scores(per_case):
    return {r: {k: round(float(np.mean([c[r][k] for c in per_case.values()])), 4) for k in ("dice", "hd95")}
            for r in ("WT", "TC", "ET")} if per_case else {}


def _unseen_cases(ids, packed, model_file) -> list:
    """The packed cases to score the shipped network on: ``ids`` (the pack's val cases) for a single ``model.keras``;
    for a fold of a shipped ensemble the ``packed`` cases that its model card says that fold held out (the pack's
    val cases are those of the fold chosen when packing, ``--fold``, mostly training cases of the other folds)."""
    from brats_keras.pretrained import card_file_fold, model_card

    card = model_card()
    if card.get("kind") != "fold ensemble":
        return list(ids)
    try:
        fold = card_file_fold(card, model_file)
    except KeyError as exc:
        raise ValueError(exc.args[0]) from None
    return sorted(set(card["data"]["folds"][str(fold)]) & set(packed))


def step_inference(ctx, box):
    import keras

    from brats_keras.checkpoint import read_info
    from brats_keras.inference import Predictor
    from brats_keras.pretrained import pretrained_path

    deadline = time.time() + box
    meta, arrays = ctx["pack"]
    info = read_info(pretrained_path())  # model.keras, or fold 0 of a shipped ensemble (what load_pretrained gives)
    if ctx["dry"]:  # a tiny model with the shipped model's preprocessing: the code path, not the weights
        from brats_keras.models import build_model

        model = build_model("unet3d", in_channels=4, output="regions", base_filters=ctx["sizes"]["model_base"],
                            depth=2, norm="batch")
        p = ctx["sizes"]["inference_patch"]
        info = {**info, "patch_size": p}
        # one window per pass: JAX's CPU convolutions make 8 mirrored passes over a whole case slow
        arrays = {cid: {"image": a["image"][:p, :p, :p], "truth": a["truth"][:2 * p, :2 * p, :2 * p]}
                  for cid, a in arrays.items()}
    else:
        from brats_keras.checkpoint import load_pretrained

        model = load_pretrained()
    keras.mixed_precision.set_global_policy("float32")
    predictor = Predictor(model, info=info, batch_size=2)
    factor = predictor.spec.downsample
    ids = meta["split"]["val"] or sorted(arrays)[:1]
    if not ctx["dry"]:  # cases the network never trained on
        ids = _unseen_cases(ids, arrays, pretrained_path())
    first = (ids or sorted(arrays))[0]
    _predict_packed(predictor, arrays[first], meta["cases"][first], factor, tta=False)  # compile
    out = {"model": "tiny (dry run)" if ctx["dry"] else "shipped", "patch_size": predictor.patch, "cases": {}}
    for tta in (False, True):
        key = "tta" if tta else "plain"
        scores, seconds = {}, []
        for cid in ids:
            if time.time() > deadline:
                break
            classes, sec = _predict_packed(predictor, arrays[cid], meta["cases"][cid], factor, tta)
            seconds.append(sec)
            scores[cid] = _score(classes, arrays[cid]["truth"])
        out[key] = {"seconds_per_case": round(float(np.mean(seconds)), 3) if seconds else None,
                    "cases": len(seconds), "mean": _mean_scores(scores), "per_case": scores}
    return out


def step_train(ctx, box):
    import keras

    from brats_keras.inference import Predictor
    from brats_keras.training import TrainConfig, build_from_config, train

    meta, arrays = ctx["pack"]
    t_start = time.time()
    data = unpack_to_conversion(meta, arrays, Path(ctx["work"]) / "conv")
    split = Path(ctx["work"]) / "split.json"
    split.write_text(json.dumps({"train": meta["split"]["train"], "val": meta["split"]["val"], "test": []}))
    settings = dict(GPU_RECIPE, **ctx["sizes"]["train"])
    reserve = 40 if not ctx["dry"] else 5  # export and scoring after training
    minutes = max(0.05, (box - reserve - (time.time() - t_start)) / 60)
    cfg = TrainConfig(data=str(data), out=str(Path(ctx["work"]) / "run"), split_file=str(split),
                      time_limit=minutes, verbose=2, **settings)
    res = train(cfg)
    policy = keras.mixed_precision.global_policy().name
    info = json.loads(json.dumps(_info_of(res["last"])))
    channels = len(info["modalities"])
    # what comes back and is scored: the weights in float16, in a float32 copy of the network (a
    # mixed-precision body would compute the fingerprint and the scores in float16 or bfloat16)
    keras.mixed_precision.set_global_policy("float32")
    model = build_from_config(cfg, channels)
    model.set_weights([np.asarray(w).astype(np.float16).astype(np.float32) for w in res["model"].get_weights()])
    names = save_weight_parts(model, ctx["out"])
    out = {"config": {k: v for k, v in vars(cfg).items()}, "info": info, "weights": names,
           "fingerprint": fingerprint(model, channels), "log": res["history"],
           "train_seconds": round(res["seconds"], 1), "steps": len(res["history"]) * cfg.steps_per_epoch,
           "policy": policy}
    ctx["save_partial"](out)
    predictor = Predictor(model, info=info, batch_size=2)
    scores = {}
    for cid in meta["split"]["val"]:
        classes, _ = _predict_packed(predictor, arrays[cid], meta["cases"][cid], predictor.spec.downsample,
                                     tta=False)
        scores[cid] = _score(classes, arrays[cid]["truth"])
    out["validation"] = {"mean": _mean_scores(scores), "per_case": scores}
    return out


def _info_of(model_file):
    from brats_keras.checkpoint import read_info

    return read_info(model_file)


STEPS = {"env": step_env, "throughput": step_throughput, "max_batch": step_max_batch,
         "inference": step_inference, "train": step_train}


def run(out, data, budget_s: float, dry: bool, only=None) -> dict:
    """Run the steps in order within ``budget_s`` seconds, rewriting ``out/results.json`` after each."""
    import brats_keras  # noqa: F401  (before keras)

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    results = {"started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
               "dry_run": dry, "budget_s": budget_s, "steps": {}}

    def save():
        tmp = out / ".results.json.tmp"
        tmp.write_text(json.dumps(results, indent=1, default=str))
        os.replace(tmp, out / "results.json")

    work = Path(tempfile.mkdtemp(prefix="gpu_run_"))
    ctx = {"dry": dry, "sizes": DRY if dry else FULL, "out": out, "work": work, "lock": work / "timing.lock",
           "pack": read_pack(data)}
    for name, fn in STEPS.items():
        if only and name not in only:
            continue
        left = budget_s - (time.time() - t0)
        box = left if name == "train" else min(BOXES[name], left - 30)
        if box < (3 if dry else 20):
            results["steps"][name] = {"status": f"skipped: {left:.0f} s of the budget left"}
            save()
            continue
        print(f"== {name} (time box {box:.0f} s, {left:.0f} s of the budget left)", flush=True)
        started = time.time()

        def save_partial(partial, _name=name):
            results["steps"][_name] = {"status": "partial", **partial}
            save()

        ctx["save_partial"] = save_partial
        try:
            res = fn(ctx, box)
            results["steps"][name] = {"status": "ok", **res}
        except Exception as exc:  # one failing step must not cost the others
            traceback.print_exc()
            prev = results["steps"].get(name, {})
            results["steps"][name] = {**prev, "status": f"failed: {type(exc).__name__}: {str(exc)[:300]}"}
        results["steps"][name]["seconds"] = round(time.time() - started, 1)
        save()
    results["seconds"] = round(time.time() - t0, 1)
    save()
    shutil.rmtree(work, ignore_errors=True)
    return results


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", help="folder for results.json and the weights (on the GPU machine: $OUT)")
    ap.add_argument("--data", default=str(REPO / ".gpu" / "pack"), help="the pack (default: .gpu/pack)")
    ap.add_argument("--budget-s", type=float, default=480, help="seconds for all steps (default %(default)s)")
    ap.add_argument("--dry-run", action="store_true", help="tiny sizes on any device: the CPU rehearsal")
    ap.add_argument("--only", nargs="+", choices=list(STEPS), help="run only these steps")
    ap.add_argument("--pack", action="store_true",
                    help="pack real cases for the trip (see --real, --fold or --split, --to)")
    ap.add_argument("--real", nargs="+", help="folders of labelled BraTS cases to pack")
    ap.add_argument("--fold", type=int, default=0,
                    help="score the cases this fold of the shipped ensemble held out (its ensemble.json; "
                         "default %(default)s)")
    ap.add_argument("--split", help="a split file whose val cases are scored, instead of --fold")
    ap.add_argument("--limit-mib", type=float, default=36.0, help="largest pack allowed (default %(default)s)")
    ap.add_argument("--check-trip", action="store_true",
                    help=f"whether the working tree, {' and '.join(CARRY)} fit in one device call ({TRIP_MIB:g} MiB; "
                         "--pack checks it too)")
    ap.add_argument("--import-weights", metavar="DIR", help="rebuild the GPU-trained model from DIR (see --to)")
    ap.add_argument("--to", help="--pack: the pack folder; --import-weights: the .keras file to write")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(_child_train_speed(json.loads(args.child))), flush=True)
        return 0
    if args.pack:
        if not args.real or not args.to:
            ap.error("--pack needs --real FOLDER... and --to FOLDER")
        meta = pack(args.real, args.split or fold_split(args.fold), args.to, args.limit_mib)
        print(f"packed {len(meta['cases'])} cases ({len(meta['split']['train'])} train, "
              f"{len(meta['split']['val'])} val) into {args.to}: {meta['size_mib']} MiB")
        args.check_trip = True
    if args.check_trip:
        try:
            print(f"a device call carries {check_trip():.1f} MiB of the {TRIP_MIB:g} MiB allowed "
                  f"(the working tree, {' and '.join(CARRY)})")
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        return 0
    if args.import_weights:
        if not args.to:
            ap.error("--import-weights needs --to MODEL.keras")
        print(json.dumps(import_weights(args.import_weights, args.to)))
        return 0
    if not args.out:
        ap.error("--out is required")
    if not (Path(args.data) / "pack.json").exists():
        print(f"error: {args.data}: no pack.json (make one here with --pack before the call)", file=sys.stderr)
        return 2
    res = run(args.out, args.data, args.budget_s, args.dry_run, args.only)
    failed = [k for k, v in res["steps"].items() if not str(v.get("status", "")).startswith(("ok", "skipped"))]
    print(f"done in {res['seconds']} s; steps: " + ", ".join(f"{k}={v['status'][:40]}" for k, v in res["steps"].items()))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
