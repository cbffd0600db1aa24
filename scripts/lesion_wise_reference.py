"""Compare brats_keras' lesion-wise scores with the official BraTS 2023 recipe on real label maps.

No package on PyPI ships the BraTS 2023 lesion-wise metric, so this script rebuilds it from
its published description with the libraries the official code uses: ``cc3d`` for the
26-connected components, ``scipy`` for the dilation (18-neighbour structure, 3 times) and
DeepMind's ``surface-distance`` for the HD95 of each lesion (374 for a miss or a false
positive, lesions of 50 mm^3 or less not scored). Each truth is scored against three made-up
predictions (shifted; eroded with six 3 x 3 x 3 ET blobs added; dilated), and the script
prints how far our Dice, counts and HD95 are from the recipe's.

Run it in a throwaway environment (it needs packages the project does not)::

    python3.11 -m venv /tmp/refvenv && . /tmp/refvenv/bin/activate
    pip install numpy scipy nibabel connected-components-3d surface-distance==0.1 absl-py
    PYTHONPATH=. python scripts/lesion_wise_reference.py --real ../shared/data/brats-real
"""
from __future__ import annotations

import argparse
from pathlib import Path

import cc3d
import nibabel as nib
import numpy as np
import surface_distance
from scipy import ndimage

from brats_keras.evaluation import hd95, lesion_wise_scores
from brats_keras.labels import labels_to_classes

np.Inf = np.inf  # surface-distance 0.1 still uses the alias NumPy 2 removed
REGIONS = {"WT": (1, 2, 3), "TC": (1, 3), "ET": (3,)}
GROW = ndimage.generate_binary_structure(3, 2)
MISS = 374.0


def recipe(pred, true, spacing, dilation=3, min_volume=50.0):
    """The official recipe per region: Dice, HD95 (DeepMind's and ours), lesions and false positives."""
    out = {}
    for region, labels in REGIONS.items():
        p, t = np.isin(pred, labels).astype(np.uint8), np.isin(true, labels).astype(np.uint8)
        pred_cc = cc3d.connected_components(p, connectivity=26)
        grown = ndimage.binary_dilation(t, GROW, iterations=dilation).astype(np.uint8)
        lesions = cc3d.connected_components(grown, connectivity=26) * t
        touched, scored = set(), []
        for k in np.unique(lesions)[1:]:
            lesion = lesions == k
            reach = ndimage.binary_dilation(lesion, GROW, iterations=dilation)
            ids = set(np.unique(pred_cc[reach]).tolist()) - {0}
            touched |= ids
            if lesion.sum() * np.prod(spacing) <= min_volume:
                continue
            found = np.isin(pred_cc, list(ids))
            if not found.any():
                scored.append((0.0, MISS, MISS))
                continue
            d = 2 * np.count_nonzero(found & lesion) / (found.sum() + lesion.sum())
            sd = surface_distance.compute_surface_distances(lesion, found, spacing)
            scored.append((d, surface_distance.compute_robust_hausdorff(sd, 95), hd95(found, lesion, spacing)))
        n_fp = len(set(np.unique(pred_cc).tolist()) - {0} - touched)
        n = len(scored) + n_fp
        out[region] = {
            "dice": sum(s[0] for s in scored) / n if n else 1.0,
            "hd95": (sum(s[1] for s in scored) + MISS * n_fp) / n if n else 0.0,
            "hd95_ours": (sum(s[2] for s in scored) + MISS * n_fp) / n if n else 0.0,
            "counts": (len(scored), n_fp),
        }
    return out


def tumor_box(*maps, margin=8):
    both = np.logical_or.reduce([m > 0 for m in maps])
    box = []
    for axis in range(3):
        hits = np.flatnonzero(np.any(both, axis=tuple(a for a in range(3) if a != axis)))
        box.append(slice(max(hits[0] - margin, 0), hits[-1] + 1 + margin))
    return tuple(box)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--real", default="../shared/data/brats-real", help="folder of BraTS cases with _seg files")
    parser.add_argument("--cases", type=int, default=None, help="only the first N cases")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    dice_diff, hd_diff, hd_same, count_diffs, n = [], [], [], 0, 0
    for case_dir in sorted(p for p in Path(args.real).iterdir() if p.is_dir())[: args.cases]:
        img = nib.load(str(case_dir / f"{case_dir.name}_seg.nii.gz"))
        true = labels_to_classes(np.asanyarray(img.dataobj))
        spacing = tuple(float(z) for z in img.header.get_zooms()[:3])
        blobs = np.where(ndimage.binary_erosion(true > 0, iterations=2), true, 0)
        for _ in range(6):
            c = [rng.integers(20, s - 20) for s in true.shape]
            blobs[c[0]:c[0] + 3, c[1]:c[1] + 3, c[2]:c[2] + 3] = 3
        predictions = {
            "shifted": np.roll(true, (2, -1, 1), axis=(0, 1, 2)),
            "eroded+blobs": blobs,
            "dilated": np.where(ndimage.binary_dilation(true > 0, iterations=2) & (true == 0), 2, true),
        }
        for pred in predictions.values():
            box = tumor_box(pred, true)  # the same scores as the whole volume, much faster
            ref = recipe(pred[box], true[box], spacing)
            ours = lesion_wise_scores(pred, true, spacing)
            for region in REGIONS:
                n += 1
                dice_diff.append(abs(ours[region]["dice"] - ref[region]["dice"]))
                hd_diff.append(ours[region]["hd95"] - ref[region]["hd95"])
                hd_same.append(abs(ours[region]["hd95"] - ref[region]["hd95_ours"]))
                count_diffs += (ours[region]["n_lesions"], ours[region]["n_false_positives"]) != ref[region]["counts"]
        print(case_dir.name, flush=True)
    hd_diff = np.asarray(hd_diff)
    print(f"{n} region scores: max |Dice difference| {max(dice_diff):.1e}; lesion or false-positive counts "
          f"differ in {count_diffs}; HD95 with our per-lesion HD95 in the recipe: max difference "
          f"{max(hd_same):.1e} mm; HD95 ours - official: mean |difference| {np.abs(hd_diff).mean():.3f} mm, "
          f"from {hd_diff.min():.3f} to {hd_diff.max():.3f} mm")


if __name__ == "__main__":
    main()
