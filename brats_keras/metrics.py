"""Keras metrics of segmentation quality for ``model.compile(metrics=...)``.

The metrics are stateful ``keras.metrics.Metric`` objects written with ``keras.ops``.
They decode each batch into hard class and region masks, add up voxel counts over
the whole epoch and score the totals (a global Dice ``2 sum TP / (sum |P| + sum |T|)``,
not a mean of per-batch Dice). Each takes the model's ``output`` and the ``task``
(a :class:`~brats_keras.tasks.Task`, its name or record; None: the 2021 glioma task, whose
channels are shown here):

* ``"softmax"``: ``y_pred`` and ``y_true`` ``(B, D, H, W, n_classes)`` (background, NCR, ED, ET);
  classes by argmax, head regions as the unions of their classes
  (:attr:`~brats_keras.tasks.Task.region_membership`: WT = NCR+ED+ET, TC = NCR+ET, ET).
* ``"regions"``: ``(B, D, H, W, len(task.region_order))`` (WT, TC, ET); regions by thresholding
  at 0.5, classes by the task's nested decoding (:meth:`~brats_keras.tasks.Task.regions_to_classes`:
  a voxel takes the class of the last region of :attr:`~brats_keras.tasks.Task.region_order` it is
  in; ET where ET, else NCR where TC, else ED where WT).

Metric names follow the task: ``dice_<class>`` for its classes, ``dice_<region>`` for its head
regions. A metric's config records a task other than the default (``task.to_dict()``), so a model
file rebuilds its metrics with their task.

Empty masks follow :mod:`brats_keras.evaluation`: both empty scores 1, exactly one
empty scores 0. Counts are float32 (exact up to 2**24 voxels per batch; an epoch's
totals are rounded to about 7 digits). ``sample_weight`` is ignored.

The per-volume numpy scores (``dice``, ``hd95``, ``region_scores``, ``evaluate_folder``, ...)
live in :mod:`brats_keras.evaluation` only.
"""
from __future__ import annotations

import keras
from keras import ops

from .labels import check_output
from .tasks import get_task

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


def _sum(tensors):
    total = tensors[0]
    for t in tensors[1:]:
        total = total + t
    return total


def decode(y, output: str, task=None):
    """Hard class and region masks of a batch of probabilities (or one-hot / region targets).

    Args:
        y: ``(B, D, H, W, n_classes)`` for ``output="softmax"``, ``(B, D, H, W, n_regions)`` for ``"regions"``
            (``n_regions = len(task.region_order)``).
        output: ``"softmax"`` or ``"regions"``.
        task: the task (None: the 2021 glioma task: 4 classes, regions WT, TC, ET).
    Returns:
        ``(classes, regions)``: float32 0/1 tensors ``(B, D, H, W, n_classes)`` (exactly one is 1 per voxel)
        and ``(B, D, H, W, n_regions)``, the head regions in :attr:`~brats_keras.tasks.Task.region_order`.
    """
    output = check_output(output)
    task = get_task(task)
    y = ops.cast(y, "float32")
    n = len(task.region_order)
    if output == "softmax":
        classes = ops.one_hot(ops.argmax(y, axis=-1), task.n_classes, dtype="float32")
        regions = ops.stack([_sum([classes[..., k] for k in task.region_classes(r)]) for r in task.region_order],
                            axis=-1)
        return classes, regions
    regions = ops.cast(y > 0.5, "float32")
    channels = [regions[..., j] for j in range(n)]
    zero = ops.zeros_like(channels[0])
    decoded = [zero] * task.n_classes
    for j, cls in enumerate(task.decoded_classes):  # a voxel takes the class of the last region it is in
        own = channels[j]
        for later in channels[j + 1:]:
            own = own * (1.0 - later)
        decoded[cls] = own
    anywhere = channels[0]
    for c in channels[1:]:
        anywhere = ops.maximum(anywhere, c)
    decoded[0] = 1.0 - anywhere
    return ops.stack(decoded, axis=-1), regions


def _or_list(items) -> str:
    items = list(items)
    return ", ".join(items[:-1]) + " or " + items[-1] if len(items) > 1 else items[0]


def _class_index(cls, task) -> int:
    names = task.class_names
    if isinstance(cls, str):
        if cls not in names[1:]:
            raise ValueError(f"unknown class {cls!r}: use one of {', '.join(names[1:])}")
        return names.index(cls)
    if int(cls) not in range(1, task.n_classes):
        raise ValueError(f"class index must be {_or_list(f'{k} ({n})' for k, n in enumerate(names) if k)}, "
                         f"got {cls!r}")
    return int(cls)


def _task_config(task) -> dict:
    """``{"task": task.to_dict()}`` for a task other than the default (whose configs record none)."""
    return {} if task == get_task(None) else {"task": task.to_dict()}


class _CountMetric(keras.metrics.Metric):
    """Accumulates, per selected channel, true positives and the sizes of both masks.

    Subclasses set ``self._kind`` (``"classes"`` or ``"regions"``) and
    ``self._channels`` before calling ``_build``, and compute ``result`` from
    ``self.tp``, ``self.n_true`` and ``self.n_pred`` (float32 vectors).
    """

    def __init__(self, output, name, task=None):
        super().__init__(name=name, dtype="float32")
        self.output = check_output(output)
        self.task = get_task(task)

    def _build(self, kind: str, channels):
        self._kind = kind
        self._channels = tuple(int(c) for c in channels)
        n = len(self._channels)
        self.tp = self.add_variable(shape=(n,), initializer="zeros", dtype="float32", name="tp")
        self.n_true = self.add_variable(shape=(n,), initializer="zeros", dtype="float32", name="n_true")
        self.n_pred = self.add_variable(shape=(n,), initializer="zeros", dtype="float32", name="n_pred")

    def _select(self, y, output):
        classes, regions = decode(y, output, self.task)
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
        return {"name": self.name, "output": self.output, **_task_config(self.task)}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class ClassDice(_CountMetric):
    """Dice of one tumor class of the task (NCR, ED or ET by default) over the epoch: ``2 sum TP / (sum |P| +
    sum |T|)``.

    Args:
        cls: a class name of the task (``"NCR"``, ``"ED"``, ``"ET"``) or its index (1, 2, 3).
        output: ``"softmax"`` or ``"regions"`` (see the module docstring).
        name: ``"dice_<cls>"`` by default.
        task: the task (None: the 2021 glioma task).
    Shapes:
        ``y_true``, ``y_pred``: ``(B, D, H, W, C)`` with C the task's classes (softmax) or head regions (regions).
    """

    def __init__(self, cls="ET", output="softmax", name=None, task=None):
        task = get_task(task)
        index = _class_index(cls, task)
        self.cls = task.class_names[index]
        super().__init__(output, name or f"dice_{self.cls}", task)
        self._build("classes", [index])

    def result(self):
        return self._dice()[0]

    def get_config(self):
        return {**super().get_config(), "cls": self.cls}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class RegionDice(_CountMetric):
    """Dice of one head region of the task (WT, TC or ET by default: :attr:`~brats_keras.tasks.Task.region_order`)
    over the epoch.

    In regions mode the region is the thresholded channel itself (before any nested
    decoding); in softmax mode it is the union of its classes.

    Args:
        region: a head region of the task (``"WT"``, ``"TC"`` or ``"ET"``).
        output: ``"softmax"`` or ``"regions"``.
        name: ``"dice_<region>"`` by default.
        task: the task (None: the 2021 glioma task).
    Shapes:
        ``y_true``, ``y_pred``: ``(B, D, H, W, C)`` with C the task's classes (softmax) or head regions (regions).
    """

    def __init__(self, region="WT", output="softmax", name=None, task=None):
        task = get_task(task)
        if region not in task.region_order:
            raise ValueError(f"unknown region {region!r}: use one of {', '.join(task.region_order)}")
        self.region = region
        super().__init__(output, name or f"dice_{region}", task)
        self._build("regions", [task.region_order.index(region)])

    def result(self):
        return self._dice()[0]

    def get_config(self):
        return {**super().get_config(), "region": self.region}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class MeanDice(_CountMetric):
    """Mean of the epoch Dice of the task's tumor classes (NCR, ED and ET by default).

    Args:
        output: ``"softmax"`` or ``"regions"``.
        name: ``"mean_dice"``.
        task: the task (None: the 2021 glioma task).
    """

    def __init__(self, output="softmax", name="mean_dice", task=None):
        super().__init__(output, name, task)
        self._build("classes", range(1, self.task.n_classes))

    def result(self):
        return ops.mean(self._dice())


@keras.saving.register_keras_serializable(package=_PACKAGE)
class Precision(_CountMetric):
    """Voxel-wise precision ``sum TP / sum |P|`` of each tumor class, averaged (macro) over the task's tumor
    classes (NCR, ED, ET by default).

    Args:
        output: ``"softmax"`` or ``"regions"``.
        name: ``"precision"``.
        task: the task (None: the 2021 glioma task).
    """

    def __init__(self, output="softmax", name="precision", task=None):
        super().__init__(output, name, task)
        self._build("classes", range(1, self.task.n_classes))

    def result(self):
        return ops.mean(self._precision())


@keras.saving.register_keras_serializable(package=_PACKAGE)
class Recall(_CountMetric):
    """Voxel-wise recall (sensitivity) ``sum TP / sum |T|`` of each tumor class, macro over the task's tumor classes.

    Args:
        output: ``"softmax"`` or ``"regions"``.
        name: ``"recall"``.
        task: the task (None: the 2021 glioma task).
    """

    def __init__(self, output="softmax", name="recall", task=None):
        super().__init__(output, name, task)
        self._build("classes", range(1, self.task.n_classes))

    def result(self):
        return ops.mean(self._recall())


@keras.saving.register_keras_serializable(package=_PACKAGE)
class VoxelAccuracy(_CountMetric):
    """Fraction of voxels whose class (background and the task's classes) is right, over the epoch.

    Args:
        output: ``"softmax"`` or ``"regions"`` (classes by nested decoding).
        name: ``"accuracy"``.
        task: the task (None: the 2021 glioma task).
    """

    def __init__(self, output="softmax", name="accuracy", task=None):
        super().__init__(output, name, task)
        self._build("classes", range(self.task.n_classes))

    def result(self):
        total = ops.sum(self.n_true)
        return ops.where(total > 0, ops.sum(self.tp) / ops.maximum(total, 1.0), 0.0)


def report_metrics(output: str = "softmax", task=None) -> list:
    """The metrics of the report's table, for ``model.compile(metrics=report_metrics(output, task))``.

    In order: ``accuracy``, ``precision``, ``recall``, ``mean_dice``, ``dice_<class>`` for each tumor class of the
    task, then ``dice_<region>`` for each head region (:attr:`~brats_keras.tasks.Task.region_order`) that is not
    one class of the same name. For the default task: ``dice_NCR``, ``dice_ED``, ``dice_ET``, ``dice_WT``,
    ``dice_TC``: the ET region is the ET class, so ``dice_ET`` stands for both (in regions mode it is the ET
    class of the decoding, which is the ET channel, the last decoded).

    Args:
        output: ``"softmax"`` or ``"regions"``, the model's output.
        task: the task (None: the 2021 glioma task).
    """
    output = check_output(output)
    task = get_task(task)
    tumor = task.class_names[1:]
    regions = [r for r in task.region_order
               if not (r in tumor and task.region_classes(r) == (tumor.index(r) + 1,))]
    clash = [r for r in regions if r in tumor]
    if clash:
        raise ValueError(f"task {task.name}: region {clash[0]!r} is named as a class but holds other classes: "
                         f"dice_{clash[0]} would name two scores")
    return [
        VoxelAccuracy(output, task=task),
        Precision(output, task=task),
        Recall(output, task=task),
        MeanDice(output, task=task),
        *(ClassDice(c, output, task=task) for c in tumor),
        *(RegionDice(r, output, task=task) for r in regions),
    ]
