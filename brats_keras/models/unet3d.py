"""3D U-Net (Cicek et al., "3D U-Net: Learning Dense Volumetric Segmentation from
Sparse Annotation", MICCAI 2016).

Encoder: at each level two 3x3x3 convolutions (conv -> norm -> activation) then a
2x2x2 max-pooling; the filters double per level (``base_filters * 2 ** level``).
A bottleneck of two convolutions at ``base_filters * 2 ** depth`` filters.
Decoder: a 2x2x2 stride-2 Conv3DTranspose, concatenation with the encoder's
features of the same level, two convolutions. A 1x1x1 convolution gives the output.
With ``deep_supervision=N`` the N decoder levels below full resolution get auxiliary heads too
(a 1x1x1 convolution, nearest up-sampling to the full size, the same softmax or sigmoid): the
model's outputs are then ``[main, aux1, ..., auxN]``, ``aux1`` from the level at half resolution.

Input ``(B, D, H, W, in_channels)``, output ``(B, D, H, W, n_out)`` where every
spatial size is a multiple of ``2 ** depth``.
"""
from __future__ import annotations

import keras

from .blocks import (
    ACTIVATIONS,
    NORMS,
    check_choice,
    check_dropout,
    check_positive_int,
    conv_block,
    input_shape,
    nd_layer,
    output_channels,
    output_head,
    residual_block,
)


def check_deep_supervision(n, depth: int) -> int:
    """``n`` as int if it is a number of auxiliary heads a U-Net of ``depth`` can have (0 .. depth - 1), else
    ValueError in one line."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"deep_supervision must be a number of auxiliary outputs (0 = off), got {n!r}")
    if n >= depth:
        raise ValueError(f"deep_supervision {n} needs a depth above {n} (the decoder levels below full resolution "
                         f"take one head each), got depth {depth}")
    return n


def auxiliary_head(x, n_out: int, output: str, factor: int, name: str, rank: int = 3):
    """A deep-supervision output: 1x1x1 convolution to ``n_out`` channels, nearest up-sampling by ``factor``
    to the full patch size, then the softmax or sigmoid of :func:`output_head`, all in float32.

    Layers ``{name}_conv``, ``{name}_up``, ``{name}_softmax``/``{name}_sigmoid``; ``x`` ``(B, d, h, w, C)`` gives
    ``(B, d * factor, h * factor, w * factor, n_out)`` (with ``rank=2``, ``(B, h, w, C)`` the 2D equivalent).
    """
    act = "softmax" if output == "softmax" else "sigmoid"
    x = nd_layer("Conv{}D", rank)(n_out, 1, padding="same", dtype="float32", name=f"{name}_conv")(x)
    x = nd_layer("UpSampling{}D", rank)(factor, dtype="float32", name=f"{name}_up")(x)
    return keras.layers.Activation(act, dtype="float32", name=f"{name}_{act}")(x)


def build_unet(
    *,
    block: str,
    in_channels: int,
    n_classes: int,
    base_filters: int,
    depth: int,
    norm: str,
    dropout: float,
    output: str,
    activation: str,
    patch_size,
    name: str,
    deep_supervision: int = 0,
    rank: int = 3,
    task=None,
) -> keras.Model:
    """Build a U-Net whose levels are ``conv_block`` (``block="conv"``) or ``residual_block`` (``"residual"``).

    Shared by :func:`unet3d`, :func:`~brats_keras.models.residual_unet.residual_unet` and (``rank=2``: the same
    layout with 2D layers) :func:`~brats_keras.models.unet2d.unet2d`; see :func:`unet3d` for the arguments.
    """
    depth = check_positive_int(depth, "depth")
    base_filters = check_positive_int(base_filters, "base_filters")
    norm = check_choice(norm, NORMS, "norm")
    activation = check_choice(activation, ACTIVATIONS, "activation")
    dropout = check_dropout(dropout)
    n_out = output_channels(output, n_classes, task)
    shape = input_shape(patch_size, in_channels, 2**depth, rank)
    block = check_choice(block, ("conv", "residual"), "block")
    deep_supervision = check_deep_supervision(deep_supervision, depth)

    def level(x, filters, prefix):
        if block == "conv":
            return conv_block(x, filters, prefix, norm, activation, dropout, rank=rank)
        return residual_block(x, filters, prefix, 2, norm, activation, dropout, rank=rank)

    inputs = keras.Input(shape=shape, name="image")
    x = inputs
    skips, aux = [], [None] * deep_supervision
    for lvl in range(depth):
        x = level(x, base_filters * 2**lvl, f"enc{lvl}")
        skips.append(x)
        x = nd_layer("MaxPooling{}D", rank)(2, name=f"enc{lvl}_pool")(x)
    x = level(x, base_filters * 2**depth, "bottleneck")
    for lvl in reversed(range(depth)):
        filters = base_filters * 2**lvl
        x = nd_layer("Conv{}DTranspose", rank)(filters, 2, strides=2, name=f"dec{lvl}_up")(x)
        x = keras.layers.Concatenate(axis=-1, name=f"dec{lvl}_concat")([x, skips[lvl]])
        x = level(x, filters, f"dec{lvl}")
        if 1 <= lvl <= deep_supervision:
            aux[lvl - 1] = auxiliary_head(x, n_out, output, 2**lvl, f"aux{lvl}", rank)
    outputs = output_head(x, n_out, output, rank=rank)
    return keras.Model(inputs, [outputs, *aux] if aux else outputs, name=name)


def unet3d(
    in_channels: int = 3,
    n_classes: int | None = None,
    base_filters: int = 16,
    depth: int = 4,
    norm: str = "batch",
    dropout: float = 0.0,
    output: str = "softmax",
    activation: str = "relu",
    patch_size=None,
    name: str = "unet3d",
    deep_supervision: int = 0,
    task=None,
) -> keras.Model:
    """3D U-Net of Cicek et al. (2016) for ``(B, D, H, W, in_channels)`` patches.

    Args:
        in_channels: input channels (modalities), 3 for FLAIR, T1ce, T2.
        n_classes: classes of the softmax output (None: 4, background, NCR, ED, ET; or the task's).
            With ``output="regions"`` and no task the model has 3 channels whatever this is
            (it must be 4 or 3).
        base_filters: filters of the first level; level ``l`` has ``base_filters * 2 ** l``.
        depth: number of 2x2x2 pooling steps (the bottleneck is at level ``depth``).
        norm: ``"batch"``, ``"instance"``, ``"group"`` or ``"none"``.
        dropout: SpatialDropout3D rate after the first convolution of each level (0: none).
        output: ``"softmax"`` (class probabilities) or ``"regions"`` (one sigmoid per head region of the task:
            WT, TC, ET for the default).
        activation: ``"relu"``, ``"leaky_relu"`` or ``"prelu"``.
        patch_size: None to accept any size that is a multiple of ``2 ** depth``,
            or an int / ``(D, H, W)`` to fix the input shape.
        name: model name.
        deep_supervision: auxiliary outputs on the decoder levels below full resolution (0 = none; at most
            ``depth - 1``), for training; :func:`brats_keras.models.main_output` gives the main output alone.
        task: the task (a :class:`~brats_keras.tasks.Task` or its name) whose head the model ends in: its
            classes (softmax) or its head regions (regions); None: the 2021 glioma task.
    Returns:
        a ``keras.Model`` mapping ``(B, D, H, W, in_channels)`` to probabilities
        ``(B, D, H, W, n_out)`` in float32 (even under a mixed-precision policy); with ``deep_supervision=N``
        a list of N + 1 such outputs, the main one first.
    Raises:
        ValueError for an unknown norm, activation or output, a patch size that is
        not a multiple of ``2 ** depth``, or sizes that are not positive integers.
    """
    return build_unet(
        block="conv",
        in_channels=in_channels,
        n_classes=n_classes,
        base_filters=base_filters,
        depth=depth,
        norm=norm,
        dropout=dropout,
        output=output,
        activation=activation,
        patch_size=patch_size,
        name=name,
        deep_supervision=deep_supervision,
        task=task,
    )
