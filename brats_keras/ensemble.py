"""Fold ensembles: the fold models of a cross-validation written into one folder with its ``ensemble.json``
(``ensemble_from_runs``), and the record read back as the plan of which file predicts which cases
(``ensemble_folds``).

``brats_keras.ensemble_record`` is the small reader of ``ensemble.json`` that the shipped files use; this module
writes the record and checks it as the record of one cross-validation.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .data import fold_runs
from .io import BratsInputError, atomic_write_json, file_checksum
from .postprocessing import _postprocess_info, _thresholds_apply, read_postprocessing_file

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
    out-of-fold estimate :func:`brats_keras.crossval.crossval_combine` gives from the recipes' cross-validations.

    Each file holds the fold's weights without optimizer state (in float16 by default: half the size, see
    :func:`brats_keras.checkpoint.store_float16`; ``weights_dtype="int8"``: kernels in int8, a quarter, see
    :func:`brats_keras.checkpoint.store_int8`) in a model that computes in float32 (a fold trained under
    mixed precision would otherwise predict in bfloat16 or float16 wherever it is loaded, and its exports would
    not give its probabilities), its preprocessing info, and the post-processing chosen on
    the out-of-fold predictions when ``postprocessing`` (a ``postprocessing.json`` path or a
    :func:`~brats_keras.postprocessing.choose_postprocessing` result) is given. ``out/ensemble.json`` records where
    each file came from and its sha256 (``"checksum"``), and the models' task (``"task"``): prediction from ``out``
    uses exactly the listed, unchanged files
    (:func:`brats_keras.ensemble_record.ensemble_files`). It is written last, so an ensemble interrupted while
    writing its files is refused (a checksum differs) until written again.

    Raises:
        BratsInputError (one line, before anything is written) for a folder that is not a fold run, a missing or
        unreadable checkpoint, two runs of the same fold in one recipe, recipes of different folds, runs with
        different preprocessing or of different tasks, an unreadable post-processing file, a weight beyond float16's
        range, or an
        ``out`` holding other ``.keras`` files than fold files (prediction from ``out`` would average them too);
        files already in ``out`` are replaced one by one (temporary name, then rename), and fold files not among
        those written are removed.
    """
    from .checkpoint import check_float16_range, check_same_task, info_task, load_model, save_model
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
    check_same_task([t[4] for t in loaded], [str(t[2]) for t in loaded])
    if postprocessing is not None:
        postprocessing = _postprocess_info(postprocessing, loaded[0][4].get("task"))
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
                                              "models": sources, "postprocess": postprocessing,
                                              "task": info_task(loaded[0][4]).to_dict()})
    return written


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
