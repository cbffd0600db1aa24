"""The library on a Keras backend other than TensorFlow (JAX in CI; PyTorch where installed).

``tests/test_backends.py`` runs this file in a fresh process with ``KERAS_BACKEND=jax`` and
TensorFlow made unimportable (``BRATS_KERAS_BLOCK_TENSORFLOW=1``, see ``tests/conftest.py``), so
each test here also proves that its path never imports TensorFlow. Under TensorFlow the folder is
not collected. With ``BRATS_BACKEND_OUT`` set, a few results are written there for the parent
process to compare with TensorFlow's.

Sizes are tiny: JAX on a CPU is slow for 3D convolutions, and CI runs this beside everything else.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

import brats_keras  # noqa: F401  (before keras: oneDNN switch for TF; harmless elsewhere)
import keras

from brats_keras.checkpoint import load_model, load_pretrained, read_info, save_model
from brats_keras.data import PatchDataset
from brats_keras.losses import LOSS_NAMES, get_loss
from brats_keras.metrics import report_metrics
from brats_keras.models import MODELS, SLICE_MODELS, build_model

from conftest import REAL, require_shared, write_converted_cases

BACKEND = keras.backend.backend()
OUT = Path(os.environ["BRATS_BACKEND_OUT"]) if os.environ.get("BRATS_BACKEND_OUT") else None
CASE = "Brats18_TCIA02_606_1"


def tiny(name, output="regions", in_channels=2, **kw):
    if name == "sm_unet":
        return build_model(name, in_channels=in_channels, output=output, backbone="resnet18",
                           decoder_filters=(16, 8, 8, 4, 4))
    return build_model(name, in_channels=in_channels, output=output, base_filters=4, depth=2, **kw)


def batch(name, channels=2, n=2, seed=0):
    size = 32 if name == "sm_unet" else 16  # sm_unet's encoder halves the size five times
    rng = np.random.default_rng(seed)
    spatial = (size,) * (2 if name in SLICE_MODELS else 3)  # a 2D model takes slices (n, H, W, C)
    x = rng.standard_normal((n, *spatial, channels)).astype(np.float32)
    return x


def targets(x, output):
    """Targets that depend on the input, so a training step has something to learn."""
    wt = x[..., 0] > 0.5
    tc = wt & (x[..., 1] > 0.0)
    et = tc & (x[..., 1] > 0.8)
    if output == "regions":
        return np.stack([wt, tc, et], -1).astype(np.float32)
    classes = np.where(et, 3, np.where(tc, 1, np.where(wt, 2, 0)))
    return np.eye(4, dtype=np.float32)[classes]


@pytest.fixture
def policy(request):
    keras.mixed_precision.set_global_policy(request.param)
    yield request.param
    keras.mixed_precision.set_global_policy("float32")


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    root = tmp_path_factory.mktemp("backend_data")
    write_converted_cases(root, 4)
    return root / "conv"


def test_backend_is_not_tensorflow_and_tensorflow_stays_out():
    assert BACKEND in ("jax", "torch"), BACKEND
    if os.environ.get("BRATS_KERAS_BLOCK_TENSORFLOW") == "1":
        with pytest.raises(ImportError):
            import tensorflow  # noqa: F401
    assert not [m for m in sys.modules if m == "tensorflow" or m.startswith("tensorflow.")]


# --------------------------------------------------------------------------- models
@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_forward_and_backward(name):
    keras.utils.set_random_seed(0)
    model = tiny(name, output="softmax")
    # one sample (JAX's CPU convolutions are slow), but two for sm_unet: its encoder ends at 1 voxel, where
    # batch norm over a single value has no variance and its scale gets no gradient
    x = batch(name, n=2 if name == "sm_unet" else 1)
    y = keras.ops.convert_to_numpy(model(x, training=False))
    assert y.shape == x.shape[:-1] + (4,) and y.dtype == np.float32
    np.testing.assert_allclose(y.sum(-1), 1.0, atol=1e-5)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=get_loss("dice+ce", "softmax"))
    before = [keras.ops.convert_to_numpy(w).copy() for w in model.trainable_weights]
    first = float(model.train_on_batch(x, targets(x, "softmax")))
    after = [keras.ops.convert_to_numpy(w) for w in model.trainable_weights]
    assert np.isfinite(first)
    changed = sum(not np.array_equal(b, a) for b, a in zip(before, after))
    assert changed == len(before)  # every trainable weight received a gradient


def test_segresnet_vae_branch_adds_its_term_and_trains_under_fit():
    """The VAE term (add_loss in a layer, training only) reaches the loss and the gradients of a compiled fit."""
    keras.utils.set_random_seed(0)
    model = tiny("segresnet", vae=True, patch_size=16)
    x = batch("segresnet", n=2)
    y = targets(x, "regions")
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=get_loss("dice+bce", "regions"))
    seg_only = float(model.evaluate(x, y, verbose=0))
    before = keras.ops.convert_to_numpy(model.get_layer("vae_mean").kernel).copy()
    # one step an epoch: each epoch's loss is computed before that step's update, so the first is at the
    # weights evaluate saw, and its excess over the segmentation loss is the VAE term
    losses = model.fit(x, y, batch_size=2, epochs=6, verbose=0).history["loss"]
    assert losses[0] > seg_only + 1e-3
    assert np.isfinite(losses).all() and losses[-1] < losses[0], losses  # measured: 2.19 -> 1.94
    assert not np.allclose(keras.ops.convert_to_numpy(model.get_layer("vae_mean").kernel), before)


# --------------------------------------------------------------------------- losses and metrics
def reference_loss(name, y_true, y_pred, output):
    """The same loss computed by the library in float32 (the policy-free reference)."""
    return float(keras.ops.convert_to_numpy(get_loss(name, output)(y_true, y_pred)))


POLICIES = ["float32", "mixed_bfloat16", "mixed_float16"]
CASES = [(n, o) for o in ("softmax", "regions") for n in LOSS_NAMES if not (n == "cce" and o == "regions")]


@pytest.mark.parametrize("policy", POLICIES, indirect=True)
@pytest.mark.parametrize("name,output", CASES, ids=[f"{n}-{o}" for n, o in CASES])
def test_every_loss_under_each_policy_is_float32_and_matches(policy, name, output):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 8, 8, 8, 2)).astype(np.float32)
    y_true = targets(x, output)
    logits = rng.standard_normal(y_true.shape).astype(np.float32)
    if output == "softmax":
        y_pred = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    else:
        y_pred = 1 / (1 + np.exp(-logits))
    y_pred = y_pred.astype(np.float32)
    expected = reference_loss(name, y_true, y_pred, output)
    compute = keras.mixed_precision.global_policy().compute_dtype
    low = keras.ops.cast(y_pred, compute)  # what a mixed-precision body would hand over, at most
    value = get_loss(name, output)(y_true, low)
    assert keras.backend.standardize_dtype(value.dtype) == "float32"
    tol = {"float32": 1e-6, "bfloat16": 2e-2, "float16": 2e-3}[compute]
    assert float(keras.ops.convert_to_numpy(value)) == pytest.approx(expected, rel=tol, abs=tol)


# The model's output is float32 under every policy (asserted below), so the metrics see the same dtype whatever
# the policy: each policy is paired with one output, each output runs under a mixed policy, and regions in
# float32 with every metric is trained by test_fit_from_patch_dataset_lowers_nothing_to_nan.
POLICY_OUTPUTS = [("float32", "softmax"), ("mixed_bfloat16", "regions"), ("mixed_float16", "softmax")]


@pytest.mark.parametrize("policy,output", POLICY_OUTPUTS, ids=[f"{p}-{o}" for p, o in POLICY_OUTPUTS],
                         indirect=["policy"])
def test_training_step_with_every_metric_under_each_policy(policy, output):
    keras.utils.set_random_seed(0)
    model = tiny("unet3d", output=output, norm="batch")
    opt = keras.optimizers.Adam(1e-2)
    if policy == "mixed_float16":
        opt = keras.optimizers.LossScaleOptimizer(opt)
    model.compile(optimizer=opt, loss=get_loss("dice+bce" if output == "regions" else "dice+tversky", output),
                  metrics=report_metrics(output))
    x = batch("unet3d", n=2)
    y = targets(x, output)
    logs = model.train_on_batch(x, y, return_dict=True)
    assert model.output.dtype == "float32"
    assert all(np.isfinite(v) for v in logs.values()), logs
    names = {m.name for m in report_metrics(output)}
    assert names <= set(logs), sorted(set(logs))
    for k, v in logs.items():
        if "dice" in k or k in ("accuracy", "precision", "recall"):
            assert 0.0 <= v <= 1.0, (k, v)


def test_metrics_give_known_answers():
    """Perfect prediction: every Dice 1; the empty prediction: region Dice 0 where truth has tumor."""
    x = batch("unet3d", n=1)
    for output in ("softmax", "regions"):
        y = targets(x, output)
        for m in report_metrics(output):
            m.update_state(y, y)
            assert float(keras.ops.convert_to_numpy(m.result())) == pytest.approx(1.0), m.name
    y = targets(x, "regions")
    for m in report_metrics("regions"):
        if m.name.startswith("dice_") and m.name[-2:] in ("WT", "TC", "ET"):
            m.update_state(y, np.zeros_like(y))
            assert float(keras.ops.convert_to_numpy(m.result())) == 0.0, m.name


def test_a_task_of_four_regions_trains_and_scores():
    """The post-treatment task (5 classes, head regions WT, TC, ET, RC): its head, loss and metrics run on this
    backend and give the known answers: 1 for a perfect prediction, RC Dice 0 for a missed cavity, WT untouched."""
    from brats_keras.tasks import TASKS

    post = TASKS["glioma2024-post"]
    x = batch("unet3d", n=2)
    classes = np.where(x[..., 0] > 1.0, 4, np.where(x[..., 0] > 0.3, 2, np.where(x[..., 1] > 1.0, 3, 0)))
    y = post.classes_to_regions(classes, post.region_order).astype(np.float32)
    missed = post.classes_to_regions(np.where(classes == 4, 0, classes), post.region_order).astype(np.float32)
    for m in report_metrics("regions", post):
        m.update_state(y, y)
        assert float(keras.ops.convert_to_numpy(m.result())) == pytest.approx(1.0), m.name
    scores = {}
    for m in report_metrics("regions", post):
        m.update_state(y, missed)
        scores[m.name] = float(keras.ops.convert_to_numpy(m.result()))
    assert scores["dice_RC"] == 0.0 and scores["dice_WT"] == pytest.approx(1.0)
    model = tiny("unet3d", output="regions", task=post)
    assert model.outputs[0].shape[-1] == 4
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=get_loss("dice+bce", "regions"),
                  metrics=report_metrics("regions", post))
    hist = model.fit(x, y, batch_size=1, epochs=1, verbose=0).history
    assert np.isfinite(hist["loss"]).all() and 0.0 <= hist["dice_RC"][0] <= 1.0


# --------------------------------------------------------------------------- data, fit, saving
def test_fit_from_patch_dataset_lowers_nothing_to_nan(converted):
    keras.utils.set_random_seed(0)
    ds = PatchDataset(converted, patch_size=16, batch_size=2, output="regions", augment=True,
                      steps_per_epoch=3, seed=0, spatial=0.5)
    model = tiny("unet3d", output="regions", in_channels=3, norm="batch")
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=get_loss("dice+bce", "regions"),
                  metrics=report_metrics("regions"))
    hist = model.fit(ds, epochs=2, verbose=0)
    assert len(hist.history["loss"]) == 2 and np.isfinite(hist.history["loss"]).all()
    assert int(keras.ops.convert_to_numpy(model.optimizer.iterations)) == 6


def test_deep_supervision_trains_resumes_and_predicts_with_the_main_output(converted, tmp_path):
    """A run folder on this backend: train, its checkpoint's info, resume to the next epoch (log, optimizer step
    count), with deep supervision's auxiliary output trained and dropped for prediction."""
    from brats_keras.inference import Predictor
    from brats_keras.runs import read_log
    from brats_keras.training import TrainConfig, train

    cfg = TrainConfig(data=str(converted), out=str(tmp_path / "run"), base_filters=4, depth=2, norm="batch",
                      output="regions", loss="dice+bce", patch_size=16, batch_size=2, epochs=1,
                      steps_per_epoch=2, val_steps=1, val=1, verbose=0, mixed_precision="off", deep_supervision=1)
    first = train(cfg)
    assert first["seconds"] >= 0
    info = read_info(tmp_path / "run" / "checkpoints" / "best.keras")
    assert info["scale"] == "zscore" and info["output"] == "regions" and info["patch_size"] == 16
    res = train(TrainConfig(epochs=2), resume=tmp_path / "run")
    log = read_log(tmp_path / "run")
    assert [int(r["epoch"]) for r in log] == [0, 1] and np.isfinite(log[1]["aux1_sigmoid_loss"])
    assert "dice_WT" in log[1] and len(res["model"].outputs) == 2
    assert int(keras.ops.convert_to_numpy(res["model"].optimizer.iterations)) == 4
    pred = Predictor(tmp_path / "run" / "checkpoints" / "last.keras")
    probs = pred.predict_image(np.zeros((16, 16, 16, 3), np.float32))
    assert len(pred.model.outputs) == 1 and probs.shape == (16, 16, 16, 3)


def test_unet2d_trains_on_slices_and_predicts_a_volume_slice_by_slice(converted, tmp_path):
    """The 2D path end to end on this backend: a run on axial slices, its .keras file read back with the same
    outputs, and the Predictor's probability volume equal to the network on every axial slice."""
    from brats_keras.inference import Predictor
    from brats_keras.training import TrainConfig, train

    cfg = TrainConfig(data=str(converted), out=str(tmp_path / "run"), model="unet2d", base_filters=4, depth=2,
                      norm="batch", output="regions", loss="dice+bce", patch_size=16, batch_size=4, epochs=1,
                      steps_per_epoch=2, val_steps=1, val=1, verbose=0, mixed_precision="off")
    res = train(cfg)
    path = tmp_path / "run" / "checkpoints" / "last.keras"
    loaded, info = load_model(path)
    assert info["patch_size"] == [16, 16, 1] and info["model"] == "unet2d"
    x = batch("unet2d", channels=3, n=5, seed=4)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(loaded(x, training=False)),
                               keras.ops.convert_to_numpy(res["model"](x, training=False)), atol=1e-6)
    image = np.moveaxis(x, 0, 2)  # the 5 slices as a volume (16, 16, 5, 3): axial slices along array axis 2
    probs = Predictor(path).predict_image(image)
    by_hand = np.moveaxis(np.asarray(loaded.predict_on_batch(x)), 0, 2)
    np.testing.assert_allclose(probs, by_hand, atol=1e-5)


@pytest.fixture(scope="module")
def saved_model():
    """One small built model for the two file tests (they only save it and read it back)."""
    return tiny("unet3d", output="regions", norm="instance")


def test_keras_file_round_trip_keeps_info_and_predictions(saved_model, tmp_path):
    model = saved_model
    x = batch("unet3d")
    expected = keras.ops.convert_to_numpy(model(x, training=False))
    info = {"format": 1, "modalities": ["flair", "t1ce"], "scale": "zscore", "crop": "brain",
            "downsample": 2, "output": "regions", "patch_size": 16}
    path = save_model(model, tmp_path / "m.keras", info)
    loaded, loaded_info = load_model(path)
    assert loaded_info == info == read_info(path)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(loaded(x, training=False)), expected)


def test_float16_model_file_loads_the_rounded_weights_into_float32(saved_model, tmp_path):
    model = saved_model
    path = save_model(model, tmp_path / "m16.keras", {"format": 1}, include_optimizer=False, weights_dtype="float16")
    loaded, _ = load_model(path, compile=False)
    for original, half in zip(model.get_weights(), loaded.get_weights()):
        assert half.dtype == np.float32
        np.testing.assert_array_equal(half, original.astype(np.float16).astype(np.float32))


# --------------------------------------------------------------------------- the shipped model
@pytest.fixture(scope="module")
def shipped():
    return load_pretrained()


def test_shipped_model_window_probabilities_for_the_tensorflow_comparison(shipped):
    x = np.random.default_rng(7).standard_normal((1, 64, 64, 64, 4)).astype(np.float32)
    y = np.asarray(shipped.predict_on_batch(x), np.float32)
    assert y.shape == (1, 64, 64, 64, 3) and np.isfinite(y).all()
    if OUT is not None:
        np.save(OUT / f"window_{BACKEND}.npy", y)


def test_sliding_window_prediction_of_a_real_case_scores_as_under_tensorflow(shipped):
    """The model card's Dice on this case was computed with TensorFlow (and tests/test_pretrained.py checks that
    TensorFlow still gives it): this backend must agree to 1e-3. For a fold ensemble the card's score is the
    out-of-fold one, given again by the file of the fold that held the case out (pretrained.card_case)."""
    from brats_keras import io as bio
    from brats_keras.evaluation import region_scores
    from brats_keras.inference import Predictor
    from brats_keras.pretrained import card_case, pretrained_path

    require_shared(REAL)
    case = [c for c in bio.find_cases(REAL / CASE)][0]
    ref = card_case(CASE)  # model.keras, or the fold files (one per recipe) of the shipped ensemble that held it out
    if ref["models"] == [pretrained_path()]:  # the network the fixture loaded already
        predictor = Predictor(shipped, info=read_info(ref["model"]), tta=ref["tta"], overlap=ref["overlap"])
    else:
        predictor = Predictor(ref["models"], tta=ref["tta"], overlap=ref["overlap"])
    pred = predictor.predict_case(case)
    truth = bio.load_classes(case.seg)
    scores = region_scores(pred["classes"], truth)
    card = ref["scores"]
    got = {r: scores[r]["dice"] for r in ("WT", "TC", "ET")}
    if OUT is not None:
        (OUT / f"dice_{BACKEND}.json").write_text(json.dumps({"dice": got, "seconds": pred["seconds"]}))
    for r in ("WT", "TC", "ET"):
        assert abs(got[r] - card[r]["dice"]) <= 1e-3, (r, got[r], card[r]["dice"])


def test_load_pretrained_and_fine_tune_one_step(shipped):
    """Last in the file: it changes the shared model's weights."""
    before = [np.array(w) for w in shipped.get_weights()]
    shipped.compile(optimizer=keras.optimizers.Adam(1e-4), loss=get_loss("dice+bce", "regions"))
    x = np.random.default_rng(3).standard_normal((1, 16, 16, 16, 4)).astype(np.float32)
    y = (x[..., :3] > 1.0).astype(np.float32)
    assert np.isfinite(float(shipped.train_on_batch(x, y)))
    after = shipped.get_weights()
    assert any(not np.array_equal(a, b) for a, b in zip(before, after))
