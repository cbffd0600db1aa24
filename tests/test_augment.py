"""Strong per-channel intensity augmentation (brats_keras.augment) and its use by PatchDataset / train."""
import numpy as np
import pytest

import brats_keras  # noqa: F401  (before keras)
from brats_keras.augment import (IntensityAugment, gamma_transform, intensity_augment, low_resolution,
                                 scale_contrast)
from brats_keras.data import PatchDataset
from conftest import write_converted_cases

NONE = IntensityAugment(noise_p=0, blur_p=0, brightness_p=0, contrast_p=0, lowres_p=0, gamma_p=0,
                        inverted_gamma_p=0)


def only(**kw):
    """Parameters with every transform off except those given."""
    return IntensityAugment(**{**NONE.__dict__, **kw})


def patch(seed=0, shape=(16, 16, 16, 3)):
    rng = np.random.default_rng(seed)
    x = rng.normal(1.0, 1.0, size=shape).astype(np.float32)
    x[:3] = 0  # background slab: zero in every channel
    return x


def test_all_off_is_identity_and_input_untouched():
    x = patch()
    before = x.copy()
    out = intensity_augment(x, np.random.default_rng(1), NONE)
    np.testing.assert_array_equal(out, before)
    np.testing.assert_array_equal(x, before)
    assert out.dtype == np.float32 and out is not x


def test_same_generator_state_same_result_and_background_stays_zero():
    x = patch()
    a = intensity_augment(x, np.random.default_rng(7))
    b = intensity_augment(x, np.random.default_rng(7))
    np.testing.assert_array_equal(a, b)
    outs = [intensity_augment(x, np.random.default_rng(s)) for s in range(30)]
    assert any(not np.array_equal(o, outs[0]) for o in outs[1:])
    for o in outs:
        assert o.shape == x.shape and o.dtype == np.float32
        assert not o[:3].any()  # background unchanged
        assert np.isfinite(o).all()


def test_noise_adds_zero_mean_noise_within_its_range():
    x = patch()
    out = intensity_augment(x, np.random.default_rng(3), only(noise_p=1.0, noise_variance=(0.04, 0.04)))
    resid = (out - x)[3:]
    assert abs(float(resid.mean())) < 0.02
    assert float(resid.std()) == pytest.approx(0.2, rel=0.05)


def test_brightness_multiplies_each_channel_by_one_factor_in_range():
    x = patch()
    out = intensity_augment(x, np.random.default_rng(4), only(brightness_p=1.0))
    brain = x[3:]
    for c in range(x.shape[-1]):
        ratio = out[3:, ..., c] / brain[..., c]
        assert np.allclose(ratio, ratio.flat[0], rtol=1e-5)
        assert 0.75 <= ratio.flat[0] <= 1.25


def test_scale_contrast_known_answer():
    ch = np.array([0.0, 1.0, 2.0, 3.0], np.float32)  # mean 1.5
    np.testing.assert_allclose(scale_contrast(ch, 2.0), [0.0, 0.5, 2.5, 3.0])
    np.testing.assert_allclose(scale_contrast(ch, 0.5), [0.75, 1.25, 1.75, 2.25])


def test_gamma_keeps_mean_std_and_order():
    ch = np.random.default_rng(0).gamma(2.0, size=(8, 8, 8)).astype(np.float32)
    for g in (0.7, 1.5):
        for invert in (False, True):
            out = gamma_transform(ch, g, invert=invert)
            assert float(out.mean()) == pytest.approx(float(ch.mean()), abs=1e-4)
            assert float(out.std()) == pytest.approx(float(ch.std()), rel=1e-4)
            flat, flat_out = ch.ravel(), out.ravel()
            order = np.argsort(flat)
            assert np.all(np.diff(flat_out[order]) >= -1e-5)  # monotone: intensities keep their order
            assert not np.allclose(out, ch)
    np.testing.assert_allclose(gamma_transform(ch, 1.0), ch, rtol=1e-5, atol=1e-5)
    const = np.full((4, 4, 4), 2.0, np.float32)
    np.testing.assert_array_equal(gamma_transform(const, 1.3), const)


def test_low_resolution_keeps_shape_and_loses_fine_detail():
    ch = np.indices((16, 16, 16)).sum(axis=0) % 2 * 1.0  # checkerboard: the finest detail there is
    ch = ch.astype(np.float32)

    class Fixed:
        def __init__(self, v):
            self.v = v

        def uniform(self, lo, hi):
            return self.v

    np.testing.assert_allclose(low_resolution(ch, Fixed(1.0), (1.0, 1.0)), ch)
    out = low_resolution(ch, Fixed(0.5), (0.5, 0.5))
    assert out.shape == ch.shape and out.dtype == np.float32
    # the checkerboard's voxel-to-voxel differences shrink once resolution is halved
    assert np.abs(np.diff(out, axis=0)).mean() < 0.6 * np.abs(np.diff(ch, axis=0)).mean()


def test_blur_smooths_noise():
    x = patch()
    out = intensity_augment(x, np.random.default_rng(5), only(blur_p=1.0, per_channel_p=1.0))
    for c in range(x.shape[-1]):
        inner = (slice(5, -2),) * 3 + (c,)
        assert float(np.abs(np.diff(out[inner], axis=0)).mean()) < 0.8 * float(np.abs(np.diff(x[inner], axis=0)).mean())


def test_patch_dataset_strong_intensity(tmp_path):
    conv = write_converted_cases(tmp_path, 2)
    kw = dict(patch_size=32, batch_size=1, output="regions", augment=True, steps_per_epoch=3, seed=2)
    basic, strong = PatchDataset(conv, **kw), PatchDataset(conv, intensity="strong", **kw)
    strong_again = PatchDataset(conv, intensity="strong", **kw)
    differs, seen_background = False, False
    for i in range(3):
        (xb, yb), (xs, ys), (xs2, _) = basic[i], strong[i], strong_again[i]
        np.testing.assert_array_equal(yb, ys)  # the labels (same patch, same flips) are never touched
        np.testing.assert_array_equal(xs, xs2)  # reproducible from the seed
        assert xs.shape == xb.shape and xs.dtype == np.float32
        background = ~np.any(xb != 0, axis=-1)
        assert not xs[background].any()  # outside the brain stays zero
        seen_background |= bool(background.any())
        differs |= not np.allclose(xs, xb)
    assert differs and seen_background
    with pytest.raises(ValueError, match="unknown intensity augmentation 'wild'"):
        PatchDataset(conv, intensity="wild", **kw)


def test_train_cli_accepts_strong_and_records_it(tmp_path):
    import json

    from brats_keras.cli import main

    conv = write_converted_cases(tmp_path, 3)
    run = tmp_path / "run"
    rc = main(["train", "--data", str(conv), "--out", str(run), "--model", "unet3d", "--base-filters", "4",
               "--depth", "2", "--patch-size", "16", "--batch-size", "1", "--epochs", "1", "--steps-per-epoch", "2",
               "--val-steps", "1", "--val", "1", "--intensity-augment", "strong", "--no-tensorboard",
               "--mixed-precision", "off"])
    assert rc == 0
    assert json.loads((run / "config.json").read_text())["intensity_augment"] == "strong"
    with pytest.raises(SystemExit) as exc:
        main(["train", "--data", str(conv), "--intensity-augment", "wild"])
    assert exc.value.code == 2


def test_an_unknown_intensity_augmentation_is_refused_before_the_run_folder(tmp_path):
    """From Python (or a hand-edited config.json) too: one line, no run folder."""
    from brats_keras.io import BratsInputError
    from brats_keras.training import TrainConfig, train

    conv = write_converted_cases(tmp_path, 3)
    cfg = TrainConfig(data=str(conv), out=str(tmp_path / "run"), base_filters=4, depth=2, patch_size=16,
                      batch_size=1, epochs=1, val=1, intensity_augment="wild", mixed_precision="off", verbose=0)
    with pytest.raises(BratsInputError) as err:
        train(cfg)
    assert str(err.value) == "bad settings: unknown intensity augmentation 'wild': use basic or strong"
    assert not (tmp_path / "run").exists()
