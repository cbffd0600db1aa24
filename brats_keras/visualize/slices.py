"""Slice views: an MRI slice with the classes over it, a case's modalities, planes, truth beside prediction.

See :mod:`brats_keras.visualize` for the orientation of the slices.
"""
from __future__ import annotations

import math

import numpy as np

from ..labels import parse_modalities
from ..preprocessing import bounding_box, box_slices
from ..tasks import get_task
from .common import (
    _AXIS_LETTERS,
    _CONTOUR_OUTLINE,
    _MODALITY_TITLES,
    PLANE_NAMES,
    _as_image,
    _check_axis,
    _check_classes,
    _check_volume,
    _finish,
    _new_figure,
    _same_shape,
    class_draw_order,
    class_legend,
)

__all__ = ["display_slice", "overlay", "best_slice", "show_case", "show_planes", "compare", "montage"]


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
            vmin=None, vmax=None, contour: bool = True, linewidth: float = 1.2, task=None):
    """Draw an MRI slice in grey with each tumour class as a transparent fill and an outline.

    The grey window is the 1-99 % percentile range of the slice's nonzero voxels unless
    ``vmin``/``vmax`` are given. Each tumour class of ``task`` (default: 1..3) is drawn as its own masked
    layer in the task's colour (:data:`CLASS_COLORS` for the default task; an ``AxesImage`` with gid
    ``"class-<c>"``, its mask true where the
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
        task: whose classes ``class_slice`` holds (their colours and names); None: the default task.
    Returns:
        ``ax``.
    """
    from matplotlib import patheffects
    from matplotlib.colors import ListedColormap

    task = get_task(task)
    colors = task.colors
    image_slice = _check_volume(image_slice, "image_slice", 2)
    if class_slice is not None:
        class_slice = _check_classes(class_slice, "class_slice", 2, task)
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
        for c in range(1, task.n_classes):
            mask = class_slice == c
            if not mask.any():
                continue
            layer = np.ma.masked_array(mask.astype(np.uint8), mask=~mask)
            ax.imshow(layer, cmap=ListedColormap([colors[c]]), vmin=0, vmax=1, alpha=alpha,
                      interpolation="nearest", gid=f"class-{c}", label=task.class_long_names[c])
        if contour:
            outline = [patheffects.withStroke(linewidth=linewidth + 1.2, foreground=_CONTOUR_OUTLINE)]
            for c in class_draw_order(task):  # outer class first, so inner outlines sit on top
                mask = class_slice == c
                if not mask.any() or mask.all():
                    continue
                cs = ax.contour(mask.astype(np.float32), levels=[0.5], colors=[colors[c]],
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
    box = bounding_box(brain2d, margin)
    return (slice(None), slice(None)) if box is None else box_slices(box)


def _plane_box(brain, axis, crop):
    """Crop box of the brain's projection on the plane perpendicular to ``axis``."""
    if not crop:
        return slice(None), slice(None)
    return _crop_box(_orient2d(brain.any(axis=axis), axis))


def _panel_shape(brain, axis, crop):
    """(rows, cols) of a displayed slice perpendicular to ``axis`` after cropping."""
    rows, cols = _plane_box(brain, axis, crop)
    return display_slice(brain, axis, 0)[rows, cols].shape


def _slice_title(axis, index):
    return f"{PLANE_NAMES[axis]} slice {_AXIS_LETTERS[axis]}={index}"


# --------------------------------------------------------------------------- case pictures


def show_case(image, classes=None, modalities=("flair", "t1ce", "t2"), axis: int = 2, index: int | None = None,
              save=None, title: str | None = None, overlay_on: str | int | None = None, crop: bool = True,
              task=None):
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
        task: whose classes ``classes`` holds (colours and legend); None: the default task.
    Returns:
        the matplotlib Figure.
    """
    image, names = _as_image(image, modalities)
    axis = _check_axis(axis)
    if classes is not None:
        classes = _check_classes(classes, task=task)
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
                vmin=vmin, vmax=vmax, task=task)
        axes[-1].set_title(f"labels on {_MODALITY_TITLES.get(names[base], names[base])}")
        class_legend(fig, task=task)
    desc = _slice_title(axis, index)
    fig.suptitle(f"{title}: {desc}" if title else desc)
    return _finish(fig, save)


def show_planes(image_channel, classes, index=None, save=None, title: str | None = None, crop: bool = True,
                task=None):
    """The labels over one modality in axial, coronal and sagittal planes through one point.

    Args:
        image_channel: one modality ``(D, H, W)``.
        classes: class map ``(D, H, W)`` 0..3 (may be None).
        index: voxel ``(x, y, z)`` the three planes pass through; default the tumour's
            centre of mass (the volume's centre without tumour).
        save: PNG path, written atomically.
        title: e.g. the case id.
        crop: zoom every panel on the brain.
        task: whose classes ``classes`` holds (colours and legend); None: the default task.
    Returns:
        the matplotlib Figure.
    """
    image_channel = _check_volume(image_channel, "image_channel")
    if classes is not None:
        classes = _check_classes(classes, task=task)
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
        overlay(ax, display_slice(image_channel, axis, index[axis])[rows, cols], cls, vmin=vmin, vmax=vmax, task=task)
        ax.set_title(_slice_title(axis, index[axis]))
    if classes is not None:
        class_legend(fig, task=task)
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
            title: str | None = None, crop: bool = True, task=None):
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
        task: whose classes the maps hold (colours and legend); None: the default task.
    Returns:
        the matplotlib Figure; its two image axes are titled "ground truth" and "prediction".
    """
    image_channel = _check_volume(image_channel, "image_channel")
    truth = _check_classes(truth, "truth", task=task)
    pred = _check_classes(pred, "pred", task=task)
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
        overlay(ax, img, display_slice(cls, axis, index)[rows, cols], vmin=vmin, vmax=vmax, task=task)
        ax.set_title(name)
    class_legend(fig, task=task)
    desc = _slice_title(axis, index)
    fig.suptitle(f"{title}\n{desc}" if title else desc)
    return _finish(fig, save)


def _extent(mask, axis):
    """First and last slice along ``axis`` holding part of ``mask``; None when it is empty."""
    box = bounding_box(mask)
    return None if box is None else (box[axis][0], box[axis][1] - 1)


def montage(image_channel, classes, n: int = 12, axis: int = 2, save=None, pred=None, title: str | None = None,
            ncols: int | None = None, crop: bool = True, task=None):
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
        task: whose classes the maps hold (colours and legend); None: the default task.
    Returns:
        the matplotlib Figure.
    """
    image_channel = _check_volume(image_channel, "image_channel")
    classes = _check_classes(classes, task=task)
    _same_shape(image_channel, classes, "image_channel", "classes")
    if pred is not None:
        pred = _check_classes(pred, "pred", task=task)
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
            overlay(ax, img, display_slice(cls, axis, int(idx))[rows, cols], vmin=vmin, vmax=vmax, linewidth=0.8,
                    task=task)
            ax.set_title(f"{_AXIS_LETTERS[axis]}={idx}", fontsize=8, pad=2)
            for spine in ax.spines.values():
                spine.set_visible(False)
            if col == 0 and name:
                ax.set_ylabel(name, fontsize=9)
    class_legend(fig, task=task)
    desc = f"{PLANE_NAMES[axis]} slices through the tumour"
    fig.suptitle(f"{title}: {desc}" if title else desc)
    return _finish(fig, save)

