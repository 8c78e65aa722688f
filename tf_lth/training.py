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
import time
import zlib
from dataclasses import asdict
from pathlib import Path

import numpy as np

from tf_lth import distribute, recipe
from tf_lth.callbacks import RoundProgress, TicketCallback
from tf_lth.config import OPTIMIZERS, TrainingConfig
from tf_lth.errors import TfLthError
from tf_lth.io import read_npz, write_npz
from tf_lth.keras2 import can_jit_compile, has_gpu, keras, tf
from tf_lth.lottery import LotteryTicket

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)  # every model here ends in logits
MAX_STEPS_PER_EXECUTION = 100  # the automatic choice: more gains nothing measurable


@keras.utils.register_keras_serializable(package="tf_lth")
class RecipeSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """A :class:`tf_lth.recipe.Schedule` as a Keras schedule: the rate is a function of the optimizer's
    step alone, so a round whose step is rewound replays the schedule from there."""

    OPS = recipe.Ops(tf.where, tf.minimum, tf.cos, lambda x: tf.cast(x, tf.float32))

    def __init__(self, schedule: recipe.Schedule):
        self.schedule = schedule

    def __call__(self, step):
        return self.schedule(step, self.OPS)

    def get_config(self):
        return asdict(self.schedule)

    @classmethod
    def from_config(cls, config):  # what a fresh optimizer of the same config is built from
        return cls(recipe.Schedule(**{**config, "milestones": tuple(config["milestones"])}))


def make_optimizer(training: TrainingConfig, steps_per_epoch: int = 1, total: int = 0):
    """A fresh optimizer of ``training``'s kind (resolved: see ExperimentConfig) with its learning-rate
    schedule in steps (``total``: the round's steps) and, if decoupled, its weight decay."""
    cls = getattr(keras.optimizers, OPTIMIZERS.get(training.optimizer or "adam"))
    rate = training.learning_rate
    if (training.schedule or "constant") != "constant" or training.warmup:
        rate = RecipeSchedule(recipe.Schedule.of(training, steps_per_epoch, total))
    kwargs = {"momentum": training.momentum or 0.0} if cls is keras.optimizers.SGD else {}
    if training.weight_decay and training.weight_decay_kind == "decoupled":
        kwargs["weight_decay"] = training.weight_decay
    return cls(rate, **kwargs)


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


def steps_per_epoch(data, training: TrainingConfig) -> int:
    """Batches per epoch of ``data``'s training split (the last one may be short)."""
    return -(-len(data.x_train) // training.batch_size)


def round_steps(training: TrainingConfig, steps_per_epoch: int) -> int:
    """Steps per round: ``iterations`` exactly, else ``epochs`` whole epochs (the model's recipe fills
    it in: :meth:`~tf_lth.config.ExperimentConfig.resolved`)."""
    if training.iterations:
        return recipe.steps(training.iterations, steps_per_epoch)
    if not training.epochs:
        raise TfLthError("the training config gives neither epochs nor iterations: resolve it first "
                         "(ExperimentConfig.resolved() takes the model's epochs)")
    return recipe.steps(training.epochs, 1) * steps_per_epoch


def epochs_for(training: TrainingConfig, steps_per_epoch: int) -> int:
    """Epochs ``fit`` runs per round: the last may stop part-way (``iterations`` exactly)."""
    return -(-round_steps(training, steps_per_epoch) // steps_per_epoch)


def steps_per_execution(training: TrainingConfig, steps_per_epoch: int, rewind_iteration: int = 0) -> int:
    """``training.steps_per_execution``, or the most (up to :data:`MAX_STEPS_PER_EXECUTION`) that
    divide the epoch, every evaluation point and the θk step: Keras runs callbacks once per call."""
    if training.steps_per_execution:
        return training.steps_per_execution
    marks = [n for n in (training.eval_every, rewind_iteration, round_steps(training, steps_per_epoch) % steps_per_epoch) if n]
    if not marks:
        return MAX_STEPS_PER_EXECUTION
    common = math.gcd(steps_per_epoch, *marks)
    return max(d for d in range(1, min(common, MAX_STEPS_PER_EXECUTION) + 1) if common % d == 0)


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


class EpochCheckpoint(keras.callbacks.Callback):
    """Saves weights, optimizer state, θk and the round's progress at every epoch end (atomically)."""

    def __init__(self, ticket: LotteryTicket, path: Path, ticket_callback: TicketCallback):
        super().__init__()
        self.ticket, self.path, self.cb = ticket, Path(path), ticket_callback

    def on_epoch_end(self, epoch, logs=None):
        arrays = {f"w{i}": a for i, a in enumerate(self.ticket.get_weights())}
        arrays.update({f"opt{i}": v.numpy() for i, v in enumerate(distribute.optimizer_variables(self.model.optimizer))})
        if self.ticket.thetak is not None:
            arrays.update({f"thetak{i}": a for i, a in enumerate(self.ticket.thetak)})
        for j, candidate in enumerate(self.cb.candidates):
            arrays.update({f"candidate{j}|" + key.replace("/", "|"): mask for key, mask in candidate.items()})
        meta = {"epoch": epoch + 1, **self.cb.progress.to_dict()}
        arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
        write_npz(self.path, arrays)


class Throughput(keras.callbacks.Callback):
    """On long rounds, a line at an epoch end at most every ``every`` seconds: examples per second
    and the round's ETA (Keras' own progress bar gives the time per epoch, not the round's end)."""

    def __init__(self, name: str, batch_size: int, total_steps: int, log=print, every: float = 60.0):
        super().__init__()
        self.name, self.batch_size, self.total, self.log, self.every = name, batch_size, total_steps, log, every

    def on_train_begin(self, logs=None):
        self.started = self.last = time.perf_counter()
        self.first = int(self.model.optimizer.iterations.numpy())

    def on_epoch_end(self, epoch, logs=None):
        now = time.perf_counter()
        if now - self.last < self.every:
            return
        self.last, done = now, int(self.model.optimizer.iterations.numpy()) - self.first
        rate = done / max(now - self.started, 1e-9)
        left = max(self.total - done, 0) / max(rate, 1e-9)  # an upper bound on a resumed round
        self.log(f"{self.name}: epoch {epoch + 1}, {rate * self.batch_size:,.0f} examples/s, ETA {left / 60:.1f} min")


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
        for i, v in enumerate(distribute.optimizer_variables(opt)):
            v.assign(state[f"opt{i}"])
        if "thetak0" in state:
            ticket.thetak = [state[f"thetak{i}"] for i in range(n)]
        candidates: dict = {}  # "candidate{j}|{key}" -> the j-th oldest candidate's mask of key
        for name, mask in state.items():
            if name.startswith("candidate"):
                j, key = name.split("|", 1)
                candidates.setdefault(int(j[len("candidate"):] or 0), {})[key.replace("|", "/")] = mask
        callback.resume(RoundProgress.from_dict(meta), [candidates[j] for j in sorted(candidates)])
    except (KeyError, ValueError, TypeError) as e:
        raise TfLthError(f"{checkpoint} does not match this experiment ({e}): delete it") from None
    return int(meta["epoch"])


def train_round(ticket: LotteryTicket, data, training: TrainingConfig, *, seed: int = 0, round_: int | None = None,
                val=None, test=None, checkpoint: Path | None = None, tensorboard: Path | None = None,
                verbose: int = 0, may_stop: bool = False, callbacks: tuple = (), log=None) -> dict:
    """Train ``ticket`` (compiled) for one round on ``data`` (a :class:`~tf_lth.data.Dataset`) and
    return the round's metrics (test accuracy, early-stopping iteration, ...; the curve is in
    ``ticket.history``). ``val``/``test``: pipelines of the validation and test splits (made here if
    omitted); ``checkpoint``: the file it saves every epoch to and resumes from; batches are drawn
    from ``(seed, round_, epoch)`` (round_: the ticket's round by default). ``may_stop``: the round may
    end early by ``training``'s early-bird and patience rules (an intermediate round of the ticket);
    ``callbacks``: more Keras callbacks for ``fit``; ``log``: where a long round reports its examples per
    second and ETA (:class:`Throughput`)."""
    round_ = ticket.round if round_ is None else round_
    val = data.pipeline("val", 1000) if val is None else val
    test = data.pipeline("test", 1000) if test is None else test
    steps = steps_per_epoch(data, training)
    epochs, total = epochs_for(training, steps), round_steps(training, steps)
    stops = {"early_bird": training.early_bird, "early_bird_patience": training.early_bird_patience,
             "early_bird_window": training.early_bird_window, "patience": training.patience} if may_stop else {}
    cb = ticket.callback(test_data=test, validation_data=val if training.eval_every else None,
                         eval_every=training.eval_every, max_steps=total if total % steps else None, **stops)
    first = restore(ticket, checkpoint, cb) if checkpoint is not None and checkpoint.exists() else 0
    if cb.progress.stopped:  # stopped early before the kill: the round is trained
        first = epochs
    callbacks = [cb, *callbacks]
    if log is not None:
        callbacks.append(Throughput(f"round {round_}", training.batch_size, total, log))
    if checkpoint is not None:
        callbacks.append(EpochCheckpoint(ticket, checkpoint, cb))
    if tensorboard is not None:
        callbacks.append(keras.callbacks.TensorBoard(tensorboard, write_graph=False, profile_batch=0))
    if first < epochs:
        batch_seed = np.random.default_rng([seed, round_, zlib.crc32(b"batches")]).integers(2**31)
        train, steps = data.epochs(training.batch_size, epochs, seed=batch_seed, initial_epoch=first,
                                   augment=bool(training.augment))
        ticket.model.fit(train, epochs=epochs, initial_epoch=first, steps_per_epoch=steps,
                         validation_data=None if training.eval_every else val, callbacks=callbacks, verbose=verbose)
    else:  # killed after the last epoch's checkpoint: the round is trained, record it
        cb.set_model(ticket.model)
        cb.on_train_end()
    entry = next(h for h in ticket.history if h["round"] == ticket.round)
    return {k: v for k, v in entry.items() if k != "curve"}
