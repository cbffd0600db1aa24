"""The extra real cases in ../shared/data/brats-extra: a BraTS 2023-named case whose label map is float32
with labels 0-3 (ET stored as 3) converts and scores like the 2018-2021 cases."""
import numpy as np
import pytest

from brats_keras.convert import convert_folder
from brats_keras.evaluation import evaluate_folder
from brats_keras.io import find_cases, load_classes

from conftest import SHARED, require_shared, write_nifti

EXTRA = SHARED / "brats-extra"
CASE_2023 = "BraTS-GLI-00000-000"
#: voxels of NCR (1), ED (2) and ET (3) in its label map, counted once with nibabel and numpy
COUNTS = {"NCR": 11738, "ED": 12836, "ET": 32731}


@pytest.fixture(scope="module")
def extra_dir():
    require_shared(EXTRA)
    return EXTRA


@pytest.fixture
def only_2023(extra_dir, tmp_path):
    """A folder holding just the 2023 case (a link: the shared data stay read-only)."""
    src = tmp_path / "src"
    src.mkdir()
    (src / CASE_2023).symlink_to(extra_dir / CASE_2023, target_is_directory=True)
    return src


def test_extra_cases_are_found_with_their_conventions(extra_dir):
    cases = {c.case_id: c for c in find_cases(extra_dir)}
    assert len(cases) == 5 and all(c.seg is not None for c in cases.values())
    assert cases[CASE_2023].layout == "2023" and cases[CASE_2023].label_convention == "2023"
    assert {c.label_convention for k, c in cases.items() if k != CASE_2023} == {"2021"}


def test_2023_float_labels_convert_to_classes(only_2023, tmp_path):
    import nibabel as nib

    seg = only_2023 / CASE_2023 / f"{CASE_2023}-seg.nii.gz"
    assert nib.load(str(seg)).get_data_dtype() == np.float32  # what this test is about
    classes = load_classes(seg)
    assert classes.dtype == np.uint8 and [int((classes == k).sum()) for k in (1, 2, 3)] == list(COUNTS.values())
    res = convert_folder(only_2023, tmp_path / "conv", modalities="flair,t1,t1ce,t2", crop="brain", scale="zscore",
                         workers=1, progress=False)
    entry = res["cases"][CASE_2023]
    assert entry["status"] == "ok" and entry["label_counts_full"] == COUNTS
    assert entry["label_counts"] == COUNTS  # the brain box holds the whole tumor
    mask = np.load(tmp_path / "conv" / entry["mask"])
    assert mask.dtype == np.uint8 and set(np.unique(mask)) == {0, 1, 2, 3}
    assert [int((mask == k).sum()) for k in (1, 2, 3)] == list(COUNTS.values())


def test_2023_float_labels_score(only_2023, tmp_path):
    """Its own label map, and the same map written in 2021 labels (ET as 4, uint8), both score Dice 1."""
    import nibabel as nib

    seg = only_2023 / CASE_2023 / f"{CASE_2023}-seg.nii.gz"
    img = nib.load(str(seg))
    labels = np.asanyarray(img.dataobj)
    for name, pred in (("same", labels), ("as2021", np.where(labels == 3, 4, labels).astype(np.uint8))):
        (tmp_path / name).mkdir()
        write_nifti(tmp_path / name / f"{CASE_2023}.nii.gz", pred, img.affine)
        res = evaluate_folder(tmp_path / name, only_2023, progress=False)
        assert not res["errors"] and not res["missing"]
        scores = res["cases"][CASE_2023]
        assert [scores[r]["dice"] for r in ("WT", "TC", "ET")] == [1.0, 1.0, 1.0]
        assert [scores[r]["hd95"] for r in ("WT", "TC", "ET")] == [0.0, 0.0, 0.0]
