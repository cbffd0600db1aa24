"""Finding and reading BraTS cases, and writing outputs safely.

Supported layouts (``.nii`` and ``.nii.gz``), found anywhere below a folder:

* BraTS 2018-2021: ``<case>_flair``, ``_t1``, ``_t1ce``, ``_t2``, ``_seg`` (ET label 4)
* BraTS 2023+:     ``<case>-t2f``, ``-t1n``, ``-t1c``, ``-t2w``, ``-seg`` (ET label 3)
* a case folder whose files carry no case prefix: ``t1c.nii.gz``, ``flair.nii.gz``,
  ``seg.nii.gz`` / ``segmentation.nii.gz``; the folder name is the case id.

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

from .labels import (DEFAULT_MODALITIES, MODALITIES, MODALITY_ALIASES, canonical_modality, labels_to_classes,
                     parse_modalities)

_NII = re.compile(r"^(?P<stem>.+?)\.nii(\.gz)?$", re.IGNORECASE)
_RE_2021 = re.compile(r"^(?P<case>.+)_(?P<key>flair|t1ce|t1|t2|seg)$", re.IGNORECASE)
_RE_2023 = re.compile(r"^(?P<case>.+)-(?P<key>t2f|t1n|t1c|t2w|seg)$", re.IGNORECASE)
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
        layout: ``"2021"``, ``"2023"`` or ``"plain"``.
        ambiguous: modality name or ``"seg"`` -> every file found for it, where there is more than one
            (``_flair.nii.gz`` beside ``_FLAIR.nii.gz`` or ``_flair.nii``); reading it raises BratsInputError.
    """

    case_id: str
    folder: Path
    images: dict = field(default_factory=dict)
    seg: Path | None = None
    layout: str = "2021"
    ambiguous: dict = field(default_factory=dict)

    @property
    def label_convention(self) -> str:
        """The label convention files of this case use: ``"2021"`` (ET = 4) or ``"2023"`` (ET = 3)."""
        return "2021" if self.layout == "2021" else "2023"

    def check(self, keys) -> None:
        """Raise BratsInputError naming the files when one of ``keys`` (modalities or ``"seg"``) has two files."""
        for key in keys:
            key = key if key == "seg" else canonical_modality(key)
            if key in self.ambiguous:
                names = " and ".join(p.name for p in self.ambiguous[key])
                raise BratsInputError(f"{self.folder}: case {self.case_id} has two {key} files, {names}: keep one")

    def path(self, modality: str) -> Path:
        """Path of one modality (either vocabulary); BratsInputError if the case lacks it or has two files for it."""
        mod = canonical_modality(modality)
        self.check([mod])
        if mod not in self.images:
            have = ", ".join(sorted(self.images)) or "none"
            raise BratsInputError(f"{self.case_id}: missing modality {mod} in {self.folder} (found: {have})")
        return self.images[mod]


def _classify(folder: Path, filename: str):
    """Return (case_id, key, layout) for a NIfTI file name, or None."""
    m = _NII.match(filename)
    if not m:
        return None
    stem = m.group("stem")
    m21 = _RE_2021.match(stem)
    if m21:
        return m21.group("case"), m21.group("key").lower(), "2021"
    m23 = _RE_2023.match(stem)
    if m23:
        return m23.group("case"), m23.group("key").lower(), "2023"
    low = stem.lower()
    if low in MODALITIES or low in MODALITY_ALIASES:
        layout = "plain" if low in MODALITY_ALIASES else "2021"
        return folder.name, canonical_modality(low), layout
    if low in _PLAIN_SEG:
        return folder.name, "seg", None
    return None


def find_cases(root, require_seg: bool = False) -> list[Case]:
    """Find every BraTS case below ``root`` (``root`` may itself be one case folder).

    Args:
        root: a folder of cases, one case folder, or a flat folder of prefixed files.
        require_seg: keep only cases that have a label map.
    Returns:
        Cases sorted by case id. Two files for one modality or label map of a case (``_flair.nii.gz``
        and ``_FLAIR.nii.gz``, or ``.nii`` beside ``.nii.gz``) are listed in ``Case.ambiguous``:
        reading that modality (``Case.path``, ``load_modalities``) raises BratsInputError naming both.
        Folders are walked with :func:`walk_folders`: symbolic links to folders are followed, each real
        folder is read once and a link that loops back is not followed.
    Raises:
        BratsInputError if ``root`` does not exist.
    """
    root = Path(root)
    if not root.is_dir():
        raise BratsInputError(f"{root}: not a folder")
    found: dict[tuple, Case] = {}
    for folder, filenames in walk_folders(root):
        for name in filenames:
            hit = _classify(folder, name)
            if hit is None:
                continue
            case_id, key, layout = hit
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
                    case.layout = layout
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


def _read_gz(path: Path):
    """A ``.nii.gz`` decompressed in one call (instead of nibabel's streamed reads); ``(array, image)``.

    Single-file NIfTI-1/2 without intensity scaling become a read-only array over the decompressed bytes
    (no copy); scaled data go through nibabel's proxy, anything else through ``nib.load``.
    """
    import nibabel as nib

    raw = gunzip(path.read_bytes())
    if raw[344:348] == b"n+1\0":  # the single-file magic of NIfTI-1 (the header's last 4 bytes)
        img = nib.Nifti1Image.from_bytes(raw)
    elif raw[4:8] == b"n+2\0":  # NIfTI-2 keeps it right after sizeof_hdr
        img = nib.Nifti2Image.from_bytes(raw)
    else:
        img = nib.load(str(path))
        return np.asanyarray(img.dataobj), img
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
    return np.asanyarray(proxy), img


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


def _read_nifti(path):
    """``(array, nibabel image)`` of a 3-D NIfTI file: :func:`load_nifti` without the cast."""
    import nibabel as nib

    path = Path(path)
    try:
        if path.name.endswith(".gz"):
            arr, img = _read_gz(path)
        else:
            img = nib.load(str(path))
            arr = np.asanyarray(img.dataobj)
    except FileNotFoundError:
        raise BratsInputError(f"{path}: file not found") from None
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


#: the BraTS grid every case is read on (until cases are resampled): 1 mm voxels, axes towards L, P and S
#: (``nibabel.aff2axcodes`` of every real case in ../shared/data)
BRATS_VOXEL_MM = 1.0
BRATS_ORIENTATION = ("L", "P", "S")
#: how far a voxel size (mm) may be from 1 mm, and two files on one grid (two modalities, or a prediction and its
#: truth) may differ in their affines (mm, and direction cosines)
VOXEL_TOLERANCE_MM = 0.02
AFFINE_TOLERANCE = 0.01
_RESAMPLE = "(resample it to the BraTS grid first)"


def check_grid(path, affine, header) -> None:
    """Raise BratsInputError unless a file lies on the BraTS grid: 1 mm isotropic voxels (header zooms,
    within ``VOXEL_TOLERANCE_MM``) and the BraTS orientation ``BRATS_ORIENTATION``.

    The networks see voxels, not millimetres: a 3 mm case or a flipped one gives a wrong (often empty)
    segmentation, so it is refused rather than guessed at.
    """
    import nibabel as nib

    zooms = [float(z) for z in header.get_zooms()[:3]]
    if any(abs(z - BRATS_VOXEL_MM) > VOXEL_TOLERANCE_MM for z in zooms):
        size = " x ".join(str(round(z, 3)) for z in zooms)
        raise BratsInputError(f"{path}: voxel size {size} mm, expected {BRATS_VOXEL_MM:g} mm {_RESAMPLE}")
    axes = tuple(nib.aff2axcodes(affine))
    if axes != BRATS_ORIENTATION:
        raise BratsInputError(f"{path}: orientation {''.join(map(str, axes))}, expected "
                              f"{''.join(BRATS_ORIENTATION)} as in BraTS {_RESAMPLE}")


def load_modalities(case: Case, modalities=None, check: bool = True):
    """Read the requested modalities of a case without converting them to float.

    ``check=True`` (the default) refuses NaN / all-zero volumes and files off the BraTS grid
    (:func:`check_grid`: voxel size, orientation) or on another grid than the first modality
    (affines more than ``AFFINE_TOLERANCE`` apart); ``check=False`` reads whatever is there.

    Returns:
        ``(volumes, affine, header)``: a list of 3-D arrays in the order asked for,
        the affine and header of the first modality.
    Raises:
        BratsInputError for a missing modality, unreadable file, NaN / all-zero volume,
        a file off the BraTS grid or modalities whose shapes or affines differ.
    """
    mods = parse_modalities(modalities or DEFAULT_MODALITIES)
    vols, affine, header, first = [], None, None, None
    for mod in mods:
        path = case.path(mod)
        arr, aff, hdr = load_nifti(path)
        if check:
            check_grid(path, aff, hdr)
            check_volume(arr, path)
        if first is None:
            first, affine, header = (path, arr.shape), aff, hdr
        elif arr.shape != first[1]:
            raise BratsInputError(
                f"{path}: shape {arr.shape} differs from {first[0].name} {first[1]}"
            )
        elif check and not np.allclose(aff, affine, rtol=0, atol=AFFINE_TOLERANCE):
            off = float(np.abs(np.asarray(aff) - affine).max())
            raise BratsInputError(f"{path}: affine differs from {first[0].name}'s by up to {off:.3g}: "
                                  f"not on one grid {_RESAMPLE}")
        vols.append(arr)
    return vols, affine, header


def load_classes(path, shape=None, convention: str = "auto", grid: bool = False) -> np.ndarray:
    """Read a BraTS label map and return class indices 0..3 (uint8).

    ``grid=True`` also refuses a map off the BraTS grid (:func:`check_grid`); its translation is not
    compared with the images' (some published BraTS 2017 label maps have their origin at 0).

    Raises:
        BratsInputError naming the file for unreadable data, a shape other than
        ``shape``, a map off the grid, non-integer or unexpected label values
        (:func:`brats_keras.labels.label_problem`).
    """
    classes, img = read_label_map(path, convention, shape=shape)
    if grid:
        check_grid(path, img.affine, img.header)
    return classes


def read_label_map(path, convention: str = "auto", shape=None):
    """``(classes, image)`` of a label map: its class indices 0..3 (uint8) and its nibabel image (the grid:
    shape, affine, zooms). The one reader of label maps: :func:`load_classes` and the scoring use it.

    Raises:
        BratsInputError naming the file for unreadable data, a shape other than ``shape``,
        non-integer or unexpected label values (:func:`brats_keras.labels.label_problem`).
    """
    arr, img = _read_nifti(path)
    if shape is not None and arr.shape != tuple(shape):
        raise BratsInputError(f"{path}: label shape {arr.shape} differs from image shape {tuple(shape)}")
    try:
        return labels_to_classes(arr, convention), img
    except ValueError as exc:
        raise BratsInputError(f"{path}: {exc}") from None


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
