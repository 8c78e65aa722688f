"""What weights restart from after a round: rewind modes and survivor actions (numpy, no TensorFlow).

A **rewind mode** (:data:`REWINDS`) says where a pruned network's weights go back to and where the
optimizer's step (so its learning-rate schedule) restarts: Frankle & Carbin's ``init`` (θ0, step
0); Frankle et al. 2020's ``iteration:K`` (θk, the weights after K steps of the dense round, taken
once, step K); Renda et al. 2020's ``lr`` (keep the trained weights, step 0) and ``finetune`` (keep
the weights and the step). A **survivors action** (:data:`SURVIVORS`, Zhou et al. 2019) then says
what the kept weights of a pruned kernel become. Adding either is one registered definition here.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, ClassVar

import numpy as np

from tf_lth.errors import TfLthError
from tf_lth.registry import Registry

PRUNED = ("zero", "frozen")  # pruned weights: zero, or frozen at their θ0 value (Zhou et al.'s mask-0 actions)


@dataclass(frozen=True)
class Rewind:
    """A rewind mode. A new one is a subclass with its :attr:`name`, registered with :func:`register`,
    overriding what differs; ``NAME:ARG`` forms parse ``ARG`` in :meth:`from_arg`.

    Attributes:
        iteration: the step of the dense round at which θk is taken (0: no snapshot needed).
        keeps_weights: whether a round starts from the previous round's trained weights.
    """

    name: ClassVar[str] = ""
    form: ClassVar[str] = ""  # how it is written, if not just its name (``iteration:K``)
    keeps_weights: ClassVar[bool] = False
    iteration: int = 0

    @classmethod
    def from_arg(cls, arg: str) -> "Rewind":
        """The mode for the text after ``NAME:`` (none for most modes; ValueError if wrong)."""
        if arg:
            raise ValueError(arg)
        return cls()

    @property
    def needs_snapshot(self) -> bool:
        """Whether θk must be taken during the dense round."""
        return self.iteration > 0

    def optimizer_iteration(self, ended: int) -> int:
        """The step the optimizer restarts from, given the step the previous round ended at."""
        return 0

    def source(self, theta0: list, thetak: list | None, previous: list | None) -> list:
        """The weights a pruned round starts from: θ0, θk or ``previous`` (the last round's final)."""
        return theta0

    def __str__(self) -> str:
        return self.name


REWINDS: Registry[type[Rewind]] = Registry("rewind mode")


def register(cls: type[Rewind]) -> type[Rewind]:
    """Class decorator: make ``cls`` a rewind mode under its :attr:`~Rewind.name`."""
    REWINDS.add(cls.name, cls)
    return cls


@register
class ToInit(Rewind):
    name = "init"


@register
@dataclass(frozen=True)
class ToIteration(Rewind):
    name, form = "iteration", "iteration:K"

    @classmethod
    def from_arg(cls, arg: str) -> Rewind:
        if not arg.isdigit():
            raise ValueError(arg)
        return cls(int(arg)) if int(arg) > 0 else ToInit()  # iteration:0 is θ0

    def optimizer_iteration(self, ended: int) -> int:
        return self.iteration

    def source(self, theta0, thetak, previous):
        return thetak

    def __str__(self) -> str:
        return f"iteration:{self.iteration}"


@register
class LearningRate(Rewind):
    name = "lr"
    keeps_weights = True

    def source(self, theta0, thetak, previous):
        return previous


@register
class FineTune(LearningRate):
    name = "finetune"

    def optimizer_iteration(self, ended: int) -> int:
        return ended


def forms() -> str:
    """The registered modes as written: ``init | iteration:K | lr | finetune``."""
    return " | ".join(cls.form or cls.name for cls in REWINDS.entries.values())


def parse(text: str) -> Rewind:
    """The rewind mode ``text`` names, or a one-line error listing the forms."""
    name, _, arg = str(text).partition(":")
    try:
        return REWINDS.entries[name].from_arg(arg)
    except (KeyError, ValueError):
        raise TfLthError(f"unknown rewind {text!r}: use {forms()} (K >= 0 steps)") from None


# -- survivors ------------------------------------------------------------------------------------
Survivors = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.random.Generator], np.ndarray]
# name -> values(theta0, mask, source, fresh, rng): what the kept weights of one kernel become; ``fresh``
# is a new draw from the layer's initializer, or a function returning one (drawn only if asked for)
SURVIVORS: Registry[Survivors] = Registry("survivors action")


def signed_constant(theta0: np.ndarray) -> np.ndarray:
    """sign(θ0)·σ with σ the std of the layer's θ0 (Zhou et al.'s signed constant)."""
    return np.sign(theta0) * theta0.std()


SURVIVORS.add("original", lambda theta0, mask, source, fresh, rng: source)
SURVIVORS.add("reinit", lambda theta0, mask, source, fresh, rng: fresh() if callable(fresh) else fresh)


@SURVIVORS.register("reshuffle")
def _reshuffle(theta0, mask, source, fresh, rng):
    """θ0 values of the survivors, permuted among the survivors."""
    values = np.zeros_like(theta0)
    values[mask] = rng.permutation(theta0[mask])
    return values


SURVIVORS.add("signed_constant", lambda theta0, mask, source, fresh, rng: signed_constant(theta0))
SURVIVORS.add("random_sign_constant", lambda theta0, mask, source, fresh, rng: (
    rng.choice(np.array([-1.0, 1.0], theta0.dtype), size=theta0.shape) * theta0.std()))


def survivor_values(action: str, theta0: np.ndarray, mask: np.ndarray, source: np.ndarray,
                    fresh, rng: np.random.Generator) -> np.ndarray:
    """Values of a kernel's kept weights under ``action`` (zeros elsewhere).

    ``source`` holds the rewound weights (θ0, θk or θ_final), ``fresh`` a new draw from the
    layer's initializer (or a function that draws it). Constants use σ = std of the layer's θ0 (the initializer's spread).
    """
    values = SURVIVORS.get(action)(theta0, mask, source, fresh, rng)
    return np.where(mask, values, 0).astype(theta0.dtype)
