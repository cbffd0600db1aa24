"""Training runs: files written, checkpoints carrying preprocessing, resume, precision choice, CLI."""
import json

import numpy as np
import pytest

from brats_keras.checkpoint import read_info
from brats_keras.cli import main as cli_main
from brats_keras.io import BratsInputError
from brats_keras.runs import read_log
from brats_keras.precision import choose_precision
from brats_keras.training import TrainConfig, train

from conftest import write_converted_cases


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    write_converted_cases(root, 5)
    return root / "conv"


def tiny(data_dir, out, **kw):
    base = dict(data=str(data_dir), out=str(out), base_filters=4, depth=2, norm="instance", patch_size=16,
                batch_size=2, epochs=2, steps_per_epoch=2, val_steps=1, val=1, verbose=0, mixed_precision="off")
    base.update(kw)
    return TrainConfig(**base)


def test_train_writes_run_folder_and_resumes(data_dir, tmp_path):
    run = tmp_path / "run"
    res = train(tiny(data_dir, run, output="regions", loss="dice+bce"))
    for name in ["config.json", "split.json", "log.csv", "loss_curves.png", "checkpoints/best.keras",
                 "checkpoints/last.keras"]:
        assert (run / name).exists(), name
    split = json.loads((run / "split.json").read_text())
    assert len(split["val"]) == 1 and len(split["train"]) == 4
    assert len(res["history"]) == 2 and all(np.isfinite(h["loss"]) for h in res["history"])
    info = read_info(run / "checkpoints" / "best.keras")
    assert info["modalities"] == ["flair", "t1ce", "t2"] and info["scale"] == "zscore"
    assert info["output"] == "regions" and info["patch_size"] == 16
    # resume continues where it stopped, with the same split and config
    res2 = train(TrainConfig(epochs=3), resume=run)
    log = read_log(run)
    assert [int(r["epoch"]) for r in log] == [0, 1, 2]
    assert json.loads((run / "split.json").read_text()) == split
    assert res2["model"].optimizer.iterations.numpy() == 6  # optimizer state came back: 2 + 2 + 2 steps


def test_softmax_report_defaults_and_cli(data_dir, tmp_path, capsys):
    rc = cli_main(["train", "--data", str(data_dir), "--out", str(tmp_path / "cli"), "--base-filters", "4",
                   "--depth", "2", "--patch-size", "16", "--batch-size", "2", "--epochs", "1",
                   "--steps-per-epoch", "1", "--val-steps", "1", "--val", "1", "--mixed-precision", "off"])
    assert rc == 0
    cfg = json.loads((tmp_path / "cli" / "config.json").read_text())
    # the report's defaults where not overridden
    assert cfg["loss"] == "dice+tversky" and cfg["output"] == "softmax" and cfg["lr"] == 1e-3
    assert cfg["min_lr"] == 1e-6 and cfg["norm"] == "batch"
    assert cfg["task"]["name"] == "glioma2021"  # a conversion that records no task is of the default one
    assert "run folder" in capsys.readouterr().out
    log = read_log(tmp_path / "cli")
    assert {"loss", "val_loss", "dice_NCR", "dice_ED", "dice_ET", "dice_WT", "dice_TC", "mean_dice",
            "accuracy", "precision", "recall"} <= set(log[0])


def test_whole_case_validation_is_logged(data_dir, tmp_path):
    run = tmp_path / "wc"
    train(tiny(data_dir, run, output="regions", loss="dice+bce", whole_case_every=2, epochs=2))
    log = read_log(run)
    assert np.isnan(log[0]["val_case_dice_mean"]) and np.isfinite(log[1]["val_case_dice_mean"])
    assert 0.0 <= log[1]["val_case_dice_WT"] <= 1.0


def test_cli_trains_unet2d_on_axial_slices_with_whole_case_validation(data_dir, tmp_path, capsys):
    """`train --recipe unet2d --patch-size 16` (the recipe's unet2d, region head, dice+bce, at a tiny size, tumor
    patches centred class by class):
    16 x 16 slices; the model file records the window (16, 16, 1) that prediction slides, and the whole
    validation case is predicted slice by slice during training."""
    run = tmp_path / "u2d"
    rc = cli_main(["train", "--recipe", "unet2d", "--data", str(data_dir), "--out", str(run), "--base-filters", "4",
                   "--depth", "2", "--patch-size", "16", "--batch-size", "4", "--epochs", "1", "--steps-per-epoch",
                   "2", "--val-steps", "1", "--val", "1", "--whole-case-every", "1", "--spatial-augment", "0.5",
                   "--foreground-sampling", "classes", "--mixed-precision", "off"])
    assert rc == 0, capsys.readouterr().err
    assert json.loads((run / "config.json").read_text())["foreground_sampling"] == "classes"
    info = read_info(run / "checkpoints" / "last.keras")
    assert info["model"] == "unet2d" and info["patch_size"] == [16, 16, 1] and info["output"] == "regions"
    log = read_log(run)
    assert np.isfinite(log[0]["loss"]) and 0.0 <= log[0]["val_case_dice_WT"] <= 1.0


@pytest.mark.parametrize("patch", [(1, 16, 16), (16, 16, 16)])
def test_unet2d_refuses_a_patch_that_is_not_a_slice_in_one_line(data_dir, tmp_path, patch):
    with pytest.raises(BratsInputError) as err:
        train(tiny(data_dir, tmp_path / "run", model="unet2d", patch_size=patch))
    assert str(err.value) == (f"--patch-size {patch}: --model unet2d trains on axial slices: give N (N x N slices) or "
                              "three sizes with 1 along array axis 2 (the superior axis)")
    assert not (tmp_path / "run").exists()


def test_precision_choice(monkeypatch):
    import brats_keras.precision as t

    assert choose_precision("off") == "float32"
    assert choose_precision("bfloat16") == "mixed_bfloat16"
    assert choose_precision("float16") == "mixed_float16"
    with pytest.raises(ValueError, match="unknown mixed precision 'fp8'"):
        choose_precision("fp8")
    monkeypatch.setattr(t, "has_gpu", lambda: False)
    monkeypatch.setattr(t, "cpu_has_bf16", lambda: True)
    assert choose_precision("auto") == "mixed_bfloat16"
    monkeypatch.setattr(t, "cpu_has_bf16", lambda: False)
    assert choose_precision("auto") == "float32"
    monkeypatch.setattr(t, "has_gpu", lambda: True)
    assert choose_precision("auto") == "mixed_float16"


def test_poly_schedule(data_dir, tmp_path):
    from brats_keras.training import poly_lr

    cfg = TrainConfig(lr=1e-3, epochs=10, min_lr=1e-6)
    assert poly_lr(0, cfg) == pytest.approx(1e-3)
    assert poly_lr(5, cfg) == pytest.approx(1e-3 * 0.5 ** 0.9)
    assert poly_lr(10, cfg) == pytest.approx(1e-6)
    timed = TrainConfig(lr=1e-3, epochs=1000, time_limit=4.0)
    assert poly_lr(1, timed, elapsed_minutes=2.0) == pytest.approx(1e-3 * 0.5 ** 0.9)  # half the time budget
    assert poly_lr(1, timed, elapsed_minutes=5.0) == pytest.approx(1e-6)  # past it
    run = tmp_path / "poly"
    train(tiny(data_dir, run, lr=1e-2, epochs=2, lr_schedule="poly", spatial_augment=0.5))
    lrs = [r["learning_rate"] for r in read_log(run)]
    assert lrs == pytest.approx([1e-2, 1e-2 * 0.5 ** 0.9], rel=1e-5)
    with pytest.raises(ValueError, match="unknown lr_schedule"):
        train(tiny(data_dir, tmp_path / "bad", lr_schedule="cosine"))


def test_bad_settings():
    with pytest.raises(ValueError, match="unknown training settings: colour"):
        TrainConfig.from_dict({"colour": "red"})
    assert cli_main(["train", "--out", "x"]) == 2


def test_from_recipe_is_defaults_then_recipe_then_overrides():
    from dataclasses import asdict

    from brats_keras.training import RECIPES

    cfg = TrainConfig.from_recipe("demo", epochs=3, norm="instance", data="conv")
    assert asdict(cfg) == {**asdict(TrainConfig()), **RECIPES["demo"], "epochs": 3, "norm": "instance", "data": "conv"}
    assert cfg.output == "regions" and cfg.patch_size == 48  # from the recipe
    assert TrainConfig.from_recipe() == TrainConfig() == TrainConfig.from_recipe("report")
    with pytest.raises(ValueError) as err:
        TrainConfig.from_recipe("fast")
    assert str(err.value) == "unknown recipe 'fast': use one of report, demo, pretrained, unet2d"
    with pytest.raises(ValueError, match="unknown training settings: colour"):
        TrainConfig.from_recipe("demo", colour="red")
    # config.json of runs saved while TrainConfig had an ``extra`` dict still load (resume)
    assert TrainConfig.from_dict({**asdict(TrainConfig()), "extra": {}}) == TrainConfig()
    with pytest.raises(ValueError, match="unknown training settings: extra"):
        TrainConfig.from_dict({"extra": {"monitor": "val_loss"}})


def test_cli_head_names_the_output_and_old_output_still_works(data_dir, tmp_path, capsys):
    """train --head softmax|regions; the old train --output still works with a one-line deprecation warning."""
    base = ["train", "--data", str(data_dir), "--base-filters", "4", "--depth", "2", "--patch-size", "16",
            "--batch-size", "2", "--epochs", "1", "--steps-per-epoch", "1", "--val", "1", "--mixed-precision", "off",
            "--no-tensorboard", "--loss", "dice+bce"]
    assert cli_main(base + ["--out", str(tmp_path / "head"), "--head", "regions"]) == 0
    assert "deprecated" not in capsys.readouterr().err
    assert cli_main(base + ["--out", str(tmp_path / "old"), "--output", "regions"]) == 0
    warned = [line for line in capsys.readouterr().err.splitlines() if "deprecated" in line]
    assert warned == ["warning: brats-keras train --output is deprecated: use --head (softmax or regions)"]
    for name in ("head", "old"):
        assert json.loads((tmp_path / name / "config.json").read_text())["output"] == "regions"
        assert read_info(tmp_path / name / "checkpoints" / "best.keras")["output"] == "regions"
    # --head and --output that disagree, or an unknown recipe: one line, exit 2, no run folder
    assert cli_main(base + ["--out", str(tmp_path / "both"), "--head", "softmax", "--output", "regions"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "error: --head softmax and --output regions disagree: give --head only")
    assert cli_main(base + ["--out", str(tmp_path / "r"), "--recipe", "fast"]) == 2
    assert capsys.readouterr().err.strip() == "error: unknown recipe 'fast': use one of report, demo, pretrained, unet2d"
    assert not (tmp_path / "both").exists() and not (tmp_path / "r").exists()


def test_bad_data_or_split_is_one_line_and_writes_nothing(data_dir, tmp_path, capsys):
    """A missing data folder or an empty validation split: exit 2, one line naming the folder, no run folder."""
    base = ["train", "--base-filters", "4", "--depth", "2", "--patch-size", "16", "--epochs", "1"]
    assert cli_main(base + ["--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "r1")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(tmp_path / "nowhere") in err[0]
    assert cli_main(base + ["--data", str(data_dir), "--val", "0", "--out", str(tmp_path / "r2")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {data_dir}: no validation case: use --val with at least one case"]
    assert not (tmp_path / "r1").exists() and not (tmp_path / "r2").exists()


def test_mirrored_step_matches_single_device():
    """One step on two logical CPU devices (tf.distribute.MirroredStrategy) equals the one-device step."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root), "TF_CPP_MIN_LOG_LEVEL": "3"}
    res = subprocess.run([sys.executable, str(root / "tests" / "scripts" / "mirrored_step.py")], env=env,
                         capture_output=True, text=True, timeout=600)
    line = [s for s in res.stdout.splitlines() if s.startswith("REPLICAS")]
    assert line, res.stdout[-2000:] + res.stderr[-2000:]
    words = line[0].split()
    assert words[1] == "2"
    maxdiff, moved = float(words[3]), float(words[5])
    assert moved > 1e-4 and maxdiff < 1e-6 * max(1.0, moved * 1e3)


def test_init_from_copies_weights_and_refuses_mismatches(data_dir, tmp_path, capsys):
    """--init-from starts a run from another model's weights (fine-tuning) and checks they fit."""
    src = train(tiny(data_dir, tmp_path / "src", output="regions", loss="dice+bce", epochs=1))["best"]
    from brats_keras.checkpoint import load_model

    source, _ = load_model(src, compile=False)
    # one step with a learning rate of 1e-30: the saved model holds the source weights (to 1e-20)
    rc = cli_main(["train", "--data", str(data_dir), "--out", str(tmp_path / "ft"), "--base-filters", "4",
                   "--depth", "2", "--norm", "instance", "--head", "regions", "--loss", "dice+bce",
                   "--patch-size", "16", "--batch-size", "2", "--epochs", "1", "--steps-per-epoch", "1", "--val", "1",
                   "--lr", "1e-30", "--mixed-precision", "off", "--init-from", str(src)])
    assert rc == 0
    assert json.loads((tmp_path / "ft" / "config.json").read_text())["init_from"] == str(src)
    copied, _ = load_model(tmp_path / "ft" / "checkpoints" / "best.keras", compile=False)
    fresh = train(tiny(data_dir, tmp_path / "fresh", output="regions", loss="dice+bce", epochs=1, steps_per_epoch=1,
                       lr=1e-30))["model"]
    for a, b in zip(source.get_weights(), copied.get_weights()):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-20)
    assert any(not np.allclose(a, c, rtol=0, atol=1e-6) for a, c in zip(source.get_weights(), fresh.get_weights()))
    # another architecture, another output, or the shipped model on 3-modality data: one-line errors
    with pytest.raises(ValueError, match="architecture differs"):
        train(tiny(data_dir, tmp_path / "e1", output="regions", loss="dice+bce", base_filters=8, epochs=1,
                   init_from=str(src)))
    with pytest.raises(ValueError, match="trained with output='regions' but this run uses 'softmax'"):
        train(tiny(data_dir, tmp_path / "e2", output="softmax", epochs=1, init_from=str(src)))
    from brats_keras.pretrained import pretrained_path  # model.keras, or fold 0 of a shipped ensemble

    shipped = pretrained_path().name.replace(".", r"\.")
    with pytest.raises(ValueError, match=shipped + r": trained with modalities=\['flair', 't1', 't1ce', 't2'\]"):
        train(tiny(data_dir, tmp_path / "e3", output="regions", epochs=1, init_from="pretrained"))
    # refused before anything is written: no run folder for any of them
    assert not any((tmp_path / e).exists() for e in ("e1", "e2", "e3"))
    # on the command line: a one-line error naming the file, exit status 2, no run folder
    rc = cli_main(["train", "--data", str(data_dir), "--out", str(tmp_path / "e4"), "--base-filters", "4",
                   "--depth", "2", "--patch-size", "16", "--epochs", "1", "--val", "1",
                   "--init-from", str(tmp_path / "missing.keras")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err == f"error: {tmp_path / 'missing.keras'}: --init-from model file not found"
    assert not (tmp_path / "e4").exists()


def test_train_trains_the_model_the_user_built(data_dir, tmp_path):
    """train(cfg, model=...) trains that network (compiled with cfg's loss when it is not), not cfg.model's."""
    import keras

    from brats_keras.checkpoint import load_model
    from brats_keras.models import unet3d

    keras.utils.set_random_seed(0)
    mine = unet3d(in_channels=3, base_filters=2, depth=2, norm="none", output="softmax")
    before = [w.copy() for w in mine.get_weights()]
    res = train(tiny(data_dir, tmp_path / "run", epochs=1), model=mine)
    assert mine.compiled and mine.optimizer.iterations.numpy() == 2  # cfg's two steps
    assert any(not np.array_equal(a, b) for a, b in zip(before, mine.get_weights()))  # trained in place
    saved, _ = load_model(res["last"], compile=False)
    assert saved.count_params() == mine.count_params()
    assert saved.count_params() != unet3d(in_channels=3, base_filters=4, depth=2, norm="none").count_params()


@pytest.mark.parametrize("channels, output, message", [
    (2, "softmax", "the model given takes 2 channels, the data at "),
    (3, "regions", "the model given"),
])
def test_train_refuses_a_given_model_that_does_not_fit_before_the_run_folder(data_dir, tmp_path, channels, output,
                                                                             message):
    from brats_keras.io import BratsInputError
    from brats_keras.models import unet3d

    mine = unet3d(in_channels=channels, base_filters=2, depth=2, norm="none", output=output)
    with pytest.raises(BratsInputError, match=message):
        train(tiny(data_dir, tmp_path / "run", epochs=1), model=mine)
    assert not (tmp_path / "run").exists()


# ----------------------------------------------------------------------------- another task
@pytest.fixture(scope="module")
def post_dir(data_dir, tmp_path_factory):
    """The conversion above made one of the post-treatment task by hand: a resection cavity (class 4) in a corner
    of every case and the task in the manifest (the classes 1-3 of both tasks are the same indices)."""
    import shutil

    from brats_keras.io import file_checksum
    from brats_keras.tasks import TASKS

    root = tmp_path_factory.mktemp("post") / "conv"
    shutil.copytree(data_dir, root)
    manifest = json.loads((root / "manifest.json").read_text())
    for entry in manifest["cases"].values():
        path = root / entry["mask"]
        mask = np.load(path)
        mask[:6, :6, :6] = 4
        np.save(path, mask)
        entry["checksums"]["mask"] = file_checksum(path)
    manifest["task"] = TASKS["glioma2024-post"].to_dict()
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root


def test_a_run_of_another_task_records_it_and_refuses_data_of_another(post_dir, data_dir, tmp_path, capsys):
    """The post-treatment task's run: a 4-region head, its metrics (dice_RC), the task in config.json and in every
    checkpoint; resumed on 2021 data or used by --init-from for a 2021 run: one line naming both tasks."""
    from brats_keras.checkpoint import info_task, load_model
    from brats_keras.io import BratsInputError
    from brats_keras.tasks import TASKS

    post, run = TASKS["glioma2024-post"], tmp_path / "post"
    res = train(tiny(post_dir, run, output="regions", loss="dice+bce", epochs=1))
    assert json.loads((run / "config.json").read_text())["task"] == post.to_dict()
    for name in ("best.keras", "last.keras"):
        assert read_info(run / "checkpoints" / name)["task"] == post.to_dict()
    model, info = load_model(res["best"])
    assert model.outputs[0].shape[-1] == 4 and info_task(info) == post
    assert {"dice_RC", "val_dice_RC", "val_dice_NETC"} <= set(read_log(run)[0])
    with pytest.raises(BratsInputError) as err:
        train(TrainConfig(epochs=2, data=str(data_dir)), resume=run)
    assert str(err.value) == (f"--resume {run}: a model of task glioma2024-post, but the data at {data_dir} is "
                              "task glioma2021 (other classes or regions): refused")
    rc = cli_main(["train", "--data", str(data_dir), "--out", str(tmp_path / "ft"), "--base-filters", "4",
                   "--depth", "2", "--norm", "instance", "--head", "regions", "--loss", "dice+bce", "--patch-size",
                   "16", "--epochs", "1", "--val", "1", "--mixed-precision", "off", "--init-from", str(res["best"])])
    assert rc == 2 and capsys.readouterr().err.strip() == (
        f"error: --init-from {res['best']}: a model of task glioma2024-post, but this run's data is task "
        "glioma2021 (other classes or regions): refused")
    assert not (tmp_path / "ft").exists() and len(read_log(run)) == 1
