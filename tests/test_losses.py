"""Losses: known answers worked out by hand, Tversky = Dice, arithmetic, serialization, float32."""
import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from brats_keras.losses import (
    CombinedLoss,
    CrossEntropyLoss,
    DiceLoss,
    FocalLoss,
    TverskyLoss,
    get_loss,
)

S = 1e-5  # the default smooth


def batch(values, channels=1):
    """A batch (B, N, 1, 1, C) from nested lists [sample][voxel][channel] or [sample][voxel]."""
    a = np.asarray(values, dtype="float32")
    if a.ndim == 2:
        a = a[..., None]
    return a.reshape(a.shape[0], a.shape[1], 1, 1, a.shape[2])


def value(loss, y_true, y_pred):
    return float(keras.ops.convert_to_numpy(loss(y_true, y_pred)))


# (description, loss, y_true, y_pred, expected): hand computed
KNOWN = [
    ("dice perfect", DiceLoss(), [[1, 1, 0, 0]], [[1, 1, 0, 0]], 0.0),
    # I = 1, |T| + |P| = 4: 1 - 2/4
    ("dice half overlap", DiceLoss(), [[1, 1, 0, 0]], [[1, 0, 1, 0]], 0.5),
    # soft: I = 0.5, |T| + |P| = 1 + 1
    ("dice soft", DiceLoss(), [[1, 0]], [[0.5, 0.5]], 0.5),
    # channel 0 perfect (0), channel 1 disjoint (1): mean 0.5
    ("dice mean over channels", DiceLoss(), [[[1, 0], [0, 1]]], [[[1, 1], [0, 0]]], 0.5),
    # channel 0 wrong, channel 1 right; without background only channel 1 counts
    ("dice no background", DiceLoss(include_background=False),
     [[[1, 0], [0, 1]]], [[[0, 0], [0, 1]]], 0.0),
    # per sample: 0 and 1 - s/(1+s) ~ 1 -> mean 0.5
    ("dice per sample", DiceLoss(), [[1, 1, 0, 0], [0, 0, 0, 0]], [[1, 1, 0, 0], [1, 0, 0, 0]], 0.5),
    # whole batch: I = 2, |T| + |P| = 2 + 3: 1 - 4/5
    ("dice batch", DiceLoss(batch=True), [[1, 1, 0, 0], [0, 0, 0, 0]], [[1, 1, 0, 0], [1, 0, 0, 0]], 0.2),
    # empty target predicted empty: smooth / smooth = 1 -> loss 0
    ("dice both empty", DiceLoss(), [[0, 0, 0]], [[0, 0, 0]], 0.0),
    # empty target, 2 voxels predicted: 1 - s / (2 + s)
    ("dice empty target", DiceLoss(), [[0, 0, 0]], [[1, 1, 0]], 1 - S / (2 + S)),
    # TP 1, FP 1, FN 2: 1 - 1 / (1 + 0.3 + 1.4)
    ("tversky 0.3/0.7", TverskyLoss(0.3, 0.7), [[1, 1, 1, 0]], [[1, 0, 0, 1]], 1 - 1 / 2.7),
    ("tversky 0.7/0.3", TverskyLoss(0.7, 0.3), [[1, 1, 1, 0]], [[1, 0, 0, 1]], 1 - 1 / 2.3),
    ("tversky perfect", TverskyLoss(0.3, 0.7), [[1, 0, 1]], [[1, 0, 1]], 0.0),
    # categorical focal, one voxel, p_true = 0.8: -(0.2^2) log 0.8
    ("focal softmax", FocalLoss(), [[[1, 0]]], [[[0.8, 0.2]]], -0.04 * math.log(0.8)),
    ("focal gamma 0 is ce", FocalLoss(gamma=0), [[[1, 0]]], [[[0.8, 0.2]]], -math.log(0.8)),
    ("focal class alpha", FocalLoss(alpha=[0.25, 0.75]), [[[0, 1]]], [[[0.2, 0.8]]],
     -0.75 * 0.04 * math.log(0.8)),
    # binary focal: y=1, p=.8 -> -(0.2^2) log .8; y=0, p=.8 -> -(0.8^2) log .2; mean of 2 voxels
    ("focal regions", FocalLoss(output="regions"), [[1, 0]], [[0.8, 0.8]],
     (-0.04 * math.log(0.8) - 0.64 * math.log(0.2)) / 2),
    ("focal regions alpha", FocalLoss(alpha=0.25, output="regions"), [[1, 0]], [[0.8, 0.8]],
     (-0.25 * 0.04 * math.log(0.8) - 0.75 * 0.64 * math.log(0.2)) / 2),
    ("ce softmax", CrossEntropyLoss(), [[[0, 1, 0, 0]]], [[[0.1, 0.6, 0.2, 0.1]]], -math.log(0.6)),
    # binary CE per channel averaged: -log .9, -log .8, -log .6
    ("bce regions", CrossEntropyLoss(output="regions"), [[[1, 0, 1]]], [[[0.9, 0.2, 0.6]]],
     -(math.log(0.9) + math.log(0.8) + math.log(0.6)) / 3),
    ("ce no background", CrossEntropyLoss(include_background=False),
     [[[1, 0, 0], [0, 0, 1]]], [[[0.5, 0.25, 0.25], [0.5, 0.25, 0.25]]], -math.log(0.25) / 2),
]


@pytest.mark.parametrize("name,loss,y_true,y_pred,expected", KNOWN, ids=[k[0] for k in KNOWN])
def test_known_values(name, loss, y_true, y_pred, expected):
    assert value(loss, batch(y_true), batch(y_pred)) == pytest.approx(expected, abs=1e-5)


def random_pair(seed, shape=(2, 5, 6, 4, 4)):
    rng = np.random.default_rng(seed)
    y_true = keras.ops.convert_to_numpy(keras.ops.one_hot(rng.integers(0, shape[-1], shape[:-1]), shape[-1]))
    logits = rng.normal(size=shape)
    y_pred = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    return y_true.astype("float32"), y_pred.astype("float32")


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("kwargs", [{}, {"include_background": False}, {"batch": True}, {"smooth": 1.0}])
def test_tversky_half_half_is_dice(seed, kwargs):
    y_true, y_pred = random_pair(seed)
    dice = value(DiceLoss(**kwargs), y_true, y_pred)
    assert value(TverskyLoss(0.5, 0.5, **kwargs), y_true, y_pred) == pytest.approx(dice, abs=1e-6)


def test_dice_matches_numpy():
    y_true, y_pred = random_pair(3)
    inter = (y_true * y_pred).sum(axis=(1, 2, 3))
    total = y_true.sum(axis=(1, 2, 3)) + y_pred.sum(axis=(1, 2, 3))
    expected = (1 - (2 * inter + S) / (total + S)).mean()
    assert value(DiceLoss(), y_true, y_pred) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize(
    "loss",
    [DiceLoss(), TverskyLoss(0.3, 0.7), FocalLoss(), CrossEntropyLoss(), DiceLoss(include_background=False)],
    ids=["dice", "tversky", "focal", "ce", "dice-nobg"],
)
def test_perfect_prediction_is_zero(loss):
    y_true, _ = random_pair(4)
    assert value(loss, y_true, y_true) == pytest.approx(0.0, abs=1e-5)


@pytest.mark.parametrize(
    "loss",
    [DiceLoss(), DiceLoss(batch=True), TverskyLoss(0.3, 0.7), FocalLoss(), FocalLoss(output="regions", alpha=0.25),
     CrossEntropyLoss(), CrossEntropyLoss(output="regions"), DiceLoss() + 0.5 * FocalLoss()],
    ids=lambda l: l.name,
)
def test_gradients_finite_with_empty_channels_and_hard_probabilities(loss):
    y_true = np.zeros((2, 4, 4, 4, 4), "float32")
    y_true[..., 0] = 1  # channels 1-3 empty
    y_pred = np.zeros_like(y_true)
    y_pred[0, ..., 0] = 1  # exact 0 / 1 probabilities
    y_pred[1] = 0.25
    y_pred = tf.Variable(y_pred)
    with tf.GradientTape() as tape:
        out = loss(y_true, y_pred)
    grad = tape.gradient(out, y_pred)
    assert np.isfinite(float(out))
    assert grad is not None and np.all(np.isfinite(grad.numpy()))


def test_combination_arithmetic_and_names():
    dice, focal = DiceLoss(), FocalLoss()
    y_true, y_pred = random_pair(5)
    combined = dice + 0.5 * focal
    assert isinstance(combined, CombinedLoss)
    assert combined.name == "dice+0.5*focal"
    by_hand = value(dice, y_true, y_pred) + 0.5 * value(focal, y_true, y_pred)
    assert value(combined, y_true, y_pred) == pytest.approx(by_hand, rel=1e-6)
    assert (dice + TverskyLoss()).name == "dice+tversky"
    assert (2.0 * dice).name == "2*dice" and (dice * 2.0).name == "2*dice"
    assert value(2.0 * dice, y_true, y_pred) == pytest.approx(2 * value(dice, y_true, y_pred), rel=1e-6)
    # sums flatten, scaling a sum scales each part
    assert (combined + CrossEntropyLoss()).name == "dice+0.5*focal+ce"
    assert (2 * combined).name == "2*dice+focal"
    assert sum([dice, focal]).name == "dice+focal"
    # a plain keras loss joins on either side
    assert (keras.losses.MeanSquaredError(name="mse") + dice).name == "mse+dice"


def test_combination_errors():
    with pytest.raises(TypeError):
        DiceLoss() + "focal"
    with pytest.raises(TypeError):
        DiceLoss() * "2"
    with pytest.raises(ValueError, match="at least one part"):
        CombinedLoss([])


@pytest.mark.parametrize(
    "spec,output,name,parts",
    [
        ("dice", "softmax", "dice", [(1.0, DiceLoss, None)]),
        ("tversky", "regions", "tversky", [(1.0, TverskyLoss, None)]),
        ("focal", "regions", "focal", [(1.0, FocalLoss, "regions")]),
        ("ce", "softmax", "ce", [(1.0, CrossEntropyLoss, "softmax")]),
        ("ce", "regions", "bce", [(1.0, CrossEntropyLoss, "regions")]),
        ("dice+ce", "softmax", "dice+ce", [(1.0, DiceLoss, None), (1.0, CrossEntropyLoss, "softmax")]),
        ("Dice + BCE", "regions", "dice+bce", [(1.0, DiceLoss, None), (1.0, CrossEntropyLoss, "regions")]),
        ("dice+bce", "softmax", "dice+bce", [(1.0, DiceLoss, None), (1.0, CrossEntropyLoss, "regions")]),
        ("dice+tversky", "softmax", "dice+tversky", [(1.0, DiceLoss, None), (1.0, TverskyLoss, None)]),
        ("dice+0.5*focal", "softmax", "dice+0.5*focal", [(1.0, DiceLoss, None), (0.5, FocalLoss, "softmax")]),
        ("2*dice+cce", "softmax", "2*dice+ce", [(2.0, DiceLoss, None), (1.0, CrossEntropyLoss, "softmax")]),
    ],
)
def test_get_loss(spec, output, name, parts):
    loss = get_loss(spec, output)
    assert loss.name == name
    got = loss.parts if isinstance(loss, CombinedLoss) else [(1.0, loss)]
    assert len(got) == len(parts)
    for (w, part), (weight, cls, mode) in zip(got, parts):
        assert w == weight and type(part) is cls
        if mode is not None:
            assert part.output == mode
        if cls in (DiceLoss, TverskyLoss):
            assert part.include_background  # the report's plain Dice over all classes


def test_get_loss_passes_objects_through():
    dice = DiceLoss()
    assert get_loss(dice) is dice


@pytest.mark.parametrize(
    "spec,output,message",
    [
        ("dcie", "softmax", "unknown loss 'dcie': use one of dice, tversky, focal, ce, bce, cce"),
        ("dice+", "softmax", "empty term"),
        ("", "softmax", "empty term"),
        ("dice*0.5", "softmax", "cannot parse 'dice\\*0.5'"),
        ("cce", "regions", "needs output='softmax'"),
        ("dice", "sigmoid", "unknown output 'sigmoid'"),
        (3, "softmax", "must be a string"),
    ],
)
def test_get_loss_errors(spec, output, message):
    with pytest.raises(ValueError, match=message):
        get_loss(spec, output)


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown output"):
        FocalLoss(output="sigmoid")
    with pytest.raises(ValueError, match="gamma"):
        FocalLoss(gamma=-1)
    with pytest.raises(ValueError, match="alpha and beta"):
        TverskyLoss(alpha=-0.1)
    with pytest.raises(ValueError, match="rank >= 3"):
        DiceLoss()(np.ones((2, 3), "float32"), np.ones((2, 3), "float32"))


ALL_LOSSES = [
    DiceLoss(include_background=False, smooth=1e-3, batch=True, reduction="sum", name="d"),
    TverskyLoss(alpha=0.3, beta=0.7),
    FocalLoss(gamma=1.5, alpha=[0.1, 0.2, 0.3, 0.4]),
    FocalLoss(alpha=0.25, output="regions"),
    CrossEntropyLoss(output="regions"),
    get_loss("dice+0.5*focal"),
    2.0 * (DiceLoss() + TverskyLoss(0.2, 0.8)),
]


@pytest.mark.parametrize("loss", ALL_LOSSES, ids=lambda l: l.name)
def test_serialization_round_trip(loss):
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))
    assert type(restored) is type(loss)
    assert restored.get_config() == loss.get_config()
    y_true, y_pred = random_pair(6)
    if getattr(loss, "mode", None) == "regions":
        y_true, y_pred = y_true[..., 1:], y_pred[..., 1:]
    assert value(restored, y_true, y_pred) == pytest.approx(value(loss, y_true, y_pred), rel=1e-6)


@pytest.mark.parametrize("spec,output", [("dice+0.5*focal", "softmax"), ("dice+bce", "regions")])
def test_compiled_model_reloads_without_custom_objects(tmp_path, spec, output):
    channels = 4 if output == "softmax" else 3
    inputs = keras.Input((8, 8, 8, 2))
    x = keras.layers.Conv3D(4, 3, padding="same", activation="relu")(inputs)
    outputs = keras.layers.Conv3D(channels, 1, activation="softmax" if output == "softmax" else "sigmoid")(x)
    model = keras.Model(inputs, outputs)
    model.compile(optimizer="adam", loss=get_loss(spec, output))
    rng = np.random.default_rng(0)
    x_data = rng.normal(size=(2, 8, 8, 8, 2)).astype("float32")
    y_data = random_pair(7, (2, 8, 8, 8, channels))[0]
    model.fit(x_data, y_data, epochs=1, verbose=0)
    path = tmp_path / "tiny.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.loss.name == spec
    assert loaded.loss.get_config() == model.loss.get_config()
    assert loaded.evaluate(x_data, y_data, verbose=0) == pytest.approx(
        model.evaluate(x_data, y_data, verbose=0), rel=1e-5
    )


@pytest.mark.parametrize("loss", [DiceLoss(), TverskyLoss(0.3, 0.7), FocalLoss(), CrossEntropyLoss()],
                         ids=lambda l: l.name)
def test_float32_under_mixed_bfloat16(loss):
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        y_true, y_pred = random_pair(8)
        low_true = keras.ops.cast(y_true, "bfloat16")
        low_pred = keras.ops.cast(y_pred, "bfloat16")
        out = loss(low_true, low_pred)
        assert keras.backend.standardize_dtype(out.dtype) == "float32"
        # the same as float32 arithmetic on the rounded inputs
        rounded = keras.ops.cast(low_pred, "float32")
        assert float(out) == pytest.approx(value(loss, y_true, rounded), rel=1e-6)
    finally:
        keras.config.set_dtype_policy(previous)


@pytest.mark.parametrize("cls", [DiceLoss, TverskyLoss])
def test_sums_are_exact_beyond_bfloat16_precision(cls):
    # 4096 voxels: sums near 2048, where bfloat16 (8 bits of mantissa) holds only multiples of 16; float32 sums
    # are exact. (Sums of equal powers of two, such as 4096 x 0.5, are exact in bfloat16 too: they prove nothing.)
    y_true = keras.ops.ones((1, 16, 16, 16, 1), dtype="bfloat16")
    p = np.full((1, 16, 16, 16, 1), 0.5, dtype=np.float32)
    p.flat[:3] = 0.75
    y_pred = keras.ops.cast(p, "bfloat16")  # 0.5 and 0.75 are exact in bfloat16
    # TP = 2048.75, FP = 0, FN = 2047.25: 1 - 2 TP / (2 TP + FN) (bfloat16 sums: 1 - 4096 / 6144 = 1/3)
    expected = 1 - 2 * 2048.75 / (2 * 2048.75 + 2047.25)
    loss = cls(smooth=0.0)
    assert value(loss, y_true, y_pred) == pytest.approx(expected, abs=1e-7)
    # call() itself, which CombinedLoss.call uses, gets the bfloat16 tensors as they are (Loss.__call__ casts
    # its inputs to float32 before it reaches call): the float32 sums are _tp_fp_fn's own
    out = loss.call(y_true, y_pred)
    assert keras.backend.standardize_dtype(out.dtype) == "float32"
    assert float(keras.ops.convert_to_numpy(out)[0]) == pytest.approx(expected, abs=1e-7)


def test_tversky_term_weighs_missed_tumor_more():
    """In loss strings 'tversky' is alpha 0.3 / beta 0.7, so 'dice+tversky' is not just twice the Dice."""
    t = get_loss("tversky", "softmax")
    assert (t.alpha, t.beta) == (0.3, 0.7)
    y_true = np.array([[[1.0], [1.0], [1.0], [0.0]]])
    y_pred = np.array([[[1.0], [0.0], [0.0], [1.0]]])
    # TP 1, FP 1, FN 2: 1 - 2 / (2 + 0.6 + 2.8)
    assert float(t(y_true, y_pred)) == pytest.approx(1 - 2 / 5.4, abs=1e-4)


# ----------------------------------------------------------------------- against Keras' built-in losses
#
# Keras' losses with reduction=None give one value per voxel, (B, D, H, W); ours give one value per
# sample, the mean over voxels, (B,), before the reduction. With "sum_over_batch_size" (the default)
# both end as the mean over every voxel of the batch; with "sum" Keras sums every voxel and we sum
# the per-sample means. Each test below computes our value from Keras' per-voxel values.

REDUCTIONS = ["sum_over_batch_size", "sum", None]


def keras_per_voxel(loss_cls, y_true, y_pred, **kwargs):
    return keras.ops.convert_to_numpy(loss_cls(reduction=None, **kwargs)(y_true, y_pred)).astype("float64")


def reduce_like_ours(per_voxel, reduction):
    per_sample = per_voxel.reshape(per_voxel.shape[0], -1).mean(axis=1)
    if reduction is None:
        return per_sample
    return per_sample.sum() if reduction == "sum" else per_sample.mean()


def ours(loss, y_true, y_pred):
    return keras.ops.convert_to_numpy(loss(y_true, y_pred)).astype("float64")


def region_pair(seed, shape=(2, 5, 6, 4, 3)):
    """Random region targets (0 / 1 per channel) and sigmoid-like probabilities, some exactly 0 or 1."""
    rng = np.random.default_rng(seed)
    y_true = (rng.random(shape) < 0.3).astype("float32")
    y_pred = rng.uniform(0.0, 1.0, shape).astype("float32")
    y_pred.reshape(-1)[:6] = [0.0, 1.0, 0.0, 1.0, 0.0, 1.0]  # hard probabilities: clipped the same way
    return y_true, y_pred


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("seed", [0, 1])
def test_cross_entropy_matches_keras_categorical(seed, reduction):
    """Softmax cross-entropy is Keras' CategoricalCrossentropy per voxel, averaged per sample."""
    y_true, y_pred = random_pair(seed)
    expected = reduce_like_ours(keras_per_voxel(keras.losses.CategoricalCrossentropy, y_true, y_pred), reduction)
    got = ours(CrossEntropyLoss(reduction=reduction), y_true, y_pred)
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    if reduction == "sum_over_batch_size":  # both the mean over every voxel: no conversion needed
        np.testing.assert_allclose(got, value(keras.losses.CategoricalCrossentropy(), y_true, y_pred), rtol=1e-5)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("seed", [0, 1])
def test_binary_cross_entropy_matches_keras(seed, reduction):
    """Regions cross-entropy is Keras' BinaryCrossentropy (which already averages the channels)."""
    y_true, y_pred = region_pair(seed)
    expected = reduce_like_ours(keras_per_voxel(keras.losses.BinaryCrossentropy, y_true, y_pred), reduction)
    np.testing.assert_allclose(ours(CrossEntropyLoss(output="regions", reduction=reduction), y_true, y_pred),
                               expected, rtol=1e-5)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("gamma,alpha", [(2.0, 0.25), (1.5, None), (0.0, 0.5)])
def test_categorical_focal_matches_keras(gamma, alpha, reduction):
    """Softmax focal loss is Keras' CategoricalFocalCrossentropy; our alpha=None is Keras' alpha=1."""
    y_true, y_pred = random_pair(2)
    expected = keras_per_voxel(keras.losses.CategoricalFocalCrossentropy, y_true, y_pred,
                               gamma=gamma, alpha=1.0 if alpha is None else alpha)
    got = ours(FocalLoss(gamma=gamma, alpha=alpha, reduction=reduction), y_true, y_pred)
    np.testing.assert_allclose(got, reduce_like_ours(expected, reduction), rtol=1e-5)


def test_categorical_focal_class_alpha_from_keras():
    """One alpha per class: Keras' alpha is one number, so take Keras' value (alpha=1) with the
    target restricted to each class in turn, weight it by that class's alpha and add them up."""
    y_true, y_pred = random_pair(3)
    alpha = [0.1, 0.2, 0.3, 0.4]
    per_voxel = sum(
        a * keras_per_voxel(keras.losses.CategoricalFocalCrossentropy, y_true * np.eye(4, dtype="float32")[c],
                            y_pred, gamma=2.0, alpha=1.0)
        for c, a in enumerate(alpha)
    )
    np.testing.assert_allclose(ours(FocalLoss(gamma=2.0, alpha=alpha), y_true, y_pred),
                               reduce_like_ours(per_voxel, "sum_over_batch_size"), rtol=1e-5)


@pytest.mark.parametrize("loss,keras_cls,kwargs", [
    (CrossEntropyLoss(include_background=False), keras.losses.CategoricalCrossentropy, {}),
    (FocalLoss(include_background=False, alpha=0.25), keras.losses.CategoricalFocalCrossentropy, {"alpha": 0.25}),
], ids=["ce", "focal"])
def test_softmax_losses_without_background_match_keras(loss, keras_cls, kwargs):
    """include_background=False is Keras' value with the background target set to zero: the
    background voxels then add nothing (the probabilities are not renormalised over the rest)."""
    y_true, y_pred = random_pair(4)
    no_background = y_true * np.array([0, 1, 1, 1], "float32")
    expected = keras_per_voxel(keras_cls, no_background, y_pred, **kwargs)
    np.testing.assert_allclose(ours(loss, y_true, y_pred), reduce_like_ours(expected, "sum_over_batch_size"),
                               rtol=1e-5)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("gamma,alpha", [(2.0, 0.25), (2.0, None), (1.0, 0.75)])
def test_binary_focal_matches_keras(gamma, alpha, reduction):
    """Regions focal loss is Keras' BinaryFocalCrossentropy: alpha=None is apply_class_balancing=False."""
    y_true, y_pred = region_pair(5)
    kwargs = {"gamma": gamma, "apply_class_balancing": alpha is not None}
    if alpha is not None:
        kwargs["alpha"] = alpha
    expected = keras_per_voxel(keras.losses.BinaryFocalCrossentropy, y_true, y_pred, **kwargs)
    got = ours(FocalLoss(gamma=gamma, alpha=alpha, output="regions", reduction=reduction), y_true, y_pred)
    np.testing.assert_allclose(got, reduce_like_ours(expected, reduction), rtol=1e-5)


def test_binary_focal_channel_alpha_from_keras():
    """One alpha per region channel: Keras' BinaryFocalCrossentropy on each channel alone with that
    channel's alpha, then the mean over channels (Keras averages the last axis the same way)."""
    y_true, y_pred = region_pair(6)
    alpha = [0.25, 0.5, 0.9]
    per_voxel = np.mean([
        keras_per_voxel(keras.losses.BinaryFocalCrossentropy, y_true[..., c:c + 1], y_pred[..., c:c + 1],
                        gamma=2.0, alpha=a, apply_class_balancing=True)
        for c, a in enumerate(alpha)
    ], axis=0)
    np.testing.assert_allclose(ours(FocalLoss(gamma=2.0, alpha=alpha, output="regions"), y_true, y_pred),
                               reduce_like_ours(per_voxel, "sum_over_batch_size"), rtol=1e-5)


def test_every_module_checks_the_output_mode_the_same_way():
    """One vocabulary for output modes (brats_keras.labels.OUTPUTS): targets, models, losses, metrics and the
    preprocessing spec accept the same names, any case, and refuse anything else with the same message."""
    from brats_keras import data, labels, metrics
    from brats_keras.models import blocks
    from brats_keras.spec import PreprocessingSpec

    assert labels.OUTPUTS == data.OUTPUTS == blocks.OUTPUTS == ("softmax", "regions")
    classes = np.array([[0, 1], [2, 3]], np.uint8)
    np.testing.assert_array_equal(data.make_targets(classes, "Regions"), data.make_targets(classes, "regions"))
    assert data.make_targets(classes, "SOFTMAX").shape == (2, 2, 4)
    assert blocks.output_channels("Regions", 4) == 3 and get_loss("dice+ce", "Regions").parts[1][1].output == "regions"
    assert metrics.MeanDice("Softmax").output == "softmax"
    assert PreprocessingSpec(modalities=["t1"], output="Regions").output == "regions"
    refusals = [lambda: labels.check_output("sigmoid"), lambda: data.make_targets(classes, "sigmoid"),
                lambda: blocks.output_channels("sigmoid", 4), lambda: get_loss("dice", "sigmoid"),
                lambda: CrossEntropyLoss(output="sigmoid"), lambda: metrics.report_metrics("sigmoid"),
                lambda: PreprocessingSpec(modalities=["t1"], output="sigmoid")]
    for refuse in refusals:
        with pytest.raises(ValueError) as err:
            refuse()
        assert str(err.value) == "unknown output 'sigmoid': use one of 'softmax', 'regions'"


@pytest.mark.parametrize("cls", [DiceLoss, TverskyLoss])
def test_dice_and_tversky_share_their_soft_counts(cls):
    """Both losses are built on the same tp / fp / fn sums: on hand-made counts the Dice equals
    1 - 2TP / (2TP + FP + FN), and Tversky with alpha = beta = 0.5 equals it."""
    y_true = batch([[1, 1, 0, 0]])
    y_pred = batch([[0.5, 1.0, 0.25, 0.0]])  # TP 1.5, FP 0.25, FN 0.5
    expected = 1 - (2 * 1.5 + S) / (2 * 1.5 + 0.25 + 0.5 + S)
    assert value(cls(), y_true, y_pred) == pytest.approx(expected, rel=1e-6)


_REPLICAS_SCRIPT = r"""
import numpy as np
import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import brats_keras  # noqa: F401
from brats_keras.losses import DiceLoss, TverskyLoss

rng = np.random.default_rng(0)
y = (rng.random((4, 4, 4, 4, 3)) > 0.6).astype("float32")
p = rng.random((4, 4, 4, 4, 3)).astype("float32")
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
halves = strategy.experimental_distribute_values_from_function(
    lambda ctx: (y[2 * ctx.replica_id_in_sync_group:][:2], p[2 * ctx.replica_id_in_sync_group:][:2]))
for loss in (DiceLoss(), DiceLoss(batch=True), TverskyLoss(0.3, 0.7, batch=True), DiceLoss() + TverskyLoss(batch=True)):
    summed = strategy.reduce("SUM", strategy.run(lambda a, b: loss(a, b), args=halves), axis=None)
    # Keras sums the replicas' gradients: the replicas' losses must add up to the mean of their batches' losses
    expected = (float(loss(y[:2], p[:2])) + float(loss(y[2:], p[2:]))) / 2
    print(loss.name, float(summed), expected)
"""


def test_batch_losses_are_divided_by_the_replica_count_as_keras_divides_the_others(tmp_path):
    """Under MirroredStrategy with 2 replicas (two logical CPUs, in a fresh process) the replicas' loss values
    add up to the mean of the two half-batch losses (Keras then sums their gradients): also for ``batch=True``,
    whose one value per batch Keras did not divide, so its gradients came out twice too large."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=str(root), KERAS_BACKEND="tensorflow", CUDA_VISIBLE_DEVICES="",
               TF_CPP_MIN_LOG_LEVEL="3")
    out = subprocess.run([sys.executable, "-c", _REPLICAS_SCRIPT], env=env, cwd=tmp_path, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    rows = [line.split() for line in out.stdout.splitlines() if line.strip()]
    assert [r[0] for r in rows] == ["dice", "dice", "tversky", "dice+tversky"]
    for name, summed, expected in rows:
        assert float(summed) == pytest.approx(float(expected), rel=1e-5), (name, summed, expected)


def test_losses_and_metrics_take_no_dtype_and_round_trip_their_config():
    """Their arithmetic is float32 whatever the policy: no dtype keyword, and get_config / from_config rebuild
    each one (what a saved model file and a resumed run hold)."""
    import inspect

    import keras

    from brats_keras import losses, metrics

    kinds = [losses.DiceLoss(), losses.TverskyLoss(), losses.FocalLoss(), losses.CrossEntropyLoss(output="regions"),
             losses.DiceLoss() + 0.5 * losses.FocalLoss(), *metrics.report_metrics("regions")]
    for obj in kinds:
        assert "dtype" not in inspect.signature(type(obj)).parameters, type(obj).__name__
        assert obj.dtype == "float32"
        again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(obj))
        assert type(again) is type(obj) and again.get_config() == obj.get_config()
    with pytest.raises(TypeError):
        losses.DiceLoss(dtype="float16")


def test_combined_loss_call_and_dunder_call_share_one_sum():
    """``loss(y, p)`` (reduced) and ``loss.call(y, p)`` (per sample) are the same weighted sum of the parts."""
    import numpy as np

    from brats_keras import losses

    rng = np.random.default_rng(0)
    y = (rng.random((2, 4, 4, 4, 3)) > 0.5).astype("float32")
    p = rng.random((2, 4, 4, 4, 3)).astype("float32")
    dice, focal = losses.DiceLoss(), losses.FocalLoss(output="regions")
    both = dice + 0.25 * focal
    per_sample = np.asarray(dice.call(y, p)) + 0.25 * np.asarray(focal.call(y, p))
    np.testing.assert_allclose(np.asarray(both.call(y, p)), per_sample, rtol=1e-6)
    np.testing.assert_allclose(float(both(y, p)), float(dice(y, p)) + 0.25 * float(focal(y, p)), rtol=1e-6)


def test_the_head_is_output_in_the_losses_too_and_mode_still_works():
    """FocalLoss / CrossEntropyLoss take output= like models and metrics; mode= works with a DeprecationWarning,
    and a config saved with the key "mode" (earlier model files and run checkpoints) still loads, silently."""
    import warnings

    import keras

    from brats_keras import losses

    for cls in (losses.FocalLoss, losses.CrossEntropyLoss):
        assert cls(output="regions").get_config()["output"] == "regions"
        with pytest.warns(DeprecationWarning, match="pass output="):
            old = cls(mode="regions")
        assert old.output == old.mode == "regions" and old.get_config() == cls(output="regions").get_config()
        config = {**cls(output="regions").get_config()}
        config["mode"] = config.pop("output")
        with warnings.catch_warnings():
            warnings.simplefilter("error", DeprecationWarning)
            saved = keras.saving.deserialize_keras_object(
                {**keras.saving.serialize_keras_object(cls(output="regions")), "config": config})
        assert type(saved) is cls and saved.output == "regions"
