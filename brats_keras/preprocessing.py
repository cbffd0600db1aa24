"""Crop boxes and intensity scaling, shared by conversion, training and prediction.

A crop box is a tuple of three ``(start, stop)`` pairs in the file's own voxel
order ``(D, H, W)``. Scaling is computed on the whole volume (or its brain voxels)
and applied to the crop only, so no float copy of the full volume is made.

numpy only: no deep-learning framework is imported here.
"""
from __future__ import annotations

import numpy as np

#: the report's fixed crop of a 240 x 240 x 155 BraTS volume to 128^3
REPORT_CROP = ((56, 184), (56, 184), (13, 141))
SCALINGS = ("minmax", "zscore")
#: margin (voxels) around the brain's bounding box for ``crop="brain"``: the one default of conversion and prediction
DEFAULT_MARGIN = 4


def fixed_crop_box(shape, box=REPORT_CROP):
    """Return ``box`` after checking it fits inside a volume of ``shape``; ValueError otherwise."""
    for (a, b), n in zip(box, shape):
        if a < 0 or b > n or a >= b:
            raise ValueError(f"crop box {list(map(list, box))} does not fit a volume of shape {tuple(shape)}")
    return tuple((int(a), int(b)) for a, b in box)


def brain_crop_box(volumes, margin: int = DEFAULT_MARGIN, multiple: int = 1):
    """Bounding box of voxels that are nonzero in any modality, grown by ``margin``.

    Args:
        volumes: list of 3-D arrays of one shape.
        margin: voxels added on each side (clipped to the volume).
        multiple: grow the box (inside the volume where possible) so each side is a multiple of this.
    Returns:
        crop box ``((d0, d1), (h0, h1), (w0, w1))``.
    Raises:
        ValueError if every voxel is zero.
    """
    mask = np.zeros(volumes[0].shape, dtype=bool)
    for v in volumes:
        mask |= v != 0
    tight = bounding_box(mask, margin)
    if tight is None:
        raise ValueError("no nonzero voxel: cannot find the brain")
    box = []
    for n, (a, b) in zip(mask.shape, tight):
        if multiple > 1:
            want = min(n, -(-(b - a) // multiple) * multiple)
            extra = want - (b - a)
            a = max(0, a - extra // 2)
            b = a + want
            if b > n:
                a, b = n - want, n
        box.append((a, b))
    return tuple(box)


def bounding_box(mask, margin: int = 0):
    """Crop box of the nonzero voxels of ``mask`` (any number of axes), grown by ``margin`` and clipped to it.

    Returns:
        ``((start, stop), ...)``, one pair per axis (stop exclusive), or None when ``mask`` is all zero.
    """
    mask = np.asarray(mask)
    box = []
    for axis in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        idx = np.flatnonzero(np.any(mask, axis=other))
        if idx.size == 0:
            return None
        box.append((max(0, int(idx[0]) - margin), min(mask.shape[axis], int(idx[-1]) + 1 + margin)))
    return tuple(box)


def box_slices(box):
    """Crop box -> tuple of slices."""
    return tuple(slice(a, b) for a, b in box)


def box_shape(box):
    return tuple(b - a for a, b in box)


def scale_params(volume: np.ndarray, method: str = "minmax") -> dict:
    """Scaling parameters of one modality.

    * ``minmax``: ``{"min", "max"}`` over the whole volume; scaled = (x - min) / (max - min).
    * ``zscore``: ``{"mean", "std"}`` over the brain (nonzero) voxels; scaled = (x - mean) / std,
      and voxels outside the brain stay 0.
    """
    if method == "minmax":
        return {"min": float(volume.min()), "max": float(volume.max())}
    if method == "zscore":
        vals = volume[volume != 0].astype(np.float64)
        if vals.size == 0:
            return {"mean": 0.0, "std": 1.0}
        return {"mean": float(vals.mean()), "std": float(vals.std()) or 1.0}
    raise ValueError(f"unknown scaling {method!r}: use one of {', '.join(SCALINGS)}")


def apply_scale(region: np.ndarray, params: dict, method: str = "minmax", out_dtype=np.float32) -> np.ndarray:
    """Scale a volume (or a crop of it) with parameters from :func:`scale_params`."""
    x = region.astype(np.float32)
    if method == "minmax":
        span = params["max"] - params["min"]
        x -= np.float32(params["min"])
        if span > 0:
            x *= np.float32(1.0 / span)
    elif method == "zscore":
        brain = region != 0
        x -= np.float32(params["mean"])
        x *= np.float32(1.0 / params["std"])
        x[~brain] = 0
    else:
        raise ValueError(f"unknown scaling {method!r}: use one of {', '.join(SCALINGS)}")
    return x.astype(out_dtype, copy=False)


def stack_scaled(volumes, box, method: str = "minmax", dtype=np.float32):
    """Scale each modality over its whole volume, crop to ``box`` and stack channels-last.

    Returns:
        ``(image, params)``: image ``(d, h, w, C)`` of ``dtype``; params, one dict per modality.
    """
    sl = box_slices(box)
    shape = box_shape(box)
    image = np.empty(shape + (len(volumes),), dtype=dtype)
    params = []
    for c, vol in enumerate(volumes):
        p = scale_params(vol, method)
        image[..., c] = apply_scale(vol[sl], p, method, out_dtype=np.float32)
        params.append(p)
    return image, params


# ----------------------------------------------------------------------------- resolution
def _pad_to_multiple(a: np.ndarray, factor: int) -> np.ndarray:
    pad = [(0, (-n) % factor) for n in a.shape[:3]] + [(0, 0)] * (a.ndim - 3)
    return np.pad(a, pad) if any(p[1] for p in pad[:3]) else a


def downsample_image(image: np.ndarray, factor: int) -> np.ndarray:
    """Average ``factor``^3 blocks of an image ``(D, H, W, C)`` (zero-padded to a multiple): e.g. 1 mm -> 2 mm."""
    if factor == 1:
        return image
    a = _pad_to_multiple(image, factor)
    d, h, w = (n // factor for n in a.shape[:3])
    out = a.reshape(d, factor, h, factor, w, factor, -1).astype(np.float32).mean(axis=(1, 3, 5))
    return out.astype(image.dtype, copy=False)


def downsample_classes(classes: np.ndarray, factor: int) -> np.ndarray:
    """Down-sample a class map ``(D, H, W)`` by ``factor``: each region (WT, TC, ET) where it fills
    at least half of a block, decoded back to classes, so the regions stay nested."""
    if factor == 1:
        return classes
    from .labels import classes_to_regions, regions_to_classes

    regions = downsample_image(classes_to_regions(classes).astype(np.float32), factor)
    return regions_to_classes(regions, threshold=0.4999)


def upsample_probs(probs: np.ndarray, shape, factor=None) -> np.ndarray:
    """Trilinear up-sampling of probabilities ``(d, h, w, K)`` to ``shape`` (D, H, W), block-centre aligned.

    ``factor``: the block size used by :func:`downsample_image` (default: ``shape / probs.shape``).
    """
    from scipy import ndimage

    if probs.shape[:3] == tuple(shape):
        return probs
    factors = [factor] * 3 if factor else [s / n for s, n in zip(shape, probs.shape[:3])]
    out = np.empty(tuple(shape) + probs.shape[3:], np.float32)
    coords = [((np.arange(s) + 0.5) / f - 0.5) for s, f in zip(shape, factors)]
    grid = np.meshgrid(*coords, indexing="ij", sparse=True)
    for k in range(probs.shape[-1]):
        out[..., k] = ndimage.map_coordinates(probs[..., k], np.broadcast_arrays(*grid), order=1, mode="nearest")
    return out
