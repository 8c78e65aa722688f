"""The training recipe's arithmetic, without TensorFlow: training lengths and learning-rate schedules.

A **length** is a number of epochs or of iterations, written ``160ep`` or ``63000it`` (as OpenLTH
writes them); it becomes steps only once the steps per epoch are known (:func:`steps`), so one
recipe serves any dataset size. A **schedule** (:data:`SCHEDULES`) gives the learning rate as a
pure function of the optimizer's step, written once against a tiny set of array operations
(:class:`Ops`) so that the same formula runs inside a compiled TensorFlow step (the Keras schedule
in :mod:`tf_lth.keras2.training`) and in numpy (tests, plots). Because the rate depends on the optimizer's
step alone, a round that restarts the step (``lr`` rewinding: step 0; ``iteration:K``: step K)
replays the schedule from there exactly.
"""
from __future__ import annotations

import argparse
import math
import re
from dataclasses import dataclass
from typing import Any, Callable, NamedTuple

import numpy as np

from tf_lth.errors import TfLthError
from tf_lth.registry import Registry

UNITS = {"ep": "epochs", "it": "iterations"}
_LENGTH = re.compile(r"^\s*(\d+)\s*(ep|it)?\s*$")


def length(text, unit: str | None = None):
    """``"160ep"`` / ``"63000it"`` as written (normalised), or a bare whole number as an int (in the
    field's own unit); ``unit`` (``"ep"`` or ``"it"``): the only suffix the field accepts."""
    if isinstance(text, int) and not isinstance(text, bool):
        return text
    match = _LENGTH.match(str(text))
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r} is not a length: write N, Nep (epochs) or Nit (iterations)")
    n, suffix = int(match.group(1)), match.group(2)
    if suffix is None or suffix == unit:
        return n
    if unit is not None:
        raise argparse.ArgumentTypeError(f"{text!r}: this option counts {UNITS[unit]}; use the other option "
                                         f"for {UNITS[suffix]}")
    return f"{n}{suffix}"


def lengths(text) -> tuple:
    """``"80ep,120ep"`` (or a list of such) -> a tuple of lengths, each with its unit."""
    items = text.split(",") if isinstance(text, str) else list(text)
    out = tuple(length(t) for t in items if str(t).strip() and str(t) != "none")
    if any(isinstance(v, int) for v in out):
        raise argparse.ArgumentTypeError(f"{text!r}: give each milestone a unit, e.g. 80ep,120ep or 32000it")
    return out


def steps(value, steps_per_epoch: int) -> int:
    """A length in steps: ``Nep`` is N epochs of ``steps_per_epoch``, ``Nit`` or an int is N steps."""
    if isinstance(value, int):
        return value
    n, unit = int(value[:-2]), value[-2:]
    return n * steps_per_epoch if unit == "ep" else n


class Ops(NamedTuple):
    """The array operations a schedule may use: numpy's (:data:`NUMPY`) or TensorFlow's."""

    where: Callable
    minimum: Callable
    cos: Callable
    to_float: Callable


NUMPY = Ops(np.where, np.minimum, np.cos, lambda x: np.asarray(x, np.float64))

# name -> rate(schedule, step, ops): the learning rate at ``step`` (a float array) before warm-up
SCHEDULES: Registry[Callable[..., Any]] = Registry("learning-rate schedule")
SCHEDULES.add("constant", lambda s, step, ops: s.base + 0.0 * step)


@SCHEDULES.register("step")
def _step_decay(s, step, ops):
    """``base``, times ``gamma`` at each milestone passed (He et al.'s step decay)."""
    rate = s.base + 0.0 * step
    for milestone in s.milestones:
        rate = ops.where(step >= milestone, rate * s.gamma, rate)
    return rate


@SCHEDULES.register("cosine")
def _cosine(s, step, ops):
    """Half a cosine from ``base`` to 0 over ``total`` steps (Loshchilov & Hutter), then 0."""
    return s.base * 0.5 * (1.0 + ops.cos(math.pi * ops.minimum(step, float(s.total)) / max(s.total, 1)))


@dataclass(frozen=True)
class Schedule:
    """One round's schedule in steps: ``kind`` (:data:`SCHEDULES`), ``base`` rate, ``milestones``,
    ``gamma``, linear ``warmup`` from ``base / warmup`` to ``base`` over its first steps, and the
    round's ``total`` steps (cosine's length)."""

    kind: str
    base: float
    milestones: tuple = ()
    gamma: float = 0.1
    warmup: int = 0
    total: int = 0

    def __post_init__(self):
        SCHEDULES.get(self.kind)
        if self.kind == "step" and not self.milestones:
            raise TfLthError("the step schedule needs milestones, e.g. --milestones 80ep,120ep")

    def __call__(self, step, ops: Ops = NUMPY):
        step = ops.to_float(step)
        rate = SCHEDULES.get(self.kind)(self, step, ops)
        if self.warmup:
            rate = ops.where(step < self.warmup, self.base * (step + 1.0) / self.warmup, rate)
        return rate

    @classmethod
    def of(cls, training, steps_per_epoch: int, total: int) -> "Schedule":
        """The schedule a resolved :class:`~tf_lth.config.configs.TrainingConfig` asks for, in steps."""
        return cls(training.schedule or "constant", training.learning_rate,
                   tuple(steps(m, steps_per_epoch) for m in training.milestones or ()),
                   0.1 if training.gamma is None else training.gamma,
                   steps(training.warmup, steps_per_epoch) if training.warmup else 0, total)
