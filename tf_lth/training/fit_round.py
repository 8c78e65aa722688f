"""One round of training as both Keras flavours run it (no Keras imported here): how many steps a round
and an epoch have, how many run per call, the loss, the L2 penalty and the XLA rule, and
:func:`train_round`'s skeleton (``fit`` with the ticket's callback, an epoch checkpoint it resumes from,
throughput lines and TensorBoard), given the flavour's pieces as a :class:`TrainingKit`: the
``KIT`` of :mod:`tf_lth.keras2.training` (tf_keras) or :mod:`tf_lth.keras3.training` (Keras 3), which the
flavour record hands out (:attr:`tf_lth.ticket.flavours.Flavour.training`).

Each epoch's batch order depends only on ``(seed, round, epoch)``, so a resumed round equals an
uninterrupted one. The checkpoint is one npz: ``w<i>`` (the ticket's weights), ``opt<i>`` (the
optimizer's state), ``thetak<i>``, the early-bird candidates and ``meta`` (epoch and progress).
"""
from __future__ import annotations

import json
import math
import time
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path
from types import ModuleType
from typing import Callable

import numpy as np

from tf_lth.config.configs import OPTIMIZERS
from tf_lth.errors import TfLthError
from tf_lth.pruning.stopping import StopRules
from tf_lth.training import recipe
from tf_lth.training.round_logic import RoundProgress
from tf_lth.util.io import read_npz, write_npz

MAX_STEPS_PER_EXECUTION = 100  # the automatic choice: more gains nothing measurable


@dataclass(frozen=True)
class TrainingKit:
    """What a Keras flavour gives the flavour-neutral round (:func:`train_round`) and the runner; each
    flavour's training module defines one as ``KIT``.

    Attributes:
        keras: the flavour's Keras module (callbacks, utils).
        loss: :func:`loss` in that Keras.
        compile_round: ``compile_round(ticket, training, steps_per_epoch)``: optimizer, loss, XLA, steps per call.
        make_optimizer: ``make_optimizer(training, steps_per_epoch, total)``: a fresh optimizer of the recipe.
        restore: ``restore(ticket, checkpoint, callback) -> epochs``: load an epoch checkpoint.
        checkpoint: the Keras callback class that writes it (a :class:`CheckpointLogic`).
        throughput: the Keras callback class of the throughput lines (a :class:`ThroughputLogic`).
        session: ``session(config, folder)``: the run's :class:`~tf_lth.training.cluster.Session` context.
    """

    keras: ModuleType
    loss: object
    compile_round: Callable
    make_optimizer: Callable
    restore: Callable
    checkpoint: type
    throughput: type
    session: Callable


def loss(keras):
    """The loss of every round: sparse categorical cross-entropy on logits (every network here ends in
    logits), in the flavour ``keras``."""
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def with_l2(loss_fn, model, weight_decay: float, sum_of_squares):
    """``loss_fn`` plus ``weight_decay / 2`` times the squared norm of the model's trainable weights (its
    gradient adds ``weight_decay * w``: PyTorch's coupled SGD weight decay, OpenLTH's); ``sum_of_squares``:
    the flavour's op. Pruned weights are zero (or frozen and restored after each step), so the penalty
    never moves them."""
    def loss_with_l2(y_true, y_pred):
        penalty = sum(sum_of_squares(w) for w in model.trainable_weights)
        return loss_fn(y_true, y_pred) + 0.5 * weight_decay * penalty

    return loss_with_l2


def uses_xla(training, layers, gpu: bool, cpu_replicas: bool = False) -> bool:
    """Whether the whole training step is compiled with XLA: ``training.jit_compile`` if set, else on,
    except for convolutional models without a GPU (XLA's CPU convolutions are ~1.6x slower than
    TensorFlow's on Conv-2) and for replicas on CPUs (XLA's CPU device cannot reach another CPU replica's
    variables). ``layers``: the model's layers (their class names tell convolutions)."""
    if training.jit_compile is not None:
        return bool(training.jit_compile)
    convolutional = any("conv" in type(layer).__name__.lower() for layer in layers)
    return (not convolutional or gpu) and not cpu_replicas


def steps_per_epoch(data, training) -> int:
    """Batches per epoch of ``data``'s training split (the last one may be short)."""
    return -(-len(data.x_train) // training.batch_size)


def round_steps(training, steps_per_epoch: int) -> int:
    """Steps per round: ``iterations`` exactly, else ``epochs`` whole epochs (the model's recipe fills
    it in: :meth:`~tf_lth.config.configs.ExperimentConfig.resolved`)."""
    if training.iterations:
        return recipe.steps(training.iterations, steps_per_epoch)
    if not training.epochs:
        raise TfLthError("the training config gives neither epochs nor iterations: resolve it first "
                         "(ExperimentConfig.resolved() takes the model's epochs)")
    return recipe.steps(training.epochs, 1) * steps_per_epoch


def epochs_for(training, steps_per_epoch: int) -> int:
    """Epochs ``fit`` runs per round: the last may stop part-way (``iterations`` exactly)."""
    return -(-round_steps(training, steps_per_epoch) // steps_per_epoch)


def steps_per_execution(training, steps_per_epoch: int, rewind_iteration: int = 0) -> int:
    """``training.steps_per_execution``, or the most (up to :data:`MAX_STEPS_PER_EXECUTION`) that
    divide the epoch, every evaluation point and the θk step: Keras runs callbacks once per call."""
    if training.steps_per_execution:
        return training.steps_per_execution
    marks = [n for n in (training.eval_every, rewind_iteration, round_steps(training, steps_per_epoch) % steps_per_epoch) if n]
    if not marks:
        return MAX_STEPS_PER_EXECUTION
    common = math.gcd(steps_per_epoch, *marks)
    return max(d for d in range(1, min(common, MAX_STEPS_PER_EXECUTION) + 1) if common % d == 0)


class ScheduleLogic:
    """A :class:`tf_lth.training.recipe.Schedule` as a Keras learning-rate schedule: the rate is a function of the
    optimizer's step alone, so a round whose step is rewound replays the schedule from there. Each
    flavour's ``RecipeSchedule`` adds its Keras base class and ``OPS`` (the recipe's ops in its tensors)."""

    OPS: recipe.Ops

    def __init__(self, schedule: recipe.Schedule):
        self.schedule = schedule

    def __call__(self, step):
        return self.schedule(step, self.OPS)

    def get_config(self):
        return asdict(self.schedule)

    @classmethod
    def from_config(cls, config):  # what a fresh optimizer of the same config is built from
        return cls(recipe.Schedule(**{**config, "milestones": tuple(config["milestones"])}))


def make_optimizer(keras, schedule_class, training, steps_per_epoch: int = 1, total: int = 0):
    """A fresh optimizer of ``keras`` (either flavour's module) of ``training``'s kind (resolved) with its
    learning-rate schedule (``schedule_class``) in steps (``total``: the round's steps) and, if
    decoupled, its weight decay; a constant rate stays a float."""
    cls = getattr(keras.optimizers, OPTIMIZERS.get(training.optimizer or "adam"))
    rate = training.learning_rate
    if (training.schedule or "constant") != "constant" or training.warmup:
        rate = schedule_class(recipe.Schedule.of(training, steps_per_epoch, total))
    kwargs = {"momentum": training.momentum or 0.0} if cls is keras.optimizers.SGD else {}
    if training.weight_decay and training.weight_decay_kind == "decoupled":
        kwargs["weight_decay"] = training.weight_decay
    return cls(rate, **kwargs)


class CheckpointLogic:
    """Saves weights, optimizer state, θk and the round's progress at every epoch end (atomically);
    a flavour's ``EpochCheckpoint`` adds its Keras ``Callback`` base and :meth:`optimizer_state`."""

    def __init__(self, ticket, path: Path, ticket_callback):
        super().__init__()
        self.ticket, self.path, self.cb = ticket, Path(path), ticket_callback

    def optimizer_state(self) -> list:
        return list(self.model.optimizer.variables)

    def on_epoch_end(self, epoch, logs=None):
        arrays = {f"w{i}": a for i, a in enumerate(self.ticket.get_weights())}
        arrays.update({f"opt{i}": np.asarray(v.numpy()) for i, v in enumerate(self.optimizer_state())})
        if self.ticket.thetak is not None:
            arrays.update({f"thetak{i}": a for i, a in enumerate(self.ticket.thetak)})
        for j, candidate in enumerate(self.cb.candidates):
            arrays.update({f"candidate{j}|" + key.replace("/", "|"): mask for key, mask in candidate.items()})
        meta = {"epoch": epoch + 1, **self.cb.progress.to_dict()}
        arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
        write_npz(self.path, arrays)


class ThroughputLogic:
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
        self.log(f"{self.name} {epoch + 1}: {rate * self.batch_size:,.0f} examples/s, the round's ETA {left / 60:.1f} min")


def restore(ticket, checkpoint: Path, callback, optimizer_state=lambda opt: list(opt.variables)) -> int:
    """Load an epoch checkpoint into the ticket, its optimizer (``optimizer_state``: its variables in
    the checkpoint's order) and ``callback``; returns the number of epochs it holds."""
    state = read_npz(checkpoint)
    n = len(ticket.theta0)
    try:
        meta = json.loads(state.pop("meta").tobytes())
        ticket.set_weights([state[f"w{i}"] for i in range(n)])
        opt = ticket.model.optimizer
        opt.build(ticket.model.trainable_variables)
        for i, v in enumerate(optimizer_state(opt)):
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


class Metrics(dict):
    """A round's metrics (what results.json records) and, not recorded, the work this call did:
    ``steps_run`` optimizer steps in ``seconds`` (a resumed round trains only what the kill left)."""

    steps_run: int = 0
    seconds: float = 0.0

    @property
    def examples_per_second(self) -> float:
        return self.steps_run * self.batch_size / max(self.seconds, 1e-9)


def train_round(kit: TrainingKit, ticket, data, training, *, seed: int = 0, round_: int | None = None, val=None,
                test=None, checkpoint: Path | None = None, tensorboard: Path | None = None, verbose: int = 0,
                may_stop: bool = False, callbacks: tuple = (), log=None, stop_at: int | None = None) -> "Metrics":
    """Train ``ticket`` (compiled) for one round on ``data`` (a :class:`~tf_lth.data.pipeline.Dataset`) with its
    flavour's ``kit`` and return the round's metrics (test accuracy, early-stopping iteration, ...; the
    curve is in ``ticket.history``). Options: ``val``/``test``, pipelines of the validation and test
    splits (made here if omitted); ``checkpoint``, the file it saves every epoch to and resumes from;
    ``seed`` and ``round_``, batches are drawn from ``(seed, round_, epoch)`` (round_: the ticket's round
    by default); ``may_stop``, the round may end early by ``training``'s stop rules (an intermediate
    round); ``callbacks``, more Keras callbacks; ``log``, where a long round reports its examples per
    second and ETA; ``tensorboard``, ``verbose``; ``stop_at``, end after this many steps of the round (the
    callback's ``max_steps``, the epochs cut to match) while the optimizer and its learning-rate schedule stay
    the whole round's: the first ``stop_at`` steps of the round exactly (the instability scan's trunk,
    :mod:`tf_lth.training.stability`)."""
    round_ = ticket.round if round_ is None else round_
    val = data.pipeline("val", 1000) if val is None else val
    test = data.pipeline("test", 1000) if test is None else test
    steps = steps_per_epoch(data, training)
    epochs, total = epochs_for(training, steps), round_steps(training, steps)
    max_steps = total if total % steps else None
    if stop_at is not None:
        if not 0 < stop_at <= total:
            raise TfLthError(f"stop_at = {stop_at}: give a step between 1 and the round's {total} steps")
        epochs, max_steps = -(-stop_at // steps), (stop_at if stop_at % steps else None)
    stops = StopRules.of(training) if may_stop else StopRules()
    cb = ticket.callback(test_data=test, validation_data=val if training.eval_every else None,
                         eval_every=training.eval_every, max_steps=max_steps, **asdict(stops))
    first = kit.restore(ticket, checkpoint, cb) if checkpoint is not None and checkpoint.exists() else 0
    if cb.progress.stopped:  # stopped early before the kill: the round is trained
        first = epochs
    callbacks = [cb, *callbacks]
    if log is not None:
        callbacks.append(kit.throughput("epoch", training.batch_size, total, log))
    if checkpoint is not None:
        callbacks.append(kit.checkpoint(ticket, checkpoint, cb))
    if tensorboard is not None:
        callbacks.append(kit.keras.callbacks.TensorBoard(tensorboard, write_graph=False, profile_batch=0))
    started, first_step = time.perf_counter(), int(ticket.model.optimizer.iterations.numpy())
    if first < epochs:
        batch_seed = np.random.default_rng([seed, round_, zlib.crc32(b"batches")]).integers(2**31)
        train, steps = data.epochs(training.batch_size, epochs, seed=batch_seed, initial_epoch=first,
                                   augment=bool(training.augment))
        ticket.model.fit(train, epochs=epochs, initial_epoch=first, steps_per_epoch=steps,
                         validation_data=None if training.eval_every else val, callbacks=callbacks, verbose=verbose,
                         shuffle=False)  # the batches are ordered already (ignored for datasets, said by Keras 3)
    else:  # killed after the last epoch's checkpoint: the round is trained, record it
        cb.set_model(ticket.model)
        cb.on_train_end()
    entry = next(h for h in ticket.history if h["round"] == ticket.round)
    metrics = Metrics((k, v) for k, v in entry.items() if k != "curve")
    metrics.steps_run = max(int(ticket.model.optimizer.iterations.numpy()) - first_step, 0)
    metrics.seconds, metrics.batch_size = time.perf_counter() - started, training.batch_size
    return metrics
