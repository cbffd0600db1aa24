"""Pictures of cases, labels, predictions and training runs.

Arrays are channels-last in the file's own voxel order: a volume ``(D, H, W)``, an
image ``(D, H, W, C)``, a class map ``(D, H, W)`` with 0 background, 1 NCR, 2 ED,
3 ET (see :mod:`brats_keras.labels`).

Orientation. BraTS files store voxels in LPS order: the first axis runs from the
patient's right to left, the second from anterior to posterior, the third from
inferior to superior (``nibabel.aff2axcodes`` gives ``('L', 'P', 'S')`` for every
BraTS 2018-2023 case). :func:`display_slice` turns a slice into the usual radiological
view: axial slices with the face up and the patient's right on the image's left,
coronal slices with the top of the head up and the patient's right on the left,
sagittal slices with the top of the head up and the face on the left. Note that
``np.rot90(vol[:, :, k])`` shows BraTS axial slices upside down (cerebellum at the
top); the axial view here is the transpose ``vol[:, :, k].T``.

Every function that makes a figure returns the matplotlib ``Figure`` and, given
``save=PATH``, writes a PNG there atomically (a temporary file in the same folder,
then ``os.replace``), so a killed run never leaves half a picture. Figures are made
with pyplot; when there is no display (and no ``MPLBACKEND`` chosen, as Jupyter
does) the Agg backend is selected before pyplot is first imported. With a
non-GUI backend (Agg, Jupyter inline) the figure is released from pyplot at once,
so loops over hundreds of cases do not pile up figures; in Jupyter the returned
figure shows itself when it is the last value of a cell.

numpy and matplotlib only: no deep-learning framework is imported here.
"""
from __future__ import annotations

import contextlib
import csv
import math
import os
import sys
import uuid

import numpy as np

from .labels import CLASS_LONG_NAMES, CLASS_NAMES, REGION_NAMES, parse_modalities

__all__ = [
    "CLASS_COLORS",
    "REGION_COLORS",
    "PLANE_NAMES",
    "class_legend",
    "display_slice",
    "overlay",
    "best_slice",
    "show_case",
    "show_planes",
    "compare",
    "montage",
    "plot_history",
    "bar_chart",
    "intensity_histograms",
    "label_statistics",
]

#: one colour per tumour class (Okabe-Ito palette, readable with colour-blindness):
#: NCR vermillion, ED yellow, ET sky blue
CLASS_COLORS = {1: "#D55E00", 2: "#F0E442", 3: "#56B4E9"}
#: colours of the BraTS regions, matching the class that dominates each region's picture
REGION_COLORS = {"WT": CLASS_COLORS[2], "TC": CLASS_COLORS[1], "ET": CLASS_COLORS[3]}
#: further colours for metrics that are not a region (Okabe-Ito)
_OTHER_COLORS = ("#009E73", "#CC79A7", "#0072B2", "#E69F00", "#999999", "#000000")
#: plane seen when slicing perpendicular to each axis of a BraTS volume
PLANE_NAMES = {0: "sagittal", 1: "coronal", 2: "axial"}
_AXIS_LETTERS = {0: "x", 1: "y", 2: "z"}
_MODALITY_TITLES = {"flair": "FLAIR", "t1": "T1", "t1ce": "T1ce", "t2": "T2"}
#: resolution of saved PNGs
SAVE_DPI = 150
_CONTOUR_OUTLINE = "#000000"


# --------------------------------------------------------------------------- matplotlib plumbing


def _display_available() -> bool:
    if sys.platform.startswith(("win", "darwin")):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def _pyplot():
    """Import pyplot, choosing Agg first when nothing else could draw (no display, no MPLBACKEND)."""
    if "matplotlib.pyplot" not in sys.modules and not os.environ.get("MPLBACKEND") and not _display_available():
        import matplotlib

        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _gui_backend() -> bool:
    import matplotlib

    name = str(matplotlib.get_backend()).lower()
    if "ipympl" in name or name == "widget":
        return True
    try:
        from matplotlib.backends import BackendFilter, backend_registry

        interactive = backend_registry.list_builtin(BackendFilter.INTERACTIVE)
    except ImportError:  # matplotlib < 3.9
        from matplotlib.rcsetup import interactive_bk as interactive
    return name in {b.lower() for b in interactive}


def _new_figure(figsize):
    return _pyplot().figure(figsize=figsize, layout="constrained")


def _atomic_savefig(fig, path, dpi: int = SAVE_DPI) -> None:
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{os.path.basename(path)}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        fig.savefig(tmp, format="png", dpi=dpi, facecolor="white")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


def _finish(fig, save):
    """Save (atomically) when asked, release the figure from pyplot unless a GUI shows it, return it."""
    if save is not None:
        _atomic_savefig(fig, save)
    if not _gui_backend():
        _pyplot().close(fig)
    return fig


def class_legend(target, loc="outside lower center", **kwargs):
    """Add a legend naming the three tumour classes in their colours to a Figure or an Axes.

    Returns the matplotlib ``Legend``. ``loc`` defaults to below the panels of a figure
    (``"lower right"`` is used for an Axes).
    """
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    handles = [
        Patch(facecolor=CLASS_COLORS[c], edgecolor=_CONTOUR_OUTLINE, label=f"{CLASS_LONG_NAMES[c]} ({CLASS_NAMES[c]})")
        for c in (1, 2, 3)
    ]
    if not isinstance(target, Figure) and loc.startswith("outside"):
        loc = "lower right"
    kwargs.setdefault("ncols", 3 if isinstance(target, Figure) else 1)
    kwargs.setdefault("frameon", False if isinstance(target, Figure) else True)
    return target.legend(handles=handles, loc=loc, **kwargs)


# --------------------------------------------------------------------------- slices


def _check_axis(axis, ndim=3) -> int:
    if not isinstance(axis, (int, np.integer)) or not -ndim <= axis < ndim:
        raise ValueError(f"axis must be 0, 1 or 2 (sagittal, coronal, axial), got {axis!r}")
    return int(axis) % ndim


def _check_volume(arr, name, ndim=3):
    arr = np.asarray(arr)
    if arr.ndim != ndim:
        want = {3: "(D, H, W)", 4: "(D, H, W, C)", 2: "(rows, cols)"}[ndim]
        raise ValueError(f"{name} must be a {ndim}-D array {want}, got shape {arr.shape}")
    return arr


def _check_classes(classes, name="classes", ndim=3):
    classes = _check_volume(classes, name, ndim)
    if classes.dtype == bool:
        return classes.astype(np.uint8)
    if classes.size and (classes.min() < 0 or classes.max() > 3):
        bad = sorted(int(v) for v in np.unique(classes) if not 0 <= v <= 3)
        raise ValueError(
            f"{name} holds values {bad[:10]} outside the classes 0..3; "
            "convert BraTS labels with brats_keras.labels.labels_to_classes first"
        )
    return classes


def _same_shape(a, b, name_a, name_b):
    if a.shape[:3] != b.shape[:3]:
        raise ValueError(f"{name_a} {a.shape} and {name_b} {b.shape} must cover the same voxels")


def _orient2d(slice2d, axis: int):
    """Orient a slice taken perpendicular to ``axis`` (extra trailing axes are carried along)."""
    if axis == 2:  # (x, y): rows anterior->posterior, columns patient right->left
        return np.swapaxes(slice2d, 0, 1)
    return np.rot90(slice2d, axes=(0, 1))  # (x, z) or (y, z): superior up


def display_slice(volume, axis: int = 2, index: int | None = None):
    """The slice ``index`` of a volume ``(D, H, W)`` or image ``(D, H, W, C)`` perpendicular to ``axis``,
    oriented for display (see the module docstring): 2-D ``(rows, cols)`` or ``(rows, cols, C)``.

    ``axis`` 2 gives axial, 1 coronal and 0 sagittal slices; ``index`` defaults to the middle slice.
    """
    volume = np.asarray(volume)
    if volume.ndim not in (3, 4):
        raise ValueError(f"volume must be (D, H, W) or (D, H, W, C), got shape {volume.shape}")
    axis = _check_axis(axis)
    n = volume.shape[axis]
    index = n // 2 if index is None else int(index)
    if not 0 <= index < n:
        raise ValueError(f"slice index {index} is outside 0..{n - 1} along axis {axis}")
    return _orient2d(np.take(volume, index, axis=axis), axis)


def _window(values):
    """Grey window: the 1st and 99th percentiles of the nonzero finite voxels."""
    values = np.asarray(values)
    v = values[(values != 0) & np.isfinite(values)] if values.size else values
    if v.size == 0:
        return 0.0, 1.0
    lo, hi = (float(x) for x in np.percentile(v, [1, 99]))
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    return lo, hi


def overlay(ax, image_slice, class_slice=None, alpha: float = 0.45, *, axis: int | None = None,
            vmin=None, vmax=None, contour: bool = True, linewidth: float = 1.2):
    """Draw an MRI slice in grey with each tumour class as a transparent fill and an outline.

    The grey window is the 1-99 % percentile range of the slice's nonzero voxels unless
    ``vmin``/``vmax`` are given. Each class 1..3 is drawn as its own masked layer in
    :data:`CLASS_COLORS` (an ``AxesImage`` with gid ``"class-<c>"``, its mask true where the
    class is absent) and outlined with a contour of the same colour edged in black
    (gid ``"contour-<c>"``), so edema around the core and the necrotic and enhancing parts
    inside it all stay visible.

    Args:
        ax: a matplotlib Axes.
        image_slice: 2-D ``(rows, cols)`` intensities.
        class_slice: 2-D class map 0..3 of the same shape, or None for the image alone.
        alpha: opacity of the class fills (the outlines are opaque).
        axis: None when the slices are already oriented for display (row 0 at the top);
            0, 1 or 2 when they were cut from a volume perpendicular to that axis
            (``vol[:, :, k]`` is ``axis=2``) and should be oriented by :func:`display_slice`.
        vmin, vmax: grey window.
        contour: draw the outlines.
        linewidth: outline width in points.
    Returns:
        ``ax``.
    """
    from matplotlib import patheffects
    from matplotlib.colors import ListedColormap

    image_slice = _check_volume(image_slice, "image_slice", 2)
    if class_slice is not None:
        class_slice = _check_classes(class_slice, "class_slice", 2)
        if class_slice.shape != image_slice.shape:
            raise ValueError(f"image_slice {image_slice.shape} and class_slice {class_slice.shape} differ in shape")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    if axis is not None:
        axis = _check_axis(axis)
        image_slice = _orient2d(image_slice, axis)
        class_slice = None if class_slice is None else _orient2d(class_slice, axis)
    if vmin is None or vmax is None:
        lo, hi = _window(image_slice)
        vmin = lo if vmin is None else vmin
        vmax = hi if vmax is None else vmax

    ax.imshow(image_slice, cmap="gray", vmin=vmin, vmax=vmax, interpolation="antialiased", gid="image")
    ax.set_facecolor("black")
    if class_slice is not None:
        for c in (1, 2, 3):
            mask = class_slice == c
            if not mask.any():
                continue
            layer = np.ma.masked_array(mask.astype(np.uint8), mask=~mask)
            ax.imshow(layer, cmap=ListedColormap([CLASS_COLORS[c]]), vmin=0, vmax=1, alpha=alpha,
                      interpolation="nearest", gid=f"class-{c}", label=CLASS_LONG_NAMES[c])
        if contour:
            outline = [patheffects.withStroke(linewidth=linewidth + 1.2, foreground=_CONTOUR_OUTLINE)]
            for c in (2, 1, 3):  # outer class first, so inner outlines sit on top
                mask = class_slice == c
                if not mask.any() or mask.all():
                    continue
                cs = ax.contour(mask.astype(np.float32), levels=[0.5], colors=[CLASS_COLORS[c]],
                                linewidths=linewidth)
                cs.set_gid(f"contour-{c}")
                cs.set_path_effects(outline)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_xlim(-0.5, image_slice.shape[1] - 0.5)
    ax.set_ylim(image_slice.shape[0] - 0.5, -0.5)
    return ax


def best_slice(classes, axis: int = 2) -> int:
    """Index of the slice perpendicular to ``axis`` holding the most tumour voxels (class > 0).

    Ties go to the lowest index; without any tumour the middle slice is returned.
    ``classes`` is a class map ``(D, H, W)`` (or any boolean/integer volume).
    """
    classes = _check_volume(classes, "classes")
    axis = _check_axis(axis)
    other = tuple(a for a in range(3) if a != axis)
    counts = (classes > 0).sum(axis=other)
    if counts.max(initial=0) == 0:
        return classes.shape[axis] // 2
    return int(np.argmax(counts))


def _centre_of_mass(mask) -> tuple[int, int, int]:
    pts = np.argwhere(mask)
    if len(pts) == 0:
        return tuple(s // 2 for s in mask.shape)
    return tuple(int(round(v)) for v in pts.mean(axis=0))


def _crop_box(brain2d, margin: int = 4):
    """Row and column slices holding the nonzero part of an oriented 2-D mask, plus a margin."""
    rows = np.flatnonzero(brain2d.any(axis=1))
    cols = np.flatnonzero(brain2d.any(axis=0))
    if rows.size == 0:
        return slice(None), slice(None)
    r0, r1 = max(rows[0] - margin, 0), min(rows[-1] + margin + 1, brain2d.shape[0])
    c0, c1 = max(cols[0] - margin, 0), min(cols[-1] + margin + 1, brain2d.shape[1])
    return slice(r0, r1), slice(c0, c1)


def _plane_box(brain, axis, crop):
    """Crop box of the brain's projection on the plane perpendicular to ``axis``."""
    if not crop:
        return slice(None), slice(None)
    return _crop_box(_orient2d(brain.any(axis=axis), axis))


def _panel_shape(brain, axis, crop):
    """(rows, cols) of a displayed slice perpendicular to ``axis`` after cropping."""
    rows, cols = _plane_box(brain, axis, crop)
    return display_slice(brain, axis, 0)[rows, cols].shape


def _as_image(image, modalities):
    image = np.asarray(image)
    if image.ndim == 3:
        image = image[..., None]
    image = _check_volume(image, "image", 4)
    names = parse_modalities(modalities)
    if len(names) != image.shape[-1]:
        raise ValueError(
            f"image has {image.shape[-1]} channels but {len(names)} modalities were named ({', '.join(names)})"
        )
    return image, names


def _slice_title(axis, index):
    return f"{PLANE_NAMES[axis]} slice {_AXIS_LETTERS[axis]}={index}"


# --------------------------------------------------------------------------- case pictures


def show_case(image, classes=None, modalities=("flair", "t1ce", "t2"), axis: int = 2, index: int | None = None,
              save=None, title: str | None = None, overlay_on: str | int | None = None, crop: bool = True):
    """One slice of every modality side by side in grey, and a last panel with the labels overlaid.

    Args:
        image: ``(D, H, W, C)`` with the channels named by ``modalities`` in order
            (a single volume ``(D, H, W)`` with one modality also works).
        classes: class map ``(D, H, W)`` 0..3, or None for the modalities alone.
        modalities: names of the image's channels (either BraTS vocabulary).
        axis: 2 axial, 1 coronal, 0 sagittal.
        index: slice index; default the slice with the most tumour (the middle one without labels).
        save: PNG path, written atomically.
        title: e.g. the case id, put before the slice description.
        overlay_on: modality name or channel index under the labels; default FLAIR when
            present, else the first channel.
        crop: zoom every panel on the brain (the nonzero voxels of the image).
    Returns:
        the matplotlib Figure.
    """
    image, names = _as_image(image, modalities)
    axis = _check_axis(axis)
    if classes is not None:
        classes = _check_classes(classes)
        _same_shape(image, classes, "image", "classes")
    if index is None:
        index = best_slice(classes, axis) if classes is not None else image.shape[axis] // 2
    if overlay_on is None:
        base = names.index("flair") if "flair" in names else 0
    elif isinstance(overlay_on, (int, np.integer)):
        base = int(overlay_on)
        if not 0 <= base < len(names):
            raise ValueError(f"overlay_on={overlay_on} is not a channel of an image with {len(names)} channels")
    else:
        wanted = parse_modalities([overlay_on])[0]
        if wanted not in names:
            raise ValueError(f"overlay_on={overlay_on!r} is not one of the image's modalities {names}")
        base = names.index(wanted)

    rows, cols = _plane_box((image != 0).any(axis=-1), axis, crop)
    n = len(names) + (classes is not None)
    fig = _new_figure((3.0 * n, 3.6))
    axes = np.atleast_1d(fig.subplots(1, n))
    for c, name in enumerate(names):
        ch = image[..., c]
        vmin, vmax = _window(ch)
        overlay(axes[c], display_slice(ch, axis, index)[rows, cols], None, vmin=vmin, vmax=vmax)
        axes[c].set_title(_MODALITY_TITLES.get(name, name))
    if classes is not None:
        ch = image[..., base]
        vmin, vmax = _window(ch)
        overlay(axes[-1], display_slice(ch, axis, index)[rows, cols], display_slice(classes, axis, index)[rows, cols],
                vmin=vmin, vmax=vmax)
        axes[-1].set_title(f"labels on {_MODALITY_TITLES.get(names[base], names[base])}")
        class_legend(fig)
    desc = _slice_title(axis, index)
    fig.suptitle(f"{title}: {desc}" if title else desc)
    return _finish(fig, save)


def show_planes(image_channel, classes, index=None, save=None, title: str | None = None, crop: bool = True):
    """The labels over one modality in axial, coronal and sagittal planes through one point.

    Args:
        image_channel: one modality ``(D, H, W)``.
        classes: class map ``(D, H, W)`` 0..3 (may be None).
        index: voxel ``(x, y, z)`` the three planes pass through; default the tumour's
            centre of mass (the volume's centre without tumour).
        save: PNG path, written atomically.
        title: e.g. the case id.
        crop: zoom every panel on the brain.
    Returns:
        the matplotlib Figure.
    """
    image_channel = _check_volume(image_channel, "image_channel")
    if classes is not None:
        classes = _check_classes(classes)
        _same_shape(image_channel, classes, "image_channel", "classes")
    if index is None:
        index = _centre_of_mass(classes > 0) if classes is not None else tuple(s // 2 for s in image_channel.shape)
    index = tuple(int(i) for i in np.ravel(index))
    if len(index) != 3 or not all(0 <= i < s for i, s in zip(index, image_channel.shape)):
        raise ValueError(f"index must be a voxel (x, y, z) inside {image_channel.shape}, got {index}")
    vmin, vmax = _window(image_channel)
    brain = image_channel != 0
    fig = _new_figure((10.5, 4.0))
    axes = fig.subplots(1, 3, width_ratios=_plane_widths(image_channel.shape, brain, crop))
    for ax, axis in zip(axes, (2, 1, 0)):
        rows, cols = _plane_box(brain, axis, crop)
        cls = None if classes is None else display_slice(classes, axis, index[axis])[rows, cols]
        overlay(ax, display_slice(image_channel, axis, index[axis])[rows, cols], cls, vmin=vmin, vmax=vmax)
        ax.set_title(_slice_title(axis, index[axis]))
    if classes is not None:
        class_legend(fig)
    desc = f"planes through voxel (x, y, z) = {index}"
    fig.suptitle(f"{title}: {desc}" if title else desc)
    return _finish(fig, save)


def _plane_widths(shape, brain, crop):
    """Width/height of each of the axial, coronal and sagittal panels, for ``width_ratios``."""
    widths = []
    for axis in (2, 1, 0):
        h, w = _panel_shape(brain, axis, crop)
        widths.append(w / max(h, 1))
    return widths


def compare(image_channel, truth, pred, index: int | None = None, axis: int = 2, save=None,
            title: str | None = None, crop: bool = True):
    """The ground truth beside a prediction on the same slice of one modality, with the legend.

    Args:
        image_channel: one modality ``(D, H, W)``.
        truth, pred: class maps ``(D, H, W)`` 0..3.
        index: slice index; default the slice with the most tumour in ``truth``
            (in ``pred`` when ``truth`` is empty).
        axis: 2 axial, 1 coronal, 0 sagittal.
        save: PNG path, written atomically.
        title: e.g. the case id and its Dice scores.
        crop: zoom both panels on the brain.
    Returns:
        the matplotlib Figure; its two image axes are titled "ground truth" and "prediction".
    """
    image_channel = _check_volume(image_channel, "image_channel")
    truth = _check_classes(truth, "truth")
    pred = _check_classes(pred, "pred")
    _same_shape(image_channel, truth, "image_channel", "truth")
    _same_shape(image_channel, pred, "image_channel", "pred")
    axis = _check_axis(axis)
    if index is None:
        index = best_slice(truth if truth.any() else pred, axis)
    vmin, vmax = _window(image_channel)
    rows, cols = _plane_box(image_channel != 0, axis, crop)
    img = display_slice(image_channel, axis, index)[rows, cols]
    fig = _new_figure((8.0, 4.6))
    axes = fig.subplots(1, 2)
    for ax, cls, name in zip(axes, (truth, pred), ("ground truth", "prediction")):
        overlay(ax, img, display_slice(cls, axis, index)[rows, cols], vmin=vmin, vmax=vmax)
        ax.set_title(name)
    class_legend(fig)
    desc = _slice_title(axis, index)
    fig.suptitle(f"{title}\n{desc}" if title else desc)
    return _finish(fig, save)


def _extent(mask, axis):
    other = tuple(a for a in range(3) if a != axis)
    idx = np.flatnonzero(mask.any(axis=other))
    return (int(idx[0]), int(idx[-1])) if idx.size else None


def montage(image_channel, classes, n: int = 12, axis: int = 2, save=None, pred=None, title: str | None = None,
            ncols: int | None = None, crop: bool = True):
    """Evenly spaced slices through the tumour's extent, with the labels overlaid.

    With ``pred`` the slices come in pairs of rows: the ground truth above the
    prediction on the same slices, each row labelled on the left.

    Args:
        image_channel: one modality ``(D, H, W)``.
        classes: class map ``(D, H, W)`` 0..3 (the ground truth when ``pred`` is given).
        n: number of slices (fewer when the tumour spans fewer slices).
        axis: 2 axial, 1 coronal, 0 sagittal.
        save: PNG path, written atomically.
        pred: a predicted class map ``(D, H, W)``, optional.
        title: e.g. the case id.
        ncols: panels per row; default 4 (6 with ``pred``), never more than the slices.
        crop: zoom every panel on the brain.
    Returns:
        the matplotlib Figure.
    """
    image_channel = _check_volume(image_channel, "image_channel")
    classes = _check_classes(classes)
    _same_shape(image_channel, classes, "image_channel", "classes")
    if pred is not None:
        pred = _check_classes(pred, "pred")
        _same_shape(image_channel, pred, "image_channel", "pred")
    axis = _check_axis(axis)
    if int(n) < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    tumour = classes > 0 if pred is None else (classes > 0) | (pred > 0)
    span = _extent(tumour, axis) or _extent(image_channel != 0, axis) or (0, image_channel.shape[axis] - 1)
    indices = np.unique(np.round(np.linspace(span[0], span[1], int(n))).astype(int))

    maps = [(None, classes)] if pred is None else [("ground truth", classes), ("prediction", pred)]
    ncols = int(ncols) if ncols else (6 if pred is not None else 4)
    ncols = max(1, min(ncols, len(indices)))
    nblocks = math.ceil(len(indices) / ncols)
    nrows = nblocks * len(maps)
    vmin, vmax = _window(image_channel)
    rows, cols = _plane_box(image_channel != 0, axis, crop)
    h, w = _panel_shape(image_channel != 0, axis, crop)
    panel = 2.0
    fig = _new_figure((panel * ncols * min(w / h, 1.6) + 0.6, panel * nrows + 0.9))
    axes = np.asarray(fig.subplots(nrows, ncols, squeeze=False))
    for ax in axes.flat:
        ax.set_axis_off()
    for k, idx in enumerate(indices):
        block, col = divmod(k, ncols)
        img = display_slice(image_channel, axis, int(idx))[rows, cols]
        for m, (name, cls) in enumerate(maps):
            ax = axes[block * len(maps) + m, col]
            ax.set_axis_on()
            overlay(ax, img, display_slice(cls, axis, int(idx))[rows, cols], vmin=vmin, vmax=vmax, linewidth=0.8)
            ax.set_title(f"{_AXIS_LETTERS[axis]}={idx}", fontsize=8, pad=2)
            for spine in ax.spines.values():
                spine.set_visible(False)
            if col == 0 and name:
                ax.set_ylabel(name, fontsize=9)
    class_legend(fig)
    desc = f"{PLANE_NAMES[axis]} slices through the tumour"
    fig.suptitle(f"{title}: {desc}" if title else desc)
    return _finish(fig, save)


# --------------------------------------------------------------------------- training and results


def _read_history(source) -> dict[str, np.ndarray]:
    if hasattr(source, "history") and isinstance(source.history, dict):  # keras History
        source = source.history
    if isinstance(source, dict):
        columns = {str(k): list(np.ravel(np.asarray(v, dtype=object))) for k, v in source.items()}
    else:
        with open(os.fspath(source), newline="") as f:
            reader = csv.DictReader(f)
            columns = {name.strip(): [] for name in (reader.fieldnames or []) if name is not None}
            for row in reader:
                for name, value in row.items():
                    if name is not None and name.strip() in columns:
                        columns[name.strip()].append(value)
    out = {}
    for name, values in columns.items():
        arr = np.full(len(values), np.nan)
        for i, v in enumerate(values):
            try:
                arr[i] = float(v)
            except (TypeError, ValueError):
                pass
        out[name] = arr
    return out


def _is_loss(name):
    return name.lower().endswith("loss")


def _is_dice(name):
    low = name.lower()
    return not _is_loss(name) and ("dice" in low or low.startswith(("case_", "val_case_")))


def plot_history(csv_path_or_dict, save=None, title: str | None = None):
    """Loss and Dice curves of a training run, from a Keras ``CSVLogger`` file or a dict of columns.

    Panel 1 shows every column ending in ``loss`` (``loss``, ``val_loss``, ...) and, when
    an ``lr`` (or ``learning_rate``) column exists, the learning rate on a log-scaled
    twin axis. Panel 2 shows every Dice-like column: names containing ``dice``
    (``dice_WT``, ``val_mean_dice``, ...) and names starting with ``case_`` or
    ``val_case_`` (drawn thin). Training curves are solid, ``val_`` curves dashed in the
    same colour. Missing columns, empty cells and a file with no rows leave a note in the
    panel instead of failing.

    Args:
        csv_path_or_dict: path of the CSV, a dict ``{column: values}``, or a Keras ``History``.
        save: PNG path, written atomically.
        title: e.g. the run name.
    Returns:
        the matplotlib Figure.
    """
    data = _read_history(csv_path_or_dict)
    length = max((len(v) for v in data.values()), default=0)
    x = data.get("epoch")
    if x is None or not np.isfinite(x).any():
        x = np.arange(length, dtype=float)
    loss_cols = [c for c in data if _is_loss(c)]
    dice_cols = [c for c in data if _is_dice(c)]
    lr_col = next((c for c in ("lr", "learning_rate") if c in data and np.isfinite(data[c]).any()), None)

    fig = _new_figure((11.0, 4.2))
    ax_loss, ax_dice = fig.subplots(1, 2)
    colors = {}

    def color_of(name):
        base = name[4:] if name.startswith("val_") else name
        if base not in colors:
            colors[base] = f"C{len(colors) % 10}"
        return colors[base]

    def draw(ax, names, thin=()):
        for name in names:
            y = data[name]
            ok = np.isfinite(y) & np.isfinite(x[: len(y)])
            if not ok.any():
                continue
            kw = dict(lw=0.8, alpha=0.6) if name in thin else dict(lw=1.6)
            ax.plot(x[: len(y)][ok], y[ok], ls="--" if name.startswith("val_") else "-",
                    color=color_of(name), label=name, marker="." if ok.sum() < 3 else None, **kw)
        if not ax.lines:
            ax.text(0.5, 0.5, "no data" if names else "no matching column", ha="center", va="center",
                    transform=ax.transAxes, color="0.4")

    draw(ax_loss, loss_cols)
    ax_loss.set_title("losses")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("loss")
    handles, labels = ax_loss.get_legend_handles_labels()
    if lr_col is not None:
        lr = data[lr_col]
        ok = np.isfinite(lr)
        ax_lr = ax_loss.twinx()
        (line,) = ax_lr.plot(x[: len(lr)][ok], lr[ok], color="0.45", ls=":", lw=1.4, label=lr_col)
        if (lr[ok] > 0).all():
            ax_lr.set_yscale("log")
        ax_lr.set_ylabel("learning rate", color="0.35")
        handles.append(line)
        labels.append(lr_col)
        legend_ax = ax_lr  # the twin is drawn on top: a legend there is not crossed by the lr curve
    else:
        legend_ax = ax_loss
    if handles:
        legend_ax.legend(handles, labels, fontsize=8, loc="upper right", framealpha=0.9)

    cases = {c for c in dice_cols if c.lower().startswith(("case_", "val_case_"))}
    draw(ax_dice, dice_cols, thin=cases)
    ax_dice.set_title("Dice")
    ax_dice.set_xlabel("epoch")
    ax_dice.set_ylabel("Dice")
    finite = np.concatenate([data[c][np.isfinite(data[c])] for c in dice_cols]) if dice_cols else np.array([])
    if finite.size and finite.min() >= 0 and finite.max() <= 1:
        ax_dice.set_ylim(0, 1.02)
    if ax_dice.lines:
        handles, labels = ax_dice.get_legend_handles_labels()
        if len(handles) > 14:  # many per-case curves: name only the summary ones
            from matplotlib.lines import Line2D

            keep = [i for i, lab in enumerate(labels) if lab not in cases]
            handles, labels = [handles[i] for i in keep], [labels[i] for i in keep]
            handles.append(Line2D([], [], color="0.5", lw=0.8, alpha=0.6))
            labels.append(f"{len(cases)} per-case curves")
        if handles:
            ax_dice.legend(handles, labels, fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    from matplotlib.ticker import MaxNLocator

    for ax in (ax_loss, ax_dice):
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole: no 0.25 ticks on short runs
    if title:
        fig.suptitle(title)
    return _finish(fig, save)


def _metric_color(metric, k):
    return REGION_COLORS.get(metric, _OTHER_COLORS[k % len(_OTHER_COLORS)])


def bar_chart(results: dict, metrics=REGION_NAMES, title: str | None = None, save=None,
              ylabel: str = "Dice", fmt: str = "{:.3f}"):
    """Grouped bars comparing runs: one group per run, one bar per metric, the value above each bar.

    Args:
        results: ``{run name: {metric: value}}``, e.g. ``{"flair+t1ce+t2": {"WT": 0.90, ...}}``.
            A metric missing from a run is drawn as an empty slot marked "n/a".
        metrics: the metrics to show, in order (default WT, TC, ET).
        title, ylabel: texts.
        save: PNG path, written atomically.
        fmt: format of the values written above the bars.
    Returns:
        the matplotlib Figure; ``fig.axes[0].containers`` holds one bar container per metric,
        labelled with the metric's name, its bars in the order of ``results``.
    """
    if not isinstance(results, dict) or not results:
        raise ValueError("results must be a non-empty dict {run name: {metric: value}}")
    metrics = (metrics,) if isinstance(metrics, str) else tuple(metrics)
    if not metrics:
        raise ValueError("no metric to show")
    runs = list(results)
    values = np.full((len(runs), len(metrics)), np.nan)
    for r, run in enumerate(runs):
        if not isinstance(results[run], dict):
            raise ValueError(f"results[{run!r}] must be a dict {{metric: value}}, got {type(results[run]).__name__}")
        for m, metric in enumerate(metrics):
            v = results[run].get(metric)
            values[r, m] = np.nan if v is None else float(v)

    nbars = len(runs) * len(metrics)
    fig = _new_figure((max(5.0, 0.42 * nbars + 1.8), 4.2))
    ax = fig.subplots()
    width = 0.8 / len(metrics)
    x = np.arange(len(runs))
    vertical = nbars > 12
    for m, metric in enumerate(metrics):
        pos = x - 0.4 + width * (m + 0.5)
        bars = ax.bar(pos, values[:, m], width, label=metric, color=_metric_color(metric, m), edgecolor="0.25",
                      linewidth=0.6)
        for rect, v in zip(bars, values[:, m]):
            ax.annotate("n/a" if not np.isfinite(v) else fmt.format(v),
                        (rect.get_x() + rect.get_width() / 2, v if np.isfinite(v) else 0),
                        xytext=(0, 2), textcoords="offset points", ha="center", va="bottom",
                        fontsize=7, rotation=90 if vertical else 0)
    long_names = max(len(str(r)) for r in runs) > 8
    ax.set_xticks(x, [str(r) for r in runs], rotation=30 if long_names else 0, ha="right" if long_names else "center")
    ax.set_xlim(-0.5, len(runs) - 0.5)
    ax.set_ylabel(ylabel)
    finite = values[np.isfinite(values)]
    top = finite.max() if finite.size else 1.0
    bottom = min(0.0, finite.min()) if finite.size else 0.0
    ax.set_ylim(bottom, top * (1.22 if vertical else 1.12) if top > 0 else 1.0)
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    fig.legend(fontsize=8, loc="outside right upper", frameon=False)
    if title:
        ax.set_title(title)
    return _finish(fig, save)


def intensity_histograms(image, modalities, mask=None, save=None, bins: int = 100, title: str | None = None):
    """Histogram of the brain (nonzero) voxels of each modality, and of each tumour class.

    Histograms are densities, so the small tumour classes compare with the whole brain;
    the range spans the 0.5-99.5 % percentiles of each modality's brain voxels and of
    each tumour class.

    Args:
        image: ``(D, H, W, C)`` with the channels named by ``modalities`` (or one volume ``(D, H, W)``).
        modalities: names of the channels.
        mask: class map ``(D, H, W)`` 0..3: adds one outline histogram per class present.
        save: PNG path, written atomically.
        bins: number of bins.
        title: e.g. the case id.
    Returns:
        the matplotlib Figure, one panel per modality.
    """
    image, names = _as_image(image, modalities)
    if mask is not None:
        mask = _check_classes(mask, "mask")
        _same_shape(image, mask, "image", "mask")
    fig = _new_figure((3.4 * len(names) + 0.4, 3.4))
    axes = np.atleast_1d(fig.subplots(1, len(names)))
    for c, (ax, name) in enumerate(zip(axes, names)):
        ch = image[..., c]
        brain = (ch != 0) & np.isfinite(ch)
        v = ch[brain].astype(np.float64)
        if v.size == 0:
            ax.text(0.5, 0.5, "no nonzero voxels", ha="center", va="center", transform=ax.transAxes, color="0.4")
        else:
            lo, hi = np.percentile(v, [0.5, 99.5])
            if mask is not None:  # tumour voxels are often brighter than 99.5 % of the brain
                for k in (1, 2, 3):
                    sel = mask == k
                    if sel.any():
                        klo, khi = np.percentile(ch[sel].astype(np.float64), [0.5, 99.5])
                        lo, hi = min(lo, klo), max(hi, khi)
            if hi <= lo:
                lo, hi = lo - 0.5, hi + 0.5
            ax.hist(v, bins=bins, range=(lo, hi), density=True, histtype="stepfilled", color="0.7",
                    edgecolor="0.45", label="brain")
            if mask is not None:
                for k in (1, 2, 3):
                    sel = mask == k
                    if sel.any():
                        ax.hist(ch[sel].astype(np.float64), bins=bins, range=(lo, hi), density=True, histtype="step",
                                lw=1.6, color=CLASS_COLORS[k], label=CLASS_LONG_NAMES[k],
                                path_effects=_edge_effect())
        ax.set_title(_MODALITY_TITLES.get(name, name))
        ax.set_xlabel("intensity")
        ax.set_yticks([])
    axes[0].set_ylabel("density")
    handles, labels = axes[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside lower center", ncols=len(handles), frameon=False)
    if title:
        fig.suptitle(title)
    return _finish(fig, save)


def _edge_effect():
    from matplotlib import patheffects

    return [patheffects.Stroke(linewidth=2.6, foreground="0.2"), patheffects.Normal()]


_CLASS_KEYS = {}
for _c in (1, 2, 3):
    for _key in (_c, str(_c), CLASS_NAMES[_c].lower(), CLASS_LONG_NAMES[_c].lower()):
        _CLASS_KEYS[_key] = _c


def _class_of(key):
    if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
        key = int(key)
    elif isinstance(key, str):
        key = key.strip().lower()
    if key in (0, "0", "background"):
        return 0
    if key not in _CLASS_KEYS:
        raise ValueError(
            f"unknown class {key!r}: use 1/2/3, NCR/ED/ET or {'/'.join(CLASS_LONG_NAMES[1:])} "
            "(classes, not BraTS labels)"
        )
    return _CLASS_KEYS[key]


def label_statistics(counts: dict, save=None, title: str | None = None, log: bool = False):
    """Stacked bars of the NCR, ED and ET voxel counts of each case.

    Args:
        counts: ``{case_id: {class: voxel count}}``; a class is 1/2/3, ``"NCR"``/``"ED"``/``"ET"``
            or the long names; background entries are ignored, missing classes count 0.
        save: PNG path, written atomically.
        title: a title.
        log: log-scaled counts (for cohorts whose tumours differ by orders of magnitude).
    Returns:
        the matplotlib Figure; ``fig.axes[0].containers`` holds the NCR, ED and ET bars.
    """
    if not isinstance(counts, dict) or not counts:
        raise ValueError("counts must be a non-empty dict {case_id: {class: voxel count}}")
    cases = list(counts)
    table = np.zeros((len(cases), 4))
    for i, case in enumerate(cases):
        if not isinstance(counts[case], dict):
            raise ValueError(f"counts[{case!r}] must be a dict {{class: voxel count}}")
        for key, value in counts[case].items():
            table[i, _class_of(key)] += float(value)
    fig = _new_figure((min(max(5.0, 0.32 * len(cases) + 2.0), 30.0), 4.4))
    ax = fig.subplots()
    bottom = np.zeros(len(cases))
    for c in (1, 2, 3):
        ax.bar(np.arange(len(cases)), table[:, c], 0.75, bottom=bottom, color=CLASS_COLORS[c], edgecolor="0.25",
               linewidth=0.5, label=f"{CLASS_LONG_NAMES[c]} ({CLASS_NAMES[c]})")
        bottom += table[:, c]
    upright = len(cases) > 6 or max(len(str(c)) for c in cases) > 12
    ax.set_xticks(np.arange(len(cases)), [str(c) for c in cases], rotation=90 if upright else 0,
                  fontsize=7 if len(cases) > 20 else 8)
    ax.set_xlim(-0.6, len(cases) - 0.4)
    ax.set_ylabel("voxels")
    if log:
        ax.set_yscale("log")
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    handles, labels = ax.get_legend_handles_labels()
    # listed top to bottom as the bars are stacked
    fig.legend(handles[::-1], labels[::-1], fontsize=8, loc="outside right upper", frameon=False)
    if title:
        ax.set_title(title)
    return _finish(fig, save)
