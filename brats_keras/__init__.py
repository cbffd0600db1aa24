"""brats-keras: brain-tumor segmentation of BraTS multi-parametric MRI with Keras 3.

Importing the package is cheap: it never imports TensorFlow or Keras. The modules
that need Keras (``models``, ``losses``, ``metrics``, ``training``, ``inference``)
import it themselves, so the data tools (``io``, ``preprocessing``, ``convert``,
``synthetic``) run on machines without a deep-learning framework.
"""

__version__ = "0.1.0"
