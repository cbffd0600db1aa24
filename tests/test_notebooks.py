"""The notebooks: committed clean, papermill-ready, free of library logic, and each one runs.

Every notebook is executed in QUICK mode (``BRATS_KERAS_QUICK=1``: a few small synthetic
cases, tiny models, a few training steps) in a fresh kernel whose working directory is a
temporary folder, so its ``notebook_runs/`` outputs never land in the checkout.
"""
from __future__ import annotations

import ast
import os
import re
import sys
import time
from pathlib import Path

import nbformat
import pytest
from conftest import execute_notebook

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


def may_repeat(cell) -> bool:
    """Whether a cell may stand word for word in several notebooks: a markdown heading alone ("## Setup"), a code
    cell of imports only, or a code cell that is one call of a shared step of brats_keras.notebook_helpers
    (``work, DATA_DIR, cases = get_data(...)``). Any other cell, short or long, prose or code, is written once."""
    from brats_keras import notebook_helpers

    if cell.cell_type == "markdown":
        return re.fullmatch(r"#+ [^\n]*", cell.source.strip()) is not None
    body = [node for node in ast.parse(cell.source).body if not isinstance(node, (ast.Import, ast.ImportFrom))]
    if not body:
        return True
    call = getattr(body[0], "value", None) if len(body) == 1 else None
    return (isinstance(body[0], (ast.Assign, ast.Expr)) and isinstance(call, ast.Call)
            and isinstance(call.func, ast.Name) and call.func.id in notebook_helpers.__all__)


def repeated_cells(notebooks: dict) -> list[str]:
    """``"<name> <type> cell <i> repeats <name> <type> cell <j>"`` for each cell pasted from an earlier one."""
    seen, out = {}, []
    for name, nb in notebooks.items():
        for i, cell in enumerate(nb.cells):
            if cell.cell_type not in ("code", "markdown") or may_repeat(cell):
                continue
            first = seen.setdefault((cell.cell_type, cell.source.strip()), (name, i))
            if first != (name, i):
                out.append(f"{name} {cell.cell_type} cell {i} repeats {first[0]} {cell.cell_type} cell {first[1]}")
    return out


def test_no_cell_is_pasted_into_two_notebooks():
    """Steps that several notebooks share are library calls (brats_keras.notebook_helpers), not copies; their
    prose is written for each notebook."""
    repeats = repeated_cells({path.name: nbformat.read(path, as_version=4) for path in NOTEBOOKS})
    assert not repeats, "\n".join(repeats)


def test_a_pasted_cell_is_caught_however_short():
    new = nbformat.v4
    shared = [new.new_markdown_cell("## Setup"), new.new_code_cell("from pathlib import Path\nimport numpy as np"),
              new.new_code_cell("work, DATA_DIR, cases = get_data(DATA_DIR, WORK_DIR, N_CASES)")]
    prose, step = "Synthetic cases.", "x = 1\nprint(x)"
    a = new.new_notebook(cells=[*shared, new.new_markdown_cell(prose), new.new_code_cell(step)])
    b = new.new_notebook(cells=[*shared, new.new_markdown_cell(prose + "\n"), new.new_code_cell(step),
                                new.new_code_cell("print(x)")])
    c = new.new_notebook(cells=[new.new_code_cell("print(x)")])
    assert repeated_cells({"a": a, "b": b, "c": c}) == [
        "b markdown cell 3 repeats a markdown cell 3", "b code cell 4 repeats a code cell 4",
        "c code cell 0 repeats b code cell 5"]


def _parameters(path: Path, quick: bool, monkeypatch) -> dict:
    """The settings a notebook's parameters cell makes, with or without $BRATS_KERAS_QUICK."""
    if quick:
        monkeypatch.setenv("BRATS_KERAS_QUICK", "1")
    else:
        monkeypatch.delenv("BRATS_KERAS_QUICK", raising=False)
    namespace = {}
    exec(_code_cells(nbformat.read(path, as_version=4))[0].source, namespace)
    return namespace


def test_readme_states_the_defaults_the_notebooks_use(monkeypatch):
    """notebooks/README.md's table of defaults holds each notebook's parameters cell, number for number."""
    columns = ("N_CASES", None, "PATCH_SIZE", "BASE_FILTERS", "DEPTH", "BATCH_SIZE", "EPOCHS")
    rows = {}
    for line in (NOTEBOOK_DIR / "README.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 1 + len(columns) and re.fullmatch(r"`\d\d_\w+`", cells[0]):
            rows[cells[0].strip("`")] = cells[1:]
    assert sorted(rows) == [p.stem for p in NOTEBOOKS]
    for path in NOTEBOOKS:
        params = _parameters(path, False, monkeypatch)
        for name, stated in zip(columns, rows[path.stem]):
            if name is not None:
                actual = params.get(name, "-")
                assert stated == str(actual), f"notebooks/README.md says {path.stem} {name} = {stated}, not {actual}"
        assert params["SHAPE"] == (240, 240, 155), path.name  # "the synthetic cases have the BraTS size"


def test_readme_states_what_quick_mode_does(monkeypatch):
    """ "4 to 6 synthetic cases of 96 x 96 x 64 voxels cropped to the brain, a U-Net with 4 base filters and depth 2
    trained for 1 or 2 epochs of 2 steps on 32^3 patches" (notebooks/README.md, Quick mode)."""
    assert "4 to 6 synthetic cases of\n96 x 96 x 64 voxels" in (NOTEBOOK_DIR / "README.md").read_text()
    for path in NOTEBOOKS:
        params = _parameters(path, True, monkeypatch)
        assert 4 <= params["N_CASES"] <= 6 and params["SHAPE"] == (96, 96, 64), path.name
        assert params.get("CROP", "brain") == "brain", path.name
        if "PATCH_SIZE" in params:
            assert (params["BASE_FILTERS"], params["DEPTH"], params["PATCH_SIZE"]) == (4, 2, 32), path.name
            assert params["EPOCHS"] in (1, 2) and params["STEPS_PER_EPOCH"] == 2, path.name


# ----------------------------------------------------------------------------- execution
@pytest.fixture
def quick_env(monkeypatch):
    """QUICK mode and a non-interactive matplotlib, inherited by the kernel from os.environ; no sign of a widget
    front end (visualize.view: a pytest run from a JupyterLab kernel inherits its $JPY_SESSION_NAME)."""
    monkeypatch.setenv("BRATS_KERAS_QUICK", "1")
    monkeypatch.delenv("JPY_SESSION_NAME", raising=False)
    monkeypatch.delenv("BRATS_KERAS_VIEW", raising=False)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", os.environ.get("TF_CPP_MIN_LOG_LEVEL", "3"))


def test_kernel_runs_this_python(tmp_path, kernel_specs, quick_env):
    nb = nbformat.v4.new_notebook()
    nb.cells.append(nbformat.v4.new_code_cell(
        "import os, sys\nprint(sys.executable)\nprint(os.environ['BRATS_KERAS_QUICK'])\nprint(os.getcwd())"))
    execute_notebook(nb, tmp_path, kernel_specs, CELL_TIMEOUT)
    lines = "".join(out.get("text", "") for out in nb.cells[0].outputs).split()
    assert lines[0] == sys.executable
    assert lines[1] == "1"
    assert Path(lines[2]).resolve() == tmp_path.resolve()


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs(path, tmp_path, kernel_specs, quick_env):
    nb = nbformat.read(path, as_version=4)
    start = time.perf_counter()
    try:
        execute_notebook(nb, tmp_path, kernel_specs, CELL_TIMEOUT)
    finally:
        # the executed copy, with outputs, for reading what went wrong
        nbformat.write(nb, tmp_path / path.name)
    print(f"{path.name}: {time.perf_counter() - start:.0f} s in QUICK mode")
    # nbclient is no widget front end: visualize.view shows its static figure there (tests/test_view.py)
    for i, cell in enumerate(_code_cells(nb)):
        if re.search(r"\bview\(", cell.source):
            shown = [o.data for o in cell.outputs if o.output_type == "execute_result"]
            assert shown and shown[-1]["text/plain"].startswith("<Figure"), f"{path.name}: code cell {i}: {shown}"
            assert not any("application/vnd.jupyter.widget-view+json" in data for data in shown), path.name
