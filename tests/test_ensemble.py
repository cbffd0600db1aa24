"""Fold ensembles: averaging the models of an ensemble, ``brats-keras ensemble`` writing the fold models of a
cross-validation with their ``ensemble.json``, the record read back as folds, and the shipped ensemble."""
import json

import numpy as np
import pytest

from brats_keras.checkpoint import read_info, save_model
from brats_keras.cli import main as cli_main
from brats_keras.inference import Predictor
from brats_keras.io import BratsInputError, find_cases
from brats_keras.postprocessing import postprocessing_spec
from brats_keras.tasks import TASKS

from conftest import write_small_case


def test_ensemble_of_a_model_with_itself_is_the_model(models, tmp_path):
    src = tmp_path / "in"
    write_small_case(src, "c0", shape=(36, 36, 30))
    case = find_cases(src)[0]
    single = Predictor(models["a"]).predict_case(case, return_probs=True)
    boxed = Predictor(models["a"]).predict_case(case, return_probs="box")  # crossval's: the brain box only
    assert np.array_equal(boxed["probs"], single["probs"][tuple(slice(a, b) for a, b in single["box"])])
    double = Predictor([models["a"], models["a"]]).predict_case(case, return_probs=True)
    assert np.array_equal(single["probs"], double["probs"]) and np.array_equal(single["classes"], double["classes"])


def test_ensemble_averages_probabilities(models, tmp_path):
    from brats_keras.checkpoint import load_model

    x = np.random.default_rng(0).normal(size=(2, 16, 16, 16, 4)).astype(np.float32)
    a, _ = load_model(models["a"], compile=False)
    b, _ = load_model(models["b"], compile=False)
    pa, pb = np.asarray(a.predict_on_batch(x)), np.asarray(b.predict_on_batch(x))
    assert np.abs(pa - pb).max() > 1e-3  # two different models
    ens = Predictor([models["a"], models["b"]])
    assert len(ens.models) == 2 and np.allclose(ens.predict_batch(x), (pa + pb) / 2, atol=1e-6)
    # a folder of .keras files is an ensemble of them (sorted by name)
    folder = tmp_path / "folds"
    folder.mkdir()
    for k, name in enumerate(("a", "b")):
        (folder / f"fold-{k}.keras").write_bytes(models[name].read_bytes())
    assert np.allclose(Predictor(folder).predict_batch(x), (pa + pb) / 2, atol=1e-6)


def test_ensemble_refuses_mixed_preprocessing(models, tmp_path, capsys):
    with pytest.raises(BratsInputError, match="trained with different scale .'zscore' and 'minmax'."):
        Predictor([models["a"], models["minmax"]])
    src = tmp_path / "in"
    write_small_case(src, "c0", shape=(16, 18, 14))
    rc = cli_main(["predict", "--model", str(models["a"]), "--model", str(models["minmax"]), "--input", str(src),
                   "--output", str(tmp_path / "out"), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1
    assert err[0].startswith(f"error: {models['a']} and {models['minmax']} were trained with different scale")
    # the command with two models of one preprocessing predicts
    rc = cli_main(["predict", "--model", str(models["a"]), "--model", str(models["b"]), "--input", str(src),
                   "--output", str(tmp_path / "ok"), "--quiet", "--no-postprocess"])
    assert rc == 0 and (tmp_path / "ok" / "c0.nii.gz").exists()


def test_ensemble_of_folds_trained_in_mixed_precision_computes_in_float32(cv, tmp_path):
    """Folds trained under mixed_bfloat16 keep that policy in their layers: shipped as they were, the ensemble
    predicted in bfloat16 wherever it was loaded (slow on CPUs without bfloat16, and its exports, which compute
    in float32, gave probabilities up to 0.015 away). The fold files compute in float32 with the same weights."""
    import shutil

    import keras

    from brats_keras.checkpoint import load_model
    from brats_keras.ensemble import ensemble_from_runs
    from brats_keras.models import build_model

    root, runs = cv
    mixed = []
    for run in runs:
        copy = tmp_path / run.name
        shutil.copytree(run, copy)
        last = copy / "checkpoints" / "last.keras"
        src, info = load_model(last, compile=False)
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
        try:
            model = build_model("unet3d", in_channels=3, output="regions", base_filters=4, depth=2, norm="instance")
        finally:
            keras.mixed_precision.set_global_policy("float32")
        model.set_weights(src.get_weights())
        save_model(model, last, info, include_optimizer=False)
        assert "mixed_bfloat16" in {layer.dtype_policy.name for layer in load_model(last, compile=False)[0].layers}
        mixed.append(copy)
    x = np.random.default_rng(0).normal(size=(1, 16, 16, 16, 3)).astype(np.float32)
    for path in ensemble_from_runs(mixed, tmp_path / "ens", log=lambda line: None):
        fold, _ = load_model(path, compile=False)
        assert {layer.dtype_policy.name for layer in fold.layers} == {"float32"}
        src, _ = load_model(mixed[int(path.stem[-1])] / "checkpoints" / "last.keras", compile=False)
        for w, h in zip(src.get_weights(), fold.get_weights()):
            np.testing.assert_array_equal(h, w.astype(np.float16).astype(np.float32))
        assert keras.ops.convert_to_numpy(fold(x)).dtype == np.float32
        assert read_info(path)["modalities"] == read_info(mixed[0] / "checkpoints" / "last.keras")["modalities"]


def test_ensemble_command_gathers_the_folds_in_float16_with_the_chosen_postprocessing(cv, tmp_path, capsys):
    from brats_keras.checkpoint import load_model

    root, runs = cv
    lasts = [r / "checkpoints" / "last.keras" for r in runs]
    pp = tmp_path / "postprocessing.json"
    pp.write_text(json.dumps({"postprocess": {"min_component": {"WT": 50}, "et_threshold": 100},
                              "chosen_on": {"crossval": "cv"}, "dice_before": {"WT": 0.8}, "dice_after": {"WT": 0.81}}))
    out = tmp_path / "ens"
    # runs given in any order: the files are named by their fold
    assert cli_main(["ensemble", "--runs", str(runs[1]), str(runs[0]), "--out", str(out),
                     "--postprocessing", str(pp)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["ensemble.json", "fold-0.keras", "fold-1.keras"]
    record = json.loads((out / "ensemble.json").read_text())
    assert record["weights_dtype"] == "float16" and record["models"]["fold-1.keras"]["run"] == str(runs[1])
    assert record["task"] == TASKS["glioma2021"].to_dict()  # the task the fold models record
    from brats_keras.io import file_checksum

    assert {n: m["checksum"] for n, m in record["models"].items()} == {n: file_checksum(out / n)
                                                                       for n in ("fold-0.keras", "fold-1.keras")}
    x = np.random.default_rng(0).normal(size=(2, 16, 16, 16, 3)).astype(np.float32)
    expected = []
    for k, last in enumerate(lasts):
        src, src_info = load_model(last, compile=False)
        dst, dst_info = load_model(out / f"fold-{k}.keras", compile=False)
        for w, h in zip(src.get_weights(), dst.get_weights()):
            np.testing.assert_array_equal(h, w.astype(np.float16).astype(np.float32))
        assert dst_info["postprocess"]["min_component"] == {"WT": 50, "TC": 0, "ET": 0}
        assert dst_info["postprocess"]["et_threshold"] == 100
        assert dst_info["postprocess"]["chosen_on"]["crossval"] == "cv"
        assert {k: v for k, v in dst_info.items() if k != "postprocess"} == src_info
        expected.append(np.asarray(dst.predict_on_batch(x)))
    ens = Predictor(out)
    assert len(ens.models) == 2 and ens.post == postprocessing_spec({"min_component": {"WT": 50}, "et_threshold": 100})
    assert np.allclose(ens.predict_batch(x), (expected[0] + expected[1]) / 2, atol=1e-6)
    # --float32 keeps the weights exactly
    assert cli_main(["ensemble", "--runs", *map(str, runs), "--out", str(tmp_path / "f32"), "--float32"]) == 0
    a, _ = load_model(tmp_path / "f32" / "fold-0.keras", compile=False)
    b, _ = load_model(lasts[0], compile=False)
    assert all(np.array_equal(u, v) for u, v in zip(a.get_weights(), b.get_weights()))
    assert "postprocess" not in read_info(tmp_path / "f32" / "fold-0.keras")
    # --int8: kernels as 8-bit integers, restored by predict within half a step of each output channel
    from brats_keras.checkpoint import is_int8

    assert cli_main(["ensemble", "--runs", *map(str, runs), "--out", str(tmp_path / "i8"), "--int8"]) == 0
    assert json.loads((tmp_path / "i8" / "ensemble.json").read_text())["weights_dtype"] == "int8"
    assert is_int8(tmp_path / "i8" / "fold-0.keras")
    c, _ = load_model(tmp_path / "i8" / "fold-0.keras", compile=False)
    for u, v in zip(c.get_weights(), b.get_weights()):
        step = np.abs(v).reshape(-1, v.shape[-1]).max(axis=0) / 127 if v.ndim >= 2 else np.abs(v) / 1000
        assert np.all(np.abs(u - v) <= step / 2 + 1e-6)
    assert np.allclose(Predictor(tmp_path / "i8").predict_batch(x), ens.predict_batch(x), atol=0.02)


def test_ensemble_command_refuses_bad_runs_in_one_line_and_writes_nothing(cv, tmp_path, capsys):
    from brats_keras.checkpoint import write_info

    root, runs = cv
    other = tmp_path / "other"  # a copy of fold 1 trained, it says, on min-max scaled data
    (other / "checkpoints").mkdir(parents=True)
    (other / "split.json").write_bytes((runs[1] / "split.json").read_bytes())
    (other / "checkpoints" / "last.keras").write_bytes((runs[1] / "checkpoints" / "last.keras").read_bytes())
    write_info(other / "checkpoints" / "last.keras",
               {**read_info(runs[1] / "checkpoints" / "last.keras"), "scale": "minmax"})
    bad_pp = tmp_path / "pp.json"
    bad_pp.write_text("{not json")
    post = tmp_path / "post"  # a copy of fold 1 of, it says, the post-treatment task
    (post / "checkpoints").mkdir(parents=True)
    (post / "split.json").write_bytes((runs[1] / "split.json").read_bytes())
    (post / "checkpoints" / "last.keras").write_bytes((runs[1] / "checkpoints" / "last.keras").read_bytes())
    write_info(post / "checkpoints" / "last.keras",
               {**read_info(runs[1] / "checkpoints" / "last.keras"), "task": TASKS["glioma2024-post"].to_dict()})
    listed = tmp_path / "listed"  # a split.json that is a JSON list (was an AttributeError traceback)
    (listed / "checkpoints").mkdir(parents=True)
    (listed / "split.json").write_text("[1, 2]")
    (listed / "checkpoints" / "last.keras").write_bytes((runs[1] / "checkpoints" / "last.keras").read_bytes())
    cases = [([str(runs[0]), str(runs[0])], f"{runs[0]} and {runs[0]} are both fold 0"),
             ([str(runs[0]), str(root)], f"{root}: not a run folder (no split.json)"),
             ([str(runs[0]), str(other)], "were trained with different scale ('zscore' and 'minmax')"),
             ([str(runs[0]), str(runs[1]), "--postprocessing", str(bad_pp)], f"{bad_pp}: not a readable post-processing"),
             ([str(runs[0]), str(listed)], f"{listed / 'split.json'}: not the split of a fold run"),
             ([str(runs[0]), str(post)], "were trained for different tasks (glioma2021 and glioma2024-post): the "
                                         "models of an ensemble need the same classes")]
    for args, message in cases:
        capsys.readouterr()
        rc = cli_main(["ensemble", "--runs", *args, "--out", str(tmp_path / "ens")])
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and len(err) == 1 and message in err[0], (args, err)
        assert not (tmp_path / "ens").exists()
    (runs[0] / "checkpoints" / "best.keras").rename(runs[0] / "checkpoints" / "best.keras.away")
    try:
        assert cli_main(["ensemble", "--runs", *map(str, runs), "--checkpoint", "best", "--out",
                         str(tmp_path / "ens")]) == 2
        assert "best.keras: checkpoint not found" in capsys.readouterr().err
    finally:
        (runs[0] / "checkpoints" / "best.keras.away").rename(runs[0] / "checkpoints" / "best.keras")
    assert not (tmp_path / "ens").exists()


def test_ensemble_into_a_used_folder_leaves_no_other_model_beside_the_folds(cv, tmp_path, capsys):
    """predict --model OUT averages every .keras file in OUT: a fold-2.keras of an earlier 3-fold ensemble was left
    beside the new two folds (and ensemble.json did not list it), and a model.keras there joined them silently."""
    from brats_keras.checkpoint import load_model

    root, runs = cv
    out = tmp_path / "ens"
    out.mkdir()
    (out / "fold-2.keras").write_bytes((runs[0] / "checkpoints" / "last.keras").read_bytes())
    assert cli_main(["ensemble", "--runs", *map(str, runs), "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["ensemble.json", "fold-0.keras", "fold-1.keras"]
    assert len(Predictor(out).models) == 2
    (out / "model.keras").write_bytes((runs[0] / "checkpoints" / "last.keras").read_bytes())
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    capsys.readouterr()
    assert cli_main(["ensemble", "--runs", *map(str, runs), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{out}: holds model.keras, which predict --model {out} would average" in err[0]
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    # a weight float16 cannot hold, in the second fold: refused before the first fold is written
    big = tmp_path / "big"
    (big / "checkpoints").mkdir(parents=True)
    (big / "split.json").write_bytes((runs[1] / "split.json").read_bytes())
    model, info = load_model(runs[1] / "checkpoints" / "last.keras", compile=False)
    weights = model.get_weights()
    weights[0] = np.full_like(weights[0], 1e5)
    model.set_weights(weights)
    save_model(model, big / "checkpoints" / "last.keras", info, include_optimizer=False)
    assert cli_main(["ensemble", "--runs", str(runs[0]), str(big), "--out", str(tmp_path / "ens16")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "last.keras: a weight beyond float16's range" in err[0]
    assert not (tmp_path / "ens16").exists()


def test_ensemble_folds_refuse_odd_records_in_one_line_naming_the_file(tmp_path):
    """ensemble_folds reads ensemble.json as written by ensemble_from_runs; anything else it cannot use is one
    BratsInputError naming ensemble.json (never a TypeError from a case id that is not a string, or a file
    predicting the cases another fold's record lists)."""
    from brats_keras.ensemble import ensemble_folds

    from brats_keras.io import file_checksum

    ens = tmp_path / "ens"
    ens.mkdir()
    for name in ("fold-0a.keras", "fold-0b.keras", "fold-1a.keras", "fold-1b.keras"):
        (ens / name).write_bytes(b"")  # checked by name and checksum: the files are loaded later, by the Predictor
    empty = file_checksum(ens / "fold-0a.keras")
    good = {"fold-0a.keras": {"fold": 0, "val": ["c2", "c0"]}, "fold-0b.keras": {"fold": 0, "val": ["c0", "c2"]},
            "fold-1a.keras": {"val": ["c1"]}, "fold-1b.keras": {"fold": 1, "val": ["c1"]}}
    good = {name: {**entry, "checksum": empty} for name, entry in good.items()}
    (ens / "ensemble.json").write_text(json.dumps({"checkpoint": "last", "models": good}))
    assert ensemble_folds(ens) == [(0, ens, [ens / "fold-0a.keras", ens / "fold-0b.keras"], ["c2", "c0"]),
                                   (1, ens, [ens / "fold-1a.keras", ens / "fold-1b.keras"], ["c1"])]
    record = str(ens / "ensemble.json")
    bad = [([], "not the record of a fold ensemble"),
           ({"models": ["fold-0a.keras"]}, "not the record of a fold ensemble (no models listed)"),
           ({"models": {**good, "fold-1a.keras": "c1"}}, "fold-1a.keras: not the record of a file"),
           ({"models": {**good, "fold-1a.keras": {"fold": 1}}}, "fold-1a.keras records no validation cases"),
           ({"models": {**good, "fold-1a.keras": {"fold": 1, "val": "c1"}}}, 'fold-1a.keras: "val" is not a list'),
           ({"models": {**good, "fold-1a.keras": {"fold": 1, "val": [1]}}}, 'fold-1a.keras: "val" is not a list'),
           ({"models": {**good, "fold-1a.keras": {"fold": 1, "val": [["c1"]]}}}, '"val" is not a list of case ids'),
           ({"models": {**good, "fold-1a.keras": {"fold": 1, "val": []}}}, '"val" is not a list of case ids'),
           ({"models": {**good, "fold-1a.keras": {"fold": 1, "val": ["c1", "c1"]}}},
            "lists validation case(s) c1 twice"),
           ({"models": {**good, "fold-1a.keras": {"fold": "1", "val": ["c1"]}}}, 'records fold "1", its name fold 1'),
           ({"models": {**good, "fold-1a.keras": {"fold": True, "val": ["c1"]}}}, "records fold true, its name fold 1"),
           ({"models": {**good, "fold-1a.keras": {"fold": 0, "val": ["c1"]}}}, "records fold 0, its name fold 1"),
           ({"models": {"model.keras": {"fold": 0, "val": ["c0"]}}}, "model.keras: not a fold file of an ensemble"),
           ({"models": {"../ens/fold-0a.keras": {"fold": 0, "val": ["c0"]}}}, "a file name, not a path"),
           ({"models": {**good, "fold-1b.keras": {"fold": 1, "val": ["c3"]}}},
            "the files of fold 1 record different validation cases"),
           ({"models": {**good, "fold-1a.keras": {"val": ["c2"]}, "fold-1b.keras": {"val": ["c2"]}}},
            "case c2 is a validation case of both fold 0 and fold 1: not the record of one cross-validation")]
    for text, message in bad:
        (ens / "ensemble.json").write_text(json.dumps(text))
        with pytest.raises(BratsInputError) as exc:
            ensemble_folds(ens)
        assert str(exc.value).startswith(record + ": ") and message in str(exc.value), (message, str(exc.value))
        assert "\n" not in str(exc.value)
    (ens / "ensemble.json").write_text(json.dumps({"models": {**good, "fold-2.keras": {"fold": 2, "val": ["c3"]}}}))
    with pytest.raises(BratsInputError, match=r"fold-2.keras: listed in ensemble.json but missing$"):
        ensemble_folds(ens)
    # the files themselves: crossval --ensemble predicts with exactly the listed, unchanged ones
    (ens / "ensemble.json").write_text(json.dumps({"models": good}))
    (ens / "fold-0a (copy).keras").write_bytes(b"")
    with pytest.raises(BratsInputError, match=r"fold-0a \(copy\).keras: a model file that ensemble.json does not list"):
        ensemble_folds(ens)
    (ens / "fold-0a (copy).keras").unlink()
    (ens / "fold-1b.keras").write_bytes(b"changed")
    with pytest.raises(BratsInputError, match=r"fold-1b.keras: its sha256 differs from the one ensemble.json records"):
        ensemble_folds(ens)


def test_ensemble_file_names_carry_the_fold_and_the_recipe():
    from brats_keras.ensemble import ensemble_file_fold, ensemble_file_name

    assert ensemble_file_name(3) == "fold-3.keras" and ensemble_file_name(3, 1) == "fold-3b.keras"
    assert [ensemble_file_fold(n) for n in ("fold-3.keras", "fold-12a.keras", "fold-0b.keras")] == [3, 12, 0]
    for bad in ("fold-.keras", "fold-3ab.keras", "model.keras", "fold-3a.h5", "fold-x.keras"):
        with pytest.raises(ValueError, match="not a fold file"):
            ensemble_file_fold(bad)


def test_shipped_ensemble_is_used_when_present(monkeypatch, tmp_path, models):
    """The package folder holds model.keras, or a fold ensemble in its place: the files its ensemble.json lists
    (a fold file without that record, or model.keras beside it, is refused)."""
    import brats_keras.pretrained as pre
    from brats_keras.io import file_checksum

    monkeypatch.setattr(pre, "HERE", tmp_path)  # a package folder with the single model only
    monkeypatch.setattr(pre, "MODEL_FILE", tmp_path / "model.keras")
    pre.MODEL_FILE.write_bytes(models["a"].read_bytes())
    assert pre.pretrained_paths() == [pre.MODEL_FILE] and pre.pretrained_path() == pre.MODEL_FILE
    for k, name in enumerate(("a", "b")):
        (tmp_path / f"fold-{k}.keras").write_bytes(models[name].read_bytes())
    with pytest.raises(FileNotFoundError, match="ensemble.json: the record of the shipped fold ensemble is missing"):
        pre.pretrained_paths()
    (tmp_path / "ensemble.json").write_text(json.dumps({"models": {
        f"fold-{k}.keras": {"fold": k, "val": [f"c{k}"], "checksum": file_checksum(tmp_path / f"fold-{k}.keras")}
        for k in (0, 1)}}))
    with pytest.raises(BratsInputError, match="model.keras: a model file that ensemble.json does not list"):
        pre.pretrained_path()  # beside the ensemble, model.keras is refused (it was taken for load_pretrained)
    pre.MODEL_FILE.unlink()  # an ensemble that replaced it
    assert pre.pretrained_paths() == [tmp_path / "fold-0.keras", tmp_path / "fold-1.keras"]
    assert len(Predictor().models) == 2
    assert pre.pretrained_path() == tmp_path / "fold-0.keras"
    from brats_keras.checkpoint import load_pretrained

    assert load_pretrained().count_params() == Predictor(tmp_path / "fold-0.keras").model.count_params()
    for f in [*tmp_path.glob("fold-*.keras"), tmp_path / "ensemble.json"]:
        f.unlink()
    with pytest.raises(FileNotFoundError, match="model.keras: the pretrained model is not installed"):
        pre.pretrained_path()
