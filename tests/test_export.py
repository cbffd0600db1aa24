"""Exports for deployment (brats_keras.export, ``brats-keras export``): the shipped model exported as a
TensorFlow SavedModel and as ONNX gives the probabilities of the ``.keras`` model, to 1e-3, on a window
of a real case; each is read back by its own runtime (tf.saved_model.load, keras.layers.TFSMLayer,
onnxruntime), ``predict --model DIR`` segments a real case with it, and the errors are one line."""
from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np
import pytest

from brats_keras import io as bio
from brats_keras.checkpoint import read_info
from brats_keras.cli import main as cli_main
from brats_keras.export import INFO_FILE, ONNX_FILE, export_model, load_exported
from brats_keras.inference import Predictor
from brats_keras.checkpoint import load_pretrained
from brats_keras.preprocessing import brain_crop_box, downsample_image, stack_scaled
from brats_keras.pretrained import pretrained_path
from brats_keras.spec import PreprocessingSpec

#: the shipped model load_pretrained() gives: model.keras, or fold 0 of the ensemble that replaces it
SHIPPED = pretrained_path()
onnxruntime = pytest.importorskip("onnxruntime")  # requirements.txt installs it; brats-keras runs without it


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    root = tmp_path_factory.mktemp("exports")
    return {fmt: export_model(SHIPPED, root / fmt, format=fmt) for fmt in ("savedmodel", "onnx")}


@pytest.fixture(scope="module")
def real_case(real_dir):
    return bio.find_cases(real_dir)[0]


@pytest.fixture(scope="module")
def window(real_case):
    """The central 64^3 window of a real case, preprocessed as the shipped model was trained (1, 64, 64, 64, 4)."""
    info = read_info(SHIPPED)
    vols, _, _ = bio.load_modalities(real_case, info["modalities"])
    image, _ = stack_scaled(vols, brain_crop_box(vols, margin=4), info["scale"])
    image = downsample_image(image, info["downsample"])
    c = [max(0, s // 2 - 32) for s in image.shape[:3]]
    win = image[c[0]:c[0] + 64, c[1]:c[1] + 64, c[2]:c[2] + 64]
    assert win.shape == (64, 64, 64, 4)
    return np.ascontiguousarray(win[None], dtype=np.float32)


@pytest.fixture(scope="module")
def expected(window):
    probs = keras.ops.convert_to_numpy(load_pretrained()(window, training=False))
    assert probs.shape == (1, 64, 64, 64, 3) and probs.max() > 0.5  # the window holds tumor
    return probs


def test_export_folder_holds_the_model_and_its_preprocessing(exports):
    info = read_info(SHIPPED)
    for fmt, folder in exports.items():
        spec = json.loads((folder / INFO_FILE).read_text())
        assert {k: spec[k] for k in info} == info  # modalities, scale, downsample, output, patch size ...
        assert spec["dtype"] == "float16" and spec["margin"] == 4  # the whole spec, its defaults written out
        assert PreprocessingSpec.from_dict(spec) == PreprocessingSpec.from_dict(info)
        assert spec["export"]["format"] == fmt
        assert spec["export"]["in_channels"] == 4 and spec["export"]["n_out"] == 3
        assert spec["task"]["name"] == "glioma2021"  # the shipped files record none: the default task
    assert (exports["savedmodel"] / "saved_model.pb").is_file()
    assert (exports["onnx"] / ONNX_FILE).is_file()
    assert not list(exports["onnx"].parent.glob(".*export*"))  # no temporary folder left


def test_savedmodel_gives_the_keras_probabilities(exports, window, expected):
    import tensorflow as tf

    loaded = tf.saved_model.load(str(exports["savedmodel"]))  # held: its variables die with it
    served = loaded.serve(window).numpy()
    np.testing.assert_allclose(served, expected, atol=1e-3)
    layer = keras.layers.TFSMLayer(str(exports["savedmodel"]), call_endpoint="serve")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(window)), expected, atol=1e-3)


def test_onnx_gives_the_keras_probabilities(exports, window, expected):
    session = onnxruntime.InferenceSession(str(exports["onnx"] / ONNX_FILE), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].name == "image"
    out = session.run(None, {"image": window})[0]
    np.testing.assert_allclose(out, expected, atol=1e-3)
    # any size the U-Net accepts (multiples of 16), any batch: the spatial axes are not fixed
    other = np.concatenate([window[:, :32, :48], window[:, 32:, 16:]])
    assert session.run(None, {"image": other})[0].shape == (2, 32, 48, 64, 3)


@pytest.mark.parametrize("fmt", ["savedmodel", "onnx"])
def test_predictor_on_an_export_segments_a_real_case_as_the_keras_model(exports, real_case, fmt):
    keras_pred = Predictor(SHIPPED, postprocess=False).predict_case(real_case, return_probs=True)
    predictor = Predictor(str(exports[fmt]), postprocess=False, trust_export=True)
    info = read_info(SHIPPED)
    assert {k: predictor.info[k] for k in info} == info and predictor.spec == PreprocessingSpec.from_dict(info)
    out = predictor.predict_case(real_case, return_probs=True)
    np.testing.assert_allclose(out["probs"], keras_pred["probs"], atol=1e-3)
    assert (out["classes"] != keras_pred["classes"]).mean() < 1e-5


def test_cli_export_and_predict_with_the_folder(tmp_path, real_dir, real_case, capsys):
    out = tmp_path / "deploy"
    assert cli_main(["export", "--model", str(SHIPPED), "--format", "onnx", "--out", str(out)]) == 0
    assert "exported" in capsys.readouterr().out
    # the folder is not written over without --overwrite
    assert cli_main(["export", "--model", str(SHIPPED), "--format", "onnx", "--out", str(out)]) == 2
    assert "exists and is not an empty folder (use --overwrite" in capsys.readouterr().err
    preds = tmp_path / "preds"
    assert cli_main(["predict", "--model", str(out), "--input", str(real_case.folder), "--output", str(preds),
                     "--quiet"]) == 0
    assert (preds / f"{real_case.case_id}.nii.gz").is_file()


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--model", "missing.keras", "--format", "onnx"], "missing.keras: model file not found"),
        (["--format", "tflite"], "invalid choice: 'tflite'"),
    ],
)
def test_cli_export_errors(tmp_path, capsys, argv, message):
    try:
        rc = cli_main(["export", "--out", str(tmp_path / "x"), *argv])
    except SystemExit as exc:  # argparse refuses an unknown format itself
        rc = exc.code
    assert rc == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_onnx_without_its_converter_is_one_line(tmp_path, monkeypatch):
    import brats_keras.export as ex

    monkeypatch.setattr(ex, "_importable", lambda name: name != "tf2onnx")
    with pytest.raises(ex.BratsInputError, match=r"--format onnx needs tf2onnx \(pip install tf2onnx=="):
        export_model(SHIPPED, tmp_path / "x", format="onnx")


def test_a_mixed_precision_model_exports_in_float32(tmp_path):
    from brats_keras.models import unet3d

    info = {"modalities": ["flair", "t1ce"], "scale": "zscore", "output": "regions"}
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = unet3d(in_channels=2, base_filters=4, depth=2, output="regions")
    finally:
        keras.mixed_precision.set_global_policy("float32")
    x = np.random.default_rng(0).normal(size=(1, 16, 16, 16, 2)).astype("float32")
    folder = export_model(model, tmp_path / "m", format="onnx", info=info)
    exported, read = load_exported(folder)
    assert read["modalities"] == ["flair", "t1ce"] and exported.outputs[0].shape[-1] == 3
    float32 = unet3d(in_channels=2, base_filters=4, depth=2, output="regions")
    float32.set_weights(model.get_weights())
    np.testing.assert_allclose(exported.predict_on_batch(x), keras.ops.convert_to_numpy(float32(x)), atol=1e-5)


def test_a_folder_without_an_export_description_is_one_line(tmp_path):
    (tmp_path / INFO_FILE).write_text("{}")
    with pytest.raises(ValueError, match="not a brats-keras export description"):
        load_exported(tmp_path)


@pytest.mark.parametrize("fmt", ["savedmodel", "onnx"])
def test_segresnet_with_its_upsampling_layer_exports(tmp_path, fmt):
    from brats_keras.models import segresnet

    model = segresnet(in_channels=2, base_filters=4, depth=2, output="regions")
    info = {"modalities": ["flair", "t2"], "scale": "zscore", "output": "regions", "model": "segresnet"}
    exported, _ = load_exported(export_model(model, tmp_path / fmt, format=fmt, info=info), trust=True)
    x = np.random.default_rng(1).normal(size=(2, 16, 24, 8, 2)).astype("float32")  # not cubes: dynamic shapes
    np.testing.assert_allclose(exported.predict_on_batch(x), keras.ops.convert_to_numpy(model(x)), atol=1e-5)


@pytest.mark.parametrize("fmt", ["savedmodel", "onnx"])
def test_unet2d_exports_its_slice_input_and_predicts_volumes_as_the_keras_file_does(tmp_path, fmt):
    from brats_keras.models import unet2d

    model = unet2d(in_channels=2, base_filters=4, depth=2, output="regions")
    info = {"modalities": ["flair", "t2"], "scale": "zscore", "output": "regions", "model": "unet2d",
            "patch_size": [16, 16, 1]}
    folder = export_model(model, tmp_path / fmt, format=fmt, info=info)
    exported, _ = load_exported(folder, trust=True)
    assert exported.info["export"]["spatial_dims"] == 2 and exported.inputs[0].shape == (None, None, None, 2)
    image = np.random.default_rng(2).normal(size=(16, 24, 5, 2)).astype("float32")
    np.testing.assert_allclose(Predictor(folder, trust_export=True).predict_image(image),
                               Predictor(model, info=info).predict_image(image), atol=1e-5)


# ----------------------------------------------------------------------------- reliability (issue 29)
TINY_INFO = {"modalities": ["flair", "t2"], "scale": "zscore", "output": "regions", "patch_size": 16}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny U-Net saved as ``src/tiny.keras``, its SavedModel and ONNX exports, and a small case for it."""
    from brats_keras.checkpoint import save_model
    from brats_keras.models import unet3d

    from conftest import write_small_case

    root = tmp_path_factory.mktemp("tiny")
    model = unet3d(in_channels=2, base_filters=4, depth=2, output="regions")
    found = {"model": save_model(model, root / "src" / "tiny.keras", TINY_INFO, include_optimizer=False)}
    for fmt in ("savedmodel", "onnx"):
        found[fmt] = export_model(found["model"], root / fmt, format=fmt)
    found["case"] = write_small_case(root / "cases", "c0", shape=(24, 28, 20))
    return found


def _files(folder):
    """Every file below ``folder`` (hidden ones too) -> its bytes; folders -> None."""
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else None for p in sorted(folder.rglob("*"))}


def _one_error_line(capsys, *parts):
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "FutureWarning" not in line and "np.object" not in line]
    assert "Traceback" not in err and len(lines) == 1 and lines[0].startswith("error: "), err
    for part in parts:
        assert part in lines[0], lines[0]
    return lines[0]


def _user_folder(root):
    folder = root / "mine"
    (folder / "notes").mkdir(parents=True)
    (folder / "notes" / "a.txt").write_text("keep me")
    (folder / "data.npy").write_bytes(b"\x93NUMPY")
    return folder


@pytest.mark.parametrize("where", ["cwd", "parent of cwd", "home", "source folder", "source file", "user folder",
                                   "export with a user file", "a file"])
def test_overwrite_replaces_nothing_but_an_earlier_export(tiny, tmp_path, monkeypatch, capsys, where):
    """``export --overwrite`` with an --out that is not an earlier export: one line, exit 2, every file kept."""
    import shutil

    model = tmp_path / "run" / "tiny.keras"
    model.parent.mkdir()
    shutil.copyfile(tiny["model"], model)
    mine = _user_folder(tmp_path)
    shutil.copytree(tiny["onnx"], tmp_path / "deploy")
    (tmp_path / "deploy" / "my_results.csv").write_text("case,dice\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "elsewhere"))
    if where in ("cwd", "parent of cwd"):
        monkeypatch.chdir(mine / "notes")
    if where == "home":
        monkeypatch.setenv("HOME", str(mine))
    out, message = {
        "cwd": (".", ".: is the working directory"),
        "parent of cwd": (str(mine), f"{mine}: holds the working directory"),
        "home": (str(mine), f"{mine}: is the home folder"),
        "source folder": (str(model.parent), f"{model.parent}: holds the model file {model}"),
        "source file": (str(model), f"{model}: is the model file {model}"),
        "user folder": ("mine/notes/../../mine", "mine/notes/../../mine: not an export (no brats_keras.json with an 'export' record)"),
        "export with a user file": ("deploy", "deploy: holds files an export does not write (my_results.csv)"),
        "a file": ("mine/data.npy", "mine/data.npy: exists and is not a folder"),
    }[where]
    before = _files(tmp_path)
    assert cli_main(["export", "--model", str(model), "--format", "onnx", "--out", out, "--overwrite"]) == 2
    _one_error_line(capsys, f"error: {message}")
    assert _files(tmp_path) == before  # nothing deleted, nothing half-written left beside it


@pytest.mark.parametrize("fmt", ["savedmodel", "onnx"])
def test_overwrite_replaces_an_earlier_export(tiny, tmp_path, capsys, fmt):
    import shutil

    other = "onnx" if fmt == "savedmodel" else "savedmodel"
    shutil.copytree(tiny[other], tmp_path / "deploy")
    assert cli_main(["export", "--model", str(tiny["model"]), "--format", fmt, "--out", str(tmp_path / "deploy"),
                     "--overwrite"]) == 0
    assert sorted(_files(tmp_path / "deploy")) == sorted(_files(tiny[fmt]))  # the new format's files, no old one
    assert [p.name for p in tmp_path.iterdir()] == ["deploy"]  # no temporary or old folder left beside it
    info = json.loads((tmp_path / "deploy" / INFO_FILE).read_text())
    assert info["export"]["format"] == fmt
    assert sorted(info["export"]["files"]) == sorted(p.name for p in (tmp_path / "deploy").iterdir())


@pytest.mark.parametrize("error", ["OSError", "tf.errors"])
def test_a_failed_export_keeps_the_earlier_one_and_names_out(tiny, tmp_path, monkeypatch, capsys, error):
    """A write that fails half-way (a full disk) is one line naming --out, not the temporary folder; the
    earlier export is kept byte for byte, and a folder made for the export is removed again."""
    import errno
    import shutil

    import tensorflow as tf

    def full_disk(self, filepath, *args, **kwargs):
        folder = Path(filepath)
        folder.mkdir(exist_ok=True)
        (folder / "saved_model.pb").write_bytes(b"half")
        if error == "OSError":
            raise OSError(errno.ENOSPC, "No space left on device", str(folder / "saved_model.pb"))
        raise tf.errors.ResourceExhaustedError(None, None, f"{folder}/variables/variables.data; No space left on device")

    monkeypatch.setattr(keras.Model, "export", full_disk)
    shutil.copytree(tiny["savedmodel"], tmp_path / "deploy")
    before = _files(tmp_path)
    out = tmp_path / "deploy"
    assert cli_main(["export", "--model", str(tiny["model"]), "--out", str(out), "--overwrite"]) == 2
    line = _one_error_line(capsys, f"error: {out}: cannot write the export: ")
    assert ".export" not in line and f"{out}/" in line  # the file inside --out, not the temporary folder
    assert "no space left on device" in line.lower()
    assert _files(tmp_path) == before
    new = tmp_path / "new" / "sub" / "deploy"
    assert cli_main(["export", "--model", str(tiny["model"]), "--out", str(new)]) == 2
    _one_error_line(capsys, f"error: {new}: cannot write the export: ")
    assert _files(tmp_path) == before  # new/sub/ made for the export and removed again


@pytest.mark.parametrize("fmt", ["savedmodel", "onnx"])
def test_a_read_only_output_is_refused_before_the_conversion(tiny, tmp_path, monkeypatch, capsys, fmt):
    """Tests run as root, where chmod stops no write: the file system's EROFS is simulated where the
    export's temporary folder is made; the model is never converted."""
    import errno

    import brats_keras.export as ex

    out = tmp_path / "ro" / "deploy"
    mkdtemp = ex.tempfile.mkdtemp

    def read_only(*args, dir=None, **kwargs):  # Keras itself makes temporary folders elsewhere
        if dir is not None and Path(dir) == out.parent:
            raise OSError(errno.EROFS, "Read-only file system", str(dir))
        return mkdtemp(*args, dir=dir, **kwargs)

    def never(*args, **kwargs):
        raise AssertionError("the conversion started")

    monkeypatch.setattr(ex.tempfile, "mkdtemp", read_only)
    monkeypatch.setattr(keras.Model, "export", never)
    assert cli_main(["export", "--model", str(tiny["model"]), "--format", fmt, "--out", str(out)]) == 2
    _one_error_line(capsys, f"error: {out}: cannot write the output folder: read-only file system")
    assert list(tmp_path.iterdir()) == []


HOSTILE_OUTPUT = "written-by-the-export.txt"


def _hostile_savedmodel(tiny, folder, target):
    """A SavedModel laid out like an export (the tiny export's brats_keras.json) whose ``serve`` writes
    ``target`` and returns zeros of the right shape."""
    import shutil

    import tensorflow as tf

    class Hostile(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, None, None, None, 2], tf.float32)])
        def serve(self, x):
            tf.io.write_file(str(target), "a SavedModel is a program")
            return tf.zeros(tf.concat([tf.shape(x)[:4], [3]], 0))

    tf.saved_model.save(Hostile(), str(folder))
    shutil.copyfile(tiny["savedmodel"] / INFO_FILE, folder / INFO_FILE)
    return folder


def test_a_savedmodel_export_runs_only_when_trusted(tiny, tmp_path, capsys):
    target = tmp_path / HOSTILE_OUTPUT
    hostile = _hostile_savedmodel(tiny, tmp_path / "hostile", target)
    argv = ["predict", "--model", str(hostile), "--input", str(tiny["case"]), "--quiet"]
    assert cli_main([*argv, "--output", str(tmp_path / "preds")]) == 2
    _one_error_line(capsys, f"error: {hostile}: a SavedModel export is a TensorFlow program", "--trust-export")
    assert not target.exists() and not (tmp_path / "preds").exists()
    with pytest.raises(bio.BratsInputError, match="trust_export=True"):
        Predictor(hostile)
    assert not target.exists()
    # trusted, it runs, and what it does is what was trusted
    assert cli_main([*argv, "--output", str(tmp_path / "preds"), "--trust-export"]) == 0
    assert target.read_text() == "a SavedModel is a program"
    assert (tmp_path / "preds" / "c0.nii.gz").is_file()


def test_a_real_savedmodel_and_an_onnx_export_predict_alike(tiny, tmp_path, capsys):
    """The ONNX export runs without --trust-export; the SavedModel with it, to the same labels."""
    import nibabel as nib

    labels = {}
    for fmt, flags in (("onnx", []), ("savedmodel", ["--trust-export"])):
        out = tmp_path / fmt
        assert cli_main(["predict", "--model", str(tiny[fmt]), "--input", str(tiny["case"]), "--output", str(out),
                         "--quiet", *flags]) == 0
        labels[fmt] = np.asarray(nib.load(out / "c0.nii.gz").dataobj)
    np.testing.assert_array_equal(labels["onnx"], labels["savedmodel"])


def _onnx_copy(tiny, folder, change):
    import shutil

    import onnx

    shutil.copytree(tiny["onnx"], folder)
    proto = onnx.load(str(folder / ONNX_FILE))
    change(proto, onnx)
    onnx.save(proto, str(folder / ONNX_FILE))
    return folder


def _custom_domain(proto, onnx):
    proto.graph.node[0].domain = "evil.custom"
    proto.opset_import.append(onnx.helper.make_opsetid("evil.custom", 1))


def _external_weights(proto, onnx):
    from onnx.external_data_helper import set_external_data

    weight = proto.graph.initializer[0]
    set_external_data(weight, location="../../../etc/hostname")
    weight.ClearField("raw_data")
    weight.data_location = onnx.TensorProto.EXTERNAL


@pytest.mark.parametrize("change,message", [
    (_custom_domain, "uses operators of the custom domain 'evil.custom'"),
    (_external_weights, "keeps weights in external files"),
])
def test_an_onnx_export_outside_onnx_runtime_s_own_operators_is_refused(tiny, tmp_path, capsys, change, message):
    folder = _onnx_copy(tiny, tmp_path / "deploy", change)
    with pytest.raises(bio.BratsInputError, match=message):
        load_exported(folder)
    assert cli_main(["predict", "--model", str(folder), "--input", str(tiny["case"]),
                     "--output", str(tmp_path / "preds"), "--quiet"]) == 2
    _one_error_line(capsys, f"{folder / ONNX_FILE}: {message}")


def test_onnx_runtime_s_own_refusal_is_one_line(tiny, tmp_path, monkeypatch):
    """Without the onnx package the check is ONNX Runtime's: its error is one line naming the file."""
    import brats_keras.export as ex

    folder = _onnx_copy(tiny, tmp_path / "deploy", _custom_domain)
    monkeypatch.setattr(ex, "check_onnx", lambda file: None)
    with pytest.raises(bio.BratsInputError, match=rf"{folder / ONNX_FILE}: ONNX Runtime cannot load it: .*evil"):
        load_exported(folder)


@pytest.mark.parametrize("fmt", ["savedmodel", "onnx"])
def test_an_export_without_its_brats_keras_json_says_so(tiny, tmp_path, capsys, fmt):
    import shutil

    folder = tmp_path / "deploy"
    shutil.copytree(tiny[fmt], folder)
    (folder / INFO_FILE).unlink()
    assert cli_main(["predict", "--model", str(folder), "--input", str(tiny["case"]),
                     "--output", str(tmp_path / "preds"), "--quiet", "--trust-export"]) == 2
    _one_error_line(capsys, f"{folder}: the export's {INFO_FILE} is missing (the folder holds ")
