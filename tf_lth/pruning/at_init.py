"""Pruning at initialization (PaI): one-shot masks drawn at θ0 from a score, before any training (numpy).

Frankle, Dziugaite, Roy & Carbin (ICLR 2021, "Pruning Neural Networks at Initialization: Why are We
Missing the Mark?") compare these methods with IMP: above random pruning, below IMP with rewinding, and,
unlike IMP tickets, as good after their masks are shuffled within each layer or their weights redrawn.
Each method is one :class:`PaiMethod` in :data:`PAI_METHODS`: what it needs from the network (the
flavour computes that, :mod:`tf_lth.ticket.at_init`), its default scope, whether it prunes in
iterations, and its score (higher is kept):

=================  ==================  =========  =========================================================
method             needs               scope      kept score
=================  ==================  =========  =========================================================
``magnitude_init`` nothing             global     ``|θ0|``
``random``         nothing             layerwise  uniform draws
``snip``           ``gradient``        global     ``|g ⊙ θ|``, g the loss gradient over the batch budget
                                                  (Lee et al. 2019)
``grasp``          ``hessian_gradient`` global    ``θ ⊙ Hg``: Wang et al. (2020) score ``S = −θ ⊙ Hg`` and
                                                  remove the HIGHEST S (those whose removal reduces the
                                                  gradient norm least), i.e. keep the highest ``θ ⊙ Hg``;
                                                  the loss on the logits divided by 200, as their code does
``synflow``        ``synflow``         global     ``|θ ⊙ ∂R/∂θ|``, R the summed output of the network with
                                                  every weight replaced by ``|θ|`` (masked) on an input of
                                                  ones; 100 iterations, keeping ``density ** (i / n)`` after
                                                  iteration i (Tanaka et al. 2020)
=================  ==================  =========  =========================================================

Selection is :mod:`tf_lth.pruning.selection`'s top-k (``select_layerwise`` / ``select_global``) among
the weights still alive, so a request is met exactly: a fraction of the weights kept (``remaining``)
or per-kernel counts (an IMP round's, so that the PaI mask has that round's per-layer density under
``layerwise``, its total under ``global``). ``invert`` keeps the lowest-scored instead, at the same
counts.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping

import numpy as np

from tf_lth.errors import TfLthError
from tf_lth.pruning import selection
from tf_lth.registry import Registry

Masks = dict[str, np.ndarray]
NEEDS = ("nothing", "gradient", "hessian_gradient", "synflow")  # what a method asks the flavour for
SYNFLOW_ITERATIONS = 100  # Tanaka et al.'s default
GRASP_TEMPERATURE = 200.0  # Wang et al.'s code (and Tanaka et al.'s) divide the logits by 200 for GraSP


@dataclass(frozen=True)
class PaiMethod:
    """A pruning-at-initialization method: ``score(theta, quantity, rng)`` -> kept score per key (higher is
    kept), ``needs`` (one of :data:`NEEDS`: what ``quantity`` holds), its default ``scope`` and whether it
    prunes in ``iterations`` (the quantity recomputed on the masked network each time)."""

    name: str
    needs: str
    scope: str
    score: Callable
    iterative: bool = False
    iterations: int = 1
    temperature: float = 1.0  # the logits are divided by it in the loss the gradients are of

    def __post_init__(self):
        if self.needs not in NEEDS:
            raise TfLthError(f"{self.name} needs {self.needs!r}: use one of {', '.join(NEEDS)}")
        selection.SCOPES.get(self.scope)


PAI_METHODS: Registry[PaiMethod] = Registry("pruning-at-init method")
for _method in (
    PaiMethod("magnitude_init", "nothing", "global", lambda theta, q, rng: np.abs(theta)),
    PaiMethod("random", "nothing", "layerwise", lambda theta, q, rng: rng.random(np.shape(theta))),
    PaiMethod("snip", "gradient", "global", lambda theta, g, rng: np.abs(g * theta)),
    PaiMethod("grasp", "hessian_gradient", "global", lambda theta, hg, rng: theta * hg, temperature=GRASP_TEMPERATURE),
    PaiMethod("synflow", "synflow", "global", lambda theta, dr, rng: np.abs(theta * dr), True, SYNFLOW_ITERATIONS),
):
    PAI_METHODS.add(_method.name, _method)


def check_remaining(remaining) -> float:
    """``remaining`` as a float in (0, 1], else the one-line error."""
    try:
        value = float(remaining)
    except (TypeError, ValueError):
        raise TfLthError(f"remaining {remaining!r}: give the fraction of weights kept, in (0, 1]") from None
    if not 0 < value <= 1:
        raise TfLthError(f"remaining {remaining!r} is outside (0, 1]: give the fraction of weights kept, e.g. 0.05")
    return value


def target_counts(alive: Masks, target, scope: str) -> dict[str, int] | int:
    """Weights to keep: per key under ``layerwise``, one total under ``global``. ``target``: a fraction of
    the weights kept, or per-key counts (summed under ``global``)."""
    if isinstance(target, Mapping):
        missing = sorted(set(alive) - set(target))
        if missing:
            raise TfLthError(f"keep counts miss kernel(s) {', '.join(missing)}")
        bad = [k for k in alive if not 0 <= int(target[k]) <= alive[k].size]
        if bad:
            raise TfLthError(f"keep counts of {', '.join(bad)} are outside 0..size")
        counts = {k: int(target[k]) for k in alive}
    else:
        fraction = check_remaining(target)
        counts = {k: int(round(m.size * fraction)) for k, m in alive.items()}
        if scope == "global":
            return int(round(sum(m.size for m in alive.values()) * fraction))
    return sum(counts.values()) if scope == "global" else counts


def _step_counts(alive: Masks, final, scope: str, i: int, n: int):
    """Counts after iteration ``i`` of ``n`` on the exponential schedule: ``size * density ** (i / n)``,
    the last iteration exactly ``final``."""
    if i == n:
        return final
    if scope == "global":
        total = sum(m.size for m in alive.values())
        return int(round(total * (final / total) ** (i / n)))
    return {k: int(round(m.size * (final[k] / m.size) ** (i / n))) for k, m in alive.items()}


def select(scores: Mapping[str, np.ndarray], alive: Masks, counts, scope: str, invert: bool = False) -> Masks:
    """The ``counts`` highest-scoring (``invert``: lowest-scoring) alive weights, per key or over all keys."""
    if invert:
        scores = {k: -np.asarray(s, np.float64) for k, s in scores.items()}
    if scope == "global":
        return selection.select_global(scores, alive, counts)
    if scope == "layerwise":
        return selection.select_layerwise(scores, alive, counts)
    raise TfLthError(f"pruning at init selects layerwise or global, not {scope!r}")


def prune_at_init(method: str, theta: Mapping[str, np.ndarray], target, quantity: Callable | None = None,
                  scope: str | None = None, iterations: int | None = None, invert: bool = False,
                  rng: np.random.Generator | None = None, alive: Masks | None = None) -> Masks:
    """The masks of ``method`` over the kernels ``theta`` (θ0 by key), keeping ``target`` (a fraction, or
    per-key counts). ``quantity(masks)``: what the method ``needs`` from the network with ``masks`` applied,
    by key (None for a method needing nothing); ``scope``: the method's default if None; ``iterations``:
    for an iterative method (SynFlow), how many (default 100); ``alive``: the masks to start from (all
    ones by default)."""
    pai = PAI_METHODS.get(method)
    scope = scope or pai.scope
    if scope not in ("layerwise", "global"):
        raise TfLthError(f"pruning at init selects layerwise or global, not {scope!r}")
    if pai.needs != "nothing" and quantity is None:
        raise TfLthError(f"{method} needs the network's {pai.needs.replace('_', '-')}: give quantity (or use "
                         "LotteryTicket.at_init, which asks the model's flavour)")
    n = int(iterations or pai.iterations) if pai.iterative else 1
    if n < 1:
        raise TfLthError(f"iterations {iterations}: give at least 1")
    rng = rng or np.random.default_rng(0)
    masks = {k: np.ones(np.shape(v), bool) for k, v in theta.items()} if alive is None else dict(alive)
    final = target_counts(masks, target, scope)
    for i in range(1, n + 1):
        q = quantity(masks) if pai.needs != "nothing" else {k: None for k in theta}
        scores = {k: np.asarray(pai.score(np.where(masks[k], theta[k], 0), q[k], rng), np.float64) for k in masks}
        masks = select(scores, masks, _step_counts(masks, final, scope, i, n), scope, invert)
    return masks
