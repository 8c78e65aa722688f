"""Controls: the networks a ticket is compared with in each round (no TensorFlow at import).

A control is a twin of the ticket (:meth:`~tf_lth.lottery.LotteryTicket.twin`: same architecture,
round, rewind point and optimizer step) given other weights or masks, then trained like the ticket.
Each is one function in :data:`CONTROLS` that sets up the twin and returns the weights its survivors
start from; :func:`make` does the rest.

- ``random_reinit`` (Frankle & Carbin): the ticket's masks, every weight drawn anew from its
  layer's initializer: does the ticket need its initial values?
- ``random_mask``: random masks with the ticket's per-layer sparsity over the ticket's own rewind
  point (θ0, θk or the previous round's weights): does it need its structure?

:func:`untrained_accuracy` is the supermask at init (Zhou et al.): the masks over untrained weights.
"""
from __future__ import annotations

import zlib
from typing import Callable

import numpy as np

from tf_lth import masks as masks_lib
from tf_lth.registry import Registry
from tf_lth.rewind import survivor_values
from tf_lth.rounds import accuracy

# name -> setup(ticket, twin, rng): gives the twin its θ0 and masks, returns the weights it rewinds from
CONTROLS: Registry[Callable] = Registry("control")


@CONTROLS.register("random_reinit")
def random_reinit(ticket, twin, rng: np.random.Generator) -> list:
    twin.theta0 = twin.fresh_values(rng.integers(2**31))
    twin.thetak = None if ticket.thetak is None else twin.theta0
    twin.masks = {k: m.copy() for k, m in ticket.masks.items()}
    return twin.theta0


@CONTROLS.register("random_mask")
def random_mask(ticket, twin, rng: np.random.Generator) -> list:
    twin.theta0 = list(ticket.theta0)
    twin.start_weights = ticket.start_weights
    keys = ticket.pruned_keys()
    twin.masks = {**ticket.masks, **masks_lib.random_like({k: ticket.masks[k] for k in keys}, rng)}
    return ticket.rewind_source()


def make(ticket, kind: str, seed: int | None = None):
    """The ``kind`` control of ``ticket``'s current round, ready to train (seed: the ticket's + 1)."""
    setup = CONTROLS.get(kind)
    seed = ticket.config.seed + 1 if seed is None else seed
    twin = ticket.twin()
    rng = np.random.default_rng([seed, ticket.round, zlib.crc32(kind.encode())])
    twin.rewind_to(setup(ticket, twin, rng))
    return twin


def untrained_accuracy(ticket, data, weights: str = "signed_constant") -> float:
    """Accuracy of ``ticket``'s masks over its untrained weights (Zhou et al.'s supermask at init): over
    θ0 (``"original"``) or over sign(θ0)·σ (``"signed_constant"``); the ticket's weights are restored
    after. ``data``: anything ``evaluate`` takes; the ticket's model must be compiled."""
    trained = ticket.get_weights()
    values = list(ticket.theta0)
    rng = ticket.rng("supermask")
    for k, i in ticket.kernels().items():
        values[i] = survivor_values(weights, ticket.theta0[i], ticket.masks[k], ticket.theta0[i], None, rng)
    try:
        ticket.set_weights(values)
        return accuracy(ticket.model, data)
    finally:
        ticket.set_weights(trained)
