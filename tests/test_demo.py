"""The demo's whole path (synth, convert, train, predict, evaluate, pictures) on tiny cases."""
import json

from brats_keras.demo import run_demo


def test_demo_path_end_to_end(tmp_path):
    out = tmp_path / "demo"
    metrics = run_demo(out, n_cases=6, minutes=0.05, n_test=2, n_val=1, shape=(96, 96, 64),
                       overrides=dict(base_filters=4, depth=2, patch_size=32, steps_per_epoch=2, val_steps=1,
                                      epochs=2, mixed_precision="off", verbose=0), log=lambda *a: None)
    saved = json.loads((out / "metrics.json").read_text())
    assert set(saved) >= {"WT", "TC", "ET"} and saved["WT"] == metrics["WT"]
    assert all(0.0 <= saved[r] <= 1.0 for r in ("WT", "TC", "ET"))
    assert len(saved["test_cases"]) == 2
    for case in saved["test_cases"]:
        assert (out / "predictions" / f"{case}.nii.gz").exists()
    ev = json.loads((out / "evaluation.json").read_text())
    assert set(ev["cases"]) == set(saved["test_cases"])
    for name in ("case.png", "truth_vs_prediction.png", "montage.png", "loss_curves.png"):
        assert (out / "figures" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
