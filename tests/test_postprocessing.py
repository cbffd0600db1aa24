"""Post-processing: the settings and applying them (known answers), choosing them on out-of-fold predictions (the
paired test), and the choice stored in a model file and applied by prediction."""
import json

import numpy as np
import pytest

from brats_keras.checkpoint import read_info, save_model
from brats_keras.cli import main as cli_main
from brats_keras.inference import Predictor
from brats_keras.io import BratsInputError, find_cases
from brats_keras.postprocessing import (apply_postprocessing, choose_postprocessing, format_choice,
                                        postprocessing_for_voxels, postprocessing_spec, remove_small_components,
                                        set_postprocessing, small_et_to_ncr)

from conftest import write_small_case


def test_remove_small_components_and_keep_largest():
    c = np.zeros((20, 20, 20), np.uint8)
    c[2:8, 2:8, 2:8] = 2       # 216 voxels
    c[4:6, 4:6, 4:6] = 3
    c[12:15, 12:15, 12:15] = 1  # 27 voxels
    c[18, 18, 18] = 2           # 1 voxel
    out = remove_small_components(c, min_size=10)
    assert out[18, 18, 18] == 0 and out[13, 13, 13] == 1 and (out[2:8, 2:8, 2:8] == c[2:8, 2:8, 2:8]).all()
    out = remove_small_components(c, keep_largest=1)
    assert set(np.unique(out)) == {0, 2, 3} and (out > 0).sum() == 216
    assert remove_small_components(c) is c


def test_small_et_becomes_necrosis():
    c = np.zeros((5, 5, 5), np.uint8)
    c[1, 1, 1:4] = 3
    assert (small_et_to_ncr(c, 5) == 1).sum() == 3
    assert (small_et_to_ncr(c, 3) == 3).sum() == 3  # 3 voxels are not fewer than 3
    assert small_et_to_ncr(c, 0) is c


def test_sizes_are_mm3_on_a_grid_of_other_voxels():
    """On 0.9 x 0.9 x 3 mm voxels (2.43 mm^3) a size of 100 voxels of 1 mm is ceil(100 / 2.43) = 42 voxels; the
    count of components kept and the thresholds stay; on 1 mm voxels nothing changes."""
    spec = postprocessing_spec({"min_component": {"WT": 100, "ET": 10}, "keep_largest": 2, "et_threshold": 50,
                                "thresholds": [0.5, 0.4, 0.6]})
    thick = postprocessing_for_voxels(spec, 0.9 * 0.9 * 3.0)
    assert thick == {**spec, "min_component": {"WT": 42, "TC": 0, "ET": 5}, "et_threshold": 21}
    assert postprocessing_for_voxels(spec, 1.0) == spec
    c = np.zeros((8, 8, 8), np.uint8)
    c[1, 1, 1:4] = 3  # 3 voxels of 2.43 mm^3: 7.3 mm^3 of ET, under the 10 mm^3 rule of the spec below
    assert (apply_postprocessing(c, postprocessing_for_voxels({"et_threshold": 10}, 2.43)) == 1).sum() == 3
    assert (apply_postprocessing(c, postprocessing_for_voxels({"et_threshold": 10}, 4.0)) == 3).sum() == 3  # 12 mm^3


def blob(shape=(30, 30, 30)):
    """A tumor of 1000 voxels at [4:14]^3: edema, an enhancing core of 216 voxels, 8 voxels of necrosis."""
    c = np.zeros(shape, np.uint8)
    c[4:14, 4:14, 4:14] = 2
    c[6:12, 6:12, 6:12] = 3
    c[8:10, 8:10, 8:10] = 1
    return c


def with_island(c, label=2, at=24, size=2):
    c = c.copy()
    c[at:at + size, at:at + size, at:at + size] = label
    return c


def over_enhancing(shape=(30, 30, 30)):
    """Region probabilities of :func:`blob` from a model that over-calls ET: the true ET core at 0.9, its
    edema shell at 0.65 for ET (TC 0.6, WT 0.9), a far spot at 0.35 for WT. Returns (probs, box, shape) as
    :func:`load_probabilities` gives, and the truth."""
    truth = blob(shape)
    p = np.zeros(shape + (3,), np.float32)
    p[4:14, 4:14, 4:14] = (0.9, 0.6, 0.65)
    p[6:12, 6:12, 6:12] = (0.95, 0.9, 0.9)
    p[8:10, 8:10, 8:10] = (0.95, 0.9, 0.2)
    p[20:22, 20:22, 20:22, 0] = 0.35
    box = [(2, 28), (2, 28), (2, 28)]
    q = np.rint(p[2:28, 2:28, 2:28] * 255).astype(np.uint8)
    return (q, box, shape), truth


def test_region_thresholds_are_chosen_on_probabilities():
    probs, truth = over_enhancing()
    choice = choose_postprocessing(None, [truth], probs=[probs])
    # at 0.5 the whole shell is ET: ET's threshold goes first (0.6 still takes the shell at 0.65, 0.7 does not),
    # then TC's (the shell's TC 0.6 is not above 0.6: it becomes edema), WT's stays
    assert choice["postprocess"]["thresholds"] == {"WT": 0.5, "TC": 0.6, "ET": 0.7}
    assert choice["dice_before"]["ET"] < 0.5 and choice["dice_before"]["TC"] < 0.5
    assert choice["dice_after"] == {"WT": 1.0, "TC": 1.0, "ET": 1.0}
    steps = [row["step"] for row in choice["tried"]]
    assert steps[:15] == ["ET threshold"] * 5 + ["TC threshold"] * 5 + ["WT threshold"] * 5
    # 0.3 for WT would add the far spot: not chosen
    wt03 = next(r for r in choice["tried"] if r["step"] == "WT threshold" and r["setting"]["threshold"] == 0.3)
    assert wt03["dice"]["WT"] < choice["dice_before"]["WT"] and not wt03["chosen"]
    # without probabilities the label maps decide, and no threshold is tried
    from brats_keras.labels import regions_to_classes

    full = np.zeros(probs[2] + (3,), np.uint8)
    full[2:28, 2:28, 2:28] = probs[0]
    plain = choose_postprocessing([regions_to_classes(full, 127.5)], [truth])
    assert plain["postprocess"]["thresholds"] == {"WT": 0.5, "TC": 0.5, "ET": 0.5}
    assert not any("threshold" == row["step"][-9:] for row in plain["tried"])


def test_of_two_region_thresholds_that_score_alike_the_one_nearer_0_5_is_chosen():
    """A model that under-calls ET (its true core at 0.45): 0.4 and 0.3 both find it; 0.3, tried first, was kept
    although 0.4 changes less (the component sizes already went gentlest first)."""
    truth = blob()
    p = np.zeros(truth.shape + (3,), np.float32)
    p[truth > 0, 0] = 0.9
    p[(truth == 1) | (truth == 3), 1] = 0.9
    p[truth == 3, 2] = 0.45
    box = [(0, 30)] * 3
    choice = choose_postprocessing(None, [truth], probs=[(np.rint(p * 255).astype(np.uint8), box, truth.shape)])
    assert choice["dice_before"]["ET"] == 0.0 and choice["dice_after"]["ET"] == 1.0
    assert choice["postprocess"]["thresholds"] == {"WT": 0.5, "TC": 0.5, "ET": 0.4}
    et = {r["setting"]["threshold"]: r["dice"]["ET"] for r in choice["tried"] if r["step"] == "ET threshold"}
    assert et[0.3] == et[0.4] == 1.0


def test_stored_thresholds_decode_predictions_and_the_flag_replaces_them(models, tmp_path, capsys):
    path = tmp_path / "m.keras"
    path.write_bytes(models["a"].read_bytes())
    probs, truth = over_enhancing()
    set_postprocessing(path, choose_postprocessing(None, [truth], probs=[probs]))
    p = Predictor(path)
    assert p.post["thresholds"] == {"WT": 0.5, "TC": 0.6, "ET": 0.7}
    full = np.zeros(probs[2] + (3,), np.float32)
    full[2:28, 2:28, 2:28] = probs[0] / 255
    assert np.array_equal(p.to_classes(full), truth)
    assert (Predictor(path, postprocess=False).to_classes(full) == 3).sum() > (truth == 3).sum()
    assert Predictor(path, postprocess={"thresholds": [0.5, 0.5, 0.6]}).post["thresholds"]["ET"] == 0.6
    src = tmp_path / "in"
    write_small_case(src, "c0", shape=(16, 18, 14))
    assert cli_main(["predict", "--model", str(path), "--input", str(src), "--output", str(tmp_path / "o"),
                     "--thresholds", "0.5,0.5,0.6", "--quiet"]) == 0
    for bad in ("0.5,0.5", "0.5,x,0.5", "1.5"):
        with pytest.raises(SystemExit) as exc:
            cli_main(["predict", "--model", str(path), "--input", str(src), "--output", str(tmp_path / "o2"),
                      "--thresholds", bad])
        assert exc.value.code == 2 and "--thresholds" in capsys.readouterr().err
    assert not (tmp_path / "o2").exists()


def test_per_region_removal_keeps_regions_nested():
    c = with_island(blob(), label=3, size=3)  # a 27-voxel ET island far away
    spec = postprocessing_spec({"min_component": {"ET": 50}})
    out = apply_postprocessing(c, spec)
    assert (out[24:27, 24:27, 24:27] == 1).all()  # left ET, stays in TC: necrosis
    assert (out[:20, :20, :20] == c[:20, :20, :20]).all()
    out = apply_postprocessing(c, {"min_component": {"TC": 50}})
    assert (out[24:27, 24:27, 24:27] == 2).all()  # left TC, stays in WT: edema
    out = apply_postprocessing(c, {"keep_largest": {"WT": 1}})
    assert not out[20:].any() and (out[:20, :20, :20] == c[:20, :20, :20]).all()
    assert apply_postprocessing(c, {}) is c
    # the old flags are whole-tumor rules
    assert postprocessing_spec(None, min_component=5, keep_largest=1, et_threshold=9) == {
        "thresholds": {"WT": 0.5, "TC": 0.5, "ET": 0.5},
        "min_component": {"WT": 5, "TC": 0, "ET": 0}, "keep_largest": {"WT": 1, "TC": 0, "ET": 0}, "et_threshold": 9}
    with pytest.raises(ValueError, match="unknown region NCR"):
        postprocessing_spec({"min_component": {"NCR": 3}})


def test_region_thresholds_in_the_spec_and_in_decoding():
    from brats_keras.postprocessing import is_postprocessing_off, region_thresholds
    from brats_keras.labels import regions_to_classes

    assert postprocessing_spec({"thresholds": 0.4})["thresholds"] == {"WT": 0.4, "TC": 0.4, "ET": 0.4}
    assert region_thresholds({"thresholds": [0.3, 0.5, 0.7]}) == (0.3, 0.5, 0.7)
    assert region_thresholds({"thresholds": {"ET": 0.7}}) == (0.5, 0.5, 0.7)
    assert region_thresholds(None) == (0.5, 0.5, 0.5)  # a spec stored before thresholds existed
    assert is_postprocessing_off({"thresholds": 0.5}) and not is_postprocessing_off({"thresholds": {"ET": 0.6}})
    for bad, message in (({"XX": 0.5}, "unknown region XX"), ({"ET": 1.0}, "ET 1.0 is not a probability"),
                         ([0.5, 0.5], "three values"), ("high", "a number, three numbers or a dict")):
        with pytest.raises(ValueError, match=message):
            postprocessing_spec({"thresholds": bad})
    # one voxel per probability: ET at 0.65 is ET under 0.6, necrosis (TC) under 0.7
    probs = np.array([[0.9, 0.9, 0.65], [0.9, 0.45, 0.0], [0.35, 0.0, 0.0]], np.float32)
    assert regions_to_classes(probs).tolist() == [3, 2, 0]
    assert regions_to_classes(probs, (0.3, 0.4, 0.6)).tolist() == [3, 1, 2]
    assert regions_to_classes(probs, (0.5, 0.5, 0.7)).tolist() == [1, 2, 0]
    with pytest.raises(ValueError, match="one value or three"):
        regions_to_classes(probs, (0.5, 0.5))


def test_far_false_island_removal_is_chosen():
    truth = blob()
    choice = choose_postprocessing([with_island(truth)], [truth])
    assert choice["postprocess"]["min_component"] == {"WT": 10, "TC": 0, "ET": 0}  # the gentlest that fixes it
    assert choice["postprocess"]["keep_largest"]["WT"] == 0 and choice["postprocess"]["et_threshold"] == 0
    assert choice["dice_before"]["WT"] == pytest.approx(2 * 1000 / 2008) and choice["dice_after"]["WT"] == 1.0
    # a gain under min_gain (here 0.004 < 0.01) is not worth a rule
    assert choose_postprocessing([with_island(truth)], [truth], min_gain=0.01)["postprocess"] == postprocessing_spec()


def test_removal_that_would_delete_a_real_lesion_is_not_chosen():
    two = with_island(blob(), size=5)  # a real second lesion of 125 voxels
    choice = choose_postprocessing([two], [two])
    assert choice["postprocess"] == postprocessing_spec()
    largest = [r for r in choice["tried"] if r["step"] == "WT components" and "keep_largest" in r["setting"]][0]
    assert largest["dice"]["WT"] < 1 and not largest["chosen"]
    # with a case that has a false island too: drop islands under 10 voxels, but never keep only the largest
    truth = blob()
    choice = choose_postprocessing([two, with_island(truth)], [two, truth])
    assert choice["postprocess"]["min_component"]["WT"] == 10 and choice["postprocess"]["keep_largest"]["WT"] == 0
    # equal evidence both ways (a real 8-voxel lesion beside a false 8-voxel island): nothing changes
    choice = choose_postprocessing([with_island(truth), with_island(truth)], [truth, with_island(truth)])
    assert choice["postprocess"] == postprocessing_spec()


def test_paired_interval_known_answers():
    from brats_keras.postprocessing import paired_interval

    assert paired_interval([0.02] * 10) == pytest.approx((0.02, 0.02))  # every resample has the same mean
    # one case gains 1, 27 gain nothing: about 36% of resamples miss it, so the 90% interval starts at 0
    low, high = paired_interval([1.0] + [0.0] * 27)
    assert low == 0.0 and 0.0 < high < 1.0
    # deterministic (seeded) and wider at higher confidence
    diff = np.linspace(-0.05, 0.07, 28)
    assert paired_interval(diff) == paired_interval(diff)
    lo90, hi90 = paired_interval(diff, 0.9)
    lo99, hi99 = paired_interval(diff, 0.99)
    assert lo99 < lo90 < diff.mean() < hi90 < hi99
    with pytest.raises(BratsInputError, match="no cases"):
        paired_interval([])


def test_paired_test_refuses_a_gain_that_hurts_most_cases():
    """Keep-largest fixes one case with a large false island but cuts a real second lesion from five others:
    the mean rises (one big gain, five small losses), the paired interval does not stay above 0."""
    truth = blob()
    two = with_island(blob(), size=3)  # a real second lesion of 27 voxels
    preds = [with_island(truth, at=18, size=9)] + [two] * 5  # a false island of 729 voxels, then five right predictions
    truths = [truth] + [two] * 5
    old = choose_postprocessing(preds, truths, sizes=(), et_thresholds=(), confidence=None)
    assert old["postprocess"]["keep_largest"]["WT"] == 1 and old["confidence"] is None
    new = choose_postprocessing(preds, truths, sizes=(), et_thresholds=())
    assert new["postprocess"] == postprocessing_spec() and new["confidence"] == 0.9
    row = [r for r in new["tried"] if r["step"] == "WT components"][0]
    low, high = row["gain_interval"]
    gains = np.array([1.0 - 2 * 1000 / (1000 + 1729)] + [2 * 1000 / 2027 - 1.0] * 5)  # per case, known
    assert row["dice"]["WT"] - new["dice_before"]["WT"] == pytest.approx(gains.mean())
    assert gains.mean() > 0.001 and low < 0 < high
    assert not row["chosen"] and "paired" not in format_choice(old) and "bootstrap interval" in format_choice(new)


def test_choice_rule_flags_repeat_the_rule():
    from brats_keras.postprocessing import choice_rule_flags

    assert choice_rule_flags({"min_gain": 0.001, "confidence": 0.9}) == ""
    assert choice_rule_flags({"min_gain": 0.001}) == " --confidence 0"  # chosen before the paired test existed
    assert choice_rule_flags({"min_gain": 0.01, "confidence": 0.95}) == " --min-gain 0.01 --confidence 0.95"


def test_small_et_to_necrosis_is_chosen_when_et_is_false():
    no_et = blob()
    no_et[no_et == 3] = 2
    false_et = no_et.copy()
    false_et[5:7, 5:7, 5:10] = 3  # 20 voxels of ET where the truth has none
    preds, truths = [blob(), false_et], [blob(), no_et]
    choice = choose_postprocessing(preds, truths, sizes=())
    assert choice["postprocess"]["et_threshold"] == 50  # 216 true ET voxels survive every threshold up to 200
    assert choice["dice_before"]["ET"] == 0.5 and choice["dice_after"]["ET"] == 1.0
    # with component removal allowed, dropping ET islands under 50 voxels does it first
    choice = choose_postprocessing(preds, truths)
    assert choice["postprocess"]["min_component"]["ET"] == 50 and choice["postprocess"]["et_threshold"] == 0
    # a real small ET predicted right: the rule would erase it, so it is not chosen
    small_et = blob()
    small_et[small_et == 3] = 2
    small_et[8:11, 8:11, 8:11] = 3
    assert choose_postprocessing([small_et], [small_et])["postprocess"]["et_threshold"] == 0


def test_region_thresholds_for_a_softmax_model_are_refused_not_ignored(tmp_path, capsys):
    """A softmax model takes the most probable class: --thresholds, or a region model's choice stored in it,
    changed nothing and said nothing."""
    import keras

    from brats_keras.models import unet3d

    keras.utils.set_random_seed(0)
    info = {"modalities": ["flair", "t1", "t1ce", "t2"], "scale": "zscore", "output": "softmax", "patch_size": 16,
            "downsample": 1, "crop": "brain"}
    path = save_model(unet3d(in_channels=4, base_filters=4, depth=2, norm="none", output="softmax"),
                      tmp_path / "soft.keras", info)
    with pytest.raises(ValueError, match="soft.keras: region thresholds apply to models with region outputs"):
        Predictor(path, postprocess={"thresholds": [0.5, 0.5, 0.7]})
    with pytest.raises(ValueError, match="region thresholds apply"):
        Predictor(path, postprocess={"thresholds": {"ET": 0.7}})
    # 0.5 is what softmax decoding means
    assert Predictor(path, postprocess={"thresholds": 0.5}).post == postprocessing_spec()
    src = tmp_path / "in"
    write_small_case(src, "c0", shape=(16, 18, 14))
    capsys.readouterr()
    assert cli_main(["predict", "--model", str(path), "--input", str(src), "--output", str(tmp_path / "o"),
                     "--thresholds", "0.5,0.5,0.7", "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "region thresholds apply" in err[0] and not (tmp_path / "o").exists()
    probs, truth = over_enhancing()
    with pytest.raises(BratsInputError, match="soft.keras: the post-processing sets region thresholds, which a "
                                              "model with softmax outputs ignores"):
        set_postprocessing(path, choose_postprocessing(None, [truth], probs=[probs]))
    assert "postprocess" not in read_info(path)
    set_postprocessing(path, choose_postprocessing([with_island(blob())], [blob()]))  # component rules apply
    assert read_info(path)["postprocess"]["min_component"]["WT"] == 10


def test_stored_postprocessing_is_applied_and_flags_override(models, tmp_path, capsys):
    path = tmp_path / "m.keras"
    path.write_bytes(models["a"].read_bytes())
    choice = choose_postprocessing([with_island(blob())], [blob()])
    set_postprocessing(path, {**choice, "chosen_on": {"crossval": "cv"}})
    info = read_info(path)
    assert info["postprocess"]["min_component"]["WT"] == 10 and info["scale"] == "zscore"
    from brats_keras.checkpoint import load_model

    load_model(path, compile=False)  # still a loadable Keras file
    assert Predictor(path).post == postprocessing_spec(choice["postprocess"])
    assert Predictor(path, postprocess={"et_threshold": 100}).post == postprocessing_spec(None, et_threshold=100)
    assert Predictor(path, postprocess=False).post == postprocessing_spec()
    # end to end: a predicted far island is removed from the written label map
    src = tmp_path / "in"
    write_small_case(src, "c0", shape=(36, 36, 30))
    p = Predictor(path)

    def fake(image, progress=False):
        probs = np.zeros(image.shape[:3] + (3,), np.float32)
        probs[10:16, 10:16, 8:14] = 1
        probs[2, 2, 2, 0] = 1  # a one-voxel WT island
        return probs

    p.predict_image = fake
    case = find_cases(src)[0]
    out = p.predict_case(case)["classes"]
    p.post = postprocessing_spec()
    raw = p.predict_case(case)["classes"]
    assert (raw > 0).sum() - (out > 0).sum() == 1
    # the command line: set-postprocessing, then predict --no-postprocess / --min-component
    assert cli_main(["set-postprocessing", "--model", str(path), "--none"]) == 0
    assert "postprocess" not in read_info(path)
    (tmp_path / "pp.json").write_text(json.dumps({"min_component": {"TC": 20}}))
    assert cli_main(["set-postprocessing", "--model", str(path), "--from", str(tmp_path / "pp.json")]) == 0
    assert read_info(path)["postprocess"]["min_component"] == {"WT": 0, "TC": 20, "ET": 0}
    assert cli_main(["set-postprocessing", "--model", str(tmp_path / "no.keras"), "--none"]) == 2
    assert capsys.readouterr().err.strip() == f"error: {tmp_path / 'no.keras'}: model file not found"


def test_the_choice_scores_on_the_tumor_box_with_one_voxel_of_margin():
    """choose_postprocessing scores each case on the joint tumor box of evaluation's scoring (one voxel of
    margin, clipped to the volume), and on one background voxel when both maps are empty."""
    from brats_keras.postprocessing import _tumor_crop

    pred, true = np.zeros((10, 10, 10), np.uint8), np.zeros((10, 10, 10), np.uint8)
    p, t = _tumor_crop(pred, true)
    assert p.shape == t.shape == (1, 1, 1) and not p.any() and not t.any()
    pred[0, 3, 4], true[2, 5, 9] = 2, 1
    p, t = _tumor_crop(pred, true)
    assert p.shape == t.shape == (4, 5, 7)  # axis 0: 0..4 (clipped at 0), axis 1: 2..7, axis 2: 3..10 (clipped)
    assert p[0, 1, 1] == 2 and t[2, 3, 6] == 1 and p.sum() == 2 and t.sum() == 1


# ----------------------------------------------------------------------------- tasks: per head region
@pytest.mark.parametrize("task_name,expected", [
    # a removed component leaves its region only: the class of the head region around it, background for none
    ("glioma2021", {"WT": 0, "TC": 2, "ET": 1}),
    ("msd-task01", {"WT": 0, "TC": 2, "ET": 1}),  # class 2 = ED (label 1), class 1 = NET (label 2)
    ("glioma2024-post", {"WT": 0, "TC": 2, "ET": 1, "RC": 0}),  # the cavity is in no tumour region
    ("pediatric2024", {"WT": 0, "TC": 4, "CC": 2, "ET": 2}),  # ED 4 around TC; NETC 2 around CC and ET
])
def test_removed_components_take_the_class_of_the_region_around_them(task_name, expected):
    from brats_keras.postprocessing import removed_becomes

    assert removed_becomes(task_name) == expected


def test_postprocessing_of_the_post_treatment_task_keeps_its_regions_apart():
    from brats_keras.postprocessing import region_thresholds

    c = np.zeros((20, 20, 20), np.uint8)
    c[2:8, 2:8, 2:8] = 2          # SNFH, 216 voxels
    c[4:6, 4:6, 4:6] = 3          # ET inside it, 8 voxels
    c[12:16, 12:16, 12:16] = 4    # a resection cavity, 64 voxels
    c[18, 18, 18] = 4             # a one-voxel cavity
    spec = postprocessing_spec({"min_component": {"RC": 10}, "et_threshold": 10,
                                "thresholds": [0.5, 0.5, 0.5, 0.7]}, task="glioma2024-post")
    assert spec["thresholds"] == {"WT": 0.5, "TC": 0.5, "ET": 0.5, "RC": 0.7}
    assert region_thresholds(spec, "glioma2024-post") == (0.5, 0.5, 0.5, 0.7)
    out = apply_postprocessing(c, spec, "glioma2024-post")
    assert out[18, 18, 18] == 0 and (out[12:16, 12:16, 12:16] == 4).all()  # the small cavity only
    assert (out[4:6, 4:6, 4:6] == 1).all()  # 8 ET voxels under 10: the BraTS rule makes them NETC
    with pytest.raises(ValueError, match=r"four values \(WT, TC, ET, RC\), not 3"):
        postprocessing_spec(thresholds=[0.5, 0.5, 0.7], task="glioma2024-post")
    with pytest.raises(ValueError, match=r"unknown region RC \(use WT, TC, ET\)"):
        postprocessing_spec({"min_component": {"RC": 10}})
    # the default task's spec reads as before: keyed WT, TC, ET
    assert list(postprocessing_spec({"thresholds": [0.5, 0.5, 0.7]})["thresholds"]) == ["WT", "TC", "ET"]


def test_choosing_postprocessing_for_the_pediatric_task_scores_its_six_regions():
    true = np.zeros((16, 16, 16), np.uint8)
    true[2:6, 2:6, 2:6] = 4      # ED
    true[3:5, 3:5, 3:5] = 2      # NETC
    true[3, 3, 3] = 1            # ET
    pred = true.copy()
    pred[14, 14, 14] = 3         # a one-voxel cyst: the truth has none
    choice = choose_postprocessing([pred] * 3, [true] * 3, sizes=(5,), et_thresholds=(), confidence=None,
                                   task="pediatric2024")
    assert list(choice["dice_before"]) == ["WT", "TC", "ET", "NETC", "CC", "ED"]
    assert choice["dice_before"]["CC"] == 0.0 and choice["dice_after"]["CC"] == 1.0
    assert choice["postprocess"]["min_component"] == {"WT": 5, "TC": 0, "CC": 0, "ET": 0}  # WT first takes it
    assert "mean Dice WT / TC / ET / NETC / CC / ED" in format_choice(choice)
