"""``LotteryTicket``: iterative magnitude pruning with rewinding on TF-MOT's pruning wrappers.

The user's model is wrapped by :class:`~tf_lth.masked.MaskedModel` (TF-MOT's ``PruneLowMagnitude``
under a :class:`~tf_lth.schedules.FrozenMask` schedule, so TF-MOT never changes a mask; that module
owns the invariant that a pruned weight is zero in every forward pass, step and file), θ0 is
recorded, and each :meth:`next_round` prunes by the criterion, rewinds the weights, writes the masks
and gives the optimizer a fresh state.
"""
from __future__ import annotations

import json
import zlib
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from tf_lth import masks as masks_lib
from tf_lth.keras2 import keras, require_graph_model
from tf_lth.callbacks import TicketCallback, accuracy
from tf_lth.errors import TfLthError
from tf_lth.io import read_json, read_npz, write_json, write_npz
from tf_lth.masked import MaskedModel
from tf_lth.rewind import PRUNED, SURVIVORS, Rewind, survivor_values

SCOPES = ("layerwise", "global")


@dataclass(frozen=True)
class TicketConfig:
    """How tickets are found; the defaults are Frankle & Carbin's LeNet-300-100 procedure.

    ``rate`` is the fraction of the *remaining* weights pruned per round; with ``scope=
    "layerwise"`` the output layer gets half of it unless ``rates`` says otherwise. ``rates``
    maps a layer name or a kind (``"dense"``, ``"conv"``, ``"output"``) to its own rate.
    ``block_size=(4, 1)`` prunes 4 consecutive inputs of a Dense kernel together (1x4 blocks for
    TFLite's sparse kernel); ``m_by_n=(2, 4)`` keeps at most 2 of every 4 inputs (GPU 2:4).
    """

    rate: float = 0.2
    rates: dict | None = None
    scope: str = "layerwise"
    rewind: str = "init"
    criterion: str = "large_final"
    survivors: str = "original"
    pruned: str = "zero"
    ignore: tuple = ()
    block_size: tuple | None = None
    m_by_n: tuple | None = None
    seed: int = 0

    def __post_init__(self):
        for name, value in [("rate", self.rate), *((f"rates[{k!r}]", v) for k, v in (self.rates or {}).items())]:
            if not isinstance(value, (int, float)) or not 0 < value < 1:
                raise TfLthError(f"{name} = {value} must be a fraction strictly between 0 and 1")
        if self.scope not in SCOPES:
            raise TfLthError(f"unknown scope {self.scope!r}: use layerwise or global")
        if self.scope == "global" and self.rates:
            raise TfLthError("rates set per layer or kind need scope='layerwise': global pruning cuts all "
                             "layers at one threshold with `rate` (keep a layer dense with ignore=)")
        Rewind.parse(self.rewind)
        masks_lib.scores(self.criterion, {}, {}, None)  # validates the name
        if self.survivors not in SURVIVORS:
            raise TfLthError(f"unknown survivors action {self.survivors!r}: choose one of {', '.join(SURVIVORS)}")
        if self.pruned not in PRUNED:
            raise TfLthError(f"unknown pruned action {self.pruned!r}: choose one of {', '.join(PRUNED)}")
        for name in ("block_size", "m_by_n"):
            value = getattr(self, name)
            if value is not None:
                if len(value) != 2 or any(int(v) < 1 for v in value):
                    raise TfLthError(f"{name} must be two positive integers, got {value}")
                object.__setattr__(self, name, tuple(int(v) for v in value))
        if self.m_by_n and self.m_by_n[0] >= self.m_by_n[1]:
            raise TfLthError(f"m_by_n = {self.m_by_n}: keep n of m needs n < m, e.g. (2, 4)")
        object.__setattr__(self, "ignore", tuple(self.ignore))

    @classmethod
    def from_dict(cls, d: dict) -> "TicketConfig":
        """The config of a JSON/YAML mapping; an unknown key is a one-line error."""
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise TfLthError(f"unknown config key(s) {', '.join(sorted(unknown))}")
        return cls(**d)


class LotteryTicket:
    """Find a winning ticket of ``model`` with ``model.fit``.

    ``ticket.model`` is ``model`` with its prunable layers wrapped by TF-MOT (it shares their
    variables; see :class:`~tf_lth.masked.MaskedModel`); compile and fit it with
    ``callbacks=[ticket.callback()]``, then call :meth:`next_round` to prune and rewind.
    ``options`` override fields of ``config``.
    """

    def __init__(self, model, config: TicketConfig | None = None, **options):
        self.config = replace(config or TicketConfig(), **options)
        self.rewind = Rewind.parse(self.config.rewind)
        require_graph_model(model)
        self.masked = MaskedModel(model, frozen=self.config.pruned == "frozen")
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
        self.rates = self._resolve_rates()

    def _resolve_rates(self) -> dict[str, float]:
        rates, out = self.config.rates or {}, {}
        kinds = {k: _kind(layer) for k, layer in self.masked.layers.items()}
        names = sorted({layer.name for layer in self.masked.layers.values()})
        valid = {*names, *kinds.values(), "output"}
        unknown = sorted(set(rates) - valid)
        if unknown:
            raise TfLthError(f"rates key(s) {', '.join(unknown)} name no prunable layer or kind of this model: "
                             f"use a layer name ({', '.join(names)}) or a kind ({', '.join(sorted(set(kinds.values())))}"
                             ", output)")
        outputs = self.masked.output_layer_names()
        for key, layer in self.masked.layers.items():
            base = rates.get(kinds[key], self.config.rate)
            if layer.name in rates:
                out[key] = rates[layer.name]
            elif layer.name in outputs and self.config.scope == "layerwise":
                out[key] = rates.get("output", base / 2)
            else:
                out[key] = base
        return out

    # -- the procedure -------------------------------------------------------------------
    def callback(self, test_data=None, validation_data=None, eval_every: int | None = None) -> TicketCallback:
        """The Keras callback to pass to ``fit`` for this round (see :class:`TicketCallback`)."""
        return TicketCallback(self, test_data=test_data, validation_data=validation_data, eval_every=eval_every)

    def _rng(self, purpose: str, round_: int | None = None) -> np.random.Generator:
        tag = zlib.crc32(purpose.encode())
        return np.random.default_rng([self.config.seed, self.round if round_ is None else round_, tag])

    def _pruned_keys(self) -> list[str]:
        return [k for k in sorted(self.masks) if self.masked.layers[k].name not in self.config.ignore]

    def target_counts(self, round_: int) -> dict[str, int]:
        """Weights each pruned kernel keeps after ``round_`` rounds: ``size * (1 - rate) ** round``."""
        return {k: int(round(self.masks[k].size * (1 - self.rates[k]) ** round_)) for k in self._pruned_keys()}

    def next_round(self) -> None:
        """Prune by the criterion, rewind the survivors, reset the optimizer: the next round is ready."""
        if self.rewind.mode == "iteration" and self.thetak is None:
            raise TfLthError(
                f"rewind {self.rewind} needs θk: train round 0 with ticket.callback() for at least "
                f"{self.rewind.iteration} steps before next_round()")
        final = self.masked.weights()
        keys = self._pruned_keys()
        w0 = {k: self.theta0[self.masked.kernels[k]] for k in keys}
        wf = {k: final[self.masked.kernels[k]] for k in keys}
        score = masks_lib.scores(self.config.criterion, w0, wf, self._rng("criterion"))
        alive = {k: self.masks[k] for k in keys}
        block = self.config.block_size
        if self.config.scope == "global":
            total = sum(m.size for m in alive.values())
            keep = int(round(total * (1 - self.config.rate) ** (self.round + 1)))
            new = masks_lib.select_global(score, alive, keep, block)
        else:
            new = masks_lib.select_layerwise(score, alive, self.target_counts(self.round + 1), block)
        if self.config.m_by_n:
            n, m = self.config.m_by_n
            new = {k: masks_lib.m_by_n(score[k], v, n, m) if v.ndim >= 2 else v for k, v in new.items()}
        self.masks.update(new)
        ended = self.steps.get(self.round, [0, None])[1]
        self.round += 1
        self.start_weights = final if self.rewind.keeps_weights else None
        self._rewind_to(self.rewind_source())
        self.reset_optimizer(ended)

    def rewind_source(self) -> list[np.ndarray]:
        """What this round's weights were rewound from: θ0, θk, or (``lr``, ``finetune``) the weights the
        previous round ended with. Controls start from the same point."""
        if self.rewind.keeps_weights and self.round:
            if self.start_weights is None:
                raise TfLthError(f"round {self.round} has no record of the weights it started from: load the "
                                 "ticket from a folder holding the previous round")
            return self.start_weights
        return self.thetak if self.rewind.mode == "iteration" and self.round else self.theta0

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

    def _rewind_to(self, source: list[np.ndarray]) -> None:
        """Write masks into the wrappers and ``source`` (survivors per the action) into the kernels."""
        values = list(source)
        rng = self._rng("survivors")
        fresh = self.fresh_values(self._rng("reinit").integers(2**31)) if self.config.survivors == "reinit" else None
        for k, i in self.masked.kernels.items():
            values[i] = survivor_values(self.config.survivors, self.theta0[i], self.masks[k], source[i],
                                        None if fresh is None else fresh[i], rng)
        self._write_masks()
        self.masked.assign(values)

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
        opt = self.model.optimizer
        if current is None and opt is not None:
            current = int(opt.iterations.numpy())
        step = self.rewind.optimizer_iteration(current or 0) if self.round else 0
        self.steps[self.round] = [step, None]
        self.pending_step = step
        self.masked.reset_optimizer(step)

    def fresh_values(self, seed: int) -> list[np.ndarray]:
        """A new draw of every weight from its layer's initializer (the random-reinit control)."""
        return self.masked.fresh_values(seed)

    def control(self, kind: str, seed: int | None = None) -> "LotteryTicket":
        """A control for the current round: ``random_reinit`` (same masks, every weight drawn anew from
        its initializer) or ``random_mask`` (random masks of the same per-layer sparsity over the
        ticket's own rewind point: θ0, θk, or the previous round's weights). Its optimizer starts at
        the ticket's step for this round."""
        if kind not in CONTROLS:
            raise TfLthError(f"unknown control {kind!r}: choose one of {', '.join(CONTROLS)}")
        seed = self.config.seed + 1 if seed is None else seed
        with self.source.distribute_strategy.scope():
            twin = LotteryTicket(keras.models.clone_model(self.source), self.config)
        twin.round, twin.thetak, twin.steps = self.round, self.thetak, {self.round: [self.steps[self.round][0], None]}
        twin.pending_step = self.steps[self.round][0]
        rng = np.random.default_rng([seed, self.round, zlib.crc32(kind.encode())])
        if kind == "random_reinit":
            twin.theta0 = twin.fresh_values(rng.integers(2**31))
            twin.thetak = None if self.thetak is None else twin.theta0
            twin.masks = {k: m.copy() for k, m in self.masks.items()}
            source = twin.theta0
        else:
            twin.theta0 = list(self.theta0)
            twin.start_weights = self.start_weights
            keys = self._pruned_keys()
            twin.masks = {**self.masks, **masks_lib.random_like({k: self.masks[k] for k in keys}, rng)}
            source = self.rewind_source()
        twin._rewind_to(source)
        return twin

    def supermask_accuracy(self, data, survivors: str = "signed_constant") -> float:
        """Accuracy of the untrained masked network (Zhou et al.'s supermask): the current masks over
        θ0 (``"original"``) or over sign(θ0)·σ (``"signed_constant"``); the weights are restored after."""
        trained = self.masked.weights()
        values = list(self.theta0)
        rng = self._rng("supermask")
        for k, i in self.masked.kernels.items():
            values[i] = survivor_values(survivors, self.theta0[i], self.masks[k], self.theta0[i], None, rng)
        try:
            self.masked.assign(values)
            return accuracy(self.model, data)
        finally:
            self.masked.assign(trained)

    # -- the round contract (used by TicketCallback) ---------------------------------------
    def needs_thetak(self) -> bool:
        """Whether θk (the weights after ``k`` steps of round 0) is still to be taken."""
        return self.rewind.mode == "iteration" and self.thetak is None and self.round == 0

    def record_thetak(self) -> None:
        """Take θk now (once)."""
        if self.thetak is None:
            self.thetak = self.masked.weights()

    def start_training(self, fresh: bool = True) -> None:
        """Called when ``fit`` begins: masks written into the variables (whatever wrote them since), and
        the first ``fit`` of a round puts the optimizer at the round's start step (not when ``fresh`` is
        False: a round resumed from a checkpoint has its optimizer state restored)."""
        self.masked.apply_masks()
        opt = self.model.optimizer
        if fresh and self.pending_step is not None and opt is not None:
            opt.iterations.assign(self.pending_step)
        self.pending_step = None

    def finish_round(self, metrics: dict, curve: list[dict], step: int | None = None) -> None:
        """Record a trained round: its metrics and curve, and the optimizer step it ended at."""
        self.masked.apply_masks()  # after fit's finalize_variable_values (EMA averages copied in)
        entry = {"round": self.round, "weights_remaining": self.weights_remaining, **metrics, "curve": curve}
        self.history = [h for h in self.history if h["round"] != self.round] + [entry]
        if step is not None:
            self.steps[self.round] = [self.steps.get(self.round, [0, None])[0], int(step)]

    @property
    def weights_remaining(self) -> float:
        """Fraction of the prunable weights still alive."""
        return masks_lib.remaining(self.masks)

    def sparsity(self) -> dict[str, float]:
        """Fraction of zeros per pruned kernel, by weight key."""
        return masks_lib.sparsity(self.masks)

    def kernel(self, key: str) -> np.ndarray:
        """Current value of the kernel ``key`` (e.g. ``"fc1/kernel"``) as its variable holds it."""
        return self.masked.kernel(key)

    def export(self, path=None, **options) -> dict:
        """Export this round's ticket (SavedModel + sparse TFLite, verified): see
        :func:`tf_lth.export.export_ticket` for ``options``; returns ticket.json's content."""
        from tf_lth.export import export_ticket

        return export_ticket(self.model, path, round=self.round, **options)

    # -- persistence ---------------------------------------------------------------------
    def save(self, path) -> Path:
        """Write θ0, θk, this round's masks and weights, and the metrics (atomically, ticket.json last)."""
        path = Path(path)
        write_npz(path / "theta0.npz", _numbered(self.theta0))
        if self.thetak is not None:
            write_npz(path / "thetak.npz", _numbered(self.thetak))
        rd = path / "rounds" / str(self.round)
        write_npz(rd / "masks.npz", {k.replace("/", "|"): m for k, m in self.masks.items()})
        write_npz(rd / "weights.npz", _numbered(self.masked.weights()))
        write_json(path / "ticket.json", {
            "round": self.round, "config": asdict(self.config), "history": self.history,
            "steps": {str(r): s for r, s in sorted(self.steps.items())},
            "kernels": sorted(self.masked.kernels), "model": json.loads(self.source.to_json()),
        })
        return path

    @classmethod
    def load(cls, path, round: int | None = None, model=None, custom_objects=None) -> "LotteryTicket":
        """Rebuild a saved ticket at ``round`` (default: the last saved one) from its masks and
        weights; ``model`` gives the architecture when it cannot be rebuilt from its JSON."""
        path = Path(path)
        meta = read_json(path / "ticket.json")
        if round is not None:
            if not (path / "rounds" / str(round) / "masks.npz").exists():
                raise TfLthError(f"{path} has no round {round} (rounds saved: {', '.join(_saved_rounds(path)) or 'none'})")
            meta["round"], meta["history"] = round, [h for h in meta["history"] if h["round"] <= round]
        if model is None:
            model = keras.models.model_from_json(json.dumps(meta["model"]), custom_objects=custom_objects)
        ticket = cls(model, TicketConfig.from_dict(meta["config"]))
        if sorted(ticket.masked.kernels) != meta["kernels"]:
            raise TfLthError(f"{path} holds a ticket of another architecture (kernels {meta['kernels']})")
        ticket.round, ticket.history = meta["round"], meta["history"]
        ticket.steps = {int(r): s for r, s in meta.get("steps", {}).items() if int(r) <= ticket.round}
        ticket.theta0 = _unnumbered(read_npz(path / "theta0.npz"), len(ticket.theta0), path / "theta0.npz")
        if (path / "thetak.npz").exists():
            ticket.thetak = _unnumbered(read_npz(path / "thetak.npz"), len(ticket.theta0), path / "thetak.npz")
        previous = path / "rounds" / str(ticket.round - 1) / "weights.npz"
        if ticket.rewind.keeps_weights and ticket.round and previous.exists():
            ticket.start_weights = _unnumbered(read_npz(previous), len(ticket.theta0), previous)
        rd = path / "rounds" / str(ticket.round)
        masks = {k.replace("|", "/"): m for k, m in read_npz(rd / "masks.npz").items()}
        if sorted(masks) != meta["kernels"]:
            raise TfLthError(f"{rd / 'masks.npz'} does not hold the masks of {', '.join(meta['kernels'])}")
        ticket.set_masks(masks, _unnumbered(read_npz(rd / "weights.npz"), len(ticket.theta0), rd / "weights.npz"))
        return ticket


def _kind(layer) -> str:
    """A layer's kind for ``rates``: ``conv`` for every convolution, else its class name in lower case."""
    return "conv" if "conv" in type(layer).__name__.lower() else type(layer).__name__.lower()


CONTROLS = ("random_reinit", "random_mask")


def _saved_rounds(path: Path) -> list[str]:
    return sorted((p.parent.name for p in path.glob("rounds/*/masks.npz")), key=int)


def _numbered(arrays: list[np.ndarray]) -> dict[str, np.ndarray]:
    return {f"w{i}": a for i, a in enumerate(arrays)}


def _unnumbered(d: dict[str, np.ndarray], n: int, path) -> list[np.ndarray]:
    if sorted(d) != sorted(f"w{i}" for i in range(n)):
        raise TfLthError(f"{path} holds {len(d)} arrays, the model has {n} weights: wrong or damaged file")
    return [d[f"w{i}"] for i in range(n)]
