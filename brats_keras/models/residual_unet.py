"""Residual 3D U-Net: the 3D U-Net with residual levels (Drozdzal et al., "The
Importance of Skip Connections in Biomedical Image Segmentation", DLMIA 2016).

The layout is that of :func:`~brats_keras.models.unet3d.unet3d` (same levels, pooling,
up-sampling and concatenated skips); each level's two 3x3x3 convolutions are wrapped
in a residual connection ``act(F(x) + s(x))`` whose shortcut ``s`` is a 1x1x1
projection when the channels change (every level here, since the filters change).

Input ``(B, D, H, W, in_channels)``, output ``(B, D, H, W, n_out)``.
"""
from __future__ import annotations

import keras

from .unet3d import build_unet


def residual_unet(
    in_channels: int = 3,
    n_classes: int | None = None,
    base_filters: int = 16,
    depth: int = 4,
    norm: str = "batch",
    dropout: float = 0.0,
    output: str = "softmax",
    activation: str = "relu",
    patch_size=None,
    name: str = "residual_unet",
    deep_supervision: int = 0,
    task=None,
) -> keras.Model:
    """3D U-Net with residual levels for ``(B, D, H, W, in_channels)`` patches.

    Args:
        in_channels: input channels (modalities).
        n_classes: classes of the softmax output (None: 4, or the task's); with ``output="regions"``
            and no task it must be 4 or 3.
        base_filters: filters of the first level; level ``l`` has ``base_filters * 2 ** l``.
        depth: number of 2x2x2 pooling steps.
        norm: ``"batch"``, ``"instance"``, ``"group"`` or ``"none"``.
        dropout: SpatialDropout3D rate after the first convolution of each level (0: none).
        output: ``"softmax"`` (class probabilities) or ``"regions"`` (one sigmoid per head region of the task:
            WT, TC, ET for the default).
        activation: ``"relu"``, ``"leaky_relu"`` or ``"prelu"``.
        patch_size: None (any multiple of ``2 ** depth``), an int or ``(D, H, W)``.
        name: model name.
        deep_supervision: auxiliary outputs for training, as for :func:`~brats_keras.models.unet3d.unet3d`.
        task: the task (a :class:`~brats_keras.tasks.Task` or its name) whose head the model ends in: its
            classes (softmax) or its head regions (regions); None: the 2021 glioma task.
    Returns:
        a ``keras.Model`` giving float32 probabilities ``(B, D, H, W, n_out)``.
    Raises:
        ValueError for the same bad arguments as :func:`~brats_keras.models.unet3d.unet3d`.
    """
    return build_unet(
        block="residual",
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
