"""Patch loader throughput against the training step it has to feed, in one process.

A few real cases are converted first into a temporary folder (``crop="brain"``, ``scale="zscore"``,
as the shipped model's data). Then, for each patch size, ``brats_keras.data.PatchDataset``
(``augment=True``, region targets) is read batch by batch in rotating order by:

* 1 thread:  ``ds[i]`` in a loop;
* N threads: the same ``ds[i]`` through a ``ThreadPoolExecutor``;
* keras:     a ``PatchDataset(workers=N)`` (threads) through Keras' own ``PyDatasetAdapter``,
  the path ``model.fit`` takes;
* tf.data:   ``brats_keras.data.tf_dataset(ds)`` (TensorFlow backend only);

and the training step of ``unet3d(in_channels=3, base_filters=16, depth=4, norm="instance",
output="regions")`` (float32, dice+bce, ``train_on_batch``; 1 warm-up + timed steps) is timed at
the same patch size and batch. The loader keeps up when it makes patches at least as fast as
the step consumes them.

    python benchmarks/loader_bench.py --cases 3 --patches 128 64
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

C.quiet_tensorflow()


def time_loader(name, make_iter, n_batches):
    """Seconds to pull the epoch's ``n_batches`` batches from ``make_iter()`` (iterator creation included).

    The iterator is run to its end, not left early: Keras' enqueuer stops its worker threads only
    after the last batch, and threads left running would steal CPU from the next measurement.
    """
    t0 = time.perf_counter()
    got = 0
    for x, y in make_iter():
        got += 1
    dt = time.perf_counter() - t0
    if got != n_batches:
        raise RuntimeError(f"{name}: got {got} batches, expected {n_batches}")
    return dt


def loaders(data_dir, patch, args):
    """``{name: (dataset, make_iterator)}`` for each way of reading batches."""
    from brats_keras.data import PatchDataset

    kw = dict(patch_size=patch, batch_size=args.batch, output="regions", augment=True,
              steps_per_epoch=args.batches, seed=0)
    ds1 = PatchDataset(data_dir, workers=1, **kw)
    out = {"1 thread: ds[i]": lambda: (ds1[i] for i in range(len(ds1)))}

    def pool_iter():
        with ThreadPoolExecutor(args.workers) as ex:
            yield from ex.map(ds1.__getitem__, range(len(ds1)))

    out[f"{args.workers} threads: ThreadPoolExecutor"] = pool_iter
    try:
        from keras.src.trainers.data_adapters.py_dataset_adapter import PyDatasetAdapter

        dsw = PatchDataset(data_dir, workers=args.workers, use_multiprocessing=False, **kw)

        def keras_iter():
            adapter = PyDatasetAdapter(dsw, shuffle=False)
            return adapter.get_numpy_iterator()

        out[f"{args.workers} threads: keras PyDatasetAdapter"] = keras_iter
    except ImportError as exc:  # private Keras module moved
        print(f"(keras PyDatasetAdapter not importable: {exc}; skipped)")
    import keras

    if keras.backend.backend() == "tensorflow":
        from brats_keras.data import tf_dataset

        tfds = tf_dataset(ds1)
        out["tf.data: tf_dataset(ds), AUTOTUNE"] = lambda: iter(tfds)
    # warm up: foreground points of every case and the memory maps, so no method pays first-touch costs
    for case_id in ds1.cases.case_ids:
        ds1.cases.foreground(case_id)
        float(np.asarray(ds1.cases.image(case_id), dtype=np.float32).sum())
    ds1[0]
    return ds1, out


def train_step_time(ds, patch, args):
    """(warm-up seconds, [timed step seconds], parameter count) of the reference U-Net at this patch size."""
    import keras

    from brats_keras.losses import get_loss
    from brats_keras.models import count_params, unet3d

    keras.utils.set_random_seed(0)
    model = unet3d(in_channels=ds.cases.n_channels, base_filters=16, depth=4, norm="instance", output="regions")
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=get_loss("dice+bce", output="regions"),
                  jit_compile=False)
    x, y = ds[0]
    t0 = time.perf_counter()
    for _ in range(args.warmup):
        model.train_on_batch(x, y)
    warm = time.perf_counter() - t0
    steps = []
    bar = C.progress(args.train_steps, f"train steps {patch}^3", not args.no_progress, "step")
    for _ in range(args.train_steps):
        t0 = time.perf_counter()
        model.train_on_batch(x, y)
        steps.append(time.perf_counter() - t0)
        bar.update(1)
    bar.close()
    return warm, steps, count_params(model)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(C.REAL_DATA), help="folder of BraTS cases (default: %(default)s)")
    ap.add_argument("--cases", type=int, default=3, help="cases to convert and sample from (default %(default)s)")
    ap.add_argument("--patches", type=int, nargs="+", default=[128, 64], help="patch sizes (default 128 64)")
    ap.add_argument("--batch", type=int, default=2, help="patches per batch (default %(default)s)")
    ap.add_argument("--batches", type=int, default=6, help="batches per loader measurement (default %(default)s)")
    ap.add_argument("--rounds", type=int, default=2, help="repeats of each loader measurement (default %(default)s)")
    ap.add_argument("--workers", type=int, default=2, help="threads of the parallel loaders (default %(default)s)")
    ap.add_argument("--train-steps", type=int, default=3, help="timed training steps (default %(default)s)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed training steps first (default %(default)s)")
    ap.add_argument("--train-patches", type=int, nargs="*", default=None,
                    help="patch sizes at which to time training (default: all of --patches; none to skip)")
    ap.add_argument("--tmp", default=None, help="parent folder for the temporary conversion")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    train_patches = args.patches if args.train_patches is None else args.train_patches

    import keras

    from brats_keras.convert import convert_folder

    C.print_header("patch loader vs training step", modules=("numpy", "keras", "tensorflow"),
                   extra={"keras backend": keras.backend.backend(),
                          "TensorFlow oneDNN kernels": C.onednn_state()})
    cases = C.pick_cases(args.data, args.cases)
    tmp = Path(tempfile.mkdtemp(prefix="brats_loader_bench_", dir=args.tmp))
    loader_rows, train_rows, verdict = [], [], []
    try:
        t0 = time.perf_counter()
        in_dir = C.link_cases(cases, tmp / "input")
        data_dir = tmp / "converted"
        convert_folder(in_dir, data_dir, crop="brain", scale="zscore", workers=2, progress=not args.no_progress,
                       log=lambda *a, **k: None)
        print(f"converted {len(cases)} case(s) ({', '.join(c.case_id for c in cases)}) with crop=brain, "
              f"scale=zscore, float16 in {time.perf_counter() - t0:.1f} s into {data_dir}\n", flush=True)

        for patch in args.patches:
            ds, its = loaders(data_dir, patch, args)
            names = list(its)
            secs = {k: [] for k in names}
            lds = {k: [] for k in names}
            bar = C.progress(len(names) * args.rounds, f"loaders {patch}^3", not args.no_progress, "run")
            for r in range(args.rounds):
                k0 = r % len(names)
                for name in names[k0:] + names[:k0]:
                    secs[name].append(time_loader(name, its[name], args.batches))
                    lds[name].append(float(C.load1()))
                    bar.update(1)
            bar.close()
            n_patches = args.batches * args.batch
            rates = {k: n_patches / statistics.fmean(v) for k, v in secs.items()}
            for name in names:
                loader_rows.append([f"{patch}^3", name, n_patches, statistics.fmean(secs[name]),
                                    rates[name], n_patches / min(secs[name]), statistics.fmean(lds[name])])
            if patch in train_patches:
                warm, steps, params = train_step_time(ds, patch, args)
                step = statistics.fmean(steps)
                need = args.batch / step
                train_rows.append([f"{patch}^3", args.batch, params, warm, step, min(steps), need, C.load1()])
                for name in names:
                    verdict.append([f"{patch}^3", name, rates[name], need, C.ratio(rates[name], need),
                                    "yes" if rates[name] >= need else "NO"])
            del ds, its
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    C.print_table(["patch", "loader", "patches", "mean s", "patches/s", "best patches/s", "mean load 1m"],
                  loader_rows, f"loader throughput (batch {args.batch}, augment=True, regions; "
                               f"{args.rounds} round(s), rotating order):")
    if train_rows:
        C.print_table(["patch", "batch", "params", "warm-up s", "mean step s", "best step s",
                       "patches/s consumed", "load 1m"], train_rows,
                      f"training step, unet3d base 16 depth 4 instance norm, regions, dice+bce, float32, "
                      f"train_on_batch ({args.warmup} warm-up + {args.train_steps} timed):")
        C.print_table(["patch", "loader", "loader patches/s", "training patches/s", "loader / training",
                       "keeps up"], verdict, "does the loader keep up? (same run)")
        print("note: loader and training were timed one after the other; running together they share the same "
              "cores (and the background jobs), so the loader's margin shrinks.")
    C.print_footer()


if __name__ == "__main__":
    main()
