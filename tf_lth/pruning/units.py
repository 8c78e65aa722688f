"""Structured tickets: rounds that remove whole units (Dense neurons, convolution filters) instead of
single weights (numpy only; the channel groups come from :mod:`tf_lth.pruning.groups`).

A round's *granularity* (:data:`GRANULARITIES`, ``TicketConfig.granularity``) says what it removes:

``weight``  single weights, by the criterion (Frankle & Carbin; tf-lth's default).
``unit``    whole units of each channel group: the group keeps ``round(size * (1 - rate) ** round)`` of
            its units (at least one), those with the highest *unit score* (:data:`UNIT_SCORES`, default
            ``l1``); the group's rate is the smallest of its producers' rates.
``refill``  Chen et al. (ICML 2022, "Coarsening the Granularity"): first the round's unstructured mask
            (criterion, scope and rates as for ``weight``), then, per group, the units holding the most
            surviving weights (score ``refill``, the default) are kept and made dense again, the others
            removed. The number kept is the one whose dense weights come closest to the unstructured
            mask's survivors in the group's layers (``round(budget / weights per unit)``, at least one),
            so the round reaches the requested fraction of the weights within one unit per layer.

Either way a kept unit is dense over its layer's kept inputs, and a removed unit is removed everywhere
its channel lives: its kernel column, its depthwise and BatchNormalization channel and the next layers'
input rows (so nothing reads it, and :func:`tf_lth.export.shrink.shrink_model` can cut it out with the
function unchanged). Layers whose units cannot go (the output layer, ``ignore``d layers, groups touching
a layer tf-lth cannot slice) keep every unit and lose only the input rows of removed channels.
"""
from __future__ import annotations

from typing import Callable, Mapping

import numpy as np

from tf_lth.errors import TfLthError
from tf_lth.pruning import groups as groups_lib
from tf_lth.registry import Registry

Masks = dict[str, np.ndarray]

GRANULARITIES: Registry[str] = Registry("granularity")
for _name, _what in (("weight", "single weights by the criterion"),
                     ("unit", "whole neurons / filters by the unit score"),
                     ("refill", "the unstructured mask refilled into whole units (Chen et al. 2022)")):
    GRANULARITIES.add(_name, _what)
DEFAULT_SCORE = {"unit": "l1", "refill": "refill"}


# -- unit scores: name -> score(group, weights, alive, context) -> one number per channel --------------------
UNIT_SCORES: Registry[Callable] = Registry("unit score")


def _columns(group: groups_lib.Group, values: Mapping[str, np.ndarray], power: float) -> np.ndarray:
    """Sum over the group's producers of ``|w| ** power`` per output unit (pruned entries count zero)."""
    total = np.zeros(group.size)
    for m in group.producers():
        if m.kernel in values:
            w = np.abs(np.asarray(values[m.kernel], np.float64))
            total += (w ** power).reshape(-1, w.shape[-1]).sum(axis=0)
    return total


@UNIT_SCORES.register("l1")
def l1(group, weights, alive, context) -> np.ndarray:
    """L1 norm of the unit's kernel slices (its column in every producer of the group)."""
    return _columns(group, {k: weights[k] * alive[k] for k in alive}, 1.0)


@UNIT_SCORES.register("l2")
def l2(group, weights, alive, context) -> np.ndarray:
    """L2 norm of the unit's kernel slices."""
    return np.sqrt(_columns(group, {k: weights[k] * alive[k] for k in alive}, 2.0))


@UNIT_SCORES.register("bn_gamma")
def bn_gamma(group, weights, alive, context) -> np.ndarray:
    """|γ| of the BatchNormalization layers on the group's channels (network slimming's score), summed;
    a group with no BatchNormalization falls back to ``l1``."""
    gammas = [context["gammas"][m.layer] for m in group.members if m.role == "channel" and m.layer in context["gammas"]]
    if not gammas:
        return l1(group, weights, alive, context)
    return np.sum([np.abs(np.asarray(g, np.float64)) for g in gammas], axis=0)


@UNIT_SCORES.register("refill")
def refill_count(group, weights, alive, context) -> np.ndarray:
    """How many of the unit's weights the round's unstructured mask keeps (Chen et al.'s refill score)."""
    unstructured = context.get("unstructured")
    if unstructured is None:
        raise TfLthError("unit_score='refill' counts an unstructured mask's survivors: use it with "
                         "granularity='refill'")
    return _columns(group, {k: unstructured[k].astype(np.float64) for k in unstructured}, 1.0)


# -- masks from kept channels ---------------------------------------------------------------------------------
def structured(groups: list, kept: Mapping[int, np.ndarray], shapes: Mapping[str, tuple]) -> Masks:
    """The masks of the kernels ``shapes`` names when each group keeps its ``kept`` channels: dense
    except where a removed channel lives."""
    masks = {k: np.ones(shape, bool) for k, shape in shapes.items()}
    for g in groups:
        if g.index in kept:
            masks = groups_lib.remove(g, kept[g.index], masks)
    return masks


def _top(score: np.ndarray, candidates: np.ndarray, n: int) -> np.ndarray:
    """Boolean: the ``n`` candidates with the highest score (ties: the lower index)."""
    index = np.flatnonzero(candidates)
    order = index[np.lexsort((index, -score[index]))]
    out = np.zeros(score.shape, bool)
    out[order[:max(1, min(n, index.size))]] = True
    return out


def _weights_per_unit(group, kept_rows: Mapping[str, np.ndarray], shapes) -> tuple[float, dict]:
    """Weights one unit of ``group`` holds when dense over its producers' kept input rows, in all and per layer."""
    per_layer = {}
    for m in group.producers():
        shape = shapes[m.kernel]
        spatial = int(np.prod(shape[:-2])) if len(shape) > 2 else 1
        per_layer[m.kernel] = spatial * int(kept_rows[m.kernel].sum())
    return float(sum(per_layer.values())), per_layer


def kept_rows(groups: list, kept: Mapping[int, np.ndarray], shapes: Mapping[str, tuple]) -> dict[str, np.ndarray]:
    """Per kernel, which of its input rows (axis -2) the ``kept`` channels leave alive."""
    rows = {k: np.ones(shape[-2] if len(shape) >= 2 else 1, bool) for k, shape in shapes.items()}
    for g in groups:
        if g.index not in kept:
            continue
        gone = np.flatnonzero(~kept[g.index])
        for m in g.members:
            if m.role == "in" and m.kernel in rows and gone.size:
                rows[m.kernel][m.rows[:, gone].ravel()] = False
    return rows


def draw(granularity: str, groups: list, alive: Masks, weights: Mapping[str, np.ndarray],
         rates: Mapping[str, float], rounds: float, score: str | None = None,
         unstructured: Masks | None = None, gammas: Mapping[str, np.ndarray] | None = None) -> Masks:
    """The masks of ``alive``'s kernels after ``rounds`` rounds at ``granularity`` (``unit`` or ``refill``).

    ``weights``: the trained kernels by key; ``rates``: each kernel's rate; ``unstructured``: the round's
    unstructured masks (``refill``); ``gammas``: BatchNormalization γ by layer name (score ``bn_gamma``)."""
    GRANULARITIES.get(granularity)
    scorer = UNIT_SCORES.get(score or DEFAULT_SCORE[granularity])
    if granularity == "refill" and unstructured is None:
        raise TfLthError("granularity='refill' needs the round's unstructured masks")
    shapes = {k: m.shape for k, m in alive.items()}
    context = {"unstructured": unstructured, "gammas": dict(gammas or {})}
    current = groups_lib.kept_channels(groups, alive)
    kept = {i: c.copy() for i, c in current.items()}
    targets = groups_lib.prunable(groups)
    scores = {g.index: scorer(g, weights, alive, context) for g in targets}
    sweeps = 1 if granularity == "unit" else 3  # refill: the budgets depend on the other groups' rows
    for _ in range(sweeps):
        for g in targets:
            if granularity == "unit":
                rate = min(rates[m.kernel] for m in g.producers() if m.kernel in rates)
                n = int(round(g.size * (1 - rate) ** rounds))
            else:
                rows = kept_rows(groups, kept, shapes)
                per_unit, _ = _weights_per_unit(g, rows, shapes)
                budget = sum(int(unstructured[m.kernel].sum()) for m in g.producers() if m.kernel in unstructured)
                n = int(round(budget / per_unit)) if per_unit else g.size
            kept[g.index] = _top(scores[g.index], current[g.index], n)
    return structured(groups, kept, shapes)


def random_units(groups: list, masks: Masks, rng: np.random.Generator) -> Masks:
    """Masks keeping, in each group, as many channels as ``masks`` keeps there, drawn at random (the
    ``random_mask`` control of a structured ticket: same units per layer, other units)."""
    current = groups_lib.kept_channels(groups, masks)
    kept = {}
    for g in groups_lib.prunable(groups):
        n = int(current[g.index].sum())
        kept[g.index] = np.zeros(g.size, bool)
        kept[g.index][rng.choice(g.size, size=n, replace=False)] = True
    return structured(groups, kept, {k: m.shape for k, m in masks.items()})


def units_kept(groups: list, masks: Masks) -> dict[str, list[int]]:
    """Per producer layer of a channel group: ``[kept, total]`` units, a unit being kept while some layer reads it."""
    kept = groups_lib.read_channels(groups, masks)
    return {m.layer: [int(kept[g.index].sum()), g.size] for g in groups for m in g.producers()}


def macs_remaining(graph, groups: list, masks: Masks) -> float | None:
    """Multiply-adds of one example with only the channels read under ``masks``, over the dense network's."""
    dense = sum(groups_lib.macs(graph, groups).values())
    kept = sum(groups_lib.macs(graph, groups, groups_lib.read_channels(groups, masks)).values())
    return kept / dense if dense else None


def check(granularity: str, groups: list, model_name: str) -> None:
    """A one-line error where ``granularity`` has no unit to remove in the model."""
    if granularity == "weight":
        return
    if not groups_lib.prunable(groups):
        reasons = sorted({g.fixed for g in groups if g.fixed})
        raise TfLthError(f"granularity={granularity!r}: {model_name} has no unit tf-lth can remove "
                         f"({'; '.join(reasons[:3]) or 'no prunable layer'}): use granularity='weight'")


__all__ = ["GRANULARITIES", "UNIT_SCORES", "DEFAULT_SCORE", "draw", "structured", "kept_rows",
           "random_units", "units_kept", "macs_remaining", "check"]
