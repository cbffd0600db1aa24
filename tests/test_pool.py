"""The process pool shared by conversion and synthetic cases: spawned workers, BLAS threads, shutdown."""
import os

from brats_keras.pool import THREAD_VARIABLES, parent_gone, process_pool


def test_single_threaded_workers_and_the_environment_restored(monkeypatch):
    for name in THREAD_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MKL_NUM_THREADS", "3")  # set by the user: kept
    with process_pool(1, single_threaded=True) as pool:
        seen = {name: pool.submit(os.getenv, name).result() for name in THREAD_VARIABLES}
        assert pool.submit(parent_gone).result() is False  # the worker knows its parent, which is alive
        assert pool.submit(os.getppid).result() == os.getpid()
    assert seen == {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "3"}
    assert os.environ.get("OPENBLAS_NUM_THREADS") is None and os.environ["MKL_NUM_THREADS"] == "3"
    with process_pool(1) as pool:  # default: the workers inherit the environment as it is
        assert pool.submit(os.getenv, "OPENBLAS_NUM_THREADS").result() is None
    assert parent_gone() is False  # not a worker
