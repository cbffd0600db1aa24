"""The model trained on real BraTS cases that ships with brats-keras (see MODEL_CARD.md here)."""
from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent
MODEL_FILE = HERE / "model.keras"
CARD_FILE = HERE / "MODEL_CARD.md"
CARD_JSON = HERE / "model_card.json"


def pretrained_path() -> Path:
    """Path of the shipped model file; FileNotFoundError if this installation lacks it."""
    if not MODEL_FILE.exists():
        raise FileNotFoundError(f"{MODEL_FILE}: the pretrained model is not installed with this copy of brats-keras")
    return MODEL_FILE


def pretrained_paths() -> list[Path]:
    """The shipped model file(s) prediction uses when given no ``--model``: the fold ensemble
    ``fold-*.keras`` here when one ships (their probabilities are averaged), else ``[model.keras]``.

    ``load_pretrained()`` and ``--init-from pretrained`` always use ``model.keras`` (one network to fine-tune).
    """
    folds = sorted(HERE.glob("fold-*.keras"))
    return folds or [pretrained_path()]


def model_card() -> dict:
    """The machine-readable model card (data, split, preprocessing, validation scores)."""
    import json

    return json.loads(CARD_JSON.read_text())
