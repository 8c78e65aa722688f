"""The one place that picks Keras 3 (``import keras``), on whatever backend ``KERAS_BACKEND`` names.

tf-lth's Keras 3 path imports Keras from here and nothing else: never :mod:`tf_lth.keras2`,
``tf_keras`` or TF-MOT (which set ``TF_USE_LEGACY_KERAS`` and load TensorFlow), so on the JAX backend
a ticket trains without TensorFlow in the process. ``import keras`` stays Keras 3 for the user
whatever tf-lth loaded before (``TF_USE_LEGACY_KERAS`` only changes what ``tf.keras`` means).
"""
from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from tf_lth.util.native_log import native_noise_filtered  # noqa: E402

with native_noise_filtered():  # on the TensorFlow backend this loads TensorFlow
    import keras
    from keras import ops


def backend() -> str:
    """``"tensorflow"``, ``"jax"`` or ``"torch"``."""
    return keras.backend.backend()


def environment_for_children(env: dict | None = None) -> dict:
    """``env`` (default: this process's) for a child process that uses Keras 3: without the
    ``TF_USE_LEGACY_KERAS`` that :mod:`tf_lth.keras2` sets, so the child's ``tf.keras`` is Keras 3 too."""
    env = dict(os.environ if env is None else env)
    env.pop("TF_USE_LEGACY_KERAS", None)
    return env


__all__ = ["keras", "ops", "backend", "environment_for_children"]
