"""Compiling and training one round of a Keras 3 ticket: :mod:`tf_lth.training`'s counterpart for
``--keras 3`` (the runner's ``keras: 3``), on the TensorFlow backend (the runner's data are
``tf.data`` pipelines, which Keras 3 fits directly there).

The same recipe as tf_keras: the optimizer of the config with :mod:`tf_lth.recipe`'s schedule as a
Keras 3 :class:`RecipeSchedule` (a constant rate stays a float), the one loss (:data:`LOSS`), L2 or
decoupled weight decay, XLA as ``jit_compile`` says, the same steps per execution, and the same
epoch checkpoint (:class:`EpochCheckpoint`; a Keras 3 optimizer's state is its ``variables`` list).
The round itself is :func:`tf_lth.plan.train_round` with this module's pieces.
"""
from __future__ import annotations

import contextlib
import functools
import sys
from pathlib import Path

from tf_lth import distribute, models, plan, recipe
from tf_lth.config import TrainingConfig
from tf_lth.errors import TfLthError
from tf_lth.keras3 import backend, keras, ops
from tf_lth.plan import CheckpointLogic, ThroughputLogic, round_steps, steps_per_epoch, steps_per_execution  # noqa: F401

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)  # every model here ends in logits


@keras.saving.register_keras_serializable(package="tf_lth")
class RecipeSchedule(plan.ScheduleLogic, keras.optimizers.schedules.LearningRateSchedule):
    """:class:`tf_lth.plan.ScheduleLogic` as a Keras 3 schedule."""

    OPS = recipe.Ops(ops.where, ops.minimum, ops.cos, lambda x: ops.cast(x, "float32"))


def make_optimizer(training: TrainingConfig, steps_per_epoch: int = 1, total: int = 0):
    """A fresh Keras 3 optimizer for ``training`` (:func:`tf_lth.plan.make_optimizer`)."""
    return plan.make_optimizer(keras, RecipeSchedule, training, steps_per_epoch, total)


def with_l2(loss, model, weight_decay: float):
    """``loss`` plus ``weight_decay / 2`` times the squared norm of the model's trainable weights
    (PyTorch's coupled SGD weight decay; pruned raw entries are zero, so the penalty never moves them)."""
    def loss_with_l2(y_true, y_pred):
        penalty = sum(ops.sum(ops.square(w)) for w in model.trainable_weights)
        return loss(y_true, y_pred) + 0.5 * weight_decay * penalty

    return loss_with_l2


@functools.cache
def has_gpu() -> bool:
    """Whether the TensorFlow backend sees a GPU."""
    import tensorflow as tf  # the backend's own: loaded by Keras 3 already

    return bool(tf.config.list_physical_devices("GPU"))


def compile_round(ticket, training: TrainingConfig, steps_per_epoch: int) -> None:
    """Compile ``ticket.model`` for a round as :func:`tf_lth.training.compile_round` does: fresh optimizer,
    :data:`LOSS` (plus the L2 penalty), accuracy, XLA (``None``: on, except for convolutional models
    without a GPU) and steps per execution, which here must also divide the epoch."""
    total = round_steps(training, steps_per_epoch)
    jit = training.jit_compile
    if jit is None:
        convolutional = any("conv" in type(layer).__name__.lower() for layer in ticket.source.layers)
        jit = not convolutional or has_gpu()
    loss = LOSS
    if training.weight_decay and training.weight_decay_kind == "l2":
        loss = with_l2(LOSS, ticket.model, training.weight_decay)
    every = steps_per_execution(training, steps_per_epoch, ticket.rewind.iteration)
    if steps_per_epoch % every:  # a Keras 3 call runs on into the next epoch's batches (tf_keras stops at the end)
        if training.steps_per_execution:
            raise TfLthError(f"steps_per_execution = {every} must divide the {steps_per_epoch} steps of an epoch "
                             "under --keras 3 (its calls run on across an epoch's end)")
        # automatic, no marks: the epoch's smallest divisor >= the usual choice (917 steps: 131, not 7)
        every = next(d for d in range(min(every, steps_per_epoch), steps_per_epoch + 1) if steps_per_epoch % d == 0)
    ticket.model.compile(optimizer=make_optimizer(training, steps_per_epoch, total), loss=loss, metrics=["accuracy"],
                         jit_compile=bool(jit), steps_per_execution=every)


class EpochCheckpoint(CheckpointLogic, keras.callbacks.Callback):
    __doc__ = CheckpointLogic.__doc__


class Throughput(ThroughputLogic, keras.callbacks.Callback):
    __doc__ = ThroughputLogic.__doc__


def restore(ticket, checkpoint: Path, callback) -> int:
    """Load an :class:`EpochCheckpoint` into the ticket, its optimizer and ``callback``; returns the
    number of epochs it holds."""
    return plan.restore(ticket, checkpoint, callback)


def train_round(ticket, data, training: TrainingConfig, **options) -> dict:
    """:func:`tf_lth.training.train_round` for a Keras 3 ticket (the same options)."""
    return plan.train_round(sys.modules[__name__], ticket, data, training, **options)


@contextlib.contextmanager
def session(config, folder):
    """The run's :class:`~tf_lth.distribute.Session` under Keras 3: one device, the global precision
    policy (float32), the learning rate kept or scaled as the config says."""
    if backend() != "tensorflow":
        raise TfLthError(f"the runner's --keras 3 trains on the TensorFlow backend (its data are tf.data "
                         f"pipelines), not {backend()}: set KERAS_BACKEND=tensorflow")
    trained, rule = distribute.learning_rate_rule(config.training, models.spec(config.model).batch_size)
    batch = config.training.batch_size
    record = {"strategy": "default", "devices": [], "workers": 1, "replicas": 1, "global_batch": batch,
              "per_replica_batch": batch, "learning_rate": trained.learning_rate, "learning_rate_rule": rule,
              "precision": keras.config.dtype_policy().name}
    yield distribute.Session(None, True, Path(folder), trained, record)
