"""Training a segmentation model on converted cases, with checkpoints, logs and resume.

It writes a run folder (what it holds, its log and its recovery after a stop: :mod:`brats_keras.runs`).

``train(TrainConfig(...))`` is what ``brats-keras train`` and the notebooks call.
"""
from __future__ import annotations

import contextlib
import json
import math
import numbers
import os
import shutil
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path


from .io import AXIAL_AXIS, BratsInputError, atomic_write_json, find_cases
from .checkpoint import check_task, info_task, init_weights, model_info
from .precision import choose_jit, choose_precision
from .runs import CASE_DICE_MEAN, check_new_run, check_unlocked, read_log, recover_run, run_lock
from .spec import PreprocessingSpec, read_manifest
from .tasks import TaskError, get_task


@dataclass
class TrainConfig:
    """Settings of a training run. Defaults follow the report (Adam 1e-3, plateau to 1e-6, batch 4, 30 epochs)."""

    data: str = ""
    out: str = "runs/unet3d"
    model: str = "unet3d"
    base_filters: int = 16
    depth: int = 4
    norm: str = "batch"
    dropout: float = 0.0
    output: str = "softmax"
    loss: str = "dice+tversky"
    patch_size: int = 128
    batch_size: int = 4
    epochs: int = 30
    steps_per_epoch: int | None = None
    val_steps: int | None = None
    lr: float = 1e-3
    min_lr: float = 1e-6
    lr_factor: float = 0.5
    lr_patience: int = 3
    lr_schedule: str = "plateau"  # plateau (the report: halve on a val-loss plateau) or poly (nnU-Net: lr*(1-t)^0.9)
    early_stopping: int | None = None
    val: float = 0.2
    test: float = 0.0
    split_file: str | None = None
    split_seed: int = 0
    folds: int = 0  # cross-validation: > 1 trains fold ``fold`` of ``folds`` (brats_keras.data.fold_split)
    fold: int = 0
    seed: int = 0
    foreground_ratio: float = 0.33
    # how a tumor-centred patch's centre is drawn: "voxels" (any tumor voxel alike) or "classes" (a tumor class
    # of the case first, each alike, then a voxel of it: nnU-Net's way); brats_keras.data.PatchDataset
    foreground_sampling: str = "voxels"
    augment: bool = True  # False: no augmentation at all, spatial_augment included
    spatial_augment: float = 0.0  # probability of a random rotation and of a random zoom per training patch
    intensity_augment: str = "basic"  # basic: scale / shift / gamma; strong: brats_keras.augment (noise, blur, ...)
    mixed_precision: str = "auto"
    jit_compile: str = "auto"
    distribute: bool = False
    workers: int = 1
    tf_data: bool = False  # TensorFlow backend: feed through tf.data with parallel reads and prefetch
    backbone: str = "resnet18"
    whole_case_every: int = 0
    time_limit: float | None = None  # minutes; training stops after the epoch that passes it
    init_from: str | None = None  # start from these weights: a .keras file or "pretrained" (fine-tuning)
    verbose: int = 1
    # TensorBoard event files in RUN/tensorboard (losses, Dice metrics, learning rate, whole-case Dice): None writes
    # them with the TensorFlow backend when tensorboard is installed, True with any backend (refused in one line
    # without tensorflow and tensorboard), False never
    tensorboard: bool | None = None
    vae: bool = False  # segresnet only: the paper's VAE branch as a training regulariser (fixes the input size)
    # unet3d / residual_unet: auxiliary outputs on the N decoder levels below full resolution, trained with loss
    # weights 1, 1/2, 1/4, ... (brats_keras.deep_supervision); 0: none
    deep_supervision: int = 0
    # before training, also compare every array's sha256 with the manifest's (the sizes and headers of every
    # array are always checked: brats_keras.data.ConvertedCases.check_arrays)
    verify: bool = False
    # the task of the run's data (its record, ``Task.to_dict()``): what the model's head, losses and metrics are
    # sized by. None: the data's (its manifest's task); set to the data's when the run starts; a task given must
    # have the data's classes and regions. A run config without one (older runs) is of the 2021 glioma task
    task: dict | str | None = None

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        """Settings from a dict such as a run's ``config.json``; ValueError naming any unknown setting.

        The empty ``extra`` dict that runs saved before it was removed carry is dropped.
        """
        d = dict(d)
        if d.get("extra") == {}:
            del d["extra"]
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown training settings: {', '.join(unknown)}")
        return cls(**d)

    @classmethod
    def from_recipe(cls, name: str | None = None, **overrides) -> "TrainConfig":
        """The defaults, then the settings of recipe ``name`` (a key of :data:`RECIPES`; None: the defaults
        alone), then ``overrides``: ``TrainConfig.from_recipe("demo", data="conv", epochs=5)``.

        Raises:
            ValueError in one line for an unknown recipe (listing the known ones) or an unknown setting.
        """
        if name is not None and name not in RECIPES:
            raise ValueError(f"unknown recipe {name!r}: use one of {', '.join(RECIPES)}")
        return cls.from_dict({**asdict(cls()), **RECIPES.get(name, {}), **overrides})


#: named recipes: settings that override the defaults (command-line flags override these)
RECIPES = {
    # the report's workflow: 3D U-Net, softmax over 4 classes, Dice + Tversky, 128^3, batch 4, 30 epochs
    "report": {},
    # the demo on synthetic cases: small, fast U-Net with region outputs
    # (batch norm: instance norm left tumor-like false positives in tumor-free windows of whole cases;
    # 48^3 patches at 2 mm see most of the brain and double the steps a time budget buys)
    "demo": dict(base_filters=8, depth=3, norm="batch", output="regions", loss="dice+bce", patch_size=48,
                 batch_size=2, lr=3e-3, foreground_ratio=0.33, lr_schedule="poly"),
    # the shipped model (brats_keras/pretrained/MODEL_CARD.md): data converted with
    # --modalities flair,t1,t1ce,t2 --crop brain --scale zscore --downsample 2
    # (batch norm for the same reason as the demo: with instance norm the real-data model drew edema far
    # from the tumor, WT HD95 17.8 mm against 5.9 mm with batch norm on the same split)
    "pretrained": dict(base_filters=16, depth=4, norm="batch", output="regions", loss="dice+bce", patch_size=64,
                       batch_size=2, epochs=45, steps_per_epoch=50, val_steps=4, lr=1e-3, lr_patience=4,
                       lr_schedule="poly", spatial_augment=0.2,
                       foreground_ratio=0.33, whole_case_every=2, mixed_precision="auto"),
    # the 2D partner of the shipped model (docs/crossval.md): unet2d on 128 x 128 axial slices of a 1 mm conversion
    # (--crop brain --scale zscore, no --downsample: a slice of it is about 144 x 179), batch 16, otherwise the
    # shipped recipe; a step costs about 0.4x the shipped 64^3 batch-2 step on 2 cores (benchmarks/unet2d_bench.py;
    # base 32 would cost as much as the 3D step)
    "unet2d": dict(model="unet2d", base_filters=16, depth=4, norm="batch", output="regions", loss="dice+bce",
                   patch_size=128, batch_size=16, epochs=45, steps_per_epoch=50, val_steps=4, lr=1e-3,
                   lr_patience=4, lr_schedule="poly", spatial_augment=0.2, foreground_ratio=0.33,
                   whole_case_every=2, mixed_precision="auto"),
}


# ----------------------------------------------------------------------------- settings
#: the command-line flag of a setting whose flag is not ``--<setting with dashes>``
_FLAGS = {"output": "--head"}


def flag(name: str) -> str:
    """The ``brats-keras train`` flag of the setting ``name``: ``--patch-size`` for ``patch_size``."""
    return _FLAGS.get(name, "--" + name.replace("_", "-"))


def _whole(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


#: whole-number settings and their least value; those marked optional may also be None (the default)
_WHOLE = {"batch_size": 1, "epochs": 1, "workers": 1, "base_filters": 1, "depth": 1, "lr_patience": 0,
          "whole_case_every": 0, "deep_supervision": 0, "folds": 0, "fold": 0}
_OPTIONAL_WHOLE = {"steps_per_epoch": 1, "val_steps": 1, "early_stopping": 0}
#: real-number settings: (low, low allowed, high, high allowed)
_RANGES = {"lr": (0.0, False, math.inf, False), "min_lr": (0.0, True, math.inf, False),
           "lr_factor": (0.0, False, 1.0, False), "dropout": (0.0, True, 1.0, False),
           "foreground_ratio": (0.0, True, 1.0, True), "spatial_augment": (0.0, True, 1.0, True),
           "val": (0.0, True, math.inf, False), "test": (0.0, True, math.inf, False)}


def _range_text(low, low_in, high, high_in) -> str:
    if high == math.inf:
        return f"a number {'>=' if low_in else '>'} {low:g}"
    return f"a number in {'[' if low_in else '('}{low:g}, {high:g}{']' if high_in else ')'}"


def check_settings(cfg: TrainConfig) -> None:
    """Refuse the numeric settings a run cannot have, before anything is read or written.

    Whole numbers (batch size, epochs, ... at least 1; steps when given at least 1), learning rates (``lr > 0``,
    ``min_lr >= 0``), probabilities within [0, 1], ``val`` and ``test`` as a fraction below 1 or a whole count,
    a ``fold`` below ``folds``, a ``time_limit`` above 0, and the patch size: whole numbers that the model's
    down-sampling divides (:func:`brats_keras.models.size_divisor`; for a slice model, ``N`` or ``(H, W, 1)``:
    :func:`brats_keras.models.patch_shape`). The patch size against the data is checked where the data is read
    (:func:`check_patch_fits`).

    Raises:
        BratsInputError in one line naming the flag and the value: ``--patch-size 15: ...``.
    """
    def refuse(name, problem):
        raise BratsInputError(f"{flag(name)} {getattr(cfg, name)}: {problem}")

    for name, low in _WHOLE.items():
        if not _whole(getattr(cfg, name)) or getattr(cfg, name) < low:
            refuse(name, f"must be a whole number >= {low}")
    for name, low in _OPTIONAL_WHOLE.items():
        value = getattr(cfg, name)
        if value is not None and (not _whole(value) or value < low):
            refuse(name, f"must be a whole number >= {low} (or left out for the default)")
    for name, (low, low_in, high, high_in) in _RANGES.items():
        value = getattr(cfg, name)
        inside = _number(value) and (low <= value if low_in else low < value) and (
            value <= high if high_in else value < high)
        if not inside:
            refuse(name, f"must be {_range_text(low, low_in, high, high_in)}")
    from .data import FOREGROUND_SAMPLING

    if cfg.foreground_sampling not in FOREGROUND_SAMPLING:
        refuse("foreground_sampling", f"must be one of {', '.join(FOREGROUND_SAMPLING)}")
    for name in ("val", "test"):
        if getattr(cfg, name) >= 1 and not float(getattr(cfg, name)).is_integer():
            refuse(name, "a fraction of the cases (below 1) or a whole number of cases")
    if cfg.folds and cfg.fold >= cfg.folds:
        refuse("fold", f"must be below --folds {cfg.folds}")
    if cfg.folds == 1:
        refuse("folds", "a cross-validation needs at least 2 folds (0: none)")
    if cfg.time_limit is not None and not (_number(cfg.time_limit) and cfg.time_limit > 0):
        refuse("time_limit", "must be a number of minutes > 0 (or left out)")
    from .models import size_divisor

    try:
        divisor = size_divisor(cfg.model, cfg.depth, cfg.vae)
    except ValueError as exc:  # an unknown model
        raise BratsInputError(f"--model {cfg.model}: {exc}") from None
    sizes = cfg.patch_size if isinstance(cfg.patch_size, (list, tuple)) else (cfg.patch_size,)
    if not (len(sizes) in (1, 3) and all(_whole(p) and p >= 1 for p in sizes)):
        refuse("patch_size", "must be a whole number >= 1 (or three of them)")
    try:
        sizes = _data_patch(cfg) if len(sizes) == 3 else sizes  # a slice model's: the in-plane sizes
    except ValueError as exc:
        refuse("patch_size", str(exc).split(": ", 1)[1])
    if any(p % divisor for p in sizes):
        why = "its encoder's five stride-2 steps" if divisor == 32 and cfg.model == "sm_unet" else \
            f"--depth {cfg.depth}: one halving per level" + (", and one more for --vae" if cfg.vae else "")
        refuse("patch_size", f"must be a multiple of {divisor} for --model {cfg.model} ({why})")


def check_patch_fits(cfg: TrainConfig, largest, data) -> None:
    """Refuse a patch larger than the data: along an axis, more than the largest case (``largest``, ``(D, H, W)``)
    rounded up to a multiple of the model's :func:`~brats_keras.models.size_divisor` (patches past a case's
    edge are padded with zeros: a patch far larger than every case trains on padding, slowly).

    Raises:
        BratsInputError in one line naming ``--patch-size``, the largest case's size and the most it may be.
    """
    from .models import SLICE_MODELS, patch_shape, size_divisor

    divisor = size_divisor(cfg.model, cfg.depth, cfg.vae)
    window = patch_shape(cfg.model, cfg.patch_size)
    sizes = tuple(window) if isinstance(window, (list, tuple)) else (window,) * 3
    # a slice model's patch is 1 voxel along the axial axis, which it does not down-sample
    divisors = [1 if cfg.model in SLICE_MODELS and axis == AXIAL_AXIS else divisor for axis in range(3)]
    most = tuple(-(-n // d) * d for n, d in zip(largest, divisors))
    if any(p > m for p, m in zip(sizes, most)):
        raise BratsInputError(f"--patch-size {cfg.patch_size}: larger than the data: the largest case in {data} is "
                              f"{' x '.join(map(str, largest))} voxels, so at most {' x '.join(map(str, most))} "
                              f"(multiples of {divisor} that cover it)")


def _data_patch(cfg: TrainConfig):
    """The ``patch_size`` :class:`~brats_keras.data.PatchDataset` cuts for ``cfg``: ``cfg.patch_size`` for a volume
    model, ``(H, W)`` axial slices for a slice model (ValueError for a patch it cannot have)."""
    from .models import SLICE_MODELS, patch_shape

    window = patch_shape(cfg.model, cfg.patch_size)
    if cfg.model not in SLICE_MODELS:
        return window
    return tuple(p for axis, p in enumerate(window) if axis != AXIAL_AXIS)


# ----------------------------------------------------------------------------- building
def build_from_config(cfg: TrainConfig, n_channels: int):
    """Build the model named in ``cfg``, its head sized by ``cfg.task`` (None: the 2021 glioma task)."""
    from .models import build_model

    kwargs = dict(in_channels=n_channels, output=cfg.output, task=cfg.task)
    if cfg.model == "sm_unet":
        kwargs.update(backbone=cfg.backbone)
    else:
        kwargs.update(base_filters=cfg.base_filters, depth=cfg.depth, norm=cfg.norm, dropout=cfg.dropout)
    if cfg.vae:
        if cfg.model != "segresnet":
            raise ValueError(f"vae works with model segresnet only, not {cfg.model}")
        kwargs.update(vae=True, patch_size=cfg.patch_size)
    if cfg.deep_supervision:
        kwargs.update(deep_supervision=cfg.deep_supervision)
    return build_model(cfg.model, **kwargs)


def _check_given_model(model, cfg: TrainConfig, n_channels: int, multi: bool) -> None:
    """Refuse (BratsInputError, one line) a user-built model that cannot train on this run's data."""
    from .checkpoint import check_head

    if multi:
        raise BratsInputError("train(model=...) trains on one process: with several workers give cfg.model")
    given = model.inputs[0].shape[-1]
    if given is not None and given != n_channels:
        raise BratsInputError(f"the model given takes {given} channels, the data at {cfg.data} has {n_channels}")
    check_head(model, {"output": cfg.output, "task": get_task(cfg.task).to_dict()}, "the model given")


def compile_model(model, cfg: TrainConfig, policy: str):
    import keras

    from .deep_supervision import compile_arguments
    from .losses import get_loss
    from .metrics import report_metrics

    opt = keras.optimizers.Adam(learning_rate=cfg.lr)
    if policy == "mixed_float16" and not isinstance(opt, keras.optimizers.LossScaleOptimizer):
        opt = keras.optimizers.LossScaleOptimizer(opt)
    model.compile(optimizer=opt, **compile_arguments(get_loss(cfg.loss, output=cfg.output),
                                                     report_metrics(cfg.output, cfg.task), len(model.outputs)),
                  jit_compile=choose_jit(cfg.jit_compile))
    return model


#: what a model whose weights start a run (--init-from) must share with the run's data
# ----------------------------------------------------------------------------- callbacks
def _monitor(cfg):
    """What picks the best checkpoint: whole-case Dice when it is computed, else validation loss."""
    return CASE_DICE_MEAN if cfg.whole_case_every else "val_loss"


def whole_case_callback(cases, info, every: int = 1, patch_size=None, overlap=0.5, batch_size=2):
    """A :class:`brats_keras.callbacks.WholeCaseValidation` over ``cases`` that predicts each epoch it runs with a
    :class:`~brats_keras.inference.Predictor` of the model's main output (``info``: the run's model-file info)."""
    from .callbacks import WholeCaseValidation
    from .inference import Predictor

    return WholeCaseValidation(cases, lambda model: Predictor(model, info=info, patch_size=patch_size,
                                                              overlap=overlap, batch_size=batch_size), every=every,
                               task=info_task(info))


def whole_case_validation(cfg, val_ids, info):
    """The whole-case validation callback over the original NIfTI files of the validation cases."""
    manifest = read_manifest(cfg.data)
    cases = []
    for cid in val_ids:
        seg = manifest["cases"][cid].get("seg")
        if seg:
            cases += [c for c in find_cases(Path(seg).parent) if c.case_id == cid]
    return whole_case_callback(cases, info, every=cfg.whole_case_every, patch_size=info["patch_size"])


def _one_line(exc, limit: int = 300) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[:limit] + "..."


def use_tensorboard(cfg) -> bool:
    """Whether a run writes TensorBoard event files (see ``TrainConfig.tensorboard``).

    Raises:
        BratsInputError when ``cfg.tensorboard`` is True and TensorFlow or TensorBoard (Keras' TensorBoard
        callback writes through ``tf.summary``, which needs the tensorboard package) is not installed.
    """
    import importlib.util

    import keras

    if cfg.tensorboard is False:
        return False
    if cfg.tensorboard is None and keras.backend.backend() != "tensorflow":
        return False  # auto: no TensorFlow import under another backend
    missing = [m for m in ("tensorflow", "tensorboard") if importlib.util.find_spec(m) is None]
    if missing and cfg.tensorboard:
        raise BratsInputError(f"--tensorboard needs {' and '.join(missing)} for its event files "
                              f"(pip install {' '.join(missing)})")
    return not missing


def _draw_curves(log_csv, save):
    """The run's loss and Dice curves (:func:`brats_keras.visualize.plot_history`; matplotlib is imported only
    when a run draws them)."""
    from .visualize import plot_history

    plot_history(log_csv, save=save)


def _callbacks(cfg, run, info, state, writes: bool = True, agree=float):
    """The run's callbacks (:mod:`brats_keras.callbacks`), in order: learning-rate schedule, (TensorBoard,)
    checkpoints, NaN stop, (time limit, early stopping,) curves; without the ones that write files when
    ``writes`` is False (a worker other than the chief). ``agree`` turns a worker's own minutes spent into
    the number every worker uses (:func:`brats_keras.distributed.agree`), so that a time-limited poly
    schedule sets the same learning rate on all of them."""
    import keras

    from .callbacks import Checkpoints, Curves, TimeLimit, tensorboard_callback

    monitor = _monitor(cfg)
    mode = "max" if "dice" in monitor else "min"
    if cfg.lr_schedule == "plateau":
        schedule = keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=cfg.lr_factor,
                                                     patience=cfg.lr_patience, min_lr=cfg.min_lr, verbose=0)
    elif cfg.lr_schedule == "poly":
        started = time.time()
        schedule = keras.callbacks.LearningRateScheduler(lambda epoch: poly_lr(
            epoch, cfg, elapsed_minutes=agree((time.time() - started) / 60) if cfg.time_limit else 0.0))
    else:
        raise ValueError(f"unknown lr_schedule {cfg.lr_schedule!r}: use plateau or poly")
    cbs = [
        schedule,
        Checkpoints(run, info, monitor, mode, state),
        keras.callbacks.TerminateOnNaN(),
    ]
    if use_tensorboard(cfg):  # after the schedule, which puts the learning rate in the logs
        cbs.insert(1, tensorboard_callback(run / "tensorboard"))
    if cfg.time_limit:
        cbs.append(TimeLimit(cfg.time_limit))
    if cfg.early_stopping:
        cbs.append(keras.callbacks.EarlyStopping(monitor=monitor, mode=mode, patience=cfg.early_stopping))
    cbs.append(Curves(run, _draw_curves))
    if not writes:  # a worker other than the chief: the same decisions, no files
        cbs = [cb for cb in cbs if not isinstance(cb, (Checkpoints, Curves, keras.callbacks.TensorBoard))]
    return cbs


def poly_lr(epoch: int, cfg: TrainConfig, elapsed_minutes: float = 0.0) -> float:
    """nnU-Net's polynomial decay ``lr * (1 - t) ** 0.9``, never below ``min_lr``.

    ``t`` is the share of the run done: ``epoch / epochs``, or, with a ``time_limit``, the share of
    the time budget spent so far (``elapsed_minutes``, this session) when that is larger, so a
    time-limited run still ends on a small learning rate.
    """
    t = epoch / max(1, cfg.epochs)
    if cfg.time_limit:
        t = max(t, elapsed_minutes / cfg.time_limit)
    return max(cfg.min_lr, cfg.lr * max(0.0, 1.0 - t) ** 0.9)


def _absolute_paths(cfg: TrainConfig) -> TrainConfig:
    """``cfg`` with its input paths absolute, so that a resume works from any working directory."""
    def absolute(p):
        return os.path.abspath(p) if p else p

    init_from = cfg.init_from if cfg.init_from in (None, "", "pretrained") else absolute(cfg.init_from)
    return replace(cfg, data=absolute(cfg.data), split_file=absolute(cfg.split_file), init_from=init_from)


# ----------------------------------------------------------------------------- main entry
def _resumed_config(run: Path, cfg: TrainConfig | None) -> tuple[TrainConfig, str | None]:
    """The saved settings of the run folder ``run``, with what a resume may change taken from ``cfg``: a larger
    ``epochs`` (0: the run's own; fewer refused), ``data`` (the data folder moved; checked later by
    :func:`_check_moved_data`) and ``verify``. Returns ``(settings, the data folder the run recorded or None)``."""
    if not (run / "config.json").is_file():
        raise BratsInputError(f"{run}: not a run folder to resume (no config.json)")
    try:
        saved = TrainConfig.from_dict(json.loads((run / "config.json").read_text()))
    except (OSError, ValueError, TypeError) as exc:  # damaged, hand-edited or from another tool
        raise BratsInputError(f"{run / 'config.json'}: not a readable run configuration ({_one_line(exc)})") from None
    recorded = None
    if cfg is not None:
        if cfg.epochs and cfg.epochs < saved.epochs:
            raise BratsInputError(f"--epochs {cfg.epochs}: this run trains {saved.epochs} epochs; give more to "
                                  f"extend it, or leave --epochs out")
        saved.epochs = max(saved.epochs, cfg.epochs or 0)
        if cfg.data and os.path.abspath(cfg.data) != saved.data:
            recorded, saved.data = saved.data, os.path.abspath(cfg.data)
        saved.verify = cfg.verify  # a check of this session's data, not a setting of the run
    saved.out = str(run)  # always the folder given, wherever the run was made, moved or resumed from
    return saved, recorded


#: what a data folder given to a resumed run must share with the run's own (besides its cases)
_DATA_KEYS = ("modalities", "crop", "crop_box", "margin", "scale", "dtype", "downsample")


def _check_moved_data(run: Path, cases, split: dict, recorded) -> None:
    """A data folder given to resume ``run`` (its data moved) must hold the run's cases, preprocessed as the run's
    checkpoint records (or, without a checkpoint, as the data folder ``recorded`` in its config, when it still
    exists); BratsInputError in one line otherwise."""
    from .checkpoint import read_info

    wanted = sorted({c for part in ("train", "val", "test") for c in split.get(part) or []})
    missing = [c for c in wanted if c not in cases.case_ids]
    if missing:
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise BratsInputError(f"{cases.data_dir}: not this run's data: no labelled case {', '.join(missing[:5])}"
                              f"{more} of its split")
    last = run / "checkpoints" / "last.keras"
    theirs = read_info(last) if last.exists() else None
    if not theirs and recorded and (Path(recorded) / "manifest.json").is_file():
        theirs = read_manifest(recorded).get("settings")
    if theirs:
        try:
            ours = PreprocessingSpec.from_dict(theirs)
        except ValueError:
            return  # nothing readable to compare with
        for key, value, mine in cases.spec.differences(ours, _DATA_KEYS):
            raise BratsInputError(f"{cases.data_dir}: not this run's data: {key} {value!r} where the run was "
                                  f"trained with {mine!r}")


def run_task(cfg: TrainConfig, cases, resume=None):
    """The task of a run: for a new run its data's (``cases.task``, the conversion's manifest), for a resumed run
    its own (``cfg.task``; the 2021 glioma task for a run that records none).

    Raises:
        BratsInputError in one line naming both tasks: a task given (``cfg.task``) or a resumed run's task whose
        classes and regions are not the data's (:func:`~brats_keras.checkpoint.check_task`); a task record that
        is not a task.
    """
    data = getattr(cases, "task", None) or get_task(read_manifest(cfg.data).get("task"))
    if cfg.task is None and resume is None:
        return data
    try:
        task = get_task(cfg.task)
    except TaskError as exc:
        raise BratsInputError(f"{'--resume ' + str(resume) if resume is not None else '--task'}: {exc}") from None
    if resume is not None:
        check_task(task, data, f"--resume {resume}", f"the data at {cfg.data}")
        return task
    if task != data and not task.same_classes(data):
        raise BratsInputError(f"--task {task.name}: the data at {cfg.data} is task {data.name} (other classes or "
                              "regions): refused")
    return data


def train(cfg: TrainConfig | None = None, resume: str | os.PathLike | None = None, extra_callbacks=(),
          overwrite: bool = False, model=None):
    """Train a model; return ``{"run": Path, "history": [...], "best": Path, "last": Path, "seconds": float}``.

    Every setting and the data (every array's size and header, with ``cfg.verify`` its checksum) are checked
    before the run folder is made or changed; a bad one is a BratsInputError in one line. The run folder is
    locked while the training writes it (:mod:`brats_keras.runs`): a second training of the same folder is
    refused, naming the first's pid.

    Args:
        cfg: the settings. With ``resume``, only these count: a larger ``epochs`` (0: the run's own; fewer is
            refused), ``data`` (the run's data folder moved there: it must hold the run's cases, preprocessed
            alike) and ``verify``; the rest of the run's settings come from its ``config.json``.
        resume: a run folder: continue from ``checkpoints/last.keras`` with its saved config,
            optimizer state, split and log.
        extra_callbacks: more Keras callbacks (e.g. whole-case validation).
        overwrite: start a new run in a folder that holds an earlier one, deleting its checkpoints, log and
            TensorBoard files (without it such a folder is refused, naming ``--resume`` and ``--overwrite``).
        model: a Keras model you built, trained instead of the one ``cfg.model`` names (``train(cfg,
            model=my_unet)``); compiled with ``cfg``'s loss, metrics and optimizer unless it is compiled already.
            It must take the data's channels and end in ``cfg.output``'s head (else BratsInputError); a resumed
            run continues from its checkpoint instead. Not with several workers (their model is built inside
            the distribution strategy).
    """
    import keras

    from . import deep_supervision
    from .augment import check_intensity_mode
    from .checkpoint import load_model
    from .data import ConvertedCases, PatchDataset, fold_split, load_split, save_split, split_cases, tumor_sizes

    recorded = None
    if resume is not None:
        if overwrite:
            raise BratsInputError("--overwrite starts a run again, --resume continues it: give one of them")
        cfg, recorded = _resumed_config(Path(resume), cfg)
    elif cfg is None:
        raise ValueError("give a TrainConfig or a run folder to resume")
    else:
        cfg = _absolute_paths(cfg)
    check_settings(cfg)
    use_tensorboard(cfg)  # a --tensorboard that cannot be honoured is refused before anything is read or made
    run = Path(cfg.out)
    from . import distributed

    workers = distributed.setup(cfg)  # first: JAX's processes must connect before any device is touched
    if workers.is_chief:  # the one that writes the run folder: refused early, before the data is read
        check_unlocked(run)
        if resume is None:
            check_new_run(run, overwrite)
    keras.utils.set_random_seed(cfg.seed)
    policy = choose_precision(cfg.mixed_precision)

    # everything that can fail on bad input (data folder, split, --init-from) runs before the run folder is made
    all_cases = ConvertedCases(cfg.data)
    cfg = replace(cfg, task=run_task(cfg, all_cases, resume).to_dict())
    try:
        info = model_info(cfg, all_cases.spec, cfg.task)
        check_intensity_mode(cfg.intensity_augment)  # else the dataset refuses it after the run folder is made
        deep_supervision.check_config(cfg)
    except ValueError as exc:  # a patch size, output mode, intensity augmentation or deep supervision it cannot have
        raise BratsInputError(f"bad settings: {_one_line(exc)}") from None
    split_path = run / "split.json"
    if cfg.folds and cfg.split_file:
        raise BratsInputError(f"{cfg.split_file}: --folds chooses the validation cases; give --folds or --split-file")
    if resume is not None and split_path.exists():
        split = load_split(split_path)
    elif cfg.folds:
        split = fold_split(all_cases.case_ids, cfg.folds, cfg.fold, seed=cfg.split_seed,
                           sizes=tumor_sizes(all_cases.entries), test=cfg.test)
    elif cfg.split_file:
        split = load_split(cfg.split_file)
    else:
        split = split_cases(all_cases.case_ids, val=cfg.val, test=cfg.test, seed=cfg.split_seed)
    if not split["val"]:
        raise BratsInputError(f"{cfg.split_file or cfg.data}: no validation case: use --val with at least one case")
    if recorded is not None:
        _check_moved_data(run, all_cases, split, recorded)
    used = sorted(set(split["train"]) | set(split["val"]))
    unknown = [c for c in used if c not in all_cases.entries]
    if unknown:
        raise BratsInputError(f"{cfg.split_file or split_path}: no labelled converted case named "
                              f"{', '.join(unknown[:5])}{' ...' if len(unknown) > 5 else ''} in {cfg.data}")
    check_patch_fits(cfg, all_cases.check_arrays(used, checksums=cfg.verify), cfg.data)
    distributed.refuse_unsupported(cfg, workers)
    local_batch = workers.local_batch(cfg.batch_size) if workers.multi else cfg.batch_size  # per replica
    train_ids = distributed.shard(split["train"], workers.index, workers.count) if workers.multi else split["train"]
    # the precision policy is global: set it only now, and put the caller's back if building the model fails
    previous_policy = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(policy)
    try:
        strategy = workers.strategy
        with strategy.scope() if strategy is not None else contextlib.nullcontext():
            if resume is not None and (run / "checkpoints" / "last.keras").exists():
                model, _ = load_model(run / "checkpoints" / "last.keras", compile=True)
            elif model is not None:
                _check_given_model(model, cfg, all_cases.n_channels, workers.multi)
                if not getattr(model, "compiled", False):
                    compile_model(model, cfg, policy)
                if cfg.init_from:
                    init_weights(model, cfg.init_from, info)
            else:
                try:
                    model = build_from_config(cfg, all_cases.n_channels)
                    compile_model(model, cfg, policy)
                except BratsInputError:
                    raise
                except ValueError as exc:  # unknown loss or model, or sizes that do not fit: bad settings
                    raise BratsInputError(f"bad settings: {_one_line(exc)}") from None
                if cfg.init_from:
                    init_weights(model, cfg.init_from, info)
    except BaseException:
        keras.mixed_precision.set_global_policy(previous_policy)
        raise

    local_replicas = workers.replicas // workers.count  # this worker's devices: its batch feeds them all
    # every worker runs the same steps (a worker with one step more would wait for the others in its all-reduce
    # for ever): the single-process default from the whole training split, not from the worker's own shard
    steps = cfg.steps_per_epoch or (max(1, len(split["train"]) // cfg.batch_size) if workers.multi else None)
    train_ds = PatchDataset(cfg.data, train_ids, patch_size=_data_patch(cfg),
                            batch_size=local_batch * local_replicas if workers.multi else cfg.batch_size,
                            output=cfg.output, foreground_ratio=cfg.foreground_ratio, augment=cfg.augment,
                            foreground_sampling=cfg.foreground_sampling,
                            steps_per_epoch=steps, seed=workers.seed(cfg.seed),
                            augmentation={"spatial": cfg.spatial_augment, "intensity": cfg.intensity_augment},
                            workers=cfg.workers,
                            use_multiprocessing=False)
    val_ds = PatchDataset(cfg.data, split["val"], patch_size=_data_patch(cfg), batch_size=cfg.batch_size,
                          output=cfg.output, foreground_ratio=cfg.foreground_ratio, augment=False,
                          foreground_sampling=cfg.foreground_sampling,
                          steps_per_epoch=cfg.val_steps or max(1, len(split["val"]) // cfg.batch_size),
                          seed=cfg.seed + 1, fixed=True)  # the same validation patches every epoch
    if workers.multi:  # each worker its slice of every single-process validation batch
        val_ds = distributed.BatchSlice(val_ds, workers.index, workers.count)

    if cfg.whole_case_every:
        extra_callbacks = [whole_case_validation(cfg, split["val"], info)] + list(extra_callbacks)
    with run_lock(run) if workers.is_chief else contextlib.nullcontext():  # held until the run ends, however
        if workers.is_chief:  # only worker 0 writes the run folder
            if resume is None:  # checked again under the lock: a training that ended since may have left a run
                check_new_run(run, overwrite)
            if resume is None and overwrite:  # nothing of the earlier run in this folder may be resumed or shown
                for name in ("log.csv", "checkpoints/last.keras", "checkpoints/best.keras"):
                    (run / name).unlink(missing_ok=True)
                shutil.rmtree(run / "tensorboard", ignore_errors=True)  # else TensorBoard mixes both runs' curves
            (run / "checkpoints").mkdir(parents=True, exist_ok=True)
            save_split(split, split_path)
            atomic_write_json(run / "config.json", asdict(cfg))

        state = recover_run(run, _monitor(cfg)) if workers.is_chief else distributed.read_run_state(run, resume)
        initial_epoch = state["epoch"]

        train_ds.epoch = initial_epoch
        feed = train_ds
        if cfg.tf_data:
            from .data import tf_dataset

            feed = tf_dataset(train_ds)
        t0 = time.time()
        callbacks = list(extra_callbacks) + _callbacks(cfg, run, info, state, writes=workers.is_chief,
                                                       agree=lambda value: distributed.agree(workers, value))
        if cfg.deep_supervision:  # a label copy per output; the main output's metrics keep their usual names
            feed, val_ds = (deep_supervision.repeat_targets(d, len(model.outputs)) for d in (feed, val_ds))
            callbacks.insert(0, deep_supervision.MainOutputLogs(model.output_names[0]))
        if workers.multi:
            callbacks.append(distributed.stop_together(workers))
        if initial_epoch < cfg.epochs and workers.multi and workers.engine == "tensorflow":
            distributed.fit_tensorflow(model, strategy, feed, val_ds, cfg.epochs, initial_epoch, callbacks,
                                       local_batch, verbose=cfg.verbose and workers.is_chief)
        elif initial_epoch < cfg.epochs:
            model.fit(feed, validation_data=val_ds, epochs=cfg.epochs, initial_epoch=initial_epoch,
                      callbacks=callbacks, verbose=cfg.verbose if workers.is_chief else 0)
        seconds = time.time() - t0
        best = run / "checkpoints" / "best.keras"
        if not best.exists() and workers.is_chief:
            from .checkpoint import save_model
            from .distributed import local_only

            with local_only():
                save_model(model, best, info)
        return {"run": run, "history": read_log(run), "best": best, "last": run / "checkpoints" / "last.keras",
                "seconds": seconds, "model": model, "split": split}

