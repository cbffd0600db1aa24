"""3D U-Net (Cicek et al., "3D U-Net: Learning Dense Volumetric Segmentation from
Sparse Annotation", MICCAI 2016).

Encoder: at each level two 3x3x3 convolutions (conv -> norm -> activation) then a
2x2x2 max-pooling; the filters double per level (``base_filters * 2 ** level``).
A bottleneck of two convolutions at ``base_filters * 2 ** depth`` filters.
Decoder: a 2x2x2 stride-2 Conv3DTranspose, concatenation with the encoder's
features of the same level, two convolutions. A 1x1x1 convolution gives the output.

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
    output_channels,
    output_head,
    residual_block,
)


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
) -> keras.Model:
    """Build a U-Net whose levels are ``conv_block`` (``block="conv"``) or ``residual_block`` (``"residual"``).

    Shared by :func:`unet3d` and :func:`~brats_keras.models.residual_unet.residual_unet`;
    see :func:`unet3d` for the arguments.
    """
    depth = check_positive_int(depth, "depth")
    base_filters = check_positive_int(base_filters, "base_filters")
    norm = check_choice(norm, NORMS, "norm")
    activation = check_choice(activation, ACTIVATIONS, "activation")
    dropout = check_dropout(dropout)
    n_out = output_channels(output, n_classes)
    shape = input_shape(patch_size, in_channels, 2**depth)
    block = check_choice(block, ("conv", "residual"), "block")

    def level(x, filters, prefix):
        if block == "conv":
            return conv_block(x, filters, prefix, norm, activation, dropout)
        return residual_block(x, filters, prefix, 2, norm, activation, dropout)

    inputs = keras.Input(shape=shape, name="image")
    x = inputs
    skips = []
    for lvl in range(depth):
        x = level(x, base_filters * 2**lvl, f"enc{lvl}")
        skips.append(x)
        x = keras.layers.MaxPooling3D(2, name=f"enc{lvl}_pool")(x)
    x = level(x, base_filters * 2**depth, "bottleneck")
    for lvl in reversed(range(depth)):
        filters = base_filters * 2**lvl
        x = keras.layers.Conv3DTranspose(filters, 2, strides=2, name=f"dec{lvl}_up")(x)
        x = keras.layers.Concatenate(axis=-1, name=f"dec{lvl}_concat")([x, skips[lvl]])
        x = level(x, filters, f"dec{lvl}")
    outputs = output_head(x, n_out, output)
    return keras.Model(inputs, outputs, name=name)


def unet3d(
    in_channels: int = 3,
    n_classes: int = 4,
    base_filters: int = 16,
    depth: int = 4,
    norm: str = "batch",
    dropout: float = 0.0,
    output: str = "softmax",
    activation: str = "relu",
    patch_size=None,
    name: str = "unet3d",
) -> keras.Model:
    """3D U-Net of Cicek et al. (2016) for ``(B, D, H, W, in_channels)`` patches.

    Args:
        in_channels: input channels (modalities), 3 for FLAIR, T1ce, T2.
        n_classes: classes of the softmax output (4: background, NCR, ED, ET).
            With ``output="regions"`` the model has 3 channels whatever this is
            (it must be 4 or 3).
        base_filters: filters of the first level; level ``l`` has ``base_filters * 2 ** l``.
        depth: number of 2x2x2 pooling steps (the bottleneck is at level ``depth``).
        norm: ``"batch"``, ``"instance"``, ``"group"`` or ``"none"``.
        dropout: SpatialDropout3D rate after the first convolution of each level (0: none).
        output: ``"softmax"`` (class probabilities) or ``"regions"`` (3 sigmoids WT, TC, ET).
        activation: ``"relu"``, ``"leaky_relu"`` or ``"prelu"``.
        patch_size: None to accept any size that is a multiple of ``2 ** depth``,
            or an int / ``(D, H, W)`` to fix the input shape.
        name: model name.
    Returns:
        a ``keras.Model`` mapping ``(B, D, H, W, in_channels)`` to probabilities
        ``(B, D, H, W, n_out)`` in float32 (even under a mixed-precision policy).
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
    )
