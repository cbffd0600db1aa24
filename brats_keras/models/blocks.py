"""Building blocks shared by the segmentation models.

Everything is written with ``keras.layers`` only, so the models run on any Keras 3
backend (TensorFlow, JAX). Tensors are channels-last: a feature map is
``(B, D, H, W, C)``, or ``(B, H, W, C)`` for the 2D models: the blocks that convolve take
``rank=2`` for those (:func:`nd_layer` picks ``Conv2D`` for ``Conv3D`` and so on).

The functions here take a tensor and return a tensor (functional API); the layers
they create get predictable names built from ``name`` so that a saved model reads
well in ``model.summary()``.
"""
from __future__ import annotations

import keras

from ..labels import OUTPUTS, check_output
from ..tasks import get_task

NORMS = ("batch", "instance", "group", "none")
ACTIVATIONS = ("relu", "leaky_relu", "prelu")
#: most groups a ``"group"`` norm uses (fewer when the channels are not divisible)
MAX_GROUPS = 8
#: slope of ``leaky_relu`` for negative inputs
LEAKY_SLOPE = 0.01


#: spatial dimensions a model may have: 3 (volumes) or 2 (slices, :mod:`brats_keras.models.unet2d`)
RANKS = (2, 3)


def nd_layer(kind: str, rank: int = 3):
    """The Keras layer class ``kind`` for ``rank`` spatial dimensions: ``nd_layer("Conv{}DTranspose", 2)`` is
    ``keras.layers.Conv2DTranspose``."""
    if rank not in RANKS:
        raise ValueError(f"rank must be one of {', '.join(map(str, RANKS))}, got {rank!r}")
    return getattr(keras.layers, kind.format(rank))


# ---------------------------------------------------------------------------
# argument checks shared by every builder
# ---------------------------------------------------------------------------
def check_choice(value, choices, what: str) -> str:
    """Return ``value`` lower-cased if it is one of ``choices``, else raise ValueError."""
    key = value.lower() if isinstance(value, str) else value
    if key not in choices:
        raise ValueError(f"unknown {what} {value!r}: use one of {', '.join(map(repr, choices))}")
    return key


def check_positive_int(value, what: str) -> int:
    """Return ``value`` as int if it is a positive integer, else raise ValueError."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{what} must be a positive integer, got {value!r}")
    return value


def check_dropout(rate) -> float:
    """Return ``rate`` as float if it is in ``[0, 1)``, else raise ValueError."""
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0.0 <= rate < 1.0:
        raise ValueError(f"dropout must be a rate in [0, 1), got {rate!r}")
    return float(rate)


def output_channels(output: str, n_classes: int | None = None, task=None) -> int:
    """Number of output channels for an output mode.

    With a ``task`` (a :class:`~brats_keras.tasks.Task` or its name), its head's channels: ``"softmax"`` its classes
    (background included), ``"regions"`` its head regions (:attr:`~brats_keras.tasks.Task.region_order`);
    ``n_classes``, when given, must be the task's classes. Without one (the 2021 glioma task):
    ``"softmax"``: ``n_classes`` (at least 2; 4 when None) class probabilities that sum to 1.
    ``"regions"``: 3 independent sigmoid channels WT, TC, ET. They are derived from
    the 4 BraTS classes, so ``n_classes`` must be 4 (the default) or 3.
    """
    output = check_output(output)
    if n_classes is not None and (isinstance(n_classes, bool) or not isinstance(n_classes, int)):
        raise ValueError(f"n_classes must be an integer, got {n_classes!r}")
    if task is not None:
        task = get_task(task)
        if n_classes is not None and n_classes != task.n_classes:
            raise ValueError(f"n_classes {n_classes} differs from the {task.n_classes} classes of task {task.name} "
                             f"({', '.join(task.class_names)}): give the task alone")
        return task.output_channels(output)
    n_classes = 4 if n_classes is None else n_classes
    if output == "softmax":
        if n_classes < 2:
            raise ValueError(f"output='softmax' needs n_classes >= 2, got {n_classes}")
        return n_classes
    if n_classes not in (3, 4):
        raise ValueError(
            f"output='regions' always gives 3 sigmoid channels (WT, TC, ET) from the 4 classes; "
            f"n_classes must be 4 or 3, got {n_classes}"
        )
    return 3


def input_shape(patch_size, in_channels: int, divisor: int, rank: int = 3) -> tuple:
    """Input shape ``(D, H, W, C)`` of a model (``(H, W, C)`` with ``rank=2``); spatial sizes are ``None`` when
    ``patch_size`` is None.

    Args:
        patch_size: None (any size), an int (a cube, or a square with ``rank=2``) or ``rank`` ints.
        in_channels: number of input channels (modalities).
        divisor: every spatial size must be a multiple of this (``2 ** depth`` for a U-Net).
        rank: spatial dimensions, 3 or 2.
    Raises:
        ValueError when a size is not a positive multiple of ``divisor``.
    """
    in_channels = check_positive_int(in_channels, "in_channels")
    if patch_size is None:
        return (None,) * rank + (in_channels,)
    sizes = (patch_size,) * rank if isinstance(patch_size, int) else tuple(patch_size)
    if len(sizes) != rank:
        axes = "(D, H, W)" if rank == 3 else "(H, W)"
        raise ValueError(f"patch_size must be an int or {rank} ints {axes}, got {patch_size!r}")
    for s in sizes:
        if isinstance(s, bool) or not isinstance(s, int) or s < 1 or s % divisor:
            raise ValueError(
                f"patch_size {patch_size!r} does not work: every size must be a positive "
                f"multiple of {divisor} (2 ** depth pooling steps)"
            )
    return sizes + (in_channels,)


# ---------------------------------------------------------------------------
# layers
# ---------------------------------------------------------------------------
def group_count(channels: int | None, max_groups: int = MAX_GROUPS) -> int:
    """Largest number of groups ``<= max_groups`` that divides ``channels`` (``max_groups`` if unknown)."""
    if channels is None:
        return max_groups
    return max(g for g in range(1, max_groups + 1) if channels % g == 0)


def norm_layer(kind: str, name: str, channels: int | None = None) -> keras.layers.Layer:
    """Return a normalization layer over the channel axis (last).

    Args:
        kind: ``"batch"`` (BatchNormalization), ``"instance"`` (GroupNormalization
            with one group per channel), ``"group"`` (GroupNormalization with 8
            groups, or fewer when ``channels`` is not divisible by 8) or ``"none"``
            (an Identity layer, so callers can always apply the result).
        name: layer name.
        channels: channels of the input; only ``"group"`` needs it.
    """
    kind = check_choice(kind, NORMS, "norm")
    if kind == "batch":
        return keras.layers.BatchNormalization(axis=-1, name=name)
    if kind == "instance":
        return keras.layers.GroupNormalization(groups=-1, axis=-1, name=name)
    if kind == "group":
        return keras.layers.GroupNormalization(groups=group_count(channels), axis=-1, name=name)
    return keras.layers.Identity(name=name)


def activation_layer(kind: str, name: str, rank: int = 3) -> keras.layers.Layer:
    """Return ``relu``, ``leaky_relu`` (slope 0.01) or ``prelu`` (one slope per channel, shared over the ``rank``
    spatial axes)."""
    kind = check_choice(kind, ACTIVATIONS, "activation")
    if kind == "relu":
        return keras.layers.ReLU(name=name)
    if kind == "leaky_relu":
        return keras.layers.LeakyReLU(negative_slope=LEAKY_SLOPE, name=name)
    return keras.layers.PReLU(shared_axes=list(range(1, rank + 1)), name=name)


def conv3d(filters: int, kernel_size: int, name: str, norm: str, strides: int = 1, rank: int = 3):
    """A ``'same'`` Conv3D (Conv2D with ``rank=2``), without bias when a norm follows (the norm's shift replaces
    it)."""
    return nd_layer("Conv{}D", rank)(
        filters,
        kernel_size,
        strides=strides,
        padding="same",
        use_bias=norm == "none",
        kernel_initializer="he_normal",
        name=name,
    )


def conv_norm_act(x, filters: int, name: str, norm: str = "batch", activation: str = "relu",
                  kernel_size: int = 3, strides: int = 1, rank: int = 3):
    """Conv3D (Conv2D with ``rank=2``) -> norm -> activation; layers are named ``{name}_conv``, ``_norm``, ``_act``."""
    x = conv3d(filters, kernel_size, f"{name}_conv", norm, strides, rank)(x)
    x = norm_layer(norm, f"{name}_norm", filters)(x)
    return activation_layer(activation, f"{name}_act", rank)(x)


def conv_block(x, filters: int, name: str, norm: str = "batch", activation: str = "relu",
               dropout: float = 0.0, kernel_size: int = 3, rank: int = 3):
    """Two (Conv3D 3x3x3 'same' -> norm -> activation), as in each level of a 3D U-Net (3x3 Conv2D with
    ``rank=2``).

    ``dropout`` > 0 adds a SpatialDropout3D (SpatialDropout2D) after the first convolution.
    Shape: ``(B, D, H, W, C)`` -> ``(B, D, H, W, filters)``; ``(B, H, W, C)`` -> ``(B, H, W, filters)``.
    """
    x = conv_norm_act(x, filters, f"{name}_1", norm, activation, kernel_size, rank=rank)
    if dropout:
        x = nd_layer("SpatialDropout{}D", rank)(dropout, name=f"{name}_drop")(x)
    return conv_norm_act(x, filters, f"{name}_2", norm, activation, kernel_size, rank=rank)


def residual_block(x, filters: int, name: str, n_convs: int = 2, norm: str = "batch",
                   activation: str = "relu", dropout: float = 0.0, kernel_size: int = 3, rank: int = 3):
    """``n_convs`` convolutions wrapped in a residual connection (He et al. 2016; Drozdzal et al. 2016).

    ``y = act(F(x) + s(x))`` where F is (conv -> norm -> act) repeated, the last one
    without its activation, and the shortcut ``s`` is the identity when ``x``
    already has ``filters`` channels, else a 1x1x1 Conv3D projection (Conv2D with ``rank=2``).
    ``dropout`` > 0 adds a SpatialDropout3D after the first convolution.
    Shape: ``(B, D, H, W, C)`` -> ``(B, D, H, W, filters)`` (or the 2D shapes with ``rank=2``).
    """
    n_convs = check_positive_int(n_convs, "n_convs")
    if x.shape[-1] == filters:
        shortcut = x
    else:
        shortcut = nd_layer("Conv{}D", rank)(filters, 1, padding="same", name=f"{name}_proj")(x)
    y = x
    for i in range(1, n_convs + 1):
        y = conv3d(filters, kernel_size, f"{name}_{i}_conv", norm, rank=rank)(y)
        y = norm_layer(norm, f"{name}_{i}_norm", filters)(y)
        if i < n_convs:
            y = activation_layer(activation, f"{name}_{i}_act", rank)(y)
        if i == 1 and dropout:
            y = nd_layer("SpatialDropout{}D", rank)(dropout, name=f"{name}_drop")(y)
    y = keras.layers.Add(name=f"{name}_add")([y, shortcut])
    return activation_layer(activation, f"{name}_act", rank)(y)


def output_head(x, n_out: int, output: str, name: str = "head", kernel_size: int = 1, rank: int = 3):
    """The model's last layers: Conv3D (Conv2D with ``rank=2``) to ``n_out`` channels, then softmax or sigmoid,
    in float32.

    Both layers use ``dtype="float32"``, so under a mixed-precision policy
    (``keras.mixed_precision.set_global_policy("mixed_bfloat16")``) the logits and the
    probabilities are still computed in float32 (the input is cast up).

    Args:
        x: features ``(B, D, H, W, C)``.
        n_out: output channels (the task's classes or head regions: :func:`output_channels`).
        output: ``"softmax"`` (class probabilities summing to 1 over the last axis)
            or ``"regions"`` (independent sigmoids, one per head region of the task).
        name: prefix; the layers are ``{name}_conv`` and ``{name}_softmax``/``{name}_sigmoid``.
        kernel_size: 1 (the usual 1x1x1) or larger.
        rank: spatial dimensions of ``x``, 3 or 2.
    Returns:
        probabilities ``(B, D, H, W, n_out)`` (``(B, H, W, n_out)`` with ``rank=2``), float32.
    """
    output = check_output(output)
    act = "softmax" if output == "softmax" else "sigmoid"
    x = nd_layer("Conv{}D", rank)(n_out, kernel_size, padding="same", dtype="float32", name=f"{name}_conv")(x)
    return keras.layers.Activation(act, dtype="float32", name=f"{name}_{act}")(x)
