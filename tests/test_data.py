"""The patch generator and the case split: shapes, targets, oversampling, determinism."""
import numpy as np
import pytest

from brats_keras.convert import convert_folder
from brats_keras.data import PatchDataset, crop_patch, make_targets, patch_start, split_cases

from conftest import counting_batches, write_small_case


@pytest.fixture(scope="module")
def small_converted(tmp_path_factory):
    root = tmp_path_factory.mktemp("gen")
    for i in range(4):
        write_small_case(root / "src", f"c{i}", seed=i, shape=(40, 36, 30))
    convert_folder(root / "src", root / "out", crop="brain", margin=0, scale="zscore", dtype="float32",
                   workers=1, progress=False)
    return root / "out"


def test_split_is_reproducible_and_disjoint():
    ids = [f"case{i:03d}" for i in range(1250)]
    s = split_cases(ids, val=250, test=150, seed=7)
    assert (len(s["train"]), len(s["val"]), len(s["test"])) == (850, 250, 150)  # the report's split
    assert not set(s["train"]) & set(s["val"]) and not set(s["val"]) & set(s["test"])
    assert s == split_cases(ids, val=250, test=150, seed=7)
    assert s != split_cases(ids, val=250, test=150, seed=8)
    r = split_cases(ids[:10], val=0.2, test=0.1)
    assert (len(r["train"]), len(r["val"]), len(r["test"])) == (7, 2, 1)
    with pytest.raises(ValueError, match="no training case"):
        split_cases(ids[:3], val=2, test=1)


@pytest.mark.parametrize("text, fold_run, problem", [
    ("{", False, "not a readable split file (Expecting property name"),
    ("[]", False, "a split file needs 'train' and 'val' lists of case ids"),
    ('{"train": ["a"]}', False, "a split file needs 'train' and 'val' lists of case ids"),
    ("[]", True, "not the split of a fold run (train --folds K --fold k)"),
    ('{"train": ["a"], "val": "b"}', False, 'its "val" is not a list of case ids'),
    ('{"val": ["a", 1]}', True, 'its "val" is not a list of case ids'),
    ('{"train": ["a"], "val": ["b"], "test": [["c"]]}', False, 'its "test" is not a list of case ids'),
])
def test_one_split_file_check_for_training_crossval_and_ensemble(tmp_path, text, fold_run, problem):
    """load_split is the one check of a split file: train --split-file, a resumed run's split.json, and the
    fold runs that crossval and ensemble read (which need only "val")."""
    from brats_keras.data import load_split
    from brats_keras.io import BratsInputError

    path = tmp_path / "split.json"
    path.write_text(text)
    with pytest.raises(BratsInputError) as exc:
        load_split(path, fold_run=fold_run)
    assert str(exc.value).startswith(f"{path}: {problem}") and "\n" not in str(exc.value)
    path.write_text('{"val": ["b"]}')
    assert load_split(path, fold_run=True) == {"val": ["b"]}
    with pytest.raises(BratsInputError, match="not a readable split file"):
        load_split(tmp_path / "missing.json")


def test_targets_one_hot_and_regions():
    classes = np.array([[0, 1], [2, 3]], np.uint8)
    oh = make_targets(classes, "softmax")
    assert oh.shape == (2, 2, 4) and np.array_equal(oh.argmax(-1), classes) and np.all(oh.sum(-1) == 1)
    rg = make_targets(classes, "regions")
    # WT = 1+2+3, TC = 1+3, ET = 3
    assert rg[..., 0].tolist() == [[0, 1], [1, 1]]
    assert rg[..., 1].tolist() == [[0, 1], [0, 1]]
    assert rg[..., 2].tolist() == [[0, 0], [0, 1]]


def test_crop_patch_pads_past_edge():
    vol = np.arange(5 * 6 * 7).reshape(5, 6, 7)
    p = crop_patch(vol, (3, 0, 0), (4, 4, 4))
    assert p.shape == (4, 4, 4) and np.array_equal(p[:2], vol[3:5, :4, :4]) and not p[2:].any()
    rng = np.random.default_rng(0)
    assert patch_start((5, 6, 7), (8, 8, 8), rng) == (0, 0, 0)


@pytest.mark.parametrize("output,channels", [("softmax", 4), ("regions", 3)])
def test_batches_shapes_and_values(small_converted, output, channels):
    ds = PatchDataset(small_converted, patch_size=16, batch_size=3, output=output, steps_per_epoch=5, seed=1)
    assert len(ds) == 5
    x, y = ds[0]
    assert x.shape == (3, 16, 16, 16, 2 + 1) and x.dtype == np.float32  # default flair, t1ce, t2
    assert y.shape == (3, 16, 16, 16, channels) and y.dtype == np.float32
    assert set(np.unique(y)) <= {0.0, 1.0}
    if output == "softmax":
        assert np.all(y.sum(-1) == 1)


def test_patches_come_from_the_arrays(small_converted):
    """Without augmentation a patch equals the stored array at some position."""
    ds = PatchDataset(small_converted, ["c0"], patch_size=(8, 8, 8), batch_size=1, steps_per_epoch=1, seed=3)
    x, y = ds[0]
    img = np.load(small_converted / "images" / "c0.npy")
    msk = np.load(small_converted / "masks" / "c0.npy")
    found = False
    for a in range(img.shape[0] - 7):
        for b in range(img.shape[1] - 7):
            for c in range(img.shape[2] - 7):
                if np.array_equal(img[a:a + 8, b:b + 8, c:c + 8], x[0]):
                    found = np.array_equal(msk[a:a + 8, b:b + 8, c:c + 8], y[0].argmax(-1))
                    break
    assert found


def test_slice_patches_are_axial_slices_of_the_arrays(small_converted):
    """A 2-number patch gives 2D batches (B, H, W, C): each one axial slice (one index along array axis 2, the
    superior axis of the LPS grid) of its case, with its classes; with foreground ratio 1 each is the slice
    through a tumor voxel, so it holds tumor."""
    from brats_keras.io import AXIAL_AXIS

    assert AXIAL_AXIS == 2
    ds = PatchDataset(small_converted, ["c0"], patch_size=(8, 12), batch_size=4, foreground_ratio=1.0,
                      steps_per_epoch=1, seed=3, output="softmax")
    x, y = ds[0]
    assert x.shape == (4, 8, 12, 3) and y.shape == (4, 8, 12, 4) and ds.patch == (8, 12, 1)
    img = np.load(small_converted / "images" / "c0.npy")
    msk = np.load(small_converted / "masks" / "c0.npy")
    for xs, ys in zip(x, y):
        assert ys[..., 1:].sum() > 0
        hits = [(a, b, k) for a in range(img.shape[0] - 7) for b in range(img.shape[1] - 11)
                for k in range(img.shape[2]) if np.array_equal(img[a:a + 8, b:b + 12, k], xs)]
        assert hits and any(np.array_equal(msk[a:a + 8, b:b + 12, k], ys.argmax(-1)) for a, b, k in hits)


def test_slice_patches_turn_in_their_own_plane_only(small_converted):
    """Spatial augmentation of a slice rotates and zooms it within the axial plane: on an image whose value is
    100 + its axial index, the voxels of a rotated slice patch hold one index exactly (only those whose
    interpolation reaches past the case's edge are lower, mixed with the zeros outside); a tilt would mix slices."""
    ds = PatchDataset(small_converted, patch_size=(16, 16), batch_size=8, steps_per_epoch=1, seed=2,
                      augment=True, augmentation={"spatial": 1.0})
    ds.augment = False  # the spatial augmentation alone: flips and intensity changes would change the values
    for cid in ds.cases.case_ids:
        shape = ds.cases.mask(cid).shape
        index = 100 + np.arange(shape[2], dtype=np.float32)
        ds.cases._images[cid] = np.ascontiguousarray(np.broadcast_to(index[None, None, :, None], shape + (3,)))
    x, _ = ds[0]
    for xs in x:
        top = xs.max()
        assert abs(top - round(top)) < 1e-3
        np.testing.assert_allclose(xs[xs > top - 1], top, atol=1e-3)


def test_foreground_oversampling_ratio(small_converted):
    """With ratio 1 every patch holds tumor; with 0 the share follows the tumor's volume share."""
    always = PatchDataset(small_converted, patch_size=8, batch_size=50, foreground_ratio=1.0, steps_per_epoch=2)
    _, y = always[0]
    assert np.all(y[..., 1:].reshape(50, -1).sum(1) > 0)
    never = PatchDataset(small_converted, patch_size=8, batch_size=200, foreground_ratio=0.0, steps_per_epoch=1)
    _, y = never[0]
    share = np.mean(y[..., 1:].reshape(200, -1).sum(1) > 0)
    assert share < 0.8  # tumor fills a small part of the crop
    half = PatchDataset(small_converted, patch_size=8, batch_size=400, foreground_ratio=0.5, steps_per_epoch=1)
    _, y = half[0]
    share_half = np.mean(y[..., 1:].reshape(400, -1).sum(1) > 0)
    assert share_half > share + 0.2


def test_foreground_sampling_by_classes_draws_each_class_alike(small_converted):
    """"voxels" draws a centre's class in proportion to its voxels, "classes" each class the case holds alike
    (nnU-Net's way); both draw tumor voxels only, and the setting is refused in one line when unknown."""
    from brats_keras.io import BratsInputError
    from brats_keras.training import TrainConfig, check_settings

    rng = np.random.default_rng(0)
    n = 3000
    for mode in ("voxels", "classes"):
        ds = PatchDataset(small_converted, patch_size=8, foreground_sampling=mode)
        for case_id in ds.cases.case_ids:
            mask = np.asarray(ds.cases.mask(case_id))
            counts = np.bincount(mask.ravel(), minlength=4)[1:]
            drawn = np.array([mask[tuple(ds.draw_centre(case_id, rng))] for _ in range(n)])
            assert drawn.min() >= 1  # always a tumor voxel
            share = np.bincount(drawn, minlength=4)[1:] / n
            expected = counts / counts.sum() if mode == "voxels" else (counts > 0) / np.count_nonzero(counts)
            assert share == pytest.approx(expected, abs=0.04), (mode, case_id, counts)
    # the cases hold classes of unequal size, so the two modes differ
    mask = np.asarray(ds.cases.mask(ds.cases.case_ids[0]))
    counts = np.bincount(mask.ravel(), minlength=4)[1:]
    assert counts.max() / counts.sum() > 0.5
    with pytest.raises(ValueError, match="foreground sampling 'tumor': use one of voxels, classes"):
        PatchDataset(small_converted, patch_size=8, foreground_sampling="tumor")
    with pytest.raises(BratsInputError, match="^--foreground-sampling tumor: must be one of voxels, classes$"):
        check_settings(TrainConfig(data=str(small_converted), patch_size=16, foreground_sampling="tumor"))


def test_determinism_and_epochs(small_converted):
    a = PatchDataset(small_converted, patch_size=16, batch_size=2, augment=True, steps_per_epoch=3, seed=5)
    b = PatchDataset(small_converted, patch_size=16, batch_size=2, augment=True, steps_per_epoch=3, seed=5)
    for i in (2, 0, 1):
        assert np.array_equal(a[i][0], b[i][0]) and np.array_equal(a[i][1], b[i][1])
    first = a[0][0]
    a.on_epoch_end()
    assert not np.array_equal(first, a[0][0])  # reshuffled each epoch
    c = PatchDataset(small_converted, patch_size=16, batch_size=2, augment=True, steps_per_epoch=3, seed=6)
    assert not np.array_equal(first, c[0][0])
    with pytest.raises(IndexError):
        a[3]
    # fixed=True (validation): the same batches every epoch, and they are the epoch-0 batches of the same seed
    fixed = PatchDataset(small_converted, patch_size=16, batch_size=2, augment=True, steps_per_epoch=3, seed=5,
                         fixed=True)
    for _ in range(2):
        assert all(np.array_equal(fixed[i][k], b[i][k]) for i in range(3) for k in (0, 1))
        fixed.on_epoch_end()
    assert fixed.epoch == 0


def test_augmentation_keeps_labels_aligned():
    """Flips move image and mask together; intensity changes keep the background at zero."""
    from brats_keras.data import augment_patch

    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, size=(8, 9, 10)).astype(np.uint8)
    x = np.stack([y + 5.0, 2 * y + 7.0], -1).astype(np.float32)
    x[0] = 0  # background slab
    flipped_any = False
    for seed in range(8):
        xa, ya = augment_patch(x.copy(), y.copy(), np.random.default_rng(seed), intensity=False, gamma=False)
        inside = xa[..., 0] != 0
        assert np.array_equal(xa[..., 0][inside] - 5, ya[inside])
        assert np.array_equal(xa[..., 1][inside], 2 * ya[inside] + 7)
        flipped_any |= not np.array_equal(ya, y)
    assert flipped_any
    xa, ya = augment_patch(x.copy(), y.copy(), np.random.default_rng(1), flip=False)
    assert np.array_equal(ya, y) and not xa[0].any()
    assert not np.allclose(xa[1:], x[1:])  # intensities changed inside


def test_spatial_resampling_known_answers():
    """Identity resampling equals the plain crop; a 90-degree turn equals np.rot90; zoom 2 magnifies."""
    from brats_keras.data import crop_spatial, spatial_matrix

    rng = np.random.default_rng(0)
    img = rng.random((30, 32, 28, 2)).astype(np.float16)
    msk = rng.integers(0, 4, size=(30, 32, 28)).astype(np.uint8)
    start, patch = (4, 6, 3), (12, 12, 12)
    middle = [s + (p - 1) / 2 for s, p in zip(start, patch)]
    x, y = crop_spatial(img, msk, middle, patch, spatial_matrix(np.zeros(3), 1.0))
    assert np.array_equal(x, crop_patch(img, start, patch).astype(np.float32))
    assert np.array_equal(y, crop_patch(msk, start, patch)) and y.dtype == np.uint8
    _, y90 = crop_spatial(img, msk, middle, patch, spatial_matrix(np.array([90.0, 0, 0]), 1.0))
    assert np.array_equal(y90, np.rot90(crop_patch(msk, start, patch), k=-1, axes=(1, 2)))
    # zoom 2 about the centre of a 2x2x2 block pattern: each source voxel covers 2 patch voxels
    blocks = np.indices((30, 32, 28)).sum(0).astype(np.uint8) % 2
    _, yz = crop_spatial(img, blocks, (15, 16, 14), (8, 8, 8), spatial_matrix(np.zeros(3), 2.0))
    assert np.array_equal(yz[1:7:2, 1:7:2, 1:7:2], yz[2::2, 2::2, 2::2])  # patch voxels 1,2 sample source 14, ...
    assert not np.array_equal(yz[0:6:2, 0:6:2, 0:6:2], yz[1:7:2, 1:7:2, 1:7:2])
    # outside the volume is background / zero
    xo, yo = crop_spatial(img, msk, (0, 0, 0), patch, spatial_matrix(np.zeros(3), 1.0))
    assert not yo[0].any() and not xo[0].any()


def test_spatial_augment_in_batches(small_converted):
    plain = PatchDataset(small_converted, patch_size=16, batch_size=2, steps_per_epoch=4, seed=3)
    warped = PatchDataset(small_converted, patch_size=16, batch_size=2, steps_per_epoch=4, seed=3, spatial=1.0)
    again = PatchDataset(small_converted, patch_size=16, batch_size=2, steps_per_epoch=4, seed=3, spatial=1.0)
    for i in range(4):
        xw, yw = warped[i]
        assert xw.shape == plain[i][0].shape and np.array_equal(xw, again[i][0])
        assert np.allclose(yw.sum(-1), 1.0)  # still one class per voxel
        assert not np.array_equal(xw, plain[i][0])


def test_variable_size_cases_smaller_than_patch(small_converted):
    ds = PatchDataset(small_converted, patch_size=64, batch_size=1, steps_per_epoch=1)
    x, y = ds[0]
    assert x.shape == (1, 64, 64, 64, 3)
    assert y[..., 0].sum() > 0  # padding is background
    with pytest.raises(ValueError, match="no labelled converted case named nope"):
        PatchDataset(small_converted, ["nope"])


def test_tf_data_path_gives_the_same_batches(small_converted):
    from brats_keras.data import tf_dataset

    ds = PatchDataset(small_converted, patch_size=16, batch_size=2, augment=True, steps_per_epoch=3, seed=4)
    expected = [ds[i] for i in range(3)]
    feed = tf_dataset(ds)
    got = [(x.numpy(), y.numpy()) for x, y in feed]
    assert len(got) == 3
    for (xe, ye), (xg, yg) in zip(expected, got):
        assert np.array_equal(xe, xg) and np.array_equal(ye, yg)
    # iterating again is the next epoch: new patches, the same as the generator's epoch 1
    ds1 = PatchDataset(small_converted, patch_size=16, batch_size=2, augment=True, steps_per_epoch=3, seed=4)
    ds1.epoch = 1
    second = [x.numpy() for x, _ in feed]
    assert np.array_equal(second[0], ds1[0][0]) and not np.array_equal(second[0], got[0][0])


@pytest.mark.parametrize("key,bad", [("image", "../outside/x.npy"), ("image", "ABSOLUTE"),
                                     ("mask", "masks/../../outside/x.npy"), ("mask", "ABSOLUTE")])
def test_loader_reads_nothing_outside_the_data_folder(tmp_path, key, bad):
    from brats_keras.data import ConvertedCases
    from brats_keras.io import BratsInputError, atomic_write_json
    from brats_keras.spec import read_manifest

    write_small_case(tmp_path / "src", "c0")
    data = tmp_path / "data"
    convert_folder(tmp_path / "src", data, crop="brain", workers=1, progress=False)
    outside = tmp_path / "outside"
    outside.mkdir()
    np.save(outside / "x.npy", np.load(data / "images" / "c0.npy"))
    bad = str(outside / "x.npy") if bad == "ABSOLUTE" else bad
    m = read_manifest(data)
    m["cases"]["c0"][key] = bad
    atomic_write_json(data / "manifest.json", m)
    with pytest.raises(BratsInputError) as err:
        ConvertedCases(data)
    assert str(err.value) == (f"{data / 'manifest.json'}: case c0: {key} {bad!r} is not a file inside {data}; "
                              "refusing to read it")
    with pytest.raises(BratsInputError, match="refusing to read it"):
        PatchDataset(data, patch_size=8, batch_size=1)


def test_loader_reads_the_manifest_settings_as_a_spec(small_converted, tmp_path):
    """``ConvertedCases.spec`` is the conversion's spec; settings that are no spec are one line naming the manifest."""
    import shutil

    from brats_keras.data import ConvertedCases
    from brats_keras.io import BratsInputError, atomic_write_json
    from brats_keras.spec import PreprocessingSpec, read_manifest

    cases = ConvertedCases(small_converted)
    assert cases.spec == PreprocessingSpec(("flair", "t1ce", "t2"), crop="brain", margin=0, scale="zscore",
                                           dtype="float32")
    assert cases.n_channels == 3
    data = tmp_path / "data"
    shutil.copytree(small_converted, data)
    m = read_manifest(data)
    m["settings"]["scale"] = "zscor"
    atomic_write_json(data / "manifest.json", m)
    with pytest.raises(BratsInputError) as err:
        ConvertedCases(data)
    assert str(err.value) == f"{data / 'manifest.json'}: settings: unknown scale 'zscor': use one of minmax, zscore"


@pytest.mark.parametrize("text, problem", [
    (None, "{d}: no manifest.json: not a conversion folder"),
    ('{"cases": {', "{m}: cannot read the conversion manifest (Expecting"),
    ('[1, 2]', "{m}: not a conversion manifest (a JSON object), got list"),
    ('{"settings": {}}', "{m}: 'cases' must map case ids to their files, got nothing"),
    ('{"cases": ["c0"]}', "{m}: 'cases' must map case ids to their files, got list"),
    ('{"cases": {"c0": "images/c0.npy"}}', "{m}: case c0: entry must be an object naming its files, got str"),
])
def test_a_missing_or_malformed_manifest_is_one_line_naming_it(tmp_path, text, problem):
    """A conversion folder without a manifest, or with one that is not JSON or not of the manifest's shape (a
    hand-edited or damaged file), is a BratsInputError in one line naming it: before, a KeyError or
    AttributeError traceback from inside the loader (and exit 1 from ``brats-keras train``)."""
    from brats_keras.data import ConvertedCases
    from brats_keras.io import BratsInputError

    d = tmp_path / "conv"
    d.mkdir()
    if text is not None:
        (d / "manifest.json").write_text(text)
    with pytest.raises(BratsInputError) as err:
        ConvertedCases(d)
    msg = str(err.value)
    assert msg.startswith(problem.format(d=d, m=d / "manifest.json")) and "\n" not in msg


def test_train_on_a_malformed_manifest_exits_2_in_one_line_and_writes_nothing(tmp_path, capsys):
    from brats_keras.cli import main

    d = tmp_path / "conv"
    d.mkdir()
    (d / "manifest.json").write_text('{"settings": {}, "cases": {"c0": 3}}')
    out = tmp_path / "run"
    assert main(["train", "--data", str(d), "--out", str(out), "--epochs", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: {d / 'manifest.json'}: case c0: entry must be an object naming its files, got int"
    assert not out.exists()


def test_wrapped_datasets_keep_the_length_epochs_and_loader_settings_of_what_they_wrap():
    """RepeatTargets (deep supervision) and BatchSlice (several workers) share WrappedDataset: the wrapped
    dataset's length, its epochs and its loader threads, each with its own batches."""
    import keras

    from brats_keras.data import WrappedDataset
    from brats_keras.deep_supervision import RepeatTargets
    from brats_keras.distributed import BatchSlice
    from brats_keras.io import BratsInputError

    inner = counting_batches(7, 4, workers=3, use_multiprocessing=True, max_queue_size=5)
    repeat, part = RepeatTargets(inner, 2), BatchSlice(inner, 1, 2)
    for wrapped in (repeat, part):
        assert isinstance(wrapped, WrappedDataset) and isinstance(wrapped, keras.utils.PyDataset)
        assert wrapped.dataset is inner and len(wrapped) == 7
        assert (wrapped.workers, wrapped.use_multiprocessing, wrapped.max_queue_size) == (3, True, 5)
        wrapped.on_epoch_end()
    assert inner.ends == 2
    x, ys = repeat[3]
    assert x[:, 0].tolist() == [30, 31, 32, 33] and len(ys) == 2 and all(y[:, 0].tolist() == [-30, -31, -32, -33]
                                                                         for y in ys)
    x, y = part[3]  # worker 1 of 2: the second half of each batch
    assert x[:, 0].tolist() == [32, 33] and y[:, 0].tolist() == [-32, -33]
    assert (BatchSlice(inner, 0, 2)[3][0][:, 0]).tolist() == [30, 31]
    with pytest.raises(BratsInputError, match="--batch-size 4 cannot be shared by 3 workers"):
        BatchSlice(inner, 0, 3)


# ----------------------------------------------------------------------------- the arrays checked before training
def _damage(data, kind):
    """Damage case c0's arrays in the copy ``data`` one way; return the file named by the error and its problem."""
    image, mask = data / "images" / "c0.npy", data / "masks" / "c0.npy"
    if kind == "truncated image":
        image.write_bytes(image.read_bytes()[:-100])
        return image, "bytes where its header"
    if kind == "truncated mask":
        mask.write_bytes(mask.read_bytes()[:200])
        return mask, "(truncated); convert the data again"
    if kind == "extra bytes":
        image.write_bytes(image.read_bytes() + b"\0" * 8)
        return image, "(extra bytes); convert the data again"
    if kind == "missing mask":
        mask.unlink()
        return mask, "missing (listed in the manifest); convert the data again"
    if kind == "not npy":
        image.write_bytes(b"these are not voxels\n" * 50)
        return image, "not a readable .npy array ("
    if kind == "other shape":
        np.save(image, np.zeros((8, 8, 8, 3), np.float32))
        return image, "shape (8, 8, 8, 3) where the manifest says"
    if kind == "other mask shape":
        np.save(mask, np.zeros((8, 8, 8), np.uint8))
        return mask, "shape (8, 8, 8) where its image has"
    if kind == "other dtype":
        np.save(image, np.load(image).astype(np.float16))
        return image, "dtype float16 where the manifest says float32"
    raise ValueError(kind)


KINDS = ["truncated image", "truncated mask", "extra bytes", "missing mask", "not npy", "other shape",
         "other mask shape", "other dtype"]


@pytest.mark.parametrize("kind", KINDS)
def test_check_arrays_names_a_damaged_file(small_converted, tmp_path, kind):
    import shutil

    from brats_keras.data import ConvertedCases
    from brats_keras.io import BratsInputError

    data = tmp_path / "data"
    shutil.copytree(small_converted, data)
    # intact: the largest case's size, the brain box [3:-3, 3:-3, 2:-2] of 40 x 36 x 30 voxels (margin 0)
    assert ConvertedCases(data).check_arrays(checksums=True) == (34, 30, 26)
    path, problem = _damage(data, kind)
    with pytest.raises(BratsInputError) as err:
        ConvertedCases(data).check_arrays()
    assert str(err.value).startswith(f"{path}: ") and problem in str(err.value) and "\n" not in str(err.value)
    ConvertedCases(data).check_arrays(["c1", "c2", "c3"])  # only the cases asked for are read


def test_check_arrays_compares_checksums_when_asked(small_converted, tmp_path):
    """A byte changed inside an array keeps its size and header: only the manifest's sha256 finds it."""
    import shutil

    from brats_keras.data import ConvertedCases
    from brats_keras.io import BratsInputError

    data = tmp_path / "data"
    shutil.copytree(small_converted, data)
    image = data / "images" / "c2.npy"
    raw = bytearray(image.read_bytes())
    raw[-3] ^= 0xFF
    image.write_bytes(bytes(raw))
    ConvertedCases(data).check_arrays()
    with pytest.raises(BratsInputError) as err:
        ConvertedCases(data).check_arrays(checksums=True)
    assert str(err.value) == (f"{image}: its sha256 differs from the one in {data / 'manifest.json'} (changed since "
                              "conversion); convert the data again")


@pytest.mark.parametrize("link", ["file", "folder"])
def test_a_link_out_of_the_data_folder_is_refused(small_converted, tmp_path, link):
    """images/c0.npy (or all of masks/) as a symbolic link to a file outside the data folder: refused like a
    manifest entry that climbs out with '..'."""
    import shutil

    from brats_keras.data import ConvertedCases
    from brats_keras.io import BratsInputError

    data, outside = tmp_path / "data", tmp_path / "outside"
    shutil.copytree(small_converted, data)
    if link == "file":
        outside.mkdir()
        (data / "images" / "c0.npy").rename(outside / "c0.npy")
        (data / "images" / "c0.npy").symlink_to(outside / "c0.npy")
        path, target = data / "images" / "c0.npy", outside / "c0.npy"
    else:
        (data / "masks").rename(outside)
        (data / "masks").symlink_to(outside, target_is_directory=True)
        path, target = data / "masks" / "c0.npy", outside / "c0.npy"
    with pytest.raises(BratsInputError) as err:
        ConvertedCases(data)
    assert str(err.value) == f"{path}: a link to {target}, outside {data}; refusing to read it"
    # a link that stays inside the data folder is read
    (data / "images" / "c0.npy").unlink() if link == "file" else (data / "masks").unlink()
    if link == "file":
        shutil.copy(outside / "c0.npy", data / "images" / "real.npy")
        (data / "images" / "c0.npy").symlink_to("real.npy")
    else:
        outside.rename(data / "masks")
    ConvertedCases(data).check_arrays(checksums=True)


@pytest.mark.parametrize("verify", [False, True])
def test_train_on_damaged_data_is_one_line_and_makes_no_run_folder(small_converted, tmp_path, capsys, verify):
    """A truncated array (checked always) or a changed one (checked with --verify): one line naming the file,
    exit 2, no run folder: not a traceback from a memory map in the middle of an epoch."""
    import shutil

    from brats_keras.cli import main

    data = tmp_path / "data"
    shutil.copytree(small_converted, data)
    image = data / "images" / "c3.npy"
    if verify:
        raw = bytearray(image.read_bytes())
        raw[-1] ^= 0xFF
        image.write_bytes(bytes(raw))
    else:
        image.write_bytes(image.read_bytes()[:4096])
    out = tmp_path / "run"
    rc = main(["train", "--data", str(data), "--out", str(out), "--base-filters", "4", "--depth", "2", "--patch-size",
               "16", "--epochs", "1", "--val", "1"] + (["--verify"] if verify else []))
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith(f"error: {image}: "), err
    assert ("sha256 differs" if verify else "(truncated)") in err[0]
    assert not out.exists()


def test_augmentation_settings_in_one_value_and_augment_false_turns_every_kind_off(small_converted):
    """augmentation={"spatial", "intensity"} is the grouped form of spatial= / intensity= (same batches);
    augment=False turns spatial augmentation off too."""
    kw = dict(patch_size=16, batch_size=2, steps_per_epoch=2, seed=3)
    grouped = PatchDataset(small_converted, augmentation={"spatial": 1.0, "intensity": "strong"}, **kw)
    loose = PatchDataset(small_converted, augment=True, spatial=1.0, intensity="strong", **kw)
    assert grouped.augmentation == loose.augmentation == {"spatial": 1.0, "intensity": "strong"}
    for (xa, ya), (xb, yb) in zip((grouped[i] for i in range(2)), (loose[i] for i in range(2))):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    off = PatchDataset(small_converted, augment=False, spatial=1.0, **kw)
    plain = PatchDataset(small_converted, augment=False, **kw)
    assert off.spatial == 0.0
    np.testing.assert_array_equal(off[0][0], plain[0][0])
    assert PatchDataset(small_converted, spatial=1.0, **kw).spatial == 1.0  # the current call still warps
    with pytest.raises(ValueError, match="unknown setting flips"):
        PatchDataset(small_converted, augmentation={"flips": True}, **kw)
    with pytest.raises(ValueError, match="give the augmentation settings once"):
        PatchDataset(small_converted, augmentation={"spatial": 0.5}, spatial=0.5, **kw)
