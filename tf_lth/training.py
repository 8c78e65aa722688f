"""Compiling and training one round of a ticket: what the experiment runner, the scripts and the
benchmarks share, so that all of them train the same way.

:func:`compile_round` gives the ticket's model its optimizer, the one loss (:data:`LOSS`), XLA and
steps per execution; :func:`train_round` runs ``fit`` for one round with the ticket's callback, a
per-epoch checkpoint (:class:`EpochCheckpoint`) it resumes from, and TensorBoard. Each epoch's batch
order depends only on ``(seed, round, epoch)``, so a resumed round equals an uninterrupted one.
"""
from __future__ import annotations

import json
import math
import zlib
from pathlib import Path

import numpy as np

from tf_lth.callbacks import RoundProgress, TicketCallback
from tf_lth.config import OPTIMIZERS, TrainingConfig
from tf_lth.errors import TfLthError
from tf_lth.io import read_npz, write_npz
from tf_lth.keras2 import can_jit_compile, has_gpu, keras
from tf_lth.lottery import LotteryTicket

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)  # every model here ends in logits
MAX_STEPS_PER_EXECUTION = 100  # the automatic choice: more gains nothing measurable


def make_optimizer(training: TrainingConfig):
    """A fresh optimizer of ``training``'s kind and learning rate (resolved: see ExperimentConfig)."""
    cls = getattr(keras.optimizers, OPTIMIZERS.get(training.optimizer or "adam"))
    if cls is keras.optimizers.SGD:
        return cls(training.learning_rate, momentum=training.momentum)
    return cls(training.learning_rate)


def steps_per_epoch(data, training: TrainingConfig) -> int:
    """Batches per epoch of ``data``'s training split (the last one may be short)."""
    return -(-len(data.x_train) // training.batch_size)


def epochs_for(training: TrainingConfig, steps_per_epoch: int) -> int:
    """Epochs per round: ``iterations`` rounded to whole epochs, else ``epochs`` (the model's recipe
    fills it in: :meth:`~tf_lth.config.ExperimentConfig.resolved`)."""
    if training.iterations:
        return max(1, round(training.iterations / steps_per_epoch))
    if not training.epochs:
        raise TfLthError("the training config gives neither epochs nor iterations: resolve it first "
                         "(ExperimentConfig.resolved() takes the model's epochs)")
    return training.epochs


def steps_per_execution(training: TrainingConfig, steps_per_epoch: int, rewind_iteration: int = 0) -> int:
    """``training.steps_per_execution``, or the most (up to :data:`MAX_STEPS_PER_EXECUTION`) that
    divide the epoch, every evaluation point and the θk step: Keras runs callbacks once per call."""
    if training.steps_per_execution:
        return training.steps_per_execution
    marks = [n for n in (training.eval_every, rewind_iteration) if n]
    if not marks:
        return MAX_STEPS_PER_EXECUTION
    common = math.gcd(steps_per_epoch, *marks)
    return max(d for d in range(1, min(common, MAX_STEPS_PER_EXECUTION) + 1) if common % d == 0)


def compile_round(ticket: LotteryTicket, training: TrainingConfig, steps_per_epoch: int) -> None:
    """Compile ``ticket.model`` for a round: fresh optimizer, :data:`LOSS`, accuracy, XLA as
    ``training.jit_compile`` says (``None``: on, except for convolutional models without a GPU,
    where XLA's CPU convolutions are slower and only the optimizer's update is compiled)."""
    optimizer, jit = make_optimizer(training), training.jit_compile
    if jit is None:
        convolutional = any("conv" in type(layer).__name__.lower() for layer in ticket.source.layers)
        jit = not convolutional or has_gpu()
        if not jit:  # Keras compiles the optimizer's update with XLA on GPUs only; on CPUs it pays off too
            optimizer.jit_compile = can_jit_compile()
    ticket.model.compile(optimizer=optimizer, loss=LOSS, metrics=["accuracy"], jit_compile=jit,
                         steps_per_execution=steps_per_execution(training, steps_per_epoch, ticket.rewind.iteration))


class EpochCheckpoint(keras.callbacks.Callback):
    """Saves weights, optimizer state, θk and the round's progress at every epoch end (atomically)."""

    def __init__(self, ticket: LotteryTicket, path: Path, ticket_callback: TicketCallback):
        super().__init__()
        self.ticket, self.path, self.cb = ticket, Path(path), ticket_callback

    def on_epoch_end(self, epoch, logs=None):
        arrays = {f"w{i}": a for i, a in enumerate(self.ticket.get_weights())}
        arrays.update({f"opt{i}": v.numpy() for i, v in enumerate(self.model.optimizer.variables)})
        if self.ticket.thetak is not None:
            arrays.update({f"thetak{i}": a for i, a in enumerate(self.ticket.thetak)})
        for key, mask in (self.cb.candidate or {}).items():
            arrays["candidate|" + key.replace("/", "|")] = mask
        meta = {"epoch": epoch + 1, **self.cb.progress.to_dict()}
        arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
        write_npz(self.path, arrays)


def restore(ticket: LotteryTicket, checkpoint: Path, callback: TicketCallback) -> int:
    """Load an :class:`EpochCheckpoint` into the ticket, its optimizer and ``callback``; returns the
    number of epochs it holds."""
    state = read_npz(checkpoint)
    n = len(ticket.theta0)
    try:
        meta = json.loads(state.pop("meta").tobytes())
        ticket.set_weights([state[f"w{i}"] for i in range(n)])
        opt = ticket.model.optimizer
        opt.build(ticket.model.trainable_variables)
        for i, v in enumerate(opt.variables):
            v.assign(state[f"opt{i}"])
        if "thetak0" in state:
            ticket.thetak = [state[f"thetak{i}"] for i in range(n)]
        candidate = {k.split("|", 1)[1].replace("|", "/"): m for k, m in state.items() if k.startswith("candidate|")}
        callback.resume(RoundProgress.from_dict(meta), candidate or None)
    except (KeyError, ValueError, TypeError) as e:
        raise TfLthError(f"{checkpoint} does not match this experiment ({e}): delete it") from None
    return int(meta["epoch"])


def train_round(ticket: LotteryTicket, data, training: TrainingConfig, *, seed: int = 0, round_: int | None = None,
                val=None, test=None, checkpoint: Path | None = None, tensorboard: Path | None = None,
                verbose: int = 0, may_stop: bool = False) -> dict:
    """Train ``ticket`` (compiled) for one round on ``data`` (a :class:`~tf_lth.data.Dataset`) and
    return the round's metrics (test accuracy, early-stopping iteration, ...; the curve is in
    ``ticket.history``). ``val``/``test``: pipelines of the validation and test splits (made here if
    omitted); ``checkpoint``: the file it saves every epoch to and resumes from; batches are drawn
    from ``(seed, round_, epoch)`` (round_: the ticket's round by default). ``may_stop``: the round may
    end early by ``training``'s early-bird and patience rules (an intermediate round of the ticket)."""
    round_ = ticket.round if round_ is None else round_
    val = data.pipeline("val", 1000) if val is None else val
    test = data.pipeline("test", 1000) if test is None else test
    steps = steps_per_epoch(data, training)
    epochs = epochs_for(training, steps)
    stops = {"early_bird": training.early_bird, "early_bird_patience": training.early_bird_patience,
             "patience": training.patience} if may_stop else {}
    cb = ticket.callback(test_data=test, validation_data=val if training.eval_every else None,
                         eval_every=training.eval_every, **stops)
    first = restore(ticket, checkpoint, cb) if checkpoint is not None and checkpoint.exists() else 0
    if cb.progress.stopped:  # stopped early before the kill: the round is trained
        first = epochs
    callbacks = [cb]
    if checkpoint is not None:
        callbacks.append(EpochCheckpoint(ticket, checkpoint, cb))
    if tensorboard is not None:
        callbacks.append(keras.callbacks.TensorBoard(tensorboard, write_graph=False, profile_batch=0))
    if first < epochs:
        batch_seed = np.random.default_rng([seed, round_, zlib.crc32(b"batches")]).integers(2**31)
        train, steps = data.epochs(training.batch_size, epochs, seed=batch_seed, initial_epoch=first)
        ticket.model.fit(train, epochs=epochs, initial_epoch=first, steps_per_epoch=steps,
                         validation_data=None if training.eval_every else val, callbacks=callbacks, verbose=verbose)
    else:  # killed after the last epoch's checkpoint: the round is trained, record it
        cb.set_model(ticket.model)
        cb.on_train_end()
    entry = next(h for h in ticket.history if h["round"] == ticket.round)
    return {k: v for k, v in entry.items() if k != "curve"}
