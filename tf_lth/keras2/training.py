"""The tf_keras training kit (:data:`KIT`): compiling a round of a ticket and what its training needs that
depends on tf_keras; the round itself is the flavour-neutral :func:`tf_lth.training.fit_round.train_round`.

:func:`compile_round` gives the ticket's model its optimizer, the one loss (:data:`LOSS`), XLA and steps per
execution; the epoch checkpoint (:class:`EpochCheckpoint`) keeps a loss-scale optimizer's scale; a run's
:func:`session` is its ``tf.distribute`` strategy and precision (:mod:`tf_lth.keras2.distribute`). The
experiment runner, the scripts and the benchmarks all train through this kit, so they train the same way.
"""
from __future__ import annotations

import contextlib
from pathlib import Path

from tf_lth.config.configs import TrainingConfig
from tf_lth.keras2 import can_jit_compile, has_gpu, keras, tf
from tf_lth.models import specs as models
from tf_lth.keras2 import distribute
from tf_lth.training import fit_round, recipe
from tf_lth.training.fit_round import (CheckpointLogic, ThroughputLogic, TrainingKit, round_steps,  # noqa: F401
                                       steps_per_epoch, steps_per_execution)

LOSS = fit_round.loss(keras)


@keras.utils.register_keras_serializable(package="tf_lth")
class RecipeSchedule(fit_round.ScheduleLogic, keras.optimizers.schedules.LearningRateSchedule):
    """:class:`tf_lth.training.fit_round.ScheduleLogic` as a tf_keras schedule."""

    OPS = recipe.Ops(tf.where, tf.minimum, tf.cos, lambda x: tf.cast(x, tf.float32))


def make_optimizer(training: TrainingConfig, steps_per_epoch: int = 1, total: int = 0):
    """A fresh tf_keras optimizer for ``training`` (:func:`tf_lth.training.fit_round.make_optimizer`)."""
    return fit_round.make_optimizer(keras, RecipeSchedule, training, steps_per_epoch, total)


def batch_loss(y_true, y_pred):
    """:data:`LOSS`'s value (the batch's mean cross-entropy, the same sum / count) on the logits cast to
    float32, without a ``Loss`` object: under a mixed policy the logits are float16 or bfloat16, too
    coarse for the softmax, and a ``Loss`` object called inside a ``tf.distribute`` replica refuses
    its mean reduction (``fit`` then scales the value by the replicas itself)."""
    losses = keras.losses.sparse_categorical_crossentropy(y_true, tf.cast(y_pred, tf.float32), from_logits=True)
    return tf.math.divide_no_nan(tf.reduce_sum(losses), tf.cast(tf.size(losses), losses.dtype))


def with_l2(loss, model, weight_decay: float):
    """:func:`tf_lth.training.fit_round.with_l2` in TensorFlow ops."""
    return fit_round.with_l2(loss, model, weight_decay, lambda w: tf.reduce_sum(tf.square(w)))


def compile_round(ticket, training: TrainingConfig, steps_per_epoch: int) -> None:
    """Compile ``ticket.model`` for a round: fresh optimizer, :data:`LOSS` (plus the L2 penalty), accuracy, XLA
    by :func:`tf_lth.training.fit_round.uses_xla` (where the whole step is not compiled, the optimizer's
    update still is: Keras does that on GPUs only, and it pays off on CPUs too), steps per execution. A
    mixed-precision model gets the loss of float32 logits (:func:`batch_loss`) and, computing in float16,
    loss scaling."""
    total = round_steps(training, steps_per_epoch)
    optimizer = make_optimizer(training, steps_per_epoch, total)
    cpu_replicas = ticket.model.distribute_strategy.num_replicas_in_sync > 1 and not has_gpu()
    jit = fit_round.uses_xla(training, ticket.source.layers, has_gpu(), cpu_replicas)
    if not jit and not cpu_replicas and training.jit_compile is None:
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


def restore(ticket, checkpoint: Path, callback) -> int:
    """Load an :class:`EpochCheckpoint` into the ticket, its optimizer and ``callback``; returns the
    number of epochs it holds."""
    return fit_round.restore(ticket, checkpoint, callback, distribute.optimizer_variables)


@contextlib.contextmanager
def session(config, folder):
    """The run's :class:`~tf_lth.training.cluster.Session`: strategy, precision, chief (see
    :func:`tf_lth.keras2.distribute.open_session`)."""
    with distribute.open_session(config.strategy, config.devices, config.training,
                              models.spec(config.model).batch_size, folder) as opened:
        yield opened


KIT = TrainingKit(keras=keras, loss=LOSS, compile_round=compile_round, make_optimizer=make_optimizer, restore=restore,
                  checkpoint=EpochCheckpoint, throughput=Throughput, session=session)


def train_round(ticket, data, training: TrainingConfig, **options):
    """:func:`tf_lth.training.fit_round.train_round` with this kit (the options are its)."""
    return fit_round.train_round(KIT, ticket, data, training, **options)


__all__ = ["KIT", "LOSS", "RecipeSchedule", "make_optimizer", "batch_loss", "with_l2", "compile_round",
           "EpochCheckpoint", "Throughput", "restore", "session", "train_round", "steps_per_epoch", "round_steps",
           "steps_per_execution"]
