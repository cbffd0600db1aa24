"""Exporting a trained model for deployment: a TensorFlow SavedModel or an ONNX file, with the
preprocessing it needs written beside it.

``export_model("best.keras", "deploy/", format="savedmodel" | "onnx")`` writes::

    deploy/saved_model.pb, deploy/variables/     (savedmodel: Keras' model.export(format="tf_saved_model"))
    deploy/model.onnx                             (onnx: Keras' model.export(format="onnx"), through tf2onnx)
    deploy/brats_keras.json                       the model file's info, its PreprocessingSpec complete
                                                  (modalities in channel order, crop, scale, dtype, downsample,
                                                  patch size, output; brats_keras.spec) plus "export": the
                                                  format, the file, and the input / output names and channels

The exported function maps a float32 batch ``(B, D, H, W, C)`` (any sizes that are multiples of
the model's down-sampling) to float32 probabilities ``(B, D, H, W, n_out)``, exactly as the
``.keras`` model does. It runs without brats-keras and without Keras: ``tf.saved_model.load(dir).serve(x)``
or ``onnxruntime.InferenceSession("model.onnx").run(None, {"image": x})``. ``brats-keras predict
--model deploy/`` (:func:`load_exported`) predicts whole cases with it.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from .io import BratsInputError
from .spec import PreprocessingSpec

FORMATS = ("savedmodel", "onnx")
INFO_FILE = "brats_keras.json"
ONNX_FILE = "model.onnx"
#: what the ONNX format needs beside TensorFlow (Keras 3 converts the TensorFlow function with tf2onnx)
ONNX_INSTALL = "pip install tf2onnx==1.17.0 onnx==1.23.2 onnxruntime==1.32.0"


def is_export(path) -> bool:
    """True for a folder written by :func:`export_model` (it holds ``brats_keras.json``)."""
    path = Path(path)
    return path.is_dir() and (path / INFO_FILE).is_file()


def float32_copy(model):
    """``model`` itself when it computes in float32, else a float32 copy with the same weights.

    Keras' ONNX export needs a float32 model; a model trained under mixed precision stores its
    layers' policies (``mixed_bfloat16``), so they are rewritten in its config.
    """
    import keras

    if all(layer.dtype_policy.name == "float32" for layer in model.layers):
        return model

    def rewrite(obj):
        if isinstance(obj, dict):
            if obj.get("class_name") == "DTypePolicy" and str(obj.get("config", {}).get("name", "")).startswith("mixed_"):
                return {**obj, "config": {**obj["config"], "name": "float32"}}
            return {k: rewrite(v) for k, v in obj.items()}
        if isinstance(obj, list):
            return [rewrite(v) for v in obj]
        return obj

    config = rewrite(keras.saving.serialize_keras_object(model))
    copy = keras.saving.deserialize_keras_object(config)
    copy.set_weights(model.get_weights())
    return copy


def export_model(model, out_dir, format: str = "savedmodel", info: dict | None = None,
                 overwrite: bool = False) -> Path:
    """Export a model and its preprocessing info into the folder ``out_dir``; return it.

    Args:
        model: a ``.keras`` file saved by brats-keras, ``"pretrained"`` (the shipped model), or a
            ``keras.Model`` (then give ``info``).
        out_dir: the folder to write (written beside, then renamed into place).
        format: ``"savedmodel"`` (TensorFlow SavedModel) or ``"onnx"``.
        info: preprocessing info (merged over the file's).
        overwrite: replace an existing non-empty ``out_dir``.
    Raises:
        BratsInputError (one line): unknown format, ``out_dir`` not empty, a model without
        preprocessing info, a missing converter (naming the pip command); FileNotFoundError for a
        missing model file.
    """
    import keras

    from .checkpoint import load_model

    fmt = str(format).lower().replace("_", "").replace("-", "")
    if fmt in ("tfsavedmodel", "tf"):
        fmt = "savedmodel"
    if fmt not in FORMATS:
        raise BratsInputError(f"unknown export format {format!r}: use savedmodel or onnx")
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())) and not overwrite:
        raise BratsInputError(f"{out_dir}: exists and is not an empty folder (use --overwrite to replace it)")
    if fmt == "onnx":
        missing = [m for m in ("tf2onnx", "onnx") if not _importable(m)]
        if missing:
            raise BratsInputError(f"--format onnx needs {' and '.join(missing)} ({ONNX_INSTALL})")
    source = None
    if isinstance(model, (str, Path)):
        if str(model) == "pretrained":
            from .pretrained import pretrained_path

            model = pretrained_path()
        source = Path(model)
        model, file_info = load_model(source, compile=False)
        info = {**file_info, **(info or {})}
    if not info or "modalities" not in info:
        raise BratsInputError(f"{source or 'the model'}: carries no brats_keras info (modalities, scale, output); "
                              f"export a checkpoint written by brats-keras train or pass info")
    try:
        spec = PreprocessingSpec.from_dict(info)
    except ValueError as exc:
        raise BratsInputError(f"{source or 'the model'}: {exc}") from None
    from .models import main_output

    model = float32_copy(main_output(model))  # one output: a deep-supervision model's auxiliary heads stay out
    in_channels, n_out = model.inputs[0].shape[-1], model.outputs[0].shape[-1]
    # a model loaded from a file has never been called, so Keras cannot infer the signature itself
    signature = [keras.InputSpec(shape=model.inputs[0].shape, dtype="float32", name="image")]
    tmp = out_dir.parent / f".{out_dir.name}.export-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        if fmt == "savedmodel":
            model.export(str(tmp), format="tf_saved_model", verbose=False, input_signature=signature)
            file = "."
        else:
            tmp.mkdir(parents=True)
            model.export(str(tmp / ONNX_FILE), format="onnx", verbose=False, input_signature=signature)
            file = ONNX_FILE
        export = {"format": fmt, "file": file, "input": "image", "in_channels": in_channels,
                  "n_out": n_out, "source": str(source) if source else None, "keras": keras.__version__,
                  "backend": keras.backend.backend()}
        (tmp / INFO_FILE).write_text(json.dumps({**info, **spec.to_dict(), "export": export}, indent=2))
        if out_dir.exists():
            shutil.rmtree(out_dir) if out_dir.is_dir() else out_dir.unlink()
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def _importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


class _Tensor:
    """The ``.shape`` and ``.name`` of an exported function's input or output (what Predictor reads)."""

    def __init__(self, shape, name):
        self.shape, self.name = tuple(shape), name


class ExportedModel:
    """A SavedModel or ONNX export behind the part of the Keras model interface that
    :class:`brats_keras.inference.Predictor` uses: ``inputs[0].shape``, ``outputs[0].shape``,
    ``predict_on_batch(batch)`` and ``name``.

    The SavedModel is run with ``tf.saved_model.load(dir).serve`` (TensorFlow, no Keras), the ONNX
    file with an ``onnxruntime.InferenceSession`` (no TensorFlow either).
    """

    def __init__(self, path):
        path = Path(path)
        self.path, self.info = path, read_export_info(path)
        export = self.info["export"]
        self.format = export["format"]
        self.name = f"{self.info.get('model', 'model')} ({self.format})"
        self.inputs = [_Tensor((None, None, None, None, export["in_channels"]), export.get("input", "image"))]
        self.outputs = [_Tensor((None, None, None, None, export["n_out"]), "probabilities")]
        if self.format == "onnx":
            try:
                import onnxruntime
            except ImportError:
                raise BratsInputError(f"{path}: an ONNX export needs onnxruntime (pip install onnxruntime)") from None
            self._session = onnxruntime.InferenceSession(str(path / export["file"]),
                                                         providers=onnxruntime.get_available_providers())
            self._input = self._session.get_inputs()[0].name
        elif self.format == "savedmodel":
            try:
                import tensorflow as tf
            except ImportError:
                raise BratsInputError(f"{path}: a SavedModel export needs TensorFlow (pip install tensorflow)") from None
            self._loaded = tf.saved_model.load(str(path))  # keep it: its variables die with it
            self._serve = self._loaded.serve
        else:
            raise BratsInputError(f"{path}: unknown export format {self.format!r} in {INFO_FILE}")
        found = self._network_channels()
        if found is not None and found != export["n_out"]:  # the recorded head is checked against n_out (Predictor)
            raise BratsInputError(f"{path}: {INFO_FILE} records {export['n_out']} output channels but the exported "
                                  f"network gives {found}: refused (its outputs would be read as other labels)")

    def _network_channels(self):
        """The output channels the exported network itself declares (None where it does not say)."""
        try:
            if self.format == "onnx":
                found = self._session.get_outputs()[0].shape[-1]
            else:
                found = self._serve.concrete_functions[0].structured_outputs.shape[-1]
        except (AttributeError, IndexError, TypeError):
            return None
        return found if isinstance(found, int) else None

    def predict_on_batch(self, batch):
        import numpy as np

        batch = np.ascontiguousarray(batch, dtype=np.float32)
        if self.format == "onnx":
            return self._session.run(None, {self._input: batch})[0]
        return self._serve(batch).numpy()

    __call__ = predict_on_batch


def read_export_info(path) -> dict:
    """The ``brats_keras.json`` of an export folder (with its ``"export"`` entry).

    Raises:
        BratsInputError when the folder is not an export (no or malformed ``brats_keras.json``).
    """
    file = Path(path) / INFO_FILE
    try:
        info = json.loads(file.read_text())
    except FileNotFoundError:
        raise BratsInputError(f"{path}: not a brats-keras export (no {INFO_FILE}; write one with brats-keras export)") from None
    except (OSError, ValueError) as exc:
        raise BratsInputError(f"{file}: unreadable ({type(exc).__name__}: {exc})") from None
    if not isinstance(info, dict) or not isinstance(info.get("export"), dict) or "modalities" not in info:
        raise BratsInputError(f"{file}: not a brats-keras export description (no 'export' or 'modalities')")
    try:
        PreprocessingSpec.from_dict(info)
    except ValueError as exc:
        raise BratsInputError(f"{file}: {exc}") from None
    return info


def load_exported(path):
    """``(ExportedModel, info)`` for an export folder, as :func:`brats_keras.checkpoint.load_model` gives for a file."""
    model = ExportedModel(path)
    return model, {k: v for k, v in model.info.items() if k != "export"}
