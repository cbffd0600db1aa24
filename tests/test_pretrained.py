"""The shipped model (``model.keras``, or the fold ensemble ``fold-*.keras`` that replaces it): loads, predicts a
real case, and scores what its model card says. Every test here holds for whichever ships: the known answers come
from the card (``brats_keras.pretrained.card_case``)."""
from pathlib import Path

import numpy as np
import pytest

from brats_keras import io as bio
from brats_keras.cli import main as cli_main
from brats_keras.evaluation import region_scores
from brats_keras.pretrained import HERE, card_case, model_card, pretrained_path, pretrained_paths

CASE = "Brats18_TCIA02_606_1"


@pytest.fixture(scope="module")
def card():
    assert all(p.exists() for p in pretrained_paths()), f"no shipped model in {HERE}"
    return model_card()


def ensemble_ships(card) -> bool:
    return card.get("kind") == "fold ensemble"


def test_card_describes_the_shipped_model(card):
    files = pretrained_paths()
    assert all(p.stat().st_size < 30e6 for p in files)  # shipped without optimizer state
    assert sum(p.stat().st_size for p in files) < 60e6  # all that ships
    if not ensemble_ships(card):
        assert files == [HERE / "model.keras"] and card["model_file"] == "model.keras"
        assert card["data"]["split"]["val"] == sorted(["Brats18_CBICA_AQN_1", "Brats18_TCIA01_425_1",
                                                       "Brats18_TCIA02_606_1", "Brats18_2013_23_1"])
        assert len(card["data"]["split"]["train"]) == 19
        assert not set(card["data"]["split"]["train"]) & set(card["data"]["split"]["val"])
        for r in ("WT", "TC", "ET"):
            vals = [c[r]["dice"] for c in card["validation"]["cases"].values()]
            assert card["validation"]["mean"][r]["dice"] == pytest.approx(np.mean(vals))
        return
    from brats_keras.checkpoint import read_info

    assert [f["file"] for f in card["model_files"]] == [p.name for p in files]
    assert not (HERE / "model.keras").exists()  # the ensemble replaced it
    folds = card["data"]["folds"]
    held_out = [c for k in folds for c in folds[k]]
    assert len(held_out) == len(set(held_out)) == card["data"]["cases"]  # each case held out by one fold
    for table in ("crossval", "crossval_postprocessed"):
        cases = card[table]["cases"]
        assert set(cases) | set(card["crossval"].get("failed", {})) == set(held_out)
        assert all(cid in folds[str(c["fold"])] for cid, c in cases.items())
        for r in ("WT", "TC", "ET"):  # the headline is the mean over the out-of-fold cases
            assert card[table]["mean"][r]["dice"] == pytest.approx(np.mean([c[r]["dice"] for c in cases.values()]))
    for f in card["model_files"]:  # every fold applies the post-processing the folds chose
        stored = read_info(HERE / f["file"])["postprocess"]
        chosen = card["postprocessing"]["postprocess"]
        assert {k: stored[k] for k in chosen} == chosen


def test_load_pretrained_for_fine_tuning(card):
    import keras

    from brats_keras.losses import get_loss
    from brats_keras.checkpoint import load_pretrained

    model = load_pretrained()
    assert model.outputs[0].shape[-1] == 3 and model.inputs[0].shape[-1] == len(card["preprocessing"]["modalities"])
    model.compile(optimizer=keras.optimizers.Adam(1e-4), loss=get_loss("dice+bce", "regions"))
    x = np.zeros((1, 16, 16, 16, model.inputs[0].shape[-1]), np.float32)
    y = np.zeros((1, 16, 16, 16, 3), np.float32)
    assert np.isfinite(model.train_on_batch(x, y))


def _predict_and_score(tmp_path, real_dir, *flags):
    out = tmp_path / str(len(list(tmp_path.iterdir())))
    rc = cli_main(["predict", "--input", str(real_dir / CASE), "--output", str(out), "--quiet", *flags])
    assert rc == 0
    labels, affine, header = bio.load_nifti(out / f"{CASE}.nii.gz")
    assert labels.shape == (240, 240, 155) and set(np.unique(labels)) <= {0, 1, 2, 4}
    truth = bio.load_classes(real_dir / CASE / f"{CASE}_seg.nii.gz")
    return region_scores(bio.load_classes(out / f"{CASE}.nii.gz"), truth)


def test_cli_predict_without_model_uses_every_shipped_file_and_scores_as_the_card_says(card, real_dir, tmp_path,
                                                                                       monkeypatch):
    """Without --model, predict uses all shipped files. The card's score of the case comes back from the file
    that scored it: model.keras itself; for an ensemble, the fold that held the case out (its float16 file with
    the stored post-processing, against the float32 out-of-fold table: 1e-3)."""
    from brats_keras.inference import Predictor

    used, predict_case = [], Predictor.predict_case
    monkeypatch.setattr(Predictor, "predict_case", lambda self, *a, **kw: used.append(self.names) or
                        predict_case(self, *a, **kw))
    scores = _predict_and_score(tmp_path, real_dir)
    assert used == [[str(p) for p in pretrained_paths()]]
    ref = card_case(CASE)
    if pretrained_paths() != ref["models"]:  # an ensemble: the card scored this case with one fold's files
        assert ensemble_ships(card) and set(ref["models"]) < set(pretrained_paths())  # one per recipe
        scores = _predict_and_score(tmp_path, real_dir, *(f for m in ref["models"] for f in ("--model", str(m))),
                                    "--overlap", str(ref["overlap"]), *(["--tta"] if ref["tta"] else []))
    for r in ("WT", "TC", "ET"):
        assert scores[r]["dice"] == pytest.approx(ref["scores"][r]["dice"], abs=1e-3), r


def test_crossval_of_the_shipped_ensemble_gives_the_card_headline_again(card, real_dir, tmp_path, monkeypatch):
    """``crossval --ensemble pretrained``, with no training run at hand, predicts each case by the shipped fold
    file(s) that held it out and scores as the card's cross-validation says. To stay fast it replays one case per
    fold (the first of each fold's sorted validation cases, so every shipped fold file is loaded and used); each is
    checked against the card's per-case Dice within 0.02 (the shipped files are float16 or int8, the card's table
    came from the float32 checkpoints), and the card's headline means are checked to be the means of its per-case
    table. Replaying all 28 cases (means within 0.002) is benchmarks/pretrained_crossval_bench.py."""
    import json

    import brats_keras.ensemble as ens
    from conftest import SHARED, require_shared

    if not ensemble_ships(card):
        pytest.skip("a single model ships: it has no folds to cross-validate")
    record = json.loads((HERE / "ensemble.json").read_text())
    for name, source in record["models"].items():  # the validation cases each file records are the card's folds
        assert source["val"] == sorted(card["data"]["folds"][str(source["fold"])]), name
    for r in ("WT", "TC", "ET"):  # the headline is the mean of the per-case table checked case by case below
        assert card["crossval"]["mean"][r]["dice"] == pytest.approx(
            np.mean([c[r]["dice"] for c in card["crossval"]["cases"].values()]), abs=1e-6), r
    full = ens._ensemble_record

    def one_per_fold(ensemble):
        rec, plan = full(ensemble)
        return rec, [(fold, source, models, sorted(val)[:1]) for fold, source, models, val in plan]

    monkeypatch.setattr(ens, "_ensemble_record", one_per_fold)
    picked = {c for _, _, _, val in one_per_fold("pretrained")[1] for c in val}
    assert len(picked) == len(card["data"]["folds"])
    # the card's label maps' folders (brats-real, brats-extra), found under ../shared/data wherever it lies
    roots = sorted({str(require_shared(SHARED / Path(c["truth"]).parent.parent.name))
                    for c in card["crossval"]["cases"].values()})
    out = tmp_path / "cv"
    assert cli_main(["crossval", "--ensemble", "pretrained", "--out", str(out), "--quiet",
                     *(f for r in roots for f in ("--data-root", r))]) == 0
    res = json.loads((out / "crossval.json").read_text())
    assert res["cases"].keys() == picked
    for cid, row in res["cases"].items():
        ref = card["crossval"]["cases"][cid]
        assert row["fold"] == ref["fold"]
        for r in ("WT", "TC", "ET"):
            assert row[r]["dice"] == pytest.approx(ref[r]["dice"], abs=0.02), (cid, r)


def test_card_case_names_the_file_and_scores_that_give_the_card(card):
    ref = card_case(CASE)
    if ensemble_ships(card):
        assert ref["fold"] is not None and CASE in card["data"]["folds"][str(ref["fold"])]
        files = sorted(HERE.glob(f"fold-{ref['fold']}.keras")) or sorted(HERE.glob(f"fold-{ref['fold']}[a-j].keras"))
        assert ref["models"] == files and ref["model"] == files[0]
        assert ref["scores"]["WT"] == card["crossval_postprocessed"]["cases"][CASE]["WT"]
    else:
        assert ref == {"model": pretrained_path(), "models": [pretrained_path()], "fold": None,
                       "scores": card["validation"]["cases"][CASE], "tta": False, "overlap": 0.5}
    with pytest.raises(KeyError, match="scores no case 'no such case'"):
        card_case("no such case")


def test_card_case_names_a_fold_the_card_lists_no_file_of(monkeypatch):
    import brats_keras.pretrained as pretrained

    card = {"kind": "fold ensemble", "crossval": {}, "model_files": [{"file": "fold-0.keras", "fold": 0}],
            "crossval_postprocessed": {"cases": {"c1": {"fold": 1, "WT": {}, "TC": {}, "ET": {}},
                                                 "c0": {"fold": 0, "WT": {"dice": 0.9}, "TC": {}, "ET": {}}}}}
    monkeypatch.setattr(pretrained, "model_card", lambda: card)
    assert card_case("c0")["model"] == HERE / "fold-0.keras" and card_case("c0")["scores"]["WT"] == {"dice": 0.9}
    # an ensemble of two recipes: the case's fold has one file per recipe, and the score is their mean's
    card["model_files"] = [{"file": f"fold-{k}{m}.keras", "fold": k, "recipe": r} for k in (0, 1)
                           for r, m in enumerate("ab")]
    ref = card_case("c1")
    assert ref["model"] == HERE / "fold-1a.keras" and ref["models"] == [HERE / "fold-1a.keras", HERE / "fold-1b.keras"]
    card["model_files"] = card["model_files"][:2]
    with pytest.raises(KeyError, match=r"lists no file of fold 1 under model_files \(it scores 'c1' with that fold\)"):
        card_case("c1")


def _export_script(*args):
    """Run scripts/export_pretrained.py as a user does; ``(exit status, stderr)``."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root), "TF_CPP_MIN_LOG_LEVEL": "3"}
    res = subprocess.run([sys.executable, str(root / "scripts" / "export_pretrained.py"), *map(str, args)],
                         env=env, capture_output=True, text=True, timeout=300)
    return res.returncode, res.stderr


def test_export_card_helpers_derive_their_numbers_from_the_log():
    from brats_keras.model_card import cells, late_val_range

    nan = float("nan")
    log = [{"val_case_dice_mean": v} for v in (0.1, nan, 0.9, nan, 0.6, 0.7, nan, 0.65)]
    assert late_val_range(log) == [0.6, 0.7]  # the second half only, NaN rows (no evaluation) skipped
    assert late_val_range([{"loss": 1.0}]) != late_val_range([{"loss": 1.0}])  # NaN when never evaluated
    scores = {r: {"dice": d, "hd95": h} for r, d, h in (("WT", 0.8526, 5.94), ("TC", 0.8, 4.0), ("ET", 0.5, 12.25))}
    assert cells(scores) == "0.853 / 5.9 | 0.800 / 4.0 | 0.500 / 12.2"
    assert cells(scores, hd95=False, bold=True) == "**0.853** | **0.800** | **0.500**"


def test_card_says_how_patches_were_drawn_and_its_command_redraws_them_so():
    from brats_keras.model_card import PATCHES_TEXT, patches_text, train_command
    from brats_keras.training import TrainConfig

    cfg = {**TrainConfig.from_recipe("pretrained").__dict__, "folds": 5, "fold": 0}
    assert patches_text(cfg) == PATCHES_TEXT == "a third of the patches centred on tumor"
    assert "--foreground" not in train_command(cfg)
    cfg.update(foreground_sampling="classes", foreground_ratio=0.5)
    assert patches_text(cfg) == ("50% of the patches centred on tumor (a tumor class of the case first, each alike, "
                                 "then a voxel of it: --foreground-sampling classes)")
    command = train_command(cfg)
    assert "--foreground-ratio 0.5" in command and "--foreground-sampling classes" in command


def test_card_markdown_rebuilds_the_shipped_card_from_its_json_and_the_history_data(card):
    """MODEL_CARD.md is exactly what card_markdown writes from model_card.json and card_history.json; the rows
    of earlier runs come from the history passed in, not from code."""
    from brats_keras.pretrained import CARD_FILE
    from brats_keras.model_card import card_markdown, read_history

    assert card_markdown(card) == CARD_FILE.read_text()
    history = read_history()
    row = {"run": "a run of ours", "WT": "0.9 / 1.0", "TC": "0.8 / 2.0", "ET": "0.7 / 3.0"}
    target = {"WT": "0.95", "TC": "0.9", "ET": "0.85"}
    if ensemble_ships(card):  # an ensemble's card lists the cross-validated attempts and targets
        history["cv_attempts"], history["cv_target"] = [row], target
        text = card_markdown(card, history)
        assert "| a run of ours | 0.9 / 1.0 | 0.8 / 2.0 | 0.7 / 3.0 |" in text
        assert "| target (cross-validated) | 0.95 | 0.9 | 0.85 |" in text
        assert "| target (cross-validated) | 0.88 |" not in text
        n_folds, n_recipes = len(card["data"]["folds"]), len(card.get("recipes") or [None])
        assert text.startswith("# Model card: brats-keras pretrained 3D U-Net, "
                               + (f"{n_recipes} recipes x " if n_recipes > 1 else "") + f"{n_folds}-fold")
        return
    history["earlier_runs"], history["target"] = [row], target
    text = card_markdown(card, history)
    assert "| a run of ours | 0.9 / 1.0 | 0.8 / 2.0 | 0.7 / 3.0 |" in text and "| target | 0.95 | 0.9 | 0.85 |" in text
    assert "instance norm, plateau schedule" not in text and "| target | 0.88 |" not in text


def test_export_of_a_folder_that_is_no_run_is_a_one_line_error(tmp_path):
    rc, err = _export_script("--run", tmp_path, "--real", tmp_path, "--train-minutes", "1")
    message = err.strip().splitlines()[-1]
    assert rc == 2 and str(tmp_path / "config.json") in message and "not found" in message
    assert message.startswith("export_pretrained: ")
    assert not any(tmp_path.iterdir())  # nothing written


def test_export_train_command_names_only_what_differs_from_the_recipe():
    """The card's reproduce command is derived from the run's config: the recipe plus the changed flags."""
    from dataclasses import asdict

    from brats_keras.model_card import train_command
    from brats_keras.training import TrainConfig

    cfg = asdict(TrainConfig.from_recipe("pretrained", data="/somewhere", out="/runs/x", time_limit=95.0, lr=3e-4,
                                         augment=False, init_from="pretrained"))
    cmd = train_command(cfg, out="runs/ft")
    assert cmd.endswith("--out runs/ft --lr 0.0003 --no-augment --time-limit 95")
    assert "/somewhere" not in cmd and "--recipe pretrained" in cmd and "init" not in cmd
    assert train_command(asdict(TrainConfig.from_recipe("pretrained"))).endswith("--out runs/pretrained")


def test_export_refuses_a_fine_tuned_run_in_one_line(tmp_path):
    """A run started with --init-from cannot be reproduced by the card's single command: refused, nothing written."""
    run = tmp_path / "ft"
    (run / "checkpoints").mkdir(parents=True)
    for name in ("checkpoints/best.keras", "split.json", "log.csv"):
        (run / name).write_text("")
    (run / "config.json").write_text('{"init_from": "pretrained"}')
    before = {f: f.stat().st_mtime_ns for f in HERE.iterdir()}
    rc, err = _export_script("--run", run, "--real", tmp_path, "--train-minutes", "1")
    assert rc == 2 and "starts from pretrained" in err.strip().splitlines()[-1]
    assert {f: f.stat().st_mtime_ns for f in HERE.iterdir()} == before


def test_export_train_command_runs_as_the_run_it_describes(monkeypatch):
    """The card's command, parsed by brats-keras train itself, gives back the run's settings: the output mode
    through --head (train's --output is deprecated), --no-tensorboard; a setting no flag sets is refused."""
    import shlex
    from dataclasses import asdict

    import brats_keras.training as training
    from brats_keras.cli import main as cli_main
    from brats_keras.model_card import _NOT_RECIPE, train_command
    from brats_keras.training import TrainConfig

    cfg = asdict(TrainConfig.from_recipe("pretrained", output="softmax", loss="dice+ce", tensorboard=False,
                                         lr=3e-4, time_limit=95.0, augment=False, distribute=True))
    cmd = train_command(cfg)
    seen = []

    def fake_train(config, resume=None, **_):
        seen.append(config)
        return {"history": [], "run": config.out, "best": None, "seconds": 0.0}

    monkeypatch.setattr(training, "train", fake_train)
    args = shlex.split(cmd.replace("\\\n", " "))
    assert args[:2] == ["brats-keras", "train"] and "--output" not in args and "--head" in args
    assert cli_main(args[1:]) == 0
    parsed = asdict(seen[0])
    assert {k: v for k, v in parsed.items() if k not in _NOT_RECIPE} == \
        {k: v for k, v in cfg.items() if k not in _NOT_RECIPE}
    for key, value in (("lr_patience", 7), ("split_seed", 3), ("steps_per_epoch", None)):
        with pytest.raises(ValueError, match=f"the run's {key}={value!r} differs from the recipe's .* no flag"):
            train_command({**cfg, key: value})


def test_fold_train_command_loops_over_k_and_gives_back_each_fold(monkeypatch):
    """A fold run's command has --fold $k and no --split-file; with k set it parses to that fold's settings."""
    import shlex
    from dataclasses import asdict

    import brats_keras.training as training
    from brats_keras.model_card import _NOT_RECIPE, train_command
    from brats_keras.training import TrainConfig

    seen = []
    monkeypatch.setattr(training, "train", lambda config, resume=None, **_: seen.append(config) or
                        {"history": [], "run": config.out, "best": None, "seconds": 0.0})
    for k in (0, 3):
        cfg = asdict(TrainConfig.from_recipe("pretrained", folds=5, fold=k, epochs=64, whole_case_every=8))
        cmd = train_command(cfg, out="runs/cv/fold$k", data="data/cv_2mm")
        assert "--split-file" not in cmd and "--fold $k" in cmd and "--folds 5" in cmd
        args = shlex.split(cmd.replace("\\\n", " ").replace("$k", str(k)))
        assert cli_main(args[1:]) == 0
        parsed = asdict(seen[-1])
        assert parsed["out"] == f"runs/cv/fold{k}" and parsed["data"] == "data/cv_2mm"
        assert {key: v for key, v in parsed.items() if key not in _NOT_RECIPE} == \
            {key: v for key, v in cfg.items() if key not in _NOT_RECIPE}


def _ensemble_card(checkpoint="last", steps=(2500,), moved=0.0004, stratified_by="tumor size"):
    """A hand-made fold-ensemble card (the keys scripts/export_pretrained.py --folds writes)."""
    def s(wt, tc, et):
        return {r: {"dice": d, "hd95": 5.0} for r, d in zip(("WT", "TC", "ET"), (wt, tc, et))}

    cv = {"checkpoint": checkpoint, "failed": {}, "cases": {"a": {"fold": 0, **s(0.9, 0.8, 0.7)},
                                                            "b": {"fold": 1, **s(0.8, 0.7, 0.6)}},
          "folds": {"0": {"cases": ["a"], "mean": s(0.9, 0.8, 0.7)}, "1": {"cases": ["b"], "mean": s(0.8, 0.7, 0.6)}},
          "mean": s(0.85, 0.75, 0.65), "median": s(0.85, 0.75, 0.65), "std": s(0.05, 0.05, 0.05)}
    return {"kind": "fold ensemble", "crossval": cv, "crossval_postprocessed": {**cv, "mean": s(0.86, 0.75, 0.66)},
            "postprocessing": {"postprocess": {"et_threshold": 0}, "dice_before": {"WT": 0.85, "TC": 0.75, "ET": 0.65},
                               "dice_after": {"WT": 0.86, "TC": 0.75, "ET": 0.66}},
            "architecture": {"name": "unet3d", "base_filters": 16, "depth": 4, "norm": "instance", "parameters": 10},
            "training": {"loss": "dice+bce", "patch_size": 64, "batch_size": 2, "optimizer": "Adam",
                         "augmentation": "flips", "steps_per_fold": steps[-1], "steps_range": list(steps),
                         "minutes_per_fold": 70, "hardware": "2-core CPU, float32"},
            "model_files": [{"file": "fold-0.keras", "fold": 0, "size_mb": 5.0},
                            {"file": "fold-1.keras", "fold": 1, "size_mb": 5.0}],
            "check": {"cases": ["a"], "max_dice_difference": moved, "single_seconds_per_case": 1.0,
                      "ensemble_seconds_per_case": 2.0},
            "preprocessing": {"modalities": ["flair", "t1ce"], "scale": "zscore", "downsample": 2, "patch_size": 64},
            "data": {"folds_text": "fold 0: 1 cases, fold 1: 1 cases", "stratified_by": stratified_by},
            "commands": "brats-keras train ..."}


def test_ensemble_card_states_what_the_runs_did():
    """The card said 'last checkpoint, none chosen on validation', 'Float16 storage does not move the scores',
    one step count and 'Folds stratified by tumor size' whatever the runs, the check and the splits were."""
    from brats_keras.model_card import card_markdown

    history = {"cv_attempts": []}
    md = " ".join(card_markdown(_ensemble_card(), history).split())
    assert "2,500 steps (last checkpoint, none chosen on validation)" in md
    assert "Float16 storage does not move the scores" in md and "within 0.0004 Dice" in md
    assert "Folds stratified by tumor size (fold 0: 1 cases" in md
    md = " ".join(card_markdown(_ensemble_card("best", (2000, 2500), 0.0312, None), history).split())
    assert "none chosen on validation" not in md and "does not move" not in md and "stratified by tumor size (" not in md
    assert "2,000 to 2,500 steps (the best checkpoint by validation Dice, chosen on the cases the headline" in md
    assert "up to 0.0312 Dice away from the float32 table" in md
    assert "Folds drawn at random (too few cases to stratify by tumor size)" in md


def test_ensemble_card_draws_its_grid_conclusion_from_the_numbers():
    """The 2 mm scores beside the 1 mm ones: 'only ..., would gain little' while the grid explains a small part of
    the error (the shipped card's case), a neutral line when it explains much of it or the grid scores lower."""
    from brats_keras.model_card import card_markdown

    history = {"cv_attempts": []}
    card = _ensemble_card()  # 1 mm means 0.85 / 0.75 / 0.65
    assert "Scored at 2 mm" not in card_markdown(card, history)
    card["grid_dice"] = {"WT": 0.86, "TC": 0.76, "ET": 0.70}
    md = " ".join(card_markdown(card, history).split())
    assert "reaches mean Dice 0.860 / 0.760 / 0.700, only +0.010 / +0.010 / +0.050 above its 1 mm scores" in md
    assert "would gain little" in md
    card["grid_dice"] = {"WT": 0.86, "TC": 0.76, "ET": 0.80}  # ET: 0.15 of an error of 0.35
    md = " ".join(card_markdown(card, history).split())
    assert "+0.010 / +0.010 / +0.150 against its 1 mm scores" in md and "gain little" not in md and ", only +" not in md
    card["grid_dice"] = {"WT": 0.84, "TC": 0.76, "ET": 0.70}  # lower at 2 mm
    md = " ".join(card_markdown(card, history).split())
    assert "-0.010 / +0.010 / +0.050 against its 1 mm scores" in md and "gain little" not in md
    card["preprocessing"]["downsample"] = 1
    assert "Scored at" not in card_markdown(card, history)
