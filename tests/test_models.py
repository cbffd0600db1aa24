"""Tests for brats_keras.models: output shapes and probabilities, the float32 head under
mixed precision, one training step, the .keras round trip, parameter counts worked out
by hand, and the errors a user sees for bad arguments.

Models are tiny (16^3 inputs, 4 base filters, depth 2; 32^3 for the sm_unet backbone)
and run eagerly, which on CPU is much faster than tracing a graph for one step.
"""
from __future__ import annotations

import os
import re
import sys

import keras
import numpy as np
import pytest

from brats_keras import labels
from brats_keras.checkpoint import load_model, load_pretrained
from brats_keras.models import (
    MODELS,
    build_model,
    count_params,
    is_slice_model,
    patch_shape,
    residual_unet,
    sm_unet,
    unet2d,
    unet3d,
    vnet,
)
from brats_keras.models.blocks import group_count, norm_layer
from brats_keras.tasks import TASKS

OWN = [unet3d, residual_unet, vnet]
ALL = OWN + [sm_unet]
#: the TF CPU kernel for the filter gradient of resnet18's 7x7x7 stride-2 stem takes
#: about 20 s, so the sm_unet training step only runs when asked for
SLOW = os.environ.get("BRATS_KERAS_SLOW_TESTS") == "1"


def tiny(builder, **kwargs):
    """A small model from ``builder`` with 2 input channels."""
    if builder is sm_unet:
        return sm_unet("resnet18", in_channels=2, decoder_filters=(16, 8, 8, 4, 4), **kwargs)
    return builder(in_channels=2, base_filters=4, depth=2, **kwargs)


def batch_for(builder, shape=None, seed=0):
    """A random batch ``(1, D, H, W, 2)`` of a size the builder accepts."""
    shape = shape or ((32,) * 3 if builder is sm_unet else (16,) * 3)
    return np.random.default_rng(seed).normal(size=(1, *shape, 2)).astype("float32")


def targets_for(x, output, seed=1):
    """Random one-hot classes ``(..., 4)`` or their regions ``(..., 3)`` for a batch ``x``."""
    classes = np.random.default_rng(seed).integers(0, 4, size=x.shape[:-1])
    if output == "softmax":
        return labels.one_hot(classes, 4)
    return labels.classes_to_regions(classes).astype("float32")


@pytest.fixture
def mixed_bfloat16():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    yield
    keras.mixed_precision.set_global_policy("float32")


# --------------------------------------------------------------------------- shapes
@pytest.mark.parametrize("builder", ALL, ids=lambda b: b.__name__)
@pytest.mark.parametrize("output,channels", [("softmax", 4), ("regions", 3)])
def test_output_shape_and_probabilities(builder, output, channels):
    model = tiny(builder, output=output)
    assert model.input.shape == (None, None, None, None, 2)
    assert model.output.shape == (None, None, None, None, channels)
    # patch_size=None accepts any multiple of 2 ** depth, not only cubes
    shape = (32, 64, 32) if builder is sm_unet else (16, 32, 8)
    x = batch_for(builder, shape)
    y = keras.ops.convert_to_numpy(model(x, training=False))
    assert y.shape == (1, *shape, channels)
    assert y.dtype == np.float32
    assert np.isfinite(y).all()
    if output == "softmax":
        np.testing.assert_allclose(y.sum(axis=-1), 1.0, atol=1e-5)
        assert model.layers[-1].name == "head_softmax"
    else:
        assert (y >= 0).all() and (y <= 1).all()
        assert model.layers[-1].name == "head_sigmoid"


@pytest.mark.parametrize("builder", OWN, ids=lambda b: b.__name__)
def test_fixed_patch_size_sets_input_shape(builder):
    model = tiny(builder, patch_size=(16, 32, 8))
    assert model.input.shape == (None, 16, 32, 8, 2)
    assert model.output.shape == (None, 16, 32, 8, 4)


def test_sm_unet_fixed_patch_size():
    model = sm_unet("resnet18", in_channels=4, patch_size=32, output="regions",
                    decoder_filters=(16, 8, 8, 4, 4))
    assert model.input.shape == (None, 32, 32, 32, 4)
    assert model.output.shape == (None, 32, 32, 32, 3)
    assert model.name == "sm_unet_resnet18"


# --------------------------------------------------------------------------- mixed precision
@pytest.mark.parametrize("builder", ALL, ids=lambda b: b.__name__)
def test_head_is_float32_under_mixed_bfloat16(builder, mixed_bfloat16):
    model = tiny(builder)
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv3D)]
    # the policy reached the body ...
    assert convs[0].compute_dtype == "bfloat16"
    # ... but not the head
    assert model.get_layer("head_conv").compute_dtype == "float32"
    assert model.layers[-1].compute_dtype == "float32"
    assert model.output.dtype == "float32"
    y = model(batch_for(builder), training=False)
    assert keras.backend.standardize_dtype(y.dtype) == "float32"
    np.testing.assert_allclose(keras.ops.convert_to_numpy(y).sum(axis=-1), 1.0, atol=1e-5)


def test_policy_is_float32_outside_the_fixture():
    assert keras.mixed_precision.global_policy().name == "float32"


# --------------------------------------------------------------------------- training
def one_training_step(model, x, output):
    loss = "categorical_crossentropy" if output == "softmax" else "binary_crossentropy"
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=loss, run_eagerly=True)
    before = [w.numpy().copy() for w in model.trainable_weights]
    value = model.train_on_batch(x, targets_for(x, output))
    after = [w.numpy() for w in model.trainable_weights]
    assert np.isfinite(value)
    assert any(not np.array_equal(b, a) for b, a in zip(before, after))


@pytest.mark.parametrize(
    "builder,kwargs",
    [
        (unet3d, dict(output="softmax", norm="batch", dropout=0.1)),
        (unet3d, dict(output="regions", norm="instance", activation="leaky_relu")),
        (residual_unet, dict(output="softmax", norm="group")),
        (residual_unet, dict(output="regions", norm="none")),
        (vnet, dict(output="softmax", norm="batch")),
        (vnet, dict(output="regions", norm="instance", kernel_size=5, activation="relu")),
    ],
    ids=lambda v: getattr(v, "__name__", None) or "-".join(map(str, v.values())),
)
def test_one_training_step_gives_a_finite_loss(builder, kwargs):
    model = tiny(builder, **kwargs)
    one_training_step(model, batch_for(builder), kwargs["output"])


@pytest.mark.skipif(not SLOW, reason="about 30 s on CPU (TF's 7x7x7 stride-2 filter gradient); "
                                     "set BRATS_KERAS_SLOW_TESTS=1")
@pytest.mark.parametrize("output", ["softmax", "regions"])
def test_sm_unet_training_step(output):
    one_training_step(tiny(sm_unet, output=output), batch_for(sm_unet), output)


# --------------------------------------------------------------------------- saving
@pytest.mark.parametrize(
    "builder,kwargs",
    [
        (unet3d, dict(norm="instance", output="regions")),
        (residual_unet, dict(norm="none", activation="leaky_relu")),
        (vnet, dict(norm="group", activation="prelu")),
        (sm_unet, dict(output="regions")),
    ],
    ids=["unet3d", "residual_unet", "vnet", "sm_unet"],
)
def test_keras_file_round_trip_gives_identical_predictions(builder, kwargs, tmp_path):
    model = tiny(builder, **kwargs)
    x = batch_for(builder)
    expected = keras.ops.convert_to_numpy(model(x, training=False))
    path = tmp_path / "model.keras"
    model.save(path)
    loaded, _ = load_model(path)
    assert loaded.name == model.name
    assert count_params(loaded) == count_params(model)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(loaded(x, training=False)), expected)


def test_load_pretrained_names_the_missing_file(tmp_path, monkeypatch):
    """An installation without the model file gets one line naming it (from pretrained.pretrained_path, the one
    place that finds the shipped model), not Keras' own error."""
    import brats_keras.pretrained

    missing = tmp_path / "model.keras"
    monkeypatch.setattr(brats_keras.pretrained, "HERE", tmp_path)  # no fold ensemble either
    monkeypatch.setattr(brats_keras.pretrained, "MODEL_FILE", missing)
    with pytest.raises(FileNotFoundError) as err:
        load_pretrained()
    assert str(err.value) == (f"{missing}: the pretrained model is not installed with this copy of brats-keras "
                              f"(reinstall brats-keras, or train a model and load it with "
                              f"brats_keras.checkpoint.load_model(path))")


def test_load_pretrained_loads_the_shipped_file(tmp_path, monkeypatch):
    path = tmp_path / "model.keras"
    tiny(unet3d).save(path)
    import brats_keras.pretrained

    monkeypatch.setattr(brats_keras.pretrained, "HERE", tmp_path)
    monkeypatch.setattr(brats_keras.pretrained, "MODEL_FILE", path)
    assert load_pretrained().name == "unet3d"


# --------------------------------------------------------------------------- parameter counts
NORM_PARAMS = {"batch": 4, "instance": 2, "group": 2, "none": 0}  # per channel


def unet3d_params(in_channels, n_out, base_filters, depth, norm):
    """Parameters of unet3d counted from its description (conv bias only without a norm)."""
    bias = 1 if norm == "none" else 0

    def conv(cin, cout, k=3):
        return k**3 * cin * cout + (bias + NORM_PARAMS[norm]) * cout

    f = [base_filters * 2**lvl for lvl in range(depth + 1)]
    total, cin = 0, in_channels
    for lvl in range(depth):
        total += conv(cin, f[lvl]) + conv(f[lvl], f[lvl])
        cin = f[lvl]
    total += conv(f[depth - 1], f[depth]) + conv(f[depth], f[depth])
    for lvl in range(depth):
        total += 8 * f[lvl + 1] * f[lvl] + f[lvl]  # Conv3DTranspose 2x2x2 with bias
        total += conv(2 * f[lvl], f[lvl]) + conv(f[lvl], f[lvl])
    return total + f[0] * n_out + n_out  # 1x1x1 head with bias


@pytest.mark.parametrize(
    "kwargs,expected",
    [
        # in 1, base 2, depth 1, no norm (conv bias):
        #   enc0 27*1*2+2 + 27*2*2+2 = 166; bottleneck 27*2*4+4 + 27*4*4+4 = 656;
        #   up 8*4*2+2 = 66; dec0 27*4*2+2 + 27*2*2+2 = 328; head 2*2+2 = 6 -> 1222
        (dict(in_channels=1, n_classes=2, base_filters=2, depth=1, norm="none"), 1222),
        # batch norm: no conv bias, 4 numbers per channel (gamma, beta, mean, variance):
        #   enc0 54+8 + 108+8 = 178; bottleneck 216+16 + 432+16 = 680;
        #   up 66; dec0 216+8 + 108+8 = 340; head 6 -> 1270
        (dict(in_channels=1, n_classes=2, base_filters=2, depth=1, norm="batch"), 1270),
        # instance norm (gamma, beta per channel), 3 sigmoid regions:
        #   enc0 54+4 + 108+4 = 170; bottleneck 216+8 + 432+8 = 664;
        #   up 66; dec0 216+4 + 108+4 = 332; head 2*3+3 = 9 -> 1241
        (dict(in_channels=1, base_filters=2, depth=1, norm="instance", output="regions"), 1241),
        # the BraTS configuration: 4 modalities, 3 regions
        (dict(in_channels=4, base_filters=16, depth=4, norm="instance", output="regions"), 5_647_715),
    ],
)
def test_unet3d_parameter_count(kwargs, expected):
    model = unet3d(**kwargs)
    assert count_params(model) == expected
    assert count_params(model) == model.count_params()
    n_out = 3 if kwargs.get("output") == "regions" else kwargs.get("n_classes", 4)
    assert unet3d_params(kwargs["in_channels"], n_out, kwargs["base_filters"], kwargs["depth"],
                         kwargs["norm"]) == expected


def test_count_params_trainable_only_leaves_out_batchnorm_statistics():
    model = unet3d(in_channels=1, n_classes=2, base_filters=2, depth=1, norm="batch")
    # moving mean and variance of 2+2 (enc0) + 4+4 (bottleneck) + 2+2 (dec0) = 16 channels
    assert count_params(model, trainable_only=True) == 1270 - 2 * 16


# --------------------------------------------------------------------------- blocks
@pytest.mark.parametrize("channels,groups", [(4, 4), (6, 6), (7, 7), (12, 6), (16, 8), (64, 8), (None, 8)])
def test_group_count(channels, groups):
    assert group_count(channels) == groups


@pytest.mark.parametrize(
    "kind,cls,groups",
    [
        ("batch", keras.layers.BatchNormalization, None),
        ("instance", keras.layers.GroupNormalization, -1),
        ("group", keras.layers.GroupNormalization, 4),
        ("none", keras.layers.Identity, None),
        ("Instance", keras.layers.GroupNormalization, -1),
    ],
)
def test_norm_layer(kind, cls, groups):
    layer = norm_layer(kind, "n", channels=12 if groups != 4 else 4)
    assert type(layer) is cls
    if groups is not None:
        assert layer.groups == groups


def test_dropout_adds_spatial_dropout_to_every_level():
    model = unet3d(in_channels=1, base_filters=2, depth=2, dropout=0.2)
    drops = [layer for layer in model.layers if isinstance(layer, keras.layers.SpatialDropout3D)]
    assert len(drops) == 5  # enc0, enc1, bottleneck, dec1, dec0
    assert all(d.rate == 0.2 for d in drops)


def test_vnet_stages_have_1_2_3_convolutions():
    model = vnet(in_channels=1, base_filters=2, depth=2)
    names = {layer.name for layer in model.layers}
    assert {"enc0_1_conv", "enc1_2_conv", "bottleneck_3_conv"} <= names
    assert {"enc0_2_conv", "enc1_3_conv", "bottleneck_4_conv"}.isdisjoint(names)


def test_residual_unet_projects_shortcuts_when_channels_change():
    model = residual_unet(in_channels=1, base_filters=2, depth=1)
    assert model.get_layer("enc0_proj").kernel.shape == (1, 1, 1, 1, 2)
    assert model.get_layer("dec0_proj").kernel.shape == (1, 1, 1, 4, 2)
    assert isinstance(model.get_layer("enc0_add"), keras.layers.Add)


# --------------------------------------------------------------------------- registry
def test_build_model_by_name():
    assert set(MODELS) == {"unet3d", "vnet", "residual_unet", "sm_unet", "segresnet", "unet2d"}
    model = build_model("residual-unet", in_channels=1, base_filters=2, depth=1, output="regions")
    assert model.name == "residual_unet"
    assert model.output.shape[-1] == 3


def test_build_model_unknown_name():
    with pytest.raises(ValueError, match="unknown model 'unet4d': use one of unet3d, vnet, residual_unet, sm_unet, "
                                         "segresnet, unet2d"):
        build_model("unet4d")


# --------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    "builder,kwargs,match",
    [
        (unet3d, dict(patch_size=18, depth=2), r"patch_size 18 does not work: .* multiple of 4"),
        (unet3d, dict(patch_size=(16, 16, 15), depth=1), r"multiple of 2 "),
        (unet3d, dict(patch_size=(16, 16)), r"an int or 3 ints"),
        (unet3d, dict(norm="layer"), r"unknown norm 'layer': use one of 'batch', 'instance', 'group', 'none'"),
        (unet3d, dict(output="sigmoid"), r"unknown output 'sigmoid': use one of 'softmax', 'regions'"),
        (unet3d, dict(activation="gelu"), r"unknown activation 'gelu'"),
        (unet3d, dict(depth=0), r"depth must be a positive integer, got 0"),
        (unet3d, dict(base_filters=2.5), r"base_filters must be a positive integer"),
        (unet3d, dict(in_channels=0), r"in_channels must be a positive integer"),
        (unet3d, dict(n_classes=1), r"needs n_classes >= 2"),
        (unet3d, dict(output="regions", n_classes=5), r"3 sigmoid channels .* n_classes must be 4 or 3"),
        (unet3d, dict(dropout=1.0), r"dropout must be a rate in \[0, 1\)"),
        (unet2d, dict(patch_size=(16, 16, 16)), r"patch_size must be an int or 2 ints \(H, W\), got \(16, 16, 16\)"),
        (unet2d, dict(patch_size=(16, 24), depth=4), r"multiple of 16"),
        (unet2d, dict(deep_supervision=2, depth=2), r"deep_supervision 2 needs a depth above 2"),
        (residual_unet, dict(norm="bogus"), r"unknown norm 'bogus'"),
        (residual_unet, dict(patch_size=24, depth=4), r"multiple of 16"),
        (vnet, dict(kernel_size=4), r"kernel_size must be odd"),
        (vnet, dict(patch_size=24, depth=4), r"multiple of 16"),
        (vnet, dict(output="softmax3"), r"unknown output"),
        (sm_unet, dict(patch_size=48), r"multiple of 32"),
        (sm_unet, dict(backbone="resnet9"), r"unknown backbone 'resnet9': use one of resnet18"),
        (sm_unet, dict(encoder_weights="imagenet"), r"never downloads weights"),
        (sm_unet, dict(norm="instance"), r"sm_unet got unexpected arguments norm: it accepts .*decoder_filters"),
    ],
)
def test_bad_arguments(builder, kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        builder(**kwargs)


def test_sm_unet_reserved_arguments():
    with pytest.raises(TypeError, match="sm_unet sets classes itself"):
        sm_unet(classes=5)


def test_sm_unet_missing_package_names_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "segmentation_models_3D", None)  # import raises ImportError
    with pytest.raises(ImportError, match=r"pip install --no-deps segmentation-models-3D==1.1.1 "
                                          r"classification-models-3D==1.1.0"):
        sm_unet()


def test_models_names_no_pretrained_file():
    """The shipped models are found by brats_keras.pretrained (pretrained_paths), not by a path in models."""
    import brats_keras.models as models

    assert not hasattr(models, "PRETRAINED_PATH")
    assert "PRETRAINED_PATH" not in models.__all__


# --------------------------------------------------------------------------- unet2d: the slice model
def slices(n=2, size=(16, 24), seed=0):
    """A random batch of axial slices ``(n, H, W, 2)``."""
    return np.random.default_rng(seed).normal(size=(n, *size, 2)).astype("float32")


@pytest.mark.parametrize("output,channels", [("softmax", 4), ("regions", 3)])
def test_unet2d_maps_slices_to_probabilities_with_the_same_heads(output, channels):
    model = tiny(unet2d, output=output)
    assert model.input.shape == (None, None, None, 2) and model.output.shape == (None, None, None, channels)
    assert is_slice_model(model) and not is_slice_model(tiny(unet3d))
    y = keras.ops.convert_to_numpy(model(slices(), training=False))
    assert y.shape == (2, 16, 24, channels) and y.dtype == np.float32
    assert model.layers[-1].name == f"head_{'softmax' if output == 'softmax' else 'sigmoid'}"
    if output == "softmax":
        np.testing.assert_allclose(y.sum(-1), 1.0, atol=1e-5)
    assert unet2d(in_channels=3, patch_size=(32, 48), depth=3).input.shape == (None, 32, 48, 3)


def test_unet2d_parameter_count():
    # in 1, base 2, depth 1, no norm (conv bias), 3x3 kernels:
    #   enc0 9*1*2+2 + 9*2*2+2 = 58; bottleneck 9*2*4+4 + 9*4*4+4 = 224;
    #   up (2x2 Conv2DTranspose) 4*4*2+2 = 34; dec0 9*4*2+2 + 9*2*2+2 = 112; head 2*2+2 = 6 -> 434
    model = unet2d(in_channels=1, n_classes=2, base_filters=2, depth=1, norm="none")
    assert count_params(model) == 434 == model.count_params()


@pytest.mark.parametrize("kwargs", [dict(output="softmax", norm="batch", dropout=0.1),
                                    dict(output="regions", norm="instance", activation="prelu")],
                         ids=["softmax-batch", "regions-instance"])
def test_unet2d_training_step_moves_every_weight(kwargs):
    """Forward and backward: one Adam step changes every trainable weight (each one gets a gradient)."""
    keras.utils.set_random_seed(0)
    model = tiny(unet2d, **kwargs)
    x = slices(n=4)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="categorical_crossentropy"
                  if kwargs["output"] == "softmax" else "binary_crossentropy", run_eagerly=True)
    before = [w.numpy().copy() for w in model.trainable_weights]
    assert np.isfinite(model.train_on_batch(x, targets_for(x, kwargs["output"])))
    unchanged = [w.path for w, b in zip(model.trainable_weights, before) if np.array_equal(w.numpy(), b)]
    assert not unchanged


def test_unet2d_deep_supervision_outputs_every_level_at_full_size():
    model = tiny(unet2d, output="regions", deep_supervision=1)
    main, aux = model(slices(), training=False)
    assert main.shape == aux.shape == (2, 16, 24, 3)
    assert model.get_layer("aux1_up").__class__ is keras.layers.UpSampling2D


def test_unet2d_keras_file_round_trip_gives_identical_predictions(tmp_path):
    model = tiny(unet2d, norm="group", output="regions", activation="leaky_relu")
    x = slices()
    expected = keras.ops.convert_to_numpy(model(x, training=False))
    model.save(tmp_path / "unet2d.keras")
    loaded, _ = load_model(tmp_path / "unet2d.keras")
    assert loaded.name == "unet2d" and count_params(loaded) == count_params(model)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(loaded(x, training=False)), expected)


@pytest.mark.parametrize("name,patch,expected", [
    ("unet2d", 128, (128, 128, 1)),  # N: N x N axial slices, 1 voxel along array axis 2
    ("unet2d", (96, 128), (96, 128, 1)),
    ("unet2d", [96, 128, 1], (96, 128, 1)),
    ("unet3d", 64, 64),  # a volume model's patch as it is given
    ("unet3d", (32, 64, 48), (32, 64, 48)),
])
def test_patch_shape(name, patch, expected):
    assert patch_shape(name, patch) == expected


@pytest.mark.parametrize("patch", [(1, 128, 128), (128, 128, 2), (128,), 0, 12.5, (True, 16)])
def test_patch_shape_refuses_a_slice_patch_that_is_not_one_voxel_thick_along_the_axial_axis(patch):
    with pytest.raises(ValueError, match=rf"patch size {re.escape(repr(patch))}: --model unet2d trains on axial "
                                         r"slices: give N \(N x N slices\) or three sizes with 1 along array axis 2"):
        patch_shape("unet2d", patch)


# ----------------------------------------------------------------------------- heads per task
@pytest.mark.parametrize("output", ["softmax", "regions"])
@pytest.mark.parametrize("task", list(TASKS))
def test_the_head_has_the_task_channels(task, output):
    """Softmax: the task's classes (background included); regions: its head regions (``region_order``)."""
    expected = {"softmax": TASKS[task].n_classes, "regions": len(TASKS[task].region_order)}[output]
    model = unet3d(in_channels=1, base_filters=2, depth=1, output=output, task=task)
    assert model.outputs[0].shape[-1] == expected
    assert {"glioma2024-post": {"softmax": 5, "regions": 4}, "pediatric2024": {"softmax": 5, "regions": 4},
            "men-rt2024": {"softmax": 2, "regions": 1}}.get(
        task, {"softmax": 4, "regions": 3})[output] == expected  # the counts of the tasks' definitions


@pytest.mark.parametrize("name", ["unet3d", "residual_unet", "vnet", "segresnet", "sm_unet"])
def test_every_architecture_takes_the_task(name):
    kwargs = {"backbone": "resnet18", "decoder_filters": (16, 8, 8, 4, 4)} if name == "sm_unet" else \
        {"base_filters": 4, "depth": 2}
    output, channels = ("softmax", 5) if name == "vnet" else ("regions", 4)  # both heads: the test above
    model = build_model(name, in_channels=2, output=output, task=TASKS["glioma2024-post"], **kwargs)
    assert model.outputs[0].shape[-1] == channels


def test_the_default_task_builds_the_same_model_with_the_same_weights():
    """task=None, the default task by name and no task argument at all: one model, layer by layer, weight by
    weight (a seeded build)."""
    built = []
    for kwargs in ({}, {"task": None}, {"task": "glioma2021"}, {"task": TASKS["glioma2021"], "n_classes": 4}):
        keras.utils.set_random_seed(7)
        built.append(unet3d(in_channels=2, base_filters=4, depth=2, output="regions", deep_supervision=1, **kwargs))
    first = built[0]
    for other in built[1:]:
        assert [lay.name for lay in other.layers] == [lay.name for lay in first.layers]
        for a, b in zip(first.get_weights(), other.get_weights()):
            np.testing.assert_array_equal(a, b)


def test_n_classes_other_than_the_task_is_refused():
    with pytest.raises(ValueError, match=r"^n_classes 4 differs from the 5 classes of task glioma2024-post "
                                         r"\(background, NETC, SNFH, ET, RC\): give the task alone$"):
        unet3d(n_classes=4, task="glioma2024-post")
