"""Dependencies match use: what requirements.txt, setup.cfg's extras, the README's commands and CI install."""
import configparser
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: imported by the tests only, never by brats_keras
TEST_ONLY = {"pytest", "nbclient", "nbformat", "ipykernel", "jax", "medpy"}


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
    assert "jupyterlab" in requirements and extras["notebooks"] == {"jupyterlab"}
    # a package install (pip install brats-keras[onnx,tensorboard]) gets what requirements.txt gives for these
    assert extras["onnx"] == {"tf2onnx", "onnx", "onnxruntime"} <= requirements
    assert extras["tensorboard"] == {"tensorboard"} <= requirements


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
