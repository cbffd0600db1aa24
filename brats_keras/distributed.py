"""Training on several workers (processes, GPUs, machines): who is who, which cases each reads, and the loop.

``brats-keras train --distribute`` uses this module. One *worker* is one process; worker 0 is the *chief*,
the only one that writes the run folder (config, split, checkpoints, log, TensorBoard, figures).

TensorFlow
    ``TF_CONFIG`` set (or a SLURM job step of several tasks, through TensorFlow's ``SlurmClusterResolver``):
    ``tf.distribute.MultiWorkerMirroredStrategy``. Keras 3's ``fit`` cannot drive that strategy (it fails
    before the first step in ``_maybe_symbolic_build``, which asks the strategy to reduce a nest of
    per-replica batches: keras-team/keras#20585, still open for Keras 3.15), so :func:`fit_tensorflow` runs
    the epochs itself: every step is Keras' own ``model.train_step`` under ``strategy.run`` (the loss is
    scaled by the replica count and the Keras optimizer all-reduces the gradients), fed by
    ``strategy.distribute_datasets_from_function`` with each worker's own patch stream, with the usual
    Keras callbacks around it. Without ``TF_CONFIG``: ``MirroredStrategy`` over the local GPUs and ``fit``.
JAX
    ``KERAS_DISTRIBUTION_NUM_PROCESSES`` > 1 (with ``KERAS_DISTRIBUTION_JOB_ADDRESSES``, the coordinator's
    ``host:port``, and ``KERAS_DISTRIBUTION_PROCESS_ID``: Keras' own variables) or a SLURM job step of several
    tasks (JAX reads ``SLURM_*`` itself): ``keras.distribution.initialize`` (``jax.distributed.initialize``;
    CPU collectives through gloo), then ``keras.distribution.DataParallel`` over every process's devices and
    ``fit``: each process hands its local batch, Keras assembles the global one.

Every worker trains on its own shard of the training cases (:func:`shard`) with its own seed, and its
batch is the global ``--batch-size`` divided by the number of replicas, so the global batch does not
change with the number of workers. Validation batches are the single-process ones, cut in slices
(:class:`BatchSlice`), so the validation loss is the one a single process computes.
"""
from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass

from .data import WrappedDataset
from .io import BratsInputError

#: seed offset between workers' patch streams (worker 0 keeps the run's seed)
SEED_STRIDE = 100_003


@dataclass
class Workers:
    """This process's place among the workers of a run.

    ``count`` workers (processes) with ``replicas`` model replicas in all (devices); this is worker ``index``
    (0 is the chief). ``strategy`` is the ``tf.distribute`` strategy (TensorFlow) or None.
    """

    count: int = 1
    index: int = 0
    replicas: int = 1
    engine: str = ""
    strategy: object = None

    @property
    def is_chief(self) -> bool:
        return self.index == 0

    @property
    def multi(self) -> bool:
        return self.count > 1

    def local_batch(self, global_batch: int) -> int:
        """Patches per replica for a global batch of ``global_batch``; refused when it does not divide."""
        if global_batch % self.replicas:
            raise BratsInputError(f"--batch-size {global_batch} cannot be shared by {self.replicas} replicas "
                                  f"({self.count} workers): use a multiple of {self.replicas}")
        return global_batch // self.replicas

    def seed(self, seed: int) -> int:
        return int(seed) + SEED_STRIDE * self.index


def free_ports(n: int) -> list[int]:
    """``n`` TCP ports free on this machine now, for workers started on localhost (tests, benchmarks, a
    trial run before a cluster)."""
    import socket

    socks = [socket.socket() for _ in range(n)]
    for sock in socks:
        sock.bind(("localhost", 0))
    ports = [sock.getsockname()[1] for sock in socks]
    for sock in socks:
        sock.close()
    return ports


def shard(case_ids, index: int, count: int) -> list:
    """Worker ``index``'s cases of ``count`` workers: every ``count``-th of the sorted ids, from ``index``.

    Raises:
        BratsInputError when there are fewer cases than workers (a worker would have none).
    """
    ids = sorted(case_ids)
    if len(ids) < count:
        raise BratsInputError(f"{len(ids)} training case(s) cannot be shared by {count} workers: "
                              f"every worker needs at least one")
    return ids[index::count]


def _int_env(name):
    value = os.environ.get(name)
    if value in (None, ""):
        return None
    try:
        return int(value)
    except ValueError:
        raise BratsInputError(f"environment variable {name}={value!r} is not a whole number") from None


def _slurm_tasks() -> int:
    return _int_env("SLURM_NTASKS") or 1 if "SLURM_PROCID" in os.environ else 1


def jax_process_env() -> tuple[int, int] | None:
    """``(process count, process id)`` of a multi-process JAX run from the environment, or None for one process."""
    n = _int_env("KERAS_DISTRIBUTION_NUM_PROCESSES")
    if n is not None:
        if n < 1:
            raise BratsInputError(f"KERAS_DISTRIBUTION_NUM_PROCESSES={n}: at least 1")
        pid = _int_env("KERAS_DISTRIBUTION_PROCESS_ID")
        if n > 1 and (pid is None or not 0 <= pid < n):
            raise BratsInputError(f"KERAS_DISTRIBUTION_PROCESS_ID={os.environ.get('KERAS_DISTRIBUTION_PROCESS_ID')!r}"
                                  f": give this process's id, 0 to {n - 1}")
        if n > 1 and not os.environ.get("KERAS_DISTRIBUTION_JOB_ADDRESSES"):
            raise BratsInputError("KERAS_DISTRIBUTION_JOB_ADDRESSES: give the coordinator's host:port "
                                  "(process 0) to every process")
        return (n, pid or 0) if n > 1 else None
    if _slurm_tasks() > 1:
        return _slurm_tasks(), _int_env("SLURM_PROCID") or 0
    return None


def jax_processes() -> int:
    """How many JAX processes this run has (1 unless JAX's distributed system was started)."""
    import sys

    jax = sys.modules.get("jax")
    if jax is None or not jax.distributed.is_initialized():
        return 1
    return jax.process_count()


def tf_cluster_resolver():
    """TensorFlow's cluster resolver for this process: from ``TF_CONFIG``, else from SLURM, else None."""
    import tensorflow as tf

    if "TF_CONFIG" in os.environ:
        try:
            spec = json.loads(os.environ["TF_CONFIG"])
        except ValueError as exc:
            raise BratsInputError(f"TF_CONFIG is not JSON ({exc})") from None
        cluster = spec.get("cluster") if isinstance(spec, dict) else None
        task = spec.get("task") if isinstance(spec, dict) else None
        if not isinstance(cluster, dict) or not isinstance(task, dict) or not cluster.get("worker") and \
                not cluster.get("chief"):
            raise BratsInputError('TF_CONFIG needs {"cluster": {"worker": ["host:port", ...]}, '
                                  '"task": {"type": "worker", "index": N}}')
        if set(cluster) - {"worker", "chief"}:
            raise BratsInputError(f"TF_CONFIG: only 'worker' (and 'chief') tasks are supported, not "
                                  f"{', '.join(sorted(set(cluster) - {'worker', 'chief'}))}")
        check_tf_task(cluster, task)
        return tf.distribute.cluster_resolver.TFConfigClusterResolver()
    if _slurm_tasks() > 1:
        return tf.distribute.cluster_resolver.SlurmClusterResolver()
    return None


def check_tf_task(cluster: dict, task: dict) -> None:
    """TF_CONFIG's ``cluster`` lists each task type's addresses (``["host:port", ...]``) and its ``task`` is one of
    them (a type of the cluster, an index within its list); BratsInputError in one line otherwise."""
    for kind, addresses in cluster.items():
        if not isinstance(addresses, list) or not all(isinstance(a, str) and a for a in addresses):
            got = "a string, " if isinstance(addresses, str) else ""
            raise BratsInputError(f"TF_CONFIG: cluster {kind!r} must be a list of \"host:port\" addresses, got "
                                  f"{got}{json.dumps(addresses)}")
    kind, index = task.get("type"), task.get("index")
    if kind not in cluster:
        raise BratsInputError(f"TF_CONFIG: task type {json.dumps(kind)} is not in the cluster: use "
                              f"{' or '.join(map(repr, sorted(cluster)))}")
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(cluster[kind]):
        raise BratsInputError(f"TF_CONFIG: task index {json.dumps(index)} is not a {kind} of the cluster: give "
                              f"a whole number from 0 to {len(cluster[kind]) - 1}")


def _tf_place(resolver) -> tuple[int, int]:
    """``(worker count, worker index)`` with the chief (if any) as worker 0."""
    cluster = resolver.cluster_spec().as_dict()
    chiefs, workers = len(cluster.get("chief", [])), len(cluster.get("worker", []))
    if resolver.task_type == "chief":
        return chiefs + workers, 0
    return chiefs + workers, chiefs + int(resolver.task_id)


def setup(cfg) -> Workers:
    """Start the distribution for ``cfg.distribute`` (before anything else touches the devices).

    Returns:
        a :class:`Workers` (one worker, no strategy, when ``cfg.distribute`` is off).
    Raises:
        BratsInputError for a backend without distribution or unusable cluster settings (one line).
    """
    if not cfg.distribute:
        return Workers()
    import keras

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        resolver = tf_cluster_resolver()
        if resolver is None:
            strategy = tf.distribute.MirroredStrategy()
            return Workers(1, 0, strategy.num_replicas_in_sync, backend, strategy)
        count, index = _tf_place(resolver)
        strategy = tf.distribute.MultiWorkerMirroredStrategy(cluster_resolver=resolver)
        return Workers(count, index, strategy.num_replicas_in_sync, backend, strategy)
    if backend == "jax":
        place = jax_process_env()
        if place is not None:
            import jax

            if "jax_cpu_collectives_implementation" in jax.config.values:  # CPU all-reduce across processes
                jax.config.update("jax_cpu_collectives_implementation", "gloo")
            if not jax.distributed.is_initialized():
                keras.distribution.initialize()
        distribution = keras.distribution.DataParallel()
        if place is not None:  # each process already reads its own cases (shard): no tf.data auto-sharding
            distribution.auto_shard_dataset = False
        keras.distribution.set_distribution(distribution)
        import jax

        return Workers(jax.process_count(), jax.process_index(), jax.device_count(), backend, None)
    raise BratsInputError(f"--distribute is not supported on the {backend} backend: use TensorFlow or JAX")


def refuse_unsupported(cfg, workers: Workers) -> None:
    """Settings that several workers cannot honour, refused in one line before anything is written."""
    if not workers.multi:
        return
    if cfg.whole_case_every:
        raise BratsInputError("--whole-case-every is not supported with several workers: train with "
                              "--whole-case-every 0 and score the checkpoints with brats-keras predict and evaluate")
    if cfg.tf_data:
        raise BratsInputError("--tf-data is not supported with several workers (each worker already reads its "
                              "own cases through tf.data)")


@contextlib.contextmanager
def local_only():
    """No Keras distribution inside (JAX): what the chief does alone, such as saving a checkpoint, must not
    create arrays across processes (that would wait for the other processes, which never come)."""
    import keras

    if keras.backend.backend() != "jax" or jax_processes() == 1:
        yield
        return
    previous = keras.distribution.distribution()
    keras.distribution.set_distribution(None)
    try:
        yield
    finally:
        keras.distribution.set_distribution(previous)


def read_run_state(run, resume) -> dict:
    """A worker other than the chief: the training state of ``run`` without repairing or writing anything
    (resuming reads the chief's ``checkpoints/last.keras``: the run folder must be on a shared file system)."""
    from pathlib import Path

    from .checkpoint import read_state

    state = {"epoch": 0, "log": [], "best": None, "best_epoch": None}
    last = Path(run) / "checkpoints" / "last.keras"
    if resume is not None and last.exists():
        state.update(read_state(last))
    return state


# ----------------------------------------------------------------------------- data
class BatchSlice(WrappedDataset):
    """Worker ``index``'s rows of each batch of ``dataset`` (one of ``parts`` equal slices), same steps, epochs and
    loader settings.

    Used for validation: the workers together see exactly the single-process validation batches.
    """

    def __init__(self, dataset, index: int, parts: int):
        if dataset.batch_size % parts:
            raise BratsInputError(f"--batch-size {dataset.batch_size} cannot be shared by {parts} workers")
        super().__init__(dataset)
        self.index, self.parts = index, parts
        self.rows = dataset.batch_size // parts

    def __getitem__(self, idx):
        x, y = self.dataset[idx]
        cut = slice(self.index * self.rows, (self.index + 1) * self.rows)
        return x[cut], y[cut]


# ----------------------------------------------------------------------------- callbacks
def agree(workers: Workers, value: float) -> float:
    """The mean of ``value`` over the workers: the same number on every worker (an all-reduce; every worker
    must call it at the same point). With one worker, ``value`` itself.

    For what each worker measures on its own clock, such as the minutes of a ``--time-limit`` run spent so
    far, which set the poly learning rate: workers that each set their own would train apart.
    """
    if not workers.multi:
        return float(value)
    import numpy as np

    if workers.engine == "tensorflow":
        import tensorflow as tf

        strategy = workers.strategy
        sums = strategy.run(lambda: tf.distribute.get_replica_context().all_reduce(
            "SUM", tf.constant(value, tf.float32)))
        return float(strategy.experimental_local_results(sums)[0]) / workers.replicas  # each replica added it
    from jax.experimental import multihost_utils

    return float(np.mean(multihost_utils.process_allgather(np.float32(value))))


def stop_together(workers: Workers):
    """A callback (put it last) that stops every worker when any one sets ``model.stop_training``.

    Callbacks like ``--time-limit`` decide on each worker's own clock; a worker stopping alone would leave
    the others waiting for it in the next all-reduce.
    """
    import keras

    class StopTogether(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            stop = float(bool(getattr(self.model, "stop_training", False)))
            self.model.stop_training = agree(workers, stop) > 0

    return StopTogether()


# ----------------------------------------------------------------------------- TensorFlow loop
def _distributed_feed(strategy, dataset, per_replica: int):
    """``dataset`` (a PyDataset of this worker's batches) as a distributed dataset of ``strategy``: each batch
    is cut in batches of ``per_replica`` patches, one for each of the worker's replicas (devices)."""
    import tensorflow as tf

    x0, y0 = dataset[0]
    # y is a tuple of label copies for a deep-supervision model (brats_keras.deep_supervision.repeat_targets)
    spec = tf.nest.map_structure(lambda a: tf.TensorSpec((None,) + a.shape[1:], tf.float32), (x0, y0))

    def batches():
        for i in range(len(dataset)):
            yield dataset[i]

    def per_worker(_context):  # the PyDataset already is this worker's own stream
        ds = tf.data.Dataset.from_generator(batches, output_signature=spec)
        return ds if x0.shape[0] == per_replica else ds.unbatch().batch(per_replica)

    return strategy.distribute_datasets_from_function(per_worker)


def fit_tensorflow(model, strategy, train_data, val_data, epochs: int, initial_epoch: int, callbacks,
                   per_replica: int, verbose: int = 1):
    """``model.fit`` for ``MultiWorkerMirroredStrategy``: the epochs and callbacks around Keras' own steps.

    Args:
        train_data, val_data: PyDatasets of this worker's batches (equal lengths on every worker).
        per_replica: patches per replica (a worker's batch feeds its local replicas).
        callbacks: Keras callbacks; they get the same (all-reduced) logs on every worker.
    Returns:
        the ``keras.callbacks.History``.
    """
    import keras
    import tensorflow as tf

    def step_function(step):
        @tf.function
        def run(iterator):
            logs = strategy.run(step, args=(next(iterator),))
            return {k: strategy.reduce("MEAN", v, axis=None) for k, v in logs.items()}

        return run

    train_step, test_step = step_function(model.train_step), step_function(model.test_step)
    history = keras.callbacks.History()
    cbs = keras.callbacks.CallbackList(list(callbacks) + [history], model=model, epochs=epochs,
                                       steps=len(train_data), verbose=0)
    model.stop_training = False
    cbs.on_train_begin()
    for epoch in range(initial_epoch, epochs):
        model.reset_metrics()
        cbs.on_epoch_begin(epoch)
        logs = {}
        iterator = iter(_distributed_feed(strategy, train_data, per_replica))
        for i in range(len(train_data)):
            cbs.on_train_batch_begin(i)
            logs = {k: float(v) for k, v in train_step(iterator).items()}
            cbs.on_train_batch_end(i, logs)
        train_data.on_epoch_end()
        model.reset_metrics()
        val_logs = {}
        iterator = iter(_distributed_feed(strategy, val_data, per_replica))
        for i in range(len(val_data)):
            val_logs = {k: float(v) for k, v in test_step(iterator).items()}
        logs = {**logs, **{f"val_{k}": v for k, v in val_logs.items()}}
        if verbose:
            shown = "  ".join(f"{k}: {v:.4f}" for k, v in logs.items())
            print(f"epoch {epoch + 1}/{epochs}  {shown}", flush=True)
        cbs.on_epoch_end(epoch, logs)
        if model.stop_training:
            break
    cbs.on_train_end()
    return history
