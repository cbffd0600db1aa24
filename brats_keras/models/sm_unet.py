"""U-Net with a classification backbone from ``segmentation-models-3D`` (ZFTurbo's 3D port
of qubvel's segmentation_models).

The encoder is a 3D classification network (``resnet18``, ``seresnet18``,
``densenet121``, ``efficientnetb0`` ...) with five stride-2 steps, so every spatial
size must be a multiple of 32. The encoder always starts from random weights
(``encoder_weights=None``): nothing is ever downloaded.

The package is optional; install it without its dependencies, whose pins predate
Keras 3.15 but which works with it::

    pip install --no-deps segmentation-models-3D==1.1.1 classification-models-3D==1.1.0

Input ``(B, D, H, W, in_channels)``, output ``(B, D, H, W, n_out)``.
"""
from __future__ import annotations

import contextlib
import inspect
import io

import keras

from .blocks import input_shape, output_channels, output_head

INSTALL = "pip install --no-deps segmentation-models-3D==1.1.1 classification-models-3D==1.1.0"
#: every backbone halves the size five times
SIZE_DIVISOR = 32
#: arguments sm_unet sets itself
_RESERVED = ("backbone_name", "input_shape", "classes", "activation", "weights")


def import_segmentation_models():
    """Import ``segmentation_models_3D`` on Keras 3 (quietly), or raise ImportError with the install command."""
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # it prints the framework it uses
            import segmentation_models_3D as sm
    except ImportError as err:
        raise ImportError(
            f"sm_unet needs segmentation-models-3D, which is not installed ({err}). "
            f"Install it with: {INSTALL}"
        ) from err
    # SM_FRAMEWORK=tf.keras could point it at another Keras; our layers are Keras 3
    sm.set_framework("keras")
    return sm


def sm_unet(
    backbone: str = "resnet18",
    in_channels: int = 3,
    n_classes: int | None = None,
    output: str = "softmax",
    patch_size=None,
    name: str | None = None,
    task=None,
    **kwargs,
) -> keras.Model:
    """A ``segmentation_models_3D.Unet`` with a float32 softmax or sigmoid head.

    The package's own 3x3x3 output convolution and activation are replaced by the
    same layers from :func:`~brats_keras.models.blocks.output_head`, which compute in
    float32 under any mixed-precision policy.

    Args:
        backbone: a name from ``segmentation_models_3D.get_available_backbone_names()``.
        in_channels: input channels (modalities).
        n_classes: classes of the softmax output (None: 4, or the task's); with ``output="regions"``
            and no task it must be 4 or 3.
        output: ``"softmax"`` (class probabilities) or ``"regions"`` (one sigmoid per head region of the task:
            WT, TC, ET for the default).
        patch_size: None (any multiple of 32), an int or ``(D, H, W)``.
        name: model name (default ``sm_unet_<backbone>``).
        task: the task (a :class:`~brats_keras.tasks.Task` or its name) whose head the model ends in: its
            classes (softmax) or its head regions (regions); None: the 2021 glioma task.
        **kwargs: passed to ``segmentation_models_3D.Unet``: ``decoder_filters``,
            ``decoder_block_type``, ``decoder_use_batchnorm``, ``encoder_freeze``, ``dropout`` ...
            ``encoder_weights`` may only be None.
    Returns:
        a ``keras.Model`` giving float32 probabilities ``(B, D, H, W, n_out)``.
    Raises:
        ImportError (with the install command) when segmentation-models-3D is missing;
        ValueError for an unknown backbone or output, a patch size that is not a
        multiple of 32, or pretrained encoder weights.
    """
    n_out = output_channels(output, n_classes, task)
    shape = input_shape(patch_size, in_channels, SIZE_DIVISOR)
    if kwargs.pop("encoder_weights", None) is not None:
        raise ValueError("sm_unet never downloads weights: encoder_weights must be None")
    reserved = sorted(set(kwargs) & set(_RESERVED))
    if reserved:
        raise TypeError(f"sm_unet sets {', '.join(reserved)} itself; use backbone, in_channels, "
                        f"n_classes, output and patch_size instead")
    sm = import_segmentation_models()
    names = sm.get_available_backbone_names()
    if backbone not in names:
        raise ValueError(f"unknown backbone {backbone!r}: use one of {', '.join(names)}")
    accepted = set(inspect.signature(sm.Unet).parameters) - set(_RESERVED) - {"kwargs", "encoder_weights"}
    unknown = sorted(set(kwargs) - accepted)
    if unknown:
        raise TypeError(f"sm_unet got unexpected arguments {', '.join(unknown)}: it accepts "
                        f"{', '.join(sorted(accepted))} besides its own")
    base = sm.Unet(backbone, input_shape=shape, classes=n_out, activation="linear",
                   encoder_weights=None, **kwargs)
    features = base.get_layer("final_conv").input
    outputs = output_head(features, n_out, output, kernel_size=3)
    return keras.Model(base.input, outputs, name=name or f"sm_unet_{backbone}")
