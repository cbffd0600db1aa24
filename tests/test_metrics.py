"""Keras metrics: hand-made batches with known values, both output modes, epochs, reset, saving."""
import keras
import numpy as np
import pytest

from brats_keras import evaluation
from brats_keras import metrics as bm
from brats_keras.labels import classes_to_regions, one_hot
from brats_keras.tasks import TASKS
from brats_keras.metrics import (
    ClassDice,
    MeanDice,
    Precision,
    Recall,
    RegionDice,
    VoxelAccuracy,
    decode,
    report_metrics,
)

# eight voxels as a (1, 2, 2, 2) batch of class maps
TRUE = np.array([0, 1, 1, 2, 2, 2, 3, 3]).reshape(1, 2, 2, 2)
PRED = np.array([0, 1, 2, 2, 2, 0, 3, 1]).reshape(1, 2, 2, 2)
# by hand: NCR true {1,2} pred {1,7}: TP 1; ED true {3,4,5} pred {2,3,4}: TP 2; ET true {6,7} pred {6}: TP 1
# WT true {1..7} pred {1,2,3,4,6,7}: TP 6; TC true {1,2,6,7} pred {1,6,7}: TP 3; right classes at 0,1,3,4,6
EXPECTED = {
    "accuracy": 5 / 8,
    "precision": (1 / 2 + 2 / 3 + 1 / 1) / 3,
    "recall": (1 / 2 + 2 / 3 + 1 / 2) / 3,
    "mean_dice": (2 / 4 + 4 / 6 + 2 / 3) / 3,
    "dice_NCR": 2 / 4,
    "dice_ED": 4 / 6,
    "dice_ET": 2 / 3,
    "dice_WT": 12 / 13,
    "dice_TC": 6 / 7,
}


def encode(classes, output, soft=False):
    """Targets or predictions of a class map in a model's channel layout."""
    if output == "softmax":
        y = one_hot(classes)
        return 0.1 + 0.6 * y if soft else y  # argmax unchanged
    y = classes_to_regions(classes).astype("float32")
    return 0.3 + 0.4 * y if soft else y  # 0.3 / 0.7 around the threshold


def result(metric):
    return float(keras.ops.convert_to_numpy(metric.result()))


@pytest.mark.parametrize("soft", [False, True])
@pytest.mark.parametrize("output", ["softmax", "regions"])
def test_report_metrics_known_values(output, soft):
    metrics = report_metrics(output)
    assert [m.name for m in metrics] == list(EXPECTED)
    for m in metrics:
        m.update_state(encode(TRUE, output), encode(PRED, output, soft))
        assert result(m) == pytest.approx(EXPECTED[m.name], abs=1e-6), m.name


def test_region_dice_uses_thresholded_channels_before_nested_decoding():
    # truth: one ET voxel (WT, TC, ET all on) and one background voxel
    y_true = np.array([[1, 1, 1], [0, 0, 0]], "float32").reshape(1, 2, 1, 1, 3)
    # prediction: ET and WT on but TC off at the ET voxel (not nested)
    y_pred = np.array([[0.9, 0.1, 0.9], [0.1, 0.1, 0.1]], "float32").reshape(1, 2, 1, 1, 3)
    et_class, tc_region = ClassDice("ET", "regions"), RegionDice("TC", "regions")
    for m in (et_class, tc_region):
        m.update_state(y_true, y_pred)
    assert result(et_class) == 1.0  # nested decoding: ET wins
    assert result(tc_region) == 0.0  # the TC channel itself is empty
    classes, regions = decode(y_pred, "regions")
    assert keras.ops.convert_to_numpy(classes)[0, :, 0, 0].tolist() == [[0, 0, 0, 1], [1, 0, 0, 0]]
    assert keras.ops.convert_to_numpy(regions)[0, :, 0, 0].tolist() == [[1, 0, 1], [0, 0, 0]]


@pytest.mark.parametrize("output", ["softmax", "regions"])
def test_counts_accumulate_over_batches(output):
    # batch 1: ET 1 voxel found; batch 2: ET 3 voxels, 1 found, 1 false positive
    t1, p1 = np.array([3, 0, 0, 0]), np.array([3, 0, 0, 0])
    t2, p2 = np.array([3, 3, 3, 0]), np.array([3, 0, 0, 3])
    m = ClassDice("ET", output)
    for t, p in ((t1, p1), (t2, p2)):
        m.update_state(encode(t.reshape(1, 4, 1, 1), output), encode(p.reshape(1, 4, 1, 1), output))
    # global: 2 * (1 + 1) / ((1 + 3) + (1 + 2)) = 4/7, not the mean of 1 and 2/5
    assert result(m) == pytest.approx(4 / 7, abs=1e-6)
    m.reset_state()
    assert result(m) == 1.0  # nothing seen: both empty


@pytest.mark.parametrize(
    "true,pred,expected",
    [
        # (class map of 4 voxels) -> ET Dice, precision of ET, recall of ET
        ([0, 1, 2, 0], [0, 1, 2, 0], (1.0, 1.0, 1.0)),  # ET absent both sides
        # exactly one side empty scores 0, for precision and recall too
        ([0, 1, 2, 0], [0, 1, 2, 3], (0.0, 0.0, 0.0)),  # ET predicted, absent in truth
        ([0, 1, 2, 3], [0, 1, 2, 0], (0.0, 0.0, 0.0)),  # ET missed
    ],
)
def test_empty_conventions(true, pred, expected):
    t = encode(np.array(true).reshape(1, 4, 1, 1), "softmax")
    p = encode(np.array(pred).reshape(1, 4, 1, 1), "softmax")
    dice, precision, recall = ClassDice("ET"), Precision(), Recall()
    for m in (dice, precision, recall):
        m.update_state(t, p)
    # NCR and ED are perfect: the macro mean is (1 + 1 + ET) / 3
    assert result(dice) == expected[0]
    assert result(precision) == pytest.approx((2 + expected[1]) / 3)
    assert result(recall) == pytest.approx((2 + expected[2]) / 3)


@pytest.mark.parametrize("output", ["softmax", "regions"])
def test_agrees_with_numpy_report_scores(output):
    rng = np.random.default_rng(0)
    true = rng.integers(0, 4, (2, 6, 5, 4))
    pred = np.where(rng.random(true.shape) < 0.6, true, rng.integers(0, 4, true.shape))
    metrics = {m.name: m for m in report_metrics(output)}
    for m in metrics.values():
        m.update_state(encode(true, output, soft=True), encode(pred, output, soft=True))
    expected = evaluation.report_scores(pred, true)
    regions = evaluation.region_scores(pred, true)
    expected.update(dice_WT=regions["WT"]["dice"], dice_TC=regions["TC"]["dice"])
    for name, m in metrics.items():
        assert result(m) == pytest.approx(expected[name], abs=1e-6), name


def test_bfloat16_inputs():
    m = MeanDice()
    m.update_state(
        keras.ops.cast(encode(TRUE, "softmax"), "bfloat16"), keras.ops.cast(encode(PRED, "softmax", True), "bfloat16")
    )
    assert result(m) == pytest.approx(EXPECTED["mean_dice"], abs=1e-6)


@pytest.mark.parametrize(
    "make,message",
    [
        (lambda: ClassDice("WT"), "unknown class 'WT': use one of NCR, ED, ET"),
        (lambda: ClassDice(0), "class index must be 1 \\(NCR\\), 2 \\(ED\\) or 3 \\(ET\\)"),
        (lambda: RegionDice("NCR"), "unknown region 'NCR': use one of WT, TC, ET"),
        (lambda: MeanDice("sigmoid"), "unknown output 'sigmoid'"),
        (lambda: report_metrics("logits"), "unknown output 'logits'"),
    ],
)
def test_errors(make, message):
    with pytest.raises(ValueError, match=message):
        make()


ALL_METRICS = [
    ClassDice("NCR", "regions"), ClassDice(2), RegionDice("TC", "regions"), MeanDice(),
    VoxelAccuracy("regions"), Precision(name="p"), Recall("regions"),
]


@pytest.mark.parametrize("metric", ALL_METRICS, ids=lambda m: m.name)
def test_serialization_round_trip(metric):
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(metric))
    assert type(restored) is type(metric) and restored.get_config() == metric.get_config()
    output = metric.output
    for m in (metric, restored):
        m.reset_state()
        m.update_state(encode(TRUE, output), encode(PRED, output))
    assert result(restored) == result(metric)


@pytest.mark.parametrize("output", ["softmax", "regions"])
def test_compiled_model_with_report_metrics_reloads(tmp_path, output):
    channels = 4 if output == "softmax" else 3
    inputs = keras.Input((6, 6, 6, 1))
    x = keras.layers.Conv3D(4, 3, padding="same", activation="relu")(inputs)
    outputs = keras.layers.Conv3D(channels, 1, activation="softmax" if output == "softmax" else "sigmoid")(x)
    model = keras.Model(inputs, outputs)
    # eager: tracing nine metrics into a graph costs seconds and tests nothing of ours
    model.compile(optimizer="adam", loss="mse", metrics=report_metrics(output), run_eagerly=True)
    rng = np.random.default_rng(1)
    x_data = rng.normal(size=(2, 6, 6, 6, 1)).astype("float32")
    y_data = encode(rng.integers(0, 4, (2, 6, 6, 6)), output)
    history = model.fit(x_data, y_data, epochs=1, verbose=0)
    assert set(EXPECTED) <= set(history.history)
    path = tmp_path / "tiny.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    before = model.evaluate(x_data, y_data, verbose=0, return_dict=True)
    after = loaded.evaluate(x_data, y_data, verbose=0, return_dict=True)
    assert before.keys() == after.keys()
    for name in EXPECTED:
        assert after[name] == pytest.approx(before[name], abs=1e-6), name


@pytest.mark.parametrize("output", ["softmax", "regions"])
def test_update_in_a_graph(output):
    import tensorflow as tf

    for m in report_metrics(output):
        tf.function(m.update_state)(encode(TRUE, output), encode(PRED, output, soft=True))
        assert result(m) == pytest.approx(EXPECTED[m.name], abs=1e-6), m.name


def test_numpy_scores_have_one_home_in_evaluation():
    """metrics holds the Keras metrics only: the numpy scores are evaluation's, not re-exported."""
    for name in ("dice", "hd95", "sensitivity", "specificity", "region_scores", "report_scores",
                 "lesion_wise_scores", "evaluate_folder", "format_table", "HD95_EMPTY"):
        assert hasattr(evaluation, name)
        assert not hasattr(bm, name), name


# ----------------------------------------------------------------------------- other tasks
POST = TASKS["glioma2024-post"]
# eight voxels of the post-treatment task: classes 1 NETC, 2 SNFH, 3 ET, 4 RC (labels 1 2 3 4)
POST_TRUE = np.array([0, 1, 2, 3, 4, 4, 0, 2]).reshape(1, 2, 2, 2)


def post_encode(classes, output):
    if output == "softmax":
        return one_hot(classes, POST.n_classes)
    return POST.classes_to_regions(classes, POST.region_order).astype("float32")


def post_scores(pred, output):
    out = {}
    for m in report_metrics(output, POST):
        m.update_state(post_encode(POST_TRUE, output), post_encode(pred, output))
        out[m.name] = result(m)
    return out


def test_metric_names_follow_the_task():
    base = ["accuracy", "precision", "recall", "mean_dice"]
    assert [m.name for m in report_metrics("softmax")] == base + ["dice_NCR", "dice_ED", "dice_ET", "dice_WT",
                                                                  "dice_TC"]
    assert [m.name for m in report_metrics("regions", "glioma2024-post")] == \
        base + ["dice_NETC", "dice_SNFH", "dice_ET", "dice_RC", "dice_WT", "dice_TC"]
    assert [m.name for m in report_metrics("softmax", "pediatric2024")] == \
        base + ["dice_ET", "dice_NETC", "dice_CC", "dice_ED", "dice_WT", "dice_TC"]
    assert [m.name for m in report_metrics("regions", "brats2023")] == \
        base + ["dice_NETC", "dice_SNFH", "dice_ET", "dice_WT", "dice_TC"]


@pytest.mark.parametrize("output", ["softmax", "regions"])
def test_post_treatment_known_answers(output):
    """A perfect prediction scores 1 everywhere, RC included; the cavity missed (background) is RC Dice 0 and
    nothing else moves (RC is in no other region); the cavity taken for enhancing tumour (2 voxels) also costs ET
    (true 1 voxel, predicted 3: 2/4), TC (true {1, 3}, predicted {1, 3, 4, 5}: 4/6) and WT (true 4, predicted 6,
    4 shared: 8/10)."""
    assert all(v == pytest.approx(1.0) for v in post_scores(POST_TRUE, output).values())
    missed = post_scores(np.where(POST_TRUE == 4, 0, POST_TRUE), output)
    assert missed["dice_RC"] == 0.0
    assert {k: missed[k] for k in ("dice_WT", "dice_TC", "dice_ET", "dice_NETC", "dice_SNFH")} == \
        pytest.approx({"dice_WT": 1.0, "dice_TC": 1.0, "dice_ET": 1.0, "dice_NETC": 1.0, "dice_SNFH": 1.0})
    assert missed["mean_dice"] == pytest.approx(3 / 4) and missed["recall"] == pytest.approx(3 / 4)
    as_et = post_scores(np.where(POST_TRUE == 4, 3, POST_TRUE), output)
    assert as_et["dice_RC"] == 0.0
    assert as_et["dice_ET"] == pytest.approx(2 / 4) and as_et["dice_TC"] == pytest.approx(4 / 6)
    assert as_et["dice_WT"] == pytest.approx(8 / 10) and as_et["dice_SNFH"] == pytest.approx(1.0)


def test_post_treatment_regions_decode_in_the_task_order():
    """Head regions WT, TC, ET, RC: a voxel takes the class of the last region it is in, as
    Task.regions_to_classes decodes."""
    #                 WT TC ET RC
    rows = np.array([[0, 0, 0, 0],   # background
                     [1, 0, 0, 0],   # SNFH
                     [1, 1, 0, 0],   # NETC
                     [1, 1, 1, 0],   # ET
                     [0, 0, 0, 1],   # RC
                     [1, 1, 1, 1],   # RC: the last region wins
                     [0, 1, 0, 0],   # NETC (TC without WT: the decoding does not check nesting)
                     [1, 0, 1, 0]],  # ET
                    np.float32).reshape(1, 2, 2, 2, 4)
    classes, regions = decode(rows, "regions", POST)
    expected = POST.regions_to_classes(rows)
    np.testing.assert_array_equal(np.argmax(keras.ops.convert_to_numpy(classes), -1), expected)
    np.testing.assert_array_equal(expected.ravel(), [0, 2, 1, 3, 4, 4, 1, 3])
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(regions), rows)
    # softmax: the head regions are the unions of their classes
    _, regions = decode(one_hot(POST_TRUE, 5), "softmax", POST)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(regions),
                                  POST.classes_to_regions(POST_TRUE, POST.region_order))


def test_a_task_metric_round_trips_its_task_and_a_default_one_records_none():
    metric = ClassDice("RC", "regions", task="glioma2024-post")
    config = metric.get_config()
    assert config["task"] == POST.to_dict() and "task" not in ClassDice("ET").get_config()
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(metric))
    assert restored.task == POST and restored.name == "dice_RC" and restored.get_config() == config


def test_task_errors_name_the_task_classes_and_regions():
    with pytest.raises(ValueError, match="unknown class 'NCR': use one of NETC, SNFH, ET, RC"):
        ClassDice("NCR", task=POST)
    with pytest.raises(ValueError, match=r"class index must be 1 \(NETC\), 2 \(SNFH\), 3 \(ET\) or 4 \(RC\)"):
        ClassDice(5, task=POST)
    with pytest.raises(ValueError, match="unknown region 'SNFH': use one of WT, TC, ET, RC"):
        RegionDice("SNFH", task=POST)


def test_a_model_file_rebuilds_its_task_metrics(tmp_path):
    """A compiled model of the post-treatment task saved and loaded: its metrics come back with their task."""
    from brats_keras.checkpoint import load_model, save_model
    from brats_keras.losses import get_loss
    from brats_keras.models import unet3d

    model = unet3d(in_channels=1, base_filters=2, depth=1, output="regions", task=POST)
    model.compile(optimizer="adam", loss=get_loss("dice+bce", "regions"), metrics=report_metrics("regions", POST))
    x = np.zeros((1, 2, 2, 2, 1), np.float32)
    y = post_encode(POST_TRUE, "regions")
    model.evaluate(x, y, verbose=0)
    loaded, _ = load_model(save_model(model, tmp_path / "post.keras"))
    scores = loaded.evaluate(x, y, verbose=0, return_dict=True)
    assert {"dice_RC", "dice_NETC", "dice_WT"} <= set(scores) and 0.0 <= scores["dice_RC"] <= 1.0
