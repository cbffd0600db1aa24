"""Conversion: known answers on real and small cases, options, resume and bad input."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from brats_keras import io as bio
from brats_keras.cli import main as cli_main
from brats_keras.convert import convert_folder, read_manifest
from brats_keras.labels import CLASS_NAMES

from conftest import write_nifti, write_small_case

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def converted_real(real_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("real")
    manifest = convert_folder(real_dir, out, workers=2, progress=False)
    return out, manifest


def expected_crop(case_dir, case_id, modalities=("flair", "t1ce", "t2"), box=((56, 184), (56, 184), (13, 141))):
    """Independent re-computation: min-max over the whole volume in float64, then the crop."""
    import nibabel as nib

    chans = []
    for m in modalities:
        v = nib.load(str(case_dir / f"{case_id}_{m}.nii.gz")).get_fdata()
        v = (v - v.min()) / (v.max() - v.min())
        chans.append(v[box[0][0]:box[0][1], box[1][0]:box[1][1], box[2][0]:box[2][1]])
    return np.stack(chans, -1)


def test_all_real_cases_equal_scaled_crop(converted_real, real_dir):
    out, manifest = converted_real
    assert len(manifest["cases"]) == 23 and not manifest["failed"]
    for case_id in ["Brats18_TCIA01_425_1", "BraTS2021_00006", "Brats18_2013_23_1"]:
        img = np.load(out / "images" / f"{case_id}.npy")
        assert img.shape == (128, 128, 128, 3) and img.dtype == np.float16
        ref = expected_crop(real_dir / case_id, case_id)
        # float16 has 11 significant bits: relative error <= 2**-11 on values in [0, 1]
        assert np.max(np.abs(img.astype(np.float64) - ref)) <= 2 ** -11 + 1e-7


def test_uint8_images_read_back_as_scaled_crop(real_dir, tmp_path):
    """--dtype uint8 stores round(255 * value); the training loader reads back float32 value +- 0.5/255."""
    from brats_keras.data import ConvertedCases, PatchDataset

    case_id = "Brats18_TCIA01_425_1"
    assert cli_main(["convert", "--input", str(real_dir / case_id), "--output", str(tmp_path / "u8"),
                     "--dtype", "uint8", "--workers", "1", "--quiet"]) == 0
    stored = np.load(tmp_path / "u8" / "images" / f"{case_id}.npy")
    assert stored.dtype == np.uint8 and stored.shape == (128, 128, 128, 3)
    ref = expected_crop(real_dir / case_id, case_id)
    expected = np.rint(ref * 255)
    # float32 arithmetic may round the other way at a .5 tie: off by one at most, and rarely
    assert np.max(np.abs(stored - expected)) <= 1 and np.mean(stored == expected) > 0.999
    cases = ConvertedCases(tmp_path / "u8")
    back = cases.image(case_id)
    assert back.dtype == np.float32 and back.shape == stored.shape
    part = np.asarray(back[10:20, 30:40, 50:60])
    assert part.dtype == np.float32 and np.max(np.abs(part - ref[10:20, 30:40, 50:60])) <= 0.5 / 255 + 1e-6
    x, y = PatchDataset(tmp_path / "u8", patch_size=32, batch_size=2, augment=False, steps_per_epoch=1)[0]
    assert x.dtype == np.float32 and 0 <= x.min() and x.max() <= 1 and x.max() > 0.2
    assert stored.nbytes == 128 ** 3 * 3  # one byte per value: half of float16
    # re-running finds the uint8 outputs complete and skips the case
    said = []
    convert_folder(real_dir / case_id, tmp_path / "u8", dtype="uint8", workers=1, progress=False, log=said.append)
    assert any("skipping 1 case(s) already converted" in line for line in said)
    # z-scores do not fit 0..255
    with pytest.raises(ValueError, match="uint8 .* use it with scale minmax"):
        convert_folder(real_dir / case_id, tmp_path / "z8", scale="zscore", dtype="uint8", progress=False)


def test_real_label_counts_match_manifest(converted_real, real_dir):
    import nibabel as nib

    out, manifest = converted_real
    for case_id, entry in manifest["cases"].items():
        mask = np.load(out / entry["mask"])
        assert mask.dtype == np.uint8 and mask.shape == (128, 128, 128)
        counts = np.bincount(mask.ravel(), minlength=4)
        assert {CLASS_NAMES[i]: int(counts[i]) for i in (1, 2, 3)} == entry["label_counts"]
        assert entry["crop_box"] == [[56, 184], [56, 184], [13, 141]]
        assert entry["original_shape"] == [240, 240, 155]
    # one case against the raw label file: label 4 became class 3
    seg = np.asanyarray(nib.load(str(real_dir / "Brats18_TCIA01_425_1/Brats18_TCIA01_425_1_seg.nii.gz")).dataobj)
    mask = np.load(out / "masks" / "Brats18_TCIA01_425_1.npy")
    crop = seg[56:184, 56:184, 13:141]
    assert np.array_equal(mask == 3, crop == 4) and np.array_equal(mask == 1, crop == 1)
    assert manifest["cases"]["Brats18_TCIA01_425_1"]["label_counts_full"] == {"NCR": 384, "ED": 36268, "ET": 1662}


def test_real_2023_layout_images_only(layout2023_dir, tmp_path):
    m = convert_folder(layout2023_dir, tmp_path, modalities="t2f,t1c,t2w", crop="brain", scale="zscore",
                       workers=1, progress=False)
    entry = m["cases"]["BraTS-GLI-00001-000"]
    assert entry["mask"] is None and not (tmp_path / "masks" / "BraTS-GLI-00001-000.npy").exists()
    assert entry["layout"] == "2023"
    labelled = m["cases"]["algorithm-labelled-case"]
    assert labelled["mask"] is not None and sum(labelled["label_counts"].values()) > 0


def test_brain_crop_and_zscore_land_where_manifest_says(tmp_path):
    src = tmp_path / "src"
    write_small_case(src, "c0", seed=3)
    m = convert_folder(src, tmp_path / "out", modalities="t1,flair", crop="brain", margin=1, scale="zscore",
                       dtype="float32", workers=1, progress=False)
    e = m["cases"]["c0"]
    # the small case's brain is [3:-3, 3:-3, 2:-2] of (24, 28, 20); margin 1
    assert e["crop_box"] == [[2, 22], [2, 26], [1, 19]]
    img = np.load(tmp_path / "out" / e["image"])
    assert img.dtype == np.float32 and list(img.shape) == e["shape"] == [20, 24, 18, 2]
    (case,) = bio.find_cases(src)
    for c, mod in enumerate(["t1", "flair"]):
        vol, _, _ = bio.load_nifti(case.images[mod], dtype=np.float64)
        brain = vol[vol != 0]
        mean, std = brain.mean(), brain.std()
        assert e["scaling"][mod]["mean"] == pytest.approx(mean) and e["scaling"][mod]["std"] == pytest.approx(std)
        crop = vol[2:22, 2:26, 1:19]
        ref = np.where(crop != 0, (crop - mean) / std, 0)
        assert np.allclose(img[..., c], ref, atol=1e-5)


def test_min_tumor_drops_and_lists(tmp_path):
    src = tmp_path / "src"
    write_small_case(src, "big")
    f = write_small_case(src, "tiny", seed=1)
    seg = np.zeros((24, 28, 20), np.uint8)
    seg[10, 10, 10] = 2
    write_nifti(f / "tiny_seg.nii.gz", seg)
    m = convert_folder(src, tmp_path / "out", crop="brain", min_tumor=0.001, workers=1, progress=False)
    assert set(m["cases"]) == {"big"} and set(m["dropped"]) == {"tiny"}
    assert "min_tumor" in m["dropped"]["tiny"]["reason"]
    assert not (tmp_path / "out" / "images" / "tiny.npy").exists()


def test_resume_skips_complete_and_redoes_broken(tmp_path):
    src = tmp_path / "src"
    for i in range(3):
        write_small_case(src, f"c{i}", seed=i)
    out = tmp_path / "out"
    convert_folder(src, out, crop="brain", workers=1, progress=False)
    before = {p.name: p.stat().st_mtime_ns for p in (out / "images").iterdir()}
    # truncate one output as a killed run of another tool might
    broken = out / "images" / "c1.npy"
    broken.write_bytes(broken.read_bytes()[:100])
    logs = []
    m = convert_folder(src, out, crop="brain", workers=1, progress=False, log=logs.append)
    assert any("skipping 2 case(s)" in s for s in logs)
    after = {p.name: p.stat().st_mtime_ns for p in (out / "images").iterdir()}
    assert after["c0.npy"] == before["c0.npy"] and after["c2.npy"] == before["c2.npy"]
    assert np.load(broken).shape == tuple(m["cases"]["c1"]["shape"])
    m2 = convert_folder(src, out, crop="brain", workers=1, progress=False, overwrite=True)
    assert (out / "images" / "c0.npy").stat().st_mtime_ns != before["c0.npy"]
    assert set(m2["cases"]) == {"c0", "c1", "c2"}


def test_killed_write_leaves_nothing_half_written(tmp_path, monkeypatch):
    src = tmp_path / "src"
    write_small_case(src, "c0")

    def boom(f, arr, *a, **k):
        f.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "save", boom)
    with pytest.raises(KeyboardInterrupt):
        convert_folder(src, tmp_path / "out", crop="brain", workers=1, progress=False)
    leftovers = [p for p in (tmp_path / "out").rglob("*") if p.is_file() and p.name != "manifest.json"]
    assert leftovers == []


def _bad_inputs(src):
    """Six broken cases beside one good one."""
    write_small_case(src, "good")
    f = write_small_case(src, "missing_mod", seed=1)
    (f / "missing_mod_t2.nii.gz").unlink()
    f = write_small_case(src, "truncated", seed=2)
    p = f / "truncated_flair.nii.gz"
    p.write_bytes(p.read_bytes()[:150])
    f = write_small_case(src, "shapes", seed=3)
    write_nifti(f / "shapes_t2.nii.gz", np.ones((10, 10, 10), np.int16))
    f = write_small_case(src, "nan", seed=4)
    v = np.ones((24, 28, 20), np.float32)
    v[0, 0, 0] = np.nan
    write_nifti(f / "nan_t1ce.nii.gz", v)
    f = write_small_case(src, "zero", seed=5)
    write_nifti(f / "zero_flair.nii.gz", np.zeros((24, 28, 20), np.int16))
    f = write_small_case(src, "labels", seed=6)
    write_nifti(f / "labels_seg.nii.gz", np.full((24, 28, 20), 9, np.uint8))


EXPECTED_ERRORS = {
    "missing_mod": "missing modality t2",
    "truncated": "truncated_flair.nii.gz: cannot read NIfTI",
    "shapes": "shapes_t2.nii.gz: shape (10, 10, 10) differs from shapes_flair.nii.gz",
    "nan": "nan_t1ce.nii.gz: volume contains NaN",
    "zero": "zero_flair.nii.gz: volume is all zero",
    "labels": "labels_seg.nii.gz: unexpected label values [9]",
}


@pytest.mark.parametrize("workers", [1, 2])
def test_bad_inputs_fail_alone(tmp_path, workers, capsys):
    src = tmp_path / "src"
    _bad_inputs(src)
    rc = cli_main(["convert", "--input", str(src), "--output", str(tmp_path / "out"), "--crop", "brain",
                   "--workers", str(workers), "--quiet"])
    assert rc == 1  # some case failed
    m = read_manifest(tmp_path / "out")
    assert set(m["cases"]) == {"good"}
    assert set(m["failed"]) == set(EXPECTED_ERRORS)
    printed = capsys.readouterr().out
    for case_id, text in EXPECTED_ERRORS.items():
        assert text in m["failed"][case_id]
        assert "\n" not in m["failed"][case_id]
        assert text in printed


def test_empty_folder_is_an_error(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    rc = cli_main(["convert", "--input", str(tmp_path / "empty"), "--output", str(tmp_path / "out")])
    assert rc == 2
    assert "no BraTS cases found" in capsys.readouterr().err


def test_script_runs_without_keras(tmp_path):
    """data_prep/convert.py works as a script and never imports TensorFlow or Keras."""
    src = tmp_path / "src"
    write_small_case(src, "c0", layout="2023")
    code = (
        "import sys, runpy; sys.argv = ['convert.py', '--input', %r, '--output', %r, '--crop', 'brain', '--quiet'];"
        "\ntry:\n    runpy.run_path(%r, run_name='__main__')\nexcept SystemExit as e:\n    rc = e.code\n"
        "bad = [m for m in ('tensorflow', 'keras', 'jax', 'torch') if m in sys.modules]\n"
        "print('RC', rc, 'IMPORTED', bad)" % (str(src), str(tmp_path / "out"), str(ROOT / "data_prep" / "convert.py"))
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "RC 0 IMPORTED []" in res.stdout, res.stdout + res.stderr
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["cases"]["c0"]["status"] == "ok"
