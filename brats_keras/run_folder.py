"""Guards of a run folder: an earlier run is never cleared unasked, and one training at a time writes it.

A training holds ``RUN/.lock`` locked (``fcntl.flock``, exclusive) while it writes the folder, with its pid
written in the file. The operating system drops the lock when the process ends, however it ends, so the lock
of a training killed with ``kill -9`` blocks nothing: the next training takes the file over. A training that
ends normally removes it. Where ``fcntl`` does not exist (Windows) trainings are not locked.
"""
from __future__ import annotations

import os
from pathlib import Path

from .io import BratsInputError, os_error_reason

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


def _read_pid(fd) -> str:
    try:
        text = os.pread(fd, 32, 0).decode(errors="replace").strip()
    except OSError:
        text = ""
    return text if text.isdigit() else "unknown"


def _busy(run, pid: str) -> BratsInputError:
    return BratsInputError(f"{run}: another training is writing this run folder (pid {pid}); wait for it to end "
                           f"or stop it")


def check_unlocked(run) -> None:
    """Refuse a run folder that another training holds locked, before anything is checked or written (reads only).

    Raises:
        BratsInputError in one line naming the folder and the holder's pid.
    """
    try:
        import fcntl
    except ImportError:
        return
    path = Path(run) / LOCK
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # no lock file (no training holds it), or one that cannot be opened: the lock decides
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            raise _busy(run, _read_pid(fd)) from None
        fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


class RunLock:
    """``with RunLock(run):`` holds the run folder's lock (making the folder) while the block runs.

    Raises:
        BratsInputError in one line naming the folder and the pid of the training that holds it.
    """

    def __init__(self, run):
        self.run = Path(run)
        self.path = self.run / LOCK
        self.fd = None

    def __enter__(self):
        try:
            import fcntl
        except ImportError:
            return self
        while self.fd is None:
            try:
                self.run.mkdir(parents=True, exist_ok=True)
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:  # a read-only disk, a file where the folder should be, ...
                raise BratsInputError(f"{self.run}: cannot make or lock the run folder ({os_error_reason(exc)})") \
                    from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                pid = _read_pid(fd)
                os.close(fd)
                raise _busy(self.run, pid) from None
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if not same:  # removed by its holder's end between the open and the lock: lock a new one
                os.close(fd)
                continue
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            self.fd = fd
        return self

    def __exit__(self, *exc):
        if self.fd is not None:
            self.path.unlink(missing_ok=True)  # removed while still locked: no one can lock this file any more
            os.close(self.fd)  # closing drops the lock
            self.fd = None
        return False
