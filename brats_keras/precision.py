"""Which Keras dtype policy and XLA setting fit the machine a training runs on: the devices the backend sees and
whether the CPU computes bfloat16 natively."""
from __future__ import annotations


def has_gpu() -> bool:
    """True when the Keras backend sees a GPU."""
    import keras

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return bool(tf.config.list_physical_devices("GPU"))
    if backend == "jax":
        import jax

        return any(d.platform == "gpu" for d in jax.devices())
    if backend == "torch":
        import torch

        return torch.cuda.is_available()
    return False


def cpu_has_bf16() -> bool:
    """True when the CPU has native bfloat16 arithmetic (Linux /proc/cpuinfo flags avx512_bf16 or amx_bf16)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def choose_precision(setting: str = "auto") -> str:
    """Map ``auto|off|float16|bfloat16`` to a Keras dtype policy name.

    ``auto`` picks ``mixed_float16`` on an NVIDIA GPU (with loss scaling), ``mixed_bfloat16``
    on a CPU with native bf16 instructions (AVX512-BF16 or AMX), where it runs about 1.5x faster
    than float32, and float32 on other CPUs, where emulated bf16 is about 20x slower (measured on an
    AMD EPYC without AVX-512; see benchmarks/RESULTS.md). float16 has no CPU MaxPool3D kernel.
    """
    setting = (setting or "auto").lower()
    table = {"off": "float32", "float32": "float32", "float16": "mixed_float16", "mixed_float16": "mixed_float16",
             "bfloat16": "mixed_bfloat16", "mixed_bfloat16": "mixed_bfloat16"}
    if setting == "auto":
        if has_gpu():
            return "mixed_float16"
        return "mixed_bfloat16" if cpu_has_bf16() else "float32"
    if setting not in table:
        raise ValueError(f"unknown mixed precision {setting!r}: use auto, off, float16 or bfloat16")
    return table[setting]


def choose_jit(setting="auto"):
    """``auto``: XLA on GPU only (on CPU XLA is about 10x slower for 3D convolutions), and always for JAX with
    several processes (there every op of an un-jitted step would be a cross-process computation of its own)."""
    if isinstance(setting, bool):
        return setting
    setting = str(setting).lower()
    if setting == "auto":
        from .distributed import jax_processes

        return has_gpu() or jax_processes() > 1
    return setting in ("1", "true", "on", "yes")
