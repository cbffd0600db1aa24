"""Draw docs/compare.png for the README: ground truth beside the shipped model's prediction on a validation case.

    python scripts/readme_figure.py --real ../shared/data/brats-real
"""
import argparse
from pathlib import Path

from brats_keras import io as bio
from brats_keras.evaluation import score_case
from brats_keras.inference import Predictor
from brats_keras.visualize import compare


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--real", required=True, help="folder with the real BraTS cases")
    ap.add_argument("--case", default="Brats18_TCIA02_606_1", help="a validation case of the shipped model")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "docs" / "compare.png"))
    args = ap.parse_args(argv)
    case = next(c for c in bio.find_cases(args.real) if c.case_id == args.case)
    pred = Predictor().predict_case(case)["classes"]
    truth = bio.load_classes(case.seg)
    flair = bio.load_nifti(case.images["flair"])[0]
    s = score_case(pred, truth, report=False)
    title = f"{case.case_id} (validation)  Dice " + "  ".join(f"{r} {s[r]['dice']:.2f}" for r in ("WT", "TC", "ET"))
    compare(flair, truth, pred, save=args.out, title=title)
    print(f"wrote {args.out}: {title}")


if __name__ == "__main__":
    main()
