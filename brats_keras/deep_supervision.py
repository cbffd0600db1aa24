"""Deep supervision: training a U-Net on auxiliary outputs of its lower decoder levels as well.

``brats-keras train --deep-supervision N`` (``TrainConfig(deep_supervision=N)``) builds a U-Net
(:data:`brats_keras.models.DEEP_SUPERVISION_MODELS`) with outputs ``[main, aux1, ..., auxN]``: ``aux k`` comes
from the decoder level at ``1 / 2**k`` of the full resolution, up-sampled to the patch size, so every output is
compared with the same label patch and the data pipeline stays as it is (each batch's targets are repeated,
:func:`repeat_targets`). The loss is the run's loss on every output, weighted 1, 1/2, 1/4, ... normalised to sum 1
(:func:`loss_weights`); the Dice metrics and the whole-case validation look at the main output only, under
their usual log names (:class:`MainOutputLogs`), beside each output's own loss (``head_sigmoid_loss``,
``aux1_sigmoid_loss``, ...).

Only training sees the auxiliary heads: ``checkpoints/last.keras`` (and ``best.keras``) keep them, with the
optimizer state, so that ``--resume`` continues exactly; whatever predicts, exports or ships a model takes
:func:`brats_keras.models.main_output`, one output.
"""
from __future__ import annotations

import keras

from .data import WrappedDataset


def loss_weights(n: int) -> list[float]:
    """The weights of the main output and ``n`` auxiliary outputs: 1, 1/2, 1/4, ... normalised to sum 1.

    ``loss_weights(2) == [4/7, 2/7, 1/7]``; ``loss_weights(0) == [1.0]``.
    """
    raw = [0.5**k for k in range(n + 1)]
    return [w / sum(raw) for w in raw]


def check_config(cfg) -> int:
    """``cfg.deep_supervision`` if the run's model can have that many auxiliary outputs; else ValueError in one
    line (not a whole number of outputs, a model without deep supervision, or ``N >= depth``)."""
    from .models import DEEP_SUPERVISION_MODELS
    from .models.unet3d import check_deep_supervision

    n = cfg.deep_supervision
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"--deep-supervision must be a number of auxiliary outputs (0 = off), got {n!r}")
    if n and cfg.model not in DEEP_SUPERVISION_MODELS:
        raise ValueError(f"--deep-supervision works with --model {' or '.join(DEEP_SUPERVISION_MODELS)} only, "
                         f"not {cfg.model}")
    if n and not isinstance(cfg.depth, bool) and isinstance(cfg.depth, int) and cfg.depth >= 1:
        check_deep_supervision(n, cfg.depth)  # else the model builder names the bad depth itself
    return n


def compile_arguments(loss, metrics, n_outputs: int) -> dict:
    """``model.compile`` keywords for a model with ``n_outputs`` outputs, the main one first: ``loss`` on each
    with :func:`loss_weights`, ``metrics`` on the main output only (one output: ``loss`` and ``metrics`` as they
    are, no weights)."""
    if n_outputs == 1:
        return {"loss": loss, "metrics": metrics}
    return {"loss": [loss] * n_outputs, "loss_weights": loss_weights(n_outputs - 1),
            "metrics": [metrics] + [None] * (n_outputs - 1)}


class RepeatTargets(WrappedDataset):
    """The batches of ``dataset`` (a ``keras.utils.PyDataset`` giving ``(x, y)``) as ``(x, (y,) * n)``: one copy
    of the label patch for each output of a deep-supervision model. Same length, epochs and loader threads."""

    def __init__(self, dataset, n: int):
        super().__init__(dataset)
        self.n = int(n)

    def __getitem__(self, idx):
        x, y = self.dataset[idx]
        return x, (y,) * self.n


def repeat_targets(feed, n: int):
    """``feed`` (a PyDataset or a ``tf.data.Dataset`` of ``(x, y)``) giving ``(x, (y,) * n)``; ``feed`` itself
    when ``n`` is 1."""
    if n == 1:
        return feed
    if isinstance(feed, keras.utils.PyDataset):
        return RepeatTargets(feed, n)
    return feed.map(lambda x, y: (x, (y,) * n))  # a tf.data.Dataset (--tf-data)


class MainOutputLogs(keras.callbacks.Callback):
    """Gives the main output's metrics their single-output names in the epoch logs: Keras calls them
    ``<output>_dice_WT`` (``val_<output>_dice_WT``) on a model with several outputs; these become ``dice_WT``
    (``val_dice_WT``), so log.csv, the curves, TensorBoard and the checkpoint choice read as without deep
    supervision. Each output's loss keeps its name (``head_sigmoid_loss``, ``aux1_sigmoid_loss``); ``loss`` is
    the weighted sum. Put it before every other callback (they all get the same logs)."""

    def __init__(self, main_name: str):
        super().__init__()
        self.renames = ((f"{main_name}_", ""), (f"val_{main_name}_", "val_"))

    def on_epoch_end(self, epoch, logs=None):
        if not logs:
            return
        for key in list(logs):
            for prefix, new in self.renames:
                if key.startswith(prefix) and not key.endswith("_loss"):
                    logs[new + key[len(prefix):]] = logs.pop(key)
                    break
