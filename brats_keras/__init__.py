"""brats-keras: brain-tumor segmentation of BraTS multi-parametric MRI with Keras 3.

Importing the package is cheap: it never imports TensorFlow or Keras. The modules
that need Keras (``models``, ``losses``, ``metrics``, ``training``, ``inference``)
import it themselves, so the data tools (``io``, ``preprocessing``, ``convert``,
``synthetic``) run on machines without a deep-learning framework.
"""

import os as _os

__version__ = "0.1.0"

# TensorFlow leaves its oneDNN CPU kernels off on some processors (AMD EPYC here); with them a
# 3D U-Net training step on the CPU runs about 4x faster (benchmarks/RESULTS.md). Users can still
# opt out by setting TF_ENABLE_ONEDNN_OPTS=0 before importing brats_keras. Only TensorFlow reads the
# variable: an install without it (pip install ".[jax]") is unaffected.
_os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
