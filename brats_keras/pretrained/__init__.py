"""The model trained on real BraTS cases that ships with brats-keras (see MODEL_CARD.md here)."""
from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent
MODEL_FILE = HERE / "model.keras"
CARD_FILE = HERE / "MODEL_CARD.md"
CARD_JSON = HERE / "model_card.json"


def pretrained_path() -> Path:
    """Path of the shipped model file: the one place that finds it (``brats_keras.models.load_pretrained``,
    ``--init-from pretrained``, ``brats-keras export`` and prediction without ``--model`` all come here).

    ``model.keras``; where a fold ensemble ships in its place (``fold-*.keras``), its first fold: one network to
    fine-tune or export (prediction without ``--model`` uses all folds, :func:`pretrained_paths`).

    Raises:
        FileNotFoundError in one line naming the file when this installation lacks it.
    """
    folds = sorted(HERE.glob("fold-*.keras"))
    if not MODEL_FILE.exists() and folds:
        return folds[0]
    if not MODEL_FILE.exists():
        raise FileNotFoundError(f"{MODEL_FILE}: the pretrained model is not installed with this copy of brats-keras "
                                f"(reinstall brats-keras, or train a model and load it with "
                                f"brats_keras.models.load_model(path))")
    return MODEL_FILE


def pretrained_paths() -> list[Path]:
    """The shipped model file(s) prediction uses when given no ``--model``: the fold ensemble
    ``fold-*.keras`` here when one ships (their probabilities are averaged), else ``[model.keras]``.

    ``load_pretrained()`` and ``--init-from pretrained`` use one network, :func:`pretrained_path`.
    """
    folds = sorted(HERE.glob("fold-*.keras"))
    return folds or [pretrained_path()]


def model_card() -> dict:
    """The machine-readable model card (data, split, preprocessing, validation scores)."""
    import json

    return json.loads(CARD_JSON.read_text())
