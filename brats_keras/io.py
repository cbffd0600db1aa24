"""Finding and reading BraTS cases, and writing outputs safely.

Supported layouts (``.nii`` and ``.nii.gz``), found anywhere below a folder:

* BraTS 2018-2021: ``<case>_flair``, ``_t1``, ``_t1ce``, ``_t2``, ``_seg`` (ET label 4)
* BraTS 2023+:     ``<case>-t2f``, ``-t1n``, ``-t1c``, ``-t2w``, ``-seg`` (ET label 3)
* BraTS 2024 MEN-RT: ``BraTS-MEN-RT-0000-1_t1c`` with the label map ``_gtv`` (underscore separator)
* a case folder whose files carry no case prefix: ``t1c.nii.gz``, ``flair.nii.gz``,
  ``seg.nii.gz`` / ``segmentation.nii.gz``; the folder name is the case id.
* the Medical Segmentation Decathlon (Task01_BrainTumour): ``imagesTr/BRATS_001.nii.gz``, one 4-D image whose
  channels are the modalities (FLAIR, T1w, t1gd, T2w, or the order ``dataset.json`` names), the label map
  ``labelsTr/BRATS_001.nii.gz``; ``imagesTs/`` holds cases without labels. nnU-Net's raw layout, one 3-D file
  per channel (``BRATS_001_0000.nii.gz`` ... ``_0003``), is read the same way.

numpy and nibabel only: no deep-learning framework is imported here.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

# the grid's constants stay importable from here, where convert, predict and evaluate read cases
from .geometry import (AFFINE_TOLERANCE, BRATS_ORIENTATION, BRATS_VOXEL_MM, VOXEL_TOLERANCE_MM,  # noqa: F401
                       Grid, Regrid, format_size, grid_problem, orientation, working_grid)
from .labels import (DEFAULT_MODALITIES, MODALITIES, MODALITY_ALIASES, _small_ints, canonical_modality,
                     labels_to_classes, parse_modalities)
from .tasks import TaskError, detect_task, get_task

_NII = re.compile(r"^(?P<stem>.+?)\.nii(\.gz)?$", re.IGNORECASE)
_RE_2021 = re.compile(r"^(?P<case>.+)_(?P<key>flair|t1ce|t1|t2|seg)$", re.IGNORECASE)
_RE_2023 = re.compile(r"^(?P<case>.+)-(?P<key>t2f|t1n|t1c|t2w|seg)$", re.IGNORECASE)
#: 2023+ modality names after an underscore, as BraTS 2024 MEN-RT writes them (``BraTS-MEN-RT-0000-1_t1c``), whose
#: label map is the gross tumour volume ``_gtv``
_RE_2023_UNDERSCORE = re.compile(r"^(?P<case>BraTS-[A-Za-z]+-.+)_(?P<key>t2f|t1n|t1c|t2w|seg|gtv)$", re.IGNORECASE)
_PLAIN_SEG = ("seg", "segmentation", "label", "labels", "mask")


class BratsInputError(ValueError):
    """Bad input: the message is one line naming the case or file and the problem."""


@dataclass
class Case:
    """One patient study found on disk.

    Attributes:
        case_id: the case's name (file prefix, or folder name for unprefixed files).
        folder: the folder holding the files.
        images: canonical modality name -> path.
        seg: path of the label map, or None (test / validation data).
        layout: the label values the files use: ``"2021"`` (ET = 4: 2018-2021 names, and unprefixed files with
            2021 modality names), ``"2023"``, ``"plain"`` (unprefixed files with 2023 modality names) or ``"msd"``.
        naming: how the files are named (:data:`brats_keras.tasks.NAMINGS`): ``"2021"`` (``<case>_flair``),
            ``"2023"`` (``BraTS-GLI-00000-000-t1c``, the 2024-2025 ``-100`` time points and ``BraTS-MEN-RT-..._t1c``),
            ``"msd"`` (the Decathlon's ``imagesTr`` / ``labelsTr``) or ``"plain"`` (no case prefix); with the label
            values it tells the case's task (:func:`brats_keras.tasks.detect_task`).
        channels: modality -> channel index, for modalities stored as channels of one 4-D image (the Decathlon's);
            ``images`` maps each of them to that image.
        ambiguous: modality name or ``"seg"`` -> every file found for it, where there is more than one
            (``_flair.nii.gz`` beside ``_FLAIR.nii.gz`` or ``_flair.nii``); reading it raises BratsInputError.
        problems: modality name or ``"seg"`` -> why it cannot be read (a Decathlon training image without its
            label map); reading it raises BratsInputError with that line.
    """

    case_id: str
    folder: Path
    images: dict = field(default_factory=dict)
    seg: Path | None = None
    layout: str = "2021"
    ambiguous: dict = field(default_factory=dict)
    naming: str = "2021"
    channels: dict = field(default_factory=dict)
    problems: dict = field(default_factory=dict)

    @property
    def label_convention(self) -> str:
        """The label convention files of this case use: ``"2021"`` (ET = 4), ``"2023"`` (ET = 3) or ``"msd"`` (the
        Decathlon's values: 1 edema, 2 non-enhancing tumour, 3 enhancing tumour)."""
        if self.layout == "msd":
            return "msd"
        return "2021" if self.layout == "2021" else "2023"

    def check(self, keys) -> None:
        """Raise BratsInputError naming the files when one of ``keys`` (modalities or ``"seg"``) has two files, or
        saying why it cannot be read (:attr:`problems`)."""
        for key in keys:
            key = key if key == "seg" else canonical_modality(key)
            if key in self.ambiguous:
                what = "image" if key in self.channels else key
                names = " and ".join(p.name for p in self.ambiguous[key])
                raise BratsInputError(f"{self.folder}: case {self.case_id} has two {what} files, {names}: keep one")
            if key in self.problems:
                raise BratsInputError(self.problems[key])

    def path(self, modality: str) -> Path:
        """Path of one modality (either vocabulary); BratsInputError if the case lacks it or has two files for it."""
        mod = canonical_modality(modality)
        self.check([mod])
        if mod not in self.images:
            have = ", ".join(sorted(self.images)) or "none"
            raise BratsInputError(f"{self.case_id}: missing modality {mod} in {self.folder} (found: {have})")
        return self.images[mod]


def _classify(folder: Path, filename: str):
    """Return (case_id, key, layout, naming) for a NIfTI file name, or None."""
    m = _NII.match(filename)
    if not m:
        return None
    stem = m.group("stem")
    m21 = _RE_2021.match(stem)
    if m21:
        return m21.group("case"), m21.group("key").lower(), "2021", "2021"
    m23 = _RE_2023.match(stem) or _RE_2023_UNDERSCORE.match(stem)
    if m23:
        key = m23.group("key").lower()
        return m23.group("case"), "seg" if key == "gtv" else key, "2023", "2023"
    low = stem.lower()
    if low in MODALITIES or low in MODALITY_ALIASES:
        layout = "plain" if low in MODALITY_ALIASES else "2021"
        return folder.name, canonical_modality(low), layout, "plain"
    if low in _PLAIN_SEG:
        return folder.name, "seg", None, None
    return None


# ---------------------------------------------------------------------------------------------------- Decathlon
#: the Decathlon's image folders (cases with labels in ``labelsTr``, test cases in ``imagesTs``)
MSD_IMAGE_FOLDERS = ("imagesTr", "imagesTs")
#: the channel order of Task01_BrainTumour's 4-D images (its dataset.json: 0 FLAIR, 1 T1w, 2 t1gd, 3 T2w)
MSD_MODALITIES = ("flair", "t1", "t1ce", "t2")
#: modality names a dataset.json may give (lower case, without spaces, ``-`` and ``_``) -> canonical names
_MSD_NAMES = {"flair": "flair", "t2flair": "flair", "t2f": "flair", "t1": "t1", "t1w": "t1", "t1n": "t1",
              "t1native": "t1", "t1gd": "t1ce", "t1ce": "t1ce", "t1c": "t1ce", "t1contrast": "t1ce", "t2": "t2",
              "t2w": "t2"}
#: nnU-Net's raw layout: one 3-D file per channel, ``<case>_0000`` ...
_CHANNEL_FILE = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")


def msd_modalities(task_folder) -> tuple:
    """The modalities of a Decathlon task's channels, in channel order: those ``task_folder/dataset.json`` names
    (``"modality"``, or nnU-Net's ``"channel_names"``), Task01's order when there is no dataset.json.

    Raises:
        BratsInputError naming dataset.json when it cannot be read or names a modality this library does not know.
    """
    path = Path(task_folder) / "dataset.json"
    if not path.is_file():
        return MSD_MODALITIES
    try:
        meta = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BratsInputError(f"{path}: cannot read it ({getattr(exc, 'strerror', None) or exc})") from None
    names = meta.get("modality", meta.get("channel_names")) if isinstance(meta, dict) else None
    if names is None:
        return MSD_MODALITIES
    if not isinstance(names, dict) or sorted(names, key=str) != [str(i) for i in range(len(names))]:
        raise BratsInputError(f"{path}: \"modality\" must map the channels 0, 1, ... to modality names")
    mods = []
    for i in range(len(names)):
        name = names[str(i)]
        key = re.sub(r"[\s_-]", "", str(name).lower())
        if key not in _MSD_NAMES:
            raise BratsInputError(f"{path}: modality {i} {name!r} is not one this library reads (FLAIR, T1w, "
                                  "t1gd, T2w, or flair, t1, t1ce, t2 and the 2023 names t2f, t1n, t1c, t2w)")
        if _MSD_NAMES[key] in mods:
            raise BratsInputError(f"{path}: modality {i} {name!r} is {_MSD_NAMES[key]} again")
        mods.append(_MSD_NAMES[key])
    return tuple(mods)


def _nifti_stems(folder: Path, filenames) -> dict:
    """stem -> the NIfTI files of ``folder`` with that stem (two for ``.nii`` beside ``.nii.gz``); hidden files
    (the ``._`` companions macOS leaves in the Decathlon's archives) are not images."""
    stems: dict = {}
    for name in filenames:
        m = _NII.match(name)
        if m and not name.startswith("."):
            stems.setdefault(m.group("stem"), []).append(folder / name)
    return stems


def _channel_groups(stems: dict, n: int):
    """``{case: {channel: files}}`` when every stem is ``<case>_NNNN`` with a channel below ``n`` (nnU-Net's raw
    layout; a case missing a channel file then misses that modality); None otherwise (one 4-D image per case)."""
    groups: dict = {}
    for stem, paths in stems.items():
        m = _CHANNEL_FILE.match(stem)
        if not m or int(m.group("channel")) >= n:
            return None
        groups.setdefault(m.group("case"), {})[int(m.group("channel"))] = paths
    return groups or None


def _msd_cases(folder: Path, filenames, modalities: tuple) -> list:
    """The Decathlon cases of one ``imagesTr`` / ``imagesTs`` folder, each with its label map from the sibling
    ``labelsTr`` / ``labelsTs`` (same file name)."""
    cases = []
    stems = _nifti_stems(folder, filenames)
    groups = _channel_groups(stems, len(modalities))
    for case_id, files in (groups or stems).items():
        case = Case(case_id=case_id, folder=folder, layout="msd", naming="msd")
        for k, mod in enumerate(modalities):
            paths = files.get(k) if groups else files
            if not paths:
                continue
            case.images[mod] = paths[0]
            if not groups:
                case.channels[mod] = k
            if len(paths) > 1:  # never pick one of two files silently
                case.ambiguous[mod] = paths
        cases.append(case)
    labels = folder.parent / ("labels" + folder.name[len("images"):])
    if labels.is_dir():
        label_stems = _nifti_stems(labels, sorted(os.listdir(labels)))
        for case in cases:
            paths = label_stems.get(case.case_id, [])
            if paths:
                case.seg = paths[0]
                if len(paths) > 1:
                    case.ambiguous["seg"] = paths
            elif folder.name == "imagesTr":
                case.problems["seg"] = (f"{labels / case.case_id}.nii.gz: not found; every image in imagesTr has "
                                        "its label map in labelsTr (put unlabelled cases in imagesTs)")
    return cases


def find_cases(root, require_seg: bool = False) -> list[Case]:
    """Find every BraTS case below ``root`` (``root`` may itself be one case folder, or one image file).

    Args:
        root: a folder of cases, one case folder, a flat folder of prefixed files, a Decathlon task folder (or
            its ``imagesTr`` / ``imagesTs``), or one NIfTI file: the case that file belongs to (a Decathlon
            4-D image, or one modality of a case).
        require_seg: keep only cases that have a label map.
    Returns:
        Cases sorted by case id. Two files for one modality or label map of a case (``_flair.nii.gz``
        and ``_FLAIR.nii.gz``, or ``.nii`` beside ``.nii.gz``) are listed in ``Case.ambiguous``:
        reading that modality (``Case.path``, ``load_modalities``) raises BratsInputError naming both.
        Folders are walked with :func:`walk_folders`: symbolic links to folders are followed, each real
        folder is read once and a link that loops back is not followed.
    Raises:
        BratsInputError if ``root`` does not exist, or a Decathlon ``dataset.json`` cannot be read or names
        an unknown modality (:func:`msd_modalities`).
    """
    root = Path(root)
    if root.is_file() and _NII.match(root.name):
        return [c for c in find_cases(root.parent, require_seg)
                if root in c.images.values() or any(root in paths for paths in c.ambiguous.values())]
    if not root.is_dir():
        raise BratsInputError(f"{root}: not a folder")
    found: dict[tuple, Case] = {}
    for folder, filenames in walk_folders(root):
        if folder.name in MSD_IMAGE_FOLDERS:
            for case in _msd_cases(folder, filenames, msd_modalities(folder.parent)):
                found[(folder, case.case_id)] = case
            continue
        for name in filenames:
            hit = _classify(folder, name)
            if hit is None:
                continue
            case_id, key, layout, naming = hit
            case = found.setdefault((folder, case_id), Case(case_id=case_id, folder=folder))
            key = key if key == "seg" else canonical_modality(key)
            first = case.seg if key == "seg" else case.images.get(key)
            if first is not None:  # never pick one of two files silently
                case.ambiguous.setdefault(key, [first]).append(folder / name)
                continue
            if key == "seg":
                case.seg = folder / name
            else:
                case.images[key] = folder / name
                if layout:
                    case.layout, case.naming = layout, naming
    cases = [c for c in found.values() if c.images]
    if require_seg:
        cases = [c for c in cases if c.seg is not None]
    return sorted(cases, key=lambda c: (c.case_id, str(c.folder)))


def walk_folders(root):
    """Yield ``(folder, sorted file names)`` for ``root`` and every folder below it, each real folder once.

    Symbolic links to folders are followed (a folder of links to case folders elsewhere works), but never
    into a loop: a link to a folder already walked (``a -> .``, two folders linking to each other) or to a
    folder that contains the link (``b -> ..``) is skipped. Real folders below ``root`` are walked before any
    linked one, so a case reachable both ways is found under its real path.
    """
    seen: set[str] = set()
    pending = [Path(root)]
    while pending:
        top = pending.pop(0)
        links = []
        for dirpath, dirnames, filenames in os.walk(top):  # links are not entered here: they wait in ``links``
            real = os.path.realpath(dirpath)
            if real in seen:
                dirnames[:] = []
                continue
            seen.add(real)
            dirnames.sort()
            for name in dirnames:
                link = os.path.join(dirpath, name)
                if os.path.islink(link):
                    target = os.path.realpath(link)
                    if os.path.commonpath([target, real]) != target:  # not a folder holding the link itself
                        links.append(Path(link))
            yield Path(dirpath), sorted(filenames)
        pending.extend(links)


def gunzip(data: bytes) -> bytes:
    """Decompress gzip data (all members) with ISA-L when installed (about 1.7x faster than zlib)."""
    try:
        from isal import igzip
    except ImportError:  # optional speed-up
        import gzip

        return gzip.decompress(data)
    return igzip.decompress(data)


def _read_gz(path: Path, lazy: bool = False):
    """A ``.nii.gz`` decompressed in one call (instead of nibabel's streamed reads); ``(array, image)``.

    Single-file NIfTI-1/2 without intensity scaling become a read-only array over the decompressed bytes
    (no copy); scaled data go through nibabel's proxy, anything else through ``nib.load``. ``lazy=True`` returns
    the proxy itself for those (sliced, it scales only the part taken).
    """
    import nibabel as nib

    raw = gunzip(path.read_bytes())
    if raw[344:348] == b"n+1\0":  # the single-file magic of NIfTI-1 (the header's last 4 bytes)
        img = nib.Nifti1Image.from_bytes(raw)
    elif raw[4:8] == b"n+2\0":  # NIfTI-2 keeps it right after sizeof_hdr
        img = nib.Nifti2Image.from_bytes(raw)
    else:
        img = nib.load(str(path))
        return (img.dataobj if lazy else np.asanyarray(img.dataobj)), img
    proxy = img.dataobj
    slope, inter = proxy.slope, proxy.inter
    if slope == 1 and inter == 0:
        shape = img.shape
        count = int(np.prod(shape))
        dtype = img.header.get_data_dtype()
        if len(raw) < proxy.offset + count * dtype.itemsize:
            raise ValueError(f"file ends {proxy.offset + count * dtype.itemsize - len(raw)} bytes early")
        arr = np.frombuffer(raw, dtype=dtype, count=count, offset=proxy.offset).reshape(shape, order="F")
        return arr, img
    return (proxy if lazy else np.asanyarray(proxy)), img


def load_nifti(path, dtype=None):
    """Read a NIfTI file; return ``(array, affine, header)``.

    ``dtype=None`` keeps the stored integer type when the file has no scaling
    (no float64 copy of the volume); otherwise the array is cast to ``dtype``.
    A 4-D file with a trailing axis of length 1 is squeezed to 3-D.
    The array of a ``.nii.gz`` may be read-only (a view of the decompressed file, no copy):
    copy it before writing into it.

    Raises:
        BratsInputError naming the file when it is missing, unreadable, truncated or not 3-D.
    """
    arr, img = _read_nifti(path)
    if dtype is not None:
        arr = arr.astype(dtype, copy=False)
    return arr, img.affine, img.header


def _read_nifti(path, channels=None, n_channels=None):
    """``(array, nibabel image)`` of a 3-D NIfTI file: :func:`load_nifti` without the cast.

    ``channels`` (a list of indices) reads a 4-D image of ``n_channels`` channels instead and returns the list
    of those channels' 3-D arrays: views of one decompressed file where it has no scaling, else only those
    channels are scaled (no float64 copy of the whole 4-D image).
    """
    import nibabel as nib

    path = Path(path)
    try:
        if path.name.endswith(".gz"):
            arr, img = _read_gz(path, lazy=channels is not None)
        else:
            img = nib.load(str(path))
            arr = img.dataobj if channels is not None else np.asanyarray(img.dataobj)
        if channels is not None:
            if len(arr.shape) != 4:
                raise BratsInputError(f"{path}: expected a 4-D image (one channel per modality), got shape "
                                      f"{tuple(arr.shape)}")
            if arr.shape[3] != n_channels:
                raise BratsInputError(f"{path}: {arr.shape[3]} channels, expected {n_channels} (one per modality "
                                      "its task's dataset.json names, or FLAIR, T1w, t1gd, T2w)")
            return [np.asanyarray(arr[..., c]) for c in channels], img
    except FileNotFoundError:
        raise BratsInputError(f"{path}: file not found") from None
    except BratsInputError:
        raise
    except Exception as exc:  # nibabel raises many types for broken files
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise BratsInputError(f"{path}: cannot read NIfTI ({msg})") from None
    if arr.ndim == 4 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim != 3:
        raise BratsInputError(f"{path}: expected a 3-D volume, got shape {arr.shape}")
    return arr, img


def check_volume(arr: np.ndarray, path) -> None:
    """Raise BratsInputError if a modality holds NaN/inf or is all zero."""
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise BratsInputError(f"{path}: volume contains NaN or infinite values")
    if not arr.any():
        raise BratsInputError(f"{path}: volume is all zero")


_RESAMPLE = "(resample it to the BraTS grid first)"
#: what a case whose files do not share one grid is told to do
REGISTER = "register the modalities first (e.g. ANTs, FSL FLIRT, SimpleITK)"


def check_grid(path, affine, header) -> None:
    """Raise BratsInputError unless a file lies on the BraTS grid: 1 mm isotropic voxels (header zooms,
    within ``VOXEL_TOLERANCE_MM``) and the BraTS orientation ``BRATS_ORIENTATION``
    (:func:`brats_keras.geometry.grid_problem`). Convert and predict do not need it: they resample such a case
    (:func:`read_modalities`)."""
    problem = grid_problem(affine, header.get_zooms())
    if problem:
        raise BratsInputError(f"{path}: {problem} {_RESAMPLE}")


@dataclass(eq=False)
class CaseVolumes:
    """A case's modalities on the working grid (1 mm, ``BRATS_ORIENTATION``; :mod:`brats_keras.geometry`).

    Attributes:
        arrays: the 3-D volumes ``(D, H, W)`` in the order asked for. On the working grid already: the files'
            own arrays, untouched; else reoriented and resampled (linear, float32).
        affine, header: the working grid's (on it already: the first modality's own).
        path: the first modality's file; every other shares its grid.
        source: the files' own :class:`~brats_keras.geometry.Grid`.
        regrid: None on the working grid; else the :class:`~brats_keras.geometry.Regrid` that brought the arrays
            there, which takes a label map onto it and a prediction back.
    """

    arrays: list
    affine: np.ndarray
    header: object
    path: Path
    source: Grid
    regrid: Regrid | None = None


def _not_coregistered(path, first, problem: str) -> BratsInputError:
    return BratsInputError(f"{path}: {problem}: not co-registered with {Path(first).name}; {REGISTER}")


def read_modalities(case: Case, modalities=None, check: bool = True) -> CaseVolumes:
    """Read the requested modalities of a case onto the working grid.

    Every modality must share the first one's grid: its shape, and its affine within ``AFFINE_TOLERANCE``
    (else the case is not co-registered: BratsInputError naming both files). A case off the working grid (voxels
    not 1 mm, another orientation) is reoriented and resampled onto it (:func:`brats_keras.geometry.working_grid`);
    one on it is read as it is (no float copy: the stored integer type stays).
    ``check=False`` reads whatever is there, as it is: no checks of values or grids, nothing resampled.

    Raises:
        BratsInputError for a missing modality, unreadable file, NaN / all-zero volume, or modalities whose
        shapes or affines differ.
    """
    mods = parse_modalities(modalities or DEFAULT_MODALITIES)
    channels = _read_channels(case, mods)
    vols, first = [], None
    for mod in mods:
        path = case.path(mod)
        if mod in channels:
            arr, aff, hdr = channels[mod]
        else:
            arr, aff, hdr = load_nifti(path)
        if check:
            check_volume(arr, f"{path} (channel {case.channels[mod]}, {mod})" if mod in channels else path)
        if first is None:
            first, source = path, Grid(arr.shape, aff, hdr)
        elif arr.shape != source.shape:
            raise _not_coregistered(path, first, f"shape {arr.shape} differs from {first.name}'s {source.shape}")
        elif check and not np.allclose(aff, source.affine, rtol=0, atol=AFFINE_TOLERANCE):
            off = float(np.abs(np.asarray(aff) - source.affine).max())
            raise _not_coregistered(path, first, f"affine differs from {first.name}'s by up to {off:.3g}")
        vols.append(arr)
    regrid = working_grid(source) if check else None
    if regrid is None:
        return CaseVolumes(vols, source.affine, source.header, first, source)
    return CaseVolumes([regrid.to_working(v, order=1) for v in vols], regrid.affine, regrid.header, first, source,
                       regrid)


def load_modalities(case: Case, modalities=None, check: bool = True):
    """Read the requested modalities of a case onto the working grid (:func:`read_modalities`).

    Returns:
        ``(volumes, affine, header)``: a list of 3-D arrays in the order asked for, the affine and header of the
        working grid (on it already: the first modality's own).
    Raises:
        BratsInputError as :func:`read_modalities` does.
    """
    volumes = read_modalities(case, modalities, check)
    return volumes.arrays, volumes.affine, volumes.header


def load_case_classes(path, volumes: CaseVolumes, convention: str = "auto") -> np.ndarray:
    """A case's label map as class indices 0..3 (uint8) on its images' working grid: :func:`load_case_labels`
    of a ``convention`` (:func:`read_labels`)."""
    return load_case_labels(path, volumes, convention=convention)[0]


def load_case_labels(path, volumes: CaseVolumes, task=None, case=None, convention=None):
    """``(classes, task)`` of a case's label map (:func:`read_labels`: ``task``, ``case``, ``convention``), the
    classes on its images' working grid (nearest neighbour, order 0, where they were resampled).

    The map must lie on the images' grid: their shape, voxel size (within ``VOXEL_TOLERANCE_MM``) and
    orientation; its translation is not compared (some published BraTS 2017 label maps have their origin at 0).

    Raises:
        BratsInputError naming the file as :func:`read_labels` does, or for a map not co-registered with the
        images.
    """
    classes, img, own = read_labels(path, task, shape=volumes.source.shape, case=case, convention=convention)
    zooms, theirs = img.header.get_zooms()[:3], volumes.source.header.get_zooms()[:3]
    if (orientation(img.affine) != orientation(volumes.source.affine)
            or not np.allclose(zooms, theirs, rtol=0, atol=VOXEL_TOLERANCE_MM)):
        raise _not_coregistered(path, volumes.path, f"voxel size {format_size(zooms)} mm "
                                f"{orientation(img.affine)}, {volumes.path.name}'s {format_size(theirs)} mm "
                                f"{orientation(volumes.source.affine)}")
    return (classes if volumes.regrid is None else volumes.regrid.to_working(classes, order=0)), own


def _read_channels(case: Case, mods) -> dict:
    """``{modality: (array, affine, 3-D header)}`` for the modalities ``mods`` that ``case`` stores as channels of
    a 4-D image: each such image read once, its channels views of it (:func:`_read_nifti`)."""
    wanted = [m for m in mods if m in case.channels]
    if not wanted:
        return {}
    case.check(wanted)
    out = {}
    for path in dict.fromkeys(case.images[m] for m in wanted):
        here = [m for m in wanted if case.images[m] == path]
        n = sum(1 for m in case.channels if case.images[m] == path)
        arrays, img = _read_nifti(path, [case.channels[m] for m in here], n)
        header = img.header.copy()
        header.set_data_shape(arrays[0].shape)  # the header of one channel: what predictions are written with
        out.update({m: (a, img.affine, header) for m, a in zip(here, arrays)})
    return out


def load_classes(path, shape=None, task=None, grid: bool = False, case=None, convention=None) -> np.ndarray:
    """Read a label map and return its class indices (uint8, 0 background, then the task's classes).

    ``task``, ``case`` and ``convention`` pick how the values are read, as in :func:`read_labels`.
    ``grid=True`` also refuses a map off the BraTS grid (:func:`check_grid`); its translation is not
    compared with the images' (some published BraTS 2017 label maps have their origin at 0).

    Raises:
        BratsInputError naming the file for unreadable data, a shape other than
        ``shape``, a map off the grid, non-integer values or values of no task that fits.
    """
    classes, img, _ = read_labels(path, task, shape=shape, case=case, convention=convention)
    if grid:
        check_grid(path, img.affine, img.header)
    return classes


def read_label_map(path, task=None, shape=None, case=None, convention=None):
    """``(classes, image)`` of a label map: its class indices (uint8) and its nibabel image (the grid:
    shape, affine, zooms). :func:`read_labels` without the task; :func:`load_classes` and the scoring use it.
    """
    classes, img, _ = read_labels(path, task, shape=shape, case=case, convention=convention)
    return classes, img


def read_labels(path, task=None, shape=None, case=None, convention=None):
    """``(classes, image, task)`` of a label map: the one reader of label maps.

    How its values are read:

    * ``task`` given (a :class:`~brats_keras.tasks.Task`, a built-in name, a task file or record): the values are
      that task's, or, with ``case``, those of the task its naming and values say (:func:`label_task`) when that
      one has the same classes (a 2023-named case read for the 2021 task keeps ET = 3);
    * ``case`` alone: the task detected from the case's naming (:func:`case_naming`) and the map's values
      (:func:`brats_keras.tasks.detect_task`); where that is ambiguous, refused naming the tasks that fit;
    * neither: the 2021 / 2023 glioma values told apart by ET (``labels.labels_to_classes(convention="auto")``;
      a map holding both 3 and 4 is refused), or those of ``convention``: ``"2021"`` or ``"2023"``
      (:func:`brats_keras.labels.labels_to_classes`), or ``"msd"``, the Decathlon's (task ``msd-task01``).

    Returns:
        the classes ``(D, H, W)`` uint8, the nibabel image, and the task whose values were read.
    Raises:
        BratsInputError, one line naming the file: unreadable data, a shape other than ``shape``, non-integer
        values, values the task does not have or that fit several tasks (naming the values and the tasks).
    """
    if isinstance(task, str) and task in _CONVENTIONS:  # read_label_map(path, "msd"): a convention, as callers wrote
        task, convention = None, task
    arr, img = _read_nifti(path)
    if shape is not None and arr.shape != tuple(shape):
        raise BratsInputError(f"{path}: label shape {arr.shape} differs from image shape {tuple(shape)}")
    arr = _whole_numbers_as_uint8(arr)
    try:
        present = label_values(arr)
        if convention == "msd":
            task = "msd-task01"
        elif task is None and case is None:  # ET 4 is 2021's, ET 3 the 2023 one's (one family: the same classes)
            convention = convention or "auto"
            et3 = convention == "2023" or (convention == "auto" and 3 in present)
            return labels_to_classes(arr, convention), img, get_task("brats2023" if et3 else None)
        own = label_task(present, case, task)  # its values are checked: whole numbers 0..255, the task's labels
        lut = np.zeros(256, dtype=np.uint8)
        lut[list(own.label_values)] = np.arange(1, own.n_classes)
        return lut[_small_ints(arr)], img, own
    except (TaskError, ValueError) as exc:
        raise BratsInputError(f"{path}: {exc}") from None


#: the label conventions :func:`read_labels` takes by name (``convention``, or in ``task``'s place)
_CONVENTIONS = ("auto", "2021", "2023", "msd")


def _whole_numbers_as_uint8(arr: np.ndarray) -> np.ndarray:
    """A float label map holding only whole numbers 0..255 (some published maps are float32) as uint8, so that its
    values are counted rather than sorted; any other array as it is."""
    if arr.dtype.kind != "f" or arr.size == 0 or not np.isfinite(arr).all() or arr.min() < 0 or arr.max() > 255:
        return arr
    small = arr.astype(np.uint8)
    return small if np.array_equal(small, arr) else arr


def label_values(labels) -> np.ndarray:
    """The distinct values of a label map: for integers 0..255 a comparison per value between the smallest and the
    largest (no sort, nor an 8-byte copy for ``np.bincount``, of ~9 M voxels), else ``np.unique``."""
    labels = np.asarray(labels)
    small = _small_ints(labels)
    if small is None:
        return np.unique(labels)
    lo, hi = int(small.min()), int(small.max())
    if hi - lo > 16:
        return np.flatnonzero(np.bincount(small.ravel()))
    return np.array([v for v in range(lo, hi + 1) if v in (lo, hi) or (small == v).any()])


#: the naming a case layout stands for, until a case says its own (``Case.naming``)
_LAYOUT_NAMING = {"2021": "2021", "2023": "2023", "plain": "plain", "msd": "msd"}


def case_naming(case) -> str:
    """How a case's files are named, as :func:`brats_keras.tasks.detect_task` reads it: the case's ``naming``
    where it has one, else ``"plain"`` for an unprefixed label map (``seg.nii.gz``) and otherwise its layout."""
    naming = getattr(case, "naming", None)
    if naming:
        return naming
    seg = getattr(case, "seg", None)
    if seg is not None:
        m = _NII.match(Path(seg).name)
        if m and m.group("stem").lower() in _PLAIN_SEG:
            return "plain"
    return _LAYOUT_NAMING.get(getattr(case, "layout", None), "plain")


def label_task(present, case=None, task=None):
    """The task whose values a label map with the distinct values ``present`` holds.

    Without ``task``: detected from ``case``'s naming and the values (:func:`brats_keras.tasks.detect_task`).
    With ``task``: where the case's naming is a BraTS or Decathlon one (not plain names), the task it and the
    values say when that has ``task``'s classes (one family: the case's own stored values are read, e.g. ET = 3
    in a 2023-named case read for the 2021 task); else ``task`` itself, checked: the values must be its labels.

    Raises:
        TaskError in one line naming the values and the tasks that fit.
    """
    case_id, naming = (getattr(case, "case_id", ""), case_naming(case)) if case is not None else ("", "plain")
    if task is None:
        return detect_task(present, case_id, naming)
    task = get_task(task)
    if naming != "plain":  # plain names say nothing about the values: the task given decides
        try:
            own = detect_task(present, case_id, naming)
        except TaskError:
            own = None
        if own is not None and own.same_classes(task):
            return own
    return detect_task(present, case_id, naming, given=task)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def temp_path_for(path, suffix: str = ".tmp") -> Path:
    """A new empty hidden file beside ``path`` to write into and then rename over it.

    It gets the permissions a plain ``open(path, "w")`` would give (mkstemp's are owner-only),
    so outputs stay readable by the people the user's umask allows.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix="." + path.name + ".", suffix=suffix, dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())
    return Path(tmp)


#: the checksum of converted outputs: ``"sha256:<hex>"`` (``sha256sum FILE`` prints the same hex)
CHECKSUM = "sha256"


def os_error_reason(exc: OSError) -> str:
    """Why a read or write failed, in lower case: ``no space left on device``, ``read-only file system``."""
    reason = exc.strerror or str(exc) or type(exc).__name__
    return reason[:1].lower() + reason[1:]


def describe_os_error(exc: OSError) -> str:
    """One line ``<file>: <reason>`` for a failed read or write, e.g. ``out/images/c0.npy: no space left on device``."""
    return f"{exc.filename}: {os_error_reason(exc)}" if exc.filename else os_error_reason(exc)


def _name_target(exc: OSError, path: Path) -> OSError:
    """Let an error met while writing ``path`` through a temporary file name ``path`` itself."""
    exc.filename, exc.filename2 = str(path), None
    return exc


class _HashingWriter:
    """The file ``np.save`` writes to: it hashes the bytes, and a failed write keeps its reason.

    Given a real file, ``np.save`` calls ``ndarray.tofile``, whose failure says only
    ``6291456 requested and 2090944 written``; through ``write`` the OSError carries errno and strerror.
    """

    def __init__(self, f):
        self.f, self.hash = f, hashlib.new(CHECKSUM)

    def write(self, data):
        self.hash.update(data)
        return self.f.write(data)


def file_checksum(path) -> str:
    """``"sha256:<hex>"`` of a file's bytes, as :func:`atomic_save_npy` returns it."""
    with open(path, "rb") as f:
        return f"{CHECKSUM}:{hashlib.file_digest(f, CHECKSUM).hexdigest()}"


def atomic_write(path, write, suffix: str = ".tmp"):
    """Write ``path`` through a hidden temporary file beside it and a rename (never half-written).

    ``write(tmp)`` fills the temporary file and may return a value, which is returned. The temporary
    file is removed on any failure, and an OSError names ``path`` (not the temporary file) with its
    reason, e.g. no space left on device.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = temp_path_for(path, suffix=suffix)
    except OSError as exc:
        raise _name_target(exc, path) from None
    try:
        result = write(tmp)
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            _name_target(exc, path)
        raise
    return result


def _held(fd, folder, what: str, hint: str) -> BratsInputError:
    """The one-line refusal for a folder whose lock file ``fd`` another process holds, naming that one's pid."""
    try:
        holder = os.pread(fd, 200, 0).decode("utf-8", "replace").split()
    except OSError:
        holder = []
    pid, other = (holder + ["unknown", what])[:2]
    return BratsInputError(f"{folder}: another {other} (pid {pid}) is writing this folder; {hint}")


def check_folder_free(folder, name: str, what: str, hint: str) -> None:
    """Refuse a folder whose lock :func:`folder_lock` holds in another process, without taking the lock or
    writing anything (a check before the slower checks of a command that will lock the folder later).

    Raises:
        BratsInputError as :func:`folder_lock` does when the folder is busy.
    """
    try:
        import fcntl
    except ImportError:
        return
    try:
        fd = os.open(Path(folder) / name, os.O_RDONLY)
    except OSError:  # no lock file, so no holder (or one that cannot be read: the lock itself decides later)
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            raise _held(fd, folder, what, hint) from None
        fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


@contextlib.contextmanager
def folder_lock(folder, name: str, what: str, hint: str):
    """Hold an exclusive lock on ``folder/name`` (``fcntl.flock``) while the block runs, so that two commands
    never write one folder at once.

    The file holds ``"<pid> <what>"`` of the holder and is removed on leaving. The kernel drops the lock when
    its holder ends, even by SIGKILL: a killed run leaves the file behind but never blocks the next run,
    which takes it over. Where ``fcntl`` does not exist (Windows) nothing is locked.

    Args:
        folder: an existing folder.
        name: the lock file's name, e.g. ``".convert.lock"``.
        what: the holder, named to whoever finds the folder busy (``"convert"``).
        hint: what that one can do, e.g. ``"wait for it to end, or give another --output"``.
    Raises:
        BratsInputError ``<folder>: another <what> (pid <n>) is writing this folder; <hint>`` when another
        process holds the lock, or naming the lock file when it cannot be made.
    """
    try:
        import fcntl
    except ImportError:  # no advisory locks on this system
        yield
        return
    path = Path(folder) / name
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            raise BratsInputError(f"{path}: cannot make the lock file: {os_error_reason(exc)}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # held: say by whom
            error = _held(fd, folder, what, hint)
            os.close(fd)
            raise error from None
        try:  # the holder before us removes the file as it lets go: lock the file that is there now
            current = os.stat(path)
        except FileNotFoundError:
            current = None
        mine = os.fstat(fd)
        if current is not None and (current.st_dev, current.st_ino) == (mine.st_dev, mine.st_ino):
            break
        os.close(fd)
    try:
        with contextlib.suppress(OSError):  # the pid is for the message only: a full disk still locks
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()} {what}\n".encode())
        yield
    finally:
        with contextlib.suppress(OSError):  # removed while still held, so no one locks a stale file
            path.unlink()
        os.close(fd)


def atomic_save_npy(path, array: np.ndarray) -> str:
    """Save an array to ``path`` atomically (:func:`atomic_write`).

    Returns:
        the file's checksum, ``"sha256:<hex>"`` (hashed while writing: no second read).
    """
    def write(tmp):
        with open(tmp, "wb") as f:
            out = _HashingWriter(f)
            np.save(out, array)
        return f"{CHECKSUM}:{out.hash.hexdigest()}"

    return atomic_write(path, write)


def atomic_write_text(path, text: str) -> None:
    """Write text to ``path`` atomically (:func:`atomic_write`)."""
    atomic_write(path, lambda tmp: tmp.write_text(text))


def atomic_copy(src, dst) -> None:
    """Copy ``src`` to ``dst`` atomically (:func:`atomic_write`): ``dst`` is the old file or the whole copy."""
    atomic_write(dst, lambda tmp: shutil.copyfile(src, tmp), suffix=Path(dst).suffix)


def atomic_write_json(path, obj) -> None:
    """Write JSON (indented, sorted keys kept in insertion order) atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, default=_json_default) + "\n")


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


def save_nifti(path, array: np.ndarray, affine, header=None) -> None:
    """Write a NIfTI file atomically (:func:`atomic_write`), keeping the reference header's geometry.

    The data type of the file is the array's (e.g. uint8 for label maps).

    Raises:
        OSError naming ``path`` when it cannot be written (e.g. no space left on device); nothing is left of it.
    """
    import nibabel as nib

    path = Path(path)
    hdr = header.copy() if header is not None else None
    img = nib.Nifti1Image(array, affine, hdr)
    img.set_data_dtype(array.dtype)
    if hdr is not None:
        img.header.set_slope_inter(1, 0)
        img.set_qform(affine, code=int(header["qform_code"]) or 1)
        img.set_sform(affine, code=int(header["sform_code"]) or 1)
    suffix = ".nii.gz" if path.name.endswith(".gz") else ".nii"  # nibabel compresses by the name
    atomic_write(path, lambda tmp: nib.save(img, str(tmp)), suffix=suffix)


def check_output_path(path, folder: bool = False, flag: str | None = None) -> Path:
    """Refuse, before any work is done, an output path that cannot be written: BratsInputError in one line.

    Refused: a file where a folder is needed (``folder=True``), a folder where a file is to be written, a path
    below a file, and a path whose nearest existing folder cannot be written in (permission denied, read-only
    file system). Folders that do not exist yet are fine: they are made when the output is written.
    ``flag`` (e.g. ``"--json"``) starts the message.
    """
    path = Path(path)
    name = f"{flag} {path}" if flag else str(path)
    if folder and path.exists() and not path.is_dir():
        raise BratsInputError(f"{name}: exists and is not a folder")
    if not folder and path.is_dir():
        raise BratsInputError(f"{name}: is a folder, not a file")
    existing = path if folder else path.parent
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise BratsInputError(f"{name}: {existing} is not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        read_only = hasattr(os, "statvfs") and os.statvfs(existing).f_flag & os.ST_RDONLY
        reason = "read-only file system" if read_only else "permission denied"
        raise BratsInputError(f"{name}: cannot write in {existing} ({reason})")
    return path


# ----------------------------------------------------------------------------- the grid's axes
#: the array axis that runs from inferior to superior on the BraTS grid (``BRATS_ORIENTATION``): a volume is
#: ``(D, H, W)`` in the file's voxel order, so one index along this axis is an axial slice (what the 2D models see,
#: :mod:`brats_keras.models.unet2d`)
AXIAL_AXIS = BRATS_ORIENTATION.index("S")
