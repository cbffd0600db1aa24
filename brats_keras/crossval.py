"""Cross-validation tables: the out-of-fold whole-case predictions of all folds scored in one table, written,
read and combined.

The workflow (``K`` = 5)::

    brats-keras train --data data/real_2mm --recipe pretrained --folds 5 --fold 0 --out runs/cv_fold0
    ...                                                                  --fold 4 --out runs/cv_fold4
    brats-keras crossval --runs runs/cv_fold0 ... runs/cv_fold4 --out cv --choose-postprocessing
    brats-keras ensemble --runs runs/cv_fold0 ... runs/cv_fold4 --postprocessing cv/postprocessing.json --out model5
    brats-keras predict --model model5 --input new_cases --output predictions
    brats-keras crossval --ensemble model5 --data-root cases --out cv_again   # the same table, from model5 alone

Each fold run trains on the other folds' cases and keeps this fold's as validation (its ``split.json``).
:func:`crossval_predict` predicts every fold's validation cases with that fold's checkpoint, so each case
is predicted by the one model that never saw it; the raw label maps stay in ``cv/predictions/`` and
:func:`choose_postprocessing_from_crossval` picks, on them, the post-processing that raises the mean Dice
(:mod:`brats_keras.postprocessing`). The folds themselves are :func:`brats_keras.data.fold_split`'s, fold
ensembles are :mod:`brats_keras.ensemble`'s and the paired comparison of two tables is :mod:`brats_keras.compare`'s.
"""
from __future__ import annotations

import csv
import io as _io
import json
from pathlib import Path

import numpy as np

from .data import fold_runs
from .io import BratsInputError, atomic_write_json, atomic_write_text, find_cases, save_nifti
from .postprocessing import (DEFAULT_THRESHOLD, MIN_GAIN, _count, _decode, _paste, apply_postprocessing,
                             choose_postprocessing, is_postprocessing_off, postprocessing_spec)
from .spec import read_manifest
from .tasks import DEFAULT_TASK, TaskError, get_task

SCORES = ("dice", "hd95")


def table_task(table: dict):
    """The task of a crossval table (its ``"task"`` record; a table without one is of the default task).

    Raises:
        BratsInputError for a record that is not a valid task.
    """
    try:
        return get_task(table.get("task"))
    except TaskError as exc:
        raise BratsInputError(f"crossval table: {exc}") from None


def _task_record(task) -> dict:
    """``{"task": record}`` for a table of another task than the default, ``{}`` for the default (unchanged)."""
    return {} if task.name == DEFAULT_TASK else {"task": task.to_dict()}


# ----------------------------------------------------------------------------- out-of-fold predictions
def _truth_cases(roots) -> dict:
    found = {}
    for root in roots:
        for case in find_cases(root):
            if case.seg is not None:
                found.setdefault(case.case_id, case)
    return found


def _manifest_roots(run: Path) -> list[Path]:
    """The folders of the original label maps of a run's data (its conversion manifest's ``seg`` paths)."""
    cfg = json.loads((run / "config.json").read_text()) if (run / "config.json").is_file() else {}
    try:
        manifest = read_manifest(cfg.get("data", ""))
    except BratsInputError:  # no readable conversion folder: the caller names the roots it needs
        return []
    return sorted({Path(e["seg"]).parent.parent for e in manifest["cases"].values() if e.get("seg")})


def _summary(rows: list[dict], regions) -> dict:
    """mean / median / std (population) of Dice and HD95 per region (``regions``) over case rows."""
    from .evaluation import _aggregate

    scores = [{r: {s: row[r][s] for s in SCORES} for r in regions} for row in rows]
    return {name: _aggregate(scores, reduce) for name, reduce in (("mean", np.mean), ("median", np.median),
                                                                  ("std", np.std))}


def crossval_predict(runs, out, data_roots=None, checkpoint: str = "last", tta: bool = False, overlap: float = 0.5,
                     batch_size: int = 2, progress: bool = True, log=print) -> dict:
    """Predict each fold run's validation cases with its own checkpoint and score them all in one table.

    Args:
        runs: the fold run folders (each with ``split.json`` and ``checkpoints/<checkpoint>.keras``); their
            validation cases must not overlap.
        out: output folder: ``predictions/<case>.nii.gz`` (raw label maps, no post-processing, in the case's
            label convention), for region models ``probabilities/<case>.npz`` (:func:`save_probabilities`, used
            to choose region thresholds), ``crossval.json`` and ``crossval.csv``.
        data_roots: folders of the original NIfTI cases with label maps (any layout); default: where the
            runs' conversion manifests say the label maps are.
        checkpoint: ``"last"`` (default: choosing a checkpoint by the Dice of 4 or 5 validation cases
            overfits those cases) or ``"best"``.
        tta, overlap, batch_size: passed to :class:`brats_keras.inference.Predictor`.
    Returns:
        ``{"checkpoint", "cases": {case: {"fold", "run", "model", "prediction", "truth", "WT": {"dice",
        "hd95", "sensitivity", "specificity"}, "TC", "ET"}}, "folds": {fold: {"run", "cases", "mean"}},
        "mean", "median", "std"}`` (summaries hold Dice and HD95 per region).
    Raises:
        BratsInputError (one line, before anything is written) for a folder that is not a fold run, a
        missing or unreadable checkpoint, a case in two runs' validation sets, or a validation case without
        a label map under ``data_roots``. A case that cannot be read is listed under ``"failed"`` and the
        others are still predicted and scored.
    """
    plan = [(int(split.get("fold", k)), run, [model_path], list(split.get("val", [])))
            for k, (run, split, model_path) in enumerate(fold_runs(runs, checkpoint))]
    if not data_roots:
        data_roots = sorted({r for _, run, _, _ in plan for r in _manifest_roots(run)})
    return _predict_folds(plan, out, data_roots, {"checkpoint": checkpoint}, tta=tta, overlap=overlap,
                          batch_size=batch_size, progress=progress, log=log)


def crossval_ensemble(ensemble, out, data_roots, tta: bool = False, overlap: float = 0.5, batch_size: int = 2,
                      progress: bool = True, log=print) -> dict:
    """The out-of-fold table of a fold ensemble folder, without its training runs: each fold's validation
    cases (recorded in ``ensemble.json``) predicted by that fold's file(s) only (the files of several recipes
    averaged), none of which saw them in training. The same table as :func:`crossval_predict` of the runs
    (``"ensemble"`` names the folder; ``"run"`` of a case is the folder, ``"model"`` its first file); with
    ``ensemble="pretrained"`` it gives the shipped model card's cross-validation again.

    ``data_roots`` (required: an ensemble does not know where its cases lie) are the folders of the original
    cases with label maps. Raises BratsInputError as :func:`brats_keras.ensemble.ensemble_folds`, or for no
    ``data_roots``.
    """
    from .ensemble import _ensemble_record

    record, plan = _ensemble_record(ensemble)
    if not data_roots:
        raise BratsInputError("--ensemble: give --data-root, the folder(s) of the cases with label maps")
    extra = {"checkpoint": record.get("checkpoint", "last"), "ensemble": str(Path(plan[0][1]).resolve())}
    return _predict_folds(plan, out, data_roots, extra, tta=tta, overlap=overlap, batch_size=batch_size,
                          progress=progress, log=log)


def _predict_folds(plan, out, data_roots, extra: dict, tta, overlap, batch_size, progress, log) -> dict:
    """Predict and score ``plan``: ``[(fold, source folder, [model files, averaged], [validation cases])]``."""
    from .evaluation import _read_classes, region_scores
    from .inference import Predictor, case_output_task

    owner = {}
    for _, source, _, val in plan:  # an ensemble's record was checked by ensemble_folds, naming its file
        for cid in val:
            if cid in owner:
                raise BratsInputError(f"case {cid} is a validation case of both {owner[cid]} and {source}: give the "
                                      "runs of one cross-validation")
            owner[cid] = source
    # every model is loaded before anything is written: a corrupt checkpoint of a later fold is refused up front
    predictors = [Predictor(models if len(models) > 1 else models[0], tta=tta, overlap=overlap,
                            batch_size=batch_size, postprocess=False) for _, _, models, _ in plan]
    task = predictors[0].task
    for (_, source, _, _), predictor in zip(plan[1:], predictors[1:]):
        if not task.same_classes(predictor.task):
            raise BratsInputError(f"{source}: a model of task {predictor.task.name}, the first fold's is of "
                                  f"{task.name}: give the runs of one cross-validation")
    regions = task.region_names
    # one folder given as a str or Path is that folder, not a sequence of one-letter folders
    roots = [Path(data_roots)] if isinstance(data_roots, (str, Path)) else [Path(r) for r in data_roots]
    truth = _truth_cases(roots)
    missing = sorted(set(owner) - set(truth))
    if missing:
        raise BratsInputError(f"no label map for validation case(s) {', '.join(missing)} under "
                              f"{', '.join(map(str, roots)) or 'the runs data folders'}: give --data-root")
    out = Path(out)
    made = [d for d in (out, out / "predictions") if not d.exists()]
    (out / "predictions").mkdir(parents=True, exist_ok=True)
    cases, fold_table, failed = {}, {}, {}
    for (fold, source, models, val), predictor in zip(plan, predictors):
        for cid in sorted(val):
            case = truth[cid]
            try:
                pred = predictor.predict_case(case, return_probs="box" if predictor.spec.regions else False)
            except (BratsInputError, ValueError) as exc:  # an unreadable case: one line, the others go on
                failed[cid] = str(exc).splitlines()[0]
                log(f"FAILED {cid}: {failed[cid]}")
                continue
            pred_path = out / "predictions" / f"{cid}.nii.gz"
            save_nifti(pred_path, case_output_task(task, case).to_labels(pred["classes"]), pred["affine"],
                       pred["header"])
            row = {}
            if pred["probs"] is not None:  # region models: the probabilities, for choosing region thresholds
                row["probabilities"] = str(save_probabilities(out / "probabilities" / f"{cid}.npz",
                                                              pred["probs"], pred["box"], pred["classes"].shape))
            true, spacing = _read_classes(Path(case.seg), task)
            scores = region_scores(pred["classes"], true, spacing, task=task)
            cases[cid] = {"fold": fold, "run": str(source), "model": str(models[0]),
                          **({"models": [str(m) for m in models]} if len(models) > 1 else {}),
                          "prediction": str(pred_path), "truth": str(case.seg), **row,
                          **{r: scores[r] for r in regions}}
            if progress:
                log(f"fold {fold} {cid}: Dice " + " ".join(f"{r} {scores[r]['dice']:.3f}" for r in regions))
        rows = [cases[c] for c in sorted(val) if c in cases]
        fold_table[str(fold)] = {"run": str(source), "cases": sorted(val),
                                 "mean": _summary(rows, regions)["mean"] if rows else {}}
    if not cases:
        for d in reversed(made):  # the folders this call made, left empty: nothing of it stays behind
            if not any(d.iterdir()):
                d.rmdir()
        raise BratsInputError(f"no validation case could be predicted ({len(failed)} failed)")
    results = {**_task_record(task), **extra, "tta": bool(tta), "overlap": overlap,
               "cases": dict(sorted(cases.items())), "folds": fold_table, "failed": failed,
               **_summary(list(cases.values()), regions)}
    _write_table(out, results, failed, log)
    return results


def crossval_combine(cv_dirs, out, progress: bool = True, log=print) -> dict:
    """The out-of-fold estimate of an ensemble of recipes, from their cross-validations alone: per case, the mean
    of the region probabilities that each cross-validation stored (:func:`crossval_predict` of region models),
    decoded at 0.5 and scored. The cross-validations must share their folds, so that every model averaged for a
    case never trained on it: the score is what the ensemble of all their fold models would give on new patients,
    measured without predicting anything again.

    Args:
        cv_dirs: two or more ``crossval`` output folders (or their ``crossval.json``) of the same cases and folds.
        out: output folder, laid out as :func:`crossval_predict` writes it (``predictions/``, ``probabilities/``,
            ``crossval.json`` with ``"combined"``: the tables averaged, ``crossval.csv``, ``crossval.md``), so
            that ``crossval --reuse --choose-postprocessing`` and ``crossval-compare`` read it.
    Returns:
        the table, as :func:`crossval_predict` returns it; a row's ``"run"`` and ``"model"`` list one per table.
    Raises:
        BratsInputError (one line, before anything is written) for fewer than two tables, one given twice, an
        unreadable one, a table without stored probabilities, tables whose folds differ, or a case missing from a
        table. A case whose stored files or label map cannot be read (or disagree in shape) is listed under
        ``"failed"`` and the others are still scored; files an earlier table left in ``out`` for such a case, and
        the post-processing chosen on that table, are removed.
    """
    import nibabel as nib

    from .evaluation import _read_classes, region_scores
    from .inference import case_output_task

    from nibabel.filebasedimages import ImageFileError

    paths = [crossval_file(d) for d in cv_dirs]
    if len(paths) < 2:
        raise BratsInputError("give two or more crossval folders to combine")
    seen = {}
    for path in paths:
        if path.resolve() in seen:
            raise BratsInputError(f"{path}: given twice (also as {seen[path.resolve()]}): combine different "
                                  "cross-validations")
        seen[path.resolve()] = path
    tables = [read_crossval(p) for p in paths]
    first, first_path = tables[0], paths[0]
    task = table_task(first)
    regions = task.region_names
    for path, table in zip(paths, tables):
        if not task.same_classes(table_task(table)):
            raise BratsInputError(f"{path}: a table of task {table_task(table).name}, {first_path} of {task.name}: "
                                  "combine cross-validations of one task")
        if set(table["cases"]) != set(first["cases"]):
            missing = sorted(set(first["cases"]) ^ set(table["cases"]))
            raise BratsInputError(f"{path}: scores other cases than {first_path} (e.g. {missing[0]}): combine "
                                  "cross-validations of the same cases")
        for cid, row in table["cases"].items():
            if row["fold"] != first["cases"][cid]["fold"]:
                raise BratsInputError(f"{path}: case {cid} is in fold {row['fold']}, in fold "
                                      f"{first['cases'][cid]['fold']} of {first_path}: a model of one would have "
                                      "trained on it; combine cross-validations of the same folds")
            if not row.get("probabilities"):
                raise BratsInputError(f"{path}: case {cid} has no stored probabilities (a softmax model, or a "
                                      "crossval older than them): run crossval again")
    out = Path(out).resolve()  # the table names its files by absolute paths: it is read from other folders too
    if any(out == p.parent.resolve() for p in paths):
        raise BratsInputError(f"{out}: is one of the folders combined; choose another")
    cases, failed = {}, {}
    for cid in sorted(first["cases"]):
        rows = [t["cases"][cid] for t in tables]
        try:
            loaded = [load_probabilities(member_path(p.parent, "probabilities", r["probabilities"]))
                      for p, r in zip(paths, rows)]
            shape = loaded[0][2]
            if any(tuple(q[2]) != tuple(shape) for q in loaded):
                raise BratsInputError(f"{cid}: the tables' probabilities are of different shapes")
            truth_path = Path(rows[0]["truth"]).resolve()
            true, spacing = _read_classes(truth_path, task)
            if true.shape != tuple(shape):
                raise BratsInputError(f"{truth_path}: label map of shape {true.shape}, the stored probabilities "
                                      f"of {tuple(shape)}")
            # the mean over the union of the boxes (each table's probabilities are 0 outside its own box)
            lo = [min(q[1][i][0] for q in loaded) for i in range(3)]
            hi = [max(q[1][i][1] for q in loaded) for i in range(3)]
            box = list(zip(lo, hi))
            total = sum(_paste(q, qbox, lo, [b - a for a, b in box]).astype(np.float32) for q, qbox, _ in loaded)
            mean_q = np.rint(total / len(loaded)).astype(np.uint8)
            classes = _decode(_paste(mean_q, box, (0, 0, 0), shape),
                              {r: DEFAULT_THRESHOLD for r in task.region_order}, task)
            ref = nib.load(str(member_path(paths[0].parent, "predictions", rows[0]["prediction"])))
            case = next((c for c in find_cases(truth_path.parent) if c.case_id == cid), None)
            written = case_output_task(task, case) if case is not None else task
        except (BratsInputError, OSError, ValueError, ImageFileError) as exc:
            failed[cid] = str(exc).splitlines()[0]
            log(f"FAILED {cid}: {failed[cid]}")
            continue
        pred_path = out / "predictions" / f"{cid}.nii.gz"
        save_nifti(pred_path, written.to_labels(classes), ref.affine, ref.header)
        probs_path = save_probabilities(out / "probabilities" / f"{cid}.npz", mean_q.astype(np.float32) / 255, box,
                                        tuple(shape))  # quantized again to the same bytes
        scores = region_scores(classes, true, spacing, task=task)
        cases[cid] = {"fold": rows[0]["fold"], "run": [r.get("run") for r in rows],
                      "model": [r.get("model") for r in rows], "prediction": str(pred_path),
                      "truth": str(truth_path), "probabilities": str(probs_path),
                      **{r: scores[r] for r in regions}}
        if progress:
            log(f"fold {rows[0]['fold']} {cid}: Dice " + " ".join(f"{r} {scores[r]['dice']:.3f}" for r in regions))
    if not cases:
        raise BratsInputError(f"no case could be combined ({len(failed)} failed)")
    fold_table = {}
    for fold, f in first["folds"].items():
        rows = [cases[c] for c in f["cases"] if c in cases]
        fold_table[fold] = {"run": [t["folds"].get(fold, {}).get("run") for t in tables], "cases": f["cases"],
                            "mean": _summary(rows, regions)["mean"] if rows else {}}

    def same(key):
        values = {json.dumps(t.get(key)) for t in tables}
        return tables[0].get(key) if len(values) == 1 else "mixed"

    results = {**_task_record(task), "checkpoint": same("checkpoint"), "tta": same("tta"), "overlap": same("overlap"),
               "combined": [str(p.parent.resolve()) for p in paths], "cases": cases, "folds": fold_table,
               "failed": failed, **_summary(list(cases.values()), regions)}
    _write_table(out, results, failed, log)
    return results


def _write_table(out: Path, results: dict, failed, log) -> None:
    """Write a crossval folder's tables (``crossval.json``, ``.csv``, ``.md``), each atomically, after removing the
    files of an earlier table that this one no longer describes (:func:`_drop_stale`)."""
    _drop_stale(out, failed, log)
    atomic_write_json(out / "crossval.json", results)
    atomic_write_text(out / "crossval.csv", crossval_csv(results))
    atomic_write_text(out / "crossval.md", crossval_markdown(results))


def _drop_stale(out: Path, failed, log) -> None:
    """Before a new ``crossval.json`` is written into ``out``: remove what an earlier table there left that the new
    one would not describe: the label maps and probabilities of the cases that failed now, and the post-processing
    chosen on the earlier predictions with its scores (``--choose-postprocessing`` writes them again)."""
    stale = [out / "predictions" / f"{cid}.nii.gz" for cid in failed]
    stale += [out / "probabilities" / f"{cid}.npz" for cid in failed]
    stale += [out / "postprocessing.json", out / _TABLES[True]]
    for path in stale:
        if path.is_file():
            path.unlink()
            log(f"removed {path} (left by an earlier table in {out})")


# ----------------------------------------------------------------------------- reading a crossval output
#: the tables a crossval output folder holds: the out-of-fold scores, and the scores with the chosen post-processing
_TABLES = {False: "crossval.json", True: "crossval_postprocessed.json"}
_HINTS = {False: "run brats-keras crossval first", True: "run crossval --choose-postprocessing first"}


def crossval_file(path, postprocessed: bool = False) -> Path:
    """The JSON file of a cross-validation table: ``path`` itself, or in a ``crossval`` output folder its
    ``crossval.json`` (``crossval_postprocessed.json`` with ``postprocessed``; then a path to ``crossval.json``
    means the ``crossval_postprocessed.json`` beside it).

    Raises:
        BratsInputError (one line naming the path) when the folder or the file does not exist.
    """
    path = Path(path)
    if not path.exists() and path.suffix != ".json":
        raise BratsInputError(f"{path}: no such crossval folder or file")
    if path.is_dir():
        path = path / _TABLES[postprocessed]
    elif postprocessed and path.name == _TABLES[False]:
        path = path.with_name(_TABLES[True])
    if not path.is_file():
        raise BratsInputError(f"{path}: no such file ({_HINTS[postprocessed]})")
    return path


def read_crossval(path, postprocessed: bool = False, scores_only: bool = False) -> dict:
    """Read and check a table written by ``brats-keras crossval``: a ``crossval`` output folder or the JSON file
    itself (:func:`crossval_file`), ``crossval.json`` (:func:`crossval_predict`) or with ``postprocessed``
    ``crossval_postprocessed.json`` (:func:`crossval_postprocessed`).

    Every table has ``"cases"``, a JSON object of rows each with an integer ``"fold"`` and finite ``"dice"`` and
    ``"hd95"`` of each region of its task (WT, TC and ET; ``"task"``, :func:`table_task`), and maybe ``"failed"``
    (case: reason). Unless ``scores_only`` (all that
    :func:`brats_keras.compare.compare_crossval` needs), it also has ``"folds"`` (fold: ``{"cases": [...], ...}``)
    and ``"mean"``, ``"median"``, ``"std"``, and a ``crossval.json`` row names its ``"truth"`` and ``"prediction"`` files.

    Raises:
        BratsInputError, one line naming the file: missing, unreadable or not JSON, or not such a table.
    """
    path = crossval_file(path, postprocessed)
    try:
        table = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise BratsInputError(f"{path}: not a readable crossval table ({str(exc).splitlines()[0]})") from None
    _check_table(table, str(path), files=not (scores_only or postprocessed), summaries=not scores_only)
    return table


def _check_table(table, name: str, files: bool = False, summaries: bool = False) -> None:
    """Raise BratsInputError (one line starting with ``name``) for a table that is not what :func:`read_crossval`
    describes; ``files``: rows name their truth and prediction files; ``summaries``: folds, mean, median, std."""
    if not isinstance(table, dict) or not isinstance(table.get("cases"), dict):
        raise BratsInputError(f"{name}: not a crossval table (no \"cases\")")
    try:
        regions = get_task(table.get("task")).region_names
    except TaskError as exc:
        raise BratsInputError(f"{name}: {exc}") from None
    if not isinstance(table.get("failed", {}), dict):
        raise BratsInputError(f"{name}: \"failed\" is not a table of case: reason")
    for key in ("folds", "mean", "median", "std") if summaries else ():
        if not isinstance(table.get(key), dict):
            raise BratsInputError(f"{name}: not a crossval table (no \"{key}\")")
    for fold, f in table["folds"].items() if summaries else ():
        if not isinstance(f, dict) or not isinstance(f.get("cases"), list):
            raise BratsInputError(f"{name}: fold {fold} does not list its cases")
    for cid, row in table["cases"].items():
        if not isinstance(row, dict):
            raise BratsInputError(f"{name}: case {cid} is not a row of scores")
        fold = row.get("fold")
        if isinstance(fold, bool) or not isinstance(fold, int):
            raise BratsInputError(f"{name}: case {cid} has no fold")
        for key in ("truth", "prediction") if files else ():
            if not isinstance(row.get(key), str) or not row[key]:
                raise BratsInputError(f"{name}: case {cid} names no {key} file")
        for r in regions:
            for s in SCORES:
                value = row.get(r, {}).get(s) if isinstance(row.get(r), dict) else None
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
                    raise BratsInputError(f"{name}: case {cid} has no finite {r} {s}")


def crossval_csv(results: dict) -> str:
    """One row per case (fold, Dice and HD95 per region of the table's task), then a row per fold mean, then mean /
    median / std."""
    regions = table_task(results).region_names
    columns = [f"{s}_{r}" for s in SCORES for r in regions]
    buf = _io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["case", "fold", *columns])
    for cid, row in results["cases"].items():
        writer.writerow([cid, row["fold"], *(repr(float(row[r][s])) for s in SCORES for r in regions)])
    for fold, f in results["folds"].items():
        if f["mean"]:
            writer.writerow([f"fold {fold} mean", fold, *(repr(f["mean"][r][s]) for s in SCORES for r in regions)])
    for name in ("mean", "median", "std"):
        writer.writerow([name, "", *(repr(results[name][r][s]) for s in SCORES for r in regions)])
    return buf.getvalue()


def format_crossval(results: dict) -> str:
    """A text table of :func:`crossval_predict` results: cases, fold means, then mean / median / std (columns: the
    regions of the table's task)."""
    regions = table_task(results).region_names
    rows = [(cid, str(r["fold"]), r) for cid, r in results["cases"].items()]
    folds = [(f"fold {k} mean", k, f["mean"]) for k, f in results["folds"].items() if f["mean"]]
    totals = [(name, "all", results[name]) for name in ("mean", "median", "std")]
    width = max(len(name) for name, _, _ in rows + folds + totals + [("case", "", None)])
    # the first column of a group names the score: "Dice WT" in 7 characters, the others 6 or their name's length
    cols = [(f"{'Dice ' if k == 0 else ''}{r}", "dice", ".4f") for k, r in enumerate(regions)]
    cols += [(f"{'HD95 ' if k == 0 else ''}{r}", "hd95", ".2f") for k, r in enumerate(regions)]
    widths = [max(7 if k % len(regions) == 0 else 6, len(h)) for k, (h, _, _) in enumerate(cols)]

    def cells(values):
        n = len(regions)
        return "  ".join(" ".join(values[g * n:(g + 1) * n]) for g in range(2))

    head = f"{'case':<{width}}  fold  " + cells([f"{h:>{w}}" for (h, _, _), w in zip(cols, widths)])
    lines = [head, "-" * len(head)]
    for i, block in enumerate((rows, folds, totals)):
        if i and block:
            lines.append("-" * len(head))
        for name, fold, s in block:
            lines.append(f"{name:<{width}}  {fold:>4}  "
                         + cells([f"{s[r][score]:>{w}{fmt}}" for (_, score, fmt), w, r
                                  in zip(cols, widths, regions + regions)]))
    return "\n".join(lines)


def crossval_markdown(results: dict, choice: dict | None = None, command: str | None = None,
                      postprocessed: dict | None = None) -> str:
    """The cross-validated estimate as a model card section (markdown): the headline (mean, median and
    standard deviation over all out-of-fold cases of Dice and HD95 per region), each fold's mean, the
    weakest cases, and the post-processing the folds chose (a :func:`choose_postprocessing` result).
    ``postprocessed`` (:func:`crossval_postprocessed`) adds the mean and median with that post-processing.

    ``command`` (the commands that reproduce the numbers) is shown as a code block when given.
    """
    n, folds = len(results["cases"]), [f for f in results["folds"].values() if f["mean"]]
    regions = table_task(results).region_names

    def row(name, s, hd=True):
        dice = " | ".join(f"{s[r]['dice']:.3f}" for r in regions)
        return f"| {name} | {dice} | " + " | ".join(f"{s[r]['hd95']:.1f}" for r in regions) + " |"

    names = [f"Dice {regions[0]}", *regions[1:], f"HD95 {regions[0]} (mm)", *regions[1:]]
    head = "| | " + " | ".join(names) + " |\n|" + " --- |" * (len(names) + 1)
    lines = [f"## Cross-validated estimate ({len(folds)} folds, {n} cases, `{results['checkpoint']}` checkpoints)",
             "", ("Every case scored once, by the mean of the probabilities of the fold models (one per "
                  f"cross-validation combined: {', '.join(results['combined'])}) that did not train on it"
                  if results.get("combined") else "Every case scored once, by the fold model that did not train on it")
             + ", in its original 1 mm geometry, before post-processing.", "", head,
             row(f"**mean over {n} cases**", results["mean"]), row("median", results["median"]),
             row("standard deviation", results["std"])]
    if postprocessed is not None:
        lines += [row("mean with the chosen post-processing", postprocessed["mean"]),
                  row("median with the chosen post-processing", postprocessed["median"])]
    lines += ["", "Per fold (mean over that fold's validation cases):", "", head]
    for k, f in results["folds"].items():
        if f["mean"]:
            lines.append(row(f"fold {k} ({len(f['cases'])} cases)", f["mean"]))
    weakest = sorted(results["cases"].items(), key=lambda kv: np.mean([kv[1][r]["dice"] for r in regions]))
    lines += ["", f"Weakest cases (mean Dice of the {_count(len(regions))} regions): " + ", ".join(
        f"{cid} (fold {c['fold']}: " + " / ".join(f"{c[r]['dice']:.2f}" for r in regions) + ")"
        for cid, c in weakest[:3]) + "."]
    if results.get("failed"):
        lines += ["", "Not scored (unreadable): " + ", ".join(sorted(results["failed"])) + "."]
    if choice is not None:
        a, b = choice["dice_after"], choice["dice_before"]
        chosen = choice["postprocess"] or {}
        lines += ["", f"Post-processing chosen on these out-of-fold predictions: `{json.dumps(chosen)}`"
                  + ((" (none passed: a rise of a mean Dice over " + f"{choice.get('min_gain', MIN_GAIN):g}"
                      + (" with a paired interval of the gain not below 0)" if choice.get("confidence") else ")"))
                     if is_postprocessing_off(chosen, table_task(results)) else "")
                  + f"; mean Dice {' / '.join(regions)} " + " / ".join(f"{b[r]:.3f}" for r in regions) + " before, "
                  + " / ".join(f"{a[r]:.3f}" for r in regions) + " after."]
    if command:
        lines += ["", "Reproduce:", "", "```bash", command.strip(), "```"]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- stored probabilities, post-processing


def save_probabilities(path, probs: np.ndarray, box, shape=None) -> Path:
    """Save a case's region probabilities ``(D, H, W, 3)`` compactly: the brain box ``box`` only, as uint8
    (probability x 255, rounded: thresholds keep a precision of 1/255), compressed. Atomic.

    ``probs`` is the whole volume's, or (with ``shape``, the volume's ``(D, H, W)``) the box's only, as
    ``Predictor.predict_case(case, return_probs="box")`` gives it."""
    from .io import atomic_write
    from .preprocessing import box_slices

    probs = np.asarray(probs)
    if shape is None:
        shape, probs = probs.shape[:3], probs[box_slices(box)]
    elif probs.shape[:3] != tuple(b - a for a, b in box):
        raise ValueError(f"probabilities of shape {probs.shape[:3]} for a box of shape "
                         f"{tuple(b - a for a, b in box)}")
    q = np.rint(np.clip(probs, 0.0, 1.0) * 255).astype(np.uint8)

    def write(tmp):
        with open(tmp, "wb") as f:
            np.savez_compressed(f, probs=q, box=np.asarray(box, np.int64), shape=np.asarray(shape, np.int64))

    atomic_write(Path(path), write, suffix=".npz")
    return Path(path)


def load_probabilities(path) -> tuple:
    """``(probs uint8 (d, h, w, 3) of the box, box [(lo, hi)] * 3, full shape)`` saved by :func:`save_probabilities`.

    Raises:
        BratsInputError naming the file when it is missing or not such a file.
    """
    try:
        with np.load(path) as z:
            return z["probs"], [tuple(int(v) for v in row) for row in z["box"]], tuple(int(v) for v in z["shape"])
    except (OSError, KeyError, ValueError) as exc:
        raise BratsInputError(f"{path}: not a probabilities file written by crossval ({exc})") from None


def choose_postprocessing_from_crossval(cv_dir, **kwargs) -> dict:
    """:func:`choose_postprocessing` on the predictions and truths listed in ``cv_dir/crossval.json``
    (written by :func:`crossval_predict`); nothing is predicted again."""
    from .evaluation import _read_classes

    cv_dir = Path(cv_dir)
    path = cv_dir / _TABLES[False]
    results = read_crossval(path)
    task = table_task(results)
    rows = list(results["cases"].values())
    truths = [_read_classes(Path(row["truth"]), task)[0] for row in rows]
    if rows and all("probabilities" in row for row in rows):  # region models: thresholds are chosen too
        probs = [load_probabilities(member_path(cv_dir, "probabilities", row["probabilities"])) for row in rows]
        preds = None
    else:
        probs = None
        preds = [_read_classes(member_path(cv_dir, "predictions", row["prediction"]), task)[0] for row in rows]
    choice = choose_postprocessing(preds, truths, probs=probs, task=task, **kwargs)
    if probs is None:
        choice["note"] = (f"region thresholds not tried: {path} keeps no probabilities (a softmax model, or "
                          "predicted by a crossval older than region thresholds: run crossval again without --reuse)")
    choice["chosen_on"] = {"crossval": str(cv_dir.resolve()), "cases": sorted(results["cases"]),
                           "checkpoint": results.get("checkpoint")}
    return choice


def crossval_postprocessed(cv_dir, choice, log=None) -> dict:
    """Score the out-of-fold predictions of ``cv_dir`` again as ``predict`` would give them with the
    post-processing ``choice`` (region thresholds decoded from the kept probabilities, then the component and
    small-ET rules): Dice and HD95 per case, per fold and mean / median / std, like :func:`crossval_predict`.

    The choice was made on these same predictions, so these numbers lean optimistic by the size of the gains
    it chose (:func:`choose_postprocessing`'s ``dice_after`` minus ``dice_before``); the numbers before
    post-processing are the unbiased estimate.
    """
    from .evaluation import _read_classes, region_scores

    cv_dir = Path(cv_dir)
    results = read_crossval(cv_dir / _TABLES[False])
    task = table_task(results)
    regions = task.region_names
    spec = postprocessing_spec((choice or {}).get("postprocess", choice), task=task)
    cases = {}
    for cid, row in results["cases"].items():
        truth, spacing = _read_classes(Path(row["truth"]), task)
        if "probabilities" in row:
            q, box, shape = load_probabilities(member_path(cv_dir, "probabilities", row["probabilities"]))
            pred = _decode(_paste(q, box, (0, 0, 0), shape), spec["thresholds"], task)
        else:
            pred = _read_classes(member_path(cv_dir, "predictions", row["prediction"]), task)[0]
        scores = region_scores(apply_postprocessing(pred, spec, task), truth, spacing, task=task)
        cases[cid] = {"fold": row["fold"], **{r: scores[r] for r in regions}}
        if log:
            log(f"fold {row['fold']} {cid}: Dice " + " ".join(f"{r} {scores[r]['dice']:.3f}" for r in regions))
    folds = {}
    for k, f in results["folds"].items():
        rows = [cases[c] for c in f["cases"] if c in cases]
        folds[k] = {**f, "mean": _summary(rows, regions)["mean"] if rows else {}}
    return {**_task_record(task), "checkpoint": results.get("checkpoint"), "postprocess": spec, "cases": cases,
            "folds": folds, "failed": results.get("failed", {}), **_summary(list(cases.values()), regions)}


def member_path(cv_dir: Path, folder: str, recorded: str) -> Path:
    """A file crossval.json names: its namesake in ``cv_dir/folder``, where crossval writes it, or else where the
    table says it was written. ``cv_dir``'s own file first: a table moved or copied elsewhere, or naming its files
    relative to another working folder, reads its own files, not those the recorded path reaches from here."""
    path = Path(recorded)
    own = Path(cv_dir) / folder / path.name
    return own if own.exists() or not path.exists() else path
