"""The one quiet TensorFlow import: :func:`tensorflow` (no Keras of either flavour is touched here).

TensorFlow's native libraries print start-up lines and, on a CPU-only machine, a CUDA complaint at the
first op; both are filtered (:mod:`tf_lth.util.native_log`) by importing here and probing the GPUs at
once. Where JAX is installed (the test extra), TensorFlow's TFLite module imports ``jax.jit`` at import
for ``TFLiteConverter.experimental_from_jax``, which tf-lth never uses: ~120 MiB of a process's peak
RSS. TensorFlow is therefore imported with ``jax`` absent, and that converter gets a ``jit`` that
imports JAX on first use. Which Keras ``tf.keras`` means is not decided here: :mod:`tf_lth.keras2`
selects tf_keras where the tf_keras flavour is used.
"""
from __future__ import annotations

import contextlib
import functools
import importlib
import importlib.util
import os
import sys

from tf_lth.util.native_log import native_noise_filtered


@contextlib.contextmanager
def absent(name: str):
    """Inside, ``import name`` raises ImportError (unless ``name`` is loaded already); after, it works."""
    if name in sys.modules:
        yield
        return
    sys.modules[name] = None
    try:
        yield
    finally:
        if sys.modules.get(name, 0) is None:
            del sys.modules[name]


def quietly(name: str):
    """Import ``name`` without the native start-up noise."""
    if name in sys.modules:
        return sys.modules[name]
    with native_noise_filtered():
        return importlib.import_module(name)


def _jit(*args, **kwargs):
    from jax import jit  # loaded where TFLite's JAX converter is first used

    return jit(*args, **kwargs)


def tensorflow():
    """``import tensorflow``: INFO logs off, native noise filtered, JAX not loaded along, GPUs probed."""
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # Keras 3 too: TensorFlow's import eagerly loads the optimizers of the Keras ``tf.keras`` means, and
    # with no flavour chosen yet that is Keras 3 (and its scikit-learn wrapper: ~60 MiB of a tf_keras run's
    # peak RSS, where data/ imported TensorFlow before tf_lth.keras2 chose tf_keras). ``tf.keras`` still
    # resolves on first use, and ``import keras`` works as ever once TensorFlow is in.
    hide_keras = "keras" not in sys.modules and os.environ.get("TF_USE_LEGACY_KERAS", "0") not in ("1", "true", "True")
    with contextlib.ExitStack() as stack:
        if hide_keras:
            stack.enter_context(absent("keras"))
        if "jax" in sys.modules or importlib.util.find_spec("jax") is None:
            tf = quietly("tensorflow")
        else:
            with absent("jax"):
                tf = quietly("tensorflow")
            for name in ("tensorflow.lite.python.util", "tensorflow.lite.python.lite"):
                if getattr(sys.modules.get(name), "_jit", 0) is None:
                    sys.modules[name]._jit = _jit
    has_gpu()
    return tf


@functools.cache
def has_gpu() -> bool:
    """Whether TensorFlow sees a GPU (asked once, where CUDA's complaint on CPU-only machines is filtered)."""
    tf = sys.modules.get("tensorflow") or tensorflow()
    with native_noise_filtered():
        return bool(tf.config.list_physical_devices("GPU"))


__all__ = ["tensorflow", "has_gpu", "absent", "quietly"]
