"""Exports for deployment (brats_keras.export, ``brats-keras export``): the shipped model exported as a
TensorFlow SavedModel and as ONNX gives the probabilities of the ``.keras`` model, to 1e-3, on a window
of a real case; each is read back by its own runtime (tf.saved_model.load, keras.layers.TFSMLayer,
onnxruntime), ``predict --model DIR`` segments a real case with it, and the errors are one line."""
from __future__ import annotations

import json

import keras
import numpy as np
import pytest

from brats_keras import io as bio
from brats_keras.checkpoint import read_info
from brats_keras.cli import main as cli_main
from brats_keras.export import INFO_FILE, ONNX_FILE, export_model, load_exported
from brats_keras.inference import Predictor
from brats_keras.models import load_pretrained
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
    predictor = Predictor(str(exports[fmt]), postprocess=False)
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
    exported, _ = load_exported(export_model(model, tmp_path / fmt, format=fmt, info=info))
    x = np.random.default_rng(1).normal(size=(2, 16, 24, 8, 2)).astype("float32")  # not cubes: dynamic shapes
    np.testing.assert_allclose(exported.predict_on_batch(x), keras.ops.convert_to_numpy(model(x)), atol=1e-5)
