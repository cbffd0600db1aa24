"""BraTS scores of class maps and masks: Dice, sensitivity, specificity, HD95, region and class scores and the
BraTS 2023 lesion-wise scores (numpy and scipy only; the conventions for empty masks: :mod:`brats_keras.evaluation`)."""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from ..preprocessing import bounding_box, box_slices
from ..tasks import get_task

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

#: the official lesion-wise parameters per task, ``(dilation, min_volume, {region: min_volume})``: the BraTS 2023
#: scorer (GLI, SSA: 3 and 50; MEN: 1 and 50; MET: 1 and 2) and the 2024 one (post-treatment GLI: 3 and 20, ET 10;
#: PED: 5 and 10; MEN-RT: 1 and 50), github.com/rachitsaluja/BraTS-2023-Metrics and BraTS-2024-Metrics. A task not
#: named here takes the 2023 glioma values (3 and 50); ``brats2023`` cases of MEN or MET are scored by their own
#: values only when ``dilation`` / ``min_volume`` are given. (The MEN-RT scorer also leaves false positives
#: unscored; here they count, as in every other task.)
LESION_PARAMETERS = {
    "glioma2021": (3, 50.0, {}),
    "brats2023": (3, 50.0, {}),
    "msd-task01": (3, 50.0, {}),
    "glioma2024-post": (3, 20.0, {"ET": 10.0}),
    "pediatric2024": (5, 10.0, {}),
    "men-rt2024": (1, 50.0, {}),
}

#: tasks whose official scorer also cleans the prediction, ``{task: voxels}``: the BraTS 2024 pediatric scorer
#: (metrics_PED.py) groups the predicted components whose dilations touch (the task's dilation, as for the true
#: lesions) into one predicted lesion and removes a group of this many voxels or fewer before matching, so that a
#: few stray voxels are neither a false positive nor part of a lesion's Dice. The other scorers keep every
#: predicted component as it is.
PREDICTION_MIN_VOXELS = {
    "pediatric2024": 10,
}


def report_names(task=None) -> tuple:
    """The report's Table 4 columns of ``task`` (:func:`report_scores`): :data:`REPORT_NAMES` for the default
    task, ``dice_<class>`` for each of the task's tumour classes."""
    task = get_task(task)
    return ("accuracy", "precision", "recall", "mean_dice") + tuple(f"dice_{c}" for c in task.class_names[1:])


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


def resolution_ceiling(classes, factor: int = 2, task=None) -> dict:
    """Dice per scored region of ``task`` (default WT, TC, ET) of a true class map ``(D, H, W)`` taken to ``factor``
    mm and back, as a region model predicts: each region's block fraction
    (:func:`~brats_keras.preprocessing.downsample_image`, the best a model working at that resolution can output),
    up-sampled trilinearly
    (:func:`~brats_keras.preprocessing.upsample_probs`) and decoded at 0.5 (the task's head regions, in its
    decoding order). The most such a model can score.
    """
    from ..preprocessing import downsample_image, upsample_probs

    task = get_task(task)
    classes = np.asarray(classes)
    regions = downsample_image(task.classes_to_regions(classes, task.region_order).astype(np.float32), factor)
    back = task.regions_to_classes(upsample_probs(regions, classes.shape, factor))
    pr, tr = task.classes_to_regions(back), task.classes_to_regions(classes)
    return {r: dice(pr[..., i], tr[..., i]) for i, r in enumerate(task.region_names)}


def grid_dice(pred, true, factor: int = 2, task=None) -> dict:
    """Dice per scored region of ``task`` (default WT, TC, ET) of a predicted and a true class map ``(D, H, W)``, both
    taken to ``factor`` mm (as :func:`~brats_keras.preprocessing.downsample_classes`: a region where it fills half a
    block): the score at a model's working resolution. Beside the 1 mm score it tells how much of a model's error is
    detail its grid cannot hold (a large gap) and how much is regions missed or confused (a small one)."""
    from ..preprocessing import downsample_image

    task = get_task(task)
    pred, true = np.asarray(pred), np.asarray(true)
    if pred.shape != true.shape:
        raise ValueError(f"prediction of shape {pred.shape} for a label map of shape {true.shape}")

    def coarse(classes):  # the task's head regions where they fill half a block, decoded back to classes
        regions = downsample_image(task.classes_to_regions(classes, task.region_order).astype(np.float32), factor)
        return task.regions_to_classes(regions, threshold=0.4999) if factor > 1 else classes

    pr, tr = task.classes_to_regions(coarse(pred)), task.classes_to_regions(coarse(true))
    return {r: dice(pr[..., i], tr[..., i]) for i, r in enumerate(task.region_names)}


def label_contrast(image, classes, brain=None, task=None) -> dict:
    """How bright each labelled class of ``task`` (default NCR, ED, ET) is in one modality ``image`` ``(D, H, W)``,
    against the brain: ``(mean over the class's voxels - mean over the brain) / std over the brain``, the brain being
    ``brain`` (a mask) or the voxels where ``image > 0``. NaN for a class with no voxel (or a constant brain).

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
    for k, name in enumerate(get_task(task).class_names[1:], start=1):
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


def _classes_pair(pred_classes, true_classes, task=None) -> tuple[np.ndarray, np.ndarray]:
    pred = np.asarray(pred_classes)
    true = np.asarray(true_classes)
    if pred.shape != true.shape:
        raise ValueError(f"shapes differ: prediction {pred.shape}, truth {true.shape}")
    last = get_task(task).n_classes - 1
    for name, arr in (("prediction", pred), ("truth", true)):
        if arr.size and (arr.min() < 0 or arr.max() > last):
            raise ValueError(
                f"{name} holds values outside the classes 0..{last} "
                f"(min {arr.min()}, max {arr.max()}): convert labels with labels_to_classes or Task.to_classes"
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
                  distances: bool = True, task=None) -> dict:
    """Dice, HD95, sensitivity and specificity of the regions ``task`` scores (default: the BraTS regions WT, TC
    and ET; :attr:`brats_keras.tasks.Task.region_names`).

    Args:
        pred_classes, true_classes: class maps ``(D, H, W)`` with the task's classes (default 0..3).
        spacing: voxel size in mm per axis; ``None`` is 1 mm.
        connectivity: of the surface used by :func:`hd95`.
        distances: False leaves HD95 out (the counts alone are much faster).
        task: a :class:`~brats_keras.tasks.Task` or its name; None is the default task.
    Returns:
        ``{"WT": {"dice", "hd95", "sensitivity", "specificity"}, "TC": {...}, "ET": {...}}``, one entry per
        region of the task (no ``"hd95"`` with ``distances=False``).
    """
    task = get_task(task)
    pred, true = _classes_pair(pred_classes, true_classes, task)
    spacing = _spacing(spacing, pred.ndim)
    size = pred.size
    box = _tumor_box(pred, true)
    if box is not None:
        pred, true = pred[box], true[box]
    pred_regions = task.classes_to_regions(pred)
    true_regions = task.classes_to_regions(true)
    scores = {}
    for i, region in enumerate(task.region_names):
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


def report_scores(pred_classes, true_classes, task=None) -> dict:
    """The report's Table 4 columns for one case: voxel accuracy, macro precision and recall, Dice.

    * ``accuracy``: fraction of voxels whose class (background included) is right;
    * ``precision``, ``recall``: voxel-wise, per tumor class (NCR, ED, ET; the task's classes), then their mean;
    * ``dice_<class>`` (``dice_NCR``, ``dice_ED``, ``dice_ET``) and their mean ``mean_dice``.

    Empty classes follow the conventions in the module docstring (both empty: 1).

    Args:
        pred_classes, true_classes: class maps of the same shape, the task's classes (default 0..3).
        task: a :class:`~brats_keras.tasks.Task` or its name; None is the default task.
    Returns:
        dict with the keys of :func:`report_names` (``REPORT_NAMES`` for the default task).
    """
    task = get_task(task)
    pred, true = _classes_pair(pred_classes, true_classes, task)
    tumor = range(1, task.n_classes)
    cm = _confusion(pred, true, task.n_classes)
    tp = np.diag(cm)
    n_true = cm.sum(axis=1)
    n_pred = cm.sum(axis=0)
    per_class = {
        c: (
            _dice_counts(tp[c], n_true[c], n_pred[c]),
            _precision_counts(tp[c], n_true[c], n_pred[c]),
            _recall_counts(tp[c], n_true[c], n_pred[c]),
        )
        for c in tumor
    }
    scores = {
        "accuracy": float(tp.sum() / max(cm.sum(), 1)),
        "precision": float(np.mean([per_class[c][1] for c in tumor])),
        "recall": float(np.mean([per_class[c][2] for c in tumor])),
        "mean_dice": float(np.mean([per_class[c][0] for c in tumor])),
    }
    for c in tumor:
        scores[f"dice_{task.class_names[c]}"] = per_class[c][0]
    return scores


def _grown_box(box, grow: int, shape) -> tuple[slice, ...]:
    return tuple(slice(max(s.start - grow, 0), min(s.stop + grow, n)) for s, n in zip(box, shape))


def _grouped_prediction(mask, dilation: int, grow, full, min_voxels: int) -> tuple[np.ndarray, int]:
    """``(labels, n)``: the predicted voxels numbered 1..n by group (the 26-connected components of the mask
    dilated ``dilation`` times with ``grow``), the groups of ``min_voxels`` voxels or fewer removed."""
    grown = ndimage.binary_dilation(mask, structure=grow, iterations=dilation) if dilation else mask
    groups, n = ndimage.label(grown, structure=full)
    groups = np.where(mask, groups, 0)
    keep = np.bincount(groups.ravel(), minlength=n + 1) > min_voxels
    keep[0] = False
    new_ids = np.zeros(n + 1, dtype=groups.dtype)
    new_ids[keep] = np.arange(1, int(keep.sum()) + 1)
    return new_ids[groups], int(keep.sum())


def lesion_wise_scores(
    pred_classes,
    true_classes,
    spacing=None,
    connectivity: int = 3,
    dilation: int | None = None,
    min_volume: float | None = None,
    task=None,
) -> dict:
    """Lesion-wise Dice and HD95 of the task's regions (default WT, TC and ET), as the BraTS challenges score them.

    Per region, following the official BraTS 2023 (and 2024) lesion-wise metric:

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
       For the tasks of :data:`PREDICTION_MIN_VOXELS` (pediatric 2024), predicted components
       are first grouped the way true lesions are (dilated ``dilation`` times, touching
       dilations make one group), and a group of that many voxels or fewer is removed from
       the prediction: it is neither matched nor a false positive.
    6. The region's score is the mean over the lesions above ``min_volume`` and the false
       positives; with neither, Dice 1 and HD95 0.

    The 2024 post-treatment scorer also merges true NETC, SNFH, ET and RC lesions that touch a common
    lesion of another of those labels; here each label's lesions are grouped by its own dilation only.
    One more difference from the official code remains: a lesion's HD95 is :func:`hd95`
    (medpy's definition: the 95th percentile of the surface distances of both ways,
    pooled), where the official code takes DeepMind's ``surface-distance`` robust
    Hausdorff (the larger of the two one-way 95th percentiles, weighted by surface-element
    area). Dice, the lesions, matches, false positives and the 374 penalties are the same.

    ``dilation=0, min_volume=0`` gives the simpler definition of earlier versions: a
    component matches a lesion only by overlapping it, and every lesion counts (for the
    pediatric task, predicted parts of 10 voxels or fewer are still dropped: that cleaning is
    part of its scorer, whatever the dilation and volume).

    Saluja et al., BraTS 2023 lesion-wise performance metrics (BraTS-GLI: ``dilation=3``,
    ``min_volume=50``; BraTS-MEN: 1 and 50; BraTS-MET: 1 and 2); the 2024 scorer (post-treatment GLI: 3 and 20,
    ET 10; PED: 5 and 10). Unless given, ``dilation`` and ``min_volume`` are the task's
    (:data:`LESION_PARAMETERS`).

    Args:
        pred_classes, true_classes: class maps ``(D, H, W)`` with the task's classes (default 0..3).
        spacing: voxel size in mm per axis; ``None`` is 1 mm. Used by HD95 and for the
            lesion volumes; the dilation counts voxels, as in the official code.
        connectivity: of the surface used by :func:`hd95`.
        dilation: dilation iterations that group true islands and reach predicted ones (None: the task's).
        min_volume: lesions of this volume in mm^3 or less are not scored (None: the task's, per region).
        task: a :class:`~brats_keras.tasks.Task` or its name; None is the default task.
    Returns:
        ``{"WT": {"dice", "hd95", "n_lesions", "n_missed", "n_false_positives"}, "TC": ...,
        "ET": ...}`` (the task's regions); ``n_lesions`` counts the lesions above ``min_volume``,
        ``n_missed`` those of them that no component touches.
    """
    task = get_task(task)
    own_dilation, own_volume, region_volumes = LESION_PARAMETERS.get(task.name, LESION_PARAMETERS["brats2023"])
    if min_volume is None:
        min_volume = own_volume
    else:
        region_volumes = {}
    dilation = own_dilation if dilation is None else dilation
    if int(dilation) != dilation or dilation < 0:
        raise ValueError(f"dilation must be a whole number >= 0, got {dilation}")
    if min_volume < 0:
        raise ValueError(f"min_volume must be >= 0, got {min_volume}")
    dilation = int(dilation)
    pred, true = _classes_pair(pred_classes, true_classes, task)
    spacing = _spacing(spacing, pred.ndim)
    voxel_volume = float(np.prod(spacing))
    tumor = (pred > 0) | (true > 0)
    if tumor.any():  # every mask and every dilation stays inside this box
        box = box_slices(bounding_box(tumor, margin=dilation + 1))
        pred, true = pred[box], true[box]
    pred_regions = task.classes_to_regions(pred)
    true_regions = task.classes_to_regions(true)
    full = np.ones((3,) * pred.ndim, dtype=bool)
    grow = ndimage.generate_binary_structure(pred.ndim, 2)
    scores = {}
    for i, region in enumerate(task.region_names):
        least = region_volumes.get(region, min_volume)
        truth = true_regions[..., i]
        if task.name in PREDICTION_MIN_VOXELS:
            pred_lab, n_pred = _grouped_prediction(pred_regions[..., i], dilation, grow, full,
                                                   PREDICTION_MIN_VOXELS[task.name])
        else:
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
            if np.count_nonzero(lesion) * voxel_volume <= least:
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


