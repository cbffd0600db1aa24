"""Tasks on the data side: label maps read by task, `convert --task` and detection, the manifest's task record,
the generator's targets per task, and synthetic cases of every built-in task."""
from __future__ import annotations

import json
import shutil

import nibabel as nib
import numpy as np
import pytest

from brats_keras import io as bio
from brats_keras.cli import main as cli_main
from brats_keras.convert import convert_folder
from brats_keras.data import ConvertedCases, PatchDataset, make_targets
from brats_keras.labels import labels_to_classes, one_hot
from brats_keras.spec import case_label_task, read_manifest
from brats_keras.synthetic import case_files, make_case, task_files
from brats_keras.tasks import TASKS, get_task

from conftest import SHARED, require_shared

SHAPE = (56, 56, 40)  # seed 0 draws a necrotic core at this size (smaller cores are all rim)
#: label value -> class index of each built-in task, from the task definitions' cited sources (tasks.py)
LABEL_TO_CLASS = {
    "glioma2021": {1: 1, 2: 2, 4: 3},       # NCR, ED, ET
    "brats2023": {1: 1, 2: 2, 3: 3},        # NETC, SNFH, ET
    "glioma2024-post": {1: 1, 2: 2, 3: 3, 4: 4},  # NETC, SNFH, ET, RC
    "pediatric2024": {1: 1, 2: 2, 3: 3, 4: 4},    # ET, NETC, CC, ED
    "msd-task01": {2: 1, 1: 2, 3: 3},       # NET, ED, ET: the 2021 classes
}
#: class -> head regions (1 inside) of each task's region head, in its region_order
CLASS_TO_REGIONS = {
    "glioma2021": {1: (1, 1, 0), 2: (1, 0, 0), 3: (1, 1, 1)},                  # WT TC ET
    "glioma2024-post": {1: (1, 1, 0, 0), 2: (1, 0, 0, 0), 3: (1, 1, 1, 0), 4: (0, 0, 0, 1)},  # WT TC ET RC
    "pediatric2024": {1: (1, 1, 0, 1), 2: (1, 1, 0, 0), 3: (1, 1, 1, 0), 4: (1, 0, 0, 0)},   # WT TC CC ET
}
CONVERT = ["--crop", "brain", "--scale", "zscore", "--workers", "1", "--quiet"]


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    """One tiny synthetic case of every built-in task, written by `brats-keras synth --task`."""
    root = tmp_path_factory.mktemp("synth")
    for name in LABEL_TO_CLASS:
        args = ["synth", "--out", str(root / name), "--cases", "1", "--shape", ",".join(map(str, SHAPE)),
                "--seed", "0", "--task", name, "--quiet"]
        assert cli_main(args) == 0
    return root


def _only_case(folder):
    (case,) = bio.find_cases(folder)
    return case


# a Decathlon case is written in plain 3-D files, whose values alone say 2023: it converts with --task only
@pytest.mark.parametrize("name,how", [(name, how) for name in LABEL_TO_CLASS for how in ("given", "detected")
                                      if not (name == "msd-task01" and how == "detected")])
def test_each_task_converts_with_its_classes_targets_and_record(sets, tmp_path, name, how):
    case = _only_case(sets / name)
    seg = np.asarray(nib.load(case.seg).dataobj)
    task = TASKS[name]
    assert set(np.unique(seg)) == {0, *task.label_values}  # every label of the task, in its own values
    out = tmp_path / "conv"
    assert cli_main(["convert", "--input", str(sets / name), "--output", str(out), *CONVERT]
                    + (["--task", name] if how == "given" else [])) == 0
    m = read_manifest(out)
    # detected, a glioma-family case makes a conversion of the family's first task; each case keeps its values
    conv = task if how == "given" else next(t for t in TASKS.values() if t.same_classes(task))
    assert m["task"] == conv.to_dict()
    entry = m["cases"][case.case_id]
    assert entry["label_task"] == name and case_label_task(m, case.case_id) == task
    assert list(entry["label_counts"]) == list(conv.class_names[1:])
    # known answers: every voxel of each label value holds that task's class
    mask = np.load(out / entry["mask"])
    crop = seg[tuple(slice(a, b) for a, b in entry["crop_box"])]
    for value, cls in LABEL_TO_CLASS[name].items():
        assert (crop == value).any() and np.all(mask[crop == value] == cls), (value, cls)
    assert np.all(mask[crop == 0] == 0)
    assert entry["label_counts"][conv.class_names[-1]] == int((crop == task.label_values[-1]).sum())
    # the generator: one patch the size of the case is the whole case, so its targets are the mask's
    cases = ConvertedCases(out)
    assert cases.task == conv
    task = conv
    for output, channels in (("softmax", task.n_classes), ("regions", len(task.region_order))):
        ds = PatchDataset(out, patch_size=mask.shape, batch_size=1, output=output, augment=False,
                          foreground_ratio=0.0)
        x, y = ds[0]
        assert y.shape == (1, *mask.shape, channels) and ds.task == task
        expected = one_hot(mask, channels) if output == "softmax" else \
            task.classes_to_regions(mask, task.region_order).astype(np.float32)
        np.testing.assert_array_equal(y[0], expected)


@pytest.mark.parametrize("name", list(CLASS_TO_REGIONS))
def test_targets_known_answers(name):
    task = TASKS[name]
    classes = np.arange(task.n_classes, dtype=np.uint8)
    soft = make_targets(classes, "softmax", name)
    np.testing.assert_array_equal(soft, np.eye(task.n_classes, dtype=np.float32))
    regions = make_targets(classes, "regions", task)
    assert regions.shape == (task.n_classes, len(task.region_order)) and not regions[0].any()
    for cls, expected in CLASS_TO_REGIONS[name].items():
        assert tuple(regions[cls]) == expected, (cls, tuple(regions[cls]))


def test_label_maps_read_by_convention_name_as_before(sets):
    """A convention named in the task's place (the readers' former argument) reads as it did."""
    seg = _only_case(sets / "msd-task01").seg
    labels = np.asarray(nib.load(seg).dataobj)
    expected = TASKS["msd-task01"].to_classes(labels)
    np.testing.assert_array_equal(bio.load_classes(seg, convention="msd"), expected)
    classes, _, task = bio.read_labels(seg, "msd")
    assert task.name == "msd-task01" and np.array_equal(classes, expected)
    classes, _, task = bio.read_labels(seg, "2023")  # the same values read as 2023's: 1 NETC, 2 SNFH, 3 ET
    assert task.name == "brats2023" and np.array_equal(classes, labels)


def test_tumour_sizes_count_the_task_s_whole_tumour():
    """Fold stratification counts the whole tumour of the task: a resection cavity is not tumour."""
    from brats_keras.convert import tumour_classes
    from brats_keras.data import tumor_sizes

    entries = {"a": {"label_counts": {"NETC": 1, "SNFH": 2, "ET": 3, "RC": 100}}}
    assert tumour_classes("glioma2024-post") == (1, 2, 3) and tumour_classes("pediatric2024") == (1, 2, 3, 4)
    assert tumor_sizes(entries, "glioma2024-post") == {"a": 6} and tumor_sizes(entries) == {"a": 106}


def _plain_copy(case, folder):
    """The case's files under plain names (``flair.nii.gz``, ``seg.nii.gz``) in ``folder``: names that say nothing
    about its label values."""
    folder.mkdir(parents=True)
    for mod, path in case.images.items():
        shutil.copy(path, folder / f"{mod}.nii.gz")
    shutil.copy(case.seg, folder / "seg.nii.gz")


def test_a_map_of_0_to_4_is_never_read_as_2021(sets, tmp_path, capsys):
    """A plain-named map with 3 and 4 fails naming both tasks it may be; the other case converts (exit 1); with
    --task it converts; in 2018-2021 names it is refused too, naming the tasks its values fit."""
    src = tmp_path / "src"
    _plain_copy(_only_case(sets / "glioma2024-post"), src / "post_case")
    shutil.copytree(sets / "glioma2021", src, dirs_exist_ok=True)
    assert cli_main(["convert", "--input", str(src), "--output", str(tmp_path / "out"), *CONVERT]) == 1
    said = [line for line in capsys.readouterr().out.splitlines() if line.startswith("FAILED")]
    seg = src / "post_case" / "seg.nii.gz"
    assert said == [f"FAILED post_case: {seg}: label values [0, 1, 2, 3, 4]: 3 and 4 together are the 2024 "
                   "post-treatment glioma (4 = resection cavity) or the 2024 pediatric labels (4 = edema), never "
                   "2021's; give the task: --task glioma2024-post or --task pediatric2024"]
    m = read_manifest(tmp_path / "out")
    assert set(m["cases"]) == {"Synth_00000"} and set(m["failed"]) == {"post_case"}
    assert m["task"]["name"] == "glioma2021" and not (tmp_path / "out" / "masks" / "post_case.npy").exists()
    # named the post-treatment task, it converts, 4 read as RC (class 4)
    alone = tmp_path / "alone"
    shutil.copytree(src / "post_case", alone / "post_case")
    assert cli_main(["convert", "--input", str(alone), "--output", str(tmp_path / "out2"), *CONVERT,
                     "--task", "glioma2024-post"]) == 0
    assert read_manifest(tmp_path / "out2")["cases"]["post_case"]["label_counts"]["RC"] > 0
    # 2021 names: 4 is ET there, so a 3 beside it is refused, naming the tasks the values fit
    seg_2021 = shutil.copy(seg, alone / "Brats_x_seg.nii.gz")
    case = bio.Case("Brats_x", alone, seg=seg_2021, layout="2021")
    with pytest.raises(bio.BratsInputError, match=r"unexpected label values \[3\] for task glioma2021 .*the values "
                                                  r"fit glioma2024-post, pediatric2024: give the task"):
        bio.load_classes(case.seg, case=case)


def test_a_conversion_of_cases_of_two_tasks_keeps_the_majority_and_fails_the_others(sets, tmp_path, capsys):
    src = tmp_path / "src"
    for name in ("glioma2021", "brats2023", "pediatric2024"):
        shutil.copytree(sets / name, src, dirs_exist_ok=True)
    m = convert_folder(src, tmp_path / "out", crop="brain", workers=1, progress=False)
    # one 2021 and one 2023 case: one family, whose first task is the conversion's; each keeps its own values
    assert m["task"]["name"] == "glioma2021" and set(m["cases"]) == {"Synth_00000", "BraTS-GLI-00000-000"}
    assert m["cases"]["BraTS-GLI-00000-000"]["label_task"] == "brats2023"
    (ped,) = m["failed"]
    assert ped == "BraTS-PED-00000-000" and "a pediatric2024 label map" in m["failed"][ped]
    assert "this conversion's task is glioma2021, of other classes" in m["failed"][ped]
    # asked for another task, the folder is refused before anything is written
    with pytest.raises(bio.BratsInputError, match="converted with other settings .*task glioma2021, asked "
                                                  "glioma2024-post"):
        convert_folder(src, tmp_path / "out", crop="brain", workers=1, progress=False, task="glioma2024-post")


def test_merged_parts_keep_their_task_and_parts_of_two_tasks_are_refused(sets, tmp_path):
    from brats_keras.convert import merge_conversions

    src = tmp_path / "src"
    for name in ("glioma2021", "brats2023"):
        shutil.copytree(sets / name, src, dirs_exist_ok=True)
    parts = [tmp_path / "p1", tmp_path / "p2", tmp_path / "p2b"]
    for part, shard, task in zip(parts, ("1/2", "2/2", "2/2"), ("brats2023", "brats2023", "glioma2021")):
        convert_folder(src, part, crop="brain", workers=1, progress=False, shard=shard, task=task)
    merged = merge_conversions(parts[:2], tmp_path / "m", log=lambda line: None)
    assert merged["task"] == TASKS["brats2023"].to_dict() == read_manifest(tmp_path / "m")["task"]
    with pytest.raises(bio.BratsInputError, match="converted for another task than"):
        merge_conversions([parts[0], parts[2]], tmp_path / "m2", log=lambda line: None)
    assert not (tmp_path / "m2").exists()


def test_a_user_task_file_converts_and_one_with_a_mistake_is_refused(sets, tmp_path, capsys):
    good = {"name": "core-study", "labels": {"NCR": 1, "ED": 2, "ET": 4},
            "regions": {"WT": ["NCR", "ED", "ET"], "CORE": ["NCR", "ET"], "ENH": ["ET"]}}
    path = tmp_path / "core.json"
    path.write_text(json.dumps(good))
    out = tmp_path / "out"
    assert cli_main(["convert", "--input", str(sets / "glioma2021"), "--output", str(out), *CONVERT,
                     "--task", str(path)]) == 0
    m = read_manifest(out)
    assert m["task"]["name"] == "core-study" and m["cases"]["Synth_00000"]["label_task"] == "core-study"
    ds = PatchDataset(out, patch_size=16, batch_size=1, output="regions", augment=False)
    assert ds.task.region_order == ("WT", "CORE", "ENH") and ds[0][1].shape == (1, 16, 16, 16, 3)
    # a region naming an unknown label: one line naming the file and the mistake, exit 2, nothing written
    bad = dict(good, regions={"WT": ["NCR", "ED", "ET"], "TC": ["NCR", "XX"]})
    path.write_text(json.dumps(bad))
    capsys.readouterr()
    assert cli_main(["convert", "--input", str(sets / "glioma2021"), "--output", str(tmp_path / "no"), *CONVERT,
                     "--task", str(path)]) == 2
    assert capsys.readouterr().err == (f"error: {path}: region 'TC' names unknown label 'XX' "
                                       "(labels: NCR, ED, ET)\n")
    assert not (tmp_path / "no").exists()
    assert cli_main(["synth", "--out", str(tmp_path / "s"), "--task", "nosuch"]) == 2
    assert "unknown task 'nosuch'" in capsys.readouterr().err and not (tmp_path / "s").exists()


def test_synthetic_cases_of_each_task_and_their_names(tmp_path):
    base = make_case(5, SHAPE)
    for name in ("brats2023", "msd-task01"):  # the glioma family: the same arrays, the task's own values
        other = make_case(5, SHAPE, task=name)
        for mod in ("flair", "t1", "t1ce", "t2"):
            np.testing.assert_array_equal(other[mod], base[mod])
        np.testing.assert_array_equal(other["seg"], TASKS[name].to_labels(labels_to_classes(base["seg"], "2021")))
    assert task_files("glioma2024-post")[1].format(prefix="BraTS-GLI", i=7) == "BraTS-GLI-00007-100"
    assert case_files(tmp_path, "BraTS-PED-00000-000", naming="2023")["flair"].name == "BraTS-PED-00000-000-t2f.nii.gz"
    # a task of one label: the tumours' core
    one = make_case(5, SHAPE, task={"name": "one", "labels": {"GTV": 1}, "regions": {"GTV": ["GTV"]}})
    np.testing.assert_array_equal(one["seg"], np.isin(base["seg"], (1, 4)).astype(np.uint8))
    np.testing.assert_array_equal(one["t1ce"], base["t1ce"])
    with pytest.raises(ValueError, match="no synthetic cases of task two"):
        make_case(0, SHAPE, task={"name": "two", "labels": {"A": 1, "B": 2}, "regions": {"AB": ["A", "B"], "B": ["B"]}})


@pytest.mark.parametrize("name,fluid", [("glioma2024-post", "RC"), ("pediatric2024", "CC")])
def test_fluid_compartments_hold_every_label_and_look_like_fluid(name, fluid):
    """Post-treatment cavities and pediatric cysts: every label in every case, the fluid dark on T1 and bright on
    T2 against white matter, enhancing tissue brighter on T1ce than the non-enhancing core."""
    task = TASKS[name]
    value = dict(zip(task.class_names[1:], task.label_values))
    for seed in range(3):
        case = make_case(seed, (96, 96, 64), with_tissues=True, task=name)
        seg = case["seg"]
        assert set(np.unique(seg)) == {0, *task.label_values}, seed
        wm = (case["tissues"] == 3) & (seg == 0)
        water = seg == value[fluid]
        assert case["t1"][water].mean() < 0.6 * case["t1"][wm].mean()
        assert case["t2"][water].mean() > 1.5 * case["t2"][wm].mean()
        assert case["t1ce"][seg == value["ET"]].mean() > 1.3 * case["t1ce"][seg == value["NETC"]].mean()


def test_mixed_2021_and_2023_named_real_cases_convert_as_before(real_dir, tmp_path):
    """A 2021-named and a 2023-named real case, detected (glioma2021 with a brats2023 case) and given
    --task glioma2021: the same masks, byte for byte, the old reader's classes (ET 4 or 3 -> class 3)."""
    extra = require_shared(SHARED / "brats-extra")
    src = tmp_path / "src"
    src.mkdir()
    for case in (real_dir / "BraTS2021_00006", extra / "BraTS-GLI-00000-000"):
        (src / case.name).symlink_to(case, target_is_directory=True)
    m = convert_folder(src, tmp_path / "a", workers=1, progress=False)
    given = convert_folder(src, tmp_path / "b", workers=1, progress=False, task="glioma2021")
    assert m["task"] == given["task"] == get_task(None).to_dict() and not m["failed"]
    assert {c: e["label_task"] for c, e in m["cases"].items()} == {"BraTS2021_00006": "glioma2021",
                                                                   "BraTS-GLI-00000-000": "brats2023"}
    for cid, entry in m["cases"].items():
        assert given["cases"][cid]["checksums"] == entry["checksums"]
        seg = np.asarray(nib.load(bio.find_cases(src / cid)[0].seg).dataobj)
        box = tuple(slice(a, b) for a, b in entry["crop_box"])
        np.testing.assert_array_equal(np.load(tmp_path / "a" / entry["mask"]), labels_to_classes(seg, "auto")[box])


def test_the_docs_table_of_tasks_is_the_code_s():
    """docs/converting.md lists every built-in task with its labels, regions, decoding order and source, as
    brats_keras.tasks defines them."""
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / "converting.md").read_text()
    rows = [line for line in text.splitlines() if line.startswith("| `")]
    for t in TASKS.values():
        labels = ", ".join(f"{lab.value} {lab.name}" for lab in t.labels)
        regions = "; ".join(f"{r.name} = {' + '.join(t._name_of(v) for v in r.labels)}" for r in t.regions)
        assert f"| `{t.name}` | {labels} | {regions} | {', '.join(t.region_order)} |" in rows, t.name
        assert f"- `{t.name}` ({t.title}): {t.source}." in text, t.name
