"""Per-channel intensity augmentation for training patches, in the spirit of nnU-Net's default set.

Scanners differ in noise, sharpness, resolution, brightness and contrast; a model trained on a few
institutions sees only a few of these. :func:`intensity_augment` draws, per patch, each of these
transforms with its own probability, and applies it to each modality separately (another draw per
channel where the transform is per-channel), so that the network learns not to rely on one
scanner's look. Background voxels (zero in every channel after conversion) stay zero, and the
label map is never touched.

The transforms and their defaults (probability per patch; ranges):

======================  ======  =========================================================================
noise                   0.10    Gaussian, standard deviation sqrt(U(0, 0.1))
blur                    0.20    Gaussian, sigma U(0.5, 1.0) voxels, each channel p 0.5
brightness              0.15    multiply by U(0.75, 1.25)
contrast                0.15    scale about the mean by U(0.75, 1.25), clipped to the old range
low resolution          0.25    down-sample by U(0.5, 1) and back (linear), each channel p 0.5
gamma                   0.30    gamma log-uniform in (0.7, 1.5) on the channel's range, mean and std kept
inverted gamma          0.10    the same on the inverted intensities
======================  ======  =========================================================================
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

INTENSITY_MODES = ("basic", "strong")


def check_intensity_mode(mode) -> str:
    """``mode`` when it is one of ``INTENSITY_MODES``, else ValueError in one line naming it."""
    if mode not in INTENSITY_MODES:
        raise ValueError(f"unknown intensity augmentation {mode!r}: use {' or '.join(INTENSITY_MODES)}")
    return mode


@dataclass(frozen=True)
class IntensityAugment:
    """Probabilities and ranges of :func:`intensity_augment` (see the module table)."""

    noise_p: float = 0.10
    noise_variance: tuple = (0.0, 0.1)
    blur_p: float = 0.20
    blur_sigma: tuple = (0.5, 1.0)
    brightness_p: float = 0.15
    brightness: tuple = (0.75, 1.25)
    contrast_p: float = 0.15
    contrast: tuple = (0.75, 1.25)
    lowres_p: float = 0.25
    lowres_zoom: tuple = (0.5, 1.0)
    gamma_p: float = 0.30
    inverted_gamma_p: float = 0.10
    gamma: tuple = (0.7, 1.5)
    per_channel_p: float = 0.5


def add_noise(ch: np.ndarray, rng, variance) -> np.ndarray:
    """Gaussian noise with a standard deviation drawn as sqrt(U(variance))."""
    std = float(np.sqrt(rng.uniform(*variance)))
    return ch + rng.normal(0.0, std, size=ch.shape).astype(np.float32)


def blur(ch: np.ndarray, rng, sigma) -> np.ndarray:
    """Gaussian blur with sigma drawn from U(sigma) voxels."""
    from scipy.ndimage import gaussian_filter

    return gaussian_filter(ch, float(rng.uniform(*sigma)), mode="nearest").astype(np.float32)


def scale_contrast(ch: np.ndarray, factor: float) -> np.ndarray:
    """Scale about the mean by ``factor``, then clip to the channel's old range."""
    mean, lo, hi = float(ch.mean()), float(ch.min()), float(ch.max())
    return np.clip((ch - mean) * factor + mean, lo, hi).astype(np.float32)


def low_resolution(ch: np.ndarray, rng, zoom) -> np.ndarray:
    """Down-sample by a factor drawn from U(zoom) (nearest) and back to the old shape (linear)."""
    from scipy.ndimage import zoom as nd_zoom

    factor = float(rng.uniform(*zoom))
    small_shape = [max(1, int(round(s * factor))) for s in ch.shape]
    small = nd_zoom(ch, [n / s for n, s in zip(small_shape, ch.shape)], order=0, mode="nearest")
    back = nd_zoom(small, [s / n for s, n in zip(ch.shape, small.shape)], order=1, mode="nearest")
    out = np.empty_like(ch)
    sl = tuple(slice(0, min(a, b)) for a, b in zip(ch.shape, back.shape))
    out[...] = ch  # a rounding shortfall of one voxel keeps the original there
    out[sl] = back[sl]
    return out.astype(np.float32)


def gamma_transform(ch: np.ndarray, g: float, invert: bool = False) -> np.ndarray:
    """Gamma ``g`` on the channel's range ([min, max] -> [0, 1] -> ^g -> back), keeping mean and std."""
    x = -ch if invert else ch
    mean, std = float(x.mean()), float(x.std())
    lo, hi = float(x.min()), float(x.max())
    if hi <= lo:
        return ch.copy()
    y = ((x - lo) / (hi - lo)) ** g * (hi - lo) + lo
    y_std = float(y.std())
    if y_std > 0:
        y = (y - y.mean()) / y_std * std + mean
    return (-y if invert else y).astype(np.float32)


def intensity_augment(x: np.ndarray, rng, params: IntensityAugment | None = None) -> np.ndarray:
    """Strong per-channel intensity augmentation of a patch ``x`` ``(p, p, p, C)`` (float32 copy returned).

    ``rng`` is a ``numpy.random.Generator``; the same generator state gives the same result.
    """
    p = params or IntensityAugment()
    x = np.array(x, dtype=np.float32, copy=True)
    brain = np.any(x != 0, axis=-1)
    channels = range(x.shape[-1])
    if rng.random() < p.noise_p:
        for c in channels:
            x[..., c] = add_noise(x[..., c], rng, p.noise_variance)
    if rng.random() < p.blur_p:
        for c in channels:
            if rng.random() < p.per_channel_p:
                x[..., c] = blur(x[..., c], rng, p.blur_sigma)
    if rng.random() < p.brightness_p:
        for c in channels:
            x[..., c] *= np.float32(rng.uniform(*p.brightness))
    if rng.random() < p.contrast_p:
        for c in channels:
            x[..., c] = scale_contrast(x[..., c], float(rng.uniform(*p.contrast)))
    if rng.random() < p.lowres_p:
        for c in channels:
            if rng.random() < p.per_channel_p:
                x[..., c] = low_resolution(x[..., c], rng, p.lowres_zoom)
    for invert, prob in ((True, p.inverted_gamma_p), (False, p.gamma_p)):
        if rng.random() < prob:
            for c in channels:
                g = float(np.exp(rng.uniform(np.log(p.gamma[0]), np.log(p.gamma[1]))))
                x[..., c] = gamma_transform(x[..., c], g, invert=invert)
    x[~brain] = 0
    return x
