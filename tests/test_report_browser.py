"""The HTML report in a real browser: Debian's Chromium (/usr/bin/chromium, headless, WebGL2 through SwiftShader)
driven by Playwright opens the pages of a real case from file:// with the network cut off and checks what they draw.

The case is ../shared/data/brats-real/Brats18_TCIA02_606_1, predicted by the shipped model with
``brats-keras predict --report``; ``brats-keras evaluate --report`` then scores it against its label map, beside a
second case (its label map shifted, as a prediction) and a third whose prediction is on another grid (a failed row).

A page of a synthetic post-treatment case (task glioma2024-post) checks that the task's resection cavity is drawn
in its colour where its label is.

The browser is the session's one Chromium (tests/conftest.py ``browser``). Without /usr/bin/chromium (or
Playwright) the tests skip saying so; under CI=true they fail instead (.ci/run installs Chromium with apt-get).
Screenshots go to $BRATS_TEST_ARTEFACTS when set, else to the test's temporary folder; their paths are printed.
"""
import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from brats_keras.cli import main as cli_main
from brats_keras.io import read_label_map
from brats_keras.report import PAGE_LIMIT, disagreement
from brats_keras.tasks import get_task
from brats_keras.visualize.common import CLASS_COLORS, DISAGREEMENT_COLORS, class_colors

from conftest import write_nifti, write_post_case

CASE = "Brats18_TCIA02_606_1"
SHIFTED = "Brats18_2013_11_1"  # its label map shifted by 3 voxels is its prediction
OFF_GRID = "Brats18_2013_20_1"  # its prediction is cropped: on another grid
LOAD_MS = 180_000


@pytest.fixture(scope="module")
def artefacts(tmp_path_factory) -> Path:
    folder = Path(os.environ.get("BRATS_TEST_ARTEFACTS") or tmp_path_factory.mktemp("screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def reports(real_dir, tmp_path_factory):
    """``predict --report`` of CASE with the shipped model, then ``evaluate --report`` of it and two more cases."""
    root = tmp_path_factory.mktemp("reports")
    pred = root / "pred"
    assert cli_main(["predict", "--input", str(real_dir / CASE), "--output", str(pred), "--report", "--quiet"]) == 0
    truth = root / "truth"
    truth.mkdir()
    for case in (CASE, SHIFTED, OFF_GRID):
        (truth / case).symlink_to(real_dir / case, target_is_directory=True)
    for case, change in ((SHIFTED, lambda a: np.roll(a, 3, axis=0)), (OFF_GRID, lambda a: a[:, :, 1:])):
        img = nib.load(real_dir / case / f"{case}_seg.nii.gz")
        write_nifti(pred / f"{case}.nii.gz", np.ascontiguousarray(change(np.asanyarray(img.dataobj))), img.affine)
    code = cli_main(["evaluate", "--pred", str(pred), "--truth", str(truth), "--json", str(root / "scores.json"),
                     "--report", str(root / "evaluated"), "--quiet"])
    assert code == 1  # OFF_GRID cannot be scored
    return {"predicted": pred / "report", "evaluated": root / "evaluated", "pred": pred, "truth": truth,
            "scores": json.loads((root / "scores.json").read_text())}


class Page:
    """A page opened from file:// with every request that is not a local file refused and counted, and every
    console error and uncaught exception kept."""

    def __init__(self, browser, path: Path):
        self.page = browser.new_page(viewport={"width": 1400, "height": 730})
        self.page.set_default_timeout(LOAD_MS)  # SwiftShader draws on the CPU: slow on a busy machine
        self.errors, self.remote = [], []
        self.page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))

        def route(r):
            if r.request.url.startswith("file://"):
                return r.continue_()
            self.remote.append(r.request.url)
            return r.abort()

        self.page.route("**/*", route)
        self.page.goto(path.as_uri())

    def wait_ready(self) -> "Page":
        self.page.wait_for_function("document.documentElement.dataset.ready", timeout=LOAD_MS)
        assert self.page.evaluate("document.documentElement.dataset.ready") == "true", self.js("bratsReport.error")
        return self

    def js(self, expr: str):
        return self.page.evaluate(expr)

    def shot(self, path: Path | None = None) -> np.ndarray:
        """The viewer's canvas as (H, W, 3) uint8, after NiiVue has drawn the last change."""
        from io import BytesIO

        from PIL import Image

        self.page.wait_for_timeout(300)  # NiiVue draws on the next animation frame
        png = self.page.locator("#viewer").screenshot()
        if path is not None:
            path.write_bytes(png)
            print(f"screenshot: {path}")
        return np.asarray(Image.open(BytesIO(png)).convert("RGB"))

    def close(self):
        assert not self.errors, self.errors
        assert not self.remote, f"the page asked the network for {self.remote}"
        self.page.close()


def rgb(color: str) -> np.ndarray:
    return np.array([int(color[i:i + 2], 16) for i in (1, 3, 5)])


def colour_map(shot: np.ndarray, colors: dict, tol: int = 12) -> np.ndarray:
    """(H, W) int: the key of ``colors`` each pixel shows (within ``tol`` per channel), 0 elsewhere."""
    out = np.zeros(shot.shape[:2], int)
    for key, color in colors.items():
        out[np.all(np.abs(shot.astype(int) - rgb(color)) <= tol, axis=-1)] = key
    return out


def expected_axial(page: Page, labels: np.ndarray, shape) -> np.ndarray:
    """What the axial view must show at each screen pixel: ``labels[i, j, k]`` of the slice k shown, placed as the
    page's copy (cropped to its box) fits the canvas: the box's i by j voxels scaled to fit, centred, the
    patient's right on the left (i grows to the right: BraTS voxels run towards the left) and anterior up."""
    box = page.js("bratsReport.data.box")
    k = page.js("bratsReport.state().voxel")[2]
    (i0, i1), (j0, j1) = box[0], box[1]
    h, w = shape
    scale = min(w / (i1 - i0), h / (j1 - j0))
    x0, y0 = (w - (i1 - i0) * scale) / 2, (h - (j1 - j0) * scale) / 2
    i = np.floor((np.arange(w) + 0.5 - x0) / scale).astype(int) + i0
    j = np.floor((np.arange(h) + 0.5 - y0) / scale).astype(int) + j0
    inside = ((i >= i0) & (i < i1))[None, :] & ((j >= j0) & (j < j1))[:, None]
    out = labels[np.clip(i, i0, i1 - 1)[None, :], np.clip(j, j0, j1 - 1)[:, None], k]
    return np.where(inside, out, 0)


def agreement(shown: np.ndarray, expected: np.ndarray, key: int) -> tuple[float, float]:
    """(share of the pixels expected to be ``key`` that show it, share of those showing it that are expected
    within 2 pixels): how much of the label is drawn, and how much drawn is where the label is."""
    from scipy.ndimage import binary_dilation

    want, got = expected == key, shown == key
    near = binary_dilation(want, iterations=2)
    return (got & want).sum() / max(want.sum(), 1), (got & near).sum() / max(got.sum(), 1)


@pytest.fixture(scope="module")
def evaluated_page(browser, reports):
    page = Page(browser, reports["evaluated"] / f"{CASE}.html").wait_ready()
    yield page
    page.close()


def test_predict_report_opens_offline_and_draws_the_case_with_its_prediction(browser, reports, artefacts):
    path = reports["predicted"] / f"{CASE}.html"
    assert path.stat().st_size < PAGE_LIMIT  # under 10 MB
    page = Page(browser, path).wait_ready()
    state = page.js("bratsReport.state()")
    assert state["overlays"] == {"prediction": True} and page.js("bratsReport.data.scores") is None
    shot = page.shot(artefacts / "predict_report.png")
    assert shot.std() > 20 and len(np.unique(shot.reshape(-1, 3), axis=0)) > 100  # drawn, not blank
    drawn = colour_map(shot, CLASS_COLORS, tol=60)  # at the page's overlay opacity, blended with the MRI
    assert all((drawn == c).sum() > 200 for c in (1, 2, 3)), [(drawn == c).sum() for c in (1, 2, 3)]
    # the axial view alone, opaque overlays: the shipped model's prediction where its file says
    page.js("bratsReport.setView('axial'); bratsReport.setOpacity(1)")
    pred, img = read_label_map(reports["pred"] / f"{CASE}.nii.gz")
    shot = page.shot()
    shown, expected = colour_map(shot, CLASS_COLORS), expected_axial(page, pred, shot.shape[:2])
    for c in (1, 2, 3):
        covered, placed = agreement(shown, expected, c)
        assert covered > 0.9 and placed > 0.95, (c, covered, placed)
    index = (reports["predicted"] / "index.html").read_text()
    assert f'<a href="{CASE}.html">{CASE}</a>' in index
    page.close()


def test_evaluate_report_draws_truth_and_disagreement_where_they_are(evaluated_page, reports, artefacts):
    page = evaluated_page
    assert page.js("Object.keys(bratsReport.data.volumes).sort()") == ["box", "disagreement", "images", "prediction",
                                                                      "truth"]
    page.page.wait_for_timeout(300)  # NiiVue draws on the next animation frame
    page.page.screenshot(path=artefacts / "evaluate_page.png")  # the whole page: docs/img/report.png
    page.js("bratsReport.setView('axial'); bratsReport.setOpacity(1);"
            "bratsReport.setOverlay('prediction', false); bratsReport.setOverlay('truth', true)")
    truth, _ = read_label_map(reports["truth"] / CASE / f"{CASE}_seg.nii.gz")
    pred, _ = read_label_map(reports["pred"] / f"{CASE}.nii.gz")
    shot = page.shot(artefacts / "evaluate_truth_axial.png")
    shown, expected = colour_map(shot, CLASS_COLORS), expected_axial(page, truth, shot.shape[:2])
    assert (expected > 0).sum() > 5000  # the slice shown cuts the tumour
    for c in (1, 2, 3):
        covered, placed = agreement(shown, expected, c)
        assert covered > 0.9 and placed > 0.95, (c, covered, placed)
    page.js("bratsReport.setOverlay('truth', false); bratsReport.setOverlay('disagreement', true)")
    shot = page.shot(artefacts / "evaluate_disagreement_axial.png")
    shown = colour_map(shot, DISAGREEMENT_COLORS)
    expected = expected_axial(page, disagreement(pred, truth), shot.shape[:2])
    for kind in (1, 2, 3):
        if (expected == kind).sum() > 200:  # every kind of disagreement this slice has
            covered, placed = agreement(shown, expected, kind)
            assert covered > 0.9 and placed > 0.95, (kind, covered, placed)


def test_switching_a_class_off_removes_its_colour(evaluated_page):
    page = evaluated_page  # each test of the shared page sets the state it needs: no multiplanar redraw between
    page.js("bratsReport.setView('axial'); bratsReport.setOpacity(1); bratsReport.setOverlay('truth', false);"
            "bratsReport.setOverlay('disagreement', false); bratsReport.setOverlay('prediction', true)")
    before = page.shot()
    shown = colour_map(before, CLASS_COLORS)
    assert all((shown == c).sum() > 500 for c in (1, 2, 3))
    page.page.locator('input[data-class="2"]').click()  # ED off, through its checkbox
    assert page.js("bratsReport.state().classes") == {"1": True, "2": False, "3": True}
    after = colour_map(page.shot(), CLASS_COLORS)
    assert (after == 2).sum() == 0
    assert all((after == c).sum() == (shown == c).sum() for c in (1, 3))  # the others stay as they were
    page.page.locator('input[data-class="2"]').click()
    # another modality is another picture under the same overlays
    page.page.locator('input[name="modality"][value="t1ce"]').check()
    assert page.js("bratsReport.state()").items() >= {"modality": "t1ce", "classes": {"1": True, "2": True,
                                                                                      "3": True}}.items()
    t1ce = page.shot()
    assert np.abs(t1ce.astype(int) - before.astype(int)).mean() > 5
    assert (colour_map(t1ce, CLASS_COLORS) == 2).sum() == (shown == 2).sum()


def test_page_and_index_show_evaluates_numbers(browser, evaluated_page, reports):
    scores = reports["scores"]
    page = evaluated_page
    shown = page.js("bratsReport.data.scores")
    for region in ("WT", "TC", "ET"):
        assert shown[region] == scores["cases"][CASE][region]
        cell = page.page.locator(f'td[data-score="{region}.dice"]').inner_text()
        assert cell == f"{scores['cases'][CASE][region]['dice']:.4f}"
    index = Page(browser, reports["evaluated"] / "index.html")
    rows = index.js("Array.from(document.querySelectorAll('tbody tr')).map(r => r.dataset.case)")
    listed = index.js("bratsIndex.cases")
    assert sorted(rows) == sorted(listed) == sorted([CASE, SHIFTED, OFF_GRID])
    for case in (CASE, SHIFTED):
        for region in ("WT", "TC", "ET"):
            assert listed[case][f"dice.{region}"] == scores["cases"][case][region]["dice"]
    assert OFF_GRID in scores["errors"] and "not on one grid" in listed[OFF_GRID]["failed"]
    mean = {c: np.mean([scores["cases"][c][r]["dice"] for r in ("WT", "TC", "ET")]) for c in (CASE, SHIFTED)}
    assert rows == [OFF_GRID, *sorted(mean, key=mean.get)]  # failed, then the worst first
    index.page.locator('th[data-key="dice.ET"]').click()  # sorted by ET Dice, lowest first
    rows = index.js("Array.from(document.querySelectorAll('tbody tr')).map(r => r.dataset.case)")
    assert rows[:2] == sorted((CASE, SHIFTED), key=lambda c: scores["cases"][c]["ET"]["dice"])
    href = index.js(f"document.querySelector('a[href=\"{CASE}.html\"]').href")
    assert href == (reports["evaluated"] / f"{CASE}.html").as_uri()
    index.close()



def test_a_post_treatment_page_draws_the_resection_cavity_in_its_colour_where_it_is(browser, tmp_path, artefacts):
    """``view`` of a synthetic glioma2024-post case (its task detected from its BraTS 2024 names) on the axial
    slice with the most resection cavity (label 4, class 4): RC's colour where RC is, the other classes in theirs."""
    task = get_task("glioma2024-post")
    folder = write_post_case(tmp_path / "cases")
    assert cli_main(["view", str(folder), "--out", str(tmp_path / "post.html")]) == 0
    truth = task.to_classes(np.asanyarray(nib.load(next(folder.glob("*-seg.nii.gz"))).dataobj))
    k = int(np.argmax((truth == 4).sum(axis=(0, 1))))
    page = Page(browser, tmp_path / "post.html").wait_ready()
    assert page.js("bratsReport.data.classes") == {str(c): task.colors[c] for c in range(1, 5)}
    box = page.js("bratsReport.data.box")  # the crosshair at the box's corner: its lines cross no label
    page.js(f"bratsReport.setVoxel([{box[0][0]}, {box[1][0]}, {k}]); bratsReport.setView('axial');"
            "bratsReport.setOpacity(1)")
    shot = page.shot(artefacts / "post_treatment_axial.png")
    shown = colour_map(shot, class_colors(task))
    expected = expected_axial(page, truth, shot.shape[:2])
    assert (expected == 4).sum() > 500  # the slice shown cuts the cavity
    for c in range(1, 5):
        if (expected == c).sum() > 200:
            covered, placed = agreement(shown, expected, c)
            assert covered > 0.9 and placed > 0.95, (c, covered, placed)
    page.close()
