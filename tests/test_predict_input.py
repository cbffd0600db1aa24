"""predict finds its input cases as convert does: through symbolic link loops once, and only on the BraTS grid."""
import numpy as np

from brats_keras.inference import Predictor, predict_folder
from brats_keras.spec import PreprocessingSpec

from conftest import make_symlink_loops, resave_on_grid, write_small_case


def background_predictor():
    """A Predictor without a model: every voxel background (what is read and refused is what is tested)."""
    p = Predictor.__new__(Predictor)
    p.info, p.margin, p.post = {"modalities": ["flair", "t1ce", "t2"], "scale": "zscore"}, 4, {}
    p.spec = PreprocessingSpec.from_dict(p.info)
    p.predict_image = lambda image, progress=False: np.zeros(image.shape[:3] + (4,), np.float32)
    return p


def test_predict_refuses_a_3mm_case_and_walks_symlink_loops_once(tmp_path):
    src, out = tmp_path / "in", tmp_path / "out"
    shape = (16, 18, 14)
    write_small_case(src, "good", shape=shape)
    make_symlink_loops(src)
    thick = write_small_case(src / "d2", "thick", seed=1, shape=shape)
    for path in thick.iterdir():
        resave_on_grid(path, np.diag([-0.9, -0.9, 3.0, 1.0]))
    logs = []
    res = predict_folder(src, out, model=background_predictor(), progress=False, log=logs.append)
    assert list(res["ok"]) == ["good"]
    message = (f"{thick / 'thick_flair.nii.gz'}: voxel size 0.9 x 0.9 x 3.0 mm, expected 1 mm "
               "(resample it to the BraTS grid first)")
    assert res["failed"] == {"thick": message}
    assert logs == [f"FAILED thick: {message}"]
    assert sorted(p.name for p in out.iterdir()) == ["good.nii.gz"]
