"""Conversion: known answers on real and small cases, options, resume and bad input."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from brats_keras import io as bio
from brats_keras.cli import main as cli_main
from brats_keras.convert import convert_folder
from brats_keras.labels import CLASS_NAMES
from brats_keras.spec import read_manifest

from conftest import make_symlink_loops, resave_on_grid, write_nifti, write_small_case

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


# ----------------------------------------------------------------------------- reliability (issue 15)
def _files(folder):
    """Every file below ``folder`` (hidden temporary files too) -> its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(Path(folder).rglob("*")) if p.is_file()}


def _one_error_line(capsys):
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err


def test_output_that_is_a_file_is_refused(tmp_path, capsys):
    write_small_case(tmp_path / "src", "c0")
    out = tmp_path / "out.npy"
    out.write_bytes(b"keep me")
    rc = cli_main(["convert", "--input", str(tmp_path / "src"), "--output", str(out), "--crop", "brain", "--quiet"])
    assert rc == 2
    assert f"{out}: the output exists and is not a folder" in _one_error_line(capsys)
    assert out.read_bytes() == b"keep me" and sorted(p.name for p in tmp_path.iterdir()) == ["out.npy", "src"]
    # a file where a parent folder should be
    rc = cli_main(["convert", "--input", str(tmp_path / "src"), "--output", str(out / "sub"), "--quiet"])
    assert rc == 2 and "cannot write the output folder: not a directory" in _one_error_line(capsys)


def test_read_only_output_is_refused_before_anything(tmp_path, monkeypatch, capsys):
    """Tests run as root, where chmod stops no write: the file system's EROFS is simulated where files are made."""
    import errno

    write_small_case(tmp_path / "src", "c0")
    out = tmp_path / "out"
    out.mkdir()

    def read_only(path, *a, **k):
        raise OSError(errno.EROFS, "Read-only file system", str(path))

    monkeypatch.setattr(bio, "temp_path_for", read_only)
    rc = cli_main(["convert", "--input", str(tmp_path / "src"), "--output", str(out), "--crop", "brain", "--quiet"])
    assert rc == 2
    assert f"{out}: cannot write the output folder: read-only file system" in _one_error_line(capsys)
    assert list(out.iterdir()) == []


@pytest.fixture
def disk(monkeypatch):
    """A disk that fills up: writes of the outputs in ``disk.full`` (``"images/c1.npy"``, ``"out/manifest.json"``;
    ``"*"``: every file) stop half-way with ENOSPC, where the files get their bytes (``np.save``'s and the
    manifest's writes into their temporary files)."""
    import errno

    class Disk:
        full = set()

        def write(self, tmp, write, data):
            tmp = Path(tmp)
            target = f"{tmp.parent.name}/{tmp.name[1:].rsplit('.', 2)[0]}"  # .<name>.<random>.tmp
            if "*" in self.full or target in self.full:
                write(data[: len(data) // 2])
                raise OSError(errno.ENOSPC, "No space left on device")
            return write(data)

    d = Disk()
    real_write, real_text = bio._HashingWriter.write, Path.write_text
    monkeypatch.setattr(bio._HashingWriter, "write",
                        lambda self, b: d.write(self.f.name, lambda x: real_write(self, x), memoryview(b)))
    monkeypatch.setattr(Path, "write_text",
                        lambda self, t, *a, **k: d.write(self, lambda x: real_text(self, x, *a, **k), t))
    return d


def test_full_disk_fails_the_case_in_one_line_and_removes_its_mask(tmp_path, disk, capsys):
    src = tmp_path / "src"
    for i in range(3):
        write_small_case(src, f"c{i}", seed=i)
    out = tmp_path / "out"
    disk.full = {"images/c1.npy"}  # c1's mask is written, then its image meets a full disk
    rc = cli_main(["convert", "--input", str(src), "--output", str(out), "--crop", "brain", "--workers", "1",
                   "--quiet"])
    assert rc == 1
    m = read_manifest(out)
    assert set(m["cases"]) == {"c0", "c2"}
    assert m["failed"] == {"c1": f"{out / 'images' / 'c1.npy'}: no space left on device"}
    assert f"FAILED c1: {m['failed']['c1']}" in capsys.readouterr().out
    # no mask of the failed case, no temporary file
    assert sorted(_files(out)) == ["images/c0.npy", "images/c2.npy", "manifest.json", "masks/c0.npy", "masks/c2.npy"]
    disk.full = set()
    assert cli_main(["convert", "--input", str(src), "--output", str(out), "--crop", "brain", "--quiet"]) == 0
    assert set(read_manifest(out)["cases"]) == {"c0", "c1", "c2"}


def test_full_disk_at_the_manifest_keeps_what_was_written(tmp_path, disk, capsys):
    src, out = tmp_path / "src", tmp_path / "out"
    write_small_case(src, "c0")
    convert_folder(src, out, crop="brain", workers=1, progress=False)
    first = _files(out)
    for i in (1, 2):
        write_small_case(src, f"c{i}", seed=i)
    disk.full = {"images/c2.npy", "masks/c2.npy", "out/manifest.json"}  # full once c1 is written
    rc = cli_main(["convert", "--input", str(src), "--output", str(out), "--crop", "brain", "--workers", "1",
                   "--quiet"])
    assert rc == 1  # c1 was written
    err = _one_error_line(capsys)
    assert f"{out / 'manifest.json'}: no space left on device (2 case(s) converted, 1 failed" in err
    now = _files(out)
    assert sorted(now) == ["images/c0.npy", "images/c1.npy", "manifest.json", "masks/c0.npy", "masks/c1.npy"]
    assert all(now[k] == v for k, v in first.items())  # the earlier manifest and case are intact
    # space again: the run resumes (c0 is kept) and finishes
    disk.full = set()
    said = []
    m = convert_folder(src, out, crop="brain", workers=1, progress=False, log=said.append)
    assert set(m["cases"]) == {"c0", "c1", "c2"} and not m["failed"]
    assert "skipping 1 case(s)" in " ".join(said) and _files(out)["images/c0.npy"] == first["images/c0.npy"]


def test_nothing_writable_is_status_2(tmp_path, disk, capsys):
    src, out = tmp_path / "src", tmp_path / "out"
    for i in range(2):
        write_small_case(src, f"c{i}", seed=i)
    disk.full = {"*"}
    rc = cli_main(["convert", "--input", str(src), "--output", str(out), "--crop", "brain", "--workers", "1",
                   "--quiet"])
    assert rc == 2
    assert f"{out / 'manifest.json'}: no space left on device (0 case(s) converted, 2 failed" in _one_error_line(capsys)
    assert _files(out) == {}


def test_two_files_for_one_modality_refuse_the_case(tmp_path, capsys):
    src = tmp_path / "src"
    write_small_case(src, "good")
    f = write_small_case(src, "upper", seed=1)
    (f / "upper_flair.nii.gz").rename(f / "upper_FLAIR.nii.gz")
    write_small_case(src, "upper", seed=2)  # and upper_flair.nii.gz again
    f = write_small_case(src, "both", seed=3)
    write_small_case(src, "both", seed=3, ext=".nii")  # every file twice: .nii beside .nii.gz
    rc = cli_main(["convert", "--input", str(src), "--output", str(tmp_path / "out"), "--crop", "brain",
                   "--workers", "1", "--quiet"])
    assert rc == 1
    m = read_manifest(tmp_path / "out")
    assert set(m["cases"]) == {"good"}
    assert m["failed"] == {
        "both": f"{src / 'both'}: case both has two seg files, both_seg.nii and both_seg.nii.gz: keep one",
        "upper": f"{src / 'upper'}: case upper has two flair files, upper_FLAIR.nii.gz and upper_flair.nii.gz: "
                 "keep one",
    }
    printed = capsys.readouterr().out
    assert all(msg in printed for msg in m["failed"].values())
    assert sorted(_files(tmp_path / "out")) == ["images/good.npy", "manifest.json", "masks/good.npy"]


def test_resume_redoes_a_mask_corrupted_in_place(tmp_path):
    src, out = tmp_path / "src", tmp_path / "out"
    for i in range(2):
        write_small_case(src, f"c{i}", seed=i)
    m = convert_folder(src, out, crop="brain", workers=1, progress=False)
    good = _files(out)
    assert m["cases"]["c1"]["checksums"] == {k: bio.file_checksum(out / m["cases"]["c1"][k]) for k in ("mask", "image")}
    assert m["cases"]["c1"]["checksums"]["mask"].startswith("sha256:")
    mask = out / "masks" / "c1.npy"
    data = bytearray(mask.read_bytes())
    data[-1] ^= 1  # same size, same header, one voxel changed
    mask.write_bytes(bytes(data))
    (out / "images" / ".c0.npy.abcd1234.tmp").write_bytes(b"left by a killed run")
    said = []
    m = convert_folder(src, out, crop="brain", workers=1, progress=False, log=said.append)
    assert "skipping 1 case(s)" in " ".join(said)
    assert _files(out) == good  # c1 redone, c0 kept, the temporary file gone


def test_old_manifest_without_checksums_still_resumes(tmp_path):
    src, out = tmp_path / "src", tmp_path / "out"
    for i in range(2):
        write_small_case(src, f"c{i}", seed=i)
    m = convert_folder(src, out, crop="brain", workers=1, progress=False)
    for entry in m["cases"].values():
        del entry["checksums"]
    bio.atomic_write_json(out / "manifest.json", m)
    said = []
    convert_folder(src, out, crop="brain", workers=1, progress=False, log=said.append)
    assert "skipping 2 case(s)" in " ".join(said)


def test_manifest_settings_written_before_the_spec_still_resume(tmp_path):
    """A manifest whose settings lack downsample, patch_size and output (convert wrote downsample only above 1)
    describes the same conversion: its cases are kept, and other settings still convert again."""
    src, out = tmp_path / "src", tmp_path / "out"
    for i in range(2):
        write_small_case(src, f"c{i}", seed=i)
    m = convert_folder(src, out, crop="brain", workers=1, progress=False)
    assert m["settings"] == {"modalities": ["flair", "t1ce", "t2"], "crop": "brain", "crop_box": None, "margin": 4,
                             "scale": "minmax", "dtype": "float16", "downsample": 1, "patch_size": None,
                             "output": None, "min_tumor": None}
    for key in ("downsample", "patch_size", "output"):
        del m["settings"][key]
    bio.atomic_write_json(out / "manifest.json", m)
    said = []
    again = convert_folder(src, out, crop="brain", workers=1, progress=False, log=said.append)
    assert "skipping 2 case(s)" in " ".join(said) and again["cases"] == m["cases"]
    with pytest.raises(bio.BratsInputError, match="margin 4, asked 6"):
        convert_folder(src, out, crop="brain", margin=6, workers=1, progress=False)


def test_resume_reads_only_the_cases_own_files(tmp_path):
    """A manifest entry pointing elsewhere is not trusted on resume: the case is converted again."""
    src, out = tmp_path / "src", tmp_path / "out"
    write_small_case(src, "c0")
    m = convert_folder(src, out, crop="brain", workers=1, progress=False)
    outside = tmp_path / "outside"
    outside.mkdir()
    np.save(outside / "x.npy", np.load(out / "images" / "c0.npy"))
    m["cases"]["c0"]["image"] = "../outside/x.npy"
    del m["cases"]["c0"]["checksums"]
    bio.atomic_write_json(out / "manifest.json", m)
    said = []
    m = convert_folder(src, out, crop="brain", workers=1, progress=False, log=said.append)
    assert not any("skipping" in s for s in said) and m["cases"]["c0"]["image"] == "images/c0.npy"


_GATED_CLI = """
import os, sys, time
from pathlib import Path

import brats_keras.convert as conv

_convert_case = conv.convert_case


def gated(case, out_dir, settings, *task):  # spawned workers import this file too: every case after c0 waits for GATE
    if case.case_id != "c0":
        gate, deadline = Path(os.environ["GATE"]), time.monotonic() + 300
        while not gate.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
    return _convert_case(case, out_dir, settings, *task)


conv.convert_case = gated
if __name__ == "__main__":
    from brats_keras.cli import main

    sys.exit(main(sys.argv[1:]))
"""


def _proc_stat(pid):
    """``(state, parent pid, start time)`` of a process from /proc, or None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()
    return fields[0], int(fields[1]), fields[19]


def _descendants(pid):
    """``{pid: start time}`` of every process below ``pid``."""
    children = {}
    for p in Path("/proc").iterdir():
        if p.name.isdigit() and (st := _proc_stat(int(p.name))) is not None:
            children.setdefault(st[1], []).append((int(p.name), st[2]))
    found, todo = {}, [pid]
    while todo:
        for child, start in children.get(todo.pop(), []):
            found[child] = start
            todo.append(child)
    return found


def _alive(pid, start):
    st = _proc_stat(pid)
    return st is not None and st[2] == start and st[0] not in ("Z", "X")  # a zombie no longer runs


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc (Linux)")
def test_killed_conversion_takes_its_workers_and_resumes_byte_identical(tmp_path):
    import os
    import signal
    import time

    src = tmp_path / "src"
    for i in range(6):
        write_small_case(src, f"c{i}", seed=i, shape=(16, 18, 14))
    script = tmp_path / "gated_cli.py"
    script.write_text(_GATED_CLI)
    gate, out = tmp_path / "gate", tmp_path / "killed"
    env = {**os.environ, "GATE": str(gate), "PYTHONPATH": str(ROOT)}
    family = {}
    proc = subprocess.Popen([sys.executable, str(script), "convert", "--input", str(src), "--output", str(out),
                             "--crop", "brain", "--workers", "2", "--quiet"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not ((out / "manifest.json").exists() and "c0" in read_manifest(out)["cases"]):
            assert proc.poll() is None and time.monotonic() < deadline, "the conversion did not record c0"
            time.sleep(0.05)
        family = _descendants(proc.pid)  # the two workers and multiprocessing's resource tracker
        assert len(family) >= 2
        at_kill = _files(out)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        deadline = time.monotonic() + 60
        while any(_alive(p, s) for p, s in family.items()) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not [p for p, s in family.items() if _alive(p, s)], "processes outlived the killed conversion"
    finally:
        for pid in [p for p, s in family.items() if _alive(p, s)]:  # after a failure: leave no process behind
            os.kill(pid, signal.SIGKILL)
        gate.touch()  # a surviving worker would now go on converting
        if proc.poll() is None:
            proc.kill()
    time.sleep(0.5)
    # the killed run's lock file stays behind (its pid in it), unlocked: the resume below takes it over
    assert _files(out) == at_kill
    assert sorted(at_kill) == [".convert.lock", "images/c0.npy", "manifest.json", "masks/c0.npy"]
    assert at_kill[".convert.lock"] == f"{proc.pid} convert\n".encode()

    said = []
    convert_folder(src, out, crop="brain", workers=2, progress=False, log=said.append)
    assert "skipping 1 case(s)" in " ".join(said)
    whole = tmp_path / "whole"
    convert_folder(src, whole, crop="brain", workers=2, progress=False)
    assert _files(out) == _files(whole)


# ----------------------------------------------------------------------------- issue 29, issue 31
REGISTER = "register the modalities first (e.g. ANTs, FSL FLIRT, SimpleITK)"


def test_cases_off_the_brats_grid_are_resampled_and_cases_not_coregistered_fail_alone(tmp_path, capsys):
    """A 3 mm case and a RAS one are resampled onto the 1 mm LPS grid (a note each, their own grid in the
    manifest); the RAS one is the LPS case flipped, so its arrays are that case's flipped, exactly. A modality on
    another grid and a 3 mm label map beside 1 mm images are not co-registered: each fails in one line."""
    from brats_keras.synthetic import write_case

    src, out = tmp_path / "src", tmp_path / "out"
    shape = (32, 32, 32)
    write_case(src, "good", 0, shape=shape)
    for cid, seed in (("thick", 1), ("ras", 0)):
        folder = write_case(src, cid, seed, shape=shape)
        for path in folder.iterdir():
            resave_on_grid(path, np.diag([-0.9, -0.9, 3.0, 1.0]) if cid == "thick" else np.eye(4))
    folder = write_case(src, "shifted", 3, shape=shape)
    moved = np.diag([-1.0, -1.0, 1.0, 1.0])  # the t2 moved 31 mm off the others' grid
    resave_on_grid(folder / "shifted_t2.nii.gz", moved)
    folder = write_case(src, "seg3", 4, shape=shape)
    resave_on_grid(folder / "seg3_seg.nii.gz", np.diag([-1.0, -1.0, 3.0, 1.0]))
    rc = cli_main(["convert", "--input", str(src), "--output", str(out), "--crop", "brain", "--workers", "1",
                   "--quiet"])
    assert rc == 1
    m = read_manifest(out)
    assert set(m["cases"]) == {"good", "thick", "ras"}
    assert m["failed"] == {
        "shifted": f"{src / 'shifted' / 'shifted_t2.nii.gz'}: affine differs from shifted_flair.nii.gz's by up to "
                   f"31: not co-registered with shifted_flair.nii.gz; {REGISTER}",
        "seg3": f"{src / 'seg3' / 'seg3_seg.nii.gz'}: voxel size 1.0 x 1.0 x 3.0 mm LPS, seg3_flair.nii.gz's "
                f"1.0 x 1.0 x 1.0 mm LPS: not co-registered with seg3_flair.nii.gz; {REGISTER}",
    }
    thick, ras = m["cases"]["thick"], m["cases"]["ras"]
    assert "resampled_from" not in m["cases"]["good"]
    assert {k: thick["resampled_from"][k] for k in ("shape", "voxel_mm", "orientation")} == {
        "shape": [32, 32, 32], "voxel_mm": [0.9, 0.9, 3.0], "orientation": "LPS"}
    assert thick["original_shape"] == [29, 29, 96]  # the working grid's: 1 mm over the same field of view
    assert ras["resampled_from"]["orientation"] == "RAS" and ras["original_shape"] == [32, 32, 32]
    for sub in ("images", "masks"):  # x and y flipped back, nothing interpolated
        assert np.array_equal(np.load(out / sub / "ras.npy"), np.load(out / sub / "good.npy")[::-1, ::-1])
    printed = capsys.readouterr().out.splitlines()
    assert all(f"FAILED {cid}: {msg}" in printed for cid, msg in m["failed"].items())
    assert [line for line in printed if line.startswith("note: ")] == [
        "note: ras: resampled from 1.0 x 1.0 x 1.0 mm RAS, 32 x 32 x 32 voxels onto the 1 mm LPS grid, "
        "32 x 32 x 32 voxels",
        "note: thick: resampled from 0.9 x 0.9 x 3.0 mm LPS, 32 x 32 x 32 voxels onto the 1 mm LPS grid, "
        "29 x 29 x 96 voxels"]
    assert sorted(_files(out)) == ["images/good.npy", "images/ras.npy", "images/thick.npy", "manifest.json",
                                   "masks/good.npy", "masks/ras.npy", "masks/thick.npy"]


def test_symlink_loops_in_the_input_end_and_find_each_case_once(tmp_path):
    """Run as a process: without a walk that tracks real folders, this one never ends."""
    src, out = tmp_path / "src", tmp_path / "out"
    write_small_case(src, "c0")
    make_symlink_loops(src)
    write_small_case(src / "d1", "c1", seed=1)
    res = subprocess.run([sys.executable, "-m", "brats_keras.cli", "convert", "--input", str(src), "--output",
                          str(out), "--crop", "brain", "--workers", "1", "--quiet"], capture_output=True, text=True,
                         timeout=300, env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})
    assert res.returncode == 0, res.stderr
    m = read_manifest(out)
    assert {cid: e["source"]["flair"] for cid, e in m["cases"].items()} == {
        "c0": str(src / "c0" / "c0_flair.nii.gz"), "c1": str(src / "d1" / "c1" / "c1_flair.nii.gz")}


def test_other_settings_into_a_converted_folder_are_refused_and_change_nothing(tmp_path, capsys):
    src, out = tmp_path / "src", tmp_path / "out"
    for i in range(3):
        write_small_case(src, f"c{i}", seed=i)
    convert = ["convert", "--input", str(src), "--output", str(out), "--crop", "brain", "--workers", "1", "--quiet"]
    assert cli_main(convert) == 0
    before = _files(out)
    arrays = [f"{d}/c{i}.npy" for d in ("images", "masks") for i in range(3)]
    assert sorted(before) == sorted(arrays + ["manifest.json"])
    capsys.readouterr()
    assert cli_main(convert + ["--scale", "zscore", "--dtype", "float32"]) == 2
    assert _one_error_line(capsys) == (
        f"error: {out / 'manifest.json'}: converted with other settings (scale minmax, asked zscore; dtype float16, "
        "asked float32); give another --output, or --overwrite to convert every case again with these settings\n")
    assert _files(out) == before
    assert cli_main(convert + ["--modalities", "flair,t1ce", "--min-tumor", "0.01"]) == 2
    assert "(modalities flair,t1ce,t2, asked flair,t1ce; min_tumor None, asked 0.01)" in _one_error_line(capsys)
    assert _files(out) == before
    # the same settings resume: nothing converted again, nothing changed
    assert cli_main(convert) == 0 and _files(out) == before
    # --overwrite converts every case again with the new settings: the folder equals a fresh conversion
    assert cli_main(convert + ["--scale", "zscore", "--dtype", "float32", "--overwrite"]) == 0
    convert_folder(src, tmp_path / "fresh", crop="brain", scale="zscore", dtype="float32", workers=1, progress=False)
    assert _files(out) == _files(tmp_path / "fresh")


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc (Linux)")
def test_a_second_convert_while_one_runs_is_refused_naming_its_pid(tmp_path, capsys):
    import os
    import time

    src, out, gate = tmp_path / "src", tmp_path / "out", tmp_path / "gate"
    for i in range(3):
        write_small_case(src, f"c{i}", seed=i, shape=(16, 18, 14))
    script = tmp_path / "gated_cli.py"
    script.write_text(_GATED_CLI)
    convert = ["convert", "--input", str(src), "--output", str(out), "--crop", "brain", "--workers", "1", "--quiet"]
    proc = subprocess.Popen([sys.executable, str(script), *convert], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env={**os.environ, "GATE": str(gate), "PYTHONPATH": str(ROOT)})
    try:
        deadline = time.monotonic() + 120
        while not ((out / "manifest.json").exists() and "c0" in read_manifest(out)["cases"]):
            assert proc.poll() is None and time.monotonic() < deadline, "the conversion did not record c0"
            time.sleep(0.05)
        running = _files(out)  # it waits at c1 until the gate opens
        assert running[".convert.lock"] == f"{proc.pid} convert\n".encode()
        capsys.readouterr()
        assert cli_main(convert) == 2
        assert _one_error_line(capsys) == (f"error: {out}: another convert (pid {proc.pid}) is writing this folder; "
                                           "wait for it to end, or give another --output\n")
        assert cli_main(convert + ["--scale", "zscore"]) == 2  # the settings its manifest records already differ
        assert "converted with other settings (scale minmax, asked zscore)" in _one_error_line(capsys)
        assert cli_main(convert + ["--overwrite"]) == 2 and "another convert (pid" in _one_error_line(capsys)
        assert _files(out) == running
    finally:
        gate.touch()
        try:
            proc.wait(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 0
    convert_folder(src, tmp_path / "whole", crop="brain", workers=1, progress=False)
    assert _files(out) == _files(tmp_path / "whole")  # one conversion, and its lock file gone
