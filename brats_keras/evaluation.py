"""BraTS scores of class maps: Dice, HD95, sensitivity, specificity, lesion-wise scores, folders.

numpy and scipy only (nibabel and tqdm are imported only to read label maps: by
:func:`evaluate_folder`, and by :func:`score_case` given a path), so evaluation runs
without a deep-learning framework. Volumes are ``(D, H, W)`` class
maps (0 background, 1 NCR, 2 ED, 3 ET) or boolean masks; ``spacing`` is the voxel
size in mm along each axis, as in the NIfTI header's zooms.

Conventions for empty masks, the same in every function here and in the Keras
metrics of :mod:`brats_keras.metrics`:

==========================  ======  ===================  ===========  ==========  ===========
case                        Dice    HD95                 sensitivity  precision   specificity
==========================  ======  ===================  ===========  ==========  ===========
both empty                  1       0                    1            1           as usual
truth empty, pred not       0       ``HD95_EMPTY``       0            0           as usual
pred empty, truth not       0       ``HD95_EMPTY``       0            0           as usual
==========================  ======  ===================  ===========  ==========  ===========

``HD95_EMPTY = 373.13`` mm is the value the BraTS challenge gives a missed or spurious
region (the diagonal of the 240 x 240 x 155 volume). Specificity is 1 when there is no
negative voxel at all.
"""
from __future__ import annotations

import csv
import io as _io
import json
from pathlib import Path

import numpy as np
from scipy import ndimage

from .io import (BratsInputError, atomic_write_text, check_output_path, describe_os_error, find_cases,
                 read_label_map)
from .labels import CLASS_NAMES, REGION_NAMES, classes_to_regions
from .preprocessing import bounding_box, box_slices

__all__ = [
    "HD95_EMPTY",
    "LESION_HD95_MISS",
    "SCORE_NAMES",
    "REPORT_NAMES",
    "dice",
    "hd95",
    "surface_distances",
    "sensitivity",
    "specificity",
    "region_scores",
    "report_scores",
    "lesion_wise_scores",
    "score_case",
    "evaluate_folder",
    "format_table",
]

#: HD95 in mm given when exactly one of the two masks is empty (the BraTS value)
HD95_EMPTY = 373.13
#: lesion-wise HD95 in mm of a missed lesion or a false positive (the official BraTS 2023 value)
LESION_HD95_MISS = 374.0
#: per-region scores of :func:`region_scores`
SCORE_NAMES = ("dice", "hd95", "sensitivity", "specificity")
#: the report's Table 4 columns, from :func:`report_scores`
REPORT_NAMES = (
    "accuracy", "precision", "recall", "mean_dice", "dice_NCR", "dice_ED", "dice_ET",
)
_TUMOR_CLASSES = (1, 2, 3)


# --------------------------------------------------------------------------- counts


def _dice_counts(tp, n_true, n_pred) -> float:
    total = n_true + n_pred
    return 1.0 if total == 0 else float(2.0 * tp / total)


def _recall_counts(tp, n_true, n_pred) -> float:
    if n_true == 0:
        return 1.0 if n_pred == 0 else 0.0
    return float(tp / n_true)


def _precision_counts(tp, n_true, n_pred) -> float:
    if n_pred == 0:
        return 1.0 if n_true == 0 else 0.0
    return float(tp / n_pred)


def _pair(pred, true) -> tuple[np.ndarray, np.ndarray]:
    pred = np.asarray(pred).astype(bool, copy=False)
    true = np.asarray(true).astype(bool, copy=False)
    if pred.shape != true.shape:
        raise ValueError(f"shapes differ: prediction {pred.shape}, truth {true.shape}")
    return pred, true


def _spacing(spacing, ndim: int) -> tuple[float, ...]:
    if spacing is None:
        return (1.0,) * ndim
    values = np.atleast_1d(np.asarray(spacing, dtype=np.float64)).ravel()
    if values.size == 1:
        values = np.repeat(values, ndim)
    if values.size != ndim:
        raise ValueError(f"spacing needs {ndim} values, got {values.tolist()}")
    if np.any(values <= 0):
        raise ValueError(f"spacing must be positive, got {values.tolist()}")
    return tuple(float(s) for s in values)


def dice(pred, true) -> float:
    """Dice coefficient of two masks: ``2 |P & T| / (|P| + |T|)``; 1 when both are empty.

    Args:
        pred, true: arrays of the same shape; nonzero is foreground.
    """
    pred, true = _pair(pred, true)
    tp = np.count_nonzero(pred & true)
    return _dice_counts(tp, np.count_nonzero(true), np.count_nonzero(pred))


def resolution_ceiling(classes, factor: int = 2) -> dict:
    """Dice per region (WT, TC, ET) of a true class map ``(D, H, W)`` taken to ``factor`` mm and back, as a region
    model predicts: each region's block fraction (:func:`~brats_keras.preprocessing.downsample_image`, the best a
    model working at that resolution can output), up-sampled trilinearly
    (:func:`~brats_keras.preprocessing.upsample_probs`) and decoded at 0.5. The most such a model can score.
    """
    from .labels import regions_to_classes
    from .preprocessing import downsample_image, upsample_probs

    classes = np.asarray(classes)
    regions = downsample_image(classes_to_regions(classes).astype(np.float32), factor)
    back = regions_to_classes(upsample_probs(regions, classes.shape, factor))
    pr, tr = classes_to_regions(back), classes_to_regions(classes)
    return {r: dice(pr[..., i], tr[..., i]) for i, r in enumerate(REGION_NAMES)}


def grid_dice(pred, true, factor: int = 2) -> dict:
    """Dice per region (WT, TC, ET) of a predicted and a true class map ``(D, H, W)``, both taken to ``factor`` mm
    (:func:`~brats_keras.preprocessing.downsample_classes`: a region where it fills half a block): the score at a
    model's working resolution. Beside the 1 mm score it tells how much of a model's error is detail its grid
    cannot hold (a large gap) and how much is regions missed or confused (a small one)."""
    from .preprocessing import downsample_classes

    pred, true = np.asarray(pred), np.asarray(true)
    if pred.shape != true.shape:
        raise ValueError(f"prediction of shape {pred.shape} for a label map of shape {true.shape}")
    pr = classes_to_regions(downsample_classes(pred, factor))
    tr = classes_to_regions(downsample_classes(true, factor))
    return {r: dice(pr[..., i], tr[..., i]) for i, r in enumerate(REGION_NAMES)}


def label_contrast(image, classes, brain=None) -> dict:
    """How bright each labelled class (NCR, ED, ET) is in one modality ``image`` ``(D, H, W)``, against the brain:
    ``(mean over the class's voxels - mean over the brain) / std over the brain``, the brain being ``brain`` (a
    mask) or the voxels where ``image > 0``. NaN for a class with no voxel (or a constant brain).

    In T1ce, enhancing tumor is normally well above the brain (z 1.2 to 3 in the real cases the shipped recipe
    segments well); a labelled ET below 1 is enhancement a model barely sees, which bounds what it can score."""
    image = np.asarray(image, np.float32)
    classes = np.asarray(classes)
    if image.shape != classes.shape:
        raise ValueError(f"image of shape {image.shape} for a label map of shape {classes.shape}")
    brain = image > 0 if brain is None else np.asarray(brain, bool)
    values = image[brain]
    mean, std = (float(values.mean()), float(values.std())) if values.size else (np.nan, np.nan)
    out = {}
    for k, name in enumerate(CLASS_NAMES[1:], start=1):
        voxels = image[classes == k]
        out[name] = float((voxels.mean() - mean) / std) if voxels.size and std > 0 else float("nan")
    return out


def sensitivity(pred, true) -> float:
    """Sensitivity (recall) ``|P & T| / |T|``; 1 when both are empty, 0 when only ``true`` is."""
    pred, true = _pair(pred, true)
    return _recall_counts(
        np.count_nonzero(pred & true), np.count_nonzero(true), np.count_nonzero(pred)
    )


def specificity(pred, true) -> float:
    """Specificity ``|~P & ~T| / |~T|``; 1 when ``true`` has no negative voxel."""
    pred, true = _pair(pred, true)
    negatives = true.size - np.count_nonzero(true)
    if negatives == 0:
        return 1.0
    return float(np.count_nonzero(~pred & ~true) / negatives)


# --------------------------------------------------------------------------- distances


def _surface(mask: np.ndarray, structure: np.ndarray) -> np.ndarray:
    """The mask minus its erosion: the voxels with a background neighbour."""
    return mask & ~ndimage.binary_erosion(mask, structure=structure, border_value=0)


def surface_distances(pred, true, spacing=None, connectivity: int = 3) -> np.ndarray:
    """Distances in mm from each surface voxel of ``pred`` to the nearest surface voxel of ``true``.

    A surface voxel is a voxel of the mask that its erosion removes: with
    ``connectivity=3`` the erosion uses the full 3 x 3 x 3 structure; ``1`` uses the
    6-neighbour cross (medpy's default). Distances are Euclidean, with
    ``scipy.ndimage.distance_transform_edt`` and ``sampling=spacing``. Both masks are
    first cropped to their joint bounding box plus one voxel, which gives the same
    values as the full volume, much faster.

    Args:
        pred, true: non-empty masks of the same shape ``(D, H, W)`` (any rank works).
        spacing: voxel size in mm per axis, or one number; ``None`` is 1 mm.
        connectivity: 1 to ``ndim``, as ``scipy.ndimage.generate_binary_structure``.
    Returns:
        1-D float64 array, one distance per surface voxel of ``pred``.
    Raises:
        ValueError when a mask is empty or the shapes differ.
    """
    pred, true = _pair(pred, true)
    if not pred.any() or not true.any():
        raise ValueError("surface distances need two non-empty masks")
    spacing = _spacing(spacing, pred.ndim)
    box = box_slices(bounding_box(pred | true, margin=1))
    pred, true = pred[box], true[box]
    structure = ndimage.generate_binary_structure(pred.ndim, connectivity)
    distance_to_true = ndimage.distance_transform_edt(~_surface(true, structure), sampling=spacing)
    return distance_to_true[_surface(pred, structure)]


def hd95(pred, true, spacing=None, connectivity: int = 3) -> float:
    """95th percentile Hausdorff distance in mm between the surfaces of two masks.

    The 95th percentile (``numpy.percentile``, linear interpolation) of the surface
    distances pooled both ways, :func:`surface_distances` of ``pred`` to ``true`` and
    of ``true`` to ``pred``: the same value as ``medpy.metric.binary.hd95(pred, true,
    spacing, connectivity)``. Note medpy's default is ``connectivity=1``; here the
    surface is taken with the full 3 x 3 x 3 structure (``connectivity=3``).

    Huttenlocher, Klanderman and Rucklidge, "Comparing images using the Hausdorff
    distance", IEEE TPAMI 1993; the 95th percentile as scored by BraTS (Menze et al.,
    IEEE TMI 2015).

    Args:
        pred, true: masks of the same shape ``(D, H, W)``; nonzero is foreground.
        spacing: voxel size in mm per axis (the NIfTI zooms), or one number; ``None``
            is 1 mm.
        connectivity: of the erosion that finds surface voxels (3: 26 neighbours).
    Returns:
        HD95 in mm; 0 when both masks are empty, ``HD95_EMPTY`` (373.13) when exactly
        one is.
    """
    pred, true = _pair(pred, true)
    has_pred, has_true = bool(pred.any()), bool(true.any())
    if not has_pred and not has_true:
        return 0.0
    if not has_pred or not has_true:
        return HD95_EMPTY
    distances = np.concatenate(
        [
            surface_distances(pred, true, spacing, connectivity),
            surface_distances(true, pred, spacing, connectivity),
        ]
    )
    return float(np.percentile(distances, 95))


# --------------------------------------------------------------------------- class maps


def _classes_pair(pred_classes, true_classes) -> tuple[np.ndarray, np.ndarray]:
    pred = np.asarray(pred_classes)
    true = np.asarray(true_classes)
    if pred.shape != true.shape:
        raise ValueError(f"shapes differ: prediction {pred.shape}, truth {true.shape}")
    for name, arr in (("prediction", pred), ("truth", true)):
        if arr.size and (arr.min() < 0 or arr.max() > 3):
            raise ValueError(
                f"{name} holds values outside the classes 0..3 "
                f"(min {arr.min()}, max {arr.max()}): convert labels with labels_to_classes"
            )
    return pred.astype(np.uint8, copy=False), true.astype(np.uint8, copy=False)


def _tumor_box(pred: np.ndarray, true: np.ndarray) -> tuple[slice, ...] | None:
    """Joint bounding box of the tumor of both class maps plus one voxel; None if both are empty.

    Every region mask is empty outside it, so Dice, HD95, the components and the
    positive counts computed on the box equal those on the whole volume.
    """
    box = bounding_box((pred > 0) | (true > 0), margin=1)
    return None if box is None else box_slices(box)


def region_scores(pred_classes, true_classes, spacing=None, connectivity: int = 3, *,
                  distances: bool = True) -> dict:
    """Dice, HD95, sensitivity and specificity of the BraTS regions WT, TC and ET.

    Args:
        pred_classes, true_classes: class maps ``(D, H, W)`` with values 0..3.
        spacing: voxel size in mm per axis; ``None`` is 1 mm.
        connectivity: of the surface used by :func:`hd95`.
        distances: False leaves HD95 out (the counts alone are much faster).
    Returns:
        ``{"WT": {"dice", "hd95", "sensitivity", "specificity"}, "TC": {...}, "ET": {...}}``
        (no ``"hd95"`` with ``distances=False``).
    """
    pred, true = _classes_pair(pred_classes, true_classes)
    spacing = _spacing(spacing, pred.ndim)
    size = pred.size
    box = _tumor_box(pred, true)
    if box is not None:
        pred, true = pred[box], true[box]
    pred_regions = classes_to_regions(pred)
    true_regions = classes_to_regions(true)
    scores = {}
    for i, region in enumerate(REGION_NAMES):
        p, t = pred_regions[..., i], true_regions[..., i]
        tp = np.count_nonzero(p & t)
        n_true, n_pred = np.count_nonzero(t), np.count_nonzero(p)
        negatives = size - n_true
        scores[region] = {"dice": _dice_counts(tp, n_true, n_pred)}
        if distances:
            scores[region]["hd95"] = hd95(p, t, spacing, connectivity)
        scores[region]["sensitivity"] = _recall_counts(tp, n_true, n_pred)
        scores[region]["specificity"] = 1.0 if negatives == 0 else float((negatives - (n_pred - tp)) / negatives)
    return scores


def _confusion(pred: np.ndarray, true: np.ndarray, n: int = 4) -> np.ndarray:
    """Confusion counts ``(n, n)``: rows are true classes, columns predicted classes."""
    return np.bincount((true * n + pred).ravel(), minlength=n * n).reshape(n, n)


def report_scores(pred_classes, true_classes) -> dict:
    """The report's Table 4 columns for one case: voxel accuracy, macro precision and recall, Dice.

    * ``accuracy``: fraction of voxels whose class (background included) is right;
    * ``precision``, ``recall``: voxel-wise, per tumor class NCR, ED, ET, then their mean;
    * ``dice_NCR``, ``dice_ED``, ``dice_ET`` and their mean ``mean_dice``.

    Empty classes follow the conventions in the module docstring (both empty: 1).

    Args:
        pred_classes, true_classes: class maps of the same shape, values 0..3.
    Returns:
        dict with the keys of ``REPORT_NAMES``.
    """
    pred, true = _classes_pair(pred_classes, true_classes)
    cm = _confusion(pred, true)
    tp = np.diag(cm)
    n_true = cm.sum(axis=1)
    n_pred = cm.sum(axis=0)
    per_class = {
        c: (
            _dice_counts(tp[c], n_true[c], n_pred[c]),
            _precision_counts(tp[c], n_true[c], n_pred[c]),
            _recall_counts(tp[c], n_true[c], n_pred[c]),
        )
        for c in _TUMOR_CLASSES
    }
    scores = {
        "accuracy": float(tp.sum() / max(cm.sum(), 1)),
        "precision": float(np.mean([per_class[c][1] for c in _TUMOR_CLASSES])),
        "recall": float(np.mean([per_class[c][2] for c in _TUMOR_CLASSES])),
        "mean_dice": float(np.mean([per_class[c][0] for c in _TUMOR_CLASSES])),
    }
    for c in _TUMOR_CLASSES:
        scores[f"dice_{CLASS_NAMES[c]}"] = per_class[c][0]
    return scores


def _grown_box(box, grow: int, shape) -> tuple[slice, ...]:
    return tuple(slice(max(s.start - grow, 0), min(s.stop + grow, n)) for s, n in zip(box, shape))


def lesion_wise_scores(
    pred_classes,
    true_classes,
    spacing=None,
    connectivity: int = 3,
    dilation: int = 3,
    min_volume: float = 50.0,
) -> dict:
    """Lesion-wise Dice and HD95 of WT, TC and ET, as the BraTS 2023 glioma challenge scores them.

    Per region, following the official BraTS 2023 lesion-wise metric:

    1. The prediction is split into 26-connected components.
    2. True lesions: the true mask is dilated ``dilation`` times with the 18-neighbour
       structure (the 3 x 3 x 3 cube without its corners); each 26-connected component of
       the dilated mask is one lesion, made of the true voxels inside it. True islands
       close to one another (a gap of up to ``2 * dilation`` voxels along an axis) are
       one lesion. The true voxels themselves are never changed.
    3. Matching: a predicted component belongs to a lesion when it touches the lesion
       dilated the same way. The lesion's Dice and HD95 are those of the lesion against
       the union of its whole predicted components; a lesion no component touches scores
       Dice 0 and HD95 ``LESION_HD95_MISS`` (374).
    4. Small lesions: a lesion of ``min_volume`` mm^3 or less (voxel count times voxel
       volume) is left out of the score, found or not, and the components that touch it
       are not false positives.
    5. False positives: each predicted component that touches no lesion (small ones
       included) scores Dice 0 and HD95 374.
    6. The region's score is the mean over the lesions above ``min_volume`` and the false
       positives; with neither, Dice 1 and HD95 0.

    One difference from the official code remains: a lesion's HD95 is :func:`hd95`
    (medpy's definition: the 95th percentile of the surface distances of both ways,
    pooled), where the official code takes DeepMind's ``surface-distance`` robust
    Hausdorff (the larger of the two one-way 95th percentiles, weighted by surface-element
    area). Dice, the lesions, matches, false positives and the 374 penalties are the same.

    ``dilation=0, min_volume=0`` gives the simpler definition of earlier versions: a
    component matches a lesion only by overlapping it, and every lesion counts.

    Saluja et al., BraTS 2023 lesion-wise performance metrics (BraTS-GLI: ``dilation=3``,
    ``min_volume=50``; BraTS-MEN: 1 and 50; BraTS-MET: 1 and 2).

    Args:
        pred_classes, true_classes: class maps ``(D, H, W)`` with values 0..3.
        spacing: voxel size in mm per axis; ``None`` is 1 mm. Used by HD95 and for the
            lesion volumes; the dilation counts voxels, as in the official code.
        connectivity: of the surface used by :func:`hd95`.
        dilation: dilation iterations that group true islands and reach predicted ones.
        min_volume: lesions of this volume in mm^3 or less are not scored.
    Returns:
        ``{"WT": {"dice", "hd95", "n_lesions", "n_missed", "n_false_positives"}, "TC": ...,
        "ET": ...}``; ``n_lesions`` counts the lesions above ``min_volume``, ``n_missed``
        those of them that no component touches.
    """
    if int(dilation) != dilation or dilation < 0:
        raise ValueError(f"dilation must be a whole number >= 0, got {dilation}")
    if min_volume < 0:
        raise ValueError(f"min_volume must be >= 0, got {min_volume}")
    dilation = int(dilation)
    pred, true = _classes_pair(pred_classes, true_classes)
    spacing = _spacing(spacing, pred.ndim)
    voxel_volume = float(np.prod(spacing))
    tumor = (pred > 0) | (true > 0)
    if tumor.any():  # every mask and every dilation stays inside this box
        box = box_slices(bounding_box(tumor, margin=dilation + 1))
        pred, true = pred[box], true[box]
    pred_regions = classes_to_regions(pred)
    true_regions = classes_to_regions(true)
    full = np.ones((3,) * pred.ndim, dtype=bool)
    grow = ndimage.generate_binary_structure(pred.ndim, 2)
    scores = {}
    for i, region in enumerate(REGION_NAMES):
        truth = true_regions[..., i]
        pred_lab, n_pred = ndimage.label(pred_regions[..., i], structure=full)
        if dilation:
            grown = ndimage.binary_dilation(truth, structure=grow, iterations=dilation)
            grown_lab, n_true = ndimage.label(grown, structure=full)
            true_lab = np.where(truth, grown_lab, 0)
        else:
            true_lab, n_true = ndimage.label(truth, structure=full)
        true_boxes = ndimage.find_objects(true_lab)
        pred_boxes = ndimage.find_objects(pred_lab)
        matched = np.zeros(n_pred + 1, dtype=bool)
        dices, hds, n_missed = [], [], 0
        for lesion_id in range(1, n_true + 1):
            reach_box = _grown_box(true_boxes[lesion_id - 1], dilation, truth.shape)
            lesion = true_lab[reach_box] == lesion_id
            reach = ndimage.binary_dilation(lesion, structure=grow, iterations=dilation) if dilation else lesion
            ids = np.unique(pred_lab[reach_box][reach])
            ids = ids[ids > 0]
            matched[ids] = True
            if np.count_nonzero(lesion) * voxel_volume <= min_volume:
                continue
            if ids.size == 0:
                dices.append(0.0)
                hds.append(LESION_HD95_MISS)
                n_missed += 1
                continue
            # the box holding the lesion and its whole components: outside it both masks
            # are empty, so scores on the box equal scores on the volume
            starts = [s.start for s in true_boxes[lesion_id - 1]]
            stops = [s.stop for s in true_boxes[lesion_id - 1]]
            for j in ids:
                for axis, s in enumerate(pred_boxes[j - 1]):
                    starts[axis] = min(starts[axis], s.start)
                    stops[axis] = max(stops[axis], s.stop)
            big = tuple(slice(a, b) for a, b in zip(starts, stops))
            lesion = true_lab[big] == lesion_id
            found = np.isin(pred_lab[big], ids)
            dices.append(dice(found, lesion))
            hds.append(hd95(found, lesion, spacing, connectivity))
        n_fp = int(n_pred - np.count_nonzero(matched[1:]))
        dices.extend([0.0] * n_fp)
        hds.extend([LESION_HD95_MISS] * n_fp)
        scores[region] = {
            "dice": float(np.mean(dices)) if dices else 1.0,
            "hd95": float(np.mean(hds)) if hds else 0.0,
            "n_lesions": len(dices) - n_fp,
            "n_missed": n_missed,
            "n_false_positives": n_fp,
        }
    return scores


# --------------------------------------------------------------------------- folders

_NII = ".nii.gz"


def _case_files(folder: Path) -> dict[str, Path]:
    return {p.name[: -len(_NII)]: p for p in sorted(folder.glob("*" + _NII)) if p.is_file()}


def _find_truth(truth_dir: Path, pred_ids) -> dict[str, Path | None]:
    """Case id -> label map path (None when the case has none) for either truth layout.

    A flat folder of ``<case>.nii.gz`` label maps is recognised by sharing names with
    the predictions. Otherwise the case folders are read: ``<case>/<case>_seg.nii.gz``
    (or ``-seg`` as in 2023), then the cases :func:`brats_keras.io.find_cases` finds.
    """
    flat = _case_files(truth_dir)
    if set(flat) & set(pred_ids):
        return flat
    truth = {}
    for case_dir in sorted(p for p in truth_dir.iterdir() if p.is_dir()):
        case = case_dir.name
        candidates = [case_dir / f"{case}_seg{_NII}", case_dir / f"{case}-seg{_NII}"]
        seg = next((c for c in candidates if c.is_file()), None)
        if seg is not None:
            truth[case] = seg
    for c in find_cases(truth_dir):
        if c.seg is not None or truth.get(c.case_id) is None:
            truth[c.case_id] = Path(c.seg) if c.seg is not None else None
    return truth or flat


def _read_classes(path: Path) -> tuple[np.ndarray, tuple[float, ...]]:
    """``(classes, spacing)`` of a label map: its class map and its voxel size in mm."""
    classes, img = read_label_map(path)
    return classes, tuple(float(z) for z in img.header.get_zooms()[:3])


#: how far (mm) the voxel axes or the origins of two affines may differ on one grid (float32 header rounding)
GRID_TOLERANCE_MM = 1e-3


def _origin(affine) -> str:
    """``(0, 239, 0)``: the origin of an affine in mm."""
    return "(" + ", ".join(f"{v:g}" for v in np.round(affine[:3, 3], 3) + 0.0) + ")"  # + 0.0: no "-0"


def _grid(img) -> str:
    """``LPS, 1x1x1 mm, origin (0, 239, 0)``: the grid of a nibabel image in words."""
    import nibabel as nib

    zooms = "x".join(f"{z:g}" for z in img.header.get_zooms()[:3])
    return f"{''.join(nib.aff2axcodes(img.affine))}, {zooms} mm, origin {_origin(img.affine)}"


def grid_difference(pred_img, truth_img) -> tuple[str | None, str | None]:
    """How the grids of two label maps (nibabel images) differ: ``(problem, note)``.

    ``problem`` (None when there is none) says why the maps cannot be compared voxel by voxel: another
    shape, orientation (``RAS`` and ``LPS``, :func:`nibabel.aff2axcodes`), voxel size or voxel axes.
    ``note`` (None when there is none) names origins that differ by more than ``GRID_TOLERANCE_MM`` on
    otherwise equal grids: the voxels still match (some BraTS label maps carry another origin than their
    images), so they are scored, and the difference is worth a line.
    """
    if pred_img.shape[:3] != truth_img.shape[:3]:
        return f"shape {pred_img.shape[:3]} and {truth_img.shape[:3]}", None
    a, b = np.asarray(pred_img.affine, float), np.asarray(truth_img.affine, float)
    if not np.allclose(a[:3, :3], b[:3, :3], rtol=0, atol=GRID_TOLERANCE_MM):
        import nibabel as nib

        codes = ["".join(nib.aff2axcodes(m)) for m in (a, b)]
        zooms = [tuple(float(z) for z in img.header.get_zooms()[:3]) for img in (pred_img, truth_img)]
        if codes[0] != codes[1]:
            what = f"orientation {codes[0]} and {codes[1]}"
        elif not np.allclose(*zooms, rtol=0, atol=GRID_TOLERANCE_MM):
            what = "voxel size " + " and ".join("x".join(f"{z:g}" for z in zs) + " mm" for zs in zooms)
        else:
            what = f"voxel axes (up to {np.abs(a[:3, :3] - b[:3, :3]).max():.3g} mm apart)"
        return f"{what} ({_grid(pred_img)}; {_grid(truth_img)})", None
    if not np.allclose(a[:3, 3], b[:3, 3], rtol=0, atol=GRID_TOLERANCE_MM):
        return None, f"origins {_origin(a)} and {_origin(b)} differ on the same voxels: scored voxel by voxel"
    return None, None


def _case_scores(pred_path: Path, truth_path: Path, lesion_wise: bool) -> tuple[dict, str | None]:
    """``(scores, note)`` of a prediction against its label map: ValueError naming both files when their grids
    differ, a note naming both when their origins alone differ (:func:`grid_difference`)."""
    true, truth_img = read_label_map(truth_path)
    pred, pred_img = read_label_map(pred_path)
    problem, note = grid_difference(pred_img, truth_img)
    if problem:
        raise ValueError(f"{pred_path} and {truth_path} are not on one grid: {problem}")
    spacing = tuple(float(z) for z in truth_img.header.get_zooms()[:3])
    return score_case(pred, true, spacing, lesion_wise=lesion_wise), note and f"{pred_path} and {truth_path}: {note}"


def score_case(pred_classes, truth, spacing=None, *, report: bool = True, lesion_wise: bool = False,
               distances: bool = True, connectivity: int = 3) -> dict:
    """Every score of one case, as :func:`evaluate_folder` gives each case: the one place that scores a prediction.

    Args:
        pred_classes: predicted class map ``(D, H, W)``, values 0..3 (``Predictor.predict_case(...)["classes"]``).
        truth: the true class map ``(D, H, W)``, or the path of a BraTS label map (read as
            :func:`evaluate_folder` reads it; its zooms are the spacing unless ``spacing`` is given).
        spacing: voxel size in mm per axis; ``None`` is 1 mm (or the label map's zooms).
        report: add the report's Table 4 columns (:func:`report_scores`) under ``"report"``.
        lesion_wise: add :func:`lesion_wise_scores` under ``"lesion_wise"``.
        distances: False leaves HD95 out of the region scores (much faster: Dice during training).
        connectivity: of the surface used by :func:`hd95`.
    Returns:
        ``{"WT": {"dice", "hd95", "sensitivity", "specificity"}, "TC": ..., "ET": ...,
        "report": {...}, "lesion_wise": {...}}`` (:func:`region_scores` alone with ``report=False``).
    """
    if isinstance(truth, (str, Path)):
        truth, file_spacing = _read_classes(Path(truth))
        spacing = file_spacing if spacing is None else spacing
    scores = region_scores(pred_classes, truth, spacing, connectivity, distances=distances)
    if report:
        scores["report"] = report_scores(pred_classes, truth)
    if lesion_wise:
        scores["lesion_wise"] = lesion_wise_scores(pred_classes, truth, spacing, connectivity)
    return scores


def _missing_scores(truth_path: Path, lesion_wise: bool) -> dict:
    """Scores of a truth case without a prediction: the BraTS rule, Dice 0 and HD95 373.13.

    Every region gets Dice 0 and HD95 ``HD95_EMPTY`` (lesion-wise: Dice 0, HD95 374),
    even a region the truth does not have; the other scores are those of an empty
    prediction (all background).
    """
    true, spacing = _read_classes(truth_path)
    scores = score_case(np.zeros_like(true), true, spacing, lesion_wise=lesion_wise)
    for region in REGION_NAMES:
        scores[region].update(dice=0.0, hd95=HD95_EMPTY)
        if lesion_wise:
            scores["lesion_wise"][region].update(dice=0.0, hd95=LESION_HD95_MISS)
    return scores


def _aggregate(cases: list[dict], reduce) -> dict:
    """Apply ``reduce`` to every leaf across the cases, keeping the nested structure."""
    if not cases:
        return {}
    out = {}
    for key, value in cases[0].items():
        if isinstance(value, dict):
            out[key] = _aggregate([c[key] for c in cases], reduce)
        else:
            out[key] = float(reduce(np.asarray([c[key] for c in cases], dtype=np.float64)))
    return out


def _flatten(scores: dict, prefix: str = "") -> dict[str, float]:
    flat = {}
    for key, value in scores.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            # the report's columns keep their own names (accuracy, dice_NCR, ...)
            flat.update(_flatten(value, "" if key == "report" else f"{name}_"))
        else:
            flat[name] = value
    return flat


def _csv_text(results: dict) -> str:
    rows = [(case, _flatten(s)) for case, s in results["cases"].items()]
    rows += [(name, _flatten(results[name])) for name in ("mean", "median") if results.get(name)]
    if not rows:
        return "case\n"
    columns = list(rows[0][1])
    buf = _io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["case", *columns])
    for case, flat in rows:
        writer.writerow([case, *(repr(float(flat[c])) for c in columns)])
    return buf.getvalue()


def evaluate_folder(
    pred_dir,
    truth_dir,
    json_path=None,
    csv_path=None,
    progress: bool = True,
    lesion_wise: bool = False,
    only_predicted: bool = False,
    case_ids=None,
) -> dict:
    """Score the predictions of a folder against every label map of the truth folder.

    Predictions are ``pred_dir/<case>.nii.gz`` label maps (2021 or 2023 labels).
    The truth is either a folder of ``<case>.nii.gz`` label maps or a BraTS folder of
    cases (``<case>/<case>_seg.nii.gz``; :func:`brats_keras.io.find_cases` where it
    exists); every case with a label map there is a truth case. Label maps are read
    with nibabel as stored (never as float64), converted with
    ``labels_to_classes(convention="auto")``; spacing comes from the truth's zooms.

    A truth case without a prediction is listed under ``"missing"`` and, as BraTS
    does, scored Dice 0 and HD95 373.13 in every region (lesion-wise: 0 and 374; its
    other scores are those of an empty prediction), so the mean and median cover
    every truth case. With ``only_predicted=True`` it is listed but not scored, and
    the means cover the predicted cases only.

    A prediction without a label map, a case that cannot be read, or a prediction on
    another grid than its label map (shape, orientation, voxel size:
    :func:`grid_difference`) gets a one-line message under ``"errors"`` naming the case
    and the files; the other cases are still scored. A prediction whose origin alone
    differs is scored, with a line under ``"notes"``.

    ``case_ids`` limits the evaluation to those cases, as ``predict_folder`` limits
    prediction (e.g. a split's test cases in a folder that also holds the training
    cases): other predictions and label maps are ignored, an asked case without a
    prediction is missing as above, and one found in neither folder is an error.

    Args:
        pred_dir: folder of predicted label maps.
        truth_dir: folder of true label maps or of BraTS cases.
        json_path, csv_path: where to write the results (written atomically); the CSV
            has one row per case, then ``mean`` and ``median`` rows. Checked before any
            case is read (:func:`brats_keras.io.check_output_path`); a write that fails
            all the same (e.g. no space left on device) is a line ``<file>: <reason>``
            under ``"write_errors"`` and leaves no file behind.
        progress: show a tqdm progress bar.
        lesion_wise: also compute :func:`lesion_wise_scores` (key ``"lesion_wise"``).
        only_predicted: score only the cases that have a prediction.
        case_ids: the case ids to score; None: every case of both folders.
    Returns:
        ``{"cases": {case: {"WT": {"dice", "hd95", "sensitivity", "specificity"},
        "TC": ..., "ET": ..., "report": {accuracy, precision, recall, mean_dice,
        dice_NCR, dice_ED, dice_ET}}}, "mean": {...}, "median": {...},
        "missing": [case, ...], "errors": {case: message}, "notes": {case: message},
        "write_errors": [message, ...]}``.
    Raises:
        FileNotFoundError when a folder does not exist; BratsInputError (a ValueError)
        when the prediction folder holds no ``<case>.nii.gz``, the truth folder no
        label map, or ``json_path`` / ``csv_path`` cannot be written. Nothing is written then.
    """
    from tqdm.auto import tqdm

    pred_dir, truth_dir = Path(pred_dir), Path(truth_dir)
    for name, folder in (("prediction", pred_dir), ("truth", truth_dir)):
        if not folder.exists():
            raise FileNotFoundError(f"{name} folder not found: {folder}")
        if not folder.is_dir():
            raise BratsInputError(f"{name} folder is not a folder: {folder}")
    for flag, path in (("--json", json_path), ("--csv", csv_path)):
        if path is not None:
            check_output_path(path, flag=flag)
    preds = _case_files(pred_dir)
    wanted = None if case_ids is None else set(_case_id_list(case_ids))
    if wanted is not None:
        preds = {case: path for case, path in preds.items() if case in wanted}
    if not preds:
        which = "" if wanted is None else f" of the {len(wanted)} case(s) asked for"
        raise BratsInputError(f"no predictions (<case>{_NII}){which} in {pred_dir}")
    truth = _find_truth(truth_dir, preds)
    if wanted is not None:
        truth = {case: path for case, path in truth.items() if case in wanted}
    if not any(path is not None for path in truth.values()):
        raise BratsInputError(
            f"no label maps (<case>/<case>_seg{_NII} or <case>{_NII}) in {truth_dir}"
        )
    cases, errors, missing, notes = {}, {}, [], {}
    for case in tqdm(sorted(set(preds) | set(truth) | (wanted or set())), desc="evaluate", disable=not progress):
        if case not in preds:
            if truth.get(case) is None:  # a case folder without a label map: not a truth case
                if wanted is not None:  # but this one was asked for
                    errors[case] = f"{case}: no prediction in {pred_dir} and no label map in {truth_dir}"
                continue
            missing.append(case)
            if only_predicted:
                continue
        elif truth.get(case) is None:
            errors[case] = f"{case}: label map missing in {truth_dir} for {preds[case]}"
            continue
        try:
            if case in preds:
                cases[case], note = _case_scores(preds[case], truth[case], lesion_wise)
                if note:
                    notes[case] = f"{case}: {note}"
            else:
                cases[case] = _missing_scores(truth[case], lesion_wise)
        except Exception as exc:
            message = " ".join(str(exc).split())
            errors[case] = f"{case}: {message}"
    scored = list(cases.values())
    results = {
        "cases": cases,
        "mean": _aggregate(scored, np.mean),
        "median": _aggregate(scored, np.median),
        "missing": missing,
        "only_predicted": bool(only_predicted),
        "errors": errors,
        "notes": notes,
        "write_errors": [],
    }
    # the CSV first: a failure to write it is then in the JSON too
    for path, text in ((csv_path, _csv_text), (json_path, lambda r: json.dumps(r, indent=2) + "\n")):
        if path is not None:
            try:
                atomic_write_text(path, text(results))
            except OSError as exc:
                results["write_errors"].append(describe_os_error(exc))
    return results


def _case_id_list(case_ids) -> list[str]:
    if isinstance(case_ids, str) or not all(isinstance(c, str) for c in case_ids):
        raise TypeError(f"case_ids must be a list of case id strings, got {case_ids!r}")
    return list(case_ids)


#: column groups of :func:`format_table`: name -> [(header, width, format, path into a case's scores)]
TABLE_COLUMNS = {
    "dice": [("Dice WT", 7, ".4f", ("WT", "dice")), ("TC", 6, ".4f", ("TC", "dice")),
             ("ET", 6, ".4f", ("ET", "dice"))],
    "hd95": [("HD95 WT", 7, ".2f", ("WT", "hd95")), ("TC", 6, ".2f", ("TC", "hd95")),
             ("ET", 6, ".2f", ("ET", "hd95"))],
    "class_dice": [("class Dice", 10, ".4f", ("report", "mean_dice"))],
    "classes": [(f"Dice {c}" if k == 0 else c, 8 if k == 0 else 6, ".4f", ("report", f"dice_{c}"))
                for k, c in enumerate(CLASS_NAMES[1:])],
    "report": [(name, max(len(name), 6), ".4f", ("report", name)) for name in REPORT_NAMES],
}


def format_table(results: dict, columns=("dice", "hd95", "class_dice"), label: str = "case") -> str:
    """A compact text table of scores, one row per case (or per run), one group of columns per score.

    Args:
        results: what :func:`evaluate_folder` returns (rows: the cases, then the mean and median,
            then the missing predictions and the errors), or ``{row name: scores}`` with the scores of
            one case or a mean each, e.g. ``{run: evaluate_folder(...)["mean"] for run in runs}``.
        columns: groups of :data:`TABLE_COLUMNS`, in order: ``"dice"`` and ``"hd95"`` of the regions
            WT, TC and ET, ``"class_dice"`` (the report's mean Dice over NCR, ED and ET), ``"classes"``
            (Dice of NCR, ED and ET), ``"report"`` (the report's Table 4: accuracy, precision, recall,
            mean Dice, Dice per class).
        label: the header of the first column.
    """
    columns = (columns,) if isinstance(columns, str) else tuple(columns)
    unknown = [c for c in columns if c not in TABLE_COLUMNS]
    if unknown or not columns:
        raise ValueError(f"unknown column group(s) {unknown}: use {', '.join(TABLE_COLUMNS)}")
    groups = [TABLE_COLUMNS[c] for c in columns]
    folder = isinstance(results.get("cases"), dict) and "mean" in results
    cases = results.get("cases", {}) if folder else results
    rows = list(cases.items())
    if folder:
        rows += [(name, results[name]) for name in ("mean", "median") if results.get(name)]
    width = max([len(label)] + [len(str(case)) for case, _ in rows])
    head = f"{label:<{width}}" + "".join("  " + " ".join(f"{h:>{w}}" for h, w, _, _ in g) for g in groups)
    lines = [head, "-" * len(head)]
    missing = results.get("missing", []) if folder else []
    for i, (case, s) in enumerate(rows):
        if i == len(cases) and i > 0:
            lines.append("-" * len(head))
        lines.append(
            f"{case:<{width}}"
            + "".join("  " + " ".join(f"{s[a][b]:>{w}{fmt}}" for _, w, fmt, (a, b) in g) for g in groups)
            + ("  (no prediction)" if i < len(cases) and case in missing else "")
        )
    if missing:
        how = (
            "left out of the mean and median (only predicted cases scored)"
            if results.get("only_predicted")
            else f"each scored Dice 0 and HD95 {HD95_EMPTY} in every region"
        )
        lines.append(f"missing: {len(missing)} prediction(s), {how}: {', '.join(missing)}")
    for message in (results.get("errors", {}) if folder else {}).values():
        lines.append(f"error: {message}")
    return "\n".join(lines)
