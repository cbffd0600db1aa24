"""Saving models together with the preprocessing they were trained with.

A brats-keras model file is an ordinary Keras ``.keras`` archive with one more
member, ``brats_keras.json``, that records the modalities (in channel order), the
scaling, the crop mode, the output mode, the patch size and the label convention.
Prediction reads it, so it applies exactly the preprocessing used in training.
``keras.saving.load_model`` ignores the extra member.
"""
from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

from .io import temp_path_for

INFO_MEMBER = "brats_keras.json"


def save_model(model, path, info: dict | None = None, include_optimizer: bool = True) -> Path:
    """Save ``model`` to ``path`` (``.keras``) with ``info`` embedded; atomic (temp file + rename).

    Args:
        include_optimizer: False drops the optimizer state (smaller file for shipping).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = str(temp_path_for(path, suffix=".keras"))
    try:
        if include_optimizer:
            model.save(tmp)
        else:
            _save_without_optimizer(model, tmp)
        if info is not None:
            with zipfile.ZipFile(tmp, "a") as zf:
                zf.writestr(INFO_MEMBER, json.dumps(info, indent=2))
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


def read_info(path) -> dict:
    """The ``brats_keras.json`` of a model file ({} for a plain Keras file)."""
    try:
        with zipfile.ZipFile(path) as zf:
            if INFO_MEMBER in zf.namelist():
                return json.loads(zf.read(INFO_MEMBER))
    except zipfile.BadZipFile:
        raise ValueError(f"{path}: not a .keras model file") from None
    return {}


def load_model(path, compile: bool = True):
    """Load a ``.keras`` model (custom brats-keras objects registered) and its info.

    Returns:
        ``(model, info)``.
    """
    from .models import load_model as load_keras_model

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: model file not found")
    return load_keras_model(path, compile=compile), read_info(path)
