"""Label messages: what a label map holds that neither BraTS convention allows, named as found."""
import numpy as np
import pytest

from brats_keras import io as bio
from brats_keras.labels import label_problem, labels_to_classes

from conftest import write_nifti

BOTH = "(2021: 0, 1, 2, 4; 2023: 0, 1, 2, 3)"


@pytest.mark.parametrize("values,convention,message", [
    ([0, 1, 2, 4], "auto", None),
    ([0, 1, 2, 3], "auto", None),
    ([0, 1, 2, 4], "2021", None),
    ([0, 1, 2, 3], "2023", None),
    ([0.0, 1.0, 4.0], "auto", None),  # whole numbers stored as floats are labels
    # a 2023-layout post-treatment map, 4 = resection cavity: both 3 and 4, in any convention
    ([0, 1, 2, 3, 4], "auto", "holds both 3 and 4: not a 2021 or 2023 glioma label map " + BOTH + "; a "
                              "post-treatment map with 4 = resection cavity is not supported yet"),
    ([0, 1, 2, 3, 4], "2023", "holds both 3 and 4: not a 2021 or 2023 glioma label map " + BOTH + "; a "
                              "post-treatment map with 4 = resection cavity is not supported yet"),
    ([0, 3, 4, 9], "auto", "holds both 3 and 4 (and 9): not a 2021 or 2023 glioma label map " + BOTH + "; a "
                           "post-treatment map with 4 = resection cavity is not supported yet"),
    ([0, 4, 7], "auto", "unexpected label values [7]: neither a 2021 nor a 2023 glioma label map " + BOTH),
    ([-1, 0, 300], "auto", "unexpected label values [-1, 300]: neither a 2021 nor a 2023 glioma label map " + BOTH),
    ([0, 1, 3], "2021", "unexpected label values [3] (the 2021 convention: 0, 1, 2, 4; 3 is ET in 2023 label maps)"),
    ([0, 4], "2023", "unexpected label values [4] (the 2023 convention: 0, 1, 2, 3; 4 is ET in 2021 label maps)"),
    ([0, 5], "2021", "unexpected label values [5] (the 2021 convention: 0, 1, 2, 4)"),
    # float maps: the values that are not whole numbers, not labels they would truncate to
    ([0.0, 0.5, 1.0], "auto", "holds non-integer values (e.g. 0.5), not labels: a label map holds whole numbers "
                              + BOTH),
    ([0.0, 1.5, 2.5, 4.5, 4.75], "auto", "holds non-integer values (e.g. 1.5, 2.5, 4.5, ...), not labels: a label "
                                         "map holds whole numbers " + BOTH),
    ([0.0, np.nan], "auto", "holds NaN or infinite values, not labels"),
])
def test_label_problem_known_answers(values, convention, message):
    assert label_problem(np.array(values), convention) == message
    if message is None:
        assert labels_to_classes(np.array(values), convention).max() <= 3
    else:
        with pytest.raises(ValueError) as raised:
            labels_to_classes(np.array(values), convention)
        assert str(raised.value) == message


def test_load_classes_names_the_file_and_what_it_holds(tmp_path):
    path = tmp_path / "c_seg.nii.gz"
    labels = np.zeros((6, 6, 6), np.float32)
    labels[2:4, 2:4, 2:4] = 0.5
    write_nifti(path, labels)
    with pytest.raises(bio.BratsInputError, match=rf"^{path}: holds non-integer values \(e.g. 0.5\), not labels"):
        bio.load_classes(path)
    labels[2:4, 2:4, 2:4], labels[0, 0, 0], labels[5, 5, 5] = 2, 3, 4
    write_nifti(path, labels.astype(np.uint8))
    with pytest.raises(bio.BratsInputError, match=rf"^{path}: holds both 3 and 4: not a 2021 or 2023 glioma"):
        bio.load_classes(path)
