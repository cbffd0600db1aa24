"""Keras metrics of segmentation quality for ``model.compile(metrics=...)``.

The metrics are stateful ``keras.metrics.Metric`` objects written with ``keras.ops``.
They decode each batch into hard class and region masks, add up voxel counts over
the whole epoch and score the totals (a global Dice ``2 sum TP / (sum |P| + sum |T|)``,
not a mean of per-batch Dice). Each takes the model's ``output``:

* ``"softmax"``: ``y_pred`` and ``y_true`` ``(B, D, H, W, 4)`` (background, NCR, ED, ET);
  classes by argmax, regions as their unions (WT = NCR+ED+ET, TC = NCR+ET, ET).
* ``"regions"``: ``(B, D, H, W, 3)`` (WT, TC, ET); regions by thresholding at 0.5,
  classes by the nested decoding of :func:`brats_keras.labels.regions_to_classes`
  (ET where ET, else NCR where TC, else ED where WT).

Empty masks follow :mod:`brats_keras.evaluation`: both empty scores 1, exactly one
empty scores 0. Counts are float32 (exact up to 2**24 voxels per batch; an epoch's
totals are rounded to about 7 digits). ``sample_weight`` is ignored.

The per-volume numpy scores (``dice``, ``hd95``, ``region_scores``, ``evaluate_folder``, ...)
live in :mod:`brats_keras.evaluation` only.
"""
from __future__ import annotations

import keras
from keras import ops

from .labels import CLASS_NAMES, REGION_NAMES, check_output

__all__ = [
    "ClassDice",
    "RegionDice",
    "MeanDice",
    "VoxelAccuracy",
    "Precision",
    "Recall",
    "report_metrics",
    "decode",
]

_PACKAGE = "brats_keras"
_TUMOR = ("NCR", "ED", "ET")


def decode(y, output: str):
    """Hard class and region masks of a batch of probabilities (or one-hot / region targets).

    Args:
        y: ``(B, D, H, W, 4)`` for ``output="softmax"``, ``(B, D, H, W, 3)`` for ``"regions"``.
        output: ``"softmax"`` or ``"regions"``.
    Returns:
        ``(classes, regions)``: float32 0/1 tensors ``(B, D, H, W, 4)`` (background,
        NCR, ED, ET; exactly one is 1 per voxel) and ``(B, D, H, W, 3)`` (WT, TC, ET).
    """
    output = check_output(output)
    y = ops.cast(y, "float32")
    if output == "softmax":
        classes = ops.one_hot(ops.argmax(y, axis=-1), 4, dtype="float32")
        ncr, ed, et = classes[..., 1], classes[..., 2], classes[..., 3]
        regions = ops.stack([ncr + ed + et, ncr + et, et], axis=-1)
        return classes, regions
    regions = ops.cast(y > 0.5, "float32")
    wt, tc, et = regions[..., 0], regions[..., 1], regions[..., 2]
    ncr = tc * (1.0 - et)
    ed = wt * (1.0 - tc) * (1.0 - et)
    background = 1.0 - ops.maximum(ops.maximum(wt, tc), et)
    return ops.stack([background, ncr, ed, et], axis=-1), regions


def _class_index(cls) -> int:
    if isinstance(cls, str):
        if cls not in _TUMOR:
            raise ValueError(f"unknown class {cls!r}: use one of {', '.join(_TUMOR)}")
        return CLASS_NAMES.index(cls)
    if int(cls) not in (1, 2, 3):
        raise ValueError(f"class index must be 1 (NCR), 2 (ED) or 3 (ET), got {cls!r}")
    return int(cls)


class _CountMetric(keras.metrics.Metric):
    """Accumulates, per selected channel, true positives and the sizes of both masks.

    Subclasses set ``self._kind`` (``"classes"`` or ``"regions"``) and
    ``self._channels`` before calling ``_build``, and compute ``result`` from
    ``self.tp``, ``self.n_true`` and ``self.n_pred`` (float32 vectors).
    """

    def __init__(self, output, name):
        super().__init__(name=name, dtype="float32")
        self.output = check_output(output)

    def _build(self, kind: str, channels):
        self._kind = kind
        self._channels = tuple(int(c) for c in channels)
        n = len(self._channels)
        self.tp = self.add_variable(shape=(n,), initializer="zeros", dtype="float32", name="tp")
        self.n_true = self.add_variable(shape=(n,), initializer="zeros", dtype="float32", name="n_true")
        self.n_pred = self.add_variable(shape=(n,), initializer="zeros", dtype="float32", name="n_pred")

    def _select(self, y, output):
        classes, regions = decode(y, output)
        masks = classes if self._kind == "classes" else regions
        picked = ops.stack([masks[..., c] for c in self._channels], axis=-1)
        return ops.reshape(picked, (-1, len(self._channels)))

    def update_state(self, y_true, y_pred, sample_weight=None):
        t = self._select(y_true, self.output)
        p = self._select(y_pred, self.output)
        self.tp.assign_add(ops.sum(t * p, axis=0))
        self.n_true.assign_add(ops.sum(t, axis=0))
        self.n_pred.assign_add(ops.sum(p, axis=0))

    def reset_state(self):
        for v in (self.tp, self.n_true, self.n_pred):
            v.assign(ops.zeros(v.shape, dtype="float32"))

    # scores of the accumulated counts, one per channel, with the empty conventions
    def _dice(self):
        total = self.n_true + self.n_pred
        return ops.where(total > 0, 2.0 * self.tp / ops.maximum(total, 1.0), 1.0)

    def _precision(self):
        empty = ops.where(self.n_true > 0, 0.0, 1.0)
        return ops.where(self.n_pred > 0, self.tp / ops.maximum(self.n_pred, 1.0), empty)

    def _recall(self):
        empty = ops.where(self.n_pred > 0, 0.0, 1.0)
        return ops.where(self.n_true > 0, self.tp / ops.maximum(self.n_true, 1.0), empty)

    def get_config(self):
        return {"name": self.name, "output": self.output}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class ClassDice(_CountMetric):
    """Dice of one tumor class (NCR, ED or ET) over the epoch: ``2 sum TP / (sum |P| + sum |T|)``.

    Args:
        cls: ``"NCR"``, ``"ED"``, ``"ET"`` or the class index 1, 2, 3.
        output: ``"softmax"`` or ``"regions"`` (see the module docstring).
        name: ``"dice_<cls>"`` by default.
    Shapes:
        ``y_true``, ``y_pred``: ``(B, D, H, W, C)`` with C = 4 (softmax) or 3 (regions).
    """

    def __init__(self, cls="ET", output="softmax", name=None):
        index = _class_index(cls)
        self.cls = CLASS_NAMES[index]
        super().__init__(output, name or f"dice_{self.cls}")
        self._build("classes", [index])

    def result(self):
        return self._dice()[0]

    def get_config(self):
        return {**super().get_config(), "cls": self.cls}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class RegionDice(_CountMetric):
    """Dice of one BraTS region (WT, TC or ET) over the epoch.

    In regions mode the region is the thresholded channel itself (before any nested
    decoding); in softmax mode it is the union of its classes.

    Args:
        region: ``"WT"``, ``"TC"`` or ``"ET"``.
        output: ``"softmax"`` or ``"regions"``.
        name: ``"dice_<region>"`` by default.
    Shapes:
        ``y_true``, ``y_pred``: ``(B, D, H, W, C)`` with C = 4 (softmax) or 3 (regions).
    """

    def __init__(self, region="WT", output="softmax", name=None):
        if region not in REGION_NAMES:
            raise ValueError(f"unknown region {region!r}: use one of {', '.join(REGION_NAMES)}")
        self.region = region
        super().__init__(output, name or f"dice_{region}")
        self._build("regions", [REGION_NAMES.index(region)])

    def result(self):
        return self._dice()[0]

    def get_config(self):
        return {**super().get_config(), "region": self.region}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class MeanDice(_CountMetric):
    """Mean of the epoch Dice of the three tumor classes NCR, ED and ET.

    Args:
        output: ``"softmax"`` or ``"regions"``.
        name: ``"mean_dice"``.
    """

    def __init__(self, output="softmax", name="mean_dice"):
        super().__init__(output, name)
        self._build("classes", [1, 2, 3])

    def result(self):
        return ops.mean(self._dice())


@keras.saving.register_keras_serializable(package=_PACKAGE)
class Precision(_CountMetric):
    """Voxel-wise precision ``sum TP / sum |P|`` of each tumor class, averaged (macro) over NCR, ED, ET.

    Args:
        output: ``"softmax"`` or ``"regions"``.
        name: ``"precision"``.
    """

    def __init__(self, output="softmax", name="precision"):
        super().__init__(output, name)
        self._build("classes", [1, 2, 3])

    def result(self):
        return ops.mean(self._precision())


@keras.saving.register_keras_serializable(package=_PACKAGE)
class Recall(_CountMetric):
    """Voxel-wise recall (sensitivity) ``sum TP / sum |T|`` of each tumor class, macro over NCR, ED, ET.

    Args:
        output: ``"softmax"`` or ``"regions"``.
        name: ``"recall"``.
    """

    def __init__(self, output="softmax", name="recall"):
        super().__init__(output, name)
        self._build("classes", [1, 2, 3])

    def result(self):
        return ops.mean(self._recall())


@keras.saving.register_keras_serializable(package=_PACKAGE)
class VoxelAccuracy(_CountMetric):
    """Fraction of voxels whose class (background, NCR, ED, ET) is right, over the epoch.

    Args:
        output: ``"softmax"`` or ``"regions"`` (classes by nested decoding).
        name: ``"accuracy"``.
    """

    def __init__(self, output="softmax", name="accuracy"):
        super().__init__(output, name)
        self._build("classes", [0, 1, 2, 3])

    def result(self):
        total = ops.sum(self.n_true)
        return ops.where(total > 0, ops.sum(self.tp) / ops.maximum(total, 1.0), 0.0)


def report_metrics(output: str = "softmax") -> list:
    """The metrics of the report's table, for ``model.compile(metrics=report_metrics(output))``.

    In order: ``accuracy``, ``precision``, ``recall``, ``mean_dice``, ``dice_NCR``,
    ``dice_ED``, ``dice_ET``, ``dice_WT``, ``dice_TC``. The ET region is the ET class
    (in both output modes), so ``dice_ET`` stands for both.

    Args:
        output: ``"softmax"`` or ``"regions"``, the model's output.
    """
    output = check_output(output)
    return [
        VoxelAccuracy(output),
        Precision(output),
        Recall(output),
        MeanDice(output),
        *(ClassDice(c, output) for c in _TUMOR),
        RegionDice("WT", output),
        RegionDice("TC", output),
    ]
