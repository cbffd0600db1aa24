"""Deep supervision: the auxiliary outputs of the U-Nets, their loss weights, training, resume, and every path that
predicts or ships a model seeing the main output alone."""
import json

import numpy as np
import pytest

import brats_keras  # noqa: F401  (before keras)
import keras

from brats_keras.checkpoint import load_model, read_info
from brats_keras.cli import main as cli_main
from brats_keras.deep_supervision import MainOutputLogs, compile_arguments, loss_weights, repeat_targets
from brats_keras.losses import get_loss
from brats_keras.metrics import report_metrics
from brats_keras.models import build_model, main_output
from brats_keras.runs import read_log
from brats_keras.training import TrainConfig, train

from conftest import counting_batches, write_converted_cases


def tiny(name="unet3d", n=0, output="regions", depth=3, **kw):
    return build_model(name, in_channels=2, output=output, base_filters=4, depth=depth, norm="instance",
                       deep_supervision=n, **kw)


def batch(n=2, size=16, channels=2, seed=0):
    return np.random.default_rng(seed).standard_normal((n, size, size, size, channels)).astype(np.float32)


# ----------------------------------------------------------------------------- the model
@pytest.mark.parametrize("name", ["unet3d", "residual_unet"])
@pytest.mark.parametrize("n", [1, 2])
def test_outputs_are_full_size_main_first_and_the_rest_is_the_plain_model(name, n):
    base, model = tiny(name, 0), tiny(name, n)
    assert len(model.outputs) == n + 1
    assert model.output_names == ["head_sigmoid"] + [f"aux{k}_sigmoid" for k in range(1, n + 1)]
    assert all(tuple(o.shape) == (None, None, None, None, 3) for o in model.outputs)
    main = main_output(model)
    # the main output is the plain model: same layers in the same order, same weight shapes
    assert [layer.name for layer in main.layers] == [layer.name for layer in base.layers]
    assert [w.shape for w in main.weights] == [w.shape for w in base.weights]
    assert len(model.weights) == len(base.weights) + 2 * n  # each head: a 1x1x1 kernel and a bias
    assert all(a is b for a, b in zip(main.weights, [w for w in model.weights if not w.path.startswith("aux")]))
    x = batch()
    outs = [keras.ops.convert_to_numpy(o) for o in model(x, training=False)]
    np.testing.assert_allclose(keras.ops.convert_to_numpy(main(x, training=False)), outs[0], rtol=1e-6, atol=1e-6)
    for k, aux in enumerate(outs[1:], start=1):
        assert aux.shape == (2, 16, 16, 16, 3) and aux.dtype == np.float32
        f = 2**k  # nearest up-sampling: constant over f x f x f blocks
        coarse = aux[:, ::f, ::f, ::f]
        np.testing.assert_array_equal(aux, coarse.repeat(f, 1).repeat(f, 2).repeat(f, 3))
    assert main_output(base) is base


def test_softmax_auxiliary_outputs_are_probabilities_in_float32_under_mixed_precision():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = tiny(n=2, output="softmax")
    finally:
        keras.mixed_precision.set_global_policy("float32")
    for out in model(batch(n=1), training=False)[1:]:
        out = keras.ops.convert_to_numpy(out)
        assert out.dtype == np.float32 and out.shape == (1, 16, 16, 16, 4)
        np.testing.assert_allclose(out.sum(-1), 1.0, atol=1e-5)
    # what ships: one output, computing in float32
    from brats_keras.export import float32_copy

    shipped = float32_copy(main_output(model))
    assert len(shipped.outputs) == 1 and {layer.dtype_policy.name for layer in shipped.layers} == {"float32"}


def test_the_builder_refuses_more_heads_than_decoder_levels_below_full_resolution():
    with pytest.raises(ValueError, match="deep_supervision 2 needs a depth above 2"):
        tiny(n=2, depth=2)
    with pytest.raises(ValueError, match="deep_supervision must be a number"):
        tiny(n=-1)


# ----------------------------------------------------------------------------- the loss
@pytest.mark.parametrize("n, expected", [(0, [1.0]), (1, [2 / 3, 1 / 3]), (2, [4 / 7, 2 / 7, 1 / 7]),
                                         (3, [8 / 15, 4 / 15, 2 / 15, 1 / 15])])
def test_loss_weights_known_answers(n, expected):
    assert loss_weights(n) == pytest.approx(expected)


def test_the_loss_is_the_weighted_sum_of_each_outputs_loss_and_metrics_see_the_main_output():
    model = tiny(n=2, depth=3)
    model.compile(optimizer="adam", **compile_arguments(get_loss("dice+bce", output="regions"),
                                                        report_metrics("regions"), 3))
    x = batch()
    y = (x[..., :1] > 0.3).repeat(3, -1).astype(np.float32)
    logs = model.evaluate(x, (y, y, y), verbose=0, return_dict=True)
    parts = [logs["head_sigmoid_loss"], logs["aux1_sigmoid_loss"], logs["aux2_sigmoid_loss"]]
    assert logs["loss"] == pytest.approx(4 / 7 * parts[0] + 2 / 7 * parts[1] + 1 / 7 * parts[2], rel=1e-5)
    main = main_output(model)
    main.compile(loss=get_loss("dice+bce", output="regions"), metrics=report_metrics("regions"))
    plain = main.evaluate(x, y, verbose=0, return_dict=True)
    assert plain["loss"] == pytest.approx(logs["head_sigmoid_loss"], rel=1e-5)
    assert plain["dice_WT"] == pytest.approx(logs["head_sigmoid_dice_WT"], rel=1e-5)
    assert not any(k.startswith("aux") and "dice" in k for k in logs)  # no metrics on the auxiliary outputs
    renamed = {f"val_{k}": v for k, v in logs.items()} | logs
    MainOutputLogs("head_sigmoid").on_epoch_end(0, renamed)
    assert renamed["dice_WT"] == logs["head_sigmoid_dice_WT"] and renamed["val_dice_WT"] == logs["head_sigmoid_dice_WT"]
    assert "head_sigmoid_loss" in renamed and "val_aux2_sigmoid_loss" in renamed and "head_sigmoid_dice_WT" not in renamed


def test_repeat_targets_gives_a_label_copy_per_output():
    inner = counting_batches(3, 1)
    feed = repeat_targets(inner, 3)
    x, ys = feed[2]
    assert len(feed) == 3 and x[0, 0] == 20 and len(ys) == 3 and all(y[0, 0] == -20 for y in ys)
    feed.on_epoch_end()
    assert inner.ends == 1 and repeat_targets(inner, 1) is inner



def test_whole_case_validation_builds_the_main_output_once_and_predicts_with_the_current_weights(tmp_path,
                                                                                                monkeypatch):
    """The whole-case validation built a main-output model of the deep-supervision model every validation epoch;
    it builds it once per model now. The view shares the model's weights: after a weight change it scores as a
    freshly built one does."""
    from brats_keras import io as bio
    from brats_keras import models
    from brats_keras.training import whole_case_callback

    from conftest import write_small_case

    write_small_case(tmp_path, "c0", seed=3)
    cases = bio.find_cases(tmp_path)
    info = {"modalities": ["flair", "t1ce"], "scale": "zscore", "output": "regions"}
    real, built = models.main_output, []

    def counting(model):
        if isinstance(model, keras.Model) and len(model.outputs) > 1:  # a build, not the one-output pass-through
            built.append(model)
        return real(model)

    monkeypatch.setattr(models, "main_output", counting)
    model = tiny(n=1)
    callback = whole_case_callback(cases, info, patch_size=16)
    callback.set_model(model)
    first, second = {}, {}
    callback.on_epoch_end(0, first)
    callback.on_epoch_end(1, second)
    assert built == [model] and set(first) == {"val_case_dice_WT", "val_case_dice_TC", "val_case_dice_ET",
                                               "val_case_dice_mean"}
    assert second == first  # same weights, same scores
    conv = model.get_layer("head_conv")  # every voxel in every region: the scores must move
    kernel, bias = conv.get_weights()
    conv.set_weights([np.zeros_like(kernel), np.full_like(bias, 20.0)])
    changed, fresh = {}, {}
    callback.on_epoch_end(2, changed)
    assert built == [model] and changed != first
    other = whole_case_callback(cases, info, patch_size=16)
    other.set_model(model)
    other.on_epoch_end(0, fresh)
    assert built == [model, model] and changed == fresh
    # another model object (a resumed or rebuilt model given to the same callback): its own main output
    replaced = tiny(n=1)
    callback.set_model(replaced)
    callback.on_epoch_end(3, {})
    assert built == [model, model, replaced]


# ----------------------------------------------------------------------------- training, resume, prediction
@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """5 small converted cases and two fold runs of a 2-fold cross-validation with one auxiliary output: fold 0
    trains 2 steps with whole-case validation, fold 1 one step."""
    root = tmp_path_factory.mktemp("deepsup")
    write_converted_cases(root, 5)
    out = []
    for k in range(2):
        cfg = TrainConfig(data=str(root / "conv"), out=str(root / f"fold{k}"), base_filters=4, depth=2,
                          norm="instance", output="regions", loss="dice+bce", patch_size=16, batch_size=2, epochs=1,
                          steps_per_epoch=2 - k, val_steps=1, verbose=0, mixed_precision="off", folds=2, fold=k,
                          split_seed=7, deep_supervision=1, whole_case_every=1 - k)
        train(cfg)
        out.append(root / f"fold{k}")
    return root, out


def test_a_run_records_its_deep_supervision_and_logs_the_main_outputs_metrics(runs):
    root, (run, _) = runs
    assert json.loads((run / "config.json").read_text())["deep_supervision"] == 1
    assert read_info(run / "checkpoints" / "last.keras")["deep_supervision"] == 1
    (row,) = read_log(run)
    assert {"loss", "val_loss", "dice_WT", "val_dice_WT", "head_sigmoid_loss", "aux1_sigmoid_loss",
            "val_aux1_sigmoid_loss"} <= set(row)
    assert not any(k.startswith(("head_sigmoid_dice", "val_head_sigmoid_dice")) for k in row)
    assert np.isfinite(row["val_case_dice_mean"])  # whole-case validation on the main output
    assert row["loss"] == pytest.approx(2 / 3 * row["head_sigmoid_loss"] + 1 / 3 * row["aux1_sigmoid_loss"],
                                        rel=1e-3)
    model, _ = load_model(run / "checkpoints" / "last.keras", compile=False)
    assert len(model.outputs) == 2  # the checkpoint keeps the auxiliary head for --resume


def test_resume_continues_with_every_output_and_its_loss_weights(runs, tmp_path):
    import shutil

    root, (run, _) = runs
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    res = train(TrainConfig(epochs=2), resume=copy)
    log = read_log(copy)
    assert [int(r["epoch"]) for r in log] == [0, 1] and np.isfinite(log[1]["aux1_sigmoid_loss"])
    model = res["model"]
    assert len(model.outputs) == 2 and int(keras.ops.convert_to_numpy(model.optimizer.iterations)) == 4
    assert model.get_compile_config()["loss_weights"] == pytest.approx([2 / 3, 1 / 3])
    assert log[1]["loss"] == pytest.approx(2 / 3 * log[1]["head_sigmoid_loss"] + 1 / 3 * log[1]["aux1_sigmoid_loss"],
                                           rel=1e-3)


def test_predictor_crossval_and_ensemble_see_one_output(runs, tmp_path):
    from brats_keras import io as bio
    from brats_keras.crossval import crossval_predict
    from brats_keras.ensemble import ensemble_from_runs
    from brats_keras.inference import Predictor

    root, fold_runs = runs
    last = fold_runs[0] / "checkpoints" / "last.keras"
    pred = Predictor(last, postprocess=False)
    assert len(pred.model.outputs) == 1 and pred.n_out == 3
    case = bio.find_cases(root / "src")[0]
    out = pred.predict_case(case, return_probs=True)
    assert out["classes"].shape == bio.load_classes(case.seg).shape
    assert out["probs"].shape == out["classes"].shape + (3,)
    res = crossval_predict(fold_runs, tmp_path / "cv", progress=False)
    assert sorted(res["cases"]) == [f"c{i}" for i in range(5)]
    src, _ = load_model(last, compile=False)
    x = batch(n=1, channels=3)
    expected = keras.ops.convert_to_numpy(src(x, training=False)[0])
    written = ensemble_from_runs(fold_runs, tmp_path / "ens", log=lambda line: None)
    fold0, info = load_model(written[0], compile=False)
    assert info["deep_supervision"] == 1
    assert len(fold0.outputs) == 1 and not any(layer.name.startswith("aux") for layer in fold0.layers)
    got = keras.ops.convert_to_numpy(fold0(x, training=False))
    assert got.shape == (1, 16, 16, 16, 3)
    np.testing.assert_allclose(got, expected, atol=0.02)  # float16 weights
    assert len(Predictor(tmp_path / "ens").models) == 2


def test_export_writes_the_main_output_alone(runs, tmp_path):
    from brats_keras.export import export_model, load_exported

    root, (run, _) = runs
    exported, info = load_exported(export_model(run / "checkpoints" / "last.keras", tmp_path / "exp"), trust=True)
    assert exported.info["export"]["n_out"] == 3 and info["deep_supervision"] == 1
    out = np.asarray(exported.predict_on_batch(batch(n=1, channels=3)))
    assert out.shape == (1, 16, 16, 16, 3)


def test_init_from_moves_the_shared_layers_between_runs_with_and_without_deep_supervision(runs):
    from brats_keras.checkpoint import init_weights

    root, (run, _) = runs
    last = run / "checkpoints" / "last.keras"
    src, info = load_model(last, compile=False)
    plain = build_model("unet3d", in_channels=3, output="regions", base_filters=4, depth=2, norm="instance")
    init_weights(plain, last, info)
    for a, b in zip(plain.get_weights(), main_output(src).get_weights()):
        np.testing.assert_array_equal(a, b)
    deep = build_model("unet3d", in_channels=3, output="regions", base_filters=4, depth=2, norm="instance",
                       deep_supervision=1)
    head = [w.numpy().copy() for w in deep.weights if w.path.startswith("aux")]
    init_weights(deep, last, info)  # from a deep-supervision checkpoint: its auxiliary head is not copied
    assert all(np.array_equal(a, w.numpy()) for a, w in zip(head, [w for w in deep.weights if w.path.startswith("aux")]))
    for a, b in zip(main_output(deep).get_weights(), main_output(src).get_weights()):
        np.testing.assert_array_equal(a, b)


# ----------------------------------------------------------------------------- refusals
@pytest.mark.parametrize("argv, message", [
    (["--model", "vnet", "--deep-supervision", "1"], "--deep-supervision works with --model unet3d or residual_unet "
                                                     "or unet2d only, not vnet"),
    (["--depth", "2", "--deep-supervision", "2"], "deep_supervision 2 needs a depth above 2"),
    (["--deep-supervision", "-1"], "--deep-supervision -1: must be a whole number >= 0"),
])
def test_the_cli_refuses_deep_supervision_it_cannot_build_in_one_line_before_the_run_folder(runs, tmp_path, capsys,
                                                                                             argv, message):
    root, _ = runs
    out = tmp_path / "run"
    rc = cli_main(["train", "--data", str(root / "conv"), "--out", str(out), "--base-filters", "4", "--depth", "3",
                   "--patch-size", "16", "--epochs", "1", "--val", "1", "--mixed-precision", "off", *argv])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_the_model_card_describes_the_deep_supervision():
    from brats_keras.model_card import loss_text, train_command

    cfg = {**TrainConfig.from_recipe("pretrained").__dict__, "deep_supervision": 2}
    assert loss_text(cfg) == ("dice+bce on the main output and on 2 deep-supervision outputs (decoder levels at 1/2 "
                              "and 1/4 resolution, up-sampled; weights 4/7, 2/7, 1/7; --deep-supervision 2)")
    assert loss_text({**cfg, "deep_supervision": 0}) == "dice+bce"
    assert " --deep-supervision 2" in train_command(cfg)


def test_the_multi_worker_feed_carries_a_label_copy_per_output(runs):
    import tensorflow as tf

    from brats_keras.data import PatchDataset
    from brats_keras.distributed import _distributed_feed

    root, _ = runs
    ds = PatchDataset(root / "conv", patch_size=16, batch_size=2, output="regions", steps_per_epoch=1)
    feed = _distributed_feed(tf.distribute.get_strategy(), repeat_targets(ds, 2), per_replica=1)
    x, ys = next(iter(feed))
    assert tuple(x.shape) == (1, 16, 16, 16, 3) and len(ys) == 2
    assert all(tuple(y.shape) == (1, 16, 16, 16, 3) for y in ys)
    np.testing.assert_array_equal(ys[0].numpy(), ds[0][1][:1])


def test_the_tf_data_feed_carries_a_label_copy_per_output(runs):
    from brats_keras.data import PatchDataset, tf_dataset

    root, _ = runs
    ds = PatchDataset(root / "conv", patch_size=16, batch_size=2, output="regions", steps_per_epoch=1)
    x, ys = next(iter(repeat_targets(tf_dataset(ds), 3)))
    assert len(ys) == 3 and all(np.array_equal(y.numpy(), ds[0][1]) for y in ys)
