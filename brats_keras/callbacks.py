"""The Keras callbacks of a training run (:func:`brats_keras.training.train` puts them together).

Module-level classes, so that they can be read, tested and reused on their own; this module imports Keras,
``brats_keras.training`` does only when it trains.
"""
from __future__ import annotations

import time
from pathlib import Path

import keras

from .checkpoint import save_model
from .distributed import local_only
from .io import atomic_copy
from .training import _scalar, write_log


class Checkpoints(keras.callbacks.Callback):
    """End of epoch: last.keras with the training state, best.keras on a new best of ``monitor``, log.csv.

    In that order: last.keras is the commit point (one atomic rename); the other two are rebuilt from it
    by :func:`~brats_keras.training.recover_run` when a kill comes in between.

    Args:
        run: the run folder.
        info: the preprocessing info stored in every checkpoint (:func:`~brats_keras.training.model_info`).
        monitor, mode: the log key that picks the best checkpoint, and ``"min"`` or ``"max"``.
        state: the training state so far (:func:`~brats_keras.training.recover_run`).
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
    """End of epoch: redraw ``run/loss_curves.png`` from ``run/log.csv`` (a failed figure never stops training)."""

    def __init__(self, run):
        super().__init__()
        self.run = Path(run)

    def on_epoch_end(self, epoch, logs=None):
        try:
            from .visualize import plot_history

            plot_history(self.run / "log.csv", save=self.run / "loss_curves.png")
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
