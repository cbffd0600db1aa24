"""The process pool of batch jobs (converting cases, writing synthetic cases): one helper for both.

Workers are started with ``spawn``, not ``fork``: forking a process that has loaded TensorFlow (a
notebook) can deadlock. Each worker dies with the process that started it, even when that one is
killed with SIGKILL, so an interrupted batch leaves no orphans writing files.
"""
from __future__ import annotations

import contextlib
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor

_PARENT = None  # in a worker process: the pid of the process that started it

#: the thread-count variables of OpenMP and the BLAS libraries numpy and scipy may use
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


@contextlib.contextmanager
def process_pool(workers: int, single_threaded: bool = False):
    """A pool of ``workers`` spawn-started processes that end with this one; shut down on leaving.

    Args:
        workers: number of processes.
        single_threaded: workers run OpenMP and BLAS with one thread each (unless the environment
            sets ``THREAD_VARIABLES`` already): several workers of small matrix products gain nothing
            from threads and lose a lot to oversubscription.
    Yields:
        the ``ProcessPoolExecutor``. Leaving the block (also on an error or Ctrl-C) cancels the jobs
        not started yet and waits for the running ones.
    """
    with _single_threaded_children() if single_threaded else contextlib.nullcontext():
        pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_end_with_parent, initargs=(os.getpid(),))
        try:
            yield pool
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


def parent_gone() -> bool:
    """In a worker of :func:`process_pool`: whether the process that started it has ended."""
    return _PARENT is not None and os.getppid() != _PARENT


@contextlib.contextmanager
def _single_threaded_children():
    """Make child processes started inside use one BLAS/OpenMP thread each (unless set)."""
    saved = {k: os.environ.get(k) for k in THREAD_VARIABLES}
    for k in THREAD_VARIABLES:
        os.environ.setdefault(k, "1")
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _end_with_parent(parent: int) -> None:
    """Initializer of a worker process: die with the parent, even when it is killed with SIGKILL.

    Linux delivers SIGKILL to the worker when its parent dies (prctl PR_SET_PDEATHSIG); elsewhere a
    daemon thread looks for a new parent pid twice a second. Jobs can check :func:`parent_gone` too.
    """
    global _PARENT
    _PARENT = parent
    try:
        import ctypes
        import signal

        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(1, int(signal.SIGKILL), 0, 0, 0) != 0:  # PR_SET_PDEATHSIG = 1
            raise OSError(ctypes.get_errno(), "prctl failed")
    except Exception:  # no prctl (not Linux)
        import threading

        def watch():
            while os.getppid() == parent:
                time.sleep(0.5)
            os._exit(1)

        threading.Thread(target=watch, daemon=True, name="end-with-parent").start()
    if os.getppid() != parent:  # the parent died before the signal was armed
        os._exit(1)
