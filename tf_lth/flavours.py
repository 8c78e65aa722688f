"""Which Keras a model belongs to, without importing either (so a Keras 3 user on JAX never loads
TensorFlow or tf_keras, and a tf_keras user never loads Keras 3).

The flavour modules are :mod:`tf_lth.keras2` (tf_keras, TF-MOT) and :mod:`tf_lth.keras3` (Keras 3,
any backend); :func:`masked_model` hands a model to the masked model of its flavour, the only code
that touches its variables.
"""
from __future__ import annotations

import importlib

from tf_lth.errors import TfLthError

KERAS3, TF_KERAS = "keras3", "tf_keras"
# flavour -> the module with its masked model (class ``MaskedModel``)
MASKED = {TF_KERAS: "tf_lth.masked", KERAS3: "tf_lth.masked3"}


def of(obj) -> str | None:
    """``"keras3"``, ``"tf_keras"`` or ``None``, from the modules of ``obj``'s classes (a subclassed
    model's own class lives in the user's module; one of its bases is Keras')."""
    for cls in type(obj).__mro__:
        root = cls.__module__.split(".")[0]
        if root == "keras":
            return KERAS3
        if root == "tf_keras" or cls.__module__.startswith("tensorflow.python.keras"):
            return TF_KERAS
    return None


def masked_model(model, frozen: bool = False):
    """The masked model of ``model``'s flavour (:class:`tf_lth.masked.MaskedModel` or
    :class:`tf_lth.masked3.MaskedModel`)."""
    flavour = of(model)
    if flavour is None:
        raise TfLthError(f"expected a Keras model (tf_keras or Keras 3), got {type(model).__name__}")
    return importlib.import_module(MASKED[flavour]).MaskedModel(model, frozen=frozen)


def model_from_json(text: str, flavour: str = TF_KERAS, custom_objects=None):
    """Rebuild an architecture saved by ``model.to_json()`` in the given flavour."""
    module = importlib.import_module("tf_lth.keras3" if flavour == KERAS3 else "tf_lth.keras2")
    return module.keras.models.model_from_json(text, custom_objects=custom_objects)


__all__ = ["of", "masked_model", "model_from_json", "KERAS3", "TF_KERAS"]
