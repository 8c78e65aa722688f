"""What the pruning-at-initialization scores need from a network, computed with TensorFlow for either
Keras flavour on it (:mod:`tf_lth.keras2.saliency`, :mod:`tf_lth.keras3.saliency` on the TensorFlow backend):
the loss gradient (SNIP), the Hessian-gradient product (GraSP, a double backward pass) and the gradient of
the summed output (SynFlow). TensorFlow comes through :mod:`tf_lth.util.tensorflow`, so one copy of the
math serves both flavours.

The network runs with ``training=False``: BatchNormalization uses its moving statistics (at θ0 mean 0 and
variance 1, so it passes its input on, scaled by ``1 / sqrt(1 + eps)``) and dropout is off, so a score is
a deterministic function of θ0 and the batches.
"""
from __future__ import annotations

import numpy as np

from tf_lth.errors import TfLthError
from tf_lth.util.tensorflow import tensorflow


def loss_gradient(model, variables, loss_fn, batches, temperature: float = 1.0) -> list:
    """``∂L/∂variables`` averaged over ``batches`` (``L``: ``loss_fn(y, model(x) / temperature)``, the batch mean)."""
    tf = tensorflow()
    total = [tf.zeros_like(v) for v in variables]
    for x, y in batches:
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=False) / temperature)
        total = [t + g for t, g in zip(total, tape.gradient(loss, variables))]
    return [t / len(batches) for t in total]


def hessian_gradient(model, variables, loss_fn, batches, temperature: float = 1.0) -> list:
    """``H g`` over ``batches`` (``g``: :func:`loss_gradient`, held fixed; ``H``: the loss's Hessian in
    ``variables``): the gradient of ``g · ∂L/∂θ`` by a second tape around the first, batch by batch."""
    tf = tensorflow()
    g = [tf.stop_gradient(t) for t in loss_gradient(model, variables, loss_fn, batches, temperature)]
    total = [tf.zeros_like(v) for v in variables]
    for x, y in batches:
        with tf.GradientTape() as outer:
            with tf.GradientTape() as inner:
                loss = loss_fn(y, model(x, training=False) / temperature)
            dot = tf.add_n([tf.reduce_sum(a * b) for a, b in zip(inner.gradient(loss, variables), g)])
        total = [t + h for t, h in zip(total, outer.gradient(dot, variables))]
    return [t / len(batches) for t in total]


def output_gradient(model, variables, x) -> list:
    """``∂R/∂variables`` with ``R`` the sum of every output of ``model`` on ``x`` (SynFlow's objective)."""
    tf = tensorflow()
    with tf.GradientTape() as tape:
        outputs = tf.nest.flatten(model(x, training=False))
        total = tf.add_n([tf.reduce_sum(tf.cast(o, tf.float64)) for o in outputs])
    return tape.gradient(total, variables)


def compute(model, variables, loss_fn, needs: str, batches, temperature: float = 1.0) -> list[np.ndarray]:
    """The ``needs`` quantity (``gradient``, ``hessian_gradient`` or ``synflow``) in ``variables``, as numpy;
    ``batches``: ``(x, y)`` pairs (for ``synflow``, one input of ones whose shape is the model's);
    ``temperature``: what the logits are divided by in the loss."""
    if needs == "gradient":
        found = loss_gradient(model, variables, loss_fn, batches, temperature)
    elif needs == "hessian_gradient":
        found = hessian_gradient(model, variables, loss_fn, batches, temperature)
    elif needs == "synflow":
        found = output_gradient(model, variables, batches[0][0])
    else:
        raise TfLthError(f"no gradient named {needs!r}: use gradient, hessian_gradient or synflow")
    return [np.zeros(v.shape) if g is None else np.asarray(g, np.float64) for v, g in zip(variables, found)]
