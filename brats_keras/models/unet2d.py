"""2D U-Net on axial slices (Ronneberger et al., "U-Net: Convolutional Networks for Biomedical
Image Segmentation", MICCAI 2015), the layout of :func:`~brats_keras.models.unet3d.unet3d` in 2D.

Encoder: at each level two 3x3 convolutions (conv -> norm -> activation) then a 2x2
max-pooling; the filters double per level. A bottleneck of two convolutions. Decoder: a 2x2
stride-2 Conv2DTranspose, concatenation with the encoder's features of the same level, two
convolutions. A 1x1 convolution gives the output: the same heads as the 3D models (softmax
classes or WT / TC / ET sigmoids, in float32), so the same losses and metrics train it.

Which slices: a converted volume is ``(D, H, W)`` in the file's voxel order, and BraTS files are
LPS (:data:`brats_keras.io.BRATS_ORIENTATION`): array axis 0 runs towards the patient's left,
axis 1 towards posterior, axis 2 towards superior. An axial slice is one index along axis 2
(:data:`brats_keras.io.AXIAL_AXIS`), an image ``(D, H, C)`` in array terms, and the model's
``(H, W)`` input axes are array axes 0 and 1. :class:`brats_keras.data.PatchDataset` cuts such
slices for training (``patch_size=(H, W)``), and :class:`brats_keras.inference.Predictor` predicts a
whole volume slice by slice into the same probability volume as a 3D model's, so the two can
share an ensemble.

Input ``(B, H, W, in_channels)``, output ``(B, H, W, n_out)`` where ``H`` and ``W`` are
multiples of ``2 ** depth``.
"""
from __future__ import annotations

import keras

from .unet3d import build_unet


def unet2d(
    in_channels: int = 3,
    n_classes: int | None = None,
    base_filters: int = 16,
    depth: int = 4,
    norm: str = "batch",
    dropout: float = 0.0,
    output: str = "softmax",
    activation: str = "relu",
    patch_size=None,
    name: str = "unet2d",
    deep_supervision: int = 0,
    task=None,
) -> keras.Model:
    """2D U-Net for axial slices ``(B, H, W, in_channels)``.

    Args:
        in_channels: input channels (modalities).
        n_classes: classes of the softmax output (None: 4, or the task's); with ``output="regions"``
            and no task it must be 4 or 3.
        base_filters: filters of the first level; level ``l`` has ``base_filters * 2 ** l``.
        depth: number of 2x2 pooling steps.
        norm: ``"batch"``, ``"instance"``, ``"group"`` or ``"none"``.
        dropout: SpatialDropout2D rate after the first convolution of each level (0: none).
        output: ``"softmax"`` (class probabilities) or ``"regions"`` (one sigmoid per head region of the task:
            WT, TC, ET for the 2021 glioma task).
        activation: ``"relu"``, ``"leaky_relu"`` or ``"prelu"``.
        patch_size: None to accept any slice size that is a multiple of ``2 ** depth``, or an int /
            ``(H, W)`` to fix the input shape.
        name: model name.
        deep_supervision: auxiliary outputs on the decoder levels below full resolution, as for
            :func:`~brats_keras.models.unet3d.unet3d`.
        task: the task (a :class:`~brats_keras.tasks.Task` or its name) whose head the model ends in: its
            classes (softmax) or its head regions (regions); None: the 2021 glioma task.
    Returns:
        a ``keras.Model`` mapping ``(B, H, W, in_channels)`` to float32 probabilities ``(B, H, W, n_out)``;
        with ``deep_supervision=N`` a list of N + 1 such outputs, the main one first.
    Raises:
        ValueError for the same bad arguments as :func:`~brats_keras.models.unet3d.unet3d` (a fixed
        ``patch_size`` must be an int or two ints).
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
        rank=2,
        task=task,
    )
