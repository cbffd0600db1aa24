"""The notebooks' shared steps: the cases to work on (given or synthetic)."""
from pathlib import Path

import pytest

from brats_keras.io import BratsInputError
from brats_keras.notebook_helpers import get_cases, get_data
from brats_keras.synthetic import make_case

TINY = (48, 48, 40)


def test_get_cases_writes_synthetic_cases_when_no_folder_is_given(tmp_path):
    work = tmp_path / "work" / "01"  # created
    folder, cases = get_cases(None, work, 2, shape=TINY)
    assert folder == work / "synthetic" and isinstance(folder, Path)
    assert list(cases) == ["Synth_00000", "Synth_00001"]
    assert all(c.seg is not None and c.folder.parent == folder for c in cases.values())
    # the same cases as make_dataset(seed=0) writes: case i from seed i
    import nibabel as nib
    import numpy as np

    seg = np.asarray(nib.load(cases["Synth_00001"].seg).dataobj)
    np.testing.assert_array_equal(seg, make_case(1, TINY)["seg"])


def test_get_cases_reads_a_given_folder_and_writes_nothing(tmp_path):
    source, _ = get_cases(None, tmp_path / "first", 1, shape=TINY)
    work = tmp_path / "second"
    folder, cases = get_cases(str(source), work, 5, shape=TINY)
    assert folder == source and list(cases) == ["Synth_00000"]
    assert list(work.iterdir()) == []  # the work folder exists, no synthetic cases in it


def test_get_data_returns_the_work_folder_and_the_cases_and_says_where_they_are(tmp_path, capsys):
    work, folder, cases = get_data(None, str(tmp_path / "01"), 2, shape=TINY)
    assert work == tmp_path / "01" and folder == work / "synthetic" and list(cases) == ["Synth_00000", "Synth_00001"]
    assert capsys.readouterr().out == f"2 synthetic cases in {folder}\n"
    work2, same, again = get_data(folder, tmp_path / "02", 9, shape=TINY)  # a given folder: read, not written
    assert same == folder and list(again) == list(cases) and list(work2.iterdir()) == []
    assert capsys.readouterr().out == f"2 cases in {folder}\n"


def test_get_data_refuses_a_folder_without_cases(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(BratsInputError, match=f"{empty}: no BraTS case"):
        get_data(empty, tmp_path / "work", 2, shape=TINY)
    with pytest.raises(BratsInputError, match="not a folder"):
        get_data(tmp_path / "missing", tmp_path / "work", 2, shape=TINY)
