"""One training step on two logical CPU devices (MirroredStrategy) against the same step on one.

Run as a separate process: logical devices must be configured before TensorFlow starts.
Prints MAXDIFF <float> and the replica count.
"""
import sys

import numpy as np
import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # noqa: E402

from brats_keras.losses import get_loss  # noqa: E402
from brats_keras.models import unet3d  # noqa: E402


def build():
    keras.utils.set_random_seed(0)
    m = unet3d(in_channels=2, base_filters=4, depth=2, norm="instance", output="regions")
    m.compile(optimizer=keras.optimizers.SGD(0.1), loss=get_loss("dice+bce", "regions"))
    return m


rng = np.random.default_rng(0)
x = rng.random((4, 16, 16, 16, 2)).astype("float32")
y = (rng.random((4, 16, 16, 16, 3)) > 0.7).astype("float32")

single = build()
w0 = single.get_weights()
single.train_on_batch(x, y)

strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
with strategy.scope():
    multi = build()
multi.set_weights(w0)
ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(4)
multi.fit(ds, epochs=1, verbose=0)
diff = max(float(np.max(np.abs(a - b))) for a, b in zip(single.get_weights(), multi.get_weights()))
moved = max(float(np.max(np.abs(a - b))) for a, b in zip(single.get_weights(), w0))
print("REPLICAS", strategy.num_replicas_in_sync, "MAXDIFF", diff, "MOVED", moved)
sys.exit(0)
