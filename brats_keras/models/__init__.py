"""Segmentation models: one architecture per module, all channels-last Keras 3 models.

Every builder returns a ``keras.Model`` mapping a batch ``(B, D, H, W, in_channels)``
to float32 probabilities ``(B, D, H, W, n_out)``: the task's classes as softmax channels
(``output="softmax"``) or its head regions as sigmoid channels (``output="regions"``): every builder takes
``task=`` (a :class:`~brats_keras.tasks.Task` or its name; None: the 2021 glioma task, 4 classes, 3 regions WT,
TC, ET). The slice models
(:data:`SLICE_MODELS`: ``unet2d``) map axial slices ``(B, H, W, in_channels)`` to ``(B, H, W, n_out)``
with the same heads; they train on patches one voxel thick along :data:`brats_keras.io.AXIAL_AXIS`
(:func:`patch_shape`) and predict volumes slice by slice (:class:`brats_keras.inference.Predictor`).

    >>> from brats_keras.models import build_model
    >>> model = build_model("unet3d", in_channels=3, base_filters=16, output="regions")
"""
from __future__ import annotations

import keras

from .residual_unet import residual_unet
from .segresnet import segresnet
from .sm_unet import sm_unet
from .unet2d import unet2d
from .unet3d import unet3d
from .vnet import vnet

#: builder of each model name
MODELS = {
    "unet3d": unet3d,
    "vnet": vnet,
    "residual_unet": residual_unet,
    "sm_unet": sm_unet,
    "segresnet": segresnet,
    "unet2d": unet2d,
}

#: models whose builder takes ``deep_supervision`` (auxiliary outputs on decoder levels, for training)
DEEP_SUPERVISION_MODELS = ("unet3d", "residual_unet", "unet2d")
#: 2D models: their input is an axial slice ``(B, H, W, C)``
SLICE_MODELS = ("unet2d",)


def _key(name):
    return name.strip().lower().replace("-", "_") if isinstance(name, str) else name


def build_model(name: str, **kwargs) -> keras.Model:
    """Build the model called ``name`` (a key of :data:`MODELS`) with the builder's keyword arguments.

    Raises:
        ValueError for an unknown name, listing the known ones.
    """
    key = _key(name)
    if key not in MODELS:
        raise ValueError(f"unknown model {name!r}: use one of {', '.join(MODELS)}")
    return MODELS[key](**kwargs)


def size_divisor(name: str, depth: int = 4, vae: bool = False) -> int:
    """What every spatial size of an input of model ``name`` must be a multiple of: ``2 ** depth`` (one halving
    per level; segresnet's VAE branch halves once more), 32 for ``sm_unet`` (five stride-2 steps of its encoders).

    Raises:
        ValueError for an unknown name, listing the known ones.
    """
    from .sm_unet import SIZE_DIVISOR

    key = _key(name)
    if key not in MODELS:
        raise ValueError(f"unknown model {name!r}: use one of {', '.join(MODELS)}")
    if key == "sm_unet":
        return SIZE_DIVISOR
    return 2 ** (int(depth) + 1) if key == "segresnet" and vae else 2 ** int(depth)


def is_slice_model(model) -> bool:
    """True for a network whose input is a 2D slice ``(B, H, W, C)`` (a :data:`SLICE_MODELS` model, built or
    loaded), False for one of volumes ``(B, D, H, W, C)``. Reads ``model.inputs[0].shape``, so it also answers
    for an export (:class:`brats_keras.export.ExportedModel`)."""
    return len(model.inputs[0].shape) == 4


def patch_shape(name: str, patch_size):
    """The training patch of model ``name`` as a volume patch: ``patch_size`` itself for a volume model (an int
    or ``(D, H, W)``), and for a slice model (:data:`SLICE_MODELS`) the patch one voxel thick along
    :data:`brats_keras.io.AXIAL_AXIS`: an int ``N`` gives ``(N, N, 1)``, ``(H, W)`` gives ``(H, W, 1)``, and
    ``(H, W, 1)`` stays. What a model file records as its ``patch_size`` (the prediction window).

    Raises:
        ValueError in one line for a slice model's patch that is not one of those.
    """
    from ..io import AXIAL_AXIS

    if _key(name) not in SLICE_MODELS:
        return patch_size
    sizes = tuple(patch_size) if isinstance(patch_size, (list, tuple)) else (patch_size,) * 2
    if len(sizes) == 3 and sizes[AXIAL_AXIS] == 1:
        sizes = sizes[:AXIAL_AXIS] + sizes[AXIAL_AXIS + 1:]
    if len(sizes) != 2 or not all(isinstance(p, int) and not isinstance(p, bool) and p >= 1 for p in sizes):
        raise ValueError(f"patch size {patch_size!r}: --model {name} trains on axial slices: give N (N x N slices) "
                         f"or three sizes with 1 along array axis {AXIAL_AXIS} (the superior axis)")
    return sizes[:AXIAL_AXIS] + (1,) + sizes[AXIAL_AXIS:]


def main_output(model):
    """The main output of ``model`` alone: ``model`` itself when it has one output, else a ``keras.Model`` from its
    inputs to its first output that shares its layers and weights (a deep-supervision model without its
    auxiliary heads). What prediction, exports and shipped files use; training keeps every output.
    """
    if not isinstance(model, keras.Model) or len(model.outputs) < 2:
        return model
    return keras.Model(model.inputs, model.outputs[0], name=model.name)


def count_params(model: keras.Model, trainable_only: bool = False) -> int:
    """Number of parameters of ``model``: all weights (with BatchNorm's moving statistics), or trainable only."""
    weights = model.trainable_weights if trainable_only else model.weights
    total = 0
    for w in weights:
        n = 1
        for s in w.shape:
            n *= int(s)
        total += n
    return total


__all__ = [
    "DEEP_SUPERVISION_MODELS",
    "MODELS",
    "SLICE_MODELS",
    "build_model",
    "count_params",
    "is_slice_model",
    "main_output",
    "patch_shape",
    "residual_unet",
    "segresnet",
    "size_divisor",
    "sm_unet",
    "unet2d",
    "unet3d",
    "vnet",
]
