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
    LESION_HD95_MISS,
    dice,
    evaluate_folder,
    format_table,
    hd95,
    lesion_wise_scores,
    region_scores,
    report_scores,
    score_case,
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


def test_lesion_wise_on_a_real_label_map(real_regions):
    """Properties of the official definition that must hold on a real case.

    Brats18_2013_11_1 has 54 ET islands (3 WT islands): the dilation makes each region one lesion.
    """
    classes, spacing = real_regions["Brats18_2013_11_1"]
    assert np.prod(spacing) == 1.0
    perfect = lesion_wise_scores(classes, classes, spacing)
    assert perfect == {r: {"dice": 1.0, "hd95": 0.0, "n_lesions": 1, "n_missed": 0, "n_false_positives": 0}
                       for r in REGION_NAMES}
    simplified = lesion_wise_scores(classes, classes, spacing, dilation=0, min_volume=0)
    assert [simplified[r]["n_lesions"] for r in REGION_NAMES] == [3, 14, 54]

    # one lesion and every predicted component near it: the lesion-wise scores are the legacy ones
    eroded = np.where(ndimage.binary_erosion(classes > 0), classes, 0)
    lesion, legacy = lesion_wise_scores(eroded, classes, spacing), region_scores(eroded, classes, spacing)
    for region in REGION_NAMES:
        assert lesion[region]["n_false_positives"] == 0
        assert lesion[region]["dice"] == pytest.approx(legacy[region]["dice"], abs=1e-12)
        assert lesion[region]["hd95"] == pytest.approx(legacy[region]["hd95"], abs=1e-12)

    # one edema voxel 2 voxels off the tumor (axis-aligned, no tumor voxel among its 26 neighbours)
    # is its own component within reach of the lesion: not a false positive, WT Dice 2n / (2n + 1)
    distance = ndimage.distance_transform_edt(classes == 0)
    near = tuple(np.argwhere(distance == 2.0)[0])
    # an edema voxel at least 5 voxels away is out of reach of the 18-neighbour dilation (at most
    # 4.25 voxels): a false positive, WT Dice (1 + 0) / 2 and HD95 (0 + 374) / 2
    far = tuple(np.argwhere(distance >= 5.0)[0])
    n = np.count_nonzero(classes)
    for voxel, expected in ((near, {"dice": 2 * n / (2 * n + 1), "n_false_positives": 0}),
                            (far, {"dice": 0.5, "hd95": LESION_HD95_MISS / 2, "n_false_positives": 1})):
        pred = classes.copy()
        pred[voxel] = 2
        scores = lesion_wise_scores(pred, classes, spacing)
        assert {k: scores["WT"][k] for k in expected} == pytest.approx(expected), voxel
        assert scores["ET"] == perfect["ET"]  # edema is not ET

    # nothing predicted: every lesion missed
    empty = lesion_wise_scores(np.zeros_like(classes), classes, spacing)
    assert empty == {r: {"dice": 0.0, "hd95": LESION_HD95_MISS, "n_lesions": 1, "n_missed": 1,
                         "n_false_positives": 0} for r in REGION_NAMES}


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


def test_lesion_wise_pediatric_groups_and_drops_small_predicted_parts():
    """The 2024 pediatric scorer groups predicted parts within its dilation (5) and drops groups of 10 voxels or
    fewer before matching; the other tasks count every predicted part."""
    from brats_keras.tasks import get_task

    shape = (40, 40, 40)
    labels = np.zeros(shape, np.uint8)
    labels[5:9, 5:9, 5:9] = 4  # one 64-voxel edema lesion (PED label 4 = ED)
    pred = labels.copy()
    pred[30:32, 30:32, 30:32] = 4  # 8 stray voxels alone: dropped
    pred[30:32, 5:7, 5:7] = 4  # two 8-voxel parts 6 voxels apart: one 16-voxel group, one false positive
    pred[30:32, 13:15, 5:7] = 4
    ped = get_task("pediatric2024")
    scores = lesion_wise_scores(ped.to_classes(pred), ped.to_classes(labels), task=ped)
    for region in ("WT", "ED"):
        assert scores[region] == pytest.approx({"dice": 0.5, "hd95": LESION_HD95_MISS / 2, "n_lesions": 1,
                                                "n_missed": 0, "n_false_positives": 1})
    assert scores["ET"] == {"dice": 1.0, "hd95": 0.0, "n_lesions": 0, "n_missed": 0, "n_false_positives": 0}
    # the same maps under the 2023 rule with the same dilation and volume: three false positives
    g23 = get_task("brats2023")
    as_2023 = np.where(labels > 0, 2, 0), np.where(pred > 0, 2, 0)  # 2023 label 2 = SNFH, WT only
    wt = lesion_wise_scores(g23.to_classes(as_2023[1]), g23.to_classes(as_2023[0]), dilation=5, min_volume=10,
                            task=g23)["WT"]
    assert (wt["n_false_positives"], wt["dice"]) == (3, pytest.approx(0.25))
    # a group of exactly 11 voxels is kept; nothing predicted but small parts leaves the lesion missed
    pred = np.zeros(shape, np.uint8)
    pred[30, 30, 20:31] = 4  # 11 voxels in a row
    pred[20, 5, 5] = 4  # one voxel 11 voxels from the lesion: out of its reach, dropped
    pred[5, 30, 20:30] = 4  # 10 voxels in a row, far from everything: dropped (10 or fewer)
    scores = lesion_wise_scores(ped.to_classes(pred), ped.to_classes(labels), task=ped)["ED"]
    assert scores == pytest.approx({"dice": 0.0, "hd95": LESION_HD95_MISS, "n_lesions": 1, "n_missed": 1,
                                    "n_false_positives": 1})


def test_lesion_wise_simplified_known_values():
    # dilation=0, min_volume=0: the earlier definition (overlap matching, every lesion counted)
    shape = (20, 12, 12)
    true = np.zeros(shape, np.uint8)
    true[1:4, 1:4, 1:4] = 2  # lesion A, found exactly
    true[10:13, 1:4, 1:4] = 2  # lesion B, missed
    pred = np.zeros(shape, np.uint8)
    pred[1:4, 1:4, 1:4] = 2
    pred[15:17, 8:10, 8:10] = 2  # a false positive
    wt = lesion_wise_scores(pred, true, dilation=0, min_volume=0)["WT"]
    assert wt == pytest.approx(
        {"dice": (1 + 0 + 0) / 3, "hd95": (0 + 2 * LESION_HD95_MISS) / 3, "n_lesions": 2, "n_missed": 1,
         "n_false_positives": 1}
    )
    # no TC / ET anywhere: perfect by convention
    assert lesion_wise_scores(pred, true)["ET"] == {
        "dice": 1.0, "hd95": 0.0, "n_lesions": 0, "n_missed": 0, "n_false_positives": 0}
    # official settings: the 6 empty slices between A and B are bridged by the dilations, so
    # A and B are one 54-voxel lesion (over the 50 voxel minimum), half found: Dice 2 * 27 / (27 + 54);
    # the false positive is at offset (3, 5, 5) from B: out of reach, still false
    official = lesion_wise_scores(pred, true)["WT"]
    assert official == pytest.approx(
        {"dice": (2 / 3 + 0) / 2, "hd95": (hd95(pred[:14] > 0, true[:14] > 0) + LESION_HD95_MISS) / 2,
         "n_lesions": 1, "n_missed": 0, "n_false_positives": 1}
    )


def box_map(shape, *boxes, value=2):
    """A class map with ``value`` in each box given as (start, stop) tuples per axis."""
    out = np.zeros(shape, np.uint8)
    for box in boxes:
        out[tuple(slice(a, b) for a, b in box)] = value
    return out


A = ((1, 5), (2, 6), (2, 6))  # a 4 x 4 x 4 cube, 64 voxels (over the 50 voxel minimum)


@pytest.mark.parametrize(
    "gap,expected",
    [
        # A dilated 3 times reaches x = 7, B (from x = 11) reaches x = 8: the dilations touch,
        # so A and B are one 128-voxel lesion, half predicted: Dice 2 * 64 / (64 + 128)
        (6, {"dice": 2 / 3, "n_lesions": 1, "n_missed": 0}),
        # B from x = 12 reaches x = 9, x = 8 stays empty: two lesions, B missed
        (7, {"dice": 0.5, "hd95": LESION_HD95_MISS / 2, "n_lesions": 2, "n_missed": 1}),
    ],
)
def test_lesion_wise_groups_true_islands_whose_dilations_touch(gap, expected):
    b = ((5 + gap, 9 + gap), (2, 6), (2, 6))
    true = box_map((30, 8, 8), A, b)
    pred = box_map((30, 8, 8), A)
    wt = lesion_wise_scores(pred, true)["WT"]
    if gap == 6:
        expected = dict(expected, hd95=hd95(pred > 0, true > 0))
    assert wt == pytest.approx(dict(expected, n_false_positives=0))
    # without dilation they are always two lesions
    assert lesion_wise_scores(pred, true, dilation=0)["WT"]["n_lesions"] == 2


@pytest.mark.parametrize(
    "offset,matched",
    [
        # from the cube's corner voxel (8, 8, 8): 3 steps of the 18-neighbour structure reach
        # offsets with each coordinate <= 3 and a sum <= 6
        ((3, 2, 1), True),
        ((2, 2, 2), True),
        ((3, 3, 0), True),
        ((3, 3, 1), False),  # sum 7; the 26-neighbour cube would reach it
        ((4, 0, 0), False),
    ],
)
def test_lesion_wise_reach_of_the_dilation(offset, matched):
    cube_box = ((5, 9), (5, 9), (5, 9))
    true = box_map((16, 16, 16), cube_box)
    voxel = tuple((8 + d, 9 + d) for d in offset)
    pred = box_map((16, 16, 16), voxel)
    wt = lesion_wise_scores(pred, true)["WT"]
    if matched:  # the lone voxel is the lesion's prediction: Dice 0, its HD95, no false positive
        expected = {"dice": 0.0, "hd95": hd95(pred > 0, true > 0), "n_lesions": 1, "n_missed": 0,
                    "n_false_positives": 0}
    else:  # the lesion is missed and the voxel is a false positive
        expected = {"dice": 0.0, "hd95": LESION_HD95_MISS, "n_lesions": 1, "n_missed": 1,
                    "n_false_positives": 1}
    assert wt == pytest.approx(expected)


def test_lesion_wise_small_lesions_are_not_scored():
    small = ((20, 23), (2, 5), (2, 5))  # 27 voxels, far from A
    true = box_map((30, 8, 8), A, small)
    found = lesion_wise_scores(box_map((30, 8, 8), A, small), true)["WT"]
    missed = lesion_wise_scores(box_map((30, 8, 8), A), true)["WT"]
    # found or missed, the small lesion does not count; when found, it is no false positive
    for scores in (found, missed):
        assert scores == {"dice": 1.0, "hd95": 0.0, "n_lesions": 1, "n_missed": 0, "n_false_positives": 0}
    # the same small lesion with min_volume=0 counts
    assert lesion_wise_scores(box_map((30, 8, 8), A), true, min_volume=0)["WT"] == pytest.approx(
        {"dice": 0.5, "hd95": LESION_HD95_MISS / 2, "n_lesions": 2, "n_missed": 1, "n_false_positives": 0})


@pytest.mark.parametrize(
    "spacing,expected",
    [
        # 50 voxels of 1 mm^3: 50 mm^3 is not over the minimum, nothing to score
        (None, {"dice": 1.0, "hd95": 0.0, "n_lesions": 0, "n_missed": 0, "n_false_positives": 0}),
        # the same voxels of 2 mm^3: 100 mm^3, a lesion, missed
        ((2.0, 1.0, 1.0), {"dice": 0.0, "hd95": LESION_HD95_MISS, "n_lesions": 1, "n_missed": 1,
                           "n_false_positives": 0}),
    ],
)
def test_lesion_wise_minimum_volume_is_in_cubic_mm(spacing, expected):
    true = box_map((12, 12, 12), ((2, 7), (2, 7), (2, 4)))  # 5 x 5 x 2 = 50 voxels
    pred = np.zeros_like(true)
    assert lesion_wise_scores(pred, true, spacing)["WT"] == expected


def test_lesion_wise_empty_regions():
    empty = np.zeros((12, 12, 12), np.uint8)
    two_blobs = box_map((12, 12, 12), ((0, 2), (0, 2), (0, 2)), ((9, 11), (9, 11), (9, 11)))
    assert lesion_wise_scores(empty, empty)["WT"] == {
        "dice": 1.0, "hd95": 0.0, "n_lesions": 0, "n_missed": 0, "n_false_positives": 0}
    assert lesion_wise_scores(two_blobs, empty)["WT"] == {
        "dice": 0.0, "hd95": LESION_HD95_MISS, "n_lesions": 0, "n_missed": 0, "n_false_positives": 2}


@pytest.mark.parametrize("kwargs,message", [
    ({"dilation": -1}, "dilation must be a whole number >= 0"),
    ({"dilation": 1.5}, "dilation must be a whole number >= 0"),
    ({"min_volume": -1}, "min_volume must be >= 0"),
])
def test_lesion_wise_bad_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        lesion_wise_scores(np.zeros((4, 4, 4)), np.zeros((4, 4, 4)), **kwargs)


def test_lesion_wise_merges_the_components_that_overlap_a_lesion():
    true = np.zeros((12, 8, 8), np.uint8)
    true[2:10, 2:5, 2:5] = 3  # one ET lesion of 8 slices
    pred = true.copy()
    pred[5:7] = 0  # split in two predicted components, 6 of 8 slices
    et = lesion_wise_scores(pred, true, spacing=(2.0, 1.0, 1.0))["ET"]
    assert et["n_lesions"] == 1 and et["n_false_positives"] == 0 and et["n_missed"] == 0
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
    results = evaluate_folder(preds, truth, json_path=json_path, csv_path=csv_path, progress=False,
                              only_predicted=True)

    assert set(results) == {"cases", "mean", "median", "missing", "only_predicted", "errors", "notes",
                            "write_errors"}
    assert results["notes"] == {} and results["write_errors"] == []
    assert set(results["cases"]) == {"case_a", "case_b"}
    assert results["missing"] == ["case_c"] and results["only_predicted"] is True
    assert results["errors"] == {}
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
    assert table.splitlines()[-1] == (
        "missing: 1 prediction(s), left out of the mean and median (only predicted cases scored): case_c")


def test_evaluate_folder_scores_a_missing_prediction_as_brats_does(tmp_path):
    """Three truth cases, two predicted exactly, one missing: mean Dice (1 + 1 + 0) / 3."""
    truth, preds = tmp_path / "truth", tmp_path / "preds"
    truth.mkdir()
    preds.mkdir()
    for case in ("case_a", "case_b", "case_c"):
        write_nifti(truth / f"{case}.nii.gz", make_labels())
    for case in ("case_a", "case_b"):
        write_nifti(preds / f"{case}.nii.gz", make_labels())
    results = evaluate_folder(preds, truth, progress=False, lesion_wise=True)
    assert results["missing"] == ["case_c"] and results["errors"] == {}
    assert set(results["cases"]) == {"case_a", "case_b", "case_c"}
    c = results["cases"]["case_c"]
    for region in REGION_NAMES:
        assert c[region]["dice"] == 0.0 and c[region]["hd95"] == HD95_EMPTY
        assert c[region]["sensitivity"] == 0.0 and c[region]["specificity"] == 1.0  # an empty prediction's
        assert c["lesion_wise"][region]["dice"] == 0.0 and c["lesion_wise"][region]["hd95"] == LESION_HD95_MISS
        assert results["mean"][region]["dice"] == pytest.approx((1 + 1 + 0) / 3)
        assert results["mean"][region]["hd95"] == pytest.approx((0 + 0 + HD95_EMPTY) / 3)
        assert results["median"][region]["dice"] == 1.0
    assert results["mean"]["lesion_wise"]["WT"]["hd95"] == pytest.approx(LESION_HD95_MISS / 3)
    table = format_table(results)
    assert "case_c" in table and "(no prediction)" in table
    assert table.splitlines()[-1] == (
        f"missing: 1 prediction(s), each scored Dice 0 and HD95 {HD95_EMPTY} in every region: case_c")

    only = evaluate_folder(preds, truth, progress=False, only_predicted=True)
    assert only["missing"] == ["case_c"] and set(only["cases"]) == {"case_a", "case_b"}
    assert only["mean"]["WT"]["dice"] == 1.0


def test_score_case_is_what_evaluate_folder_gives_each_case(folders):
    truth, preds = folders
    results = evaluate_folder(preds, truth, progress=False, lesion_wise=True, only_predicted=True)
    pred = labels_to_classes(np.asarray(nib.load(preds / "case_b.nii.gz").dataobj))
    true = labels_to_classes(make_labels())
    # the label map's path: read as evaluate_folder reads it, its zooms (2, 1, 1) are the spacing
    assert score_case(pred, truth / "case_b.nii.gz", lesion_wise=True) == results["cases"]["case_b"]
    assert score_case(pred, true, (2.0, 1.0, 1.0), lesion_wise=True) == results["cases"]["case_b"]
    assert score_case(pred, true, (2.0, 1.0, 1.0), report=False) == region_scores(pred, true, (2.0, 1.0, 1.0))
    counts = score_case(pred, true, report=False, distances=False)
    for region in REGION_NAMES:  # the counts alone: the same Dice, no HD95
        assert set(counts[region]) == {"dice", "sensitivity", "specificity"}
        assert counts[region]["dice"] == results["cases"]["case_b"][region]["dice"]


def test_evaluate_folder_case_ids_scores_only_those_cases(folders):
    truth, preds = folders
    write_nifti(preds / "case_x.nii.gz", make_labels())  # not asked for: ignored, no error
    everything = evaluate_folder(preds, truth, progress=False)
    results = evaluate_folder(preds, truth, progress=False, case_ids=["case_b", "case_c", "case_zz"])
    assert set(results["cases"]) == {"case_b", "case_c"}
    assert results["cases"]["case_b"] == everything["cases"]["case_b"]
    assert results["missing"] == ["case_c"]  # asked for, not predicted: Dice 0 as BraTS scores it
    assert results["cases"]["case_c"]["WT"]["dice"] == 0.0
    assert results["errors"] == {"case_zz": f"case_zz: no prediction in {preds} and no label map in {truth}"}
    assert results["mean"]["WT"]["dice"] == pytest.approx(everything["cases"]["case_b"]["WT"]["dice"] / 2)
    with pytest.raises(ValueError, match=r"no predictions \(<case>.nii.gz\) of the 1 case\(s\) asked for"):
        evaluate_folder(preds, truth, progress=False, case_ids=["case_c"])
    with pytest.raises(TypeError, match="list of case id strings"):
        evaluate_folder(preds, truth, progress=False, case_ids="case_b")


def test_format_table_layouts():
    case = {r: {"dice": 0.5, "hd95": 2.0, "sensitivity": 1.0, "specificity": 1.0} for r in REGION_NAMES}
    case["report"] = {"accuracy": 0.99, "precision": 0.5, "recall": 0.25, "mean_dice": 0.75,
                      "dice_NCR": 1.0, "dice_ED": 0.5, "dice_ET": 0.75}
    results = {"cases": {"c1": case}, "mean": case, "median": case, "missing": [], "errors": {}}
    assert format_table(results).splitlines() == [
        "case    Dice WT     TC     ET  HD95 WT     TC     ET  class Dice",
        "-" * 64,
        "c1       0.5000 0.5000 0.5000     2.00   2.00   2.00      0.7500",
        "-" * 64,
        "mean     0.5000 0.5000 0.5000     2.00   2.00   2.00      0.7500",
        "median   0.5000 0.5000 0.5000     2.00   2.00   2.00      0.7500",
    ]
    assert format_table(results, columns="report").splitlines()[:3] == [
        "case    accuracy precision recall mean_dice dice_NCR dice_ED dice_ET",
        "-" * 68,
        "c1        0.9900    0.5000 0.2500    0.7500   1.0000  0.5000  0.7500",
    ]
    # one row per run, from the means of several evaluations
    assert format_table({"dice+ce": case}, columns=("dice", "classes"), label="loss").splitlines() == [
        "loss     Dice WT     TC     ET  Dice NCR     ED     ET",
        "-" * 54,
        "dice+ce   0.5000 0.5000 0.5000    1.0000 0.5000 0.7500",
    ]
    with pytest.raises(ValueError, match="unknown column group"):
        format_table(results, columns=("dice", "volume"))


def test_evaluate_folder_errors_keep_the_rest(folders):
    truth, preds = folders
    write_nifti(preds / "case_c.nii.gz", make_labels()[:, :, :5])  # wrong shape
    write_nifti(preds / "case_x.nii.gz", make_labels())  # no truth for it
    results = evaluate_folder(preds, truth, progress=False)
    assert set(results["cases"]) == {"case_a", "case_b"}
    errors = results["errors"]
    assert set(errors) == {"case_c", "case_x"}
    assert errors["case_c"] == (f"case_c: {preds / 'case_c.nii.gz'} and {truth / 'case_c.nii.gz'} are not on one "
                                "grid: shape (16, 14, 5) and (16, 14, 12)")
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


def run_cli(argv, capsys):
    from brats_keras.cli import main

    status = main(["evaluate", "--quiet", *[str(a) for a in argv]])
    out, err = capsys.readouterr()
    return status, out, err


@pytest.mark.parametrize("which", ["pred missing", "truth missing", "pred empty", "truth without label maps",
                                   "pred is a file"])
def test_cli_evaluate_bad_input_is_one_line_and_exit_2(folders, tmp_path, capsys, which):
    truth, preds = folders
    empty = tmp_path / "empty"
    empty.mkdir()
    json_path = tmp_path / "out" / "scores.json"
    pred_arg, truth_arg, message = {
        "pred missing": (tmp_path / "nope", truth, f"prediction folder not found: {tmp_path / 'nope'}"),
        "truth missing": (preds, tmp_path / "nope", f"truth folder not found: {tmp_path / 'nope'}"),
        "pred empty": (empty, truth, f"no predictions (<case>.nii.gz) in {empty}"),
        "truth without label maps": (preds, empty, "no label maps (<case>/<case>_seg.nii.gz or <case>.nii.gz) "
                                                   f"in {empty}"),
        "pred is a file": (preds / "case_a.nii.gz", truth,
                           f"prediction folder is not a folder: {preds / 'case_a.nii.gz'}"),
    }[which]
    status, out, err = run_cli(["--pred", pred_arg, "--truth", truth_arg, "--json", json_path], capsys)
    assert status == 2
    assert err == f"error: {message}\n"
    assert out == "" and not json_path.parent.exists()


def test_cli_evaluate_exit_status_with_a_missing_prediction(folders, tmp_path, capsys):
    truth, preds = folders  # case_c has no prediction
    json_path = tmp_path / "scores.json"
    status, out, err = run_cli(["--pred", preds, "--truth", truth, "--json", json_path], capsys)
    assert status == 1  # scored and written, but not every truth case was predicted
    assert f"MISSING 1 prediction(s) in {preds}: case_c" in err
    assert "missing: 1 prediction(s), each scored Dice 0" in out
    assert json.loads(json_path.read_text())["missing"] == ["case_c"]
    status, out, err = run_cli(["--pred", preds, "--truth", truth, "--only-predicted"], capsys)
    assert status == 0  # asked for the predicted cases only
    assert "left out of the mean and median" in out
    write_nifti(preds / "case_c.nii.gz", make_labels(), np.diag([2.0, 1.0, 1.0, 1.0]))  # the truth's grid
    status, out, err = run_cli(["--pred", preds, "--truth", truth], capsys)
    assert status == 0 and err == "" and "missing" not in out


def test_evaluation_does_not_import_keras():
    code = (
        "import sys, brats_keras.evaluation; "
        "bad = [m for m in ('keras', 'tensorflow', 'jax', 'torch') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=str(__import__("pathlib").Path(__file__).parents[1]))


def test_resolution_ceiling_known_answers():
    from brats_keras.evaluation import resolution_ceiling

    c = np.zeros((16, 16, 16), np.uint8)
    c[4:12, 4:12, 4:12] = 2  # block-aligned cubes at 2 mm come back whole but for their 8 corner voxels,
    c[6:10, 6:10, 6:10] = 3  # where trilinear up-sampling gives 0.75^3 = 0.42 < 0.5
    assert resolution_ceiling(c, 2) == pytest.approx({"WT": 2 * 504 / (512 + 504), "TC": 2 * 56 / (64 + 56),
                                                      "ET": 2 * 56 / (64 + 56)})
    c[1, 1, 1] = 1  # one voxel of necrosis fills 1/8 of its block: lost at 2 mm
    assert resolution_ceiling(c, 2) == pytest.approx({"WT": 2 * 504 / (513 + 504), "TC": 2 * 56 / (65 + 56),
                                                      "ET": 2 * 56 / (64 + 56)})
    assert resolution_ceiling(c, 1) == {"WT": 1.0, "TC": 1.0, "ET": 1.0}


def test_label_contrast_known_answers():
    from brats_keras.evaluation import label_contrast

    image = np.zeros((10, 10, 10), np.float32)
    image[1:9, 1:9, 1:9] = 100.0  # the brain: 512 voxels
    classes = np.zeros(image.shape, np.uint8)
    image[2:4, 2:4, 2:4] = 300.0  # bright enhancing tumor: 8 voxels
    classes[2:4, 2:4, 2:4] = 3
    classes[5:7, 5:7, 5:7] = 2  # edema as bright as the brain
    brain = image[image > 0]
    got = label_contrast(image, classes)
    assert got["ET"] == pytest.approx((300 - brain.mean()) / brain.std())
    assert got["ED"] == pytest.approx((100 - brain.mean()) / brain.std()) and got["ED"] < 0 < got["ET"]
    assert np.isnan(got["NCR"])  # no necrosis labelled
    mask = np.zeros(image.shape, bool)
    mask[1:9, 1:9, 1:5] = True  # an explicit brain: half of it
    inside = image[mask]
    assert label_contrast(image, classes, mask)["ET"] == pytest.approx((300 - inside.mean()) / inside.std())
    with pytest.raises(ValueError, match="shape"):
        label_contrast(image[:-1], classes)


def test_grid_dice_scores_both_maps_on_the_coarse_grid():
    """A 1 mm error smaller than half a 2 mm block disappears on the grid; a whole block missed does not; at
    factor 1 it is the plain Dice per region."""
    from brats_keras.evaluation import grid_dice

    true = np.zeros((12, 12, 12), np.uint8)
    true[2:10, 2:10, 2:10] = 2  # edema around
    true[4:8, 4:8, 4:8] = 3  # an enhancing core, block-aligned
    pred = true.copy()
    pred[11, 11, 11] = 2  # one stray voxel: 1/8 of a block
    pred[4:8, 4:8, 7] = 2  # the core's last 1 mm slab taken for edema: ET keeps 3 of 4 slabs at 1 mm, TC too
    assert grid_dice(pred, true, 1) == pytest.approx({"WT": 2 * 512 / (513 + 512), "TC": 2 * 48 / (48 + 64),
                                                      "ET": 2 * 48 / (48 + 64)})
    # at 2 mm the stray voxel is gone and the core's last block row is still half ET: all three whole again
    assert grid_dice(pred, true, 2) == {"WT": 1.0, "TC": 1.0, "ET": 1.0}
    pred[4:8, 4:8, 6:8] = 2  # a whole block row of the core missed: 4 of 8 blocks at 2 mm, as at 1 mm
    assert grid_dice(pred, true, 2) == pytest.approx({"WT": 1.0, "TC": 2 * 4 / (4 + 8), "ET": 2 * 4 / (4 + 8)})
    with pytest.raises(ValueError, match="shape"):
        grid_dice(pred[:-1], true, 2)


# ----------------------------------------------------------------------- grids, labels and outputs
def lps(zooms=(1.0, 1.0, 1.0), origin=(0.0, 13.0, 0.0)):
    """A BraTS-like affine: x and y flipped (LPS), voxel size ``zooms``, origin ``origin``."""
    affine = np.diag([-zooms[0], -zooms[1], zooms[2], 1.0])
    affine[:3, 3] = origin
    return affine


def test_evaluate_fails_a_prediction_on_another_grid_in_one_line(tmp_path, capsys):
    """The same label array in RAS against an LPS truth scores Dice 0 voxel by voxel: it is refused instead,
    naming both files and what differs; a different origin alone is scored, with a note."""
    truth, preds = tmp_path / "truth", tmp_path / "preds"
    truth.mkdir()
    preds.mkdir()
    for case in ("case_a", "case_b", "case_c", "case_d"):
        write_nifti(truth / f"{case}.nii.gz", make_labels(), lps())
    write_nifti(preds / "case_a.nii.gz", make_labels(), lps())  # the same grid
    write_nifti(preds / "case_b.nii.gz", make_labels(), np.eye(4))  # RAS
    write_nifti(preds / "case_c.nii.gz", make_labels(), lps(zooms=(2.0, 1.0, 1.0)))  # 2 mm voxels
    write_nifti(preds / "case_d.nii.gz", make_labels(), lps(origin=(0.0, 252.0, 0.0)))  # another origin only
    status, out, err = run_cli(["--pred", preds, "--truth", truth], capsys)
    assert status == 1

    def files(case):
        return f"{preds / case}.nii.gz and {truth / case}.nii.gz"

    assert err.splitlines() == [
        f"note: case_d: {files('case_d')}: origins (0, 252, 0) and (0, 13, 0) differ on the same voxels: "
        "scored voxel by voxel",
        f"FAILED case_b: {files('case_b')} are not on one grid: orientation RAS and LPS "
        "(RAS, 1x1x1 mm, origin (0, 0, 0); LPS, 1x1x1 mm, origin (0, 13, 0))",
        f"FAILED case_c: {files('case_c')} are not on one grid: voxel size 2x1x1 mm and 1x1x1 mm "
        "(LPS, 2x1x1 mm, origin (0, 13, 0); LPS, 1x1x1 mm, origin (0, 13, 0))",
    ]
    results = evaluate_folder(preds, truth, progress=False)
    assert set(results["cases"]) == {"case_a", "case_d"} and results["mean"]["WT"]["dice"] == 1.0
    assert set(results["errors"]) == {"case_b", "case_c"} and set(results["notes"]) == {"case_d"}


@pytest.mark.parametrize("kind,message", [
    ("halves", "holds non-integer values (e.g. 0.5), not labels"),
    ("plus a half", "holds non-integer values (e.g. 1.5, 2.5, 4.5), not labels"),
    # the truth is a 2021 map: a prediction holds its values or those of a task with its classes (ET 3)
    ("post-treatment", "unexpected label values [3] for task glioma2021 (0 background, 1 NCR, 2 ED, 4 ET); nor "
                       "those of brats2023, msd-task01 (the same classes)"),
], ids=["halves", "plus a half", "post-treatment"])
def test_evaluate_names_what_a_label_map_holds(folders, capsys, kind, message):
    truth, preds = folders
    labels = make_labels().astype(np.float32)  # 0, 1 NCR, 2 ED, 4 ET
    if kind == "halves":
        labels[labels == 1] = 0.5
    elif kind == "plus a half":
        labels[labels > 0] += 0.5
    else:  # 3 for ET and 4 for the resection cavity (a BraTS 2024 post-treatment map)
        labels[labels == 4] = 3
        labels[make_labels() == 1] = 4
    write_nifti(preds / "case_c.nii.gz", labels, np.diag([2.0, 1.0, 1.0, 1.0]))
    status, out, err = run_cli(["--pred", preds, "--truth", truth], capsys)
    assert status == 1
    (line,) = err.splitlines()
    assert line.startswith(f"FAILED case_c: {preds / 'case_c.nii.gz'}: {message}")


@pytest.mark.parametrize("which", ["json is a folder", "csv below a file", "json in a read-only folder"])
def test_cli_evaluate_refuses_an_output_it_cannot_write_before_scoring(folders, tmp_path, monkeypatch, capsys,
                                                                     which):
    from brats_keras import evaluation
    from brats_keras import io as bio

    truth, preds = folders
    (tmp_path / "a folder").mkdir()
    (tmp_path / "a file").write_text("mine")
    (tmp_path / "locked").mkdir()
    flags, message = {
        "json is a folder": (["--json", tmp_path / "a folder"], f"--json {tmp_path / 'a folder'}: is a folder, "
                                                                "not a file"),
        "csv below a file": (["--json", tmp_path / "s.json", "--csv", tmp_path / "a file" / "s.csv"],
                             f"--csv {tmp_path / 'a file' / 's.csv'}: {tmp_path / 'a file'} is not a folder"),
        "json in a read-only folder": (["--json", tmp_path / "locked" / "s.json"],
                                       f"--json {tmp_path / 'locked' / 's.json'}: cannot write in "
                                       f"{tmp_path / 'locked'} (permission denied)"),
    }[which]
    real_access = bio.os.access  # chmod stops no write as root: the folder is reported unwritable
    monkeypatch.setattr(bio.os, "access", lambda p, mode: p != tmp_path / "locked" and real_access(p, mode))
    monkeypatch.setattr(evaluation.folders, "read_label_map", lambda path: pytest.fail(f"{path} read"))
    before = sorted(tmp_path.rglob("*"))
    status, out, err = run_cli(["--pred", preds, "--truth", truth, *flags], capsys)
    assert status == 2 and out == ""
    assert err == f"error: {message}\n"
    assert sorted(tmp_path.rglob("*")) == before


def test_evaluate_refuses_a_read_only_folder_by_its_mode(folders, read_only_dir):
    """The same with a real chmod, where it stops writes (not as root)."""
    truth, preds = folders
    with pytest.raises(ValueError, match=r"--csv .*locked/s.csv: cannot write in .*locked \(permission denied\)"):
        evaluate_folder(preds, truth, csv_path=read_only_dir / "s.csv", progress=False)


def test_a_full_disk_under_the_json_is_one_line_and_the_scores_are_still_shown(folders, tmp_path, monkeypatch,
                                                                              capsys):
    import errno
    from pathlib import Path

    truth, preds = folders
    out = tmp_path / "out"
    json_path, csv_path = out / "s.json", out / "s.csv"
    real_text = Path.write_text

    def write_text(self, text, *args, **kwargs):  # the JSON's temporary file gets half its text
        if self.name.startswith(".s.json."):
            real_text(self, text[: len(text) // 2], *args, **kwargs)
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_text(self, text, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", write_text)
    (truth / "case_c.nii.gz").unlink()  # every truth case predicted: the write failure alone makes the exit 1
    status, stdout, err = run_cli(["--pred", preds, "--truth", truth, "--json", json_path, "--csv", csv_path],
                                  capsys)
    assert status == 1
    assert err == f"error: {json_path}: no space left on device\n"
    assert "case_a" in stdout and "mean" in stdout  # the table all the same
    assert sorted(p.name for p in out.iterdir()) == ["s.csv"]  # whole, and nothing of the JSON
    assert [r["case"] for r in csv.DictReader(csv_path.open())] == ["case_a", "case_b", "mean", "median"]


@pytest.mark.parametrize("content", [b"not a nifti", None])
def test_label_maps_have_one_reader_with_one_error(tmp_path, content):
    """Scoring reads a label map with io's reader: a broken or missing file is the same BratsInputError line."""
    from brats_keras import evaluation
    from brats_keras.io import BratsInputError, load_classes, read_label_map

    path = tmp_path / "seg.nii.gz"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(BratsInputError) as from_io:
        load_classes(path)
    with pytest.raises(BratsInputError) as from_scoring:
        score_case(np.zeros((4, 4, 4), np.uint8), path)
    assert str(from_scoring.value) == str(from_io.value)
    assert str(from_io.value).startswith(f"{path}: ")
    assert evaluation.folders.read_label_map is read_label_map


# ----------------------------------------------------------------------- tasks: their regions and classes
def line_map(values, shape=(3, 3, 20)):
    """A label map holding ``values`` along one row of voxels (each its own voxel)."""
    seg = np.zeros(shape, np.uint8)
    seg[1, 1, :len(values)] = values
    return seg


#: post-treatment (NETC 1, SNFH 2, ET 3, RC 4): two of the four cavity voxels predicted as SNFH
POST_TRUTH = [1, 1, 2, 2, 3, 3, 4, 4, 4, 4]
POST_PRED = [1, 1, 2, 2, 3, 3, 4, 4, 2, 2]
#: WT = NETC + SNFH + ET (not RC): 6 true voxels, 8 predicted, 6 shared; RC scored on its own: 4 true, 2 predicted
POST_DICE = {"WT": 12 / 14, "TC": 1.0, "NETC": 1.0, "SNFH": 4 / 6, "ET": 1.0, "RC": 4 / 6}
#: pediatric 2024 (ET 1, NETC 2, CC 3, ED 4): the cyst predicted as edema
PED_TRUTH = [1, 1, 2, 2, 3, 3, 4, 4]
PED_PRED = [1, 1, 2, 2, 4, 4, 4, 4]
#: TC = ET + NETC + CC: 6 true, 4 predicted, 4 shared; WT holds all four labels
PED_DICE = {"WT": 1.0, "TC": 0.8, "ET": 1.0, "NETC": 1.0, "CC": 0.0, "ED": 4 / 6}


@pytest.mark.parametrize("task_name,truth,pred,expected", [
    ("glioma2024-post", POST_TRUTH, POST_PRED, POST_DICE),
    ("pediatric2024", PED_TRUTH, PED_PRED, PED_DICE),
])
def test_region_scores_are_the_tasks_regions(task_name, truth, pred, expected):
    from brats_keras.tasks import get_task

    task = get_task(task_name)
    true, predicted = task.to_classes(line_map(truth)), task.to_classes(line_map(pred))
    scores = score_case(predicted, true, task=task)
    assert list(scores) == [*expected, "report"]
    assert {r: scores[r]["dice"] for r in expected} == pytest.approx(expected)
    names = [f"dice_{c}" for c in task.class_names[1:]]
    assert [k for k in scores["report"] if k.startswith("dice_")] == names


@pytest.mark.parametrize("task_name,case,truth,pred,expected", [
    ("glioma2024-post", "BraTS-GLI-00001-100", POST_TRUTH, POST_PRED, POST_DICE),
    ("pediatric2024", "BraTS-PED-00001-000", PED_TRUTH, PED_PRED, PED_DICE),
])
def test_evaluate_detects_the_task_from_the_truths_values_and_names(tmp_path, capsys, task_name, case, truth, pred,
                                                                   expected):
    (tmp_path / "truth").mkdir()
    (tmp_path / "preds").mkdir()
    write_nifti(tmp_path / "truth" / f"{case}.nii.gz", line_map(truth))
    write_nifti(tmp_path / "preds" / f"{case}.nii.gz", line_map(pred))
    status, out, err = run_cli(["--pred", tmp_path / "preds", "--truth", tmp_path / "truth",
                                "--json", tmp_path / "scores.json"], capsys)
    assert status == 0, err
    res = json.loads((tmp_path / "scores.json").read_text())
    assert res["task"]["name"] == task_name
    assert {r: res["cases"][case][r]["dice"] for r in expected} == pytest.approx(expected)
    assert out.splitlines()[0].split()[:len(expected) + 2] == ["case", "Dice", *expected]


def test_evaluate_refuses_a_prediction_outside_the_task_and_a_truth_of_no_task(tmp_path, capsys):
    (tmp_path / "truth").mkdir()
    (tmp_path / "preds").mkdir()
    for case in ("BraTS-PED-00001-000", "BraTS-PED-00002-000", "plain_case"):
        write_nifti(tmp_path / "preds" / f"{case}.nii.gz", line_map(PED_TRUTH))
    write_nifti(tmp_path / "truth" / "BraTS-PED-00001-000.nii.gz", line_map(PED_TRUTH))
    write_nifti(tmp_path / "truth" / "BraTS-PED-00002-000.nii.gz", line_map(PED_TRUTH))
    write_nifti(tmp_path / "preds" / "BraTS-PED-00002-000.nii.gz", line_map([1, 5]))
    write_nifti(tmp_path / "truth" / "plain_case.nii.gz", line_map([3, 4]))  # 3 and 4: post-treatment or PED
    status, out, err = run_cli(["--pred", tmp_path / "preds", "--truth", tmp_path / "truth"], capsys)
    assert status == 1
    assert err.splitlines() == [
        f"FAILED BraTS-PED-00002-000: {tmp_path / 'preds' / 'BraTS-PED-00002-000.nii.gz'}: unexpected label values "
        "[5] for task pediatric2024 (0 background, 1 ET, 2 NETC, 3 CC, 4 ED)",
        f"FAILED plain_case: {tmp_path / 'truth' / 'plain_case.nii.gz'}: label values [0, 3, 4]: 3 and 4 together "
        "are the 2024 post-treatment glioma (4 = resection cavity) or the 2024 pediatric labels (4 = edema), never "
        "2021's; give the task: --task glioma2024-post or --task pediatric2024"]
    # told the task, the plain-named map is scored by it
    status, out, err = run_cli(["--pred", tmp_path / "preds", "--truth", tmp_path / "truth", "--task",
                                "pediatric2024"], capsys)
    assert "FAILED plain_case" not in err and "plain_case" in out


def test_evaluate_task_flag_refuses_an_unknown_task_in_one_line(folders, capsys):
    truth, preds = folders
    with pytest.raises(SystemExit) as exc:
        run_cli(["--pred", preds, "--truth", truth, "--task", "nope"], capsys)
    err = capsys.readouterr().err
    assert exc.value.code == 2 and len(err.splitlines()) == 1
    assert "argument --task: unknown task 'nope': use one of glioma2021" in err


def test_lesion_wise_scores_take_the_tasks_official_volumes():
    """BraTS 2024 post-treatment: lesions over 20 mm^3 count, ET ones over 10 (the 2021 task: over 50)."""
    true = np.zeros((12, 12, 12), np.uint8)
    true[3:6, 3:6, 3:5] = 3  # an 18-voxel ET lesion (post-treatment values), missed
    pred = np.zeros_like(true)
    post = lesion_wise_scores(pred, true, task="glioma2024-post")
    assert post["ET"]["n_lesions"] == 1 and post["ET"]["n_missed"] == 1 and post["ET"]["dice"] == 0.0
    assert post["WT"]["n_lesions"] == 0 and post["WT"]["dice"] == 1.0  # 18 voxels: not over 20
    assert list(post) == ["WT", "TC", "NETC", "SNFH", "ET", "RC"]
    assert lesion_wise_scores(pred, true)["ET"]["n_lesions"] == 0  # default task: over 50 only
    assert lesion_wise_scores(pred, true, task="glioma2024-post", min_volume=50)["ET"]["n_lesions"] == 0
