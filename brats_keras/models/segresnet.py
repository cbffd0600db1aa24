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

The paper's variational auto-encoder branch (reconstructing the input from the
bottleneck as a regulariser) is not built: its dense layers fix the input size, which the
sliding-window prediction and the any-size models of this package do not want, and MONAI
keeps it apart too (``SegResNetVAE``).

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
    n_classes: int = 4,
    base_filters: int = 16,
    depth: int = 3,
    norm: str = "group",
    dropout: float = 0.0,
    output: str = "softmax",
    activation: str = "relu",
    blocks_down=None,
    blocks_up=None,
    patch_size=None,
    name: str = "segresnet",
) -> keras.Model:
    """SegResNet of Myronenko (2018) as MONAI builds it, for ``(B, D, H, W, in_channels)`` patches.

    MONAI's BraTS configuration is ``segresnet(in_channels=4, base_filters=16, output="regions")``
    (its ``init_filters=16``, ``blocks_down=(1, 2, 2, 4)``, ``blocks_up=(1, 1, 1)``).

    Args:
        in_channels: input channels (modalities).
        n_classes: classes of the softmax output; with ``output="regions"`` it must be 4 or 3.
        base_filters: filters of the initial convolution and the first level (MONAI's ``init_filters``).
        depth: number of stride-2 down-samplings (levels - 1); 3 in MONAI.
        norm: ``"group"`` (8 groups, MONAI's), ``"batch"``, ``"instance"`` or ``"none"``.
        dropout: SpatialDropout3D rate after the initial convolution (MONAI's ``dropout_prob``; 0: none).
        output: ``"softmax"`` (class probabilities) or ``"regions"`` (3 sigmoids WT, TC, ET).
        activation: ``"relu"`` (MONAI's), ``"leaky_relu"`` or ``"prelu"``.
        blocks_down: residual blocks per encoder level, ``depth + 1`` numbers; default
            ``(1, 2, 2, 4)`` cut or continued with 4s to ``depth + 1`` levels.
        blocks_up: residual blocks per decoder level, ``depth`` numbers, deepest first; default all 1.
        patch_size: None (any multiple of ``2 ** depth``), an int or ``(D, H, W)``.
        name: model name.
    Returns:
        a ``keras.Model`` giving float32 probabilities ``(B, D, H, W, n_out)``.
    Raises:
        ValueError for an unknown norm, activation or output, block lists of the wrong length,
        or sizes that are not positive integers or not multiples of ``2 ** depth``.
    """
    depth = check_positive_int(depth, "depth")
    base_filters = check_positive_int(base_filters, "base_filters")
    norm = check_choice(norm, NORMS, "norm")
    activation = check_choice(activation, ACTIVATIONS, "activation")
    dropout = check_dropout(dropout)
    n_out = output_channels(output, n_classes)
    shape = input_shape(patch_size, in_channels, 2**depth)
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
