"""Segmentation models: one architecture per module, all channels-last Keras 3 models.

Every builder returns a ``keras.Model`` mapping a batch ``(B, D, H, W, in_channels)``
to float32 probabilities ``(B, D, H, W, n_out)``: ``n_classes`` softmax channels
(``output="softmax"``) or 3 sigmoid channels WT, TC, ET (``output="regions"``).

    >>> from brats_keras.models import build_model
    >>> model = build_model("unet3d", in_channels=3, base_filters=16, output="regions")
"""
from __future__ import annotations

import importlib
import re
from pathlib import Path

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

#: modules whose registered losses and metrics a saved model may refer to
_SERIALIZABLE_MODULES = ("brats_keras.losses", "brats_keras.metrics")


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


def _register_custom_objects() -> None:
    """Import the modules that register the project's losses and metrics, where they exist."""
    for module in _SERIALIZABLE_MODULES:
        try:
            importlib.import_module(module)
        except ImportError as err:
            if getattr(err, "name", None) != module:  # the module exists but is broken
                raise


def load_model(path, compile: bool = True) -> keras.Model:
    """Load a ``.keras`` model saved by this package.

    The project's losses and metrics are registered as Keras serializables, so a
    compiled model loads without ``custom_objects``. A file holding a ``Lambda`` layer (Python code, whether a
    lambda or a named function) is refused before Keras reads it, and Keras' safe mode stays on; a layer or
    function of a class that neither Keras nor brats-keras registers is refused by name. A file whose kernels
    are stored in int8 (:func:`brats_keras.checkpoint.store_int8`) loads through a float32 copy in a temporary
    folder.

    Raises:
        FileNotFoundError: ``"<path>: model file not found"``.
        brats_keras.io.BratsInputError (a ValueError), one line naming the file: not a Keras
            model file (not a zip archive, truncated, unreadable), a Lambda layer (naming the layer), or an
            unregistered class or function (naming it and its layer).
    """
    import zipfile

    from ..io import BratsInputError

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: model file not found")
    legacy_h5 = path.suffix.lower() in (".h5", ".hdf5")
    if not legacy_h5 and not zipfile.is_zipfile(path):
        raise BratsInputError(f"{path}: not a Keras model file (not a .keras zip archive: corrupt, truncated "
                              f"or another format)")
    config = {} if legacy_h5 else _archive_config(path)
    for obj, layer in _serialized_objects(config):
        if obj.get("class_name") == "Lambda":
            raise BratsInputError(f"{path}: layer {layer!r} is a Lambda layer (Python code), which brats-keras "
                                  f"refuses to load for safety; rebuild the model without Lambda layers")
    _register_custom_objects()
    copy = None  # the float32 copy of an int8 file, which errors must not name
    try:
        from ..checkpoint import dequantized_copy, is_int8

        if not legacy_h5 and is_int8(path):  # kernels stored in int8 (checkpoint.store_int8): restored first
            import tempfile

            with tempfile.TemporaryDirectory(prefix="brats_int8_") as tmp:
                copy = Path(tmp) / path.name
                return keras.saving.load_model(str(dequantized_copy(path, copy)), compile=compile)
        return keras.saving.load_model(str(path), compile=compile)
    except (ValueError, TypeError, KeyError, OSError, EOFError, zipfile.BadZipFile) as exc:
        text = " ".join(str(exc).split())
        if copy is not None:
            text = text.replace(str(copy), str(path)).replace(str(copy.parent), str(path.parent))
        if "Lambda" in text and "safe_mode" in text:
            raise BratsInputError(f"{path}: holds a Lambda layer (Python code), which Keras safe mode refuses to "
                                  f"load; rebuild the model without Lambda layers") from None
        unknown = _UNKNOWN_OBJECT.search(text)
        if unknown:
            kind, name = unknown.group(1), unknown.group(2)
            layer = next((lay for obj, lay in _serialized_objects(config)
                          if obj.get("class_name") == name or (obj.get("class_name") == "function"
                                                               and obj.get("config") == name)), None)
            where = f"layer {layer!r} " if layer else ""
            raise BratsInputError(
                f"{path}: {where}uses the {kind} {name!r}, which neither Keras nor brats-keras knows: refused (no "
                f"code is loaded from a model file); in Python, import the module that defines it, registered with "
                f"@keras.saving.register_keras_serializable(), before loading") from None
        raise BratsInputError(f"{path}: not a Keras model file ({type(exc).__name__}: {text[:200]})") from None


#: Keras' message for a class or function it cannot find (not registered, or its module not importable)
_UNKNOWN_OBJECT = re.compile(r"Could not (?:locate|deserialize) (class|function) '([^']+)'")


def _archive_config(path) -> dict:
    """The model configuration (``config.json``) of a ``.keras`` archive; {} when it has none or it is not JSON
    (Keras' own loading then says what is wrong)."""
    import json
    import zipfile

    try:
        with zipfile.ZipFile(path) as zf:
            return json.loads(zf.read("config.json"))
    except (KeyError, ValueError, OSError, zipfile.BadZipFile):
        return {}


def _serialized_objects(config, layer=None):
    """Every serialized object (a dict with ``class_name``) in a Keras configuration, with the name of the
    innermost layer that holds it (a model's ``"layers"`` list; a layer's own name for itself)."""
    if isinstance(config, dict):
        if "class_name" in config:
            yield config, layer
        for key, value in config.items():
            if key == "layers" and isinstance(value, list):
                for item in value:
                    inner = item.get("config") if isinstance(item, dict) else None
                    name = inner.get("name") if isinstance(inner, dict) else None
                    yield from _serialized_objects(item, name if isinstance(name, str) else layer)
            else:
                yield from _serialized_objects(value, layer)
    elif isinstance(config, list):
        for value in config:
            yield from _serialized_objects(value, layer)


# --- pretrained model -------------------------------------------------------
def load_pretrained(compile: bool = False) -> keras.Model:
    """Load the model trained on real BraTS cases that ships in ``brats_keras/pretrained/``: ``model.keras``,
    or the first fold of the fold ensemble that ships in its place.

    Its preprocessing (modalities, scaling, 2 mm resolution) is in
    ``brats_keras.checkpoint.read_info(brats_keras.pretrained.pretrained_path())``, its scores in
    ``MODEL_CARD.md``;
    fine-tune it like any Keras model (``model.compile(...)``, ``model.fit(...)``).

    Raises:
        FileNotFoundError in one line naming the file when this installation lacks it
        (:func:`brats_keras.pretrained.pretrained_path`).
    """
    from ..pretrained import pretrained_path

    return load_model(pretrained_path(), compile=compile)


__all__ = [
    "DEEP_SUPERVISION_MODELS",
    "MODELS",
    "build_model",
    "count_params",
    "load_model",
    "load_pretrained",
    "main_output",
    "residual_unet",
    "segresnet",
    "size_divisor",
    "sm_unet",
    "unet3d",
    "vnet",
]
