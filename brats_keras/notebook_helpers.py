"""The steps the notebooks share: get the cases to work on, train a small model when none is given.

Each notebook starts from its own folder of BraTS cases or, without one, from synthetic cases
(:mod:`brats_keras.synthetic`): :func:`get_data` is that step, one call per notebook. Notebooks 04
and 05 need a trained model and, without one, train a small one first (:func:`train_example_model`).
Nothing here imports Keras until a model is trained.
"""
from __future__ import annotations

from pathlib import Path

from .io import BratsInputError, Case, find_cases
from .synthetic import BRATS_SHAPE, make_dataset

__all__ = ["get_data", "get_cases", "train_example_model"]


def get_data(data_dir, work_dir, n_cases: int, shape=BRATS_SHAPE, workers: int = 1,
             seed: int = 0) -> tuple[Path, Path, dict[str, Case]]:
    """A notebook's "get the data" step: its work folder, and the cases of ``data_dir`` or synthetic ones.

    With ``data_dir`` None, ``n_cases`` synthetic BraTS-like cases of ``shape`` are written into
    ``work_dir/synthetic`` (:func:`get_cases`): a skull-stripped brain with grey matter, white matter and
    ventricles, and tumors with a necrotic core, an enhancing rim and edema around them, in the BraTS 2021
    file layout (``<case>/<case>_flair.nii.gz``, ..., ``<case>_seg.nii.gz``). Prints one line: how many
    cases, and where.

    Returns:
        ``(work_dir, data_dir, {case_id: Case})``, the folders as Paths.
    Raises:
        BratsInputError: ``data_dir`` is not a folder, or holds no BraTS case.
    """
    work_dir = Path(work_dir)
    folder, cases = get_cases(data_dir, work_dir, n_cases, shape=shape, workers=workers, seed=seed)
    if not cases:
        raise BratsInputError(f"{folder}: no BraTS case in this folder (DATA_DIR)")
    print(f"{len(cases)} {'synthetic ' if data_dir is None else ''}cases in {folder}")
    return work_dir, folder, cases


def get_cases(data_dir, work_dir, n_cases: int, shape=BRATS_SHAPE, workers: int = 1,
              seed: int = 0) -> tuple[Path, dict[str, Case]]:
    """The cases a notebook works on: those of ``data_dir``, or synthetic ones when it is None.

    Args:
        data_dir: a folder of BraTS cases (2018-2021 or 2023 names), or None.
        work_dir: the notebook's work folder (created); synthetic cases go to ``work_dir/synthetic``
            (cases already written there are kept, see :func:`brats_keras.synthetic.make_dataset`).
        n_cases, shape, workers, seed: of the synthetic cases.
    Returns:
        ``(data_dir, {case_id: Case})``: the folder read, as a Path, and its cases in order.
    """
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    if data_dir is None:
        data_dir = work_dir / "synthetic"
        make_dataset(data_dir, n_cases, seed=seed, shape=shape, workers=workers)
    data_dir = Path(data_dir)
    return data_dir, {case.case_id: case for case in find_cases(data_dir)}


def train_example_model(cases_dir, work_dir, crop: str = "fixed", workers: int = 1, **settings) -> Path:
    """Convert ``cases_dir`` into ``work_dir/converted`` and train a model on it into ``work_dir/run``.

    The conversion keeps its defaults (the report's FLAIR, T1ce and T2, min-max scaling) but for
    ``crop``; training uses :class:`brats_keras.training.TrainConfig` with one validation batch per
    epoch, per-epoch log lines, and ``settings`` (e.g. ``base_filters=8, epochs=30, val=0.2,
    test=0.2``), which override those two.

    Returns:
        the path of the best checkpoint, ``work_dir/run/checkpoints/best.keras``; the run's
        ``split.json`` beside ``checkpoints/`` lists the held-out cases.
    """
    from .convert import convert_folder
    from .training import TrainConfig, train

    work_dir = Path(work_dir)
    convert_folder(cases_dir, work_dir / "converted", crop=crop, workers=workers)
    cfg = TrainConfig(**{"data": str(work_dir / "converted"), "out": str(work_dir / "run"), "val_steps": 1,
                         "verbose": 2, **settings})
    return Path(train(cfg, overwrite=True)["best"])  # work_dir/run is this helper's own: a rerun trains again
