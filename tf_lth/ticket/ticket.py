"""``LotteryTicket``: iterative magnitude pruning with rewinding, for tf_keras and Keras 3 models.

The user's model goes to the masked model of its flavour (:mod:`tf_lth.ticket.flavours`): tf_keras models
to :class:`tf_lth.keras2.masked.MaskedModel` (TF-MOT's ``PruneLowMagnitude`` under a
:class:`~tf_lth.keras2.frozen_mask.FrozenMask` schedule, so TF-MOT never changes a mask), Keras 3 models on any
backend to :class:`tf_lth.keras3.masked.MaskedModel` (masks on the model's own layers). Either owns the
invariant that a pruned weight is zero in every forward pass, step and file; this module is numpy
over their weight lists: θ0 is recorded, and each :meth:`next_round` prunes by the criterion,
rewinds the weights, writes the masks and gives the optimizer a fresh state.
"""
from __future__ import annotations

import functools
import weakref
import zlib
from dataclasses import replace

import numpy as np

from tf_lth.config.configs import TicketConfig
from tf_lth.errors import TfLthError, warn
from tf_lth.pruning import controls
from tf_lth.pruning import groups as groups_lib
from tf_lth.pruning import rates as rates_lib
from tf_lth.pruning import selection
from tf_lth.pruning import units
from tf_lth.pruning.rewind import survivor_values
from tf_lth.pruning.stopping import StopRules
from tf_lth.ticket import at_init as at_init_lib
from tf_lth.ticket import flavours

# id(ticket.model) -> the ticket: export_ticket(model) and a Keras 3 model.save() ask whether the model
# sits at a rewind point (see LotteryTicket.rewound_warning)
_TICKETS: dict[int, weakref.ref] = {}


def _bn_gammas(model, graph) -> dict:
    """BatchNormalization γ by layer name (the unit score ``bn_gamma``), read through Keras' public API."""
    found = {}
    for name in graph.nodes:
        layer = model.get_layer(name)
        if type(layer).__name__ == "BatchNormalization" and layer.get_config().get("scale", True):
            found[name] = np.asarray(layer.get_weights()[0])
    return found


def ticket_of(model) -> "LotteryTicket | None":
    """The live :class:`LotteryTicket` whose ``model`` is ``model``, if any."""
    ticket = _TICKETS.get(id(model), lambda: None)()
    return ticket if ticket is not None and ticket.model is model else None


class LotteryTicket:
    """Find a winning ticket of ``model`` with ``model.fit``.

    ``ticket.model`` is ``model`` with its prunable layers wrapped by TF-MOT (it shares their
    variables; see :class:`~tf_lth.keras2.masked.MaskedModel`); compile and fit it with
    ``callbacks=[ticket.callback()]``, then call :meth:`next_round` to prune and rewind.
    ``options`` override fields of ``config``.
    """

    def __init__(self, model, config: TicketConfig | None = None, **options):
        self.config = replace(config or TicketConfig(), **options)
        self.rewind = self.config.rewind_mode
        self.flavour = flavours.of_model(model)  # a Flavour record: the only dispatch on Keras flavour
        self.masked = self.flavour.masked_model(model, frozen=self.config.pruned == "frozen")
        self.model, self.source = self.masked.model, self.masked.source
        self.unpruned_layers = self.masked.unpruned_layers
        unknown = set(self.config.ignore) - {layer.name for layer in self.masked.layers.values()}
        if unknown:
            raise TfLthError(f"ignore names unknown prunable layer(s) {', '.join(sorted(unknown))}")
        self.round = 0
        self.theta0 = self.masked.raw_weights()
        self.thetak: list[np.ndarray] | None = None
        self.masks = {k: np.ones(self.masked.variables[i].shape, bool) for k, i in self.masked.kernels.items()}
        self.history: list[dict] = []
        # optimizer steps each round started and ended at (finetune continues the step; resume needs it)
        self.steps: dict[int, list] = {0: [0, None]}
        self.pending_step: int | None = None  # the step the next fit starts from (set once per round)
        self.start_weights: list[np.ndarray] | None = None  # lr/finetune: the trained weights rewound from
        # what the model's weights are: "rewound" (θ0 or a rewind point, untrained), "training", "trained";
        # and the last trained round that next_round rewound away from: (round, masks, weights)
        self.holds, self.last_trained = "rewound", None
        self.pruned_at_init: dict | None = None  # at_init's method and options (ticket.json keeps them)
        _TICKETS[id(self.model)] = weakref.ref(self)
        self.masked.on_save(self.rewound_warning)
        layers = {k: (layer.name, rates_lib.kind(type(layer).__name__)) for k, layer in self.masked.layers.items()}
        self.rates = rates_lib.layer_rates(layers, self.masked.output_layer_names(), self.config.rate,
                                           self.config.rates, layerwise=self.config.scope == "layerwise")
        self._structure = None  # (graph, groups), read from the model on first use
        if self.config.granularity != "weight":
            units.check(self.config.granularity, self.structure[1], self.source.name)

    # -- the procedure -------------------------------------------------------------------
    def callback(self, test_data=None, validation_data=None, eval_every: int | None = None,
                 max_steps: int | None = None, **stops):
        """The Keras callback to pass to ``fit`` for this round (a :class:`tf_lth.training.round_logic.RoundLogic`
        of the model's flavour); ``stops``: the fields of :class:`~tf_lth.pruning.stopping.StopRules`
        (``early_bird=EPS``, ``patience=N``, ...) under which the round may stop early."""
        return self.flavour.callback(self, test_data=test_data, validation_data=validation_data,
                                     eval_every=eval_every, stops=StopRules(**stops), max_steps=max_steps)

    def rng(self, purpose: str, round_: int | None = None) -> np.random.Generator:
        """A generator of its own for ``purpose`` in this round (seed, round, purpose): reproducible draws."""
        tag = zlib.crc32(purpose.encode())
        return np.random.default_rng([self.config.seed, self.round if round_ is None else round_, tag])

    def pruned_keys(self) -> list[str]:
        """The kernels this ticket prunes (all but those of ``ignore``d layers), sorted."""
        return [k for k in sorted(self.masks) if self.masked.layers[k].name not in self.config.ignore]

    def target_counts(self, round_: int) -> dict[str, int]:
        """Weights each pruned kernel keeps after ``round_`` rounds: ``size * (1 - rate) ** round``."""
        return selection.keep_counts({k: self.masks[k] for k in self.pruned_keys()}, self.rates, round_)

    def next_round(self) -> None:
        """Prune by the criterion, rewind the survivors, reset the optimizer: the next round is ready."""
        if self.rewind.needs_snapshot and self.thetak is None:
            raise TfLthError(
                f"rewind {self.rewind} needs θk: train round 0 with ticket.callback() for at least "
                f"{self.rewind.iteration} steps before next_round()")
        final = self.masked.weights()
        if self.holds == "trained":
            self.last_trained = (self.round, dict(self.masks), final)
        self.masks.update(self.draw_masks(final))
        ended = self.steps.get(self.round, [0, None])[1]
        self.round += 1
        self.start_weights = final if self.rewind.keeps_weights else None
        self.rewind_to(self.rewind_source())
        self.reset_optimizer(ended)

    def draw_masks(self, weights: list[np.ndarray] | None = None) -> dict[str, np.ndarray]:
        """The masks :meth:`next_round` would draw from ``weights`` (default: the current ones) for the
        pruned kernels, without changing anything: early-bird rounds watch them settle."""
        weights = self.masked.weights() if weights is None else weights
        keys = self.pruned_keys()
        w0 = {k: self.theta0[self.masked.kernels[k]] for k in keys}
        wf = {k: weights[self.masked.kernels[k]] for k in keys}
        alive = {k: self.masks[k] for k in keys}
        rates = {k: self.rates[k] for k in keys}
        granularity = self.config.granularity
        unstructured = None
        if granularity != "unit":
            score = selection.scores(self.config.criterion, w0, wf, self.rng("criterion"))
            unstructured = selection.prune(score, alive, rates, self.round + 1, self.config.scope,
                                           self.config.block_size, self.config.m_by_n)
            if granularity == "weight":
                return unstructured
        return units.draw(granularity, self.structure[1], alive, wf, rates, self.round + 1, self.config.unit_score,
                          unstructured=unstructured,
                          gammas=_bn_gammas(self.source, self.structure[0]) if self.config.unit_score == "bn_gamma" else None)

    # -- units -------------------------------------------------------------------------------
    @property
    def structure(self) -> tuple:
        """``(graph, groups)``: the model's layer graph (:mod:`tf_lth.pruning.groups`) as its flavour reads
        it, and its channel groups over the kernels this ticket prunes."""
        if self._structure is None:
            graph = self.flavour.describe(self.source)
            self._structure = (graph, groups_lib.find(graph, set(self.pruned_keys()), keep=self.config.ignore))
        return self._structure

    def units_kept(self, masks: dict | None = None) -> dict[str, list[int]]:
        """Per layer whose units a channel group holds: ``[kept, total]`` units under ``masks`` (default: the
        ticket's); a unit is kept while some layer still reads its channel."""
        return units.units_kept(self.structure[1], self.masks if masks is None else masks)

    @property
    def macs_remaining(self) -> float | None:
        """Multiply-adds of one example the shrunk ticket computes, over the dense network's (None where
        the model's graph cannot be read)."""
        try:
            graph, groups = self.structure
        except TfLthError:
            return None
        return units.macs_remaining(graph, groups, self.masks)

    @classmethod
    def one_shot(cls, model, theta0: list, final: list, config: TicketConfig | None = None,
                 **options) -> "LotteryTicket":
        """A ticket of ``model`` pruned in one round from (θ0, θ_final) by the config's criterion and
        rates (:func:`tf_lth.pruning.selection.level_rates` reaches a level), rewound by its survivors action."""
        ticket = cls(model, config, **options)
        ticket.theta0 = list(theta0)
        ticket.set_masks({k: np.ones_like(m) for k, m in ticket.masks.items()}, weights=final)
        ticket.next_round()
        return ticket

    @classmethod
    def at_init(cls, model, method: str, remaining, data=None, **options) -> "LotteryTicket":
        """``model`` pruned once at θ0 by a pruning-at-init ``method`` (:mod:`tf_lth.pruning.at_init`) to
        ``remaining`` (fraction kept, or per-kernel counts), rewound to θ0, ready to train; ``data``: (x, y)
        or a Dataset; options: :func:`tf_lth.ticket.at_init.make`'s, then TicketConfig fields."""
        return at_init_lib.make(cls, model, method, remaining, data, **options)

    def rewind_source(self) -> list[np.ndarray]:
        """What this round's weights were rewound from: θ0, θk, or (``lr``, ``finetune``) the weights the
        previous round ended with. Controls start from the same point."""
        if not self.round:
            return self.theta0
        source = self.rewind.source(self.theta0, self.thetak, self.start_weights)
        if source is None:
            raise TfLthError(f"round {self.round} has no record of the weights it started from: load the "
                             "ticket from a folder holding the previous round")
        return source

    def get_weights(self) -> list[np.ndarray]:
        """Every weight of the wrapped model's layers, in :attr:`theta0` order, as the network computes
        with them (pruned entries zero or frozen; masks excluded)."""
        return self.masked.weights()

    def set_weights(self, values: list[np.ndarray]) -> None:
        """Restore what :meth:`get_weights` returned (e.g. from a checkpoint); the masks stay and apply."""
        self.masked.assign(values)

    def kernels(self) -> dict[str, int]:
        """Pruned weight key (``"fc1/kernel"``) -> its index in :attr:`theta0` and :meth:`get_weights`."""
        return dict(self.masked.kernels)

    def rewind_to(self, source: list[np.ndarray]) -> None:
        """Write the masks, and ``source`` (survivors per the survivors action) into the kernels."""
        values = list(source)
        rng = self.rng("survivors")
        draws = functools.cache(lambda: self.fresh_values(self.rng("reinit").integers(2**31)))  # if an action asks
        for k, i in self.masked.kernels.items():
            values[i] = survivor_values(self.config.survivors, self.theta0[i], self.masks[k], source[i],
                                        lambda i=i: draws()[i], rng)
        self._write_masks()
        self.masked.assign(values)
        self.holds = "rewound"

    def _write_masks(self) -> None:
        """Masks (and θ0 as the frozen values of pruned weights) into the variables the model reads."""
        self.masked.set_masks(self.masks, {k: self.theta0[i] for k, i in self.masked.kernels.items()})

    def set_masks(self, masks: dict, weights: list | None = None) -> None:
        """Replace the masks (and optionally all weights, in :attr:`theta0` order) of this ticket."""
        if sorted(masks) != sorted(self.masks):
            raise TfLthError(f"masks must have exactly the keys {', '.join(sorted(self.masks))}")
        self.masks = {k: np.asarray(m, bool).reshape(self.masks[k].shape) for k, m in masks.items()}
        self._write_masks()
        self.masked.assign(self.masked.raw_weights() if weights is None else list(weights))

    def reset_optimizer(self, current: int | None = None) -> None:
        """The state a freshly built optimizer of the same config has; the step restarts as the rewind
        mode says (``current``: the step the last round ended at, by default the optimizer's own)."""
        opt = getattr(self.model, "optimizer", None)  # Keras 3: none before compile
        if current is None and opt is not None:
            current = int(opt.iterations.numpy())
        step = self.rewind.optimizer_iteration(current or 0) if self.round else 0
        self.steps[self.round] = [step, None]
        self.pending_step = step
        self.masked.reset_optimizer(step)

    def fresh_values(self, seed: int) -> list[np.ndarray]:
        """A new draw of every weight from its layer's initializer (the random-reinit control)."""
        return self.masked.fresh_values(seed)

    def twin(self) -> "LotteryTicket":
        """A ticket of a fresh copy of the architecture at this round, rewind point and optimizer step,
        its masks and weights still to be set (see :mod:`tf_lth.pruning.controls`)."""
        with self.masked.scope():
            twin = LotteryTicket(self.masked.clone_source(), self.config)
        twin.round, twin.thetak, twin.steps = self.round, self.thetak, {self.round: [self.steps[self.round][0], None]}
        twin.pending_step = self.steps[self.round][0]
        return twin

    def control(self, kind: str, seed: int | None = None) -> "LotteryTicket":
        """A control for the current round, ready to train (see :mod:`tf_lth.pruning.controls`)."""
        return controls.make(self, kind, seed)

    # -- the round contract (used by TicketCallback) ---------------------------------------
    def needs_thetak(self) -> bool:
        """Whether θk (the weights after ``k`` steps of round 0) is still to be taken."""
        return self.rewind.needs_snapshot and self.thetak is None and self.round == 0

    def record_thetak(self) -> None:
        """Take θk now (once)."""
        if self.thetak is None:
            self.thetak = self.masked.weights()

    def start_training(self, fresh: bool = True) -> None:
        """Called when ``fit`` begins: masks written into the variables (whatever wrote them since), and
        the first ``fit`` of a round puts the optimizer at the round's start step (not when ``fresh`` is
        False: a round resumed from a checkpoint has its optimizer state restored)."""
        self.masked.apply_masks()
        self.holds = "training"
        opt = getattr(self.model, "optimizer", None)  # Keras 3: none before compile
        if fresh and self.pending_step is not None and opt is not None:
            opt.iterations.assign(self.pending_step)
        self.pending_step = None

    def finish_round(self, metrics: dict, curve: list[dict], step: int | None = None) -> None:
        """Record a trained round: its metrics and curve, and the optimizer step it ended at."""
        self.masked.apply_masks()  # after fit's finalize_variable_values (EMA averages copied in)
        self.holds = "trained"
        entry = {"round": self.round, "weights_remaining": self.weights_remaining, **metrics, "curve": curve}
        if self.config.granularity != "weight":
            entry["macs_remaining"] = self.macs_remaining
        self.history = [h for h in self.history if h["round"] != self.round] + [entry]
        if step is not None:
            self.steps[self.round] = [self.steps.get(self.round, [0, None])[0], int(step)]

    # -- the trained ticket -------------------------------------------------------------------
    @property
    def at_rewind_point(self) -> bool:
        """Whether the model holds untrained weights: θ0 before round 0 trains, or the rewound weights of a
        round that ``next_round`` prepared and ``fit`` has not trained yet."""
        return self.holds == "rewound"

    def trained_weights(self, round: int | None = None) -> tuple[int, dict, list[np.ndarray]]:
        """``(round, masks, weights)`` of the trained round the model holds, or of the last one :meth:`next_round`
        rewound away from (kept: one copy of the weights); ``round``: which (default: the latest)."""
        held = (self.round, dict(self.masks), self.get_weights()) if self.holds == "trained" else None
        for candidate in (held, self.last_trained):
            if candidate is not None and round in (None, candidate[0]):
                return candidate
        kept = [str(c[0]) for c in (held, self.last_trained) if c is not None]
        what = f"round {round} is" if round is not None else "no round is"
        raise TfLthError(f"{what} trained and in memory (this ticket keeps round(s) {', '.join(kept) or 'none'}): "
                         "train a round first, or save each round with save_ticket and load_ticket(folder, round=k)")

    def trained_model(self, round: int | None = None):
        """A plain Keras model of the ticket's flavour (no masks, no wrappers) with the trained weights of
        ``round`` (default: the latest trained one, also after :meth:`next_round`), pruned entries zero:
        what to ``save`` or export as the ticket."""
        return self.masked.plain_copy(self.trained_weights(round)[2])

    def rewound_warning(self, action: str = "saving") -> None:
        """Warn (one line) when the model is about to be saved or exported while it holds untrained weights."""
        if not self.at_rewind_point:
            return
        latest = self.last_trained[0] if self.last_trained else max((h["round"] for h in self.history), default=None)
        if latest is None:
            what = "θ0" if self.round == 0 else f"round {self.round}'s masks over its rewound weights"
            return warn(f"{action} ticket.model while it holds untrained weights ({what}; no round is trained yet)")
        warn(f"{action} ticket.model while it holds round {self.round}'s rewound weights, not trained ones: "
             f"use ticket.trained_model() (round {latest}, the last trained) or export_ticket(ticket)")

    @property
    def weights_remaining(self) -> float:
        """Fraction of the prunable weights still alive."""
        return selection.remaining(self.masks)

    def sparsity(self) -> dict[str, float]:
        """Fraction of zeros per pruned kernel, by weight key."""
        return selection.sparsity(self.masks)

    def kernel(self, key: str) -> np.ndarray:
        """Current value of the kernel ``key`` (e.g. ``"fc1/kernel"``) as its variable holds it."""
        return self.masked.kernel(key)
