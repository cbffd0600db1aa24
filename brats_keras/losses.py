"""Segmentation losses for softmax and region (sigmoid) models, written with ``keras.ops``.

Every loss takes ``y_true`` and ``y_pred`` with the same channel layout, channels last,
a batch ``(B, D, H, W, C)`` (any number of spatial axes works):

* ``output="softmax"``: one channel per class of the task, background first (4 for the 2021 glioma task:
  background, NCR, ED, ET); ``y_true`` one-hot.
* ``output="regions"``: one sigmoid channel per head region of the task (3 for the 2021 glioma task: WT, TC, ET;
  4 for post-treatment glioma: WT, TC, ET, RC); ``y_true`` region masks.

No loss assumes a number of channels: each takes the channels it is given, so one loss serves every task
(a per-channel ``alpha`` of :class:`FocalLoss` must list one weight per channel of the task's head).

``y_pred`` holds probabilities (softmax or sigmoid outputs), never logits. Both tensors
are cast to float32 first and every sum is taken in float32, so the losses behave the
same under ``mixed_float16`` or ``mixed_bfloat16``.

All losses share the same switches (``include_background``, ``smooth``, ``batch``,
``reduction``) where they make sense, and they add and scale like numbers::

    loss = DiceLoss() + 0.5 * FocalLoss()      # a CombinedLoss named "dice+0.5*focal"
    loss = get_loss("dice+0.5*focal", output="softmax")   # the same, from a string

Every class is registered with Keras (package ``brats_keras``), so a model compiled
with these losses and saved as ``.keras`` reloads with ``keras.saving.load_model``
without ``custom_objects`` once this module has been imported.
"""
from __future__ import annotations

import numbers
import re
import warnings

import keras
from keras import ops

from .labels import check_output

__all__ = [
    "SegLoss",
    "CombinedLoss",
    "DiceLoss",
    "TverskyLoss",
    "FocalLoss",
    "CrossEntropyLoss",
    "get_loss",
    "LOSS_NAMES",
]

_PACKAGE = "brats_keras"
def _float32(y_true, y_pred):
    return ops.cast(y_true, "float32"), ops.cast(y_pred, "float32")


def _drop_background(y_true, y_pred, include_background: bool):
    """Drop channel 0 (background of a softmax output) unless it is included."""
    if include_background:
        return y_true, y_pred
    if y_pred.shape[-1] is not None and y_pred.shape[-1] < 2:
        raise ValueError(
            "include_background=False needs at least 2 channels, "
            f"got y_pred of shape {tuple(y_pred.shape)}"
        )
    return y_true[..., 1:], y_pred[..., 1:]


def _sum_axes(rank: int, batch: bool) -> list[int]:
    """Axes summed by the overlap losses: the spatial axes, and the batch axis too if ``batch``."""
    if rank < 3:
        raise ValueError(
            f"expected a batch (B, *spatial, C) of rank >= 3, got rank {rank}"
        )
    return list(range(0 if batch else 1, rank - 1))


def _tp_fp_fn(y_true, y_pred, include_background: bool, batch: bool):
    """Soft true positives ``sum(y p)``, false positives ``sum((1 - y) p)`` and false negatives ``sum(y (1 - p))``
    per channel, in float32: what the Dice and Tversky losses are made of.

    Args:
        y_true, y_pred: ``(B, *spatial, C)``; cast to float32, channel 0 dropped unless ``include_background``.
        batch: sum over the batch too (shapes ``(C,)``) instead of per sample (``(B, C)``).
    """
    y_true, y_pred = _float32(y_true, y_pred)
    y_true, y_pred = _drop_background(y_true, y_pred, include_background)
    axes = _sum_axes(len(y_pred.shape), batch)
    tp = ops.sum(y_true * y_pred, axis=axes)
    fp = ops.sum((1.0 - y_true) * y_pred, axis=axes)
    fn = ops.sum(y_true * (1.0 - y_pred), axis=axes)
    return tp, fp, fn


#: Keras reductions that average, and so divide a loss by the replica count under ``tf.distribute``
_MEAN_REDUCTIONS = ("sum_over_batch_size", "mean", "mean_with_sample_weight")


def _per_replica(value):
    """``value`` divided by the replica count of the ``tf.distribute`` strategy in scope (TensorFlow only).

    Keras divides a loss by the replica count (the gradients are then summed over the replicas) only when
    ``call`` returns one value per sample; a ``batch=True`` loss returns one value for the whole batch, which
    Keras returns as it is, so under ``MirroredStrategy`` with R replicas its gradients came out R times too
    large. This divides it as Keras divides the others.
    """
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        if replicas > 1:
            value = value / float(replicas)
    return value


def _format_weight(weight: float) -> str:
    return f"{weight:g}"


@keras.saving.register_keras_serializable(package=_PACKAGE)
class SegLoss(keras.losses.Loss):
    """Base class of the brats_keras losses: a Keras loss computed in float32 that adds and scales.

    ``a + b`` and ``w * a`` (or ``a * w``) build a :class:`CombinedLoss`, the weighted
    sum of the parts, whose name is built from theirs (``"dice+0.5*focal"``).

    Subclasses implement ``call(y_true, y_pred)`` and return one value per sample,
    shape ``(B,)`` (or a scalar when they reduce over the batch themselves, ``batch=True``); Keras
    then applies ``reduction`` and ``sample_weight``. Under a ``tf.distribute`` strategy a mean
    loss is divided by the replica count (the gradients are summed over the replicas), the
    scalar of ``batch=True`` too.
    """

    def __init__(self, name=None, reduction="sum_over_batch_size"):
        # The arithmetic is float32 whatever the global policy: the dtype is fixed, not a setting.
        super().__init__(name=name, reduction=reduction, dtype="float32")

    def __add__(self, other):
        return CombinedLoss._parts_of(self) + other

    def __radd__(self, other):
        # sum([a, b]) starts from 0; a plain keras Loss on the left joins too
        if isinstance(other, numbers.Number) and not isinstance(other, bool) and other == 0:
            return CombinedLoss._parts_of(self)
        if isinstance(other, keras.losses.Loss):
            return CombinedLoss([(1.0, other)]) + self
        return NotImplemented

    def __mul__(self, weight):
        if not isinstance(weight, numbers.Number) or isinstance(weight, bool):
            return NotImplemented
        return CombinedLoss([(float(weight), self)])

    __rmul__ = __mul__

    def __call__(self, y_true, y_pred, sample_weight=None):
        value = super().__call__(y_true, y_pred, sample_weight=sample_weight)
        if getattr(self, "batch", False) and sample_weight is None and self.reduction in _MEAN_REDUCTIONS:
            value = _per_replica(value)
        return value

    def get_config(self):
        return {"name": self.name, "reduction": self.reduction}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class CombinedLoss(SegLoss):
    """A weighted sum of losses: ``sum_i w_i * L_i(y_true, y_pred)``.

    Usually built with arithmetic (``DiceLoss() + 0.5 * FocalLoss()``) rather than
    directly. Each part applies its own ``reduction`` and ``sample_weight``; the
    combined value is the weighted sum of those results.

    Args:
        parts: list of ``(weight, loss)`` pairs; a loss may itself be a ``CombinedLoss``
            (its parts are flattened into this one).
        name: defaults to the parts' names joined by ``+``, each weight other than 1
            written before its name: ``"dice+0.5*focal"``.
        reduction: kept for Keras' interface; the parts reduce themselves.
    Shapes:
        whatever the parts accept, typically ``(B, D, H, W, C)`` for both tensors.
    """

    def __init__(self, parts, name=None, reduction="sum_over_batch_size"):
        flat = []
        for weight, loss in parts:
            if isinstance(loss, dict):
                loss = keras.saving.deserialize_keras_object(loss)
            if not isinstance(loss, keras.losses.Loss):
                raise TypeError(f"a CombinedLoss part must be a keras Loss, got {loss!r}")
            if isinstance(loss, CombinedLoss):
                flat.extend((float(weight) * w, part) for w, part in loss.parts)
            else:
                flat.append((float(weight), loss))
        if not flat:
            raise ValueError("a CombinedLoss needs at least one part")
        self.parts = flat
        if name is None:
            name = "+".join(
                part.name if w == 1.0 else f"{_format_weight(w)}*{part.name}"
                for w, part in flat
            )
        super().__init__(name=name, reduction=reduction)

    @staticmethod
    def _parts_of(loss) -> "CombinedLoss":
        return loss if isinstance(loss, CombinedLoss) else CombinedLoss([(1.0, loss)])

    def __add__(self, other):
        if isinstance(other, CombinedLoss):
            return CombinedLoss(self.parts + other.parts)
        if isinstance(other, keras.losses.Loss):
            return CombinedLoss(self.parts + [(1.0, other)])
        return NotImplemented

    def __mul__(self, weight):
        if not isinstance(weight, numbers.Number) or isinstance(weight, bool):
            return NotImplemented
        return CombinedLoss([(float(weight) * w, part) for w, part in self.parts])

    __rmul__ = __mul__

    def _weighted_sum(self, value_of):
        """``sum_i w_i * value_of(part_i)`` in float32 (a weight of 1 multiplies nothing)."""
        total = None
        for weight, part in self.parts:
            value = ops.cast(value_of(part), "float32")
            value = value if weight == 1.0 else weight * value
            total = value if total is None else total + value
        return total

    def __call__(self, y_true, y_pred, sample_weight=None):
        return self._weighted_sum(lambda part: part(y_true, y_pred, sample_weight=sample_weight))

    def call(self, y_true, y_pred):
        return self._weighted_sum(lambda part: part.call(y_true, y_pred))

    def get_config(self):
        config = super().get_config()
        config["parts"] = [
            {"weight": w, "loss": keras.saving.serialize_keras_object(part)}
            for w, part in self.parts
        ]
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        parts = [
            (p["weight"], keras.saving.deserialize_keras_object(p["loss"]))
            for p in config.pop("parts")
        ]
        return cls(parts, **config)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class DiceLoss(SegLoss):
    """Soft Dice loss, one minus the soft Dice coefficient averaged over channels.

    For each channel ``c`` (and each sample unless ``batch``), with sums over voxels::

        L_c = 1 - (2 * sum(y * p) + smooth) / (sum(y) + sum(p) + smooth)

    and the loss of a sample is the mean of ``L_c`` over channels. An empty target
    predicted empty scores ``L_c = 0`` (the ``smooth`` terms make the ratio 1).

    Milletari, Navab and Ahmadi, "V-Net: Fully convolutional neural networks for
    volumetric medical image segmentation", 3DV 2016.

    Args:
        include_background: keep channel 0. ``False`` drops it, which only makes sense
            for a softmax output (channel 0 is background); a region output has no
            background channel. ``get_loss`` keeps it (the report's plain Dice over
            all four classes).
        smooth: added to numerator and denominator; keeps the ratio defined on empty
            channels.
        batch: sum over the batch as well as the voxels (one Dice per channel for the
            whole batch) instead of one Dice per sample.
        reduction: Keras reduction of the per-sample values (``"sum_over_batch_size"``).
        name: loss name, ``"dice"``.
    Shapes:
        ``y_true`` and ``y_pred``: ``(B, D, H, W, C)``, probabilities in ``[0, 1]``.
        ``call`` returns ``(B,)``, or a scalar when ``batch=True``.
    """

    def __init__(
        self,
        include_background=True,
        smooth=1e-5,
        batch=False,
        reduction="sum_over_batch_size",
        name="dice",
    ):
        super().__init__(name=name, reduction=reduction)
        self.include_background = bool(include_background)
        self.smooth = float(smooth)
        self.batch = bool(batch)

    def call(self, y_true, y_pred):
        tp, fp, fn = _tp_fp_fn(y_true, y_pred, self.include_background, self.batch)
        score = (2.0 * tp + self.smooth) / (2.0 * tp + fp + fn + self.smooth)
        return ops.mean(1.0 - score, axis=-1)

    def get_config(self):
        config = super().get_config()
        config.update(
            include_background=self.include_background, smooth=self.smooth, batch=self.batch
        )
        return config


@keras.saving.register_keras_serializable(package=_PACKAGE)
class TverskyLoss(SegLoss):
    """Tversky loss: a Dice loss that weighs false positives and false negatives apart.

    For each channel, with soft counts ``TP = sum(y p)``, ``FP = sum((1 - y) p)``,
    ``FN = sum(y (1 - p))``::

        L_c = 1 - (2 TP + smooth) / (2 TP + 2 alpha FP + 2 beta FN + smooth)

    which is the Tversky index ``TP / (TP + alpha FP + beta FN)`` with the smoothing
    written as in :class:`DiceLoss`, so that ``alpha = beta = 0.5`` gives the Dice
    loss exactly, smoothing included. ``beta > alpha`` favours recall (small lesions).
    Averaged over channels as the Dice loss.

    Salehi, Erdogmus and Gholipour, "Tversky loss function for image segmentation
    using 3D fully convolutional deep networks", MLMI 2017.

    Args:
        alpha: weight of the false positives.
        beta: weight of the false negatives.
        include_background, smooth, batch, reduction: as in :class:`DiceLoss`.
        name: loss name, ``"tversky"``.
    Shapes:
        ``y_true`` and ``y_pred``: ``(B, D, H, W, C)``; ``call`` returns ``(B,)``
        (a scalar when ``batch=True``).
    """

    def __init__(
        self,
        alpha=0.5,
        beta=0.5,
        include_background=True,
        smooth=1e-5,
        batch=False,
        reduction="sum_over_batch_size",
        name="tversky",
    ):
        super().__init__(name=name, reduction=reduction)
        if alpha < 0 or beta < 0:
            raise ValueError(f"alpha and beta must be >= 0, got alpha={alpha}, beta={beta}")
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.include_background = bool(include_background)
        self.smooth = float(smooth)
        self.batch = bool(batch)

    def call(self, y_true, y_pred):
        tp, fp, fn = _tp_fp_fn(y_true, y_pred, self.include_background, self.batch)
        denominator = 2.0 * tp + 2.0 * self.alpha * fp + 2.0 * self.beta * fn
        score = (2.0 * tp + self.smooth) / (denominator + self.smooth)
        return ops.mean(1.0 - score, axis=-1)

    def get_config(self):
        config = super().get_config()
        config.update(
            alpha=self.alpha,
            beta=self.beta,
            include_background=self.include_background,
            smooth=self.smooth,
            batch=self.batch,
        )
        return config


def _alpha_config(alpha):
    if alpha is None or isinstance(alpha, numbers.Number):
        return None if alpha is None else float(alpha)
    return [float(a) for a in alpha]


def _output_of(output, mode):
    """``output``, or the deprecated spelling ``mode`` when it is given (DeprecationWarning)."""
    if mode is None:
        return output
    warnings.warn("the losses' mode= is deprecated: pass output= (softmax or regions), as models and metrics take",
                  DeprecationWarning, stacklevel=3)
    return mode


class _ModeLoss(SegLoss):
    """Shared parts of the voxel-wise losses (focal, cross-entropy)."""

    def __init__(self, output, include_background, name, reduction):
        super().__init__(name=name, reduction=reduction)
        self.output = check_output(output)
        self.include_background = bool(include_background)

    @property
    def mode(self) -> str:
        """The model's head, ``output`` (the name models, data, metrics and TrainConfig use)."""
        return self.output

    def _prepare(self, y_true, y_pred):
        y_true, y_pred = _float32(y_true, y_pred)
        y_true, y_pred = _drop_background(y_true, y_pred, self.include_background)
        eps = keras.config.epsilon()
        return y_true, ops.clip(y_pred, eps, 1.0 - eps)

    def _mean_over_voxels(self, per_voxel):
        """``per_voxel`` is ``(B, *spatial, C)``: channels summed (softmax) or averaged (regions)."""
        if self.output == "softmax":
            per_voxel = ops.sum(per_voxel, axis=-1)
        else:
            per_voxel = ops.mean(per_voxel, axis=-1)
        return ops.mean(per_voxel, axis=list(range(1, len(per_voxel.shape))))

    def get_config(self):
        config = super().get_config()
        config.update(output=self.output, include_background=self.include_background)
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if "mode" in config:  # the key of model files and run checkpoints saved with the head named mode
            config["output"] = config.pop("mode")
        return cls(**config)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class FocalLoss(_ModeLoss):
    """Focal loss: cross-entropy that down-weights voxels already classified well.

    Softmax mode (categorical focal loss), per voxel::

        L = - sum_c a_c * y_c * (1 - p_c)^gamma * log(p_c)

    Regions mode (binary focal loss per channel, averaged over channels), per voxel::

        L = - a_t * (1 - p_t)^gamma * log(p_t),  p_t = y p + (1 - y)(1 - p)

    then the mean over voxels gives one value per sample. ``gamma = 0`` and no
    ``alpha`` is the cross-entropy. Probabilities are clipped to
    ``[eps, 1 - eps]`` with ``eps = keras.config.epsilon()``.

    Lin, Goyal, Girshick, He and Dollar, "Focal loss for dense object detection",
    ICCV 2017.

    Args:
        gamma: focusing exponent, ``>= 0``.
        alpha: ``None`` (no weighting); a number (softmax: ``a_c = alpha`` for every
            class; regions: ``a_t = alpha`` on positives and ``1 - alpha`` on
            negatives, as in the paper); or one number per channel (kept after
            ``include_background``) used the same way per channel.
        output: ``"softmax"`` or ``"regions"``, the model's head (``mode=``: deprecated spelling).
        include_background: keep channel 0 (softmax mode).
        reduction: Keras reduction of the per-sample values.
        name: loss name, ``"focal"``.
    Shapes:
        ``y_true`` and ``y_pred``: ``(B, D, H, W, C)``; ``call`` returns ``(B,)``.
    """

    def __init__(
        self,
        gamma=2.0,
        alpha=None,
        output="softmax",
        include_background=True,
        reduction="sum_over_batch_size",
        name="focal",
        mode=None,
    ):
        super().__init__(_output_of(output, mode), include_background, name, reduction)
        if gamma < 0:
            raise ValueError(f"gamma must be >= 0, got {gamma}")
        self.gamma = float(gamma)
        self.alpha = _alpha_config(alpha)

    def call(self, y_true, y_pred):
        y_true, y_pred = self._prepare(y_true, y_pred)
        alpha = None if self.alpha is None else ops.convert_to_tensor(self.alpha, "float32")
        if self.output == "softmax":
            per_voxel = -y_true * ops.power(1.0 - y_pred, self.gamma) * ops.log(y_pred)
            if alpha is not None:
                per_voxel = alpha * per_voxel
        else:
            p_t = y_true * y_pred + (1.0 - y_true) * (1.0 - y_pred)
            per_voxel = -ops.power(1.0 - p_t, self.gamma) * ops.log(p_t)
            if alpha is not None:
                per_voxel = (alpha * y_true + (1.0 - alpha) * (1.0 - y_true)) * per_voxel
        return self._mean_over_voxels(per_voxel)

    def get_config(self):
        config = super().get_config()
        config.update(gamma=self.gamma, alpha=self.alpha)
        return config


@keras.saving.register_keras_serializable(package=_PACKAGE)
class CrossEntropyLoss(_ModeLoss):
    """Voxel-wise cross-entropy: categorical for softmax outputs, binary for regions.

    Softmax mode, per voxel ``L = - sum_c y_c log(p_c)``; regions mode, per voxel and
    channel ``L = - (y log p + (1 - y) log(1 - p))`` averaged over channels; then the
    mean over voxels gives one value per sample. Probabilities are clipped to
    ``[eps, 1 - eps]`` with ``eps = keras.config.epsilon()``.

    Args:
        output: ``"softmax"`` (categorical) or ``"regions"`` (binary), the model's head (``mode=``: deprecated
            spelling).
        include_background: keep channel 0 (softmax mode).
        reduction: Keras reduction of the per-sample values.
        name: ``"ce"`` for softmax, ``"bce"`` for regions by default.
    Shapes:
        ``y_true`` and ``y_pred``: ``(B, D, H, W, C)``; ``call`` returns ``(B,)``.
    """

    def __init__(
        self,
        output="softmax",
        include_background=True,
        reduction="sum_over_batch_size",
        name=None,
        mode=None,
    ):
        output = check_output(_output_of(output, mode))
        if name is None:
            name = "ce" if output == "softmax" else "bce"
        super().__init__(output, include_background, name, reduction)

    def call(self, y_true, y_pred):
        y_true, y_pred = self._prepare(y_true, y_pred)
        if self.output == "softmax":
            per_voxel = -y_true * ops.log(y_pred)
        else:
            per_voxel = -(y_true * ops.log(y_pred) + (1.0 - y_true) * ops.log(1.0 - y_pred))
        return self._mean_over_voxels(per_voxel)


#: names understood by :func:`get_loss`
LOSS_NAMES = ("dice", "tversky", "focal", "ce", "bce", "cce")

_TERM = re.compile(r"^(?:(?P<weight>[0-9]*\.?[0-9]+(?:e[-+]?[0-9]+)?)\s*\*\s*)?(?P<name>[a-z_]+)$")


def _one_loss(name: str, output: str) -> SegLoss:
    if name == "dice":
        return DiceLoss(include_background=True)
    if name == "tversky":
        # alpha 0.3 / beta 0.7 weighs missed tumor more than false alarms (Salehi et al., 2017);
        # with 0.5 / 0.5 "dice+tversky" would only be twice the Dice loss
        return TverskyLoss(alpha=0.3, beta=0.7, include_background=True)
    if name == "focal":
        return FocalLoss(output=output)
    if name == "ce":
        return CrossEntropyLoss(output=output)
    if name == "bce":
        return CrossEntropyLoss(output="regions")
    if name == "cce":
        if output != "softmax":
            raise ValueError(
                "'cce' (categorical cross-entropy) needs output='softmax': region "
                "channels overlap; use 'ce' or 'bce' for output='regions'"
            )
        return CrossEntropyLoss(output="softmax")
    raise ValueError(f"unknown loss {name!r}: use one of {', '.join(LOSS_NAMES)}")


def get_loss(spec, output: str = "softmax") -> SegLoss:
    """Build a loss from a string such as ``"dice"``, ``"dice+ce"`` or ``"dice+0.5*focal"``.

    Terms are joined by ``+`` and may carry a weight (``0.5*focal``). Names:

    * ``dice``, ``tversky`` (alpha 0.3, beta 0.7): over all channels (``include_background=True``; for a
      softmax model that includes the background class, the plain Dice of the report);
    * ``focal``, ``ce``: categorical for ``output="softmax"``, binary for ``"regions"``;
    * ``bce``: binary cross-entropy per channel, whatever the output;
    * ``cce``: categorical cross-entropy (softmax only).

    A loss object is returned unchanged. For other settings build the classes directly.

    Args:
        spec: the string (case and spaces ignored) or a ``keras.losses.Loss``.
        output: ``"softmax"`` or ``"regions"``, the model's output.
    Raises:
        ValueError naming the unknown term or output.
    """
    output = check_output(output)
    if isinstance(spec, keras.losses.Loss):
        return spec
    if not isinstance(spec, str):
        raise ValueError(f"a loss spec must be a string such as 'dice+ce', got {spec!r}")
    terms = [t.strip() for t in spec.strip().lower().split("+")]
    if not spec.strip() or any(not t for t in terms):
        raise ValueError(f"empty term in loss spec {spec!r}: write e.g. 'dice+0.5*focal'")
    losses = []
    for term in terms:
        match = _TERM.match(term)
        if match is None:
            raise ValueError(
                f"cannot parse {term!r} in loss spec {spec!r}: write NAME or WEIGHT*NAME, "
                f"e.g. 'dice+0.5*focal'"
            )
        loss = _one_loss(match["name"], output)
        if match["weight"] is not None:
            loss = float(match["weight"]) * loss
        losses.append(loss)
    if len(losses) == 1:
        return losses[0]
    total = losses[0]
    for loss in losses[1:]:
        total = total + loss
    return total
