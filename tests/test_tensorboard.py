"""TensorBoard event files of a training run (``brats-keras train --tensorboard``): a tiny run writes them,
and read back with TensorFlow's event reader they hold the loss, the Dice metrics, the learning rate and the
whole-case validation Dice, with the values of log.csv."""
from __future__ import annotations

from collections import defaultdict

import pytest

from brats_keras.cli import main as cli_main
from brats_keras.io import BratsInputError
from brats_keras.runs import read_log
from brats_keras.training import TrainConfig, train, use_tensorboard

from conftest import write_converted_cases


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("tb")
    write_converted_cases(root, 3)
    return root / "conv"


def read_scalars(folder) -> dict:
    """``{tag: {step: value}}`` of every scalar in the event files under ``folder`` (TensorFlow's reader)."""
    import tensorflow as tf

    scalars = defaultdict(dict)
    for path in sorted(folder.glob("events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                scalars[value.tag][event.step] = float(tf.make_ndarray(value.tensor))
    return dict(scalars)


def test_cli_run_writes_loss_dice_learning_rate_and_whole_case_dice(data_dir, tmp_path):
    run = tmp_path / "run"
    rc = cli_main(["train", "--data", str(data_dir), "--out", str(run), "--tensorboard", "--base-filters", "4",
                   "--depth", "2", "--norm", "instance", "--head", "regions", "--loss", "dice+bce",
                   "--patch-size", "16", "--batch-size", "2", "--epochs", "2", "--steps-per-epoch", "2",
                   "--val-steps", "1", "--val", "1", "--lr-schedule", "poly", "--whole-case-every", "2",
                   "--mixed-precision", "off"])
    assert rc == 0
    train_tags, val_tags = read_scalars(run / "tensorboard" / "train"), read_scalars(run / "tensorboard" / "validation")
    assert {"epoch_loss", "epoch_dice_WT", "epoch_dice_TC", "epoch_dice_ET", "epoch_learning_rate"} <= set(train_tags)
    assert {"epoch_loss", "epoch_dice_WT", "epoch_case_dice_WT", "epoch_case_dice_mean"} <= set(val_tags)
    log = read_log(run)
    for epoch, row in enumerate(log):
        assert train_tags["epoch_loss"][epoch] == pytest.approx(row["loss"], rel=1e-6)
        assert val_tags["epoch_loss"][epoch] == pytest.approx(row["val_loss"], rel=1e-6)
        assert train_tags["epoch_dice_WT"][epoch] == pytest.approx(row["dice_WT"], rel=1e-6)
    # the poly schedule: lr * (1 - epoch / epochs) ** 0.9 = 1e-3, then 1e-3 * 0.5 ** 0.9
    assert train_tags["epoch_learning_rate"][0] == pytest.approx(1e-3, rel=1e-6)
    assert train_tags["epoch_learning_rate"][1] == pytest.approx(1e-3 * 0.5**0.9, rel=1e-6)
    # whole-case Dice is computed on epoch 1 only: epoch 0's NaN is not written
    assert set(val_tags["epoch_case_dice_mean"]) == {1}
    assert val_tags["epoch_case_dice_mean"][1] == pytest.approx(log[1]["val_case_dice_mean"], rel=1e-6)


def test_tensorboard_off_writes_no_event_files(data_dir, tmp_path):
    cfg = TrainConfig(data=str(data_dir), out=str(tmp_path / "off"), base_filters=4, depth=2, norm="instance",
                      patch_size=16, batch_size=2, epochs=1, steps_per_epoch=1, val_steps=1, val=1, verbose=0,
                      mixed_precision="off", tensorboard=False)
    train(cfg)
    assert not (tmp_path / "off" / "tensorboard").exists()


def test_setting():
    import keras

    assert use_tensorboard(TrainConfig()) is (keras.backend.backend() == "tensorflow")  # default: auto
    assert use_tensorboard(TrainConfig(tensorboard=False)) is False
    assert use_tensorboard(TrainConfig(tensorboard=True)) is True


def test_tensorboard_without_its_package_is_refused_in_one_line(monkeypatch, data_dir, tmp_path):
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else find_spec(name, *a))
    with pytest.raises(BratsInputError, match=r"^--tensorboard needs tensorboard for its event files "
                                              r"\(pip install tensorboard\)$"):
        train(TrainConfig(data=str(data_dir), out=str(tmp_path / "refused"), tensorboard=True))
    assert not (tmp_path / "refused").exists()  # refused before the run folder is made
    assert use_tensorboard(TrainConfig()) is False  # auto: quietly off


def test_auto_is_off_under_another_backend_without_importing_tensorflow(monkeypatch):
    import keras

    monkeypatch.setattr(keras.backend, "backend", lambda: "jax")
    assert use_tensorboard(TrainConfig()) is False
