"""Training under faults: resume from anywhere, kills during a checkpoint, unusable model files.

Exit statuses of ``brats-keras train``: 2 for unusable input or settings (one line on stderr naming
the file, nothing written), 0 for success.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest

import brats_keras  # noqa: F401  (before keras: oneDNN)
from brats_keras.checkpoint import load_model, read_state
from brats_keras.cli import main as cli_main
from brats_keras.io import BratsInputError
from brats_keras.runs import read_log
from brats_keras.training import TrainConfig, train

from conftest import write_converted_cases, write_small_case

ROOT = Path(__file__).resolve().parents[1]
EPOCHS, STEPS = 3, 2


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults")
    write_converted_cases(root, 4)
    return root / "conv"


def tiny(data, out, **kw):
    base = dict(data=str(data), out=str(out), base_filters=4, depth=2, norm="instance", patch_size=16,
                batch_size=2, epochs=EPOCHS, steps_per_epoch=STEPS, val_steps=1, val=1, verbose=0,
                mixed_precision="off", output="regions", loss="dice+bce", lr=1e-2)
    base.update(kw)
    return TrainConfig(**base)


def files_under(folder):
    return sorted(str(p.relative_to(folder)) for p in Path(folder).rglob("*"))


# ----------------------------------------------------------------------------- 1. resume continues the folder given
def test_resume_continues_the_folder_given_from_any_cwd_and_after_a_move(data_dir, tmp_path, monkeypatch, capsys):
    made, elsewhere, moved = tmp_path / "made", tmp_path / "elsewhere", tmp_path / "moved"
    for d in (made, elsewhere, moved):
        d.mkdir()
    # a run made with relative paths (data and run folder) from its own working directory
    monkeypatch.chdir(made)
    train(tiny(os.path.relpath(data_dir, made), "run", epochs=1))
    assert json.loads((made / "run" / "config.json").read_text())["data"] == str(data_dir)
    # resumed from another working directory: it trains in made/run, and nothing appears where it was called
    monkeypatch.chdir(elsewhere)
    assert cli_main(["train", "--resume", str(made / "run"), "--epochs", "2"]) == 0
    assert f"run folder: {made / 'run'}" in capsys.readouterr().out
    assert [r["epoch"] for r in read_log(made / "run")] == [0, 1]
    assert files_under(elsewhere) == []
    # a copy moved elsewhere resumes in the copy; the original stays as it was
    before = {p: (made / "run" / p).read_bytes() for p in files_under(made / "run") if (made / "run" / p).is_file()}
    shutil.copytree(made / "run", moved / "copy")
    monkeypatch.chdir(elsewhere)
    res = train(TrainConfig(epochs=3), resume=os.path.relpath(moved / "copy", elsewhere))
    assert Path(res["run"]).resolve() == moved / "copy"
    assert [r["epoch"] for r in read_log(moved / "copy")] == [0, 1, 2]
    assert int(res["model"].optimizer.iterations.numpy()) == 3 * STEPS
    assert json.loads((moved / "copy" / "config.json").read_text())["out"] == os.path.relpath(moved / "copy", elsewhere)
    assert {p: (made / "run" / p).read_bytes() for p in before} == before
    assert files_under(elsewhere) == []


# ----------------------------------------------------------------------------- 2. a kill while saving
@pytest.fixture(scope="module")
def reference(data_dir, tmp_path_factory):
    """An uninterrupted run: its log (one row per epoch) and its best model's weights."""
    run = tmp_path_factory.mktemp("reference") / "run"
    res = train(tiny(data_dir, run))
    assert int(res["model"].optimizer.iterations.numpy()) == EPOCHS * STEPS
    best, _ = load_model(res["best"], compile=False)
    log = read_log(run)
    # the best.keras kill needs a second improvement to land on (the seeded run improves more than once)
    assert len(bests(log)) >= 2, [r["val_loss"] for r in log]
    return {"log": log, "best_weights": best.get_weights()}


def bests(log):
    """Epochs where val_loss reached a new minimum (when best.keras was replaced)."""
    out, low = [], None
    for row in log:
        if low is None or row["val_loss"] < low:
            out.append(int(row["epoch"]))
            low = row["val_loss"]
    return out


@pytest.mark.parametrize("target", ["last.keras", "best.keras", "log.csv"])
def test_kill_during_checkpoint_then_resume_matches_an_uninterrupted_run(target, data_dir, reference, tmp_path):
    run = tmp_path / "run"
    if target == "best.keras":  # the last improvement after epoch 0, so that a stale best.keras is left behind
        nth = len(bests(reference["log"]))
    else:  # the second epoch: a first epoch is complete on disk
        nth = 2
    cfg = json.dumps(asdict(tiny(data_dir, run)))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run([sys.executable, str(ROOT / "tests" / "scripts" / "train_killed.py"), cfg, target, str(nth)],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    # the killed training's lock is left behind: the resume below takes it over (the OS dropped the lock itself)
    pid, holder = (run / ".lock").read_text().split()
    assert pid.isdigit() and holder == "training"
    leftovers = [p.name for p in run.rglob(".*") if p.name != ".lock"]
    assert leftovers and all(p.startswith(f".{target}.") for p in leftovers)  # the fault really struck there
    done = read_state(run / "checkpoints" / "last.keras")["epoch"]
    if target == "last.keras":  # the new checkpoint never landed: last.keras still holds the epoch before
        assert done == nth - 1
    elif target == "best.keras":  # last.keras has the new best, best.keras is stale
        assert read_state(run / "checkpoints" / "best.keras")["epoch"] < done
    else:  # log.csv lacks the epoch last.keras has
        assert len(read_log(run)) == done - 1

    res = train(TrainConfig(epochs=EPOCHS), resume=run)

    log = read_log(run)
    assert [int(r["epoch"]) for r in log] == list(range(EPOCHS))
    assert int(res["model"].optimizer.iterations.numpy()) == EPOCHS * STEPS  # no epoch skipped or repeated
    np.testing.assert_allclose([r["val_loss"] for r in log], [r["val_loss"] for r in reference["log"]], rtol=1e-5)
    # best.keras is the model of the log's best row: its state, its optimizer steps and its weights
    best_epoch = bests(log)[-1]
    best_file = run / "checkpoints" / "best.keras"
    assert read_state(best_file)["epoch"] == best_epoch + 1
    best, _ = load_model(best_file, compile=True)
    assert int(best.optimizer.iterations.numpy()) == (best_epoch + 1) * STEPS
    for a, b in zip(best.get_weights(), reference["best_weights"]):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert list(run.rglob(".*")) == []  # temporary files cleaned


def test_a_log_ahead_of_its_checkpoint_is_cut_back(data_dir, tmp_path):
    """log.csv holding a row for an epoch whose checkpoint never landed: resume redoes that epoch once."""
    run = tmp_path / "run"
    train(tiny(data_dir, run, epochs=1))
    lines = (run / "log.csv").read_text().splitlines()
    (run / "log.csv").write_text("\n".join(lines + [lines[-1].replace("0", "1", 1)]) + "\n")
    res = train(TrainConfig(epochs=2), resume=run)
    assert [int(r["epoch"]) for r in read_log(run)] == [0, 1]
    assert int(res["model"].optimizer.iterations.numpy()) == 2 * STEPS


# ----------------------------------------------------------------------------- 3. unusable model files
def one_line(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def lambda_model(path):
    import keras

    inp = keras.Input((16, 16, 16, 3))
    out = keras.layers.Lambda(lambda x: x * 2.0)(keras.layers.Conv3D(3, 1)(inp))
    keras.Model(inp, out).save(path)
    return path


@pytest.mark.parametrize("kind, expected", [
    ("text", "not a Keras model file"),
    ("corrupt", "not a Keras model file"),
    ("truncated", "not a Keras model file"),
    ("lambda", "Lambda layer"),
    ("missing", "model file not found"),
])
def test_unusable_init_from_is_one_line_exit_2_and_writes_nothing(kind, expected, data_dir, tmp_path, capsys):
    path = tmp_path / {"text": "notes.txt"}.get(kind, f"{kind}.keras")
    if kind == "text":
        path.write_text("these are not weights\n")
    elif kind == "corrupt":
        path.write_bytes(b"\x00garbage, not a zip archive" * 10)
    elif kind in ("lambda", "truncated"):
        lambda_model(path)
        if kind == "truncated":
            path.write_bytes(path.read_bytes()[:600])
    rc = cli_main(["train", "--data", str(data_dir), "--out", str(tmp_path / "run"), "--base-filters", "4",
                   "--depth", "2", "--patch-size", "16", "--epochs", "1", "--val", "1", "--mixed-precision", "off",
                   "--init-from", str(path)])
    line = one_line(capsys)
    assert rc == 2 and line.startswith(f"error: {path}: ") and expected in line
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("kind, expected", [("corrupt", "not a Keras model file"),
                                            ("lambda", "Lambda layer"),
                                            ("missing", "model file not found")])
def test_unusable_predict_model_is_one_line_exit_2(kind, expected, tmp_path, capsys):
    write_small_case(tmp_path / "cases", "p0")
    path = tmp_path / f"{kind}.keras"
    if kind == "corrupt":
        path.write_bytes(b"PK\x03\x04 looks like a zip for four bytes")
    elif kind == "lambda":
        lambda_model(path)
    rc = cli_main(["predict", "--model", str(path), "--input", str(tmp_path / "cases"),
                   "--output", str(tmp_path / "preds"), "--quiet"])
    line = one_line(capsys)
    assert rc == 2 and line.startswith(f"error: {path}: ") and expected in line
    assert not (tmp_path / "preds").exists()


@pytest.mark.parametrize("flags, expected", [
    (["--loss", "bogus"], "error: bad settings: unknown loss 'bogus': use one of "),
    (["--split-file", "{tmp}/split.json"], "error: {tmp}/split.json: not a readable split file (Expecting value"),
    (["--split-file", "{tmp}/nowhere.json"], "error: {tmp}/nowhere.json: not a readable split file ("),
    (["--split-file", "{tmp}/list.json"], "error: {tmp}/list.json: a split file needs 'train' and 'val' lists"),
    # numeric settings: each named with its value, before anything is read or written
    (["--patch-size", "15"], "error: --patch-size 15: must be a multiple of 4 for --model unet3d (--depth 2: one "
                             "halving per level)"),
    (["--patch-size", "0"], "error: --patch-size 0: must be a whole number >= 1"),
    (["--model", "sm_unet", "--patch-size", "16"], "error: --patch-size 16: must be a multiple of 32 for --model "
                                                   "sm_unet (its encoder's five stride-2 steps)"),
    (["--model", "segresnet", "--vae", "--patch-size", "12"], "error: --patch-size 12: must be a multiple of 8 for "
                                                              "--model segresnet (--depth 2: one halving per level, "
                                                              "and one more for --vae)"),
    (["--patch-size", "64"], "error: --patch-size 64: larger than the data: the largest case in {data} is "
                             "40 x 36 x 30 voxels, so at most 40 x 36 x 32 (multiples of 4 that cover it)"),
    (["--model", "unet2d", "--patch-size", "18"], "error: --patch-size 18: must be a multiple of 4 for --model "
                                                  "unet2d (--depth 2: one halving per level)"),
    # a slice is 1 voxel thick along the axial axis, whatever the model's down-sampling
    (["--model", "unet2d", "--patch-size", "44"], "error: --patch-size 44: larger than the data: the largest case in "
                                                  "{data} is 40 x 36 x 30 voxels, so at most 40 x 36 x 30 "),
    (["--batch-size", "0"], "error: --batch-size 0: must be a whole number >= 1"),
    (["--epochs", "0"], "error: --epochs 0: must be a whole number >= 1"),
    (["--epochs", "-1"], "error: --epochs -1: must be a whole number >= 1"),
    (["--steps-per-epoch", "0"], "error: --steps-per-epoch 0: must be a whole number >= 1 (or left out for the "
                                 "default)"),
    (["--val-steps", "-2"], "error: --val-steps -2: must be a whole number >= 1 (or left out for the default)"),
    (["--lr", "-1"], "error: --lr -1.0: must be a number > 0"),
    (["--lr", "0"], "error: --lr 0.0: must be a number > 0"),
    (["--lr", "nan"], "error: --lr nan: must be a number > 0"),
    (["--min-lr=-1e-6"], "error: --min-lr -1e-06: must be a number >= 0"),
    (["--val", "-0.2"], "error: --val -0.2: must be a number >= 0"),
    (["--val", "1.5"], "error: --val 1.5: a fraction of the cases (below 1) or a whole number of cases"),
    (["--test", "-1"], "error: --test -1.0: must be a number >= 0"),
    (["--foreground-ratio", "1.5"], "error: --foreground-ratio 1.5: must be a number in [0, 1]"),
    (["--spatial-augment", "-0.1"], "error: --spatial-augment -0.1: must be a number in [0, 1]"),
    (["--workers", "0"], "error: --workers 0: must be a whole number >= 1"),
    (["--dropout", "1"], "error: --dropout 1.0: must be a number in [0, 1)"),
    (["--depth", "0"], "error: --depth 0: must be a whole number >= 1"),
    (["--time-limit", "0"], "error: --time-limit 0.0: must be a number of minutes > 0 (or left out)"),
    (["--folds", "3", "--fold", "3"], "error: --fold 3: must be below --folds 3"),
])
def test_bad_settings_are_one_line_exit_2_and_write_nothing(flags, expected, data_dir, tmp_path, capsys):
    (tmp_path / "split.json").write_text('{"train": [')
    (tmp_path / "list.json").write_text('["c0", "c1"]')
    flags = [f.replace("{tmp}", str(tmp_path)) for f in flags]
    val = [] if "--folds" in flags else ["--val", "1"]
    rc = cli_main(["train", "--data", str(data_dir), "--out", str(tmp_path / "run"), "--base-filters", "4",
                   "--depth", "2", "--patch-size", "16", "--epochs", "1"] + val + flags)
    line = one_line(capsys)
    assert rc == 2 and line.startswith(expected.replace("{tmp}", str(tmp_path)).replace("{data}", str(data_dir))), line
    assert not (tmp_path / "run").exists()


def test_resume_of_a_folder_that_is_no_run_is_one_line_exit_2(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert cli_main(["train", "--resume", str(tmp_path / "empty")]) == 2
    assert one_line(capsys) == f"error: {tmp_path / 'empty'}: not a run folder to resume (no config.json)"
    assert list((tmp_path / "empty").iterdir()) == []


# ----------------------------------------------------------------------------- 4. run folders: earlier runs, locks
def snapshot(folder):
    """Every file under ``folder``: relative path -> bytes (folders as None)."""
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else None for p in Path(folder).rglob("*")}


def tiny_flags(data, out, *extra):
    return ["train", "--data", str(data), "--out", str(out), "--base-filters", "4", "--depth", "2", "--norm",
            "instance", "--patch-size", "16", "--batch-size", "2", "--steps-per-epoch", str(STEPS), "--val-steps",
            "1", "--val", "1", "--mixed-precision", "off", "--head", "regions", "--loss", "dice+bce", "--lr", "1e-2",
            *extra]


@pytest.fixture(scope="module")
def finished_run(data_dir, tmp_path_factory):
    """A run of 2 epochs (copied by the tests that change it)."""
    run = tmp_path_factory.mktemp("finished") / "run"
    train(tiny(data_dir, run, epochs=2))
    return run


@pytest.mark.parametrize("holds", ["checkpoints", "config.json only"])
def test_a_new_run_into_an_earlier_run_is_refused_and_changes_nothing(holds, data_dir, finished_run, tmp_path,
                                                                      capsys):
    """A new ``train --out RUN`` where RUN holds an earlier run (a forgotten --resume) is one line naming --resume
    and --overwrite, exit 2, and the folder stays byte for byte as it was; --overwrite starts the run again."""
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    if holds == "config.json only":  # a run killed before its first checkpoint, or a file of the user's
        for name in ("checkpoints", "log.csv", "loss_curves.png"):
            shutil.rmtree(run / name) if (run / name).is_dir() else (run / name).unlink()
    found = "checkpoints/last.keras" if holds == "checkpoints" else "config.json"
    before = snapshot(run)
    assert cli_main(tiny_flags(data_dir, run, "--epochs", "1")) == 2
    assert one_line(capsys) == (f"error: {run}: holds an earlier run ({found}): continue it with --resume {run}, "
                                f"or start again with --overwrite (which deletes its checkpoints and log)")
    assert snapshot(run) == before
    with pytest.raises(BratsInputError, match="holds an earlier run"):  # from Python the same
        train(tiny(data_dir, run, epochs=1))
    assert snapshot(run) == before
    # --overwrite: a new run of 1 epoch in its place (the earlier log had 2 rows)
    assert cli_main(tiny_flags(data_dir, run, "--epochs", "1", "--overwrite")) == 0
    assert [int(r["epoch"]) for r in read_log(run)] == [0]
    assert read_state(run / "checkpoints" / "last.keras")["epoch"] == 1
    assert not (run / ".lock").exists()  # released at the end


def test_a_run_folder_held_by_another_training_is_refused_naming_its_pid_and_a_killed_ones_is_taken_over(
        data_dir, finished_run, tmp_path, capsys):
    """A second training (a resume or a new run) of a folder that a live training holds is one line naming that
    training's pid, exit 2, nothing changed; the lock of a training killed with SIGKILL blocks nothing."""
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom brats_keras.runs import run_lock\n"
                               "held = run_lock(sys.argv[1])\nheld.__enter__()\nprint('locked', flush=True)\ntime.sleep(600)\n",
         str(run)], stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert holder.stdout.readline().strip() == "locked"
        before = snapshot(run)
        busy = f"error: {run}: another training (pid {holder.pid}) is writing this folder; wait for it to end or stop it"
        assert cli_main(["train", "--resume", str(run), "--epochs", "3"]) == 2
        assert one_line(capsys) == busy
        assert cli_main(tiny_flags(data_dir, run, "--epochs", "1", "--overwrite")) == 2
        assert one_line(capsys) == busy
        assert snapshot(run) == before
    finally:
        holder.kill()  # SIGKILL: the lock file stays, with the dead training's pid
        holder.wait()
    assert (run / ".lock").read_text().split() == [str(holder.pid), "training"]
    assert cli_main(["train", "--resume", str(run), "--epochs", "3"]) == 0
    assert [int(r["epoch"]) for r in read_log(run)] == [0, 1, 2]
    assert not (run / ".lock").exists()


def test_two_trainings_of_one_folder_in_one_process_exclude_each_other(data_dir, finished_run, tmp_path):
    """The lock is the file's, not the process's: even a training started inside another one is refused."""
    from brats_keras.runs import run_lock

    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    with run_lock(run):
        with pytest.raises(BratsInputError, match=f"pid {os.getpid()}"):
            train(TrainConfig(epochs=3), resume=run)
        with pytest.raises(BratsInputError, match=f"pid {os.getpid()}"):
            run_lock(run).__enter__()
    assert not (run / ".lock").exists()
    with run_lock(run):  # free again
        pass
    (tmp_path / "a file").write_text("not a folder\n")
    with pytest.raises(BratsInputError) as err:
        run_lock(tmp_path / "a file").__enter__()
    assert str(err.value).startswith(f"{tmp_path / 'a file'}: cannot make or lock the run folder (")


@pytest.mark.parametrize("flags, named", [
    (["--lr", "0.1"], "--lr"),
    (["--patch-size", "32", "--no-augment"], "--patch-size, --no-augment"),
    (["--out", "elsewhere"], "--out"),
    (["--overwrite"], "--overwrite"),
    (["--recipe", "demo"], "--recipe"),
    (["--no-tensorboard"], "--tensorboard"),
    (["--head", "softmax"], "--head"),
])
def test_training_flags_given_with_resume_are_refused(flags, named, finished_run, tmp_path, capsys):
    """A resumed run keeps its config.json: any other training flag would be ignored, so it is refused."""
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    before = snapshot(run)
    assert cli_main(["train", "--resume", str(run), "--epochs", "3", *flags]) == 2
    assert one_line(capsys) == (f"error: {named} with --resume: a resumed run keeps the settings in its config.json "
                                f"(only a larger --epochs, --data for a moved data folder and --verify may be given)")
    assert snapshot(run) == before
    assert cli_main(["train", "--resume", str(run), "--epochs", "1"]) == 2  # fewer epochs than the run's 2
    assert one_line(capsys) == ("error: --epochs 1: this run trains 2 epochs; give more to extend it, or leave "
                                "--epochs out")
    assert snapshot(run) == before


def test_resume_with_data_that_moved(data_dir, tmp_path, capsys):
    """--data with --resume: the run's data folder moved there; it must hold the run's cases, converted alike."""
    from brats_keras.io import atomic_write_json
    from brats_keras.spec import read_manifest

    first = tmp_path / "first"
    shutil.copytree(data_dir, first)
    run = tmp_path / "run"
    train(tiny(first, run, epochs=1))
    moved = tmp_path / "moved"
    first.rename(moved)
    # another conversion of the cases (other scaling), and one that lacks a case: refused, nothing changed
    other, fewer = tmp_path / "other", tmp_path / "fewer"
    for folder in (other, fewer):
        shutil.copytree(moved, folder)
    m = read_manifest(other)
    m["settings"]["scale"] = "minmax"
    atomic_write_json(other / "manifest.json", m)
    m = read_manifest(fewer)
    del m["cases"]["c0"]
    atomic_write_json(fewer / "manifest.json", m)
    before = snapshot(run)
    assert cli_main(["train", "--resume", str(run), "--epochs", "2", "--data", str(other)]) == 2
    assert one_line(capsys) == f"error: {other}: not this run's data: scale 'minmax' where the run was trained " \
                               f"with 'zscore'"
    assert cli_main(["train", "--resume", str(run), "--epochs", "2", "--data", str(fewer)]) == 2
    assert one_line(capsys) == f"error: {fewer}: not this run's data: no labelled case c0 of its split"
    assert snapshot(run) == before
    # without --data the recorded folder is gone: one line naming it
    assert cli_main(["train", "--resume", str(run), "--epochs", "2"]) == 2
    assert str(first) in one_line(capsys)
    assert cli_main(["train", "--resume", str(run), "--epochs", "2", "--data", str(moved)]) == 0
    assert [int(r["epoch"]) for r in read_log(run)] == [0, 1]
    assert json.loads((run / "config.json").read_text())["data"] == str(moved)
