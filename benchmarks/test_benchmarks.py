"""Smoke tests of the benchmark scripts' helpers (no timing is checked anywhere):

    python -m pytest -q benchmarks/test_benchmarks.py
"""
from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _common as C  # noqa: E402


def test_fmt_cells():
    assert C.fmt(None) == "-"
    assert C.fmt(float("nan")) == "-"
    assert C.fmt(3) == "3"
    assert C.fmt(True) == "True"
    assert C.fmt(0.123456) == "0.12"
    assert C.fmt(2 / 157) == "0.0127"
    assert C.fmt(12.34) == "12.3"
    assert C.fmt(1234.5) == "1234" or C.fmt(1234.5) == "1235"
    assert C.fmt("> 5") == "> 5"


def test_ratio_handles_missing_values():
    assert C.ratio(6, 3) == 2
    assert math.isnan(C.ratio(None, 3))
    assert math.isnan(C.ratio(1, 0))
    assert math.isnan(C.ratio(float("nan"), 2))


def test_print_table_is_aligned_markdown(capsys):
    C.print_table(["a", "long header"], [[1, 2.5], ["xyz", None]])
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("|")]
    assert len(lines) == 4
    assert len({len(ln) for ln in lines}) == 1
    assert lines[1].startswith("|---")
    assert "| xyz | -" in lines[3]


def test_header_names_command_and_load(capsys):
    C.print_header("title", modules=("numpy", "surely_not_installed_pkg"))
    out = capsys.readouterr().out
    assert out.startswith("# title")
    assert "command: python" in out and "load average at start" in out
    assert f"numpy {np.__version__}" in out and "surely_not_installed_pkg (not installed)" in out


def test_link_cases_exposes_only_the_chosen_cases(tmp_path):
    from brats_keras import io as bio

    cases = C.pick_cases(C.REAL_DATA, 2)
    linked = bio.find_cases(C.link_cases(cases, tmp_path / "in"), require_seg=True)
    assert [c.case_id for c in linked] == [c.case_id for c in cases]
    assert all(Path(p).is_symlink() for c in linked for p in c.images.values())


def test_naive_and_ours_convert_the_same_case(tmp_path):
    """The naive report-style path and ours compute the same image and labels, in different formats."""
    import convert_bench as CB

    from brats_keras.convert import conversion_settings

    case = C.pick_cases(C.REAL_DATA, 1)[0]
    naive = CB.naive_convert(case, tmp_path / "naive")
    ours = CB.ours_convert(case, tmp_path / "ours", conversion_settings())
    n_img, n_msk = np.load(naive[0]), np.load(naive[1])
    o_img, o_msk = np.load(ours[0]), np.load(ours[1])
    assert n_img.shape == o_img.shape == (128, 128, 128, 3)
    assert (n_img.dtype, n_msk.dtype, o_img.dtype, o_msk.dtype) == (np.float32, np.float32, np.float16, np.uint8)
    assert np.abs(n_img - o_img.astype(np.float32)).max() < 1e-3
    assert (n_msk.argmax(-1) == o_msk).all()
    assert CB.mb(naive) / CB.mb(ours) == pytest.approx(4.0, rel=0.01)  # (12 + 16) / (6 + 1) bytes per voxel


def test_train_summary_of_a_stopped_configuration():
    import train_bench as TB

    cfg = dict(size=64, batch=1, base=16, precision="mixed_bfloat16", onednn="1", warmup=1, steps=2)
    built = {"event": "built", "params": 10, "rss_mb": 500.0, "load1": 4.0, "onednn": True,
             "policy": "mixed_bfloat16"}
    warm = {"event": "step", "i": 0, "warmup": True, "seconds": 200.0, "rss_mb": 900.0, "load1": 4.5}
    res = {"cfg": cfg, "built": built, "steps": [warm], "done": False, "timed_out": True, "error": None,
           "timeout": 300, "unfinished_for": 80.0}
    s = TB.summarize(res)
    assert s["step"] is None and s["warm"] == 200.0
    assert s["step_note"] == "> 80 (unfinished)"
    assert s["rss_peak"] == 900.0 and s["rss_built"] == 500.0
    assert "stopped at 300 s after 1 warm-up + 0 timed" in s["status"]

    res = dict(res, steps=[], unfinished_for=250.0)
    s = TB.summarize(res)
    assert s["warm"] == "> 250 (unfinished)" and s["step_note"] is None

    steps = [warm] + [dict(warm, i=i, warmup=False, seconds=t) for i, t in ((1, 10.0), (2, 12.0))]
    s = TB.summarize(dict(res, steps=steps, timed_out=False, done=True))
    assert s["step"] == 11.0 and s["best"] == 10.0 and s["ips"] == pytest.approx(1 / 11) and s["status"] == "ok"


def test_gpu_run_refuses_a_missing_pack_in_one_line():
    """The GPU command's own rehearsal (--dry-run) is tests/test_gpu_run.py; here only its argument check."""
    out = subprocess.run([sys.executable, str(HERE / "gpu_run.py"), "--out", "/tmp/_gpu_run_no_pack",
                          "--data", "/nonexistent"], capture_output=True, text=True, timeout=600)
    assert out.returncode == 2 and "no pack.json" in out.stderr


def test_scripts_start_tensorflow_with_the_package_onednn_default():
    """quiet_tensorflow() imports brats_keras before keras, so TensorFlow starts with oneDNN on
    (importing keras first would leave it off on CPUs where TensorFlow's default is off)."""
    code = ("import sys; sys.path.insert(0, %r); import _common as C; C.quiet_tensorflow(); import keras; "
            "print(C.onednn_state())" % str(HERE))
    env = {k: v for k, v in __import__("os").environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    env["KERAS_BACKEND"] = "tensorflow"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1].startswith("on (TF_ENABLE_ONEDNN_OPTS=1")


def test_segresnet_bench_runs_both_models_at_a_tiny_size():
    out = subprocess.run([sys.executable, str(HERE / "segresnet_bench.py"), "--size", "16", "--batch", "1",
                          "--base", "4", "--rounds", "1", "--warmup", "0", "--steps", "1"],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    rows = [line for line in out.stdout.splitlines() if line.startswith("| unet3d") or line.startswith("| segresnet")]
    assert len(rows) == 4 and all(" ok " in r for r in rows[:2])  # every run, then per model
    assert "segresnet / unet3d: parameters" in out.stdout


def test_unet2d_bench_runs_both_models_at_a_tiny_size():
    out = subprocess.run([sys.executable, str(HERE / "unet2d_bench.py"), "--size3d", "16", "--batch3d", "1",
                          "--base3d", "4", "--size2d", "16", "--batch2d", "2", "--bases2d", "4", "--rounds", "1",
                          "--warmup", "0", "--steps", "1"], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    rows = [line for line in out.stdout.splitlines() if line.startswith("| unet")]
    assert len(rows) == 4 and all(" ok " in r for r in rows[:2])  # every run, then per model
    assert "unet2d base 4 / unet3d base 4: step time" in out.stdout
