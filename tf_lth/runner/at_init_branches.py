"""The pruning-at-initialization branches of a finished run (Frankle et al. 2021's comparison), twins that
:mod:`tf_lth.runner.branches` trains as it trains every branch:

- ``at_init`` ``METHOD[/ABLATION]``: the run's θ0 pruned once by a PaI method (:mod:`tf_lth.pruning.at_init`)
  to the round's sparsity (the round's per-layer counts under a layerwise method, their total under a
  global one), trained from θ0 at step 0. ``/shuffle`` shuffles the PaI mask within each layer,
  ``/reinit`` redraws θ0 from the initializers, ``/invert`` keeps the method's lowest scores.
- ``ablation`` ``shuffle | reinit | invert`` of the IMP ticket: ``shuffle`` is the ``random_mask`` control
  (same per-layer counts, random positions, over the ticket's rewind point) and ``reinit`` the
  ``random_reinit`` control (the same twins, under Frankle et al.'s names); ``invert`` redraws the
  round's mask from the previous round's alive weights and trained weights keeping the LOWEST criterion
  scores, at the round's per-layer counts, over the ticket's rewind point.

The gradient methods see the run's training data: its first :data:`tf_lth.ticket.at_init.BATCHES` batches
of the run's batch size, unshuffled (deterministic).
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from tf_lth.errors import TfLthError
from tf_lth.pruning import at_init as pai
from tf_lth.pruning import controls
from tf_lth.pruning import rewind as rewind_lib
from tf_lth.pruning import selection
from tf_lth.ticket import at_init, store
from tf_lth.util.io import read_npz

ABLATIONS = ("shuffle", "reinit", "invert")


def parse(value: str) -> tuple[str, str | None]:
    """``METHOD`` or ``METHOD/ABLATION`` -> (method, ablation or None), else a one-line error."""
    method, _, ablation = str(value).partition("/")
    pai.PAI_METHODS.get(method)
    if ablation and ablation not in ABLATIONS:
        raise TfLthError(f"unknown ablation {ablation!r} in {value!r}: use METHOD/{' | METHOD/'.join(ABLATIONS)}")
    return method, ablation or None


def check_ablation(value: str) -> str:
    if value not in ABLATIONS:
        raise TfLthError(f"unknown ablation {value!r}: use {', '.join(ABLATIONS)}")
    return value


def at_init_twin(ticket, value: str, run_dir=None, data=None, batch_size: int = at_init.BATCH_SIZE):
    """A twin of the round pruned at θ0 by the ``value`` method (and ablation), rewound to θ0, its
    optimizer at step 0; ``data``: the run's Dataset (the gradient methods' batches)."""
    method, ablation = parse(value)
    if ticket.config.granularity != "weight":
        raise TfLthError(f"pruning at init removes single weights, and this run's tickets remove "
                         f"{ticket.config.granularity} units: branch --at-init off a run with --granularity weight")
    k, keys = ticket.round, ticket.pruned_keys()
    twin = ticket.twin()
    twin.config, twin.rewind = replace(twin.config, rewind="init", survivors="original"), rewind_lib.parse("init")
    twin.theta0, twin.thetak, twin.start_weights = list(ticket.theta0), None, None
    twin.steps, twin.pending_step = {k: [0, None]}, 0
    twin.masks = {key: np.ones_like(m) if key in keys else m.copy() for key, m in ticket.masks.items()}
    counts = {key: int(ticket.masks[key].sum()) for key in keys}  # summed by a global method
    batches = at_init.batches_of(data, at_init.BATCHES, batch_size) if pai.PAI_METHODS.get(method).needs != "nothing" else []
    twin.masks.update(at_init.draw(twin, method, counts, batches, invert=ablation == "invert"))
    if ablation == "shuffle":
        twin.masks.update(selection.random_like({key: twin.masks[key] for key in keys}, twin.rng("at_init shuffle")))
    elif ablation == "reinit":
        twin.theta0 = twin.fresh_values(twin.rng("at_init reinit").integers(2**31))
    twin.rewind_to(twin.theta0)
    twin.pruned_at_init = {"method": method, "ablation": ablation, "counts_of_round": k}
    return twin


def ablation_twin(ticket, value: str, run_dir=None, data=None):
    """The ``value`` ablation of the round's IMP ticket (module docstring)."""
    check_ablation(value)
    if value == "shuffle":
        return controls.make(ticket, "random_mask")
    if value == "reinit":
        return controls.make(ticket, "random_reinit")
    if ticket.config.granularity != "weight":
        raise TfLthError(f"the invert ablation redraws single weights, not {ticket.config.granularity} units: "
                         "use shuffle or reinit for a structured run")
    k, keys, kernels = ticket.round, ticket.pruned_keys(), ticket.kernels()
    previous = Path(run_dir) / "rounds" / str(k - 1)
    weights = store.unnumbered(read_npz(previous / "weights.npz"), len(ticket.theta0), previous / "weights.npz")
    masks = {key.replace("|", "/"): m for key, m in read_npz(previous / "masks.npz").items()}
    score = selection.scores(ticket.config.criterion, {key: ticket.theta0[kernels[key]] for key in keys},
                             {key: weights[kernels[key]] for key in keys}, ticket.rng("criterion", k - 1))
    counts = {key: int(ticket.masks[key].sum()) for key in keys}
    twin = ticket.twin()
    twin.theta0, twin.thetak, twin.start_weights = list(ticket.theta0), ticket.thetak, ticket.start_weights
    twin.masks = {**ticket.masks, **pai.select(score, {key: masks[key] for key in keys}, counts, "layerwise",
                                               invert=True)}
    twin.rewind_to(ticket.rewind_source())
    return twin


__all__ = ["ABLATIONS", "parse", "check_ablation", "at_init_twin", "ablation_twin"]
