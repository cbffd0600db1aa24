"""SegResNet (Myronenko, "3D MRI brain tumor segmentation using autoencoder regularization",
BrainLes 2018), laid out as MONAI's ``SegResNet``, the reference implementation.

An initial 3x3x3 convolution to ``base_filters``, then an encoder of levels whose filters
double (``base_filters * 2 ** level``): every level but the first starts with a strided
3x3x3 convolution (down-sampling by 2) and holds ``blocks_down[level]`` residual blocks
(MONAI: 1, 2, 2, 4). A residual block is pre-activated:
``x + conv(act(norm(conv(act(norm(x))))))`` with group normalisation (8 groups) and ReLU.
The decoder goes back up one level at a time: a 1x1x1 convolution halves the filters,
trilinear up-sampling doubles the size, the encoder's features of that level are *added*
(not concatenated) and ``blocks_up[level]`` residual blocks follow (MONAI: 1 each). The head
is norm, activation and a 1x1x1 convolution with bias, then softmax or sigmoid in float32.
Convolutions carry no bias (a norm follows each), except with ``norm="none"``.

The paper's variational auto-encoder branch (reconstructing the input from the bottleneck
as a regulariser) is an option, ``vae=True``, off by default: its dense layers fix the input
size, so it needs a ``patch_size`` (a multiple of ``2 ** (depth + 1)``), and the sliding-window
prediction then uses windows of that size. From the bottleneck: norm, activation, a strided
3x3x3 convolution to 16 channels, dense layers to a 128-d mean and log-variance, a
reparameterised sample (the mean outside training), a dense layer back, reshape, a 1x1x1
convolution to the bottleneck's filters and trilinear up-sampling, then per level a 1x1x1
convolution, up-sampling and a residual block, and a 1x1x1 convolution to ``in_channels``.
During training (only) :class:`VAERegularizer` adds ``vae_weight * (L2 + KL)`` to the model's
loss with ``add_loss``: L2 the mean squared error between the input and its reconstruction,
KL the divergence of the latent code from N(0, I) summed over the 128 dimensions and divided
by the voxels of the patch (the paper's 1/N), both in float32 and averaged over the batch.
The model's output stays the segmentation alone; outside training the reconstruction is unused
(an eager call still computes it, a compiled graph may drop it).

Input ``(B, D, H, W, in_channels)``, output ``(B, D, H, W, n_out)`` where every
spatial size is a multiple of ``2 ** depth``.
"""
from __future__ import annotations

import keras

from .blocks import (
    ACTIVATIONS,
    NORMS,
    activation_layer,
    check_choice,
    check_dropout,
    check_positive_int,
    conv3d,
    input_shape,
    norm_layer,
    output_channels,
    output_head,
)

#: residual blocks per encoder level in MONAI's SegResNet (levels past the fourth get 4 too)
MONAI_BLOCKS_DOWN = (1, 2, 2, 4)


@keras.saving.register_keras_serializable(package="brats_keras")
class TrilinearUpSampling3D(keras.layers.Layer):
    """Doubles each spatial size of ``(B, D, H, W, C)`` by trilinear interpolation (no weights).

    Half-pixel centres, edges repeated: PyTorch's ``interpolate(scale_factor=2, mode="trilinear",
    align_corners=False)``, which MONAI's SegResNet uses, and ``jax.image.resize(..., "trilinear")``.
    Along one axis, output ``2i`` is ``0.75 x[i] + 0.25 x[i-1]`` and ``2i+1`` is
    ``0.75 x[i] + 0.25 x[i+1]`` (``x[-1] = x[0]``, ``x[n] = x[n-1]``); e.g. ``[0, 4] -> [0, 1, 3, 4]``.
    Written with ``keras.ops`` only, so it runs on every backend and exports to SavedModel and ONNX.
    """

    def call(self, x):
        for axis in (1, 2, 3):
            x = self._double(x, axis)
        return x

    @staticmethod
    def _double(x, axis):
        ops = keras.ops
        n = ops.shape(x)[axis]
        prev = ops.concatenate([_take(x, axis, 0, 1), _take(x, axis, 0, -1)], axis=axis)
        nxt = ops.concatenate([_take(x, axis, 1, None), _take(x, axis, -1, None)], axis=axis)
        even = 0.75 * x + 0.25 * prev
        odd = 0.75 * x + 0.25 * nxt
        y = ops.stack([even, odd], axis=axis + 1)  # (..., n, 2, ...) -> (..., 2n, ...)
        shape = list(ops.shape(x))
        shape[0] = -1
        shape[axis] = 2 * n
        return ops.reshape(y, shape)

    def compute_output_shape(self, input_shape):
        b, d, h, w, c = input_shape
        return (b,) + tuple(None if s is None else 2 * s for s in (d, h, w)) + (c,)


@keras.saving.register_keras_serializable(package="brats_keras")
class VAESample(keras.layers.Layer):
    """The reparameterised latent sample ``mean + exp(logvar / 2) * eps``, ``eps ~ N(0, I)``, while training;
    the mean otherwise. Inputs ``[mean, logvar]`` of shape ``(B, latent)``; float32."""

    def __init__(self, seed=None, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs, training=None):
        mean, logvar = inputs
        if not training:
            return mean
        eps = keras.random.normal(keras.ops.shape(mean), dtype=mean.dtype, seed=self.seed_generator)
        return mean + keras.ops.exp(0.5 * logvar) * eps

    def compute_output_shape(self, input_shape):
        return input_shape[0]

    def get_config(self):
        return {**super().get_config(), "seed": self.seed}


@keras.saving.register_keras_serializable(package="brats_keras")
class VAERegularizer(keras.layers.Layer):
    """Passes ``features`` through unchanged; while training adds ``weight * (L2 + KL)`` with ``add_loss``.

    Inputs ``[features, image, reconstruction, mean, logvar]``: L2 is the mean squared error of the
    reconstruction (over voxels and channels), KL is ``0.5 * sum(mean^2 + exp(logvar) - logvar - 1)``
    over the latent dimensions divided by the voxels of one patch (D * H * W); both are computed in
    float32 and averaged over the batch. :attr:`last_terms` holds the last ``(l2, kl)`` tensors (for tests).
    """

    def __init__(self, weight: float = 0.1, **kwargs):
        kwargs.setdefault("autocast", False)  # the features pass through in their own dtype
        super().__init__(**kwargs)
        self.weight = float(weight)

    def call(self, inputs, training=None):
        ops = keras.ops
        features, image, recon, mean, logvar = inputs
        if training:
            image = ops.cast(image, "float32")
            recon = ops.cast(recon, "float32")
            mean = ops.cast(mean, "float32")
            logvar = ops.cast(logvar, "float32")
            l2 = ops.mean(ops.square(image - recon))
            voxels = float(image.shape[1] * image.shape[2] * image.shape[3])
            kl = 0.5 * ops.mean(ops.sum(ops.square(mean) + ops.exp(logvar) - logvar - 1.0, axis=-1)) / voxels
            self.add_loss(self.weight * (l2 + kl))
        return features

    def compute_output_shape(self, input_shape):
        return input_shape[0]

    def get_config(self):
        return {**super().get_config(), "weight": self.weight}


def _take(x, axis, start, stop):
    """``x[..., start:stop, ...]`` along ``axis``."""
    index = [slice(None)] * len(x.shape)
    index[axis] = slice(start, stop)
    return x[tuple(index)]


def res_block(x, name: str, norm: str = "group", activation: str = "relu"):
    """MONAI's SegResNet ResBlock: ``x + conv2(act(norm2(conv1(act(norm1(x))))))``, 3x3x3 convs, same channels.

    Layers ``{name}_norm1``, ``_act1``, ``_conv1``, ``_norm2``, ``_act2``, ``_conv2``, ``_add``.
    Shape: ``(B, D, H, W, C)`` -> ``(B, D, H, W, C)``.
    """
    c = x.shape[-1]
    y = norm_layer(norm, f"{name}_norm1", c)(x)
    y = activation_layer(activation, f"{name}_act1")(y)
    y = conv3d(c, 3, f"{name}_conv1", norm)(y)
    y = norm_layer(norm, f"{name}_norm2", c)(y)
    y = activation_layer(activation, f"{name}_act2")(y)
    y = conv3d(c, 3, f"{name}_conv2", norm)(y)
    return keras.layers.Add(name=f"{name}_add")([y, x])


def _blocks(value, length: int, default, what: str) -> tuple:
    if value is None:
        return tuple(default)
    value = tuple(value)
    if len(value) != length:
        raise ValueError(f"{what} needs {length} numbers (one per level), got {value!r}")
    return tuple(check_positive_int(v, what) for v in value)


def segresnet(
    in_channels: int = 3,
    n_classes: int | None = None,
    base_filters: int = 16,
    depth: int = 3,
    norm: str = "group",
    dropout: float = 0.0,
    output: str = "softmax",
    activation: str = "relu",
    blocks_down=None,
    blocks_up=None,
    patch_size=None,
    vae: bool = False,
    vae_weight: float = 0.1,
    name: str = "segresnet",
    task=None,
) -> keras.Model:
    """SegResNet of Myronenko (2018) as MONAI builds it, for ``(B, D, H, W, in_channels)`` patches.

    MONAI's BraTS configuration is ``segresnet(in_channels=4, base_filters=16, output="regions")``
    (its ``init_filters=16``, ``blocks_down=(1, 2, 2, 4)``, ``blocks_up=(1, 1, 1)``).

    Args:
        in_channels: input channels (modalities).
        n_classes: classes of the softmax output (None: 4, or the task's); with ``output="regions"``
            and no task it must be 4 or 3.
        base_filters: filters of the initial convolution and the first level (MONAI's ``init_filters``).
        depth: number of stride-2 down-samplings (levels - 1); 3 in MONAI.
        norm: ``"group"`` (8 groups, MONAI's), ``"batch"``, ``"instance"`` or ``"none"``.
        dropout: SpatialDropout3D rate after the initial convolution (MONAI's ``dropout_prob``; 0: none).
        output: ``"softmax"`` (class probabilities) or ``"regions"`` (one sigmoid per head region of the task:
            WT, TC, ET for the default).
        activation: ``"relu"`` (MONAI's), ``"leaky_relu"`` or ``"prelu"``.
        blocks_down: residual blocks per encoder level, ``depth + 1`` numbers; default
            ``(1, 2, 2, 4)`` cut or continued with 4s to ``depth + 1`` levels.
        blocks_up: residual blocks per decoder level, ``depth`` numbers, deepest first; default all 1.
        patch_size: None (any multiple of ``2 ** depth``), an int or ``(D, H, W)``.
        vae: add the paper's variational auto-encoder branch (see the module docstring): a
            regulariser during training only; needs ``patch_size`` (multiples of ``2 ** (depth + 1)``).
        vae_weight: weight of the branch's loss (L2 + KL), 0.1 in the paper.
        name: model name.
        task: the task (a :class:`~brats_keras.tasks.Task` or its name) whose head the model ends in: its
            classes (softmax) or its head regions (regions); None: the 2021 glioma task.
    Returns:
        a ``keras.Model`` giving float32 probabilities ``(B, D, H, W, n_out)``.
    Raises:
        ValueError for an unknown norm, activation or output, block lists of the wrong length,
        or sizes that are not positive integers or not multiples of ``2 ** depth``;
        ``vae=True`` without ``patch_size``.
    """
    depth = check_positive_int(depth, "depth")
    base_filters = check_positive_int(base_filters, "base_filters")
    norm = check_choice(norm, NORMS, "norm")
    activation = check_choice(activation, ACTIVATIONS, "activation")
    dropout = check_dropout(dropout)
    n_out = output_channels(output, n_classes, task)
    if vae and patch_size is None:
        raise ValueError("segresnet(vae=True) needs a fixed patch_size: the VAE branch's dense layers fix the "
                         "input size")
    shape = input_shape(patch_size, in_channels, 2 ** (depth + 1) if vae else 2**depth)
    default_down = (MONAI_BLOCKS_DOWN + (4,) * depth)[: depth + 1]
    blocks_down = _blocks(blocks_down, depth + 1, default_down, "blocks_down")
    blocks_up = _blocks(blocks_up, depth, (1,) * depth, "blocks_up")

    inputs = keras.Input(shape=shape, name="image")
    x = conv3d(base_filters, 3, "init_conv", norm)(inputs)
    if dropout:
        x = keras.layers.SpatialDropout3D(dropout, name="init_drop")(x)
    skips = []
    for lvl, n_blocks in enumerate(blocks_down):
        filters = base_filters * 2**lvl
        if lvl:
            x = conv3d(filters, 3, f"enc{lvl}_down", norm, strides=2)(x)
        for b in range(n_blocks):
            x = res_block(x, f"enc{lvl}_block{b}", norm, activation)
        skips.append(x)
    if vae:
        x = _vae_branch(x, inputs, base_filters, depth, norm, activation, vae_weight)
    for i, n_blocks in enumerate(blocks_up):
        lvl = depth - 1 - i
        x = conv3d(base_filters * 2**lvl, 1, f"dec{lvl}_proj", norm)(x)
        x = TrilinearUpSampling3D(name=f"dec{lvl}_up")(x)
        x = keras.layers.Add(name=f"dec{lvl}_skip")([x, skips[lvl]])
        for b in range(n_blocks):
            x = res_block(x, f"dec{lvl}_block{b}", norm, activation)
    x = norm_layer(norm, "final_norm", base_filters)(x)
    x = activation_layer(activation, "final_act")(x)
    outputs = output_head(x, n_out, output)
    return keras.Model(inputs, outputs, name=name)


#: latent dimensions and channels of the VAE branch's smallest feature map (the paper's)
VAE_LATENT = 128
VAE_CHANNELS = 16


def _vae_branch(x, image, base_filters: int, depth: int, norm: str, activation: str, weight: float):
    """The VAE branch from bottleneck ``x`` back to ``image``'s size and channels; returns ``x`` through
    :class:`VAERegularizer`, which adds the branch's loss while training."""
    size = tuple(s // 2 ** (depth + 1) for s in image.shape[1:4])
    v = norm_layer(norm, "vae_norm", x.shape[-1])(x)
    v = activation_layer(activation, "vae_act")(v)
    v = conv3d(VAE_CHANNELS, 3, "vae_down", norm, strides=2)(v)
    v = keras.layers.Flatten(name="vae_flatten")(v)
    mean = keras.layers.Dense(VAE_LATENT, name="vae_mean", dtype="float32")(v)
    logvar = keras.layers.Dense(VAE_LATENT, name="vae_logvar", dtype="float32")(v)
    z = VAESample(name="vae_sample")([mean, logvar])
    v = keras.layers.Dense(size[0] * size[1] * size[2] * VAE_CHANNELS, name="vae_dense_up")(z)
    v = keras.layers.Reshape(size + (VAE_CHANNELS,), name="vae_reshape")(v)
    v = activation_layer(activation, "vae_dense_act")(v)
    v = conv3d(base_filters * 2**depth, 1, "vae_proj", "none")(v)
    v = TrilinearUpSampling3D(name="vae_up")(v)
    for lvl in range(depth - 1, -1, -1):
        v = conv3d(base_filters * 2**lvl, 1, f"vae{lvl}_proj", norm)(v)
        v = TrilinearUpSampling3D(name=f"vae{lvl}_up")(v)
        v = res_block(v, f"vae{lvl}_block0", norm, activation)
    recon = conv3d(image.shape[-1], 1, "vae_out", "none")(v)
    return VAERegularizer(weight, name="vae_loss")([x, image, recon, mean, logvar])
