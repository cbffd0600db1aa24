"""A case in 3-D in a notebook: NiiVue's linked planes and rendering (``ipyniivue``), or the static slice figure
where no widget front end runs.

:func:`view` shows one modality in grey with the prediction and the ground truth as label overlays in the
colours of the task's classes (:func:`~brats_keras.visualize.common.class_colors`; the default task's:
:data:`~brats_keras.visualize.common.CLASS_COLORS`). A case is read with :func:`brats_keras.io.read_modalities`:
one off the working grid (voxels not 1 mm, another orientation) is shown resampled onto it, its label maps taken
there voxel by voxel (nearest neighbour). In a notebook that a widget front end displays (JupyterLab,
Jupyter Notebook 7, VS Code, Colab) it returns an ``ipyniivue.NiiVue`` widget: axial, coronal and sagittal views
linked by a crosshair, and a 3-D rendering. Elsewhere it returns the static figure of
:mod:`brats_keras.visualize.slices` (:func:`~brats_keras.visualize.slices.compare` for a prediction with its truth,
:func:`~brats_keras.visualize.slices.show_planes` otherwise): in a plain Python, an IPython terminal, and a notebook
executed by nbclient, nbconvert or papermill, where a kernel runs but nothing would ever draw a widget.

``ipyniivue`` (the ``notebooks`` extra) is an anywidget: its JavaScript, NiiVue included, ships inside the wheel,
so nothing is fetched from the network when the widget is drawn. It is imported only when a widget is made.

numpy, nibabel and matplotlib only: no deep-learning framework is imported here.
"""
from __future__ import annotations

import gzip
import importlib.util
import os
import sys
from pathlib import Path

import numpy as np

from ..io import BratsInputError, Case, find_cases, read_labels, read_modalities
from ..labels import canonical_modality
from ..tasks import TaskError, get_task
from .common import _check_classes, class_colors
from .slices import _centre_of_mass, _window, compare, show_planes

__all__ = ["view", "widget_frontend", "VIEW_ENV"]

#: the environment variable that chooses for every :func:`view` called without ``widget=``: ``widget`` or
#: ``static`` (unset: :func:`widget_frontend` decides)
VIEW_ENV = "BRATS_KERAS_VIEW"
#: opacity of the label overlays in the widget (its volumes' ``opacity`` trait changes it)
OVERLAY_OPACITY = 0.6


def widget_frontend() -> bool:
    """Whether a widget that :func:`view` returns would be drawn: ``ipyniivue`` is installed and this code runs
    in a kernel that a notebook front end started.

    ``$BRATS_KERAS_VIEW`` (``widget`` or ``static``) decides when set. Otherwise a widget front end is one of:
    a kernel that jupyter_server started for a notebook (JupyterLab, Notebook 7: it sets ``$JPY_SESSION_NAME``
    in the kernel's environment), VS Code's notebooks (they set ``__vsc_ipynb_file__`` in the user's namespace),
    Colab. A kernel that nbclient, nbconvert or papermill starts has none of these: no front end reads its output
    until it is saved, so it gets the static figure; so do a plain Python and an IPython terminal (no kernel).

    Raises:
        BratsInputError for another value of ``$BRATS_KERAS_VIEW``.
    """
    choice = os.environ.get(VIEW_ENV, "").strip().lower()
    if choice:
        if choice not in ("widget", "static"):
            raise BratsInputError(f"${VIEW_ENV}: {choice!r} is not 'widget' or 'static' (or unset: auto)")
        return choice == "widget"
    if importlib.util.find_spec("ipyniivue") is None:
        return False
    shell = sys.modules["IPython"].get_ipython() if "IPython" in sys.modules else None
    if shell is None or getattr(shell, "kernel", None) is None:  # plain Python, IPython terminal
        return False
    return bool(os.environ.get("JPY_SESSION_NAME") or "__vsc_ipynb_file__" in shell.user_ns
                or "google.colab" in sys.modules)


# --------------------------------------------------------------------------- inputs


def _one_case(case) -> Case:
    if isinstance(case, Case):
        return case
    found = find_cases(case)
    if len(found) != 1:
        ids = ", ".join(c.case_id for c in found[:5]) or "none"
        raise BratsInputError(f"{case}: holds {len(found)} cases ({ids}); give one case folder")
    return found[0]


def _read_case(case, modality: str):
    """``(volumes, case)`` of the modality shown: a :class:`brats_keras.io.CaseVolumes` read from a case folder or a
    ``Case`` (on the working grid: :func:`brats_keras.io.read_modalities`), with the ``Case``; for a 3-D array (on
    the BraTS grid: :func:`brats_keras.synthetic.brats_affine`) the same record of it, with None."""
    if isinstance(case, np.ndarray):
        from ..geometry import Grid
        from ..io import CaseVolumes
        from ..synthetic import brats_affine

        if case.ndim != 3:
            raise BratsInputError(f"case: an array must be one modality (D, H, W), got shape {case.shape}")
        if not np.issubdtype(case.dtype, np.number) or case.dtype == bool:
            raise BratsInputError(f"case: an array of intensities is needed, got dtype {case.dtype}")
        affine = brats_affine(case.shape)
        return CaseVolumes([case], affine, None, Path("case"), Grid(case.shape, affine)), None
    if not isinstance(case, (str, Path, Case)):
        raise BratsInputError(f"case: a case folder, a brats_keras.io.Case or a 3-D array, not {type(case).__name__}")
    case = _one_case(case)
    return read_modalities(case, [modality]), case


def _read_classes(labels, name: str, volumes, case, task):
    """``(classes, task)``: the class map ``(D, H, W)`` on the working grid of a label map's path (on the case's
    own grid; its values read for ``task``, or detected from the case's naming and the values when None:
    :func:`brats_keras.io.read_labels`; a prediction's may be those of any task of ``task``'s family, as evaluate
    reads them) or of an array of classes 0 .. ``task.n_classes - 1`` (the default task's
    when None) of the case's own shape."""
    grid = volumes.source
    if isinstance(labels, (str, Path)):
        import nibabel as nib

        from ..evaluation.folders import grid_difference, read_task_labels  # scipy: when a map is read

        if name == "prediction" and task is not None:  # as evaluate reads one: the values of any task of the family
            classes, img = read_task_labels(labels, task)
        else:
            classes, img, task = read_labels(labels, task, case=case)
        reference = nib.Nifti1Image(np.zeros(grid.shape, np.uint8), grid.affine, grid.header)
        problem, _ = grid_difference(img, reference)  # origins alone may differ: the voxels still match
        if problem:
            raise BratsInputError(f"{labels}: not on the case's grid: {problem}")
    else:
        task = get_task(task)
        labels = np.asarray(labels)
        if labels.dtype.kind not in "biu":
            raise BratsInputError(f"{name}: an integer array of classes 0..{task.n_classes - 1} is needed, got "
                                  f"dtype {labels.dtype}")
        try:
            classes = _check_classes(labels, name, task=task)
        except ValueError as exc:
            raise BratsInputError(f"{name}: {exc}") from None
        if classes.shape != tuple(grid.shape):
            raise BratsInputError(f"{name}: shape {classes.shape} differs from the case's {tuple(grid.shape)}")
        classes = classes.astype(np.uint8, copy=False)
    return (classes if volumes.regrid is None else volumes.regrid.to_working(classes, order=0)), task


# --------------------------------------------------------------------------- the widget


def _nifti_bytes(array, affine) -> bytes:
    """A ``.nii.gz`` file's bytes (gzip level 1: label maps shrink a hundredfold, in well under a second)."""
    import nibabel as nib

    img = nib.Nifti1Image(np.asarray(array), np.asarray(affine, float))
    img.set_data_dtype(array.dtype)
    return gzip.compress(img.to_bytes(), compresslevel=1)


def class_colormap(task=None) -> dict:
    """The label colormap of the overlays, as ipyniivue's ``Volume.set_colormap_label`` takes it: class ``c`` of
    ``task`` (None: the default task) in its colour (:func:`~brats_keras.visualize.common.class_colors`, RGB
    0..255, opaque), background transparent, the classes' short names."""
    task = get_task(task)
    colors, n = class_colors(task), task.n_classes
    rows = [[0, 0, 0]] + [[int(colors[c][i:i + 2], 16) for i in (1, 3, 5)] for c in range(1, n)]
    return {"R": [r[0] for r in rows], "G": [r[1] for r in rows], "B": [r[2] for r in rows],
            "A": [0] + [255] * (n - 1), "I": list(range(n)), "labels": [""] + list(task.class_names[1:])}


def crosshair_fractions(voxel, shape, affine) -> list[float]:
    """NiiVue's crosshair position (``scene.crosshair_pos``) at a voxel: fractions 0..1 along the volume's axes
    reordered and flipped to RAS, as NiiVue lays a volume out (``nibabel.io_orientation``), voxel centres at
    ``(i + 0.5) / n``."""
    import nibabel as nib

    fractions = [0.5, 0.5, 0.5]
    for i, n, (ras, sign) in zip(voxel, shape, nib.io_orientation(np.asarray(affine, float))):
        f = (int(i) + 0.5) / n
        fractions[int(ras)] = f if sign > 0 else 1.0 - f
    return fractions


def _widget(volume, affine, modality, overlays, height, task):
    from ipyniivue import NiiVue, ShowRender, Volume

    lo, hi = _window(volume)
    volumes = [Volume(data=_nifti_bytes(volume, affine), name=f"{modality}.nii.gz", colormap="gray",
                      cal_min=lo, cal_max=hi)]
    for name, classes in overlays:
        overlay = Volume(data=_nifti_bytes(classes, affine), name=f"{name}.nii.gz", opacity=OVERLAY_OPACITY)
        overlay.set_colormap_label(class_colormap(task))
        volumes.append(overlay)
    # as the static views draw them: the patient's right on the left (radiological), sagittal slices face left
    nv = NiiVue(height=height, multiplanar_show_render=ShowRender.ALWAYS, is_radiological_convention=True,
                sagittal_nose_left=True)
    nv.load_volumes(volumes)
    tumour = [classes > 0 for _, classes in overlays[::-1] if classes.any()]  # the prediction's, else the truth's
    if tumour:  # the planes cross at the tumour's centre, as show_planes cuts them
        nv.scene.crosshair_pos = crosshair_fractions(_centre_of_mass(tumour[0]), volume.shape, affine)
    return nv


# --------------------------------------------------------------------------- view


def view(case, prediction=None, truth=None, *, modality: str = "flair", widget: bool | None = None,
         height: int = 480, title: str | None = None, task=None):
    """Look at a case with its prediction and truth: a NiiVue widget in a notebook, the static figure elsewhere.

    Args:
        case: a case folder (holding one case, any layout :func:`brats_keras.io.find_cases` reads), a
            :class:`brats_keras.io.Case`, or one modality as an array ``(D, H, W)`` on the BraTS grid. A case off
            the working grid is shown resampled onto it (:func:`brats_keras.io.read_modalities`).
        prediction, truth: class maps: the path of a label map (the task's values; on the case's own grid), or
            an array of classes 0 .. ``task.n_classes - 1`` ``(D, H, W)`` of the case's own shape; None leaves
            the overlay out.
        modality: the modality shown under the labels (either vocabulary; read from the case's files).
        widget: True returns the widget, False the static figure; None (default) asks :func:`widget_frontend`
            (``$BRATS_KERAS_VIEW=widget`` or ``static`` decides for every call).
        height: of the widget, in pixels.
        title: of the static figure; default the case id.
        task: the task whose classes the maps hold (a :class:`~brats_keras.tasks.Task`, its name or task file):
            their names and colours. None: the one the truth's (else the prediction's) values and the case's
            naming say where a label map is read (:func:`brats_keras.io.read_labels`), else the default task.
    Returns:
        an ``ipyniivue.NiiVue`` whose ``volumes`` are the modality (grey, windowed on the 1-99 % percentiles of
        the brain, as the static views), then the truth and the prediction (present ones only) as label volumes
        in the task's colours (a colour table of ``task.n_classes`` entries); or the matplotlib Figure of
        :func:`~brats_keras.visualize.slices.compare` (prediction and truth) or
        :func:`~brats_keras.visualize.slices.show_planes` (one of them, or neither).
    Raises:
        BratsInputError (one line naming the file or argument) for a missing modality, a folder holding no case
        or several, a label map on another grid or shape than the case, values that are not classes, an unknown
        task.
        ModuleNotFoundError for ``widget=True`` without ipyniivue (``pip install "brats-keras[notebooks]"``).
    """
    try:
        modality = canonical_modality(modality)
    except ValueError as exc:
        raise BratsInputError(f"modality: {exc}") from None
    try:
        task = None if task is None else get_task(task)
    except TaskError as exc:
        raise BratsInputError(f"task: {exc}") from None
    volumes, found = _read_case(case, modality)
    volume, affine, case_id = volumes.arrays[0], volumes.affine, found.case_id if found else "case"
    maps = {}
    for name, labels in (("truth", truth), ("prediction", prediction)):  # the truth's task first
        if labels is not None:
            maps[name], task = _read_classes(labels, name, volumes, found, task)
    task = get_task(task)
    pred, true = maps.get("prediction"), maps.get("truth")
    if widget is None:
        widget = widget_frontend()
    if widget:
        if importlib.util.find_spec("ipyniivue") is None:
            raise ModuleNotFoundError('view(widget=True) needs ipyniivue: pip install "brats-keras[notebooks]"')
        overlays = [(name, c) for name, c in (("truth", true), ("prediction", pred)) if c is not None]
        return _widget(volume, affine, modality, overlays, height, task)
    title = case_id if title is None else title
    if pred is not None and true is not None:
        return compare(volume, true, pred, title=title, task=task)
    what = "prediction" if pred is not None else "truth" if true is not None else modality
    return show_planes(volume, pred if pred is not None else true, title=f"{title}, {what}", task=task)
