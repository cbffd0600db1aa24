"""What a case page shows, read and checked: the case's modalities, a prediction and a truth on its grid, their
scores and region volumes, and the page's small copies of the volumes (cropped to the brain, quantised to uint8,
gzipped NIfTI in base64).

The scores and volumes are always computed on the full-resolution class maps; the page's copies only draw.
"""
from __future__ import annotations

import base64
import gzip
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import io as bio
from ..evaluation import grid_difference, score_case
from ..evaluation.folders import read_task_labels
from ..geometry import describe_grid, resampled_note
from ..labels import MODALITIES
from ..preprocessing import box_slices, brain_crop_box
from ..tasks import Task, get_task

#: the share of brain voxels at or below the brightest grey of a page's image copy (the rest are clipped to it)
IMAGE_PERCENTILE = 99.5
#: disagreement map values: where the prediction and the truth differ
DISAGREEMENT = {1: "false positive", 2: "false negative", 3: "other class"}


@dataclass
class CaseView:
    """One case read for a page: full-resolution arrays on the case's grid.

    Attributes:
        case_id: the case's name.
        modalities: modality name -> ``(D, H, W)`` volume on the working grid (as stored where the case is on it).
        affine: the working grid's (the first modality's own where the case is on it).
        zooms: voxel size in mm of the case's own grid, whose voxels the scores and volumes count.
        prediction, truth: class maps ``(D, H, W)`` uint8 (0 .. ``task.n_classes - 1``) on the working grid, or
            None.
        scores: Dice / HD95 / sensitivity / specificity per scored region of the task
            (:func:`brats_keras.evaluation.score_case`) when both maps are given, else None.
        notes: one-line remarks (e.g. a label map whose origin differs from the images', a resampled case).
        task: the :class:`~brats_keras.tasks.Task` whose classes the maps hold (names, colours, regions).
        own: ``{"prediction": classes, "truth": classes}`` on the case's own grid (the same arrays as
            ``prediction`` / ``truth`` where the case is on the working grid): what volumes are counted on.
    """

    case_id: str
    modalities: dict
    affine: np.ndarray
    zooms: tuple
    prediction: np.ndarray | None = None
    truth: np.ndarray | None = None
    scores: dict | None = None
    notes: list = field(default_factory=list)
    task: Task = field(default_factory=get_task)
    own: dict = field(default_factory=dict)

    @property
    def voxel_ml(self) -> float:
        return float(np.prod(self.zooms)) / 1000.0

    def region_volumes(self) -> dict:
        """``{"prediction": {region: ml}, "truth": {...}}`` for the maps given, per scored region of the task
        (default task: WT, TC, ET), counted on the case's own grid."""
        out = {}
        for name in ("prediction", "truth"):
            classes = self.own.get(name, getattr(self, name))
            if classes is not None:
                counts = np.bincount(classes.ravel(), minlength=self.task.n_classes)
                out[name] = {r: round(float(counts[list(self.task.region_classes(r))].sum()) * self.voxel_ml, 3)
                             for r in self.task.region_names}
        return out


def _label_map(source, grid, what: str, case: bio.Case, task):
    """``(classes, task, note)`` of a prediction or truth given as a label-map path (its values read for ``task``,
    or detected from the case's naming and the values when None: :func:`brats_keras.io.read_labels`; a prediction
    for a known task may hold the values of any task with its classes, as ``evaluate`` reads it) or a class array,
    checked against the case's own grid (BratsInputError naming the file and the difference)."""
    if isinstance(source, (str, Path)):
        if what == "prediction" and task is not None:  # as evaluate reads one: in the values of any task of the
            # family (a 2021-named case predicted with --labels 2023 stores ET as 3)
            (classes, img), own = read_task_labels(source, task), task
        else:
            classes, img, own = bio.read_labels(source, task, case=case)
        problem, note = grid_difference(img, grid)
        if problem:
            raise bio.BratsInputError(f"{source}: {what} is not on the grid of case {case.case_id}: {problem}")
        return classes, own, note and f"{source}: {note}"
    classes = np.asarray(source)
    if classes.shape != grid.shape:
        raise bio.BratsInputError(f"{case.case_id}: {what} of shape {classes.shape} is not on the case's grid "
                                  f"{grid.shape}")
    task = get_task(task)
    last = task.n_classes - 1
    if classes.size and (classes.min() < 0 or classes.max() > last):
        raise bio.BratsInputError(f"{case.case_id}: {what} holds values outside the classes 0..{last}")
    return classes.astype(np.uint8, copy=False), task, None


def read_case_view(case: bio.Case, prediction=None, truth=None, scores=None, modalities=MODALITIES,
                   task=None) -> CaseView:
    """Read a case for its page: its modalities through :func:`brats_keras.io.read_modalities` (onto the working
    grid), its maps on its own grid (scored and counted there) and on the working grid (drawn).

    Args:
        case: a :class:`brats_keras.io.Case` (``find_cases``).
        prediction, truth: a label map path (the task's values, or another member of its family's) or a class map
            ``(D, H, W)`` on the case's own grid, or None.
        scores: the case's scores when already computed (``evaluate_folder(...)["cases"][case_id]``); None scores
            the prediction against the truth here (both given), exactly as ``evaluate`` does.
        modalities: the modalities shown (all four by default; each must be there).
        task: the task whose classes the maps hold and whose regions are scored (a
            :class:`~brats_keras.tasks.Task`, its name or file); None: the one the truth's values and the case's
            naming say (:func:`brats_keras.tasks.detect_task`, as ``evaluate`` detects it), else the
            prediction's, else the default task.
    Raises:
        BratsInputError: a missing or unreadable modality, a prediction / truth on another grid (shape,
        orientation, voxel size) than the case's images, or values of no task that fits, each in one line naming
        the file.
    """
    volumes = bio.read_modalities(case, modalities)
    task = None if task is None else get_task(task)
    source = volumes.source
    view = CaseView(case.case_id, dict(zip(modalities, volumes.arrays)), np.asarray(volumes.affine, float),
                    tuple(float(z) for z in source.header.get_zooms()[:3]))
    if volumes.regrid is not None:
        resampled = resampled_note(describe_grid(source.shape, source.affine), volumes.arrays[0].shape)
        view.notes.append(f"{case.case_id}: drawn {resampled}; the scores and volumes count its own voxels")
    for name, source_map in (("truth", truth), ("prediction", prediction)):  # the truth's task first
        if source_map is None:
            continue
        classes, own, note = _label_map(source_map, source, name, case, task)
        task = task or own
        view.own[name] = classes
        setattr(view, name, classes if volumes.regrid is None else volumes.regrid.to_working(classes, order=0))
        if note:
            view.notes.append(note)
    view.task = get_task(task)
    if view.prediction is not None and view.truth is not None:
        view.scores = scores if scores is not None else score_case(view.own["prediction"], view.own["truth"],
                                                                   view.zooms, report=False, task=view.task)
    return view


# ----------------------------------------------------------------------------- the page's copies
def page_box(view: CaseView) -> tuple:
    """The crop box of the page's copies: the brain's box (``brain_crop_box``) grown to hold every labelled voxel."""
    box = [list(ab) for ab in brain_crop_box(list(view.modalities.values()))]
    for classes in (view.prediction, view.truth):
        if classes is not None and classes.any():
            for axis, (a, b) in enumerate(box):
                hit = np.flatnonzero(classes.any(axis=tuple(i for i in range(3) if i != axis)))
                box[axis] = [min(a, int(hit[0])), max(b, int(hit[-1]) + 1)]
    return tuple(tuple(ab) for ab in box)


def quantise_image(volume: np.ndarray, levels: int = 256) -> tuple[np.ndarray, float]:
    """``(uint8 volume, slope)``: ``round(255 * v / top)`` clipped to 0..255, ``top`` the ``IMAGE_PERCENTILE``
    of the brain's (nonzero) voxels, then rounded down to one of ``levels`` grey levels (256, 128, 64, ...: fewer
    compress better); ``slope = top / 255`` turns the grey back into the file's intensity."""
    if levels not in (2, 4, 8, 16, 32, 64, 128, 256):
        raise ValueError(f"levels must be a power of 2 up to 256, got {levels!r}")
    v = np.asarray(volume, np.float32)
    brain = v[v != 0]
    top = float(np.percentile(brain, IMAGE_PERCENTILE)) if brain.size else 1.0
    top = top if top > 0 else 1.0
    q = np.clip(np.rint(v * (255.0 / top)), 0, 255).astype(np.uint8)
    step = 256 // levels
    return (q // step * step if step > 1 else q), top / 255.0


def disagreement(prediction: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """``(D, H, W)`` uint8 of :data:`DISAGREEMENT`: 1 tumour predicted on background (false positive), 2 tumour
    missed (false negative), 3 tumour in both with another class; 0 where they agree."""
    pred, true = prediction > 0, truth > 0
    out = np.zeros(prediction.shape, np.uint8)
    out[pred & ~true] = 1
    out[~pred & true] = 2
    out[pred & true & (prediction != truth)] = 3
    return out


def nifti_base64(array: np.ndarray, affine, box, slope: float = 1.0) -> str:
    """A gzipped NIfTI-1 of ``array[box]`` in base64; its affine puts every voxel where it is in the full volume."""
    import nibabel as nib

    shift = np.eye(4)
    shift[:3, 3] = [a for a, _ in box]
    img = nib.Nifti1Image(np.ascontiguousarray(array[box_slices(box)]), np.asarray(affine, float) @ shift)
    img.header.set_xyzt_units("mm")
    img.header.set_slope_inter(slope, 0.0)
    return base64.b64encode(gzip.compress(img.to_bytes(), compresslevel=9, mtime=0)).decode("ascii")


def page_volumes(view: CaseView, levels: int = 256) -> dict:
    """The page's copies: ``{"box": crop box, "images": {modality: {"base64", "top"}}, "prediction": base64,
    "truth": base64, "disagreement": base64}`` (the maps present only), the images in ``levels`` grey levels."""
    box = page_box(view)
    out = {"box": [list(ab) for ab in box], "images": {}}
    for name, vol in view.modalities.items():
        q, slope = quantise_image(vol, levels)
        out["images"][name] = {"base64": nifti_base64(q, view.affine, box, slope), "top": round(slope * 255, 3)}
    for name in ("prediction", "truth"):
        classes = getattr(view, name)
        if classes is not None:
            out[name] = nifti_base64(classes, view.affine, box)
    if view.prediction is not None and view.truth is not None:
        out["disagreement"] = nifti_base64(disagreement(view.prediction, view.truth), view.affine, box)
    return out
