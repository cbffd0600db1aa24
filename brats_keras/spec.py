"""How a case is preprocessed: one typed record from conversion to prediction.

:class:`PreprocessingSpec` says which modalities are stacked in which channel order, how the
volume is cropped, how intensities are scaled, how the arrays are stored, at which resolution
(``downsample``), and, once a model is trained on them, its patch size and output mode. It
travels as a dict in three places, always written by :meth:`PreprocessingSpec.to_dict` and
read back by :meth:`PreprocessingSpec.from_dict`, which validates it and fills every default:

* ``OUT/manifest.json`` of a conversion, under ``"settings"`` (plus ``min_tumor``, which picks
  cases rather than preprocessing them; ``patch_size`` and ``output`` are null there);
* the ``brats_keras.json`` embedded in a model file (plus ``format``, ``model``, ``loss`` and
  maybe ``postprocess``), see :mod:`brats_keras.checkpoint`;
* the ``brats_keras.json`` beside an export (plus ``"export"``), see :mod:`brats_keras.export`.

Dicts written before this module existed (a manifest without ``downsample``, the shipped model's
info without ``dtype`` or ``margin``) read back as the same spec as before: a missing key takes
the value the code always used for it. No deep-learning framework is imported here.
"""
from __future__ import annotations

import json
import numbers
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from .labels import check_output, parse_modalities
from .preprocessing import DEFAULT_MARGIN, REPORT_CROP, SCALINGS
from .tasks import TASKS, TaskError, get_task

#: crop modes: the report's fixed box, or the brain's bounding box plus a margin
CROPS = ("fixed", "brain")
#: image storage types; uint8 (min-max scaling only) holds round(255 * value), half of float16's size
IMAGE_DTYPES = ("float16", "float32", "uint8")
#: down-sampling factors: average N x N x N voxel blocks (2: 1 mm -> 2 mm)
DOWNSAMPLES = (1, 2, 3, 4)
#: sliding-window size for a model whose info gives no patch size (the report's 128^3 training patch)
DEFAULT_WINDOW = 128
#: the conversion's file name in its output folder
MANIFEST = "manifest.json"


@dataclass(frozen=True)
class PreprocessingSpec:
    """How a case is turned into a network input (and, for a model, how windows and outputs are read).

    Attributes:
        modalities: canonical names (flair, t1, t1ce, t2) in channel order; the 2023 names are accepted.
        crop: ``"fixed"`` (``crop_box``, the report's ``[56:184, 56:184, 13:141]`` by default) or
            ``"brain"`` (the brain's bounding box plus ``margin`` voxels, 4 by default).
        crop_box: three ``(start, stop)`` pairs for ``crop="fixed"``, else None.
        margin: voxels around the brain for ``crop="brain"``, else None.
        scale: ``"minmax"`` or ``"zscore"``, computed per modality over the whole volume.
        dtype: how the converted image is stored: float16, float32 or uint8 (``round(255 * value)``,
            min-max scaling only).
        downsample: 1, 2, 3 or 4: voxels averaged in N^3 blocks (2 turns 1 mm into 2 mm).
        patch_size: the training patch size (int or three ints), the prediction window; None before
            a model is trained (a conversion manifest).
        output: ``"softmax"`` or ``"regions"``; None before a model is trained.

    Construction validates every field (ValueError, one line naming the key and the value) and
    fills the crop-dependent defaults; the instance is immutable (``dataclasses.replace`` for a copy).
    """

    modalities: tuple[str, ...]
    crop: str = "fixed"
    crop_box: tuple | None = None
    margin: int | None = None
    scale: str = "minmax"
    dtype: str = "float16"
    downsample: int = 1
    patch_size: int | tuple[int, int, int] | None = None
    output: str | None = None

    def __post_init__(self):
        def put(name, value):
            object.__setattr__(self, name, value)

        try:
            put("modalities", parse_modalities(self.modalities))
        except (TypeError, AttributeError):  # not a list of names (a hand-edited or damaged file)
            raise ValueError(f"modalities must be a list of modality names, got {self.modalities!r}") from None
        if self.crop not in CROPS:
            raise ValueError(f"unknown crop {self.crop!r}: use fixed or brain")
        if self.crop == "fixed":
            if self.margin is not None:
                raise ValueError(f"margin {self.margin!r} is only used with crop brain, not with crop fixed")
            put("crop_box", _crop_box(REPORT_CROP if self.crop_box is None else self.crop_box))
        else:
            if self.crop_box is not None:
                raise ValueError(f"crop_box {self.crop_box!r} is only used with crop fixed, not with crop brain")
            put("margin", _count("margin", DEFAULT_MARGIN if self.margin is None else self.margin, low=0))
        if self.scale not in SCALINGS:
            raise ValueError(f"unknown scale {self.scale!r}: use one of {', '.join(SCALINGS)}")
        if self.dtype not in IMAGE_DTYPES:
            raise ValueError(f"unknown dtype {self.dtype!r}: use one of {', '.join(IMAGE_DTYPES)}")
        if self.dtype == "uint8" and self.scale != "minmax":
            raise ValueError("dtype uint8 stores min-max scaled values as round(255 * value): use it with scale minmax")
        if not _is_int(self.downsample) or int(self.downsample) not in DOWNSAMPLES:
            raise ValueError(f"downsample must be 1, 2, 3 or 4, got {self.downsample!r}")
        put("downsample", int(self.downsample))
        if self.patch_size is not None:
            put("patch_size", _patch_size(self.patch_size))
        if self.output is not None:
            put("output", check_output(self.output))

    # ------------------------------------------------------------------ dicts
    @classmethod
    def from_dict(cls, d) -> "PreprocessingSpec":
        """The spec of a manifest's ``"settings"``, a model file's info or an export's info.

        Keys of other layers (``min_tumor``, ``format``, ``model``, ``loss``, ``postprocess``,
        ``export``) are ignored; a missing key takes its default (``downsample`` 1, ``dtype``
        float16, ``scale`` minmax, ``crop`` fixed with the report's box, ``margin`` 4 for the
        brain crop, ``patch_size`` and ``output`` None).

        Raises:
            ValueError, one line naming the key and the value: not a dict, no modalities, or a bad value.
        """
        if not isinstance(d, dict):
            raise ValueError(f"preprocessing settings must be a JSON object, got {type(d).__name__}")
        if not d.get("modalities"):
            raise ValueError("no modalities: the preprocessing settings must list the modalities in channel order")
        return cls(**{f.name: d[f.name] for f in fields(cls) if f.name in d})

    def to_dict(self) -> dict:
        """Every field, JSON-ready (lists for tuples); ``from_dict(spec.to_dict()) == spec``."""
        return json.loads(json.dumps(asdict(self)))

    # ------------------------------------------------------------------ what prediction reads
    @property
    def window(self):
        """The sliding-window size: the training patch size, ``DEFAULT_WINDOW`` when unknown."""
        return self.patch_size if self.patch_size is not None else DEFAULT_WINDOW

    @property
    def regions(self) -> bool:
        """True for a region model (one sigmoid per head region of its task: WT, TC, ET for the default); a model
        of unknown output is a softmax model."""
        return self.output == "regions"

    def differences(self, other: "PreprocessingSpec", keys) -> list[tuple[str, object, object]]:
        """``(key, ours, theirs)`` for each of ``keys`` where the two specs differ (JSON values)."""
        mine, theirs = self.to_dict(), other.to_dict()
        return [(k, mine[k], theirs[k]) for k in keys if mine[k] != theirs[k]]


def read_manifest(folder) -> dict:
    """Load ``folder/manifest.json``, written by :func:`brats_keras.convert.convert_folder`, its shape checked: a
    JSON object whose ``cases`` maps each case id to an object.

    Raises:
        BratsInputError in one line naming the folder or the file: no manifest (not a conversion folder), a file
        that cannot be read or is not JSON, or one of another shape (hand-edited, damaged, from another tool).
    """
    from .io import BratsInputError, os_error_reason

    folder = Path(folder)
    path = folder / MANIFEST
    if not path.is_file():
        raise BratsInputError(f"{folder}: no {MANIFEST}: not a conversion folder (make one with "
                              "data_prep/convert.py or brats-keras convert)")
    try:
        with open(path) as f:
            manifest = json.load(f)
    except OSError as exc:
        raise BratsInputError(f"{path}: cannot read the conversion manifest ({os_error_reason(exc)})") from None
    except ValueError as exc:  # not JSON (or not UTF-8)
        raise BratsInputError(f"{path}: cannot read the conversion manifest ({exc})") from None
    if not isinstance(manifest, dict):
        raise BratsInputError(f"{path}: not a conversion manifest (a JSON object), got {type(manifest).__name__}")
    cases = manifest.get("cases")
    if not isinstance(cases, dict):
        raise BratsInputError(f"{path}: 'cases' must map case ids to their files, got "
                              f"{'nothing' if cases is None else type(cases).__name__}")
    bad = next((c for c, e in cases.items() if not isinstance(e, dict)), None)
    if bad is not None:
        raise BratsInputError(f"{path}: case {bad}: entry must be an object naming its files, got "
                              f"{type(cases[bad]).__name__}")
    return manifest


def _is_int(value) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, numbers.Integral):
        return True
    return isinstance(value, float) and value.is_integer()


def _count(name, value, low):
    if not _is_int(value) or int(value) < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


def _crop_box(box) -> tuple:
    try:
        pairs = tuple((a, b) for a, b in box)
    except (TypeError, ValueError):
        pairs = ()
    if len(pairs) != 3 or not all(_is_int(v) for p in pairs for v in p) or any(not 0 <= a < b for a, b in pairs):
        raise ValueError(f"crop_box must be three [start, stop] pairs with 0 <= start < stop, got {box!r}")
    return tuple((int(a), int(b)) for a, b in pairs)


def _patch_size(patch):
    if _is_int(patch) and int(patch) > 0:
        return int(patch)
    if isinstance(patch, (list, tuple)) and len(patch) == 3 and all(_is_int(p) and int(p) > 0 for p in patch):
        return tuple(int(p) for p in patch)
    raise ValueError(f"patch_size must be a positive integer or three of them, got {patch!r}")


def manifest_task(manifest: dict, where="manifest"):
    """The task a conversion manifest records (``"task"``, :meth:`brats_keras.tasks.Task.to_dict`); a manifest
    without one is of the default task (:data:`brats_keras.tasks.DEFAULT_TASK`).

    Raises:
        BratsInputError naming ``where`` when the record is not a usable task.
    """
    from .io import BratsInputError

    try:
        return get_task(manifest.get("task"))
    except TaskError as exc:
        raise BratsInputError(f"{where}: task: {exc}") from None


def case_label_task(manifest: dict, case_id: str, where="manifest"):
    """The task whose values case ``case_id``'s label map holds (its entry's ``"label_task"``, e.g. ``brats2023``
    for a 2023-named case of a ``glioma2021`` conversion): what a prediction of that case is written back in. A case
    without one is of the manifest's task (:func:`manifest_task`)."""
    task = manifest_task(manifest, where)
    entry = manifest.get("cases", {}).get(case_id) or {}
    name = entry.get("label_task")
    if not name or name == task.name:
        return task
    return TASKS.get(name, task)

