"""When a round may stop before its last epoch (no TensorFlow): the early-bird rule on the masks and
early stopping on the validation loss.

You et al. (ICLR 2020, "Drawing Early-Bird Tickets") found that the mask magnitude pruning would draw
settles early in training. An intermediate IMP round only has to decide the next mask, so it can stop
once the mask that :meth:`~tf_lth.ticket.ticket.LotteryTicket.draw_masks` gives at successive evaluation
points changes in less than ``eps`` of the weights ``patience`` times in a row; the final ticket
still trains to the end, and so (in the runner, ``full_tail``) do the last rounds before it: they
prune the weights that matter, and stopping them early is what cost accuracy on Fashion-MNIST, not
the early rounds' stops (README). The validation-loss rule is Keras' ``EarlyStopping(patience=...)`` applied
at the callback's evaluation points, which fall between epochs with ``eval_every``, where Keras'
callback (it reads epoch logs) cannot see them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np


@dataclass(frozen=True)
class StopRules:
    """When a round that only decides the next mask may end before its last epoch (none by default):
    ``early_bird``, the largest mask distance (fraction of the alive weights) that counts as settled,
    ``early_bird_patience`` points in a row, each candidate compared with the last ``early_bird_window``
    ones (You et al.'s FIFO of masks; no stop before it is full); ``patience``, evaluation points
    without a lower validation loss (Keras' ``EarlyStopping``, at the round's evaluation points)."""

    early_bird: float | None = None
    early_bird_patience: int = 2
    early_bird_window: int = 5
    patience: int | None = None

    @classmethod
    def of(cls, training) -> "StopRules":
        """The rules of a :class:`~tf_lth.config.TrainingConfig` (its four fields of the same names)."""
        return cls(training.early_bird, training.early_bird_patience, training.early_bird_window, training.patience)

    @property
    def active(self) -> bool:
        """Whether any rule may stop a round."""
        return self.early_bird is not None or bool(self.patience)

def mask_distance(a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray],
                  alive: Mapping[str, np.ndarray] | None = None) -> float:
    """Normalised Hamming distance: the fraction of the weights still ``alive`` before the round (all
    weights of ``a``'s kernels by default) whose kept or pruned state differs between ``a`` and
    ``b``. Normalising by the alive weights makes one ``eps`` mean the same in every round: at 7% of
    the weights left, a distance over all weights would be 14 times smaller for the same churn."""
    total = sum(int(m.sum()) for m in alive.values()) if alive is not None else sum(m.size for m in a.values())
    return float(sum(int(np.count_nonzero(a[k] != b[k])) for k in a) / max(total, 1))


def early_bird_stop(distances: Sequence[float], eps: float, patience: int) -> bool:
    """Whether the last ``patience`` distances between successive candidate masks are all below ``eps``."""
    return len(distances) >= patience and all(d < eps for d in distances[-patience:])


def val_loss_stop(losses: Sequence[float], patience: int) -> bool:
    """Whether the last ``patience`` validation losses are none of them below the best before them."""
    if len(losses) <= patience:
        return False
    return min(losses[-patience:]) >= min(losses[:-patience])
