"""Cross-validation: fold splits, out-of-fold whole-case predictions of all folds in one table, and
post-processing chosen on those predictions.

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
:func:`choose_postprocessing` picks, on them, the post-processing that raises the mean Dice.
"""
from __future__ import annotations

import csv
import io as _io
import json
from pathlib import Path

import numpy as np

from .io import BratsInputError, atomic_write_json, atomic_write_text, file_checksum, find_cases, save_nifti
from .labels import REGION_NAMES, classes_to_labels, classes_to_regions
from .spec import read_manifest

#: candidate post-processing settings tried by :func:`choose_postprocessing` (voxels of the predicted label map)
COMPONENT_SIZES = (10, 50, 100, 250, 500, 1000)
ET_THRESHOLDS = (50, 100, 200, 300, 500)
SCORES = ("dice", "hd95")
#: the least rise of a region's mean Dice that makes :func:`choose_postprocessing` take a setting (0.1 Dice
#: points): on 4 real validation cases the shipped model's gains were 0.0003-0.002, the size of noise
MIN_GAIN = 1e-3
#: the paired test of :func:`choose_postprocessing`: a setting is taken only if the lower end of this two-sided
#: bootstrap interval of its per-case Dice gain is not below 0. On the 28-case cross-validation the mean-only
#: rule took a TC threshold of 0.4 for +0.0011 that helped 11 cases and hurt 17 (90% interval -0.0038..+0.0068);
#: a rule that helps a few cases and hurts none (the BraTS small-ET rule on cases without ET) still passes
PAIRED_CONFIDENCE = 0.9
PAIRED_RESAMPLES = 2000


# ----------------------------------------------------------------------------- fold splits
def fold_runs(runs, checkpoint: str = "last") -> list[tuple]:
    """``[(run folder, its split.json as a dict, its checkpoints/<checkpoint>.keras)]`` of fold run folders.

    Raises:
        BratsInputError (one line) for no run, an unknown ``checkpoint``, a folder without ``split.json``, a
        ``split.json`` that is not a JSON object or whose ``"val"`` is not a list of case ids, or a missing
        checkpoint.
    """
    if checkpoint not in ("last", "best"):
        raise BratsInputError(f"--checkpoint {checkpoint!r}: use last or best")
    runs = [Path(r) for r in runs]
    if not runs:
        raise BratsInputError("no fold run given")
    out = []
    for run in runs:
        split_path, model_path = run / "split.json", run / "checkpoints" / f"{checkpoint}.keras"
        if not split_path.is_file():
            raise BratsInputError(f"{run}: not a run folder (no split.json)")
        try:
            split = json.loads(split_path.read_text())
        except (OSError, ValueError) as exc:
            raise BratsInputError(f"{split_path}: not a readable split ({exc})") from None
        if not isinstance(split, dict):
            raise BratsInputError(f"{split_path}: not the split of a fold run (train --folds K --fold k)")
        val = split.get("val", [])
        if not isinstance(val, list) or not all(isinstance(c, str) for c in val):
            raise BratsInputError(f"{split_path}: its \"val\" is not a list of case ids")
        if not model_path.is_file():
            raise BratsInputError(f"{model_path}: checkpoint not found")
        out.append((run, split, model_path))
    return out


def read_postprocessing_file(path) -> dict:
    """A post-processing choice from a JSON file (``postprocessing.json`` of crossval, or a spec).

    Raises:
        BratsInputError naming the file when it cannot be read, is not JSON or is not a JSON object.
    """
    try:
        choice = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise BratsInputError(f"{path}: not a readable post-processing file ({exc})") from None
    if not isinstance(choice, dict):
        raise BratsInputError(f"{path}: a post-processing file holds a JSON object, not {type(choice).__name__}")
    return choice



def tumor_sizes(entries: dict) -> dict | None:
    """Whole-tumor voxels per case from manifest entries (their ``label_counts``); None if any case lacks them."""
    sizes = {}
    for cid, entry in entries.items():
        counts = entry.get("label_counts")
        if not counts:
            return None
        sizes[cid] = int(sum(counts.values()))
    return sizes


def fold_split(case_ids, folds: int, fold: int, seed: int = 0, sizes: dict | None = None, test=0.0) -> dict:
    """The split of fold ``fold`` of ``folds``: ``val`` = this fold's cases, ``train`` = the other folds'.

    The same ``(case_ids, folds, seed, sizes)`` always give the same folds, and the ``folds`` validation
    sets are disjoint and cover every non-test case once.

    Folds are stratified by tumor size (scikit-learn's ``StratifiedKFold`` with shuffling and ``seed``) when
    ``sizes`` (whole-tumor voxels per case, e.g. :func:`tumor_sizes` of the manifest) are given and there
    are at least ``2 * folds`` cases: the cases are cut into size bins (up to three: small, middle, large
    tumors) of at least ``folds`` cases each and every fold gets its share of each bin. Tumor size drives
    Dice and HD95 more than anything else here (small tumors score low Dice), and with 4 or 5 validation
    cases per fold a fold of only small tumors would make its fold mean differ for reasons that have
    nothing to do with its model. Otherwise plain ``KFold`` with shuffling and ``seed``. (``GroupKFold``
    would be the choice when one patient has several studies, e.g. BraTS 2023's ``-000`` / ``-001`` time
    points; the cases here are one study per patient.)

    Args:
        case_ids: the labelled case ids.
        folds: number of folds (>= 2); fold: this fold, ``0 .. folds - 1``.
        seed: the shuffling seed (``TrainConfig.split_seed``).
        test: cases held out of every fold first (a fraction or a count, as in :func:`split_cases`).
    Returns:
        ``{"train": [...], "val": [...], "test": [...], "fold": fold, "folds": folds, "seed": seed,
        "stratified_by": "tumor size" or None}`` (id lists sorted).
    Raises:
        BratsInputError for a fold out of range or more folds than cases.
    """
    from sklearn.model_selection import KFold, StratifiedKFold

    from .data import split_cases

    folds, fold = int(folds), int(fold)
    if folds < 2:
        raise BratsInputError(f"--folds {folds}: cross-validation needs at least 2 folds")
    if not 0 <= fold < folds:
        raise BratsInputError(f"--fold {fold}: choose a fold from 0 to {folds - 1}")
    held = split_cases(case_ids, val=0, test=test, seed=seed) if test else {"train": sorted(case_ids), "test": []}
    ids = sorted(held["train"])
    if len(ids) < folds:
        raise BratsInputError(f"--folds {folds}: only {len(ids)} case(s) to split")
    strata = None
    if sizes is not None and all(c in sizes for c in ids):
        n_bins = min(3, len(ids) // folds)
        if n_bins >= 2:
            order = sorted(range(len(ids)), key=lambda i: (sizes[ids[i]], ids[i]))
            strata = np.zeros(len(ids), int)
            for rank, i in enumerate(order):
                strata[i] = rank * n_bins // len(ids)
    if strata is not None:
        splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed).split(ids, strata)
    else:
        splitter = KFold(n_splits=folds, shuffle=True, random_state=seed).split(ids)
    _, val_idx = list(splitter)[fold]
    val = sorted(ids[i] for i in val_idx)
    return {"train": sorted(set(ids) - set(val)), "val": val, "test": sorted(held["test"]), "fold": fold,
            "folds": folds, "seed": int(seed), "stratified_by": "tumor size" if strata is not None else None}


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


def _summary(rows: list[dict]) -> dict:
    """mean / median / std (population) of Dice and HD95 per region over case rows."""
    from .evaluation import _aggregate

    scores = [{r: {s: row[r][s] for s in SCORES} for r in REGION_NAMES} for row in rows]
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


def ensemble_folds(ensemble) -> list[tuple]:
    """``[(fold, ensemble folder, [its files of that fold], [the fold's validation cases])]`` of a fold ensemble
    folder written by :func:`ensemble_from_runs` (or ``"pretrained"``: the shipped one), from its
    ``ensemble.json``.

    Raises:
        BratsInputError (one line naming ``ensemble.json`` or the missing file) for a folder without a readable
        ``ensemble.json``, an entry that records no validation cases (written before they were recorded: build it
        again with ``brats-keras ensemble``) or whose ``"val"`` is not a non-empty list of distinct case ids, a
        name that is not a fold file's (``fold-<k>.keras``, ``fold-<k><letter>.keras``) or a ``"fold"`` other than
        its name's, files of one fold that record different cases, a case held out by two folds; then as
        :func:`brats_keras.ensemble_record.ensemble_files`: a listed file that is missing, a ``.keras`` file the
        record does not list, a file whose sha256 is not the recorded one.
    """
    return _ensemble_record(ensemble)[1]


def _ensemble_record(ensemble) -> tuple[dict, list[tuple]]:
    """``(ensemble.json as read, ensemble_folds's plan)``: the record read once, for its plan and its settings."""
    if str(ensemble) == "pretrained":
        from .pretrained import HERE as ensemble
    from .ensemble_record import RECORD, ensemble_files, read_record

    ensemble = Path(ensemble)
    record_path = ensemble / RECORD
    record = read_record(ensemble)
    models = record["models"]
    folds: dict = {}
    for name, source in sorted(models.items()):
        if not isinstance(source, dict):
            raise BratsInputError(f"{record_path}: {name}: not the record of a file (a JSON object)")
        if "val" not in source:
            raise BratsInputError(f"{record_path}: {name} records no validation cases; write the ensemble again "
                                  "with brats-keras ensemble --runs ...")
        val = source["val"]
        if not isinstance(val, list) or not val or not all(isinstance(c, str) and c for c in val):
            raise BratsInputError(f"{record_path}: {name}: \"val\" is not a list of case ids")
        twice = sorted({c for c in val if val.count(c) > 1})
        if twice:
            raise BratsInputError(f"{record_path}: {name} lists validation case(s) {', '.join(twice)} twice")
        try:
            if Path(name).name != name:
                raise ValueError(f"{name}: not a fold file of an ensemble (a file name, not a path)")
            fold = ensemble_file_fold(name)
        except ValueError as exc:
            raise BratsInputError(f"{record_path}: {exc}") from None
        recorded = source.get("fold", fold)
        if isinstance(recorded, bool) or recorded != fold:
            raise BratsInputError(f"{record_path}: {name} records fold {json.dumps(recorded)}, its name fold {fold}")
        if fold in folds and sorted(folds[fold][1]) != sorted(val):
            raise BratsInputError(f"{record_path}: the files of fold {fold} record different validation cases")
        folds.setdefault(fold, ([], val))[0].append(ensemble / name)
    owner: dict = {}
    for fold, (files, val) in sorted(folds.items()):
        for cid in val:
            if cid in owner:
                raise BratsInputError(f"{record_path}: case {cid} is a validation case of both fold {owner[cid]} "
                                      f"and fold {fold}: not the record of one cross-validation")
            owner[cid] = fold
    ensemble_files(ensemble, record)  # the listed files, all of them, each with its recorded checksum, no other
    return record, [(fold, ensemble, files, list(val)) for fold, (files, val) in sorted(folds.items())]


def crossval_ensemble(ensemble, out, data_roots, tta: bool = False, overlap: float = 0.5, batch_size: int = 2,
                      progress: bool = True, log=print) -> dict:
    """The out-of-fold table of a fold ensemble folder, without its training runs: each fold's validation
    cases (recorded in ``ensemble.json``) predicted by that fold's file(s) only (the files of several recipes
    averaged), none of which saw them in training. The same table as :func:`crossval_predict` of the runs
    (``"ensemble"`` names the folder; ``"run"`` of a case is the folder, ``"model"`` its first file); with
    ``ensemble="pretrained"`` it gives the shipped model card's cross-validation again.

    ``data_roots`` (required: an ensemble does not know where its cases lie) are the folders of the original
    cases with label maps. Raises BratsInputError as :func:`ensemble_folds`, or for no ``data_roots``.
    """
    record, plan = _ensemble_record(ensemble)
    if not data_roots:
        raise BratsInputError("--ensemble: give --data-root, the folder(s) of the cases with label maps")
    extra = {"checkpoint": record.get("checkpoint", "last"), "ensemble": str(Path(plan[0][1]).resolve())}
    return _predict_folds(plan, out, data_roots, extra, tta=tta, overlap=overlap, batch_size=batch_size,
                          progress=progress, log=log)


def _predict_folds(plan, out, data_roots, extra: dict, tta, overlap, batch_size, progress, log) -> dict:
    """Predict and score ``plan``: ``[(fold, source folder, [model files, averaged], [validation cases])]``."""
    from .evaluation import _read_classes, region_scores
    from .inference import Predictor

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
            save_nifti(pred_path, classes_to_labels(pred["classes"], case.label_convention), pred["affine"],
                       pred["header"])
            row = {}
            if pred["probs"] is not None:  # region models: the probabilities, for choosing region thresholds
                row["probabilities"] = str(save_probabilities(out / "probabilities" / f"{cid}.npz",
                                                              pred["probs"], pred["box"], pred["classes"].shape))
            true, spacing = _read_classes(Path(case.seg))
            scores = region_scores(pred["classes"], true, spacing)
            cases[cid] = {"fold": fold, "run": str(source), "model": str(models[0]),
                          **({"models": [str(m) for m in models]} if len(models) > 1 else {}),
                          "prediction": str(pred_path), "truth": str(case.seg), **row,
                          **{r: scores[r] for r in REGION_NAMES}}
            if progress:
                log(f"fold {fold} {cid}: Dice " + " ".join(f"{r} {scores[r]['dice']:.3f}" for r in REGION_NAMES))
        rows = [cases[c] for c in sorted(val) if c in cases]
        fold_table[str(fold)] = {"run": str(source), "cases": sorted(val),
                                 "mean": _summary(rows)["mean"] if rows else {}}
    if not cases:
        for d in reversed(made):  # the folders this call made, left empty: nothing of it stays behind
            if not any(d.iterdir()):
                d.rmdir()
        raise BratsInputError(f"no validation case could be predicted ({len(failed)} failed)")
    results = {**extra, "tta": bool(tta), "overlap": overlap, "cases": dict(sorted(cases.items())),
               "folds": fold_table, "failed": failed, **_summary(list(cases.values()))}
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
    from .inference import DEFAULT_THRESHOLD

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
    for path, table in zip(paths, tables):
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
            true, spacing = _read_classes(truth_path)
            if true.shape != tuple(shape):
                raise BratsInputError(f"{truth_path}: label map of shape {true.shape}, the stored probabilities "
                                      f"of {tuple(shape)}")
            # the mean over the union of the boxes (each table's probabilities are 0 outside its own box)
            lo = [min(q[1][i][0] for q in loaded) for i in range(3)]
            hi = [max(q[1][i][1] for q in loaded) for i in range(3)]
            box = list(zip(lo, hi))
            total = sum(_paste(q, qbox, lo, [b - a for a, b in box]).astype(np.float32) for q, qbox, _ in loaded)
            mean_q = np.rint(total / len(loaded)).astype(np.uint8)
            classes = _decode(_paste(mean_q, box, (0, 0, 0), shape), {r: DEFAULT_THRESHOLD for r in REGION_NAMES})
            ref = nib.load(str(member_path(paths[0].parent, "predictions", rows[0]["prediction"])))
            convention = next((c.label_convention for c in find_cases(truth_path.parent) if c.case_id == cid),
                              "2021")
        except (BratsInputError, OSError, ValueError, ImageFileError) as exc:
            failed[cid] = str(exc).splitlines()[0]
            log(f"FAILED {cid}: {failed[cid]}")
            continue
        pred_path = out / "predictions" / f"{cid}.nii.gz"
        save_nifti(pred_path, classes_to_labels(classes, convention), ref.affine, ref.header)
        probs_path = save_probabilities(out / "probabilities" / f"{cid}.npz", mean_q.astype(np.float32) / 255, box,
                                        tuple(shape))  # quantized again to the same bytes
        scores = region_scores(classes, true, spacing)
        cases[cid] = {"fold": rows[0]["fold"], "run": [r.get("run") for r in rows],
                      "model": [r.get("model") for r in rows], "prediction": str(pred_path),
                      "truth": str(truth_path), "probabilities": str(probs_path),
                      **{r: scores[r] for r in REGION_NAMES}}
        if progress:
            log(f"fold {rows[0]['fold']} {cid}: Dice " + " ".join(f"{r} {scores[r]['dice']:.3f}" for r in REGION_NAMES))
    if not cases:
        raise BratsInputError(f"no case could be combined ({len(failed)} failed)")
    fold_table = {}
    for fold, f in first["folds"].items():
        rows = [cases[c] for c in f["cases"] if c in cases]
        fold_table[fold] = {"run": [t["folds"].get(fold, {}).get("run") for t in tables], "cases": f["cases"],
                            "mean": _summary(rows)["mean"] if rows else {}}

    def same(key):
        values = {json.dumps(t.get(key)) for t in tables}
        return tables[0].get(key) if len(values) == 1 else "mixed"

    results = {"checkpoint": same("checkpoint"), "tta": same("tta"), "overlap": same("overlap"),
               "combined": [str(p.parent.resolve()) for p in paths], "cases": cases, "folds": fold_table,
               "failed": failed, **_summary(list(cases.values()))}
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
    ``"hd95"`` of WT, TC and ET, and maybe ``"failed"`` (case: reason). Unless ``scores_only`` (all that
    :func:`compare_crossval` needs), it also has ``"folds"`` (fold: ``{"cases": [...], ...}``) and ``"mean"``,
    ``"median"``, ``"std"``, and a ``crossval.json`` row names its ``"truth"`` and ``"prediction"`` files.

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
        for r in REGION_NAMES:
            for s in SCORES:
                value = row.get(r, {}).get(s) if isinstance(row.get(r), dict) else None
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
                    raise BratsInputError(f"{name}: case {cid} has no finite {r} {s}")


def crossval_csv(results: dict) -> str:
    """One row per case (fold, Dice and HD95 per region), then a row per fold mean, then mean / median / std."""
    columns = [f"{s}_{r}" for s in SCORES for r in REGION_NAMES]
    buf = _io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["case", "fold", *columns])
    for cid, row in results["cases"].items():
        writer.writerow([cid, row["fold"], *(repr(float(row[r][s])) for s in SCORES for r in REGION_NAMES)])
    for fold, f in results["folds"].items():
        if f["mean"]:
            writer.writerow([f"fold {fold} mean", fold, *(repr(f["mean"][r][s]) for s in SCORES for r in REGION_NAMES)])
    for name in ("mean", "median", "std"):
        writer.writerow([name, "", *(repr(results[name][r][s]) for s in SCORES for r in REGION_NAMES)])
    return buf.getvalue()


def format_crossval(results: dict) -> str:
    """A text table of :func:`crossval_predict` results: cases, fold means, then mean / median / std."""
    rows = [(cid, str(r["fold"]), r) for cid, r in results["cases"].items()]
    folds = [(f"fold {k} mean", k, f["mean"]) for k, f in results["folds"].items() if f["mean"]]
    totals = [(name, "all", results[name]) for name in ("mean", "median", "std")]
    width = max(len(name) for name, _, _ in rows + folds + totals + [("case", "", None)])
    head = f"{'case':<{width}}  fold  {'Dice WT':>7} {'TC':>6} {'ET':>6}  {'HD95 WT':>7} {'TC':>6} {'ET':>6}"
    lines = [head, "-" * len(head)]
    for i, block in enumerate((rows, folds, totals)):
        if i and block:
            lines.append("-" * len(head))
        for name, fold, s in block:
            lines.append(f"{name:<{width}}  {fold:>4}  {s['WT']['dice']:>7.4f} {s['TC']['dice']:>6.4f} "
                         f"{s['ET']['dice']:>6.4f}  {s['WT']['hd95']:>7.2f} {s['TC']['hd95']:>6.2f} "
                         f"{s['ET']['hd95']:>6.2f}")
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

    def row(name, s, hd=True):
        dice = " | ".join(f"{s[r]['dice']:.3f}" for r in REGION_NAMES)
        return f"| {name} | {dice} | " + " | ".join(f"{s[r]['hd95']:.1f}" for r in REGION_NAMES) + " |"

    head = "| | Dice WT | TC | ET | HD95 WT (mm) | TC | ET |\n| --- | --- | --- | --- | --- | --- | --- |"
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
    weakest = sorted(results["cases"].items(), key=lambda kv: np.mean([kv[1][r]["dice"] for r in REGION_NAMES]))
    lines += ["", "Weakest cases (mean Dice of the three regions): " + ", ".join(
        f"{cid} (fold {c['fold']}: " + " / ".join(f"{c[r]['dice']:.2f}" for r in REGION_NAMES) + ")"
        for cid, c in weakest[:3]) + "."]
    if results.get("failed"):
        lines += ["", "Not scored (unreadable): " + ", ".join(sorted(results["failed"])) + "."]
    if choice is not None:
        a, b = choice["dice_after"], choice["dice_before"]
        from .inference import is_postprocessing_off

        chosen = choice["postprocess"] or {}
        lines += ["", f"Post-processing chosen on these out-of-fold predictions: `{json.dumps(chosen)}`"
                  + ((" (none passed: a rise of a mean Dice over " + f"{choice.get('min_gain', MIN_GAIN):g}"
                      + (" with a paired interval of the gain not below 0)" if choice.get("confidence") else ")"))
                     if is_postprocessing_off(chosen) else "")
                  + "; mean Dice WT / TC / ET " + " / ".join(f"{b[r]:.3f}" for r in REGION_NAMES) + " before, "
                  + " / ".join(f"{a[r]:.3f}" for r in REGION_NAMES) + " after."]
    if command:
        lines += ["", "Reproduce:", "", "```bash", command.strip(), "```"]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- post-processing choice
#: region thresholds tried by :func:`choose_postprocessing` besides the default 0.5 (a coarse grid: 28 cases
#: cannot tell 0.65 from 0.7)
REGION_THRESHOLDS = (0.3, 0.4, 0.6, 0.7, 0.8)


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


def _threshold_crop(probs_q: np.ndarray, box, shape, truth: np.ndarray):
    """The quantized probabilities and the truth cut to one box: the brain box grown to hold every true
    tumor voxel (outside the brain box the probabilities are 0), so every Dice is that of the whole volume."""
    from .preprocessing import bounding_box

    lo = [a for a, _ in box]
    hi = [b for _, b in box]
    if (truth > 0).any():
        tbox = bounding_box(truth > 0)
        lo = [min(a, b[0]) for a, b in zip(lo, tbox)]
        hi = [max(a, b[1]) for a, b in zip(hi, tbox)]
    if tuple(truth.shape) != tuple(shape):
        raise BratsInputError(f"probabilities of shape {tuple(shape)} for a label map of shape {truth.shape}")
    p = _paste(probs_q, box, lo, [h - l for l, h in zip(lo, hi)])
    return p, truth[tuple(slice(l, h) for l, h in zip(lo, hi))]


def _paste(q: np.ndarray, box, lo, size) -> np.ndarray:
    """A zero uint8 array of ``size`` (plus ``q``'s channel axis) holding ``q``, the values of ``box``, where that
    box lies when ``lo`` is the array's corner: ``lo = (0, 0, 0)`` and ``size`` the volume's shape give the whole
    volume of a stored box (outside the brain box the probabilities are 0)."""
    out = np.zeros(tuple(size) + q.shape[3:], np.uint8)
    out[tuple(slice(a - l, b - l) for (a, b), l in zip(box, lo))] = q
    return out


def _decode(probs_q: np.ndarray, thresholds: dict) -> np.ndarray:
    from .labels import regions_to_classes

    return regions_to_classes(probs_q, [thresholds[r] * 255 for r in REGION_NAMES])
def _crop_pair(pred: np.ndarray, true: np.ndarray):
    """Both maps cut to the box of their tumor voxels (1 voxel margin): post-processing only removes
    voxels and connectivity stays inside the box, so every Dice is that of the whole volume, faster."""
    any_tumor = (pred > 0) | (true > 0)
    if not any_tumor.any():
        return pred[:1, :1, :1], true[:1, :1, :1]
    idx = np.argwhere(any_tumor)
    lo, hi = np.maximum(idx.min(0) - 1, 0), idx.max(0) + 2
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    return pred[box], true[box]


def _case_dice(preds, truths) -> dict:
    """Dice per region and case, ``{region: array (cases,)}`` (BraTS convention: both empty scores 1)."""
    from .evaluation import dice

    per = {r: [] for r in REGION_NAMES}
    for p, t in zip(preds, truths):
        pr, tr = classes_to_regions(p), classes_to_regions(t)
        for i, r in enumerate(REGION_NAMES):
            per[r].append(dice(pr[..., i], tr[..., i]))
    return {r: np.asarray(v, float) for r, v in per.items()}


def _means(per_case: dict) -> dict:
    return {r: float(np.mean(v)) for r, v in per_case.items()}


def _region_dice(preds, truths) -> dict:
    """Mean Dice per region over cases (BraTS convention: both empty scores 1)."""
    return _means(_case_dice(preds, truths))


def paired_interval(diff, confidence: float = PAIRED_CONFIDENCE, resamples: int = PAIRED_RESAMPLES,
                    seed: int = 0) -> tuple:
    """Two-sided percentile-bootstrap interval ``(low, high)`` of the mean of paired per-case differences
    (``resamples`` draws of the cases with replacement from ``seed``: the same answer every call)."""
    diff = np.asarray(diff, float)
    if diff.size == 0:
        raise BratsInputError("no cases to compare")
    means = diff[_bootstrap_indices(diff.size, int(resamples), seed)].mean(axis=1)
    tail = (1.0 - float(confidence)) / 2.0
    return float(np.quantile(means, tail)), float(np.quantile(means, 1.0 - tail))


def choose_postprocessing(preds, truths, sizes=COMPONENT_SIZES, et_thresholds=ET_THRESHOLDS,
                          min_gain: float = MIN_GAIN, probs=None, thresholds=REGION_THRESHOLDS,
                          confidence: float | None = PAIRED_CONFIDENCE) -> dict:
    """Choose, on out-of-fold predictions, the post-processing that raises the mean Dice.

    With ``probs`` (region models), first the region thresholds: per region in the order ET, TC, WT (inner
    first: a voxel above the ET threshold is in all three regions), each on top of the choices already made, try
    each of ``thresholds`` (nearest 0.5 first, so ties go to the gentler one) instead of 0.5 as the probability
    above which a voxel is in that region, under the test below; the class maps decoded with the chosen thresholds replace
    ``preds``. Then per region, in the order WT, TC, ET and each on top of the choices already made (nnU-Net's
    sequential rule): try removing components under each of ``sizes`` voxels and keeping only the largest component
    (see :func:`brats_keras.inference.apply_postprocessing`); keep the candidate with the highest mean Dice
    of that region if it beats doing nothing by more than ``min_gain`` and lowers no region's mean Dice by more
    than ``min_gain`` (ties go to the gentler candidate: smaller sizes first, keeping the largest last). Then
    the BraTS rule: a predicted ET under each of ``et_thresholds`` voxels becomes necrosis; the best threshold
    is kept under the same test on the ET Dice.

    With ``confidence`` (the default), a candidate must also pass a paired test against doing nothing: the lower
    end of the two-sided ``confidence`` bootstrap interval (:func:`paired_interval`) of its per-case Dice gain in
    that region must not be below 0. A setting whose small mean gain comes from helping some cases and hurting
    about as many is left out; one that helps a few cases and hurts none is kept. ``confidence=None`` (or 0)
    is the mean-only rule.

    Only Dice decides (HD95 is reported by :func:`crossval_predict`, not used here).

    Args:
        preds, truths: class maps ``(D, H, W)`` uint8 (classes 0..3), one pair per case, same shapes (``preds``
            is not used when ``probs`` is given).
        sizes, et_thresholds: the grids tried (voxels of the label maps: mm^3 at BraTS' 1 mm).
        min_gain: the least rise of the mean Dice a setting must bring (see ``MIN_GAIN``).
        probs: None, or per case ``(probs uint8, box, shape)`` as :func:`load_probabilities` gives (the region
            probabilities x 255 inside ``box`` of a volume of ``shape``); the maps they decode to at 0.5 stand for
            ``preds``.
        thresholds: the region thresholds tried besides 0.5.
        confidence: the paired test's interval (see above), or None for none.
    Returns:
        ``{"min_gain", "confidence", "postprocess": spec for :func:`~brats_keras.inference.postprocessing_spec`,
        "dice_before": {region: mean}, "dice_after": {region: mean}, "tried": [{"step", "setting", "dice":
        {region: mean}, "gain_interval": [low, high] of that step's region against doing nothing, "chosen"}],
        "cases": n}``.
    """
    from .inference import DEFAULT_THRESHOLD, apply_postprocessing, postprocessing_spec, small_et_to_ncr

    spec = postprocessing_spec()
    tried = []

    def interval(cand_cases, region):
        return list(paired_interval(cand_cases[region] - base[region], confidence or PAIRED_CONFIDENCE))

    def accept(cand_cases, best_score, region, row):
        """``cand_cases`` beats the best so far by ``min_gain``, lowers no region's mean by more than
        ``min_gain`` against doing nothing (``base``), and passes the paired test in ``region``."""
        cand = _means(cand_cases)
        score = _means(base)
        return (cand[region] > best_score[region] + min_gain
                and all(cand[r] >= score[r] - min_gain for r in REGION_NAMES)
                and (not confidence or row["gain_interval"][0] >= 0.0))

    if probs is not None:
        crops = [_threshold_crop(np.asarray(q), box, shape, np.asarray(t)) for (q, box, shape), t in zip(probs, truths)]
        if not crops:
            raise BratsInputError("no predictions to choose post-processing on")
        chosen = dict(spec["thresholds"])
        full_truths = [t for _, t in crops]
        current = [_decode(q, chosen) for q, _ in crops]
        base = _case_dice(current, full_truths)
        before = score = _means(base)
        for region in reversed(REGION_NAMES):  # inner first: ET voxels are TC and WT whatever their thresholds
            best = None
            # nearest to 0.5 first: of two thresholds within min_gain of each other the gentler one stays
            for t in sorted(thresholds, key=lambda t: (abs(t - DEFAULT_THRESHOLD), t)):
                if t == DEFAULT_THRESHOLD:
                    continue
                trial = {**chosen, region: float(t)}
                outs = [_decode(q, trial) for q, _ in crops]
                cases = _case_dice(outs, full_truths)
                cand = _means(cases)
                row = {"step": f"{region} threshold", "setting": {"threshold": float(t)}, "dice": cand,
                       "gain_interval": interval(cases, region), "chosen": False}
                tried.append(row)
                if accept(cases, best[1] if best else score, region, row):
                    best = (float(t), cand, outs, len(tried) - 1, cases)
            if best:
                chosen[region], score, current, base = best[0], best[1], best[2], best[4]
                tried[best[3]]["chosen"] = True
        spec["thresholds"] = chosen
        preds, truths = current, full_truths
    pairs = [_crop_pair(np.asarray(p), np.asarray(t)) for p, t in zip(preds, truths)]
    if not pairs:
        raise BratsInputError("no predictions to choose post-processing on")
    current, truths = [p for p, _ in pairs], [t for _, t in pairs]
    base = _case_dice(current, truths)
    score = _means(base)
    if probs is None:
        before = score

    for region in REGION_NAMES:
        candidates = [("min_component", s) for s in sizes] + [("keep_largest", 1)]
        best = None
        for key, value in candidates:
            one = postprocessing_spec({key: {region: value}})
            outs = [apply_postprocessing(p, one) for p in current]
            cases = _case_dice(outs, truths)
            cand = _means(cases)
            row = {"step": f"{region} components", "setting": {key: value}, "dice": cand,
                   "gain_interval": interval(cases, region), "chosen": False}
            tried.append(row)
            if accept(cases, best[2] if best else score, region, row):
                best = (key, value, cand, outs, len(tried) - 1, cases)
        if best:
            key, value, score, current, row, base = best
            spec[key][region] = value
            tried[row]["chosen"] = True
    best = None
    for t in et_thresholds:
        outs = [small_et_to_ncr(p, t) for p in current]
        cases = _case_dice(outs, truths)
        cand = _means(cases)
        row = {"step": "ET under N voxels to necrosis", "setting": {"et_threshold": t}, "dice": cand,
               "gain_interval": interval(cases, "ET"), "chosen": False}
        tried.append(row)
        if accept(cases, best[1] if best else score, "ET", row):
            best = (t, cand, len(tried) - 1)
    if best:
        spec["et_threshold"], score = best[0], best[1]
        tried[best[2]]["chosen"] = True
    return {"min_gain": min_gain, "confidence": confidence or None, "postprocess": spec, "dice_before": before, "dice_after": score, "tried": tried, "cases": len(pairs)}


def choose_postprocessing_from_crossval(cv_dir, **kwargs) -> dict:
    """:func:`choose_postprocessing` on the predictions and truths listed in ``cv_dir/crossval.json``
    (written by :func:`crossval_predict`); nothing is predicted again."""
    from .evaluation import _read_classes

    cv_dir = Path(cv_dir)
    path = cv_dir / _TABLES[False]
    results = read_crossval(path)
    rows = list(results["cases"].values())
    truths = [_read_classes(Path(row["truth"]))[0] for row in rows]
    if rows and all("probabilities" in row for row in rows):  # region models: thresholds are chosen too
        probs = [load_probabilities(member_path(cv_dir, "probabilities", row["probabilities"])) for row in rows]
        preds = None
    else:
        probs = None
        preds = [_read_classes(member_path(cv_dir, "predictions", row["prediction"]))[0] for row in rows]
    choice = choose_postprocessing(preds, truths, probs=probs, **kwargs)
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
    from .inference import apply_postprocessing, postprocessing_spec

    cv_dir = Path(cv_dir)
    results = read_crossval(cv_dir / _TABLES[False])
    spec = postprocessing_spec((choice or {}).get("postprocess", choice))
    cases = {}
    for cid, row in results["cases"].items():
        truth, spacing = _read_classes(Path(row["truth"]))
        if "probabilities" in row:
            q, box, shape = load_probabilities(member_path(cv_dir, "probabilities", row["probabilities"]))
            pred = _decode(_paste(q, box, (0, 0, 0), shape), spec["thresholds"])
        else:
            pred = _read_classes(member_path(cv_dir, "predictions", row["prediction"]))[0]
        scores = region_scores(apply_postprocessing(pred, spec), truth, spacing)
        cases[cid] = {"fold": row["fold"], **{r: scores[r] for r in REGION_NAMES}}
        if log:
            log(f"fold {row['fold']} {cid}: Dice " + " ".join(f"{r} {scores[r]['dice']:.3f}" for r in REGION_NAMES))
    folds = {}
    for k, f in results["folds"].items():
        rows = [cases[c] for c in f["cases"] if c in cases]
        folds[k] = {**f, "mean": _summary(rows)["mean"] if rows else {}}
    return {"checkpoint": results.get("checkpoint"), "postprocess": spec, "cases": cases, "folds": folds,
            "failed": results.get("failed", {}), **_summary(list(cases.values()))}


def member_path(cv_dir: Path, folder: str, recorded: str) -> Path:
    """A file crossval.json names: its namesake in ``cv_dir/folder``, where crossval writes it, or else where the
    table says it was written. ``cv_dir``'s own file first: a table moved or copied elsewhere, or naming its files
    relative to another working folder, reads its own files, not those the recorded path reaches from here."""
    path = Path(recorded)
    own = Path(cv_dir) / folder / path.name
    return own if own.exists() or not path.exists() else path


def format_choice(choice: dict) -> str:
    """The tried settings with the mean Dice they give, the chosen ones marked with ``*``."""
    b = choice["dice_before"]
    lines = [f"post-processing chosen on {choice['cases']} out-of-fold case(s); mean Dice WT / TC / ET",
             f"  {'none':<48} {b['WT']:.4f} {b['TC']:.4f} {b['ET']:.4f}"]
    for row in choice["tried"]:
        (key, value), = row["setting"].items()
        d = row["dice"]
        label = f"{row['step']}: {key} {value}"
        gain = row.get("gain_interval")
        gain = f"  gain {gain[0]:+.4f}..{gain[1]:+.4f}" if gain else ""
        lines.append(f"{'*' if row['chosen'] else ' '} {label:<48} {d['WT']:.4f} {d['TC']:.4f} {d['ET']:.4f}{gain}")
    if choice.get("note"):
        lines.append(choice["note"])
    a = choice["dice_after"]
    lines.append(f"  {'chosen together':<48} {a['WT']:.4f} {a['TC']:.4f} {a['ET']:.4f}")
    rule = f"a setting must raise a mean Dice by more than {choice.get('min_gain', MIN_GAIN)}"
    if choice.get("confidence"):
        rule += (f" and the lower end of the {choice['confidence']:.0%} bootstrap interval of its per-case gain"
                 " (gain ..) must not be below 0")
    lines.append(f"chosen ({rule}): "
                 f"{json.dumps(choice['postprocess'])}")
    return "\n".join(lines)


def choice_rule_flags(choice: dict) -> str:
    """The ``brats-keras crossval`` flags that repeat the rule a :func:`choose_postprocessing` result was made
    under, where it differs from today's defaults ("" when it does not). A choice made before the paired test
    (no ``"confidence"`` key) was made by the mean-only rule: ``--confidence 0``."""
    flags = []
    min_gain = choice.get("min_gain", MIN_GAIN)
    if min_gain != MIN_GAIN:
        flags.append(f"--min-gain {min_gain:g}")
    confidence = choice.get("confidence") or 0.0
    if confidence != PAIRED_CONFIDENCE:
        flags.append(f"--confidence {confidence:g}")
    return "".join(" " + f for f in flags)


def set_postprocessing(model_path, choice) -> dict:
    """Store a post-processing choice in a model file's info (``info["postprocess"]``); return the new info.

    ``choice`` is a :func:`choose_postprocessing` result (its ``postprocess`` and ``chosen_on`` are stored),
    a spec dict, or None to remove the stored choice. :class:`~brats_keras.inference.Predictor` then applies
    it to every prediction unless told otherwise (``--no-postprocess`` or explicit flags).

    A file listed in an ``ensemble.json`` beside it is changed only when its folder is what the record says
    (:func:`brats_keras.ensemble_record.ensemble_files`), and the record then gets the file's new checksum.
    """
    from .checkpoint import read_info, write_info
    from .ensemble_record import ensemble_files, listed_in_record, update_checksum

    model_path = Path(model_path)
    if model_path.is_dir():
        raise BratsInputError(f"{model_path}: an export folder keeps the post-processing of the .keras file it was "
                              "exported from: set it on that file, then export again")
    if not model_path.is_file():
        raise FileNotFoundError(f"{model_path}: model file not found")
    member = listed_in_record(model_path)
    if member:  # trusted before its bytes (and so its checksum) change
        ensemble_files(model_path.parent)
    info = read_info(model_path)
    if not info:
        raise BratsInputError(f"{model_path}: not a brats-keras model file (no preprocessing info)")
    if choice is None:
        info.pop("postprocess", None)
    else:
        info["postprocess"] = _postprocess_info(choice)
        _thresholds_apply(info, model_path)
    write_info(model_path, info)
    if member:
        update_checksum(model_path)
    return info


# ----------------------------------------------------------------------------- the fold ensemble
#: the letters that tell apart the models of one fold when an ensemble holds several recipes (fold-0a, fold-0b, ...)
MEMBER_LETTERS = "abcdefghij"


def ensemble_file_name(fold: int, member: int | None = None) -> str:
    """``fold-<k>.keras`` for a one-recipe ensemble, ``fold-<k><letter>.keras`` (a, b, ...: the recipe) for the
    ``member``-th recipe of one with several."""
    return f"fold-{fold}.keras" if member is None else f"fold-{fold}{MEMBER_LETTERS[member]}.keras"


def ensemble_file_fold(name) -> int:
    """The fold of an ensemble file named by :func:`ensemble_file_name` (``fold-3b.keras`` -> 3).

    Raises:
        ValueError for a name that is not such a file's."""
    stem = Path(name).name[len("fold-"):-len(".keras")] if str(name).endswith(".keras") else ""
    digits = stem.rstrip(MEMBER_LETTERS)
    if not Path(name).name.startswith("fold-") or not digits.isdigit() or len(stem) - len(digits) > 1:
        raise ValueError(f"{name}: not a fold file of an ensemble (fold-<k>.keras or fold-<k><letter>.keras)")
    return int(digits)


def _run_groups(runs) -> list[list]:
    """``runs`` as recipe groups: a list of run folders is one group; a list of such lists is one group each."""
    runs = list(runs)
    if runs and all(isinstance(r, (list, tuple)) for r in runs):
        return [list(g) for g in runs]
    return [runs]


def ensemble_from_runs(runs, out, checkpoint: str = "last", weights_dtype: str = "float16",
                       postprocessing=None, log=print) -> list[Path]:
    """Write the fold models of a cross-validation into one folder, ``fold-<k>.keras``: a fold ensemble that
    ``brats-keras predict --model out`` (and :class:`~brats_keras.inference.Predictor`) averages.

    ``runs`` is one recipe's fold runs, or a list of such lists, one per recipe (the same folds each): then the
    files are ``fold-<k>a.keras``, ``fold-<k>b.keras``, ... (:func:`ensemble_file_name`), the ensemble whose
    out-of-fold estimate :func:`crossval_combine` gives from the recipes' cross-validations.

    Each file holds the fold's weights without optimizer state (in float16 by default: half the size, see
    :func:`brats_keras.checkpoint.store_float16`; ``weights_dtype="int8"``: kernels in int8, a quarter, see
    :func:`brats_keras.checkpoint.store_int8`) in a model that computes in float32 (a fold trained under
    mixed precision would otherwise predict in bfloat16 or float16 wherever it is loaded, and its exports would
    not give its probabilities), its preprocessing info, and the post-processing chosen on
    the out-of-fold predictions when ``postprocessing`` (a ``postprocessing.json`` path or a
    :func:`choose_postprocessing` result) is given. ``out/ensemble.json`` records where each file came from and
    its sha256 (``"checksum"``): prediction from ``out`` uses exactly the listed, unchanged files
    (:func:`brats_keras.ensemble_record.ensemble_files`). It is written last, so an ensemble interrupted while
    writing its files is refused (a checksum differs) until written again.

    Raises:
        BratsInputError (one line, before anything is written) for a folder that is not a fold run, a missing or
        unreadable checkpoint, two runs of the same fold in one recipe, recipes of different folds, runs with
        different preprocessing, an unreadable post-processing file, a weight beyond float16's range, or an
        ``out`` holding other ``.keras`` files than fold files (prediction from ``out`` would average them too);
        files already in ``out`` are replaced one by one (temporary name, then rename), and fold files not among
        those written are removed.
    """
    from .checkpoint import check_float16_range, load_model, save_model
    from .export import float32_copy
    from .inference import check_same_preprocessing
    from .models import main_output

    groups = _run_groups(runs)
    if len(groups) > len(MEMBER_LETTERS):
        raise BratsInputError(f"{len(groups)} recipes: an ensemble holds at most {len(MEMBER_LETTERS)}")
    if isinstance(postprocessing, (str, Path)):
        postprocessing = read_postprocessing_file(postprocessing)
    loaded, group_folds, val_cases = [], [], {}
    for g, group in enumerate(groups):
        folds = {}
        for run, split, model_path in fold_runs(group, checkpoint):
            try:
                fold = int(split.get("fold"))
            except (ValueError, TypeError):  # no fold: a run trained without --folds
                raise BratsInputError(f"{run / 'split.json'}: not the split of a fold run (train --folds K --fold k)") \
                    from None
            if fold in folds:
                raise BratsInputError(f"{folds[fold]} and {run} are both fold {fold}: give one run per fold"
                                      + (" of each recipe" if len(groups) > 1 else ""))
            folds[fold] = run
            model, info = load_model(model_path, compile=False)  # BratsInputError naming a corrupt file
            name = ensemble_file_name(fold, g if len(groups) > 1 else None)
            loaded.append((fold, run, model_path, main_output(model), info, name))  # without auxiliary heads
            val_cases[name] = sorted(split.get("val", []))
        group_folds.append(folds)
    for folds, group in zip(group_folds[1:], groups[1:]):
        if set(folds) != set(group_folds[0]):
            raise BratsInputError(f"the recipe of {group[0]} has folds {sorted(folds)}, that of {groups[0][0]} "
                                  f"{sorted(group_folds[0])}: give every recipe's runs of the same folds")
    check_same_preprocessing([t[4] for t in loaded], [str(t[2]) for t in loaded])
    if postprocessing is not None:
        postprocessing = _postprocess_info(postprocessing)
        _thresholds_apply({**loaded[0][4], "postprocess": postprocessing}, loaded[0][2])
    if weights_dtype in ("float16", "int8"):  # checked for every fold before the first file is written
        for _, _, model_path, model, _, _ in loaded:
            for w in model.get_weights():
                if weights_dtype == "int8" and w.ndim >= 2:  # a kernel: int8 with a scale, any finite value
                    if not np.all(np.isfinite(w)):
                        raise BratsInputError(f"{model_path}: a kernel holds values that are not finite")
                else:
                    check_float16_range(w, f"{model_path}: a weight", " (--float32)")
    out = Path(out)
    names = {t[5] for t in loaded}
    foreign = sorted(p.name for p in out.glob("*.keras") if p.name not in names and not p.name.startswith("fold-"))
    if foreign:  # predict --model out would average them with the folds
        raise BratsInputError(f"{out}: holds {', '.join(foreign)}, which predict --model {out} would average with "
                              "the folds; choose an empty folder")
    out.mkdir(parents=True, exist_ok=True)
    written, sources = [], {}
    for fold, run, model_path, model, info, name in sorted(loaded, key=lambda t: (t[0], t[5])):
        info = {k: v for k, v in info.items() if k != "postprocess"}
        if postprocessing is not None:
            info["postprocess"] = postprocessing
        path = save_model(float32_copy(model), out / name, info, include_optimizer=False,
                          weights_dtype=weights_dtype)
        written.append(path)
        sources[path.name] = {"fold": fold, "run": str(run), "checkpoint": str(model_path), "val": val_cases[name],
                              "checksum": file_checksum(path)}
        if len(groups) > 1:
            sources[path.name]["recipe"] = MEMBER_LETTERS.index(name[len(f"fold-{fold}")])
        log(f"{path}: fold {fold} from {model_path} ({weights_dtype}, {path.stat().st_size / 1e6:.2f} MB)")
    for stale in sorted(p for p in out.glob("fold-*.keras") if p.name not in names):  # an earlier ensemble's
        stale.unlink()
        log(f"removed {stale} (not a fold of this ensemble)")
    atomic_write_json(out / "ensemble.json", {"checkpoint": checkpoint, "weights_dtype": weights_dtype,
                                              "models": sources, "postprocess": postprocessing})
    return written


def _thresholds_apply(info: dict, name) -> None:
    """Refuse (BratsInputError naming ``name``) region thresholds other than 0.5 in the post-processing of a model
    without region outputs: a softmax model takes the most probable class and would ignore them."""
    from .inference import thresholds_ignored

    if thresholds_ignored(info.get("postprocess"), info.get("output") == "regions"):
        raise BratsInputError(f"{name}: the post-processing sets region thresholds, which a model with "
                              f"{info.get('output') or 'no'} outputs ignores (chosen for a region model?)")


def _postprocess_info(choice: dict) -> dict:
    """The ``info["postprocess"]`` that :func:`set_postprocessing` would store for ``choice``."""
    from .inference import postprocessing_spec

    if not isinstance(choice, dict):
        raise BratsInputError(f"a post-processing choice is a JSON object, not {type(choice).__name__}")
    try:
        spec = postprocessing_spec(choice.get("postprocess", choice))
    except (ValueError, TypeError) as exc:
        raise BratsInputError(f"post-processing: {exc}") from None
    if "chosen_on" in choice:
        spec["chosen_on"] = {**choice["chosen_on"], "dice_before": choice.get("dice_before"),
                             "dice_after": choice.get("dice_after")}
    return spec


# ----------------------------------------------------------------------------- comparing two cross-validations
#: whether a rise of the score is an improvement (Dice) or a worsening (HD95: lower is better)
HIGHER_IS_BETTER = {"dice": True, "hd95": False}
def _bootstrap_indices(n: int, resamples: int, seed: int) -> np.ndarray:
    """``resamples`` draws of ``n`` case positions with replacement; the same draws serve every region and
    score, so each resample is one re-drawn set of cases."""
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))


def _wilcoxon(diff: np.ndarray) -> tuple:
    """Two-sided Wilcoxon signed-rank p-value of paired differences (scipy's defaults: zero differences
    dropped), or ``(None, note)`` when every difference is zero."""
    import warnings

    from scipy.stats import wilcoxon

    if not np.any(diff):
        return None, "all differences are zero"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(wilcoxon(diff).pvalue), None


def _verdict(low: float, high: float, higher_is_better: bool) -> str:
    if low <= 0.0 <= high:
        return "no clear difference"
    return "B better" if (low > 0) == higher_is_better else "B worse"


def _region_verdict(dice: str, hd95: str) -> str:
    verdicts = {dice, hd95} - {"no clear difference"}
    if not verdicts:
        return "no clear difference"
    return verdicts.pop() if len(verdicts) == 1 else "mixed"


def compare_crossval(a, b, common: bool = False, postprocessed: bool = False, resamples: int = 10_000,
                     seed: int = 0, confidence: float = 0.95) -> dict:
    """A paired comparison of two cross-validations of the same cases: ``a`` the baseline, ``b`` the candidate.

    With 28 cases and a per-case ET Dice standard deviation near 0.27, a difference of the means of 0.01-0.02
    can be noise; pairing each case with itself removes the spread between cases. Per region (WT, TC, ET) and
    score (Dice, HD95): the means of A and B, the mean paired difference B - A, its ``confidence`` interval by a
    percentile bootstrap over cases (``resamples`` draws of the cases with replacement, from ``seed``: the same
    call gives the same interval), the two-sided Wilcoxon signed-rank p-value (``scipy.stats.wilcoxon``; ``None``
    with a note when every difference is zero) and the number of cases where B is better, worse or tied. Higher
    Dice is better, lower HD95 is better. A score's verdict is "B better" or "B worse" when its interval
    excludes 0, else "no clear difference"; a region's verdict combines its two scores ("mixed" when they
    disagree).

    Args:
        a, b: ``crossval`` output folders or their JSON files (:func:`read_crossval`), or the tables
            themselves (dicts as :func:`crossval_predict` returns them).
        common: compare only the cases both tables hold (the others are listed under ``"dropped"``) instead of
            refusing tables of different cases.
        postprocessed: read ``crossval_postprocessed.json`` from a folder instead of ``crossval.json``.
    Returns:
        ``{"a", "b", "cases" (compared, sorted), "n_cases", "dropped": {"only_a", "only_b"}, "failed": {case:
        reason}, "resamples", "seed", "confidence", "regions": {region: {"dice": {"mean_a", "mean_b",
        "mean_diff", "ci", "wilcoxon_p", "wilcoxon_note", "better", "worse", "tied", "verdict"}, "hd95": {...},
        "verdict"}}, "differences": {case: {region: {"dice", "hd95"}}}}``.
    Raises:
        BratsInputError (one line): an unreadable table; tables of different cases without ``common``
        (naming the cases in one only); no case left to compare.
    """
    if int(resamples) < 1:
        raise BratsInputError(f"resamples must be at least 1, not {resamples}")
    if not 0.0 < confidence < 1.0:
        raise BratsInputError(f"confidence must be between 0 and 1, not {confidence}")
    tables, names = [], []
    for table, label in ((a, "A"), (b, "B")):
        if isinstance(table, dict):
            _check_table(table, f"table {label}")
            tables.append(table)
            names.append(f"table {label}")
        else:
            path = crossval_file(table, postprocessed)
            tables.append(read_crossval(path, postprocessed, scores_only=True))
            names.append(str(path))
    ta, tb = tables
    ids_a = set(ta["cases"]) | set(ta.get("failed", {}))
    ids_b = set(tb["cases"]) | set(tb.get("failed", {}))
    only_a, only_b = sorted(ids_a - ids_b), sorted(ids_b - ids_a)
    if (only_a or only_b) and not common:
        parts = [f"only in {name}: {', '.join(ids)}" for name, ids in ((names[0], only_a), (names[1], only_b)) if ids]
        raise BratsInputError(f"the two cross-validations do not cover the same cases ({'; '.join(parts)}): "
                              f"give --common to compare the {len(ids_a & ids_b)} shared cases")
    failed = {}
    for name, table in zip(names, tables):
        for cid, reason in table.get("failed", {}).items():
            if cid in ids_a & ids_b:
                failed.setdefault(cid, f"{name}: {str(reason).splitlines()[0] if reason else 'failed'}")
    cases = sorted((ids_a & ids_b) - set(failed))
    if not cases:
        raise BratsInputError(f"no case to compare between {names[0]} and {names[1]}"
                              + (f" ({len(failed)} failed)" if failed else ""))
    regions, differences = {}, {cid: {} for cid in cases}
    for r in REGION_NAMES:
        regions[r] = {}
        for s in SCORES:
            va = np.array([float(ta["cases"][c][r][s]) for c in cases])
            vb = np.array([float(tb["cases"][c][r][s]) for c in cases])
            diff = vb - va
            low, high = paired_interval(diff, confidence, resamples, seed)  # the same seeded draws for every score
            p, note = _wilcoxon(diff)
            sign = 1.0 if HIGHER_IS_BETTER[s] else -1.0
            regions[r][s] = {"mean_a": float(va.mean()), "mean_b": float(vb.mean()), "mean_diff": float(diff.mean()),
                             "ci": [low, high], "wilcoxon_p": p, "wilcoxon_note": note,
                             "better": int(np.sum(sign * diff > 0)), "worse": int(np.sum(sign * diff < 0)),
                             "tied": int(np.sum(diff == 0)), "verdict": _verdict(low, high, HIGHER_IS_BETTER[s])}
            for c, d in zip(cases, diff):
                differences[c].setdefault(r, {})[s] = float(d)
        regions[r]["verdict"] = _region_verdict(regions[r]["dice"]["verdict"], regions[r]["hd95"]["verdict"])
    return {"a": names[0], "b": names[1], "table": _TABLES[bool(postprocessed)], "cases": cases,
            "n_cases": len(cases), "dropped": {"only_a": only_a, "only_b": only_b},
            "failed": dict(sorted(failed.items())),
            "resamples": int(resamples), "seed": seed, "confidence": confidence, "regions": regions,
            "differences": differences}


def format_comparison(result: dict) -> str:
    """A text table of a :func:`compare_crossval` result, then one verdict line per region."""
    level = f"{100 * result['confidence']:g}%"
    lines = [f"A (baseline):  {result['a']}", f"B (candidate): {result['b']}"]
    dropped = result["dropped"]["only_a"] + result["dropped"]["only_b"]
    if dropped:
        lines.append(f"{len(dropped)} case(s) in one table only, left out (--common): {', '.join(dropped)}")
    if result["failed"]:
        lines.append(f"{len(result['failed'])} case(s) failed in A or B, left out: "
                     + "; ".join(f"{c} ({why})" for c, why in result["failed"].items()))
    lines.append(f"{result['n_cases']} cases, paired: B - A per case; {level} interval by a bootstrap over cases "
                 f"({result['resamples']} resamples, seed {result['seed']}); Wilcoxon signed-rank p")
    head = (f"{'region':<6} {'score':<9} {'mean A':>8} {'mean B':>8} {'B - A':>8}  {(level + ' CI'):^20}  "
            f"{'p':>6}  {'better':>6} {'worse':>5} {'tied':>4}")
    lines += [head, "-" * len(head)]
    no_test = []
    for r, scores in result["regions"].items():
        for s in SCORES:
            c = scores[s]
            digits, label = (4, "Dice") if s == "dice" else (2, "HD95 (mm)")
            p = "-" if c["wilcoxon_p"] is None else f"{c['wilcoxon_p']:.3g}"
            if c["wilcoxon_p"] is None:
                no_test.append(f"{r} {label.split()[0]}")
            ci = f"[{c['ci'][0]:+.{digits}f}, {c['ci'][1]:+.{digits}f}]"
            lines.append(f"{r:<6} {label:<9} {c['mean_a']:>8.{digits}f} {c['mean_b']:>8.{digits}f} "
                         f"{c['mean_diff']:>+8.{digits}f}  {ci:^20}  {p:>6}  {c['better']:>6} {c['worse']:>5} "
                         f"{c['tied']:>4}")
    lines.append("-" * len(head))
    if no_test:
        lines.append(f"p not computed (-) where every difference is zero: {', '.join(no_test)}")
    lines.append("better / worse: cases where B has the higher Dice or the lower HD95 / the reverse")
    for r, scores in result["regions"].items():
        d, h = scores["dice"], scores["hd95"]
        lines.append(f"{r}: {scores['verdict']} (Dice {d['mean_diff']:+.4f}: {d['verdict']}; "
                     f"HD95 {h['mean_diff']:+.2f} mm: {h['verdict']})")
    return "\n".join(lines)
