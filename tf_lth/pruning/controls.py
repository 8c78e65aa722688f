"""Controls: the networks a ticket is compared with in each round (no TensorFlow at import).

A control is a twin of the ticket (:meth:`~tf_lth.ticket.ticket.LotteryTicket.twin`: same architecture,
round, rewind point and optimizer step) given other weights or masks, then trained like the ticket.
Each is one function in :data:`CONTROLS` that sets up the twin and returns the weights its survivors
start from; :func:`make` does the rest.

- ``random_reinit`` (Frankle & Carbin): the ticket's masks, every weight drawn anew from its
  layer's initializer: does the ticket need its initial values?
- ``random_mask``: random masks with the ticket's per-layer sparsity over the ticket's own rewind
  point (θ0, θk or the previous round's weights): does it need its structure? For a structured ticket
  (granularity ``unit`` or ``refill``), random units: as many per channel group as the ticket keeps.
"""
from __future__ import annotations

import zlib
from typing import Callable

import numpy as np

from tf_lth.pruning import selection as masks_lib
from tf_lth.pruning import units
from tf_lth.registry import Registry

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
    alive = {k: ticket.masks[k] for k in keys}
    if ticket.config.granularity == "weight":
        twin.masks = {**ticket.masks, **masks_lib.random_like(alive, rng)}
    else:
        twin.masks = {**ticket.masks, **units.random_units(ticket.structure[1], alive, rng)}
    return ticket.rewind_source()


def make(ticket, kind: str, seed: int | None = None):
    """The ``kind`` control of ``ticket``'s current round, ready to train (seed: the ticket's + 1)."""
    setup = CONTROLS.get(kind)
    seed = ticket.config.seed + 1 if seed is None else seed
    twin = ticket.twin()
    rng = np.random.default_rng([seed, ticket.round, zlib.crc32(kind.encode())])
    twin.rewind_to(setup(ticket, twin, rng))
    return twin


