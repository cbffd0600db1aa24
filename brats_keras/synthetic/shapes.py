"""The random shapes of a synthetic brain (:mod:`brats_keras.synthetic`): smooth Gaussian fields upsampled with
cubic splines, the anatomy (brain outline, folded cortex, CSF, deep nuclei) and the tumours (core, necrosis,
enhancing rim, oedema), each drawn from a ``numpy.random.Generator``.

Arrays are ``(D, H, W)`` = ``(x, y, z)`` in the file's voxel order, like BraTS.
"""
from __future__ import annotations

import functools

import numpy as np
from scipy import ndimage

#: the BraTS box in voxels, (x, y, z)
BRATS_SHAPE = (240, 240, 155)
_F32 = np.float32

# --------------------------------------------------------------------------- fields
@functools.lru_cache(maxsize=512)
def _spline_matrix(n_in: int, n_out: int) -> np.ndarray:
    """``(n_out, n_in)`` float32 matrix doing ``ndimage.zoom(v, n_out / n_in, order=3)`` on a vector."""
    eye = np.eye(n_in)
    cols = [ndimage.zoom(eye[i], n_out / n_in, order=3, mode="mirror") for i in range(n_in)]
    mat = np.stack(cols, axis=1).astype(_F32)
    mat.setflags(write=False)  # shared by every call through the cache
    return mat


def upsample(field: np.ndarray, shape) -> np.ndarray:
    """Cubic-spline upsampling of a small 3D ``field`` to ``shape`` (float32).

    Equal, to float32 rounding, to ``scipy.ndimage.zoom(field, shape / field.shape,
    order=3, mode="mirror")``: the spline is separable, so it is done as three small
    matrix products, about 100 times faster than ``zoom`` for a brain-sized output.
    """
    field = np.asarray(field, dtype=_F32)
    shape = tuple(int(s) for s in shape)
    if field.ndim != 3 or len(shape) != 3:
        raise ValueError(f"upsample needs a 3D field and a 3D shape, got {field.shape} -> {shape}")
    mx, my, mz = (_spline_matrix(i, o) for i, o in zip(field.shape, shape))
    out = np.matmul(my, field @ mz.T)  # (a, H, W)
    return (mx @ out.reshape(field.shape[0], -1)).reshape(shape)


def _noise(rng: np.random.Generator, shape, spacing: float) -> np.ndarray:
    """Smooth Gaussian field of ``shape`` (float32, std about 0.8) varying over ``spacing`` voxels."""
    lr = tuple(max(4, int(round(n / spacing)) + 1) for n in shape)
    return upsample(rng.standard_normal(lr, dtype=_F32), shape)


def _ramp(x: np.ndarray) -> np.ndarray:
    """Partial-volume membership ``clip(x + 0.5, 0, 1)`` in place: above 0.5 where ``x > 0``."""
    x += _F32(0.5)
    return np.clip(x, 0, 1, out=x)


def _axis(lo: int, hi: int, centre: float) -> np.ndarray:
    return np.arange(lo, hi, dtype=_F32) - _F32(centre)


def _quadratic_rho(box, centre, m) -> np.ndarray:
    """``sqrt(d^T m d)`` with ``d`` the offset of each voxel of ``box`` from ``centre`` (float32)."""
    dx, dy, dz = (_axis(lo, hi, c) for (lo, hi), c in zip(box, centre))
    m = np.asarray(m, dtype=_F32)
    plane = m[0, 0] * dx[:, None] ** 2 + m[1, 1] * dy[None, :] ** 2 + 2 * m[0, 1] * dx[:, None] * dy[None, :]
    slope = 2 * m[0, 2] * dx[:, None] + 2 * m[1, 2] * dy[None, :]
    rho = slope[:, :, None] * dz
    rho += plane[:, :, None]
    rho += m[2, 2] * dz**2
    np.maximum(rho, 0, out=rho)
    return np.sqrt(rho, out=rho)


def _ellipsoid_form(radii, rot=np.eye(3)) -> np.ndarray:
    """Matrix ``m`` whose ``sqrt(d^T m d)`` is 1 on the ellipsoid of semi-axes ``radii`` turned by ``rot``."""
    rot = np.asarray(rot, dtype=float)
    return rot.T @ np.diag(1.0 / np.asarray(radii, dtype=float) ** 2) @ rot


def _neighbour_extreme(a: np.ndarray, fn) -> np.ndarray:
    """``fn`` (np.minimum or np.maximum) of each voxel and its 6 face neighbours (float32 copy)."""
    out = a.copy()
    for ax in range(3):
        lo = tuple(slice(1, None) if i == ax else slice(None) for i in range(3))
        hi = tuple(slice(None, -1) if i == ax else slice(None) for i in range(3))
        fn(out[lo], a[hi], out=out[lo])
        fn(out[hi], a[lo], out=out[hi])
    return out


def _box(centre, half, shape):
    """Integer box ``((x0, x1), (y0, y1), (z0, z1))`` around ``centre``, clipped to ``shape``."""
    half = np.broadcast_to(np.asarray(half, dtype=float), (3,))
    return tuple(
        (max(0, int(np.floor(c - h))), min(int(n), int(np.ceil(c + h)) + 1))
        for c, h, n in zip(centre, half, shape)
    )


def _sl(box, origin=(0, 0, 0)):
    return tuple(slice(lo - o, hi - o) for (lo, hi), o in zip(box, origin))


def _check_shape(shape) -> tuple[int, int, int]:
    try:
        shape = tuple(int(s) for s in shape)
    except (TypeError, ValueError):
        raise ValueError(f"shape must be three integers of at least 32, got {shape!r}") from None
    if len(shape) != 3 or min(shape) < 32:
        raise ValueError(f"shape must be three integers of at least 32, got {shape!r}")
    return shape


def _check_seed(seed) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    return int(seed)


def brats_affine(shape=BRATS_SHAPE) -> np.ndarray:
    """The voxel-to-world affine of a BraTS 2021 file: 1 mm voxels, x and y flipped.

    For the BraTS box this is ``diag(-1, -1, 1, 1)`` with origin ``(0, 239, 0)``,
    as in the released files; other shapes keep the flips with origin ``(0, H - 1, 0)``.
    """
    affine = np.diag([-1.0, -1.0, 1.0, 1.0])
    affine[1, 3] = float(shape[1] - 1)
    return affine


# --------------------------------------------------------------------------- anatomy
def _anatomy(rng, shape, scale):
    """Brain mask, tissue fractions and depth in the brain's bounding box.

    Returns a dict with ``box`` (the crop in the volume), ``brain`` (bool),
    ``gm``, ``wm`` (float32 fractions; CSF is the rest of the brain), ``csf``,
    ``depth`` (about the distance to the brain surface in voxels), ``ventricles``
    (bool) and the ellipsoid's ``centre`` and ``radii`` (volume voxels).
    """
    box, centre, radii, depth = _brain_outline(rng, shape, scale)
    brain = depth > 0
    csf, wm = _cortex(rng, box, centre, radii, depth, scale)
    c0 = centre - np.array([lo for lo, _ in box], dtype=float)
    ventricles = _deep_structures(rng, c0, radii, scale, csf, wm)
    gm = np.subtract(1, csf)
    gm -= wm
    np.clip(gm, 0, 1, out=gm)
    return dict(
        box=box, brain=brain, csf=csf, gm=gm, wm=wm, depth=depth,
        ventricles=ventricles, centre=c0, radii=radii,
    )


def _brain_outline(rng, shape, scale):
    """The deformed ellipsoid of the brain: ``(box, centre, radii, depth)``.

    ``box`` is the brain's crop in the volume, ``centre`` and ``radii`` the ellipsoid's (volume
    voxels), ``depth`` (float32, crop) about the distance to the brain surface in voxels,
    positive inside.
    """
    shape_a = np.asarray(shape, dtype=float)
    # BraTS brains: about 140 x 170 x 130 voxels, centred in x and y, a little low in z
    centre = shape_a * np.array([0.5, 0.5, 0.48]) + rng.uniform(-3, 3, 3) * scale
    radii = shape_a * np.array([70 / 240, 85 / 240, 65 / 155]) * rng.uniform(0.94, 1.05, 3)
    box = _box(centre, radii * 1.1, shape)
    crop = tuple(hi - lo for lo, hi in box)

    # normalised radius r (1 on the ellipsoid) and 1 / |grad r|, which turns 1 - r into voxels
    u = [_axis(lo, hi, c) / _F32(rad) for (lo, hi), c, rad in zip(box, centre, radii)]
    w = [ui / _F32(rad) for ui, rad in zip(u, radii)]
    eps = _F32(1e-6)
    r = u[0][:, None, None] ** 2 + (u[1][:, None] ** 2 + (u[2] ** 2 + eps))[None]
    inv_grad = w[0][:, None, None] ** 2 + (w[1][:, None] ** 2 + (w[2] ** 2 + eps / _F32(radii.min() ** 2)))[None]
    np.divide(r, inv_grad, out=inv_grad)
    np.sqrt(inv_grad, out=inv_grad)
    np.sqrt(r, out=r)
    # radius perturbed by a low-frequency field: the deformed ellipsoid
    depth = _noise(rng, crop, 28 * scale)
    np.clip(depth, -2, 2, out=depth)
    depth *= _F32(0.045)
    depth += _F32(1.0)
    depth -= r
    depth *= inv_grad
    return box, centre, radii, depth


def _cortex(rng, box, centre, radii, depth, scale):
    """CSF and white-matter fractions (float32, crop) of the folded cortex: ``(csf, wm)``.

    Layers CSF | GM | WM by depth. Along the zero sheets of a random field (sulci) and
    along the midline (fissure) the layers fold inward: the CSF in a slit about 2 voxels
    wide, the grey-white boundary in a wider fold, so grey matter lines both banks of
    each sulcus.
    """
    crop = depth.shape
    sulci = _noise(rng, crop, 12 * scale)
    np.abs(sulci, out=sulci)
    unit = 0.17 / scale  # the field changes by about this much per voxel
    lining = max(1.5, 3.5 * scale)
    fold_depth = _F32(14.0 * scale)
    slit = np.clip(1 - sulci / _F32(unit), 0, 1)  # 1 on the sheet, 0 a voxel away
    fold = np.clip(1 - sulci / _F32(unit * (1 + lining)), 0, 1, out=sulci)
    mid = np.abs(_axis(*box[0], centre[0] + rng.uniform(-1.5, 1.5) * scale))
    mid_slit = np.clip(1 - mid / _F32(1.0 + scale), 0, 1) * _F32(0.45 * radii[2] / fold_depth)
    mid_fold = np.clip(1 - mid / _F32(1.0 + scale + lining), 0, 1) * _F32(0.45 * radii[2] / fold_depth)
    np.maximum(slit, mid_slit[:, None, None], out=slit)
    np.maximum(fold, mid_fold[:, None, None], out=fold)
    t_csf = max(0.8, 1.5 * scale)
    # csf = ramp(t_csf - (depth - fold_depth * slit))
    csf = np.multiply(slit, fold_depth, out=slit)
    csf -= depth
    csf += _F32(t_csf)
    _ramp(csf)
    thick = _noise(rng, crop, 18 * scale)  # cortical thickness varies by about +-25 %
    thick *= _F32(1.2 * scale)
    thick += _F32(t_csf + max(2.0, 4.5 * scale))
    # wm = ramp(depth - fold_depth * fold - thick)
    fold *= -fold_depth
    fold += depth
    fold -= thick
    wm = _ramp(fold)
    del thick
    wm -= csf  # the ramps hardly overlap (the cortex is at least 2 voxels thick): keep wm + csf <= 1
    np.maximum(wm, 0, out=wm)
    return csf, wm


def _deep_structures(rng, c0, radii, scale, csf, wm):
    """Add the lateral ventricles (to ``csf``) and the deep grey nuclei (out of ``wm``), in place.

    The ventricles are two deformed ellipsoids above the centre ``c0`` (crop voxels), turned
    so they diverge towards the back (larger y index: the BraTS y axis points backwards);
    the nuclei (basal ganglia, thalami) sit beside them. Returns the ventricles (bool, crop).
    """
    crop = csf.shape
    ventricles = np.zeros(crop, dtype=bool)
    vr = np.array([6.0, 26.0, 11.0]) * scale * rng.uniform(0.85, 1.15, 3)
    vc = c0 + np.array([0.0, 4.0 * scale, 0.14 * radii[2]]) + rng.uniform(-2, 2, 3) * scale
    nr = np.array([8.0, 14.0, 9.0]) * scale * rng.uniform(0.9, 1.1, 3)
    for side in (-1, 1):
        c = vc + np.array([side * (vr[0] + 3 * scale), 0, 0])
        a = -side * np.deg2rad(rng.uniform(8, 18))
        rot = np.array([[np.cos(a), np.sin(a), 0], [-np.sin(a), np.cos(a), 0], [0, 0, 1]])
        vbox = _box(c, vr.max() * 1.3 + 2, crop)
        edge = _noise(rng, tuple(hi - lo for lo, hi in vbox), 10 * scale)
        edge *= _F32(0.12)
        edge += _F32(1.0)
        edge -= _quadratic_rho(vbox, c, _ellipsoid_form(vr, rot))
        edge *= _F32(vr.min())
        frac = _ramp(edge)
        sl = _sl(vbox)
        ventricles[sl] |= frac >= 0.5
        np.maximum(csf[sl], frac, out=csf[sl])
        wm[sl] *= 1 - frac
        # nuclei turn up to 75 % of the white matter grey
        c = c0 + np.array([side * 20, 6, 0]) * scale
        nbox = _box(c, nr.max() * 1.2 + 2, crop)
        nuc = 1 - _quadratic_rho(nbox, c, _ellipsoid_form(nr))
        nuc *= _F32(nr.min())
        _ramp(nuc)
        nuc *= _F32(0.75)
        wm[_sl(nbox)] *= 1 - nuc
    return ventricles


# --------------------------------------------------------------------------- tumours
def _tumour(rng, anat, scale, taken, necrotic: bool):
    """Draw one tumour that fits; return ``(box, m_wt, m_tc, m_ncr, q)`` in crop voxels.

    ``m_*`` are soft memberships of WT, TC and NCR (labelled where >= 0.5); ``q`` is
    1 next to the core and falls to 0 at the oedema's edge. ``taken`` (bool, crop)
    marks the cores drawn so far and is updated.
    """
    shrink = 1.0
    for attempt in range(1, 1000):
        if attempt % 100 == 0:
            shrink *= 0.8  # no room for this size: try smaller ones
        t = _draw_tumour(rng, anat, scale, shrink, necrotic)
        if not _centre_fits(anat, taken, t):
            continue
        form = _ellipsoid_form(t["axes"], t["rot"])  # rho = distance in voxels, stretched by axes
        reach = 1.3 * t["r_core"] + max(2.5, 1.45 * (t["r_ed"] - t["r_core"])) + 1  # largest oedema radius
        box = _box(t["centre"], reach * np.sqrt(np.diag(np.linalg.inv(form))) + 2, anat["depth"].shape)
        sl = _sl(box)
        rho = _quadratic_rho(box, t["centre"], form)
        core, m_tc = _tumour_core(rng, rho, t["r_core"])
        tc = m_tc >= 0.5
        if not _core_fits(anat, taken, sl, tc):
            continue
        m_ncr = _necrosis(rng, rho, core, t["r_core"], t["rim"]) if necrotic else np.zeros(rho.shape, dtype=_F32)
        m_wt, q = _oedema(rng, anat, sl, rho, core, t["r_core"], t["r_ed"])
        # labels nest: every face neighbour of a core voxel is tumour, of a necrotic voxel core
        np.maximum(m_wt, _neighbour_extreme(m_tc, np.maximum), out=m_wt)
        np.minimum(m_ncr, _neighbour_extreme(m_tc, np.minimum), out=m_ncr)
        taken[sl] |= tc
        return box, m_wt, m_tc, m_ncr, q
    raise RuntimeError("could not place a tumour in this brain")  # pragma: no cover


def _draw_tumour(rng, anat, scale, shrink: float, necrotic: bool) -> dict:
    """Sizes, shape and place of a candidate tumour.

    ``r_ed``, ``r_core`` and ``rim``: radii in voxels of the oedema, the core and the
    enhancing rim; ``axes`` (product 1) and ``rot`` stretch and turn the tumour;
    ``centre`` (crop voxels) lies in the inner 75 % of the brain's ellipsoid, at the
    normalised offset ``u`` from its centre.
    """
    r_ed = rng.uniform(15, 35) * scale * shrink
    r_core = r_ed * rng.uniform(0.45, 0.75) * (1.0 if necrotic else 0.8)
    rim = max(2.5, rng.uniform(2.5, 5.5) * scale)
    axes = np.exp(rng.uniform(-0.2, 0.2, 3))
    axes /= np.prod(axes) ** (1 / 3)
    rot, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    u = rng.normal(size=3)
    u *= rng.uniform() ** (1 / 3) * 0.75 / np.linalg.norm(u)
    return dict(r_ed=r_ed, r_core=r_core, rim=rim, axes=axes, rot=rot, u=u, centre=anat["centre"] + u * anat["radii"])


def _centre_fits(anat, taken, t: dict) -> bool:
    """Whether the tumour's centre is off the midline (in one hemisphere), inside the crop, deep
    enough for its core, and outside the ventricles and the cores drawn so far."""
    depth = anat["depth"]
    ci = tuple(int(round(v)) for v in t["centre"])
    return not (
        abs(t["u"][0]) < 0.18
        or not all(0 <= i < n for i, n in zip(ci, depth.shape))
        or depth[ci] < 1.3 * t["r_core"] * t["axes"].max() + 3
        or anat["ventricles"][ci]
        or taken[ci]
    )


def _tumour_core(rng, rho, r_core: float):
    """The core's radius field (``r_core`` +-30 % at most) and its membership: ``(core, m_tc)``."""
    core = _noise(rng, rho.shape, max(4.0, r_core / 1.3))
    np.clip(core, -1.5, 1.5, out=core)
    core *= _F32(0.2 * r_core)
    core += _F32(r_core)
    return core, _ramp(core - rho)


def _core_fits(anat, taken, sl, tc) -> bool:
    """Whether the core sits inside the brain, clear of the ventricles and of the other cores."""
    return not (
        not tc.any()
        or anat["depth"][sl][tc].min() < 3
        or anat["ventricles"][sl][tc].mean() > 0.03
        or taken[sl][tc].any()
    )


def _necrosis(rng, rho, core, r_core: float, rim: float):
    """Necrosis membership: the core less an irregular rim, at least 2.5 voxels thick."""
    thick = _noise(rng, rho.shape, max(3.0, r_core / 2))
    np.clip(thick, -1.5, 1.5, out=thick)
    thick *= _F32(0.4 * rim)
    thick += _F32(rim)
    np.maximum(thick, _F32(2.5), out=thick)
    m_ncr = np.subtract(core, thick, out=thick)
    m_ncr -= rho
    return _ramp(m_ncr)


def _oedema(rng, anat, sl, rho, core, r_core: float, r_ed: float):
    """Oedema: an irregular margin beyond the core, wider in white than in grey matter.

    Returns ``(m_wt, q)``: the whole tumour's membership and ``q``, 1 next to the core
    falling to 0 at the oedema's edge.
    """
    margin = _noise(rng, rho.shape, max(4.0, r_ed / 3))
    np.clip(margin, -1.5, 1.5, out=margin)
    margin *= _F32(0.3)
    margin += _F32(1.0)
    margin *= _F32(0.6) + _F32(0.4) * anat["wm"][sl]
    margin *= _F32(r_ed - r_core)
    np.maximum(margin, _F32(2.5), out=margin)
    dist = rho - core  # voxels beyond the core
    m_wt = _ramp(margin - dist)
    m_wt *= 1 - anat["csf"][sl]  # oedema does not fill CSF ...
    np.maximum(m_wt, _ramp(_F32(2.5) - dist), out=m_wt)  # ... except right around the core
    np.divide(dist, margin, out=dist)
    q = np.clip(np.subtract(1, dist, out=dist), 0, 1, out=dist)
    return m_wt, q


# --------------------------------------------------------------------------- task structures
def _ensure_fluid(tc, ncr) -> None:
    """Give a tumour box whose core holds no fluid voxel (``ncr >= 0.5``: a small core may be all rim) one, in
    place: its core's deepest voxel (the largest distance to the core's edge)."""
    core = tc >= 0.5
    if core.any() and not (ncr >= 0.5).any():
        deepest = np.unravel_index(np.argmax(ndimage.distance_transform_edt(core)), core.shape)
        ncr[deepest] = 1


def _rim_split(rng, tc, ncr, share: float, scale: float) -> np.ndarray:
    """Membership (float32, tumour box) of the non-enhancing part of the core's rim (the core less its fluid).

    The rim voxels beyond a random plane through the core's centre, bent by a smooth field, are non-enhancing:
    ``share`` of them, and at least one rim voxel on each side where the rim has two.
    """
    rim = (tc >= 0.5) & (ncr < 0.5)
    if rim.sum() < 2:
        return np.zeros(tc.shape, dtype=_F32)
    centre = np.argwhere(tc >= 0.5).mean(axis=0)
    normal = rng.normal(size=3)
    normal /= np.linalg.norm(normal)
    side = _noise(rng, tc.shape, max(4.0, 8 * scale))
    side *= _F32(2.0 * scale + 1)
    for ax in range(3):
        shape = [1, 1, 1]
        shape[ax] = tc.shape[ax]
        side += (_F32(normal[ax]) * (np.arange(tc.shape[ax], dtype=_F32) - _F32(centre[ax]))).reshape(shape)
    values = np.sort(side[rim])
    k = min(len(values) - 1, max(1, int(round(share * len(values)))))  # rim voxels above the threshold
    side -= (values[-k - 1] + values[-k]) / 2
    return _ramp(side)
