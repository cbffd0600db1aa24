"""Dependencies match use: what requirements.txt, setup.cfg's extras, the README's commands and CI install."""
import configparser
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: imported by the tests only, never by brats_keras
TEST_ONLY = {"pytest", "nbclient", "nbformat", "ipykernel", "jax", "medpy", "import-linter", "playwright"}


def names(lines) -> set[str]:
    """Package names of requirement lines (comments and blanks skipped), lower case."""
    out = set()
    for line in lines:
        line = line.split("#", 1)[0].strip()
        if line:
            out.add(re.match(r"[A-Za-z0-9_.\-]+", line).group(0).lower())
    return out


def setup_cfg():
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    return cfg


def test_test_only_packages_are_the_test_extra_and_not_installed_for_users():
    cfg = setup_cfg()
    extras = {k: names(v.splitlines()) for k, v in cfg["options.extras_require"].items()}
    install = names(cfg["options"]["install_requires"].splitlines())
    requirements = names((ROOT / "requirements.txt").read_text().splitlines())
    assert TEST_ONLY <= extras["test"]
    assert not TEST_ONLY & install and not TEST_ONLY & requirements
    assert install <= requirements  # the README's install (requirements.txt) covers the package's own needs
    # ISA-L is an optional speed-up (brats_keras.io.gunzip falls back to zlib: tests/test_io.py)
    assert "isal" not in install and extras["fast"] == {"isal"}
    assert extras["notebooks"] == {"jupyterlab", "ipyniivue"} <= requirements
    # a package install (pip install brats-keras[onnx,tensorboard]) gets what requirements.txt gives for these
    assert extras["onnx"] == {"tf2onnx", "onnx", "onnxruntime"} <= requirements
    assert extras["tensorboard"] == {"tensorboard"} <= requirements


def test_the_widget_is_pinned_alike_for_users_notebooks_and_tests():
    """visualize.view's widget (ipyniivue) is one pinned version in requirements.txt, the notebooks extra and the
    test extra (tests/test_view.py imports it)."""
    extras = {k: v.split() for k, v in setup_cfg()["options.extras_require"].items()}
    pins = [line for line in (ROOT / "requirements.txt").read_text().splitlines() if line.startswith("ipyniivue")]
    assert len(pins) == 1 and re.fullmatch(r"ipyniivue==[\d.]+", pins[0])
    assert pins[0] in extras["notebooks"] and pins[0] in extras["test"]


def test_tensorflow_is_an_extra_that_requirements_txt_installs():
    """The package itself needs no Keras backend: TensorFlow is the "tensorflow" extra, which requirements.txt
    (the README's install) and the test extra install, so `pip install ".[jax]"` is TensorFlow-free."""
    cfg = setup_cfg()
    extras = {k: v.split() for k, v in cfg["options.extras_require"].items()}
    install = names(cfg["options"]["install_requires"].splitlines())
    requirements = (ROOT / "requirements.txt").read_text().splitlines()
    jax_requirements = names((ROOT / "requirements-jax.txt").read_text().splitlines())
    assert "tensorflow" not in install and "tensorflow" not in jax_requirements
    assert extras["tensorflow"] == ["tensorflow==2.21.*"] and "tensorflow==2.21.*" in requirements
    assert "brats-keras[tensorflow]" in extras["test"]
    # requirements-jax.txt installs what pip install ".[jax,fast]" does
    assert jax_requirements == install | names(extras["jax"]) | names(extras["fast"])


def test_ci_runs_the_readme_commands():
    """.ci/run installs as README command 1 does and runs README command 2 (test extra, then pytest)."""
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)\n```", readme, re.S)
    install, tests = blocks[0], blocks[1]
    ci = (ROOT / ".ci" / "run").read_text()
    assert "pip install -r requirements.txt" in install and "pip install -q -r requirements.txt" in ci
    assert tests == '. .venv/bin/activate && pip install -e ".[test]" && python -m pytest -q tests'
    assert 'pip install -q -e ".[test]"\npython -m pytest -q tests' in ci
    assert "jupyter lab notebooks/" in readme


def _venv_run(args, cwd, timeout=900, **env) -> subprocess.CompletedProcess:
    """``args`` run with the environment's variables less PYTHONPATH (so nothing of the checkout is imported)."""
    full = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    full.update(PIP_DISABLE_PIP_VERSION_CHECK="1", **env)
    return subprocess.run([str(a) for a in args], cwd=cwd, env=full, capture_output=True, text=True,
                          timeout=timeout)


def test_jax_extra_installs_no_tensorflow_and_the_jax_suite_passes_there(tmp_path):
    """`pip install ".[jax]"` into a fresh venv (from the package cache) brings no TensorFlow, and the library
    installed there runs on JAX: it imports with its 5 shipped fold files, its CLI answers --help, and one tiny
    test of tests/backends/ (a unet3d forward and backward step, with the check that TensorFlow is absent) passes
    with the installed copy. The whole of tests/backends/ runs on JAX, with TensorFlow blocked, in
    tests/test_backends.py; repeating it here would prove nothing more about the install. The install takes about
    50 s. The package is installed from a copy of its sources, so nothing is built in the checkout."""
    python = shutil.which("python3.11")
    if python is None:
        if os.environ.get("CI") == "true":
            pytest.fail("python3.11 not found: CI makes its venv with it (.ci/run)")
        pytest.skip("python3.11 not found: this test makes a fresh venv with it")
    src = tmp_path / "src"
    src.mkdir()
    for name in ("setup.cfg", "pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "brats_keras", src / "brats_keras", ignore=shutil.ignore_patterns("__pycache__"))
    venv = tmp_path / "venv"
    bin_ = venv / "bin"

    def ok(proc):
        assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
        return proc

    ok(_venv_run([python, "-m", "venv", venv], tmp_path))
    ok(_venv_run([bin_ / "pip", "install", "-q", f"{src}[jax]"], tmp_path))
    shown = _venv_run([bin_ / "pip", "show", "tensorflow"], tmp_path)
    assert shown.returncode != 0 and "not found" in shown.stderr, shown.stdout
    imported = _venv_run([bin_ / "python", "-c", "import tensorflow"], tmp_path)
    assert imported.returncode != 0 and "No module named 'tensorflow'" in imported.stderr, imported.stdout

    # what only the tests and the sm_unet model need (segmentation-models-3D as the README installs it)
    ok(_venv_run([bin_ / "pip", "install", "-q", "pytest>=8"], tmp_path))
    ok(_venv_run([bin_ / "pip", "install", "-q", "--no-deps", "segmentation-models-3D==1.1.1",
                  "classification-models-3D==1.1.0"], tmp_path))
    site = ok(_venv_run([bin_ / "python", "-c",
                         "import brats_keras, keras; from brats_keras.pretrained import pretrained_paths; "
                         "print(brats_keras.__file__, keras.backend.backend(), len(pretrained_paths()))"],
                        tmp_path, KERAS_BACKEND="jax")).stdout.split()
    assert site[0].startswith(str(venv)) and site[1:] == ["jax", "5"], site  # the installed copy, its 5 folds
    ok(_venv_run([bin_ / "brats-keras", "--help"], tmp_path, KERAS_BACKEND="jax"))

    selection = "not_tensorflow or forward_and_backward and unet3d"
    proc = _venv_run([bin_ / "python", "-m", "pytest", "-q", "-p", "no:cacheprovider", ROOT / "tests" / "backends",
                      "-k", selection], tmp_path, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3")
    last = (proc.stdout.strip().splitlines() or [""])[-1]
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    passed = re.search(r"(\d+) passed", last)
    assert passed and int(passed.group(1)) == 2 and "skipped" not in last and "failed" not in last, last
