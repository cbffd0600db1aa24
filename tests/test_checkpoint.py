"""Model files with weights stored in float16 (``save_model(weights_dtype="float16")``, ``store_float16``)."""
from __future__ import annotations

import zipfile

import numpy as np
import pytest

import brats_keras  # noqa: F401  (before keras)
import keras

from brats_keras import io as bio
from brats_keras.checkpoint import WEIGHTS_MEMBER, load_model, read_info, read_state, save_model, store_float16
from brats_keras.io import BratsInputError
from brats_keras.models import build_model

from conftest import REAL, require_shared

INFO = {"format": 1, "modalities": ["flair", "t1ce"], "scale": "zscore", "crop": "brain", "downsample": 2,
        "output": "regions", "patch_size": 16}


def tiny(norm="batch"):
    keras.utils.set_random_seed(3)
    return build_model("unet3d", in_channels=2, output="regions", base_filters=4, depth=2, norm=norm)


def x_batch(seed=0):
    return np.random.default_rng(seed).standard_normal((2, 16, 16, 16, 2)).astype(np.float32)


def stored_dtypes(path) -> set:
    """The dtypes of the float arrays in a model file's weights member."""
    import io

    import h5py

    found = set()
    with zipfile.ZipFile(path) as zf, h5py.File(io.BytesIO(zf.read(WEIGHTS_MEMBER)), "r") as h5:
        h5.visititems(lambda name, obj: found.add(str(obj.dtype))
                      if isinstance(obj, h5py.Dataset) and obj.dtype.kind == "f" else None)
    return found


def test_float16_file_loads_the_rounded_weights_into_a_float32_model(tmp_path):
    model = tiny()
    # batch-norm statistics like those of a trained network: a variance in the thousands must survive
    bn = next(layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization))
    bn.moving_variance.assign(np.full(bn.moving_variance.shape, 6074.35, np.float32))
    f32 = save_model(model, tmp_path / "m32.keras", INFO, include_optimizer=False, state={"epoch": 3})
    f16 = save_model(model, tmp_path / "m16.keras", INFO, include_optimizer=False, state={"epoch": 3},
                     weights_dtype="float16")
    loaded, info = load_model(f16, compile=False)
    assert info == INFO and read_state(f16) == {"epoch": 3}
    for original, half in zip(model.get_weights(), loaded.get_weights()):
        assert half.dtype == original.dtype == np.float32
        np.testing.assert_array_equal(half, original.astype(np.float16).astype(np.float32))
    assert any(not np.array_equal(w, w.astype(np.float16)) for w in model.get_weights())  # the rounding is real
    assert stored_dtypes(f32) == {"float32"} and stored_dtypes(f16) == {"float16"}
    x = x_batch()
    np.testing.assert_allclose(keras.ops.convert_to_numpy(loaded(x, training=False)),
                               keras.ops.convert_to_numpy(model(x, training=False)), atol=3e-3)


def test_store_float16_of_a_file_equals_saving_in_float16_and_keeps_the_members(tmp_path):
    model = tiny(norm="instance")
    f32 = save_model(model, tmp_path / "m32.keras", INFO, include_optimizer=False)
    direct = save_model(model, tmp_path / "direct.keras", INFO, include_optimizer=False, weights_dtype="float16")
    converted = store_float16(f32, tmp_path / "sub" / "conv.keras")
    a, _ = load_model(direct, compile=False)
    b, info = load_model(converted, compile=False)
    assert info == INFO
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(wa, wb)
    with zipfile.ZipFile(f32) as z32, zipfile.ZipFile(converted) as z16:
        assert sorted(z32.namelist()) == sorted(z16.namelist())
    # in place
    store_float16(f32)
    c, _ = load_model(f32, compile=False)
    for wa, wc in zip(a.get_weights(), c.get_weights()):
        np.testing.assert_array_equal(wa, wc)
    assert sorted(p.name for p in tmp_path.rglob("*")) == sorted(["m32.keras", "direct.keras", "sub", "conv.keras"])


def test_a_weight_beyond_float16_range_is_refused_naming_the_file_and_nothing_is_written(tmp_path):
    model = tiny()
    bn = next(layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization))
    bn.moving_variance.assign(np.full(bn.moving_variance.shape, 1e5, np.float32))
    f32 = save_model(model, tmp_path / "m32.keras", INFO, include_optimizer=False)
    with pytest.raises(BratsInputError, match=r"m32\.keras: weight .*moving|m32\.keras: weight .*beyond float16"):
        store_float16(f32, tmp_path / "out.keras")
    with pytest.raises(BratsInputError, match=r"m16\.keras: weight .* beyond float16's range"):
        save_model(model, tmp_path / "m16.keras", INFO, include_optimizer=False, weights_dtype="float16")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m32.keras"]


def test_store_float16_error_paths(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.keras: model file not found"):
        store_float16(tmp_path / "missing.keras")
    bad = tmp_path / "bad.keras"
    bad.write_bytes(b"not a zip")
    with pytest.raises(BratsInputError, match="bad.keras: not a Keras model file"):
        store_float16(bad, tmp_path / "out.keras")
    legacy = tmp_path / "legacy.keras"
    with zipfile.ZipFile(legacy, "w") as zf:
        zf.writestr("config.json", "{}")
    with pytest.raises(BratsInputError, match=f"legacy.keras: no {WEIGHTS_MEMBER}"):
        store_float16(legacy, tmp_path / "out.keras")
    with pytest.raises(ValueError, match="weights_dtype must be"):
        save_model(tiny(), tmp_path / "x.keras", weights_dtype="bfloat16")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.keras", "legacy.keras"]


def test_the_shipped_model_scores_a_real_case_as_its_card_says_also_in_float16(tmp_path):
    """The file the model card says scored Brats18_TCIA02_606_1 scores it again. model.keras (float32): exactly the
    pinned 0.902 / 0.820 / 0.558, and stored in float16 within 2e-3 of that. A fold ensemble's files are float16
    already: the fold that held the case out, against the card's float32 out-of-fold score, is the float16
    comparison (and storing a float16 file in float16 again changes no weight)."""
    from brats_keras.evaluation import score_case
    from brats_keras.inference import Predictor
    from brats_keras.pretrained import card_case

    root = require_shared(REAL)
    case = next(c for c in bio.find_cases(root) if c.case_id == "Brats18_TCIA02_606_1")
    ref = card_case(case.case_id)
    shipped = ref["model"]
    truth = bio.load_classes(case.seg)

    def dice_of(paths):
        pred = Predictor(paths, tta=ref["tta"], overlap=ref["overlap"]).predict_case(case)
        return {r: s["dice"] for r, s in score_case(pred["classes"], truth, report=False, distances=False).items()}

    # the case's fold files (one per recipe of the ensemble), or model.keras
    dice = dice_of(ref["models"])
    assert dice == pytest.approx({r: ref["scores"][r]["dice"] for r in ("WT", "TC", "ET")}, abs=1e-3)
    if ref["fold"] is not None:  # an ensemble's files: stored small already, against the float32 table above
        from brats_keras.checkpoint import is_int8

        for path in ref["models"]:
            if is_int8(path):  # int8 kernels: not converted again
                with pytest.raises(BratsInputError, match="already stored in int8"):
                    store_float16(path, tmp_path / "again.keras")
                continue
            assert stored_dtypes(path) == {"float16"}  # float16: storing it in float16 again changes no weight
            a, _ = load_model(path, compile=False)
            b, _ = load_model(store_float16(path, tmp_path / "again.keras"), compile=False)
            for wa, wb in zip(a.get_weights(), b.get_weights()):
                np.testing.assert_array_equal(wa, wb)
        return
    half = store_float16(shipped, tmp_path / "shipped16.keras")
    assert ref["fold"] is None and stored_dtypes(shipped) == {"float32"}
    assert dice == pytest.approx({"WT": 0.902, "TC": 0.820, "ET": 0.558}, abs=6e-4)  # the single model's pin
    assert half.stat().st_size < 0.5 * shipped.stat().st_size
    for region, d in dice_of(half).items():
        assert abs(d - dice[region]) < 2e-3


def test_a_float16_checkpoint_keeps_the_optimizer_state_in_float32(tmp_path):
    """Adam's second moments (squared gradients, here under 1e-8) are beneath float16's range: stored as float16
    they became 0 and the first resumed steps jumped by about the learning rate. The optimizer group stays float32."""
    import io

    import h5py

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
    x = (np.random.default_rng(0).standard_normal((32, 8)) * 1e-2).astype(np.float32)
    model.fit(x, 0.1 * x[:, :1], epochs=3, verbose=0)
    velocities = [v for v in model.optimizer.variables if "velocity" in v.path]
    assert min(float(np.abs(keras.ops.convert_to_numpy(v)).min()) for v in velocities) < 1e-8  # float16 gives 0
    f16 = save_model(model, tmp_path / "m16.keras", INFO, state={"epoch": 3}, weights_dtype="float16")
    with zipfile.ZipFile(f16) as zf, h5py.File(io.BytesIO(zf.read(WEIGHTS_MEMBER)), "r") as h5:
        dtypes = {}
        h5.visititems(lambda name, obj: dtypes.__setitem__(name, str(obj.dtype))
                      if isinstance(obj, h5py.Dataset) else None)
    assert {d for n, d in dtypes.items() if n.startswith("layers/")} == {"float16"}
    assert {d for n, d in dtypes.items() if n.startswith("optimizer/")} == {"int64", "float32"}
    loaded, _ = load_model(f16)
    assert int(loaded.optimizer.iterations.numpy()) == int(model.optimizer.iterations.numpy()) == 3
    for a, b in zip(model.optimizer.variables, loaded.optimizer.variables):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(b), keras.ops.convert_to_numpy(a))
    for original, half in zip(model.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(half, original.astype(np.float16).astype(np.float32))


# ----------------------------------------------------------------------------- int8 kernels
def test_int8_file_restores_each_kernel_within_half_a_step_and_the_rest_as_float16(tmp_path):
    from brats_keras.checkpoint import INT8_MEMBER, is_int8

    model = tiny()
    kernels = [w for w in model.weights if len(w.shape) >= 2]
    kernels[0].assign(np.zeros(kernels[0].shape, np.float32))  # an all-zero kernel stays zero (no 0/0)
    f16 = save_model(model, tmp_path / "m16.keras", INFO, include_optimizer=False, weights_dtype="float16")
    i8 = save_model(model, tmp_path / "m8.keras", INFO, include_optimizer=False, state={"epoch": 2},
                    weights_dtype="int8")
    assert is_int8(i8) and not is_int8(f16) and INT8_MEMBER in zipfile.ZipFile(i8).namelist()
    loaded, info = load_model(i8, compile=False)
    assert info == INFO and read_state(i8) == {"epoch": 2}
    for original, got in zip(model.get_weights(), loaded.get_weights()):
        assert got.dtype == np.float32 and got.shape == original.shape
        if original.ndim >= 2:  # per output channel: within half of max|w| / 127 of that channel
            step = np.abs(original).reshape(-1, original.shape[-1]).max(axis=0) / 127
            assert np.all(np.abs(got - original) <= step / 2 + 1e-9)
            assert len(np.unique(got[..., -1])) <= 255  # 8-bit levels
        else:
            np.testing.assert_array_equal(got, original.astype(np.float16).astype(np.float32))
    np.testing.assert_array_equal(loaded.get_weights()[model.weights.index(kernels[0])], 0)
    x = x_batch()
    np.testing.assert_allclose(keras.ops.convert_to_numpy(loaded(x, training=False)),
                               keras.ops.convert_to_numpy(model(x, training=False)), atol=2e-2)
    assert stored_dtypes(i8) == {"float16", "float32"}  # float32: the scales only
    # plain Keras does not read the kernels where they are stored: refused, not loaded wrong
    with pytest.raises(ValueError):
        keras.saving.load_model(str(i8), compile=False)


def test_store_int8_of_a_file_equals_saving_in_int8_and_is_a_quarter_of_float32(tmp_path):
    from brats_keras.checkpoint import store_int8

    keras.utils.set_random_seed(1)
    model = build_model("unet3d", in_channels=2, output="regions", base_filters=8, depth=3)
    f32 = save_model(model, tmp_path / "m32.keras", INFO, include_optimizer=False)
    i8 = store_int8(f32, tmp_path / "m8.keras")
    direct = save_model(model, tmp_path / "direct.keras", INFO, include_optimizer=False, weights_dtype="int8")
    for a, b in zip(load_model(i8, compile=False)[0].get_weights(), load_model(direct, compile=False)[0].get_weights()):
        np.testing.assert_array_equal(a, b)
    assert read_info(i8) == INFO
    assert i8.stat().st_size < 0.35 * f32.stat().st_size
    # from a float16 file (as an ensemble ships) the kernels are quantized too: the same int8 file
    f16 = store_float16(f32, tmp_path / "m16.keras")
    from_f16 = store_int8(f16, tmp_path / "from16.keras")
    assert from_f16.stat().st_size < 0.6 * f16.stat().st_size
    for got, w in zip(load_model(from_f16, compile=False)[0].get_weights(), model.get_weights()):
        if w.ndim >= 2:  # half a step of the float16 kernel's channel, plus float16's own rounding of the source
            step = np.abs(w.astype(np.float16).astype(np.float32)).reshape(-1, w.shape[-1]).max(axis=0) / 127
            assert np.all(np.abs(got - w) <= step / 2 + np.abs(w) / 2048 + 1e-9)
    with pytest.raises(BratsInputError, match="already stored in int8"):
        store_int8(i8, tmp_path / "again.keras")
    with pytest.raises(BratsInputError, match="already stored in int8"):
        store_float16(i8, tmp_path / "again.keras")
    with pytest.raises(FileNotFoundError):
        store_int8(tmp_path / "missing.keras")
    bad = model.weights[0]
    bad.assign(np.full(bad.shape, np.nan, np.float32))
    with pytest.raises(BratsInputError, match="not finite"):
        save_model(model, tmp_path / "nan.keras", INFO, include_optimizer=False, weights_dtype="int8")
    assert not (tmp_path / "nan.keras").exists()
    with pytest.raises(ValueError, match="weights_dtype"):
        save_model(model, tmp_path / "x.keras", weights_dtype="int4")


def test_quantize_int8_known_answers_a_zero_channel_and_an_empty_kernel():
    from brats_keras.checkpoint import quantize_int8

    q, s = quantize_int8(np.array([[1.0, 0.0, -2.0], [0.5, 0.0, 1.0]], np.float32))
    np.testing.assert_allclose(s, [1 / 127, 1.0, 2 / 127], rtol=1e-7)  # a zero channel: scale 1, no 0/0
    np.testing.assert_array_equal(q, [[127, 0, -127], [64, 0, 64]])  # 63.5 rounds to the even 64
    assert q.dtype == np.int8 and s.dtype == np.float32
    q, s = quantize_int8(np.zeros((0, 3), np.float32))  # no weights: nothing to scale, no error
    assert q.shape == (0, 3) and s.tolist() == [1.0, 1.0, 1.0]


def test_an_int8_checkpoint_keeps_the_optimizer_state_in_float32(tmp_path):
    """A checkpoint saved with its optimizer in int8: the model's kernels become int8, the optimizer's moments
    (arrays of the kernels' shapes) stay float32 and come back exactly, so training resumes from them."""
    import io

    import h5py

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
    x = np.random.default_rng(0).standard_normal((32, 8)).astype(np.float32)
    model.fit(x, x[:, :1], epochs=2, verbose=0)
    i8 = save_model(model, tmp_path / "m8.keras", INFO, state={"epoch": 2}, weights_dtype="int8")
    with zipfile.ZipFile(i8) as zf, h5py.File(io.BytesIO(zf.read(WEIGHTS_MEMBER)), "r") as h5:
        dtypes = {}
        h5.visititems(lambda name, obj: dtypes.__setitem__(name, str(obj.dtype))
                      if isinstance(obj, h5py.Dataset) else None)
    assert {d for n, d in dtypes.items() if n.startswith("optimizer/")} == {"int64", "float32"}
    assert not any(n.startswith("optimizer/") and n.endswith((".int8", ".scale")) for n in dtypes)
    assert {d for n, d in dtypes.items() if n.startswith("layers/") and n.endswith(".int8")} == {"int8"}
    loaded, _ = load_model(i8)
    assert int(loaded.optimizer.iterations.numpy()) == int(model.optimizer.iterations.numpy()) > 0
    for a, b in zip(model.optimizer.variables, loaded.optimizer.variables):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(b), keras.ops.convert_to_numpy(a))
    assert np.isfinite(loaded.train_on_batch(x, x[:, :1]))


def test_int8_loading_names_the_file_given_in_one_line_and_leaves_no_temporary_copy(tmp_path, monkeypatch):
    """An int8 file loads through a float32 copy in a temporary folder: removed after a load and after a failure,
    and the one-line error names the file the user gave, never the copy."""
    import tempfile

    from brats_keras.checkpoint import _copy_archive

    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    i8 = save_model(tiny(), tmp_path / "m8.keras", INFO, include_optimizer=False, weights_dtype="int8")
    assert load_model(i8, compile=False)[1] == INFO and not list(scratch.iterdir())
    odd = tmp_path / "m8.model"  # a name Keras refuses, and names in its message
    odd.write_bytes(i8.read_bytes())
    with pytest.raises(BratsInputError) as exc:
        load_model(odd, compile=False)
    text = str(exc.value)
    assert text.startswith(f"{odd}: ") and "\n" not in text and str(scratch) not in text
    assert not list(scratch.iterdir())

    def without_scales(data):
        import io

        import h5py

        out = io.BytesIO()
        with h5py.File(io.BytesIO(data), "r") as src, h5py.File(out, "w") as dst:
            src.visititems(lambda name, obj: dst.create_dataset(name, data=obj[()])
                           if isinstance(obj, h5py.Dataset) and not name.endswith(".scale") else None)
        return out.getvalue()

    broken = tmp_path / "broken.keras"
    _copy_archive(i8, broken, {WEIGHTS_MEMBER: without_scales})
    with pytest.raises(BratsInputError, match=r"broken\.keras: not a Keras model file") as exc:
        load_model(broken, compile=False)
    assert "\n" not in str(exc.value) and str(scratch) not in str(exc.value)
    assert not list(scratch.iterdir())


def test_the_float32_copy_of_an_int8_file_is_stored_uncompressed(tmp_path):
    """The copy is read once and deleted: deflating it would take most of an int8 file's load time."""
    from brats_keras.checkpoint import dequantized_copy, is_int8

    model = tiny()
    i8 = save_model(model, tmp_path / "m8.keras", INFO, include_optimizer=False, weights_dtype="int8")
    copy = dequantized_copy(i8, tmp_path / "copy.keras")
    with zipfile.ZipFile(copy) as zf:
        assert {i.compress_type for i in zf.infolist()} == {zipfile.ZIP_STORED}
    assert not is_int8(copy) and stored_dtypes(copy) == {"float16", "float32"} and read_info(copy) == INFO
    for a, b in zip(keras.saving.load_model(str(copy), compile=False).get_weights(),
                    load_model(i8, compile=False)[0].get_weights()):
        np.testing.assert_array_equal(a, b)


# ----------------------------------------------------------------------------- files with code or unknown classes
def double(x):
    """A named function: a Lambda layer stores its module and name, and loading it would import that module."""
    return x * 2.0


def named_lambda_model(path):
    inp = keras.Input((16, 16, 16, 3))
    out = keras.layers.Lambda(double, name="doubler")(keras.layers.Conv3D(3, 1)(inp))
    keras.Model(inp, out).save(path)
    return path


def unregistered_layer_model(path):
    """A model with a custom layer, saved while its class was registered; the registration is then removed, as
    in a process that never imported the module defining it."""
    @keras.saving.register_keras_serializable(package="issue29")
    class Scale(keras.layers.Layer):
        def call(self, x):
            return x * 3.0

    inp = keras.Input((16, 16, 16, 3))
    keras.Model(inp, Scale(name="scaler")(keras.layers.Conv3D(3, 1)(inp))).save(path)
    del keras.saving.get_custom_objects()["issue29>Scale"]
    return path


UNSAFE = [(named_lambda_model, "layer 'doubler' is a Lambda layer (Python code), which brats-keras refuses to load "
                               "for safety"),
          (unregistered_layer_model, "layer 'scaler' uses the class 'Scale', which neither Keras nor brats-keras "
                                     "knows: refused")]


@pytest.mark.parametrize("make, message", UNSAFE)
def test_a_named_lambda_or_unregistered_layer_is_one_line_naming_it(make, message, tmp_path):
    """Keras raised a TypeError ('could not be deserialized properly', the whole config) for both: now one line
    naming the file, the layer and why."""
    path = make(tmp_path / "m.keras")
    with pytest.raises(BratsInputError) as exc:
        load_model(path, compile=False)
    text = str(exc.value)
    assert text.startswith(f"{path}: {message}") and "\n" not in text and len(text) < 400, text


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


@pytest.mark.parametrize("make, message", UNSAFE)
def test_predict_and_init_from_refuse_a_named_lambda_or_unregistered_layer_in_one_line(make, message, tmp_path,
                                                                                       capsys):
    from brats_keras.cli import main as cli_main

    from conftest import write_converted_cases, write_small_case

    path = make(tmp_path / "m.keras")
    write_small_case(tmp_path / "cases", "p0")
    capsys.readouterr()
    rc = cli_main(["predict", "--model", str(path), "--input", str(tmp_path / "cases"), "--output",
                   str(tmp_path / "preds"), "--quiet"])
    assert rc == 2 and _one_line(capsys).startswith(f"error: {path}: {message}")
    assert not (tmp_path / "preds").exists()
    data = write_converted_cases(tmp_path / "data", 3)
    rc = cli_main(["train", "--data", str(data), "--out", str(tmp_path / "run"), "--base-filters", "4", "--depth", "2",
                   "--patch-size", "16", "--epochs", "1", "--val", "1", "--mixed-precision", "off",
                   "--init-from", str(path)])
    assert rc == 2 and _one_line(capsys).startswith(f"error: {path}: {message}")
    assert not (tmp_path / "run").exists()


# ----------------------------------------------------------------------------- tasks
def test_the_head_check_reads_the_recorded_task():
    """The channels a head must have are those of the task the info records (none recorded: the 2021 task)."""
    from brats_keras.checkpoint import check_head, check_task, info_task
    from brats_keras.models import unet3d
    from brats_keras.tasks import TASKS

    post = TASKS["glioma2024-post"]
    regions = unet3d(in_channels=1, base_filters=2, depth=1, output="regions", task=post)
    check_head(regions, {"output": "regions", "task": post.to_dict()}, "m")  # its own task: passes
    with pytest.raises(BratsInputError, match=r"^m: its info records a regions head \(3 channels\) but the network "
                                              r"ends in 4 channels"):
        check_head(regions, {"output": "regions"}, "m")
    softmax = unet3d(in_channels=1, base_filters=2, depth=1)
    with pytest.raises(BratsInputError, match=r"^m: its info records a softmax head of task glioma2024-post "
                                              r"\(5 channels\) but the network ends in 4 channels"):
        check_head(softmax, {"output": "softmax", "task": post.to_dict()}, "m")
    with pytest.raises(BratsInputError, match=r"^m: task record: no 'labels'$"):
        check_head(softmax, {"output": "softmax", "task": {"name": "x"}}, "m")
    assert info_task({}) == TASKS["glioma2021"] and info_task({"task": post.to_dict()}) == post
    check_task(TASKS["brats2023"], TASKS["glioma2021"], "m")  # one family: the same classes, other label values
    with pytest.raises(BratsInputError, match=r"^m: a model of task glioma2024-post, but this run's data is task "
                                              r"brats2023 \(other classes or regions\): refused$"):
        check_task(post, TASKS["brats2023"], "m")
