"""The networks tf-lth knows: :mod:`~tf_lth.models.specs` (each one's recipe, a registry; no TensorFlow) and
:mod:`~tf_lth.models.networks` (the builders, in either Keras flavour, and the user's own model)."""
from tf_lth.models.specs import (DEEP_RECIPE, MODELS, USER_MODEL_FILES, USER_MODEL_HOWTO, ModelSpec, spec,
                                 user_model)

__all__ = ["MODELS", "ModelSpec", "spec", "user_model", "DEEP_RECIPE", "USER_MODEL_FILES", "USER_MODEL_HOWTO"]
