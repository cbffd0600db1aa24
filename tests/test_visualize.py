"""Tests of brats_keras.visualize on small hand-made volumes: what is drawn, not only that it runs."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from brats_keras import visualize as V
from brats_keras.preprocessing import bounding_box
from brats_keras.visualize.slices import _crop_box, _extent, _plane_box
from brats_keras.labels import CLASS_LONG_NAMES

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
LONG_NAMES = CLASS_LONG_NAMES[1:]  # NECROTIC/CORE, EDEMA, ENHANCING


def nested_slice(n=32):
    """A 2-D class map: ED square, an ET ring inside it, NCR in the middle (like a real tumour)."""
    c = np.zeros((n, n), np.uint8)
    c[4:28, 4:28] = 2
    c[10:22, 10:22] = 3
    c[14:18, 14:18] = 1
    return c


def small_case():
    """Image (32, 32, 16, 3) nonzero inside a box 'brain', and a class map with a nested tumour
    on z = 5..12 whose largest axial cross-section is at z=9."""
    shape = (32, 32, 16)
    rng = np.random.default_rng(0)
    image = rng.uniform(100, 200, size=shape + (3,)).astype(np.float32)
    image[:2] = 0
    image[:, :2] = 0
    classes = np.zeros(shape, np.uint8)
    classes[8:24, 8:24, 5:13] = 2
    classes[4:28, 4:28, 9] = 2
    classes[12:20, 12:20, 7:11] = 3
    classes[14:18, 14:18, 8:10] = 1
    return image, classes


def layer_masks(ax):
    """{class: boolean array where the class layer is drawn} from the images of an overlay axes."""
    out = {}
    for im in ax.get_images():
        gid = im.get_gid() or ""
        if gid.startswith("class-"):
            arr = im.get_array()
            out[int(gid[6:])] = ~np.ma.getmaskarray(arr)
    return out


def figure_texts(fig):
    texts = [t.get_text() for legend in fig.legends for t in legend.get_texts()]
    for ax in fig.axes:
        if ax.get_legend() is not None:
            texts += [t.get_text() for t in ax.get_legend().get_texts()]
    return texts


def image_axes(fig):
    return [ax for ax in fig.axes if any(im.get_gid() == "image" for im in ax.get_images())]


# --------------------------------------------------------------------------- best_slice and orientation


@pytest.mark.parametrize(
    "cells, axis, expected",
    [
        # (x, y, z) voxels set to a tumour class; the answer counts tumour voxels per slice
        ([(1, 1, 3), (2, 2, 3), (0, 0, 5)], 2, 3),
        ([(1, 1, 3), (2, 2, 3), (0, 0, 5)], 0, 0),  # x=0: 1 voxel, x=1: 1, x=2: 1 -> tie: lowest
        ([(4, 0, 0), (4, 1, 0), (4, 2, 1), (1, 1, 1)], 0, 4),
        ([(0, 3, 0), (1, 3, 1), (2, 2, 2)], 1, 3),
        ([(0, 0, 1), (0, 0, 6), (1, 1, 6)], -1, 6),  # negative axis = last
    ],
)
def test_best_slice_known_answers(cells, axis, expected):
    classes = np.zeros((5, 4, 7), np.uint8)
    for k, cell in enumerate(cells):
        classes[cell] = 1 + k % 3  # every class counts as tumour
    assert V.best_slice(classes, axis) == expected


@pytest.mark.parametrize("axis, expected", [(0, 2), (1, 2), (2, 3)])
def test_best_slice_without_tumour_is_the_middle(axis, expected):
    assert V.best_slice(np.zeros((5, 4, 7), np.uint8), axis) == expected


@pytest.mark.parametrize("bad_axis", [3, -4, 1.0, "2"])
def test_best_slice_rejects_bad_axis(bad_axis):
    with pytest.raises(ValueError, match="axis must be 0, 1 or 2"):
        V.best_slice(np.zeros((4, 4, 4)), bad_axis)


def test_best_slice_rejects_2d():
    with pytest.raises(ValueError, match=r"3-D array \(D, H, W\).*\(4, 4\)"):
        V.best_slice(np.zeros((4, 4)))


@pytest.mark.parametrize(
    "axis, voxel, shape",
    [
        # BraTS voxel order: x right->left, y anterior->posterior, z inferior->superior.
        # Axial: anterior (y=0) at the top, patient right (x=0) at the image's left.
        (2, (0, 0, 3), (6, 5)),
        # Coronal: superior (z=last) at the top, patient right (x=0) at the left.
        (1, (0, 2, 6), (7, 5)),
        # Sagittal: superior at the top, anterior (y=0) at the left.
        (0, (2, 0, 6), (7, 6)),
    ],
)
def test_display_slice_puts_anterior_superior_and_patient_right_top_left(axis, voxel, shape):
    vol = np.zeros((5, 6, 7))
    vol[voxel] = 1
    shown = V.display_slice(vol, axis, voxel[axis])
    assert shown.shape == shape
    assert shown[0, 0] == 1 and shown.sum() == 1


def test_display_slice_axial_is_the_transpose_and_keeps_channels():
    image = np.arange(4 * 5 * 3 * 2).reshape(4, 5, 3, 2)
    np.testing.assert_array_equal(V.display_slice(image, 2, 1), image[:, :, 1].transpose(1, 0, 2))
    with pytest.raises(ValueError, match="outside 0..2"):
        V.display_slice(image, 2, 3)


# --------------------------------------------------------------------------- overlay


def test_overlay_layers_match_the_class_map_and_every_class_is_outlined():
    from matplotlib.figure import Figure

    classes = nested_slice()
    ax = Figure().add_subplot()
    V.overlay(ax, np.full(classes.shape, 100.0), classes)
    masks = layer_masks(ax)
    assert sorted(masks) == [1, 2, 3]
    for c, mask in masks.items():
        np.testing.assert_array_equal(mask, classes == c)
    contour_gids = {a.get_gid() for a in ax.get_children() if (a.get_gid() or "").startswith("contour-")}
    assert contour_gids == {"contour-1", "contour-2", "contour-3"}


def _hue_sat(rgb):
    from matplotlib.colors import rgb_to_hsv

    h, s, _ = rgb_to_hsv(np.asarray(rgb, float)[:3] / 255.0)
    return h, s


@pytest.mark.parametrize("c, voxel", [(1, (15, 16)), (2, (6, 15)), (3, (11, 15))])
def test_overlay_pixels_carry_the_class_hue(c, voxel):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import to_rgb
    from matplotlib.figure import Figure

    classes = nested_slice()  # 32 x 32 drawn on 256 x 256 pixels: 8 pixels a voxel
    fig = Figure(figsize=(4, 4), dpi=64)
    ax = fig.add_axes((0, 0, 1, 1))
    V.overlay(ax, np.full(classes.shape, 100.0), classes)
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    pixels = np.asarray(canvas.buffer_rgba())
    assert pixels.shape[:2] == (256, 256)
    r, col = voxel
    hue, sat = _hue_sat(pixels[r * 8 + 4, col * 8 + 4])
    want_hue, _ = _hue_sat(np.array(to_rgb(V.CLASS_COLORS[c])) * 255)
    assert sat > 0.2
    assert min(abs(hue - want_hue), 1 - abs(hue - want_hue)) < 0.03
    # the background stays grey
    _, bg_sat = _hue_sat(pixels[1 * 8 + 4, 1 * 8 + 4])
    assert bg_sat < 0.02


def test_overlay_with_axis_orients_slices_cut_from_a_volume():
    from matplotlib.figure import Figure

    _, classes = small_case()
    ax = Figure().add_subplot()
    V.overlay(ax, np.ones(classes.shape[:2]), classes[:, :, 9], axis=2)
    for c, mask in layer_masks(ax).items():
        np.testing.assert_array_equal(mask, V.display_slice(classes, 2, 9) == c)


def test_overlay_window_is_robust_to_outliers():
    from matplotlib.figure import Figure

    img = np.zeros((20, 20))
    img[2:18, 2:18] = np.linspace(0, 1, 256).reshape(16, 16) * 100 + 50
    img[3, 3] = 1e6  # a hot voxel must not crush the window
    ax = Figure().add_subplot()
    V.overlay(ax, img, None)
    vmin, vmax = ax.get_images()[0].get_clim()
    assert 50 <= vmin < 52 and 148 < vmax <= 150


def test_overlay_errors_name_the_problem():
    from matplotlib.figure import Figure

    ax = Figure().add_subplot()
    with pytest.raises(ValueError, match=r"differ in shape"):
        V.overlay(ax, np.zeros((8, 8)), np.zeros((8, 9), np.uint8))
    labels = np.zeros((8, 8), np.uint8)
    labels[1, 1] = 4
    with pytest.raises(ValueError, match=r"\[4\].*labels_to_classes"):
        V.overlay(ax, np.zeros((8, 8)), labels)
    with pytest.raises(ValueError, match="alpha"):
        V.overlay(ax, np.zeros((8, 8)), None, alpha=1.5)


def test_class_legend_names_the_three_classes():
    from matplotlib.figure import Figure

    fig = Figure()
    legend = V.class_legend(fig)
    texts = [t.get_text() for t in legend.get_texts()]
    for name in LONG_NAMES:
        assert any(name in t for t in texts)
    colours = [tuple(p.get_facecolor()[:3]) for p in legend.legend_handles]
    from matplotlib.colors import to_rgb

    assert colours == [to_rgb(V.CLASS_COLORS[c]) for c in (1, 2, 3)]


def test_class_legend_and_overlay_of_the_post_treatment_task_use_its_names_and_colours():
    from matplotlib.colors import to_rgb
    from matplotlib.figure import Figure

    from brats_keras.tasks import get_task

    task = get_task("glioma2024-post")
    legend = V.class_legend(Figure(), task=task)
    assert [t.get_text() for t in legend.get_texts()] == [
        "NON-ENHANCING CORE (NETC)", "FLAIR HYPERINTENSITY (SNFH)", "ENHANCING (ET)", "RESECTION CAVITY (RC)"]
    # the cited colours: NETC as NCR, SNFH as edema, ET sky blue, RC reddish purple (Okabe-Ito)
    assert [tuple(p.get_facecolor()[:3]) for p in legend.legend_handles] == [
        to_rgb(c) for c in ("#D55E00", "#F0E442", "#56B4E9", "#CC79A7")]
    ax = Figure().subplots()
    classes = np.zeros((6, 6), np.uint8)
    classes[1:3, 1:3], classes[3:5, 3:5] = 4, 3  # a resection cavity beside enhancing tissue
    V.overlay(ax, np.ones((6, 6)), classes, task=task)
    layers = {im.get_gid(): im for im in ax.images}
    assert set(layers) == {"image", "class-3", "class-4"}
    assert to_rgb(layers["class-4"].get_cmap()(1.0)) == to_rgb("#CC79A7")
    with pytest.raises(ValueError, match="outside the classes 0..3"):
        V.overlay(ax, np.ones((6, 6)), classes)  # class 4 is not one of the default task's


# --------------------------------------------------------------------------- case pictures


def test_show_case_draws_each_modality_and_a_label_panel():
    image, classes = small_case()
    fig = V.show_case(image, classes, ("flair", "t1ce", "t2"), title="case_x")
    axes = image_axes(fig)
    assert [ax.get_title() for ax in axes] == ["FLAIR", "T1ce", "T2", "labels on FLAIR"]
    assert "case_x" in fig._suptitle.get_text() and "z=9" in fig._suptitle.get_text()
    assert all(not layer_masks(ax) for ax in axes[:3])
    crop_rows, crop_cols = _plane_box((image != 0).any(-1), 2, True)
    for c, mask in layer_masks(axes[-1]).items():
        np.testing.assert_array_equal(mask, (V.display_slice(classes, 2, 9) == c)[crop_rows, crop_cols])
    for name in LONG_NAMES:
        assert any(name in t for t in figure_texts(fig))


def test_show_case_checks_modalities_against_channels():
    image, classes = small_case()
    with pytest.raises(ValueError, match="3 channels but 2 modalities"):
        V.show_case(image, classes, ("flair", "t2"))
    with pytest.raises(ValueError, match="unknown modality"):
        V.show_case(image, classes, ("flair", "t2", "pd"))
    with pytest.raises(ValueError, match="same voxels"):
        V.show_case(image, classes[:-1], ("flair", "t1ce", "t2"))


def test_show_planes_cuts_through_the_tumour_centre_of_mass():
    image, classes = small_case()
    com = tuple(int(round(v)) for v in np.argwhere(classes > 0).mean(0))
    fig = V.show_planes(image[..., 0], classes)
    titles = [ax.get_title() for ax in image_axes(fig)]
    assert titles == [f"axial slice z={com[2]}", f"coronal slice y={com[1]}", f"sagittal slice x={com[0]}"]
    fig = V.show_planes(image[..., 0], classes, index=(3, 4, 5), crop=False)
    ax_axial, ax_cor, ax_sag = image_axes(fig)
    for c, mask in layer_masks(ax_cor).items():
        np.testing.assert_array_equal(mask, V.display_slice(classes, 1, 4) == c)
    with pytest.raises(ValueError, match="inside"):
        V.show_planes(image[..., 0], classes, index=(3, 4, 99))


def test_compare_puts_truth_and_prediction_side_by_side():
    image, truth = small_case()
    pred = np.zeros_like(truth)
    pred[10:20, 10:20, 4:6] = 3  # a prediction whose best slice (z=4) differs from the truth's (z=9)
    fig = V.compare(image[..., 0], truth, pred, title="case_x", crop=False)
    axes = image_axes(fig)
    assert [ax.get_title() for ax in axes] == ["ground truth", "prediction"]
    assert "z=9" in fig._suptitle.get_text()  # the truth's best slice
    for ax, cls in zip(axes, (truth, pred)):
        masks = layer_masks(ax)
        for c in (1, 2, 3):
            got = masks.get(c, np.zeros(V.display_slice(cls, 2, 9).shape, bool))
            np.testing.assert_array_equal(got, V.display_slice(cls, 2, 9) == c)
    for name in LONG_NAMES:
        assert any(name in t for t in figure_texts(fig))
    # empty truth: the prediction's best slice is shown
    fig = V.compare(image[..., 0], np.zeros_like(truth), pred)
    assert "z=4" in fig._suptitle.get_text()


def test_montage_spreads_slices_over_the_tumour_extent():
    image, classes = small_case()  # tumour on z = 5..12
    fig = V.montage(image[..., 0], classes, n=4)
    titles = [ax.get_title() for ax in image_axes(fig)]
    assert titles == ["z=5", "z=7", "z=10", "z=12"]
    fig = V.montage(image[..., 0], classes, n=50)  # never more panels than slices with tumour
    assert len(image_axes(fig)) == 8
    pred = classes.copy()
    pred[pred == 1] = 3
    fig = V.montage(image[..., 0], classes, n=3, pred=pred, ncols=3)
    axes = image_axes(fig)
    assert len(axes) == 6
    assert axes[0].get_ylabel() == "ground truth" and axes[3].get_ylabel() == "prediction"
    assert 1 in layer_masks(axes[1]) and 1 not in layer_masks(axes[4])  # same slice z=8, truth vs pred
    with pytest.raises(ValueError, match="n must be at least 1"):
        V.montage(image[..., 0], classes, n=0)


# --------------------------------------------------------------------------- saving


def _small_figures(tmp_path):
    image, classes = small_case()
    csv_path = tmp_path / "log.csv"
    csv_path.write_text("epoch,loss\n0,1.0\n1,0.5\n")
    return {
        "show_case": lambda save: V.show_case(image, classes, save=save),
        "show_planes": lambda save: V.show_planes(image[..., 0], classes, save=save),
        "compare": lambda save: V.compare(image[..., 0], classes, classes, save=save),
        "montage": lambda save: V.montage(image[..., 0], classes, n=3, save=save),
        "plot_history": lambda save: V.plot_history(csv_path, save=save),
        "bar_chart": lambda save: V.bar_chart({"a": {"WT": 0.5}}, save=save),
        "intensity_histograms": lambda save: V.intensity_histograms(image, ("flair", "t1ce", "t2"), classes,
                                                                    save=save),
        "label_statistics": lambda save: V.label_statistics({"a": {"NCR": 1, "ED": 2, "ET": 3}}, save=save),
    }


@pytest.mark.parametrize(
    "name", ["show_case", "show_planes", "compare", "montage", "plot_history", "bar_chart",
             "intensity_histograms", "label_statistics"]
)
def test_save_writes_a_png_and_leaves_no_temporary_file(tmp_path, name):
    out = tmp_path / "pics" / f"{name}.png"  # the folder is created
    fig = _small_figures(tmp_path)[name](out)
    assert fig is not None and hasattr(fig, "savefig")
    assert out.read_bytes()[:8] == PNG_MAGIC
    assert sorted(os.listdir(out.parent)) == [out.name]


def test_failed_save_removes_its_temporary_file(tmp_path):
    target = tmp_path / "taken"
    target.mkdir()  # os.replace onto a folder fails after the PNG was written
    (target / "keep").write_text("x")
    with pytest.raises(OSError):
        V.bar_chart({"a": {"WT": 0.5}}, save=target)
    assert sorted(os.listdir(tmp_path)) == ["taken"]


# --------------------------------------------------------------------------- history and results


def _axes_by_title(fig):
    return {ax.get_title(): ax for ax in fig.axes if ax.get_title()}


def test_plot_history_draws_losses_dice_and_log_lr(tmp_path):
    path = tmp_path / "training.csv"
    path.write_text(
        "epoch,dice_WT,loss,lr,mean_dice,val_dice_WT,val_loss,val_mean_dice,case_A,val_case_B\n"
        "0,0.20,1.00,0.001,0.10,0.15,1.10,0.05,0.3,0.2\n"
        "1,0.50,0.60,0.001,0.40,0.45,0.70,0.35,0.5,0.4\n"
        "2,0.70,0.40,0.0001,0.60,0.62,0.50,0.55,0.6,0.5\n"
    )
    fig = V.plot_history(path, title="run")
    axes = _axes_by_title(fig)
    loss_lines = {ln.get_label(): ln for ln in axes["losses"].get_lines()}
    assert set(loss_lines) == {"loss", "val_loss"}
    np.testing.assert_allclose(loss_lines["val_loss"].get_ydata(), [1.10, 0.70, 0.50])
    np.testing.assert_allclose(loss_lines["loss"].get_xdata(), [0, 1, 2])
    assert loss_lines["val_loss"].get_linestyle() == "--" and loss_lines["loss"].get_linestyle() == "-"
    assert loss_lines["val_loss"].get_color() == loss_lines["loss"].get_color()
    dice = {ln.get_label(): ln for ln in axes["Dice"].get_lines()}
    assert set(dice) == {"dice_WT", "val_dice_WT", "mean_dice", "val_mean_dice", "case_A", "val_case_B"}
    np.testing.assert_allclose(dice["val_mean_dice"].get_ydata(), [0.05, 0.35, 0.55])
    twins = [ax for ax in fig.axes if ax.get_yscale() == "log"]
    assert len(twins) == 1
    np.testing.assert_allclose(twins[0].get_lines()[0].get_ydata(), [1e-3, 1e-3, 1e-4])
    legend_texts = figure_texts(fig)
    assert "lr" in legend_texts and "val_dice_WT" in legend_texts


def test_plot_history_survives_missing_columns_and_empty_cells(tmp_path):
    path = tmp_path / "short.csv"
    path.write_text("epoch,loss,val_loss\n0,1.0,\n1,0.5,0.7\n")
    fig = V.plot_history(path)
    axes = _axes_by_title(fig)
    assert len(fig.axes) == 2  # no lr column: no twin axis
    lines = {ln.get_label(): ln for ln in axes["losses"].get_lines()}
    np.testing.assert_allclose(lines["val_loss"].get_ydata(), [0.7])
    assert not axes["Dice"].get_lines()
    assert "no matching column" in [t.get_text() for t in axes["Dice"].texts]
    header_only = tmp_path / "empty.csv"
    header_only.write_text("epoch,loss,val_loss\n")
    fig = V.plot_history(header_only)
    assert [t.get_text() for t in _axes_by_title(fig)["losses"].texts] == ["no data"]
    blank = tmp_path / "blank.csv"
    blank.write_text("")
    V.plot_history(blank)


def test_plot_history_of_a_missing_log_is_an_error_naming_it(tmp_path):
    """A mistyped path fails in one line naming it, not with an empty chart; a run folder reads its log.csv."""
    missing = tmp_path / "no_such_log.csv"
    with pytest.raises(FileNotFoundError) as err:
        V.plot_history(missing)
    assert str(err.value) == f"{missing}: no such training log (a CSV file, or a run folder with log.csv)"
    with pytest.raises(FileNotFoundError):
        V.plot_history(tmp_path)  # a folder without log.csv
    (tmp_path / "log.csv").write_text("epoch,loss\n0,1.0\n1,0.5\n")
    lines = _axes_by_title(V.plot_history(tmp_path))["losses"].get_lines()
    np.testing.assert_allclose([ln for ln in lines if ln.get_label() == "loss"][0].get_ydata(), [1.0, 0.5])


def test_plot_history_epoch_ticks_are_whole_numbers():
    # a 3-epoch run must not get ticks at epoch 0.25, 0.5, ...
    fig = V.plot_history({"epoch": [0, 1, 2], "loss": [1.7, 1.6, 1.5], "dice_WT": [0.3, 0.4, 0.5]})
    fig.canvas.draw()
    for title in ("losses", "Dice"):
        ax = _axes_by_title(fig)[title]
        lo, hi = ax.get_xlim()
        ticks = [t for t in ax.get_xticks() if lo <= t <= hi]
        assert ticks and all(float(t).is_integer() for t in ticks), (title, ticks)


def test_plot_history_takes_a_dict_or_a_keras_history():
    class History:  # what keras.callbacks.History exposes
        history = {"loss": [3.0, 2.0, 1.0], "val_dice_ET": [0.1, 0.2, 0.3], "learning_rate": [1e-3, 1e-3, 5e-4]}

    for source in (History.history, History()):
        fig = V.plot_history(source)
        axes = _axes_by_title(fig)
        (loss,) = axes["losses"].get_lines()
        np.testing.assert_allclose(loss.get_xdata(), [0, 1, 2])  # no epoch column: 0, 1, 2
        assert [ln.get_label() for ln in axes["Dice"].get_lines()] == ["val_dice_ET"]
        assert any(ax.get_yscale() == "log" for ax in fig.axes)


def test_bar_chart_heights_equal_the_values():
    results = {
        "flair+t1ce+t2": {"WT": 0.91, "TC": 0.84, "ET": 0.78},
        "flair": {"WT": 0.88, "TC": 0.61, "ET": 0.42},
        "dice+focal": {"WT": 0.90, "TC": 0.85},  # ET missing
    }
    fig = V.bar_chart(results, title="modalities")
    ax = fig.axes[0]
    assert [cont.get_label() for cont in ax.containers] == ["WT", "TC", "ET"]
    for cont, metric in zip(ax.containers, ("WT", "TC", "ET")):
        want = [results[run].get(metric, np.nan) for run in results]
        np.testing.assert_allclose([bar.get_height() for bar in cont], want)
    assert [t.get_text() for t in ax.get_xticklabels()] == list(results)
    written = [t.get_text() for t in ax.texts]
    for text in ("0.910", "0.840", "0.780", "0.420", "n/a"):
        assert text in written
    # bars of a group sit side by side around the run's tick
    centres = [[bar.get_x() + bar.get_width() / 2 for bar in cont] for cont in ax.containers]
    assert centres[0][1] < centres[1][1] < centres[2][1] and abs(centres[1][1] - 1) < 1e-9


def test_bar_chart_errors():
    with pytest.raises(ValueError, match="non-empty dict"):
        V.bar_chart({})
    with pytest.raises(ValueError, match=r"results\['a'\] must be a dict"):
        V.bar_chart({"a": 0.5})


def test_label_statistics_stacks_the_counts():
    counts = {"case_a": {"NCR": 10, "ED": 30, "ET": 5}, "case_b": {1: 1, 2: 2, 3: 3, 0: 999},
              "case_c": {"EDEMA": 7}}
    fig = V.label_statistics(counts, title="cohort")
    ax = fig.axes[0]
    ncr, ed, et = ax.containers
    np.testing.assert_allclose([b.get_height() for b in ncr], [10, 1, 0])
    np.testing.assert_allclose([b.get_height() for b in ed], [30, 2, 7])
    np.testing.assert_allclose([b.get_height() for b in et], [5, 3, 0])
    np.testing.assert_allclose([b.get_y() for b in et], [40, 3, 7])  # stacked on NCR + ED
    assert [t.get_text() for t in ax.get_xticklabels()] == list(counts)
    for name in LONG_NAMES:
        assert any(name in t for t in figure_texts(fig))
    with pytest.raises(ValueError, match="unknown class 4"):
        V.label_statistics({"a": {4: 10}})


def test_intensity_histograms_one_panel_per_modality_with_class_curves():
    image, classes = small_case()
    fig = V.intensity_histograms(image, ("flair", "t1ce", "t2"), classes)
    titled = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in titled] == ["FLAIR", "T1ce", "T2"]
    present = [c for c in (1, 2, 3) if (classes == c).any()]
    labels = [p.get_label() for p in titled[0].patches]
    assert labels == ["brain"] + [CLASS_LONG_NAMES[c] for c in present]
    fig = V.intensity_histograms(image[..., 0], "flair")
    assert [p.get_label() for p in fig.axes[0].patches] == ["brain"]
    with pytest.raises(ValueError, match="3 channels but 1 modalities"):
        V.intensity_histograms(image, ("flair",))


def test_public_names_stay_importable_from_brats_keras_visualize():
    from brats_keras.visualize import charts, slices

    assert set(slices.__all__) | set(charts.__all__) < set(V.__all__)
    for name in V.__all__:
        assert getattr(V, name) is not None, name


@pytest.mark.parametrize("margin", [0, 1, 4])
def test_picture_boxes_are_the_shared_bounding_box(margin):
    mask = np.zeros((9, 12, 7), bool)
    mask[2:5, 3, 6] = True
    mask[7, 10, 1] = True
    assert bounding_box(mask) == ((2, 8), (3, 11), (1, 7))
    assert bounding_box(mask, margin) == tuple((max(0, a - margin), min(n, b + margin))
                                                for (a, b), n in zip(((2, 8), (3, 11), (1, 7)), mask.shape))
    assert bounding_box(np.zeros((3, 4), bool)) is None
    assert [_extent(mask, axis) for axis in range(3)] == [(2, 7), (3, 10), (1, 6)]
    assert _extent(np.zeros((3, 3, 3), bool), 0) is None
    plane = mask.any(axis=2)
    rows, cols = _crop_box(plane, margin)
    assert (rows.start, rows.stop, cols.start, cols.stop) == (max(0, 2 - margin), min(9, 8 + margin),
                                                               max(0, 3 - margin), min(12, 11 + margin))
    assert _crop_box(np.zeros((4, 4), bool)) == (slice(None), slice(None))


def test_import_pulls_no_deep_learning_framework_no_pyplot_and_no_widget():
    code = ("import sys; import brats_keras.visualize; print(sorted(m for m in ('keras', 'tensorflow', "
            "'matplotlib.pyplot', 'ipyniivue', 'anywidget', 'ipywidgets', 'IPython') if m in sys.modules))")
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
