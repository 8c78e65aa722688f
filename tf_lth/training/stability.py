"""Instability analysis (Frankle et al., ICML 2020, "Linear Mode Connectivity and the Lottery Ticket
Hypothesis"), flavour-neutral: no Keras is imported here; a flavour is reached through the ticket's
:attr:`~tf_lth.ticket.ticket.LotteryTicket.flavour` record and Keras' public API on the model.

A network is *stable* at step k when two copies trained from θk with different data orders end in one
linearly connected basin: the test error along the straight line between their endpoints rises by less
than a threshold (the paper's 2%) over the mean of the endpoints' errors (the *error barrier*).

- :func:`interpolate`, :func:`barrier`, :func:`alphas`: the path, numpy only.
- :func:`recompute_batchnorm`: the moving statistics of every BatchNormalization layer recomputed from
  training batches at a point of the path (an interpolated network's averaged statistics describe neither
  endpoint's activations).
- :func:`evaluate_path`: the test error and loss at each α, in a plain compiled copy of the ticket's model.
- :func:`trunk` and :func:`train_copy`: θk (the ticket trained k steps from θ0 with the run's seed) and a copy
  trained from θk as a round rewound to ``iteration:k`` trains.

**The BN rule.** Where the model has BatchNormalization, :func:`evaluate_path` recomputes the moving
statistics at *every* α, the endpoints included, so that all points of the path are scored alike; the
endpoints' errors on the path may then differ a little from the copies' own test accuracies (which are
recorded apart). :func:`interpolate` itself gives exactly the endpoints at α = 0 and 1. A model without
BatchNormalization is evaluated as interpolated (nothing to recompute), and its path errors at α = 0 and 1
are the copies' own.

**The copy-length rule.** A copy trains as a round of the run rewound to ``iteration:k`` does: the round's
whole length T from optimizer step k (so the learning-rate schedule continues from k, and the copy ends at
step k + T). The paper trains each copy T - k steps, to the end of the schedule; here the copies run k
steps longer, as the rewound rounds whose stability the scan predicts do.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from tf_lth.errors import TfLthError
from tf_lth.training import fit_round
from tf_lth.training.evaluation import evaluate

THRESHOLD = 0.02  # the paper's: stable when the error barrier is under 2%


# -- the path (numpy) -------------------------------------------------------------------------------
def alphas(n: int) -> list[float]:
    """``n`` evenly spaced points from 0 to 1, both included (``n >= 2``)."""
    if int(n) < 2:
        raise TfLthError(f"alphas = {n}: give at least 2 points (0 and 1), e.g. 11")
    return [float(a) for a in np.linspace(0.0, 1.0, int(n))]


def interpolate(wa: list, wb: list, alpha: float) -> list[np.ndarray]:
    """``(1 - alpha) * wa + alpha * wb`` per array: exactly ``wa`` at 0 and ``wb`` at 1. Arrays that are not
    floating point (step counters, seed states) are not interpolated: ``wa``'s below 0.5, ``wb``'s from it."""
    if len(wa) != len(wb):
        raise TfLthError(f"the two weight lists differ in length ({len(wa)} and {len(wb)}): same model needed")
    out = []
    for a, b in zip(wa, wb):
        a, b = np.asarray(a), np.asarray(b)
        if a.shape != b.shape:
            raise TfLthError(f"weights of shapes {a.shape} and {b.shape} cannot be interpolated: same model needed")
        if not np.issubdtype(a.dtype, np.floating):
            out.append((a if alpha < 0.5 else b).copy())
        elif alpha == 0:
            out.append(a.copy())
        elif alpha == 1:
            out.append(b.copy())
        else:
            out.append(((1 - alpha) * a + alpha * b).astype(a.dtype))
    return out


def barrier(values) -> float:
    """The barrier of a path of errors (or losses) from one endpoint to the other: the highest value along
    it minus the mean of its two endpoints (Frankle et al.'s instability). 0 for a flat path; it may be
    negative where the middle is better than the endpoints."""
    values = [float(v) for v in values]
    if len(values) < 2:
        raise TfLthError("a path needs at least its two endpoints")
    return max(values) - (values[0] + values[-1]) / 2


# -- BatchNormalization ------------------------------------------------------------------------------
def batchnorm_layers(model) -> list:
    """The BatchNormalization layers of ``model``, nested models' included (by class name: either flavour,
    SyncBatchNormalization too)."""
    found, todo = [], list(getattr(model, "layers", []))
    while todo:
        layer = todo.pop(0)
        if "BatchNormalization" in type(layer).__name__:
            found.append(layer)
        todo += list(getattr(layer, "layers", []) or [])
    return found


def recompute_batchnorm(model, batches) -> int:
    """Recompute the moving mean and variance of every BatchNormalization layer of ``model`` from
    ``batches`` (arrays of inputs, or ``(x, y)`` pairs), as the average over the batches of each batch's
    statistics: the moving statistics are reset, the layer's ``momentum`` set to ``i / (i + 1)`` for batch
    ``i`` (the running average) and ``model(x, training=True)`` called; the momentum is restored after.
    A layer's variance is the batch variance its Keras computes (tf_keras' fused kernel corrects it by
    n / (n - 1), Keras 3 does not). Returns the number of batches used (0 and nothing done for a model
    without BatchNormalization)."""
    layers = batchnorm_layers(model)
    if not layers:
        return 0
    momenta = [layer.momentum for layer in layers]
    used = 0
    try:
        for layer in layers:
            layer.moving_mean.assign(np.zeros(layer.moving_mean.shape, "float32"))
            layer.moving_variance.assign(np.ones(layer.moving_variance.shape, "float32"))
        for i, batch in enumerate(batches):
            x = batch[0] if isinstance(batch, (tuple, list)) else batch
            for layer in layers:
                layer.momentum = i / (i + 1)
            model(np.asarray(x), training=True)
            used += 1
    finally:
        for layer, momentum in zip(layers, momenta):
            layer.momentum = momentum
    if not used:
        raise TfLthError("no training batches to recompute the BatchNormalization statistics from")
    return used


# -- scoring the path -------------------------------------------------------------------------------
def evaluator(ticket, weights):
    """A plain copy of ``ticket``'s model (its flavour's Keras, no masks) holding ``weights``, compiled
    with the rounds' loss and accuracy for scoring."""
    model = ticket.masked.plain_copy(list(weights))
    model.compile(loss=fit_round.loss(ticket.flavour.keras), metrics=["accuracy"])
    return model


def evaluate_path(ticket, wa: list, wb: list, test, points, bn_batches=()) -> dict:
    """Test error and loss at each α of ``points`` on the line from ``wa`` to ``wb`` (weight lists of
    ``ticket``, in :attr:`~tf_lth.ticket.ticket.LotteryTicket.theta0` order), with BatchNormalization
    recomputed from ``bn_batches`` at every point (the module's BN rule); ``test``: anything
    :func:`~tf_lth.training.evaluation.evaluate` takes. Returns ``{"alphas", "errors", "losses",
    "error_barrier", "loss_barrier"}``."""
    model = evaluator(ticket, wa)
    errors, losses = [], []
    for alpha in points:
        values = interpolate(wa, wb, alpha)
        model.set_weights(ticket.masked.plain_copy(values).get_weights())  # the flavour's weight order
        recompute_batchnorm(model, bn_batches)
        scores = evaluate(model, test)
        errors.append(1.0 - float(scores["accuracy"]))
        losses.append(float(scores["loss"]))
    return {"alphas": [float(a) for a in points], "errors": errors, "losses": losses,
            "error_barrier": barrier(errors), "loss_barrier": barrier(losses)}


# -- the copies -------------------------------------------------------------------------------------
def start(ticket, weights: list, k: int, step: int):
    """A twin of ``ticket`` (fresh copy of the architecture, its masks and θ0) holding ``weights``, its
    rewind point ``iteration:k`` (θk = ``weights``; ``init`` for k = 0) and its optimizer to start at
    ``step``, as :mod:`tf_lth.pruning.controls` and the branches set up a rewound round. Not compiled."""
    twin = ticket.twin()
    twin.config = replace(twin.config, rewind=f"iteration:{k}" if k else "init")
    twin.rewind = twin.config.rewind_mode
    twin.theta0 = list(ticket.theta0)
    twin.set_masks({key: m.copy() for key, m in ticket.masks.items()}, weights=list(weights))
    twin.thetak = list(weights) if k else None
    twin.steps, twin.pending_step = {twin.round: [step, None]}, step
    twin.holds = "rewound"
    return twin


def trunk(kit, ticket, data, training, k: int, *, seed: int, val=None, test=None,
          checkpoint: Path | None = None, verbose: int = 0) -> list[np.ndarray]:
    """θk: ``ticket``'s masks over its θ0 trained ``k`` optimizer steps with the run's ``seed`` (the data
    order of the run's own round, so the θk a run rewinding to ``iteration:k`` takes), the optimizer and
    its schedule those of the whole round (:func:`~tf_lth.training.fit_round.train_round`'s ``stop_at``).
    k = 0: θ0 itself, nothing trained."""
    if k == 0:
        return start(ticket, ticket.theta0, 0, 0).get_weights()
    twin = start(ticket, ticket.theta0, k, 0)
    twin.thetak = None  # taken at step k by the round's callback (round 0), else read after the stop
    kit.compile_round(twin, training, fit_round.steps_per_epoch(data, training))
    fit_round.train_round(kit, twin, data, training, seed=seed, round_=ticket.round, val=val, test=test,
                          checkpoint=checkpoint, verbose=verbose, stop_at=k)
    step = int(twin.model.optimizer.iterations.numpy())
    if step != k:
        raise TfLthError(f"the trunk stopped at step {step}, not {k}: choose a rewind point that "
                         "steps_per_execution divides")
    return twin.get_weights()


def train_copy(kit, ticket, thetak: list, data, training, k: int, *, seed: int, val=None, test=None,
               checkpoint: Path | None = None, verbose: int = 0) -> tuple[list[np.ndarray], dict]:
    """One copy: ``ticket``'s masks over ``thetak``, trained as a round rewound to ``iteration:k`` trains
    (the module's copy-length rule) with the data order of ``seed``; resumes from ``checkpoint``. Returns
    its final weights and its round's metrics (test accuracy, ...)."""
    kit.keras.utils.set_random_seed(seed)  # dropout and the like: a copy depends on its seed alone
    twin = start(ticket, thetak, k, k)
    kit.compile_round(twin, training, fit_round.steps_per_epoch(data, training))
    metrics = fit_round.train_round(kit, twin, data, training, seed=seed, round_=ticket.round, val=val, test=test,
                                    checkpoint=checkpoint, verbose=verbose)
    return twin.get_weights(), dict(metrics)


__all__ = ["THRESHOLD", "alphas", "interpolate", "barrier", "batchnorm_layers", "recompute_batchnorm", "evaluator",
           "evaluate_path", "start", "trunk", "train_copy"]
