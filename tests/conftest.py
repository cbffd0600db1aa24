"""Shared test fixtures: paths to the real cases and small hand-made NIfTI cases."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

# tests/backends/ runs in its own process under another Keras backend (tests/test_backends.py starts it);
# there, BRATS_KERAS_BLOCK_TENSORFLOW=1 makes any import of TensorFlow fail, to prove the path never needs it
if os.environ.get("KERAS_BACKEND", "tensorflow") == "tensorflow":
    collect_ignore = ["backends"]
elif os.environ.get("BRATS_KERAS_BLOCK_TENSORFLOW") == "1":
    import importlib.abc
    import importlib.machinery

    class _NoTensorFlow(importlib.abc.MetaPathFinder, importlib.abc.Loader):
        """Finds TensorFlow (so a library merely asking ``find_spec`` is not broken, as torch does) but
        fails every import of it."""

        def find_spec(self, name, path=None, target=None):
            if name == "tensorflow" or name.startswith("tensorflow."):
                return importlib.machinery.ModuleSpec(name, self)
            return None

        def create_module(self, spec):
            raise ImportError(f"TensorFlow is blocked in the {os.environ['KERAS_BACKEND']} backend suite")

        def exec_module(self, module):
            pass

    sys.meta_path.insert(0, _NoTensorFlow())


@pytest.fixture(autouse=True)
def _float32_policy_after_each_test():
    """A test that trains with mixed_precision='auto' sets a global Keras policy (bfloat16 on CPUs with
    native bf16): put float32 back so no other test depends on the order they run in."""
    yield
    keras = sys.modules.get("keras")
    if keras is not None:
        keras.mixed_precision.set_global_policy("float32")


SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
REAL = SHARED / "brats-real"
LAYOUT_2023 = SHARED / "brats2023-layout"


def require_shared(path) -> Path:
    """``path`` (real cases under ../shared/data beside the checkout), or skip the test saying why; under
    ``CI=true`` the folder must be there, so the test fails instead of skipping."""
    path = Path(path)
    if not path.is_dir():
        msg = f"{path} not found: these tests read the real BraTS cases in ../shared/data beside the checkout"
        if os.environ.get("CI") == "true":
            pytest.fail(msg)
        pytest.skip(msg)
    return path


#: Debian's Chromium, which the browser tests drive (.ci/run installs it with apt-get)
CHROMIUM = Path("/usr/bin/chromium")
#: headless Chromium with WebGL2 on the CPU (SwiftShader), as root (no sandbox), with nothing of its own on the
#: network; Playwright gives each launch a fresh profile (--user-data-dir)
CHROMIUM_FLAGS = ["--headless=new", "--enable-unsafe-swiftshader", "--use-angle=swiftshader", "--no-sandbox",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--no-first-run", "--disable-quic"]


def browser_unavailable(reason: str):
    """Skip a browser test saying why, or fail it under CI=true (CI installs Chromium and Playwright)."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}: CI installs it (.ci/run: apt-get install chromium; the test extra: playwright)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def browser():
    """One headless Chromium for the whole session, driven by Playwright: the report pages
    (tests/test_report_browser.py) and JupyterLab's widget (tests/test_view.py) open their pages in it, each
    page its own; a launch costs seconds on a loaded CPU."""
    if not CHROMIUM.exists():
        browser_unavailable(f"{CHROMIUM} not found: the browser tests open pages in Debian's chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        browser_unavailable("playwright is not installed (the test extra)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS, headless=True)
        yield b
        b.close()


@pytest.fixture(scope="session")
def real_dir() -> Path:
    """The real BraTS cases (skipped with the reason when ../shared is missing, except in CI)."""
    return require_shared(REAL)


@pytest.fixture(scope="session")
def layout2023_dir() -> Path:
    return require_shared(LAYOUT_2023)


def make_small_case(rng, shape=(24, 28, 20), et_label=4):
    """Images (4 modalities, int16, zero outside a box 'brain') and a label map with 1, 2 and ET."""
    brain = np.zeros(shape, bool)
    brain[3:-3, 3:-3, 2:-2] = True
    vols = {}
    for k, m in enumerate(("flair", "t1", "t1ce", "t2")):
        v = rng.integers(50, 1000, size=shape).astype(np.int16)
        v[~brain] = 0
        vols[m] = v
    seg = np.zeros(shape, np.uint8)
    c = tuple(s // 2 for s in shape)
    seg[c[0] - 5:c[0] + 5, c[1] - 5:c[1] + 5, c[2] - 4:c[2] + 4] = 2
    seg[c[0] - 3:c[0] + 3, c[1] - 3:c[1] + 3, c[2] - 2:c[2] + 2] = et_label
    seg[c[0] - 1:c[0] + 1, c[1] - 1:c[1] + 1, c[2] - 1:c[2] + 1] = 1
    return vols, seg


def write_nifti(path, arr, affine=None):
    """Save ``arr`` as NIfTI; without ``affine``, on the BraTS grid (1 mm voxels, LPS), the working grid convert and
    predict read cases on (a case on another grid is resampled)."""
    import nibabel as nib

    from brats_keras.synthetic import brats_affine

    img = nib.Nifti1Image(arr, brats_affine(arr.shape) if affine is None else affine)
    img.set_data_dtype(arr.dtype)
    nib.save(img, str(path))


def resave_on_grid(path, affine):
    """Write a NIfTI file's voxels again with another ``affine`` (its header zooms follow): the same case on
    another grid, e.g. ``np.diag([-0.9, -0.9, 3.0, 1.0])`` for 0.9 x 0.9 x 3 mm voxels."""
    import nibabel as nib

    write_nifti(path, np.asanyarray(nib.load(str(path)).dataobj), np.asarray(affine, float))


def make_symlink_loops(root):
    """Symbolic link loops in ``root``: ``a -> .``, ``b -> ..`` and folders ``d1``, ``d2`` linking to each other."""
    root = Path(root)
    for d in ("d1", "d2"):
        (root / d).mkdir(parents=True, exist_ok=True)
    (root / "a").symlink_to(".", target_is_directory=True)
    (root / "b").symlink_to("..", target_is_directory=True)
    (root / "d1" / "to_d2").symlink_to("../d2", target_is_directory=True)
    (root / "d2" / "to_d1").symlink_to("../d1", target_is_directory=True)


def write_small_case(root, case_id, seed=0, shape=(24, 28, 20), layout="2021", seg=True, ext=".nii.gz"):
    """Write one small case in the given layout ('2021', '2023' or 'plain'); return its folder."""
    rng = np.random.default_rng(seed)
    vols, labels = make_small_case(rng, shape, et_label=4 if layout == "2021" else 3)
    folder = Path(root) / case_id
    folder.mkdir(parents=True, exist_ok=True)
    names = {"flair": "t2f", "t1": "t1n", "t1ce": "t1c", "t2": "t2w"}
    for m, v in vols.items():
        if layout == "2021":
            name = f"{case_id}_{m}"
        elif layout == "2023":
            name = f"{case_id}-{names[m]}"
        else:
            name = names[m]
        write_nifti(folder / (name + ext), v)
    if seg:
        name = {"2021": f"{case_id}_seg", "2023": f"{case_id}-seg", "plain": "seg"}[layout]
        write_nifti(folder / (name + ext), labels)
    return folder


def write_post_case(root) -> Path:
    """Write a synthetic post-treatment case (task glioma2024-post, in its BraTS 2024 names, so that its task is
    detected) of 64 x 64 x 48 voxels, its resection cavity (label 4) 125 voxels, 22 on its largest axial slice;
    return its folder."""
    from brats_keras.synthetic import write_case

    return write_case(root, "BraTS-GLI-00002-100", seed=2, shape=(64, 64, 48), task="glioma2024-post")


def write_converted_cases(root, n: int, shape=(40, 36, 30)):
    """``n`` small cases written to ``root/src`` and converted (brain crop, z-score) into ``root/conv``;
    return that conversion folder (what the training tests train on)."""
    from brats_keras.convert import convert_folder

    root = Path(root)
    for i in range(n):
        write_small_case(root / "src", f"c{i}", seed=i, shape=shape)
    convert_folder(root / "src", root / "conv", crop="brain", scale="zscore", workers=1, progress=False)
    return root / "conv"


def counting_batches(n: int = 7, batch_size: int = 4, **loader):
    """A stand-in ``keras.utils.PyDataset`` of ``n`` known batches for the dataset wrappers: batch ``i`` is
    ``(rows, -rows)`` with ``rows[j, 0] = 10 * i + j`` (``batch_size`` rows), ``loader`` its PyDataset settings
    (workers, use_multiprocessing, max_queue_size); ``.ends`` counts its ``on_epoch_end`` calls."""
    import brats_keras  # noqa: F401  (before keras)
    import keras

    class CountingBatches(keras.utils.PyDataset):
        def __init__(self):
            super().__init__(**loader)
            self.batch_size, self.ends = batch_size, 0

        def __len__(self):
            return n

        def on_epoch_end(self):
            self.ends += 1

        def __getitem__(self, i):
            rows = np.arange(batch_size, dtype=np.float32)[:, None] + 10 * i
            return rows, -rows

    return CountingBatches()


@pytest.fixture
def read_only_dir(tmp_path):
    """An empty folder that chmod makes read-only; the test is skipped as root, where chmod stops no write
    (monkeypatch the check or the writer there)."""
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o555)
    if os.access(folder, os.W_OK):
        folder.chmod(0o755)
        pytest.skip("running as root: chmod does not stop writes (a monkeypatched test covers it)")
    yield folder
    folder.chmod(0o755)


# ----------------------------------------------------------------------------- fold runs and models of several test files
@pytest.fixture(scope="module")
def cv(tmp_path_factory):
    """5 small converted cases and two 1-step fold runs of a 2-fold cross-validation (crossval, ensemble)."""
    from brats_keras.training import TrainConfig, train

    root = tmp_path_factory.mktemp("cv")
    write_converted_cases(root, 5)
    runs = []
    for k in range(2):
        cfg = TrainConfig(data=str(root / "conv"), out=str(root / f"fold{k}"), base_filters=4, depth=2,
                          norm="instance", output="regions", loss="dice+bce", patch_size=16, batch_size=2, epochs=1,
                          steps_per_epoch=1, val_steps=1, verbose=0, mixed_precision="off", folds=2, fold=k,
                          split_seed=7)
        train(cfg)
        runs.append(root / f"fold{k}")
    return root, runs


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Two untrained tiny region models with the same preprocessing, and one with other scaling (post-processing,
    ensembles)."""
    import keras

    from brats_keras.checkpoint import save_model
    from brats_keras.models import unet3d

    folder = tmp_path_factory.mktemp("ens")
    info = {"modalities": ["flair", "t1", "t1ce", "t2"], "scale": "zscore", "output": "regions", "patch_size": 16,
            "downsample": 1, "crop": "brain"}
    paths = {}
    for name, seed, extra in (("a", 1, {}), ("b", 2, {}), ("minmax", 3, {"scale": "minmax"})):
        keras.utils.set_random_seed(seed)
        model = unet3d(in_channels=4, base_filters=4, depth=2, norm="none", output="regions")
        paths[name] = save_model(model, folder / name / f"{name}.keras", {**info, **extra})
    keras.backend.clear_session()
    return paths


@pytest.fixture(scope="session")
def kernel_specs(tmp_path_factory):
    """A kernel spec named ``python3`` that runs this very interpreter (the venv's python).

    Kernel specs installed elsewhere (user or system folders) may point to another Python
    without brats_keras; this one is the only spec the test's kernel manager sees. The parent of its
    ``kernels`` folder, as ``$JUPYTER_PATH``, puts it first for a Jupyter server too.
    """
    from jupyter_client.kernelspec import KernelSpecManager

    folder = tmp_path_factory.mktemp("jupyter") / "kernels"
    (folder / "python3").mkdir(parents=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (brats-keras tests)",
        "language": "python",
    }
    (folder / "python3" / "kernel.json").write_text(json.dumps(spec))
    return KernelSpecManager(kernel_dirs=[str(folder)], ensure_native_kernel=False)


def execute_notebook(nb, cwd: Path, kernel_specs, timeout: int = 600):
    """Run every cell of ``nb`` (outputs stored in it) in a fresh kernel of ``kernel_specs`` started in ``cwd``;
    the kernel inherits os.environ."""
    from jupyter_client.manager import KernelManager
    from nbclient import NotebookClient

    km = KernelManager(kernel_name="python3", kernel_spec_manager=kernel_specs)
    client = NotebookClient(nb, km=km, kernel_name="python3", timeout=timeout,
                            resources={"metadata": {"path": str(cwd)}})
    return client.execute()
