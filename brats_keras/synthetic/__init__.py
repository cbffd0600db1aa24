"""Synthetic BraTS-like cases: skull-stripped brains with gliomas, made from a seed.

A case is a deformed-ellipsoid brain in the BraTS box (240 x 240 x 155 voxels of
1 mm, with the axis flips and origin of BraTS 2021 files) made of white matter, a
folded grey-matter cortex, CSF around it, in the sulci, the midline fissure and two
lateral ventricles, deep grey nuclei, and 1 to 3 tumours. Each tumour is, from the
inside out, a necrotic core (label 1, NCR), an irregular enhancing rim (label 4,
ET) and an oedema envelope (label 2, ED) that reaches further into white matter
than into grey matter. The four modalities follow the usual contrasts:

========  ======================  ===================================================
modality  healthy tissue          tumour
========  ======================  ===================================================
t1        WM > GM > CSF (dark)    NCR dark, ET medium, ED slightly darker than WM
t1ce      as t1                   ET bright (enhancement), NCR dark
t2        CSF bright, GM > WM     NCR bright, ED bright, ET medium
flair     CSF dark, GM > WM       ED bright, NCR and ET medium
========  ======================  ===================================================

Each modality gets its own smooth multiplicative bias field (+-15 %), Rician
noise (sigma 3 % of the modality scale), a random gain (+-10 %) and a
modality-specific scale (``MODALITY_SCALE``; values stay below about 1600), and is
stored as int16 that is non-zero exactly on the brain mask. Tissue intensities
also vary by +-5 % from case to case, and tumours carry a smooth heterogeneity.

Every random shape is a low-resolution Gaussian field upsampled with cubic splines
(the result of ``scipy.ndimage.zoom(order=3)``, computed as three small matrix
products, see ``upsample``), so a full-size case takes well under a second of
CPU (one thread). Where other processes share the cores, set
``OPENBLAS_NUM_THREADS=1``: the small matrix products gain nothing from threads
and lose a lot to oversubscription (``make_dataset`` does this for its workers).
Everything is numpy/scipy/nibabel: this module never imports Keras.

Labels present: every tumour has oedema and an enhancing part, so the regions WT,
TC and ET are non-empty in every case with a tumour. A fraction ``P_NO_NECROSIS``
(20 %) of tumours have no necrotic core (a solid enhancing nodule); a case lacks
label 1 when all its tumours drew that: 20 %, 4 % or 0.8 % of cases with 1, 2 or 3
tumours, about 8 % with the random count (10 % measured at full size, more in
small boxes, where a small core may be all rim). Models and metrics must accept a
case without NCR. ``n_tumors=0`` gives a healthy brain with an empty label map.
Labels nest by construction: each face neighbour of a core voxel (NCR or ET) is
tumour, and each face neighbour of a necrotic voxel is core.

Arrays are ``(D, H, W)`` = ``(x, y, z)`` in the file's voxel order, like BraTS:
an axial slice is ``volume[:, :, k]``.

Tasks (``task=``, :mod:`brats_keras.tasks`): the glioma family (``glioma2021``, the default, ``brats2023``,
``msd-task01`` and any task of their classes) draws the tumours above and writes them with the task's own values
(the same arrays for every one of them). Two tasks draw other structures from the same tumours, every tumour with
a fluid compartment where the glioma's necrotic core is (the core's deepest voxel when the core is all rim) and
part of its rim non-enhancing (the side of a random plane through the core, bent by a smooth field):

* ``glioma2024-post``: the fluid is the resection cavity (RC, CSF-like: dark on T1 and T1ce, bright on T2, dark
  on FLAIR but less than CSF), inside an enhancing rim (ET) of which about 30 % is non-enhancing tumour core
  (NETC), in FLAIR hyperintensity (SNFH);
* ``pediatric2024``: the fluid is a cyst (CC: dark on T1, bright on T2, brighter than CSF on FLAIR), in a core
  about 60 % non-enhancing (NETC), the rest enhancing (ET), in oedema (ED).

A task of one label (the BraTS 2024 meningioma radiotherapy task's gross tumour volume) draws the glioma tumours
and labels their core (the enhancing rim and the necrosis within it).

So every case with a tumour holds every label of its task. Files are named the way
:func:`brats_keras.tasks.detect_task` recognises the task (:data:`TASK_FILES`).
"""
from __future__ import annotations

import contextlib
import re
from concurrent.futures import as_completed
from pathlib import Path

import numpy as np

from ..io import atomic_write
from ..labels import MODALITIES
from ..pool import process_pool
from ..tasks import GLIOMA_2021, get_task
from .shapes import (BRATS_SHAPE, _F32, _anatomy, _check_seed, _check_shape, _ensure_fluid, _noise, _rim_split, _sl,
                     _tumour, brats_affine,
                     upsample)  # noqa: F401  (upsample: importable from brats_keras.synthetic, as before)

#: names of the tissue map returned by ``make_case(..., with_tissues=True)``
TISSUES = ("background", "CSF", "GM", "WM")
#: the files of a case, in BraTS 2021 naming: ``<case_id>_<suffix>.nii.gz``
FILE_SUFFIXES = MODALITIES + ("seg",)
#: chance that a tumour has no necrotic core
P_NO_NECROSIS = 0.2
#: seed of case ``i`` of ``make_dataset(seed=s)`` is ``s * SEED_STRIDE + i``
SEED_STRIDE = 100003

# Relative signal of each tissue class in each modality (about 1 = brightest).
# Oedema fades from its inner value (next to the core) to its outer value.
_CONTRAST = {
    #         CSF    GM    WM    ED in  ED out  ET    NCR
    "flair": (0.10, 0.52, 0.42, 0.95, 0.78, 0.68, 0.55),
    "t1":    (0.22, 0.58, 0.80, 0.52, 0.62, 0.60, 0.25),
    "t1ce":  (0.24, 0.58, 0.78, 0.54, 0.64, 1.15, 0.28),
    "t2":    (1.00, 0.60, 0.42, 0.88, 0.68, 0.64, 0.95),
}
#: int16 value of a relative signal of 1 in each modality (before a random +-10 % gain)
MODALITY_SCALE = {"flair": 600.0, "t1": 700.0, "t1ce": 900.0, "t2": 1100.0}
#: the tasks whose tumours hold a fluid compartment: the label names of their oedema, fluid and non-enhancing core,
#: the share of the core's rim that does not enhance, and the relative signal of the fluid and of the
#: non-enhancing core in each modality (the fluid replaces the necrotic core's column of ``_CONTRAST``)
_FLUID_TASKS = {
    "glioma2024-post": {"edema": "SNFH", "fluid": "RC", "netc": "NETC", "netc_share": 0.3,
                        #         fluid  NETC
                        "signal": {"flair": (0.22, 0.72), "t1": (0.22, 0.50), "t1ce": (0.24, 0.52),
                                   "t2": (1.00, 0.80)}},
    "pediatric2024": {"edema": "ED", "fluid": "CC", "netc": "NETC", "netc_share": 0.6,
                      "signal": {"flair": (0.40, 0.72), "t1": (0.28, 0.50), "t1ce": (0.30, 0.52),
                                 "t2": (1.00, 0.80)}},
}
#: how the files of a task's synthetic cases are named: ``(default prefix, case id, naming)`` with the case id
#: formatted from ``prefix`` and the case's number ``i``; naming ``"2021"`` (``<id>_flair.nii.gz``), ``"2023"``
#: (``<id>-t2f.nii.gz``) or ``"plain"`` (``flair.nii.gz`` in a folder named by the case id). A Decathlon case is
#: written as plain 3-D files (the Decathlon's own 4-D layout is for its readers): convert it with
#: ``--task msd-task01``; so is any task not listed
TASK_FILES = {
    "glioma2021": ("Synth", "{prefix}_{i:05d}", "2021"),
    "brats2023": ("BraTS-GLI", "{prefix}-{i:05d}-000", "2023"),
    "glioma2024-post": ("BraTS-GLI", "{prefix}-{i:05d}-100", "2023"),
    "pediatric2024": ("BraTS-PED", "{prefix}-{i:05d}-000", "2023"),
}
_PLAIN_FILES = ("Synth", "{prefix}_{i:05d}", "plain")
_SUFFIX_2023 = {"flair": "t2f", "t1": "t1n", "t1ce": "t1c", "t2": "t2w", "seg": "seg"}
_NOISE = 0.03  # Rician noise sigma, relative to the modality scale
_BIAS = 0.15  # half range of the multiplicative bias field


# --------------------------------------------------------------------------- cases
def make_case(seed: int, shape=BRATS_SHAPE, n_tumors: int | None = None, with_tissues: bool = False,
              task=None) -> dict:
    """Make one synthetic BraTS-like case of ``task`` from ``seed``; the same seed gives the same arrays.

    Args:
        seed: non-negative integer seeding ``np.random.default_rng``.
        shape: volume shape ``(D, H, W)`` = ``(x, y, z)``, at least 32 each; brain and
            tumour sizes scale with it (BraTS: 240 x 240 x 155).
        n_tumors: number of tumours, 0 to 5; ``None`` draws 1, 2 or 3.
        with_tissues: also return ``"tissues"``, the healthy-tissue map under the
            tumours (uint8: 0 outside the brain, 1 CSF, 2 GM, 3 WM, see ``TISSUES``).
        task: the task whose structures are drawn and whose label values are written (module docstring; a name,
            task file or :class:`~brats_keras.tasks.Task`); default the 2021 glioma task.
    Returns:
        ``{"flair", "t1", "t1ce", "t2"}``: int16 volumes of ``shape``, zero outside the
        brain and at least 1 inside; ``"seg"``: uint8 labels of the task (2021: 0/1/2/4), only
        inside the brain; ``"affine"``: the 4 x 4 float64 BraTS affine (``brats_affine``).
    Raises:
        ValueError for a negative or non-integer seed, a bad shape or ``n_tumors``, or a task with other classes
        than the glioma family's that is not drawn here.
    """
    task = get_task(task)
    fluid = _fluid_of(task)
    seed = _check_seed(seed)
    shape = _check_shape(shape)
    if n_tumors is not None and (
        isinstance(n_tumors, bool) or not isinstance(n_tumors, (int, np.integer)) or not 0 <= n_tumors <= 5
    ):
        raise ValueError(f"n_tumors must be None or an integer from 0 to 5, got {n_tumors!r}")
    rng = np.random.default_rng(seed)
    # size of this box relative to BraTS: brain and tumours scale with it
    scale = float(np.prod(np.asarray(shape) / np.asarray(BRATS_SHAPE)) ** (1 / 3))
    anat = _anatomy(rng, shape, scale)

    n = int(rng.integers(1, 4)) if n_tumors is None else int(n_tumors)
    taken = np.zeros(anat["brain"].shape, dtype=bool)
    # every tumour of a fluid task has a core to hold its fluid (the draw is made either way)
    tumours = [_tumour(rng, anat, scale, taken, rng.uniform() >= P_NO_NECROSIS or fluid is not None)
               for _ in range(n)]
    del taken
    tbox, (wt, tc, ncr, q) = _merge_tumours(tumours)
    if fluid is not None:
        _ensure_fluid(tc, ncr)
        netc = _rim_split(rng, tc, ncr, fluid["netc_share"], scale)
    weights = _tumour_weights(rng, wt, tc, ncr, q, scale, bool(tumours))
    del q
    if fluid is None:
        contrast = {m: np.asarray(_CONTRAST[m]) * rng.uniform(0.95, 1.05, 7) for m in MODALITIES}
        coef = np.array([[c[4], c[3] - c[4], c[5], c[6]] for c in contrast.values()], dtype=_F32)
        if len(task.labels) == 1:  # the tumour core
            layers = [(tc, task.label_values[0])]
        else:
            labels = task.to_labels([2, 3, 1])  # ED, ET, NCR: painted in this order (2021: 2, 4, 1)
            layers = [(wt, labels[0]), (tc, labels[1]), (ncr, labels[2])]
    else:
        # the fluid takes the necrotic core's column, the non-enhancing rim one more: weights ED, ED * q,
        # enhancing rim, fluid, non-enhancing rim
        contrast = {m: np.append(_CONTRAST[m][:6], fluid["signal"][m]) * rng.uniform(0.95, 1.05, 8)
                    for m in MODALITIES}
        coef = np.array([[c[4], c[3] - c[4], c[5], c[6], c[7]] for c in contrast.values()], dtype=_F32)
        weights = np.concatenate([weights, weights[2:3] * netc])
        weights[2] *= 1 - netc
        value = dict(zip(task.class_names[1:], task.label_values))
        layers = [(wt, value[fluid["edema"]]), (tc, value["ET"]), (np.minimum(tc, netc), value[fluid["netc"]]),
                  (ncr, value[fluid["fluid"]])]
    tumour_signal = (coef @ weights.reshape(len(weights), -1)).reshape((4,) + weights.shape[1:])
    del weights

    out = _modalities(rng, shape, anat, contrast, _sl(tbox), np.subtract(1, wt), tumour_signal, scale)
    out["seg"] = _label_map(shape, anat, tbox, layers) if tumours else np.zeros(shape, dtype=np.uint8)
    out["affine"] = brats_affine(shape)
    if with_tissues:
        out["tissues"] = _tissue_map(shape, anat)
    return out


def check_task(task=None):
    """The :class:`~brats_keras.tasks.Task` ``task`` names (:func:`brats_keras.tasks.get_task`) when synthetic cases
    of it can be drawn; ValueError (TaskError for a task that cannot be read) in one line otherwise."""
    task = get_task(task)
    _fluid_of(task)
    return task


def _fluid_of(task):
    """The fluid compartment of ``task``'s tumours (:data:`_FLUID_TASKS`), or None for the glioma family and tasks
    of one label; a ValueError for a task drawn by none of them."""
    fluid = _FLUID_TASKS.get(task.name)
    if fluid is None and not task.same_classes(GLIOMA_2021) and len(task.labels) != 1:
        raise ValueError(f"no synthetic cases of task {task.name}: they are drawn for the glioma family (the classes "
                         f"of glioma2021), for {', '.join(_FLUID_TASKS)} and for tasks of one label")
    return fluid


def _merge_tumours(tumours):
    """The box holding every tumour (crop voxels) and their memberships combined by maximum in it:
    ``(tbox, (wt, tc, ncr, q))``."""
    if tumours:
        tbox = tuple((min(t[0][a][0] for t in tumours), max(t[0][a][1] for t in tumours)) for a in range(3))
    else:
        tbox = ((0, 0), (0, 0), (0, 0))
    tshape = tuple(hi - lo for lo, hi in tbox)
    merged = tuple(np.zeros(tshape, dtype=_F32) for _ in range(4))
    for tb, *parts in tumours:
        sl = _sl(tb, [lo for lo, _ in tbox])
        for acc, part in zip(merged, parts):
            np.maximum(acc[sl], part, out=acc[sl])
    return tbox, merged


def _tumour_weights(rng, wt, tc, ncr, q, scale, any_tumour: bool):
    """Weights ``(4, ...)`` of the tumour signal: ED, ED * q, ET, NCR, with a smooth heterogeneity.

    Each modality's tumour signal is its intensities of (outer ED, inner - outer ED, ET, NCR)
    times these weights.
    """
    hetero = _noise(rng, wt.shape, 5 * scale) if any_tumour else np.zeros(wt.shape, _F32)
    weights = np.empty((4,) + wt.shape, dtype=_F32)
    np.subtract(wt, tc, out=weights[0])
    weights[0] *= 1 + _F32(0.06) * hetero
    np.multiply(weights[0], q, out=weights[1])
    np.subtract(tc, ncr, out=weights[2])
    weights[2] *= 1 + _F32(0.1) * hetero
    np.multiply(ncr, 1 + _F32(0.08) * hetero, out=weights[3])
    return weights


def _modalities(rng, shape, anat, contrast, tsl, tissue_left, tumour_signal, scale) -> dict:
    """The four int16 volumes: tissue and tumour signal, times texture, bias field and gain, plus Rician noise."""
    crop = anat["brain"].shape
    texture = _noise(rng, crop, 4 * scale)
    texture *= _F32(0.025)
    texture += _F32(1.0)
    img = np.empty(crop, dtype=_F32)
    tmp = np.empty(crop, dtype=_F32)
    out = {}
    for k, mod in enumerate(MODALITIES):
        i_csf, i_gm, i_wm = (_F32(v) for v in contrast[mod][:3])
        np.multiply(anat["gm"], i_gm - i_csf, out=img)
        np.multiply(anat["wm"], i_wm - i_csf, out=tmp)
        img += tmp
        img += i_csf
        img[tsl] *= tissue_left
        img[tsl] += tumour_signal[k]
        _bias_and_gain(rng, img, texture, mod, scale)
        _rician_noise(rng, img, tmp, _F32(_NOISE * MODALITY_SCALE[mod]))
        np.rint(img, out=img)
        np.clip(img, 1, np.iinfo(np.int16).max, out=img)
        vol = np.zeros(shape, dtype=np.int16)
        np.copyto(vol[_sl(anat["box"])], img, casting="unsafe", where=anat["brain"])
        out[mod] = vol
    return out


def _bias_and_gain(rng, img, texture, mod: str, scale) -> None:
    """Multiply ``img`` in place by the texture, a smooth bias field (+-15 %) and the modality's gain."""
    gain = MODALITY_SCALE[mod] * rng.uniform(0.9, 1.1)
    bias = _noise(rng, img.shape, 60 * scale)
    np.clip(bias, -1.25, 1.25, out=bias)
    bias *= _F32(gain * _BIAS / 1.25)
    bias += _F32(gain)
    bias *= texture
    img *= bias


def _rician_noise(rng, img, tmp, sigma) -> None:
    """Rician noise in place: the magnitude of the signal plus complex Gaussian noise of ``sigma``."""
    rng.standard_normal(dtype=_F32, out=tmp)
    tmp *= sigma
    img += tmp
    np.square(img, out=img)
    rng.standard_normal(dtype=_F32, out=tmp)
    tmp *= sigma
    np.square(tmp, out=tmp)
    img += tmp
    np.sqrt(img, out=img)


def _label_map(shape, anat, tbox, layers) -> np.ndarray:
    """The label map (uint8) of the merged tumours, only inside the brain: each ``(membership, value)`` of
    ``layers`` paints its value where the membership (tumour box) is at least 0.5, later ones over earlier ones."""
    box = anat["box"]
    seg = np.zeros(shape, dtype=np.uint8)
    lab = np.zeros(layers[0][0].shape, dtype=np.uint8)
    for member, value in layers:
        lab[member >= 0.5] = value
    lab[~anat["brain"][_sl(tbox)]] = 0
    seg[_sl(tuple((b0 + lo, b0 + hi) for (b0, _), (lo, hi) in zip(box, tbox)))] = lab
    return seg


def _tissue_map(shape, anat) -> np.ndarray:
    """The healthy tissue under the tumours: uint8, 0 outside the brain, 1 CSF, 2 GM, 3 WM."""
    tissues = np.zeros(shape, dtype=np.uint8)
    t = np.argmax(np.stack([anat["csf"], anat["gm"], anat["wm"]]), axis=0).astype(np.uint8) + 1
    t[~anat["brain"]] = 0
    tissues[_sl(anat["box"])] = t
    return tissues


# --------------------------------------------------------------------------- files
_CASE_ID = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")


def _check_case_id(case_id) -> str:
    if not isinstance(case_id, str) or not _CASE_ID.fullmatch(case_id):
        raise ValueError(
            f"case_id must be a folder name of letters, digits, '_', '-' and '.' "
            f"not starting with '.', got {case_id!r}"
        )
    return case_id


def case_files(out_dir, case_id: str, compress: bool = True, naming: str = "2021") -> dict[str, Path]:
    """Paths of the five files of a case, ``{suffix: path}`` for each of ``FILE_SUFFIXES``: in ``naming``
    ``"2021"`` ``out_dir/<case_id>/<case_id>_<suffix>.nii.gz``, ``"2023"`` ``<case_id>-<t2f|t1n|t1c|t2w|seg>``,
    ``"plain"`` ``<suffix>.nii.gz``."""
    case_id = _check_case_id(case_id)
    ext = ".nii.gz" if compress else ".nii"
    folder = Path(out_dir) / case_id
    if naming == "2023":
        return {suffix: folder / f"{case_id}-{_SUFFIX_2023[suffix]}{ext}" for suffix in FILE_SUFFIXES}
    if naming == "plain":
        return {suffix: folder / f"{suffix}{ext}" for suffix in FILE_SUFFIXES}
    return {suffix: folder / f"{case_id}_{suffix}{ext}" for suffix in FILE_SUFFIXES}


def task_files(task=None) -> tuple:
    """``(default prefix, case id format, naming)`` of a task's synthetic cases (:data:`TASK_FILES`)."""
    return TASK_FILES.get(get_task(task).name, _PLAIN_FILES)


def _save_atomic(img, path: Path) -> None:
    """Save a NIfTI image through a hidden temporary file beside ``path`` and a rename (io.atomic_write);
    the temporary name ends in ``.tmp.nii.gz`` (or ``.tmp.nii``), which tells nibabel how to write it."""
    ext = ".nii.gz" if path.name.endswith(".nii.gz") else ".nii"
    atomic_write(path, img.to_filename, suffix=".tmp" + ext)


def write_case(out_dir, case_id: str, seed: int, shape=BRATS_SHAPE, compress: bool = True, task=None) -> Path:
    """Make the case of ``seed`` and ``task`` and write it in the task's naming (:func:`task_files`); return the
    folder.

    Writes ``out_dir/<case_id>/<case_id>_{flair,t1,t1ce,t2,seg}.nii.gz`` for the 2021 task (``.nii``
    when ``compress`` is false; :func:`case_files` for the others): int16 modalities, a uint8 label map (the
    task's values: 0/1/2/4 for 2021) and the BraTS affine in both qform and sform. Each file goes to a hidden
    temporary name in the same folder and is renamed into place, so a killed run leaves only
    whole files; the label map is written last.

    Raises:
        ValueError for a bad ``case_id`` (it must be a plain folder name), seed, shape or task.
    """
    import nibabel as nib

    paths = case_files(out_dir, case_id, compress, task_files(task)[2])
    case = make_case(seed, shape, task=task)
    folder = paths["seg"].parent
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob(".*.tmp.nii*"):  # left by a killed run
        with contextlib.suppress(OSError):
            stale.unlink()
    for suffix, path in paths.items():
        img = nib.Nifti1Image(case[suffix], case["affine"])
        img.header.set_qform(case["affine"], code=1)
        img.header.set_sform(case["affine"], code=1)
        img.header.set_xyzt_units("mm", "sec")
        _save_atomic(img, path)
    return folder


def _existing_shape(paths: dict[str, Path]):
    """Shape of a complete case on disk, or None when a file is missing."""
    if not all(p.is_file() for p in paths.values()):
        return None
    import nibabel as nib

    return tuple(int(n) for n in nib.load(paths["seg"]).shape)


def make_dataset(
    out_dir,
    n_cases: int,
    seed: int = 0,
    shape=BRATS_SHAPE,
    prefix: str | None = None,
    workers: int = 1,
    progress: bool = True,
    compress: bool = True,
    task=None,
) -> list[Path]:
    """Write ``n_cases`` synthetic cases of ``task`` in its naming; return their folders, in order.

    Case ``i`` is ``<prefix>_<i:05d>`` (``Synth_00000``, ...) for the 2021 task, ``BraTS-GLI-<i:05d>-100`` for
    the post-treatment one and so on (:data:`TASK_FILES`), made with seed
    ``seed * SEED_STRIDE + i``, so a dataset depends only on ``seed``, ``shape`` and ``task``,
    never on ``workers``. Cases whose five files already exist are skipped, so an
    interrupted run picks up where it stopped.

    Args:
        out_dir: folder that receives one sub-folder per case.
        n_cases: number of cases, 0 or more.
        seed: non-negative dataset seed.
        shape: volume shape of every case (see ``make_case``).
        prefix: case-id prefix (letters, digits, ``_``, ``-``, ``.``); default the task's (``Synth`` for 2021).
        workers: processes; 1 writes in this process, more use :func:`brats_keras.pool.process_pool`,
            whose workers run BLAS single-threaded (unless the environment says otherwise) and end
            with this process.
        progress: show a tqdm progress bar.
        compress: ``.nii.gz`` files (else ``.nii``).
        task: the cases' task (:func:`make_case`); default the 2021 glioma task.
    Raises:
        ValueError for a bad argument, or when a complete case in ``out_dir`` has
        another shape (it was made by another call: use a new folder).
    """
    from tqdm.auto import tqdm

    if isinstance(n_cases, bool) or not isinstance(n_cases, (int, np.integer)) or n_cases < 0:
        raise ValueError(f"n_cases must be a non-negative integer, got {n_cases!r}")
    if isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers < 1:
        raise ValueError(f"workers must be a positive integer, got {workers!r}")
    seed = _check_seed(seed)
    shape = _check_shape(shape)
    task = check_task(task)  # a task with no synthetic cases: refused before writing
    default_prefix, id_format, naming = task_files(task)
    ids = [_check_case_id(id_format.format(prefix=default_prefix if prefix is None else prefix, i=i))
           for i in range(int(n_cases))]
    todo = []
    for i, case_id in enumerate(ids):
        found = _existing_shape(case_files(out_dir, case_id, compress, naming))
        if found is None:
            todo.append(i)
        elif found != shape:
            raise ValueError(
                f"{Path(out_dir) / case_id} holds a case of shape {found}, not {shape}: "
                "write to another folder or delete it"
            )
    jobs = [(out_dir, ids[i], seed * SEED_STRIDE + i, shape, compress, task) for i in todo]
    with tqdm(total=len(ids), initial=len(ids) - len(todo), desc="synthetic cases", unit="case",
              disable=not progress) as bar:
        if workers == 1 or len(jobs) <= 1:
            for job in jobs:
                write_case(*job)
                bar.update()
        else:
            with process_pool(min(workers, len(jobs)), single_threaded=True) as pool:
                futures = [pool.submit(write_case, *job) for job in jobs]
                for future in as_completed(futures):
                    future.result()  # re-raises a worker's error
                    bar.update()
    return [Path(out_dir) / case_id for case_id in ids]
