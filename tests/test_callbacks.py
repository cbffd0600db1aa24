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


def test_whole_case_validation_scores_the_regions_of_the_task(tmp_path):
    """Post-treatment glioma: a label map with its values 1-4 read as that task's and the six regions it scores,
    worked out by hand: the cavity missed is RC Dice 0 and nothing else; the cavity taken for enhancing tumour
    also costs ET, TC and WT (RC is in none of them)."""
    import numpy as np

    from brats_keras.io import Case
    from brats_keras.tasks import TASKS

    from conftest import write_nifti

    post = TASKS["glioma2024-post"]
    labels = np.zeros((4, 4, 4), np.uint8)
    labels[0, :2, :2] = 1      # NETC, 4 voxels
    labels[1, :, :2] = 2       # SNFH, 8
    labels[2, :1, :2] = 3      # ET, 2
    labels[3, :2, :2] = 4      # RC, 4
    write_nifti(tmp_path / "seg.nii.gz", labels)
    truth = post.to_classes(labels)
    case = Case("c", tmp_path, {}, tmp_path / "seg.nii.gz")

    def logs_for(prediction):
        class Predictor:
            def predict_case(self, c):
                return {"classes": prediction}

        callback = WholeCaseValidation([case], lambda model: Predictor(), task=post)
        callback.main_model = lambda: None
        logs = {}
        callback.on_epoch_end(0, logs)
        return logs

    regions = ("WT", "TC", "NETC", "SNFH", "ET", "RC")
    assert logs_for(truth) == {**{f"val_case_dice_{r}": 1.0 for r in regions}, CASE_DICE_MEAN: 1.0}
    missed = logs_for(np.where(truth == 4, 0, truth))
    assert missed == pytest.approx({**{f"val_case_dice_{r}": 1.0 for r in regions}, "val_case_dice_RC": 0.0,
                                    CASE_DICE_MEAN: 5 / 6})
    as_et = logs_for(np.where(truth == 4, 3, truth))
    # WT: true 14, predicted 18, 14 shared; TC: true 6, predicted 10, 6 shared; ET: true 2, predicted 6, 2 shared
    assert as_et == pytest.approx({"val_case_dice_WT": 28 / 32, "val_case_dice_TC": 12 / 16, "val_case_dice_NETC": 1.0,
                                   "val_case_dice_SNFH": 1.0, "val_case_dice_ET": 4 / 8, "val_case_dice_RC": 0.0,
                                   CASE_DICE_MEAN: (28 / 32 + 12 / 16 + 1 + 1 + 4 / 8) / 6})
