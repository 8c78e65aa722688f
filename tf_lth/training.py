"""Compiling and training one round of a ticket: what the experiment runner, the scripts and the
benchmarks share, so that all of them train the same way.

:func:`compile_round` gives the ticket's model its optimizer, the one loss (:data:`LOSS`), XLA and
steps per execution; :func:`train_round` runs ``fit`` for one round with the ticket's callback, a
per-epoch checkpoint (:class:`EpochCheckpoint`) it resumes from, and TensorBoard. Each epoch's batch
order depends only on ``(seed, round, epoch)``, so a resumed round equals an uninterrupted one.
"""
from __future__ import annotations

import contextlib
import sys
from pathlib import Path

from tf_lth import distribute, models, plan, recipe
from tf_lth.callbacks import TicketCallback
from tf_lth.config import TrainingConfig
from tf_lth.keras2 import can_jit_compile, has_gpu, keras, tf
from tf_lth.lottery import LotteryTicket
from tf_lth.plan import (MAX_STEPS_PER_EXECUTION, CheckpointLogic, ThroughputLogic, epochs_for,  # noqa: F401
                         round_steps, steps_per_epoch, steps_per_execution)

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)  # every model here ends in logits


@keras.utils.register_keras_serializable(package="tf_lth")
class RecipeSchedule(plan.ScheduleLogic, keras.optimizers.schedules.LearningRateSchedule):
    """:class:`tf_lth.plan.ScheduleLogic` as a tf_keras schedule."""

    OPS = recipe.Ops(tf.where, tf.minimum, tf.cos, lambda x: tf.cast(x, tf.float32))


def make_optimizer(training: TrainingConfig, steps_per_epoch: int = 1, total: int = 0):
    """A fresh tf_keras optimizer for ``training`` (:func:`tf_lth.plan.make_optimizer`)."""
    return plan.make_optimizer(keras, RecipeSchedule, training, steps_per_epoch, total)


def batch_loss(y_true, y_pred):
    """:data:`LOSS`'s value (the batch's mean cross-entropy, the same sum / count) on the logits cast to
    float32, without a ``Loss`` object: under a mixed policy the logits are float16 or bfloat16, too
    coarse for the softmax, and a ``Loss`` object called inside a ``tf.distribute`` replica refuses
    its mean reduction (``fit`` then scales the value by the replicas itself)."""
    losses = keras.losses.sparse_categorical_crossentropy(y_true, tf.cast(y_pred, tf.float32), from_logits=True)
    return tf.math.divide_no_nan(tf.reduce_sum(losses), tf.cast(tf.size(losses), losses.dtype))


def with_l2(loss, model, weight_decay: float):
    """``loss`` plus ``weight_decay / 2`` times the squared norm of the model's trainable weights: its
    gradient adds ``weight_decay * w``, PyTorch's (coupled) SGD weight decay. Pruned weights are zero
    (or frozen and restored after each step), so the penalty never moves them."""
    def loss_with_l2(y_true, y_pred):
        penalty = tf.add_n([tf.reduce_sum(tf.square(w)) for w in model.trainable_weights])
        return loss(y_true, y_pred) + 0.5 * weight_decay * penalty

    return loss_with_l2


def compile_round(ticket: LotteryTicket, training: TrainingConfig, steps_per_epoch: int) -> None:
    """Compile ``ticket.model`` for a round: fresh optimizer, :data:`LOSS`, accuracy, XLA as
    ``training.jit_compile`` says (``None``: on, except for convolutional models without a GPU,
    where XLA's CPU convolutions are slower and only the optimizer's update is compiled, and for
    replicas on CPUs: none). A mixed-precision model gets the loss of float32 logits
    (:func:`batch_loss`) and, computing in float16, loss scaling."""
    total = round_steps(training, steps_per_epoch)
    optimizer, jit = make_optimizer(training, steps_per_epoch, total), training.jit_compile
    if jit is None:
        convolutional = any("conv" in type(layer).__name__.lower() for layer in ticket.source.layers)
        # replicas on CPUs: XLA's CPU device cannot reach another CPU replica's variables
        cpu_replicas = ticket.model.distribute_strategy.num_replicas_in_sync > 1 and not has_gpu()
        jit = (not convolutional or has_gpu()) and not cpu_replicas
        if not jit and not cpu_replicas:  # Keras compiles the optimizer's update with XLA on GPUs only; on CPUs it pays off too
            optimizer.jit_compile = can_jit_compile()
    if any(getattr(layer, "compute_dtype", None) == "float16" for layer in ticket.model.submodules):
        optimizer = keras.mixed_precision.LossScaleOptimizer(optimizer)  # float16 gradients underflow unscaled
    loss = LOSS if ticket.model.outputs[0].dtype == tf.float32 else batch_loss  # mixed precision: float32 loss
    if training.weight_decay and training.weight_decay_kind == "l2":
        loss = with_l2(batch_loss, ticket.model, training.weight_decay)
    ticket.model.compile(optimizer=optimizer, loss=loss, metrics=["accuracy"], jit_compile=jit,
                         steps_per_execution=steps_per_execution(training, steps_per_epoch, ticket.rewind.iteration))


class EpochCheckpoint(CheckpointLogic, keras.callbacks.Callback):
    """Saves weights, optimizer state (a loss-scale optimizer's scale too), θk and the round's progress
    at every epoch end (atomically)."""

    def optimizer_state(self) -> list:
        return distribute.optimizer_variables(self.model.optimizer)


class Throughput(ThroughputLogic, keras.callbacks.Callback):
    __doc__ = ThroughputLogic.__doc__


def restore(ticket: LotteryTicket, checkpoint: Path, callback: TicketCallback) -> int:
    """Load an :class:`EpochCheckpoint` into the ticket, its optimizer and ``callback``; returns the
    number of epochs it holds."""
    return plan.restore(ticket, checkpoint, callback, distribute.optimizer_variables)


def train_round(ticket: LotteryTicket, data, training: TrainingConfig, **options) -> dict:
    """Train ``ticket`` (compiled) for one round on ``data`` (a :class:`~tf_lth.data.Dataset`) and
    return the round's metrics (test accuracy, early-stopping iteration, ...; the curve is in
    ``ticket.history``). Options: ``val``/``test``, pipelines of the validation and test splits (made
    here if omitted); ``checkpoint``, the file it saves every epoch to and resumes from; ``seed`` and
    ``round_``, batches are drawn from ``(seed, round_, epoch)`` (round_: the ticket's round by
    default); ``may_stop``, the round may end early by ``training``'s early-bird and patience rules (an
    intermediate round of the ticket); ``callbacks``, more Keras callbacks for ``fit``; ``log``, where a
    long round reports its examples per second and ETA (:class:`Throughput`); ``tensorboard``, ``verbose``.
    The skeleton, shared with Keras 3: :func:`tf_lth.plan.train_round`."""
    return plan.train_round(sys.modules[__name__], ticket, data, training, **options)


@contextlib.contextmanager
def session(config, folder):
    """The run's :class:`~tf_lth.distribute.Session`: strategy, precision, chief (see
    :func:`tf_lth.distribute.open_session`)."""
    with distribute.open_session(config.strategy, config.devices, config.training,
                                 models.spec(config.model).batch_size, folder) as opened:
        yield opened
