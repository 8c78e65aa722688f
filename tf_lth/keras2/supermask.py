"""Learned supermasks (Zhou et al. 2019): train only a binary mask over frozen weights, with ``fit``.

:func:`learn_supermask` clones a tf_keras model and wraps each Dense/Conv layer in a
:class:`Supermask`: the kernel and bias are frozen (θ0, or sign(θ0)·σ with ``"signed_constant"``)
and the only trainable weight is a score per kernel entry. In training the mask is sampled
m ~ Bernoulli(sigmoid(score)) and the gradient goes straight through to the scores
(dm/dscore := dsigmoid/dscore); at inference it is ``score > 0`` (i.e. sigmoid(score) > 0.5) or the
expected mask sigmoid(score). Biases stay frozen too, as in Zhou et al.'s code; other layers with
weights are frozen (``trainable=False``). :func:`to_ticket` turns the thresholded masks into a
:class:`~tf_lth.ticket.ticket.LotteryTicket` of the original architecture, so the TF-MOT export path
(``strip_pruning`` → TFLite) ships the supermask as a sparse model.

Recipe (LeNet-300-100): compile with ``keras.optimizers.Adam(LEARNING_RATE)`` (see
:func:`optimizer`); scores start at :data:`SCORE_INIT` (keep probability 0.5, Zhou et al.'s
default); ``weights="signed_constant"`` learns best, as in the paper.
"""
from __future__ import annotations

import numpy as np

from tf_lth.training.evaluation import untrained_accuracy  # noqa: F401  (public here too)
from tf_lth.config.configs import TicketConfig
from tf_lth.errors import TfLthError
from tf_lth.keras2 import keras, require_graph_model, tf
from tf_lth.ticket.ticket import LotteryTicket
from tf_lth.pruning.rewind import signed_constant

MODES = ("threshold", "expected")
WEIGHTS = ("init", "signed_constant")
SCORE_INIT = 0.0  # sigmoid(0) = 0.5: half the weights kept at the start, as Zhou et al. (sigmoid_bias=0)
# Adam on the scores. LeNet-300-100, batch 60: 1e-3..1 tried; 0.1 is best on fashion_mnist and on par
# with 0.3 on mnist5k; 0.01 is far slower. (SGD momentum 0.9 needs lr ~100-300, as in Zhou et al.)
LEARNING_RATE = 0.1
# Layers whose forward pass reads ``self.kernel`` (all prunable by TF-MOT under the key ``<name>/kernel``).
MASKABLE = (keras.layers.Dense, keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D,
            keras.layers.Conv1DTranspose, keras.layers.Conv2DTranspose, keras.layers.Conv3DTranspose)


class Supermask(keras.layers.Wrapper):
    """A frozen Dense/Conv layer whose kernel is multiplied by a mask learned from a score per weight.

    ``mode`` picks the inference mask: ``"threshold"`` (binary, what :func:`to_ticket` exports) or
    ``"expected"`` (sigmoid(score)). Scores start at ``score_init``; ``seed`` is the op seed of
    the Bernoulli samples (one new sample per training call).
    """

    def __init__(self, layer, mode: str = "threshold", score_init: float = SCORE_INIT, seed: int | None = None,
                 **kwargs):
        if mode not in MODES:
            raise TfLthError(f"unknown supermask mode {mode!r}: choose one of {', '.join(MODES)}")
        if type(layer) not in MASKABLE:
            raise TfLthError(f"Supermask wraps {', '.join(c.__name__ for c in MASKABLE)}, not {type(layer).__name__}")
        kwargs.setdefault("name", f"supermask_{layer.name}")
        super().__init__(layer, **kwargs)
        self.mode, self.score_init, self.seed = mode, float(score_init), seed

    def build(self, input_shape):
        if not self.layer.built:
            self.layer.build(input_shape)
        self.layer.trainable = False  # kernel and bias frozen: only the scores learn
        self.score = self.add_weight("score", shape=self.layer.kernel.shape, dtype=self.layer.kernel.dtype,
                                     initializer=keras.initializers.Constant(self.score_init), trainable=True)
        super().build(input_shape)

    def mask(self, training=None):
        """The mask this call multiplies the kernel by (a binary sample with a straight-through
        gradient in training, else the inference mask of :attr:`mode`)."""
        p = tf.sigmoid(self.score)

        def sampled():
            sample = tf.cast(tf.random.uniform(tf.shape(p), seed=self.seed) < p, p.dtype)
            return sample + (p - tf.stop_gradient(p))  # forward: exactly the sample; backward: dp/dscore

        def inference():
            return p if self.mode == "expected" else tf.cast(self.score > 0, p.dtype)

        return keras.backend.in_train_phase(sampled, inference, training=training)

    def call(self, inputs, training=None):
        # The layer's own call on the masked kernel; object.__setattr__ skips Keras' weight tracking,
        # which would otherwise move the kernel to the end of the layer's weights.
        kernel = self.layer.kernel
        object.__setattr__(self.layer, "kernel", kernel * self.mask(training))
        try:
            return self.layer.call(inputs)
        finally:
            object.__setattr__(self.layer, "kernel", kernel)

    def compute_output_shape(self, input_shape):
        return self.layer.compute_output_shape(input_shape)

    def get_config(self):
        return {**super().get_config(), "mode": self.mode, "score_init": self.score_init, "seed": self.seed}


def _fresh(layer):
    return layer.__class__.from_config(layer.get_config())


def learn_supermask(model, *, weights: str = "signed_constant", mode: str = "threshold",
                    score_init: float = SCORE_INIT, seed: int = 0) -> keras.Model:
    """A copy of ``model`` whose Dense/Conv layers are :class:`Supermask` wrappers over frozen weights.

    ``weights``: ``"init"`` keeps the model's current weights (θ0 of a fresh model);
    ``"signed_constant"`` sets each kernel to sign(θ0)·std(θ0) of that kernel. ``model`` is not
    changed. ``mode``, ``score_init``: see :class:`Supermask`; layer ``i`` samples with op seed
    ``seed + i``. Compile the result (e.g. with :func:`optimizer`) and ``fit`` it: only scores train.
    """
    require_graph_model(model)
    if weights not in WEIGHTS:
        raise TfLthError(f"unknown supermask weights {weights!r}: choose one of {', '.join(WEIGHTS)}")
    if not any(type(layer) in MASKABLE for layer in model.layers):
        raise TfLthError(f"{model.name} has no Dense or Conv layer to learn a supermask for")
    made = {}

    def clone(layer):
        copy = _fresh(layer)
        if type(layer) in MASKABLE:
            copy = Supermask(copy, mode=mode, score_init=score_init, seed=seed + len(made))
        made[layer.name] = copy
        return copy

    with model.distribute_strategy.scope():
        out = keras.models.clone_model(model, clone_function=clone)
    for layer in model.layers:
        target = made.get(layer.name)
        if isinstance(target, Supermask):
            target.layer.set_weights(layer.get_weights())
            if weights == "signed_constant":
                target.layer.kernel.assign(signed_constant(target.layer.kernel.numpy()))
        elif target is not None:
            target.set_weights(layer.get_weights())
            target.trainable = False  # everything but the scores is frozen (Supermask froze its layer)
    return out


def optimizer(learning_rate: float = LEARNING_RATE) -> keras.optimizers.Optimizer:
    """The optimizer the defaults were measured with: Adam on the scores."""
    return keras.optimizers.Adam(learning_rate)


def supermask_masks(model) -> dict[str, np.ndarray]:
    """The thresholded mask (sigmoid(score) > 0.5) of every Supermask, keyed like LotteryTicket
    (``"<layer>/kernel"``)."""
    return {f"{layer.layer.name}/kernel": layer.score.numpy() > 0 for layer in model.layers
            if isinstance(layer, Supermask)}


def to_ticket(model, config: TicketConfig | None = None, **options) -> LotteryTicket:
    """A :class:`LotteryTicket` of the original architecture carrying the thresholded supermask over
    the frozen weights (its θ0); export it like any ticket. ``config``/``options`` as for the ticket."""
    require_graph_model(model)
    masks = supermask_masks(model)
    if not masks:
        raise TfLthError(f"{model.name} has no Supermask layer: build it with learn_supermask")
    made = {}

    def unwrap(layer):
        made[layer.name] = _fresh(layer.layer if isinstance(layer, Supermask) else layer)
        return made[layer.name]

    with model.distribute_strategy.scope():
        plain = keras.models.clone_model(model, clone_function=unwrap)
    for layer in model.layers:
        if layer.name in made:
            made[layer.name].set_weights((layer.layer if isinstance(layer, Supermask) else layer).get_weights())
            made[layer.name].trainable = True
    ticket = LotteryTicket(plain, config, **options)
    ticket.set_masks({k: masks.get(k, m) for k, m in ticket.masks.items()})
    return ticket


__all__ = ["Supermask", "untrained_accuracy", "learn_supermask", "optimizer", "supermask_masks", "to_ticket", "MODES", "WEIGHTS",
           "SCORE_INIT", "LEARNING_RATE"]
