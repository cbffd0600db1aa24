"""The Keras callbacks of a training run: checkpoints and log, curves, time limit, TensorBoard, whole-case validation.

:func:`brats_keras.training.train` puts them together. Module-level classes, so that they can be read, tested and
reused on their own; this module imports Keras, ``brats_keras.training`` does only when it trains. What draws the
curves and what predicts a whole case are passed in (by training), so that this module stays below both.
"""
from __future__ import annotations

import time
from pathlib import Path

import keras
import numpy as np

from . import io as bio
from .checkpoint import save_model
from .distributed import local_only
from .io import atomic_copy
from .runs import CASE_DICE_MEAN, _scalar, write_log
from .tasks import get_task


class Checkpoints(keras.callbacks.Callback):
    """End of epoch: last.keras with the training state, best.keras on a new best of ``monitor``, log.csv.

    In that order: last.keras is the commit point (one atomic rename); the other two are rebuilt from it
    by :func:`~brats_keras.runs.recover_run` when a kill comes in between.

    Args:
        run: the run folder.
        info: the preprocessing info stored in every checkpoint (:func:`~brats_keras.checkpoint.model_info`).
        monitor, mode: the log key that picks the best checkpoint, and ``"min"`` or ``"max"``.
        state: the training state so far (:func:`~brats_keras.runs.recover_run`).
    """

    def __init__(self, run, info, monitor, mode, state):
        super().__init__()
        self.run, self.info = Path(run), info
        self.monitor, self.mode, self.state = monitor, mode, state

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        row = {"epoch": epoch, **{k: _scalar(v) for k, v in sorted(logs.items())}}
        state = {**self.state, "epoch": epoch + 1, "log": self.state["log"] + [row]}
        value, best = logs.get(self.monitor), self.state.get("best")
        better = value is not None and value == value and (  # missing or NaN: not computed this epoch
            best is None or (value < best if self.mode == "min" else value > best))
        if better:
            state.update(best=float(value), best_epoch=epoch)
        last = self.run / "checkpoints" / "last.keras"
        with local_only():  # JAX processes: the chief saves alone, without cross-process arrays
            save_model(self.model, last, self.info, state=state)
        if better:
            atomic_copy(last, self.run / "checkpoints" / "best.keras")
        write_log(self.run, state["log"])
        self.state = state


class Curves(keras.callbacks.Callback):
    """End of epoch: redraw ``run/loss_curves.png`` from ``run/log.csv`` (a failed figure never stops training).

    Args:
        run: the run folder.
        draw: ``draw(log_csv, save=png)`` draws the curves (training passes
            :func:`brats_keras.visualize.plot_history`).
    """

    def __init__(self, run, draw):
        super().__init__()
        self.run, self.draw = Path(run), draw

    def on_epoch_end(self, epoch, logs=None):
        try:
            self.draw(self.run / "log.csv", save=self.run / "loss_curves.png")
        except Exception:  # a figure must never stop training
            pass


class TimeLimit(keras.callbacks.Callback):
    """Stop training after the first epoch that ends more than ``minutes`` after this callback was made."""

    def __init__(self, minutes):
        super().__init__()
        self.deadline = time.time() + 60 * minutes

    def on_epoch_end(self, epoch, logs=None):
        if time.time() > self.deadline:
            self.model.stop_training = True


def tensorboard_callback(log_dir):
    """Keras' TensorBoard callback writing epoch scalars to ``log_dir/train`` and ``log_dir/validation``.

    Tags are ``epoch_<log key>`` (``val_`` keys go to validation without the prefix): ``epoch_loss``,
    ``epoch_dice_WT`` ..., ``epoch_learning_rate``, and the whole-case ``epoch_case_dice_WT`` ... on the epochs
    that compute them (their NaN on other epochs is left out). No graph, histograms or profiling: cheap.
    """

    class TensorBoard(keras.callbacks.TensorBoard):
        def on_epoch_end(self, epoch, logs=None):
            kept = {}
            for key, value in (logs or {}).items():
                value = _scalar(value)
                if not isinstance(value, str) and value == value:  # NaN: not computed this epoch
                    kept[key] = value
            super().on_epoch_end(epoch, kept)

    return TensorBoard(log_dir=str(log_dir), write_graph=False, profile_batch=0, update_freq="epoch")


class WholeCaseValidation(keras.callbacks.Callback):
    """Every ``every`` epochs, predict whole validation cases with the sliding window and log
    ``val_case_dice_<region>`` for each region the task scores (WT, TC, ET for the default task; WT, TC, NETC,
    SNFH, ET, RC for post-treatment glioma) and ``val_case_dice_mean``, their mean
    (:data:`brats_keras.runs.CASE_DICE_MEAN`; NaN on other epochs).

    Put it before the checkpoint callbacks; monitor ``val_case_dice_mean`` to keep the checkpoint with the best
    whole-case Dice.

    Args:
        cases: the validation cases (:class:`brats_keras.io.Case`); those without a label map are left out.
        predictor: ``predictor(model)`` gives an object whose ``predict_case(case)["classes"]`` is the case's
            predicted class map (training passes a :class:`brats_keras.inference.Predictor` with the run's info).
        every: compute it every this many epochs.
        task: the task (None: the 2021 glioma task): how the label maps are read and which regions are scored.
    """

    _main = (None, None)  # (the training model, its main output): built once, rebuilt for another model

    def __init__(self, cases, predictor, every: int = 1, task=None):
        super().__init__()
        self.cases = [c for c in cases if c.seg is not None]
        self.predictor, self.every = predictor, every
        self.task = get_task(task)

    def main_model(self):
        """The main output of the model being trained (:func:`brats_keras.models.main_output`), built once
        per model: it shares the model's weights, so it predicts with the current ones every epoch."""
        from . import models

        if self._main[0] is not self.model:
            self._main = (self.model, models.main_output(self.model))
        return self._main[1]

    def truth(self, case) -> np.ndarray:
        """The class map of ``case``'s label map, read as the task's labels."""
        if self.task == get_task(None):
            return bio.load_classes(case.seg)
        labels = bio.load_nifti(case.seg)[0]  # the task's own label values
        try:
            return self.task.to_classes(labels)
        except ValueError as exc:
            raise bio.BratsInputError(f"{case.seg}: {exc}") from None

    def on_epoch_end(self, epoch, logs=None):
        from .evaluation import dice

        if logs is None:
            return
        names = self.task.region_names
        keys = [f"val_case_dice_{r}" for r in names] + [CASE_DICE_MEAN]
        if (epoch + 1) % self.every:
            logs.update({k: float("nan") for k in keys})
            return
        pred = self.predictor(self.main_model())
        scores = []
        for case in self.cases:
            predicted = self.task.classes_to_regions(pred.predict_case(case)["classes"])
            true = self.task.classes_to_regions(self.truth(case))
            scores.append([dice(predicted[..., i], true[..., i]) for i in range(len(names))])
        mean = np.mean(scores, axis=0)
        logs.update({k: float(v) for k, v in zip(keys, list(mean) + [float(mean.mean())])})
