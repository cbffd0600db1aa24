"""Convert BraTS NIfTI cases into compact training arrays and a manifest.

Output folder::

    OUT/images/<case>.npy   (d, h, w, C) float16 (or float32, or uint8 = round(255 * min-max value)),
                            channels in the order asked for
    OUT/masks/<case>.npy    (d, h, w) uint8 class indices: 0 background, then the task's classes (the 2021
                            glioma task: 1 NCR, 2 ED, 3 ET)
    OUT/.convert.lock       only while a convert or merge writes the folder (its pid)
    OUT/manifest.json       settings (the PreprocessingSpec of brats_keras.spec, and min_tumor), the task
                            (``Task.to_dict()``, see brats_keras.tasks), and per case: source files, the task
                            whose values its label map holds (``label_task``), original shape and affine (of the
                            working grid: 1 mm, LPS; a case on another grid is resampled onto it and
                            ``resampled_from`` notes its own),
                            crop box, scaling parameters, label voxel counts, dtype, status and
                            the checksum of each output (``"sha256:<hex>"``, checked on resume)

The task: the one given (``task=``, ``--task``), or the one detected from each case's naming and label values
(:func:`brats_keras.io.label_task`). Every case of a conversion is of that task or of one with the same classes
(a family: the 2021 and 2023+ glioma values and the Decathlon's are one; a 2023-named case in a 2021 conversion
keeps its own stored values, ET = 3, and its classes are the task's). Detected cases make a conversion of their
family's first task (``glioma2021`` for 2021, 2023+ and Decathlon glioma cases, alone or mixed); a case of a task
of other classes fails in one line, as does one whose values fit no task or several.

The defaults reproduce the report: FLAIR, T1ce, T2; min-max scaling over the whole
volume; the fixed crop ``[56:184, 56:184, 13:141]``. numpy / nibabel only.
"""
from __future__ import annotations

import contextlib
import os
import time
from concurrent.futures import as_completed
from pathlib import Path

import numpy as np

from . import io as bio
from .geometry import resampled_note
from .labels import DEFAULT_MODALITIES
from .pool import parent_gone, process_pool
from .preprocessing import (DEFAULT_MARGIN, box_slices, brain_crop_box, downsample_classes, downsample_image,
                            fixed_crop_box, stack_scaled)
from .spec import MANIFEST, PreprocessingSpec, read_manifest
from .tasks import TASKS, Task, detect_task, get_task


#: the lock file convert and merge hold in their output folder while they write it (:func:`brats_keras.io.folder_lock`)
LOCK = ".convert.lock"
_CONVERT_HINT = "give another --output, or --overwrite to convert every case again with these settings"


class ManifestWriteError(Exception):
    """The manifest could not be written (one line naming it and why); ``manifest`` holds what the run did."""

    def __init__(self, message: str, manifest: dict):
        super().__init__(message)
        self.manifest = manifest


def conversion_settings(modalities=DEFAULT_MODALITIES, crop="fixed", scale="minmax", dtype="float16",
                        margin=DEFAULT_MARGIN, min_tumor=None, downsample=1) -> dict:
    """Validated settings dict, as stored in the manifest (and compared on resume): the
    :class:`~brats_keras.spec.PreprocessingSpec` (``margin`` counts for ``crop="brain"`` only) plus ``min_tumor``.

    Raises:
        ValueError naming the bad setting.
    """
    spec = PreprocessingSpec(modalities, crop=crop, scale=scale, dtype=dtype, downsample=downsample,
                             margin=margin if crop == "brain" else None)
    return {**spec.to_dict(), "min_tumor": min_tumor}


def _setting_differences(old, new: dict) -> list[str]:
    """``"<key> <old>, asked <new>"`` for each setting in which an existing manifest's ``old`` settings differ from
    ``new`` (read through the spec, so a manifest written before a setting was recorded, e.g. without
    ``downsample``, still matches); empty when they describe the same conversion."""
    try:
        theirs, ours = PreprocessingSpec.from_dict(old), PreprocessingSpec.from_dict(new)
    except ValueError as exc:
        return [f"settings unreadable ({exc})"]
    keys = [k for k in ours.to_dict() if k not in ("patch_size", "output")]  # model settings, never in a manifest
    found = theirs.differences(ours, keys)
    if old.get("min_tumor") != new.get("min_tumor"):
        found.append(("min_tumor", old.get("min_tumor"), new.get("min_tumor")))
    return [f"{k} {_show(a)}, asked {_show(b)}" for k, a, b in found]


def _show(value) -> str:
    return ",".join(map(str, value)) if isinstance(value, list) else str(value)


def _same_settings(old, new: dict) -> bool:
    """Whether an existing manifest's settings describe the same conversion as ``new``."""
    return not _setting_differences(old, new)


def quantize_uint8(image: np.ndarray) -> np.ndarray:
    """Values in [0, 1] -> uint8 ``round(255 * value)`` (read back with ``stored / 255``)."""
    out = np.multiply(image, np.float32(255), dtype=np.float32)
    np.rint(out, out=out)
    return out.astype(np.uint8)


def class_counts(classes: np.ndarray, n_classes: int = 4) -> list[int]:
    """Voxels of each class ``0 .. n_classes - 1`` (``np.bincount`` would first copy a uint8 map into 8-byte
    integers)."""
    counts = [int(np.count_nonzero(classes == k)) for k in range(1, n_classes)]
    return [classes.size - sum(counts)] + counts


def tumour_classes(task) -> tuple:
    """The classes of ``task``'s whole tumour: its region ``WT`` where it has one (a resection cavity is not
    tumour), else every class but the background."""
    task = get_task(task)
    return task.region_classes("WT") if "WT" in task.region_names else tuple(range(1, task.n_classes))


def case_label_task(case: bio.Case, task: Task, given: bool = True, volumes=None):
    """``(classes, task)`` of a case's label map read for a conversion of ``task``: the classes, on the working
    grid of the case's images ``volumes`` (:func:`brats_keras.io.load_case_labels`), and the task whose values it
    holds (:func:`brats_keras.io.read_labels`), which has ``task``'s classes.

    ``given``: ``task`` was named by the user, so a map whose naming and values say nothing else is read as
    ``task``'s; otherwise (a detected task) the case's own detected task must have ``task``'s classes.

    Raises:
        BratsInputError, one line naming the label file.
    """
    classes, own = bio.load_case_labels(case.seg, volumes, task if given else None, case=case)
    if not own.same_classes(task):
        raise bio.BratsInputError(_other_task(case, own, task))
    return classes, own


def _other_task(case: bio.Case, own: Task, task: Task) -> str:
    return (f"{case.seg}: a {own.name} label map ({bio.case_naming(case)} naming; {own.describe_labels()}), but "
            f"this conversion's task is {task.name}, of other classes: convert it apart, or give --task")


def convert_case(case: bio.Case, out_dir, settings: dict, task=None, given: bool = True) -> dict:
    """Convert one case of the conversion task ``task`` (default: the 2021 glioma task); return its manifest entry.
    Raises BratsInputError on bad input (a label map of another task: :func:`case_label_task`, with ``given``).

    Outputs go through temporary files and renames, so nothing half-written stays behind.
    Raises OSError naming the output file when it cannot be written (e.g. no space left on device).
    """
    out_dir = Path(out_dir)
    task = get_task(task)
    spec = PreprocessingSpec.from_dict(settings)
    case.check(["seg"])
    volumes = bio.read_modalities(case, spec.modalities)  # on the working grid (resampled where off it)
    vols, affine = volumes.arrays, volumes.affine
    shape = vols[0].shape
    classes = own = None
    if case.seg is not None:
        classes, own = case_label_task(case, task, given, volumes)
    if spec.crop == "fixed":
        try:
            box = fixed_crop_box(shape, spec.crop_box)
        except ValueError as exc:
            raise bio.BratsInputError(f"{case.images[spec.modalities[0]]}: {exc}") from None
    else:
        box = brain_crop_box(vols, margin=spec.margin)
    quantize = spec.dtype == "uint8"
    image, params = stack_scaled(vols, box, spec.scale, dtype=np.float32 if quantize else np.dtype(spec.dtype))
    factor = spec.downsample
    image = downsample_image(image, factor)
    if quantize:
        image = quantize_uint8(image)
    entry = {
        "status": "ok",
        "layout": case.layout,
        "label_task": own.name if own is not None else None,
        "source": {m: str(Path(case.images[m]).resolve()) for m in spec.modalities},
        **({"channels": {m: case.channels[m] for m in spec.modalities}} if case.channels else {}),
        "seg": str(Path(case.seg).resolve()) if case.seg else None,
        "original_shape": list(shape),
        "affine": np.asarray(affine).round(6).tolist(),
        "crop_box": [list(p) for p in box],
        "shape": list(image.shape),
        "scaling": {m: p for m, p in zip(spec.modalities, params)},
        "dtype": spec.dtype,
        "image": f"images/{case.case_id}.npy",
        "mask": None,
        "checksums": {},
    }
    if volumes.regrid is not None:  # original_shape, affine and crop_box are those of the working grid
        entry["resampled_from"] = volumes.regrid.describe()
    if classes is not None:
        crop_cls = downsample_classes(classes[box_slices(box)], factor)
        counts, full = class_counts(crop_cls, task.n_classes), class_counts(classes, task.n_classes)
        names = task.class_names
        entry["label_counts"] = {names[i]: int(counts[i]) for i in range(1, task.n_classes)}
        entry["label_counts_full"] = {names[i]: int(full[i]) for i in range(1, task.n_classes)}
        frac = float(sum(counts[k] for k in tumour_classes(task))) / crop_cls.size
        entry["tumor_fraction"] = round(frac, 6)
        if settings.get("min_tumor") is not None and frac < settings["min_tumor"]:
            entry["status"] = "dropped"
            entry["reason"] = f"tumor fraction {frac:.4f} < min_tumor {settings['min_tumor']}"
            entry["image"] = None
            del entry["checksums"]
            return entry
        entry["mask"] = f"masks/{case.case_id}.npy"
        entry["checksums"]["mask"] = bio.atomic_save_npy(out_dir / entry["mask"], crop_cls)
    entry["checksums"]["image"] = bio.atomic_save_npy(out_dir / entry["image"], image)
    return entry


def _remove_outputs(out_dir: Path, case_id: str) -> None:
    """Delete a failed case's image and mask (a mask written before its image failed, or an earlier run's)."""
    for sub in ("images", "masks"):
        try:
            (out_dir / sub / f"{case_id}.npy").unlink(missing_ok=True)
        except OSError:  # a read-only folder: nothing was written there either
            pass


def _outputs_complete(out_dir: Path, entry: dict, case_id: str) -> bool:
    """True when a manifest entry's arrays exist where they belong, with the recorded shape, dtype and checksum.

    Manifests written before checksums existed are checked by shape and dtype alone.
    """
    if entry.get("status") == "dropped":
        return True
    if entry.get("status") != "ok":
        return False
    # read nothing but this case's own files, whatever the manifest says
    if entry.get("image") != f"images/{case_id}.npy" or entry.get("mask") not in (None, f"masks/{case_id}.npy"):
        return False
    try:
        img = np.load(out_dir / entry["image"], mmap_mode="r")
        if list(img.shape) != entry["shape"] or str(img.dtype) != entry["dtype"]:
            return False
        if entry.get("mask"):
            msk = np.load(out_dir / entry["mask"], mmap_mode="r")
            if list(msk.shape) != entry["shape"][:3] or msk.dtype != np.uint8:
                return False
        for key, digest in (entry.get("checksums") or {}).items():
            if bio.file_checksum(out_dir / entry[key]) != digest:
                return False
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return True


def _worker(args):
    case, out_dir, settings, task, given = args
    if parent_gone():  # the conversion that started this worker is gone: convert nothing more
        os._exit(1)
    try:
        entry = convert_case(case, out_dir, settings, task, given)
        if entry["status"] == "dropped":  # an earlier run's arrays of it would be stale
            _remove_outputs(Path(out_dir), case.case_id)
        return case.case_id, entry, None
    except Exception as exc:  # keep the batch going; report the case and remove what it left
        _remove_outputs(Path(out_dir), case.case_id)
        if isinstance(exc, bio.BratsInputError):
            return case.case_id, None, str(exc)
        if isinstance(exc, OSError):
            return case.case_id, None, bio.describe_os_error(exc)
        return case.case_id, None, f"{case.case_id}: {type(exc).__name__}: {exc}"


def parse_shard(text) -> tuple[int, int]:
    """``"K/N"`` -> ``(K, N)``: part K (1 to N) of a conversion split in N parts; ValueError in one line."""
    try:
        k, n = (int(v) for v in str(text).split("/"))
    except ValueError:
        raise ValueError(f"--shard {text}: give K/N, part K of N (e.g. 1/4)") from None
    if n < 1 or not 1 <= k <= n:
        raise ValueError(f"--shard {text}: K must be 1 to N and N at least 1 (e.g. 1/4 ... 4/4)")
    return k, n


def shard_cases(cases, shard):
    """The cases of part ``shard = (K, N)``: every N-th case by sorted id, from the K-th."""
    k, n = shard
    ordered = sorted(cases, key=lambda c: c.case_id)
    return ordered[k - 1::n]


def convert_folder(input_dir, output_dir, modalities=DEFAULT_MODALITIES, crop="fixed", scale="minmax",
                   dtype="float16", margin=DEFAULT_MARGIN, min_tumor=None, workers=None, overwrite=False,
                   progress=True, log=print, downsample=1, shard=None, task=None) -> dict:
    """Convert every case below ``input_dir`` into ``output_dir``.

    ``task`` (a built-in name, a task JSON file, a record or a :class:`~brats_keras.tasks.Task`): the task of every
    case; None: detected from the cases (:func:`detect_conversion_task`, see the module docstring). The manifest
    records it (``"task"``) and, per case, the task whose values the case's label map holds (``"label_task"``).

    ``shard=(K, N)`` converts only part K of N (:func:`shard_cases`), so that N machines share a large
    dataset; each part's folder has its own manifest (with ``"shard": {"index": K, "count": N}``) and
    :func:`merge_conversions` joins the N folders into one.

    The output folder is locked (``OUT/.convert.lock``, :func:`brats_keras.io.folder_lock`) while it is
    written. Re-running with the same settings skips cases whose outputs are complete and match the
    manifest (shape, dtype and checksum) and removes temporary files a killed run left; a folder
    converted with other settings is refused unless ``overwrite=True``, which converts every case again.
    A case off the working grid (voxels not 1 mm, orientation not LPS) is resampled onto it
    (:func:`brats_keras.io.read_modalities`), noted in one line and in its manifest entry (``resampled_from``).
    A bad case (unreadable input, two files for one modality, modalities or a label map not co-registered,
    an output that cannot be written) is reported in one line,
    listed under ``failed`` in the manifest, its outputs are removed, and the others still convert.
    Worker processes end with the calling process.

    Returns:
        the manifest dict (``settings``, ``cases``, ``failed``, ``dropped``).
    Raises:
        BratsInputError if no case is found, the output is not a folder that can be written, it holds
        a conversion with other settings or another task (naming them) or another part's, or another convert is
        writing it (naming its pid); TaskError for a task that cannot be used (an unknown name, a task file with a
        mistake); nothing is done then. ManifestWriteError if the manifest cannot be written at the end.
    """
    output_dir = Path(output_dir)
    settings = conversion_settings(modalities, crop, scale, dtype, margin, min_tumor, downsample)
    given = task is not None
    if given:
        task = get_task(task)
    if shard is not None:  # "K/N" or (K, N)
        shard = parse_shard(shard if isinstance(shard, str) else "/".join(map(str, shard)))
    cases = bio.find_cases(input_dir)
    if not cases:
        raise bio.BratsInputError(f"{input_dir}: no BraTS cases found (expected files like <case>_flair.nii.gz or <case>-t2f.nii.gz)")
    ids = [c.case_id for c in cases]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise bio.BratsInputError(f"{input_dir}: case ids found twice: {', '.join(dupes)}")

    if shard is not None:
        cases = shard_cases(cases, shard)
        if not cases:
            raise bio.BratsInputError(f"{input_dir}: --shard {shard[0]}/{shard[1]} has no case "
                                      f"(only {len(ids)} cases found)")
    failed = {}
    if not given:
        task, failed = detect_conversion_task(cases)
    manifest = {"settings": settings, "task": task.to_dict(), "cases": {}, "failed": {}, "dropped": {}}
    if shard is not None:
        manifest["shard"] = {"index": shard[0], "count": shard[1]}
    if not overwrite:  # refused before anything is written; checked again under the lock
        _earlier_conversion(output_dir, manifest, _CONVERT_HINT)
    _make_output(output_dir)
    with bio.folder_lock(output_dir, LOCK, "convert", "wait for it to end, or give another --output"):
        _remove_temporaries(output_dir)
        old = None if overwrite else _earlier_conversion(output_dir, manifest, _CONVERT_HINT)
        if overwrite and (output_dir / MANIFEST).exists():  # from now on it lists only arrays of these settings
            with contextlib.suppress(OSError):  # a full disk: the cases fail one by one, the last write says so
                bio.atomic_write_json(output_dir / MANIFEST, manifest)
        for case_id, error in failed.items():  # cases of no task or another one: refused before converting
            manifest["failed"][case_id] = error
            log(f"FAILED {case_id}: {error}")
            _remove_outputs(output_dir, case_id)
        todo = [c for c in cases if c.case_id not in failed]
        return _convert_cases(todo, output_dir, manifest, old, workers, progress, log, task, given)


def detect_conversion_task(cases) -> tuple[Task, dict]:
    """The task of a conversion not told one, from its cases' label maps: ``(task, failed)``.

    Each labelled case's task comes from its naming alone where that decides it (2018-2021 names, the Decathlon's),
    else from its naming and values (:func:`brats_keras.io.label_task`). The task of most cases wins (ties: the
    order of :data:`brats_keras.tasks.TASKS`), and the conversion's task is the first task of its family in that
    order (``glioma2021`` for 2021, 2023+ and Decathlon glioma cases, alone or mixed: the classes are the same and
    each case keeps its own values). ``failed``: case id -> one line, for a case whose values fit no task or
    several, or whose task has other classes than the winner's. No labelled case: the default task.
    """
    own, failed = {}, {}
    for case in cases:
        if case.seg is None:
            continue
        naming = bio.case_naming(case)
        try:
            case.check(["seg"])
            if naming in ("2021", "msd"):  # the naming alone says it
                own[case.case_id] = (case, detect_task([0], case.case_id, naming))
            else:
                own[case.case_id] = (case, bio.read_labels(case.seg, case=case)[2])
        except bio.BratsInputError as exc:
            failed[case.case_id] = str(exc)
    if not own:
        return get_task(None), failed
    names = list(TASKS)
    counts = {}
    for _, t in own.values():
        counts[t.name] = counts.get(t.name, 0) + 1
    winner = TASKS[min(counts, key=lambda n: (-counts[n], names.index(n)))]
    task = next(t for t in TASKS.values() if t.same_classes(winner))  # the first of its family
    for case_id, (case, t) in own.items():
        if not t.same_classes(task):
            failed[case_id] = _other_task(case, t, task)
    return task, dict(sorted(failed.items()))



def _earlier_conversion(output_dir: Path, manifest: dict, hint: str, same_part: bool = True) -> dict | None:
    """The manifest an earlier conversion left in ``output_dir`` when it can be resumed into ``manifest``'s, or None
    when there is none (or one that cannot be read: every case is converted again).

    Raises:
        BratsInputError naming the settings that differ (and ``hint``), or, with ``same_part``, another part of
        a sharded conversion than ``manifest``'s; the caller writes nothing then.
    """
    if not (output_dir / MANIFEST).is_file():
        return None
    try:
        old = read_manifest(output_dir)
    except bio.BratsInputError:  # unreadable or of another shape: convert every case again
        return None
    if not isinstance(old.get("dropped", {}), dict):
        return None
    differ = _setting_differences(old.get("settings"), manifest["settings"])
    theirs = old.get("task") or get_task(None).to_dict()
    if theirs != manifest.get("task", get_task(None).to_dict()):
        name = theirs.get("name") if isinstance(theirs, dict) else None
        asked = manifest["task"]["name"]
        differ.append(f"task {name}, asked {asked}" if name != asked else f"task {name} of another definition")
    if differ:
        raise bio.BratsInputError(f"{output_dir / MANIFEST}: converted with other settings ({'; '.join(differ)}); "
                                  f"{hint}")
    if same_part and old.get("shard") != manifest.get("shard"):
        raise bio.BratsInputError(f"{output_dir / MANIFEST}: written for another part (shard "
                                  f"{old.get('shard')}); give each --shard its own output folder")
    return old


def _convert_cases(cases, output_dir: Path, manifest: dict, old: dict | None, workers, progress, log, task=None,
                   given=True) -> dict:
    """Convert ``cases`` of ``task`` (:func:`convert_case`, with ``given``) into ``output_dir`` (locked by the caller),
    keeping those ``old`` lists complete."""
    settings = manifest["settings"]
    todo = []
    for case in cases:
        entry = (old or {}).get("cases", {}).get(case.case_id) or (old or {}).get("dropped", {}).get(case.case_id)
        if entry is not None and _outputs_complete(output_dir, entry, case.case_id):
            manifest["dropped" if entry.get("status") == "dropped" else "cases"][case.case_id] = entry
        else:
            todo.append(case)
    skipped = len(cases) - len(todo)
    if skipped:
        log(f"skipping {skipped} case(s) already converted (use --overwrite to redo them)")

    workers = max(1, min(workers or os.cpu_count() or 1, len(todo) or 1))
    jobs = [(c, output_dir, settings, task, given) for c in todo]

    written = float("-inf")  # the first case done is recorded at once, then at most once a second

    def record(case_id, entry, error):
        nonlocal written
        if error:
            manifest["failed"][case_id] = error
            log(f"FAILED {case_id}: {error}")
        elif entry["status"] == "dropped":
            manifest["dropped"][case_id] = entry
        else:
            manifest["cases"][case_id] = entry
        if entry and entry.get("resampled_from"):
            log(f"note: {case_id}: {resampled_note(entry['resampled_from'], entry['original_shape'])}")
        # keep the manifest current for a resume after a kill, but at most once a second: rewriting it
        # after every case costs the parent ~8 ms per case on 23 cases, more on a full BraTS folder
        if time.monotonic() - written >= 1.0:
            try:
                bio.atomic_write_json(output_dir / MANIFEST, _sorted_manifest(manifest))
            except OSError:  # a full disk: the cases go on failing one by one; the last write reports it
                pass
            written = time.monotonic()

    bar = _progress(len(jobs), progress)
    if workers == 1:
        for job in jobs:
            record(*_worker(job))
            bar.update(1)
    else:
        with process_pool(workers) as pool:  # on an error or Ctrl-C, no further case starts
            futures = [pool.submit(_worker, job) for job in jobs]
            for fut in as_completed(futures):
                record(*fut.result())
                bar.update(1)
    bar.close()
    manifest = _sorted_manifest(manifest)
    try:
        bio.atomic_write_json(output_dir / MANIFEST, manifest)
    except OSError as exc:
        n_ok, n_fail = len(manifest["cases"]), len(manifest["failed"])
        raise ManifestWriteError(f"{bio.describe_os_error(exc)} ({n_ok} case(s) converted, {n_fail} failed; "
                                 f"run again to resume)", manifest) from None
    if manifest["dropped"]:
        log(f"dropped {len(manifest['dropped'])} case(s) below min_tumor: {', '.join(manifest['dropped'])}")
    return manifest


def _make_output(output_dir: Path) -> None:
    """Make the output folder, or refuse it in one line (BratsInputError) when it cannot hold the outputs."""
    if output_dir.exists() and not output_dir.is_dir():
        raise bio.BratsInputError(f"{output_dir}: the output exists and is not a folder")
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        bio.temp_path_for(output_dir / MANIFEST).unlink()  # can we write here at all?
    except OSError as exc:
        raise bio.BratsInputError(f"{output_dir}: cannot write the output folder: {bio.os_error_reason(exc)}") from None


def _remove_temporaries(output_dir: Path) -> None:
    """Remove the temporary files (``.<name>.*.tmp``) a killed run left (only under the folder's lock: a running
    conversion's are its own)."""
    for folder, pattern in ((output_dir, f".{MANIFEST}.*.tmp"), (output_dir / "images", ".*.npy.*.tmp"),
                            (output_dir / "masks", ".*.npy.*.tmp")):
        for tmp in folder.glob(pattern) if folder.is_dir() else ():
            tmp.unlink(missing_ok=True)


def _sorted_manifest(m: dict) -> dict:
    return {k: (dict(sorted(v.items())) if k not in ("settings", "task") else v) for k, v in m.items()}


def _progress(total, enabled):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="converting", unit="case", disable=not enabled)


def merge_conversions(inputs, output_dir, log=print) -> dict:
    """Join the folders of a sharded conversion (``convert --shard K/N``, K = 1..N) into ``output_dir``.

    The arrays are hard-linked where the file system allows it, else copied; the merged manifest is the one an
    unsharded conversion of the same cases writes (no ``shard`` entry).

    Raises:
        BratsInputError (one line) when a folder has no manifest or was not written with ``--shard``, the
        settings differ, a part is missing or given twice, a case id appears in two parts, an array a
        manifest lists is missing, ``output_dir`` holds a conversion with other settings or another convert or
        merge is writing it; nothing is written then. A copy is atomic (never half an array).
    """
    import shutil

    output_dir = Path(output_dir)
    merged = {"settings": None, "task": None, "cases": {}, "failed": {}, "dropped": {}}
    parts = {}
    for folder in map(Path, inputs):
        m = read_manifest(folder)  # one line naming it: missing, unreadable, not a manifest's shape
        if not isinstance(m.get("settings"), dict):
            raise bio.BratsInputError(f"{folder / MANIFEST}: not a conversion manifest (no settings)")
        shard = m.get("shard")
        if not isinstance(shard, dict):
            raise bio.BratsInputError(f"{folder / MANIFEST}: not written with --shard K/N; nothing to merge")
        if not all(isinstance(shard.get(k), int) for k in ("index", "count")):
            raise bio.BratsInputError(f"{folder / MANIFEST}: shard {shard!r} is not {{'index': K, 'count': N}}")
        task = m.get("task") or get_task(None).to_dict()
        if merged["settings"] is None:
            merged["settings"], merged["task"], count = m["settings"], task, shard["count"]
        elif not _same_settings(m["settings"], merged["settings"]):
            raise bio.BratsInputError(f"{folder / MANIFEST}: converted with other settings than {inputs[0]}")
        elif task != merged["task"]:
            raise bio.BratsInputError(f"{folder / MANIFEST}: converted for another task than {inputs[0]}")
        if shard["count"] != count:
            raise bio.BratsInputError(f"{folder / MANIFEST}: part {shard['index']}/{shard['count']}, "
                                      f"but {inputs[0]} is a part of {count}")
        if shard["index"] in parts:
            raise bio.BratsInputError(f"{folder}: part {shard['index']}/{count} given twice "
                                      f"(also {parts[shard['index']][0]})")
        parts[shard["index"]] = (folder, m)
        for key in ("cases", "failed", "dropped"):
            for cid, entry in m.get(key, {}).items():
                if any(cid in merged[k] for k in ("cases", "failed", "dropped")):
                    raise bio.BratsInputError(f"{folder / MANIFEST}: case {cid} is in two parts")
                merged[key][cid] = entry
    missing = sorted(set(range(1, count + 1)) - set(parts)) if parts else []
    if not parts or missing:
        raise bio.BratsInputError(f"{output_dir}: parts {', '.join(f'{k}/{count}' for k in missing)} missing; "
                                  f"give every part's folder" if parts else "no folder to merge")
    arrays = []  # (source, destination, checksum), every one checked before anything is written
    for index in sorted(parts):
        folder, m = parts[index]
        for cid, entry in m["cases"].items():
            for key in ("image", "mask"):
                rel = entry.get(key)
                if not rel:
                    continue
                if rel != f"{'images' if key == 'image' else 'masks'}/{cid}.npy":
                    raise bio.BratsInputError(f"{folder / MANIFEST}: case {cid}: unexpected {key} path {rel!r}")
                if not (folder / rel).is_file():
                    raise bio.BratsInputError(f"{folder / rel}: missing, but {folder / MANIFEST} lists it for "
                                              f"case {cid}; convert that part again")
                arrays.append((folder / rel, output_dir / rel, entry.get("checksums", {}).get(key)))
    hint = "give another --output, or remove that folder first"
    _earlier_conversion(output_dir, merged, hint, same_part=False)  # refused before anything is written
    _make_output(output_dir)
    with bio.folder_lock(output_dir, LOCK, "merge", "wait for it to end, or give another --output"):
        _earlier_conversion(output_dir, merged, hint, same_part=False)
        _remove_temporaries(output_dir)
        for src, dst, checksum in arrays:
            dst.parent.mkdir(parents=True, exist_ok=True)
            if dst.exists() and checksum is not None and bio.file_checksum(dst) == checksum:
                continue
            dst.unlink(missing_ok=True)
            try:
                os.link(src, dst)
            except OSError:  # another file system, or no hard links: a copy, whole or not at all
                bio.atomic_write(dst, lambda tmp, src=src: shutil.copyfile(src, tmp))
        manifest = _sorted_manifest(merged)
        bio.atomic_write_json(output_dir / MANIFEST, manifest)
    log(f"merged {count} part(s): {len(manifest['cases'])} case(s), {len(manifest['failed'])} failed, "
        f"{len(manifest['dropped'])} dropped")
    return manifest
