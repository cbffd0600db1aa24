"""Reading a crossval output (``brats_keras.crossval.read_crossval``): a folder or its JSON file, the checks of
the table, and the one line naming the file for each fault, through the function, the commands that read it
(``crossval --reuse``, ``crossval-compare``, scripts/export_pretrained.py) and the post-processing chooser."""
import importlib.util
import json
from pathlib import Path

import pytest

from brats_keras.cli import main as cli_main
from brats_keras.crossval import (choose_postprocessing_from_crossval, crossval_file, crossval_postprocessed,
                                  read_crossval)
from brats_keras.io import BratsInputError

REGIONS = ("WT", "TC", "ET")


def _scores(d):
    return {r: {"dice": d, "hd95": 4.0, "sensitivity": 0.9, "specificity": 1.0} for r in REGIONS}


def full_table():
    """A table with every field crossval_predict writes (two folds, three cases)."""
    cases = {c: {"fold": f, "run": f"runs/cv/fold{f}", "model": f"runs/cv/fold{f}/checkpoints/last.keras",
                 "prediction": f"cv/predictions/{c}.nii.gz", "truth": f"data/{c}/{c}_seg.nii.gz", **_scores(d)}
             for c, f, d in (("a", 0, 0.9), ("b", 1, 0.7), ("c", 1, 0.5))}
    mean = {r: {"dice": 0.7, "hd95": 4.0} for r in REGIONS}
    return {"checkpoint": "last", "tta": False, "overlap": 0.5, "cases": cases,
            "folds": {"0": {"run": "runs/cv/fold0", "cases": ["a"], "mean": mean},
                      "1": {"run": "runs/cv/fold1", "cases": ["b", "c"], "mean": mean}},
            "failed": {}, "mean": mean, "median": mean, "std": mean}


def postprocessed_table():
    """A crossval_postprocessed.json: rows keep the fold and the scores, no files."""
    t = full_table()
    return {**t, "postprocess": {}, "cases": {c: {"fold": row["fold"], **_scores(0.8)} for c, row in t["cases"].items()}}


def _write(folder: Path, table, name="crossval.json") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(table if isinstance(table, str) else json.dumps(table))
    return path


def test_a_folder_and_its_file_read_the_same_table(tmp_path):
    path = _write(tmp_path / "cv", full_table())
    post = _write(tmp_path / "cv", postprocessed_table(), "crossval_postprocessed.json")
    assert read_crossval(tmp_path / "cv") == read_crossval(path) == full_table()
    # postprocessed: the folder's crossval_postprocessed.json, also from a path to its crossval.json
    assert read_crossval(tmp_path / "cv", postprocessed=True) == read_crossval(path, postprocessed=True) \
        == read_crossval(post, postprocessed=True) == postprocessed_table()
    assert crossval_file(tmp_path / "cv") == path and crossval_file(path, postprocessed=True) == post
    # crossval-compare needs the scores only: hand-made tables without files or summaries are read
    bare = {"cases": {"a": {"fold": 0, **_scores(0.5)}}}
    assert read_crossval(_write(tmp_path / "bare", bare), scores_only=True) == bare


def _drop(key):
    def edit(t):
        t["cases"]["b"].pop(key)
        return t
    return edit


def _set(fn):
    def edit(t):
        fn(t)
        return t
    return edit


#: (what is wrong, the table as written (a text or an edit of full_table), the end of the error line)
FAULTS = [
    ("truncated JSON", json.dumps(full_table())[:80], "not a readable crossval table ("),
    ("empty file", "", "not a readable crossval table (Expecting value"),
    ("a JSON list", "[1, 2]", 'not a crossval table (no "cases")'),
    ("cases is a list", _set(lambda t: t.update(cases=[1])), 'not a crossval table (no "cases")'),
    ("no folds", _set(lambda t: t.pop("folds")), 'not a crossval table (no "folds")'),
    ("no mean", _set(lambda t: t.pop("mean")), 'not a crossval table (no "mean")'),
    ("a fold without cases", _set(lambda t: t["folds"]["1"].pop("cases")), "fold 1 does not list its cases"),
    ("failed is a list", _set(lambda t: t.update(failed=["x"])), '"failed" is not a table of case: reason'),
    ("a row that is a number", _set(lambda t: t["cases"].update(b=3)), "case b is not a row of scores"),
    ("a row without fold", _drop("fold"), "case b has no fold"),
    ("a row without truth", _drop("truth"), "case b names no truth file"),
    ("a row without prediction", _drop("prediction"), "case b names no prediction file"),
    ("a row without ET", _drop("ET"), "case b has no finite ET dice"),
    ("a NaN HD95", _set(lambda t: t["cases"]["c"]["TC"].update(hd95=float("nan"))), "case c has no finite TC hd95"),
]


@pytest.mark.parametrize("what, content, message", FAULTS, ids=[f[0] for f in FAULTS])
def test_each_fault_is_one_line_naming_the_file(tmp_path, what, content, message):
    path = _write(tmp_path / "cv", content if isinstance(content, str) else content(full_table()))
    for given in (tmp_path / "cv", path):
        with pytest.raises(BratsInputError) as exc:
            read_crossval(given)
        assert str(exc.value).startswith(f"{path}: ") and message in str(exc.value)
        assert "\n" not in str(exc.value)


def test_missing_folders_and_files_and_undecodable_bytes(tmp_path):
    with pytest.raises(BratsInputError, match=f"^{tmp_path / 'nowhere'}: no such crossval folder or file$"):
        read_crossval(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BratsInputError, match=rf"^{tmp_path / 'empty' / 'crossval.json'}: no such file \(run "
                                              r"brats-keras crossval first\)$"):
        read_crossval(tmp_path / "empty")
    with pytest.raises(BratsInputError, match=rf"^{tmp_path / 'empty' / 'crossval_postprocessed.json'}: no such "
                                              r"file \(run crossval --choose-postprocessing first\)$"):
        read_crossval(tmp_path / "empty" / "crossval.json", postprocessed=True)
    path = tmp_path / "bin" / "crossval.json"
    path.parent.mkdir()
    path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(BratsInputError, match=f"^{path}: not a readable crossval table"):
        read_crossval(path)
    # a postprocessed table has no files to check, but its rows keep their scores
    _write(tmp_path / "cv", full_table())
    bad = postprocessed_table()
    bad["cases"]["a"]["WT"].pop("dice")
    post = _write(tmp_path / "cv", bad, "crossval_postprocessed.json")
    with pytest.raises(BratsInputError, match=f"^{post}: case a has no finite WT dice$"):
        read_crossval(tmp_path / "cv", postprocessed=True)


def test_the_chooser_and_the_rescoring_refuse_a_bad_table_naming_it(tmp_path):
    """They read crossval.json with no check: a truncated file was a JSONDecodeError traceback, a row without
    its truth a KeyError."""
    path = _write(tmp_path / "cv", json.dumps(full_table())[:50])
    for call in (lambda: choose_postprocessing_from_crossval(tmp_path / "cv"),
                 lambda: crossval_postprocessed(tmp_path / "cv", {})):
        with pytest.raises(BratsInputError, match=f"^{path}: not a readable crossval table"):
            call()
    _write(tmp_path / "cv", _drop("truth")(full_table()))
    with pytest.raises(BratsInputError, match=f"^{path}: case b names no truth file$"):
        choose_postprocessing_from_crossval(tmp_path / "cv")


@pytest.mark.parametrize("what, content, message", [FAULTS[0], FAULTS[2], FAULTS[10]],
                         ids=[FAULTS[i][0] for i in (0, 2, 10)])
def test_crossval_reuse_refuses_a_bad_table_in_one_line_exit_2(tmp_path, capsys, what, content, message):
    path = _write(tmp_path / "cv", content if isinstance(content, str) else content(full_table()))
    rc = cli_main(["crossval", "--runs", str(tmp_path / "run"), "--out", str(tmp_path / "cv"), "--reuse",
                   "--choose-postprocessing"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and err.startswith(f"error: {path}: ") and message in err
    assert sorted(p.name for p in (tmp_path / "cv").iterdir()) == ["crossval.json"]  # nothing written
    rc = cli_main(["crossval", "--runs", str(tmp_path / "run"), "--out", str(tmp_path / "none"), "--reuse"])
    assert rc == 2 and capsys.readouterr().err == (f"error: {tmp_path / 'none' / 'crossval.json'}: no such file "
                                                   "(run brats-keras crossval first)\n")


def test_crossval_compare_reads_through_the_same_checks(tmp_path, capsys):
    good = _write(tmp_path / "a", full_table()).parent
    bad = _write(tmp_path / "b", _drop("fold")(full_table()))
    assert cli_main(["crossval-compare", str(good), str(bad.parent)]) == 2
    err = capsys.readouterr().err
    assert err == f"error: {bad}: case b has no fold\n"


def test_export_refuses_a_bad_postprocessed_table_in_one_line(tmp_path, capsys):
    path = Path(__file__).resolve().parents[1] / "scripts" / "export_pretrained.py"
    spec = importlib.util.spec_from_file_location("export_pretrained", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    cv = tmp_path / "cv"
    _write(cv, full_table())
    _write(cv, {"postprocess": {}}, "postprocessing.json")
    post = _write(cv, "{\"cases\": ", "crossval_postprocessed.json")
    with pytest.raises(SystemExit) as exc:
        module.main(["--folds", str(tmp_path / "run"), "--crossval", str(cv), "--to", str(tmp_path / "ship"),
                     "--train-minutes", "1"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err.count("\n") == 1
    assert err.startswith(f"export_pretrained: {post}: not a readable crossval table")
    _write(cv, "[]", "postprocessing.json")
    with pytest.raises(SystemExit):
        module.main(["--folds", str(tmp_path / "run"), "--crossval", str(cv), "--to", str(tmp_path / "ship"),
                     "--train-minutes", "1"])
    assert "postprocessing.json: a post-processing file holds a JSON object, not list" in capsys.readouterr().err
    assert not (tmp_path / "ship").exists()
