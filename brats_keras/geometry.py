"""The working grid every case is read on, and the resampling onto it and back.

The networks see voxels, not millimetres: they learned BraTS' grid, 1 mm voxels with axes towards L, P and S
(``nibabel.aff2axcodes`` of every real case in ../shared/data). A case on another grid (thick slices, another
orientation) is brought onto that working grid:

* reoriented with ``nibabel.orientations`` (flips and transposes of the array: exact, nothing interpolated);
* then, when its voxels are not 1 mm, resampled with ``nibabel.processing.resample_from_to`` (``scipy.ndimage``
  splines: images linear, order 1; label maps nearest, order 0) onto the 1 mm grid of the same directions and
  centre (``nibabel.affines.rescale_affine``) that covers its field of view.

A prediction goes back onto the input's own grid the same way (:meth:`Regrid.from_working`). A case already on
the working grid is never touched (:func:`working_grid` gives None).

numpy, nibabel and scipy only.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

#: the working grid: 1 mm voxels, axes towards L, P and S (the BraTS grid)
BRATS_VOXEL_MM = 1.0
BRATS_ORIENTATION = ("L", "P", "S")
#: how far a voxel size (mm) may be from 1 mm, and two files on one grid (two modalities, or a prediction and its
#: truth) may differ in their affines (mm, and direction cosines)
VOXEL_TOLERANCE_MM = 0.02
AFFINE_TOLERANCE = 0.01


class Grid(NamedTuple):
    """Where a volume's voxels lie: ``shape`` ``(D, H, W)``, ``affine`` (4 x 4, voxel -> mm) and the nibabel
    ``header`` of the file it came from (or None)."""

    shape: tuple
    affine: np.ndarray
    header: object = None


def voxel_mm(affine) -> tuple:
    """The voxel size (mm) along each array axis of an affine (``nibabel.affines.voxel_sizes``)."""
    from nibabel.affines import voxel_sizes

    return tuple(float(v) for v in voxel_sizes(np.asarray(affine, float)))


def orientation(affine) -> str:
    """The axis codes of an affine, e.g. ``"LPS"`` (``nibabel.aff2axcodes``)."""
    import nibabel as nib

    return "".join(map(str, nib.aff2axcodes(np.asarray(affine, float))))


def format_size(zooms) -> str:
    """``"0.9 x 0.9 x 3.0"``: a voxel size in mm, as messages and notes print it."""
    return " x ".join(str(round(float(z), 3)) for z in zooms)


def grid_problem(affine, zooms=None) -> str | None:
    """Why a grid is not the working grid, e.g. ``"voxel size 0.9 x 0.9 x 3.0 mm, expected 1 mm"`` or
    ``"orientation RAS, expected LPS as in BraTS"``; None when it is (voxel sizes within ``VOXEL_TOLERANCE_MM``
    of 1 mm, axis codes ``BRATS_ORIENTATION``).

    Args:
        affine: the 4 x 4 voxel-to-mm affine.
        zooms: the voxel sizes to judge (a NIfTI header's ``get_zooms()``); default: the affine's.
    """
    zooms = voxel_mm(affine) if zooms is None else [float(z) for z in zooms[:3]]
    if any(abs(z - BRATS_VOXEL_MM) > VOXEL_TOLERANCE_MM for z in zooms):
        return f"voxel size {format_size(zooms)} mm, expected {BRATS_VOXEL_MM:g} mm"
    axes = orientation(affine)
    if axes != "".join(BRATS_ORIENTATION):
        return f"orientation {axes}, expected {''.join(BRATS_ORIENTATION)} as in BraTS"
    return None


def describe_grid(shape, affine) -> dict:
    """``{"shape": [D, H, W], "voxel_mm": [x, y, z], "orientation": "RAS", "affine": 4 x 4}``: a grid as the
    manifest and the prediction record note it."""
    return {"shape": [int(s) for s in shape], "voxel_mm": [round(z, 4) for z in voxel_mm(affine)],
            "orientation": orientation(affine), "affine": np.asarray(affine, float).round(6).tolist()}


def format_grid(grid: dict) -> str:
    """``"0.9 x 0.9 x 3.0 mm RAS, 267 x 267 x 52 voxels"``: a :func:`describe_grid` in a note."""
    return (f"{format_size(grid['voxel_mm'])} mm {grid['orientation']}, "
            f"{' x '.join(map(str, grid['shape']))} voxels")


def resampled_note(source: dict, shape) -> str:
    """``"resampled from 0.9 x 0.9 x 3.0 mm RAS, 267 x 267 x 52 voxels onto the 1 mm LPS grid, 241 x 241 x 156
    voxels"``: the line convert and predict print for a case they resample (``source``: :func:`describe_grid`)."""
    return (f"resampled from {format_grid(source)} onto the {BRATS_VOXEL_MM:g} mm {''.join(BRATS_ORIENTATION)} "
            f"grid, {' x '.join(map(str, shape))} voxels")


def _resample(array: np.ndarray, affine, to: tuple, order: int) -> np.ndarray:
    """``array`` ``(D, H, W)`` or ``(D, H, W, C)`` on the grid ``affine``, resampled onto ``to = (shape, affine)``
    by ``nibabel.processing.resample_from_to`` (0 outside the input); order > 0 interpolates in float32."""
    from nibabel.processing import resample_from_to
    from nibabel.spatialimages import SpatialImage

    if array.ndim == 4:
        return np.stack([_resample(array[..., c], affine, to, order) for c in range(array.shape[-1])], axis=-1)
    data = array.astype(np.float32, copy=False) if order > 0 else array
    out = resample_from_to(SpatialImage(data, affine), to, order=order, mode="constant", cval=0)
    return np.asarray(out.dataobj)


def _reorientation(grid: Grid) -> tuple:
    """``(ornt, shape, affine)``: the flips and transposes (``nibabel.orientations``) that take a grid's axes to
    ``BRATS_ORIENTATION``, and the grid they give (the same voxels, reordered)."""
    from nibabel.orientations import apply_orientation, axcodes2ornt, inv_ornt_aff, io_orientation, ornt_transform

    ornt = ornt_transform(io_orientation(grid.affine), axcodes2ornt(BRATS_ORIENTATION))
    shape = apply_orientation(np.broadcast_to(np.uint8(0), grid.shape), ornt).shape  # a view: nothing allocated
    return ornt, shape, np.asarray(grid.affine, float) @ inv_ornt_aff(ornt, grid.shape)


@dataclass(eq=False)
class Regrid:
    """How a volume on a source grid goes onto the working grid (:meth:`to_working`) and back (:meth:`from_working`).

    Attributes:
        source: the input's own :class:`Grid`.
        shape, affine: the working grid (1 mm, ``BRATS_ORIENTATION``).
        resampled: False when the source is a reorientation of the working grid (1 mm voxels already): both ways
            are then exact flips and transposes.
    """

    source: Grid
    shape: tuple
    affine: np.ndarray
    resampled: bool

    @property
    def header(self):
        """A NIfTI header of the working grid: the source's, with the working grid's shape, zooms and affine."""
        import nibabel as nib

        header = self.source.header.copy() if self.source.header is not None else nib.Nifti1Header()
        img = nib.Nifti1Image(np.empty((0, 0, 0), np.uint8), self.affine, header)
        img.header.set_data_shape(self.shape)
        img.header.set_zooms(voxel_mm(self.affine))
        return img.header

    def describe(self) -> dict:
        """The source grid, :func:`describe_grid`."""
        return describe_grid(self.source.shape, self.source.affine)

    def to_working(self, array: np.ndarray, order: int) -> np.ndarray:
        """A volume ``(D, H, W)`` (or ``(D, H, W, C)``) of the source grid on the working grid: ``order`` 1 for
        images (float32 then), 0 for label maps (their dtype kept). A reorientation alone keeps every value and
        the dtype."""
        from nibabel.orientations import apply_orientation

        ornt, _, affine = _reorientation(self.source)
        out = apply_orientation(np.asarray(array), ornt)
        if not self.resampled:
            return np.ascontiguousarray(out)
        return _resample(out, affine, (self.shape, self.affine), order)

    def from_working(self, array: np.ndarray, order: int, start=(0, 0, 0)) -> np.ndarray:
        """A volume of the working grid back on the source grid (0 outside what ``array`` covers).

        Args:
            array: ``(d, h, w)`` or ``(d, h, w, C)``: the working grid's voxels from ``start`` on (e.g. a brain
                box's probabilities), or all of them.
            order: 1 for probabilities and images (float32), 0 for label maps.
            start: the working-grid voxel at ``array[0, 0, 0]``.
        Returns:
            ``array`` on the source grid, shape ``source.shape`` (plus the channels).
        """
        from nibabel.affines import from_matvec
        from nibabel.orientations import apply_orientation, axcodes2ornt, io_orientation, ornt_transform

        _, shape, affine = _reorientation(self.source)
        if self.resampled:
            moved = np.asarray(self.affine, float) @ from_matvec(np.eye(3), [float(s) for s in start])
            out = _resample(array, moved, (shape, affine), order)
        else:
            out = np.zeros(tuple(shape) + array.shape[3:], array.dtype)
            out[tuple(slice(s, s + n) for s, n in zip(start, array.shape[:3]))] = array
        back = ornt_transform(axcodes2ornt(BRATS_ORIENTATION), io_orientation(self.source.affine))
        return np.ascontiguousarray(apply_orientation(out, back))


def working_grid(grid: Grid) -> Regrid | None:
    """How a source grid goes onto the working grid; None when it is on it already (:func:`grid_problem` of its
    affine and header zooms): such a volume is used as it is, untouched.

    The working grid keeps the source's directions (rotations) and centre voxel, with 1 mm voxels along the axes
    reoriented to ``BRATS_ORIENTATION`` (``nibabel.affines.rescale_affine``), and covers the source's field of
    view: ``ceil(n * size)`` voxels along an axis of ``n`` voxels of ``size`` mm.
    """
    from nibabel.affines import rescale_affine

    zooms = grid.header.get_zooms() if grid.header is not None else None
    if grid_problem(grid.affine, zooms) is None:
        return None
    _, shape, affine = _reorientation(grid)
    sizes = np.asarray(voxel_mm(affine))
    if np.all(np.abs(sizes - BRATS_VOXEL_MM) <= VOXEL_TOLERANCE_MM):  # 1 mm already: a reorientation
        return Regrid(grid, tuple(shape), affine, False)
    new_shape = tuple(int(n) for n in np.ceil(np.asarray(shape) * sizes / BRATS_VOXEL_MM - 1e-3))
    work = rescale_affine(affine, shape, (BRATS_VOXEL_MM,) * 3, new_shape)
    return Regrid(grid, new_shape, work, True)
