"""Whole-volume prediction: sliding windows with Gaussian weighting, mirroring TTA,
post-processing, and NIfTI output in the patient's own geometry.

The model file's embedded info (see :mod:`brats_keras.checkpoint`) says which
modalities, in which order, and which scaling the model was trained with; prediction
applies exactly the same preprocessing (scaling computed over the whole volume,
windows laid over the brain's bounding box, background outside it).
"""
from __future__ import annotations

import contextlib
import itertools
import logging
import time
import warnings
from pathlib import Path

import numpy as np

from . import io as bio
from .labels import classes_to_labels, regions_to_classes
from .postprocessing import apply_postprocessing, postprocessing_spec, region_thresholds, thresholds_ignored
from .preprocessing import box_slices, brain_crop_box, downsample_image, stack_scaled, upsample_probs
from .spec import PreprocessingSpec


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


# ----------------------------------------------------------------------------- model files and ensembles
#: preprocessing every model of an ensemble must share (the probabilities are averaged voxel by voxel)
ENSEMBLE_KEYS = ("modalities", "scale", "downsample", "output", "crop")


def model_files(paths) -> list[Path]:
    """Expand model arguments: a ``.keras`` file stays; an ensemble folder (one with ``ensemble.json``, written by
    ``brats-keras ensemble``) gives exactly the files its record lists, each checked against its recorded sha256
    (:func:`brats_keras.ensemble_record.ensemble_files`); any other folder gives its ``*.keras`` files (sorted).

    Raises:
        FileNotFoundError for a path that does not exist; BratsInputError for a folder without ``.keras`` files, or
        an ensemble folder with a listed file missing, an unlisted ``.keras`` file or a changed file.
    """
    from .ensemble_record import ensemble_files, is_ensemble
    from .export import is_export

    if isinstance(paths, (str, Path)):
        paths = [paths]
    out = []
    for p in map(Path, paths):
        if is_export(p, incomplete=True):  # a folder written by brats-keras export: one model
            out.append(p)
        elif is_ensemble(p):
            out += ensemble_files(p)
        elif p.is_dir():
            found = sorted(q for q in p.glob("*.keras") if q.is_file())
            if not found:
                raise bio.BratsInputError(f"{p}: no .keras model file in this folder")
            out += found
        elif not p.exists():
            raise FileNotFoundError(f"{p}: model file not found")
        else:
            out.append(p)
    return out


def check_same_preprocessing(infos, names) -> None:
    """Refuse, in one line naming the two models, an ensemble whose models were trained on differently
    preprocessed data (any of ``ENSEMBLE_KEYS``, compared as :class:`~brats_keras.spec.PreprocessingSpec`,
    so an info that predates a key reads as its default)."""
    specs = [_spec(info, name) for info, name in zip(infos, names)]
    for spec, name in zip(specs[1:], names[1:]):
        for key, first, this in specs[0].differences(spec, ENSEMBLE_KEYS):
            raise bio.BratsInputError(
                f"{names[0]} and {name} were trained with different {key} ({first!r} and "
                f"{this!r}): the models of an ensemble need the same preprocessing")


def _spec(info: dict, name) -> PreprocessingSpec:
    """The spec of a model's info; BratsInputError naming the model when the info is not a valid spec."""
    try:
        return PreprocessingSpec.from_dict(info)
    except ValueError as exc:
        raise bio.BratsInputError(f"{name}: {exc}") from None


# ----------------------------------------------------------------------------- model wrapper
class _RetracingFilter(logging.Filter):
    """Drops TensorFlow's "N out of the last N calls to <function ...> triggered tf.function retracing" warning.

    Each Keras model traces its own predict function once per batch shape, and TensorFlow counts the traces
    of all models together (they share one Python function), so the 5 models of an ensemble, or the folds of a
    cross-validation, make it warn of retracing that is needed and happens once per model.
    """

    def filter(self, record):
        return "triggered tf.function retracing" not in record.getMessage()


@contextlib.contextmanager
def _no_retracing_warning():
    """Hide :class:`_RetracingFilter`'s warning while predicting, and only then."""
    logger, hide = logging.getLogger("tensorflow"), _RetracingFilter()
    logger.addFilter(hide)
    try:
        yield
    finally:
        logger.removeFilter(hide)


class Predictor:
    """A loaded model (or an ensemble of models) plus its preprocessing info, predicting whole cases.

    Args:
        model: a Keras model, a path to a ``.keras`` file, a folder of ``.keras`` files, a folder written by
            ``brats-keras export`` (SavedModel or ONNX, :mod:`brats_keras.export`), or a list of
            these (an ensemble: the probabilities of the models are averaged); None: the shipped
            pretrained model(s) (:func:`brats_keras.pretrained.pretrained_paths`).
        info: preprocessing info (read from the file when ``model`` is a path; merged over it when given),
            a :class:`~brats_keras.spec.PreprocessingSpec` dict; ``self.spec`` is what prediction applies.
            The models of an ensemble must share ``ENSEMBLE_KEYS`` (else BratsInputError naming two files). Each
            network must end in the head its info records, ``"output"`` (else BratsInputError naming it,
            :func:`brats_keras.checkpoint.check_head`).
        patch_size: window size (default: the training patch size of the first model, ``spec.window``).
        overlap, batch_size, tta: see :func:`sliding_window`.
        postprocess: the post-processing, one value: True (default): the one stored in the (first) model file's
            info (``info["postprocess"]``, written by ``brats-keras crossval --choose-postprocessing``); False: none
            at all; a dict: that choice, in the stored form (:func:`~brats_keras.postprocessing.postprocessing_spec`: ``{"min_component": ...,
            "keep_largest": ..., "et_threshold": ..., "thresholds": ...}``, partial is fine: the rest is off),
            e.g. ``{"thresholds": [0.5, 0.5, 0.7]}``. Thresholds other than 0.5 given to a softmax model are
            refused (ValueError): it takes the most probable class.
        min_component, keep_largest, et_threshold, thresholds: deprecated (DeprecationWarning): the same as
            ``postprocess={...}`` with the ones given (not None).
        trust_export: run SavedModel exports (TensorFlow programs that may read and write files); without
            it one is refused (BratsInputError). ONNX exports run either way (:class:`brats_keras.export.ExportedModel`).
    """

    def __init__(self, model=None, info=None, patch_size=None, overlap=0.5, batch_size=2, tta=False,
                 min_component=None, keep_largest=None, et_threshold=None, postprocess=True,
                 thresholds=None, trust_export=False):
        from .checkpoint import check_head, load_model
        from .models import main_output

        if model is None:
            from .pretrained import pretrained_paths

            model = pretrained_paths()
        items = list(model) if isinstance(model, (list, tuple)) else [model]
        if any(isinstance(m, (str, Path)) for m in items):
            items = [q for m in items for q in (model_files(m) if isinstance(m, (str, Path)) else [m])]
        models, infos, names, file_infos = [], [], [], []
        for k, m in enumerate(items):
            if isinstance(m, (str, Path)) and Path(m).is_dir():  # a SavedModel or ONNX export
                from .export import load_exported

                m, file_info = load_exported(m, trust=trust_export)
                names.append(str(items[k]))
            elif isinstance(m, (str, Path)):
                m, file_info = load_model(m, compile=False)
                names.append(str(items[k]))
            else:
                file_info = {}
                names.append(f"model {k + 1}")
            models.append(main_output(m))  # a deep-supervision model predicts with its main output
            file_infos.append(file_info)
            infos.append({**file_info, **(info or {})})
            check_head(models[-1], infos[-1], names[-1])  # the head the outputs are read by is the network's
        if not models:
            raise ValueError("no model given")
        info = infos[0]
        if not info or "modalities" not in info:
            raise ValueError("the model carries no brats_keras info: pass info={'modalities': [...], "
                             "'scale': 'minmax'|'zscore', 'output': 'softmax'|'regions'}")
        own = [(fi, n) for fi, n in zip(file_infos, names) if fi]  # before info= overrides hide a difference
        check_same_preprocessing([fi for fi, _ in own], [n for _, n in own])
        check_same_preprocessing(infos, names)
        for m, name in zip(models[1:], names[1:]):
            if m.outputs[0].shape[-1] != models[0].outputs[0].shape[-1]:
                raise bio.BratsInputError(f"{names[0]} and {name} have different numbers of outputs")
        self.models, self.names = models, names
        self.model = models[0]
        self.info = info
        self.spec = _spec(info, names[0])
        self.patch = patch_size or self.spec.window
        self.overlap, self.batch_size, self.tta = overlap, batch_size, tta
        flags = {k: v for k, v in (("min_component", min_component), ("keep_largest", keep_largest),
                                   ("et_threshold", et_threshold), ("thresholds", thresholds)) if v is not None}
        if flags:
            warnings.warn(f"Predictor({', '.join(f'{k}=' for k in flags)}) is deprecated: pass "
                          f"postprocess={{{', '.join(repr(k) + ': ...' for k in flags)}}}", DeprecationWarning,
                          stacklevel=2)
            if postprocess is True:  # a dict or False given beside them wins
                postprocess = flags
        if postprocess is False:
            self.post = postprocessing_spec()
        elif isinstance(postprocess, dict):
            self.post = postprocessing_spec(postprocess)
        else:
            self.post = postprocessing_spec(info.get("postprocess"))
        given = isinstance(postprocess, dict)
        if given and thresholds_ignored(self.post, self.spec.regions):
            raise ValueError(f"{names[0]}: region thresholds apply to models with region outputs (WT, TC, ET); "
                             "this one has softmax classes (the most probable class is taken)")
        n_in = models[0].inputs[0].shape[-1]
        if n_in is not None and n_in != len(self.spec.modalities):
            raise ValueError(f"model expects {n_in} channels but its info lists {len(self.spec.modalities)} modalities")
        self.n_out = models[0].outputs[0].shape[-1]

    def predict_batch(self, batch):
        with _no_retracing_warning():
            if len(self.models) == 1:
                return self.model.predict_on_batch(batch)
            total = None
            for m in self.models:
                out = np.asarray(m.predict_on_batch(batch), dtype=np.float32)
                total = out if total is None else total + out
            return total / np.float32(len(self.models))

    def predict_image(self, image: np.ndarray, progress=False) -> np.ndarray:
        """Probabilities ``(D, H, W, n_out)`` for a preprocessed image ``(D, H, W, C)``."""
        if image.shape[-1] != self.model.inputs[0].shape[-1]:
            raise ValueError(f"image has {image.shape[-1]} channels, the model expects {self.model.inputs[0].shape[-1]}")
        return sliding_window(self.predict_batch, image, self.patch, self.n_out, self.overlap, self.batch_size,
                              self.tta, progress)

    def window_layout(self, case: bio.Case) -> dict:
        """Where :meth:`predict_case` lays the sliding window's windows on ``case``.

        Returns:
            ``{"factor": the down-sampling factor, "shape": the brain box the windows cover (after
            down-sampling), "patch": the window size per axis, "starts": the window starts per axis}``;
            the windows are every combination of the starts.
        """
        vols, _, _ = bio.load_modalities(case, self.spec.modalities)
        factor = self.spec.downsample
        shape = tuple(-(-(b - a) // factor) for a, b in brain_crop_box(vols))
        patch = (self.patch,) * 3 if np.isscalar(self.patch) else tuple(self.patch)
        padded = tuple(max(s, p) for s, p in zip(shape, patch))  # sliding_window pads a smaller box
        return {"factor": factor, "shape": shape, "patch": patch,
                "starts": [window_starts(s, p, self.overlap) for s, p in zip(padded, patch)]}

    def to_classes(self, probs: np.ndarray) -> np.ndarray:
        """Class map of probabilities: region models use the post-processing's region thresholds."""
        if self.spec.regions:
            return regions_to_classes(probs, region_thresholds(self.post))
        return np.argmax(probs, axis=-1).astype(np.uint8)

    def predict_case(self, case: bio.Case, return_probs=False, progress=False) -> dict:
        """Segment one case in its original geometry.

        Returns:
            ``{"classes": (D, H, W) uint8, "probs": (D, H, W, n_out) or None, "affine", "header", "box", "seconds"}``;
            with ``return_probs="box"`` the probabilities of the brain box ``box`` only (outside it they are 0):
            what crossval keeps, without a float32 array of the whole volume (107 MB for a 240x240x155 case).
        Raises:
            BratsInputError for missing modalities or unreadable / inconsistent files.
        """
        t0 = time.time()
        vols, affine, header = bio.load_modalities(case, self.spec.modalities)
        box = brain_crop_box(vols)
        image, _ = stack_scaled(vols, box, self.spec.scale)
        factor = self.spec.downsample
        probs = self.predict_image(downsample_image(image, factor), progress=progress)
        if factor > 1:
            probs = upsample_probs(probs, image.shape[:3], factor)
        classes = np.zeros(vols[0].shape, np.uint8)
        classes[box_slices(box)] = self.to_classes(probs)
        classes = apply_postprocessing(classes, self.post)
        full_probs = None
        if return_probs == "box":
            full_probs = probs
        elif return_probs:
            full_probs = np.zeros(vols[0].shape + (probs.shape[-1],), np.float32)
            full_probs[box_slices(box)] = probs
        return {"classes": classes, "probs": full_probs, "affine": affine, "header": header, "box": box,
                "seconds": time.time() - t0}


def predict_folder(input_path, output_dir, model=None, labels=None, save_probs=False, progress=True,
                   log=print, case_ids=None, **predictor_kwargs) -> dict:
    """Predict every case under ``input_path`` into ``output_dir/<case>.nii.gz``.

    Labels are written in the input's convention (4 for ET in 2018-2021 naming, 3 in 2023
    naming) unless ``labels`` is ``"2021"`` or ``"2023"``. ``case_ids`` limits prediction to
    those cases (e.g. a split's test cases). A bad case, or one whose files cannot be written
    (e.g. no space left on device), is reported in one line and the others are still predicted;
    a case's files are written whole or not at all (:func:`brats_keras.io.atomic_write`), and
    none of them is left when one fails.

    Returns:
        ``{"ok": {case: seconds}, "failed": {case: message}}``.
    Raises:
        BratsInputError before any work when ``output_dir`` cannot be a folder written into
        (:func:`brats_keras.io.check_output_path`) or no case is found.
    """
    from tqdm.auto import tqdm

    output_dir = bio.check_output_path(output_dir, folder=True)
    predictor = model if isinstance(model, Predictor) else Predictor(model, **predictor_kwargs)
    cases = bio.find_cases(input_path)
    if case_ids is not None:
        cases = [c for c in cases if c.case_id in set(case_ids)]
    if not cases:
        raise bio.BratsInputError(f"{input_path}: no BraTS cases found")
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise bio.BratsInputError(f"{output_dir}: cannot make the output folder ({bio.os_error_reason(exc)})") from None
    result = {"ok": {}, "failed": {}}
    for case in tqdm(cases, desc="predicting", unit="case", disable=not progress):
        written = []
        try:
            pred = predictor.predict_case(case, return_probs=save_probs)
            convention = labels or case.label_convention
            out_labels = classes_to_labels(pred["classes"], convention)
            path = output_dir / f"{case.case_id}.nii.gz"
            bio.save_nifti(path, out_labels, pred["affine"], pred["header"])
            written.append(path)
            if save_probs:
                path = output_dir / f"{case.case_id}_probs.npy"
                bio.atomic_save_npy(path, pred["probs"].astype(np.float16))
                written.append(path)
            result["ok"][case.case_id] = round(pred["seconds"], 3)
        except (bio.BratsInputError, ValueError, OSError) as exc:
            if isinstance(exc, OSError):  # a write failed: the case's other file goes too
                msg = bio.describe_os_error(exc)
                for path in written:
                    try:
                        path.unlink(missing_ok=True)
                    except OSError:
                        pass
            else:
                msg = str(exc).splitlines()[0]
            result["failed"][case.case_id] = msg
            log(f"FAILED {case.case_id}: {msg}")
    return result
