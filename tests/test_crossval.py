"""Cross-validation: fold splits, out-of-fold predictions in one table (of fold runs and of fold ensembles), the
post-processing chosen on them, and the export of a fold ensemble with its cross-validation."""
import json
import os
import subprocess

import numpy as np
import pytest

from brats_keras.checkpoint import read_info
from brats_keras.cli import main as cli_main
from brats_keras.crossval import crossval_markdown, crossval_predict, format_crossval
from brats_keras.data import fold_split
from brats_keras.inference import Predictor
from brats_keras.io import BratsInputError
from brats_keras.training import TrainConfig, train

IDS = [f"c{i:02d}" for i in range(23)]


# ----------------------------------------------------------------------------- fold splits
def test_folds_are_disjoint_cover_every_case_and_repeat():
    splits = [fold_split(IDS, 5, k, seed=3) for k in range(5)]
    vals = [s["val"] for s in splits]
    assert sorted(c for v in vals for c in v) == IDS  # every case validated exactly once
    assert sorted(len(v) for v in vals) == [4, 4, 5, 5, 5]
    for s in splits:
        assert sorted(s["train"] + s["val"]) == IDS and not set(s["train"]) & set(s["val"])
        assert s["folds"] == 5 and s["seed"] == 3 and s["stratified_by"] is None and s["test"] == []
    assert fold_split(IDS, 5, 2, seed=3) == splits[2]  # reproducible from the seed
    assert fold_split(IDS, 5, 2, seed=4)["val"] != splits[2]["val"]


def test_folds_are_stratified_by_tumor_size():
    sizes = {c: (i + 1) * 1000 for i, c in enumerate(IDS)}  # c00 smallest ... c22 largest
    small, large = set(IDS[:7]), set(IDS[-8:])
    for k in range(5):
        s = fold_split(IDS, 5, k, seed=0, sizes=sizes)
        assert s["stratified_by"] == "tumor size"
        # 3 bins of 7-8 cases: every fold gets 1 or 2 of the smallest and of the largest tumors
        assert 1 <= len(small & set(s["val"])) <= 2 and 1 <= len(large & set(s["val"])) <= 2
    # too few cases for two bins of `folds` cases each: plain KFold
    assert fold_split(IDS[:9], 5, 0, sizes=sizes)["stratified_by"] is None


def test_folds_hold_out_test_cases_first_and_refuse_bad_numbers():
    s = fold_split(IDS, 4, 1, seed=0, test=3)
    assert len(s["test"]) == 3 and not set(s["test"]) & set(s["train"] + s["val"])
    assert sorted(s["test"] + s["train"] + s["val"]) == IDS
    with pytest.raises(BratsInputError, match="--fold 5: choose a fold from 0 to 4"):
        fold_split(IDS, 5, 5)
    with pytest.raises(BratsInputError, match="at least 2 folds"):
        fold_split(IDS, 1, 0)
    with pytest.raises(BratsInputError, match="--folds 5: only 3 case"):
        fold_split(IDS[:3], 5, 0)


# ----------------------------------------------------------------------------- fold runs and the out-of-fold table


def test_fold_runs_write_their_fold_split(cv):
    root, runs = cv
    splits = [json.loads((r / "split.json").read_text()) for r in runs]
    assert [s["fold"] for s in splits] == [0, 1] and all(s["folds"] == 2 for s in splits)
    assert sorted(splits[0]["val"] + splits[1]["val"]) == [f"c{i}" for i in range(5)]
    assert splits[0]["train"] == splits[1]["val"]
    from brats_keras.spec import read_manifest
    from brats_keras.data import tumor_sizes

    sizes = tumor_sizes(read_manifest(root / "conv")["cases"])
    expected = fold_split(list(sizes), 2, 0, seed=7, sizes=sizes)
    assert splits[0] == expected  # reproducible from the seed alone


def test_crossval_predicts_each_fold_with_its_own_model(cv, tmp_path, capsys):
    from brats_keras.evaluation import evaluate_folder

    root, runs = cv
    # label maps found through the manifests; the runs named by str, as the command line gives them
    res = crossval_predict([str(r) for r in runs], tmp_path / "cv", progress=False)
    assert sorted(res["cases"]) == [f"c{i}" for i in range(5)] and res["checkpoint"] == "last"
    for run in runs:
        val = json.loads((run / "split.json").read_text())["val"]
        for cid in val:
            assert res["cases"][cid]["model"] == str(run / "checkpoints" / "last.keras")
    assert set(res["folds"]) == {"0", "1"} and set(res) >= {"mean", "median", "std"}
    # the table agrees with brats-keras evaluate on the kept predictions
    ev = evaluate_folder(tmp_path / "cv" / "predictions", root / "src", progress=False)
    for r in ("WT", "TC", "ET"):
        assert res["mean"][r]["dice"] == pytest.approx(ev["mean"][r]["dice"])
        assert res["median"][r]["hd95"] == pytest.approx(ev["median"][r]["hd95"])
        dices = [c[r]["dice"] for c in res["cases"].values()]
        assert res["std"][r]["dice"] == pytest.approx(np.std(dices))
        fold0 = [res["cases"][c][r]["dice"] for c in res["folds"]["0"]["cases"]]
        assert res["folds"]["0"]["mean"][r]["dice"] == pytest.approx(np.mean(fold0))
    assert json.loads((tmp_path / "cv" / "crossval.json").read_text())["cases"].keys() == res["cases"].keys()
    # region models keep their probabilities (brain box, uint8): at 0.5 they decode to the kept label map
    from brats_keras.crossval import load_probabilities
    from brats_keras.evaluation import _read_classes
    from brats_keras.labels import regions_to_classes

    for cid, row in res["cases"].items():
        q, box, shape = load_probabilities(row["probabilities"])
        full = np.zeros(shape + (3,), np.uint8)
        full[tuple(slice(a, b) for a, b in box)] = q
        decoded = regions_to_classes(full, 127.5)
        kept = _read_classes(tmp_path / "cv" / "predictions" / f"{cid}.nii.gz")[0]
        assert np.mean(decoded == kept) > 0.999  # (a probability within 1/510 of 0.5 may round either way)
    csv_rows = (tmp_path / "cv" / "crossval.csv").read_text().splitlines()
    assert csv_rows[0].startswith("case,fold,dice_WT,dice_TC,dice_ET,hd95_WT")
    assert [r.split(",")[0] for r in csv_rows[-5:]] == ["fold 0 mean", "fold 1 mean", "mean", "median", "std"]
    table = format_crossval(res)
    assert "fold 1 mean" in table and table.splitlines()[-1].startswith("std")
    # the command: --checkpoint best, a given --data-root, then choosing post-processing from the kept predictions
    rc = cli_main(["crossval", "--runs", *map(str, runs), "--data-root", str(root / "src"), "--out",
                   str(tmp_path / "cv2"), "--checkpoint", "best", "--quiet"])
    assert rc == 0 and "fold 0 mean" in capsys.readouterr().out
    model = tmp_path / "m.keras"
    model.write_bytes((runs[0] / "checkpoints" / "last.keras").read_bytes())
    rc = cli_main(["crossval", "--runs", *map(str, runs), "--out", str(tmp_path / "cv2"), "--reuse",
                   "--write-to", str(model)])
    out = capsys.readouterr().out
    assert rc == 0 and f"stored in {model}" in out
    assert ("chosen (a setting must raise a mean Dice by more than 0.001 and the lower end of the 90% bootstrap "
            "interval of its per-case gain") in out
    stored = read_info(model)["postprocess"]
    assert stored["chosen_on"]["cases"] == [f"c{i}" for i in range(5)] and stored["chosen_on"]["checkpoint"] == "best"
    assert json.loads((tmp_path / "cv2" / "postprocessing.json").read_text())["postprocess"] == {
        k: stored[k] for k in ("thresholds", "min_component", "keep_largest", "et_threshold")}
    # the out-of-fold cases scored again with the chosen post-processing: the chooser's own Dice, and HD95 too
    choice = json.loads((tmp_path / "cv2" / "postprocessing.json").read_text())
    post = json.loads((tmp_path / "cv2" / "crossval_postprocessed.json").read_text())
    assert sorted(post["cases"]) == [f"c{i}" for i in range(5)] and post["postprocess"]["thresholds"]
    for r in ("WT", "TC", "ET"):
        assert post["mean"][r]["dice"] == pytest.approx(choice["dice_after"][r], abs=1e-9)
        assert np.isfinite(post["mean"][r]["hd95"])
    assert "region thresholds not tried" not in out
    # a table from a crossval older than region thresholds (no probabilities kept): said, not silently skipped
    import shutil

    old = tmp_path / "cv_old"
    shutil.copytree(tmp_path / "cv2", old)
    table = json.loads((old / "crossval.json").read_text())
    assert table["tta"] is False and table["overlap"] == 0.5
    for row in table["cases"].values():
        row.pop("probabilities")
    (old / "crossval.json").write_text(json.dumps(table))
    assert cli_main(["crossval", "--runs", *map(str, runs), "--out", str(old), "--reuse",
                     "--choose-postprocessing"]) == 0
    assert "region thresholds not tried: " in capsys.readouterr().out
    assert json.loads((old / "postprocessing.json").read_text())["postprocess"]["thresholds"] == {
        "WT": 0.5, "TC": 0.5, "ET": 0.5}
    md = (tmp_path / "cv2" / "crossval.md").read_text()  # rewritten with the choice
    assert "| mean with the chosen post-processing | " in md
    assert "## Cross-validated estimate (2 folds, 5 cases, `best` checkpoints)" in md
    assert "Post-processing chosen on these out-of-fold predictions" in md
    # --confidence 0: the mean-only rule, recorded as such; a level outside [0, 1): one line, exit 2
    assert cli_main(["crossval", "--runs", *map(str, runs), "--out", str(tmp_path / "cv2"), "--reuse",
                     "--choose-postprocessing", "--confidence", "0"]) == 0
    assert "bootstrap interval" not in capsys.readouterr().out
    assert json.loads((tmp_path / "cv2" / "postprocessing.json").read_text())["confidence"] is None
    assert cli_main(["crossval", "--runs", *map(str, runs), "--out", str(tmp_path / "cv2"), "--reuse",
                     "--choose-postprocessing", "--confidence", "1.5"]) == 2
    assert capsys.readouterr().err == "error: --confidence 1.5: must be at least 0 and below 1\n"
    # refused before any case is predicted: a new --out folder is not even made
    assert cli_main(["crossval", "--runs", *map(str, runs), "--out", str(tmp_path / "cv_bad"),
                     "--choose-postprocessing", "--confidence", "-0.1"]) == 2
    assert capsys.readouterr().err == "error: --confidence -0.1: must be at least 0 and below 1\n"
    assert not (tmp_path / "cv_bad").exists()
    assert "## Cross-validated estimate (2 folds, 5 cases, `last` checkpoints)" in (tmp_path / "cv" / "crossval.md").read_text()


def test_crossval_markdown_known_answer():
    def s(wt, tc, et, hd=(1.0, 2.0, 3.0)):
        return {r: {"dice": d, "hd95": h} for r, d, h in zip(("WT", "TC", "ET"), (wt, tc, et), hd)}

    results = {"checkpoint": "last", "failed": {"bad": "unreadable"},
               "cases": {"a": {"fold": 0, **s(0.9, 0.8, 0.7)}, "b": {"fold": 1, **s(0.5, 0.4, 0.3)},
                         "c": {"fold": 1, **s(0.7, 0.6, 0.5)}},
               "folds": {"0": {"cases": ["a"], "mean": s(0.9, 0.8, 0.7)},
                         "1": {"cases": ["b", "c"], "mean": s(0.6, 0.5, 0.4, (10.0, 20.0, 30.0))}},
               "mean": s(0.7, 0.6, 0.5, (4.0, 5.0, 6.0)), "median": s(0.7, 0.6, 0.5),
               "std": s(0.16329, 0.16329, 0.16329, (0.5, 0.25, 0.125))}
    choice = {"postprocess": {"keep_largest": {"WT": 1}}, "dice_before": {"WT": 0.7, "TC": 0.6, "ET": 0.5},
              "dice_after": {"WT": 0.71, "TC": 0.6, "ET": 0.5}}
    md = crossval_markdown(results, choice, command="brats-keras crossval --runs r0 r1 --out cv")
    lines = md.splitlines()
    assert lines[0] == "## Cross-validated estimate (2 folds, 3 cases, `last` checkpoints)"
    assert "| **mean over 3 cases** | 0.700 | 0.600 | 0.500 | 4.0 | 5.0 | 6.0 |" in lines
    assert "| standard deviation | 0.163 | 0.163 | 0.163 | 0.5 | 0.2 | 0.1 |" in lines
    assert "| fold 1 (2 cases) | 0.600 | 0.500 | 0.400 | 10.0 | 20.0 | 30.0 |" in lines
    # weakest first: b (mean 0.4), then c (0.6), then a (0.8)
    weak = next(line for line in lines if line.startswith("Weakest cases"))
    assert weak.index("b (fold 1: 0.50 / 0.40 / 0.30)") < weak.index("c (fold 1") < weak.index("a (fold 0")
    assert "Not scored (unreadable): bad." in lines
    assert ('Post-processing chosen on these out-of-fold predictions: `{"keep_largest": {"WT": 1}}`; mean Dice '
            "WT / TC / ET 0.700 / 0.600 / 0.500 before, 0.710 / 0.600 / 0.500 after.") in lines
    assert lines[-3:] == ["```bash", "brats-keras crossval --runs r0 r1 --out cv", "```"]
    none = crossval_markdown({**results, "failed": {}}, {**choice, "postprocess": {}})
    assert "`{}` (none passed: a rise of a mean Dice over 0.001)" in none and "Not scored" not in none and "```" not in none
    paired = crossval_markdown(results, {**choice, "postprocess": {}, "confidence": 0.9})
    assert "(none passed: a rise of a mean Dice over 0.001 with a paired interval of the gain not below 0)" in paired
    # a complete spec that changes nothing is "none" too (choose_postprocessing always returns a complete one)
    from brats_keras.postprocessing import postprocessing_spec as full

    assert "(none passed" in crossval_markdown(results, {**choice, "postprocess": full()})
    assert "(none passed" not in crossval_markdown(results, {**choice, "postprocess": full(thresholds=[0.5, 0.5, 0.7])})


def test_crossval_refuses_bad_runs_in_one_line(cv, tmp_path, capsys):
    root, runs = cv
    rc = cli_main(["crossval", "--runs", str(runs[0]), str(runs[0]), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "is a validation case of both" in err[0]
    rc = cli_main(["crossval", "--runs", str(tmp_path), "--out", str(tmp_path / "o")])
    assert rc == 2 and capsys.readouterr().err.strip() == f"error: {tmp_path}: not a run folder (no split.json)"
    rc = cli_main(["crossval", "--runs", str(runs[0]), "--data-root", str(tmp_path), "--out", str(tmp_path / "o")])
    assert rc == 2 and "no label map for validation case(s)" in capsys.readouterr().err
    # a split.json that is a JSON list was an AttributeError traceback (crossval and ensemble share the check now)
    bad = tmp_path / "listsplit"
    bad.mkdir()
    (bad / "split.json").write_text("[1, 2]")
    rc = cli_main(["crossval", "--runs", str(bad), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and f"{bad / 'split.json'}: not the split of a fold run" in err[0]
    # a "val" that is not a list of case ids (a TypeError traceback before)
    for val in (5, [1, 2], "c0"):
        (bad / "split.json").write_text(json.dumps({"fold": 0, "val": val}))
        rc = cli_main(["crossval", "--runs", str(bad), "--out", str(tmp_path / "o")])
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and len(err) == 1 and f'{bad / "split.json"}: its "val" is not a list of case ids' in err[0]
    assert not (tmp_path / "o").exists()


def test_crossval_corrupt_checkpoint_writes_nothing_and_a_bad_case_fails_alone(cv, tmp_path, capsys):
    import shutil

    root, runs = cv
    # a corrupt checkpoint of the second fold is refused before the first fold's predictions are written
    bad_run = tmp_path / "bad_fold1"
    shutil.copytree(runs[1], bad_run)
    (bad_run / "checkpoints" / "last.keras").write_bytes(b"not a zip")
    rc = cli_main(["crossval", "--runs", str(runs[0]), str(bad_run), "--data-root", str(root / "src"),
                   "--out", str(tmp_path / "o"), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "not a Keras model file" in err[0]
    assert not (tmp_path / "o").exists()
    # an unreadable case: one line, exit 1, the other cases are predicted and scored
    src = tmp_path / "src"
    shutil.copytree(root / "src", src)
    victim = json.loads((runs[0] / "split.json").read_text())["val"][0]
    (src / victim / f"{victim}_flair.nii.gz").write_bytes(b"\x1f\x8b truncated")
    rc = cli_main(["crossval", "--runs", *map(str, runs), "--data-root", str(src), "--out", str(tmp_path / "o2"),
                   "--quiet"])
    out = capsys.readouterr()
    assert rc == 1 and f"FAILED {victim}:" in out.out + out.err
    res = json.loads((tmp_path / "o2" / "crossval.json").read_text())
    assert list(res["failed"]) == [victim] and victim not in res["cases"]
    assert sorted(res["cases"]) == sorted(f"c{i}" for i in range(5) if f"c{i}" != victim)
    # no case readable: exit 2 in one line, and no empty output folder is left behind
    for cid in (f"c{i}" for i in range(5)):
        (src / cid / f"{cid}_flair.nii.gz").write_bytes(b"\x1f\x8b truncated")
    capsys.readouterr()
    rc = cli_main(["crossval", "--runs", *map(str, runs), "--data-root", str(src), "--out", str(tmp_path / "o3"),
                   "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err[-1] == "error: no validation case could be predicted (5 failed)"
    assert not (tmp_path / "o3").exists()


def test_folds_refuse_val_and_split_file(cv, tmp_path, capsys):
    root, runs = cv
    base = ["train", "--data", str(root / "conv"), "--folds", "5", "--fold", "0", "--epochs", "0"]
    for extra in (["--val", "2"], ["--split-file", str(runs[0] / "split.json")]):
        assert cli_main(base + extra + ["--out", str(tmp_path / "r")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err == ["error: --folds chooses the validation cases itself: drop --val and --split-file"]
    assert cli_main(["train", "--data", str(root / "conv"), "--fold", "1", "--out", str(tmp_path / "r")]) == 2
    assert capsys.readouterr().err.strip() == "error: --fold needs --folds K"
    with pytest.raises(BratsInputError, match="give --folds or --split-file"):
        train(TrainConfig(data=str(root / "conv"), out=str(tmp_path / "r"), folds=2,
                          split_file=str(runs[0] / "split.json")))
    assert not (tmp_path / "r").exists()


# ----------------------------------------------------------------------------- stored probabilities
def test_probabilities_file_errors_name_the_file(tmp_path):
    from brats_keras.crossval import load_probabilities, save_probabilities

    probs = np.random.default_rng(0).random((6, 7, 8, 3)).astype(np.float32)
    path = save_probabilities(tmp_path / "p" / "c.npz", probs, [(1, 5), (0, 7), (2, 8)])
    q, box, shape = load_probabilities(path)
    assert box == [(1, 5), (0, 7), (2, 8)] and shape == (6, 7, 8) and q.dtype == np.uint8
    assert np.abs(q / 255 - probs[1:5, 0:7, 2:8]).max() <= 0.5 / 255 + 1e-7
    assert sorted(x.name for x in (tmp_path / "p").iterdir()) == ["c.npz"]
    # the box's probabilities alone (what crossval hands over) give the same file content
    again = load_probabilities(save_probabilities(tmp_path / "p" / "b.npz", probs[1:5, 0:7, 2:8], box, (6, 7, 8)))
    assert again[1:] == (box, shape) and np.array_equal(again[0], q)
    with pytest.raises(ValueError, match=r"shape \(6, 7, 8\) for a box of shape \(4, 7, 6\)"):
        save_probabilities(tmp_path / "p" / "x.npz", probs, box, (6, 7, 8))
    assert not (tmp_path / "p" / "x.npz").exists()
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"junk")
    for f in (bad, tmp_path / "missing.npz"):
        with pytest.raises(BratsInputError, match=f"{f.name}: not a probabilities file"):
            load_probabilities(f)


# ----------------------------------------------------------------------------- the out-of-fold table of a fold ensemble
def test_crossval_of_an_ensemble_folder_gives_the_runs_table_again(cv, tmp_path, capsys):
    """crossval --ensemble: each fold's recorded validation cases predicted by that fold's file(s) alone, without
    the training runs: the same per-case scores as crossval --runs (float32 files: the same weights)."""
    root, runs = cv
    assert cli_main(["crossval", "--runs", *map(str, runs), "--out", str(tmp_path / "by_runs"), "--quiet"]) == 0
    by_runs = json.loads((tmp_path / "by_runs" / "crossval.json").read_text())
    ens = tmp_path / "ens"
    assert cli_main(["ensemble", "--runs", *map(str, runs), "--out", str(ens), "--float32"]) == 0
    record = json.loads((ens / "ensemble.json").read_text())
    for k, run in enumerate(runs):
        assert record["models"][f"fold-{k}.keras"]["val"] == sorted(json.loads((run / "split.json").read_text())["val"])
    capsys.readouterr()
    assert cli_main(["crossval", "--ensemble", str(ens), "--data-root", str(root / "src"), "--out",
                     str(tmp_path / "by_ens"), "--quiet"]) == 0
    by_ens = json.loads((tmp_path / "by_ens" / "crossval.json").read_text())
    assert by_ens["ensemble"] == str(ens.resolve()) and by_ens["cases"].keys() == by_runs["cases"].keys()
    for cid, row in by_ens["cases"].items():
        ref = by_runs["cases"][cid]
        assert row["fold"] == ref["fold"] and row["model"] == str(ens / f"fold-{row['fold']}.keras")
        for r in ("WT", "TC", "ET"):
            assert row[r]["dice"] == pytest.approx(ref[r]["dice"], abs=1e-9)
            assert row[r]["hd95"] == pytest.approx(ref[r]["hd95"], abs=1e-9)
    assert by_ens["folds"]["0"]["cases"] == by_runs["folds"]["0"]["cases"]
    # the Python call: one data root may be given as a str or a Path (not read as a sequence of letters)
    from brats_keras.crossval import crossval_ensemble

    for roots in (str(root / "src"), root / "src"):
        api = crossval_ensemble(ens, tmp_path / "api", data_roots=roots, progress=False)
        assert {c: r["WT"]["dice"] for c, r in api["cases"].items()} == {c: r["WT"]["dice"]
                                                                           for c, r in by_ens["cases"].items()}
    # --reuse: the table is read back (no --data-root needed, nothing predicted) and post-processing chosen on it
    table = (tmp_path / "by_ens" / "crossval.json").read_text()
    assert cli_main(["crossval", "--ensemble", str(ens), "--out", str(tmp_path / "by_ens"), "--reuse",
                     "--choose-postprocessing", "--quiet"]) == 0
    assert (tmp_path / "by_ens" / "crossval.json").read_text() == table
    chosen = json.loads((tmp_path / "by_ens" / "postprocessing.json").read_text())
    assert chosen["cases"] == len(by_ens["cases"]) == 5
    # two recipes (here the same runs twice): a case is predicted by the mean of its fold's two files
    assert cli_main(["ensemble", "--runs", *map(str, runs), "--runs", *map(str, runs), "--out", str(tmp_path / "ab"),
                     "--float32"]) == 0
    res = cli_main(["crossval", "--ensemble", str(tmp_path / "ab"), "--data-root", str(root / "src"), "--out",
                    str(tmp_path / "by_ab"), "--quiet"])
    by_ab = json.loads((tmp_path / "by_ab" / "crossval.json").read_text())
    assert res == 0 and by_ab["cases"]["c0"]["models"] == [str(tmp_path / "ab" / f"fold-{by_ab['cases']['c0']['fold']}{m}.keras")
                                                            for m in "ab"]
    for cid, row in by_ab["cases"].items():
        assert row["WT"]["dice"] == pytest.approx(by_runs["cases"][cid]["WT"]["dice"], abs=1e-6)


def test_crossval_of_an_ensemble_refuses_what_it_cannot_score_in_one_line(cv, tmp_path, capsys):
    root, runs = cv
    ens = tmp_path / "ens"
    assert cli_main(["ensemble", "--runs", *map(str, runs), "--out", str(ens)]) == 0
    good = (ens / "ensemble.json").read_text()
    record = json.loads(good)
    old = {**record, "models": {n: {k: v for k, v in m.items() if k != "val"} for n, m in record["models"].items()}}
    same = {**record, "models": {n: {**m, "val": record["models"]["fold-0.keras"]["val"]}
                                 for n, m in record["models"].items()}}
    out = tmp_path / "cv"
    cases = [(None, ["--data-root", str(root / "src")], f"{ens / 'ensemble.json'}: fold-0.keras records no "
                                                        "validation cases", old),
             (None, ["--data-root", str(root / "src")], f"{ens / 'ensemble.json'}: case "
                                                        f"{record['models']['fold-0.keras']['val'][0]} is a validation "
                                                        "case of both fold 0 and fold 1", same),
             (None, ["--data-root", str(root / "src")], "not the record of a fold ensemble", "{not json"),
             (None, [], "--ensemble: give --data-root", None),
             (None, ["--data-root", str(root / "src"), "--checkpoint", "best"], "--checkpoint with --ensemble", None),
             ("fold-1.keras", ["--data-root", str(root / "src")], f"{ens / 'fold-1.keras'}: listed in ensemble.json "
                                                                  "but missing", None)]
    for gone, args, message, text in cases:
        (ens / "ensemble.json").write_text(good if text is None else text if isinstance(text, str) else json.dumps(text))
        if gone:
            (ens / gone).rename(tmp_path / gone)
        capsys.readouterr()
        rc = cli_main(["crossval", "--ensemble", str(ens), "--out", str(out), *args])
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and len(err) == 1 and message in err[0], (message, err)
        assert not out.exists()
        if gone:
            (tmp_path / gone).rename(ens / gone)
    # --combine predicts nothing: the flags of prediction are refused instead of silently ignored
    for flags in (["--tta"], ["--checkpoint", "last"], ["--data-root", str(root / "src")]):
        capsys.readouterr()
        rc = cli_main(["crossval", "--combine", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(out), *flags])
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and len(err) == 1 and f"{flags[0]} with --combine: it predicts nothing" in err[0], err
    assert not out.exists()


def _export_script():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / "export_pretrained.py"
    spec = importlib.util.spec_from_file_location("export_pretrained", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def _recipe_runs(runs, to):
    """Copies of the fold runs whose config.json keeps the recipe's values of the settings no train flag sets
    (the card's command must reproduce the runs); the checkpoints are the same files."""
    import shutil
    from dataclasses import asdict

    from brats_keras.training import TrainConfig

    base = asdict(TrainConfig.from_recipe("pretrained"))
    out = []
    for run in runs:
        copy = to / run.name
        shutil.copytree(run, copy)
        cfg = json.loads((copy / "config.json").read_text())
        cfg.update({k: base[k] for k in ("lr_patience", "lr_factor", "split_seed")}, out=str(copy))
        (copy / "config.json").write_text(json.dumps(cfg))
        out.append(copy)
    return out


def _chosen_crossval(cv, tmp_path):
    """Recipe copies of the fold runs, their crossval table and the post-processing chosen on it."""
    root, runs = cv
    runs = _recipe_runs(runs, tmp_path / "runs")
    cv_dir = tmp_path / "cv"
    crossval_predict(runs, cv_dir, progress=False)
    assert cli_main(["crossval", "--runs", *map(str, runs), "--out", str(cv_dir), "--reuse",
                     "--choose-postprocessing"]) == 0
    return runs, cv_dir


def test_export_of_a_fold_ensemble_writes_the_files_and_a_card_headed_by_the_crossval(cv, tmp_path, capsys):
    runs, cv_dir = _chosen_crossval(cv, tmp_path)
    ship = tmp_path / "ship"
    ship.mkdir()
    (ship / "model.keras").write_bytes(b"the single model the ensemble replaces")
    (ship / "fold-7.keras").write_bytes(b"a fold of an earlier, larger ensemble")
    export = _export_script()
    args = ["--folds", *map(str, runs), "--crossval", str(cv_dir), "--data", "data/cv_2mm", "--to", str(ship),
            "--train-minutes", "3", "--check-cases", "2"]
    assert export(args) == 0
    assert sorted(p.name for p in ship.iterdir()) == ["MODEL_CARD.md", "ensemble.json", "fold-0.keras",
                                                      "fold-1.keras", "model_card.json"]
    card = json.loads((ship / "model_card.json").read_text())
    results = json.loads((cv_dir / "crossval.json").read_text())
    post = json.loads((cv_dir / "crossval_postprocessed.json").read_text())
    assert card["kind"] == "fold ensemble" and [f["fold"] for f in card["model_files"]] == [0, 1]
    # what tests/test_pretrained.py holds a shipped ensemble to: the card carries ensemble.json, whose validation
    # cases are the card's folds, and crossval --ensemble can read it
    from brats_keras.ensemble import ensemble_folds

    from brats_keras.io import file_checksum

    assert card["ensemble"] == json.loads((ship / "ensemble.json").read_text())
    assert {n: m["checksum"] for n, m in card["ensemble"]["models"].items()} == {  # the shipped files' own
        f"fold-{k}.keras": file_checksum(ship / f"fold-{k}.keras") for k in (0, 1)}
    assert [(k, [p.name for p in files], val) for k, _, files, val in ensemble_folds(ship)] == [
        (k, [f"fold-{k}.keras"], sorted(card["data"]["folds"][str(k)])) for k in (0, 1)]
    assert sorted(card["data"]["folds"]["0"] + card["data"]["folds"]["1"]) == [f"c{i}" for i in range(5)]
    assert card["crossval"]["mean"] == results["mean"] and card["crossval_postprocessed"]["mean"] == post["mean"]
    # where the out-of-fold predictions under-segment: recall is the table's sensitivity, averaged over the cases
    for r in ("WT", "TC", "ET"):
        rows = [c[r] for c in results["cases"].values() if r in c]
        assert card["undersegmentation"][r]["recall"] == pytest.approx(np.mean([c["sensitivity"] for c in rows]))
    assert len(card["check"]["cases"]) == 2 and 0 <= card["check"]["max_dice_difference"] <= 1
    assert card["check"]["ensemble_seconds_per_case"] > 0
    assert all(0 < card["resolution_ceiling"][r] <= 1 for r in ("WT", "TC", "ET"))
    from brats_keras import io as bio
    from brats_keras.evaluation import grid_dice

    factor = int(read_info(ship / "fold-0.keras").get("downsample") or 1)
    on_grid = [grid_dice(bio.load_classes(r["prediction"]), bio.load_classes(r["truth"]), factor)
               for r in results["cases"].values()]  # the out-of-fold predictions, on the models' grid
    assert card["grid_dice"] == pytest.approx({r: np.mean([g[r] for g in on_grid]) for r in ("WT", "TC", "ET")})
    e = card["et_contrast"]  # the labelled ET's T1ce contrast per case with ET, and the ET Dice of the dim ones
    assert set(e["cases"]) <= set(results["cases"]) and e["low"] == sorted(c for c, z in e["cases"].items() if z < 1)
    rest = [results["cases"][c]["ET"]["dice"] for c in e["cases"] if c not in e["low"]]
    assert e["et_dice_rest"] == (pytest.approx(np.mean(rest)) if rest else None)
    stored = read_info(ship / "fold-1.keras")["postprocess"]
    choice = json.loads((cv_dir / "postprocessing.json").read_text())
    assert {k: stored[k] for k in choice["postprocess"]} == choice["postprocess"]
    md = (ship / "MODEL_CARD.md").read_text()
    from brats_keras.model_card import card_markdown

    assert md == card_markdown(card)
    mean = results["mean"]
    assert md.startswith("# Model card: brats-keras pretrained 3D U-Net, 2-fold ensemble")
    assert (f"Scored at {factor} mm" in md) == (factor > 1)
    assert ("Enhancing tumor that is not bright in T1ce" in md) == bool(card["et_contrast"]["low"])
    assert ("| **mean over 5 cases** | " + " | ".join(f"{mean[r]['dice']:.3f}" for r in ("WT", "TC", "ET"))) in md
    assert "## Headline: the cross-validated estimate (2 folds, 5 cases, `last` checkpoints)" in md
    assert "--fold $k" in md and "for k in 0 1; do" in md and "--split-file" not in md
    source = os.path.relpath(cv[0] / "src")  # the one data root the runs' conversion read: no links needed
    assert f"python data_prep/convert.py --input {source} --output data/cv_2mm" in md and "ln -sfn" not in md
    assert Predictor(ship).predict_batch(np.zeros((1, 16, 16, 16, 3), np.float32)).shape == (1, 16, 16, 16, 3)


def test_ensemble_and_export_of_two_recipes_scored_by_their_combined_crossval(cv, tmp_path, capsys, monkeypatch):
    """Two recipes' fold runs (the same folds) make one ensemble, fold-<k>a.keras and fold-<k>b.keras, and the
    export ships it with the table crossval --combine wrote from the recipes' tables: its headline, each recipe's
    own mean, and the commands that rebuild both recipes and the combination."""
    runs_a = _recipe_runs(cv[1], tmp_path / "a")
    runs_b = _recipe_runs(cv[1], tmp_path / "b")
    for run in runs_b:  # recipe b: another training seed (as its config says; the weights are a's here)
        cfg = json.loads((run / "config.json").read_text())
        (run / "config.json").write_text(json.dumps({**cfg, "seed": 1}))
    cv_a, cv_b, cv_ab = tmp_path / "cv_a", tmp_path / "cv_b", tmp_path / "cv_ab"
    crossval_predict(runs_a, cv_a, progress=False)
    crossval_predict(runs_b, cv_b, progress=False)
    assert cli_main(["crossval", "--combine", str(cv_a), str(cv_b), "--out", str(cv_ab), "--choose-postprocessing",
                     "--quiet"]) == 0
    ens = tmp_path / "ens"
    assert cli_main(["ensemble", "--runs", *map(str, runs_a), "--runs", *map(str, runs_b), "--out", str(ens),
                     "--postprocessing", str(cv_ab / "postprocessing.json")]) == 0
    names = ["fold-0a.keras", "fold-0b.keras", "fold-1a.keras", "fold-1b.keras"]
    assert sorted(p.name for p in ens.glob("*.keras")) == names
    record = json.loads((ens / "ensemble.json").read_text())["models"]
    assert [record[n]["recipe"] for n in names] == [0, 1, 0, 1] and record["fold-1b.keras"]["run"] == str(runs_b[1])
    assert len(Predictor(ens).models) == 4
    capsys.readouterr()
    assert cli_main(["ensemble", "--runs", *map(str, runs_a), "--runs", str(runs_b[0]), "--out",
                     str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "give every recipe's runs of the same folds" in err[0]
    assert not (tmp_path / "bad").exists()
    ship = tmp_path / "ship"
    export = _export_script()
    args = ["--folds", *map(str, runs_a), "--folds", *map(str, runs_b), "--crossval", str(cv_ab), "--data",
            "data/cv_2mm", "--to", str(ship), "--train-minutes", "3", "--check-cases", "2"]
    # over the size budget: one line, nothing shipped
    monkeypatch.setitem(export.__globals__, "SIZE_BUDGET_MB", 0.1)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        export(args)
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2 and len(err) == 1 and "over the 0.1 MB budget: try --int8" in err[0]
    assert not list(ship.glob("*"))
    monkeypatch.undo()
    assert export(args + ["--int8"]) == 0
    from brats_keras.checkpoint import is_int8

    assert all(is_int8(p) for p in ship.glob("fold-*.keras"))
    card = json.loads((ship / "model_card.json").read_text())
    assert [(f["file"], f["fold"], f["recipe"]) for f in card["model_files"]] == [
        ("fold-0a.keras", 0, 0), ("fold-0b.keras", 0, 1), ("fold-1a.keras", 1, 0), ("fold-1b.keras", 1, 1)]
    combined = json.loads((cv_ab / "crossval.json").read_text())
    assert card["crossval"]["mean"] == combined["mean"]
    assert [r["crossval_mean"] for r in card["recipes"]] == [json.loads((d / "crossval.json").read_text())["mean"]
                                                             for d in (cv_a, cv_b)]
    assert card["check"]["max_dice_difference"] <= 0.02  # both recipes' fold files in float16 against the table
    md = (ship / "MODEL_CARD.md").read_text()
    from brats_keras.model_card import card_markdown

    assert md == card_markdown(card)
    assert md.startswith("# Model card: brats-keras pretrained 3D U-Net, 2 recipes x 2-fold ensemble")
    assert "the 2 fold models (one per recipe) that never saw it" in md and "Recipe b, each fold" in md
    assert "Every case scored once, by the mean of the probabilities of the 2 fold models (one per recipe)" in md
    assert "4 files `fold-0a.keras` ... `fold-1b.keras`" in md
    assert "brats-keras crossval --combine cv_a cv_b --out cv --choose-postprocessing" in md
    assert ("python scripts/export_pretrained.py --folds runs/cv_a/fold0 runs/cv_a/fold1 --folds runs/cv_b/fold0 "
            "runs/cv_b/fold1 --crossval cv") in md
    assert "--out runs/cv_b/fold$k" in md and md.count("--seed 1") == 1
    assert "--train-minutes 3 --int8" in md and "kernels stored in int8" in md and "the 2 models of one fold" in md


def test_export_of_a_two_stage_recipe_records_stage_1_and_rebuilds_both_stages(cv, tmp_path, capsys):
    """Stage 2: fold runs continued (--init-from, with deep supervision) from the fold files of an exported stage-1
    ensemble. The export ships their main outputs only, records each run's start file with the sha256 that
    stage 1's ensemble.json gives it, and its commands rebuild stage 1 (exported into stage1/) and then stage 2
    from there; a run that started from another file, or runs given without --stage1, are refused in one line."""
    from brats_keras.checkpoint import load_model
    from brats_keras.io import file_checksum
    from brats_keras.model_card import card_markdown

    root, _ = cv
    runs1, cv1 = _chosen_crossval(cv, tmp_path / "one")
    stage1 = tmp_path / "stage1"
    export = _export_script()
    assert export(["--folds", *map(str, runs1), "--crossval", str(cv1), "--data", "data/cv_2mm", "--to", str(stage1),
                   "--train-minutes", "3", "--check-cases", "1"]) == 0
    runs2 = []
    for k in range(2):
        train(TrainConfig(data=str(root / "conv"), out=str(tmp_path / "trained" / f"fold{k}"), base_filters=4,
                          depth=2, norm="instance", output="regions", loss="dice+bce", patch_size=16, batch_size=2,
                          epochs=1, steps_per_epoch=1, val_steps=1, verbose=0, mixed_precision="off", folds=2, fold=k,
                          split_seed=7, lr=3e-4, deep_supervision=1, init_from=str(stage1 / f"fold-{k}.keras")))
        runs2.append(tmp_path / "trained" / f"fold{k}")
    runs2 = _recipe_runs(runs2, tmp_path / "two")
    cv2 = tmp_path / "cv2"
    crossval_predict(runs2, cv2, progress=False)
    assert cli_main(["crossval", "--runs", *map(str, runs2), "--out", str(cv2), "--reuse",
                     "--choose-postprocessing"]) == 0
    ship = tmp_path / "ship"
    base = ["--folds", *map(str, runs2), "--crossval", str(cv2), "--data", "data/cv_2mm", "--to", str(ship),
            "--train-minutes", "2", "--check-cases", "2"]
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:  # runs that start from a model, without the stage they start from
        export(base)
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2 and len(err) == 1 and "starts from" in err[0] and "--stage1" in err[0]
    other = tmp_path / "other"  # a stage 1 whose fold-1 file is not the one the run started from
    other.mkdir()
    record = json.loads((stage1 / "ensemble.json").read_text())
    record["models"]["fold-1.keras"]["checksum"] = "sha256:" + "0" * 64
    (other / "ensemble.json").write_text(json.dumps(record))
    (other / "model_card.json").write_bytes((stage1 / "model_card.json").read_bytes())
    with pytest.raises(SystemExit) as exc:
        export(base + ["--stage1", str(other / "ensemble.json")])
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2 and len(err) == 1, err
    assert f"{runs2[1]} starts from {stage1 / 'fold-1.keras'}" in err[0] and "not the stage-1 fold-1 file" in err[0]
    assert not ship.exists()
    assert export(base + ["--stage1", str(stage1 / "ensemble.json")]) == 0
    card = json.loads((ship / "model_card.json").read_text())
    sums = {n: m["checksum"] for n, m in json.loads((stage1 / "ensemble.json").read_text())["models"].items()}
    assert [(s["fold"], s["stage1_file"], s["sha256"]) for s in card["stage1"]["starts"]] == [
        (k, f"fold-{k}.keras", file_checksum(stage1 / f"fold-{k}.keras")) for k in (0, 1)]
    assert {n: m["checksum"] for n, m in card["stage1"]["models"].items()} == sums
    stage1_card = json.loads((stage1 / "model_card.json").read_text())
    assert card["stage1"]["crossval_mean"] == stage1_card["crossval"]["mean"]
    assert card["stage1"]["crossval_postprocessed_dice"] == {  # stage 1's choice stays checkable per case
        cid: {r: row[r]["dice"] for r in ("WT", "TC", "ET")}
        for cid, row in stage1_card["crossval_postprocessed"]["cases"].items()}
    for k in (0, 1):  # the deep-supervision head is not shipped: one output, the main one
        trained, _ = load_model(runs2[k] / "checkpoints" / "last.keras", compile=False)
        shipped, _ = load_model(ship / f"fold-{k}.keras", compile=False)
        assert len(trained.outputs) == 2 and len(shipped.outputs) == 1
    assert card["check"]["max_dice_difference"] <= 0.02  # float16 files with the stored post-processing vs the table
    md = (ship / "MODEL_CARD.md").read_text()
    assert md == card_markdown(card)
    commands = card["commands"].splitlines()
    export1 = [i for i, c in enumerate(commands) if c.startswith("python scripts/export_pretrained.py")]
    assert len(export1) == 2
    first, second = commands[:export1[0] + 1], commands[export1[0] + 1:]
    assert first[1:-1] == stage1_card["commands"].splitlines()[:-1]  # stage 1's own commands, exported to stage1/
    assert first[-1] == stage1_card["commands"].splitlines()[-1] + " --to stage1"
    text = "\n".join(second)
    assert "--out runs/ft/fold$k" in text and "--deep-supervision 1" in text and "--lr 0.0003" in text
    assert text.count("--init-from stage1/fold-$k.keras") == 1 and "--init-from" not in "\n".join(first)
    assert "brats-keras crossval --runs runs/ft/fold0 runs/ft/fold1 --out cv_ft --choose-postprocessing" in text
    assert second[-1].startswith("python scripts/export_pretrained.py --folds runs/ft/fold0 runs/ft/fold1 "
                                 "--stage1 stage1/ensemble.json --crossval cv_ft --data data/cv_2mm")
    assert "Stage 1, each fold" in md and "Stage 2, each fold starting from its stage-1 model" in md


def test_export_commands_gather_the_data_roots_the_conversion_read(tmp_path, monkeypatch):
    """The card's commands rebuild the training data from the roots the conversion manifest names: several
    roots (brats-real and brats-extra) become one folder of links that convert.py reads, and the commands
    run as written; an unreadable manifest is one line naming it. The manifest is read as training reads it
    (ConvertedCases: the labelled cases)."""
    convert_inputs = _export_script().__globals__["convert_inputs"]
    proj, shared = tmp_path / "proj", tmp_path / "shared"
    cases = {}
    for root, case in (("real", "A_1"), ("real", "B_2"), ("extra", "C_3")):
        (shared / root / case).mkdir(parents=True)
        (shared / root / case / f"{case}_seg.nii.gz").write_bytes(b"")
        cases[case] = {"status": "ok", "seg": str(shared / root / case / f"{case}_seg.nii.gz"),
                       "image": f"images/{case}.npy", "mask": f"masks/{case}.npy"}
    (shared / "extra" / "README.md").write_text("not a case")
    cases["D_4"] = {"status": "failed", "error": "unreadable"}
    (shared / "other" / "E_5").mkdir(parents=True)  # a case without a label map: not trained on, not a root
    cases["E_5"] = {"status": "ok", "seg": None, "image": "images/E_5.npy", "mask": None}
    (proj / "data" / "conv").mkdir(parents=True)
    manifest = {"settings": {"modalities": ["flair", "t1ce"]}, "cases": cases}
    (proj / "data" / "conv" / "manifest.json").write_text(json.dumps(manifest))
    monkeypatch.chdir(proj)
    lines, source = convert_inputs("data/conv")
    assert source == "data/all_cases" and lines[0] == "mkdir -p data/all_cases"
    assert "../shared/extra/*/ ../shared/real/*/" in lines[1]
    subprocess.run(["bash", "-c", "\n".join(lines)], check=True)
    linked = proj / "data" / "all_cases"
    assert sorted(p.name for p in linked.iterdir()) == ["A_1", "B_2", "C_3"]  # case folders, not the README
    assert (linked / "C_3").resolve() == (shared / "extra" / "C_3").resolve()
    assert convert_inputs("data/conv") == (lines, source)  # again: the links are replaced, not nested
    subprocess.run(["bash", "-c", "\n".join(lines)], check=True)
    assert sorted(p.name for p in linked.iterdir()) == ["A_1", "B_2", "C_3"]
    with pytest.raises(ValueError, match=r"^nowhere: no manifest.json: not a conversion folder"):
        convert_inputs("nowhere")
    (proj / "data" / "bad").mkdir()
    (proj / "data" / "bad" / "manifest.json").write_text('{"cases": {')
    with pytest.raises(ValueError, match=r"^data/bad/manifest.json: cannot read the conversion manifest \(Expecting"):
        convert_inputs("data/bad")
    manifest["cases"] = {"E_5": cases["E_5"]}
    (proj / "data" / "conv" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match=r"^data/conv: no labelled case to train on$"):
        convert_inputs("data/conv")


def test_export_finds_the_runs_a_crossval_table_recorded_relative_to_where_it_ran(tmp_path, monkeypatch):
    """crossval records the run paths as it was given them (runs/cv28/fold0, from the project folder); the export
    refused those runs when given them from another folder or by absolute path."""
    same = _export_script().__globals__["_same_run"]
    run = tmp_path / "proj" / "runs" / "cv" / "fold0"
    run.mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "proj")
    assert same("runs/cv/fold0", run) and same(str(run), "runs/cv/fold0") and same("runs/cv/fold0", "runs/cv/fold0")
    monkeypatch.chdir(tmp_path)
    assert same("runs/cv/fold0", run) and same("cv/fold0", run)
    assert not same("runs/cv/fold1", run) and not same("../cv/fold0", run)
    assert not same(str(tmp_path / "other" / "cv" / "fold0"), run) and not same("other/fold0", run)


def test_export_refuses_runs_of_the_recorded_names_that_hold_out_other_cases(cv, tmp_path, capsys):
    """A table recorded from the folder of the runs (fold0, fold1) matches any run folder of that name; runs of
    another cross-validation under those names (another split) shipped under this table's card: its per-fold
    cases and scores were not those of the shipped files. Refused in one line naming the split, nothing written."""
    import shutil

    runs, cv_dir = _chosen_crossval(cv, tmp_path)
    table = json.loads((cv_dir / "crossval.json").read_text())
    for fold in table["folds"].values():  # as crossval records them when run from the runs' folder
        fold["run"] = fold["run"].rsplit("/", 1)[-1]
    (cv_dir / "crossval.json").write_text(json.dumps(table))
    other = []
    for run in runs:
        copy = tmp_path / "other" / run.name
        shutil.copytree(run, copy)
        other.append(copy)
    split = json.loads((other[0] / "split.json").read_text())
    moved = split["val"].pop()
    split["train"].append(moved)
    (other[0] / "split.json").write_text(json.dumps(split))
    export = _export_script()
    ship = tmp_path / "ship"
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        export(["--folds", *map(str, other), "--crossval", str(cv_dir), "--to", str(ship), "--train-minutes", "1",
                "--check-cases", "1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2 and len(err) == 1
    assert f"{other[0] / 'split.json'}: fold 0 holds out" in err[0] and "not the runs the table scores" in err[0]
    assert not ship.exists()


def test_export_of_a_fold_ensemble_refuses_bad_input_in_one_line(cv, tmp_path, capsys):
    root, runs = cv
    export = _export_script()
    ship = tmp_path / "ship"
    base = ["--to", str(ship), "--train-minutes", "1"]
    with pytest.raises(SystemExit) as exc:
        export(["--folds", *map(str, runs), *base])
    assert exc.value.code == 2 and "--folds needs --crossval" in capsys.readouterr().err
    cv_dir = tmp_path / "cv"
    crossval_predict(runs, cv_dir, progress=False)
    with pytest.raises(SystemExit) as exc:  # scored, but no post-processing chosen yet
        export(["--folds", *map(str, runs), "--crossval", str(cv_dir), *base])
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2 and len(err) == 1 and "postprocessing.json: not found" in err[0]
    assert cli_main(["crossval", "--runs", *map(str, runs), "--out", str(cv_dir), "--reuse",
                     "--choose-postprocessing"]) == 0
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:  # the table scored the last checkpoints
        export(["--folds", *map(str, runs), "--crossval", str(cv_dir), "--checkpoint", "best", *base])
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2 and len(err) == 1 and "scored the last checkpoints" in err[0]
    with pytest.raises(SystemExit) as exc:  # one fold only: not the runs the table scores
        export(["--folds", str(runs[0]), "--crossval", str(cv_dir), *base])
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2 and len(err) == 1 and "its table scores the runs" in err[0]
    assert not ship.exists()


def test_export_of_a_fold_ensemble_that_fails_after_the_fold_files_leaves_the_package_as_it_was(cv, tmp_path,
                                                                                                capsys, monkeypatch):
    """The fold files are written before the check predicts cases and the card is made; a failure there (here an
    unreadable label map, injected) removed model.keras and left fold files without their card."""
    runs, cv_dir = _chosen_crossval(cv, tmp_path)
    ship = tmp_path / "ship"
    ship.mkdir()
    before = {"model.keras": b"the shipped single model", "MODEL_CARD.md": b"its card", "model_card.json": b"{}"}
    for name, data in before.items():
        (ship / name).write_bytes(data)
    export = _export_script()

    def unreadable(*args, **kwargs):
        raise BratsInputError("c3/seg.nii.gz: not a NIfTI file (injected)")

    monkeypatch.setitem(export.__globals__, "resolution_ceiling", unreadable)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        export(["--folds", *map(str, runs), "--crossval", str(cv_dir), "--to", str(ship), "--train-minutes", "1",
                "--check-cases", "1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2 and err == ["export_pretrained: c3/seg.nii.gz: not a NIfTI file (injected)"]
    assert {p.name: p.read_bytes() for p in ship.iterdir()} == before  # no fold file, no staging folder left


def test_crossval_on_a_real_case_matches_the_model_card(real_dir, tmp_path):
    """A 'fold run' made of the shipped file that the model card says scored a real case, its split holding that
    case out: the crossval table gives the card's Dice and HD95 for it (model.keras: its validation score, to
    1e-6; a fold of the shipped ensemble: the card's float32 out-of-fold score before post-processing, which the
    float16 file gives to 1e-3; for an ensemble of several recipes, the combination of one such run per recipe),
    and an ensemble of each file twice, without post-processing, writes the same label map as crossval."""
    import nibabel as nib

    from brats_keras.pretrained import card_case, model_card

    case = "Brats18_TCIA02_606_1"
    ref = card_case(case)
    card = model_card()
    if ref["fold"] is None:
        want, dice_tol, hd95_tol = card["validation"]["cases"][case], 1e-6, 1e-6
    else:  # crossval scores without post-processing: the card's table before it
        want, dice_tol, hd95_tol = card["crossval"]["cases"][case], 1e-3, 0.5
    tables = []
    for i, model in enumerate(ref["models"]):  # one 'fold run' per file of the case's fold (one per recipe)
        run = tmp_path / f"run{i}"
        (run / "checkpoints").mkdir(parents=True)
        (run / "checkpoints" / "last.keras").symlink_to(model)
        (run / "split.json").write_text(json.dumps({"train": [], "val": [case], "test": [], "fold": ref["fold"]}))
        crossval_predict([run], tmp_path / f"cv{i}", data_roots=[real_dir], progress=False, tta=ref["tta"],
                         overlap=ref["overlap"])
        tables.append(tmp_path / f"cv{i}")
    if len(tables) == 1:
        cv_dir = tables[0]
    else:  # an ensemble of several recipes: the card's table is their combination
        from brats_keras.crossval import crossval_combine

        cv_dir = tmp_path / "combined"
        crossval_combine(tables, cv_dir, progress=False)
    res = json.loads((cv_dir / "crossval.json").read_text())
    for r in ("WT", "TC", "ET"):
        assert res["cases"][case][r]["dice"] == pytest.approx(want[r]["dice"], abs=dice_tol)
        assert res["cases"][case][r]["hd95"] == pytest.approx(want[r]["hd95"], abs=hd95_tol)
    src = tmp_path / "in"
    src.mkdir()
    (src / case).symlink_to(real_dir / case, target_is_directory=True)
    twice = [f for m in ref["models"] for f in ("--model", str(m), "--model", str(m))]
    rc = cli_main(["predict", *twice, "--input", str(src), "--output", str(tmp_path / "ens"), "--no-postprocess",
                   "--overlap", str(ref["overlap"]), "--quiet", *(["--tta"] if ref["tta"] else [])])
    assert rc == 0
    ens = np.asanyarray(nib.load(str(tmp_path / "ens" / f"{case}.nii.gz")).dataobj)
    single = np.asanyarray(nib.load(str(cv_dir / "predictions" / f"{case}.nii.gz")).dataobj)
    if len(tables) == 1:
        assert np.array_equal(ens, single)  # crossval predicts without post-processing
    else:  # the combination decides on probabilities stored to 1/255: a voxel within that of 0.5 may differ
        assert np.mean(ens == single) > 0.9999


def test_crossval_tables_of_another_task_have_its_regions():
    """A table records its task; its CSV, text and markdown columns are that task's scored regions."""
    from brats_keras.crossval import crossval_csv, format_crossval, table_task
    from brats_keras.tasks import get_task

    task = get_task("glioma2024-post")
    regions = task.region_names  # WT TC NETC SNFH ET RC

    def s(v):
        return {r: {"dice": v, "hd95": 2.0} for r in regions}

    results = {"task": task.to_dict(), "checkpoint": "last", "failed": {},
               "cases": {"a": {"fold": 0, **s(0.5)}}, "folds": {"0": {"cases": ["a"], "mean": s(0.5)}},
               "mean": s(0.5), "median": s(0.5), "std": s(0.0)}
    assert table_task(results).name == "glioma2024-post"
    assert crossval_csv(results).splitlines()[0] == (
        "case,fold,dice_WT,dice_TC,dice_NETC,dice_SNFH,dice_ET,dice_RC,"
        "hd95_WT,hd95_TC,hd95_NETC,hd95_SNFH,hd95_ET,hd95_RC")
    head, _, row = format_crossval(results).splitlines()[:3]
    assert head.split() == ["case", "fold", "Dice", *regions, "HD95", *regions]
    assert row.split() == ["a", "0", *["0.5000"] * 6, *["2.00"] * 6]
    md = crossval_markdown(results)
    assert "| | Dice WT | TC | NETC | SNFH | ET | RC | HD95 WT (mm) | TC | NETC | SNFH | ET | RC |" in md
    assert "Weakest cases (mean Dice of the six regions): a (fold 0: 0.50 / 0.50 / 0.50 / 0.50 / 0.50 / 0.50)." in md
    # a row without one of the task's regions is not a table of that task
    from brats_keras.crossval import _check_table

    no_rc = {**results, "cases": {"a": {"fold": 0, **{r: v for r, v in s(0.5).items() if r != "RC"}}}}
    with pytest.raises(BratsInputError, match="^t: case a has no finite RC dice$"):
        _check_table(no_rc, "t")
    # a table without a task record is the default task's: WT, TC, ET
    default = {k: v for k, v in results.items() if k != "task"}
    assert crossval_csv(default).splitlines()[0] == "case,fold,dice_WT,dice_TC,dice_ET,hd95_WT,hd95_TC,hd95_ET"
