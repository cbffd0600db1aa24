"""BraTS scores: known answers, empty conventions, spacing, medpy on real label maps, folders."""
import csv
import json
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest
from medpy.metric import binary as medpy
from scipy import ndimage

from brats_keras.evaluation import (
    HD95_EMPTY,
    dice,
    evaluate_folder,
    format_table,
    hd95,
    lesion_wise_scores,
    region_scores,
    report_scores,
    sensitivity,
    specificity,
    surface_distances,
)
from brats_keras.labels import REGION_NAMES, classes_to_regions, labels_to_classes

from conftest import write_nifti, write_small_case


def cube(shape, start, size):
    mask = np.zeros(shape, bool)
    mask[tuple(slice(s, s + size) for s in start)] = True
    return mask


# ----------------------------------------------------------------------- known answers


@pytest.mark.parametrize(
    "k,expected",
    # two 4-voxel cubes offset by k along axis 0: overlap (4 - k) * 16, Dice (4 - k) / 4
    [(0, 1.0), (1, 0.75), (2, 0.5), (3, 0.25), (4, 0.0)],
)
def test_dice_of_offset_cubes(k, expected):
    a = cube((12, 8, 8), (2, 2, 2), 4)
    b = cube((12, 8, 8), (2 + k, 2, 2), 4)
    assert dice(a, b) == pytest.approx(expected)
    assert sensitivity(a, b) == pytest.approx(expected)  # same sizes: overlap / 64


@pytest.mark.parametrize(
    "k,spacing,expected",
    [
        # one voxel against one voxel k away: every distance is k (times the spacing)
        (1, None, 1.0),
        (3, None, 3.0),
        (3, (2.5, 1.0, 1.0), 7.5),
        (2, 0.5, 1.0),
    ],
)
def test_hd95_of_single_voxels(k, spacing, expected):
    a = cube((8, 5, 5), (1, 2, 2), 1)
    b = cube((8, 5, 5), (1 + k, 2, 2), 1)
    assert hd95(a, b, spacing) == pytest.approx(expected)


@pytest.mark.parametrize("k,spacing", [(1, (1, 1, 1)), (2, (1, 1, 1)), (3, (2.0, 0.5, 0.7)), (2, (0.8, 3.0, 1.0))])
def test_hd95_of_shifted_plates(k, spacing):
    # 1-voxel-thick plates 5 x 5 shifted by k along their normal: every voxel is on the
    # surface and its nearest partner is straight across, k * spacing[0] away
    a = np.zeros((10, 9, 9), bool)
    a[2, 2:7, 2:7] = True
    b = np.roll(a, k, axis=0)
    assert hd95(a, b, spacing) == pytest.approx(k * spacing[0])
    assert hd95(b, a, spacing) == pytest.approx(k * spacing[0])


def test_hd95_diagonal_with_anisotropic_spacing():
    a = cube((4, 4, 4), (0, 0, 0), 1)
    b = cube((4, 4, 4), (1, 1, 0), 1)
    assert hd95(a, b, (1.0, 2.0, 3.0)) == pytest.approx(np.sqrt(1 + 4))
    assert surface_distances(a, b, (1.0, 2.0, 3.0)).tolist() == pytest.approx([np.sqrt(5)])


def test_surface_of_a_cube_full_vs_cross_structure():
    # a 3-cube: the full structure erodes every voxel but the centre (26 surface voxels);
    # distances from the cube's surface to its own centre voxel's cube are known
    a = cube((7, 7, 7), (2, 2, 2), 3)
    centre = cube((7, 7, 7), (3, 3, 3), 1)
    d = surface_distances(a, centre)
    assert len(d) == 26
    assert sorted(set(np.round(d ** 2).astype(int))) == [1, 2, 3]  # faces, edges, corners


EMPTY = np.zeros((6, 6, 6), bool)
BLOB = cube((6, 6, 6), (1, 1, 1), 2)


@pytest.mark.parametrize(
    "pred,true,expected",
    [
        # dice, hd95, sensitivity, specificity
        (EMPTY, EMPTY, (1.0, 0.0, 1.0, 1.0)),
        (EMPTY, BLOB, (0.0, HD95_EMPTY, 0.0, 1.0)),
        (BLOB, EMPTY, (0.0, HD95_EMPTY, 0.0, (216 - 8) / 216)),
        (BLOB, BLOB, (1.0, 0.0, 1.0, 1.0)),
    ],
    ids=["both empty", "pred empty", "truth empty", "equal"],
)
def test_empty_conventions(pred, true, expected):
    got = (dice(pred, true), hd95(pred, true), sensitivity(pred, true), specificity(pred, true))
    assert got == pytest.approx(expected)
    assert HD95_EMPTY == 373.13


def test_specificity_without_negatives():
    full = np.ones((2, 2, 2), bool)
    assert specificity(full, full) == 1.0
    assert specificity(EMPTY[:2, :2, :2], full) == 1.0


def test_errors():
    with pytest.raises(ValueError, match=r"shapes differ: prediction \(6, 6, 6\), truth \(6, 6, 5\)"):
        dice(BLOB, BLOB[..., :5])
    with pytest.raises(ValueError, match="spacing needs 3 values, got \\[1.0, 1.0\\]"):
        hd95(BLOB, BLOB, (1, 1))
    with pytest.raises(ValueError, match="spacing must be positive"):
        hd95(BLOB, BLOB, (1, 0, 1))
    with pytest.raises(ValueError, match="two non-empty masks"):
        surface_distances(EMPTY, BLOB)
    with pytest.raises(ValueError, match="outside the classes 0..3 .*labels_to_classes"):
        report_scores(np.full((2, 2), 4), np.zeros((2, 2), int))


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("connectivity", [1, 3])
def test_hd95_matches_medpy_on_random_masks(seed, connectivity):
    rng = np.random.default_rng(seed)
    a = ndimage.binary_opening(rng.random((20, 18, 16)) > 0.6)
    b = ndimage.binary_opening(rng.random((20, 18, 16)) > 0.65)
    # masks touching the volume's border are where cropping could go wrong
    a[0, :4, :4] = True
    spacing = (1.2, 0.8, 2.0)
    expected = medpy.hd95(a, b, voxelspacing=spacing, connectivity=connectivity)
    assert hd95(a, b, spacing, connectivity) == pytest.approx(expected, abs=1e-9)
    assert dice(a, b) == pytest.approx(medpy.dc(a, b), abs=1e-12)


# ----------------------------------------------------------------------- real label maps

REAL_CASES = ["Brats18_TCIA01_425_1", "Brats18_2013_11_1"]


@pytest.fixture(scope="module")
def real_regions(real_dir):
    out = {}
    for case in REAL_CASES:
        img = nib.load(str(real_dir / case / f"{case}_seg.nii.gz"))
        classes = labels_to_classes(np.asanyarray(img.dataobj))
        assert classes.shape == (240, 240, 155)
        out[case] = (classes, tuple(float(z) for z in img.header.get_zooms()[:3]))
    return out


def medpy_hd95_cropped(a, b, spacing, margin=4):
    """medpy on a crop with a generous margin (medpy on the full volume takes seconds per call)."""
    both = a | b
    box = tuple(
        slice(max(int(np.flatnonzero(np.any(both, axis=tuple(j for j in range(3) if j != i)))[0]) - margin, 0),
              int(np.flatnonzero(np.any(both, axis=tuple(j for j in range(3) if j != i)))[-1]) + 1 + margin)
        for i in range(3)
    )
    return medpy.hd95(a[box], b[box], voxelspacing=spacing, connectivity=3)


@pytest.mark.parametrize("case", REAL_CASES)
@pytest.mark.parametrize("variant", ["eroded", "shifted"])
def test_matches_medpy_on_real_label_maps(real_regions, case, variant):
    classes, spacing = real_regions[case]
    regions = classes_to_regions(classes)
    for i, region in enumerate(REGION_NAMES):
        truth = regions[..., i]
        if variant == "eroded":
            other = ndimage.binary_erosion(truth)
        else:
            other = np.roll(truth, (2, -3, 1), axis=(0, 1, 2))
        assert other.any() and truth.any(), f"{case} {region} {variant}"
        assert dice(other, truth) == pytest.approx(medpy.dc(other, truth), abs=1e-6)
        assert hd95(other, truth, spacing) == pytest.approx(
            medpy_hd95_cropped(other, truth, spacing), abs=1e-6
        ), f"{case} {region} {variant}"


def test_matches_medpy_on_a_whole_real_volume(real_regions):
    # one comparison on the full 240 x 240 x 155 volume, without any crop on medpy's side
    classes, spacing = real_regions["Brats18_TCIA01_425_1"]
    truth = classes_to_regions(classes)[..., 2]
    shifted = np.roll(truth, (3, 2, -2), axis=(0, 1, 2))
    expected = medpy.hd95(shifted, truth, voxelspacing=spacing, connectivity=3)
    assert hd95(shifted, truth, spacing) == pytest.approx(expected, abs=1e-6)


def test_region_and_report_scores_of_a_real_case(real_regions):
    classes, spacing = real_regions["Brats18_TCIA01_425_1"]
    perfect = region_scores(classes, classes, spacing)
    assert perfect == {r: {"dice": 1.0, "hd95": 0.0, "sensitivity": 1.0, "specificity": 1.0} for r in REGION_NAMES}
    shifted = np.roll(classes, 2, axis=0)
    scores = region_scores(shifted, classes, spacing)
    for i, region in enumerate(REGION_NAMES):
        p, t = classes_to_regions(shifted)[..., i], classes_to_regions(classes)[..., i]
        assert scores[region]["dice"] == pytest.approx(medpy.dc(p, t))
        assert scores[region]["sensitivity"] == pytest.approx(medpy.sensitivity(p, t))
        assert scores[region]["specificity"] == pytest.approx(medpy.specificity(p, t))
    report = report_scores(shifted, classes)
    assert report["accuracy"] == pytest.approx(np.mean(shifted == classes))
    assert report["dice_ET"] == pytest.approx(scores["ET"]["dice"])


# ----------------------------------------------------------------------- class maps


def test_report_scores_known_values():
    true = np.array([0, 1, 1, 2, 2, 2, 3, 3])
    pred = np.array([0, 1, 2, 2, 2, 0, 3, 1])
    assert report_scores(pred, true) == pytest.approx(
        {
            "accuracy": 5 / 8,
            "precision": (1 / 2 + 2 / 3 + 1) / 3,
            "recall": (1 / 2 + 2 / 3 + 1 / 2) / 3,
            "mean_dice": (1 / 2 + 2 / 3 + 2 / 3) / 3,
            "dice_NCR": 1 / 2,
            "dice_ED": 2 / 3,
            "dice_ET": 2 / 3,
        }
    )


def test_lesion_wise_known_values():
    shape = (20, 12, 12)
    true = np.zeros(shape, np.uint8)
    true[1:4, 1:4, 1:4] = 2  # lesion A, found exactly
    true[10:13, 1:4, 1:4] = 2  # lesion B, missed
    pred = np.zeros(shape, np.uint8)
    pred[1:4, 1:4, 1:4] = 2
    pred[15:17, 8:10, 8:10] = 2  # a false positive
    wt = lesion_wise_scores(pred, true)["WT"]
    assert wt == pytest.approx(
        {"dice": (1 + 0 + 0) / 3, "hd95": (0 + 2 * HD95_EMPTY) / 3, "n_lesions": 2, "n_false_positives": 1}
    )
    # no TC / ET anywhere: perfect by convention
    assert lesion_wise_scores(pred, true)["ET"] == {"dice": 1.0, "hd95": 0.0, "n_lesions": 0, "n_false_positives": 0}


def test_lesion_wise_merges_the_components_that_overlap_a_lesion():
    true = np.zeros((12, 8, 8), np.uint8)
    true[2:10, 2:5, 2:5] = 3  # one ET lesion of 8 slices
    pred = true.copy()
    pred[5:7] = 0  # split in two predicted components, 6 of 8 slices
    et = lesion_wise_scores(pred, true, spacing=(2.0, 1.0, 1.0))["ET"]
    assert et["n_lesions"] == 1 and et["n_false_positives"] == 0
    assert et["dice"] == pytest.approx(2 * 6 / (8 + 6))
    assert et["hd95"] == pytest.approx(hd95(pred == 3, true == 3, (2.0, 1.0, 1.0)))


# ----------------------------------------------------------------------- folders


def make_labels(shift=0, et=4, shape=(16, 14, 12)):
    seg = np.zeros(shape, np.uint8)
    seg[3:11, 3:10, 2:9] = 2
    seg[5:9, 5:8, 4:7] = et
    seg[6:8, 6:7, 5:6] = 1
    return np.roll(seg, shift, axis=0)


@pytest.fixture()
def folders(tmp_path):
    truth, preds = tmp_path / "truth", tmp_path / "preds"
    truth.mkdir()
    preds.mkdir()
    spacing = np.diag([2.0, 1.0, 1.0, 1.0])
    for case in ("case_a", "case_b", "case_c"):
        write_nifti(truth / f"{case}.nii.gz", make_labels(), spacing)
    write_nifti(preds / "case_a.nii.gz", make_labels(), spacing)  # perfect
    write_nifti(preds / "case_b.nii.gz", make_labels(shift=1, et=3), spacing)  # 2023 labels, shifted
    return truth, preds


def test_evaluate_folder_round_trip(folders, tmp_path):
    truth, preds = folders
    json_path, csv_path = tmp_path / "out" / "scores.json", tmp_path / "out" / "scores.csv"
    results = evaluate_folder(preds, truth, json_path=json_path, csv_path=csv_path, progress=False)

    assert set(results) == {"cases", "mean", "median", "errors"}
    assert set(results["cases"]) == {"case_a", "case_b"}
    assert results["errors"] == {"case_c": f"case_c: prediction missing: {preds / 'case_c.nii.gz'}"}
    a, b = results["cases"]["case_a"], results["cases"]["case_b"]
    assert set(a) == {"WT", "TC", "ET", "report"}
    assert a["WT"] == {"dice": 1.0, "hd95": 0.0, "sensitivity": 1.0, "specificity": 1.0}
    assert set(a["report"]) == {"accuracy", "precision", "recall", "mean_dice", "dice_NCR", "dice_ED", "dice_ET"}
    # case_b: the same label map (ET stored as 3) one voxel further along axis 0, 2 mm voxels
    expected = region_scores(labels_to_classes(make_labels(shift=1, et=3)), labels_to_classes(make_labels()),
                             spacing=(2.0, 1.0, 1.0))
    for region in REGION_NAMES:
        assert b[region] == pytest.approx(expected[region])
    assert b["WT"]["hd95"] == pytest.approx(2.0)  # one 2 mm voxel
    assert results["mean"]["WT"]["dice"] == pytest.approx((1 + b["WT"]["dice"]) / 2)
    assert results["median"]["report"]["mean_dice"] == pytest.approx((1 + b["report"]["mean_dice"]) / 2)

    assert json.loads(json_path.read_text()) == results
    rows = list(csv.DictReader(csv_path.open()))
    assert [r["case"] for r in rows] == ["case_a", "case_b", "mean", "median"]
    assert float(rows[1]["WT_hd95"]) == b["WT"]["hd95"]
    assert float(rows[1]["dice_NCR"]) == b["report"]["dice_NCR"]
    assert float(rows[2]["ET_dice"]) == results["mean"]["ET"]["dice"]
    assert sorted(p.name for p in json_path.parent.iterdir()) == ["scores.csv", "scores.json"]  # no temp files

    table = format_table(results)
    assert "case_a" in table and "mean" in table and "median" in table
    assert "error: case_c: prediction missing" in table


def test_evaluate_folder_errors_keep_the_rest(folders):
    truth, preds = folders
    write_nifti(preds / "case_c.nii.gz", make_labels()[:, :, :5])  # wrong shape
    write_nifti(preds / "case_x.nii.gz", make_labels())  # no truth for it
    results = evaluate_folder(preds, truth, progress=False)
    assert set(results["cases"]) == {"case_a", "case_b"}
    errors = results["errors"]
    assert set(errors) == {"case_c", "case_x"}
    assert errors["case_c"].startswith("case_c: ") and "case_c.nii.gz: shape (16, 14, 5) differs" in errors["case_c"]
    assert errors["case_x"] == f"case_x: label map missing in {truth} for {preds / 'case_x.nii.gz'}"
    assert all("\n" not in e for e in errors.values())


def test_evaluate_folder_with_brats_case_folders(tmp_path):
    truth, preds = tmp_path / "brats", tmp_path / "preds"
    preds.mkdir()
    # a full BraTS case (images and seg), and a folder holding only its seg
    write_small_case(truth, "BraTS_full", layout="2021")
    full = labels_to_classes(np.asanyarray(nib.load(str(truth / "BraTS_full" / "BraTS_full_seg.nii.gz")).dataobj))
    (truth / "seg_only").mkdir()
    write_nifti(truth / "seg_only" / "seg_only_seg.nii.gz", make_labels())
    write_nifti(preds / "BraTS_full.nii.gz", np.where(full == 3, 4, full).astype(np.uint8))
    write_nifti(preds / "seg_only.nii.gz", make_labels())
    results = evaluate_folder(preds, truth, progress=False)
    assert results["errors"] == {}
    assert set(results["cases"]) == {"BraTS_full", "seg_only"}
    assert results["mean"]["ET"]["dice"] == 1.0


def test_evaluate_folder_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="prediction folder not found"):
        evaluate_folder(tmp_path / "nope", tmp_path, progress=False)


def test_evaluation_does_not_import_keras():
    code = (
        "import sys, brats_keras.evaluation; "
        "bad = [m for m in ('keras', 'tensorflow', 'jax', 'torch') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=str(__import__("pathlib").Path(__file__).parents[1]))
