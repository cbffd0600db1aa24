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

The package holds the slice views in :mod:`brats_keras.visualize.slices` (``display_slice``,
``overlay``, ``best_slice``, ``show_case``, ``show_planes``, ``compare``, ``montage``) and the run
charts in :mod:`brats_keras.visualize.charts` (``plot_history``, ``bar_chart``,
``intensity_histograms``, ``label_statistics``); every public name is imported from
``brats_keras.visualize`` itself.
:func:`view` (in :mod:`brats_keras.visualize.widget`) shows a case with its prediction and truth in a notebook:
an interactive NiiVue widget (``ipyniivue``, imported only then) where a widget front end runs, the static
slice figure elsewhere.

numpy and matplotlib only: no deep-learning framework is imported here.
"""
from __future__ import annotations

from .charts import bar_chart, intensity_histograms, label_statistics, plot_history
from .common import CLASS_COLORS, PLANE_NAMES, REGION_COLORS, class_legend
from .slices import best_slice, compare, display_slice, montage, overlay, show_case, show_planes
from .widget import view, widget_frontend

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
    "view",
    "widget_frontend",
]
