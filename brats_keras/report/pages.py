"""The HTML of the report: a case page (NiiVue inlined, the volumes in base64, the scores beside them) and the
index page of a folder of case pages (a sortable table, worst case first).

Every page is one self-contained file: nothing is fetched, so it opens from ``file://`` with no network.
"""
from __future__ import annotations

import html
import json
import math
from functools import lru_cache
from pathlib import Path

from ..tasks import DEFAULT_TASK, get_task
from ..visualize.common import DISAGREEMENT_COLORS, class_colors

STATIC = Path(__file__).resolve().parent / "static"
#: the NiiVue release inlined in every case page (scripts/vendor_niivue.sh fetches and checks it)
NIIVUE_VERSION = "0.69.0"
NIIVUE_FILE = f"niivue-{NIIVUE_VERSION}.umd.js"
#: overlay opacity a page opens with
DEFAULT_OPACITY = 0.6
_DISAGREEMENT_NAMES = {1: "false positive (predicted, not true)", 2: "false negative (true, missed)",
                       3: "other class (both tumour)"}
_MODALITY_TITLES = {"flair": "FLAIR", "t1": "T1", "t1ce": "T1ce", "t2": "T2"}
_SCORE_COLUMNS = (("dice", "Dice", 4), ("hd95", "HD95 (mm)", 2), ("sensitivity", "sens.", 4),
                  ("specificity", "spec.", 4))


@lru_cache(maxsize=None)
def static_text(name: str) -> str:
    """A file of the report's ``static/`` folder (the NiiVue bundle, the page scripts and style)."""
    return (STATIC / name).read_text(encoding="utf-8")


def _script_json(obj) -> str:
    """JSON that can sit inside a <script> element (no ``</`` to end it early)."""
    return json.dumps(obj, separators=(",", ":")).replace("</", "<\\/")


def _e(text) -> str:
    return html.escape(str(text), quote=True)


def _number(value, digits: int) -> str:
    return "&ndash;" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def _page(title: str, body: str, scripts: list[str]) -> str:
    inline = "".join(f"<script>{s}</script>\n" for s in scripts)
    return (f"<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>{_e(title)}</title>\n"
            f"<style>{static_text('report.css')}</style>\n</head>\n<body>\n{body}\n{inline}</body>\n</html>\n")


# ----------------------------------------------------------------------------- case page
def _scores_table(scores: dict | None, volumes: dict, regions) -> str:
    head = "<tr><th>region</th>" + "".join(f"<th>{t}</th>" for _, t, _ in _SCORE_COLUMNS if scores)
    head += "".join(f"<th>{name} (ml)</th>" for name in volumes) + "</tr>"
    rows = []
    for r in regions:
        cells = "".join(f"<td data-score=\"{r}.{k}\">{_number(scores[r][k], d)}</td>" for k, _, d in _SCORE_COLUMNS
                        if scores)
        cells += "".join(f"<td data-volume=\"{name}.{r}\">{_number(v[r], 1)}</td>" for name, v in volumes.items())
        rows.append(f"<tr><th>{r}</th>{cells}</tr>")
    return f"<table class=\"scores\">{head}{''.join(rows)}</table>"


def case_page(data: dict, task=None) -> str:
    """The HTML of one case page, its overlays, class toggles, legend and scores in the terms of ``task`` (its
    classes' names and colours, its scored regions; None: the default task).

    Args:
        data: ``{"case_id", "modalities": [names], "volumes": page copies (:func:`~brats_keras.report.volumes.
            page_volumes`), "box", "focus": [i, j, k] voxel the crosshair starts on, "scores": per region or
            None, "region_volumes": {"prediction": {region: ml}, "truth": ...}, "levels": grey levels of the
            images, "notes": [lines], "source": {"prediction": str, "truth": str}, "index": whether an
            ``index.html`` sits beside the page}``.
    """
    task = get_task(task)
    tumour = range(1, task.n_classes)
    data = {**data, **({"task": task.name} if task.name != DEFAULT_TASK else {}),
            "classes": {str(c): class_colors(task)[c] for c in tumour},
            "class_names": {str(c): f"{task.class_names[c]} ({task.class_long_names[c].lower()})" for c in tumour},
            "disagreement_colors": {str(k): v for k, v in DISAGREEMENT_COLORS.items()},
            "disagreement_names": {str(k): v for k, v in _DISAGREEMENT_NAMES.items()},
            "opacity": DEFAULT_OPACITY, "niivue": NIIVUE_VERSION}
    vols = data["volumes"]
    modalities = "".join(
        f"<label><input type=\"radio\" name=\"modality\" value=\"{_e(m)}\"{' checked' if i == 0 else ''}> "
        f"{_e(_MODALITY_TITLES.get(m, m))}</label>" for i, m in enumerate(data["modalities"]))
    first = "prediction" if "prediction" in vols else "truth"
    overlays = "".join(
        f"<label><input type=\"checkbox\" data-overlay=\"{k}\"{' checked' if k == first else ''}> {k}</label>"
        for k in ("prediction", "truth", "disagreement") if k in vols)
    swatch = "<span class=\"swatch\" style=\"background:{}\"></span>"
    classes = "".join(
        f"<label><input type=\"checkbox\" data-class=\"{c}\" checked> {swatch.format(color)}"
        f"{_e(data['class_names'][c])}</label>" for c, color in data["classes"].items())
    disagreement = ""
    if "disagreement" in vols:
        disagreement = ("<p class=\"legend\">disagreement: " + ", ".join(
            f"{swatch.format(DISAGREEMENT_COLORS[k])}{_e(name)}" for k, name in _DISAGREEMENT_NAMES.items())
            + "</p>")
    sources = "".join(f"<li>{_e(k)}: {_e(v)}</li>" for k, v in data.get("source", {}).items())
    notes = "".join(f"<li class=\"note\">{_e(n)}</li>" for n in data.get("notes", []))
    up = "<a href=\"index.html\">all cases</a>" if data.get("index") else ""
    body = f"""<header><h1>{_e(data['case_id'])}</h1>{up}</header>
<main>
<div class="viewer"><div class="canvas"><canvas id="viewer"></canvas></div><p id="location"></p></div>
<aside>
<fieldset><legend>modality</legend>{modalities}</fieldset>
<fieldset><legend>overlays</legend>{overlays}</fieldset>
<fieldset><legend>classes</legend>{classes}</fieldset>
<fieldset><legend>overlay opacity</legend><input type="range" id="opacity" min="0" max="1" step="0.05"
 value="{DEFAULT_OPACITY}"></fieldset>
<fieldset><legend>view</legend><select id="view">
<option value="multiplanar" selected>axial, coronal, sagittal, 3D</option><option value="axial">axial</option><option value="coronal">coronal</option><option value="sagittal">sagittal</option>
<option value="render">3D</option></select></fieldset>
{disagreement}
<h2>Scores and volumes</h2>
{_scores_table(data.get('scores'), data.get('region_volumes', {}), task.region_names)}
<p class="small">Scores and volumes are computed on the full-resolution label maps. The volumes drawn here are
copies cropped to the brain (voxels {_e(data['box'])}) with the images quantised to {data['levels']} grey levels.</p>
<ul class="small">{sources}{notes}</ul>
<p class="small">Drawn with NiiVue {NIIVUE_VERSION} (BSD-2-Clause).</p>
</aside>
</main>
<script type="application/json" id="brats-data">{_script_json(data)}</script>"""
    return _page(f"{data['case_id']}: brats-keras report", body, [static_text(NIIVUE_FILE), static_text("case.js")])


# ----------------------------------------------------------------------------- index page
def _mean_dice(scores, regions) -> float | None:
    return None if not scores else sum(scores[r]["dice"] for r in regions) / len(regions)


def index_page(rows: list[dict], title: str = "brats-keras report", task=None) -> str:
    """The HTML of a folder's index: one row per case, worst (lowest mean Dice over ``task``'s scored regions)
    first, failed cases on top; a column per scored region of ``task`` (None: the default task).

    Args:
        rows: ``{"case_id", "page": file name or None, "scores": per region or None, "region_volumes":
            {"prediction": {region: ml}, "truth": ...}, "failed": message or None}`` per case.
    """
    regions = get_task(task).region_names
    scored = any(r.get("scores") for r in rows)
    kinds = [k for k in ("prediction", "truth") if any(k in r.get("region_volumes", {}) for r in rows)]
    columns = [("case", "case", None)]
    if scored:
        columns += [("mean_dice", "mean Dice", 4)]
        columns += [(f"dice.{r}", f"Dice {r}", 4) for r in regions]
        columns += [(f"hd95.{r}", f"HD95 {r} (mm)", 2) for r in regions]
    columns += [(f"{k}.{r}", f"{k} {r} (ml)", 1) for k in kinds for r in regions]

    def values(row) -> dict:
        s, v = row.get("scores"), row.get("region_volumes", {})
        out = {"case": row["case_id"], "mean_dice": _mean_dice(s, regions)}
        for r in regions:
            out[f"dice.{r}"] = s[r]["dice"] if s else None
            out[f"hd95.{r}"] = s[r]["hd95"] if s else None
            for k in kinds:
                out[f"{k}.{r}"] = v.get(k, {}).get(r)
        return out

    def order(row):
        failed, mean = row.get("failed") is not None, _mean_dice(row.get("scores"), regions)
        return (not failed, mean if mean is not None else math.inf, row["case_id"])

    head = "".join(f"<th data-key=\"{k}\"{' data-numeric' if d is not None else ''}>{_e(t)}</th>"
                   for k, t, d in columns)
    body = []
    for row in sorted(rows, key=order):
        vals = values(row)
        name = _e(row["case_id"])
        if row.get("failed") is not None:
            body.append(f"<tr class=\"failed\" data-case=\"{name}\"><td data-value=\"{name}\">{name}</td>"
                        f"<td colspan=\"{len(columns) - 1}\">FAILED: {_e(row['failed'])}</td></tr>")
            continue
        link = f"<a href=\"{_e(row['page'])}\">{name}</a>" if row.get("page") else name
        cells = [f"<td data-value=\"{name}\">{link}</td>"]
        for k, _, d in columns[1:]:
            v = vals[k]
            cells.append(f"<td data-value=\"{'' if v is None else repr(float(v))}\">{_number(v, d)}</td>")
        body.append(f"<tr data-case=\"{name}\">{''.join(cells)}</tr>")
    n_failed = sum(r.get("failed") is not None for r in rows)
    summary = f"{len(rows)} case(s)" + (f", {n_failed} failed" if n_failed else "")
    data = {row["case_id"]: {**values(row), "failed": row.get("failed"), "page": row.get("page")} for row in rows}
    html_body = f"""<header><h1>{_e(title)}</h1></header>
<p>{summary}; {'worst mean Dice first' if scored else 'by case'}; click a column to sort by it.</p>
<table class="index"><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>
<script type="application/json" id="brats-index">{_script_json(data)}</script>"""
    return _page(title, html_body, [static_text("index.js")])
