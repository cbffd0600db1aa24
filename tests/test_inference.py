"""Sliding-window prediction, post-processing and NIfTI output in the patient's geometry."""
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from brats_keras import io as bio
from brats_keras.inference import Predictor, gaussian_weight, predict_folder, sliding_window, window_starts
from brats_keras.preprocessing import brain_crop_box, downsample_classes, downsample_image, upsample_probs
from brats_keras.spec import PreprocessingSpec

from conftest import make_symlink_loops, resave_on_grid, write_small_case


@pytest.mark.parametrize("size,patch,overlap,expected", [
    (10, 16, 0.5, [0]),
    (16, 16, 0.5, [0]),
    (32, 16, 0.5, [0, 8, 16]),
    (33, 16, 0.5, [0, 6, 11, 17]),
    (40, 16, 0.0, [0, 8, 16, 24][:0] or [0, 12, 24]),
])
def test_window_starts_cover_everything(size, patch, overlap, expected):
    starts = window_starts(size, patch, overlap)
    assert starts == expected
    covered = np.zeros(max(size, patch), bool)
    for s in starts:
        covered[s:s + patch] = True
        assert s + patch <= max(size, patch)
    assert covered[:size].all()


def test_gaussian_weight_peaks_in_centre():
    w = gaussian_weight((8, 8, 8))
    assert w.shape == (8, 8, 8) and w.dtype == np.float32
    assert w.max() == pytest.approx(1.0) and w[0, 0, 0] < w[3, 3, 3]
    assert np.allclose(w, w[::-1, ::-1, ::-1]) and w.min() > 0


@pytest.mark.parametrize("tta", [False, True])
def test_voxelwise_model_is_reproduced_exactly(tta):
    """A model that works voxel by voxel must give the same map whatever the windows and mirrors."""
    rng = np.random.default_rng(0)
    image = rng.random((21, 26, 17, 2)).astype(np.float32)
    fn = lambda b: np.concatenate([b, b[..., :1] * 2], axis=-1)  # noqa: E731
    out = sliding_window(fn, image, (8, 8, 8), n_out=3, overlap=0.5, batch_size=3, tta=tta)
    assert out.shape == (21, 26, 17, 3)
    assert np.allclose(out[..., :2], image, atol=1e-6) and np.allclose(out[..., 2], 2 * image[..., 0], atol=1e-6)


def test_small_image_is_padded():
    image = np.ones((5, 6, 7, 1), np.float32)
    seen = []

    def fn(b):
        seen.append(b.shape)
        return b

    out = sliding_window(fn, image, 8, n_out=1)
    assert seen == [(1, 8, 8, 8, 1)] and out.shape == (5, 6, 7, 1) and np.allclose(out, 1)


def test_tta_averages_mirrored_predictions():
    """A position-dependent model: TTA returns the mean of the 8 mirrored versions."""
    image = np.zeros((8, 8, 8, 1), np.float32)
    ramp = np.arange(8, dtype=np.float32)[:, None, None, None] * np.ones((1, 8, 8, 1), np.float32)
    fn = lambda b: np.broadcast_to(ramp, b.shape).copy()  # noqa: E731
    plain = sliding_window(fn, image, 8, n_out=1)
    mirrored = sliding_window(fn, image, 8, n_out=1, tta=True)
    assert np.allclose(plain[..., 0], ramp[..., 0])
    assert np.allclose(mirrored, 3.5)  # half the passes flip axis 0: (x + 7 - x) / 2


def test_downsample_upsample_round_trip():
    c = np.zeros((16, 16, 16), np.uint8)
    c[4:12, 4:12, 4:12] = 2
    c[6:10, 6:10, 6:10] = 1
    small = downsample_classes(c, 2)
    assert small.shape == (8, 8, 8)
    assert (small == 2).sum() == 64 - 8 and (small == 1).sum() == 8
    img = np.arange(16 ** 3, dtype=np.float32).reshape(16, 16, 16, 1)
    assert np.allclose(downsample_image(img, 2)[0, 0, 0, 0], img[:2, :2, :2].mean())
    from brats_keras.labels import one_hot

    probs = one_hot(small, 4)
    back = upsample_probs(probs, (16, 16, 16), 2).argmax(-1)
    # trilinear interpolation rounds off exactly the 8 corner voxels of each of the two cubes
    wrong = np.argwhere(back != c)
    corners = {(a, b, d) for a in (4, 11) for b in (4, 11) for d in (4, 11)}
    corners |= {(a, b, d) for a in (6, 9) for b in (6, 9) for d in (6, 9)}
    assert {tuple(int(v) for v in w) for w in wrong} == corners


@pytest.fixture(scope="module")
def tiny_model_file(tmp_path_factory):
    """An untrained tiny region model saved with brats-keras info (2 mm, all four modalities)."""
    import keras

    from brats_keras.checkpoint import save_model
    from brats_keras.models import unet3d

    model = unet3d(in_channels=4, base_filters=4, depth=2, norm="instance", output="regions")
    path = tmp_path_factory.mktemp("model") / "tiny.keras"
    info = {"modalities": ["flair", "t1", "t1ce", "t2"], "scale": "zscore", "output": "regions",
            "patch_size": 32, "downsample": 2}
    save_model(model, path, info)
    keras.backend.clear_session()
    return path


def test_predict_real_case_keeps_geometry(tiny_model_file, real_dir, tmp_path):
    import nibabel as nib

    src = tmp_path / "in"
    shutil.copytree(real_dir / "Brats18_TCIA01_425_1", src / "Brats18_TCIA01_425_1")
    bad = src / "broken"
    bad.mkdir()
    for m in ("flair", "t1ce", "t2"):  # no t1: the model needs it
        shutil.copy(real_dir / "Brats18_CBICA_AQN_1" / f"Brats18_CBICA_AQN_1_{m}.nii.gz", bad / f"broken_{m}.nii.gz")
    logs = []
    res = predict_folder(src, tmp_path / "out", model=tiny_model_file, progress=False, log=logs.append,
                         batch_size=4)
    assert list(res["ok"]) == ["Brats18_TCIA01_425_1"]
    only = predict_folder(src, tmp_path / "only", model=tiny_model_file, progress=False, case_ids=["broken"],
                          log=logs.append)
    assert list(only["failed"]) == ["broken"] and not only["ok"]
    assert "missing modality t1" in res["failed"]["broken"] and any("broken" in s for s in logs)
    ref = nib.load(str(real_dir / "Brats18_TCIA01_425_1" / "Brats18_TCIA01_425_1_flair.nii.gz"))
    out = nib.load(str(tmp_path / "out" / "Brats18_TCIA01_425_1.nii.gz"))
    assert out.shape == ref.shape == (240, 240, 155)
    assert np.allclose(out.affine, ref.affine) and out.get_data_dtype() == np.uint8
    labels = np.asanyarray(out.dataobj)
    assert set(np.unique(labels)) <= {0, 1, 2, 4}  # 2021 naming: ET written as 4
    # nothing outside the brain's bounding box (+ 4 voxels margin)
    brain = np.argwhere(np.asanyarray(ref.dataobj) != 0)
    lo, hi = np.maximum(brain.min(0) - 4, 0), brain.max(0) + 5
    outside = labels.copy()
    outside[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = 0
    assert not outside.any()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["Brats18_TCIA01_425_1.nii.gz"]


def test_labels_follow_input_convention(tiny_model_file, tmp_path):
    src = tmp_path / "in"
    write_small_case(src, "c23", layout="2023", shape=(40, 36, 30))
    p = Predictor(tiny_model_file, batch_size=2)
    p.post["et_threshold"] = 0
    case = bio.find_cases(src)[0]
    # force every voxel to be ET to see the written value
    p.predict_batch = lambda b: np.ones(b.shape[:4] + (3,), np.float32)
    predict_folder(src, tmp_path / "o23", model=p, progress=False)
    predict_folder(src, tmp_path / "o21", model=p, labels="2021", progress=False)
    a, _, _ = bio.load_nifti(tmp_path / "o23" / "c23.nii.gz")
    b, _, _ = bio.load_nifti(tmp_path / "o21" / "c23.nii.gz")
    assert 3 in a and set(np.unique(a)) <= {0, 3}
    assert 4 in b and set(np.unique(b)) <= {0, 4}
    assert case.label_convention == "2023"


def test_window_layout_is_the_one_predict_case_uses(tiny_model_file, tmp_path):
    write_small_case(tmp_path / "in", "c", layout="2021", shape=(80, 72, 70))
    (case,) = bio.find_cases(tmp_path / "in")
    p = Predictor(tiny_model_file, batch_size=1, overlap=0.5)
    layout = p.window_layout(case)
    vols, _, _ = bio.load_modalities(case, p.info["modalities"])
    box = brain_crop_box(vols)
    assert layout["factor"] == 2 and layout["patch"] == (32, 32, 32)
    assert layout["shape"] == tuple(-(-(b - a) // 2) for a, b in box)
    windows = []
    p.predict_batch = lambda b: windows.append(b.shape) or np.zeros(b.shape[:4] + (3,), np.float32)
    p.predict_case(case)
    assert len(windows) == int(np.prod([len(s) for s in layout["starts"]])) > 1


def test_channel_mismatch_is_reported(tiny_model_file):
    from brats_keras.checkpoint import load_model

    model, info = load_model(tiny_model_file, compile=False)
    with pytest.raises(ValueError, match="model expects 4 channels but its info lists 3 modalities"):
        Predictor(model, info={**info, "modalities": ["flair", "t1ce", "t2"]})
    p = Predictor(model, info=info)
    with pytest.raises(ValueError, match="image has 2 channels, the model expects 4"):
        p.predict_image(np.zeros((8, 8, 8, 2), np.float32))
    assert json.loads(json.dumps(info))["downsample"] == 2


def test_prediction_refuses_a_case_with_two_files_for_a_modality(tmp_path):
    """Prediction finds cases as conversion does: the ambiguous case fails in one line, the others are predicted."""
    src = tmp_path / "in"
    write_small_case(src, "good", shape=(16, 18, 14))
    f = write_small_case(src, "twice", shape=(16, 18, 14))
    (f / "twice_t1ce.nii.gz").rename(f / "twice_T1CE.nii.gz")
    write_small_case(src, "twice", shape=(16, 18, 14))
    p = Predictor.__new__(Predictor)  # no model: every voxel background
    p.info, p.margin, p.post = {"modalities": ["flair", "t1ce", "t2"], "scale": "zscore"}, 4, {}
    p.spec = PreprocessingSpec.from_dict(p.info)
    p.predict_image = lambda image, progress=False: np.zeros(image.shape[:3] + (4,), np.float32)
    logs = []
    res = predict_folder(src, tmp_path / "out", model=p, progress=False, log=logs.append)
    assert list(res["ok"]) == ["good"]
    assert res["failed"] == {"twice": f"{f}: case twice has two t1ce files, twice_T1CE.nii.gz and twice_t1ce.nii.gz: "
                                      "keep one"}
    assert sorted(q.name for q in (tmp_path / "out").iterdir()) == ["good.nii.gz"]


# ----------------------------------------------------------------------------- output faults
def background_predictor():
    """A Predictor without a model: every voxel background, 4 softmax probabilities (no Keras, instant)."""
    p = Predictor.__new__(Predictor)
    p.info, p.margin, p.post = {"modalities": ["flair", "t1ce", "t2"], "scale": "zscore"}, 4, {}
    p.spec = PreprocessingSpec.from_dict(p.info)
    p.predict_image = lambda image, progress=False: np.zeros(image.shape[:3] + (4,), np.float32)
    return p


def three_cases(root):
    for i, case in enumerate(("a", "b", "c")):
        write_small_case(root, case, seed=i, shape=(16, 18, 14))
    return root


def folder_bytes(folder):
    """Every file under ``folder`` (hidden ones too) with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("where", ["output is a file", "output below a file", "read-only folder"])
def test_predict_refuses_an_output_it_cannot_write_before_any_work(tmp_path, monkeypatch, capsys, where):
    """One line, exit 2, before the model is even looked for (it does not exist here), nothing made."""
    from brats_keras.cli import main

    src = three_cases(tmp_path / "in")
    place = tmp_path / "place"
    place.mkdir()
    (place / "notes.txt").write_text("mine")
    output, message = {
        "output is a file": (place / "notes.txt", f"{place / 'notes.txt'}: exists and is not a folder"),
        "output below a file": (place / "notes.txt" / "out", f"{place / 'notes.txt' / 'out'}: "
                                                             f"{place / 'notes.txt'} is not a folder"),
        "read-only folder": (place / "new" / "out", f"{place / 'new' / 'out'}: cannot write in {place} "
                                                    "(permission denied)"),
    }[where]
    if where == "read-only folder":  # chmod stops no write as root: the folder is reported unwritable
        real_access = bio.os.access
        monkeypatch.setattr(bio.os, "access", lambda p, mode: Path(p) != place and real_access(p, mode))
    before = folder_bytes(tmp_path)
    status = main(["predict", "--model", str(tmp_path / "missing.keras"), "--input", str(src),
                   "--output", str(output), "--quiet"])
    out, err = capsys.readouterr()
    assert status == 2 and out == ""
    assert err == f"error: {message}\n"
    assert folder_bytes(tmp_path) == before and not (place / "new").exists()


def test_predict_refuses_a_read_only_output_folder_by_its_mode(tmp_path, read_only_dir):
    """The same with a real chmod, where it stops writes (not as root)."""
    src = three_cases(tmp_path / "in")
    with pytest.raises(bio.BratsInputError, match=r"locked: cannot write in .*locked \(permission denied\)"):
        predict_folder(src, read_only_dir, model=background_predictor(), progress=False)
    assert list(read_only_dir.iterdir()) == []


def _full_disk_for(monkeypatch, name):
    """Writes of the output file ``name`` stop half-way with ENOSPC, where its bytes are written: NIfTI files in
    ``nibabel.save``, arrays in the writer of :func:`brats_keras.io.atomic_save_npy`."""
    import errno

    import nibabel as nib

    def is_full(tmp):  # the temporary file of <name>: .<name>.<random><suffix>
        return Path(tmp).name.startswith(f".{name}.")

    real_save, real_write = nib.save, bio._HashingWriter.write

    def save(img, filename):
        real_save(img, filename)
        if is_full(filename):
            data = Path(filename).read_bytes()
            Path(filename).write_bytes(data[: len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device")

    def write(self, data):
        if is_full(self.f.name):
            real_write(self, memoryview(data)[: len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(self, data)

    monkeypatch.setattr(nib, "save", save)
    monkeypatch.setattr(bio._HashingWriter, "write", write)


@pytest.mark.parametrize("full", ["b.nii.gz", "b_probs.npy"])
def test_a_full_disk_fails_that_case_in_one_line_and_leaves_nothing_of_it(tmp_path, monkeypatch, full):
    src = three_cases(tmp_path / "in")
    out = tmp_path / "out"
    _full_disk_for(monkeypatch, full)
    logs = []
    res = predict_folder(src, out, model=background_predictor(), save_probs=True, progress=False, log=logs.append)
    assert logs == [f"FAILED b: {out / full}: no space left on device"]
    assert list(res["ok"]) == ["a", "c"] and list(res["failed"]) == ["b"]
    # the other cases whole, nothing of b (no label map without its probabilities), no temporary file
    assert sorted(p.name for p in out.iterdir()) == ["a.nii.gz", "a_probs.npy", "c.nii.gz", "c_probs.npy"]
    labels, _, _ = bio.load_nifti(out / "c.nii.gz")
    assert labels.shape == (16, 18, 14) and not labels.any()
    assert np.load(out / "c_probs.npy").shape == (16, 18, 14, 4)


def test_cli_predict_exit_1_on_a_write_failure(tmp_path, monkeypatch, capsys):
    from brats_keras import inference
    from brats_keras.cli import main

    src = three_cases(tmp_path / "in")
    out = tmp_path / "out"
    _full_disk_for(monkeypatch, "a.nii.gz")
    class NoModel(Predictor):  # what the CLI builds: a Predictor without a model
        def __new__(cls, *args, **kwargs):
            return background_predictor()

    monkeypatch.setattr(inference, "Predictor", NoModel)
    status = main(["predict", "--input", str(src), "--output", str(out), "--quiet"])
    stdout, _ = capsys.readouterr()
    assert status == 1
    assert stdout.splitlines() == [f"FAILED a: {out / 'a.nii.gz'}: no space left on device",
                                   f"predicted 2 case(s) into {out}; 1 failed"]
    assert sorted(p.name for p in out.iterdir()) == ["b.nii.gz", "c.nii.gz"]


def test_an_ensemble_predicts_without_tensorflow_retracing_warnings(tiny_model_file, tmp_path):
    """Each model of an ensemble traces its own predict function; TensorFlow counts them together and warns
    ("5 out of the last 5 calls to <function ...> triggered tf.function retracing") unless predict hides it."""
    import os
    import subprocess
    import sys

    models = tmp_path / "ensemble"
    models.mkdir()
    for k in range(3):
        shutil.copy(tiny_model_file, models / f"fold-{k}.keras")
    src = tmp_path / "in"
    write_small_case(src, "small", shape=(40, 36, 30))  # one window: a batch of 1
    write_small_case(src, "large", seed=1, shape=(80, 72, 70))  # several windows: batches of 4
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    proc = subprocess.run([sys.executable, "-m", "brats_keras.cli", "predict", "--model", str(models), "--input",
                           str(src), "--output", str(tmp_path / "out"), "--batch-size", "4", "--quiet"],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "retracing" not in proc.stderr and proc.stderr == ""
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["large.nii.gz", "small.nii.gz"]


def test_predict_resamples_a_3mm_case_and_walks_symlink_loops_once(tmp_path):
    """predict finds its input cases as convert does: through symbolic link loops once; a 3 mm case is predicted
    on the working grid and written back on its own (tests/test_geometry.py checks the voxels)."""
    import nibabel as nib

    src, out = tmp_path / "in", tmp_path / "out"
    shape = (16, 18, 14)
    write_small_case(src, "good", shape=shape)
    make_symlink_loops(src)
    thick = write_small_case(src / "d2", "thick", seed=1, shape=shape)
    for path in thick.iterdir():
        resave_on_grid(path, np.diag([-0.9, -0.9, 3.0, 1.0]))
    logs = []
    res = predict_folder(src, out, model=background_predictor(), progress=False, log=logs.append)
    assert list(res["ok"]) == ["good", "thick"] and not res["failed"] and list(res["resampled"]) == ["thick"]
    assert logs == ["note: thick: resampled from 0.9 x 0.9 x 3.0 mm LPS, 16 x 18 x 14 voxels onto the 1 mm LPS "
                    "grid, 15 x 17 x 42 voxels to predict; the prediction is on the input's own grid"]
    written = nib.load(str(out / "thick.nii.gz"))
    assert written.shape == shape and np.array_equal(written.affine, nib.load(str(thick / "thick_t2.nii.gz")).affine)
    assert sorted(p.name for p in out.iterdir()) == ["good.nii.gz", "thick.nii.gz"]


# ----------------------------------------------------------------------------- the recorded head against the network
HEAD_INFO = {"modalities": ["flair", "t1", "t1ce", "t2"], "scale": "zscore", "patch_size": 16, "downsample": 1,
             "crop": "brain"}


def _network(output, n_classes=4):
    import keras

    from brats_keras.models import build_model

    keras.utils.set_random_seed(0)
    return build_model("unet3d", in_channels=4, base_filters=2, depth=2, norm="none", output=output,
                       n_classes=n_classes)


@pytest.mark.parametrize("network, recorded, message", [
    (("regions",), "softmax", "its info records a softmax head (4 channels) but the network ends in 3 channels"),
    (("softmax",), "regions", "its info records a regions head (3 channels) but the network ends in 4 channels"),
    (("softmax", 3), "regions", "its info records a regions head (sigmoid) but the network ends in a softmax"),
])
def test_a_model_whose_network_is_not_its_recorded_head_is_refused(network, recorded, message, tmp_path, capsys):
    """A file recording a softmax head on 3 sigmoid outputs predicted other labels with exit 0 (argmax over WT, TC,
    ET read as classes): now one line naming the file, exit 2, nothing written. The same for a Keras model given
    with such an info."""
    from brats_keras.checkpoint import save_model
    from brats_keras.cli import main as cli_main

    model = _network(*network)
    path = save_model(model, tmp_path / "m.keras", {**HEAD_INFO, "output": recorded}, include_optimizer=False)
    write_small_case(tmp_path / "cases", "p0")
    capsys.readouterr()
    rc = cli_main(["predict", "--model", str(path), "--input", str(tmp_path / "cases"), "--output",
                   str(tmp_path / "preds"), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith(f"error: {path}: {message}"), err
    assert not (tmp_path / "preds").exists()
    with pytest.raises(bio.BratsInputError, match="^model 1: " + re.escape(message)):
        Predictor(model, info={**HEAD_INFO, "output": recorded})
    if len(network) == 1:  # the head the network has is accepted
        assert Predictor(model, info={**HEAD_INFO, "output": network[0]}).n_out == model.outputs[0].shape[-1]


def test_an_onnx_export_whose_network_is_not_its_recorded_head_is_refused(tmp_path):
    """An export's brats_keras.json records the head ("output") and the channels ("n_out"): a softmax head recorded
    for 3 channels, or n_out changed to match it, is refused against the exported network's own output."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("tf2onnx")
    from brats_keras.export import INFO_FILE, export_model

    out = export_model(_network("regions"), tmp_path / "onnx", format="onnx", info={**HEAD_INFO, "output": "regions"})
    assert Predictor(out).n_out == 3
    info = json.loads((out / INFO_FILE).read_text())
    for change, message in (({"output": "softmax"}, "records a softmax head (4 channels) but the network ends in 3"),
                            ({"output": "softmax", "export": {**info["export"], "n_out": 4}},
                             f"{INFO_FILE} records 4 output channels but the exported network gives 3")):
        (out / INFO_FILE).write_text(json.dumps({**info, **change}))
        with pytest.raises(bio.BratsInputError, match=f"^{re.escape(str(out))}: .*{re.escape(message)}"):
            Predictor(out)


def test_predictor_crops_the_brain_with_the_one_margin(tiny_model_file):
    """Prediction's brain box is preprocessing's DEFAULT_MARGIN, the conversion's default: no margin keyword."""
    import inspect

    from brats_keras import convert, preprocessing

    assert "margin" not in inspect.signature(Predictor).parameters
    assert inspect.signature(preprocessing.brain_crop_box).parameters["margin"].default == preprocessing.DEFAULT_MARGIN
    assert inspect.signature(convert.convert_folder).parameters["margin"].default == preprocessing.DEFAULT_MARGIN
    with pytest.raises(TypeError):
        Predictor(tiny_model_file, margin=4)


def test_predictor_takes_one_post_processing_value_and_the_four_flags_still_work(tiny_model_file):
    """``postprocess={...}`` (the stored form) is the one value; the four keywords still give the same choice,
    with a DeprecationWarning naming the dict to pass; a dict or False given beside them wins."""
    from brats_keras.inference import postprocessing_spec

    choice = {"min_component": 5, "keep_largest": 1, "et_threshold": 7}
    one = Predictor(tiny_model_file, postprocess=choice)
    assert one.post == postprocessing_spec(choice)
    with pytest.warns(DeprecationWarning, match=r"postprocess=\{'min_component': \.\.\., 'keep_largest'"):
        old = Predictor(tiny_model_file, min_component=5, keep_largest=1, et_threshold=7)
    assert old.post == one.post
    with pytest.warns(DeprecationWarning):
        assert Predictor(tiny_model_file, postprocess=False, min_component=5).post == postprocessing_spec()
    with pytest.warns(DeprecationWarning):
        assert Predictor(tiny_model_file, postprocess={"et_threshold": 3}, min_component=5).post == \
            postprocessing_spec({"et_threshold": 3})


def test_the_predict_flags_become_one_post_processing_value():
    from brats_keras.cli import _postprocess_arg, build_parser

    def value(*flags):
        return _postprocess_arg(build_parser().parse_args(["predict", "--input", "i", "--output", "o", *flags]))

    assert value() is True
    assert value("--no-postprocess", "--min-component", "5") is False
    assert value("--min-component", "5", "--et-threshold", "3") == {"min_component": 5, "et_threshold": 3}


def test_a_decathlon_image_is_predicted_as_its_3d_source_and_written_in_the_decathlons_values(tiny_model_file,
                                                                                               tmp_path):
    import nibabel as nib

    from brats_keras.tasks import get_task

    src = write_small_case(tmp_path / "in3d", "c1", shape=(40, 36, 30))
    imgs = [nib.load(str(src / f"c1_{m}.nii.gz")) for m in ("flair", "t1", "t1ce", "t2")]  # the Decathlon's order
    four_d = tmp_path / "Task01" / "imagesTs" / "BRATS_001.nii.gz"
    four_d.parent.mkdir(parents=True)
    nib.save(nib.Nifti1Image(np.stack([np.asanyarray(i.dataobj) for i in imgs], -1), imgs[0].affine), str(four_d))
    p = Predictor(tiny_model_file, batch_size=2)
    p.post["et_threshold"] = 0
    # region probabilities from the z-scored channels flair, t1, t1ce, t2 themselves: the labels written depend on
    # every channel being read as its modality
    p.predict_batch = lambda b: np.stack([b[..., 0] > 0, b[..., 2] > 0.3, b[..., 3] > 0.8], -1).astype(np.float32)
    predict_folder(src.parent, tmp_path / "o3d", model=p, progress=False)
    res = predict_folder(four_d, tmp_path / "o4d", model=p, progress=False)  # one image file as the input
    assert list(res["ok"]) == ["BRATS_001"]
    a, b = nib.load(str(tmp_path / "o3d" / "c1.nii.gz")), nib.load(str(tmp_path / "o4d" / "BRATS_001.nii.gz"))
    assert b.shape == a.shape == imgs[0].shape and np.allclose(b.affine, imgs[0].affine)
    labels_3d, labels_msd = np.asanyarray(a.dataobj), np.asanyarray(b.dataobj)
    assert set(np.unique(labels_3d)) == {0, 1, 2, 4}
    assert np.array_equal(labels_msd, get_task("msd-task01").to_labels(get_task().to_classes(labels_3d)))


# ----------------------------------------------------------------------------- tasks: decoding and label values
#: per built-in task, the head regions' probabilities of a few voxels (in its region_order) and the label values a
#: prediction of a plain-named case writes for them (each task's own values; the tasks' cited definitions)
TASK_DECODING = {
    # WT TC ET -> background, ED 2, NCR 1, ET 4
    "glioma2021": ([[0, 0, 0], [.9, 0, 0], [.9, .9, 0], [.9, .9, .9]], [0, 2, 1, 3]),  # plain names: ET 3
    "brats2023": ([[0, 0, 0], [.9, 0, 0], [.9, .9, 0], [.9, .9, .9]], [0, 2, 1, 3]),
    # the Decathlon: 1 edema, 2 non-enhancing tumour, 3 enhancing
    "msd-task01": ([[0, 0, 0], [.9, 0, 0], [.9, .9, 0], [.9, .9, .9]], [0, 1, 2, 3]),
    # WT TC ET RC -> SNFH 2, NETC 1, ET 3, and the resection cavity 4 outside the tumour regions
    "glioma2024-post": ([[0, 0, 0, 0], [.9, 0, 0, 0], [.9, .9, 0, 0], [.9, .9, .9, 0], [0, 0, 0, .9]],
                        [0, 2, 1, 3, 4]),
    # WT TC CC ET -> ED 4, NETC 2, CC 3, ET 1
    "pediatric2024": ([[0, 0, 0, 0], [.9, 0, 0, 0], [.9, .9, 0, 0], [.9, .9, .9, 0], [.9, .9, 0, .9]],
                      [0, 4, 2, 3, 1]),
}


def task_predictor(task_name, rows):
    """A region-head Predictor of ``task_name`` without a model: voxel i along the first axis of the brain box gets
    the head-region probabilities ``rows[i % len(rows)]``."""
    from brats_keras.postprocessing import postprocessing_spec
    from brats_keras.tasks import get_task

    p = Predictor.__new__(Predictor)
    p.task = get_task(task_name)
    p.info = {"modalities": ["flair", "t1ce", "t2"], "scale": "zscore", "output": "regions"}
    p.spec = PreprocessingSpec.from_dict(p.info)
    p.post = postprocessing_spec(task=p.task)
    table = np.asarray(rows, np.float32)

    def predict_image(image, progress=False):
        out = np.zeros(image.shape[:3] + (table.shape[1],), np.float32)
        for i in range(image.shape[0]):
            out[i] = table[i % len(table)]
        return out

    p.predict_image = predict_image
    return p


def written_rows(path, case_dir, n):
    """The label value written at each of the first ``n`` slabs of the case's brain box, and all values written."""
    labels = bio.load_nifti(path)[0]
    vols, _, _ = bio.load_modalities(bio.find_cases(case_dir)[0], ["flair", "t1ce", "t2"])
    (a, _), (b0, b1), (c0, c1) = brain_crop_box(vols)
    return [int(np.unique(labels[a + i, b0:b1, c0:c1]).item()) for i in range(n)], set(np.unique(labels).tolist())


@pytest.mark.parametrize("task_name", list(TASK_DECODING))
def test_a_region_head_is_decoded_and_written_in_its_tasks_label_values(tmp_path, task_name):
    rows, expected = TASK_DECODING[task_name]
    src = tmp_path / "in"
    case_dir = write_small_case(src, "case", shape=(16, 18, 14), layout="plain")
    res = predict_folder(src, tmp_path / "out", model=task_predictor(task_name, rows), progress=False)
    got, values = written_rows(tmp_path / "out" / "case.nii.gz", case_dir, len(rows))
    assert got == expected and values == set(expected)
    own = task_name if task_name != "glioma2021" else "brats2023"  # a plain-named case of the default task: ET 3
    assert res["task"] == task_name and res["labels"] == {"case": own}


def test_a_glioma2021_model_writes_each_cases_own_values_and_labels_names_a_task(tmp_path):
    rows, _ = TASK_DECODING["glioma2021"]
    src = tmp_path / "in"
    old = write_small_case(src, "Brats18_A_1", shape=(16, 18, 14), layout="2021")
    new = write_small_case(src, "BraTS-GLI-00001-000", shape=(16, 18, 14), layout="2023")
    model = task_predictor("glioma2021", rows)
    res = predict_folder(src, tmp_path / "out", model=model, progress=False)
    assert res["labels"] == {"Brats18_A_1": "glioma2021", "BraTS-GLI-00001-000": "brats2023"}
    assert written_rows(tmp_path / "out" / "Brats18_A_1.nii.gz", old, 4)[0] == [0, 2, 1, 4]
    assert written_rows(tmp_path / "out" / "BraTS-GLI-00001-000.nii.gz", new, 4)[0] == [0, 2, 1, 3]  # ET 3
    # --labels: a task of the model's classes (2021 / 2023 are aliases)
    for labels, et in (("2021", 4), ("glioma2021", 4), ("2023", 3), ("msd-task01", 3)):
        predict_folder(src, tmp_path / labels, model=model, labels=labels, progress=False)
        assert written_rows(tmp_path / labels / "BraTS-GLI-00001-000.nii.gz", new, 4)[0][3] == et
    assert written_rows(tmp_path / "msd-task01" / "Brats18_A_1.nii.gz", old, 4)[0] == [0, 1, 2, 3]


@pytest.mark.parametrize("labels,message", [
    ("pediatric2024", "--labels: pediatric2024 has other classes than the model's task glioma2021: use glioma2021, "
                      "brats2023, msd-task01"),
    ("2022", "--labels: unknown task '2022': use one of {built_in} or a task JSON file (or 2021, 2023)"),
])
def test_labels_of_another_task_are_refused_before_any_folder_is_made(tmp_path, labels, message):
    from brats_keras.tasks import TASKS

    message = message.format(built_in=", ".join(TASKS))
    src = tmp_path / "in"
    write_small_case(src, "case", shape=(16, 18, 14))
    with pytest.raises(bio.BratsInputError) as err:
        predict_folder(src, tmp_path / "out", model=task_predictor("glioma2021", [[0, 0, 0]]), labels=labels,
                       progress=False)
    assert str(err.value) == message and not (tmp_path / "out").exists()


def test_the_predictors_task_is_the_one_its_model_records(tiny_model_file):
    """A model without a task record is of the default task; a record names the task decoded and written; one
    whose head does not fit its task, or an unknown task, is refused naming it."""
    assert Predictor(tiny_model_file).task.name == "glioma2021"
    assert Predictor(tiny_model_file, info={"task": "brats2023"}).task.name == "brats2023"
    with pytest.raises(bio.BratsInputError, match="glioma2024-post"):  # 3 region outputs, the task has 4
        Predictor(tiny_model_file, info={"task": "glioma2024-post"})
    with pytest.raises(bio.BratsInputError, match="unknown task 'nope'"):
        Predictor(tiny_model_file, info={"task": "nope"})


# ----------------------------------------------------------------------------- slice models (unet2d)
SLICE_INFO = {"modalities": ["flair", "t1", "t1ce", "t2"], "scale": "zscore", "output": "regions",
              "patch_size": [32, 32, 1], "downsample": 1, "crop": "brain", "model": "unet2d"}


def tiny_slice_model(seed=5):
    import keras

    from brats_keras.models import unet2d

    keras.utils.set_random_seed(seed)
    return unet2d(in_channels=4, base_filters=4, depth=2, norm="batch", output="regions")


@pytest.fixture(scope="module")
def slice_model_file(tmp_path_factory):
    """An untrained tiny unet2d saved with brats-keras info: 1 mm, 32 x 32 axial slices."""
    from brats_keras.checkpoint import save_model

    return save_model(tiny_slice_model(), tmp_path_factory.mktemp("slice") / "unet2d.keras", SLICE_INFO)


def slices_by_hand(model, image, flips=()):
    """``model`` on every axial slice of ``image`` ``(D, H, W, C)`` (array axis 2), mirrored along ``flips``
    (in-plane axes) and back: the probabilities ``(D, H, W, n_out)``."""
    stack = np.flip(np.moveaxis(image, 2, 0), [a + 1 for a in flips])  # (W, D, H, C): one slice per row
    out = np.flip(np.asarray(model.predict_on_batch(np.ascontiguousarray(stack))), [a + 1 for a in flips])
    return np.moveaxis(out, 0, 2)


def test_predictor_segments_a_whole_case_slice_by_slice(slice_model_file, tmp_path):
    """Known answer: the probability volume of a whole case is the network on each axial slice of the brain box
    (padded to the 32 x 32 window), put back in the case's geometry."""
    from brats_keras.checkpoint import load_model
    from brats_keras.preprocessing import box_slices, stack_scaled

    case = bio.find_cases(write_small_case(tmp_path, "s0", shape=(24, 28, 20)))[0]
    predictor = Predictor(slice_model_file)
    assert predictor.windows == {True: (32, 32, 1)} and predictor.patch == (32, 32, 1)
    pred = predictor.predict_case(case, return_probs=True)
    vols, _, _ = bio.load_modalities(case, SLICE_INFO["modalities"])
    box = brain_crop_box(vols)
    image, _ = stack_scaled(vols, box, "zscore")
    d, h = image.shape[:2]
    padded = np.zeros((32, 32) + image.shape[2:], np.float32)
    padded[:d, :h] = image
    expected = slices_by_hand(load_model(slice_model_file)[0], padded)[:d, :h]
    assert pred["probs"].shape == vols[0].shape + (3,)
    np.testing.assert_allclose(pred["probs"][box_slices(box)], expected, atol=1e-5)
    assert pred["classes"].shape == vols[0].shape


def test_slice_model_tta_averages_the_four_in_plane_mirrors():
    """Mirroring along the axial axis changes nothing for a 1-voxel-thick window: TTA is the mean of 4 passes."""
    model = tiny_slice_model()
    image = np.random.default_rng(2).normal(size=(32, 32, 5, 4)).astype(np.float32)
    got = Predictor(model, info=SLICE_INFO, tta=True).predict_image(image)
    expected = np.mean([slices_by_hand(model, image, f) for f in [(), (0,), (1,), (0, 1)]], axis=0)
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_an_ensemble_of_a_slice_and_a_volume_model_averages_their_own_predictions():
    """A 2D and a 3D model share an ensemble: each kind slides its own windows (16 x 16 slices, 16^3 windows) and
    the probability volumes of the two are averaged, in either order."""
    from brats_keras.models import unet3d

    flat, volume = tiny_slice_model(), unet3d(in_channels=4, base_filters=4, depth=2, norm="none", output="regions")
    info = {**SLICE_INFO, "patch_size": 16}
    image = np.random.default_rng(3).normal(size=(20, 24, 12, 4)).astype(np.float32)
    alone = [Predictor(m, info=info).predict_image(image) for m in (flat, volume)]
    both = Predictor([flat, volume], info=info)
    assert both.windows == {True: (16, 16, 1), False: 16}
    for predictor in (both, Predictor([volume, flat], info=info)):
        np.testing.assert_allclose(predictor.predict_image(image), (alone[0] + alone[1]) / 2, atol=1e-6)
