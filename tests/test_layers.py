"""The package's layers, declared once in setup.cfg ([importlinter]) and kept by import-linter.

``lint-imports`` checks two contracts there: the layers (a module imports only from its own layer or the
layers below it, and every module is placed in a layer) and no import cycle between the modules of a
package. The fault tests copy the package's code to a temporary folder, add one wrong import or module,
and show that the same configuration then fails and names it.
"""
from __future__ import annotations

import configparser
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def lint_imports(cwd: Path) -> subprocess.CompletedProcess:
    """``lint-imports`` run in ``cwd`` (its setup.cfg, its brats_keras) without writing a cache there."""
    if os.environ.get("CI") != "true":  # in CI it must run: the test extra installs import-linter
        pytest.importorskip("importlinter", reason='import-linter is not installed (pip install -e ".[test]")')
    script = Path(sys.executable).with_name("lint-imports")
    env = dict(os.environ, PYTHONPATH=str(cwd))
    return subprocess.run([str(script), "--no-cache"], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


def output(proc: subprocess.CompletedProcess) -> str:
    return " ".join((proc.stdout + proc.stderr).split())  # the report wraps long lines


@pytest.fixture
def copy(tmp_path) -> Path:
    """The package's Python files and setup.cfg in a temporary folder."""
    shutil.copy(ROOT / "setup.cfg", tmp_path / "setup.cfg")
    shutil.copytree(ROOT / "brats_keras", tmp_path / "brats_keras",
                    ignore=lambda folder, names: [n for n in names if not (n.endswith(".py") or
                                                                          (Path(folder) / n).is_dir())])
    return tmp_path


def add_import(path: Path, statement: str) -> None:
    """A function-level import at the end of ``path`` (import-linter counts those too)."""
    path.write_text(path.read_text() + f"\n\ndef _added():\n    {statement}\n")


def test_the_package_keeps_its_layers_and_has_no_cycle():
    proc = lint_imports(ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Contracts: 2 kept, 0 broken." in proc.stdout


def test_the_layers_name_every_module_of_the_package():
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    contract = cfg["importlinter:contract:layers"]
    assert contract["type"] == "layers" and contract["exhaustive"] == "true"
    declared = {name.strip() for line in contract["layers"].splitlines() for name in line.split(":")} - {""}
    present = {p.stem for p in (ROOT / "brats_keras").glob("*.py")} - {"__init__"}
    present |= {p.parent.name for p in (ROOT / "brats_keras").glob("*/__init__.py")}
    assert present == {name for name in declared if not name.startswith("(")}


def test_a_new_upward_import_breaks_the_layers(copy):
    add_import(copy / "brats_keras" / "labels.py", "from .training import train")  # ground -> workflows
    proc = lint_imports(copy)
    text = output(proc)
    assert proc.returncode == 1, text
    assert "brats_keras.labels -> brats_keras.training" in text
    assert "Contracts: 0 kept, 2 broken." in text  # upward, and a cycle: training imports labels


def test_a_cycle_inside_one_layer_breaks_the_acyclic_contract(copy):
    add_import(copy / "brats_keras" / "inference.py", "from .crossval import read_crossval")  # crossval -> inference
    proc = lint_imports(copy)
    text = output(proc)
    assert proc.returncode == 1, text
    assert "Contracts: 1 kept, 1 broken." in text
    assert ".inference -> .crossval" in text or ".crossval -> .inference" in text


def test_a_module_in_no_layer_breaks_the_layers(copy):
    (copy / "brats_keras" / "stray.py").write_text('"""A module nobody placed in a layer."""\n')
    proc = lint_imports(copy)
    text = output(proc)
    assert proc.returncode == 1, text
    assert "stray" in text and "Contracts: 1 kept, 1 broken." in text


def test_no_contract_ignores_an_import():
    """Every layer is kept without exceptions: a contract's ``ignore_imports`` would hide an upward import."""
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    contracts = [name for name in cfg.sections() if name.startswith("importlinter:contract:")]
    assert len(contracts) == 2 and not [name for name in contracts if cfg[name].get("ignore_imports", "").strip()]


def test_an_ignored_import_that_does_not_exist_breaks_the_check(copy):
    """An ignore line that matches no import fails the check, so an exception cannot outlive its import (nor hide
    a new import of the same name later)."""
    setup = copy / "setup.cfg"
    setup.write_text(setup.read_text().replace(
        "[importlinter:contract:acyclic]",
        "ignore_imports =\n    brats_keras.callbacks -> brats_keras.visualize\n\n[importlinter:contract:acyclic]"))
    proc = lint_imports(copy)
    text = output(proc)
    assert proc.returncode != 0, text
    assert "brats_keras.callbacks -> brats_keras.visualize" in text
