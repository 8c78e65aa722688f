"""Scoring a model during and after a round, through public Keras calls only (no Keras imported here):
``evaluate`` that leaves a running epoch's metrics intact, the early-stopping point of a curve
(Frankle & Carbin: the iteration of minimum validation loss and the test accuracy there), and the
supermask at init (Zhou et al.: a ticket's masks over its untrained weights).
"""
from __future__ import annotations

import math

from tf_lth.pruning.rewind import survivor_values


def evaluate(model, data) -> dict:
    """``evaluate`` on a dataset/pipeline or an ``(x, y)`` tuple of arrays (in large batches).

    ``evaluate`` resets the model's metrics; their running training values are put back, so an
    evaluation in the middle of an epoch leaves the epoch's reported loss and accuracy intact.
    """
    running = [v for metric in model.metrics for v in metric.variables]
    saved = [v.numpy() for v in running]
    if isinstance(data, tuple):
        result = model.evaluate(*data, batch_size=1000, verbose=0, return_dict=True)
    else:
        result = model.evaluate(data, verbose=0, return_dict=True)
    for variable, value in zip(running, saved):
        variable.assign(value)
    return result


def accuracy(model, data) -> float:
    return float(evaluate(model, data)["accuracy"])


def early_stop_metrics(curve: list[dict]) -> dict:
    """Iteration of minimum validation loss and the test accuracy there (Frankle & Carbin)."""
    if not curve:
        return {}
    best = min(curve, key=lambda p: (p["val_loss"] if not math.isnan(p["val_loss"]) else math.inf))
    out = {"early_stop_iteration": best["iteration"], "early_stop_val_loss": best["val_loss"]}
    if "test_accuracy" in best:
        out["early_stop_test_accuracy"] = best["test_accuracy"]
    return out


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


__all__ = ["evaluate", "accuracy", "early_stop_metrics", "untrained_accuracy"]
