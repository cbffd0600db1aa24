"""The steps the notebooks share: get the cases to work on, train a small model when none is given.

Each notebook starts from its own folder of BraTS cases or, without one, from synthetic cases
(:mod:`brats_keras.synthetic`); notebooks 04 and 05 need a trained model and, without one, train
a small one first. These functions hold those steps once, so the notebooks only call them.
Nothing here imports Keras until a model is trained.
"""
from __future__ import annotations

from pathlib import Path

from .io import Case, find_cases
from .synthetic import BRATS_SHAPE, make_dataset

__all__ = ["get_cases", "train_example_model"]


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
