"""The preprocessing spec (brats_keras.spec): round trips through its dict, one-line validation errors,
and dicts written before it existed (old manifests, the shipped model's info) reading as the same spec."""
from __future__ import annotations

import json
from dataclasses import replace

import pytest

from brats_keras.checkpoint import model_info, read_info
from brats_keras.convert import conversion_settings
from brats_keras.inference import check_same_preprocessing
from brats_keras.io import BratsInputError
from brats_keras.pretrained import MODEL_FILE, pretrained_paths
from brats_keras.spec import DEFAULT_WINDOW, PreprocessingSpec
from brats_keras.training import TrainConfig

REPORT_BOX = [[56, 184], [56, 184], [13, 141]]
#: the manifest settings of the shipped model's training data (data/real_2mm), as convert wrote them before the spec
SHIPPED_DATA_SETTINGS = {"modalities": ["flair", "t1", "t1ce", "t2"], "crop": "brain", "crop_box": None, "margin": 4,
                         "scale": "zscore", "dtype": "float16", "min_tumor": None, "downsample": 2}
#: the info embedded in model.keras, the single model shipped before the fold ensemble (written before the spec)
OLD_SHIPPED_INFO = {"format": 1, "modalities": ["flair", "t1", "t1ce", "t2"], "scale": "zscore", "crop": "brain",
                    "downsample": 2, "output": "regions", "patch_size": 64, "model": "unet3d", "loss": "dice+bce"}
SHIPPED_SPEC = PreprocessingSpec(("flair", "t1", "t1ce", "t2"), crop="brain", margin=4, scale="zscore",
                                 dtype="float16", downsample=2, patch_size=64, output="regions")


@pytest.mark.parametrize("spec", [
    PreprocessingSpec(("flair", "t1ce", "t2")),
    PreprocessingSpec(("t2", "flair"), crop="brain", margin=0, scale="zscore", dtype="float32", downsample=3),
    PreprocessingSpec(("t1",), crop="fixed", crop_box=((0, 10), (5, 20), (1, 2)), dtype="uint8"),
    PreprocessingSpec(("flair", "t1", "t1ce", "t2"), downsample=4, patch_size=(32, 48, 16), output="softmax"),
    SHIPPED_SPEC,
])
def test_round_trip_through_json(spec):
    d = spec.to_dict()
    assert list(d) == ["modalities", "crop", "crop_box", "margin", "scale", "dtype", "downsample", "patch_size",
                       "output"]
    assert PreprocessingSpec.from_dict(json.loads(json.dumps(d))) == spec
    assert PreprocessingSpec.from_dict(d).to_dict() == d


def test_defaults_are_filled_in_one_place():
    spec = PreprocessingSpec.from_dict({"modalities": "t2f,t1c"})  # 2023 names, a comma list
    assert spec == PreprocessingSpec(("flair", "t1ce"), crop="fixed", crop_box=tuple(map(tuple, REPORT_BOX)),
                                     margin=None, scale="minmax", dtype="float16", downsample=1)
    assert spec.patch_size is None and spec.output is None and spec.window == DEFAULT_WINDOW == 128
    assert not spec.regions
    brain = PreprocessingSpec.from_dict({"modalities": ["t1"], "crop": "brain"})
    assert brain.margin == 4 and brain.crop_box is None
    assert replace(spec, patch_size=48, output="regions").window == 48


@pytest.mark.parametrize("d,message", [
    ([1, 2], "preprocessing settings must be a JSON object, got list"),
    ({"scale": "zscore"}, "no modalities: the preprocessing settings must list the modalities in channel order"),
    ({"modalities": ["flair", "adc"]}, "unknown modality 'adc': use one of flair, t1, t1ce, t2 or t2f, t1n, t1c, t2w"),
    ({"modalities": ["t1", "t1n"]}, "modality listed twice in ['t1', 't1n']"),
    ({"modalities": 3}, "modalities must be a list of modality names, got 3"),
    ({"modalities": ["flair", 1]}, "modalities must be a list of modality names, got ['flair', 1]"),
    ({"modalities": ["t1"], "crop": "centre"}, "unknown crop 'centre': use fixed or brain"),
    ({"modalities": ["t1"], "scale": "z"}, "unknown scale 'z': use one of minmax, zscore"),
    ({"modalities": ["t1"], "dtype": "int16"}, "unknown dtype 'int16': use one of float16, float32, uint8"),
    ({"modalities": ["t1"], "dtype": "uint8", "scale": "zscore"},
     "dtype uint8 stores min-max scaled values as round(255 * value): use it with scale minmax"),
    ({"modalities": ["t1"], "downsample": 5}, "downsample must be 1, 2, 3 or 4, got 5"),
    ({"modalities": ["t1"], "downsample": True}, "downsample must be 1, 2, 3 or 4, got True"),
    ({"modalities": ["t1"], "downsample": 1.5}, "downsample must be 1, 2, 3 or 4, got 1.5"),
    ({"modalities": ["t1"], "crop_box": [[0, 10], [0, 10]]},
     "crop_box must be three [start, stop] pairs with 0 <= start < stop, got [[0, 10], [0, 10]]"),
    ({"modalities": ["t1"], "crop_box": [[10, 0], [0, 10], [0, 10]]},
     "crop_box must be three [start, stop] pairs with 0 <= start < stop, got [[10, 0], [0, 10], [0, 10]]"),
    ({"modalities": ["t1"], "crop": "brain", "crop_box": REPORT_BOX},
     f"crop_box {REPORT_BOX!r} is only used with crop fixed, not with crop brain"),
    ({"modalities": ["t1"], "margin": 4}, "margin 4 is only used with crop brain, not with crop fixed"),
    ({"modalities": ["t1"], "crop": "brain", "margin": -1}, "margin must be an integer >= 0, got -1"),
    ({"modalities": ["t1"], "patch_size": 0}, "patch_size must be a positive integer or three of them, got 0"),
    ({"modalities": ["t1"], "patch_size": [64, 64]},
     "patch_size must be a positive integer or three of them, got [64, 64]"),
    ({"modalities": ["t1"], "output": "sigmoid"}, "unknown output 'sigmoid': use one of 'softmax', 'regions'"),
])
def test_a_bad_dict_is_one_line_naming_the_key_and_value(d, message):
    with pytest.raises(ValueError) as err:
        PreprocessingSpec.from_dict(d)
    assert str(err.value) == message


def test_keys_of_other_layers_are_ignored():
    info = {**SHIPPED_SPEC.to_dict(), "format": 1, "model": "unet3d", "loss": "dice+bce", "min_tumor": 0.01,
            "postprocess": {"et_threshold": 100}, "export": {"format": "onnx"}}
    assert PreprocessingSpec.from_dict(info) == SHIPPED_SPEC


# ----------------------------------------------------------------------------- dicts written before the spec
def test_the_shipped_model_reads_as_the_spec_of_its_training_data():
    for path in pretrained_paths():  # model.keras, or every fold of the ensemble that replaces it
        assert PreprocessingSpec.from_dict(read_info(path)) == SHIPPED_SPEC, path
    if MODEL_FILE.exists():
        assert read_info(MODEL_FILE) == OLD_SHIPPED_INFO
    info = OLD_SHIPPED_INFO
    assert "dtype" not in info and "margin" not in info  # written before the spec: these take their defaults
    spec = PreprocessingSpec.from_dict(info)
    assert spec == SHIPPED_SPEC and spec.window == 64 and spec.regions
    # the old manifest of its data, plus the run's patch size and output, is the same spec
    data = PreprocessingSpec.from_dict(SHIPPED_DATA_SETTINGS)
    assert replace(data, patch_size=64, output="regions") == spec
    # and a model trained on it today embeds an info that reads as the same spec, keeping the old keys' values
    cfg = TrainConfig(model="unet3d", output="regions", loss="dice+bce", patch_size=64)
    new_info = model_info(cfg, SHIPPED_DATA_SETTINGS)
    assert PreprocessingSpec.from_dict(new_info) == spec
    assert {k: new_info[k] for k in info} == info


def test_an_old_manifest_without_downsample_reads_as_today_settings():
    old = {"modalities": ["flair", "t1ce", "t2"], "crop": "fixed", "crop_box": REPORT_BOX, "margin": None,
           "scale": "minmax", "dtype": "float16", "min_tumor": None}  # convert wrote downsample only when > 1
    spec = PreprocessingSpec.from_dict(old)
    assert spec.downsample == 1
    assert spec == PreprocessingSpec.from_dict(conversion_settings())
    assert conversion_settings() == {**spec.to_dict(), "min_tumor": None}


def test_ensemble_check_reads_a_missing_key_as_its_default():
    base = {"modalities": ["flair", "t1", "t1ce", "t2"], "scale": "zscore", "output": "regions", "crop": "brain"}
    check_same_preprocessing([base, {**base, "downsample": 1}], ["old.keras", "new.keras"])  # passes
    with pytest.raises(BratsInputError) as err:
        check_same_preprocessing([base, {**base, "downsample": 2}], ["old.keras", "new.keras"])
    assert str(err.value) == ("old.keras and new.keras were trained with different downsample (1 and 2): "
                              "the models of an ensemble need the same preprocessing")
    with pytest.raises(BratsInputError, match=r"^new.keras: unknown scale 'z-score': use one of minmax, zscore$"):
        check_same_preprocessing([base, {**base, "scale": "z-score"}], ["old.keras", "new.keras"])
