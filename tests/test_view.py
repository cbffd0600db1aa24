"""brats_keras.visualize.view (visualize/widget.py): the NiiVue widget's volumes and colours, the static figure's
pixels, which of the two a kernel gets, and bad input in one line."""
from __future__ import annotations

import gzip
import io
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import nibabel as nib
import numpy as np
import pytest
from conftest import execute_notebook, resave_on_grid, write_nifti, write_post_case, write_small_case

from brats_keras.io import BratsInputError
from brats_keras.labels import labels_to_classes
from brats_keras.synthetic import brats_affine
from brats_keras.tasks import get_task
from brats_keras.visualize import CLASS_COLORS, view, widget_frontend
from brats_keras.visualize.widget import OVERLAY_OPACITY, VIEW_ENV, crosshair_fractions

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


@pytest.fixture(autouse=True)
def _auto_detection(monkeypatch):
    """Each test starts with neither switch of a widget front end set (a test sets the one it needs)."""
    monkeypatch.delenv(VIEW_ENV, raising=False)
    monkeypatch.delenv("JPY_SESSION_NAME", raising=False)


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    """A small case on disk (24 x 28 x 20, BraTS 2021 names, ET stored as 4), its truth as classes, and a
    prediction that differs from the truth (the tumour shifted by 2 voxels along x)."""
    folder = write_small_case(tmp_path_factory.mktemp("view"), "c0")
    seg = folder / "c0_seg.nii.gz"
    truth = labels_to_classes(np.asarray(nib.load(seg).dataobj))
    return folder, seg, truth, np.roll(truth, 2, axis=0)


def _nifti(volume):
    """(array, affine) of a widget volume's in-memory .nii.gz."""
    img = nib.Nifti1Image.from_bytes(gzip.decompress(volume.data))
    return np.asanyarray(img.dataobj), img.affine


def _rgb255(hex_colour):
    from matplotlib.colors import to_rgb

    return [round(255 * v) for v in to_rgb(hex_colour)]


# --------------------------------------------------------------------------- the widget


def test_widget_holds_the_modality_then_truth_and_prediction_in_the_class_colours(case):
    from ipyniivue import NiiVue

    folder, seg, truth, pred = case
    nv = view(folder, prediction=pred, truth=seg, widget=True)
    assert isinstance(nv, NiiVue)
    assert [v.name for v in nv.volumes] == ["flair.nii.gz", "truth.nii.gz", "prediction.nii.gz"]
    flair_img = nib.load(folder / "c0_flair.nii.gz")
    image, affine = _nifti(nv.volumes[0])
    np.testing.assert_array_equal(image, np.asarray(flair_img.dataobj))
    np.testing.assert_allclose(affine, flair_img.affine)
    brain = image[image != 0]
    assert nv.volumes[0].colormap == "gray"
    assert (nv.volumes[0].cal_min, nv.volumes[0].cal_max) == pytest.approx(np.percentile(brain, [1, 99]))
    want_lut = [0, 0, 0, 0]
    for c in (1, 2, 3):
        want_lut += _rgb255(CLASS_COLORS[c]) + [255]
    for volume, classes in zip(nv.volumes[1:], (truth, pred)):
        data, overlay_affine = _nifti(volume)
        assert data.dtype == np.uint8 and data.shape == (24, 28, 20)
        np.testing.assert_array_equal(data, classes)  # classes 0..3: the truth's ET 4 is class 3
        np.testing.assert_allclose(overlay_affine, flair_img.affine)
        lut = volume.colormap_label
        assert (lut.lut, lut.min, lut.max) == (want_lut, 0, 3)
        assert lut.labels == ["", "NCR", "ED", "ET"]
        assert volume.opacity == OVERLAY_OPACITY


def test_widget_of_an_array_lies_on_the_brats_grid_and_leaves_absent_overlays_out():
    volume = np.arange(6 * 7 * 5, dtype=np.float32).reshape(6, 7, 5) + 1
    nv = view(volume, modality="t2w", widget=True)
    assert [v.name for v in nv.volumes] == ["t2.nii.gz"]
    data, affine = _nifti(nv.volumes[0])
    np.testing.assert_array_equal(data, volume)
    np.testing.assert_allclose(affine, brats_affine(volume.shape))


@pytest.mark.parametrize("affine, want", [
    (brats_affine((6, 7, 5)), [1 - 1.5 / 6, 1 - 2.5 / 7, 3.5 / 5]),  # LPS: x and y run against RAS
    (np.eye(4), [1.5 / 6, 2.5 / 7, 3.5 / 5]),
    (np.array([[0, 0, 2, 0], [-1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 1.0]]), [3.5 / 5, 1 - 1.5 / 6, 2.5 / 7]),
])
def test_the_crosshair_starts_at_the_tumour_in_niivue_fractions(affine, want):
    """NiiVue's crosshair_pos: fractions along the RAS-ordered axes, voxel centres at (i + 0.5) / n."""
    volume = np.ones((6, 7, 5), np.int16)
    prediction = np.zeros(volume.shape, np.uint8)
    prediction[1, 2, 3] = 2
    assert crosshair_fractions((1, 2, 3), volume.shape, affine) == pytest.approx(want)
    if np.allclose(affine, brats_affine(volume.shape)):
        assert view(volume, prediction=prediction, widget=True).scene.crosshair_pos == pytest.approx(want)
        assert view(volume, widget=True).scene.crosshair_pos == [0.5, 0.5, 0.5]  # no tumour: the centre


@pytest.fixture(scope="module")
def post_case(tmp_path_factory):
    """A synthetic post-treatment case (BraTS 2024 names: its task detected)."""
    from brats_keras.io import find_cases

    (found,) = find_cases(write_post_case(tmp_path_factory.mktemp("post")))
    return found


def test_a_post_treatment_case_gets_five_colours_and_its_own_legend(post_case):
    """The task's four classes (NETC, SNFH, ET, RC = label 4) in its colours: a colour table of 5 entries in the
    widget, a legend of four in the static figure; an array with class 4 needs the task named."""
    task = get_task("glioma2024-post")
    seg = np.asarray(nib.load(post_case.seg).dataobj)
    nv = view(post_case, truth=post_case.seg, widget=True)
    lut = nv.volumes[1].colormap_label
    want = [0, 0, 0, 0] + [v for c in range(1, 5) for v in _rgb255(task.colors[c]) + [255]]
    assert (lut.lut, lut.min, lut.max) == (want, 0, 4) and lut.labels == ["", "NETC", "SNFH", "ET", "RC"]
    assert _rgb255(task.colors[4]) == [204, 121, 167]  # RC
    np.testing.assert_array_equal(_nifti(nv.volumes[1])[0], seg)  # labels 1..4 are classes 1..4
    fig = view(post_case, truth=post_case.seg, widget=False)
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == [
        "NON-ENHANCING CORE (NETC)", "FLAIR HYPERINTENSITY (SNFH)", "ENHANCING (ET)", "RESECTION CAVITY (RC)"]
    assert [_rgb255(h.get_facecolor()[:3]) for h in legend.legend_handles] == [_rgb255(task.colors[c])
                                                                             for c in range(1, 5)]
    flair = np.asarray(nib.load(post_case.path("flair")).dataobj)
    assert len(view(flair, prediction=seg, task="glioma2024-post", widget=True).volumes[1].colormap_label.labels) == 5
    with pytest.raises(BratsInputError, match=r"prediction holds values \[4\] outside the classes 0..3"):
        view(flair, prediction=seg, widget=True)


def test_a_case_off_the_working_grid_is_shown_resampled_onto_it(case, tmp_path):
    """The case and its label map stored on a 1 x 1 x 2 mm RAS grid: the widget shows the working grid (1 mm LPS)
    as read_modalities reads it, the labels taken there voxel by voxel."""
    from brats_keras.io import find_cases, read_modalities

    folder, seg, truth, _ = case
    off = tmp_path / "c0"
    off.mkdir()
    for f in folder.iterdir():
        (off / f.name).write_bytes(f.read_bytes())
        resave_on_grid(off / f.name, np.diag([1.0, 1.0, 2.0, 1.0]))
    (found,) = find_cases(off)
    volumes = read_modalities(found, ["flair"])
    nv = view(off, truth=found.seg, widget=True)
    image, affine = _nifti(nv.volumes[0])
    assert image.shape == (24, 28, 40)
    np.testing.assert_allclose(image, volumes.arrays[0], rtol=1e-6)
    np.testing.assert_allclose(affine, volumes.affine)
    np.testing.assert_array_equal(_nifti(nv.volumes[1])[0], volumes.regrid.to_working(truth, order=0))


# --------------------------------------------------------------------------- the static figure


def test_static_figure_draws_the_tumour_in_its_class_colour_where_it_is():
    """The axial panel of show_planes: the ET block is ET's colour at 45 % over the grey of a uniform brain
    (grey 128: the window of a uniform image is its value +-0.5), and grey elsewhere, the transposed spot too."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    image = np.full((32, 32, 16), 100, np.int16)
    classes = np.zeros(image.shape, np.uint8)
    classes[8:20, 4:12, 6:10] = 3  # x 8..19, y 4..11
    fig = view(image, prediction=classes, widget=False)
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    pixels = np.asarray(canvas.buffer_rgba())[..., :3].astype(float)
    (axial,) = [ax for ax in fig.axes if ax.get_title().startswith("axial")]

    def pixel(x, y):  # axial panels have rows along y and columns along x (uncropped: the brain fills the box)
        px, py = axial.transData.transform((x, y))
        return pixels[int(round(pixels.shape[0] - py)), int(round(px))]

    et = np.array(_rgb255(CLASS_COLORS[3]), float)
    np.testing.assert_allclose(pixel(14, 8), 0.45 * et + 0.55 * 128, atol=4)
    for x, y in ((26, 24), (8, 14), (3, 3)):
        np.testing.assert_allclose(pixel(x, y), [128, 128, 128], atol=3)


def test_static_figure_sets_truth_beside_prediction_when_both_are_given(case):
    folder, seg, truth, pred = case
    fig = view(folder, prediction=pred, truth=seg, widget=False)
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[:2] == ["ground truth", "prediction"]
    assert fig.get_suptitle().startswith("c0\n")


# --------------------------------------------------------------------------- which of the two


@pytest.mark.parametrize("value, want", [("widget", True), ("static", False), (" Static ", False)])
def test_the_environment_variable_decides(monkeypatch, value, want):
    monkeypatch.setenv(VIEW_ENV, value)
    assert widget_frontend() is want


def test_plain_python_gets_the_static_figure(monkeypatch):
    """No kernel here (pytest): the figure, even with the variable a notebook server sets."""
    monkeypatch.setenv("JPY_SESSION_NAME", "x.ipynb")
    assert widget_frontend() is False
    assert type(view(np.ones((8, 8, 8)), widget=None)).__name__ == "Figure"


def test_a_notebook_server_kernel_gets_the_widget_and_nbclient_the_picture(tmp_path, kernel_specs, monkeypatch):
    """The same cell in two real kernels: started as nbclient starts one, its result is the PNG of the figure;
    started as JupyterLab's server starts one ($JPY_SESSION_NAME), the NiiVue widget's view and state."""
    cell = ("import numpy as np\nfrom brats_keras.visualize import view\n"
            "v = np.full((16, 16, 8), 100, np.int16)\nc = np.zeros(v.shape, np.uint8)\nc[4:8, 4:8, 2:5] = 2\n"
            "view(v, prediction=c)")
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel's own (inline) backend, as in a notebook
    outputs = {}
    for server in (False, True):
        if server:
            monkeypatch.setenv("JPY_SESSION_NAME", str(tmp_path / "view.ipynb"))
        nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(cell)])
        execute_notebook(nb, tmp_path, kernel_specs, timeout=120)
        (result,) = [o for o in nb.cells[0].outputs if o.output_type == "execute_result"]
        outputs[server] = result.data, nb.metadata.get("widgets", {})
    static, no_state = outputs[False]
    assert "image/png" in static and WIDGET_VIEW not in static and not no_state
    widget, state = outputs[True]
    assert WIDGET_VIEW in widget and "image/png" not in widget
    models = state["application/vnd.jupyter.widget-state+json"]["state"]
    names = sorted(m["state"].get("name", "") for m in models.values() if m["model_name"] == "AnyModel")
    assert names == ["", "flair.nii.gz", "prediction.nii.gz"]  # the NiiVue widget and its two volumes


# --------------------------------------------------------------------------- bad input


def _bad_inputs(case, tmp):
    folder, seg, truth, pred = case
    lonely = tmp / "lonely" / "c9"
    lonely.mkdir(parents=True)
    write_nifti(lonely / "c9_t1.nii.gz", np.ones((24, 28, 20), np.int16))
    write_nifti(tmp / "coarse.nii.gz", np.zeros((24, 28, 20), np.uint8), np.diag([-1.0, -1.0, 3.0, 1.0]))
    write_nifti(tmp / "small.nii.gz", np.zeros((24, 28, 19), np.uint8))
    two = tmp / "two"
    for i in (1, 2):
        write_small_case(two, f"c{i}", seed=i)
    return {
        "missing modality": (dict(case=lonely), "c9: missing modality flair"),
        "unknown modality": (dict(case=folder, modality="dwi"), "modality: unknown modality 'dwi'"),
        "two cases": (dict(case=two), "holds 2 cases (c1, c2); give one case folder"),
        "prediction shape": (dict(case=folder, prediction=pred[:, :, :-1]),
                             "prediction: shape (24, 28, 19) differs from the case's (24, 28, 20)"),
        "truth labels": (dict(case=folder, truth=np.where(truth == 3, 4, truth)), "truth: truth holds values [4]"),
        "float prediction": (dict(case=folder, prediction=pred.astype(float)), "prediction: an integer array"),
        "prediction grid": (dict(case=folder, prediction=tmp / "coarse.nii.gz"),
                            "coarse.nii.gz: not on the case's grid: voxel size 1x1x3 mm and 1x1x1 mm"),
        "truth file shape": (dict(case=folder, truth=tmp / "small.nii.gz"),
                             "small.nii.gz: not on the case's grid: shape (24, 28, 19) and (24, 28, 20)"),
        "4-D array": (dict(case=np.ones((4, 4, 4, 2))), "case: an array must be one modality (D, H, W)"),
    }


def test_bad_input_is_one_line_naming_the_problem(case, tmp_path):
    for what, (kwargs, message) in _bad_inputs(case, tmp_path).items():
        for widget in (True, False):
            with pytest.raises(BratsInputError) as err:
                view(**kwargs, widget=widget)
            assert message in str(err.value) and "\n" not in str(err.value), (what, str(err.value))


def test_a_bad_switch_is_one_line(monkeypatch):
    monkeypatch.setenv(VIEW_ENV, "3d")
    with pytest.raises(BratsInputError, match=r"^\$BRATS_KERAS_VIEW: '3d' is not 'widget' or 'static'"):
        view(np.ones((8, 8, 8)))


# --------------------------------------------------------------------------- in JupyterLab, in a real browser


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def jupyterlab(tmp_path, kernel_specs):
    """``(url of a notebook, folder)``: a JupyterLab server on this checkout, its kernels this interpreter, its
    settings and workspaces in ``tmp_path``; stopped after the test."""
    port, token, root = _free_port(), secrets.token_hex(8), Path(__file__).resolve().parents[1]
    env = {k: v for k, v in os.environ.items() if k not in (VIEW_ENV, "MPLBACKEND", "JPY_SESSION_NAME")}
    env.update(PYTHONPATH=os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH")])),
               JUPYTER_PATH=str(Path(kernel_specs.kernel_dirs[0]).parent),
               JUPYTERLAB_SETTINGS_DIR=str(tmp_path / "settings"), JUPYTERLAB_WORKSPACES_DIR=str(tmp_path / "ws"),
               JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"))
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root", f"--port={port}", "--ip=127.0.0.1",
         f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={tmp_path}"],
        env=env, stdout=subprocess.DEVNULL, stderr=open(tmp_path / "server.log", "wb"))
    try:
        for _ in range(240):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status?token={token}", timeout=5)
                break
            except OSError:
                assert server.poll() is None, (tmp_path / "server.log").read_text()[-2000:]
                time.sleep(0.5)
        yield f"http://127.0.0.1:{port}/lab/tree/view.ipynb?token={token}", tmp_path
    finally:
        server.terminate()
        server.wait(timeout=30)


def _class_pixels(png: bytes) -> dict:
    """How many pixels of a screenshot carry each class's hue (a colour over grey keeps its hue), in each quarter
    of its width (a wide NiiVue canvas: axial, coronal, sagittal, 3-D rendering side by side)."""
    from matplotlib.colors import rgb_to_hsv, to_rgb
    from matplotlib.image import imread

    hsv = rgb_to_hsv(imread(io.BytesIO(png), format="png")[..., :3])
    counts = {}
    for c, colour in CLASS_COLORS.items():
        hue = rgb_to_hsv(np.array(to_rgb(colour)))[0]
        off = np.abs(hsv[..., 0] - hue)
        found = (np.minimum(off, 1 - off) < 0.03) & (hsv[..., 1] > 0.3) & (hsv[..., 2] > 0.2)
        counts[c] = [int(quarter.sum()) for quarter in np.array_split(found, 4, axis=1)]
    return counts


def test_jupyterlab_draws_the_widget_with_the_classes_and_hides_the_prediction_on_request(browser, jupyterlab):
    """JupyterLab in headless Chromium (the session's, tests/conftest.py) runs a notebook that calls view(): the
    widget (not the figure) is drawn, with the colours of the three classes; setting the prediction's opacity to 0
    takes them away."""
    url, folder = jupyterlab
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        "from brats_keras.synthetic import make_case\nfrom brats_keras.labels import labels_to_classes\n"
        "from brats_keras.visualize import view\nc = make_case(7, shape=(64, 64, 48))\n"
        "nv = view(c['flair'], prediction=labels_to_classes(c['seg']))\n"
        "nv.set_crosshair_width(0)  # its red over yellow edema would blend to NCR's orange\nnv"),
        nbformat.v4.new_code_cell("nv.volumes[-1].opacity = 0")])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, folder / "view.ipynb")
    errors = []

    def settle(canvas, done):
        for _ in range(120):
            time.sleep(0.5)
            counts = _class_pixels(canvas.screenshot())
            if done(counts):
                break
        return counts

    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    try:
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("console", lambda m: m.type == "error" and errors.append(m.text))
        page.goto(url)
        page.wait_for_function(  # the status bar's kernel item: "<kernel name> | Idle" once it is connected
            "[...document.querySelectorAll('.jp-StatusBar-TextItem')].some(e => e.textContent.endsWith('| Idle'))",
            timeout=120_000)
        run = page.locator(".jp-NotebookPanel-toolbar [data-command='notebook:run-cell-and-select-next']")
        run.click()  # the first cell
        canvas = page.locator(".jp-OutputArea-output canvas").first
        canvas.wait_for(timeout=180_000)
        shown = settle(canvas, lambda n: min(sum(q) for q in n.values()) > 20)
        canvas.screenshot(path=str(folder / "widget.png"))  # the artefact, beside the server's log
        assert min(sum(q) for q in shown.values()) > 20, shown
        assert min(shown[3][:3]) > 20, shown  # the three planes cross at the tumour: ET in each
        assert not page.locator(".jp-OutputArea-output img").count()  # no static figure
        run.click()  # the second cell, selected now
        hidden = settle(canvas, lambda n: max(sum(q) for q in n.values()) < 5)
        assert max(sum(q) for q in hidden.values()) < 5, hidden
    finally:
        page.close()
    assert not errors, errors
