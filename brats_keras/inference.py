"""Whole-volume prediction: sliding windows with Gaussian weighting, mirroring TTA,
post-processing, and NIfTI output in the patient's own geometry.

The model file's embedded info (see :mod:`brats_keras.checkpoint`) says which
modalities, in which order, and which scaling the model was trained with; prediction
applies exactly the same preprocessing (scaling computed over the whole volume,
windows laid over the brain's bounding box, background outside it).
"""
from __future__ import annotations

import itertools
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

from . import io as bio
from .labels import classes_to_labels, regions_to_classes
from .preprocessing import box_slices, brain_crop_box, downsample_image, stack_scaled, upsample_probs


# ----------------------------------------------------------------------------- sliding window
def gaussian_weight(patch, sigma_scale: float = 1 / 8) -> np.ndarray:
    """Importance map ``(p, p, p)`` float32: a Gaussian centred in the patch, sigma = patch * sigma_scale.

    Voxels near a window's edge count less than those at its centre (nnU-Net's weighting).
    """
    grids = [np.exp(-0.5 * ((np.arange(p) - (p - 1) / 2) / (p * sigma_scale)) ** 2) for p in patch]
    w = grids[0][:, None, None] * grids[1][None, :, None] * grids[2][None, None, :]
    w = (w / w.max()).astype(np.float32)
    return np.maximum(w, 1e-3)


def window_starts(size: int, patch: int, overlap: float) -> list[int]:
    """Start indices of windows of length ``patch`` covering ``size`` with at least ``overlap`` overlap."""
    if size <= patch:
        return [0]
    step = max(1, int(patch * (1 - overlap)))
    n = int(np.ceil((size - patch) / step)) + 1
    return sorted({int(round(i * (size - patch) / (n - 1))) for i in range(n)})


MIRROR_AXES = [axes for r in range(4) for axes in itertools.combinations((0, 1, 2), r)]


def sliding_window(predict_fn, image: np.ndarray, patch, n_out: int, overlap: float = 0.5, batch_size: int = 2,
                   tta: bool = False, progress: bool = False) -> np.ndarray:
    """Predict a whole image by overlapping windows.

    Args:
        predict_fn: maps a batch ``(B, p, p, p, C)`` float32 to ``(B, p, p, p, n_out)`` probabilities.
        image: ``(D, H, W, C)`` float32.
        patch: window size, int or 3-tuple; the image is zero-padded where smaller.
        overlap: fraction of a window shared with its neighbour (0.5 as nnU-Net).
        batch_size: windows per forward pass.
        tta: also predict the 7 mirrored copies of each window and average (8 passes).
    Returns:
        probabilities ``(D, H, W, n_out)`` float32.
    """
    patch = (patch,) * 3 if np.isscalar(patch) else tuple(patch)
    shape = image.shape[:3]
    padded = tuple(max(s, p) for s, p in zip(shape, patch))
    if padded != shape:
        tmp = np.zeros(padded + image.shape[3:], np.float32)
        tmp[: shape[0], : shape[1], : shape[2]] = image
        image = tmp
    weight = gaussian_weight(patch)
    acc = np.zeros(padded + (n_out,), np.float32)
    norm = np.zeros(padded, np.float32)
    starts = list(itertools.product(*(window_starts(s, p, overlap) for s, p in zip(padded, patch))))
    mirrors = MIRROR_AXES if tta else [()]
    from tqdm.auto import tqdm

    bar = tqdm(total=len(starts) * len(mirrors), desc="windows", unit="win", disable=not progress, leave=False)
    for axes in mirrors:
        for i in range(0, len(starts), batch_size):
            chunk = starts[i:i + batch_size]
            batch = np.stack([image[s[0]:s[0] + patch[0], s[1]:s[1] + patch[1], s[2]:s[2] + patch[2]]
                              for s in chunk]).astype(np.float32, copy=False)
            if len(chunk) < batch_size and len(starts) >= batch_size:  # one batch shape: no retracing
                batch = np.concatenate([batch, np.zeros((batch_size - len(chunk),) + batch.shape[1:], np.float32)])
            if axes:
                batch = np.flip(batch, [a + 1 for a in axes])
            out = np.asarray(predict_fn(np.ascontiguousarray(batch)), dtype=np.float32)
            if axes:
                out = np.flip(out, [a + 1 for a in axes])
            for s, o in zip(chunk, out[: len(chunk)]):
                sl = (slice(s[0], s[0] + patch[0]), slice(s[1], s[1] + patch[1]), slice(s[2], s[2] + patch[2]))
                acc[sl] += o * weight[..., None]
                norm[sl] += weight
            bar.update(len(chunk))
    bar.close()
    acc /= norm[..., None]
    return acc[: shape[0], : shape[1], : shape[2]]


# ----------------------------------------------------------------------------- post-processing
STRUCT26 = np.ones((3, 3, 3), bool)


def remove_small_components(classes: np.ndarray, min_size: int = 0, keep_largest: int = 0) -> np.ndarray:
    """Drop tumor islands: whole-tumor components (26-connectivity) smaller than ``min_size`` voxels,
    and, when ``keep_largest`` > 0, all but the ``keep_largest`` biggest components."""
    if min_size <= 0 and keep_largest <= 0:
        return classes
    lab, n = ndimage.label(classes > 0, structure=STRUCT26)
    if n == 0:
        return classes
    sizes = np.bincount(lab.ravel())[1:]
    keep = sizes >= max(min_size, 1)
    if keep_largest > 0:
        order = np.argsort(sizes)[::-1]
        top = np.zeros(n, bool)
        top[order[:keep_largest]] = True
        keep &= top
    lut = np.concatenate([[False], keep])
    out = classes.copy()
    out[~lut[lab]] = 0
    return out


def small_et_to_ncr(classes: np.ndarray, threshold: int) -> np.ndarray:
    """The BraTS post-processing rule: if fewer than ``threshold`` voxels are predicted ET, call them NCR.

    (Cases without enhancing tumor score ET Dice 1 only for an empty ET prediction.)
    """
    if threshold <= 0:
        return classes
    et = classes == 3
    n = int(et.sum())
    if 0 < n < threshold:
        classes = classes.copy()
        classes[et] = 1
    return classes


def postprocess(classes, min_component=0, keep_largest=0, et_threshold=0):
    classes = remove_small_components(classes, min_component, keep_largest)
    return small_et_to_ncr(classes, et_threshold)


# ----------------------------------------------------------------------------- model wrapper
class Predictor:
    """A loaded model plus its preprocessing info, predicting whole cases.

    Args:
        model: a Keras model or a path to a ``.keras`` file (None: the shipped pretrained model).
        info: preprocessing info (read from the file when ``model`` is a path).
        patch_size: window size (default: the training patch size).
        overlap, batch_size, tta: see :func:`sliding_window`.
        min_component, keep_largest, et_threshold: see :func:`postprocess` (all off by default).
    """

    def __init__(self, model=None, info=None, patch_size=None, overlap=0.5, batch_size=2, tta=False,
                 min_component=0, keep_largest=0, et_threshold=0, margin=4):
        if model is None or isinstance(model, (str, Path)):
            from .checkpoint import load_model

            if model is None:
                from .pretrained import pretrained_path

                model = pretrained_path()
            model, file_info = load_model(model, compile=False)
            info = {**file_info, **(info or {})}
        if not info or "modalities" not in info:
            raise ValueError("the model carries no brats_keras info: pass info={'modalities': [...], "
                             "'scale': 'minmax'|'zscore', 'output': 'softmax'|'regions'}")
        self.model = model
        self.info = info
        self.patch = patch_size or info.get("patch_size") or 128
        self.overlap, self.batch_size, self.tta = overlap, batch_size, tta
        self.post = dict(min_component=min_component, keep_largest=keep_largest, et_threshold=et_threshold)
        self.margin = margin
        n_in = model.inputs[0].shape[-1]
        if n_in is not None and n_in != len(info["modalities"]):
            raise ValueError(f"model expects {n_in} channels but its info lists {len(info['modalities'])} modalities")
        self.n_out = model.outputs[0].shape[-1]
        self._fn = None

    def predict_batch(self, batch):
        return self.model.predict_on_batch(batch)

    def predict_image(self, image: np.ndarray, progress=False) -> np.ndarray:
        """Probabilities ``(D, H, W, n_out)`` for a preprocessed image ``(D, H, W, C)``."""
        if image.shape[-1] != self.model.inputs[0].shape[-1]:
            raise ValueError(f"image has {image.shape[-1]} channels, the model expects {self.model.inputs[0].shape[-1]}")
        return sliding_window(self.predict_batch, image, self.patch, self.n_out, self.overlap, self.batch_size,
                              self.tta, progress)

    def to_classes(self, probs: np.ndarray) -> np.ndarray:
        if self.info.get("output", "softmax") == "regions":
            return regions_to_classes(probs)
        return np.argmax(probs, axis=-1).astype(np.uint8)

    def predict_case(self, case: bio.Case, return_probs=False, progress=False) -> dict:
        """Segment one case in its original geometry.

        Returns:
            ``{"classes": (D, H, W) uint8, "probs": (D, H, W, n_out) or None, "affine", "header", "box", "seconds"}``.
        Raises:
            BratsInputError for missing modalities or unreadable / inconsistent files.
        """
        t0 = time.time()
        vols, affine, header = bio.load_modalities(case, self.info["modalities"])
        box = brain_crop_box(vols, margin=self.margin)
        image, _ = stack_scaled(vols, box, self.info.get("scale", "minmax"))
        factor = int(self.info.get("downsample", 1))
        probs = self.predict_image(downsample_image(image, factor), progress=progress)
        if factor > 1:
            probs = upsample_probs(probs, image.shape[:3], factor)
        classes = np.zeros(vols[0].shape, np.uint8)
        classes[box_slices(box)] = self.to_classes(probs)
        classes = postprocess(classes, **self.post)
        full_probs = None
        if return_probs:
            full_probs = np.zeros(vols[0].shape + (probs.shape[-1],), np.float32)
            full_probs[box_slices(box)] = probs
        return {"classes": classes, "probs": full_probs, "affine": affine, "header": header, "box": box,
                "seconds": time.time() - t0}


def predict_folder(input_path, output_dir, model=None, labels=None, save_probs=False, progress=True,
                   log=print, case_ids=None, **predictor_kwargs) -> dict:
    """Predict every case under ``input_path`` into ``output_dir/<case>.nii.gz``.

    Labels are written in the input's convention (4 for ET in 2018-2021 naming, 3 in 2023
    naming) unless ``labels`` is ``"2021"`` or ``"2023"``. ``case_ids`` limits prediction to
    those cases (e.g. a split's test cases). A bad case is reported in one line
    and the others are still predicted.

    Returns:
        ``{"ok": {case: seconds}, "failed": {case: message}}``.
    """
    from tqdm.auto import tqdm

    predictor = model if isinstance(model, Predictor) else Predictor(model, **predictor_kwargs)
    cases = bio.find_cases(input_path)
    if case_ids is not None:
        cases = [c for c in cases if c.case_id in set(case_ids)]
    if not cases:
        raise bio.BratsInputError(f"{input_path}: no BraTS cases found")
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    result = {"ok": {}, "failed": {}}
    for case in tqdm(cases, desc="predicting", unit="case", disable=not progress):
        try:
            pred = predictor.predict_case(case, return_probs=save_probs)
            convention = labels or case.label_convention
            out_labels = classes_to_labels(pred["classes"], convention)
            bio.save_nifti(output_dir / f"{case.case_id}.nii.gz", out_labels, pred["affine"], pred["header"])
            if save_probs:
                np.save(output_dir / f"{case.case_id}_probs.npy", pred["probs"].astype(np.float16))
            result["ok"][case.case_id] = round(pred["seconds"], 3)
        except (bio.BratsInputError, ValueError) as exc:
            msg = str(exc).splitlines()[0]
            result["failed"][case.case_id] = msg
            log(f"FAILED {case.case_id}: {msg}")
    return result


# ----------------------------------------------------------------------------- training callback
def whole_case_callback(cases, info, every: int = 1, patch_size=None, overlap=0.5, batch_size=2, prefix="val_case"):
    """A Keras callback: every ``every`` epochs, predict whole validation cases with the sliding window
    and log ``{prefix}_dice_WT/_TC/_ET`` and ``{prefix}_dice_mean`` (NaN on other epochs).

    Put it before the CSV logger and checkpoint callbacks; monitor ``val_case_dice_mean`` to keep the
    checkpoint with the best whole-case Dice.
    """
    import keras

    from .evaluation import dice
    from .labels import REGION_NAMES, classes_to_regions

    cases = [c for c in cases if c.seg is not None]

    class WholeCaseValidation(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if logs is None:
                return
            keys = [f"{prefix}_dice_{r}" for r in REGION_NAMES] + [f"{prefix}_dice_mean"]
            if (epoch + 1) % every:
                logs.update({k: float("nan") for k in keys})
                return
            pred = Predictor(self.model, info=info, patch_size=patch_size, overlap=overlap, batch_size=batch_size)
            scores = []
            for case in cases:
                out = pred.predict_case(case)
                truth = bio.load_classes(case.seg)
                p, t = classes_to_regions(out["classes"]), classes_to_regions(truth)
                scores.append([dice(p[..., i], t[..., i]) for i in range(3)])
            mean = np.mean(scores, axis=0)
            logs.update({k: float(v) for k, v in zip(keys, list(mean) + [float(mean.mean())])})

    return WholeCaseValidation()
