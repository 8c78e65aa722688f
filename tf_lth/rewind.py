"""What weights restart from after a round: rewind points and survivor actions (numpy).

``rewind`` picks the point every weight goes back to (Frankle & Carbin: ``init``; Frankle et al.
2020: ``iteration:k``; Renda et al. 2020: ``lr`` and ``finetune`` keep the trained weights).
``survivors`` then decides what the kept weights of a pruned kernel become (Zhou et al. 2019).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tf_lth.errors import TfLthError

SURVIVORS = ("original", "reinit", "reshuffle", "signed_constant", "random_sign_constant")
PRUNED = ("zero", "frozen")


@dataclass(frozen=True)
class Rewind:
    """A parsed rewind mode: where weights and the learning-rate schedule go back to."""

    mode: str  # "init", "iteration", "lr" or "finetune"
    iteration: int = 0

    @classmethod
    def parse(cls, text: str) -> "Rewind":
        if text in ("init", "lr", "finetune"):
            return cls(text)
        head, _, k = str(text).partition(":")
        if head == "iteration" and k.isdigit():
            return cls("iteration", int(k)) if int(k) > 0 else cls("init")
        raise TfLthError(f"unknown rewind {text!r}: use init, iteration:K (K >= 0 steps), lr or finetune")

    @property
    def keeps_weights(self) -> bool:
        """``lr`` and ``finetune`` continue from the trained weights instead of rewinding them."""
        return self.mode in ("lr", "finetune")

    def optimizer_iteration(self, current: int) -> int:
        """The step the optimizer (and so its learning-rate schedule) restarts from."""
        return {"init": 0, "lr": 0, "iteration": self.iteration, "finetune": current}[self.mode]

    def __str__(self) -> str:
        return f"iteration:{self.iteration}" if self.mode == "iteration" else self.mode


def signed_constant(theta0: np.ndarray) -> np.ndarray:
    """sign(θ0)·σ with σ the std of the layer's θ0 (Zhou et al.'s signed constant)."""
    return np.sign(theta0) * theta0.std()


def survivor_values(action: str, theta0: np.ndarray, mask: np.ndarray, source: np.ndarray,
                    fresh: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Values of a kernel's kept weights under ``action`` (zeros elsewhere).

    ``source`` holds the rewound weights (θ0, θk or θ_final), ``fresh`` a new draw from the
    layer's initializer. Constants use σ = std of the layer's θ0 (the initializer's spread).
    """
    if action == "original":
        values = source
    elif action == "reinit":
        values = fresh
    elif action == "reshuffle":  # θ0 values of the survivors, permuted among the survivors
        values = np.zeros_like(theta0)
        values[mask] = rng.permutation(theta0[mask])
    elif action == "signed_constant":
        values = signed_constant(theta0)
    elif action == "random_sign_constant":
        values = rng.choice(np.array([-1.0, 1.0], theta0.dtype), size=theta0.shape) * theta0.std()
    else:
        raise TfLthError(f"unknown survivors action {action!r}: choose one of {', '.join(SURVIVORS)}")
    return np.where(mask, values, 0).astype(theta0.dtype)
