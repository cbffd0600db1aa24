"""What a user owns survives the command line given wrong arguments.

A run folder with real checkpoints, a conversion folder, a folder of the user's own files and the shipped
package files are hashed before and after every command below; each command is a mistake a user makes
(a forgotten --resume, an --out that names their own folder, a bad number, an output onto one of their
files), must be refused with exit 2, and must leave every byte of those folders as it was.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from brats_keras import cli
from brats_keras.training import TrainConfig, train
from conftest import write_converted_cases

PRETRAINED = Path(__file__).resolve().parents[1] / "brats_keras" / "pretrained"


@pytest.fixture(scope="module")
def owned(tmp_path_factory):
    """The folders a user owns: a run with checkpoints, its conversion and source cases, a folder of notes."""
    root = tmp_path_factory.mktemp("owned")
    conv = write_converted_cases(root, 3)
    run = root / "run"
    train(TrainConfig(data=str(conv), out=str(run), base_filters=4, depth=2, norm="instance", output="regions",
                      loss="dice+bce", patch_size=16, batch_size=2, epochs=1, steps_per_epoch=1, val_steps=1, val=1,
                      verbose=0, mixed_precision="off"))
    user = root / "mine"
    (user / "sub").mkdir(parents=True)
    (user / "notes.txt").write_text("my notes\n")
    (user / "sub" / "results.json").write_text('{"keep": true}\n')
    (user / "fold-0.keras").write_bytes(b"not a model, but mine")
    return {"root": root, "conv": conv, "src": root / "src", "run": run, "user": user}


def snapshot(*folders) -> dict:
    """Every file and folder under ``folders``: path -> sha256 of its bytes (None for a folder)."""
    out = {}
    for folder in folders:
        for p in sorted(Path(folder).rglob("*")):
            out[str(p)] = None if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def mistakes(o):
    last = str(o["run"] / "checkpoints" / "last.keras")
    run, user, conv, src = (str(o[k]) for k in ("run", "user", "conv", "src"))
    notes = str(o["user"] / "notes.txt")
    tiny = ["--base-filters", "4", "--depth", "2", "--steps-per-epoch", "1", "--val-steps", "1", "--val", "1"]
    return {
        "train into a run folder without --resume": ["train", "--data", conv, "--out", run, *tiny],
        "train into the user's folder with a bad patch size": ["train", "--data", conv, "--out", user,
                                                               "--patch-size", "15", *tiny],
        "train with a negative epoch count": ["train", "--data", conv, "--out", user, "--epochs", "-1", *tiny],
        "train with a learning rate of 0": ["train", "--data", conv, "--out", user, "--lr", "0", *tiny],
        "resume a folder that is not a run": ["train", "--resume", user],
        "resume with a new learning rate": ["train", "--resume", run, "--lr", "0.5"],
        "export over the current folder": ["export", "--model", last, "--out", ".", "--overwrite"],
        "export over the model's own run folder": ["export", "--model", last, "--out", run, "--overwrite"],
        "export over the user's folder": ["export", "--model", last, "--out", user, "--overwrite"],
        "export over the shipped model's folder": ["export", "--out", str(PRETRAINED), "--overwrite"],
        "convert a folder without cases into a run folder": ["convert", "--input", user, "--output", run],
        "convert into a conversion with other settings": ["convert", "--input", src, "--output", conv,
                                                          "--crop", "brain", "--scale", "minmax", "--workers", "1",
                                                          "--quiet"],
        "predict onto the user's file": ["predict", "--model", last, "--input", src, "--output", notes, "--quiet"],
        "predict with a batch size of 0": ["predict", "--model", last, "--input", src, "--output", user,
                                           "--batch-size", "0", "--quiet"],
        "evaluate a folder without predictions": ["evaluate", "--pred", user, "--truth", src, "--json", notes],
        "crossval of a folder that is not a run": ["crossval", "--runs", user, "--out", run, "--quiet"],
        "crossval-compare of folders that are not tables": ["crossval-compare", user, run, "--json", notes],
        "set-postprocessing from a file that is not JSON": ["set-postprocessing", "--model", last, "--from", notes],
        "synth a negative number of cases": ["synth", "--out", user, "--cases", "-3"],
        "merge a folder that is not a conversion": ["merge", user, "--output", conv],
        "demo with too few cases": ["demo", "--out", user, "--cases", "3"],
        "demo with no time to train": ["demo", "--out", user, "--minutes", "0"],
    }


@pytest.mark.parametrize("name", list(mistakes({k: Path("x") for k in ("run", "user", "conv", "src")})))
def test_a_wrong_command_is_refused_and_touches_nothing(owned, name, monkeypatch, capsys):
    argv = mistakes(owned)[name]
    monkeypatch.chdir(owned["user"])
    before = snapshot(owned["root"], PRETRAINED)
    try:
        status = cli.main(argv)
    except SystemExit as exc:  # argparse refuses a value it cannot parse with exit 2
        status = exc.code
    err = capsys.readouterr().err.strip()
    assert status == 2, f"{name}: exit {status}; stderr: {err}"
    assert "Traceback" not in err and err, f"{name}: {err}"
    assert snapshot(owned["root"], PRETRAINED) == before, f"{name} changed the user's files"
