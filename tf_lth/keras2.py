"""The one place that picks the Keras flavour: TF-MOT needs Keras 2 (``tf_keras``).

TensorFlow >= 2.16 resolves ``tf.keras`` to Keras 3 unless ``TF_USE_LEGACY_KERAS=1`` is set
before ``tf.keras`` is first touched, so this module sets it and hands out ``tf_keras`` itself;
the rest of tf-lth and its users import ``keras`` from here (``from tf_lth import keras``).
"""
import functools
import importlib
import logging
import os
import sys

from tf_lth.errors import TfLthError
from tf_lth.noise import native_noise_filtered

# Set before TensorFlow resolves ``tf.keras``. If the user imported TensorFlow and touched
# ``tf.keras`` first, that stays Keras 3; tf-lth still works since it only uses ``tf_keras``.
os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Python-side warnings that say nothing is wrong: tf_keras loading a SavedModel for inference
# (tf-lth's export check) notes that metrics are built only when it trains or evaluates; and Keras
# times the first batches' callbacks, where an evaluation point (``eval_every``) runs by design.
PYTHON_NOISE = ("Compiled the loaded model, but the compiled metrics have yet to be built",
                "Callback method `on_train_batch_end` is slow compared to the batch time")


def _import_quietly(name: str):
    """Import ``name`` without the native start-up noise."""
    if name in sys.modules:
        return sys.modules[name]
    with native_noise_filtered():
        return importlib.import_module(name)


@functools.cache
def has_gpu() -> bool:
    """Whether TensorFlow sees a GPU (asked once; CUDA's complaint on CPU-only machines is dropped)."""
    with native_noise_filtered():
        return bool(tf.config.list_physical_devices("GPU"))


class _KnownWarnings(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(PYTHON_NOISE)


tf = _import_quietly("tensorflow")
tf.get_logger().addFilter(_KnownWarnings())
keras = _import_quietly("tf_keras")
from tf_keras.src.utils.tf_utils import can_jit_compile  # noqa: E402  (XLA usable on this platform)
has_gpu()  # CUDA is probed now, where its complaint on CPU-only machines can be filtered, not at the first op

KERAS3_MESSAGE = (
    "{what} is a Keras 3 model; tf-lth (like TF-MOT) needs a Keras 2 model: build it with "
    "`from tf_lth import keras` (tf_keras) instead of `import keras` / `tf.keras`"
)


def is_keras3(obj) -> bool:
    """True for a Keras 3 model or layer (module ``keras.src``), which TF-MOT cannot wrap."""
    return type(obj).__module__.split(".")[0] == "keras" and "keras" in sys.modules


def require_tf_keras_model(model, what: str = "the model") -> None:
    """Raise a one-line :class:`TfLthError` unless ``model`` is a tf_keras ``Model``."""
    if is_keras3(model):
        raise TfLthError(KERAS3_MESSAGE.format(what=what))
    if not isinstance(model, keras.Model):
        raise TfLthError(f"{what} must be a tf_keras Model, got {type(model).__name__}")


def require_graph_model(model) -> None:
    """What cloning layer by layer (TF-MOT wrappers, supermasks) needs: a built tf_keras
    Sequential or functional model; anything else is a one-line :class:`TfLthError`."""
    require_tf_keras_model(model)
    if not (model._is_graph_network or isinstance(model, keras.Sequential)):
        raise TfLthError(f"{model.name} is a subclassed model, which cannot be cloned layer by layer "
                         "(TF-MOT wraps layers that way): build it as a Sequential or functional model")
    if not model.built:
        raise TfLthError(f"{model.name} is not built: give it an Input or call model.build(input_shape)")


__all__ = ["keras", "tf", "require_tf_keras_model", "require_graph_model", "is_keras3", "has_gpu", "can_jit_compile"]
