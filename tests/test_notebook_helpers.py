"""The notebooks' shared steps: the cases to work on (given or synthetic)."""
from pathlib import Path

from brats_keras.notebook_helpers import get_cases
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
