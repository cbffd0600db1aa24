"""A run folder's files: its log (``log.csv``), the recovery of its state after a stop, and its guards.

A run folder holds::

    config.json          every setting of the run (re-read by ``resume``)
    split.json           the train / val / test case ids
    checkpoints/last.keras, checkpoints/best.keras   (with preprocessing info embedded)
    log.csv              one row per epoch
    loss_curves.png      training and validation loss and Dice per epoch

``checkpoints/last.keras`` is the run's single source of truth: besides the weights and the
optimizer state it holds the training state (epochs done, every log row, the best value and
its epoch). Each epoch ends by replacing it (atomically), then copying it to ``best.keras``
on a new best, then rewriting ``log.csv`` from its rows. A run killed at any point resumes
from ``last.keras`` and repairs the other two to match (see :func:`recover_run`).

Guards: an earlier run is never cleared unasked (:func:`check_new_run`), and one training at a time writes the
folder: a training holds ``RUN/.lock`` (:func:`brats_keras.io.folder_lock`, as convert locks its output folder)
while it writes it; the lock of a training killed with ``kill -9`` blocks nothing, and the next training takes
the file over.
"""
from __future__ import annotations

import contextlib
import csv
import io as _io
import math
from pathlib import Path

from .io import (BratsInputError, atomic_copy, atomic_write_text, check_folder_free, folder_lock,
                 os_error_reason)

#: the log column of the whole-case validation's mean Dice (:class:`brats_keras.callbacks.WholeCaseValidation`),
#: which picks the best checkpoint when it is computed
CASE_DICE_MEAN = "val_case_dice_mean"


# ----------------------------------------------------------------------------- log
def _scalar(value):
    """A log value as a float, or as text when it is not a number."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)


def read_log(run) -> list[dict]:
    """Rows of a run's ``log.csv`` (``run``: the run folder or the CSV) as dicts of floats, without empty cells."""
    path = Path(run) if Path(run).is_file() else Path(run) / "log.csv"
    if not path.exists():
        return []
    with open(path) as f:
        return [{k: float(v) for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(f)]


def write_log(run, rows: list[dict]) -> None:
    """Write ``log.csv`` (atomically) from rows: ``epoch`` first, then the other columns sorted."""
    keys = sorted({k for row in rows for k in row} - {"epoch"})
    text = _io.StringIO()
    writer = csv.DictWriter(text, fieldnames=["epoch"] + keys, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(Path(run) / "log.csv", text.getvalue())


#: files of a run folder that are written through a hidden temporary file ``.<name>.<random><suffix>``
_RUN_FILES = ("config.json", "split.json", "log.csv", "loss_curves.png", "checkpoints/last.keras",
              "checkpoints/best.keras")


def recover_run(run, monitor: str = "val_loss") -> dict:
    """Make a run folder consistent after a stop anywhere (even SIGKILL); return its training state.

    ``checkpoints/last.keras`` is trusted: temporary files left by an interrupted save are deleted,
    ``log.csv`` is rewritten from the rows stored in ``last.keras`` (dropping a row written for an
    epoch whose checkpoint never landed, restoring one whose write was cut off), and ``best.keras``
    is copied from ``last.keras`` when the last epoch was the best but the copy was cut off.
    Runs saved before checkpoints carried their state fall back to ``log.csv``.

    Returns:
        ``{"epoch": epochs done, "log": rows, "best": value or None, "best_epoch": int or None}``.
    """
    from .checkpoint import read_state

    run = Path(run)
    for name in _RUN_FILES:
        path = run / name
        if path.parent.is_dir():
            for tmp in path.parent.glob(f".{path.name}.*"):
                tmp.unlink(missing_ok=True)
    last, best = run / "checkpoints" / "last.keras", run / "checkpoints" / "best.keras"
    state = read_state(last) if last.exists() else {"epoch": 0, "log": []}
    if "epoch" not in state:  # a run saved before checkpoints carried their state: trust log.csv
        rows = [{**r, "epoch": int(r["epoch"])} for r in read_log(run)]
        past = [(r[monitor], int(r["epoch"])) for r in rows if not math.isnan(r.get(monitor, math.nan))]
        pick = (max if "dice" in monitor else min)(past, default=(None, None))
        return {"epoch": len(rows), "log": rows, "best": pick[0], "best_epoch": pick[1]}
    if state["log"]:
        write_log(run, state["log"])
    else:
        (run / "log.csv").unlink(missing_ok=True)
    best_epoch = state.get("best_epoch")
    if best_epoch is not None and best_epoch == state["epoch"] - 1 and (
            not best.exists() or read_state(best).get("epoch") != state["epoch"]):
        atomic_copy(last, best)
    state.setdefault("best", None)
    state.setdefault("best_epoch", None)
    return state


# ----------------------------------------------------------------------------- guards
LOCK = ".lock"
#: what a run writes that a new run would replace: their presence makes the folder an earlier run
EARLIER_RUN = ("checkpoints/last.keras", "checkpoints/best.keras", "log.csv", "config.json")


def earlier_run(run) -> str | None:
    """The first file of an earlier run in the folder ``run`` (relative name), or None when there is none."""
    run = Path(run)
    return next((name for name in EARLIER_RUN if (run / name).exists()), None)


def check_new_run(run, overwrite: bool = False) -> None:
    """Refuse to start a new run in a folder that holds an earlier one, unless ``overwrite``.

    Raises:
        BratsInputError in one line naming the folder, what it holds, ``--resume`` and ``--overwrite``.
    """
    found = earlier_run(run)
    if found is not None and not overwrite:
        raise BratsInputError(f"{run}: holds an earlier run ({found}): continue it with --resume {run}, or "
                              f"start again with --overwrite (which deletes its checkpoints and log)")


BUSY_HINT = "wait for it to end or stop it"


def check_unlocked(run) -> None:
    """Refuse a run folder that another training holds locked, before anything is checked or written (reads only).

    Raises:
        BratsInputError in one line naming the folder and the holder's pid.
    """
    check_folder_free(run, LOCK, "training", BUSY_HINT)


@contextlib.contextmanager
def run_lock(run):
    """``with run_lock(run):`` holds the run folder's lock (making the folder) while the block runs.

    Raises:
        BratsInputError in one line naming the folder and the pid of the training that holds it, or why the
        folder cannot be made.
    """
    run = Path(run)
    try:
        run.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # a read-only disk, a file where the folder should be, ...
        raise BratsInputError(f"{run}: cannot make or lock the run folder ({os_error_reason(exc)})") from None
    with folder_lock(run, LOCK, "training", BUSY_HINT):
        yield
