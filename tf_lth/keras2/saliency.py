"""What pruning-at-initialization scores need from a tf_keras model (:mod:`tf_lth.pruning.at_init`):
the loss gradient, the Hessian-gradient product or SynFlow's gradient, by TensorFlow's tapes
(:mod:`tf_lth.util.gradients`), on a plain copy of the ticket's model (no wrappers: the masks are applied
to the values written into it, so a pruned weight computes as zero)."""
from __future__ import annotations

import numpy as np

from tf_lth.errors import TfLthError
from tf_lth.keras2.training import LOSS
from tf_lth.util import gradients


def variables(model) -> list:
    """``model``'s weights in the order of :class:`tf_lth.keras2.masked.MaskedModel`'s ``variables`` (and of
    its ``plain_copy``): each layer's weights in turn."""
    return [w for layer in model.layers for w in layer.weights]


def ones_input(model, batches) -> np.ndarray:
    """SynFlow's input: one example of ones, shaped like the batches' (else like the model's input)."""
    shape = np.shape(batches[0][0])[1:] if batches else tuple(model.input_shape[1:])
    if any(d is None for d in shape):
        raise TfLthError(f"{model.name} has an input of unknown size {shape}: give data so synflow knows its shape")
    return np.ones((1, *shape), np.float32)


def prepare(masked):
    """What :func:`quantities` runs on for a ticket's masked model: a plain copy (no wrappers)."""
    return masked.plain_copy(masked.raw_weights())


def quantities(model, indices: list[int], values: list[np.ndarray], needs: str, batches,
               temperature: float = 1.0) -> list[np.ndarray]:
    """Write ``values`` (``MaskedModel.variables`` order) into the plain ``model``, then the ``needs``
    quantity (``gradient``, ``hessian_gradient``, ``synflow``) of the variables at ``indices`` (the loss on
    the logits divided by ``temperature``)."""
    found = variables(model)
    if [tuple(v.shape) for v in found] != [tuple(np.shape(a)) for a in values]:
        raise TfLthError(f"{model.name}'s weights are not in the ticket's order: rebuild it from the ticket")
    for v, a in zip(found, values):
        v.assign(a)
    if needs == "synflow":
        batches = [(ones_input(model, batches), None)]
    return gradients.compute(model, [found[i] for i in indices], LOSS, needs, batches, temperature)


__all__ = ["prepare", "quantities", "variables", "ones_input"]
