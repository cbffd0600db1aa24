"""Conversion speed and output size: brats_keras.convert against a naive report-style conversion
and the bare NIfTI decoding floor, on the same real cases in one process.

Measured per case (seconds), methods interleaved case by case in rotating order:

* floor:  ``np.asanyarray(nib.load(p).dataobj)`` of FLAIR, T1ce, T2 and the label map, nothing else
  (nibabel's streamed gzip decoding: the part a nibabel-based converter cannot skip);
* floor1: the same four files through ``brats_keras.io.load_nifti``, which decompresses each file in one
  call (ISA-L when installed) and parses it from memory: the floor of our own reader;
* ours:   ``brats_keras.convert.convert_case`` with the defaults (FLAIR, T1ce, T2, min-max over the
  whole volume, fixed crop [56:184, 56:184, 13:141], float16 image, uint8 class mask);
* uint8:  the same with ``--dtype uint8`` (image stored as round(255 * value));
* naive:  the report's way: ``get_fdata()`` float64, scikit-learn ``MinMaxScaler`` on each flattened
  volume, stack, crop, one-hot float32 masks with ``np.eye``, ``np.save`` float32 image and mask.

Then whole-folder time / cases of ``convert_folder`` with 1 and with 2 worker processes
(rounds alternate which goes first; ``--folder-repeat K`` links each case K times under new ids).
Outputs are written to a temporary folder.

    python benchmarks/convert_bench.py --cases 3
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

CROP = (slice(56, 184), slice(56, 184), slice(13, 141))
NAIVE_MODALITIES = ("flair", "t1ce", "t2")


def nibabel_decode(path) -> np.ndarray:
    import nibabel as nib

    return np.asanyarray(nib.load(str(path)).dataobj)


def our_decode(path) -> np.ndarray:
    from brats_keras.io import load_nifti

    return load_nifti(path)[0]


def floor_decode(case, decode=nibabel_decode) -> None:
    """Decode the 3 modalities and the label map to arrays in their stored type; nothing else.

    ``decode``: nibabel's reader (the floor) or ours (one-call gunzip, ISA-L when installed: floor1).
    """
    for p in [case.images[m] for m in NAIVE_MODALITIES] + [case.seg]:
        arr = decode(p)
        arr.shape  # noqa: B018  (the array is decoded; keep it alive until here)


def naive_convert(case, out_dir: Path) -> list[Path]:
    """The report-style conversion of one case; returns the files written."""
    import nibabel as nib
    from sklearn.preprocessing import MinMaxScaler

    scaler = MinMaxScaler()
    vols = []
    for m in NAIVE_MODALITIES:
        v = nib.load(str(case.images[m])).get_fdata()
        v = scaler.fit_transform(v.reshape(-1, 1)).reshape(v.shape)
        vols.append(v)
    image = np.stack(vols, axis=3)[CROP]
    seg = nib.load(str(case.seg)).get_fdata().astype(np.uint8)
    seg[seg == 4] = 3
    mask = np.eye(4, dtype=np.float32)[seg[CROP]]
    out_dir.mkdir(parents=True, exist_ok=True)
    img_path, msk_path = out_dir / f"image_{case.case_id}.npy", out_dir / f"mask_{case.case_id}.npy"
    np.save(img_path, image.astype(np.float32))
    np.save(msk_path, mask)
    return [img_path, msk_path]


def ours_convert(case, out_dir: Path, settings: dict) -> list[Path]:
    from brats_keras.convert import convert_case

    entry = convert_case(case, out_dir, settings)
    return [out_dir / entry["image"], out_dir / entry["mask"]]


def mb(paths) -> float:
    return sum(Path(p).stat().st_size for p in paths) / 1e6


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(C.REAL_DATA), help="folder of BraTS cases (default: %(default)s)")
    ap.add_argument("--cases", type=int, default=5, help="number of cases (first N by id; default %(default)s)")
    ap.add_argument("--rounds", type=int, default=2,
                    help="times each measurement is repeated (alternating order; default %(default)s)")
    ap.add_argument("--workers", type=int, default=2, help="worker processes of the parallel folder run")
    ap.add_argument("--folder-repeat", type=int, default=1, metavar="K",
                    help="folder runs see each case K times under new ids (a larger folder, same files), so "
                         "starting the worker processes is spread over more cases")
    ap.add_argument("--tmp", default=None, help="parent folder for the temporary outputs (default: system temp)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary outputs")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)

    from brats_keras.convert import conversion_settings, convert_folder

    C.print_header("conversion benchmark: ours vs naive report-style vs NIfTI decoding floor",
                   modules=("numpy", "nibabel", "sklearn"))
    cases = C.pick_cases(args.data, args.cases)
    n = len(cases)
    tmp = Path(tempfile.mkdtemp(prefix="brats_convert_bench_", dir=args.tmp))
    try:
        inputs = [p for c in cases for p in [c.images[m] for m in NAIVE_MODALITIES] + [c.seg]]
        in_mb = sum(Path(p).stat().st_size for p in inputs) / 1e6 / n
        C.warm_page_cache([p for c in cases for p in list(c.images.values()) + [c.seg]])
        print(f"{n} case(s): {', '.join(c.case_id for c in cases)}")
        print(f"input read per case: {in_mb:.1f} MB of .nii.gz (FLAIR, T1ce, T2, seg; page cache warmed first)")
        print(f"temporary outputs: {tmp}\n", flush=True)

        settings = conversion_settings()
        settings8 = conversion_settings(dtype="uint8")
        methods = {
            "floor": lambda c: (floor_decode(c), [])[1],
            "floor1": lambda c: (floor_decode(c, our_decode), [])[1],
            "ours": lambda c: ours_convert(c, tmp / "ours", settings),
            "ours8": lambda c: ours_convert(c, tmp / "ours8", settings8),
            "naive": lambda c: naive_convert(c, tmp / "naive"),
        }
        times = {k: [] for k in methods}
        loads = {k: [] for k in methods}
        out_mb = {k: [] for k in methods}
        per_case = []
        bar = C.progress(n * len(methods) * args.rounds, "per-case conversions", not args.no_progress, "conv")
        names = list(methods)
        for r in range(args.rounds):
            for i, case in enumerate(cases):
                k0 = (i + r) % len(names)
                order = names[k0:] + names[:k0]
                row = {}
                for name in order:
                    t0 = time.perf_counter()
                    files = methods[name](case)
                    dt = time.perf_counter() - t0
                    times[name].append(dt)
                    loads[name].append(float(C.load1()))
                    row[name] = dt
                    if r == 0:
                        out_mb[name].append(mb(files) if files else 0.0)
                    bar.update(1)
                per_case.append((r + 1, case.case_id, "/".join(order), row["floor"], row["floor1"], row["ours"],
                                 row["ours8"], row["naive"], C.load1()))
        bar.close()

        # same work? compare the naive float32 image / one-hot mask with ours (float16 / classes)
        diffs = []
        for case in cases:
            ours_img = np.load(tmp / "ours" / "images" / f"{case.case_id}.npy").astype(np.float32)
            ours_msk = np.load(tmp / "ours" / "masks" / f"{case.case_id}.npy")
            nv_img = np.load(tmp / "naive" / f"image_{case.case_id}.npy")
            nv_msk = np.load(tmp / "naive" / f"mask_{case.case_id}.npy").argmax(-1)
            diffs.append((float(np.abs(ours_img - nv_img).max()), bool((ours_msk == nv_msk).all())))

        # whole folder, 1 worker vs N workers, alternating which goes first
        in_dir = C.link_cases(cases, tmp / "input", repeat=args.folder_repeat)
        n_folder = n * args.folder_repeat
        folder_t = {1: [], args.workers: []}
        folder_load = {1: [], args.workers: []}
        bar = C.progress(2 * args.rounds, "convert_folder runs", not args.no_progress, "run")
        for r in range(args.rounds):
            for w in ((1, args.workers) if r % 2 == 0 else (args.workers, 1)):
                t0 = time.perf_counter()
                convert_folder(in_dir, tmp / f"folder_w{w}", workers=w, overwrite=True, progress=False,
                               log=lambda *a, **k: None)
                folder_t[w].append((time.perf_counter() - t0) / n_folder)
                folder_load[w].append(float(C.load1()))
                bar.update(1)
        bar.close()
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)

    C.print_table(["round", "case", "order run", "floor s", "floor1 s", "ours s", "uint8 s", "naive s",
                   "load 1m"], per_case,
                  "per case (seconds, methods interleaved):")

    def mean(x):
        return statistics.fmean(x) if x else float("nan")

    s = {k: mean(v) for k, v in times.items()}
    s["ours 1 worker"] = mean(folder_t[1])
    s[f"ours {args.workers} workers"] = mean(folder_t[args.workers])
    m = {k: mean(v) for k, v in out_mb.items()}
    rows = [
        ["floor: decode 3 modalities + seg", s["floor"], min(times["floor"]), "-", mean(loads["floor"])],
        ["floor1: the same, one-call gunzip (ours)", s["floor1"], min(times["floor1"]), "-",
         mean(loads["floor1"])],
        ["ours: convert_case (1 process)", s["ours"], min(times["ours"]), m["ours"], mean(loads["ours"])],
        ["ours --dtype uint8: convert_case", s["ours8"], min(times["ours8"]), m["ours8"], mean(loads["ours8"])],
        ["ours: convert_folder, 1 worker", s["ours 1 worker"], min(folder_t[1]), m["ours"], mean(folder_load[1])],
        [f"ours: convert_folder, {args.workers} workers", s[f"ours {args.workers} workers"],
         min(folder_t[args.workers]), m["ours"], mean(folder_load[args.workers])],
        ["naive: report-style float64 + MinMaxScaler", s["naive"], min(times["naive"]), m["naive"],
         mean(loads["naive"])],
    ]
    C.print_table(["method", "mean s/case", "best s/case", "output MB/case", "mean load 1m"], rows,
                  f"summary over {n} case(s) x {args.rounds} round(s):")

    ours1 = s["ours 1 worker"]
    print(f"folder runs: {n_folder} cases ({n} linked {args.folder_repeat} time(s))")
    ratios = [
        ["ours (1 worker) / floor", C.ratio(ours1, s["floor"]), "<= 1.3"],
        ["ours convert_case / floor", C.ratio(s["ours"], s["floor"]), "<= 1.3"],
        ["ours (1 worker) / floor1", C.ratio(ours1, s["floor1"]), "(our own decoding)"],
        ["naive / ours (1 worker)", C.ratio(s["naive"], ours1), ">= 3"],
        ["naive MB / ours MB", C.ratio(m["naive"], m["ours"]), ">= 6"],
        ["naive MB / ours --dtype uint8 MB", C.ratio(m["naive"], m["ours8"]), ">= 6"],
        [f"ours 1 worker / ours {args.workers} workers", C.ratio(ours1, s[f"ours {args.workers} workers"]),
         f"~{args.workers} (idle cores only)"],
    ]
    C.print_table(["ratio", "value", "target"], ratios, "ratios (same run):")
    worst = max(d for d, _ in diffs)
    print(f"check: max |naive float32 - ours float16| image difference over the cases = {worst:.2e}; "
          f"masks identical (argmax of one-hot == classes): {all(ok for _, ok in diffs)}")
    C.print_footer()


if __name__ == "__main__":
    main()
