"""The GPU command (benchmarks/gpu_run.sh -> gpu_run.py) rehearsed on the CPU before a GPU is ever lent:
real cases packed small, every step run at tiny sizes under JAX without TensorFlow, and the weights
that come back rebuilt into a model here."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from brats_keras import io as bio
from brats_keras.convert import convert_folder

from conftest import REAL, require_shared

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import gpu_run as G  # noqa: E402

VAL, TRAIN = "Brats18_TCIA02_606_1", "Brats18_2013_2_1"
MIB = 2**20


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    require_shared(REAL)
    root = tmp_path_factory.mktemp("gpu_pack")
    (root / "in").mkdir()
    for cid in (VAL, TRAIN):
        (root / "in" / cid).symlink_to(REAL / cid)
    split = root / "split.json"
    split.write_text(json.dumps({"train": [TRAIN, "not_here"], "val": [VAL], "test": []}))
    meta = G.pack([root / "in"], split, root / "pack")
    return root, meta


def test_pack_holds_what_the_shipped_model_reads_within_the_travel_budget(packed):
    root, meta = packed
    assert meta["split"] == {"val": [VAL], "train": [TRAIN]}
    assert meta["settings"]["modalities"] == ["flair", "t1", "t1ce", "t2"]
    assert meta["settings"]["scale"] == "zscore" and meta["settings"]["downsample"] == 2
    assert meta["size_mib"] < 2.0  # about 0.65 MiB a case: 28 cases travel in about 18 MiB
    # the int8 image is the converter's float16 image to within half a quantization step
    convert_folder(root / "in", root / "conv", modalities="flair,t1,t1ce,t2", crop="brain", scale="zscore",
                   downsample=2, workers=1, progress=False)
    _, arrays = G.read_pack(root / "pack")
    ref = np.load(root / "conv" / "images" / f"{VAL}.npy").astype(np.float32)
    inside = np.abs(ref) < 127 / G.QUANT
    assert np.abs(arrays[VAL]["image"] - ref)[inside].max() <= 0.5 / G.QUANT + 1e-3
    assert np.array_equal(arrays[VAL]["mask"], np.load(root / "conv" / "masks" / f"{VAL}.npy"))
    # the 1 mm truth is the expert label map inside the crop box
    box = meta["cases"][VAL]["crop_box"]
    truth = bio.load_classes(REAL / VAL / f"{VAL}_seg.nii.gz")
    assert np.array_equal(arrays[VAL]["truth"], truth[tuple(slice(a, b) for a, b in box)])


def test_pack_over_the_limit_is_refused(packed, tmp_path):
    root, _ = packed
    with pytest.raises(ValueError, match="over the 0.1 MiB"):
        G.pack([root / "in"], root / "split.json", tmp_path / "pack", limit_mib=0.1)


def test_trip_check_counts_what_travels_and_names_the_folds_to_move_aside(tmp_path, capsys, monkeypatch):
    """A device call carries the files git does not ignore plus .whl and .gpu, 64 MiB in all; a shipped fold
    ensemble beside the pack and the wheels does not fit, and the check says which fold files to move aside."""
    repo = tmp_path / "repo"
    ship = repo / "brats_keras" / "pretrained"
    ship.mkdir(parents=True)
    (repo / ".gitignore").write_text("/.whl/\n/.gpu/\n/.gpu-aside/\n/runs/\n")
    for k in range(3):
        (ship / f"fold-{k}.keras").write_bytes(b"f" * (3 * MIB))
    (repo / "code.py").write_bytes(b"c" * MIB)  # untracked but not ignored: travels too
    for folder, size in ((".whl", 2 * MIB), (".gpu", 4 * MIB), ("runs", 50 * MIB)):  # runs/ is ignored
        (repo / folder).mkdir()
        (repo / folder / "x.bin").write_bytes(b"w" * size)
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    subprocess.run(["git", "add", ".gitignore", "brats_keras"], cwd=repo, check=True)
    sizes = G.trip_sizes(repo)
    assert sorted(sizes) == [".gitignore", ".gpu/x.bin", ".whl/x.bin", "brats_keras/pretrained/fold-0.keras",
                             "brats_keras/pretrained/fold-1.keras", "brats_keras/pretrained/fold-2.keras", "code.py"]
    total = sum(sizes.values()) / MIB  # 9 + 1 + 2 + 4 MiB and the .gitignore
    assert G.check_trip(repo) == pytest.approx(total) and 16 < total < 16.01
    with pytest.raises(ValueError) as err:  # over: every fold but fold-0 (the one the GPU run loads) aside
        G.check_trip(repo, limit_mib=14)
    message = str(err.value)
    assert "\n" not in message and f"would carry {total:.1f} MiB (working tree 10.0, .whl 2.0, .gpu 4.0)" in message
    folds = "brats_keras/pretrained/fold-1.keras brats_keras/pretrained/fold-2.keras"
    assert f"move {folds} aside" in message and "fold-0.keras" not in message
    assert f"mkdir -p .gpu-aside && mv {folds} .gpu-aside/; afterwards mv .gpu-aside/*.keras" in message
    with pytest.raises(ValueError, match=r"over its 9 MiB: carry less \(largest: .*fold-0.keras \(3.0\)"):
        G.check_trip(repo, limit_mib=9)  # even without the spare folds: 10 MiB
    (repo / ".gpu-aside").mkdir()  # the folds moved aside as the message says: ignored, they stay here
    for k in (1, 2):
        (ship / f"fold-{k}.keras").rename(repo / ".gpu-aside" / f"fold-{k}.keras")
    assert G.check_trip(repo, limit_mib=14) == pytest.approx(total - 6)
    monkeypatch.setattr(G, "REPO", repo)
    assert G.main(["--check-trip"]) == 0
    assert capsys.readouterr().out.startswith(f"a device call carries {total - 6:.1f} MiB of the 64 MiB allowed")
    monkeypatch.setattr(G, "TRIP_MIB", 5.0)
    assert G.main(["--check-trip"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: a device call would carry")
    plain = tmp_path / "plain"  # a copy without .git (an sdist, a tarball): one line and exit 2, not a traceback
    plain.mkdir()
    monkeypatch.setattr(G, "REPO", plain)
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))  # git must not find a checkout above it
    assert G.main(["--check-trip"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {plain}: not a git checkout")


def test_inference_step_scores_a_shipped_fold_on_the_cases_it_held_out(tmp_path, monkeypatch):
    """With a fold ensemble shipped the inference step loads fold-0.keras; the pack's val cases are the single
    model's, mostly training cases of that fold, and were scored as if unseen. It scores the packed cases the
    model card says fold 0 held out."""
    import brats_keras.pretrained as pre
    from brats_keras.checkpoint import save_model
    from brats_keras.models import build_model

    info = {"format": 1, "modalities": ["flair", "t1", "t1ce", "t2"], "scale": "zscore", "crop": "brain",
            "downsample": 2, "output": "regions", "patch_size": 16, "model": "unet3d", "loss": "dice+bce"}
    for k in (0, 1):
        save_model(build_model("unet3d", in_channels=4, output="regions", base_filters=4, depth=2),
                   tmp_path / f"fold-{k}.keras", info, include_optimizer=False)
    from brats_keras.io import file_checksum

    (tmp_path / "ensemble.json").write_text(json.dumps({"models": {  # the record a shipped ensemble is used by
        f"fold-{k}.keras": {"fold": k, "checksum": file_checksum(tmp_path / f"fold-{k}.keras")} for k in (0, 1)}}))
    card = {"kind": "fold ensemble", "model_files": [{"file": f"fold-{k}.keras", "fold": k} for k in (0, 1)],
            "data": {"folds": {"0": ["b", "c"], "1": ["a", "d"]}}}
    (tmp_path / "model_card.json").write_text(json.dumps(card))
    monkeypatch.setattr(pre, "HERE", tmp_path)
    monkeypatch.setattr(pre, "MODEL_FILE", tmp_path / "model.keras")
    monkeypatch.setattr(pre, "CARD_JSON", tmp_path / "model_card.json")
    rng = np.random.default_rng(0)
    truth = np.zeros((32, 32, 32), np.uint8)
    truth[10:20, 10:20, 10:20] = 2
    arrays = {cid: {"image": rng.normal(size=(16, 16, 16, 4)).astype(np.float32), "truth": truth}
              for cid in "abcd"}
    meta = {"split": {"val": ["a", "b"], "train": ["c", "d"]}, "cases": {cid: {} for cid in "abcd"}}
    out = G.step_inference({"dry": False, "sizes": G.FULL, "pack": (meta, arrays)}, box=600)
    assert sorted(out["plain"]["per_case"]) == ["b", "c"] == sorted(out["tta"]["per_case"])
    # a card that lists no file of the loaded fold: one line, not a bare StopIteration
    (tmp_path / "model_card.json").write_text(json.dumps({**card, "model_files": card["model_files"][1:]}))
    with pytest.raises(ValueError, match="lists no fold-0.keras under model_files"):
        G._unseen_cases(["a"], arrays, tmp_path / "fold-0.keras")


def test_weight_parts_stay_under_the_limit_and_round_trip(tmp_path):
    class Fake:
        def __init__(self, ws):
            self.ws = ws

        def get_weights(self):
            return self.ws

    rng = np.random.default_rng(0)
    ws = [rng.standard_normal(s).astype(np.float32) for s in [(100, 50), (3,), (2000,), (40, 40)]]
    out = tmp_path
    names = G.save_weight_parts(Fake(ws), out, part_bytes=12000)
    assert len(names) == 2  # 10000 + 6 | 4000 + 3200 bytes in float16, in model order
    assert all((out / n).stat().st_size <= 12000 + 1024 for n in names)
    back = G.load_weight_parts([out / n for n in names])
    for a, b in zip(ws, back):
        np.testing.assert_array_equal(a.astype(np.float16).astype(np.float32), b)
    with pytest.raises(ValueError, match="over a part"):
        G.save_weight_parts(Fake([np.zeros(10000, np.float32)]), out, part_bytes=12000)


def test_missing_pack_is_one_line_and_exit_2(tmp_path, capsys):
    assert G.main(["--out", str(tmp_path / "o"), "--data", str(tmp_path / "nothing")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no pack.json" in err[0]


def test_dry_run_runs_every_step_under_jax_and_its_weights_come_home(packed, tmp_path):
    root, _ = packed
    out = tmp_path / "OUT"
    # XLA's CPU back end at optimisation level 0 compiles a training step about 2x faster; sizes are tiny
    env = dict(os.environ, OUT=str(out), JAX_PLATFORMS="cpu", PYTHON=sys.executable,
               XLA_FLAGS="--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true")
    env.pop("KERAS_BACKEND", None)
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_run.sh"), "--dry-run", "--data",
                           str(root / "pack"), "--budget-s", "1200"], env=env, capture_output=True, text=True,
                          timeout=1800)
    tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-40:])
    assert proc.returncode == 0, tail
    res = json.loads((out / "results.json").read_text())
    assert res["dry_run"] is True
    assert {k: v["status"] for k, v in res["steps"].items()} == {k: "ok" for k in G.STEPS}, tail
    steps = res["steps"]
    assert steps["env"]["backend"] == "jax"
    rows = steps["throughput"]["rows"]
    assert {r["precision"] for r in rows} == set(G.PRECISIONS) and all(r["status"] == "ok" for r in rows)
    assert all(r["images_per_s"] > 0 for r in rows)
    assert steps["max_batch"]["largest_batch"] == G.DRY["max_batches"][-1]
    for key in ("plain", "tta"):
        assert steps["inference"][key]["cases"] == 1 and set(steps["inference"][key]["mean"]) == {"WT", "TC", "ET"}
    train = steps["train"]
    assert train["info"]["modalities"] == ["flair", "t1", "t1ce", "t2"] and train["info"]["downsample"] == 2
    assert train["steps"] >= 2 and set(train["validation"]["per_case"]) == {VAL}
    # what comes back fits the return trip: at most 8 files of at most 16 MiB
    files = [p for p in out.rglob("*") if p.is_file()]
    assert len(files) <= 8 and all(p.stat().st_size <= 16 * MIB for p in files), files
    assert {n for n in train["weights"]} <= {p.name for p in files}
    # rebuilt here, on TensorFlow, the model gives what it gave there, on JAX
    got = G.import_weights(out, tmp_path / "gpu.keras")
    np.testing.assert_allclose(got["fingerprint"], train["fingerprint"], atol=1e-4)
    from brats_keras.checkpoint import read_info

    assert read_info(tmp_path / "gpu.keras") == train["info"]


@pytest.mark.parametrize("has_keras", [True, False])
def test_wheels_for_another_python_fall_back_to_its_own_keras_or_stop(tmp_path, has_keras):
    """.whl/ in a developer's checkout holds the GPU machine's Python 3.12 wheels: where they do not install, a
    Python with Keras of its own goes on with it (warning), one without stops with exit 3 before running anything."""
    (tmp_path / "benchmarks").mkdir()
    (tmp_path / "benchmarks" / "gpu_run.sh").write_text((ROOT / "benchmarks" / "gpu_run.sh").read_text())
    (tmp_path / ".whl").mkdir()
    (tmp_path / ".whl" / "keras-0-cp312-none-any.whl").write_text("not a wheel")
    stub = tmp_path / "python"  # pip fails; the Keras import works or not; gpu_run.py says it ran
    stub.write_text("#!/bin/sh\n"
                    'case "$*" in *"-m pip"*) exit 1;; *"import keras"*) exit ' + ("0" if has_keras else "1") + ";;\n"
                    '*gpu_run.py*) echo "gpu_run.py ran with PYTHONPATH=$PYTHONPATH"; exit 0;; esac\nexit 9\n')
    stub.chmod(0o755)
    env = dict(os.environ, OUT=str(tmp_path / "OUT"), PYTHON=str(stub))
    env.pop("PYTHONPATH", None)
    proc = subprocess.run(["bash", str(tmp_path / "benchmarks" / "gpu_run.sh"), "--dry-run"], env=env,
                          capture_output=True, text=True, timeout=60)
    if has_keras:
        assert proc.returncode == 0, proc.stderr
        assert "do not install" in proc.stderr and f"PYTHONPATH={tmp_path}\n" in proc.stdout
    else:
        assert proc.returncode == 3 and "gpu_run.py ran" not in proc.stdout
        assert proc.stderr.strip().splitlines()[-1] == (f"error: installing the carried wheels failed, and {stub} "
                                                        "has no Keras and nibabel of its own")


def test_the_pack_scores_the_held_out_cases_of_a_shipped_fold():
    """No old single-model split ships: --pack's default split is fold 0's held-out cases in ensemble.json."""
    from brats_keras.ensemble_record import read_record
    from brats_keras.pretrained import HERE

    assert not (HERE / "split.json").exists()
    record = read_record(HERE)["models"]
    for name, entry in record.items():
        assert G.fold_split(entry["fold"]) == {"val": entry["val"]}, name
    with pytest.raises(ValueError, match="no shipped model is fold 99"):
        G.fold_split(99)
