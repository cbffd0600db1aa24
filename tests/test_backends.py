"""Every supported Keras backend: the suite in tests/backends/ run under JAX in its own process.

A Keras process has one backend for its life, so the JAX run is a child ``python -m pytest``
with ``KERAS_BACKEND=jax`` and TensorFlow blocked (any import of it fails there). The child
writes the shipped model's probabilities on a fixed window; this process, on TensorFlow,
computes the same window and the two must agree.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_suite(backend: str, out: Path, timeout: int = 1500) -> subprocess.CompletedProcess:
    env = dict(os.environ, KERAS_BACKEND=backend, BRATS_KERAS_BLOCK_TENSORFLOW="1", BRATS_BACKEND_OUT=str(out),
               JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/backends"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def jax_run(tmp_path_factory):
    if os.environ.get("CI") != "true":  # in CI it must run: the test extra installs JAX
        pytest.importorskip("jax", reason="JAX is not installed (pip install -e \".[test]\" installs it)")
    out = tmp_path_factory.mktemp("jax_suite")
    proc = run_suite("jax", out)
    return proc, out


def test_jax_backend_suite_passes_without_tensorflow(jax_run):
    proc, _ = jax_run
    tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-40:])
    assert proc.returncode == 0, tail
    summary = re.search(r"(\d+) passed", proc.stdout)
    assert summary and int(summary.group(1)) >= 30, tail  # the suite ran, it was not all skipped
    assert "skipped" not in proc.stdout.splitlines()[-1], tail


def test_torch_backend_suite_passes_where_torch_is_installed(tmp_path):
    """PyTorch is not installed by requirements.txt (its PyPI wheel is a multi-GB CUDA build); where it is,
    e.g. after `pip install torch==2.13.0` on a CPU machine, the same suite must pass on it."""
    pytest.importorskip("torch",
                        reason="PyTorch is not installed: the torch backend is tested by hand (docs/backends.md)")
    proc = run_suite("torch", tmp_path)
    tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-40:])
    assert proc.returncode == 0, tail
    assert np.abs(np.load(tmp_path / "window_torch.npy") - _tf_window()).max() < 1e-3


def _tf_window():
    from brats_keras.checkpoint import load_pretrained

    x = np.random.default_rng(7).standard_normal((1, 64, 64, 64, 4)).astype(np.float32)
    return np.asarray(load_pretrained().predict_on_batch(x), np.float32)


def test_jax_and_tensorflow_give_the_same_probabilities(jax_run):
    import keras

    proc, out = jax_run
    assert keras.backend.backend() == "tensorflow"
    assert (out / "window_jax.npy").exists(), "the JAX suite wrote no window probabilities"
    jax_probs = np.load(out / "window_jax.npy")
    assert np.abs(jax_probs - _tf_window()).max() < 1e-3
    dice = json.loads((out / "dice_jax.json").read_text())["dice"]
    assert set(dice) == {"WT", "TC", "ET"}
