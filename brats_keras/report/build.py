"""Writing the report: one case page (``brats-keras view``), or a folder of case pages with its ``index.html``
(``predict --report``, ``evaluate --report``), where a case that fails is listed as failed and the others go on.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import io as bio
from ..labels import MODALITIES
from ..tasks import get_task
from .pages import case_page, index_page
from .volumes import CaseView, page_volumes, read_case_view

#: a case page stays below this many bytes: its images are quantised to fewer grey levels until it does
PAGE_LIMIT = 10_000_000
#: grey levels tried for the images, best first
LEVELS = (256, 128, 64)
INDEX = "index.html"


def focus_voxel(view: CaseView) -> list[int]:
    """The voxel a page's crosshair starts on: on the axial slice with the most tumour (truth, else prediction),
    the tumour's centre there; the centre of the volume when neither map holds tumour."""
    classes = view.truth if view.truth is not None and view.truth.any() else view.prediction
    if classes is None or not classes.any():
        return [s // 2 for s in next(iter(view.modalities.values())).shape]
    tumour = classes > 0
    k = int(np.argmax(tumour.sum(axis=(0, 1))))
    i, j = np.nonzero(tumour[:, :, k])
    return [int(round(i.mean())), int(round(j.mean())), k]


def case_html(view: CaseView, source: dict | None = None, index: bool = False) -> str:
    """The page of a case read by :func:`~brats_keras.report.volumes.read_case_view`, its images in the most
    grey levels of ``LEVELS`` that keep it under ``PAGE_LIMIT`` bytes (the fewest when none does).

    Args:
        source: what each overlay was read from, ``{"prediction": path, "truth": path}`` (shown on the page).
        index: the page sits in a report folder beside its ``index.html`` (the page links to it).
    """
    for levels in LEVELS:
        volumes = page_volumes(view, levels)
        text = case_page({"case_id": view.case_id, "modalities": list(view.modalities), "volumes": volumes,
                          "box": volumes["box"], "focus": focus_voxel(view), "affine": view.affine.tolist(),
                          "to_voxel": np.linalg.inv(view.affine).tolist(), "scores": view.scores,
                          "region_volumes": view.region_volumes(), "levels": levels, "notes": view.notes,
                          "source": {k: str(v) for k, v in (source or {}).items()}, "index": index}, view.task)
        if len(text.encode("utf-8")) < PAGE_LIMIT:
            break
    return text


def write_case_page(case: bio.Case, out, prediction=None, truth=None, scores=None, modalities=MODALITIES,
                    index: bool = False, task=None) -> dict:
    """Write the page of one case to ``out`` (atomically) and return its row for an index.

    Args:
        case: a :class:`brats_keras.io.Case`.
        out: the ``.html`` file to write.
        prediction, truth, scores, modalities, task: as :func:`~brats_keras.report.volumes.read_case_view` takes
            them (``task`` None: detected from the maps).
        index: the page links to ``index.html`` beside it.
    Returns:
        ``{"case_id", "page": file name, "scores", "region_volumes", "failed": None, "bytes": page size, "task":
        the task drawn}``.
    Raises:
        BratsInputError for a missing modality, an unreadable file or a map on another grid (one line).
    """
    out = Path(out)
    view = read_case_view(case, prediction, truth, scores, modalities, task)
    source = {k: v for k, v in (("prediction", prediction), ("truth", truth)) if isinstance(v, (str, Path))}
    text = case_html(view, source, index=index)
    bio.atomic_write_text(out, text)
    return {"case_id": view.case_id, "page": out.name, "scores": view.scores,
            "region_volumes": view.region_volumes(), "failed": None, "bytes": len(text.encode("utf-8")),
            "task": view.task}


def write_report(cases, out_dir, predictions=None, truths=None, scores=None, failed=None, log=print,
                 modalities=MODALITIES, task=None) -> dict:
    """Write ``out_dir/<case>.html`` for every case and ``out_dir/index.html`` listing them all.

    Args:
        cases: :class:`brats_keras.io.Case` objects.
        predictions, truths: ``{case_id: label map path or class map}``; a case missing from one gets no such
            overlay.
        scores: ``{case_id: scores}`` already computed (``evaluate_folder(...)["cases"]``); the others with both
            maps are scored here.
        failed: ``{case_id: message}`` of cases that failed before (listed as failed in the index).
        log: called with ``FAILED <case>: <message>`` for each case whose page cannot be written.
        task: the task of every page and of the index's columns (a :class:`~brats_keras.tasks.Task`, its name or
            file); None: each page's detected from its maps (:func:`~brats_keras.report.volumes.read_case_view`),
            the index's columns the first page's.
    Returns:
        ``{"ok": {case_id: page path}, "failed": {case_id: message}, "index": index path, "rows": [...]}``; the
        index is written even when every case fails.
    Raises:
        BratsInputError before any work when ``out_dir`` cannot be a folder written into.
    """
    out_dir = bio.check_output_path(out_dir, folder=True)
    task = None if task is None else get_task(task)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise bio.BratsInputError(f"{out_dir}: cannot make the report folder ({bio.os_error_reason(exc)})") from None
    predictions, truths, scores = predictions or {}, truths or {}, scores or {}
    rows = [{"case_id": c, "failed": msg} for c, msg in (failed or {}).items()]
    result = {"ok": {}, "failed": dict(failed or {}), "index": out_dir / INDEX, "rows": rows}
    for case in cases:
        cid = case.case_id
        if cid in result["failed"]:
            continue
        try:
            row = write_case_page(case, out_dir / f"{cid}.html", predictions.get(cid), truths.get(cid),
                                  scores.get(cid), modalities, index=True, task=task)
        except (bio.BratsInputError, ValueError, OSError) as exc:
            msg = bio.describe_os_error(exc) if isinstance(exc, OSError) else " ".join(str(exc).split())
            result["failed"][cid] = msg
            rows.append({"case_id": cid, "failed": msg})
            log(f"FAILED {cid}: {msg}")
            continue
        result["ok"][cid] = out_dir / row["page"]
        rows.append(row)
    drawn = [row["task"] for row in rows if row.get("task") is not None]
    bio.atomic_write_text(out_dir / INDEX, index_page(rows, task=task or (drawn[0] if drawn else None)))
    return result


def report_predictions(input_path, pred_dir, out_dir=None, ok=None, failed=None, log=print, task=None) -> dict:
    """The report of a folder of predictions (``brats-keras predict --report``): a page per case under
    ``input_path`` drawing ``pred_dir/<case>.nii.gz``, and the index; ``out_dir`` defaults to ``pred_dir/report``.

    Args:
        ok: the case ids predicted (``predict_folder(...)["ok"]``; None: every case with a prediction file).
        failed: ``{case_id: message}`` of cases whose prediction failed (listed as failed).
        task: the model's task (``predict_folder(...)["task"]``): the pages' classes and regions; each
            prediction's values are read as those of its case's task of that family, as predict wrote them.
    Returns:
        what :func:`write_report` returns.
    """
    pred_dir = Path(pred_dir)
    cases = bio.find_cases(input_path)
    predictions = {c.case_id: pred_dir / f"{c.case_id}.nii.gz" for c in cases}
    cases = [c for c in cases if (c.case_id in ok if ok is not None else predictions[c.case_id].is_file())]
    return write_report(cases, out_dir or pred_dir / "report", predictions=predictions, failed=failed, log=log,
                        task=task)


def report_cases_of(truth_dir) -> list[bio.Case]:
    """The cases of a truth folder that a report can draw (those with images); BratsInputError (one line) when
    it holds none, e.g. a flat folder of label maps: the report needs the images."""
    cases = [c for c in bio.find_cases(truth_dir) if c.seg is not None]
    if not cases:
        raise bio.BratsInputError(f"--report: {truth_dir} holds no BraTS case with images and a label map (the "
                                  "report draws the images: give --truth the folder of cases)")
    return cases


def report_evaluation(results: dict, pred_dir, truth_dir, out_dir=None, log=print) -> dict:
    """The report of an evaluation (``brats-keras evaluate --report``): each scored case's page draws its
    prediction, its truth and their disagreement, with the scores of ``results`` (what
    :func:`~brats_keras.evaluation.evaluate_folder` returned: the page's numbers are evaluate's, in the terms of
    the task it scored, ``results["task"]``, the default task where absent); cases that evaluate could not score,
    or that have no prediction, are listed as failed. ``out_dir`` defaults to ``pred_dir/report``.
    """
    pred_dir = Path(pred_dir)
    failed = {case: " ".join(msg.split(": ", 1)[-1].split()) for case, msg in results.get("errors", {}).items()}
    for case in results.get("missing", []):
        failed[case] = f"no prediction in {pred_dir}"
    cases = [c for c in report_cases_of(truth_dir) if c.case_id in results["cases"] and c.case_id not in failed]
    return write_report(cases, out_dir or pred_dir / "report",
                        predictions={c.case_id: pred_dir / f"{c.case_id}.nii.gz" for c in cases},
                        truths={c.case_id: c.seg for c in cases}, scores=results["cases"], failed=failed, log=log,
                        task=results.get("task"))
