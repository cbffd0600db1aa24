"""The Keras callbacks of a run (brats_keras.callbacks): what they take from training is passed in."""
from __future__ import annotations

import math

import pytest

from brats_keras.callbacks import Curves, WholeCaseValidation
from brats_keras.runs import CASE_DICE_MEAN


def test_curves_draws_the_run_log_into_loss_curves_png_with_the_function_it_is_given(tmp_path):
    drawn = []
    Curves(tmp_path, lambda log, save: drawn.append((log, save))).on_epoch_end(0, {"loss": 1.0})
    assert drawn == [(tmp_path / "log.csv", tmp_path / "loss_curves.png")]


def test_a_figure_that_fails_never_stops_training(tmp_path):
    def broken(log, save):
        raise RuntimeError("no matplotlib")

    Curves(tmp_path, broken).on_epoch_end(0, {})  # no exception


def test_whole_case_validation_logs_nan_on_the_epochs_it_skips_without_predicting():
    def predictor(model):
        pytest.fail("predicted on an epoch without whole-case validation")

    logs = {}
    WholeCaseValidation([], predictor, every=2).on_epoch_end(0, logs)
    assert set(logs) == {"val_case_dice_WT", "val_case_dice_TC", "val_case_dice_ET", CASE_DICE_MEAN}
    assert all(math.isnan(v) for v in logs.values())
