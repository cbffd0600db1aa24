"""One worker of a multi-worker training run on localhost, and the single-process reference it is compared with.

    python tests/scripts/multiworker.py DATA OUT RECORD INDEX COUNT PORTS

sets TF_CONFIG (TensorFlow) or Keras' KERAS_DISTRIBUTION_* variables (JAX; KERAS_BACKEND picks the engine),
trains with ``train(TrainConfig(distribute=True, **CFG))`` and writes to RECORD (an .npz) the weights before
and after training and every training batch it was handed, with the case ids it could draw them from.
With BRATS_KERAS_BLOCK_TENSORFLOW=1 any import of TensorFlow fails (the JAX run must not need it).

:func:`reference` joins the workers' batches of each step into the global batch and trains the same initial
weights on them with ``train_on_batch`` in one process (tests/test_distributed.py calls it).
"""
import json
import os
import sys

import numpy as np

#: the run every worker trains: tiny U-Net, 3 steps of a global batch of 2, one validation batch; the poly
#: schedule with a time limit sets the learning rate from the minutes spent, which every worker measures on
#: its own clock (they must agree on one learning rate, or their weights part)
CFG = dict(base_filters=4, depth=2, norm="instance", output="regions", loss="dice+bce", patch_size=16,
           batch_size=2, epochs=1, steps_per_epoch=3, val_steps=1, val=1, lr=1e-2, mixed_precision="off",
           lr_schedule="poly", time_limit=60.0, verbose=0)


def worker(data, out, record, index, count, ports):
    if os.environ.get("KERAS_BACKEND", "tensorflow") == "tensorflow":
        os.environ["TF_CONFIG"] = json.dumps({"cluster": {"worker": [f"localhost:{p}" for p in ports]},
                                              "task": {"type": "worker", "index": index}})
    else:
        os.environ.update(KERAS_DISTRIBUTION_JOB_ADDRESSES=f"localhost:{ports[0]}",
                          KERAS_DISTRIBUTION_NUM_PROCESSES=str(count), KERAS_DISTRIBUTION_PROCESS_ID=str(index))
    if os.environ.get("BRATS_KERAS_BLOCK_TENSORFLOW") == "1":
        sys.modules["tensorflow"] = None  # any import of it fails
    import brats_keras  # noqa: F401
    import keras

    from brats_keras.data import PatchDataset
    from brats_keras.training import TrainConfig, train

    calls = []
    original = PatchDataset.__getitem__

    def recording(self, idx):
        x, y = original(self, idx)
        if self.augment:  # a training batch (validation batches are not augmented)
            calls.append((x, y, list(self.cases.case_ids)))
        return x, y

    PatchDataset.__getitem__ = recording
    start = {}

    class Start(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            start["weights"] = [np.array(w) for w in self.model.get_weights()]

    res = train(TrainConfig(data=data, out=out, distribute=True, **CFG), extra_callbacks=[Start()])
    # the steps' batches are the last calls, in their order (before them, Keras may read a batch to build the
    # model; fit may shuffle the order of the indices)
    trained = calls[-CFG["steps_per_epoch"]:]
    np.savez(record, n_weights=len(start["weights"]),
             **{f"w0_{i}": w for i, w in enumerate(start["weights"])},
             **{f"w1_{i}": np.array(w) for i, w in enumerate(res["model"].get_weights())},
             **{f"x_{i}": b[0] for i, b in enumerate(trained)}, **{f"y_{i}": b[1] for i, b in enumerate(trained)},
             steps=np.arange(len(trained)), cases=np.array(trained[0][2]))


def reference(data, run, records):
    """Single-process training on the workers' joined batches from their initial weights.

    Returns:
        ``(losses of each step, validation loss after training, weights)``; the validation batch is the one
        ``train`` draws (seed + 1, the split in ``run/split.json``), the learning rate the one in ``run/log.csv``.
    """
    import brats_keras  # noqa: F401
    import keras

    from brats_keras.data import PatchDataset
    from brats_keras.training import TrainConfig, build_from_config, compile_model

    recs = [np.load(r) for r in records]
    cfg = TrainConfig(data=data, **CFG)
    keras.utils.set_random_seed(0)
    model = build_from_config(cfg, recs[0]["x_0"].shape[-1])
    compile_model(model, cfg, "float32")
    model.set_weights([recs[0][f"w0_{i}"] for i in range(int(recs[0]["n_weights"]))])
    from brats_keras.runs import read_log

    model.optimizer.learning_rate = read_log(run)[0]["learning_rate"]  # the poly rate the workers agreed on
    losses = []
    for i in recs[0]["steps"]:
        x = np.concatenate([r[f"x_{i}"] for r in recs])
        y = np.concatenate([r[f"y_{i}"] for r in recs])
        losses.append(float(model.train_on_batch(x, y, return_dict=True)["loss"]))
    with open(os.path.join(run, "split.json")) as f:
        val_ids = json.load(f)["val"]
    x, y = PatchDataset(data, val_ids, patch_size=cfg.patch_size, batch_size=cfg.batch_size, output=cfg.output,
                        augment=False, steps_per_epoch=1, seed=cfg.seed + 1)[0]
    val_loss = float(model.evaluate(x, y, batch_size=cfg.batch_size, verbose=0, return_dict=True)["loss"])
    return losses, val_loss, [np.array(w) for w in model.get_weights()]


if __name__ == "__main__":
    from brats_keras.pool import _end_with_parent

    _end_with_parent(os.getppid())  # a killed pytest takes its workers with it (they outlived it before)
    data, out, record, index, count, ports = sys.argv[1:7]
    worker(data, out, record, int(index), int(count), ports.split(","))
    print("WORKER DONE", index, flush=True)
