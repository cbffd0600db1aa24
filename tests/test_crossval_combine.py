"""crossval --combine: the out-of-fold estimate of an ensemble of recipes from the probabilities their
cross-validations stored (known answers on hand-made tables), and its refusals."""
import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from brats_keras.cli import main as cli_main
from brats_keras.crossval import crossval_combine, load_probabilities, save_probabilities
from brats_keras.io import BratsInputError, save_nifti
from brats_keras.labels import classes_to_labels, classes_to_regions

from conftest import write_small_case

SHAPE = (24, 28, 20)
SLAB = (slice(6, 8), slice(6, 18), slice(6, 14))  # necrosis next to the enhancing core
FALSE = (slice(18, 20), slice(4, 8), slice(4, 8))  # outside the tumor


def truth_classes():
    c = np.zeros(SHAPE, np.uint8)
    c[4:16, 4:20, 4:16] = 2
    c[6:14, 6:18, 6:14] = 1
    c[8:12, 8:16, 8:12] = 3
    return c


def probs_of(classes, et=0.9):
    """Region probabilities 0.9 on the true WT and TC, ``et`` on the true ET."""
    regions = classes_to_regions(classes).astype(np.float32)
    regions[..., :2] *= 0.9
    regions[..., 2] *= et
    return regions


def write_table(folder, cases, rows_extra=None):
    """A crossval output folder as crossval_predict writes it: ``cases`` maps id -> (fold, truth path,
    probabilities (D, H, W, 3), box or None); the scores in the rows are placeholders (not read)."""
    folder.mkdir(parents=True)
    rows = {}
    for cid, (fold, truth, probs, box) in cases.items():
        img = nib.load(str(truth))
        pred = folder / "predictions" / f"{cid}.nii.gz"
        pred.parent.mkdir(exist_ok=True)
        save_nifti(pred, classes_to_labels((probs > 0.5).any(-1).astype(np.uint8) * 2), img.affine, img.header)
        box = box or [(0, n) for n in SHAPE]
        inner = probs[tuple(slice(a, b) for a, b in box)]
        npz = save_probabilities(folder / "probabilities" / f"{cid}.npz", inner, box, SHAPE)
        score = {"dice": 0.5, "hd95": 1.0, "sensitivity": 0.5, "specificity": 1.0}
        rows[cid] = {"fold": fold, "run": f"{folder.name}/fold{fold}", "model": "m.keras", "prediction": str(pred),
                     "truth": str(truth), "probabilities": str(npz), "WT": score, "TC": score, "ET": score,
                     **(rows_extra or {}).get(cid, {})}
    mean = {r: {"dice": 0.5, "hd95": 1.0} for r in ("WT", "TC", "ET")}
    folds = {}
    for cid, row in rows.items():
        folds.setdefault(str(row["fold"]), {"run": row["run"], "cases": [], "mean": mean})["cases"].append(cid)
    table = {"checkpoint": "last", "tta": False, "overlap": 0.5, "cases": rows, "folds": folds, "failed": {},
             "mean": mean, "median": mean, "std": mean}
    (folder / "crossval.json").write_text(json.dumps(table))
    return folder


@pytest.fixture
def tables(tmp_path):
    """Two recipes' tables of two cases (c0 fold 0 in BraTS 2021 labels, c1 fold 1 in 2023 labels) with
    known probabilities; recipe A is right on c0's ET, B is not, and each alone gets the slab wrong."""
    src = tmp_path / "src"
    truths = {}
    for cid, layout in (("c0", "2021"), ("c1", "2023")):
        folder = write_small_case(src, cid, shape=SHAPE, layout=layout)
        seg = next(p for p in folder.iterdir() if "seg" in p.name)
        img = nib.load(str(seg))
        convention = "2021" if layout == "2021" else "2023"
        nib.save(nib.Nifti1Image(classes_to_labels(truth_classes(), convention), img.affine, img.header), str(seg))
        truths[cid] = seg
    t = truth_classes()
    a0, b0 = probs_of(t), probs_of(t, et=0.2)  # on the true ET: A 0.9, B 0.2, mean 0.55: kept
    a0[SLAB + (2,)], b0[SLAB + (2,)] = 0.3, 0.8  # the slab: mean 0.55, taken for ET by the ensemble
    b0[FALSE] = 0.9  # a false tumor only B sees: mean 0.45, dropped
    a = write_table(tmp_path / "A", {"c0": (0, truths["c0"], a0, None), "c1": (1, truths["c1"], probs_of(t), None)})
    b = write_table(tmp_path / "B", {"c0": (0, truths["c0"], b0, [(2, 22), (3, 25), (2, 18)]),
                                     "c1": (1, truths["c1"], probs_of(t), None)})
    return tmp_path, a, b, truths


def test_combined_table_scores_the_mean_of_the_stored_probabilities(tables):
    tmp_path, a, b, truths = tables
    res = crossval_combine([a, b / "crossval.json"], tmp_path / "ab", progress=False)
    et = truth_classes() == 3
    slab = np.zeros(SHAPE, bool)
    slab[SLAB] = True
    expected_et = 2 * et.sum() / (2 * et.sum() + (slab & ~et).sum())
    assert res["cases"]["c0"]["ET"]["dice"] == pytest.approx(expected_et)
    assert res["cases"]["c0"]["WT"]["dice"] == 1.0 and res["cases"]["c0"]["TC"]["dice"] == 1.0  # false tumor gone
    assert all(res["cases"]["c1"][r]["dice"] == 1.0 for r in ("WT", "TC", "ET"))
    assert res["mean"]["ET"]["dice"] == pytest.approx((expected_et + 1) / 2)
    assert res["folds"]["0"]["cases"] == ["c0"] and res["folds"]["0"]["mean"]["ET"]["dice"] == pytest.approx(expected_et)
    assert res["combined"] == [str(a), str(b)] and res["cases"]["c0"]["run"] == ["A/fold0", "B/fold0"]
    # the kept files: the mean probabilities (over the union of the two boxes), and label maps in each case's
    # convention (ET 4 in 2021 names, 3 in 2023 names)
    q, box, shape = load_probabilities(res["cases"]["c0"]["probabilities"])
    assert shape == SHAPE and box == [(0, n) for n in SHAPE]
    assert q[SLAB + (2,)].min() == 140 and q[FALSE + (0,)].max() == 115  # rint((76 + 204) / 2), rint(230 / 2)
    p0 = np.asanyarray(nib.load(res["cases"]["c0"]["prediction"]).dataobj)
    p1 = np.asanyarray(nib.load(res["cases"]["c1"]["prediction"]).dataobj)
    assert set(np.unique(p0)) == {0, 1, 2, 4} and set(np.unique(p1)) == {0, 1, 2, 3}
    assert np.array_equal(nib.load(res["cases"]["c0"]["prediction"]).affine, nib.load(str(truths["c0"])).affine)
    saved = json.loads((tmp_path / "ab" / "crossval.json").read_text())
    assert saved["cases"].keys() == res["cases"].keys()
    assert "one per cross-validation combined" in (tmp_path / "ab" / "crossval.md").read_text()


def test_combine_command_chooses_post_processing_and_compares(tables, capsys):
    tmp_path, a, b, _ = tables
    out = tmp_path / "ab"
    assert cli_main(["crossval", "--combine", str(a), str(b), "--out", str(out), "--choose-postprocessing",
                     "--quiet"]) == 0
    assert (out / "postprocessing.json").is_file() and (out / "crossval_postprocessed.json").is_file()
    capsys.readouterr()
    assert cli_main(["crossval-compare", str(a), str(out)]) == 0
    assert "WT" in capsys.readouterr().out


def _edit(folder, change):
    path = folder / "crossval.json"
    table = json.loads(path.read_text())
    change(table)
    path.write_text(json.dumps(table))


@pytest.mark.parametrize("fault, message", [
    ("one", "give two or more crossval folders"),
    ("fold", "case c0 is in fold 1, in fold 0 of"),
    ("cases", "scores other cases than"),
    ("no_probs", "case c1 has no stored probabilities"),
    ("same_out", "is one of the folders combined"),
    ("missing", "no such crossval folder"),
])
def test_combine_refuses_bad_tables_in_one_line_and_writes_nothing(tables, capsys, fault, message):
    tmp_path, a, b, _ = tables
    c = tmp_path / "C"
    shutil.copytree(b, c)
    if fault == "fold":
        _edit(c, lambda t: t["cases"]["c0"].update(fold=1))
    elif fault == "cases":
        _edit(c, lambda t: t["cases"].pop("c1"))
    elif fault == "no_probs":
        _edit(c, lambda t: t["cases"]["c1"].pop("probabilities"))
    dirs = {"one": [a], "missing": [a, tmp_path / "nowhere"]}.get(fault, [a, c])
    out = c if fault == "same_out" else tmp_path / "out"
    before = sorted(p.name for p in c.rglob("*"))
    with pytest.raises(BratsInputError, match=message):
        crossval_combine(dirs, out, progress=False)
    capsys.readouterr()
    assert cli_main(["crossval", "--combine", *map(str, dirs), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
    assert (not out.exists()) if out != c else sorted(p.name for p in c.rglob("*")) == before


def test_a_case_whose_files_cannot_be_read_fails_alone(tables, capsys):
    tmp_path, a, b, _ = tables
    (b / "probabilities" / "c1.npz").write_bytes(b"not an npz")
    out = tmp_path / "ab"
    assert cli_main(["crossval", "--combine", str(a), str(b), "--out", str(out)]) == 1
    captured = capsys.readouterr()
    assert "FAILED c1: " in captured.out and "c1.npz" in captured.out
    table = json.loads((out / "crossval.json").read_text())
    assert list(table["cases"]) == ["c0"] and list(table["failed"]) == ["c1"]
    assert not (out / "predictions" / "c1.nii.gz").exists()


def test_unreadable_or_mismatched_truth_fails_that_case_in_one_line(tables, capsys):
    """A label map of another shape than the stored probabilities, or a file that is not NIfTI, is one FAILED
    line naming it (exit 1), not a traceback; the other case is still scored."""
    tmp_path, a, b, truths = tables
    img = nib.load(str(truths["c1"]))
    nib.save(nib.Nifti1Image(np.zeros((10, 10, 10), np.uint8), img.affine), str(truths["c1"]))
    assert cli_main(["crossval", "--combine", str(a), str(b), "--out", str(tmp_path / "ab"), "--quiet"]) == 1
    out = capsys.readouterr().out
    assert f"FAILED c1: {truths['c1']}: label map of shape (10, 10, 10)" in out
    truths["c0"].write_bytes(b"not a NIfTI file")
    assert cli_main(["crossval", "--combine", str(a), str(b), "--out", str(tmp_path / "ab2"), "--quiet"]) == 2
    captured = capsys.readouterr()
    assert "FAILED c0: " in captured.out and "Traceback" not in captured.err
    assert captured.err.strip().splitlines() == ["error: no case could be combined (2 failed)"]
    assert not (tmp_path / "ab2").exists()  # nothing written


def test_a_case_failing_now_leaves_no_file_of_an_earlier_table(tables, capsys):
    """Combining again into the same folder: the label map and probabilities an earlier run wrote for a case
    that fails now are removed, and so are the post-processing chosen on the earlier table and its scores."""
    tmp_path, a, b, _ = tables
    out = tmp_path / "ab"
    assert cli_main(["crossval", "--combine", str(a), str(b), "--out", str(out), "--choose-postprocessing",
                     "--quiet"]) == 0
    assert (out / "predictions" / "c1.nii.gz").is_file() and (out / "probabilities" / "c1.npz").is_file()
    (b / "probabilities" / "c1.npz").write_bytes(b"not an npz")
    capsys.readouterr()
    assert cli_main(["crossval", "--combine", str(a), str(b), "--out", str(out), "--quiet"]) == 1
    printed = capsys.readouterr().out
    for gone in ("predictions/c1.nii.gz", "probabilities/c1.npz", "postprocessing.json",
                 "crossval_postprocessed.json"):
        assert not (out / gone).exists() and f"removed {out / gone}" in printed
    assert (out / "predictions" / "c0.nii.gz").is_file() and (out / "probabilities" / "c0.npz").is_file()
    assert list(json.loads((out / "crossval.json").read_text())["cases"]) == ["c0"]


def test_combined_table_names_absolute_paths_and_reads_its_own_files(tables, monkeypatch):
    """From a relative --out, the table names its files and the tables combined by absolute paths; a copy of
    the folder reads its own probabilities (member_path), not those of the folder it was copied from."""
    tmp_path, a, b, _ = tables
    monkeypatch.chdir(tmp_path)
    res = crossval_combine(["A", "B"], "ab", progress=False)
    row = res["cases"]["c0"]
    assert res["combined"] == [str(a), str(b)]
    assert all(row[k].startswith(str(tmp_path / "ab")) for k in ("prediction", "probabilities"))
    shutil.copytree(tmp_path / "ab", tmp_path / "ab_copy")
    q, box, shape = load_probabilities(row["probabilities"])
    save_probabilities(tmp_path / "ab_copy" / "probabilities" / "c0.npz", np.zeros_like(q, np.float32), box, shape)
    from brats_keras.crossval import member_path

    assert member_path(tmp_path / "ab_copy", "probabilities", row["probabilities"]) == \
        tmp_path / "ab_copy" / "probabilities" / "c0.npz"
    assert member_path(tmp_path / "gone", "probabilities", row["probabilities"]) == Path(row["probabilities"])


def test_the_same_table_twice_is_refused(tables, capsys):
    tmp_path, a, _, _ = tables
    assert cli_main(["crossval", "--combine", str(a), str(a / "crossval.json"), "--out",
                     str(tmp_path / "aa")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "given twice" in err[0] and not (tmp_path / "aa").exists()


def test_stored_probabilities_round_trip_to_the_same_bytes(tables):
    """The mean is stored quantized once: saving the uint8 mean again gives back the same bytes, so a later
    --choose-postprocessing decodes exactly what was scored."""
    tmp_path, a, b, _ = tables
    res = crossval_combine([a, b], tmp_path / "ab", progress=False)
    for cid, row in res["cases"].items():
        qa, qb = (load_probabilities(t / "probabilities" / f"{cid}.npz")[0] for t in (a, b))
        q, box, _ = load_probabilities(row["probabilities"])
        if cid == "c1":  # same boxes: the stored mean is the rounded mean of the two
            assert np.array_equal(q, np.rint((qa.astype(np.float32) + qb) / 2).astype(np.uint8))
        save_probabilities(tmp_path / "again.npz", q.astype(np.float32) / 255, box, SHAPE)
        assert np.array_equal(load_probabilities(tmp_path / "again.npz")[0], q)



def test_export_refuses_a_combined_table_with_another_number_of_recipes_in_one_line(tables, capsys):
    """The pretrained export ships one --folds group per table the combined table averaged: one group against a
    table of two recipes is refused in one line (exit 2), as two groups against one recipe's table are."""
    import importlib.util

    tmp_path, a, b, _ = tables
    out = tmp_path / "ab"
    assert cli_main(["crossval", "--combine", str(a), str(b), "--out", str(out), "--choose-postprocessing",
                     "--quiet"]) == 0
    capsys.readouterr()
    path = Path(__file__).resolve().parents[1] / "scripts" / "export_pretrained.py"
    spec = importlib.util.spec_from_file_location("export_pretrained", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with pytest.raises(SystemExit) as exc:
        module._fold_runs([[tmp_path / "A" / "fold0", tmp_path / "A" / "fold1"]], out)
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2 and len(err) == 1 and "combines 2 cross-validations" in err[0]
    assert "give --folds once for each" in err[0]
    for name in ("postprocessing.json", "crossval_postprocessed.json"):  # a one-recipe table, as export needs it
        (a / name).write_text((out / name).read_text())
    with pytest.raises(SystemExit) as exc:
        module._fold_runs([[tmp_path / "A" / "fold0"], [tmp_path / "B" / "fold0"]], a)
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2 and len(err) == 1 and "the table of one recipe; for 2 recipes" in err[0]
