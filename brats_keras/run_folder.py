"""Guards of a run folder: an earlier run is never cleared unasked, and one training at a time writes it.

A training holds ``RUN/.lock`` (:func:`brats_keras.io.folder_lock`, as convert locks its output folder) while
it writes the folder: the lock of a training killed with ``kill -9`` blocks nothing, and the next training
takes the file over.
"""
from __future__ import annotations

import contextlib
from pathlib import Path

from .io import BratsInputError, check_folder_free, folder_lock, os_error_reason

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
