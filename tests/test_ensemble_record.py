"""An ensemble folder is exactly what its ensemble.json lists (brats_keras.ensemble_record): prediction from it, and
from the shipped ensemble, refuses a missing, unlisted or changed model file in one line (exit 2)."""
from __future__ import annotations

import json
import shutil

import pytest

import brats_keras  # noqa: F401  (before keras)
import keras

from brats_keras.checkpoint import read_info, save_model
from brats_keras.cli import main as cli_main
from brats_keras.ensemble_record import RECORD, ensemble_files
from brats_keras.inference import Predictor
from brats_keras.io import BratsInputError, file_checksum
from brats_keras.models import build_model

from conftest import write_small_case

INFO = {"modalities": ["flair", "t1", "t1ce", "t2"], "scale": "zscore", "output": "regions", "patch_size": 16,
        "downsample": 1, "crop": "brain"}
NAMES = ("fold-0.keras", "fold-1.keras", "fold-2.keras")


def write_record(folder, names) -> None:
    """An ensemble.json listing ``names`` in ``folder`` with their current checksums, as brats-keras ensemble
    writes it."""
    models = {name: {"fold": int(name[5]), "val": [f"c{name[5]}"], "checksum": file_checksum(folder / name)}
              for name in names}
    (folder / RECORD).write_text(json.dumps({"checkpoint": "last", "models": models}))


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """Three tiny region models (different weights) in an ensemble folder with its record, and one input case."""
    root = tmp_path_factory.mktemp("ensrec")
    folder = root / "ens"
    for k, name in enumerate(NAMES):
        keras.utils.set_random_seed(k)
        save_model(build_model("unet3d", in_channels=4, base_filters=2, depth=2, norm="none", output="regions"),
                   folder / name, INFO, include_optimizer=False)
    keras.backend.clear_session()
    write_record(folder, NAMES)
    write_small_case(root / "cases", "p0")
    return root


@pytest.fixture()
def ens(source, tmp_path):
    folder = tmp_path / "ens"
    shutil.copytree(source / "ens", folder)
    return folder


def snapshot(folder) -> dict:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_an_ensemble_folder_gives_exactly_its_listed_files(ens):
    assert ensemble_files(ens) == [ens / n for n in NAMES]
    assert Predictor(ens).names == [str(ens / n) for n in NAMES]


def _stray_copy(ens):
    (ens / "fold-0 (copy).keras").write_bytes((ens / "fold-0.keras").read_bytes())
    return "fold-0 (copy).keras", "a model file that ensemble.json does not list"


def _deleted(ens):
    (ens / "fold-1.keras").unlink()
    return "fold-1.keras", "listed in ensemble.json but missing"


def _replaced(ens):  # another valid model of the same architecture in a listed file's place
    (ens / "fold-2.keras").write_bytes((ens / "fold-0.keras").read_bytes())
    return "fold-2.keras", "its sha256 differs from the one ensemble.json records"


def _dropped_in(ens):  # a model of another name, and a second one: the first named, the count given
    for name in ("model.keras", "zz.keras"):
        (ens / name).write_bytes((ens / "fold-0.keras").read_bytes())
    return "model.keras (and 1 more)", "does not list"


def _no_checksum(ens):
    record = json.loads((ens / RECORD).read_text())
    del record["models"]["fold-1.keras"]["checksum"]
    (ens / RECORD).write_text(json.dumps(record))
    return RECORD, "fold-1.keras records no checksum; write the ensemble again"


@pytest.mark.parametrize("fault", [_stray_copy, _deleted, _replaced, _dropped_in, _no_checksum])
def test_predict_from_an_ensemble_folder_refuses_a_missing_extra_or_changed_file(fault, ens, source, tmp_path,
                                                                                  capsys):
    """predict --model ENS averaged whatever .keras files ENS held (4 or 6 models for 5, exit 0): now the folder
    must be what ensemble.json lists, each file with its recorded sha256; else one line naming the file, exit 2,
    no output folder, and the ensemble folder as it was."""
    name, message = fault(ens)
    before = snapshot(ens)
    out = tmp_path / "preds"
    capsys.readouterr()
    rc = cli_main(["predict", "--model", str(ens), "--input", str(source / "cases"), "--output", str(out), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith(f"error: {ens / name}: ") and message in err[0], err
    assert not out.exists() and snapshot(ens) == before
    with pytest.raises(BratsInputError, match="^" + str(ens / name).replace("(", r"\(").replace(")", r"\)")):
        Predictor(ens)


def test_a_folder_without_ensemble_json_uses_all_its_keras_files(ens):
    """The documented rule for a plain folder (predict --help): every *.keras file in it, stray copy included."""
    _stray_copy(ens)
    (ens / RECORD).unlink()
    assert len(Predictor(ens).models) == 4


def test_set_postprocessing_on_a_listed_file_keeps_the_ensemble_usable(ens, tmp_path, capsys):
    """set-postprocessing changes a listed file's bytes: the record takes its new checksum (and the ensemble still
    predicts); a file of a folder that is not what its record says is refused, unchanged."""
    spec = tmp_path / "pp.json"
    spec.write_text(json.dumps({"min_component": 20}))
    assert cli_main(["set-postprocessing", "--model", str(ens / "fold-1.keras"), "--from", str(spec)]) == 0
    record = json.loads((ens / RECORD).read_text())
    assert record["models"]["fold-1.keras"]["checksum"] == file_checksum(ens / "fold-1.keras")
    assert read_info(ens / "fold-1.keras")["postprocess"]["min_component"]["WT"] == 20
    assert len(Predictor(ens).models) == 3
    _replaced(ens)
    before = snapshot(ens)
    capsys.readouterr()
    assert cli_main(["set-postprocessing", "--model", str(ens / "fold-2.keras"), "--from", str(spec)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{ens / 'fold-2.keras'}: its sha256 differs" in err[0], err
    assert snapshot(ens) == before


# ----------------------------------------------------------------------------- the shipped ensemble
@pytest.fixture()
def shipped_copy(monkeypatch, tmp_path):
    """The package folder of the shipped model, as links to its files in a temporary folder that stands in for it."""
    import brats_keras.pretrained as pre

    here = tmp_path / "pretrained"
    here.mkdir()
    for f in pre.HERE.iterdir():
        if f.is_file():
            (here / f.name).symlink_to(f)
    monkeypatch.setattr(pre, "HERE", here)
    monkeypatch.setattr(pre, "MODEL_FILE", here / "model.keras")
    return here


def test_the_shipped_ensemble_json_lists_every_shipped_file_with_its_checksum():
    from brats_keras.pretrained import HERE, model_card, pretrained_path, pretrained_paths

    if model_card().get("kind") != "fold ensemble":
        pytest.skip("a single model ships")
    record = json.loads((HERE / RECORD).read_text())
    assert sorted(record["models"]) == sorted(p.name for p in HERE.glob("*.keras"))
    assert all(m["checksum"].startswith("sha256:") for m in record["models"].values())
    assert pretrained_paths() == ensemble_files(HERE) == [HERE / n for n in sorted(record["models"])]
    assert pretrained_path() == pretrained_paths()[0]
    assert model_card()["ensemble"] == record  # the card quotes the record it ships with


@pytest.mark.parametrize("fault", ["copy", "deleted", "no record"])
def test_the_shipped_ensemble_with_a_stray_or_missing_file_is_refused(fault, shipped_copy, source, tmp_path, capsys):
    """predict without --model, --init-from pretrained and load_pretrained take the shipped ensemble as its record
    says: a stray 'fold-0 (copy).keras' (it sorted first: --init-from pretrained took it) or a deleted fold is one
    line naming the file, exit 2."""
    from brats_keras.checkpoint import load_pretrained
    from brats_keras.pretrained import model_card

    if model_card().get("kind") != "fold ensemble":
        pytest.skip("a single model ships")
    if fault == "copy":
        (shipped_copy / "fold-0 (copy).keras").symlink_to((shipped_copy / "fold-0.keras").resolve())
        name, message, error = "fold-0 (copy).keras", "does not list", BratsInputError
    elif fault == "deleted":
        (shipped_copy / "fold-3.keras").unlink()
        name, message, error = "fold-3.keras", "listed in ensemble.json but missing", BratsInputError
    else:
        (shipped_copy / RECORD).unlink()
        name, message, error = RECORD, "the record of the shipped fold ensemble is missing", FileNotFoundError
    with pytest.raises(error, match=message.replace("(", r"\(")):
        load_pretrained()
    out = tmp_path / "preds"
    capsys.readouterr()
    rc = cli_main(["predict", "--input", str(source / "cases"), "--output", str(out), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith(f"error: {shipped_copy / name}: ") and message in err[0]
    assert not out.exists()
