"""Tests for brats_keras.models.segresnet: shapes, the trilinear up-sampling against JAX's
resize and a hand-worked answer, the float32 head under mixed precision, training that lowers
every loss in both output modes on a learnable toy target, the .keras round trip, parameter
counts worked out from MONAI's layout, and the errors a user sees.

Models are tiny (16^3 inputs, 4 base filters, depth 2) and run eagerly.
"""
from __future__ import annotations

import json

import keras
import numpy as np
import pytest

from brats_keras import labels
from brats_keras.checkpoint import load_model
from brats_keras.losses import get_loss
from brats_keras.models import MODELS, build_model, count_params, segresnet
from brats_keras.models.segresnet import TrilinearUpSampling3D


def tiny(**kwargs):
    return segresnet(in_channels=2, base_filters=4, depth=2, **kwargs)


def batch(shape=(16, 16, 16), n=1, seed=0):
    return np.random.default_rng(seed).normal(size=(n, *shape, 2)).astype("float32")


@pytest.fixture
def mixed_bfloat16():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    yield
    keras.mixed_precision.set_global_policy("float32")


# --------------------------------------------------------------------------- up-sampling
def test_trilinear_upsampling_hand_worked():
    # along one axis: [0, 4] -> [0.75*0 + 0.25*0, 0.75*0 + 0.25*4, 0.75*4 + 0.25*0, 0.75*4 + 0.25*4]
    x = np.array([0.0, 4.0], np.float32).reshape(1, 2, 1, 1, 1)
    y = keras.ops.convert_to_numpy(TrilinearUpSampling3D()(x))
    assert y.shape == (1, 4, 2, 2, 1)
    np.testing.assert_allclose(y[0, :, 0, 0, 0], [0.0, 1.0, 3.0, 4.0])
    np.testing.assert_allclose(y[0, :, 1, 1, 0], [0.0, 1.0, 3.0, 4.0])  # constant along the other axes


def test_trilinear_upsampling_equals_jax_image_resize():
    jax = pytest.importorskip("jax")
    x = np.random.default_rng(0).normal(size=(2, 3, 4, 5, 3)).astype("float32")
    y = keras.ops.convert_to_numpy(TrilinearUpSampling3D()(x))
    expected = np.asarray(jax.image.resize(x, (2, 6, 8, 10, 3), "trilinear"))
    np.testing.assert_allclose(y, expected, atol=1e-5)


def test_trilinear_upsampling_output_shape_keeps_unknown_sizes():
    layer = TrilinearUpSampling3D()
    assert layer.compute_output_shape((None, None, 8, 3, 5)) == (None, None, 16, 6, 5)


# --------------------------------------------------------------------------- shapes
@pytest.mark.parametrize("output,channels", [("softmax", 4), ("regions", 3)])
def test_output_shape_and_probabilities(output, channels):
    model = tiny(output=output)
    assert model.input.shape == (None, None, None, None, 2)
    y = keras.ops.convert_to_numpy(model(batch((16, 32, 8)), training=False))
    assert y.shape == (1, 16, 32, 8, channels) and y.dtype == np.float32
    assert np.isfinite(y).all()
    if output == "softmax":
        np.testing.assert_allclose(y.sum(axis=-1), 1.0, atol=1e-5)
    else:
        assert ((y >= 0) & (y <= 1)).all()
    assert model.layers[-1].name == f"head_{'softmax' if output == 'softmax' else 'sigmoid'}"


def test_monai_layout_blocks_and_skips():
    model = segresnet(in_channels=4, base_filters=16, output="regions")  # MONAI's BraTS configuration
    names = {layer.name for layer in model.layers}
    # encoder blocks (1, 2, 2, 4), decoder blocks (1, 1, 1), three stride-2 down-samplings
    assert {"enc0_block0_add", "enc1_block1_add", "enc2_block1_add", "enc3_block3_add"} <= names
    assert {"enc0_block1_add", "enc1_block2_add", "enc3_block4_add", "dec0_block1_add"}.isdisjoint(names)
    assert [model.get_layer(f"enc{i}_down").strides for i in (1, 2, 3)] == [(2, 2, 2)] * 3
    assert model.get_layer("dec0_skip").__class__ is keras.layers.Add  # additive skips, not concatenation
    assert model.get_layer("enc3_block0_conv1").kernel.shape == (3, 3, 3, 128, 128)
    assert model.get_layer("dec2_proj").kernel.shape == (1, 1, 1, 128, 64)
    assert model.get_layer("enc1_block0_norm1").groups == 8


def test_fixed_patch_size_and_build_model_with_training_kwargs():
    # the keyword arguments brats_keras.training.build_from_config passes to every own model
    model = build_model("segresnet", in_channels=2, output="regions", base_filters=4, depth=2, norm="batch",
                        dropout=0.1, patch_size=(16, 32, 8))
    assert model.input.shape == (None, 16, 32, 8, 2)
    assert model.output.shape == (None, 16, 32, 8, 3)
    assert isinstance(model.get_layer("init_drop"), keras.layers.SpatialDropout3D)
    assert "segresnet" in MODELS


def test_head_is_float32_under_mixed_bfloat16(mixed_bfloat16):
    model = tiny()
    assert model.get_layer("init_conv").compute_dtype == "bfloat16"
    assert model.get_layer("dec0_up").compute_dtype == "bfloat16"
    assert model.get_layer("head_conv").compute_dtype == "float32"
    y = model(batch(), training=False)
    assert keras.backend.standardize_dtype(y.dtype) == "float32"
    np.testing.assert_allclose(keras.ops.convert_to_numpy(y).sum(axis=-1), 1.0, atol=1e-5)


# --------------------------------------------------------------------------- training
def toy_target(x, output):
    """A target the model can learn from its input: classes by thresholds of channel 0, channel 1 ignored."""
    classes = np.digitize(x[..., 0], [-0.5, 0.5, 1.2])  # 0 background .. 3 ET
    if output == "softmax":
        return labels.one_hot(classes, 4)
    return labels.classes_to_regions(classes).astype("float32")


@pytest.mark.parametrize(
    "loss,output",
    [("dice+tversky", "softmax"), ("dice+ce", "softmax"), ("dice+focal", "softmax"), ("cce", "softmax"),
     ("dice+bce", "regions"), ("tversky", "regions"), ("focal", "regions"), ("ce", "regions")],
)
def test_training_lowers_every_loss(loss, output):
    keras.utils.set_random_seed(0)
    model = tiny(output=output)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=get_loss(loss, output), run_eagerly=True)
    x = batch(n=2)
    y = toy_target(x, output)
    first = float(model.evaluate(x, y, verbose=0))
    for _ in range(10):
        model.train_on_batch(x, y)
    last = float(model.evaluate(x, y, verbose=0))
    assert np.isfinite(last)
    assert last < 0.97 * first, (first, last)  # measured: 0.72 (focal, regions) to 0.94 (dice+tversky)


# --------------------------------------------------------------------------- saving
def test_keras_file_round_trip_gives_identical_predictions(tmp_path):
    model = tiny(output="regions", norm="group", activation="leaky_relu")
    model.compile(optimizer="adam", loss=get_loss("dice+bce", "regions"))
    x = batch(seed=3)
    expected = keras.ops.convert_to_numpy(model(x, training=False))
    model.save(tmp_path / "m.keras")
    loaded, _ = load_model(tmp_path / "m.keras")
    assert isinstance(loaded.get_layer("dec0_up"), TrilinearUpSampling3D)
    assert count_params(loaded) == count_params(model)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(loaded(x, training=False)), expected)


# --------------------------------------------------------------------------- parameter counts
NORM_PARAMS = {"batch": 4, "instance": 2, "group": 2, "none": 0}  # per channel


def segresnet_params(in_channels, n_out, f, blocks_down, blocks_up, norm):
    """Parameters of MONAI's SegResNet layout: convs without bias (with bias only when norm is none)."""
    bias = 1 if norm == "none" else 0
    per_channel = NORM_PARAMS[norm]

    def conv(cin, cout, k=3):
        return k**3 * cin * cout + bias * cout

    def block(c):  # norm, act, conv, norm, act, conv
        return 2 * (per_channel * c + conv(c, c))

    total = conv(in_channels, f)
    for lvl, n in enumerate(blocks_down):
        c = f * 2**lvl
        if lvl:
            total += conv(c // 2, c)
        total += n * block(c)
    depth = len(blocks_down) - 1
    for i, n in enumerate(blocks_up):
        c = f * 2 ** (depth - 1 - i)
        total += conv(2 * c, c, k=1) + n * block(c)
    return total + per_channel * f + f * n_out + n_out  # final norm, 1x1x1 head with bias


@pytest.mark.parametrize(
    "kwargs,expected",
    [
        # in 1, f 2, depth 1, blocks (1, 2) / (1,), no norm (conv bias):
        #   init 27*1*2+2 = 56; enc0 1 block 2*(27*4+2) = 220; down 27*2*4+4 = 220;
        #   enc1 2 blocks 4*(27*16+4) = 1744; dec0 proj 4*2+2 = 10, 1 block 220; head 2*2+2 = 6 -> 2476
        (dict(in_channels=1, n_classes=2, base_filters=2, depth=1, norm="none"), 2476),
        # group norm (gamma, beta per channel), no bias: init 54; enc0 2*(4+108) = 224; down 216;
        #   enc1 4*(8+432) = 1760; dec0 8 + 224; final norm 4; head 6 -> 2496
        (dict(in_channels=1, n_classes=2, base_filters=2, depth=1, norm="group"), 2496),
        # MONAI's BraTS configuration: init_filters 16, 4 modalities, 3 regions, blocks (1, 2, 2, 4) / (1, 1, 1)
        (dict(in_channels=4, base_filters=16, output="regions"), 4_702_227),
    ],
)
def test_segresnet_parameter_count(kwargs, expected):
    model = segresnet(**kwargs)
    assert count_params(model) == expected == model.count_params()
    depth = kwargs.get("depth", 3)
    n_out = 3 if kwargs.get("output") == "regions" else kwargs.get("n_classes", 4)
    down = (1, 2, 2, 4)[: depth + 1]
    assert segresnet_params(kwargs["in_channels"], n_out, kwargs["base_filters"], down, (1,) * depth,
                            kwargs.get("norm", "group")) == expected


def test_custom_blocks_and_deeper_default():
    model = segresnet(in_channels=1, base_filters=2, depth=4, blocks_up=(2, 1, 1, 1))
    names = {layer.name for layer in model.layers}
    assert {"enc4_block3_add", "dec3_block1_add"} <= names  # depth 4: (1, 2, 2, 4, 4)
    assert count_params(model) == segresnet_params(1, 4, 2, (1, 2, 2, 4, 4), (2, 1, 1, 1), "group")


# --------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(blocks_down=(1, 2)), r"blocks_down needs 4 numbers \(one per level\), got \(1, 2\)"),
        (dict(blocks_up=(1, 1, 1, 1)), r"blocks_up needs 3 numbers"),
        (dict(blocks_down=(1, 0, 2, 4)), r"blocks_down must be a positive integer, got 0"),
        (dict(patch_size=20), r"patch_size 20 does not work: .* multiple of 8"),
        (dict(norm="layer"), r"unknown norm 'layer'"),
        (dict(output="regions", n_classes=5), r"n_classes must be 4 or 3"),
        (dict(depth=0), r"depth must be a positive integer"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        segresnet(**kwargs)


def test_saved_config_names_the_registered_layer(tmp_path):
    tiny().save(tmp_path / "m.keras")
    import zipfile

    config = json.loads(zipfile.ZipFile(tmp_path / "m.keras").read("config.json"))
    layers = {layer["config"]["name"]: layer for layer in config["config"]["layers"]}
    assert layers["dec0_up"]["registered_name"] == "brats_keras>TrilinearUpSampling3D"


# --------------------------------------------------------------------------- the train command
def test_cli_trains_segresnet_and_predicts_with_it(tmp_path):
    from conftest import write_small_case

    from brats_keras.cli import main as cli_main
    from brats_keras.convert import convert_folder
    from brats_keras.inference import Predictor
    from brats_keras.io import find_cases

    for i in range(3):
        write_small_case(tmp_path / "src", f"c{i}", seed=i, shape=(40, 36, 30))
    convert_folder(tmp_path / "src", tmp_path / "conv", crop="brain", scale="zscore", workers=1, progress=False)
    run = tmp_path / "run"
    rc = cli_main(["train", "--data", str(tmp_path / "conv"), "--out", str(run), "--model", "segresnet",
                   "--base-filters", "4", "--depth", "2", "--norm", "group", "--head", "regions", "--loss",
                   "dice+bce", "--patch-size", "16", "--batch-size", "2", "--epochs", "1", "--steps-per-epoch", "2",
                   "--val-steps", "1", "--val", "1", "--mixed-precision", "off"])
    assert rc == 0
    assert json.loads((run / "config.json").read_text())["model"] == "segresnet"
    predictor = Predictor(str(run / "checkpoints" / "best.keras"), patch_size=16)
    assert predictor.model.name == "segresnet" and predictor.info["model"] == "segresnet"
    case = find_cases(tmp_path / "src")[0]
    out = predictor.predict_case(case)
    assert out["classes"].shape == (40, 36, 30)


# --------------------------------------------------------------------------- the VAE branch (vae=True)
def tiny_vae(**kwargs):
    return tiny(vae=True, patch_size=16, output="regions", **kwargs)


def test_vae_keeps_the_output_and_builds_the_branch():
    model = tiny_vae()
    assert model.input.shape == (None, 16, 16, 16, 2)
    assert model.output.shape == (None, 16, 16, 16, 3)  # the segmentation alone
    assert len(model.outputs) == 1
    assert model.get_layer("vae_mean").units == 128 and model.get_layer("vae_down").filters == 16
    assert model.get_layer("vae_down").strides == (2, 2, 2)
    assert model.get_layer("vae_out").filters == 2  # back to the input's channels
    y = keras.ops.convert_to_numpy(model(batch(), training=False))
    assert y.shape == (1, 16, 16, 16, 3) and np.isfinite(y).all()
    assert not model.losses  # no VAE term outside training


def test_vae_adds_a_positive_term_to_the_training_loss_and_trains_its_weights():
    keras.utils.set_random_seed(0)
    model = tiny_vae()
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss=get_loss("dice+bce", "regions"), run_eagerly=True)
    x = batch(n=2)
    y = toy_target(x, "regions")
    seg_only = float(model.evaluate(x, y, verbose=0))  # training=False: segmentation loss alone
    total = float(model.train_on_batch(x, y))  # learning rate 0: same weights, training=True
    (term,) = [float(keras.ops.convert_to_numpy(v)) for v in model.losses]
    assert term > 0.0
    np.testing.assert_allclose(total, seg_only + term, rtol=1e-5)  # group norm, no dropout: same segmentation

    # 1e-3: at 1e-2 the first step throws the log-variance up (the term goes from 0.8 to 9 and back)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=get_loss("dice+bce", "regions"), run_eagerly=True)
    before = {name: keras.ops.convert_to_numpy(model.get_layer(name).kernel).copy()
              for name in ("vae_mean", "vae_logvar", "vae_dense_up", "vae0_block0_conv1", "vae_out")}
    losses = [float(model.train_on_batch(x, y)) for _ in range(10)]
    assert losses[-1] < 0.9 * losses[0], losses  # measured: 2.69 -> 2.06 in 8 steps
    for name, kernel in before.items():  # these weights get gradients from the VAE term only
        assert not np.allclose(keras.ops.convert_to_numpy(model.get_layer(name).kernel), kernel), name


def test_vae_weight_scales_the_term():
    x = batch(n=2)
    terms = []
    for weight in (0.1, 0.3):
        keras.utils.set_random_seed(0)
        model = tiny_vae(vae_weight=weight)
        model(x, training=True)
        terms.append(float(keras.ops.convert_to_numpy(model.losses[0])))
    np.testing.assert_allclose(terms[1], 3 * terms[0], rtol=1e-4)


def test_vae_under_mixed_bfloat16_gives_a_float32_term(mixed_bfloat16):
    model = tiny_vae()
    y = model(batch(), training=True)
    assert keras.backend.standardize_dtype(y.dtype) == "float32"
    (term,) = model.losses
    assert keras.backend.standardize_dtype(term.dtype) == "float32" and np.isfinite(float(term)) and float(term) > 0


def test_vae_keras_file_round_trip_gives_identical_predictions(tmp_path):
    model = tiny_vae(vae_weight=0.2)
    model.compile(optimizer="adam", loss=get_loss("dice+bce", "regions"))
    x = batch(seed=4)
    expected = keras.ops.convert_to_numpy(model(x, training=False))
    model.save(tmp_path / "m.keras")
    loaded, _ = load_model(tmp_path / "m.keras")
    assert loaded.get_layer("vae_loss").weight == 0.2
    assert count_params(loaded) == count_params(model)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(loaded(x, training=False)), expected)


def test_vae_parameter_count_of_the_monai_configuration_at_64():
    # the branch at 64^3 (bottleneck 128 channels at 8^3): norm 256, down 27*128*16 = 55296, mean and logvar
    # 2 * (1024*128 + 128) = 262400, dense up 128*1024 + 1024 = 132096, proj 16*128 + 128 = 2176, levels
    # 128*64 + 2*(128 + 27*64*64) = 229632, 64*32 + 2*(64 + 27*32*32) = 57472, 32*16 + 2*(32 + 27*16*16) = 14400,
    # out 16*4 + 4 = 68 -> 753796 more than without it
    plain = segresnet(in_channels=4, base_filters=16, output="regions")
    model = segresnet(in_channels=4, base_filters=16, output="regions", vae=True, patch_size=64)
    assert count_params(plain) == 4_702_227  # vae=False: the model of before
    assert not any(layer.name.startswith("vae") for layer in plain.layers)
    assert count_params(model) == 4_702_227 + 753_796


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(vae=True), r"^segresnet\(vae=True\) needs a fixed patch_size: the VAE branch's dense layers fix"),
        (dict(vae=True, patch_size=8), r"patch_size 8 does not work: .* multiple of 16"),
    ],
)
def test_vae_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        segresnet(**kwargs)


def test_cli_trains_segresnet_with_vae_and_predicts_with_it(tmp_path):
    from conftest import write_small_case

    from brats_keras.cli import main as cli_main
    from brats_keras.convert import convert_folder
    from brats_keras.inference import Predictor
    from brats_keras.io import find_cases

    for i in range(3):
        write_small_case(tmp_path / "src", f"c{i}", seed=i, shape=(40, 36, 30))
    convert_folder(tmp_path / "src", tmp_path / "conv", crop="brain", scale="zscore", workers=1, progress=False)
    run = tmp_path / "run"
    rc = cli_main(["train", "--data", str(tmp_path / "conv"), "--out", str(run), "--model", "segresnet", "--vae",
                   "--base-filters", "4", "--depth", "2", "--head", "regions", "--loss", "dice+bce", "--patch-size",
                   "16", "--batch-size", "2", "--epochs", "1", "--steps-per-epoch", "2", "--val-steps", "1", "--val",
                   "1", "--mixed-precision", "off", "--no-tensorboard"])
    assert rc == 0
    assert json.loads((run / "config.json").read_text())["vae"] is True
    predictor = Predictor(str(run / "checkpoints" / "best.keras"))
    assert predictor.model.input.shape == (None, 16, 16, 16, 3)  # 3 modalities
    assert predictor.model.get_layer("vae_loss").weight == 0.1
    out = predictor.predict_case(find_cases(tmp_path / "src")[0])
    assert out["classes"].shape == (40, 36, 30)


def test_cli_refuses_vae_with_other_models(tmp_path, capsys):
    from brats_keras.cli import main as cli_main

    rc = cli_main(["train", "--data", str(tmp_path), "--out", str(tmp_path / "run"), "--model", "unet3d", "--vae"])
    assert rc == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: --vae works with --model segresnet only, not unet3d"
    assert not (tmp_path / "run").exists()
