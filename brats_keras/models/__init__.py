"""Segmentation models: one architecture per module, all channels-last Keras 3 models.

Every builder returns a ``keras.Model`` mapping a batch ``(B, D, H, W, in_channels)``
to float32 probabilities ``(B, D, H, W, n_out)``: the task's classes as softmax channels
(``output="softmax"``) or its head regions as sigmoid channels (``output="regions"``): every builder takes
``task=`` (a :class:`~brats_keras.tasks.Task` or its name; None: the 2021 glioma task, 4 classes, 3 regions WT,
TC, ET).

    >>> from brats_keras.models import build_model
    >>> model = build_model("unet3d", in_channels=3, base_filters=16, output="regions")
"""
from __future__ import annotations

import keras

from .residual_unet import residual_unet
from .segresnet import segresnet
from .sm_unet import sm_unet
from .unet3d import unet3d
from .vnet import vnet

#: builder of each model name
MODELS = {
    "unet3d": unet3d,
    "vnet": vnet,
    "residual_unet": residual_unet,
    "sm_unet": sm_unet,
    "segresnet": segresnet,
}

#: models whose builder takes ``deep_supervision`` (auxiliary outputs on decoder levels, for training)
DEEP_SUPERVISION_MODELS = ("unet3d", "residual_unet")


def build_model(name: str, **kwargs) -> keras.Model:
    """Build the model called ``name`` (a key of :data:`MODELS`) with the builder's keyword arguments.

    Raises:
        ValueError for an unknown name, listing the known ones.
    """
    key = name.strip().lower().replace("-", "_") if isinstance(name, str) else name
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

    key = name.strip().lower().replace("-", "_") if isinstance(name, str) else name
    if key not in MODELS:
        raise ValueError(f"unknown model {name!r}: use one of {', '.join(MODELS)}")
    if key == "sm_unet":
        return SIZE_DIVISOR
    return 2 ** (int(depth) + 1) if key == "segresnet" and vae else 2 ** int(depth)


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
    "build_model",
    "count_params",
    "main_output",
    "residual_unet",
    "segresnet",
    "size_divisor",
    "sm_unet",
    "unet3d",
    "vnet",
]
