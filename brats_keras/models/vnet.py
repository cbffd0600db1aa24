"""V-Net (Milletari et al., "V-Net: Fully Convolutional Neural Networks for Volumetric
Medical Image Segmentation", 3DV 2016).

Every stage is residual: ``act(F(x) + s(x))`` with ``F`` made of 1, 2, 3, 3, 3 ...
convolutions at levels 0, 1, 2, 3, 4 ... (``min(level + 1, 3)``), and ``s`` the identity
or a 1x1x1 projection when the channels change. Down-sampling is a strided 2x2x2
Conv3D that doubles the filters, up-sampling a 2x2x2 stride-2 Conv3DTranspose;
the decoder concatenates the encoder's features of the same level, as in the paper,
and its stages have 3, 3, 2, 1 convolutions at levels 3, 2, 1, 0. The paper uses
5x5x5 kernels and PReLU; ``kernel_size`` defaults to 3 here to keep it light.

Input ``(B, D, H, W, in_channels)``, output ``(B, D, H, W, n_out)``.
"""
from __future__ import annotations

import keras

from .blocks import (
    ACTIVATIONS,
    NORMS,
    check_choice,
    check_dropout,
    check_positive_int,
    conv_norm_act,
    input_shape,
    norm_layer,
    activation_layer,
    output_channels,
    output_head,
    residual_block,
)


def stage_convs(level: int) -> int:
    """Convolutions in the V-Net stage at ``level``: 1, 2, 3, 3, 3, ..."""
    return min(level + 1, 3)


def vnet(
    in_channels: int = 3,
    n_classes: int | None = None,
    base_filters: int = 16,
    depth: int = 4,
    norm: str = "batch",
    dropout: float = 0.0,
    output: str = "softmax",
    activation: str = "prelu",
    kernel_size: int = 3,
    patch_size=None,
    name: str = "vnet",
    task=None,
) -> keras.Model:
    """V-Net of Milletari et al. (2016) for ``(B, D, H, W, in_channels)`` patches.

    Args:
        in_channels: input channels (modalities).
        n_classes: classes of the softmax output (None: 4, or the task's); with ``output="regions"``
            and no task it must be 4 or 3.
        base_filters: filters of the first stage (16 in the paper); stage ``l`` has
            ``base_filters * 2 ** l``.
        depth: number of strided down-sampling steps (4 in the paper).
        norm: ``"batch"``, ``"instance"``, ``"group"`` or ``"none"`` (the paper has none).
        dropout: SpatialDropout3D rate after the first convolution of each stage (0: none).
        output: ``"softmax"`` (class probabilities) or ``"regions"`` (one sigmoid per head region of the task:
            WT, TC, ET for the default).
        activation: ``"prelu"`` (the paper), ``"relu"`` or ``"leaky_relu"``.
        kernel_size: size of the stage convolutions, 3 (default) or 5 (the paper).
        patch_size: None (any multiple of ``2 ** depth``), an int or ``(D, H, W)``.
        name: model name.
        task: the task (a :class:`~brats_keras.tasks.Task` or its name) whose head the model ends in: its
            classes (softmax) or its head regions (regions); None: the 2021 glioma task.
    Returns:
        a ``keras.Model`` giving float32 probabilities ``(B, D, H, W, n_out)``.
    Raises:
        ValueError for an unknown norm, activation or output, an even or non-positive
        ``kernel_size``, or a patch size that is not a multiple of ``2 ** depth``.
    """
    depth = check_positive_int(depth, "depth")
    base_filters = check_positive_int(base_filters, "base_filters")
    kernel_size = check_positive_int(kernel_size, "kernel_size")
    if kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be odd (3 or 5), got {kernel_size}")
    norm = check_choice(norm, NORMS, "norm")
    activation = check_choice(activation, ACTIVATIONS, "activation")
    dropout = check_dropout(dropout)
    n_out = output_channels(output, n_classes, task)
    shape = input_shape(patch_size, in_channels, 2**depth)

    def stage(x, filters, n_convs, prefix):
        return residual_block(x, filters, prefix, n_convs, norm, activation, dropout, kernel_size)

    inputs = keras.Input(shape=shape, name="image")
    x = inputs
    skips = []
    for lvl in range(depth):
        x = stage(x, base_filters * 2**lvl, stage_convs(lvl), f"enc{lvl}")
        skips.append(x)
        x = conv_norm_act(x, base_filters * 2 ** (lvl + 1), f"enc{lvl}_down", norm, activation,
                          kernel_size=2, strides=2)
    x = stage(x, base_filters * 2**depth, stage_convs(depth), "bottleneck")
    for lvl in reversed(range(depth)):
        filters = base_filters * 2**lvl
        x = keras.layers.Conv3DTranspose(filters, 2, strides=2, use_bias=norm == "none",
                                         name=f"dec{lvl}_up_conv")(x)
        x = norm_layer(norm, f"dec{lvl}_up_norm", filters)(x)
        x = activation_layer(activation, f"dec{lvl}_up_act")(x)
        x = keras.layers.Concatenate(axis=-1, name=f"dec{lvl}_concat")([x, skips[lvl]])
        x = stage(x, filters, stage_convs(lvl), f"dec{lvl}")
    outputs = output_head(x, n_out, output)
    return keras.Model(inputs, outputs, name=name)
