"""The model trained on real BraTS cases that ships with brats-keras (see MODEL_CARD.md here)."""
from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent
MODEL_FILE = HERE / "model.keras"
CARD_FILE = HERE / "MODEL_CARD.md"
CARD_JSON = HERE / "model_card.json"


def pretrained_path() -> Path:
    """Path of the shipped model file: the one place that finds it (``brats_keras.checkpoint.load_pretrained``,
    ``--init-from pretrained``, ``brats-keras export`` and prediction without ``--model`` all come here).

    ``model.keras``; where a fold ensemble ships in its place (``fold-*.keras`` listed in ``ensemble.json``), its
    first fold: one network to fine-tune or export (prediction without ``--model`` uses all folds,
    :func:`pretrained_paths`).

    Raises:
        FileNotFoundError in one line naming the file when this installation lacks it; BratsInputError as
        :func:`pretrained_paths` for an ensemble that is not what its ``ensemble.json`` says.
    """
    return pretrained_paths()[0]


def pretrained_paths() -> list[Path]:
    """The shipped model file(s) prediction uses when given no ``--model``: the fold ensemble that
    ``ensemble.json`` here lists when one ships (their probabilities are averaged), else ``[model.keras]``.

    ``load_pretrained()`` and ``--init-from pretrained`` use one network, :func:`pretrained_path`.

    Raises:
        FileNotFoundError in one line naming the file when this installation lacks the model (or the record of its
        ensemble); BratsInputError (one line naming the file) when a file the record lists is missing, a ``.keras``
        file here is not listed, or a file's sha256 is not the recorded one
        (:func:`brats_keras.ensemble_record.ensemble_files`).
    """
    from ..ensemble_record import RECORD, ensemble_files, is_ensemble

    if is_ensemble(HERE):
        return ensemble_files(HERE)
    if any(HERE.glob("fold-*.keras")):
        raise FileNotFoundError(f"{HERE / RECORD}: the record of the shipped fold ensemble is missing (reinstall "
                                f"brats-keras)")
    if not MODEL_FILE.exists():
        raise FileNotFoundError(f"{MODEL_FILE}: the pretrained model is not installed with this copy of brats-keras "
                                f"(reinstall brats-keras, or train a model and load it with "
                                f"brats_keras.checkpoint.load_model(path))")
    return [MODEL_FILE]


def model_card() -> dict:
    """The machine-readable model card (data, split, preprocessing, validation scores)."""
    import json

    return json.loads(CARD_JSON.read_text())


def card_fold_file(card: dict, fold) -> str:
    """The file name of fold ``fold`` in a fold ensemble's ``card`` (its ``model_files``).

    Raises:
        KeyError in one line naming the card and the fold when the card lists no file of that fold.
    """
    name = next((f["file"] for f in card.get("model_files", []) if int(f["fold"]) == int(fold)), None)
    if name is None:
        raise KeyError(f"{CARD_JSON}: the card lists no file of fold {fold} under model_files")
    return name


def card_file_fold(card: dict, file) -> int:
    """The fold whose network ``file`` (a path or a name) is, in a fold ensemble's ``card`` (its ``model_files``).

    Raises:
        KeyError in one line naming the card and the file when the card lists no such file.
    """
    name = Path(file).name
    fold = next((f["fold"] for f in card.get("model_files", []) if f["file"] == name), None)
    if fold is None:
        raise KeyError(f"{CARD_JSON}: the card lists no {name} under model_files: which cases it held out is unknown")
    return int(fold)


def card_case(case_id: str) -> dict:
    """What the model card says the shipped model scores on one real case, and how to get that score again:
    ``{"model": file, "fold": k or None, "scores": {region: {"dice", "hd95", ...}}, "tta": bool, "overlap": float}``.

    A single ``model.keras`` scored its validation cases (``validation.cases``). A fold ensemble's card gives each
    case's out-of-fold score with the chosen post-processing (``crossval_postprocessed.cases``): ``model`` is the
    file of the fold that held the case out, which stores that post-processing; ``models`` lists that fold's files
    (one per recipe of an ensemble of several recipes, whose out-of-fold score is their mean: then
    ``Predictor(models, ...)`` gives it; ``model`` is the first). ``Predictor(model, tta=...,
    overlap=...)`` on the case gives these scores back (float16 storage and float32 computing move Dice by about
    the card's ``check.max_dice_difference``, measured on the cases it checked).

    Raises:
        KeyError in one line naming the case when the card scored no such case.
    """
    card = model_card()
    if card.get("kind") != "fold ensemble":
        cases = card["validation"]["cases"]
        if case_id not in cases:
            raise KeyError(f"{CARD_JSON}: the shipped model's card scores no case {case_id!r} "
                           f"(its validation cases: {', '.join(sorted(cases))})")
        return {"model": pretrained_path(), "models": [pretrained_path()], "fold": None, "scores": cases[case_id],
                "tta": False, "overlap": 0.5}
    cases = card["crossval_postprocessed"]["cases"]
    if case_id not in cases:
        raise KeyError(f"{CARD_JSON}: the shipped ensemble's card scores no case {case_id!r} out of fold")
    fold = int(cases[case_id]["fold"])
    try:
        name = card_fold_file(card, fold)
    except KeyError as exc:
        raise KeyError(f"{exc.args[0]} (it scores {case_id!r} with that fold)") from None
    members = [HERE / f["file"] for f in card.get("model_files", []) if int(f["fold"]) == fold]
    return {"model": HERE / name, "models": members, "fold": fold,
            "scores": {r: cases[case_id][r] for r in ("WT", "TC", "ET")},
            "tta": bool(card["crossval"].get("tta", False)), "overlap": float(card["crossval"].get("overlap", 0.5))}
