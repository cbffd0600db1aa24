"""Paired comparison of two cross-validations of the same cases (``brats-keras crossval-compare``): known
answers on hand-made tables, the bootstrap interval, Wilcoxon against scipy, the direction of HD95, case
mismatches, failed cases, and the command line's exit codes and JSON file."""
import json

import numpy as np
import pytest
from scipy.stats import wilcoxon

from brats_keras.cli import main as cli_main
from brats_keras.compare import compare_crossval, format_comparison
from brats_keras.io import BratsInputError

REGIONS = ("WT", "TC", "ET")


def table(dice, hd95=None, failed=None):
    """A crossval.json-like table: ``dice`` / ``hd95`` map case -> one value for every region, or -> a
    {region: value} dict."""
    hd95 = hd95 if hd95 is not None else {c: 5.0 for c in dice}

    def per_region(v):
        return v if isinstance(v, dict) else {r: v for r in REGIONS}

    cases = {}
    for c in dice:
        d, h = per_region(dice[c]), per_region(hd95[c])
        cases[c] = {"fold": 0, **{r: {"dice": float(d[r]), "hd95": float(h[r])} for r in REGIONS}}
    return {"checkpoint": "last", "cases": cases, "folds": {}, "failed": dict(failed or {})}


def real_shaped(n=28, seed=1):
    """A table shaped like a real 28-case crossval.json (every field crossval_predict writes, BraTS ids,
    Dice spread like the real ET's, HD95 including the 373.13 mm of a missed region)."""
    rng = np.random.default_rng(seed)
    cases = {}
    for i in range(n):
        cid = f"BraTS-GLI-{i:05d}-000" if i < 5 else f"Brats18_TCIA_{i:03d}_1"
        row = {"fold": i % 5, "run": f"runs/cv/fold{i % 5}", "model": f"runs/cv/fold{i % 5}/checkpoints/last.keras",
               "prediction": f"runs/cv/cv/predictions/{cid}.nii.gz", "truth": f"data/{cid}/{cid}_seg.nii.gz"}
        for r in REGIONS:
            dice = float(np.clip(rng.normal(0.7, 0.27), 0.0, 0.98))
            row[r] = {"dice": dice, "hd95": 373.13 if dice == 0 else float(rng.uniform(1, 40)),
                      "sensitivity": float(rng.uniform(0.5, 1)), "specificity": float(rng.uniform(0.99, 1))}
        cases[cid] = row
    return {"checkpoint": "last", "tta": False, "overlap": 0.5, "cases": dict(sorted(cases.items())),
            "folds": {}, "failed": {}, "mean": {}, "median": {}, "std": {}}


IDS = [f"c{i:02d}" for i in range(28)]
BASE = {c: 0.4 + 0.5 * i / 27 for i, c in enumerate(IDS)}


# ----------------------------------------------------------------------------- known answers
def test_a_constant_gain_is_that_gain_exactly_with_a_zero_width_interval_and_every_case_better():
    a = table(BASE, {c: 10.0 + i for i, c in enumerate(IDS)})
    b = table({c: v + 0.05 for c, v in BASE.items()}, {c: 8.0 + i for i, c in enumerate(IDS)})  # HD95 2 mm lower
    res = compare_crossval(a, b)
    assert res["n_cases"] == 28 and res["cases"] == IDS and res["failed"] == {}
    for r in REGIONS:
        d, h = res["regions"][r]["dice"], res["regions"][r]["hd95"]
        assert d["mean_diff"] == pytest.approx(0.05, abs=1e-12)
        assert d["ci"] == pytest.approx([0.05, 0.05], abs=1e-12)
        assert d["mean_a"] == pytest.approx(np.mean(list(BASE.values())))
        assert d["mean_b"] == pytest.approx(d["mean_a"] + 0.05)
        assert (d["better"], d["worse"], d["tied"]) == (28, 0, 0) and d["verdict"] == "B better"
        assert h["mean_diff"] == pytest.approx(-2.0) and h["ci"] == pytest.approx([-2.0, -2.0])
        assert (h["better"], h["worse"], h["tied"]) == (28, 0, 0) and h["verdict"] == "B better"  # lower HD95
        assert res["regions"][r]["verdict"] == "B better"
        diff = [res["differences"][c][r]["dice"] for c in IDS]
        assert d["wilcoxon_p"] == pytest.approx(wilcoxon(diff).pvalue) and d["wilcoxon_p"] < 1e-3
    # the same tables the other way round: B worse everywhere
    back = compare_crossval(b, a)
    assert all(back["regions"][r][s]["verdict"] == "B worse" for r in REGIONS for s in ("dice", "hd95"))
    assert back["regions"]["ET"]["dice"]["worse"] == 28 and back["regions"]["ET"]["verdict"] == "B worse"


def test_mixed_differences_match_a_hand_computed_mean_counts_and_exact_wilcoxon_p():
    ids = ["p1", "p2", "p3", "p4", "p5"]
    a_dice = {"p1": 0.5, "p2": 0.6, "p3": 0.25, "p4": 0.75, "p5": 0.375}
    steps = {"p1": 0.125, "p2": -0.0625, "p3": 0.25, "p4": 0.0, "p5": 0.1875}  # exact in binary
    b_dice = {c: {"WT": a_dice[c] + steps[c], "TC": a_dice[c], "ET": a_dice[c]} for c in ids}
    res = compare_crossval(table(a_dice), table(b_dice))
    wt = res["regions"]["WT"]["dice"]
    assert wt["mean_diff"] == 0.1  # (0.125 - 0.0625 + 0.25 + 0 + 0.1875) / 5
    assert (wt["better"], wt["worse"], wt["tied"]) == (3, 1, 1)
    # the zero dropped, |d| ranks 1..4 with the negative one ranked 1: W- = 1, W+ = 9; of the 16 equally likely
    # sign patterns, 2 give W+ <= 1 and 2 give W+ >= 9: p = 4 / 16
    assert wt["wilcoxon_p"] == pytest.approx(0.25)
    assert wt["wilcoxon_p"] == pytest.approx(wilcoxon([steps[c] for c in ids]).pvalue)
    assert wt["ci"][0] < 0.1 < wt["ci"][1] and wt["ci"][0] <= 0 and wt["verdict"] == "no clear difference"
    # resampled means of 5 values lie between their smallest and largest
    assert -0.0625 <= wt["ci"][0] and wt["ci"][1] <= 0.25
    tc = res["regions"]["TC"]["dice"]
    assert tc["mean_diff"] == 0.0 and tc["ci"] == [0.0, 0.0] and tc["tied"] == 5
    assert tc["wilcoxon_p"] is None and tc["wilcoxon_note"] == "all differences are zero"
    assert tc["verdict"] == "no clear difference" and res["regions"]["TC"]["verdict"] == "no clear difference"


def test_a_higher_hd95_is_worse_and_disagreeing_scores_make_a_mixed_region():
    hd_a = {c: 6.0 for c in IDS}
    hd_b = {c: {"WT": 9.0 + (i % 3), "TC": 6.0, "ET": 6.0 - 1.0 - (i % 2)} for i, c in enumerate(IDS)}
    dice_b = {c: {"WT": v + 0.03, "TC": v, "ET": v} for c, v in BASE.items()}
    res = compare_crossval(table(BASE, hd_a), table(dice_b, hd_b))
    wt, et = res["regions"]["WT"], res["regions"]["ET"]
    assert wt["hd95"]["mean_diff"] > 0 and wt["hd95"]["verdict"] == "B worse" and wt["hd95"]["worse"] == 28
    assert wt["dice"]["verdict"] == "B better" and wt["verdict"] == "mixed"  # more overlap, farther islands
    assert et["hd95"]["mean_diff"] == pytest.approx(-1.5) and et["hd95"]["verdict"] == "B better"
    assert et["hd95"]["better"] == 28 and et["verdict"] == "B better"  # Dice unchanged, HD95 lower
    assert res["regions"]["TC"]["verdict"] == "no clear difference"
    text = format_comparison(res)
    assert "WT: mixed" in text and "ET: B better" in text and "TC: no clear difference" in text


# ----------------------------------------------------------------------------- the bootstrap interval
def test_bootstrap_interval_repeats_with_its_seed_contains_the_mean_and_has_the_textbook_width():
    rng = np.random.default_rng(7)
    n = 400
    a = {f"k{i:03d}": float(x) for i, x in enumerate(rng.uniform(0.3, 0.9, n))}
    diffs = rng.normal(0.01, 0.1, n)
    b = {c: a[c] + d for c, d in zip(a, diffs)}
    first = compare_crossval(table(a), table(b), seed=3)
    again = compare_crossval(table(a), table(b), seed=3)
    other = compare_crossval(table(a), table(b), seed=4)
    ci = first["regions"]["WT"]["dice"]["ci"]
    assert again["regions"]["WT"]["dice"]["ci"] == ci  # reproducible with the seed
    assert other["regions"]["WT"]["dice"]["ci"] != ci
    mean = first["regions"]["WT"]["dice"]["mean_diff"]
    assert mean == pytest.approx(diffs.mean()) and ci[0] < mean < ci[1]
    # for a mean of n values the 95% interval is about mean +- 1.96 s / sqrt(n)
    half = 1.96 * diffs.std(ddof=1) / np.sqrt(n)
    assert (ci[1] - ci[0]) / 2 == pytest.approx(half, rel=0.1)
    assert (ci[0] + ci[1]) / 2 == pytest.approx(mean, abs=0.2 * half)
    # a 50% interval is narrower; every region and score uses the same resampled cases
    narrow = compare_crossval(table(a), table(b), seed=3, confidence=0.5)["regions"]["WT"]["dice"]["ci"]
    assert ci[0] < narrow[0] < narrow[1] < ci[1]
    assert first["regions"]["TC"]["dice"]["ci"] == ci and first["resamples"] == 10_000 and first["seed"] == 3


# ----------------------------------------------------------------------------- cases
def test_tables_of_different_cases_are_refused_in_one_line_unless_common():
    a = table({c: BASE[c] for c in IDS[:10]})
    b = table({c: BASE[c] + 0.01 for c in IDS[2:12]})
    with pytest.raises(BratsInputError) as err:
        compare_crossval(a, b)
    msg = str(err.value)
    assert "\n" not in msg and "only in table A: c00, c01" in msg and "only in table B: c10, c11" in msg
    assert "--common" in msg and "8 shared" in msg
    res = compare_crossval(a, b, common=True)
    assert res["cases"] == IDS[2:10] and res["n_cases"] == 8
    assert res["dropped"] == {"only_a": ["c00", "c01"], "only_b": ["c10", "c11"]}
    assert res["regions"]["WT"]["dice"]["mean_diff"] == pytest.approx(0.01)
    assert "4 case(s) in one table only, left out (--common): c00, c01, c10, c11" in format_comparison(res)
    with pytest.raises(BratsInputError, match="no case to compare"):
        compare_crossval(table({"x": 0.5}), table({"y": 0.5}), common=True)


def test_cases_failed_in_either_table_are_listed_and_left_out():
    a_cases = {c: BASE[c] for c in IDS if c != "c03"}
    b_cases = {c: (0.0 if c == "c07" else BASE[c] + 0.05) for c in IDS if c != "c05"}
    a = table(a_cases, failed={"c03": "c03_flair.nii.gz: truncated file"})
    b = table(b_cases, failed={"c05": "c05_t1ce.nii.gz: not a NIfTI file"})
    b["cases"]["c03"] = table({"c03": 0.9})["cases"]["c03"]  # scored in B only: still left out
    b["failed"]["c07"] = "failed"  # a row and a failure: the failure wins
    res = compare_crossval(a, b)
    assert sorted(res["failed"]) == ["c03", "c05", "c07"]
    assert "truncated file" in res["failed"]["c03"] and "not a NIfTI file" in res["failed"]["c05"]
    assert res["n_cases"] == 25 and not {"c03", "c05", "c07"} & set(res["cases"])
    assert res["regions"]["ET"]["dice"]["mean_diff"] == pytest.approx(0.05)
    assert "3 case(s) failed in A or B, left out" in format_comparison(res)


def test_a_real_shaped_table_against_itself_is_no_difference():
    t = real_shaped()
    res = compare_crossval(t, json.loads(json.dumps(t)))
    assert res["n_cases"] == 28
    for r in REGIONS:
        for s in ("dice", "hd95"):
            c = res["regions"][r][s]
            assert c["mean_diff"] == 0.0 and c["ci"] == [0.0, 0.0]
            assert (c["better"], c["worse"], c["tied"]) == (0, 0, 28)
            assert c["wilcoxon_p"] is None and c["verdict"] == "no clear difference"
            assert c["mean_a"] == pytest.approx(np.mean([row[r][s] for row in t["cases"].values()]))
        assert res["regions"][r]["verdict"] == "no clear difference"
    text = format_comparison(res)
    assert text.count("no clear difference (Dice +0.0000") == 3 and "every difference is zero" in text


def test_rows_without_finite_scores_are_refused():
    t = table({"c1": 0.5, "c2": 0.6})
    t["cases"]["c2"]["ET"]["hd95"] = float("nan")
    with pytest.raises(BratsInputError, match="table B: case c2 has no finite ET hd95"):
        compare_crossval(table({"c1": 0.5, "c2": 0.6}), t)
    del t["cases"]["c2"]["ET"]
    with pytest.raises(BratsInputError, match="case c2 has no finite ET dice"):
        compare_crossval(t, t)
    with pytest.raises(BratsInputError, match="resamples"):
        compare_crossval(table({"c1": 0.5}), table({"c1": 0.5}), resamples=0)


# ----------------------------------------------------------------------------- command line
def _write(folder, t, name="crossval.json"):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(json.dumps(t))
    return folder


def test_cli_compares_folders_or_files_and_writes_the_json(tmp_path, capsys):
    a = _write(tmp_path / "base", table(BASE))
    b = _write(tmp_path / "cand", table({c: v + 0.05 for c, v in BASE.items()}))
    out = tmp_path / "cmp" / "compare.json"
    assert cli_main(["crossval-compare", str(a), str(b / "crossval.json"), "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert f"A (baseline):  {a / 'crossval.json'}" in text and "WT: B better (Dice +0.0500" in text
    saved = json.loads(out.read_text())
    assert saved == json.loads(json.dumps(compare_crossval(a, b)))
    assert saved["regions"]["ET"]["dice"]["ci"] == pytest.approx([0.05, 0.05])
    assert [p.name for p in out.parent.iterdir()] == ["compare.json"]  # atomic: no temporary file left


def test_cli_postprocessed_reads_the_postprocessed_tables(tmp_path, capsys):
    a = _write(tmp_path / "a", table(BASE))
    b = _write(tmp_path / "b", table(BASE))
    _write(a, table(BASE), "crossval_postprocessed.json")
    _write(b, table({c: v - 0.02 for c, v in BASE.items()}), "crossval_postprocessed.json")
    assert cli_main(["crossval-compare", str(a), str(b)]) == 0
    assert "WT: no clear difference" in capsys.readouterr().out
    assert cli_main(["crossval-compare", str(a / "crossval.json"), str(b), "--postprocessed"]) == 0
    text = capsys.readouterr().out
    assert "crossval_postprocessed.json" in text and "ET: B worse (Dice -0.0200" in text


def test_cli_bad_input_is_one_line_and_exit_2(tmp_path, capsys):
    a = _write(tmp_path / "a", table(BASE))
    missing = tmp_path / "nowhere"
    assert cli_main(["crossval-compare", str(a), str(missing)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{missing}: no such crossval folder or file" in err
    assert cli_main(["crossval-compare", str(a), str(a), "--postprocessed"]) == 2
    err = capsys.readouterr().err
    assert "crossval_postprocessed.json: no such file" in err and err.count("\n") == 1
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "crossval.json").write_text('{"cases": {"c00": ')
    assert cli_main(["crossval-compare", str(a), str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{bad / 'crossval.json'}: not a readable crossval table" in err
    (bad / "crossval.json").write_text('[1, 2]')
    assert cli_main(["crossval-compare", str(bad), str(a)]) == 2
    assert "not a crossval table" in capsys.readouterr().err
    fewer = _write(tmp_path / "fewer", table({c: BASE[c] for c in IDS[:20]}))
    assert cli_main(["crossval-compare", str(a), str(fewer)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "only in" in err and "c20, c21" in err and "--common" in err
    assert cli_main(["crossval-compare", str(a), str(fewer), "--common"]) == 0
    assert "20 cases, paired" in capsys.readouterr().out
