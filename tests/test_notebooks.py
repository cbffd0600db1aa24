"""The notebooks: committed clean, papermill-ready, free of library logic, and each one runs.

Every notebook is executed in QUICK mode (``BRATS_KERAS_QUICK=1``: a few small synthetic
cases, tiny models, a few training steps) in a fresh kernel whose working directory is a
temporary folder, so its ``notebook_runs/`` outputs never land in the checkout.
"""
from __future__ import annotations

import ast
import json
import os
import sys
import time
from pathlib import Path

import nbformat
import pytest

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
CELL_TIMEOUT = 600  # seconds per cell


def _code_cells(nb):
    return [cell for cell in nb.cells if cell.cell_type == "code"]


def test_notebooks_found():
    assert NOTEBOOKS, f"no notebook in {NOTEBOOK_DIR}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    for i, cell in enumerate(_code_cells(nb)):
        assert not cell.get("outputs"), f"{path.name}: code cell {i} has outputs; clear them before committing"
        assert cell.get("execution_count") is None, (
            f"{path.name}: code cell {i} has execution count {cell.execution_count}; clear it before committing"
        )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_first_code_cell_is_parameters(path):
    nb = nbformat.read(path, as_version=4)
    cells = _code_cells(nb)
    assert cells, f"{path.name}: no code cell"
    first = cells[0]
    assert "parameters" in first.metadata.get("tags", []), (
        f"{path.name}: the first code cell must carry the tag 'parameters' (papermill)"
    )
    assigned = {
        target.id
        for node in ast.walk(ast.parse(first.source))
        if isinstance(node, ast.Assign)
        for target in node.targets
        if isinstance(target, ast.Name)
    }
    missing = {"WORK_DIR", "QUICK"} - assigned
    assert not missing, f"{path.name}: the parameters cell does not set {', '.join(sorted(missing))}"
    assert "BRATS_KERAS_QUICK" in first.source, f"{path.name}: QUICK must come from $BRATS_KERAS_QUICK"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_no_definitions(path):
    """Notebooks call the library: a function or class defined in a notebook belongs in brats_keras."""
    nb = nbformat.read(path, as_version=4)
    for i, cell in enumerate(_code_cells(nb)):
        for node in ast.walk(ast.parse(cell.source)):
            assert not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)), (
                f"{path.name}: code cell {i} defines {getattr(node, 'name', 'a lambda')} (line {node.lineno}); "
                "move it into the library"
            )


def test_no_cell_is_pasted_into_two_notebooks():
    """Steps that several notebooks share are library calls (brats_keras.notebook_helpers), not copies."""
    seen = {}
    for path in NOTEBOOKS:
        for i, cell in enumerate(_code_cells(nbformat.read(path, as_version=4))):
            imports = (ast.Import, ast.ImportFrom)
            body = [node for node in ast.parse(cell.source).body if not isinstance(node, imports)]
            if cell.source.count("\n") < 3 or not body:  # short cells and imports may repeat
                continue
            first = seen.setdefault(cell.source, (path.name, i))
            assert first == (path.name, i), f"{path.name} code cell {i} repeats {first[0]} code cell {first[1]}"


# ----------------------------------------------------------------------------- execution
@pytest.fixture(scope="session")
def kernel_specs(tmp_path_factory):
    """A kernel spec named ``python3`` that runs this very interpreter (the venv's python).

    Kernel specs installed elsewhere (user or system folders) may point to another Python
    without brats_keras; this one is the only spec the test's kernel manager sees.
    """
    from jupyter_client.kernelspec import KernelSpecManager

    folder = tmp_path_factory.mktemp("kernels")
    (folder / "python3").mkdir()
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (brats-keras tests)",
        "language": "python",
    }
    (folder / "python3" / "kernel.json").write_text(json.dumps(spec))
    return KernelSpecManager(kernel_dirs=[str(folder)], ensure_native_kernel=False)


def _execute(nb, cwd: Path, kernel_specs):
    from jupyter_client.manager import KernelManager
    from nbclient import NotebookClient

    km = KernelManager(kernel_name="python3", kernel_spec_manager=kernel_specs)
    client = NotebookClient(nb, km=km, kernel_name="python3", timeout=CELL_TIMEOUT,
                            resources={"metadata": {"path": str(cwd)}})
    return client.execute()


@pytest.fixture
def quick_env(monkeypatch):
    """QUICK mode and a non-interactive matplotlib, inherited by the kernel from os.environ."""
    monkeypatch.setenv("BRATS_KERAS_QUICK", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", os.environ.get("TF_CPP_MIN_LOG_LEVEL", "3"))


def test_kernel_runs_this_python(tmp_path, kernel_specs, quick_env):
    nb = nbformat.v4.new_notebook()
    nb.cells.append(nbformat.v4.new_code_cell(
        "import os, sys\nprint(sys.executable)\nprint(os.environ['BRATS_KERAS_QUICK'])\nprint(os.getcwd())"))
    _execute(nb, tmp_path, kernel_specs)
    lines = "".join(out.get("text", "") for out in nb.cells[0].outputs).split()
    assert lines[0] == sys.executable
    assert lines[1] == "1"
    assert Path(lines[2]).resolve() == tmp_path.resolve()


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs(path, tmp_path, kernel_specs, quick_env):
    nb = nbformat.read(path, as_version=4)
    start = time.perf_counter()
    try:
        _execute(nb, tmp_path, kernel_specs)
    finally:
        # the executed copy, with outputs, for reading what went wrong
        nbformat.write(nb, tmp_path / path.name)
    print(f"{path.name}: {time.perf_counter() - start:.0f} s in QUICK mode")
