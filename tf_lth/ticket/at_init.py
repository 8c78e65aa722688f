"""A ticket pruned once at θ0 by a pruning-at-initialization method (:mod:`tf_lth.pruning.at_init`), no Keras.

:func:`make` is :meth:`tf_lth.ticket.ticket.LotteryTicket.at_init`; :func:`draw` is the masks of a method
for a ticket's pruned kernels, the gradients a method needs asked of the ticket's flavour (its
``saliency`` module, :attr:`tf_lth.ticket.flavours.Flavour.saliency`) on a plain copy of the model holding
θ0 under the current masks. The runner's ``at_init`` branch draws with it too.

The data a gradient method sees is deterministic: the first ``batches`` batches of ``batch_size`` of the
training data, in order (a tf-lth Dataset's unshuffled ``train`` pipeline, or ``(x, y)`` arrays as given).
"""
from __future__ import annotations

import itertools

import numpy as np

from tf_lth.errors import TfLthError
from tf_lth.pruning import at_init as pai

BATCHES, BATCH_SIZE = 10, 100  # the default batch budget: 1,000 examples


def batches_of(data, batches: int = BATCHES, batch_size: int = BATCH_SIZE) -> list[tuple]:
    """The first ``batches`` ``(x, y)`` batches of ``data``: a tf-lth Dataset (its ``train`` pipeline, as a
    round is fed), ``(x, y)`` arrays, or None (none)."""
    if data is None:
        return []
    if int(batches) < 1 or int(batch_size) < 1:
        raise TfLthError(f"batches={batches}, batch_size={batch_size}: give at least one batch of one example")
    if hasattr(data, "pipeline"):
        return [(np.asarray(x), np.asarray(y)) for x, y in itertools.islice(data.pipeline("train", batch_size), batches)]
    try:
        x, y = data
    except (TypeError, ValueError):
        raise TfLthError(f"data must be (x, y) arrays or a tf_lth Dataset, not {type(data).__name__}") from None
    x, y = np.asarray(x), np.asarray(y)
    if len(x) != len(y) or not len(x):
        raise TfLthError(f"data holds {len(x)} inputs and {len(y)} labels: give as many of each, at least one")
    return [(x[s:s + batch_size], y[s:s + batch_size]) for s in range(0, min(len(x), batches * batch_size), batch_size)]


def draw(ticket, method: str, target, batches=(), scope: str | None = None, iterations: int | None = None,
         invert: bool = False) -> dict[str, np.ndarray]:
    """The masks ``method`` gives ``ticket``'s pruned kernels from θ0 (the ticket's current masks the
    alive weights to start from), keeping ``target`` (a fraction or per-key counts)."""
    method_ = pai.PAI_METHODS.get(method)
    masked, keys = ticket.masked, ticket.pruned_keys()
    theta = {k: ticket.theta0[masked.kernels[k]] for k in keys}
    quantity = None
    if method_.needs != "nothing":
        if method_.needs != "synflow" and not batches:
            raise TfLthError(f"{method} scores weights by the loss' gradient: give data=(x, y) or a tf_lth Dataset")
        saliency = ticket.flavour.saliency
        model = saliency.prepare(masked)  # a plain copy (on JAX the masked model, read statelessly)
        indices = [masked.kernels[k] for k in keys]

        def quantity(masks):  # the network at θ0 with masks applied (SynFlow: every weight |θ0|)
            values = [np.array(v) for v in ticket.theta0]
            for key, i in masked.kernels.items():
                values[i] = np.where(masks.get(key, ticket.masks[key]), values[i], 0).astype(values[i].dtype)
            if method_.needs == "synflow":
                values = [np.abs(v) for v in values]
            found = saliency.quantities(model, indices, values, method_.needs, list(batches), method_.temperature)
            return dict(zip(keys, found))

    alive = {k: ticket.masks[k] for k in keys}
    return pai.prune_at_init(method, theta, target, quantity, scope, iterations, invert,
                             ticket.rng(f"at_init:{method}"), alive)


def make(cls, model, method: str, remaining, data=None, batches: int = BATCHES, batch_size: int = BATCH_SIZE,
         scope: str | None = None, iterations: int | None = None, invert: bool = False, **options):
    """``cls(model, **options)`` pruned once at θ0 by ``method`` to ``remaining`` (a fraction of the pruned
    weights kept, or per-kernel counts) and rewound to θ0, the method recorded in ``pruned_at_init``."""
    method_ = pai.PAI_METHODS.get(method)  # the one-line errors before the model is wrapped
    if scope is not None and scope not in ("layerwise", "global"):
        raise TfLthError(f"scope {scope!r}: pruning at init selects layerwise or global")
    if not isinstance(remaining, dict):
        remaining = pai.check_remaining(remaining)
    ticket = cls(model, **options)
    data_batches = batches_of(data, batches, batch_size)
    masks = draw(ticket, method, remaining, data_batches, scope, iterations, invert)
    ticket.set_masks({**ticket.masks, **masks}, weights=ticket.theta0)
    ticket.rewind_to(ticket.theta0)
    ticket.pruned_at_init = {
        "method": method, "remaining": remaining if not isinstance(remaining, dict) else ticket.weights_remaining,
        "scope": scope or method_.scope, "invert": bool(invert), "batches": len(data_batches),
        "batch_size": int(batch_size) if data_batches else None,
        "iterations": int(iterations or method_.iterations) if method_.iterative else None}
    return ticket


__all__ = ["BATCHES", "BATCH_SIZE", "batches_of", "draw", "make"]
