"""Run charts: training curves, scores compared across runs, label counts, intensity histograms."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..runs import read_log
from ..tasks import get_task
from .common import (
    _MODALITY_TITLES,
    _OTHER_COLORS,
    REGION_COLORS,
    _as_image,
    _check_classes,
    _finish,
    _new_figure,
    _same_shape,
    region_colors,
)

__all__ = ["plot_history", "bar_chart", "intensity_histograms", "label_statistics"]


def _read_history(source) -> dict[str, np.ndarray]:
    if hasattr(source, "history") and isinstance(source.history, dict):  # keras History
        source = source.history
    if isinstance(source, dict):
        columns = {str(k): list(np.ravel(np.asarray(v, dtype=object))) for k, v in source.items()}
    else:  # a CSV log: its rows as training reads them, an empty cell missing from its row
        path = Path(source)
        if not (path.is_file() or (path / "log.csv").is_file()):  # read_log reads a run without a log as empty
            raise FileNotFoundError(f"{source}: no such training log (a CSV file, or a run folder with log.csv)")
        rows = read_log(path)
        names = list(dict.fromkeys(name for row in rows for name in row))
        columns = {name: [row.get(name) for row in rows] for name in names}
    out = {}
    for name, values in columns.items():
        arr = np.full(len(values), np.nan)
        for i, v in enumerate(values):
            try:
                arr[i] = float(v)
            except (TypeError, ValueError):
                pass
        out[name] = arr
    return out


def _is_loss(name):
    return name.lower().endswith("loss")


def _is_dice(name):
    low = name.lower()
    return not _is_loss(name) and ("dice" in low or low.startswith(("case_", "val_case_")))


def plot_history(csv_path_or_dict, save=None, title: str | None = None):
    """Loss and Dice curves of a training run, from a Keras ``CSVLogger`` file or a dict of columns.

    Panel 1 shows every column ending in ``loss`` (``loss``, ``val_loss``, ...) and, when
    an ``lr`` (or ``learning_rate``) column exists, the learning rate on a log-scaled
    twin axis. Panel 2 shows every Dice-like column: names containing ``dice``
    (``dice_WT``, ``val_mean_dice``, ...) and names starting with ``case_`` or
    ``val_case_`` (drawn thin). Training curves are solid, ``val_`` curves dashed in the
    same colour. Missing columns, empty cells and a file with no rows leave a note in the
    panel instead of failing.

    Args:
        csv_path_or_dict: path of the CSV (or of a run folder holding ``log.csv``), a dict
            ``{column: values}``, or a Keras ``History``.
        save: PNG path, written atomically.
        title: e.g. the run name.
    Returns:
        the matplotlib Figure.
    """
    data = _read_history(csv_path_or_dict)
    length = max((len(v) for v in data.values()), default=0)
    x = data.get("epoch")
    if x is None or not np.isfinite(x).any():
        x = np.arange(length, dtype=float)
    loss_cols = [c for c in data if _is_loss(c)]
    dice_cols = [c for c in data if _is_dice(c)]
    lr_col = next((c for c in ("lr", "learning_rate") if c in data and np.isfinite(data[c]).any()), None)

    fig = _new_figure((11.0, 4.2))
    ax_loss, ax_dice = fig.subplots(1, 2)
    colors = {}

    def color_of(name):
        base = name[4:] if name.startswith("val_") else name
        if base not in colors:
            colors[base] = f"C{len(colors) % 10}"
        return colors[base]

    def draw(ax, names, thin=()):
        for name in names:
            y = data[name]
            ok = np.isfinite(y) & np.isfinite(x[: len(y)])
            if not ok.any():
                continue
            kw = dict(lw=0.8, alpha=0.6) if name in thin else dict(lw=1.6)
            ax.plot(x[: len(y)][ok], y[ok], ls="--" if name.startswith("val_") else "-",
                    color=color_of(name), label=name, marker="." if ok.sum() < 3 else None, **kw)
        if not ax.lines:
            ax.text(0.5, 0.5, "no data" if names or not length else "no matching column", ha="center", va="center",
                    transform=ax.transAxes, color="0.4")

    draw(ax_loss, loss_cols)
    ax_loss.set_title("losses")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("loss")
    handles, labels = ax_loss.get_legend_handles_labels()
    if lr_col is not None:
        lr = data[lr_col]
        ok = np.isfinite(lr)
        ax_lr = ax_loss.twinx()
        (line,) = ax_lr.plot(x[: len(lr)][ok], lr[ok], color="0.45", ls=":", lw=1.4, label=lr_col)
        if (lr[ok] > 0).all():
            ax_lr.set_yscale("log")
        ax_lr.set_ylabel("learning rate", color="0.35")
        handles.append(line)
        labels.append(lr_col)
        legend_ax = ax_lr  # the twin is drawn on top: a legend there is not crossed by the lr curve
    else:
        legend_ax = ax_loss
    if handles:
        legend_ax.legend(handles, labels, fontsize=8, loc="upper right", framealpha=0.9)

    cases = {c for c in dice_cols if c.lower().startswith(("case_", "val_case_"))}
    draw(ax_dice, dice_cols, thin=cases)
    ax_dice.set_title("Dice")
    ax_dice.set_xlabel("epoch")
    ax_dice.set_ylabel("Dice")
    finite = np.concatenate([data[c][np.isfinite(data[c])] for c in dice_cols]) if dice_cols else np.array([])
    if finite.size and finite.min() >= 0 and finite.max() <= 1:
        ax_dice.set_ylim(0, 1.02)
    if ax_dice.lines:
        handles, labels = ax_dice.get_legend_handles_labels()
        if len(handles) > 14:  # many per-case curves: name only the summary ones
            from matplotlib.lines import Line2D

            keep = [i for i, lab in enumerate(labels) if lab not in cases]
            handles, labels = [handles[i] for i in keep], [labels[i] for i in keep]
            handles.append(Line2D([], [], color="0.5", lw=0.8, alpha=0.6))
            labels.append(f"{len(cases)} per-case curves")
        if handles:
            ax_dice.legend(handles, labels, fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    from matplotlib.ticker import MaxNLocator

    for ax in (ax_loss, ax_dice):
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole: no 0.25 ticks on short runs
    if title:
        fig.suptitle(title)
    return _finish(fig, save)


def _metric_color(metric, k, colors=REGION_COLORS):
    return colors.get(metric, _OTHER_COLORS[k % len(_OTHER_COLORS)])


def bar_chart(results: dict, metrics=None, title: str | None = None, save=None,
              ylabel: str = "Dice", fmt: str = "{:.3f}", task=None):
    """Grouped bars comparing runs: one group per run, one bar per metric, the value above each bar.

    Args:
        results: ``{run name: {metric: value}}``, e.g. ``{"flair+t1ce+t2": {"WT": 0.90, ...}}``.
            A metric missing from a run is drawn as an empty slot marked "n/a".
        metrics: the metrics to show, in order (default: the task's regions, WT, TC, ET).
        title, ylabel: texts.
        save: PNG path, written atomically.
        fmt: format of the values written above the bars.
        task: whose regions are the default metrics and give the region colours; None: the default task.
    Returns:
        the matplotlib Figure; ``fig.axes[0].containers`` holds one bar container per metric,
        labelled with the metric's name, its bars in the order of ``results``.
    """
    if not isinstance(results, dict) or not results:
        raise ValueError("results must be a non-empty dict {run name: {metric: value}}")
    task = get_task(task)
    colors = region_colors(task)
    metrics = task.region_names if metrics is None else metrics
    metrics = (metrics,) if isinstance(metrics, str) else tuple(metrics)
    if not metrics:
        raise ValueError("no metric to show")
    runs = list(results)
    values = np.full((len(runs), len(metrics)), np.nan)
    for r, run in enumerate(runs):
        if not isinstance(results[run], dict):
            raise ValueError(f"results[{run!r}] must be a dict {{metric: value}}, got {type(results[run]).__name__}")
        for m, metric in enumerate(metrics):
            v = results[run].get(metric)
            values[r, m] = np.nan if v is None else float(v)

    nbars = len(runs) * len(metrics)
    fig = _new_figure((max(5.0, 0.42 * nbars + 1.8), 4.2))
    ax = fig.subplots()
    width = 0.8 / len(metrics)
    x = np.arange(len(runs))
    vertical = nbars > 12
    for m, metric in enumerate(metrics):
        pos = x - 0.4 + width * (m + 0.5)
        bars = ax.bar(pos, values[:, m], width, label=metric, color=_metric_color(metric, m, colors), edgecolor="0.25",
                      linewidth=0.6)
        for rect, v in zip(bars, values[:, m]):
            ax.annotate("n/a" if not np.isfinite(v) else fmt.format(v),
                        (rect.get_x() + rect.get_width() / 2, v if np.isfinite(v) else 0),
                        xytext=(0, 2), textcoords="offset points", ha="center", va="bottom",
                        fontsize=7, rotation=90 if vertical else 0)
    long_names = max(len(str(r)) for r in runs) > 8
    ax.set_xticks(x, [str(r) for r in runs], rotation=30 if long_names else 0, ha="right" if long_names else "center")
    ax.set_xlim(-0.5, len(runs) - 0.5)
    ax.set_ylabel(ylabel)
    finite = values[np.isfinite(values)]
    top = finite.max() if finite.size else 1.0
    bottom = min(0.0, finite.min()) if finite.size else 0.0
    ax.set_ylim(bottom, top * (1.22 if vertical else 1.12) if top > 0 else 1.0)
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    fig.legend(fontsize=8, loc="outside right upper", frameon=False)
    if title:
        ax.set_title(title)
    return _finish(fig, save)


def intensity_histograms(image, modalities, mask=None, save=None, bins: int = 100, title: str | None = None,
                         task=None):
    """Histogram of the brain (nonzero) voxels of each modality, and of each tumour class.

    Histograms are densities, so the small tumour classes compare with the whole brain;
    the range spans the 0.5-99.5 % percentiles of each modality's brain voxels and of
    each tumour class.

    Args:
        image: ``(D, H, W, C)`` with the channels named by ``modalities`` (or one volume ``(D, H, W)``).
        modalities: names of the channels.
        mask: class map ``(D, H, W)`` 0..3: adds one outline histogram per class present.
        save: PNG path, written atomically.
        bins: number of bins.
        title: e.g. the case id.
        task: whose classes ``mask`` holds (colours and names); None: the default task.
    Returns:
        the matplotlib Figure, one panel per modality.
    """
    task = get_task(task)
    tumour = range(1, task.n_classes)
    image, names = _as_image(image, modalities)
    if mask is not None:
        mask = _check_classes(mask, "mask", task=task)
        _same_shape(image, mask, "image", "mask")
    fig = _new_figure((3.4 * len(names) + 0.4, 3.4))
    axes = np.atleast_1d(fig.subplots(1, len(names)))
    for c, (ax, name) in enumerate(zip(axes, names)):
        ch = image[..., c]
        brain = (ch != 0) & np.isfinite(ch)
        v = ch[brain].astype(np.float64)
        if v.size == 0:
            ax.text(0.5, 0.5, "no nonzero voxels", ha="center", va="center", transform=ax.transAxes, color="0.4")
        else:
            lo, hi = np.percentile(v, [0.5, 99.5])
            if mask is not None:  # tumour voxels are often brighter than 99.5 % of the brain
                for k in tumour:
                    sel = mask == k
                    if sel.any():
                        klo, khi = np.percentile(ch[sel].astype(np.float64), [0.5, 99.5])
                        lo, hi = min(lo, klo), max(hi, khi)
            if hi <= lo:
                lo, hi = lo - 0.5, hi + 0.5
            ax.hist(v, bins=bins, range=(lo, hi), density=True, histtype="stepfilled", color="0.7",
                    edgecolor="0.45", label="brain")
            if mask is not None:
                for k in tumour:
                    sel = mask == k
                    if sel.any():
                        ax.hist(ch[sel].astype(np.float64), bins=bins, range=(lo, hi), density=True, histtype="step",
                                lw=1.6, color=task.colors[k], label=task.class_long_names[k],
                                path_effects=_edge_effect())
        ax.set_title(_MODALITY_TITLES.get(name, name))
        ax.set_xlabel("intensity")
        ax.set_yticks([])
    axes[0].set_ylabel("density")
    handles, labels = axes[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside lower center", ncols=len(handles), frameon=False)
    if title:
        fig.suptitle(title)
    return _finish(fig, save)


def _edge_effect():
    from matplotlib import patheffects

    return [patheffects.Stroke(linewidth=2.6, foreground="0.2"), patheffects.Normal()]


def _class_of(key, task):
    """The class index of ``key`` (its index, name or long name in ``task``)."""
    keys = {}
    for c in range(1, task.n_classes):
        for k in (c, str(c), task.class_names[c].lower(), task.class_long_names[c].lower()):
            keys[k] = c
    if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
        key = int(key)
    elif isinstance(key, str):
        key = key.strip().lower()
    if key in (0, "0", "background"):
        return 0
    if key not in keys:
        raise ValueError(
            f"unknown class {key!r}: use {'/'.join(map(str, range(1, task.n_classes)))}, "
            f"{'/'.join(task.class_names[1:])} or {'/'.join(task.class_long_names[1:])} (classes, not BraTS labels)"
        )
    return keys[key]


def label_statistics(counts: dict, save=None, title: str | None = None, log: bool = False, task=None):
    """Stacked bars of the voxel counts of each tumour class (default task: NCR, ED and ET) of each case.

    Args:
        counts: ``{case_id: {class: voxel count}}``; a class is 1/2/3, ``"NCR"``/``"ED"``/``"ET"``
            or the long names (the task's); background entries are ignored, missing classes count 0.
        save: PNG path, written atomically.
        title: a title.
        log: log-scaled counts (for cohorts whose tumours differ by orders of magnitude).
        task: whose classes are counted (colours and names); None: the default task.
    Returns:
        the matplotlib Figure; ``fig.axes[0].containers`` holds the bars of each class (NCR, ED and ET).
    """
    if not isinstance(counts, dict) or not counts:
        raise ValueError("counts must be a non-empty dict {case_id: {class: voxel count}}")
    task = get_task(task)
    cases = list(counts)
    table = np.zeros((len(cases), task.n_classes))
    for i, case in enumerate(cases):
        if not isinstance(counts[case], dict):
            raise ValueError(f"counts[{case!r}] must be a dict {{class: voxel count}}")
        for key, value in counts[case].items():
            table[i, _class_of(key, task)] += float(value)
    fig = _new_figure((min(max(5.0, 0.32 * len(cases) + 2.0), 30.0), 4.4))
    ax = fig.subplots()
    bottom = np.zeros(len(cases))
    for c in range(1, task.n_classes):
        ax.bar(np.arange(len(cases)), table[:, c], 0.75, bottom=bottom, color=task.colors[c], edgecolor="0.25",
               linewidth=0.5, label=f"{task.class_long_names[c]} ({task.class_names[c]})")
        bottom += table[:, c]
    upright = len(cases) > 6 or max(len(str(c)) for c in cases) > 12
    ax.set_xticks(np.arange(len(cases)), [str(c) for c in cases], rotation=90 if upright else 0,
                  fontsize=7 if len(cases) > 20 else 8)
    ax.set_xlim(-0.6, len(cases) - 0.4)
    ax.set_ylabel("voxels")
    if log:
        ax.set_yscale("log")
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    handles, labels = ax.get_legend_handles_labels()
    # listed top to bottom as the bars are stacked
    fig.legend(handles[::-1], labels[::-1], fontsize=8, loc="outside right upper", frameon=False)
    if title:
        ax.set_title(title)
    return _finish(fig, save)
