"""Training data: case splits and cross-validation folds, and a patch generator over converted ``.npy`` cases.

The generator is a ``keras.utils.PyDataset``: it memory-maps ``images/<case>.npy``
and ``masks/<case>.npy`` written by :mod:`brats_keras.convert`, cuts random patches
(a share of them centred on tumor voxels), optionally augments them, and yields
``(x, y)`` with ``x`` of shape ``(B, p, p, p, C)`` float32 and ``y`` one-hot over the conversion task's classes
``(B, p, p, p, task.n_classes)`` (softmax models; 4 for the 2021 glioma task) or its head regions
``(B, p, p, p, len(task.region_order))`` (region models; WT, TC, ET for the 2021 glioma task).
Every batch is a pure function of ``(seed, epoch, batch index)``, so runs repeat exactly.

For the 2D models (a 2-number ``patch_size``) the batches are axial slices: ``x`` ``(B, H, W, C)`` and ``y`` the
same targets without the axial axis.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import keras
import numpy as np

from .augment import check_intensity_mode, intensity_augment
from .io import AXIAL_AXIS, BratsInputError, atomic_write_json
from .labels import OUTPUTS, check_output  # noqa: F401  (OUTPUTS: importable from here as before)
from .spec import MANIFEST, PreprocessingSpec, manifest_task, read_manifest
from .tasks import get_task


# ----------------------------------------------------------------------------- splits
def split_cases(case_ids, val=0.2, test=0.0, seed=0) -> dict:
    """Split case ids into train / val / test, reproducibly.

    Args:
        case_ids: iterable of case ids.
        val, test: a fraction (``< 1``) of the cases or a count (``>= 1``), as the report's
            850 / 250 / 150 split.
        seed: shuffling seed.
    Returns:
        ``{"train": [...], "val": [...], "test": [...]}`` (each sorted).
    """
    ids = sorted(case_ids)
    n = len(ids)

    def count(x):
        k = int(round(x * n)) if x < 1 else int(x)
        return max(0, min(k, n))

    n_val, n_test = count(val), count(test)
    if n_val + n_test >= n and n > 0:
        raise BratsInputError(f"split leaves no training case: {n} cases, val={val}, test={test}")
    order = np.random.default_rng(seed).permutation(n)
    shuffled = [ids[i] for i in order]
    return {
        "test": sorted(shuffled[:n_test]),
        "val": sorted(shuffled[n_test:n_test + n_val]),
        "train": sorted(shuffled[n_test + n_val:]),
    }


def save_split(split: dict, path) -> None:
    atomic_write_json(path, split)


def load_split(path, fold_run: bool = False) -> dict:
    """Read and check a split file (a run's ``split.json``, a ``--split-file``): a JSON object whose ``"train"``,
    ``"val"`` and ``"test"``, where present, are lists of case ids; ``"train"`` and ``"val"`` must be present
    unless ``fold_run`` (the split of a fold run, read by crossval and ensemble, which use its ``"val"`` only).

    Raises:
        BratsInputError, one line naming the file: unreadable or not JSON, not a JSON object, a list missing, or
        a list that is not of case ids.
    """
    try:
        split = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise BratsInputError(f"{path}: not a readable split file ({' '.join(str(exc).split())})") from None
    needed = () if fold_run else ("train", "val")
    if not isinstance(split, dict) or not all(k in split for k in needed):
        raise BratsInputError(f"{path}: not the split of a fold run (train --folds K --fold k)" if fold_run else
                              f"{path}: a split file needs 'train' and 'val' lists of case ids")
    for part in ("train", "val", "test"):
        ids = split.get(part, [])
        if not isinstance(ids, list) or not all(isinstance(c, str) for c in ids):
            raise BratsInputError(f"{path}: its \"{part}\" is not a list of case ids")
    return split


def tumor_sizes(entries: dict, task=None) -> dict | None:
    """Whole-tumor voxels per case from manifest entries (their ``label_counts``); None if any case lacks them.

    ``task``: the manifest's task (:attr:`ConvertedCases.task`), whose whole tumour's classes are counted
    (:func:`brats_keras.convert.tumour_classes`: a resection cavity is not tumour); None counts every class.
    """
    from .convert import tumour_classes

    names = None if task is None else [get_task(task).class_names[k] for k in tumour_classes(task)]
    sizes = {}
    for cid, entry in entries.items():
        counts = entry.get("label_counts")
        if not counts:
            return None
        sizes[cid] = int(sum(counts.values()) if names is None else sum(counts.get(n, 0) for n in names))
    return sizes


def fold_split(case_ids, folds: int, fold: int, seed: int = 0, sizes: dict | None = None, test=0.0) -> dict:
    """The split of fold ``fold`` of ``folds``: ``val`` = this fold's cases, ``train`` = the other folds'.

    The same ``(case_ids, folds, seed, sizes)`` always give the same folds, and the ``folds`` validation
    sets are disjoint and cover every non-test case once.

    Folds are stratified by tumor size (scikit-learn's ``StratifiedKFold`` with shuffling and ``seed``) when
    ``sizes`` (whole-tumor voxels per case, e.g. :func:`tumor_sizes` of the manifest) are given and there
    are at least ``2 * folds`` cases: the cases are cut into size bins (up to three: small, middle, large
    tumors) of at least ``folds`` cases each and every fold gets its share of each bin. Tumor size drives
    Dice and HD95 more than anything else here (small tumors score low Dice), and with 4 or 5 validation
    cases per fold a fold of only small tumors would make its fold mean differ for reasons that have
    nothing to do with its model. Otherwise plain ``KFold`` with shuffling and ``seed``. (``GroupKFold``
    would be the choice when one patient has several studies, e.g. BraTS 2023's ``-000`` / ``-001`` time
    points; the cases here are one study per patient.)

    Args:
        case_ids: the labelled case ids.
        folds: number of folds (>= 2); fold: this fold, ``0 .. folds - 1``.
        seed: the shuffling seed (``TrainConfig.split_seed``).
        test: cases held out of every fold first (a fraction or a count, as in :func:`split_cases`).
    Returns:
        ``{"train": [...], "val": [...], "test": [...], "fold": fold, "folds": folds, "seed": seed,
        "stratified_by": "tumor size" or None}`` (id lists sorted).
    Raises:
        BratsInputError for a fold out of range or more folds than cases.
    """
    from sklearn.model_selection import KFold, StratifiedKFold

    folds, fold = int(folds), int(fold)
    if folds < 2:
        raise BratsInputError(f"--folds {folds}: cross-validation needs at least 2 folds")
    if not 0 <= fold < folds:
        raise BratsInputError(f"--fold {fold}: choose a fold from 0 to {folds - 1}")
    held = split_cases(case_ids, val=0, test=test, seed=seed) if test else {"train": sorted(case_ids), "test": []}
    ids = sorted(held["train"])
    if len(ids) < folds:
        raise BratsInputError(f"--folds {folds}: only {len(ids)} case(s) to split")
    strata = None
    if sizes is not None and all(c in sizes for c in ids):
        n_bins = min(3, len(ids) // folds)
        if n_bins >= 2:
            order = sorted(range(len(ids)), key=lambda i: (sizes[ids[i]], ids[i]))
            strata = np.zeros(len(ids), int)
            for rank, i in enumerate(order):
                strata[i] = rank * n_bins // len(ids)
    if strata is not None:
        splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed).split(ids, strata)
    else:
        splitter = KFold(n_splits=folds, shuffle=True, random_state=seed).split(ids)
    _, val_idx = list(splitter)[fold]
    val = sorted(ids[i] for i in val_idx)
    return {"train": sorted(set(ids) - set(val)), "val": val, "test": sorted(held["test"]), "fold": fold,
            "folds": folds, "seed": int(seed), "stratified_by": "tumor size" if strata is not None else None}


def fold_runs(runs, checkpoint: str = "last") -> list[tuple]:
    """``[(run folder, its split.json as a dict, its checkpoints/<checkpoint>.keras)]`` of fold run folders.

    Raises:
        BratsInputError (one line) for no run, an unknown ``checkpoint``, a folder without ``split.json``, a
        ``split.json`` that :func:`load_split` refuses, or a missing checkpoint.
    """
    if checkpoint not in ("last", "best"):
        raise BratsInputError(f"--checkpoint {checkpoint!r}: use last or best")
    runs = [Path(r) for r in runs]
    if not runs:
        raise BratsInputError("no fold run given")
    out = []
    for run in runs:
        split_path, model_path = run / "split.json", run / "checkpoints" / f"{checkpoint}.keras"
        if not split_path.is_file():
            raise BratsInputError(f"{run}: not a run folder (no split.json)")
        split = load_split(split_path, fold_run=True)
        if not model_path.is_file():
            raise BratsInputError(f"{model_path}: checkpoint not found")
        out.append((run, split, model_path))
    return out


# ----------------------------------------------------------------------------- cases
class Dequantized:
    """Array-like view of a uint8 image (``--dtype uint8``): indexing returns float32 ``stored / 255``."""

    dtype = np.dtype(np.float32)

    def __init__(self, stored: np.ndarray):
        self.stored = stored
        self.shape, self.ndim = stored.shape, stored.ndim

    def __getitem__(self, index):
        out = np.asarray(self.stored[index], dtype=np.float32)
        out *= np.float32(1 / 255)
        return out

    def __array__(self, dtype=None, copy=None):
        out = self[...]
        return out if dtype is None else out.astype(dtype)


def _inside_folder(rel) -> bool:
    """True for a relative path that stays inside its folder: no absolute path, no ``..``."""
    if not isinstance(rel, str) or not rel:
        return False
    parts = Path(rel.replace("\\", "/")).parts
    return bool(parts) and not os.path.isabs(rel) and ".." not in parts


class ConvertedCases:
    """Memory-mapped access to the cases of a conversion folder (needs masks).

    ``spec`` is the folder's :class:`~brats_keras.spec.PreprocessingSpec` (the manifest's settings), ``task`` its
    :class:`~brats_keras.tasks.Task` (the manifest's ``"task"``; the default task for a manifest without one).
    Reads only files inside ``data_dir``: a manifest whose image or mask entry is an absolute path
    or climbs out with ``..`` is refused (BratsInputError naming the manifest and the entry), and so
    are settings that are not a valid spec.
    """

    def __init__(self, data_dir, case_ids=None):
        self.data_dir = Path(data_dir)
        manifest = read_manifest(self.data_dir)  # shape checked
        try:
            self.spec = PreprocessingSpec.from_dict(manifest.get("settings"))
        except ValueError as exc:
            raise BratsInputError(f"{self.data_dir / MANIFEST}: settings: {exc}") from None
        self.task = manifest_task(manifest, self.data_dir / MANIFEST)
        entries = manifest["cases"]
        labelled = sorted(k for k, e in entries.items() if e.get("mask"))
        if case_ids is None:
            case_ids = labelled
        missing = [c for c in case_ids if c not in entries or not entries[c].get("mask")]
        if missing:
            raise BratsInputError(f"{self.data_dir}: no labelled converted case named {', '.join(missing)}")
        if not case_ids:
            raise BratsInputError(f"{self.data_dir}: no labelled case to train on")
        self.case_ids = list(case_ids)
        self.entries = {c: entries[c] for c in self.case_ids}
        root = self.data_dir.resolve()
        for c, entry in self.entries.items():
            for key in ("image", "mask"):
                if not _inside_folder(entry.get(key)):
                    raise BratsInputError(f"{self.data_dir / MANIFEST}: case {c}: {key} {entry.get(key)!r} is not "
                                          f"a file inside {self.data_dir}; refusing to read it")
                path = self.data_dir / entry[key]
                target = path.resolve()  # a symbolic link (of the file or a folder above it) may lead out
                if not target.is_relative_to(root):
                    raise BratsInputError(f"{path}: a link to {target}, outside {self.data_dir}; refusing to read it")
        self._images, self._masks, self._fg = {}, {}, {}

    def __len__(self):
        return len(self.case_ids)

    def image(self, case_id):
        """The memory-mapped image; a uint8 image reads back as float32 ``stored / 255``."""
        if case_id not in self._images:
            img = np.load(self.data_dir / self.entries[case_id]["image"], mmap_mode="r")
            self._images[case_id] = Dequantized(img) if img.dtype == np.uint8 else img
        return self._images[case_id]

    def mask(self, case_id):
        if case_id not in self._masks:
            self._masks[case_id] = np.load(self.data_dir / self.entries[case_id]["mask"], mmap_mode="r")
        return self._masks[case_id]

    def foreground(self, case_id, max_points=20000):
        """Coordinates ``(n, 3)`` of up to ``max_points`` tumor voxels per class of the task, for oversampling."""
        if case_id not in self._fg:
            m = np.asarray(self.mask(case_id))
            pts, sizes = [], []
            rng = np.random.default_rng(0)
            for c in range(1, self.task.n_classes):
                idx = np.flatnonzero(m.ravel() == c)
                if idx.size > max_points:
                    idx = rng.choice(idx, max_points, replace=False)
                pts.append(idx)
                sizes.append(idx.size)
            idx = np.concatenate(pts)
            coords = np.stack(np.unravel_index(idx, m.shape), axis=1).astype(np.int32)
            self._fg[case_id] = (coords, np.cumsum([0] + sizes))
        return self._fg[case_id][0]

    def foreground_by_class(self, case_id) -> list:
        """The coordinates of :meth:`foreground`, one array per tumor class the case holds (classes absent from
        it are left out)."""
        coords = self.foreground(case_id)
        bounds = self._fg[case_id][1]
        return [coords[a:b] for a, b in zip(bounds[:-1], bounds[1:]) if b > a]

    @property
    def n_channels(self):
        return len(self.spec.modalities)

    def check_arrays(self, case_ids=None, checksums: bool = False) -> tuple[int, int, int]:
        """Check the arrays of ``case_ids`` (default: every case) before they are read; return the largest
        ``(D, H, W)`` along each axis.

        Cheap checks of every image and mask: the file exists, its ``.npy`` header reads, its size on disk is
        what the header's shape and dtype need (a truncated copy is caught here, not by a memory map in the
        middle of training), and shape and dtype are the manifest's (an image ``(D, H, W, C)`` of the
        manifest's dtype with one channel per modality, a uint8 mask ``(D, H, W)``). ``checksums=True`` also
        compares each file's sha256 with the one the manifest recorded at conversion (where it has one).

        Raises:
            BratsInputError in one line naming the file and the problem.
        """
        from .io import CHECKSUM, file_checksum

        largest = [0, 0, 0]
        for c in self.case_ids if case_ids is None else case_ids:
            entry = self.entries[c]
            want = entry.get("shape")
            image = _npy_layout(self.data_dir / entry["image"])
            if len(image[0]) != 4 or image[0][3] != self.n_channels or (want is not None and list(image[0]) != want):
                expected = tuple(want) if want is not None else f"(D, H, W, {self.n_channels})"
                raise BratsInputError(f"{self.data_dir / entry['image']}: shape {image[0]} where the manifest "
                                      f"says {expected}; convert the data again")
            mask = _npy_layout(self.data_dir / entry["mask"])
            if mask[0] != image[0][:3]:
                raise BratsInputError(f"{self.data_dir / entry['mask']}: shape {mask[0]} where its image has "
                                      f"{image[0][:3]}; convert the data again")
            for key, layout, dtype in (("image", image, entry.get("dtype", self.spec.dtype)), ("mask", mask, "uint8")):
                if str(layout[1]) != dtype:
                    raise BratsInputError(f"{self.data_dir / entry[key]}: dtype {layout[1]} where the manifest says "
                                          f"{dtype}; convert the data again")
            if checksums:
                for key, digest in (entry.get("checksums") or {}).items():
                    if key in ("image", "mask") and file_checksum(self.data_dir / entry[key]) != digest:
                        raise BratsInputError(f"{self.data_dir / entry[key]}: its {CHECKSUM} differs from the one "
                                              f"in {self.data_dir / MANIFEST} (changed since conversion); convert "
                                              f"the data again")
            largest = [max(a, b) for a, b in zip(largest, image[0][:3])]
        return tuple(largest)


def _npy_layout(path) -> tuple[tuple, np.dtype]:
    """``(shape, dtype)`` of the ``.npy`` file ``path`` from its header alone, after checking that the file holds
    all the bytes they need; BratsInputError naming the file otherwise."""
    from .io import os_error_reason

    fmt = np.lib.format
    try:
        with open(path, "rb") as f:
            version = fmt.read_magic(f)
            read = {(1, 0): fmt.read_array_header_1_0, (2, 0): fmt.read_array_header_2_0}.get(version)
            if read is None:
                raise ValueError(f"unknown .npy format version {version}")
            shape, _, dtype = read(f)
            offset, size = f.tell(), os.fstat(f.fileno()).st_size
    except FileNotFoundError:
        raise BratsInputError(f"{path}: missing (listed in the manifest); convert the data again") from None
    except OSError as exc:
        raise BratsInputError(f"{path}: cannot be read ({os_error_reason(exc)})") from None
    except ValueError as exc:  # no .npy magic, a damaged header
        raise BratsInputError(f"{path}: not a readable .npy array ({' '.join(str(exc).split())}); convert the "
                              f"data again") from None
    if dtype.hasobject:
        raise BratsInputError(f"{path}: holds Python objects, not numbers; refusing to read it")
    need = offset + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if size != need:
        raise BratsInputError(f"{path}: {size} bytes where its header ({shape} {dtype}) needs {need} "
                              f"({'truncated' if size < need else 'extra bytes'}); convert the data again")
    return tuple(int(n) for n in shape), dtype


# ----------------------------------------------------------------------------- patches
def patch_start(shape, patch, rng, centre=None):
    """Start corner of a patch of size ``patch`` inside ``shape``: random, or around ``centre``.

    Where the volume is smaller than the patch the start is 0 (the patch is padded).
    """
    start = []
    for n, p, axis in zip(shape, patch, range(3)):
        hi = max(0, n - p)
        if centre is None:
            s = int(rng.integers(0, hi + 1))
        else:
            jitter = int(rng.integers(-p // 4, p // 4 + 1))
            s = int(np.clip(int(centre[axis]) - p // 2 + jitter, 0, hi))
        start.append(s)
    return tuple(start)


def crop_patch(volume, start, patch):
    """Cut ``volume[start:start+patch]`` (leading 3 axes), zero-padding past the edge."""
    sl = tuple(slice(s, s + p) for s, p in zip(start, patch))
    part = np.asarray(volume[sl])
    if part.shape[:3] == tuple(patch):
        return part
    out = np.zeros(tuple(patch) + volume.shape[3:], dtype=volume.dtype)
    out[tuple(slice(0, n) for n in part.shape[:3])] = part
    return out


def spatial_params(rng, prob, max_angle=15.0, scale=(0.85, 1.25)):
    """Random rotation (degrees, about each axis) and zoom for one patch, or ``None`` (probability ``1 - prob``).

    Each of rotation and zoom is drawn with probability ``prob``, as nnU-Net does.
    """
    rotate = rng.random() < prob
    zoom = rng.random() < prob
    if not (rotate or zoom):
        return None
    angles = rng.uniform(-max_angle, max_angle, size=3) if rotate else np.zeros(3)
    factor = float(rng.uniform(*scale)) if zoom else 1.0
    return angles, factor


def spatial_matrix(angles, factor):
    """3x3 matrix that maps patch offsets to volume offsets: rotation by ``angles`` (degrees), zoom ``factor``.

    A ``factor`` above 1 magnifies (the patch sees a smaller region of the volume).
    """
    m = np.eye(3)
    for axis, deg in enumerate(np.deg2rad(angles)):
        c, s = np.cos(deg), np.sin(deg)
        i, j = [a for a in range(3) if a != axis]
        r = np.eye(3)
        r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
        m = m @ r
    return m / factor


def crop_spatial(img, msk, centre, patch, matrix):
    """Patch of ``patch`` voxels around ``centre`` of ``img`` (``(X,Y,Z,C)``) and ``msk`` (``(X,Y,Z)``),
    resampled through ``matrix`` (linear for the image, nearest for the classes, zero outside)."""
    from scipy.ndimage import affine_transform

    half = (np.asarray(patch, dtype=np.float64) - 1) / 2
    offset = np.asarray(centre, dtype=np.float64) - matrix @ half
    x = np.empty(tuple(patch) + img.shape[3:], dtype=np.float32)
    for c in range(img.shape[-1]):
        x[..., c] = affine_transform(np.asarray(img[..., c], dtype=np.float32), matrix, offset,
                                     output_shape=tuple(patch), order=1, mode="constant", cval=0.0)
    y = affine_transform(np.asarray(msk), matrix, offset, output_shape=tuple(patch), order=0,
                         mode="constant", cval=0)
    return x, y


def augment_patch(x, y, rng, flip=True, intensity=True, gamma=True):
    """Random flips (each axis), per-channel intensity scale/shift and gamma; x ``(p,p,p,C)``, y ``(p,p,p)``."""
    if flip:
        for axis in range(3):
            if rng.random() < 0.5:
                x = np.flip(x, axis)
                y = np.flip(y, axis)
    x = np.ascontiguousarray(x, dtype=np.float32)
    y = np.ascontiguousarray(y)
    brain = np.any(x != 0, axis=-1)
    if gamma and rng.random() < 0.3:
        for c in range(x.shape[-1]):
            ch = x[..., c]
            lo, hi = float(ch.min()), float(ch.max())
            if hi > lo:
                g = float(np.exp(rng.uniform(np.log(0.7), np.log(1.5))))
                x[..., c] = ((ch - lo) / (hi - lo)) ** g * (hi - lo) + lo
    if intensity:
        scale = rng.uniform(0.9, 1.1, size=x.shape[-1]).astype(np.float32)
        shift = rng.uniform(-0.1, 0.1, size=x.shape[-1]).astype(np.float32)
        x = x * scale + shift
        x[~brain] = 0
    return x, y


def make_targets(classes: np.ndarray, output: str, task=None) -> np.ndarray:
    """Class map ``(...)`` -> float32 targets of ``task`` (default: the 2021 glioma task): one-hot
    ``(..., task.n_classes)`` (softmax) or the head regions ``(..., len(task.region_order))`` (regions)."""
    from .labels import one_hot

    output = check_output(output)
    task = get_task(task)
    if output == "softmax":
        return one_hot(classes, task.n_classes)
    return task.classes_to_regions(classes, task.region_order).astype(np.float32)


#: how a tumor-centred patch's centre is drawn (:class:`PatchDataset`)
FOREGROUND_SAMPLING = ("voxels", "classes")


def check_foreground_sampling(mode) -> str:
    """``mode`` when it is one of :data:`FOREGROUND_SAMPLING`; ValueError in one line otherwise."""
    if mode not in FOREGROUND_SAMPLING:
        raise ValueError(f"foreground sampling {mode!r}: use one of {', '.join(FOREGROUND_SAMPLING)}")
    return mode


class PatchDataset(keras.utils.PyDataset):
    """Batches of random patches from converted cases, for ``model.fit``.

    Args:
        data_dir: conversion folder (with ``manifest.json``).
        case_ids: cases to use (default: every labelled case).
        patch_size: int or 3-tuple (default 128); or 2 ints ``(H, W)``: axial slices for a 2D model, patches
            ``(H, W, 1)`` (one voxel along :data:`brats_keras.io.AXIAL_AXIS`, the superior axis) yielded without
            that axis, sampled by the same rules (a foreground patch is the slice through a tumor voxel; a spatial
            rotation turns the slice in its own plane only).
        batch_size: patches per batch.
        output: ``"softmax"`` (one-hot targets, one channel per class of the conversion's task) or ``"regions"``
            (the task's head regions, ``task.region_order``: WT, TC, ET for the 2021 glioma task).
        foreground_ratio: share of patches centred on a tumor voxel (nnU-Net uses 1/3).
        foreground_sampling: how such a centre is drawn: ``"voxels"``, any tumor voxel alike (of at most 20,000
            kept per class, :meth:`ConvertedCases.foreground`: a large edema is drawn far more often than a small
            enhancing rim); ``"classes"``, first one of the tumor classes the
            case holds, each alike, then a voxel of it (nnU-Net's way: rare classes are seen as often as common
            ones).
        augment: True: random flips and intensity changes, plus the spatial ones when ``spatial`` > 0; False: no
            augmentation at all (spatial included); None (default): True when ``augmentation`` is given, else
            the spatial augmentation alone (when ``spatial`` > 0).
        augmentation: the augmentation settings in one value, ``{"spatial": p, "intensity": mode}`` (either key
            may be left out), named as :class:`~brats_keras.training.TrainConfig`'s ``spatial_augment`` and
            ``intensity_augment``; in place of the two keywords below, which still work on their own.
        intensity: with ``augment``, ``"basic"`` (the intensity scale / shift and gamma above) or ``"strong"``
            (:func:`brats_keras.augment.intensity_augment`: noise, blur, brightness, contrast, simulated low
            resolution, gamma and inverted gamma, per channel, in place of the basic ones).
        spatial: probability of a random rotation (up to 15 degrees about each axis) and, independently,
            of a random zoom (0.85 to 1.25) of a training patch (0 = off).
        steps_per_epoch: batches per epoch (default: cases // batch_size, at least 1).
        seed: makes every batch reproducible.
        fixed: the same batches every epoch (validation): ``on_epoch_end`` leaves the epoch counter alone.
        workers / use_multiprocessing / max_queue_size: passed to ``keras.utils.PyDataset``.
    Yields:
        ``x`` ``(B, p, p, p, C)`` float32, ``y`` ``(B, p, p, p, task.output_channels(output))`` float32; with
        slices ``x`` ``(B, H, W, C)`` and ``y`` ``(B, H, W, task.output_channels(output))``.
    """

    def __init__(self, data_dir, case_ids=None, patch_size=128, batch_size=4, output="softmax",
                 foreground_ratio=0.33, augment=None, steps_per_epoch=None, seed=0, spatial=0.0,
                 workers=1, use_multiprocessing=False, max_queue_size=8, intensity="basic", fixed=False,
                 augmentation=None, foreground_sampling="voxels"):
        super().__init__(workers=workers, use_multiprocessing=use_multiprocessing, max_queue_size=max_queue_size)
        if not 0.0 <= foreground_ratio <= 1.0:
            raise ValueError(f"foreground_ratio must be in [0, 1], got {foreground_ratio}")
        self.cases = ConvertedCases(data_dir, case_ids)
        self.task = self.cases.task
        sizes = (patch_size,) * 3 if np.isscalar(patch_size) else tuple(int(p) for p in patch_size)
        self.slices = len(sizes) == 2  # a 2D model's axial slices
        self.patch = sizes[:AXIAL_AXIS] + (1,) + sizes[AXIAL_AXIS:] if self.slices else sizes
        self.batch_size = int(batch_size)
        self.output = check_output(output)
        self.foreground_ratio = float(foreground_ratio)
        self.foreground_sampling = check_foreground_sampling(foreground_sampling)
        if augmentation is not None:
            unknown = sorted(set(augmentation) - {"spatial", "intensity"})
            if unknown:
                raise ValueError(f"augmentation: unknown setting {', '.join(unknown)} (use spatial, intensity)")
            if spatial != 0.0 or intensity != "basic":
                raise ValueError("give the augmentation settings once: augmentation={...} or spatial= / intensity=")
            spatial, intensity = augmentation.get("spatial", 0.0), augmentation.get("intensity", "basic")
            augment = True if augment is None else augment
        self.augment = bool(augment)
        self.intensity = check_intensity_mode(intensity)
        self.spatial = float(spatial) if augment is not False else 0.0  # augment=False turns every kind off
        self.augmentation = {"spatial": self.spatial, "intensity": self.intensity}
        self.steps = int(steps_per_epoch or max(1, len(self.cases) // self.batch_size))
        self.seed = int(seed)
        self.epoch = 0
        self.fixed = bool(fixed)

    def __len__(self):
        return self.steps

    def on_epoch_end(self):
        if not self.fixed:
            self.epoch += 1

    def draw_centre(self, case_id, rng):
        """A tumor voxel of ``case_id`` to centre a patch on, drawn with ``rng`` as ``foreground_sampling`` says;
        None for a case without tumor."""
        if self.foreground_sampling == "classes":
            groups = self.cases.foreground_by_class(case_id)
            if not groups:
                return None
            fg = groups[int(rng.integers(len(groups)))]
        else:
            fg = self.cases.foreground(case_id)
            if not len(fg):
                return None
        return fg[int(rng.integers(len(fg)))]

    def sample(self, rng):
        """One ``(x, classes)`` patch pair drawn with ``rng``."""
        case_id = self.cases.case_ids[int(rng.integers(len(self.cases)))]
        img, msk = self.cases.image(case_id), self.cases.mask(case_id)
        centre = self.draw_centre(case_id, rng) if rng.random() < self.foreground_ratio else None
        start = patch_start(msk.shape, self.patch, rng, centre)
        params = spatial_params(rng, self.spatial) if self.spatial > 0 else None
        if params is not None and self.slices:  # a slice turns in its own plane: about the axial axis alone
            params = (np.where(np.arange(3) == AXIAL_AXIS, params[0], 0.0), params[1])
        if params is None:
            x = crop_patch(img, start, self.patch).astype(np.float32)
            y = crop_patch(msk, start, self.patch)
        else:
            middle = [s + (p - 1) / 2 for s, p in zip(start, self.patch)]
            x, y = crop_spatial(img, msk, middle, self.patch, spatial_matrix(*params))
        if self.augment:
            strong = self.intensity == "strong"
            x, y = augment_patch(x, y, rng, intensity=not strong, gamma=not strong)
            if strong:
                x = intensity_augment(x, rng)
        return x, y

    def __getitem__(self, idx):
        if idx >= self.steps or idx < -self.steps:
            raise IndexError(idx)
        rng = np.random.default_rng([self.seed, self.epoch, idx % self.steps])
        xs, ys = zip(*(self.sample(rng) for _ in range(self.batch_size)))
        x = np.stack(xs)
        y = make_targets(np.stack(ys), self.output, self.task)
        if self.slices:  # a 2D model's batch: without the axial axis, 1 voxel thick
            x, y = np.squeeze(x, 1 + AXIAL_AXIS), np.squeeze(y, 1 + AXIAL_AXIS)
        return x, y


class WrappedDataset(keras.utils.PyDataset):
    """A ``keras.utils.PyDataset`` that changes the batches of another, ``dataset``, and keeps the rest: its
    length, its epochs (``on_epoch_end`` is passed on) and its loader settings (``workers``,
    ``use_multiprocessing``, ``max_queue_size``). A subclass defines ``__getitem__`` from ``self.dataset[idx]``
    (:class:`brats_keras.deep_supervision.RepeatTargets`, :class:`brats_keras.distributed.BatchSlice`)."""

    def __init__(self, dataset):
        super().__init__(workers=dataset.workers, use_multiprocessing=dataset.use_multiprocessing,
                         max_queue_size=dataset.max_queue_size)
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def on_epoch_end(self):
        self.dataset.on_epoch_end()


def tf_dataset(patch_dataset: PatchDataset, parallel_calls=None, prefetch=2):
    """A ``tf.data.Dataset`` over the same batches, read in parallel and prefetched (TensorFlow backend only).

    Batch ``i`` of an epoch equals ``patch_dataset[i]`` for that epoch; the epoch counter advances
    each time the dataset is iterated again (as ``model.fit`` does every epoch).
    """
    if keras.backend.backend() != "tensorflow":
        raise RuntimeError("tf_dataset needs the TensorFlow backend; use the PatchDataset itself with JAX")
    import tensorflow as tf

    pd = patch_dataset
    x0, y0 = pd[0]
    start = {"epoch": pd.epoch}

    def next_epoch():
        epoch = start["epoch"]
        start["epoch"] += 1
        return np.int64(epoch)

    def load(epoch, i):
        def fn(e, j):
            pd.epoch = int(e)
            return pd[int(j)]

        x, y = tf.numpy_function(fn, [epoch, i], [tf.float32, tf.float32])
        x.set_shape(x0.shape)
        y.set_shape(y0.shape)
        return x, y

    def epoch_indices(_):
        epoch = tf.numpy_function(next_epoch, [], tf.int64)
        return tf.data.Dataset.range(len(pd)).map(lambda i: (epoch, i))

    ds = tf.data.Dataset.range(1).flat_map(epoch_indices)
    ds = ds.map(load, num_parallel_calls=parallel_calls or tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(prefetch)
