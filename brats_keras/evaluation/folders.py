"""Scoring folders of predictions against the true label maps (``brats-keras evaluate``): finding the pairs,
checking that both lie on one grid, per-case scores, their mean / median / std, the table, JSON and CSV."""
from __future__ import annotations

import csv
import io as _io
import json
from pathlib import Path

import numpy as np

from ..io import (AFFINE_TOLERANCE, BratsInputError, _read_nifti, atomic_write_text, check_output_path,
                  describe_os_error, find_cases, read_label_map)
from ..labels import _small_ints
from ..tasks import DEFAULT_TASK, TASKS, TaskError, detect_task, get_task
from .scores import HD95_EMPTY, LESION_HD95_MISS, lesion_wise_scores, region_scores, report_names, report_scores

# --------------------------------------------------------------------------- folders

_NII = ".nii.gz"


def _case_files(folder: Path) -> dict[str, Path]:
    return {p.name[: -len(_NII)]: p for p in sorted(folder.glob("*" + _NII)) if p.is_file()}


def _find_truth(truth_dir: Path, pred_ids) -> dict[str, Path | None]:
    """Case id -> label map path (None when the case has none) for either truth layout.

    A flat folder of ``<case>.nii.gz`` label maps is recognised by sharing names with
    the predictions. Otherwise the case folders are read: ``<case>/<case>_seg.nii.gz``
    (or ``-seg`` as in 2023), then the cases :func:`brats_keras.io.find_cases` finds.
    """
    flat = _case_files(truth_dir)
    if set(flat) & set(pred_ids):
        return flat
    truth = {}
    for case_dir in sorted(p for p in truth_dir.iterdir() if p.is_dir()):
        case = case_dir.name
        candidates = [case_dir / f"{case}_seg{_NII}", case_dir / f"{case}-seg{_NII}"]
        seg = next((c for c in candidates if c.is_file()), None)
        if seg is not None:
            truth[case] = seg
    for c in find_cases(truth_dir):
        if c.seg is not None or truth.get(c.case_id) is None:
            truth[c.case_id] = Path(c.seg) if c.seg is not None else None
    return truth or flat


def _read_classes(path: Path, task=None) -> tuple[np.ndarray, tuple[float, ...]]:
    """``(classes, spacing)`` of a label map: its class map and its voxel size in mm. For the default task (or
    None), the 2021 or 2023 glioma values (:func:`brats_keras.io.read_label_map`); for another, the values of that
    task or of one with its classes."""
    if task is None or get_task(task).name == DEFAULT_TASK:
        classes, img = read_label_map(path)
    else:
        classes, img = read_task_labels(path, task)
    return classes, tuple(float(z) for z in img.header.get_zooms()[:3])


def _present(arr: np.ndarray) -> np.ndarray:
    """The distinct values of a label map (a count per value for a small-integer map: no sort of ~9 M voxels)."""
    small = _small_ints(arr)
    return np.flatnonzero(np.bincount(small.ravel(), minlength=1)) if small is not None else np.unique(arr)


def _naming(case_id: str, path: Path) -> str:
    """How a label map's case is named (:data:`brats_keras.tasks.NAMINGS`), from its case id and file name."""
    if case_id.upper().startswith("BRATS-") or path.name.endswith(f"-seg{_NII}"):
        return "2023"
    if path.name.endswith(f"_seg{_NII}") or case_id.upper().startswith("BRATS"):
        return "msd" if case_id.startswith("BRATS_") else "2021"
    return "plain"


def _task_classes(path: Path, tasks) -> tuple[np.ndarray, object]:
    """``(classes, image)`` of a label map read with the first of ``tasks`` whose values it holds; BratsInputError
    naming the file and what the first task allows when none fits."""
    arr, img = _read_nifti(path)
    present = _present(arr)
    for task in tasks:
        if task.label_problem(present) is None:
            return task.to_classes(arr), img
    others = f"; nor those of {', '.join(t.name for t in tasks[1:])} (the same classes)" if tasks[1:] else ""
    raise BratsInputError(f"{path}: {tasks[0].label_problem(present)}{others}")


def _case_task(truth_path: Path, case_id: str, given) -> tuple:
    """``(task, classes, image)`` of a true label map: the task given, else the one its values and naming say
    (:func:`brats_keras.tasks.detect_task`); BratsInputError naming the file where they say none or several."""
    arr, img = _read_nifti(truth_path)
    try:
        task = detect_task(_present(arr), case_id, _naming(case_id, truth_path), given=given)
    except TaskError as exc:
        raise BratsInputError(f"{truth_path}: {exc}") from None
    return task, task.to_classes(arr), img


def _family(task) -> list:
    """``task``, then the built-in tasks whose classes are its own with other stored values (a 2021-valued
    prediction of a 2023-named case)."""
    return [task] + [t for t in TASKS.values() if t.name != task.name and task.same_classes(t)]


def read_task_labels(path, task=None) -> tuple[np.ndarray, object]:
    """``(classes, image)``: a label map file read as the classes of ``task`` (a Task or its name; None: the default
    task), or as those of a built-in task with the same classes under other stored values (a 2021-valued
    prediction of a 2023-named case); BratsInputError naming the file and the values ``task`` allows when none
    fits."""
    return _task_classes(Path(path), _family(get_task(task)))


def _origin(affine) -> str:
    """``(0, 239, 0)``: the origin of an affine in mm."""
    return "(" + ", ".join(f"{v:g}" for v in np.round(affine[:3, 3], 3) + 0.0) + ")"  # + 0.0: no "-0"


def _grid(img) -> str:
    """``LPS, 1x1x1 mm, origin (0, 239, 0)``: the grid of a nibabel image in words."""
    import nibabel as nib

    zooms = "x".join(f"{z:g}" for z in img.header.get_zooms()[:3])
    return f"{''.join(nib.aff2axcodes(img.affine))}, {zooms} mm, origin {_origin(img.affine)}"


def grid_difference(pred_img, truth_img) -> tuple[str | None, str | None]:
    """How the grids of two label maps (nibabel images) differ: ``(problem, note)``.

    ``problem`` (None when there is none) says why the maps cannot be compared voxel by voxel: another
    shape, orientation (``RAS`` and ``LPS``, :func:`nibabel.aff2axcodes`), voxel size or voxel axes.
    ``note`` (None when there is none) names origins that differ by more than ``AFFINE_TOLERANCE`` on
    otherwise equal grids: the voxels still match (some BraTS label maps carry another origin than their
    images), so they are scored, and the difference is worth a line.
    """
    if pred_img.shape[:3] != truth_img.shape[:3]:
        return f"shape {pred_img.shape[:3]} and {truth_img.shape[:3]}", None
    a, b = np.asarray(pred_img.affine, float), np.asarray(truth_img.affine, float)
    if not np.allclose(a[:3, :3], b[:3, :3], rtol=0, atol=AFFINE_TOLERANCE):
        import nibabel as nib

        codes = ["".join(nib.aff2axcodes(m)) for m in (a, b)]
        zooms = [tuple(float(z) for z in img.header.get_zooms()[:3]) for img in (pred_img, truth_img)]
        if codes[0] != codes[1]:
            what = f"orientation {codes[0]} and {codes[1]}"
        elif not np.allclose(*zooms, rtol=0, atol=AFFINE_TOLERANCE):
            what = "voxel size " + " and ".join("x".join(f"{z:g}" for z in zs) + " mm" for zs in zooms)
        else:
            what = f"voxel axes (up to {np.abs(a[:3, :3] - b[:3, :3]).max():.3g} mm apart)"
        return f"{what} ({_grid(pred_img)}; {_grid(truth_img)})", None
    if not np.allclose(a[:3, 3], b[:3, 3], rtol=0, atol=AFFINE_TOLERANCE):
        return None, f"origins {_origin(a)} and {_origin(b)} differ on the same voxels: scored voxel by voxel"
    return None, None


def _case_scores(pred_path: Path, truth_path: Path, truth, lesion_wise: bool, task) -> tuple[dict, str | None]:
    """``(scores, note)`` of a prediction against its label map at ``truth_path``, read as ``truth`` (``(task,
    classes, image)`` of :func:`_case_task`), scored by the regions of ``task``: ValueError naming both files when
    their grids differ, a note naming both when their origins alone differ (:func:`grid_difference`). The prediction
    holds the values of the truth's task or of one with the same classes (BratsInputError naming it when not)."""
    case_task, true, truth_img = truth
    pred, pred_img = read_task_labels(pred_path, case_task)
    problem, note = grid_difference(pred_img, truth_img)
    if problem:
        raise ValueError(f"{pred_path} and {truth_path} are not on one grid: {problem}")
    spacing = tuple(float(z) for z in truth_img.header.get_zooms()[:3])
    scores = score_case(pred, true, spacing, lesion_wise=lesion_wise, task=task)
    return scores, note and f"{pred_path} and {truth_path}: {note}"


def score_case(pred_classes, truth, spacing=None, *, report: bool = True, lesion_wise: bool = False,
               distances: bool = True, connectivity: int = 3, task=None) -> dict:
    """Every score of one case, as :func:`evaluate_folder` gives each case: the one place that scores a prediction.

    Args:
        pred_classes: predicted class map ``(D, H, W)``, values 0..3 (``Predictor.predict_case(...)["classes"]``).
        truth: the true class map ``(D, H, W)``, or the path of a BraTS label map (read as
            :func:`evaluate_folder` reads it; its zooms are the spacing unless ``spacing`` is given).
        spacing: voxel size in mm per axis; ``None`` is 1 mm (or the label map's zooms).
        report: add the report's Table 4 columns (:func:`report_scores`) under ``"report"``.
        lesion_wise: add :func:`lesion_wise_scores` under ``"lesion_wise"``.
        distances: False leaves HD95 out of the region scores (much faster: Dice during training).
        connectivity: of the surface used by :func:`hd95`.
        task: the task whose classes the maps hold and whose regions are scored (a
            :class:`~brats_keras.tasks.Task` or its name; None: the default task); a path ``truth`` is read with
            its values.
    Returns:
        ``{"WT": {"dice", "hd95", "sensitivity", "specificity"}, "TC": ..., "ET": ...,
        "report": {...}, "lesion_wise": {...}}`` (:func:`region_scores` alone with ``report=False``), one entry
        per region of the task.
    """
    if isinstance(truth, (str, Path)):
        truth, file_spacing = _read_classes(Path(truth), task)
        spacing = file_spacing if spacing is None else spacing
    scores = region_scores(pred_classes, truth, spacing, connectivity, distances=distances, task=task)
    if report:
        scores["report"] = report_scores(pred_classes, truth, task=task)
    if lesion_wise:
        scores["lesion_wise"] = lesion_wise_scores(pred_classes, truth, spacing, connectivity, task=task)
    return scores


def _missing_scores(truth, lesion_wise: bool, task) -> dict:
    """Scores of a truth case without a prediction: the BraTS rule, Dice 0 and HD95 373.13.

    Every region gets Dice 0 and HD95 ``HD95_EMPTY`` (lesion-wise: Dice 0, HD95 374),
    even a region the truth does not have; the other scores are those of an empty
    prediction (all background). ``truth``: ``(task, classes, image)`` of :func:`_case_task`.
    """
    _, true, img = truth
    spacing = tuple(float(z) for z in img.header.get_zooms()[:3])
    scores = score_case(np.zeros_like(true), true, spacing, lesion_wise=lesion_wise, task=task)
    for region in task.region_names:
        scores[region].update(dice=0.0, hd95=HD95_EMPTY)
        if lesion_wise:
            scores["lesion_wise"][region].update(dice=0.0, hd95=LESION_HD95_MISS)
    return scores


def _aggregate(cases: list[dict], reduce) -> dict:
    """Apply ``reduce`` to every leaf across the cases, keeping the nested structure."""
    if not cases:
        return {}
    out = {}
    for key, value in cases[0].items():
        if isinstance(value, dict):
            out[key] = _aggregate([c[key] for c in cases], reduce)
        else:
            out[key] = float(reduce(np.asarray([c[key] for c in cases], dtype=np.float64)))
    return out


def _flatten(scores: dict, prefix: str = "") -> dict[str, float]:
    flat = {}
    for key, value in scores.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            # the report's columns keep their own names (accuracy, dice_NCR, ...)
            flat.update(_flatten(value, "" if key == "report" else f"{name}_"))
        else:
            flat[name] = value
    return flat


def _csv_text(results: dict) -> str:
    rows = [(case, _flatten(s)) for case, s in results["cases"].items()]
    rows += [(name, _flatten(results[name])) for name in ("mean", "median") if results.get(name)]
    if not rows:
        return "case\n"
    columns = list(rows[0][1])
    buf = _io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["case", *columns])
    for case, flat in rows:
        writer.writerow([case, *(repr(float(flat[c])) for c in columns)])
    return buf.getvalue()


def evaluate_folder(
    pred_dir,
    truth_dir,
    json_path=None,
    csv_path=None,
    progress: bool = True,
    lesion_wise: bool = False,
    only_predicted: bool = False,
    case_ids=None,
    task=None,
) -> dict:
    """Score the predictions of a folder against every label map of the truth folder.

    Predictions are ``pred_dir/<case>.nii.gz`` label maps. The truth is either a folder of
    ``<case>.nii.gz`` label maps or a BraTS folder of cases (``<case>/<case>_seg.nii.gz``;
    :func:`brats_keras.io.find_cases` where it exists); every case with a label map there is
    a truth case. Label maps are read with nibabel as stored (never as float64); spacing
    comes from the truth's zooms.

    The task (its label values, classes and scored regions, :mod:`brats_keras.tasks`) is
    ``task`` when given, else the one the first truth case's values and naming say
    (:func:`brats_keras.tasks.detect_task`: 2018-2021 names are the 2021 glioma task,
    2023+ names the 2023 one, ...). Every truth map must hold the values of its task (a
    case whose values fit another task is an error line); a prediction holds those of its
    case's task or of one with the same classes (2021 values for a 2023-named case: ET 4 or
    3), else it is an error line naming it. The results name the task (``"task"``, its
    record) unless it is the default one.

    A truth case without a prediction is listed under ``"missing"`` and, as BraTS
    does, scored Dice 0 and HD95 373.13 in every region (lesion-wise: 0 and 374; its
    other scores are those of an empty prediction), so the mean and median cover
    every truth case. With ``only_predicted=True`` it is listed but not scored, and
    the means cover the predicted cases only.

    A prediction without a label map, a case that cannot be read, or a prediction on
    another grid than its label map (shape, orientation, voxel size:
    :func:`grid_difference`) gets a one-line message under ``"errors"`` naming the case
    and the files; the other cases are still scored. A prediction whose origin alone
    differs is scored, with a line under ``"notes"``.

    ``case_ids`` limits the evaluation to those cases, as ``predict_folder`` limits
    prediction (e.g. a split's test cases in a folder that also holds the training
    cases): other predictions and label maps are ignored, an asked case without a
    prediction is missing as above, and one found in neither folder is an error.

    Args:
        pred_dir: folder of predicted label maps.
        truth_dir: folder of true label maps or of BraTS cases.
        json_path, csv_path: where to write the results (written atomically); the CSV
            has one row per case, then ``mean`` and ``median`` rows. Checked before any
            case is read (:func:`brats_keras.io.check_output_path`); a write that fails
            all the same (e.g. no space left on device) is a line ``<file>: <reason>``
            under ``"write_errors"`` and leaves no file behind.
        progress: show a tqdm progress bar.
        lesion_wise: also compute :func:`lesion_wise_scores` (key ``"lesion_wise"``).
        only_predicted: score only the cases that have a prediction.
        case_ids: the case ids to score; None: every case of both folders.
        task: a :class:`~brats_keras.tasks.Task`, its name or task file, or None (detected).
    Returns:
        ``{"cases": {case: {"WT": {"dice", "hd95", "sensitivity", "specificity"},
        "TC": ..., "ET": ..., "report": {accuracy, precision, recall, mean_dice,
        dice_NCR, dice_ED, dice_ET}}}, "mean": {...}, "median": {...},
        "missing": [case, ...], "errors": {case: message}, "notes": {case: message},
        "write_errors": [message, ...]}``.
    Raises:
        FileNotFoundError when a folder does not exist; BratsInputError (a ValueError)
        when the prediction folder holds no ``<case>.nii.gz``, the truth folder no
        label map, or ``json_path`` / ``csv_path`` cannot be written. Nothing is written then.
    """
    from tqdm.auto import tqdm

    try:
        task = given = None if task is None else get_task(task)
    except TaskError as exc:
        raise BratsInputError(f"task: {exc}") from None
    pred_dir, truth_dir = Path(pred_dir), Path(truth_dir)
    for name, folder in (("prediction", pred_dir), ("truth", truth_dir)):
        if not folder.exists():
            raise FileNotFoundError(f"{name} folder not found: {folder}")
        if not folder.is_dir():
            raise BratsInputError(f"{name} folder is not a folder: {folder}")
    for flag, path in (("--json", json_path), ("--csv", csv_path)):
        if path is not None:
            check_output_path(path, flag=flag)
    preds = _case_files(pred_dir)
    wanted = None if case_ids is None else set(_case_id_list(case_ids))
    if wanted is not None:
        preds = {case: path for case, path in preds.items() if case in wanted}
    if not preds:
        which = "" if wanted is None else f" of the {len(wanted)} case(s) asked for"
        raise BratsInputError(f"no predictions (<case>{_NII}){which} in {pred_dir}")
    truth = _find_truth(truth_dir, preds)
    if wanted is not None:
        truth = {case: path for case, path in truth.items() if case in wanted}
    if not any(path is not None for path in truth.values()):
        raise BratsInputError(
            f"no label maps (<case>/<case>_seg{_NII} or <case>{_NII}) in {truth_dir}"
        )
    cases, errors, missing, notes = {}, {}, [], {}
    for case in tqdm(sorted(set(preds) | set(truth) | (wanted or set())), desc="evaluate", disable=not progress):
        if case not in preds:
            if truth.get(case) is None:  # a case folder without a label map: not a truth case
                if wanted is not None:  # but this one was asked for
                    errors[case] = f"{case}: no prediction in {pred_dir} and no label map in {truth_dir}"
                continue
            missing.append(case)
            if only_predicted:
                continue
        elif truth.get(case) is None:
            errors[case] = f"{case}: label map missing in {truth_dir} for {preds[case]}"
            continue
        try:
            true = _case_task(truth[case], case, given)
            task = task or true[0]  # the folder's task: the one given, else the first case's
            if not task.same_classes(true[0]):
                raise BratsInputError(f"{truth[case]}: a label map of task {true[0].name}, not of the folder's "
                                      f"task {task.name} (give --task)")
            if case in preds:
                cases[case], note = _case_scores(preds[case], truth[case], true, lesion_wise, task)
                if note:
                    notes[case] = f"{case}: {note}"
            else:
                cases[case] = _missing_scores(true, lesion_wise, task)
        except Exception as exc:
            message = " ".join(str(exc).split())
            errors[case] = f"{case}: {message}"
    scored = list(cases.values())
    task = task or get_task(None)
    results = {
        **({"task": task.to_dict()} if task.name != DEFAULT_TASK else {}),
        "cases": cases,
        "mean": _aggregate(scored, np.mean),
        "median": _aggregate(scored, np.median),
        "missing": missing,
        "only_predicted": bool(only_predicted),
        "errors": errors,
        "notes": notes,
        "write_errors": [],
    }
    # the CSV first: a failure to write it is then in the JSON too
    for path, text in ((csv_path, _csv_text), (json_path, lambda r: json.dumps(r, indent=2) + "\n")):
        if path is not None:
            try:
                atomic_write_text(path, text(results))
            except OSError as exc:
                results["write_errors"].append(describe_os_error(exc))
    return results


def _case_id_list(case_ids) -> list[str]:
    if isinstance(case_ids, str) or not all(isinstance(c, str) for c in case_ids):
        raise TypeError(f"case_ids must be a list of case id strings, got {case_ids!r}")
    return list(case_ids)


def table_columns(task=None) -> dict:
    """The column groups of :func:`format_table` for ``task``'s regions and classes: name -> [(header, width,
    format, path into a case's scores)]."""
    task = get_task(task)

    def per(items, first, width, fmt, path):
        return [(f"{first} {x}" if k == 0 else x, max(width if k == 0 else 6, len(x) + (len(first) + 1) * (k == 0)),
                 fmt, path(x)) for k, x in enumerate(items)]

    return {
        "dice": per(task.region_names, "Dice", 7, ".4f", lambda r: (r, "dice")),
        "hd95": per(task.region_names, "HD95", 7, ".2f", lambda r: (r, "hd95")),
        "class_dice": [("class Dice", 10, ".4f", ("report", "mean_dice"))],
        "classes": per(task.class_names[1:], "Dice", 8, ".4f", lambda c: ("report", f"dice_{c}")),
        "report": [(name, max(len(name), 6), ".4f", ("report", name)) for name in report_names(task)],
    }


#: column groups of :func:`format_table` for the default task (:func:`table_columns`)
TABLE_COLUMNS = table_columns()


def format_table(results: dict, columns=("dice", "hd95", "class_dice"), label: str = "case", task=None) -> str:
    """A compact text table of scores, one row per case (or per run), one group of columns per score.

    Args:
        results: what :func:`evaluate_folder` returns (rows: the cases, then the mean and median,
            then the missing predictions and the errors), or ``{row name: scores}`` with the scores of
            one case or a mean each, e.g. ``{run: evaluate_folder(...)["mean"] for run in runs}``.
        columns: groups of :data:`TABLE_COLUMNS`, in order: ``"dice"`` and ``"hd95"`` of the regions
            WT, TC and ET, ``"class_dice"`` (the report's mean Dice over NCR, ED and ET), ``"classes"``
            (Dice of NCR, ED and ET), ``"report"`` (the report's Table 4: accuracy, precision, recall,
            mean Dice, Dice per class).
        label: the header of the first column.
        task: whose regions and classes the columns show (default: the results' ``"task"``, else the default
            task's WT, TC and ET).
    """
    folder = isinstance(results.get("cases"), dict) and "mean" in results
    groups_of = table_columns(task if task is not None or not folder else results.get("task"))
    columns = (columns,) if isinstance(columns, str) else tuple(columns)
    unknown = [c for c in columns if c not in groups_of]
    if unknown or not columns:
        raise ValueError(f"unknown column group(s) {unknown}: use {', '.join(groups_of)}")
    groups = [groups_of[c] for c in columns]
    cases = results.get("cases", {}) if folder else results
    rows = list(cases.items())
    if folder:
        rows += [(name, results[name]) for name in ("mean", "median") if results.get(name)]
    width = max([len(label)] + [len(str(case)) for case, _ in rows])
    head = f"{label:<{width}}" + "".join("  " + " ".join(f"{h:>{w}}" for h, w, _, _ in g) for g in groups)
    lines = [head, "-" * len(head)]
    missing = results.get("missing", []) if folder else []
    for i, (case, s) in enumerate(rows):
        if i == len(cases) and i > 0:
            lines.append("-" * len(head))
        lines.append(
            f"{case:<{width}}"
            + "".join("  " + " ".join(f"{s[a][b]:>{w}{fmt}}" for _, w, fmt, (a, b) in g) for g in groups)
            + ("  (no prediction)" if i < len(cases) and case in missing else "")
        )
    if missing:
        how = (
            "left out of the mean and median (only predicted cases scored)"
            if results.get("only_predicted")
            else f"each scored Dice 0 and HD95 {HD95_EMPTY} in every region"
        )
        lines.append(f"missing: {len(missing)} prediction(s), {how}: {', '.join(missing)}")
    for message in (results.get("errors", {}) if folder else {}).values():
        lines.append(f"error: {message}")
    return "\n".join(lines)

