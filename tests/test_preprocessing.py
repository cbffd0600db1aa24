"""Preprocessing helpers: bounding boxes (known answers, margins, empty masks) and the brain crop built on them."""
import numpy as np
import pytest

from brats_keras.preprocessing import bounding_box, box_slices, brain_crop_box


@pytest.mark.parametrize("shape, hits, margin, expected", [
    ((10, 8, 6), [(2, 3, 1), (4, 5, 2)], 0, ((2, 5), (3, 6), (1, 3))),
    ((10, 8, 6), [(2, 3, 1), (4, 5, 2)], 1, ((1, 6), (2, 7), (0, 4))),
    ((10, 8, 6), [(0, 0, 0), (9, 7, 5)], 3, ((0, 10), (0, 8), (0, 6))),  # clipped to the array
    ((10, 8, 6), [(9, 7, 5)], 2, ((7, 10), (5, 8), (3, 6))),
    ((5, 7), [(1, 6)], 1, ((0, 3), (5, 7))),  # a 2-D slice
])
def test_bounding_box_known_answers(shape, hits, margin, expected):
    mask = np.zeros(shape, bool)
    for idx in hits:
        mask[idx] = True
    box = bounding_box(mask, margin=margin)
    assert box == expected and all(isinstance(v, int) for pair in box for v in pair)
    assert mask[box_slices(box)].sum() == mask.sum()  # nothing outside the box
    assert bounding_box(np.zeros(shape, bool), margin) is None


def test_brain_crop_box_is_the_bounding_box_of_any_nonzero_modality():
    a, b = np.zeros((20, 18, 16), np.float32), np.zeros((20, 18, 16), np.float32)
    a[5:9, 4:6, 3:4] = 1.0
    b[7:12, 10:11, 8:10] = -2.0  # negative intensities count as brain too
    assert brain_crop_box([a, b], margin=2) == ((3, 14), (2, 13), (1, 12))
    assert brain_crop_box([a, b], margin=0, multiple=4) == ((5, 13), (4, 12), (3, 11))
    assert brain_crop_box([a, b], margin=3, multiple=8) == ((1, 17), (0, 16), (0, 16))
    with pytest.raises(ValueError, match="cannot find the brain"):
        brain_crop_box([np.zeros((4, 4, 4))])
