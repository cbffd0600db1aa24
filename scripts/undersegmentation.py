"""Where a cross-validated model under-segments, and what goes with it.

Reads an out-of-fold table written by ``brats-keras crossval`` of a region model (its predictions, the
probabilities it stored and the true label maps it names) and the conversion folder the folds were trained
on, and prints for each region:

- mean recall and precision over the cases (recall below precision: the model under-segments), and the
  cases with the lowest recall with their true and predicted volumes;
- how sure the model was of the voxels it missed (share with probability < 0.1: lowering a threshold
  cannot bring them back) and how far they lie from the predicted region (a thin rim at the border, or
  whole parts of the tumor);
- mean Dice, recall and precision at other thresholds of the stored probabilities;
- Spearman correlations of each case's recall with the true volume (are small tumors missed: the
  sampling), the tumor's share of the brain (does a large lesion skew the brain z-score: the scaling), the
  lesion's contrast in each scaled modality (tumor mean minus the rest of the brain, in the converted
  arrays) and the tumor's height in the volume.

    python scripts/undersegmentation.py CV_DIR --data CONVERTED [--json OUT.json]
"""
from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

import numpy as np
from scipy import ndimage, stats

from brats_keras.crossval import load_probabilities, member_path
from brats_keras.io import load_classes
from brats_keras.labels import REGION_CLASSES, REGION_NAMES
from brats_keras.preprocessing import box_slices
from brats_keras.spec import read_manifest

THRESHOLDS = (0.2, 0.3, 0.4, 0.5, 0.6)
DISTANCE_BINS = (2.0, 5.0, 10.0)  # mm from the predicted region (the 1 mm grid)


def case_rows(cv_dir: Path, cid: str, row: dict) -> dict:
    """Per region of one case: volumes (ml), recall, precision, the missed voxels' probabilities and distances,
    and Dice / recall / precision at each of :data:`THRESHOLDS`."""
    truth = load_classes(row["truth"])
    pred = load_classes(member_path(cv_dir, "predictions", row["prediction"]))
    probs_q, box, shape = load_probabilities(member_path(cv_dir, "probabilities", row["probabilities"]))
    probs = np.zeros(tuple(shape) + (len(REGION_NAMES),), np.float32)
    probs[box_slices(box)] = probs_q / 255.0
    out = {}
    for i, region in enumerate(REGION_NAMES):
        t, p = np.isin(truth, REGION_CLASSES[region]), np.isin(pred, REGION_CLASSES[region])
        if not t.any():
            continue
        tp, missed = int((t & p).sum()), t & ~p
        dist = ndimage.distance_transform_edt(~p) if p.any() else np.full(t.shape, np.inf)
        at = {}
        for th in THRESHOLDS:
            q = probs[..., i] >= th
            hit = int((q & t).sum())
            at[str(th)] = {"dice": 2 * hit / (q.sum() + t.sum()), "recall": hit / t.sum(),
                           "precision": hit / q.sum() if q.any() else float("nan")}
        out[region] = {
            "true_ml": t.sum() / 1000, "pred_ml": p.sum() / 1000, "recall": tp / t.sum(),
            "precision": tp / p.sum() if p.any() else float("nan"),
            "missed_sure": float((probs[..., i][missed] < 0.1).mean()) if missed.any() else 0.0,
            "missed_distance": np.histogram(dist[missed], bins=(0, *DISTANCE_BINS, np.inf))[0].tolist(),
            "thresholds": at,
        }
    return out


def case_features(data: Path, entry: dict, modalities) -> dict:
    """Tumor share of the brain, the tumor's contrast in each scaled modality and its height (0 bottom, 1 top
    of the volume's last axis) from one converted case."""
    image = np.load(data / entry["image"], mmap_mode="r")
    mask = np.asarray(np.load(data / entry["mask"], mmap_mode="r"))
    brain, tumor = np.any(np.asarray(image) != 0, axis=-1), mask > 0
    rest = brain & ~tumor
    contrast = {m: float(image[..., c][tumor].astype(np.float32).mean() - image[..., c][rest].astype(np.float32).mean())
                for c, m in enumerate(modalities)}
    return {"share": float(tumor.sum() / brain.sum()), "contrast": contrast,
            "height": float(np.nonzero(tumor)[2].mean() / tumor.shape[2])}


def _spearman(x, y) -> list[float]:
    """Spearman's ``[rho, p]``; NaN for a constant input (a few cases can all have the same recall)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", stats.ConstantInputWarning)
        return [float(v) for v in stats.spearmanr(x, y)]


def analyse(cv_dir, data, quiet: bool = False) -> dict:
    """Every number of the report (``quiet``: no progress bar)."""
    cv_dir, data = Path(cv_dir), Path(data)
    table = json.loads((cv_dir / "crossval.json").read_text())
    manifest = read_manifest(data)
    modalities = manifest["settings"]["modalities"]
    from tqdm import tqdm

    cases = {cid: case_rows(cv_dir, cid, row)
             for cid, row in tqdm(sorted(table["cases"].items()), desc="cases", unit="case", disable=quiet)}
    features = {cid: case_features(data, manifest["cases"][cid], modalities) for cid in cases}
    summary = {}
    for region in REGION_NAMES:
        rows = {cid: c[region] for cid, c in cases.items() if region in c}
        recall = [r["recall"] for r in rows.values()]
        distance = np.sum([r["missed_distance"] for r in rows.values()], axis=0)
        drivers = {"true volume": [r["true_ml"] for r in rows.values()],
                   "tumor share of the brain": [features[c]["share"] for c in rows],
                   "tumor height": [features[c]["height"] for c in rows],
                   **{f"{m} contrast": [features[c]["contrast"][m] for c in rows] for m in modalities}}
        summary[region] = {
            "cases": len(rows), "recall": float(np.mean(recall)),
            "precision": float(np.nanmean([r["precision"] for r in rows.values()])),
            "missed_sure": float(np.mean([r["missed_sure"] for r in rows.values()])),
            "missed_distance_share": (distance / max(distance.sum(), 1)).tolist(),
            "thresholds": {th: {k: float(np.nanmean([r["thresholds"][th][k] for r in rows.values()]))
                                for k in ("dice", "recall", "precision")} for th in map(str, THRESHOLDS)},
            "spearman": {name: _spearman(values, recall) for name, values in drivers.items()},
            "lowest_recall": sorted(rows, key=lambda c: rows[c]["recall"])[:6],
        }
    return {"cases": cases, "features": features, "summary": summary}


def card_summary(res: dict) -> dict:
    """What the model card says of under-segmentation (``model_card.json["undersegmentation"]``): per region the
    mean recall and precision, the share of missed voxels the model was sure of (p < 0.1) and of those within 2 mm
    of its predicted region, Dice at threshold 0.4 against 0.5, and Spearman's rho (with p) of recall against the
    true volume, the tumor's share of the brain and the lesion's contrast in each modality."""
    out = {}
    for region, s in res["summary"].items():
        out[region] = {"recall": s["recall"], "precision": s["precision"], "missed_sure": s["missed_sure"],
                       "missed_within_2mm": s["missed_distance_share"][0],
                       "dice_at": {th: s["thresholds"][th]["dice"] for th in ("0.4", "0.5")},
                       "spearman": {k: v for k, v in s["spearman"].items() if k != "tumor height"}}
    return out


def report(res: dict) -> str:
    bins = ["<=2 mm", "2-5 mm", "5-10 mm", ">10 mm"]
    lines = []
    for region, s in res["summary"].items():
        lines.append(f"{region}: {s['cases']} cases, mean recall {s['recall']:.3f}, precision {s['precision']:.3f}; "
                     f"of the missed voxels {s['missed_sure']:.0%} had p < 0.1, at "
                     + ", ".join(f"{b} {x:.0%}" for b, x in zip(bins, s["missed_distance_share"]))
                     + " from the predicted region")
        lines.append("  thresholds: " + "; ".join(f"{th}: Dice {v['dice']:.4f} recall {v['recall']:.3f} precision "
                                                  f"{v['precision']:.3f}" for th, v in s["thresholds"].items()))
        lines.append("  recall vs " + "; ".join(f"{k} rho {r:+.2f} (p {p:.3f})" for k, (r, p) in s["spearman"].items()))
        for cid in s["lowest_recall"]:
            c = res["cases"][cid][region]
            lines.append(f"  {cid}: true {c['true_ml']:.1f} ml, predicted {c['pred_ml']:.1f} ml, recall "
                         f"{c['recall']:.2f}, precision {c['precision']:.2f}")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("cv_dir", help="a crossval folder of a region model (with probabilities/)")
    ap.add_argument("--data", required=True, help="the conversion folder the folds were trained on")
    ap.add_argument("--json", help="also write every number to this file")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    args = ap.parse_args(argv)
    res = analyse(args.cv_dir, args.data, quiet=args.quiet)
    print(report(res))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
