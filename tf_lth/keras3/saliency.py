"""What pruning-at-initialization scores need from a Keras 3 model (:mod:`tf_lth.pruning.at_init`): the
loss gradient, the Hessian-gradient product or SynFlow's gradient, on a plain copy of the ticket's model
(the masks applied to the values written into it). On TensorFlow by its tapes (:mod:`tf_lth.util.gradients`,
shared with tf_keras); on JAX by ``model.stateless_call`` under ``jax.grad`` (the Hessian-gradient product
as ``jax.jvp`` of the gradient), so a JAX ticket never loads TensorFlow. Both run with ``training=False``
(BatchNormalization on its moving statistics, no dropout)."""
from __future__ import annotations

import numpy as np

from tf_lth.errors import TfLthError
from tf_lth.keras3 import backend
from tf_lth.keras3.training import LOSS


def ones_input(model, batches) -> np.ndarray:
    """SynFlow's input: one example of ones, shaped like the batches' (else like the model's input)."""
    shape = np.shape(batches[0][0])[1:] if batches else tuple(getattr(model, "input_shape", (None, None))[1:])
    if not shape or any(d is None for d in shape):
        raise TfLthError(f"{model.name}'s input size is unknown: give data so synflow knows its shape")
    return np.ones((1, *shape), np.float32)


def prepare(masked):
    """What :func:`quantities` runs on for a ticket's masked model: on JAX the masked model itself (read
    statelessly, nothing written; Keras' ``clone_model`` would import TensorFlow), else a plain copy."""
    return masked if backend() == "jax" else masked.plain_copy(masked.raw_weights())


def quantities(model, indices: list[int], values: list[np.ndarray], needs: str, batches,
               temperature: float = 1.0) -> list[np.ndarray]:
    """The ``needs`` quantity (``gradient``, ``hessian_gradient``, ``synflow``) of the weights at ``indices``
    of ``model`` (a plain model, its ``weights`` in the order of :class:`tf_lth.keras3.masked.MaskedModel`'s
    ``variables``, or on JAX that masked model: :func:`prepare`), the weights taking ``values``; the loss on
    the logits divided by ``temperature``."""
    masked = model if hasattr(model, "kernels") else None
    model, order = (masked.source, masked.variables) if masked else (model, model.weights)
    if [tuple(v.shape) for v in order] != [tuple(np.shape(a)) for a in values]:
        raise TfLthError(f"{model.name}'s weights are not in the ticket's order: rebuild it from the ticket")
    if needs == "synflow":
        batches = [(ones_input(model, batches), None)]
    if backend() == "tensorflow":
        from tf_lth.util import gradients

        model.set_weights(values)
        return gradients.compute(model, [model.weights[i] for i in indices], LOSS, needs, batches, temperature)
    if backend() == "jax":
        keep = {id(v) for v in masked.keep.values()} if masked else set()
        return _jax(model, order, keep, indices, values, needs, batches, temperature)
    raise TfLthError(f"gradients for pruning at init are written for the TensorFlow and JAX backends, not "
                     f"{backend()}: use KERAS_BACKEND=tensorflow or jax, or magnitude_init / random")


def _jax(model, order, keep, indices, values, needs, batches, temperature) -> list[np.ndarray]:
    """The same quantities by JAX: a pure function of the chosen weights through ``stateless_call``;
    ``order``: the variables ``values`` are of; ``keep``: ids of mask variables, read as all True (the
    values carry the zeros, so a pruned weight has its gradient as in a plain copy)."""
    import jax
    import jax.numpy as jnp

    position = {id(v): i for i, v in enumerate(order)}
    trainable = [position[id(v)] for v in model.trainable_variables]
    frozen = [jnp.ones(v.shape, bool) if id(v) in keep else
              jnp.asarray(values[position[id(v)]] if id(v) in position else v.value)
              for v in model.non_trainable_variables]
    base = [jnp.asarray(v) for v in values]

    def outputs(chosen, x):
        current = list(base)
        for i, value in zip(indices, chosen):
            current[i] = value
        out, _ = model.stateless_call([current[i] for i in trainable], frozen, x, training=False)
        return out

    def loss(chosen, x, y):
        return LOSS(y, outputs(chosen, x) / temperature)

    theta = [base[i] for i in indices]
    grad = jax.grad(loss)
    if needs == "synflow":
        x = batches[0][0]
        found = jax.grad(lambda c: sum(jnp.sum(o) for o in jax.tree_util.tree_leaves(outputs(c, x))))(theta)
    elif needs in ("gradient", "hessian_gradient"):
        def mean_grad(c):
            per = [grad(c, jnp.asarray(x), jnp.asarray(y)) for x, y in batches]
            return [sum(p[j] for p in per) / len(per) for j in range(len(c))]

        found = mean_grad(theta)
        if needs == "hessian_gradient":
            found = jax.jvp(mean_grad, (theta,), ([jax.lax.stop_gradient(g) for g in found],))[1]
    else:
        raise TfLthError(f"no gradient named {needs!r}: use gradient, hessian_gradient or synflow")
    return [np.asarray(g, np.float64) for g in found]


__all__ = ["prepare", "quantities", "ones_input"]
