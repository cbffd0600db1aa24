"""Saving models together with the preprocessing they were trained with.

A brats-keras model file is an ordinary Keras ``.keras`` archive with one more
member, ``brats_keras.json``, that records the :class:`~brats_keras.spec.PreprocessingSpec`
of its training data (modalities in channel order, crop, scaling, dtype, resolution, patch
size, output mode) and the model and loss names (``training.model_info``). Prediction reads
it, so it applies exactly the preprocessing used in training.
A training checkpoint may hold a second member, ``training_state.json``: the epochs done,
the log rows and the best value so far (see ``brats_keras.training``). It lives in the same
file as the weights, so the two can never disagree. ``keras.saving.load_model`` ignores both.
"""
from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

from .io import BratsInputError, temp_path_for

INFO_MEMBER = "brats_keras.json"
STATE_MEMBER = "training_state.json"


def save_model(model, path, info: dict | None = None, include_optimizer: bool = True,
               state: dict | None = None) -> Path:
    """Save ``model`` to ``path`` (``.keras``) with ``info`` embedded; atomic (temp file + rename).

    Args:
        include_optimizer: False drops the optimizer state (smaller file for shipping).
        state: training state to embed (``training_state.json``; read back with :func:`read_state`).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = str(temp_path_for(path, suffix=".keras"))
    try:
        if include_optimizer:
            model.save(tmp)
        else:
            _save_without_optimizer(model, tmp)
        if info is not None or state is not None:
            with zipfile.ZipFile(tmp, "a") as zf:
                if info is not None:
                    zf.writestr(INFO_MEMBER, json.dumps(info, indent=2))
                if state is not None:
                    zf.writestr(STATE_MEMBER, json.dumps(state))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def _save_without_optimizer(model, tmp):
    import keras

    clone = keras.models.clone_model(model)  # uncompiled: no optimizer state, no loss
    clone.set_weights(model.get_weights())
    clone.save(tmp)


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


def load_model(path, compile: bool = True):
    """Load a ``.keras`` model (custom brats-keras objects registered) and its info.

    Returns:
        ``(model, info)``.

    Raises:
        FileNotFoundError for a missing file; BratsInputError (one line naming the file) for a file
        that is not a Keras model (corrupt, truncated, another format) or holds a Lambda layer.
    """
    from .models import load_model as load_keras_model

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: model file not found")
    return load_keras_model(path, compile=compile), read_info(path)


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
    tmp = str(temp_path_for(path, suffix=".keras"))
    try:
        with zipfile.ZipFile(path) as src, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as dst:
            for item in src.infolist():
                if item.filename != INFO_MEMBER:
                    dst.writestr(item, src.read(item.filename))
            dst.writestr(INFO_MEMBER, json.dumps(info, indent=2))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path
