"""The tf_keras flavour: TF-MOT's wrappers on Keras 2 (``tf_keras``). This package's ``__init__`` is the
one place that selects tf_keras; everything here takes ``keras`` and ``tf`` from it, and users do too
(``from tf_lth import keras``).

TensorFlow >= 2.16 resolves ``tf.keras`` to Keras 3 unless ``TF_USE_LEGACY_KERAS=1`` is set before
``tf.keras`` is first touched, so this module sets it and hands out ``tf_keras`` itself. The package:
:mod:`~tf_lth.keras2.frozen_mask` (the never-pruning TF-MOT schedule), :mod:`~tf_lth.keras2.wrapper`
(TF-MOT's ``PruneLowMagnitude`` with the mask in the forward pass), :mod:`~tf_lth.keras2.masked` (the
masked model: owner of the mask invariant), :mod:`~tf_lth.keras2.callback` (the round's callback),
:mod:`~tf_lth.keras2.training` (its training kit), :mod:`~tf_lth.keras2.export` (its export route) and
:mod:`~tf_lth.keras2.supermask` (learned supermasks). It never imports :mod:`tf_lth.keras3`.
"""
import logging
import os
import sys

from tf_lth.errors import TfLthError
from tf_lth.util.tensorflow import absent, has_gpu, quietly, tensorflow

# Set before TensorFlow resolves ``tf.keras``. If the user imported TensorFlow and touched
# ``tf.keras`` first, that stays Keras 3; tf-lth still works since it only uses ``tf_keras``.
os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Python-side warnings that say nothing is wrong: tf_keras loading a SavedModel for inference
# (tf-lth's export check) notes that metrics are built only when it trains or evaluates; and Keras
# times the first batches' callbacks, where an evaluation point (``eval_every``) runs by design.
PYTHON_NOISE = ("Compiled the loaded model, but the compiled metrics have yet to be built",
                "Callback method `on_train_batch_end` is slow compared to the batch time")


class _KnownWarnings(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(PYTHON_NOISE)


tf = tensorflow()
tf.get_logger().addFilter(_KnownWarnings())
keras = quietly("tf_keras")
# TF-MOT's layer registry probes ``keras.src.engine`` (Keras 2.13's layout), which Keras 3 lacks: the
# probe fails either way and TF-MOT takes tf_keras' base layer, but it first loads all of Keras 3 and,
# where installed, the JAX and scikit-learn Keras 3 imports (~200 MiB of a tf_keras process's peak
# RSS). Keras 3 stays importable, and loads where it is used.
with absent("keras"):
    from tensorflow_model_optimization.python.core.sparsity.keras import prune_registry  # noqa: E402,F401
from tf_keras.src.utils.tf_utils import can_jit_compile  # noqa: E402  (XLA usable on this platform)

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
