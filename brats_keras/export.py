"""Exporting a trained model for deployment: a TensorFlow SavedModel or an ONNX file, with the
preprocessing it needs written beside it.

``export_model("best.keras", "deploy/", format="savedmodel" | "onnx")`` writes::

    deploy/saved_model.pb, deploy/variables/     (savedmodel: Keras' model.export(format="tf_saved_model"))
    deploy/model.onnx                             (onnx: Keras' model.export(format="onnx"), through tf2onnx)
    deploy/brats_keras.json                       the model file's info, its PreprocessingSpec complete
                                                  (modalities in channel order, crop, scale, dtype, downsample,
                                                  patch size, output; brats_keras.spec), "task": the task
                                                  its channels belong to (the 2021 glioma task for a model
                                                  file that records none), plus "export": the
                                                  format, the file, the input / output names and channels,
                                                  and the files the folder holds

The exported function maps a float32 batch ``(B, D, H, W, C)`` (any sizes that are multiples of
the model's down-sampling) to float32 probabilities ``(B, D, H, W, n_out)``, exactly as the
``.keras`` model does (a slice model's, ``unet2d``: axial slices ``(B, H, W, C)``; ``"spatial_dims": 2``
in the record). It runs without brats-keras and without Keras: ``tf.saved_model.load(dir).serve(x)``
or ``onnxruntime.InferenceSession("model.onnx").run(None, {"image": x})``. ``brats-keras predict
--model deploy/`` (:func:`load_exported`) predicts whole cases with it.

An export folder is replaced only by another export (``overwrite=True``): the ``"export"`` record of
its ``brats_keras.json`` marks it, and it holds nothing else. A SavedModel is a TensorFlow program
(its graph may read and write files), so :func:`load_exported` runs one only when told it is trusted;
an ONNX file runs through ONNX Runtime's own operators, without custom-op libraries or external files.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from . import io as bio
from .io import BratsInputError
from .spec import PreprocessingSpec

FORMATS = ("savedmodel", "onnx")
INFO_FILE = "brats_keras.json"
ONNX_FILE = "model.onnx"
#: the model file of each format (what an export folder without its brats_keras.json still shows)
MODEL_FILES = {"savedmodel": "saved_model.pb", "onnx": ONNX_FILE}
#: what a SavedModel export writes beside the model file (a record without "files" names these)
SAVEDMODEL_FILES = ("saved_model.pb", "variables", "assets", "fingerprint.pb")
#: operator domains ONNX Runtime implements itself; any other needs a custom-op library, which is never loaded
ONNX_DOMAINS = {"", "ai.onnx", "ai.onnx.ml", "com.microsoft"}
#: what the ONNX format needs beside TensorFlow (Keras 3 converts the TensorFlow function with tf2onnx)
ONNX_INSTALL = "pip install tf2onnx==1.17.0 onnx==1.23.2 onnxruntime==1.32.0"


def is_export(path, incomplete: bool = False) -> bool:
    """True for a folder written by :func:`export_model` (it holds ``brats_keras.json``); with
    ``incomplete``, also for one that holds only an export's model file (``saved_model.pb``, ``model.onnx``)."""
    path = Path(path)
    if not path.is_dir():
        return False
    return (path / INFO_FILE).is_file() or (incomplete and any((path / f).is_file() for f in MODEL_FILES.values()))


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
        out_dir: the folder to write: new, empty, or (``overwrite``) an earlier export. It is written
            as a hidden folder beside it and swapped into place, so a failed export leaves the old one.
        format: ``"savedmodel"`` (TensorFlow SavedModel) or ``"onnx"``.
        info: preprocessing info (merged over the file's).
        overwrite: replace ``out_dir`` when it is an earlier export (:func:`check_export_out`).
    Raises:
        BratsInputError (one line naming ``out_dir`` or the model, nothing written): unknown format, an
        ``out_dir`` that may not be replaced or cannot be written, a model without preprocessing info,
        a missing converter (naming the pip command), a write that fails during the export;
        FileNotFoundError for a missing model file.
    """
    import keras

    from .checkpoint import info_task, load_model

    fmt = str(format).lower().replace("_", "").replace("-", "")
    if fmt in ("tfsavedmodel", "tf"):
        fmt = "savedmodel"
    if fmt not in FORMATS:
        raise BratsInputError(f"unknown export format {format!r}: use savedmodel or onnx")
    out_dir = Path(out_dir)
    source = None
    if isinstance(model, (str, Path)):
        if str(model) == "pretrained":
            from .pretrained import pretrained_path

            model = pretrained_path()
        source = Path(model)
    check_export_out(out_dir, overwrite, source)
    if fmt == "onnx":
        missing = [m for m in ("tf2onnx", "onnx") if not _importable(m)]
        if missing:
            raise BratsInputError(f"--format onnx needs {' and '.join(missing)} ({ONNX_INSTALL})")
    if source is not None:
        model, file_info = load_model(source, compile=False)
        info = {**file_info, **(info or {})}
    if not info or "modalities" not in info:
        raise BratsInputError(f"{source or 'the model'}: carries no brats_keras info (modalities, scale, output); "
                              f"export a checkpoint written by brats-keras train or pass info")
    try:
        spec = PreprocessingSpec.from_dict(info)
    except ValueError as exc:
        raise BratsInputError(f"{source or 'the model'}: {exc}") from None
    task = info_task(info, source or "the model")  # recorded in the export: what its channels mean
    from .models import main_output

    model = float32_copy(main_output(model))  # one output: a deep-supervision model's auxiliary heads stay out
    in_channels, n_out = model.inputs[0].shape[-1], model.outputs[0].shape[-1]
    # a model loaded from a file has never been called, so Keras cannot infer the signature itself
    signature = [keras.InputSpec(shape=model.inputs[0].shape, dtype="float32", name="image")]
    tmp, made = _temporary_folder(out_dir)  # before the slow conversion: can we write there at all?
    try:
        try:
            if fmt == "savedmodel":
                model.export(str(tmp), format="tf_saved_model", verbose=False, input_signature=signature)
                file = "."
            else:
                model.export(str(tmp / ONNX_FILE), format="onnx", verbose=False, input_signature=signature)
                file = ONNX_FILE
            export = {"format": fmt, "file": file, "input": "image", "in_channels": in_channels,
                      "n_out": n_out, "spatial_dims": len(model.inputs[0].shape) - 2,  # 2: a slice model
                      "source": str(source) if source else None, "keras": keras.__version__,
                      "backend": keras.backend.backend(),
                      "files": sorted([p.name for p in tmp.iterdir()] + [INFO_FILE])}
            (tmp / INFO_FILE).write_text(json.dumps({**info, **spec.to_dict(), "task": task.to_dict(),
                                                     "export": export}, indent=2))
            _swap_into_place(tmp, out_dir)
        except Exception as exc:
            raise _write_error(exc, tmp, out_dir) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        for folder in made:  # the parent folders this export made, deepest first
            _rmdir(folder)
        raise
    return out_dir


def check_export_out(out_dir, overwrite: bool = False, source=None) -> None:
    """Refuse, in one line (BratsInputError), an ``out_dir`` that :func:`export_model` may not write.

    Never written: the working directory, the home folder, the root, or a folder that holds either of
    them or the model file ``source``; a path that is a file or a symbolic link. A folder that is not
    empty is replaced only with ``overwrite`` and only when it is an earlier export: its
    ``brats_keras.json`` has an ``"export"`` record and the folder holds nothing an export does not write.
    """
    out = Path(out_dir)
    real = out.resolve()
    guarded = [(Path.cwd().resolve(), "the working directory"), (Path.home().resolve(), "the home folder")]
    if source is not None:
        guarded.append((Path(source).resolve(), f"the model file {source}"))
        if guarded[-1][0] in real.parents:
            raise BratsInputError(f"{out}: is inside the model file {source}: export into a new folder")
    if real == real.parent or out.name == "..":
        raise BratsInputError(f"{out}: is the root folder or a parent (..): name the export's own folder")
    for path, what in guarded:
        if real == path or real in path.parents:
            raise BratsInputError(f"{out}: {'is' if real == path else 'holds'} {what}: export into a new folder")
    if out.is_symlink():
        raise BratsInputError(f"{out}: is a symbolic link: give the folder itself or a new one")
    if not out.exists():
        return
    if not out.is_dir():
        raise BratsInputError(f"{out}: exists and is not a folder: export into a new folder")
    if not any(out.iterdir()):
        return
    if not overwrite:
        raise BratsInputError(f"{out}: exists and is not an empty folder (use --overwrite to replace an earlier export)")
    not_ours = _not_export_files(out)
    if not_ours:
        raise BratsInputError(f"{out}: {not_ours}: --overwrite replaces only a folder written by brats-keras export")
    if not os.access(out, os.W_OK | os.X_OK):
        raise BratsInputError(f"{out}: cannot replace the earlier export: permission denied")


def _not_export_files(folder: Path) -> str | None:
    """Why ``folder`` is not an earlier export that may be replaced; None when it is one."""
    try:
        export = json.loads((folder / INFO_FILE).read_text()).get("export")
    except (OSError, ValueError, AttributeError):
        export = None
    if not isinstance(export, dict) or export.get("format") not in FORMATS:
        return f"not an export (no {INFO_FILE} with an 'export' record)"
    files = export.get("files")
    if not isinstance(files, list):  # an export that did not list its files: the standard ones
        files = [INFO_FILE, ONNX_FILE] if export["format"] == "onnx" else [INFO_FILE, *SAVEDMODEL_FILES]
    others = sorted(p.name for p in folder.iterdir() if p.name not in files)
    if others:
        return f"holds files an export does not write ({', '.join(others[:3])}{', ...' if len(others) > 3 else ''})"
    return None


def _temporary_folder(out_dir: Path):
    """``(tmp, made)``: a new hidden folder beside ``out_dir`` to export into, and the parent folders made
    for it (deepest first); BratsInputError naming ``out_dir`` when it cannot be made (read-only, ...)."""
    parent = out_dir.absolute().parent
    made = [p for p in [parent, *parent.parents] if not p.exists()]
    try:
        parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".export", dir=parent))
        os.chmod(tmp, 0o777 & ~bio._umask())  # mkdtemp's folder is owner-only; an export is as readable as a new folder
    except OSError as exc:
        for folder in made:
            _rmdir(folder)
        raise BratsInputError(f"{out_dir}: cannot write the output folder: {bio.os_error_reason(exc)}") from None
    return tmp, made


def _swap_into_place(tmp: Path, out_dir: Path) -> None:
    """Rename the finished export ``tmp`` to ``out_dir``; an earlier export there is moved aside first and
    removed only once the new one is in place (put back if the rename fails)."""
    old = tmp.with_name(tmp.name + ".old") if out_dir.exists() else None
    if old is not None:
        os.rename(out_dir, old)
    try:
        os.rename(tmp, out_dir)
    except OSError:
        if old is not None:
            os.rename(old, out_dir)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _write_error(exc: Exception, tmp: Path, out_dir: Path) -> Exception:
    """One-line BratsInputError for a failure while writing the export, naming ``out_dir`` (not ``tmp``);
    ``exc`` itself when it is not a write failure (OSError, TensorFlow's file errors)."""
    if isinstance(exc, BratsInputError):
        return exc
    if isinstance(exc, OSError):
        reason = bio.describe_os_error(exc)
    else:
        import sys

        tf = sys.modules.get("tensorflow")
        if tf is None or not isinstance(exc, tf.errors.OpError):
            return exc
        reason = str(exc.message).splitlines()[0] if exc.message else type(exc).__name__
    reason = reason.replace(str(tmp), str(out_dir))
    return BratsInputError(f"{out_dir}: cannot write the export: {reason}")


def _rmdir(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:
        pass


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

    Args:
        path: the export folder.
        trust: run a SavedModel. A SavedModel is a TensorFlow program: its graph may hold any
            operation, reading or writing files included, and runs it when called; so it is refused
            (BratsInputError) unless the caller trusts where the folder came from. An ONNX export needs
            no trust: ONNX Runtime runs only its own operators (:func:`check_onnx`).
    """

    def __init__(self, path, trust: bool = False):
        path = Path(path)
        self.path, self.info = path, read_export_info(path)
        export = self.info["export"]
        self.format = export["format"]
        self.name = f"{self.info.get('model', 'model')} ({self.format})"
        spatial = export.get("spatial_dims", 3)  # 2 for a slice model
        if spatial not in (2, 3) or isinstance(spatial, bool):
            raise BratsInputError(f"{path}: {INFO_FILE} records spatial_dims {spatial!r}; a model has 2 or 3")
        dims = (None,) * (1 + spatial)  # the batch and the spatial axes
        self.inputs = [_Tensor(dims + (export["in_channels"],), export.get("input", "image"))]
        self.outputs = [_Tensor(dims + (export["n_out"],), "probabilities")]
        if self.format == "onnx":
            try:
                import onnxruntime
            except ImportError:
                raise BratsInputError(f"{path}: an ONNX export needs onnxruntime (pip install onnxruntime)") from None
            file = path / ONNX_FILE
            check_onnx(file)
            try:
                self._session = onnxruntime.InferenceSession(str(file), providers=onnxruntime.get_available_providers())
            except Exception as exc:  # ONNX Runtime's errors (Fail, InvalidGraph, ...) share no base class
                raise BratsInputError(f"{file}: ONNX Runtime cannot load it: {str(exc).splitlines()[0]}") from None
            self._input = self._session.get_inputs()[0].name
        elif self.format == "savedmodel":
            if not trust:
                raise BratsInputError(
                    f"{path}: a SavedModel export is a TensorFlow program that can read and write files when run; "
                    "predict with it only if you trust where it came from (--trust-export; trust_export=True in "
                    "Python), or use an ONNX export")
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
        held = [f for f in MODEL_FILES.values() if (Path(path) / f).is_file()]
        if held:
            raise BratsInputError(f"{path}: the export's {INFO_FILE} is missing (the folder holds {held[0]}); "
                                  f"export the model again with brats-keras export") from None
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


def check_onnx(file) -> None:
    """Refuse (BratsInputError) an ONNX file whose operators need a custom-op library (a domain that ONNX
    Runtime does not implement itself, ``ONNX_DOMAINS``) or whose weights live in external files (an
    export writes them inside ``model.onnx``). ONNX Runtime would refuse both too, in a longer message;
    without the ``onnx`` package the check is left to it."""
    try:
        import onnx
    except ImportError:
        return
    try:
        proto = onnx.load(str(file), load_external_data=False)
    except Exception as exc:  # a file that is not an ONNX protobuf (DecodeError, ...)
        raise BratsInputError(f"{file}: not a readable ONNX model ({type(exc).__name__})") from None
    domains = ONNX_DOMAINS | {f.domain for f in proto.functions}  # functions defined in the file itself
    graphs, nodes, k = [proto.graph], [n for f in proto.functions for n in f.node], 0
    while graphs or k < len(nodes):  # the main graph, the functions and every subgraph (If, Loop, Scan bodies)
        if graphs:
            graph = graphs.pop()
            if any(t.data_location == onnx.TensorProto.EXTERNAL for t in graph.initializer):
                raise BratsInputError(f"{file}: keeps weights in external files, which an export never does: refused")
            nodes += graph.node
            continue
        graphs += [g for a in nodes[k].attribute for g in [*([a.g] if a.HasField("g") else []), *a.graphs]]
        k += 1
    unknown = sorted({n.domain for n in nodes} - domains)
    if unknown:
        raise BratsInputError(f"{file}: uses operators of the custom domain {unknown[0]!r}, which ONNX Runtime runs "
                              f"only from a custom-op library: refused")


def load_exported(path, trust: bool = False):
    """``(ExportedModel, info)`` for an export folder, as :func:`brats_keras.checkpoint.load_model` gives for a
    file; ``trust``: run a SavedModel export (see :class:`ExportedModel`)."""
    model = ExportedModel(path, trust=trust)
    return model, {k: v for k, v in model.info.items() if k != "export"}
