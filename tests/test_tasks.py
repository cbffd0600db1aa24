"""Tasks as data: the built-in tasks against their cited definitions, the mapping between labels, classes and
regions, task JSON files and their mistakes, and detecting a label map's task."""
import json

import numpy as np
import pytest

from brats_keras import labels
from brats_keras.tasks import (TASKS, TaskError, detect_task, get_task, load_task_file, task_from_dict)

# Each built-in task's regions as label-value sets, written out from the cited sources (the official scorers:
# BraTS-2023-Metrics brats_metrics.py, BraTS-2024-Metrics metrics_GLI.py / metrics_PED.py; MSD dataset.json).
SOURCED = {
    "glioma2021": ({1: "NCR", 2: "ED", 4: "ET"}, {"WT": {1, 2, 4}, "TC": {1, 4}, "ET": {4}}),
    "brats2023": ({1: "NETC", 2: "SNFH", 3: "ET"}, {"WT": {1, 2, 3}, "TC": {1, 3}, "ET": {3}}),
    "glioma2024-post": ({1: "NETC", 2: "SNFH", 3: "ET", 4: "RC"},
                        {"WT": {1, 2, 3}, "TC": {1, 3}, "NETC": {1}, "SNFH": {2}, "ET": {3}, "RC": {4}}),
    "pediatric2024": ({1: "ET", 2: "NETC", 3: "CC", 4: "ED"},
                      {"WT": {1, 2, 3, 4}, "TC": {1, 2, 3}, "ET": {1}, "NETC": {2}, "CC": {3}, "ED": {4}}),
    "msd-task01": ({1: "ED", 2: "NET", 3: "ET"}, {"WT": {1, 2, 3}, "TC": {2, 3}, "ET": {3}}),
    # BraTS-2024-Metrics metrics_MEN_RT.py: label_values ['GTV'], GTV = 1
    "men-rt2024": ({1: "GTV"}, {"GTV": {1}}),
}


@pytest.mark.parametrize("name", sorted(SOURCED))
def test_builtin_tasks_hold_their_sourced_labels_and_regions(name):
    task = get_task(name)
    values, regions = SOURCED[name]
    assert {lab.value: lab.name for lab in task.labels} == values
    assert {r.name: set(r.labels) for r in task.regions} == regions
    assert task.source, "every built-in task cites its source"


@pytest.mark.parametrize("name", sorted(SOURCED))
def test_every_label_value_round_trips_through_classes_and_scores_in_its_regions(name):
    task = get_task(name)
    values, regions = SOURCED[name]
    label_map = np.array(sorted(values) + [0], dtype=np.int16)
    classes = task.to_classes(label_map)
    assert classes.dtype == np.uint8 and sorted(classes.tolist()) == list(range(task.n_classes))
    assert task.to_labels(classes).tolist() == label_map.tolist()
    # a voxel of value v lies in region r exactly when the source puts v in r
    in_region = task.classes_to_regions(classes)
    for j, region in enumerate(task.region_names):
        assert [bool(x) for x in in_region[:, j]] == [int(v) in regions[region] for v in label_map]


@pytest.mark.parametrize("name", sorted(SOURCED))
def test_a_region_head_decodes_its_own_targets_back_to_every_class(name):
    task = get_task(name)
    classes = np.arange(task.n_classes, dtype=np.uint8)
    targets = task.classes_to_regions(classes, task.region_order).astype(np.float32)
    assert task.regions_to_classes(targets).tolist() == classes.tolist()
    assert task.output_channels("regions") == len(task.region_order)
    assert task.output_channels("softmax") == task.n_classes
    np.testing.assert_array_equal(task.region_membership, targets)


def test_the_default_task_maps_exactly_as_the_2021_vocabulary():
    task = get_task()
    assert task.name == "glioma2021" and task.class_names == labels.CLASS_NAMES
    rng = np.random.default_rng(0)
    label_map = rng.choice([0, 1, 2, 4], size=(9, 10, 11)).astype(np.int16)
    classes = task.to_classes(label_map)
    np.testing.assert_array_equal(classes, labels.labels_to_classes(label_map, "2021"))
    np.testing.assert_array_equal(task.to_labels(classes), labels.classes_to_labels(classes))
    np.testing.assert_array_equal(task.classes_to_regions(classes), labels.classes_to_regions(classes))
    probs = rng.random((9, 10, 11, 3))
    np.testing.assert_array_equal(task.regions_to_classes(probs, (0.3, 0.5, 0.6)),
                                  labels.regions_to_classes(probs, (0.3, 0.5, 0.6)))


def test_msd_classes_are_the_2021_classes():
    """Task01's labels renumber BraTS's: edema 1, non-enhancing 2, enhancing 3 are classes ED, NCR, ET."""
    msd, g21 = get_task("msd-task01"), get_task("glioma2021")
    np.testing.assert_array_equal(msd.to_classes(np.array([0, 1, 2, 3])), g21.to_classes(np.array([0, 2, 1, 4])))
    assert msd.same_classes(g21) and get_task("brats2023").same_classes(g21)
    assert not get_task("glioma2024-post").same_classes(g21)


def test_post_treatment_keeps_the_cavity_out_of_the_whole_tumour():
    task = get_task("glioma2024-post")
    probs = np.zeros((1, 4))
    probs[0, 3] = 0.9  # only RC above threshold
    assert task.regions_to_classes(probs).tolist() == [4]
    assert task.classes_to_regions(task.to_classes(np.array([4])))[0].tolist() == [
        r == "RC" for r in task.region_names]


@pytest.mark.parametrize("name", sorted(TASKS))
def test_a_task_record_rebuilds_the_task(name, tmp_path):
    task = get_task(name)
    path = tmp_path / "task.json"
    path.write_text(json.dumps(task.to_dict()))
    assert load_task_file(path) == task == get_task(task.to_dict()) == get_task(str(path))


MISTAKES = [
    ('{"name": "t", "labels": {"A": 1, "B": 1}, "regions": {"R": ["A"]}}', "label value 1 is given twice"),
    ('{"name": "t", "labels": {"A": 1, "A": 2}, "regions": {"R": ["A"]}}', "'A' is given twice"),
    ('{"name": "t", "labels": {"A": 1}, "regions": {"R": ["A", "X"]}}', "region 'R' names unknown label 'X'"),
    ('{"name": "t", "labels": {"A": 1}, "regions": {"R": [7]}}', "region 'R' names unknown label 7"),
    ('{"name": "t", "labels": {"A": 1, "B": 2}, "regions": {"R": ["A"]}}', "no region decodes to label 'B'"),
    ('{"name": "t", "labels": {"A": 1, "B": 2}, "regions": {"S": ["A"], "W": ["A", "B"]}}',
     "region 'S' must add exactly one label"),
    ('{"name": "t", "labels": {"A": 1}, "regions": {"R": ["A"]}, "region_order": ["Q"]}',
     "region_order names unknown region 'Q'"),
    ('{"name": "t", "labels": {"A": 0.5}, "regions": {"R": ["A"]}}', "whole number from 1 to 255"),
    ('{"name": "t", "labels": {"A": 1}, "regions": {"R": ["A"]}, "modalities": ["pd"]}', "unknown modality 'pd'"),
    ('{"name": "t", "labels": {"A": 1}, "regions": {"R": ["A"]}, "colour": {}}', "unknown key 'colour'"),
    ('{"labels": {"A": 1}, "regions": {"R": ["A"]}}', "no 'name'"),
    ('{"name": "t", "labels": {"A": 1}, "regions": {"R": ["A"]}, "colors": {"A": [1, 2]}}', "[R, G, B]"),
    ('{"name": "t", "labels": {"A": 1}, "regions": {"R": ["A"],}}', "not JSON"),
]


@pytest.mark.parametrize("text, expected", MISTAKES)
def test_a_task_file_with_a_mistake_is_refused_in_one_line_naming_it(text, expected, tmp_path):
    path = tmp_path / "mytask.json"
    path.write_text(text)
    with pytest.raises(TaskError) as err:
        load_task_file(path)
    msg = str(err.value)
    assert expected in msg and str(path) in msg and "\n" not in msg


def test_a_user_task_like_nnunet_dataset_json_works():
    task = task_from_dict({"name": "lesions", "labels": {"background": 0, "lesion": 1, "halo": 2},
                           "regions": {"all": ["lesion", "halo"], "core": [1]}, "modalities": ["t1c", "t2f"]})
    assert task.class_names == ("background", "lesion", "halo") and task.modalities == ("t1ce", "flair")
    assert task.decoded_classes == (2, 1)
    assert task.regions_to_classes(np.array([[0.9, 0.1], [0.9, 0.8], [0.1, 0.1]])).tolist() == [2, 1, 0]


def test_an_unknown_task_name_lists_the_built_in_ones():
    with pytest.raises(TaskError, match="unknown task 'glioma2019': use one of glioma2021, brats2023"):
        get_task("glioma2019")


DETECT = [
    ([0, 1, 2, 4], "Brats18_TCIA02_606_1", "2021", "glioma2021"),
    ([0, 1, 2, 4], "case", "plain", "glioma2021"),
    ([0, 1, 2], "case", "plain", "glioma2021"),
    ([0, 1, 2, 3], "case", "plain", "brats2023"),
    ([0, 1, 2, 3], "BraTS-MEN-00001-000", "2023", "brats2023"),
    ([0, 1, 2, 3, 4], "BraTS-GLI-02073-100", "2023", "glioma2024-post"),
    ([0, 1, 4], "BraTS-GLI-02073-100", "2023", "glioma2024-post"),
    ([0, 1, 2, 3, 4], "BraTS-PED-00001-000", "2023", "pediatric2024"),
    ([0, 1, 2, 3], "BRATS_001", "msd", "msd-task01"),
    ([0, 1], "BraTS-MEN-RT-0000-1", "2023", "men-rt2024"),
    ([0, 1], "BraTS-MEN-00001-000", "2023", "brats2023"),
]


@pytest.mark.parametrize("values, case_id, naming, expected", DETECT)
def test_a_label_maps_task_is_detected_where_naming_and_values_say_it(values, case_id, naming, expected):
    assert detect_task(values, case_id, naming).name == expected


@pytest.mark.parametrize("values, case_id, naming, expected", [
    ([0, 1, 2, 3, 4], "case", "plain", "--task glioma2024-post or --task pediatric2024"),
    ([0, 1, 2, 3, 4], "Brats18_x", "2021", "the values fit glioma2024-post, pediatric2024"),
    ([0, 1, 2, 3], "BraTS-PED-00001-000", "2023", "--task brats2023 or --task pediatric2024"),
    ([0, 1, 2, 3, 4], "BraTS-MET-00001-000", "2023", "unexpected label values [4] for task brats2023"),
    ([0, 1, 7], "case", "plain", "unexpected label values [7]"),
    ([0, 1, 2], "BraTS-MEN-RT-0000-1", "2023", "unexpected label values [2] for task men-rt2024"),
])
def test_a_map_with_no_single_task_is_refused_naming_the_choice(values, case_id, naming, expected):
    with pytest.raises(TaskError, match=None) as err:
        detect_task(values, case_id, naming)
    assert expected in str(err.value)


def test_a_given_task_is_only_checked():
    assert detect_task([0, 1, 2, 3, 4], "case", "plain", given="glioma2024-post").name == "glioma2024-post"
    with pytest.raises(TaskError, match="unexpected label values \\[3\\] for task glioma2021"):
        detect_task([0, 1, 2, 3, 4], "case", "plain", given="glioma2021")
