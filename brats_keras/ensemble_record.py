"""An ensemble folder is exactly what its ``ensemble.json`` lists.

A folder written by ``brats-keras ensemble`` (and the shipped ``brats_keras/pretrained``) holds model files
``fold-<k>.keras`` and their record, ``ensemble.json``: ``{"models": {file name: {"checksum": "sha256:<hex>",
...}}, ...}``. Prediction from such a folder uses the listed files, all of them, each only when its bytes still
have the recorded checksum; a listed file that is missing, a ``.keras`` file the record does not list (a stray
copy, a model dropped in) or a file changed since the record was written is refused in one line naming it, so
an ensemble never silently averages 4 or 6 models instead of its 5.

Hashing the shipped ensemble (5 files of 10 MB) takes about 0.05 s, so it is done on every use, without a cache.
"""
from __future__ import annotations

import json
from pathlib import Path

from .io import BratsInputError, atomic_write_json, file_checksum

#: the record of an ensemble folder
RECORD = "ensemble.json"
#: the files of a folder that are models: every one must be listed in its record
MODEL_PATTERN = "*.keras"


def is_ensemble(folder) -> bool:
    """Whether ``folder`` is an ensemble folder (it holds an ``ensemble.json``)."""
    return (Path(folder) / RECORD).is_file()


def read_record(folder) -> dict:
    """The ``ensemble.json`` of ``folder``, with a non-empty ``"models"`` object.

    Raises:
        BratsInputError naming ``ensemble.json`` when it is missing, not JSON or lists no models.
    """
    path = Path(folder) / RECORD
    try:
        record = json.loads(path.read_text())
        models = record["models"]
        if not isinstance(models, dict) or not models:
            raise ValueError("no models listed")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise BratsInputError(f"{path}: not the record of a fold ensemble ({exc})") from None
    return record


def ensemble_files(folder, record: dict | None = None) -> list[Path]:
    """The model files of the ensemble folder ``folder``: those its ``ensemble.json`` lists (sorted by name), after
    checking that the folder holds exactly them, unchanged.

    Args:
        record: the folder's ``ensemble.json`` as already read (:func:`read_record`), or None to read it.
    Raises:
        BratsInputError in one line naming the file, checked in this order: an entry that is not a file name
        ending ``.keras`` or not a JSON object; a listed file that is missing; a ``.keras`` file in the folder
        that the record does not list; an entry without a checksum (a record written before checksums were
        recorded: write the ensemble again); a file whose sha256 differs from the recorded one.
    """
    folder = Path(folder)
    path = folder / RECORD
    models = (record if record is not None else read_record(folder))["models"]
    names = sorted(models)
    for name in names:
        if Path(name).name != name or not name.endswith(".keras"):
            raise BratsInputError(f"{path}: {name}: not a model file of this folder (a file name ending .keras)")
        if not isinstance(models[name], dict):
            raise BratsInputError(f"{path}: {name}: not the record of a file (a JSON object)")
    for name in names:
        if not (folder / name).is_file():
            raise BratsInputError(f"{folder / name}: listed in {RECORD} but missing")
    extra = sorted(p.name for p in folder.glob(MODEL_PATTERN) if p.name not in models)
    if extra:
        more = f" (and {len(extra) - 1} more)" if len(extra) > 1 else ""
        raise BratsInputError(f"{folder / extra[0]}{more}: a model file that {RECORD} does not list; the ensemble "
                              f"uses exactly the files listed there: move it out of {folder}")
    for name in names:
        recorded = models[name].get("checksum")
        if not isinstance(recorded, str):
            raise BratsInputError(f"{path}: {name} records no checksum; write the ensemble again with "
                                  "brats-keras ensemble --runs ...")
        if file_checksum(folder / name) != recorded:
            raise BratsInputError(f"{folder / name}: its sha256 differs from the one {RECORD} records (changed or "
                                  "replaced since the ensemble was written): refused")
    return [folder / name for name in names]


def listed_in_record(path) -> bool:
    """Whether the model file ``path`` is listed in an ``ensemble.json`` beside it."""
    path = Path(path)
    return is_ensemble(path.parent) and path.name in read_record(path.parent)["models"]


def update_checksum(path) -> None:
    """Record the current checksum of ``path`` in the ``ensemble.json`` beside it (atomic), for a listed file that
    brats-keras itself changed (``set-postprocessing``). Check the folder with :func:`ensemble_files` first: this
    trusts the file's new bytes."""
    path = Path(path)
    record = read_record(path.parent)
    record["models"][path.name]["checksum"] = file_checksum(path)
    atomic_write_json(path.parent / RECORD, record)
