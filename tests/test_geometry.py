"""The working grid: reorienting and resampling a case onto it and a prediction back (brats_keras.geometry), in
convert and predict, and the refusal of a case whose modalities are not co-registered."""
from pathlib import Path

import numpy as np
import pytest

from brats_keras import geometry as geo
from brats_keras import io as bio
from brats_keras.evaluation import dice
from brats_keras.synthetic import brats_affine

from conftest import write_nifti, write_small_case

REGISTER = "register the modalities first (e.g. ANTs, FSL FLIRT, SimpleITK)"


def _reoriented(arr, affine, codes):
    """``(array, affine)`` of a volume stored with its axes towards ``codes`` (nibabel's own reorientation)."""
    import nibabel as nib
    from nibabel.orientations import axcodes2ornt, io_orientation, ornt_transform

    img = nib.Nifti1Image(arr, affine).as_reoriented(ornt_transform(io_orientation(affine), axcodes2ornt(codes)))
    return np.asanyarray(img.dataobj), img.affine


def _resampled(arr, affine, zooms, codes, order):
    """A 1 mm volume reoriented to ``codes`` and resampled to ``zooms`` mm by nibabel: the same anatomy as a
    scanner would store it on another grid (``order`` 1 for images, 0 for label maps)."""
    import nibabel as nib
    from nibabel.affines import rescale_affine
    from nibabel.processing import resample_from_to

    arr, affine = _reoriented(arr, affine, codes)
    shape = tuple(int(np.ceil(n / z)) for n, z in zip(arr.shape, zooms))
    data = arr if order == 0 else arr.astype(np.float32)
    out = resample_from_to(nib.Nifti1Image(data, affine), (shape, rescale_affine(affine, arr.shape, zooms, shape)),
                           order=order)
    return np.asanyarray(out.dataobj), out.affine


def _world(shape, affine):
    """The mm coordinates ``(D, H, W, 3)`` of every voxel centre of a grid."""
    from nibabel.affines import apply_affine

    return apply_affine(affine, np.stack(np.meshgrid(*map(np.arange, shape), indexing="ij"), -1))


# ----------------------------------------------------------------------------- the helpers, known answers
@pytest.mark.parametrize("affine,zooms,problem", [
    (brats_affine((8, 8, 8)), None, None),
    (np.diag([-1.01, -0.99, 1.015, 1.0]), None, None),  # within 0.02 mm
    (np.diag([-0.9, -0.9, 3.0, 1.0]), None, "voxel size 0.9 x 0.9 x 3.0 mm, expected 1 mm"),
    (np.eye(4), None, "orientation RAS, expected LPS as in BraTS"),
    (np.diag([-1.0, 1.0, 1.0, 1.0]), None, "orientation LAS, expected LPS as in BraTS"),
    (np.diag([-1.0, -1.0, 1.0, 1.0]), (1.0, 1.0, 2.0), "voxel size 1.0 x 1.0 x 2.0 mm, expected 1 mm"),  # header's
])
def test_grid_problem_names_what_is_off_the_working_grid(affine, zooms, problem):
    assert geo.grid_problem(affine, zooms) == problem
    if zooms is None:  # a grid without a header is judged by its affine: on the working grid, nothing to do
        assert (geo.working_grid(geo.Grid((8, 8, 8), affine)) is None) == (problem is None)


@pytest.mark.parametrize("codes", ["RAS", "LAS", "PIR", "SAL"])
def test_a_reoriented_volume_comes_back_identical(codes):
    """Stored with its axes towards RAS, LAS or sagittally, a 1 mm case comes back the LPS original: same voxels,
    dtype and affine, nothing interpolated; and back again onto its own grid."""
    rng = np.random.default_rng(0)
    original = rng.integers(0, 1000, (10, 12, 8)).astype(np.int16)
    affine = brats_affine(original.shape)
    stored, stored_affine = _reoriented(original, affine, codes)
    assert geo.orientation(stored_affine) == codes
    regrid = geo.working_grid(geo.Grid(stored.shape, stored_affine))
    assert not regrid.resampled and regrid.shape == original.shape
    assert np.array_equal(regrid.affine, affine)
    back = regrid.to_working(stored, order=1)
    assert back.dtype == np.int16 and np.array_equal(back, original)
    assert np.array_equal(regrid.from_working(back, order=0), stored)
    box = regrid.from_working(back[2:7, 3:9, 1:5], order=0, start=(2, 3, 1))  # a brain box's values alone
    inside = np.zeros(original.shape, bool)
    inside[2:7, 3:9, 1:5] = True
    assert np.array_equal(box, np.where(regrid.from_working(inside, order=0), stored, 0))


def test_a_2mm_volume_is_upsampled_onto_the_1mm_grid():
    """2 mm LPS voxels, 10 x 12 x 8: the working grid has 20 x 24 x 16 voxels of 1 mm around the same centre
    voxel (nibabel.affines.rescale_affine), and a linear ramp in mm stays that ramp wherever both grids overlap."""
    affine = np.diag([-2.0, -2.0, 2.0, 1.0])
    affine[:3, 3] = [10.0, 20.0, -4.0]
    shape = (10, 12, 8)
    regrid = geo.working_grid(geo.Grid(shape, affine))
    assert regrid.resampled and regrid.shape == (20, 24, 16)
    centre = np.array([4, 5, 3])  # (shape - 1) // 2 keeps its place: 1 mm voxel (9, 11, 7)
    expected = np.diag([-1.0, -1.0, 1.0, 1.0])
    expected[:3, 3] = affine[:3, :3] @ centre + affine[:3, 3] - expected[:3, :3] @ [9, 11, 7]
    assert np.allclose(regrid.affine, expected)
    ramp = _world(shape, affine)[..., 0] + 2 * _world(shape, affine)[..., 2]  # x + 2 z, mm
    out = regrid.to_working(ramp, order=1)
    assert out.shape == (20, 24, 16) and out.dtype == np.float32
    world = _world(regrid.shape, regrid.affine)
    # the 1 mm voxels from index 1 on lie inside the hull of the 2 mm voxel centres; index 0 lies outside: 0
    assert np.allclose(out[1:, 1:, 1:], (world[..., 0] + 2 * world[..., 2])[1:, 1:, 1:], atol=1e-4)
    assert not out[0].any() and not out[:, 0].any() and not out[:, :, 0].any()
    back = regrid.from_working(out, order=1)  # every 2 mm voxel centre is a 1 mm one: the ramp comes back
    assert back.shape == shape and np.allclose(back, ramp, atol=1e-4)


def test_a_label_blob_survives_1mm_to_thick_slices_and_back():
    """A ball of 12 mm radius on the 1 mm grid, resampled to 0.9 x 0.9 x 3 mm and RAS (nearest), comes back onto
    the 1 mm LPS grid (nearest) with Dice > 0.9 against the ball itself; the label values and dtype stay."""
    shape = (64, 64, 48)
    affine = brats_affine(shape)
    centre = np.array([-30.0, 35.0, 22.0])  # mm
    ball = (np.linalg.norm(_world(shape, affine) - centre, axis=-1) <= 12).astype(np.uint8) * 4
    thick, thick_affine = _resampled(ball, affine, (0.9, 0.9, 3.0), "RAS", order=0)
    assert thick.shape == (72, 72, 16) and geo.orientation(thick_affine) == "RAS"
    regrid = geo.working_grid(geo.Grid(thick.shape, thick_affine))
    assert regrid.resampled and regrid.shape == (65, 65, 48) and geo.orientation(regrid.affine) == "LPS"
    assert np.allclose(geo.voxel_mm(regrid.affine), 1.0)
    back = regrid.to_working(thick, order=0)
    assert back.dtype == np.uint8 and set(np.unique(back)) == {0, 4}
    truth = np.linalg.norm(_world(regrid.shape, regrid.affine) - centre, axis=-1) <= 12
    assert dice(back == 4, truth) > 0.9
    assert dice(regrid.from_working(back, order=0) == 4, thick == 4) > 0.9  # and onto the thick grid again


def test_describe_and_note_a_grid():
    affine = np.diag([0.9, 0.9, 3.0, 1.0])
    grid = geo.describe_grid((267, 267, 52), affine)
    assert grid == {"shape": [267, 267, 52], "voxel_mm": [0.9, 0.9, 3.0], "orientation": "RAS",
                    "affine": affine.tolist()}
    assert geo.resampled_note(grid, (241, 241, 156)) == (
        "resampled from 0.9 x 0.9 x 3.0 mm RAS, 267 x 267 x 52 voxels onto the 1 mm LPS grid, 241 x 241 x 156 voxels")


# ----------------------------------------------------------------------------- co-registration
def test_a_t1_of_another_shape_is_refused_in_convert_and_predict(tmp_path, capsys):
    """A case whose T1 has another shape than its FLAIR is not co-registered: one line naming both files, in
    convert and in predict; the other case goes through."""
    from brats_keras.cli import main as cli_main
    from brats_keras.inference import predict_folder

    src = tmp_path / "src"
    write_small_case(src, "good", shape=(16, 18, 14))
    folder = write_small_case(src, "moved", seed=1, shape=(16, 18, 14))
    write_nifti(folder / "moved_t1.nii.gz", np.ones((16, 18, 12), np.int16))
    message = (f"{folder / 'moved_t1.nii.gz'}: shape (16, 18, 12) differs from moved_flair.nii.gz's (16, 18, 14): "
               f"not co-registered with moved_flair.nii.gz; {REGISTER}")
    rc = cli_main(["convert", "--input", str(src), "--output", str(tmp_path / "conv"), "--modalities",
                   "flair,t1,t2", "--crop", "brain", "--workers", "1", "--quiet"])
    assert rc == 1
    assert f"FAILED moved: {message}" in capsys.readouterr().out.splitlines()
    logs = []
    res = predict_folder(src, tmp_path / "pred", model=_predictor(), progress=False, log=logs.append)
    assert list(res["ok"]) == ["good"] and res["failed"] == {"moved": message}
    assert logs == [f"FAILED moved: {message}"]


# ----------------------------------------------------------------------------- predict writes back on the input grid
def _tumor_case(root, case_id, shape=(48, 52, 40)):
    """A case whose FLAIR is bright where its label map has a ball of edema; on the BraTS grid."""
    folder = Path(root) / case_id
    folder.mkdir(parents=True)
    affine = brats_affine(shape)
    world = _world(shape, affine)
    brain = np.linalg.norm(world - _world(shape, affine)[24, 26, 20], axis=-1) <= 19
    seg = (np.linalg.norm(world - _world(shape, affine)[20, 30, 22], axis=-1) <= 8).astype(np.uint8) * 2
    for m in ("flair", "t1", "t1ce", "t2"):
        vol = (brain * 200 + (seg > 0) * (600 if m == "flair" else 0)).astype(np.int16)
        write_nifti(folder / f"{case_id}_{m}.nii.gz", vol)
    write_nifti(folder / f"{case_id}_seg.nii.gz", seg)
    return folder


def _predictor():
    """:func:`test_inference.background_predictor` reading all four modalities (FLAIR first)."""
    from brats_keras.spec import PreprocessingSpec
    from test_inference import background_predictor

    p = background_predictor()
    p.info = {**p.info, "modalities": ["flair", "t1", "t1ce", "t2"]}
    p.spec = PreprocessingSpec.from_dict(p.info)
    return p


def _flair_predictor():
    """A Predictor without a model: edema where the scaled FLAIR is bright (4 softmax probabilities)."""
    p = _predictor()

    def predict_image(image, progress=False):
        edema = np.clip(image[..., 0] - 1.0, 0, 1).astype(np.float32)  # z-scored: the ball is far above the brain
        return np.stack([1 - edema, 0 * edema, edema, 0 * edema], axis=-1)

    p.predict_image = predict_image
    return p


def test_predict_writes_a_thick_ras_case_back_on_its_own_grid(tmp_path):
    """A case stored at 0.9 x 0.9 x 3 mm, RAS: predict writes its labels and probabilities on that grid with its
    affine and header geometry, notes the grid it came on, and finds the ball the images show (Dice > 0.9 on
    that grid); the same case on the BraTS grid is predicted without any resampling."""
    import nibabel as nib

    src = tmp_path / "src"
    orig = _tumor_case(tmp_path / "orig", "c")
    (src / "c").mkdir(parents=True)
    for path in sorted(orig.iterdir()):
        img = nib.load(str(path))
        seg = path.name.endswith("_seg.nii.gz")
        arr, affine = _resampled(np.asanyarray(img.dataobj), img.affine, (0.9, 0.9, 3.0), "RAS", 0 if seg else 1)
        write_nifti(src / "c" / path.name, arr, affine)
    logs = []
    res = _predict(src, tmp_path / "out", logs)
    thick = nib.load(str(src / "c" / "c_flair.nii.gz"))
    out = nib.load(str(tmp_path / "out" / "c.nii.gz"))
    assert out.shape == thick.shape == (54, 58, 14)
    assert np.array_equal(out.affine, thick.affine) and np.array_equal(out.header.get_zooms(), thick.header.get_zooms())
    assert out.header["sform_code"] == thick.header["sform_code"]
    truth = np.asanyarray(nib.load(str(src / "c" / "c_seg.nii.gz")).dataobj)
    labels = np.asanyarray(out.dataobj)
    assert set(np.unique(labels)) == {0, 2} and dice(labels == 2, truth == 2) > 0.9
    probs = np.load(tmp_path / "out" / "c_probs.npy")
    assert probs.shape == thick.shape + (4,)
    # the probabilities the labels were taken from (edema above 0.5; float16 in the file)
    assert probs[..., 2][labels == 2].min() > 0.499 and probs[..., 2][labels == 0].max() < 0.501
    grid = geo.describe_grid(thick.shape, thick.affine)
    assert res["resampled"] == {"c": grid}
    assert logs == [f"note: c: {geo.resampled_note(grid, (49, 53, 42))} to predict; the prediction is on the "
                    "input's own grid"]
    on_grid = _predict(orig.parent, tmp_path / "out_orig", logs := [])
    assert on_grid["resampled"] == {} and logs == []
    assert dice(np.asanyarray(nib.load(str(tmp_path / "out_orig" / "c.nii.gz")).dataobj) == 2,
                np.asanyarray(nib.load(str(orig / "c_seg.nii.gz")).dataobj) == 2) > 0.95


def _predict(src, out, logs):
    from brats_keras.inference import predict_folder

    return predict_folder(src, out, model=_flair_predictor(), save_probs=True, progress=False, log=logs.append)


# ----------------------------------------------------------------------------- the shipped model on a real case
#: a real case whose tumor has all three regions (card: WT 0.933, TC 0.938, ET 0.889 out of fold)
REAL_CASE = "Brats18_TCIA01_499_1"


def test_the_shipped_model_predicts_a_thick_ras_real_case_on_its_own_grid(real_dir, tmp_path):
    """The real case and its truth resampled to 0.9 x 0.9 x 3 mm and stored RAS (nibabel): predict (the shipped
    fold file that held the case out, as the card scored it) writes the label map on that grid with that affine,
    and its Dice against the resampled truth is within 0.03 of the card's score of the case on its own grid, per
    region (measured: WT 0.916, TC 0.932, ET 0.867 against 0.933, 0.938, 0.889)."""
    import nibabel as nib

    from brats_keras.cli import main as cli_main
    from brats_keras.evaluation import region_scores
    from brats_keras.pretrained import card_case

    src = tmp_path / "in" / REAL_CASE
    src.mkdir(parents=True)
    for path in sorted((real_dir / REAL_CASE).iterdir()):
        img = nib.load(str(path))
        seg = path.name.endswith("_seg.nii.gz")
        arr, affine = _resampled(np.asanyarray(img.dataobj), img.affine, (0.9, 0.9, 3.0), "RAS", 0 if seg else 1)
        write_nifti(src / path.name, arr, affine)
    ref = card_case(REAL_CASE)
    models = [f for m in ref["models"] for f in ("--model", str(m))]
    assert cli_main(["predict", "--input", str(src), "--output", str(tmp_path / "out"), "--quiet", "--overlap",
                     str(ref["overlap"]), *models, *(["--tta"] if ref["tta"] else [])]) == 0
    out = nib.load(str(tmp_path / "out" / f"{REAL_CASE}.nii.gz"))
    truth = nib.load(str(src / f"{REAL_CASE}_seg.nii.gz"))
    assert out.shape == truth.shape == (267, 267, 52) and np.array_equal(out.affine, truth.affine)
    scores = region_scores(bio.load_classes(tmp_path / "out" / f"{REAL_CASE}.nii.gz"),
                           bio.load_classes(src / f"{REAL_CASE}_seg.nii.gz"), distances=False)
    for region in ("WT", "TC", "ET"):
        assert scores[region]["dice"] == pytest.approx(ref["scores"][region]["dice"], abs=0.03), region
