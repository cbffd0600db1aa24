"""Saving models together with the preprocessing they were trained with.

A brats-keras model file is an ordinary Keras ``.keras`` archive with one more
member, ``brats_keras.json``, that records the :class:`~brats_keras.spec.PreprocessingSpec`
of its training data (modalities in channel order, crop, scaling, dtype, resolution, patch
size, output mode), the model and loss names and the task (its labels, classes and regions, ``task.to_dict()``)
(:func:`model_info`, its schema). Prediction reads it, so it applies exactly the preprocessing used in training;
a file that records no task is of the 2021 glioma task (:func:`info_task`).
A training checkpoint may hold a second member, ``training_state.json``: the epochs done,
the log rows and the best value so far (see ``brats_keras.training``). It lives in the same
file as the weights, so the two can never disagree. ``keras.saving.load_model`` ignores both.
"""
from __future__ import annotations

import dataclasses
import importlib
import io as _io
import json
import re
import zipfile
from pathlib import Path

from .io import BratsInputError, atomic_write
from .labels import check_output
from .spec import PreprocessingSpec
from .tasks import TaskError, get_task

INFO_MEMBER = "brats_keras.json"
#: the version of the info a model file embeds (:func:`model_info`)
INFO_FORMAT = 1
STATE_MEMBER = "training_state.json"
WEIGHTS_MEMBER = "model.weights.h5"
#: a member that marks a file whose kernels are stored in int8 (:func:`store_int8`): :func:`load_model` restores
#: them; ``keras.saving.load_model`` refuses such a file (its kernels are not where Keras looks for them)
INT8_MEMBER = "brats_keras_int8.json"
INT8_SCHEME = {"kernels": "int8, symmetric, one float32 scale per slice along the last axis (a "
                          "convolution's output channels, a transposed convolution's input channels)",
               "suffixes": [".int8", ".scale"], "other weights": "float16"}
WEIGHTS_DTYPES = ("float32", "float16", "int8")
#: largest magnitude float16 holds
FLOAT16_MAX = 65504.0


def save_model(model, path, info: dict | None = None, include_optimizer: bool = True,
               state: dict | None = None, weights_dtype: str = "float32") -> Path:
    """Save ``model`` to ``path`` (``.keras``) with ``info`` embedded; atomic (temp file + rename).

    Args:
        include_optimizer: False drops the optimizer state (smaller file for shipping).
        state: training state to embed (``training_state.json``; read back with :func:`read_state`).
        weights_dtype: ``"float16"`` stores the model's float32 weights as float16 (half the size: for shipping;
            they load back into the float32 model, so prediction runs as before, see :func:`store_float16`);
            ``"int8"`` stores its kernels as 8-bit integers with a scale per channel and the other weights
            as float16 (a quarter of the size; only :func:`load_model` reads it, see :func:`store_int8`); the
            optimizer's state, when included, stays float32.
    """
    if weights_dtype not in WEIGHTS_DTYPES:
        raise ValueError(f"weights_dtype must be one of {', '.join(map(repr, WEIGHTS_DTYPES))}, not {weights_dtype!r}")
    path = Path(path)
    extra = {}
    if info is not None:
        extra[INFO_MEMBER] = json.dumps(info, indent=2).encode()
    if state is not None:
        extra[STATE_MEMBER] = json.dumps(state).encode()
    changes = {}
    if weights_dtype == "float16":
        changes[WEIGHTS_MEMBER] = lambda data: _float16_weights(data, str(path))
    elif weights_dtype == "int8":
        changes[WEIGHTS_MEMBER] = lambda data: _int8_weights(data, str(path))
        extra[INT8_MEMBER] = json.dumps(INT8_SCHEME).encode()

    def write(tmp):
        if include_optimizer:
            model.save(tmp)
        else:
            _save_without_optimizer(model, tmp)
        if extra or changes:
            _copy_archive(_io.BytesIO(Path(tmp).read_bytes()), tmp, changes, extra)

    atomic_write(path, write, suffix=".keras")
    return path


def check_float16_range(array, what: str, hint: str = "") -> None:
    """Refuse a float32 array that float16 cannot hold (a value beyond 65504, or NaN): BratsInputError
    ``"<what> beyond float16's range (max |w| ...); keep it in float32<hint>"``."""
    import numpy as np

    array = np.asarray(array)
    if array.dtype == np.float32 and array.size and not np.all(np.abs(array) <= FLOAT16_MAX):
        raise BratsInputError(f"{what} beyond float16's range (max |w| {np.nanmax(np.abs(array)):.4g}); "
                              f"keep it in float32{hint}")


#: the group of a Keras weights file that holds the optimizer's variables: kept in float32 by
#: :func:`_float16_weights` (Adam's second moments are squared gradients, 1e-8 and below, under float16's
#: smallest normal number 6e-5: rounded to zero they make the first resumed steps lr-sized jumps)
OPTIMIZER_GROUP = "optimizer"


def _float16_weights(data: bytes, where: str = "model") -> bytes:
    """The Keras weights file ``data`` (HDF5 bytes) with every float32 array of the model stored as float16.

    Keras assigns stored arrays to the model's variables in the variables' own dtype, so a float16 file loads
    into the float32 model unchanged in shape and dtype (each weight rounded to 11 significant bits). The
    optimizer's variables (``OPTIMIZER_GROUP``, in a checkpoint saved with its optimizer) stay float32, so
    training resumes from the file with the optimizer state it had; other arrays (the int64 iteration
    counter) are copied as they are.

    Raises:
        BratsInputError naming ``where`` and the weight when a value is beyond float16's range (65504).
    """
    import numpy as np

    def convert(name, array, read):
        if array.dtype == np.float32 and not _in_optimizer(name):
            check_float16_range(array, f"{where}: weight {name} holds values")
            array = array.astype(np.float16)
        return [(name, array)]

    return _rewrite_weights(data, convert)


def _in_optimizer(name: str) -> bool:
    return name == OPTIMIZER_GROUP or name.startswith(OPTIMIZER_GROUP + "/")


def _rewrite_weights(data: bytes, convert) -> bytes:
    """The HDF5 file ``data`` rewritten: groups and attributes as they are, each dataset ``name`` replaced by the
    ``[(name, array), ...]`` that ``convert(name, array, read)`` returns (none: left out; ``read(other)`` gives
    another dataset's array), each carrying the dataset's attributes."""
    import io

    import h5py

    out = io.BytesIO()
    with h5py.File(io.BytesIO(data), "r") as src, h5py.File(out, "w") as dst:
        for key, value in src.attrs.items():
            dst.attrs[key] = value

        def copy(name, obj):
            if isinstance(obj, h5py.Dataset):
                targets = []
                for target, array in convert(name, obj[()], lambda other: src[other][()]):
                    dst.create_dataset(target, data=array)
                    targets.append(target)
            else:
                dst.require_group(name)
                targets = [name]
            for target in targets:
                for key, value in obj.attrs.items():
                    dst[target].attrs[key] = value

        src.visititems(copy)
    return out.getvalue()


def _int8_weights(data: bytes, where: str = "model") -> bytes:
    """The Keras weights file ``data`` with every float kernel of the model (an array of 2 or more axes) stored
    as ``<name>.int8`` (int8 ``q``) and ``<name>.scale`` (float32 ``s``, one per slice along the last axis), so
    that ``q * s`` is the kernel within ``s / 2``: ``s = max|w| / 127`` over the slice; the model's other float32
    arrays (biases, normalisation) as float16, the optimizer's and integer arrays as they are.

    Raises:
        BratsInputError naming ``where`` and the weight when a kernel holds a value that is not finite, or
        another weight is beyond float16's range.
    """
    import numpy as np

    def convert(name, array, read):
        if array.dtype in (np.float32, np.float16) and not _in_optimizer(name) and array.ndim >= 2:
            if not np.all(np.isfinite(array)):
                raise BratsInputError(f"{where}: weight {name} holds values that are not finite")
            q, scale = quantize_int8(array)
            return [(name + ".int8", q), (name + ".scale", scale)]
        if array.dtype == np.float32 and not _in_optimizer(name):
            check_float16_range(array, f"{where}: weight {name} holds values")
            array = array.astype(np.float16)
        return [(name, array)]

    return _rewrite_weights(data, convert)


def quantize_int8(array):
    """``(q, s)``: ``array`` (float, 2 or more axes) as int8 ``q`` in [-127, 127] and float32 ``s`` per slice along
    the last axis, ``s = max|w| / 127`` (1 for an all-zero slice), so that ``|q * s - array| <= s / 2``."""
    import numpy as np

    array = np.asarray(array, np.float32)
    scale = np.abs(array).max(axis=tuple(range(array.ndim - 1)), initial=0.0) / 127.0  # initial: an empty kernel
    scale = np.where(scale > 0, scale, 1.0).astype(np.float32)
    q = np.clip(np.rint(array / scale), -127, 127).astype(np.int8)
    return q, scale


def _dequantized_weights(data: bytes) -> bytes:
    """The inverse of :func:`_int8_weights`: each ``<name>.int8`` and ``<name>.scale`` pair back to a float32
    ``<name>``; every other array and attribute as it is (Keras assigns float16 arrays to float32 variables)."""
    import numpy as np

    def convert(name, array, read):
        if name.endswith(".scale"):
            return []
        if name.endswith(".int8"):
            base = name[: -len(".int8")]
            return [(base, array.astype(np.float32) * read(base + ".scale"))]
        return [(name, array)]

    return _rewrite_weights(data, convert)


def is_int8(path) -> bool:
    """Whether the model file ``path`` stores its kernels in int8 (:func:`store_int8`)."""
    try:
        with zipfile.ZipFile(path) as zf:
            return INT8_MEMBER in zf.namelist()
    except (zipfile.BadZipFile, OSError):
        return False


def dequantized_copy(path, out) -> Path:
    """Write the int8 model file ``path`` to ``out`` with its kernels restored to float32 (:func:`load_model`
    loads int8 files through such a copy; ``keras.saving.load_model`` reads the copy). Stored uncompressed: the
    copy is read once and deleted, and deflating 23 MB of float32 weights would take most of the load time."""
    _copy_archive(path, out, {WEIGHTS_MEMBER: _dequantized_weights}, drop=(INT8_MEMBER,),
                  compression=zipfile.ZIP_STORED)
    return Path(out)


def _copy_archive(src, dst, changes: dict | None = None, replace: dict | None = None, drop=(),
                  compression: int = zipfile.ZIP_DEFLATED) -> None:
    """Write the zip archive ``src`` (a path or a file object) to ``dst``, deflated (or as ``compression`` says):
    the members named in ``changes`` pass through their function (``bytes -> bytes``), those in ``replace`` get
    its bytes instead (added when ``src`` lacks them), those in ``drop`` are left out, the others are copied as
    they are."""
    changes, replace = changes or {}, replace or {}
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", compression) as zout:
        for item in zin.infolist():
            if item.filename in replace or item.filename in drop:
                continue
            data = zin.read(item.filename)
            if item.filename in changes:
                data = changes[item.filename](data)
            zout.writestr(item.filename, data)
        for name, data in replace.items():
            zout.writestr(name, data)


def store_float16(path, out=None) -> Path:
    """Write the model file ``path`` with its weights stored in float16 to ``out`` (default: in place).

    The file halves (22.8 MB -> 10.4 MB for the shipped U-Net); the embedded info, training state and
    configuration are kept, and it loads with :func:`load_model` (or ``keras.saving.load_model``) into the same
    float32 model. A checkpoint's optimizer state stays float32 (training resumes from it). Atomic: a temporary
    file beside ``out``, then a rename.

    Raises:
        FileNotFoundError for a missing file; BratsInputError for a file that is not a Keras model file or has no
        weights member, or a weight beyond float16's range.
    """
    return _store_weights(path, out, _float16_weights, {}, "; convert the float32 file")


def _store_weights(path, out, convert, extra: dict, hint: str = "") -> Path:
    """Write the model file ``path`` to ``out`` (default: in place) with its weights member passed through
    ``convert(data, where)`` and the members ``extra`` added; atomic. The checks of :func:`store_float16` and
    :func:`store_int8`: a missing file, not a Keras model file, no weights member, kernels already in int8."""
    path = Path(path)
    out = Path(out) if out is not None else path
    if not path.exists():
        raise FileNotFoundError(f"{path}: model file not found")
    read_info(path)  # a readable zip, or one line naming the file
    with zipfile.ZipFile(path) as zf:
        if WEIGHTS_MEMBER not in zf.namelist():
            raise BratsInputError(f"{path}: no {WEIGHTS_MEMBER} in this model file (not a Keras 3 .keras file)")
    if is_int8(path):
        raise BratsInputError(f"{path}: its kernels are already stored in int8{hint}")
    atomic_write(out, lambda tmp: _copy_archive(path, tmp, {WEIGHTS_MEMBER: lambda data: convert(data, str(path))},
                                                extra), suffix=".keras")
    return out


def store_int8(path, out=None) -> Path:
    """Write the model file ``path`` with its kernels stored in int8 to ``out`` (default: in place).

    A quarter of the float32 size (22.8 MB, or 10.4 MB in float16, -> 5.2 MB for the shipped U-Net): every kernel as 8-bit integers with
    one float32 scale per channel of its last axis (:func:`quantize_int8`: each weight within half a step, 1/254
    of its channel's largest; a convolution's output channels, a transposed convolution's input channels), every other weight as float16. For shipping a larger ensemble within a size budget, once
    a cross-validation shows that its scores do not move. :func:`load_model` (and so ``predict``, ``evaluate`` and
    :class:`~brats_keras.inference.Predictor`) restores the float32 model; ``keras.saving.load_model`` refuses the
    file. The embedded info and training state are kept. Atomic.

    Raises:
        FileNotFoundError for a missing file; BratsInputError for a file that is not a Keras model file, has no
        weights member or is already int8, a kernel value that is not finite or another weight beyond float16.
    """
    return _store_weights(path, out, _int8_weights, {INT8_MEMBER: json.dumps(INT8_SCHEME).encode()})


def _save_without_optimizer(model, tmp):
    import keras

    clone = keras.models.clone_model(model)  # uncompiled: no optimizer state, no loss
    clone.set_weights(model.get_weights())
    clone.save(tmp)


def model_info(cfg, spec, task=None) -> dict:
    """The info a model file embeds (its ``brats_keras.json``): what prediction needs to preprocess a new case
    exactly as in training, and what the network is.

    Args:
        cfg: the run's settings (:class:`brats_keras.training.TrainConfig`): its ``patch_size``, ``output``,
            ``model``, ``loss`` and ``deep_supervision`` are recorded.
        spec: the training data's :class:`~brats_keras.spec.PreprocessingSpec` (or its dict, a manifest's
            settings); the run's patch size (a slice model's as ``(H, W, 1)``,
            :func:`brats_keras.models.patch_shape`) and output mode are added to it.
        task: the training data's task (a :class:`~brats_keras.tasks.Task`, its name or record; None: the 2021
            glioma task).
    Returns:
        ``{"format": 1, **spec.to_dict(), "model": ..., "loss": ..., "task": task.to_dict()}``, and
        ``"deep_supervision": N`` when the run trains N auxiliary outputs.
    """
    from .models import patch_shape

    if not isinstance(spec, PreprocessingSpec):
        spec = PreprocessingSpec.from_dict(spec)
    spec = dataclasses.replace(spec, patch_size=patch_shape(cfg.model, cfg.patch_size), output=cfg.output)
    extra = {"deep_supervision": cfg.deep_supervision} if cfg.deep_supervision else {}
    return {"format": INFO_FORMAT, **spec.to_dict(), "model": cfg.model, "loss": cfg.loss,
            "task": get_task(task).to_dict(), **extra}


def info_task(info, name="the model"):
    """The task a model's info records (``info["task"]``, :func:`model_info`); the 2021 glioma task for an info
    without one (every model file written before tasks were recorded, the shipped ensemble's).

    Raises:
        BratsInputError in one line naming ``name`` for a task record that is not a valid task.
    """
    record = info.get("task") if isinstance(info, dict) else None
    try:
        return get_task(record)
    except TaskError as exc:
        raise BratsInputError(f"{name}: {exc}") from None


def check_task(theirs, ours, name, what: str = "this run's data") -> None:
    """Refuse a model of task ``theirs`` for ``ours`` (both :class:`~brats_keras.tasks.Task`) unless it predicts
    the same classes and regions (:meth:`~brats_keras.tasks.Task.same_classes`: one family, such as glioma 2021
    and 2023): BratsInputError in one line naming ``name`` and both tasks."""
    if theirs != ours and not theirs.same_classes(ours):
        raise BratsInputError(f"{name}: a model of task {theirs.name}, but {what} is task {ours.name} (other "
                              f"classes or regions): refused")


def check_same_task(infos, names) -> None:
    """Refuse, in one line naming two models and their tasks, models of tasks with other classes or regions (the
    members of an ensemble: their outputs are averaged channel by channel; one family, such as glioma 2021 and
    2023, passes: :meth:`~brats_keras.tasks.Task.same_classes`)."""
    tasks = [info_task(info, name) for info, name in zip(infos, names)]
    for task, name in zip(tasks[1:], names[1:]):
        if not tasks[0].same_classes(task):
            raise BratsInputError(f"{names[0]} and {name} were trained for different tasks ({tasks[0].name} and "
                                  f"{task.name}): the models of an ensemble need the same classes")


def _read_member(path, member) -> dict:
    try:
        with zipfile.ZipFile(path) as zf:
            if member in zf.namelist():
                return json.loads(zf.read(member))
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise BratsInputError(f"{path}: not a Keras model file ({type(exc).__name__}: {exc})") from None
    return {}


def read_info(path) -> dict:
    """The ``brats_keras.json`` of a model file ({} for a plain Keras file)."""
    return _read_member(path, INFO_MEMBER)


def read_state(path) -> dict:
    """The training state embedded in a checkpoint by :func:`save_model` ({} when it has none)."""
    return _read_member(path, STATE_MEMBER)


#: modules whose registered losses and metrics a saved model may refer to (the models' layers are registered by
#: :func:`load_model`'s import of :mod:`brats_keras.models`)
_SERIALIZABLE_MODULES = ("brats_keras.losses", "brats_keras.metrics")


def _register_custom_objects() -> None:
    """Import the modules that register the project's losses and metrics, where they exist."""
    for module in _SERIALIZABLE_MODULES:
        try:
            importlib.import_module(module)
        except ImportError as err:
            if getattr(err, "name", None) != module:  # the module exists but is broken
                raise


def load_model(path, compile: bool = True):
    """Load a ``.keras`` model saved by this package, and its info (:func:`read_info`).

    The project's layers, losses and metrics are registered as Keras serializables, so a
    compiled model loads without ``custom_objects``. A file holding a ``Lambda`` layer (Python code, whether a
    lambda or a named function) is refused before Keras reads it, and Keras' safe mode stays on; a layer or
    function of a class that neither Keras nor brats-keras registers is refused by name. A file whose kernels
    are stored in int8 (:func:`store_int8`) loads through a float32 copy in a temporary
    folder.

    Returns:
        ``(model, info)``: the Keras model and the file's ``brats_keras.json`` ({} for a plain Keras file), with
        the task under ``"task"`` where the file records one (:func:`info_task` reads it: the 2021 glioma task for
        a file without). Prediction also checks the network's head against the info (:func:`check_head`).

    Raises:
        FileNotFoundError: ``"<path>: model file not found"``.
        brats_keras.io.BratsInputError (a ValueError), one line naming the file: not a Keras
            model file (not a zip archive, truncated, unreadable), a Lambda layer (naming the layer), or an
            unregistered class or function (naming it and its layer).
    """
    import keras

    from . import models  # noqa: F401  (registers the layers of the package's models)

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
        if not legacy_h5 and is_int8(path):  # kernels stored in int8 (checkpoint.store_int8): restored first
            import tempfile

            with tempfile.TemporaryDirectory(prefix="brats_int8_") as tmp:
                copy = Path(tmp) / path.name
                return keras.saving.load_model(str(dequantized_copy(path, copy)), compile=compile), read_info(path)
        return keras.saving.load_model(str(path), compile=compile), read_info(path)
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


def load_pretrained(compile: bool = False):
    """The Keras model trained on real BraTS cases that ships in ``brats_keras/pretrained/``: ``model.keras``,
    or the first fold of the fold ensemble that ships in its place.

    Its preprocessing (modalities, scaling, 2 mm resolution) is in
    ``read_info(brats_keras.pretrained.pretrained_path())``, its scores in
    ``MODEL_CARD.md``;
    fine-tune it like any Keras model (``model.compile(...)``, ``model.fit(...)``).

    Raises:
        FileNotFoundError in one line naming the file when this installation lacks it
        (:func:`brats_keras.pretrained.pretrained_path`).
    """
    from .pretrained import pretrained_path

    return load_model(pretrained_path(), compile=compile)[0]


#: what a model file whose weights start a run (:func:`init_weights`) must share with the run
INIT_KEYS = ("modalities", "scale", "downsample", "output")


def init_weights(model, source, info: dict) -> Path:
    """Copy the weights of ``source`` (a ``.keras`` file or ``"pretrained"``) into ``model``; return its path.

    The source must have the same architecture (every weight the same shape), have been trained on data
    preprocessed the same way (modalities, scaling, down-sampling, output) and be a model of the run's task
    (``info["task"]``) or of one with the same classes and regions (:func:`check_task`); otherwise
    BratsInputError in one line.
    """
    from .models import main_output

    if str(source) == "pretrained":
        from .pretrained import pretrained_path

        source = pretrained_path()
    source = Path(source)
    if not source.is_file():
        raise BratsInputError(f"{source}: --init-from model file not found")
    src, src_info = load_model(source, compile=False)
    if src_info:  # a plain Keras file says nothing about its preprocessing
        try:
            src_spec = PreprocessingSpec.from_dict(src_info)
        except ValueError as exc:
            raise BratsInputError(f"{source}: {exc}") from None
        for key, value, ours in src_spec.differences(PreprocessingSpec.from_dict(info), INIT_KEYS):
            if key in src_info:  # what the source does not record is not held against it
                raise BratsInputError(f"{source}: trained with {key}={value!r} but this run uses {ours!r}")
    check_task(info_task(src_info, source), info_task(info, "this run"), f"--init-from {source}")
    model = main_output(model)  # deep supervision on either side: the shared layers, the auxiliary heads left alone
    theirs, ours = main_output(src).get_weights(), model.get_weights()
    if len(theirs) != len(ours) or any(a.shape != b.shape for a, b in zip(theirs, ours)):
        raise BratsInputError(f"{source}: its architecture differs from this run's model "
                              f"({len(theirs)} weight arrays against {len(ours)}, or different shapes)")
    model.set_weights(theirs)
    return source


#: the channels and the last activation of each head of the default task (a model's info records the head in
#: ``info["output"]``, the task in ``info["task"]``): softmax over the classes (background, NCR, ED, ET), or
#: independent sigmoids for the regions WT, TC, ET; other tasks: :meth:`~brats_keras.tasks.Task.output_channels`
HEADS = {"softmax": (get_task(None).n_classes, "softmax"), "regions": (len(get_task(None).region_order), "sigmoid")}


def check_head(model, info: dict, name) -> None:
    """Refuse a model whose network does not end in the head its info records: prediction reads the outputs by
    the recorded head (argmax of classes, or region thresholds), so another head would give other labels
    (:class:`~brats_keras.inference.Predictor` checks every model it is given).

    The main output's channels (``model.outputs[0]``: a Keras model or an export) must be those of the head of
    the recorded task (:func:`info_task`: the 2021 glioma task when none is recorded); its last activation, where
    it can be read (a Keras layer's ``activation``), must not be the other head's. Nothing is checked when the
    info records no ``"output"``.

    Raises:
        BratsInputError in one line naming ``name``.
    """
    output = info.get("output") if isinstance(info, dict) else None
    if output is None:
        return
    try:
        output = check_output(output)
    except ValueError as exc:
        raise BratsInputError(f"{name}: {exc}") from None
    _, activation = HEADS[output]
    task = info_task(info, name)
    channels = task.output_channels(output)
    tensor = model.outputs[0]
    found = tensor.shape[-1]
    if found is not None and found != channels:
        of_task = "" if task == get_task(None) else f" of task {task.name}"
        raise BratsInputError(f"{name}: its info records a {output} head{of_task} ({channels} channels) but the "
                              f"network ends in {found} channels: refused (its outputs would be read as other "
                              f"labels)")
    history = getattr(tensor, "_keras_history", None)
    function = getattr(history[0], "activation", None) if history else None
    last = getattr(function, "__name__", None)
    if last in {a for _, a in HEADS.values()} and last != activation:
        raise BratsInputError(f"{name}: its info records a {output} head ({activation}) but the network ends in a "
                              f"{last}: refused (its outputs would be read as other labels)")


def write_info(path, info: dict) -> Path:
    """Replace the ``brats_keras.json`` of a model file by ``info``; weights and other members stay as they are.

    Written to a temporary file beside it and renamed over it (atomic). Used by
    ``brats-keras set-postprocessing`` to store ``info["postprocess"]``.

    Raises:
        FileNotFoundError for a missing file; BratsInputError for a file that is not a Keras model file.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: model file not found")
    read_info(path)  # a readable zip, or one line naming the file
    atomic_write(path, lambda tmp: _copy_archive(path, tmp, replace={INFO_MEMBER: json.dumps(info, indent=2)}),
                 suffix=".keras")
    return path
