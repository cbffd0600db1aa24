"""The HTML report without a browser: the page's copies of a case (crop, quantisation, disagreement), the numbers it
carries, the size budget, the vendored NiiVue bundle, and the commands' refusals and per-case failures. What the
pages draw is checked in a real browser in tests/test_report_browser.py."""
import base64
import configparser
import gzip
import hashlib
import json
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from brats_keras import report
from brats_keras.cli import main as cli_main
from brats_keras.evaluation import score_case
from brats_keras.io import find_cases, read_label_map, read_modalities
from brats_keras.report import build, pages
from brats_keras.tasks import get_task
from brats_keras.visualize import CLASS_COLORS

from conftest import resave_on_grid, write_nifti, write_post_case, write_small_case

ROOT = Path(__file__).resolve().parents[1]
SHAPE = (24, 28, 20)


def page_data(path) -> dict:
    """The JSON a case page carries (what its script reads)."""
    text = Path(path).read_text()
    return json.loads(re.search(r'<script type="application/json" id="brats-data">(.*?)</script>', text, re.S)
                      .group(1).replace("<\\/", "</"))


def index_data(path) -> dict:
    text = Path(path).read_text()
    return json.loads(re.search(r'id="brats-index">(.*?)</script>', text, re.S).group(1))


def decode(b64: str) -> nib.Nifti1Image:
    return nib.Nifti1Image.from_bytes(gzip.decompress(base64.b64decode(b64)))


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    """Three small cases (c0, c1, c2) and predictions of them: c0 its truth shifted by one voxel, c1 its truth,
    c2 its truth cropped to another grid."""
    root = tmp_path_factory.mktemp("report")
    for i in range(3):
        write_small_case(root / "cases", f"c{i}", seed=i, shape=SHAPE)
    pred = root / "pred"
    pred.mkdir()
    for i in range(3):
        seg = np.asanyarray(nib.load(root / "cases" / f"c{i}" / f"c{i}_seg.nii.gz").dataobj)
        seg = np.roll(seg, 1, axis=0) if i == 0 else seg[:, :, :-1] if i == 2 else seg
        write_nifti(pred / f"c{i}.nii.gz", np.ascontiguousarray(seg))
    return root


def test_disagreement_marks_false_positives_false_negatives_and_other_classes():
    pred = np.array([0, 1, 2, 3, 0, 2, 3])
    true = np.array([0, 1, 0, 0, 3, 1, 3])
    assert report.disagreement(pred, true).tolist() == [0, 0, 1, 1, 2, 3, 0]


def test_quantise_image_maps_the_brain_to_256_or_fewer_grey_levels():
    vol = np.zeros((10, 10, 10), np.float32)
    vol[1:9, 1:9, 1:9] = np.linspace(1, 200, 512).reshape(8, 8, 8)
    q, slope = report.quantise_image(vol)
    top = np.percentile(vol[vol != 0], report.volumes.IMAGE_PERCENTILE)
    assert slope == pytest.approx(top / 255)
    assert q.dtype == np.uint8 and q[0, 0, 0] == 0 and q.max() == 255
    np.testing.assert_array_equal(q, np.clip(np.rint(vol * 255 / top), 0, 255))
    q64, _ = report.quantise_image(vol, levels=64)
    assert len(np.unique(q64)) <= 64 and np.all(q64 % 4 == 0) and np.all(q - q64 < 4) and np.all(q64 <= q)
    with pytest.raises(ValueError, match="power of 2"):
        report.quantise_image(vol, levels=100)


def test_page_copies_sit_where_the_full_volumes_are_and_the_labels_are_exact(cases):
    case = find_cases(cases / "cases" / "c0")[0]
    view = report.read_case_view(case, prediction=cases / "pred" / "c0.nii.gz", truth=case.seg)
    vols = report.page_volumes(view)
    box = tuple(slice(a, b) for a, b in vols["box"])
    truth = decode(vols["truth"])
    # the copy's affine puts each voxel at its place in the full volume
    np.testing.assert_allclose(truth.affine @ [0, 0, 0, 1], view.affine @ [vols["box"][0][0], vols["box"][1][0],
                                                                            vols["box"][2][0], 1])
    np.testing.assert_array_equal(np.asanyarray(truth.dataobj), view.truth[box])
    assert (view.truth[box] > 0).sum() == (view.truth > 0).sum()  # the crop keeps every labelled voxel
    np.testing.assert_array_equal(np.asanyarray(decode(vols["disagreement"]).dataobj),
                                  report.disagreement(view.prediction, view.truth)[box])
    flair = decode(vols["images"]["flair"]["base64"])
    assert flair.get_data_dtype() == np.uint8
    # the stored grey times the slope is the intensity, to half a grey step (below the clipping)
    top = vols["images"]["flair"]["top"]
    full = view.modalities["flair"][box].astype(float)
    shown = np.asarray(flair.dataobj, float)
    keep = full < top
    assert np.abs(shown[keep] - full[keep]).max() <= top / 255 / 2 + 1e-6


def test_scores_and_volumes_are_those_of_the_full_resolution_maps(cases):
    case = find_cases(cases / "cases" / "c0")[0]
    pred, _ = read_label_map(cases / "pred" / "c0.nii.gz")
    truth, _ = read_label_map(case.seg)
    row = report.write_case_page(case, cases / "c0.html", prediction=cases / "pred" / "c0.nii.gz", truth=case.seg)
    expected = score_case(pred, truth, (1.0, 1.0, 1.0), report=False)
    data = page_data(cases / "c0.html")
    assert data["scores"] == json.loads(json.dumps(expected)) == json.loads(json.dumps(row["scores"]))
    assert data["region_volumes"]["truth"] == {"WT": (truth > 0).sum() / 1000, "TC": np.isin(truth, (1, 3)).sum()
                                               / 1000, "ET": (truth == 3).sum() / 1000}
    assert data["classes"] == {str(c): CLASS_COLORS[c] for c in (1, 2, 3)}  # the colours of the pictures
    assert data["focus"][2] in np.flatnonzero(truth.any(axis=(0, 1)))  # the crosshair starts in the tumour
    text = (cases / "c0.html").read_text()
    assert f'data-score="WT.dice">{expected["WT"]["dice"]:.4f}<' in text
    # every script and style inline (the browser test checks that the page fetches nothing)
    assert not re.search(r"<script[^>]+src=|<link\b", text)


def test_a_page_over_the_budget_has_fewer_grey_levels(cases, monkeypatch):
    case = find_cases(cases / "cases" / "c1")[0]
    full = report.write_case_page(case, cases / "c1.html")
    assert page_data(cases / "c1.html")["levels"] == 256
    monkeypatch.setattr(build, "PAGE_LIMIT", full["bytes"] - 1)
    smaller = report.write_case_page(case, cases / "c1.html")
    assert smaller["bytes"] < full["bytes"] and page_data(cases / "c1.html")["levels"] == 128


def test_view_writes_one_page_and_refuses_bad_input_in_one_line(cases, tmp_path, capsys):
    case_dir = cases / "cases" / "c0"
    out = tmp_path / "page.html"
    assert cli_main(["view", str(case_dir), "--pred", str(cases / "pred" / "c0.nii.gz"), "--out", str(out)]) == 0
    data = page_data(out)
    assert set(data["volumes"]) >= {"prediction", "truth", "disagreement"} and data["scores"]  # its own label map
    capsys.readouterr()

    bad = tmp_path / "bad.html"
    assert cli_main(["view", str(case_dir), "--pred", str(cases / "pred" / "c2.nii.gz"), "--out", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "c2.nii.gz" in err[0]
    assert "not on the grid of case c0: shape (24, 28, 19) and (24, 28, 20)" in err[0]
    assert not bad.exists()

    lacking = tmp_path / "lacking"
    write_small_case(lacking, "c9", shape=SHAPE)
    (lacking / "c9" / "c9_t1.nii.gz").unlink()
    assert cli_main(["view", str(lacking / "c9"), "--out", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: c9: missing modality t1 in {lacking / 'c9'} (found: flair, t1ce, t2)"]
    assert not bad.exists()

    assert cli_main(["view", str(cases / "cases"), "--out", str(bad)]) == 2
    assert capsys.readouterr().err.strip() == f"error: {cases / 'cases'}: not one case folder (3 cases found)"


def test_evaluate_report_lists_every_case_and_goes_on_after_a_failed_one(cases, tmp_path, capsys):
    """c2's prediction is on another grid (evaluate cannot score it), c1 lacks a modality (its page fails): both
    are FAILED lines and failed rows, c0's page is written, the index lists all three; exit 1."""
    src = tmp_path / "cases"
    for i in range(3):
        write_small_case(src, f"c{i}", seed=i, shape=SHAPE)
    (src / "c1" / "c1_t2.nii.gz").unlink()
    out = tmp_path / "rep"
    code = cli_main(["evaluate", "--pred", str(cases / "pred"), "--truth", str(src), "--json",
                     str(tmp_path / "e.json"), "--report", str(out), "--quiet"])
    err = capsys.readouterr().err
    assert code == 1
    assert re.search(r"^FAILED c1: c1: missing modality t2", err, re.M)
    assert re.search(r"^FAILED c2: .*not on one grid", err, re.M)
    assert sorted(p.name for p in out.iterdir()) == ["c0.html", "index.html"]
    index = index_data(out / "index.html")
    results = json.loads((tmp_path / "e.json").read_text())
    assert set(index) == {"c0", "c1", "c2"}
    assert index["c0"]["dice.WT"] == results["cases"]["c0"]["WT"]["dice"] and index["c0"]["failed"] is None
    assert "missing modality t2" in index["c1"]["failed"] and "not on one grid" in index["c2"]["failed"]
    assert page_data(out / "c0.html")["scores"] == {r: results["cases"]["c0"][r] for r in ("WT", "TC", "ET")} | {
        "report": results["cases"]["c0"]["report"]}
    # failed rows first, then the worst mean Dice
    rows = re.findall(r'<tr (?:class="failed" )?data-case="(c\d)"', (out / "index.html").read_text())
    assert rows[2] == "c0" and set(rows[:2]) == {"c1", "c2"}


def test_evaluate_report_needs_the_case_images_and_refuses_before_writing(cases, tmp_path, capsys):
    flat = tmp_path / "flat"
    flat.mkdir()
    for i in range(3):
        (flat / f"c{i}.nii.gz").write_bytes((cases / "cases" / f"c{i}" / f"c{i}_seg.nii.gz").read_bytes())
    code = cli_main(["evaluate", "--pred", str(cases / "pred"), "--truth", str(flat), "--json",
                     str(tmp_path / "e.json"), "--report", "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith(f"error: --report: {flat} holds no BraTS case")
    assert not (tmp_path / "e.json").exists() and not (cases / "pred" / "report").exists()


def test_index_without_truth_lists_volumes_by_case():
    rows = [{"case_id": "b", "page": "b.html", "scores": None, "region_volumes": {"prediction": {"WT": 2.0,
                                                                                                 "TC": 1.0,
                                                                                                 "ET": 0.5}}},
            {"case_id": "a", "failed": "a: missing modality t1"}]
    text = report.index_page(rows)
    assert "Dice" not in text and "prediction WT (ml)" in text and "FAILED: a: missing modality t1" in text
    assert re.findall(r'data-case="(\w)"', text) == ["a", "b"]


def test_the_vendored_niivue_is_the_pinned_release_and_ships_with_its_license():
    script = (ROOT / "scripts" / "vendor_niivue.sh").read_text()
    pinned = re.search(r"^SHA256=([0-9a-f]{64})", script, re.M).group(1)
    bundle = pages.STATIC / pages.NIIVUE_FILE
    assert hashlib.sha256(bundle.read_bytes()).hexdigest() == pinned
    assert f"VERSION={pages.NIIVUE_VERSION}" in script
    assert "BSD 2-Clause License" in (pages.STATIC / "NIIVUE_LICENSE").read_text()
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    assert "report/static/*" in cfg["options.package_data"]["brats_keras"]  # a pip install carries them


def test_predict_report_pages_the_predicted_cases_and_lists_the_failed(cases, tmp_path):
    """What ``predict --report`` writes after predict_folder: a page per predicted case, a failed row for each case
    it could not predict (the browser test runs the command itself with the shipped model)."""
    pred = tmp_path / "pred"
    pred.mkdir()
    (pred / "c0.nii.gz").write_bytes((cases / "pred" / "c0.nii.gz").read_bytes())
    lines = []
    res = report.report_predictions(cases / "cases", pred, ok={"c0": 1.0}, failed={"c1": "cannot read"},
                                    log=lines.append)
    assert list(res["ok"]) == ["c0"] and res["failed"] == {"c1": "cannot read"}
    assert sorted(p.name for p in (pred / "report").iterdir()) == ["c0.html", "index.html"] and not lines
    index = index_data(pred / "report" / "index.html")
    assert set(index) == {"c0", "c1"} and index["c1"]["failed"] == "cannot read"
    assert index["c0"]["prediction.WT"] == page_data(pred / "report" / "c0.html")["region_volumes"]["prediction"]["WT"]
    assert set(page_data(pred / "report" / "c0.html")["volumes"]) == {"box", "images", "prediction"}  # no truth


def test_predict_report_refuses_a_report_path_that_is_a_file_before_predicting(cases, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "report").write_text("not a folder")
    assert cli_main(["predict", "--input", str(cases / "cases"), "--output", str(out), "--report",
                     "--model", str(tmp_path / "none.keras")]) == 2
    assert capsys.readouterr().err.strip() == f"error: --report {out / 'report'}: exists and is not a folder"
    assert sorted(p.name for p in out.iterdir()) == ["report"]


# ----------------------------------------------------------------------------- the pages follow the task
POST = "glioma2024-post"


@pytest.fixture(scope="module")
def post(tmp_path_factory):
    """``evaluate --report`` of one synthetic post-treatment case (BraTS 2024 names, so evaluate detects the task),
    its prediction the truth shifted by one voxel along x; with the task, evaluate's JSON and the case."""
    root = tmp_path_factory.mktemp("post")
    (case,) = find_cases(write_post_case(root / "cases"))
    seg = nib.load(case.seg)
    (root / "pred").mkdir()
    write_nifti(root / "pred" / f"{case.case_id}.nii.gz", np.roll(np.asanyarray(seg.dataobj), 1, axis=0), seg.affine)
    assert cli_main(["evaluate", "--pred", str(root / "pred"), "--truth", str(root / "cases"), "--json",
                     str(root / "e.json"), "--report", str(root / "report"), "--quiet"]) == 0
    return {"root": root, "case": case, "task": get_task(POST), "results": json.loads((root / "e.json").read_text()),
            "page": page_data(root / "report" / f"{case.case_id}.html")}


def test_a_post_treatment_page_draws_its_four_classes_and_scores_its_six_regions_as_evaluate(post):
    task, page, cid = post["task"], post["page"], post["case"].case_id
    results = post["results"]
    assert results["task"]["name"] == page["task"] == POST
    assert page["classes"] == {"1": "#D55E00", "2": "#F0E442", "3": "#56B4E9", "4": "#CC79A7"}  # task.colors
    assert page["classes"] == {str(c): task.colors[c] for c in range(1, 5)}
    assert page["class_names"]["4"] == "RC (resection cavity)" and page["class_names"]["1"].startswith("NETC")
    regions = ["WT", "TC", "NETC", "SNFH", "ET", "RC"]
    assert list(task.region_names) == regions
    assert {r: page["scores"][r] for r in regions} == {r: results["cases"][cid][r] for r in regions}
    truth = np.asanyarray(nib.load(post["case"].seg).dataobj)
    assert page["region_volumes"]["truth"] == {r: np.isin(truth, task.region(r).labels).sum() / 1000
                                               for r in regions}
    text = (post["root"] / "report" / f"{cid}.html").read_text()
    assert f'data-score="RC.dice">{results["cases"][cid]["RC"]["dice"]:.4f}<' in text
    assert 'data-class="4" checked' in text and "background:#CC79A7" in text
    index = index_data(post["root"] / "report" / "index.html")
    assert [k[5:] for k in index[cid] if k.startswith("dice.")] == regions
    assert index[cid]["dice.RC"] == results["cases"][cid]["RC"]["dice"]
    assert index[cid]["mean_dice"] == pytest.approx(np.mean([results["cases"][cid][r]["dice"] for r in regions]))


def test_view_task_flag_names_the_classes_and_refuses_values_the_task_lacks(post, tmp_path, capsys):
    case = post["case"]
    out = tmp_path / "ped.html"
    assert cli_main(["view", str(case.folder), "--task", "pediatric2024", "--out", str(out)]) == 0  # labels 1..4
    assert page_data(out)["class_names"]["1"] == "ET (enhancing)" and page_data(out)["task"] == "pediatric2024"
    capsys.readouterr()
    assert cli_main(["view", str(case.folder), "--task", "brats2023", "--out", str(tmp_path / "no.html")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {case.seg}: ") and "4" in err[0]
    assert not (tmp_path / "no.html").exists()


def test_a_case_off_the_working_grid_is_drawn_on_it_and_scored_on_its_own_voxels(cases, tmp_path):
    """c0 and its prediction stored on a 1 x 1 x 2 mm RAS grid: the page draws the working grid (1 mm LPS, as
    read_modalities resamples the images; the maps taken there voxel by voxel) and says so; its scores and
    volumes are those of the files' own voxels (as evaluate scores them)."""
    own = np.diag([1.0, 1.0, 2.0, 1.0])
    folder = tmp_path / "c0"
    folder.mkdir()
    for f in (cases / "cases" / "c0").iterdir():
        (folder / f.name).write_bytes(f.read_bytes())
        resave_on_grid(folder / f.name, own)
    pred_path = tmp_path / "c0_pred.nii.gz"
    pred_path.write_bytes((cases / "pred" / "c0.nii.gz").read_bytes())
    resave_on_grid(pred_path, own)
    (case,) = find_cases(folder)
    volumes = read_modalities(case, ["flair", "t1"])
    assert volumes.regrid is not None and volumes.arrays[0].shape == (24, 28, 40)

    view = report.read_case_view(case, prediction=pred_path, truth=case.seg)
    pred, _ = read_label_map(pred_path)
    truth, _ = read_label_map(case.seg)
    np.testing.assert_allclose(view.affine, volumes.affine)
    np.testing.assert_array_equal(view.modalities["t1"], volumes.arrays[1])
    np.testing.assert_array_equal(view.truth, volumes.regrid.to_working(truth, order=0))
    np.testing.assert_array_equal(np.flip(view.prediction[:, :, ::2], axis=(0, 1)), pred)  # 2 mm slices, RAS -> LPS
    assert view.scores == score_case(pred, truth, (1.0, 1.0, 2.0), report=False)
    assert view.region_volumes()["truth"]["WT"] == pytest.approx((truth > 0).sum() * 2 / 1000)

    row = report.write_case_page(case, tmp_path / "c0.html", prediction=pred_path, truth=case.seg)
    data = page_data(tmp_path / "c0.html")
    assert data["scores"] == json.loads(json.dumps(row["scores"])) == json.loads(json.dumps(view.scores))
    assert data["notes"] == ["c0: drawn resampled from 1.0 x 1.0 x 2.0 mm RAS, 24 x 28 x 20 voxels onto the 1 mm "
                             "LPS grid, 24 x 28 x 40 voxels; the scores and volumes count its own voxels"]
    copy = decode(data["volumes"]["truth"])
    assert "".join(nib.aff2axcodes(copy.affine)) == "LPS" and copy.header.get_zooms() == (1.0, 1.0, 1.0)
    np.testing.assert_array_equal(np.asanyarray(copy.dataobj), view.truth[tuple(slice(a, b) for a, b in data["box"])])


def test_a_prediction_in_another_family_task_s_values_is_read_as_evaluate_reads_it(cases, tmp_path):
    """``predict --labels 2023 --report`` writes ET as 3 for a 2021-named case: the page of the model's task
    (glioma2021) reads it with the values of its family (brats2023), as evaluate does, and draws ET as class 3."""
    case = find_cases(cases / "cases" / "c0")[0]
    labels = np.asanyarray(nib.load(case.seg).dataobj)
    (tmp_path / "pred").mkdir()
    write_nifti(tmp_path / "pred" / "c0.nii.gz", np.where(labels == 4, 3, labels).astype(labels.dtype))
    res = report.report_predictions(case.folder, tmp_path / "pred", ok={"c0": 1.0}, task="glioma2021")
    assert list(res["ok"]) == ["c0"] and not res["failed"]
    data = page_data(res["ok"]["c0"])
    truth, _ = read_label_map(case.seg)
    box = tuple(slice(a, b) for a, b in data["box"])
    np.testing.assert_array_equal(np.asanyarray(decode(data["volumes"]["prediction"]).dataobj), truth[box])
    assert "task" not in data  # the default task's page
