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
from .geometry import resampled_note, voxel_mm
from .postprocessing import (apply_postprocessing, postprocessing_for_voxels, postprocessing_spec, region_thresholds,
                             thresholds_ignored)
from .preprocessing import box_slices, brain_crop_box, downsample_image, stack_scaled, upsample_probs
from .spec import PreprocessingSpec
from .tasks import DEFAULT_TASK, TASKS, TaskError, get_task


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
        tta: also predict the 7 mirrored copies of each window and average (8 passes; a mirror along an axis
            where the window is 1 voxel thick changes nothing and is left out: 4 passes for slice windows).
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
    mirrors = [axes for axes in MIRROR_AXES if all(patch[a] > 1 for a in axes)] if tta else [()]
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


#: slice windows a slice model predicts per forward pass at least: one 2D slice is far smaller than a 3D window
SLICE_BATCH = 16


def slice_by_slice(predict_slices):
    """A slice model's ``predict_slices`` (axial slices ``(N, H, W, C)`` -> ``(N, H, W, n_out)``) as a function of
    volume windows ``(B, d, h, w, C)`` -> ``(B, d, h, w, n_out)``: every axial slice of every window (one index
    along :data:`brats_keras.io.AXIAL_AXIS`) goes through it in one batch of ``B * (window's axial size)`` slices.
    """
    axis = 1 + bio.AXIAL_AXIS

    def predict(batch):
        moved = np.moveaxis(batch, axis, 1)
        b, n = moved.shape[:2]
        out = np.asarray(predict_slices(np.ascontiguousarray(moved.reshape((b * n,) + moved.shape[2:]))), np.float32)
        return np.moveaxis(out.reshape((b, n) + out.shape[1:]), 1, axis)

    return predict


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


def model_task(info: dict, name):
    """The task a model's info records (``info["task"]``: a task record or name); the default task for a model
    that records none. BratsInputError naming the model for a record that is not a valid task. (The model files'
    own reader of this record, ``checkpoint.info_task``, comes with the task-model branch: this is a shim until
    then.)"""
    try:
        return get_task(info.get("task"))
    except TaskError as exc:
        raise bio.BratsInputError(f"{name}: {exc}") from None


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
        patch_size: window size (default: the training patch size of the first model, ``spec.window``). Slice
            models (2D, :func:`brats_keras.models.is_slice_model`) predict every axial slice
            (:func:`slice_by_slice`) in windows of their own: ``patch_size`` ``N`` is an ``N x N`` slice window for
            them, and by default they take the first slice model's training patch ``(H, W, 1)``. An ensemble of
            slice and volume models slides each kind's windows and averages the probabilities of all its models.
        overlap, batch_size, tta: see :func:`sliding_window`; slice models take at least ``SLICE_BATCH`` slice
            windows per pass.
        The task (its classes, head regions and label values, :mod:`brats_keras.tasks`) is the one the (first)
        model file records (``info["task"]``; the default task for a file that records none): ``self.task``. The
        models of an ensemble must share it (else BratsInputError naming two files).
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

    #: the models' task (set from their info; the default task unless told otherwise)
    task = TASKS[DEFAULT_TASK]

    def __init__(self, model=None, info=None, patch_size=None, overlap=0.5, batch_size=2, tta=False,
                 min_component=None, keep_largest=None, et_threshold=None, postprocess=True,
                 thresholds=None, trust_export=False):
        from .checkpoint import check_head, load_model
        from .models import SLICE_MODELS, is_slice_model, main_output, patch_shape

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
        tasks = [model_task(i, n) for i, n in zip(infos, names)]
        for task, name in zip(tasks[1:], names[1:]):
            if not tasks[0].same_classes(task):
                raise bio.BratsInputError(f"{names[0]} and {name} were trained for different tasks ({tasks[0].name} "
                                          f"and {task.name}): the models of an ensemble need the same classes")
        self.models, self.names = models, names
        self.model = models[0]
        self.info = info
        self.task = tasks[0]
        self.spec = _spec(info, names[0])
        # each kind's window: the first volume model's and the first slice model's, unless patch_size says
        self.slices = [is_slice_model(m) for m in models]
        self.windows = {}
        for m_info, name, is_slice in reversed(list(zip(infos, names, self.slices))):
            window = patch_size or _spec(m_info, name).window
            try:
                self.windows[is_slice] = patch_shape(SLICE_MODELS[0], window) if is_slice else window
            except ValueError as exc:
                raise bio.BratsInputError(f"{name}: {exc}") from None
        self.patch = self.windows[self.slices[0]]
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
            self.post = postprocessing_spec(task=self.task)
        elif isinstance(postprocess, dict):
            self.post = postprocessing_spec(postprocess, task=self.task)
        else:
            self.post = postprocessing_spec(info.get("postprocess"), task=self.task)
        given = isinstance(postprocess, dict)
        if given and thresholds_ignored(self.post, self.spec.regions, self.task):
            raise ValueError(f"{names[0]}: region thresholds apply to models with region outputs "
                             f"({', '.join(self.task.region_order)}); this one has softmax classes (the most "
                             "probable class is taken)")
        n_in = models[0].inputs[0].shape[-1]
        if n_in is not None and n_in != len(self.spec.modalities):
            raise ValueError(f"model expects {n_in} channels but its info lists {len(self.spec.modalities)} modalities")
        self.n_out = models[0].outputs[0].shape[-1]
        expected = self.task.output_channels("regions" if self.spec.regions else "softmax")
        if self.n_out is not None and self.n_out != expected:
            raise bio.BratsInputError(f"{names[0]}: {self.n_out} output channels, but its task {self.task.name} "
                                      f"has {expected} ({'regions' if self.spec.regions else 'classes'})")

    def predict_batch(self, batch, models=None):
        """The mean probabilities of ``models`` (default: all; models of one kind, slice or volume) on a batch of
        windows ``(B, d, h, w, C)``."""
        from .models import is_slice_model

        def run(m):
            return slice_by_slice(m.predict_on_batch)(batch) if is_slice_model(m) else m.predict_on_batch(batch)

        models = self.models if models is None else models
        with _no_retracing_warning():
            if len(models) == 1:
                return run(models[0])
            total = None
            for m in models:
                out = np.asarray(run(m), dtype=np.float32)
                total = out if total is None else total + out
            return total / np.float32(len(models))

    def predict_image(self, image: np.ndarray, progress=False) -> np.ndarray:
        """Probabilities ``(D, H, W, n_out)`` for a preprocessed image ``(D, H, W, C)``: each kind of model (volume,
        slice) slides its own windows, and the probabilities are averaged over all the models."""
        if image.shape[-1] != self.model.inputs[0].shape[-1]:
            raise ValueError(f"image has {image.shape[-1]} channels, the model expects {self.model.inputs[0].shape[-1]}")
        kinds = {}
        for m, is_slice in zip(self.models, self.slices):
            kinds.setdefault(is_slice, []).append(m)
        total = None
        for is_slice, models in kinds.items():
            batch_size = max(self.batch_size, SLICE_BATCH) if is_slice else self.batch_size
            predict = self.predict_batch if len(kinds) == 1 else lambda batch, ms=models: self.predict_batch(batch, ms)
            probs = sliding_window(predict, image, self.windows[is_slice], self.n_out, self.overlap, batch_size,
                                   self.tta, progress)
            if len(kinds) == 1:
                return probs
            total = probs * len(models) if total is None else total + probs * len(models)
        return total / np.float32(len(self.models))

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
        """Class map of probabilities: region models decode the task's head regions in its order with the
        post-processing's region thresholds (:meth:`~brats_keras.tasks.Task.regions_to_classes`); softmax models
        take the most probable of the task's classes."""
        if self.spec.regions:
            return self.task.regions_to_classes(probs, region_thresholds(self.post, self.task))
        return np.argmax(probs, axis=-1).astype(np.uint8)

    def predict_case(self, case: bio.Case, return_probs=False, progress=False) -> dict:
        """Segment one case in its original geometry.

        A case off the working grid (voxels not 1 mm, orientation not LPS) is predicted on it
        (:func:`brats_keras.io.read_modalities`) and its result comes back on the input's own grid
        (:meth:`_on_input_grid`, which adds ``"resampled_from"`` and ``"working_shape"``).

        Returns:
            ``{"classes": (D, H, W) uint8, "probs": (D, H, W, n_out) or None, "affine", "header", "box", "seconds"}``;
            with ``return_probs="box"`` the probabilities of the brain box ``box`` only (outside it they are 0):
            what crossval keeps, without a float32 array of the whole volume (107 MB for a 240x240x155 case).
        Raises:
            BratsInputError for missing modalities or unreadable / inconsistent files.
        """
        t0 = time.time()
        volumes = bio.read_modalities(case, self.spec.modalities)  # on the working grid (resampled where off it)
        vols, affine, header = volumes.arrays, volumes.affine, volumes.header
        box = brain_crop_box(vols)
        image, _ = stack_scaled(vols, box, self.spec.scale)
        factor = self.spec.downsample
        probs = self.predict_image(downsample_image(image, factor), progress=progress)
        if factor > 1:
            probs = upsample_probs(probs, image.shape[:3], factor)
        if volumes.regrid is not None:
            return self._on_input_grid(volumes.regrid, probs, box, return_probs, t0)
        classes = np.zeros(vols[0].shape, np.uint8)
        classes[box_slices(box)] = self.to_classes(probs)
        classes = apply_postprocessing(classes, self.post, self.task)
        full_probs = None
        if return_probs == "box":
            full_probs = probs
        elif return_probs:
            full_probs = np.zeros(vols[0].shape + (probs.shape[-1],), np.float32)
            full_probs[box_slices(box)] = probs
        return {"classes": classes, "probs": full_probs, "affine": affine, "header": header, "box": box,
                "seconds": time.time() - t0}

    def _on_input_grid(self, regrid, probs: np.ndarray, box, return_probs, t0) -> dict:
        """:meth:`predict_case`'s result for a case resampled onto the working grid, back on the input's own grid.

        The brain box's probabilities are resampled linearly onto the input grid and decoded there (rather than
        the decoded labels by nearest neighbour: region borders fall between the working grid's voxels, and a
        thick slice takes the labels its whole thickness predicts, not those of one 1 mm slice); the
        post-processing's sizes are mm^3 (:func:`~brats_keras.postprocessing.postprocessing_for_voxels`).
        Its ``box`` is the whole input grid, ``resampled_from`` the input grid
        (:func:`brats_keras.geometry.describe_grid`), ``working_shape`` the working grid's shape.
        """
        probs = regrid.from_working(probs, order=1, start=[a for a, _ in box])
        voxel_mm3 = float(np.prod(voxel_mm(regrid.source.affine)))
        classes = apply_postprocessing(self.to_classes(probs), postprocessing_for_voxels(self.post, voxel_mm3, self.task),
                                       self.task)
        return {"classes": classes, "probs": probs if return_probs else None, "affine": regrid.source.affine,
                "header": regrid.source.header, "box": tuple((0, s) for s in regrid.source.shape),
                "seconds": time.time() - t0, "resampled_from": regrid.describe(), "working_shape": regrid.shape}


#: label aliases of ``predict --labels``: the conventions' names for their tasks
LABEL_ALIASES = {"2021": "glioma2021", "2023": "brats2023"}
#: the task whose values a case's naming says it stores, for a model of that task's family
_NAMING_TASKS = {"2021": "glioma2021", "2023": "brats2023", "msd": "msd-task01"}


def output_task(model_task, labels=None):
    """The task whose label values ``predict --labels`` asks for: ``labels`` (a task, its name or task file, or
    ``"2021"`` / ``"2023"`` for ``glioma2021`` / ``brats2023``), which must have the classes of ``model_task``
    (:meth:`~brats_keras.tasks.Task.same_classes`); None when ``labels`` is None (each case's own values,
    :func:`case_output_task`).

    Raises:
        BratsInputError ``--labels: ...`` for an unknown task or one with other classes.
    """
    if labels is None:
        return None
    try:
        task = get_task(LABEL_ALIASES.get(str(labels), labels))
    except TaskError as exc:
        raise bio.BratsInputError(f"--labels: {exc} (or 2021, 2023)") from None
    if not model_task.same_classes(task):
        same = [t.name for t in TASKS.values() if model_task.same_classes(t)]
        raise bio.BratsInputError(f"--labels: {task.name} has other classes than the model's task "
                                  f"{model_task.name}: use {', '.join(same)}")
    return task


def case_output_task(model_task, case: bio.Case):
    """The task whose label values a prediction of ``case`` is written with: the one its naming says
    (2018-2021 names: ``glioma2021``, ET 4; 2023+ names: ``brats2023``, ET 3; the Decathlon's: ``msd-task01``)
    where that task has the model's classes, else the model's own. A plain-named case gets the 2023 values from a
    default-task model (ET 3) and the model's own values from any other."""
    naming = getattr(case, "naming", None) or case.layout
    name = _NAMING_TASKS.get(naming)
    if name is None:
        name = "brats2023" if model_task.name == DEFAULT_TASK else model_task.name
    task = TASKS.get(name, model_task)
    return task if model_task.same_classes(task) else model_task


def predict_folder(input_path, output_dir, model=None, labels=None, save_probs=False, progress=True,
                   log=print, case_ids=None, **predictor_kwargs) -> dict:
    """Predict every case under ``input_path`` into ``output_dir/<case>.nii.gz``.

    Labels are written with the values of the case's own task (:func:`case_output_task`: 4 for ET in 2018-2021
    naming, 3 in 2023 naming, the model's task's values where the naming says nothing more) unless ``labels`` names
    a task with the model's classes (``"2021"`` and ``"2023"`` stand for ``glioma2021`` and ``brats2023``;
    :func:`output_task`). ``case_ids`` limits prediction to those cases (e.g. a split's test cases). A bad case, or
    one whose files cannot be written (e.g. no space left on device), is reported in one line and the others are
    still predicted; a case's files are written whole or not at all (:func:`brats_keras.io.atomic_write`), and none
    of them is left when one fails. A case off the working grid is resampled onto it to be predicted, and its
    label map (and probabilities) written back on its own grid, with its own affine and header: a note says so
    in one line.

    Returns:
        ``{"ok": {case: seconds}, "failed": {case: message}, "task": the model's task, "labels": {case: the task
        whose values were written}, "resampled": {case: its own grid}}`` (task names; the grid as
        :func:`brats_keras.geometry.describe_grid` gives it: shape, voxel size, orientation, affine).
    Raises:
        BratsInputError before any work when ``output_dir`` cannot be a folder written into
        (:func:`brats_keras.io.check_output_path`), ``labels`` is not a task with the model's classes, or no case
        is found.
    """
    from tqdm.auto import tqdm

    output_dir = bio.check_output_path(output_dir, folder=True)
    predictor = model if isinstance(model, Predictor) else Predictor(model, **predictor_kwargs)
    asked = output_task(predictor.task, labels)
    cases = bio.find_cases(input_path)
    if case_ids is not None:
        cases = [c for c in cases if c.case_id in set(case_ids)]
    if not cases:
        raise bio.BratsInputError(f"{input_path}: no BraTS cases found")
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise bio.BratsInputError(f"{output_dir}: cannot make the output folder ({bio.os_error_reason(exc)})") from None
    result = {"ok": {}, "failed": {}, "task": predictor.task.name, "labels": {}, "resampled": {}}
    for case in tqdm(cases, desc="predicting", unit="case", disable=not progress):
        written = []
        try:
            pred = predictor.predict_case(case, return_probs=save_probs)
            task = asked or case_output_task(predictor.task, case)
            out_labels = task.to_labels(pred["classes"])
            path = output_dir / f"{case.case_id}.nii.gz"
            bio.save_nifti(path, out_labels, pred["affine"], pred["header"])
            written.append(path)
            if save_probs:
                path = output_dir / f"{case.case_id}_probs.npy"
                bio.atomic_save_npy(path, pred["probs"].astype(np.float16))
                written.append(path)
            result["ok"][case.case_id] = round(pred["seconds"], 3)
            result["labels"][case.case_id] = task.name
            if "resampled_from" in pred:
                result["resampled"][case.case_id] = pred["resampled_from"]
                log(f"note: {case.case_id}: {resampled_note(pred['resampled_from'], pred['working_shape'])} to "
                    "predict; the prediction is on the input's own grid")
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
