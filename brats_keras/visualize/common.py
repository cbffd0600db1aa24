"""What the slice views and the run charts share: colours, figure plumbing, argument checks.

numpy and matplotlib only (pyplot imported on first use): no deep-learning framework.
"""
from __future__ import annotations

import os
import sys

import numpy as np

from ..io import atomic_write
from ..labels import parse_modalities
from ..tasks import get_task


def class_colors(task=None) -> dict:
    """Class index -> ``#RRGGBB`` of every tumour class of ``task`` (its labels' colours; None: the default
    task's)."""
    return dict(get_task(task).colors)


def region_colors(task=None) -> dict:
    """Region name -> colour for ``task``'s regions: the colour of the class a head region decodes to (the class
    that dominates the region's picture), or of a scored region's one class."""
    task = get_task(task)
    colors = task.colors
    out = {r: colors[c] for r, c in zip(task.region_order, task.decoded_classes)}
    for r in task.region_names:
        classes = task.region_classes(r)
        if r not in out and len(classes) == 1:
            out[r] = colors[classes[0]]
    return out


def class_draw_order(task=None) -> tuple:
    """The tumour classes of ``task`` from the outermost to the innermost (in the fewest head regions first):
    outlines drawn in this order keep the inner ones on top (default task: ED, NCR, ET)."""
    task = get_task(task)
    depth = task.region_membership.sum(axis=1)
    return tuple(sorted(range(1, task.n_classes), key=lambda c: depth[c]))


#: one colour per tumour class of the default task (Okabe-Ito palette, readable with colour-blindness):
#: NCR vermillion, ED yellow, ET sky blue
CLASS_COLORS = class_colors()
#: colours of the default task's regions, matching the class that dominates each region's picture
REGION_COLORS = region_colors()
#: colours of where a prediction and its truth disagree (the HTML report's disagreement overlay, Okabe-Ito):
#: 1 false positive (tumour predicted on background) reddish purple, 2 false negative (tumour missed) bluish
#: green, 3 tumour in both but of another class blue
DISAGREEMENT_COLORS = {1: "#CC79A7", 2: "#009E73", 3: "#0072B2"}
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
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=dpi, facecolor="white"))


def _finish(fig, save):
    """Save (atomically) when asked, release the figure from pyplot unless a GUI shows it, return it."""
    if save is not None:
        _atomic_savefig(fig, save)
    if not _gui_backend():
        _pyplot().close(fig)
    return fig


def class_legend(target, loc="outside lower center", task=None, **kwargs):
    """Add a legend naming the tumour classes of ``task`` (default: the three of the default task) in their
    colours to a Figure or an Axes.

    Returns the matplotlib ``Legend``. ``loc`` defaults to below the panels of a figure
    (``"lower right"`` is used for an Axes).
    """
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    task = get_task(task)
    colors = task.colors
    handles = [
        Patch(facecolor=colors[c], edgecolor=_CONTOUR_OUTLINE,
              label=f"{task.class_long_names[c]} ({task.class_names[c]})")
        for c in range(1, task.n_classes)
    ]
    if not isinstance(target, Figure) and loc.startswith("outside"):
        loc = "lower right"
    kwargs.setdefault("ncols", min(len(handles), 4) if isinstance(target, Figure) else 1)
    kwargs.setdefault("frameon", False if isinstance(target, Figure) else True)
    return target.legend(handles=handles, loc=loc, **kwargs)


# --------------------------------------------------------------------------- argument checks


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


def _check_classes(classes, name="classes", ndim=3, task=None):
    classes = _check_volume(classes, name, ndim)
    if classes.dtype == bool:
        return classes.astype(np.uint8)
    last = get_task(task).n_classes - 1
    if classes.size and (classes.min() < 0 or classes.max() > last):
        bad = sorted(int(v) for v in np.unique(classes) if not 0 <= v <= last)
        raise ValueError(
            f"{name} holds values {bad[:10]} outside the classes 0..{last}; "
            "convert BraTS labels with brats_keras.labels.labels_to_classes (or the task's to_classes) first"
        )
    return classes


def _same_shape(a, b, name_a, name_b):
    if a.shape[:3] != b.shape[:3]:
        raise ValueError(f"{name_a} {a.shape} and {name_b} {b.shape} must cover the same voxels")


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


