"""Readers of the layouts beside BraTS 2021 / 2023: the Decathlon's Task01 (4-D images, dataset.json), nnU-Net's
raw channel files, BraTS 2024-2025 names (time points, MEN-RT), and the naming that tells a case's task."""
import json

import numpy as np
import pytest

from brats_keras import io as bio
from brats_keras.convert import convert_folder
from brats_keras.evaluation import score_case
from brats_keras.labels import labels_to_classes
from brats_keras.tasks import detect_task, get_task

from conftest import make_small_case, write_nifti

#: Task01_BrainTumour's dataset.json (its modality and label blocks)
TASK01_JSON = {"name": "BRATS", "tensorImageSize": "4D",
               "modality": {"0": "FLAIR", "1": "T1w", "2": "t1gd", "3": "T2w"},
               "labels": {"0": "background", "1": "edema", "2": "non-enhancing tumor", "3": "enhancing tumour"}}
MSD_ORDER = ("flair", "t1", "t1ce", "t2")


def to_msd_labels(labels_2021):
    """2021 label values -> the Decathlon's: 2 ED -> 1, 1 NCR -> 2, 4 ET -> 3 (as the Decathlon renumbered BraTS)."""
    lut = np.zeros(5, np.uint8)
    lut[[2, 1, 4]] = [1, 2, 3]
    return lut[np.asarray(labels_2021)]


def write_msd_case(task, case_id, vols, labels=None, order=MSD_ORDER, split="Tr", affine=None):
    """One Decathlon case: the modalities stacked in ``order`` into ``images<split>/<case>.nii.gz``, and the label
    map (already in the Decathlon's values) into ``labels<split>/``."""
    (task / f"images{split}").mkdir(parents=True, exist_ok=True)
    write_nifti(task / f"images{split}" / f"{case_id}.nii.gz", np.stack([vols[m] for m in order], axis=-1), affine)
    if labels is not None:
        (task / f"labels{split}").mkdir(parents=True, exist_ok=True)
        write_nifti(task / f"labels{split}" / f"{case_id}.nii.gz", labels, affine)


@pytest.fixture
def small():
    return make_small_case(np.random.default_rng(3))


def test_a_decathlon_task_folder_gives_one_case_per_image_with_its_label_map(tmp_path, small):
    vols, labels = small
    task = tmp_path / "Task01_BrainTumour"
    write_msd_case(task, "BRATS_001", vols, to_msd_labels(labels))
    write_msd_case(task, "BRATS_002", vols, to_msd_labels(labels))
    write_msd_case(task, "BRATS_003", vols, split="Ts")
    (task / "imagesTr" / "._BRATS_001.nii.gz").write_bytes(b"\0\5\26\7")  # macOS metadata from the archive
    (task / "dataset.json").write_text(json.dumps(TASK01_JSON))
    cases = {c.case_id: c for c in bio.find_cases(task)}
    assert sorted(cases) == ["BRATS_001", "BRATS_002", "BRATS_003"]
    assert {(c.naming, c.layout, c.label_convention) for c in cases.values()} == {("msd", "msd", "msd")}
    assert cases["BRATS_001"].seg == task / "labelsTr" / "BRATS_001.nii.gz" and cases["BRATS_003"].seg is None
    assert cases["BRATS_001"].channels == {"flair": 0, "t1": 1, "t1ce": 2, "t2": 3}
    # the images folder, or the image file itself, gives the same cases
    assert [c.case_id for c in bio.find_cases(task / "imagesTr")] == ["BRATS_001", "BRATS_002"]
    assert bio.find_cases(task / "imagesTs" / "BRATS_003.nii.gz") == [cases["BRATS_003"]]
    assert [c.case_id for c in bio.find_cases(task, require_seg=True)] == ["BRATS_001", "BRATS_002"]

    vols_read, affine, header = bio.load_modalities(cases["BRATS_001"], ["t2", "t1c", "flair"])
    for got, mod in zip(vols_read, ("t2", "t1ce", "flair")):
        assert got.dtype == np.int16 and np.array_equal(got, vols[mod])
    assert header.get_data_shape() == labels.shape  # a 3-D header: predictions are written on the image's grid
    classes = bio.load_classes(cases["BRATS_001"].seg, shape=labels.shape, convention="msd")
    assert np.array_equal(classes, labels_to_classes(labels))
    values = np.unique(bio.load_nifti(cases["BRATS_001"].seg)[0])
    assert detect_task(values, "BRATS_001", cases["BRATS_001"].naming).name == "msd-task01"


def test_the_4d_image_is_read_once_per_case_and_its_channels_are_not_copied(tmp_path, small, monkeypatch):
    vols, _ = small
    write_msd_case(tmp_path / "Task01", "BRATS_001", vols)
    (case,) = bio.find_cases(tmp_path / "Task01")
    reads = []
    real = bio.gunzip
    monkeypatch.setattr(bio, "gunzip", lambda data: reads.append(1) or real(data))
    got, _, _ = bio.load_modalities(case, MSD_ORDER)
    assert len(reads) == 1
    assert all(not v.flags.owndata and not v.flags.writeable for v in got)  # views of the one decompressed file


@pytest.mark.parametrize("name,slope", [("BRATS_001.nii", 1.0), ("BRATS_001.nii.gz", 0.5), ("BRATS_001.nii", 0.5)])
def test_uncompressed_and_scaled_4d_images_read_as_nibabel_reads_each_channel(tmp_path, small, name, slope):
    import nibabel as nib

    from brats_keras.synthetic import brats_affine

    vols, _ = small
    stacked = np.stack([vols[m] for m in MSD_ORDER], axis=-1)
    img = nib.Nifti1Image(stacked, brats_affine(stacked.shape[:3]))
    img.header.set_slope_inter(slope, 0)
    (tmp_path / "T" / "imagesTs").mkdir(parents=True)
    nib.save(img, str(tmp_path / "T" / "imagesTs" / name))
    (case,) = bio.find_cases(tmp_path / "T")
    got, _, _ = bio.load_modalities(case, ["t1ce", "flair"])
    ref = nib.load(str(tmp_path / "T" / "imagesTs" / name))
    for g, c in zip(got, (2, 0)):
        assert np.array_equal(g, np.asanyarray(ref.dataobj[..., c])) and g.dtype == ref.dataobj[..., c].dtype
    assert slope == 1 or np.array_equal(got[1], vols["flair"] * np.float32(slope))


def test_dataset_json_gives_the_channel_order(tmp_path, small):
    vols, _ = small
    task = tmp_path / "Task01"
    order = ("t2", "t1ce", "flair", "t1")
    write_msd_case(task, "BRATS_001", vols, order=order)
    (task / "dataset.json").write_text(json.dumps({"modality": {"0": "T2w", "1": "T1-Gd", "2": "FLAIR", "3": "T1"}}))
    (case,) = bio.find_cases(task)
    assert case.channels == {m: k for k, m in enumerate(order)}
    got, _, _ = bio.load_modalities(case, MSD_ORDER)
    assert all(np.array_equal(g, vols[m]) for g, m in zip(got, MSD_ORDER))


@pytest.mark.parametrize("meta,message", [
    ({"modality": {"0": "FLAIR", "1": "PD", "2": "t1gd", "3": "T2w"}}, "modality 1 'PD' is not one this library reads"),
    ({"modality": {"0": "FLAIR", "1": "T2-FLAIR"}}, "modality 1 'T2-FLAIR' is flair again"),
    ({"modality": {"1": "FLAIR", "2": "T1w"}}, '"modality" must map the channels 0, 1, ...'),
    ("{not json", "cannot read it"),
])
def test_a_dataset_json_naming_an_unknown_modality_is_refused_in_one_line(tmp_path, small, meta, message):
    task = tmp_path / "Task01"
    write_msd_case(task, "BRATS_001", small[0])
    (task / "dataset.json").write_text(meta if isinstance(meta, str) else json.dumps(meta))
    with pytest.raises(bio.BratsInputError) as err:
        bio.find_cases(task)
    assert str(err.value).startswith(f"{task / 'dataset.json'}: ") and message in str(err.value)
    assert "\n" not in str(err.value)


def test_convert_refuses_a_dataset_json_it_cannot_use_in_one_line_before_making_anything(tmp_path, small, capsys):
    from brats_keras.cli import main

    task = tmp_path / "Task01"
    write_msd_case(task, "BRATS_001", small[0])
    (task / "dataset.json").write_text(json.dumps({"modality": {"0": "FLAIR", "1": "DWI"}}))
    out = tmp_path / "out"
    assert main(["convert", "--input", str(task), "--output", str(out), "--quiet"]) == 2
    assert capsys.readouterr().err == (f"error: {task / 'dataset.json'}: modality 1 'DWI' is not one this library "
                                       "reads (FLAIR, T1w, t1gd, T2w, or flair, t1, t1ce, t2 and the 2023 names t2f, "
                                       "t1n, t1c, t2w)\n")
    assert not out.exists()


def test_a_4d_image_with_another_channel_count_or_a_3d_image_is_refused_in_one_line(tmp_path, small):
    vols, _ = small
    task = tmp_path / "Task01"
    write_msd_case(task, "BRATS_001", vols, order=("flair", "t1ce", "t2"))
    (task / "imagesTr" / "BRATS_002.nii.gz").parent.mkdir(exist_ok=True)
    write_nifti(task / "imagesTr" / "BRATS_002.nii.gz", vols["flair"])
    three, flat = bio.find_cases(task)
    with pytest.raises(bio.BratsInputError, match=r"BRATS_001.nii.gz: 3 channels, expected 4 \(one per modality"):
        bio.load_modalities(three, ["flair"])
    with pytest.raises(bio.BratsInputError, match=r"BRATS_002.nii.gz: expected a 4-D image \(one channel per "
                                                  r"modality\), got shape \(24, 28, 20\)"):
        bio.load_modalities(flat, ["flair"])


def test_a_missing_label_map_and_two_files_for_one_case_are_refused_in_one_line(tmp_path, small):
    vols, labels = small
    task = tmp_path / "Task01"
    write_msd_case(task, "BRATS_001", vols, to_msd_labels(labels))
    write_msd_case(task, "BRATS_002", vols)  # no label map in labelsTr
    write_nifti(task / "imagesTr" / "BRATS_001.nii", np.stack([vols[m] for m in MSD_ORDER], -1))
    twice, unlabelled = bio.find_cases(task)
    with pytest.raises(bio.BratsInputError, match="case BRATS_001 has two image files, BRATS_001.nii and "
                                                  "BRATS_001.nii.gz: keep one"):
        bio.load_modalities(twice, ["t2"])
    assert unlabelled.seg is None
    with pytest.raises(bio.BratsInputError) as err:
        unlabelled.check(["seg"])
    assert str(err.value) == (f"{task / 'labelsTr' / 'BRATS_002.nii.gz'}: not found; every image in imagesTr has "
                              "its label map in labelsTr (put unlabelled cases in imagesTs)")
    # convert fails those two cases in one line each and converts the others
    write_msd_case(task, "BRATS_003", vols, to_msd_labels(labels))
    said = []
    manifest = convert_folder(task, tmp_path / "out", crop="brain", workers=1, progress=False, log=said.append)
    assert list(manifest["cases"]) == ["BRATS_003"] and sorted(manifest["failed"]) == ["BRATS_001", "BRATS_002"]
    assert manifest["cases"]["BRATS_003"]["channels"] == {"flair": 0, "t1ce": 2, "t2": 3}
    assert sum(line.startswith("FAILED BRATS_00") for line in said) == 2


def test_nnunet_raw_channel_files_are_one_case(tmp_path, small):
    vols, labels = small
    task = tmp_path / "Dataset001_BrainTumour"
    (task / "imagesTr").mkdir(parents=True)
    (task / "labelsTr").mkdir()
    order = ("t1", "t1ce", "t2", "flair")  # nnU-Net's BraTS 2021 conversion: T1, T1ce, T2, Flair
    for k, mod in enumerate(order):
        write_nifti(task / "imagesTr" / f"BraTS2021_00000_{k:04d}.nii.gz", vols[mod])
    write_nifti(task / "labelsTr" / "BraTS2021_00000.nii.gz", to_msd_labels(labels))
    (task / "dataset.json").write_text(json.dumps({"channel_names": {"0": "T1", "1": "T1ce", "2": "T2",
                                                                     "3": "Flair"}}))
    (case,) = bio.find_cases(task)
    assert case.case_id == "BraTS2021_00000" and case.naming == "msd" and not case.channels
    assert case.images["flair"].name == "BraTS2021_00000_0003.nii.gz"
    got, _, _ = bio.load_modalities(case, MSD_ORDER)
    assert all(np.array_equal(g, vols[m]) for g, m in zip(got, MSD_ORDER))
    assert np.array_equal(bio.load_classes(case.seg, convention="msd"), labels_to_classes(labels))
    # a case without one of its channel files misses that modality
    write_nifti(task / "imagesTr" / "BraTS2021_00001_0000.nii.gz", vols["t1"])
    second = bio.find_cases(task)[1]
    assert set(second.images) == {"t1"}
    with pytest.raises(bio.BratsInputError, match="BraTS2021_00001: missing modality flair in .*imagesTr "
                                                  r"\(found: t1\)"):
        bio.load_modalities(second, MSD_ORDER)


@pytest.mark.parametrize("files,case_id,naming,seg,values,task", [
    (["BraTS2021_00000_flair", "BraTS2021_00000_t1ce", "BraTS2021_00000_seg"], "BraTS2021_00000", "2021",
     "BraTS2021_00000_seg", [0, 1, 2, 4], "glioma2021"),
    (["BraTS-GLI-02073-100-t2f", "BraTS-GLI-02073-100-t1c", "BraTS-GLI-02073-100-seg"], "BraTS-GLI-02073-100",
     "2023", "BraTS-GLI-02073-100-seg", [0, 1, 2, 3, 4], "glioma2024-post"),
    (["BraTS-GLI-00001-000-t2f", "BraTS-GLI-00001-000-t1c", "BraTS-GLI-00001-000-seg"], "BraTS-GLI-00001-000",
     "2023", "BraTS-GLI-00001-000-seg", [0, 1, 2, 3], "brats2023"),
    (["BraTS-PED-00012-000-t2w", "BraTS-PED-00012-000-t1c", "BraTS-PED-00012-000-seg"], "BraTS-PED-00012-000",
     "2023", "BraTS-PED-00012-000-seg", [0, 1, 2, 3, 4], "pediatric2024"),
    (["BraTS-MET-00001-000-t1n", "BraTS-MET-00001-000-t1c"], "BraTS-MET-00001-000", "2023", None, None, None),
    (["BraTS-SSA-00002-000-t1c", "BraTS-MEN-00004-000-t1c"], "BraTS-MEN-00004-000", "2023", None, None, None),
    (["BraTS-MEN-RT-0000-1_t1c", "BraTS-MEN-RT-0000-1_gtv"], "BraTS-MEN-RT-0000-1", "2023",
     "BraTS-MEN-RT-0000-1_gtv", [0, 1], "men-rt2024"),
    (["t1c", "t2f", "seg"], "plaincase", "plain", "seg", [0, 1, 2, 3], "brats2023"),
    (["flair", "t1ce", "segmentation"], "plaincase", "plain", "segmentation", [0, 1, 2, 4], "glioma2021"),
])
def test_each_naming_is_read_with_its_case_id_and_tells_the_task(tmp_path, files, case_id, naming, seg, values, task):
    folder = tmp_path / "plaincase"
    folder.mkdir()
    for name in files:
        write_nifti(folder / f"{name}.nii.gz", np.ones((4, 4, 4), np.int16))
    cases = {c.case_id: c for c in bio.find_cases(tmp_path)}
    case = cases[case_id]
    assert case.naming == naming and case.folder == folder
    assert (case.seg.name if case.seg else None) == (f"{seg}.nii.gz" if seg else None)
    if task:
        assert detect_task(np.array(values), case.case_id, case.naming).name == task


def test_men_rt_reads_its_t1c_and_gtv(tmp_path):
    folder = tmp_path / "BraTS-MEN-RT-0000-1"
    folder.mkdir()
    t1c, gtv = np.arange(64, dtype=np.int16).reshape(4, 4, 4) + 1, np.zeros((4, 4, 4), np.uint8)
    gtv[1:3, 1:3, 1:3] = 1
    write_nifti(folder / "BraTS-MEN-RT-0000-1_t1c.nii.gz", t1c)
    write_nifti(folder / "BraTS-MEN-RT-0000-1_gtv.nii.gz", gtv)
    (case,) = bio.find_cases(folder)
    assert set(case.images) == {"t1ce"}
    (got,), _, _ = bio.load_modalities(case, ["t1c"], check=False)
    assert np.array_equal(got, t1c) and np.array_equal(bio.load_nifti(case.seg)[0], gtv)


def test_a_task01_case_built_from_a_real_case_converts_and_scores_as_its_3d_source(real_dir, tmp_path):
    """The Done-when check: a real 2021 case, stacked the Decathlon's way, gives the very arrays and scores."""
    import nibabel as nib

    case_id = "BraTS2021_00006"
    src = real_dir / case_id
    imgs = {m: nib.load(str(src / f"{case_id}_{m}.nii.gz")) for m in MSD_ORDER}
    seg_img = nib.load(str(src / f"{case_id}_seg.nii.gz"))
    labels = np.asanyarray(seg_img.dataobj)
    task = tmp_path / "Task01_BrainTumour"
    write_msd_case(task, "BRATS_006", {m: np.asanyarray(im.dataobj) for m, im in imgs.items()},
                   to_msd_labels(labels), affine=seg_img.affine)
    (task / "dataset.json").write_text(json.dumps(TASK01_JSON))

    three_d = convert_folder(src, tmp_path / "c3d", workers=1, progress=False)
    four_d = convert_folder(task, tmp_path / "c4d", workers=1, progress=False)
    given = convert_folder(task, tmp_path / "c4d_given", workers=1, progress=False, task="msd-task01")
    assert four_d["task"] == get_task("glioma2021").to_dict() and given["task"] == get_task("msd-task01").to_dict()
    for folder in ("c4d", "c4d_given"):  # detected (a glioma-family conversion) or given, the same arrays
        for key in ("image", "mask"):
            entry = (four_d if folder == "c4d" else given)["cases"]["BRATS_006"]
            assert np.array_equal(np.load(tmp_path / "c3d" / three_d["cases"][case_id][key]),
                                  np.load(tmp_path / folder / entry[key]))
    a, b = three_d["cases"][case_id], four_d["cases"]["BRATS_006"]
    assert a["crop_box"] == b["crop_box"] and a["scaling"] == b["scaling"] and a["affine"] == b["affine"]
    assert a["label_counts"] == b["label_counts"] and b["layout"] == "msd"
    for key in ("image", "mask"):
        x, y = np.load(tmp_path / "c3d" / a[key]), np.load(tmp_path / "c4d" / b[key])
        assert x.dtype == y.dtype and np.array_equal(x, y)

    # scores: a prediction (the truth with its tumour core grown by one voxel and ET shrunk) written in 2021 values
    # and in the Decathlon's scores the same against each truth
    from scipy import ndimage

    pred = labels.copy()
    pred[ndimage.binary_dilation(np.isin(labels, (1, 4))) & (labels == 2)] = 1
    pred[(labels == 4) & ~ndimage.binary_erosion(labels == 4)] = 1
    msd = get_task("msd-task01")
    truth_3d = bio.load_classes(src / f"{case_id}_seg.nii.gz", convention="2021")
    truth_4d = bio.load_classes(task / "labelsTr" / "BRATS_006.nii.gz", convention="msd")
    assert np.array_equal(truth_3d, truth_4d)
    pred_3d, pred_4d = get_task("glioma2021").to_classes(pred), msd.to_classes(to_msd_labels(pred))
    assert np.array_equal(pred_3d, pred_4d)
    assert np.array_equal(msd.classes_to_regions(pred_4d), get_task().classes_to_regions(pred_3d))
    s3, s4 = (score_case(p, t, report=False, distances=False) for p, t in ((pred_3d, truth_3d), (pred_4d, truth_4d)))
    assert s3 == s4 and 0.5 < s3["TC"]["dice"] < 1 and 0.5 < s3["ET"]["dice"] < 1
    # and through `evaluate` on the files, each prediction written in its own task's values
    from brats_keras.cli import main as cli_main

    for name, values, truth in (("p3d", pred, src), ("p4d", to_msd_labels(pred), task / "labelsTr")):
        (tmp_path / name).mkdir()
        cid = case_id if name == "p3d" else "BRATS_006"
        nib.save(nib.Nifti1Image(values.astype(np.uint8), seg_img.affine), str(tmp_path / name / f"{cid}.nii.gz"))
        assert cli_main(["evaluate", "--pred", str(tmp_path / name), "--truth", str(truth),
                         "--json", str(tmp_path / f"{name}.json")]) == 0
    e3, e4 = (json.loads((tmp_path / f"{n}.json").read_text())["cases"] for n in ("p3d", "p4d"))
    for region in ("WT", "TC", "ET"):
        assert e3[case_id][region]["dice"] == e4["BRATS_006"][region]["dice"] == s3[region]["dice"]
