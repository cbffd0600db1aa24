"""Finding cases in every layout, reading volumes and labels, and their error messages."""
import numpy as np
import pytest

from brats_keras import geometry
from brats_keras import io as bio
from brats_keras.labels import classes_to_labels, labels_to_classes, parse_modalities

from conftest import make_symlink_loops, resave_on_grid, write_nifti, write_small_case


def test_find_real_cases(real_dir):
    cases = bio.find_cases(real_dir)
    assert len(cases) == 23
    for c in cases:
        assert set(c.images) == {"flair", "t1", "t1ce", "t2"}
        assert c.seg is not None and c.seg.name == f"{c.case_id}_seg.nii.gz"
        assert c.layout == "2021" and c.label_convention == "2021"
    assert "BraTS2021_00006" in [c.case_id for c in cases]


def test_find_2023_and_plain_layouts(layout2023_dir):
    cases = {c.case_id: c for c in bio.find_cases(layout2023_dir)}
    assert set(cases) == {"BraTS-GLI-00001-000", "algorithm-labelled-case"}
    named = cases["BraTS-GLI-00001-000"]
    assert named.layout == "2023" and named.seg is None
    assert named.images["flair"].name == "BraTS-GLI-00001-000-t2f.nii.gz"
    assert named.images["t1ce"].name == "BraTS-GLI-00001-000-t1c.nii.gz"
    plain = cases["algorithm-labelled-case"]
    assert plain.seg.name == "segmentation.nii.gz"
    assert plain.images["t1"].name == "t1n.nii.gz" and plain.label_convention == "2023"
    # the algorithm's label map uses 3 for ET
    classes = bio.load_classes(plain.seg)
    raw, _, _ = bio.load_nifti(plain.seg)
    assert np.array_equal(classes == 3, raw == 3)


def test_root_may_be_one_case_folder(real_dir):
    cases = bio.find_cases(real_dir / "Brats18_TCIA01_425_1")
    assert [c.case_id for c in cases] == ["Brats18_TCIA01_425_1"]


@pytest.mark.parametrize("layout,ext", [("2021", ".nii"), ("2023", ".nii.gz"), ("plain", ".nii")])
def test_layouts_and_extensions(tmp_path, layout, ext):
    write_small_case(tmp_path, "caseA", layout=layout, ext=ext)
    (c,) = bio.find_cases(tmp_path)
    assert c.case_id == "caseA" and set(c.images) == {"flair", "t1", "t1ce", "t2"}
    assert c.path("t2f") == c.images["flair"]  # either vocabulary
    vols, affine, _ = bio.load_modalities(c, ["t1c", "flair"])
    assert len(vols) == 2 and vols[0].dtype == np.int16  # no float64 copy
    classes = bio.load_classes(c.seg, shape=vols[0].shape)
    assert set(np.unique(classes)) == {0, 1, 2, 3}


def test_label_round_trip():
    labels = np.array([0, 1, 2, 4, 4, 2])
    classes = labels_to_classes(labels)
    assert classes.tolist() == [0, 1, 2, 3, 3, 2]
    assert classes_to_labels(classes, "2021").tolist() == labels.tolist()
    assert classes_to_labels(classes, "2023").tolist() == [0, 1, 2, 3, 3, 2]
    assert labels_to_classes(np.array([0, 3, 1])).tolist() == [0, 3, 1]  # auto: 3 is 2023 ET
    with pytest.raises(ValueError, match=r"unexpected label values \[7\]"):
        labels_to_classes(np.array([0, 7, 4]))


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.int32, np.uint16, np.float32, np.float64])
def test_labels_to_classes_every_dtype(dtype):
    """The small-integer fast path and the general path give the same classes and the same errors."""
    rng = np.random.default_rng(0)
    labels = rng.choice(np.array([0, 1, 2, 4]), size=(20, 10, 6)).astype(dtype)
    expected = np.select([labels == 1, labels == 2, labels == 4], [1, 2, 3], 0)
    classes = labels_to_classes(labels)
    assert classes.dtype == np.uint8 and np.array_equal(classes, expected)
    assert labels_to_classes(np.zeros((3, 3), dtype)).tolist() == [[0] * 3] * 3  # no tumor
    labels.flat[7] = 5
    with pytest.raises(ValueError, match=r"unexpected label values \[5\]"):
        labels_to_classes(labels)
    if np.dtype(dtype).kind in "if" and np.dtype(dtype).itemsize > 1:
        with pytest.raises(ValueError, match=r"unexpected label values \[-1\]"):
            labels_to_classes(np.array([0, -1, 2], dtype))
    if np.dtype(dtype).itemsize > 1:
        with pytest.raises(ValueError, match=r"unexpected label values \[300\]"):
            labels_to_classes(np.array([0, 300, 2], dtype))
    assert labels_to_classes(np.array([], dtype)).shape == (0,)


def test_modality_vocabulary():
    assert parse_modalities("t2f,t1c,t2w") == ("flair", "t1ce", "t2")
    assert parse_modalities(["T1", "t1n"][:1]) == ("t1",)
    with pytest.raises(ValueError, match="unknown modality 'pd'"):
        parse_modalities("flair,pd")
    with pytest.raises(ValueError, match="twice"):
        parse_modalities("flair,t2f")


def test_errors_name_file_and_problem(tmp_path):
    folder = write_small_case(tmp_path, "bad")
    (c,) = bio.find_cases(tmp_path)
    # missing modality
    c.images["t2"].unlink()
    (c,) = bio.find_cases(tmp_path)
    with pytest.raises(bio.BratsInputError, match=r"bad: missing modality t2"):
        bio.load_modalities(c, ["flair", "t2"])
    # truncated gzip
    p = folder / "bad_flair.nii.gz"
    p.write_bytes(p.read_bytes()[:200])
    with pytest.raises(bio.BratsInputError, match=r"bad_flair.nii.gz: cannot read NIfTI"):
        bio.load_modalities(c, ["flair"])
    # NaN and all-zero volumes
    write_nifti(p, np.full((4, 4, 4), np.nan, np.float32))
    with pytest.raises(bio.BratsInputError, match="NaN"):
        bio.load_modalities(c, ["flair"])
    write_nifti(p, np.zeros((4, 4, 4), np.int16))
    with pytest.raises(bio.BratsInputError, match="all zero"):
        bio.load_modalities(c, ["flair"])
    # different shapes
    write_nifti(p, np.ones((4, 4, 4), np.int16))
    with pytest.raises(bio.BratsInputError, match=r"differs from"):
        bio.load_modalities(c, ["t1", "flair"])
    # unexpected labels
    write_nifti(c.seg, np.full((24, 28, 20), 5, np.uint8))
    with pytest.raises(bio.BratsInputError, match=r"bad_seg.nii.gz: unexpected label values \[5\]"):
        bio.load_classes(c.seg)
    with pytest.raises(bio.BratsInputError, match="not a folder"):
        bio.find_cases(tmp_path / "nowhere")


def test_save_nifti_keeps_geometry(tmp_path, real_dir):
    import nibabel as nib

    src = real_dir / "Brats18_TCIA01_425_1" / "Brats18_TCIA01_425_1_seg.nii.gz"
    arr, affine, header = bio.load_nifti(src)
    out = tmp_path / "x.nii.gz"
    bio.save_nifti(out, arr.astype(np.uint8), affine, header)
    img = nib.load(str(out))
    assert img.shape == arr.shape and img.get_data_dtype() == np.uint8
    assert np.allclose(img.affine, affine)
    assert np.array_equal(np.asanyarray(img.dataobj), arr)
    assert [p.name for p in tmp_path.iterdir()] == ["x.nii.gz"]  # no temporary left


def test_atomic_writes_replace_whole_files_with_umask_permissions(tmp_path):
    """Outputs appear whole under their name, with the permissions open() would give, and no temp file remains."""
    import os

    from brats_keras.io import atomic_save_npy, atomic_write_json, atomic_write_text

    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.txt", "first")
        atomic_write_text(tmp_path / "a.txt", "second")
        atomic_write_json(tmp_path / "b.json", {"x": np.int64(3)})
        atomic_save_npy(tmp_path / "c.npy", np.arange(4, dtype=np.uint8))
    finally:
        os.umask(old)
    assert (tmp_path / "a.txt").read_text() == "second"
    assert (tmp_path / "b.json").read_text() == '{\n  "x": 3\n}\n'
    assert np.array_equal(np.load(tmp_path / "c.npy"), np.arange(4))
    for name in ("a.txt", "b.json", "c.npy"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o644, name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.json", "c.npy"]
    with pytest.raises(TypeError, match="not JSON serializable: object"):
        atomic_write_json(tmp_path / "b.json", {"x": object()})
    assert (tmp_path / "b.json").read_text() == '{\n  "x": 3\n}\n'  # the old file survives a failed write
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.json", "c.npy"]


@pytest.mark.parametrize("isal", [True, False])
def test_fast_gz_reader_equals_nibabel(tmp_path, real_dir, monkeypatch, isal):
    """load_nifti decompresses .nii.gz in one call; the result must equal nibabel's own reader."""
    import gzip
    import sys

    import nibabel as nib

    if not isal:  # the zlib fallback when ISA-L is not installed
        monkeypatch.setitem(sys.modules, "isal", None)
    real = real_dir / "Brats18_TCIA01_425_1" / "Brats18_TCIA01_425_1_t1ce.nii.gz"
    # scaled data (slope/intercept), NIfTI-2, and a file of two gzip members
    scaled = nib.Nifti1Image(np.arange(60, dtype=np.int16).reshape(3, 4, 5), np.diag([2, 2, 2, 1.0]))
    scaled.header.set_slope_inter(0.5, 3.0)
    nib.save(scaled, tmp_path / "scaled.nii.gz")
    nib.save(nib.Nifti2Image(np.ones((3, 4, 5), np.float32), np.eye(4)), tmp_path / "two.nii.gz")
    raw = gzip.decompress((tmp_path / "two.nii.gz").read_bytes())
    (tmp_path / "members.nii.gz").write_bytes(gzip.compress(raw[:300]) + gzip.compress(raw[300:]))
    for path in [real, tmp_path / "scaled.nii.gz", tmp_path / "two.nii.gz", tmp_path / "members.nii.gz"]:
        arr, affine, header = bio.load_nifti(path)
        ref = nib.load(str(path))
        expected = np.asanyarray(ref.dataobj)
        assert arr.dtype == expected.dtype and np.array_equal(arr, expected), path.name
        assert np.allclose(affine, ref.affine)
    assert np.allclose(bio.load_nifti(tmp_path / "scaled.nii.gz")[0], np.arange(60).reshape(3, 4, 5) * 0.5 + 3)
    # a file that is gzip but not NIfTI still fails with the file's name
    (tmp_path / "text.nii.gz").write_bytes(gzip.compress(b"hello" * 100))
    with pytest.raises(bio.BratsInputError, match=r"text.nii.gz: cannot read NIfTI"):
        bio.load_nifti(tmp_path / "text.nii.gz")
    # a complete gzip stream holding too few voxels: the file and how much is missing
    (tmp_path / "short.nii.gz").write_bytes(gzip.compress(raw[:-40]))
    with pytest.raises(bio.BratsInputError, match=r"short.nii.gz: cannot read NIfTI \(file ends 40 bytes early\)"):
        bio.load_nifti(tmp_path / "short.nii.gz")


def test_two_files_for_one_modality_are_never_picked_silently(tmp_path):
    write_small_case(tmp_path, "a")
    write_small_case(tmp_path, "a", ext=".nii")  # every file twice: .nii beside .nii.gz
    (c,) = bio.find_cases(tmp_path)
    assert sorted(c.ambiguous) == ["flair", "seg", "t1", "t1ce", "t2"]
    with pytest.raises(bio.BratsInputError, match=r"case a has two t1ce files, a_t1ce.nii and a_t1ce.nii.gz: keep one"):
        bio.load_modalities(c, ["t1c"])
    with pytest.raises(bio.BratsInputError, match=r"two seg files, a_seg.nii and a_seg.nii.gz"):
        c.check(["seg"])
    # another case, names differing in case only: a modality read alone is refused, the others are fine
    f = write_small_case(tmp_path / "more", "b")
    (f / "b_flair.nii.gz").rename(f / "b_FLAIR.nii.gz")
    write_small_case(tmp_path / "more", "b")
    (b,) = bio.find_cases(tmp_path / "more")
    assert list(b.ambiguous) == ["flair"]
    with pytest.raises(bio.BratsInputError, match=r"two flair files, b_FLAIR.nii.gz and b_flair.nii.gz"):
        b.path("t2f")
    assert len(bio.load_modalities(b, ["t1", "t2"])[0]) == 2


# ----------------------------------------------------------------------------- symbolic links (issue 29)
def test_symlink_loops_are_walked_once_and_linked_cases_found_once(tmp_path):
    root, outside = tmp_path / "in", tmp_path / "outside"
    write_small_case(root, "c0")
    make_symlink_loops(root)
    write_small_case(root / "d2", "c1", seed=1)  # a real case inside the two folders that link to each other
    (root / "d1" / "c0_again").symlink_to("../c0", target_is_directory=True)  # a second way to c0
    write_small_case(outside, "cx", seed=2)  # beside the input: reached through ``b -> ..`` only if it were followed
    (root / "linked").symlink_to(outside / "cx", target_is_directory=True)  # a folder of links to cases works
    cases = bio.find_cases(root)
    assert [(c.case_id, c.folder) for c in cases] == [("c0", root / "c0"), ("c1", root / "d2" / "c1"),
                                                      ("cx", root / "linked")]
    walked = [folder for folder, _ in bio.walk_folders(root)]
    real = [folder.resolve() for folder in walked]
    assert len(real) == len(set(real))  # every real folder once
    assert set(real) == {p.resolve() for p in (root, root / "c0", root / "d1", root / "d2", root / "d2" / "c1",
                                               outside / "cx")}
    assert walked[:5] == [root, root / "c0", root / "d1", root / "d2", root / "d2" / "c1"]  # real folders first


# ----------------------------------------------------------------------------- the BraTS grid (issue 29)
RESAMPLE = "(resample it to the BraTS grid first)"
REGISTER = "register the modalities first (e.g. ANTs, FSL FLIRT, SimpleITK)"


@pytest.mark.parametrize("affine,grid", [
    (np.diag([-0.9, -0.9, 3.0, 1.0]), {"voxel_mm": [0.9, 0.9, 3.0], "orientation": "LPS"}),
    (np.diag([-2.0, -2.0, 2.0, 1.0]), {"voxel_mm": [2.0, 2.0, 2.0], "orientation": "LPS"}),
    (np.eye(4), {"voxel_mm": [1.0, 1.0, 1.0], "orientation": "RAS"}),
    (np.diag([-1.0, 1.0, 1.0, 1.0]), {"voxel_mm": [1.0, 1.0, 1.0], "orientation": "LAS"}),
    ([[0, 0, 1, 0], [-1, 0, 0, 0], [0, -1, 0, 0], [0, 0, 0, 1]],  # stored sagittally
     {"voxel_mm": [1.0, 1.0, 1.0], "orientation": "PIR"}),
])
def test_a_case_off_the_brats_grid_is_resampled_and_one_modality_off_it_refused(tmp_path, affine, grid):
    """A case whose modalities share a grid other than the BraTS one is read onto the working grid (its own
    grid noted); one modality alone on that grid is not co-registered with the others."""
    folder = write_small_case(tmp_path, "c")
    flair = folder / "c_flair.nii.gz"
    resave_on_grid(flair, affine)
    (case,) = bio.find_cases(tmp_path)
    with pytest.raises(bio.BratsInputError) as err:
        bio.load_modalities(case, ["t1", "flair"])
    assert str(err.value).startswith(f"{flair}: affine differs from c_t1.nii.gz's by up to ")
    assert str(err.value).endswith(f": not co-registered with c_t1.nii.gz; {REGISTER}")
    assert len(bio.load_modalities(case, ["t1", "flair"], check=False)[0]) == 2  # read as it is when asked
    assert len(bio.load_modalities(case, ["t1", "t2"])[0]) == 2
    for path in folder.iterdir():
        resave_on_grid(path, affine)
    volumes = bio.read_modalities(case, ["t1", "flair"])
    assert {k: volumes.regrid.describe()[k] for k in grid} == grid
    assert volumes.regrid.describe()["shape"] == [24, 28, 20]
    assert [v.shape for v in volumes.arrays] == [volumes.regrid.shape] * 2
    assert np.allclose(geometry.voxel_mm(volumes.affine), 1.0) and geometry.orientation(volumes.affine) == "LPS"


def test_grid_tolerance_and_modalities_on_two_grids(tmp_path):
    folder = write_small_case(tmp_path, "c")
    near = np.diag([-1.01, -0.99, 1.015, 1.0])  # within 0.02 mm of 1 mm, LPS
    for path in sorted(folder.iterdir()):
        resave_on_grid(path, near)
    (case,) = bio.find_cases(tmp_path)
    volumes = bio.read_modalities(case, ["flair", "t2"])
    assert volumes.regrid is None and np.allclose(volumes.affine, near)  # on the grid: read as it is
    shifted = near.copy()
    shifted[:3, 3] = [0.0, 2.0, 0.5]  # the t2 two voxels off the flair's grid
    resave_on_grid(folder / "c_t2.nii.gz", shifted)
    with pytest.raises(bio.BratsInputError) as err:
        bio.load_modalities(case, ["flair", "t2"])
    assert str(err.value) == (f"{folder / 'c_t2.nii.gz'}: affine differs from c_flair.nii.gz's by up to 2: "
                              f"not co-registered with c_flair.nii.gz; {REGISTER}")


def test_label_map_off_the_grid_is_refused_when_asked(tmp_path):
    folder = write_small_case(tmp_path, "c")
    seg = folder / "c_seg.nii.gz"
    resave_on_grid(seg, np.diag([-0.9, -0.9, 3.0, 1.0]))
    with pytest.raises(bio.BratsInputError) as err:
        bio.load_classes(seg, grid=True)
    assert str(err.value) == f"{seg}: voxel size 0.9 x 0.9 x 3.0 mm, expected 1 mm {RESAMPLE}"
    assert bio.load_classes(seg).shape == (24, 28, 20)  # evaluation reads label maps in any geometry
    moved = np.diag([-1.0, -1.0, 1.0, 1.0])  # on the grid, origin 0 (as some published BraTS 2017 label maps)
    resave_on_grid(seg, moved)
    assert bio.load_classes(seg, grid=True).shape == (24, 28, 20)


def test_synthetic_cases_lie_on_the_brats_grid(tmp_path):
    from brats_keras.synthetic import write_case

    write_case(tmp_path, "s0", 0, shape=(32, 32, 32))
    (case,) = bio.find_cases(tmp_path)
    assert len(bio.load_modalities(case, ["flair", "t1", "t1ce", "t2"])[0]) == 4
    assert bio.load_classes(case.seg, grid=True).shape == (32, 32, 32)


# ----------------------------------------------------------------------------- folder locks (issue 29)
def test_folder_lock_refuses_a_second_holder_and_never_outlives_the_first(tmp_path, monkeypatch):
    import errno
    import os

    lock = tmp_path / ".convert.lock"
    lock.write_text("99999 convert\n")  # left by a killed holder: its lock ended with it
    with bio.folder_lock(tmp_path, lock.name, "convert", "wait for it to end"):
        assert lock.read_text() == f"{os.getpid()} convert\n"
        with pytest.raises(bio.BratsInputError) as err:  # a second open file is a second holder, even here
            with bio.folder_lock(tmp_path, lock.name, "merge", "give another --output"):
                pass
        assert str(err.value) == (f"{tmp_path}: another convert (pid {os.getpid()}) is writing this folder; "
                                  "give another --output")
    assert not lock.exists()
    # no room for the pid (a full disk): the folder is locked all the same
    monkeypatch.setattr(os, "write", lambda fd, data: (_ for _ in ()).throw(OSError(errno.ENOSPC, "No space")))
    with bio.folder_lock(tmp_path, lock.name, "convert", "wait"):
        monkeypatch.undo()
        with pytest.raises(bio.BratsInputError, match=r"another convert \(pid unknown\) is writing this folder"):
            with bio.folder_lock(tmp_path, lock.name, "convert", "wait"):
                pass
    assert not lock.exists()
