"""The Keras 3 training kit (:data:`KIT`): :mod:`tf_lth.keras2.training`'s counterpart for ``--keras 3``
(the runner's ``keras: 3``), on the TensorFlow backend (the runner's data are ``tf.data`` pipelines, which
Keras 3 fits directly there).

The same recipe as tf_keras: the optimizer of the config with :mod:`tf_lth.training.recipe`'s schedule as a
Keras 3 :class:`RecipeSchedule` (a constant rate stays a float), the one loss (:data:`LOSS`), L2 or
decoupled weight decay, XLA by the same rule, the same steps per execution (here also dividing the
epoch), and the same epoch checkpoint (a Keras 3 optimizer's state is its ``variables`` list). The round
itself is :func:`tf_lth.training.fit_round.train_round` with this kit. Never imports tf_keras or TF-MOT.
"""
from __future__ import annotations

import contextlib
from pathlib import Path

from tf_lth.config.configs import TrainingConfig
from tf_lth.errors import TfLthError
from tf_lth.keras3 import backend, keras, ops
from tf_lth.models import specs as models
from tf_lth.training import cluster, fit_round, recipe
from tf_lth.training.fit_round import (CheckpointLogic, ThroughputLogic, TrainingKit, round_steps,  # noqa: F401
                                       steps_per_epoch, steps_per_execution)
from tf_lth.util.tensorflow import has_gpu

LOSS = fit_round.loss(keras)


@keras.saving.register_keras_serializable(package="tf_lth")
class RecipeSchedule(fit_round.ScheduleLogic, keras.optimizers.schedules.LearningRateSchedule):
    """:class:`tf_lth.training.fit_round.ScheduleLogic` as a Keras 3 schedule."""

    OPS = recipe.Ops(ops.where, ops.minimum, ops.cos, lambda x: ops.cast(x, "float32"))


def make_optimizer(training: TrainingConfig, steps_per_epoch: int = 1, total: int = 0):
    """A fresh Keras 3 optimizer for ``training`` (:func:`tf_lth.training.fit_round.make_optimizer`)."""
    return fit_round.make_optimizer(keras, RecipeSchedule, training, steps_per_epoch, total)


def with_l2(loss, model, weight_decay: float):
    """:func:`tf_lth.training.fit_round.with_l2` in Keras 3 ops."""
    return fit_round.with_l2(loss, model, weight_decay, lambda w: ops.sum(ops.square(w)))


def compile_round(ticket, training: TrainingConfig, steps_per_epoch: int) -> None:
    """Compile ``ticket.model`` for a round as :func:`tf_lth.keras2.training.compile_round` does: fresh optimizer,
    :data:`LOSS` (plus the L2 penalty), accuracy, XLA (``None``: on, except for convolutional models
    without a GPU: :func:`tf_lth.training.fit_round.uses_xla`) and steps per execution, which here must also
    divide the epoch."""
    total = round_steps(training, steps_per_epoch)
    jit = fit_round.uses_xla(training, ticket.source.layers, has_gpu())
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
    return fit_round.restore(ticket, checkpoint, callback)


@contextlib.contextmanager
def session(config, folder):
    """The run's :class:`~tf_lth.training.cluster.Session` under Keras 3: one device, the global precision
    policy (float32), the learning rate kept or scaled as the config says."""
    if backend() != "tensorflow":
        raise TfLthError(f"the runner's --keras 3 trains on the TensorFlow backend (its data are tf.data "
                         f"pipelines), not {backend()}: set KERAS_BACKEND=tensorflow")
    trained, rule = cluster.learning_rate_rule(config.training, models.spec(config.model).batch_size)
    batch = config.training.batch_size
    record = {"strategy": "default", "devices": [], "workers": 1, "replicas": 1, "global_batch": batch,
              "per_replica_batch": batch, "learning_rate": trained.learning_rate, "learning_rate_rule": rule,
              "precision": keras.config.dtype_policy().name}
    yield cluster.Session(None, True, Path(folder), trained, record)


KIT = TrainingKit(keras=keras, loss=LOSS, compile_round=compile_round, make_optimizer=make_optimizer, restore=restore,
                  checkpoint=EpochCheckpoint, throughput=Throughput, session=session)


def train_round(ticket, data, training: TrainingConfig, **options):
    """:func:`tf_lth.training.fit_round.train_round` with this kit (the options are its)."""
    return fit_round.train_round(KIT, ticket, data, training, **options)


__all__ = ["KIT", "LOSS", "RecipeSchedule", "make_optimizer", "with_l2", "compile_round", "EpochCheckpoint",
           "Throughput", "restore", "session", "train_round"]
