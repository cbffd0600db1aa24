"""The shipped fold ensemble's whole cross-validation again: ``crossval --ensemble pretrained`` over all the card's
cases (28, about two minutes on a busy 2-core CPU), each case's Dice within 0.02 of the card's table and the means
within 0.002 of its headline (the shipped files are float16 or int8; the card came from the float32 checkpoints).
tests/test_pretrained.py replays one case per fold; this is the full replay.

    python benchmarks/pretrained_crossval_bench.py            # exit 0: the card's table again; 1: a row differs
"""
from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv=None) -> int:
    from brats_keras.cli import main as cli_main
    from brats_keras.pretrained import model_card

    card = model_card()
    if card.get("kind") != "fold ensemble":
        print("a single model ships: it has no folds to cross-validate")
        return 0
    shared = ROOT.parent / "shared" / "data"
    roots = sorted({str(shared / Path(c["truth"]).parent.parent.name) for c in card["crossval"]["cases"].values()})
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "cv"
        if cli_main(["crossval", "--ensemble", "pretrained", "--out", str(out), "--quiet",
                     *(f for r in roots for f in ("--data-root", r))]) != 0:
            return 1
        res = json.loads((out / "crossval.json").read_text())
    bad = []
    if res["cases"].keys() != card["crossval"]["cases"].keys():
        bad.append(f"cases differ: {sorted(set(res['cases']) ^ set(card['crossval']['cases']))}")
    for cid, row in res["cases"].items():
        ref = card["crossval"]["cases"].get(cid, {})
        for r in ("WT", "TC", "ET"):
            if r in ref and abs(row[r]["dice"] - ref[r]["dice"]) > 0.02:
                bad.append(f"{cid} {r}: {row[r]['dice']:.4f}, the card {ref[r]['dice']:.4f}")
    for r in ("WT", "TC", "ET"):
        got, want = res["mean"][r]["dice"], card["crossval"]["mean"][r]["dice"]
        print(f"mean {r} Dice {got:.4f} (card {want:.4f})")
        if abs(got - want) > 0.002:
            bad.append(f"mean {r}: {got:.4f}, the card {want:.4f}")
    for line in bad:
        print("DIFFERS", line)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
