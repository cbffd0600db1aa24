"""scripts/undersegmentation.py on an out-of-fold table made by hand, whose answers are known: each case's
prediction is its truth with the tumor's outer shell of one voxel taken off, and the stored probabilities are
the prediction itself (1 inside, 0 outside)."""
import importlib.util
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from brats_keras.crossval import save_probabilities
from brats_keras.io import load_classes
from brats_keras.labels import REGION_CLASSES, REGION_NAMES, classes_to_labels, classes_to_regions
from conftest import write_converted_cases

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "undersegmentation.py"


def load_script():
    spec = importlib.util.spec_from_file_location("undersegmentation", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    """A crossval folder of 3 cases whose predictions miss each tumor's outer shell, with the converted cases."""
    root = tmp_path_factory.mktemp("under")
    conv = write_converted_cases(root, 3)
    cv = root / "cv"
    rows, expected = {}, {}
    for i in range(3):
        cid = f"c{i}"
        truth_path = root / "src" / cid / f"{cid}_seg.nii.gz"
        truth = load_classes(truth_path)
        shell = truth > 0
        pred = np.where(ndimage.binary_erosion(shell), truth, 0).astype(np.uint8)
        img = nib.load(str(truth_path))
        (cv / "predictions").mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(classes_to_labels(pred, "2021"), img.affine, img.header),
                 str(cv / "predictions" / f"{cid}.nii.gz"))
        box = [(0, n) for n in truth.shape]
        save_probabilities(cv / "probabilities" / f"{cid}.npz", classes_to_regions(pred).astype(np.float32), box)
        rows[cid] = {"truth": str(truth_path), "prediction": f"predictions/{cid}.nii.gz",
                     "probabilities": f"probabilities/{cid}.npz"}
        expected[cid] = {}
        for r in REGION_NAMES:
            t, p = np.isin(truth, REGION_CLASSES[r]), np.isin(pred, REGION_CLASSES[r])
            if t.any():
                expected[cid][r] = ((t & p).sum() / t.sum(), (t & p).sum() / p.sum() if p.any() else np.nan)
    (cv / "crossval.json").write_text(json.dumps({"cases": rows}))
    return cv, conv, expected


def test_recall_precision_and_the_missed_voxels_are_the_known_ones(table):
    cv, conv, expected = table
    res = load_script().analyse(cv, conv)
    for cid, regions in expected.items():
        for r, (recall, precision) in regions.items():
            got = res["cases"][cid][r]
            assert got["recall"] == pytest.approx(recall)
            if not np.isnan(precision):
                assert got["precision"] == pytest.approx(precision)
            # every missed voxel had probability 0, and lies one voxel from the predicted region (or it is all missed)
            assert got["missed_sure"] == (1.0 if recall < 1 else 0.0)
            if r == "WT":
                assert recall < 1 and got["pred_ml"] > 0
                assert got["missed_distance"][0] == sum(got["missed_distance"]) > 0
            # the probabilities are the prediction: every threshold gives its recall
            assert all(v["recall"] == pytest.approx(recall) for v in got["thresholds"].values())
    s = res["summary"]["WT"]
    assert s["recall"] == pytest.approx(np.mean([e["WT"][0] for e in expected.values()]))
    assert s["precision"] == pytest.approx(1.0) and s["missed_distance_share"][0] == 1.0
    assert set(s["spearman"]) == {"true volume", "tumor share of the brain", "tumor height", "flair contrast",
                                  "t1ce contrast", "t2 contrast"}


def test_the_card_summary_and_the_report_say_the_same(table, capsys):
    cv, conv, _ = table
    script = load_script()
    assert script.main([str(cv), "--data", str(conv), "--json", str(cv / "under.json")]) == 0
    out = capsys.readouterr().out
    res = json.loads((cv / "under.json").read_text())
    card = script.card_summary(res)
    assert set(card) == set(REGION_NAMES)
    wt = card["WT"]
    assert wt["missed_within_2mm"] == 1.0 and wt["missed_sure"] == 1.0
    assert f"WT: 3 cases, mean recall {wt['recall']:.3f}, precision {wt['precision']:.3f}" in out
    assert "tumor height" not in wt["spearman"]

    from brats_keras.model_card import _undersegmentation_text

    text = _undersegmentation_text(card)
    assert f"WT {wt['recall']:.3f} / {wt['precision']:.3f}" in text and "100% lie within 2 mm" in text
    assert _undersegmentation_text(None) == ""
