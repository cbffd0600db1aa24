"""Convert BraTS NIfTI cases into compact training arrays and a manifest.

Output folder::

    OUT/images/<case>.npy   (d, h, w, C) float16 (or float32, or uint8 = round(255 * min-max value)),
                            channels in the order asked for
    OUT/masks/<case>.npy    (d, h, w) uint8 class indices 0 background, 1 NCR, 2 ED, 3 ET
    OUT/manifest.json       settings, and per case: source files, original shape and affine,
                            crop box, scaling parameters, label voxel counts, dtype, status

The defaults reproduce the report: FLAIR, T1ce, T2; min-max scaling over the whole
volume; the fixed crop ``[56:184, 56:184, 13:141]``. numpy / nibabel only.
"""
from __future__ import annotations

import json
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np

from . import io as bio
from .labels import CLASS_NAMES, DEFAULT_MODALITIES, parse_modalities
from .preprocessing import (REPORT_CROP, SCALINGS, box_slices, brain_crop_box, downsample_classes, downsample_image,
                            fixed_crop_box, stack_scaled)

MANIFEST = "manifest.json"
#: image storage types; uint8 (min-max scaling only) holds round(255 * value), half of float16's size
IMAGE_DTYPES = ("float16", "float32", "uint8")


def conversion_settings(modalities=DEFAULT_MODALITIES, crop="fixed", scale="minmax", dtype="float16",
                        margin=4, min_tumor=None, downsample=1) -> dict:
    """Validated settings dict, as stored in the manifest (and compared on resume)."""
    if crop not in ("fixed", "brain"):
        raise ValueError(f"unknown crop {crop!r}: use fixed or brain")
    if scale not in SCALINGS:
        raise ValueError(f"unknown scaling {scale!r}: use one of {', '.join(SCALINGS)}")
    if dtype not in IMAGE_DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}: use one of {', '.join(IMAGE_DTYPES)}")
    if dtype == "uint8" and scale != "minmax":
        raise ValueError("dtype uint8 stores min-max scaled values as round(255 * value): use it with scale minmax")
    if int(downsample) not in (1, 2, 3, 4):
        raise ValueError(f"downsample must be 1, 2, 3 or 4, got {downsample}")
    settings = {
        "modalities": list(parse_modalities(modalities)),
        "crop": crop,
        "crop_box": [list(p) for p in REPORT_CROP] if crop == "fixed" else None,
        "margin": int(margin) if crop == "brain" else None,
        "scale": scale,
        "dtype": dtype,
        "min_tumor": min_tumor,
    }
    if int(downsample) > 1:
        settings["downsample"] = int(downsample)
    return settings


def quantize_uint8(image: np.ndarray) -> np.ndarray:
    """Values in [0, 1] -> uint8 ``round(255 * value)`` (read back with ``stored / 255``)."""
    out = np.multiply(image, np.float32(255), dtype=np.float32)
    np.rint(out, out=out)
    return out.astype(np.uint8)


def class_counts(classes: np.ndarray) -> list[int]:
    """Voxels of each class 0..3 (``np.bincount`` would first copy a uint8 map into 8-byte integers)."""
    counts = [int(np.count_nonzero(classes == k)) for k in (1, 2, 3)]
    return [classes.size - sum(counts)] + counts


def convert_case(case: bio.Case, out_dir, settings: dict) -> dict:
    """Convert one case; return its manifest entry. Raises BratsInputError on bad input.

    Outputs go through temporary files and renames, so nothing half-written stays behind.
    """
    out_dir = Path(out_dir)
    vols, affine, _ = bio.load_modalities(case, settings["modalities"])
    shape = vols[0].shape
    classes = None
    if case.seg is not None:
        classes = bio.load_classes(case.seg, shape=shape)
    if settings["crop"] == "fixed":
        try:
            box = fixed_crop_box(shape, tuple(map(tuple, settings["crop_box"])))
        except ValueError as exc:
            raise bio.BratsInputError(f"{case.images[settings['modalities'][0]]}: {exc}") from None
    else:
        box = brain_crop_box(vols, margin=settings["margin"])
    quantize = settings["dtype"] == "uint8"
    image, params = stack_scaled(vols, box, settings["scale"],
                                 dtype=np.float32 if quantize else np.dtype(settings["dtype"]))
    factor = settings.get("downsample", 1)
    image = downsample_image(image, factor)
    if quantize:
        image = quantize_uint8(image)
    entry = {
        "status": "ok",
        "layout": case.layout,
        "source": {m: str(Path(case.images[m]).resolve()) for m in settings["modalities"]},
        "seg": str(Path(case.seg).resolve()) if case.seg else None,
        "original_shape": list(shape),
        "affine": np.asarray(affine).round(6).tolist(),
        "crop_box": [list(p) for p in box],
        "shape": list(image.shape),
        "scaling": {m: p for m, p in zip(settings["modalities"], params)},
        "dtype": settings["dtype"],
        "image": f"images/{case.case_id}.npy",
        "mask": None,
    }
    if classes is not None:
        crop_cls = downsample_classes(classes[box_slices(box)], factor)
        counts, full = class_counts(crop_cls), class_counts(classes)
        entry["label_counts"] = {CLASS_NAMES[i]: int(counts[i]) for i in range(1, 4)}
        entry["label_counts_full"] = {CLASS_NAMES[i]: int(full[i]) for i in range(1, 4)}
        frac = float(sum(counts[1:])) / crop_cls.size
        entry["tumor_fraction"] = round(frac, 6)
        if settings.get("min_tumor") is not None and frac < settings["min_tumor"]:
            entry["status"] = "dropped"
            entry["reason"] = f"tumor fraction {frac:.4f} < min_tumor {settings['min_tumor']}"
            entry["image"] = None
            return entry
        entry["mask"] = f"masks/{case.case_id}.npy"
        bio.atomic_save_npy(out_dir / entry["mask"], crop_cls)
    bio.atomic_save_npy(out_dir / entry["image"], image)
    return entry


def _outputs_complete(out_dir: Path, entry: dict) -> bool:
    """True when a manifest entry's arrays exist with the recorded shape and dtype."""
    if entry.get("status") == "dropped":
        return True
    if entry.get("status") != "ok":
        return False
    try:
        img = np.load(out_dir / entry["image"], mmap_mode="r")
        if list(img.shape) != entry["shape"] or str(img.dtype) != entry["dtype"]:
            return False
        if entry.get("mask"):
            msk = np.load(out_dir / entry["mask"], mmap_mode="r")
            if list(msk.shape) != entry["shape"][:3] or msk.dtype != np.uint8:
                return False
    except (OSError, ValueError):
        return False
    return True


def _worker(args):
    case, out_dir, settings = args
    try:
        return case.case_id, convert_case(case, out_dir, settings), None
    except bio.BratsInputError as exc:
        return case.case_id, None, str(exc)
    except Exception as exc:  # keep the batch going; report the case
        return case.case_id, None, f"{case.case_id}: {type(exc).__name__}: {exc}"


def read_manifest(out_dir) -> dict:
    """Load ``OUT/manifest.json``."""
    path = Path(out_dir) / MANIFEST
    with open(path) as f:
        return json.load(f)


def convert_folder(input_dir, output_dir, modalities=DEFAULT_MODALITIES, crop="fixed", scale="minmax",
                   dtype="float16", margin=4, min_tumor=None, workers=None, overwrite=False,
                   progress=True, log=print, downsample=1) -> dict:
    """Convert every case below ``input_dir`` into ``output_dir``.

    Re-running skips cases whose outputs are complete and match the manifest
    (``overwrite=True`` redoes them). A bad case is reported in one line, listed under
    ``failed`` in the manifest, and the others still convert.

    Returns:
        the manifest dict (``settings``, ``cases``, ``failed``, ``dropped``).
    Raises:
        BratsInputError if no case is found.
    """
    output_dir = Path(output_dir)
    settings = conversion_settings(modalities, crop, scale, dtype, margin, min_tumor, downsample)
    cases = bio.find_cases(input_dir)
    if not cases:
        raise bio.BratsInputError(f"{input_dir}: no BraTS cases found (expected files like <case>_flair.nii.gz or <case>-t2f.nii.gz)")
    ids = [c.case_id for c in cases]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise bio.BratsInputError(f"{input_dir}: case ids found twice: {', '.join(dupes)}")

    manifest = {"settings": settings, "cases": {}, "failed": {}, "dropped": {}}
    old = None
    if (output_dir / MANIFEST).exists() and not overwrite:
        try:
            old = read_manifest(output_dir)
        except (OSError, ValueError):
            old = None
        if old is not None and old.get("settings") != settings:
            log(f"{output_dir}: settings differ from the existing manifest; converting every case again")
            old = None
    todo = []
    for case in cases:
        entry = (old or {}).get("cases", {}).get(case.case_id) or (old or {}).get("dropped", {}).get(case.case_id)
        if entry is not None and _outputs_complete(output_dir, entry):
            manifest["dropped" if entry.get("status") == "dropped" else "cases"][case.case_id] = entry
        else:
            todo.append(case)
    skipped = len(cases) - len(todo)
    if skipped:
        log(f"skipping {skipped} case(s) already converted (use --overwrite to redo them)")

    output_dir.mkdir(parents=True, exist_ok=True)
    workers = max(1, min(workers or os.cpu_count() or 1, len(todo) or 1))
    jobs = [(c, output_dir, settings) for c in todo]

    written = time.monotonic()

    def record(case_id, entry, error):
        nonlocal written
        if error:
            manifest["failed"][case_id] = error
            log(f"FAILED {error}")
        elif entry["status"] == "dropped":
            manifest["dropped"][case_id] = entry
        else:
            manifest["cases"][case_id] = entry
        # keep the manifest current for a resume after a kill, but at most once a second: rewriting it
        # after every case costs the parent ~8 ms per case on 23 cases, more on a full BraTS folder
        if time.monotonic() - written >= 1.0:
            bio.atomic_write_json(output_dir / MANIFEST, _sorted_manifest(manifest))
            written = time.monotonic()

    bar = _progress(len(jobs), progress)
    if workers == 1:
        for job in jobs:
            record(*_worker(job))
            bar.update(1)
    else:
        # spawn, not fork: forking a process that has loaded TensorFlow (a notebook) can deadlock
        with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = [pool.submit(_worker, job) for job in jobs]
            for fut in as_completed(futures):
                record(*fut.result())
                bar.update(1)
    bar.close()
    manifest = _sorted_manifest(manifest)
    bio.atomic_write_json(output_dir / MANIFEST, manifest)
    if manifest["dropped"]:
        log(f"dropped {len(manifest['dropped'])} case(s) below min_tumor: {', '.join(manifest['dropped'])}")
    return manifest


def _sorted_manifest(m: dict) -> dict:
    return {k: (dict(sorted(v.items())) if k != "settings" else v) for k, v in m.items()}


def _progress(total, enabled):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="converting", unit="case", disable=not enabled)
