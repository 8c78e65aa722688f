"""``LotteryTicket``: iterative magnitude pruning with rewinding on TF-MOT's pruning wrappers.

The user's model is wrapped with TF-MOT's ``PruneLowMagnitude`` (a :class:`~tf_lth.schedules.FrozenMask`
schedule, so TF-MOT never changes a mask), θ0 is recorded, and each :meth:`next_round` prunes by
the criterion, rewinds the weights, writes the masks into the wrappers' ``pruning_vars`` and resets
the optimizer. Every pruned kernel carries a mask constraint that the Keras optimizer applies after
each update, so pruned weights are exactly zero after every batch and in every checkpoint.
"""
from __future__ import annotations

import inspect
import json
import zlib
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from tf_lth import masks as masks_lib
from tf_lth._keras import keras, require_graph_model, tf
from tf_lth.callbacks import TicketCallback, accuracy
from tf_lth.errors import TfLthError
from tf_lth.io import read_json, read_npz, write_json, write_npz
from tf_lth.rewind import PRUNED, SURVIVORS, Rewind, survivor_values
from tf_lth.schedules import FrozenMask
from tensorflow_model_optimization.python.core.sparsity.keras import prune_registry, prunable_layer
from tensorflow_model_optimization.python.core.sparsity.keras.pruning_wrapper import PruneLowMagnitude

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


def _short(variable) -> str:
    return variable.name.split("/")[-1].split(":")[0]


def _prunable(layer) -> bool:
    if isinstance(layer, prunable_layer.PrunableLayer):
        return True
    return prune_registry.PruneRegistry.supports(layer) and bool(prune_registry.PruneRegistry._weight_names(layer))


@keras.utils.register_keras_serializable(package="tf_lth")
class _FrozenWrapper(PruneLowMagnitude):
    """TF-MOT's pruning wrapper, for rounds whose masks never change.

    TF-MOT's ``call`` counts the step and asks the schedule for a mask update at every training
    step (a conditional top-k that XLA compiles all the same), then assigns ``weight * mask`` before
    every forward pass. Here masks change only between rounds and the mask constraint zeroes pruned
    weights after every update (:class:`TicketCallback` masks them when training begins), and the
    step only feeds the schedule, so ``call`` just runs the layer: the compiled step is the plain
    model's.
    """

    def call(self, inputs, training=None, **kwargs):
        if "training" in inspect.getfullargspec(self.layer.call).args:
            kwargs["training"] = training
        return self.layer.call(inputs, **kwargs)


class _KeepMasked:
    """Kernel constraint the Keras optimizer applies right after each update: pruned entries go
    back to zero (``w * mask``) or, with ``frozen``, to their frozen initial values."""

    def __init__(self, mask, previous=None, frozen=None):
        self.mask, self.previous, self.frozen = mask, previous, frozen

    def __call__(self, w):
        if self.previous is not None:
            w = self.previous(w)
        keep = tf.cast(self.mask, w.dtype)
        return w * keep if self.frozen is None else w * keep + self.frozen * (1 - keep)


@dataclass
class _Weights:
    """The variables of the wrapped model in a fixed order, and which of them are pruned."""

    variables: list
    kernels: dict = field(default_factory=dict)  # key -> index into variables
    keep_vars: dict = field(default_factory=dict)  # key -> mask the constraint applies
    frozen_vars: dict = field(default_factory=dict)  # key -> values of pruned weights (pruned="frozen")
    layers: dict = field(default_factory=dict)  # key -> inner layer

    def snapshot(self) -> list[np.ndarray]:
        return [v.numpy() for v in self.variables]

    def assign(self, values) -> None:
        for v, a in zip(self.variables, values):
            v.assign(a)


class LotteryTicket:
    """Find a winning ticket of ``model`` with ``model.fit``.

    ``ticket.model`` is ``model`` with its prunable layers wrapped by TF-MOT (it shares their
    variables); compile and fit it with ``callbacks=[ticket.callback()]``, then call
    :meth:`next_round` to prune and rewind. ``options`` override fields of ``config``.
    """

    def __init__(self, model, config: TicketConfig | None = None, **options):
        self.config = replace(config or TicketConfig(), **options)
        self.rewind = Rewind.parse(self.config.rewind)
        require_graph_model(model)
        self.source = model
        names = {layer.name for layer in model.layers if _prunable(layer) and layer.weights}
        if not names:
            raise TfLthError(
                f"{model.name} has no layer TF-MOT can prune (Dense, Conv, Embedding, ...): nothing to find a ticket in")
        self.unpruned_layers = [layer.name for layer in model.layers if layer.trainable_weights and layer.name not in names]
        with model.distribute_strategy.scope():
            self.model = keras.models.clone_model(
                model, clone_function=lambda layer: self._wrap(layer) if layer.name in names else layer)
            self._w = self._collect(frozen=self.config.pruned == "frozen")
        unknown = set(self.config.ignore) - {self._w.layers[k].name for k in self._w.kernels}
        if unknown:
            raise TfLthError(f"ignore names unknown prunable layer(s) {', '.join(sorted(unknown))}")
        self.round = 0
        self.theta0 = self._w.snapshot()
        self.thetak: list[np.ndarray] | None = None
        self.masks = {k: np.ones(self._w.variables[i].shape, bool) for k, i in self._w.kernels.items()}
        self.history: list[dict] = []
        self.rates = self._resolve_rates()

    # -- wrapping -------------------------------------------------------------------------
    def _wrap(self, layer):
        return _FrozenWrapper(layer, pruning_schedule=FrozenMask())

    def _collect(self, frozen: bool) -> _Weights:
        w = _Weights([])
        for layer in self.model.layers:
            inner = layer.layer if isinstance(layer, PruneLowMagnitude) else layer
            index = {id(v): len(w.variables) + j for j, v in enumerate(inner.weights)}
            w.variables.extend(inner.weights)
            if isinstance(layer, PruneLowMagnitude):
                for weight, mask, _ in layer.pruning_vars:
                    key = f"{inner.name}/{_short(weight)}"
                    w.kernels[key], w.layers[key] = index[id(weight)], inner
                    if frozen:  # TF-MOT's mask stays all ones; the constraint keeps pruned values at θ0
                        w.keep_vars[key] = tf.Variable(tf.ones_like(mask), trainable=False)
                        w.frozen_vars[key] = tf.Variable(tf.zeros_like(weight), trainable=False)
                    else:
                        w.keep_vars[key], w.frozen_vars[key] = mask, None
                    constraint = _KeepMasked(w.keep_vars[key], weight.constraint, w.frozen_vars[key])
                    for component in getattr(weight, "_values", None) or (weight,):  # tf.distribute replicas
                        component._constraint = constraint
        return w

    def _resolve_rates(self) -> dict[str, float]:
        rates, out = self.config.rates or {}, {}
        outputs = set(self.source.output_names)
        for key, layer in self._w.layers.items():
            kind = "conv" if "conv" in type(layer).__name__.lower() else type(layer).__name__.lower()
            base = rates.get(kind, self.config.rate)
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
        return [k for k in sorted(self.masks) if self._w.layers[k].name not in self.config.ignore]

    def target_counts(self, round_: int) -> dict[str, int]:
        """Weights each pruned kernel keeps after ``round_`` rounds: ``size * (1 - rate) ** round``."""
        return {k: int(round(self.masks[k].size * (1 - self.rates[k]) ** round_)) for k in self._pruned_keys()}

    def next_round(self) -> None:
        """Prune by the criterion, rewind the survivors, reset the optimizer: the next round is ready."""
        if self.rewind.mode == "iteration" and self.thetak is None:
            raise TfLthError(
                f"rewind {self.rewind} needs θk: train round 0 with ticket.callback() for at least "
                f"{self.rewind.iteration} steps before next_round()")
        final = self._w.snapshot()
        keys = self._pruned_keys()
        w0 = {k: self.theta0[self._w.kernels[k]] for k in keys}
        wf = {k: final[self._w.kernels[k]] for k in keys}
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
        self.round += 1
        source = final if self.rewind.keeps_weights else (self.thetak if self.rewind.mode == "iteration" else self.theta0)
        self._rewind_to(source)
        self.reset_optimizer()

    def get_weights(self) -> list[np.ndarray]:
        """Every variable of the wrapped model's layers, in :attr:`theta0` order (masks excluded)."""
        return self._w.snapshot()

    def set_weights(self, values: list[np.ndarray]) -> None:
        """Restore what :meth:`get_weights` returned (e.g. from a checkpoint); masks are unchanged."""
        self._w.assign(values)

    def _rewind_to(self, source: list[np.ndarray]) -> None:
        """Write masks into the wrappers and ``source`` (survivors per the action) into the kernels."""
        values = list(source)
        rng = self._rng("survivors")
        fresh = self.fresh_values(self._rng("reinit").integers(2**31)) if self.config.survivors == "reinit" else None
        for k, i in self._w.kernels.items():
            values[i] = survivor_values(self.config.survivors, self.theta0[i], self.masks[k], source[i],
                                        None if fresh is None else fresh[i], rng)
            if self._w.frozen_vars[k] is not None:
                values[i] = np.where(self.masks[k], values[i], self.theta0[i])
        self._write_masks()
        self._w.assign(values)

    def _write_masks(self) -> None:
        """Masks into the variables the wrappers and constraints read (no weight changes)."""
        for k, m in self.masks.items():
            self._w.keep_vars[k].assign(m.astype(np.float32))
            if self._w.frozen_vars[k] is not None:
                self._w.frozen_vars[k].assign(self.theta0[self._w.kernels[k]])

    def set_masks(self, masks: dict, weights: list | None = None) -> None:
        """Replace the masks (and optionally all weights, in :attr:`theta0` order) of this ticket."""
        if sorted(masks) != sorted(self.masks):
            raise TfLthError(f"masks must have exactly the keys {', '.join(sorted(self.masks))}")
        self.masks = {k: np.asarray(m, bool).reshape(self.masks[k].shape) for k, m in masks.items()}
        self._write_masks()
        values = self._w.snapshot() if weights is None else list(weights)
        for k, i in self._w.kernels.items():
            base = self.theta0[i] if self._w.frozen_vars[k] is not None else 0
            values[i] = np.where(self.masks[k], values[i], base).astype(values[i].dtype)
        self._w.assign(values)

    def reset_optimizer(self, current: int | None = None) -> None:
        """Fresh optimizer state (moments to zero); the step restarts as the rewind mode says
        (``current``: the step the last round ended at, by default the optimizer's own)."""
        opt = self.model.optimizer
        if opt is None:
            return
        if current is None:
            current = int(opt.iterations.numpy())
        for v in (opt.variables() if callable(opt.variables) else opt.variables):
            v.assign(tf.zeros_like(v))
        opt.iterations.assign(self.rewind.optimizer_iteration(current) if self.round else 0)

    def fresh_values(self, seed: int) -> list[np.ndarray]:
        """A new draw of every weight from its layer's initializer (the random-reinit control)."""
        out = []
        for j, v in enumerate(self._w.variables):
            layer = next(lay for lay in self._inner_layers() if any(v is w for w in lay.weights))
            init = getattr(layer, f"{_short(v)}_initializer", None)
            if init is None:
                out.append(self.theta0[j])
                continue
            cfg = init.get_config()
            if "seed" in cfg:
                init = type(init).from_config({**cfg, "seed": int(seed) + j})
            out.append(np.asarray(init(v.shape, v.dtype)))
        return out

    def _inner_layers(self):
        return [lay.layer if isinstance(lay, PruneLowMagnitude) else lay for lay in self.model.layers]

    def control(self, kind: str, seed: int | None = None) -> "LotteryTicket":
        """A control for the current round: ``random_reinit`` (same masks, new initial weights)
        or ``random_mask`` (θ0 under random masks of the same per-layer sparsity)."""
        if kind not in CONTROLS:
            raise TfLthError(f"unknown control {kind!r}: choose one of {', '.join(CONTROLS)}")
        seed = self.config.seed + 1 if seed is None else seed
        with self.source.distribute_strategy.scope():
            twin = LotteryTicket(keras.models.clone_model(self.source), self.config)
        twin.round = self.round
        rng = np.random.default_rng([seed, self.round, zlib.crc32(kind.encode())])
        if kind == "random_reinit":
            twin.theta0 = twin.fresh_values(rng.integers(2**31))
            twin.masks = {k: m.copy() for k, m in self.masks.items()}
        else:
            twin.theta0 = list(self.theta0)
            keys = self._pruned_keys()
            twin.masks = {**self.masks, **masks_lib.random_like({k: self.masks[k] for k in keys}, rng)}
        twin._rewind_to(twin.theta0)
        return twin

    def supermask_accuracy(self, data, survivors: str = "signed_constant") -> float:
        """Accuracy of the untrained masked network (Zhou et al.'s supermask): the current masks over
        θ0 (``"original"``) or over sign(θ0)·σ (``"signed_constant"``); the weights are restored after."""
        trained = self._w.snapshot()
        values = list(self.theta0)
        rng = self._rng("supermask")
        for k, i in self._w.kernels.items():
            values[i] = survivor_values(survivors, self.theta0[i], self.masks[k], self.theta0[i], None, rng)
        try:
            self._w.assign(values)
            return accuracy(self.model, data)
        finally:
            self._w.assign(trained)

    # -- what a round records ------------------------------------------------------------
    def _needs_thetak(self) -> bool:
        return self.rewind.mode == "iteration" and self.thetak is None and self.round == 0

    def _record_thetak(self) -> None:
        if self.thetak is None:
            self.thetak = self._w.snapshot()

    def _finish_round(self, metrics: dict, curve: list[dict]) -> None:
        entry = {"round": self.round, "weights_remaining": self.weights_remaining, **metrics, "curve": curve}
        self.history = [h for h in self.history if h["round"] != self.round] + [entry]

    @property
    def weights_remaining(self) -> float:
        """Fraction of the prunable weights still alive."""
        return masks_lib.remaining(self.masks)

    def sparsity(self) -> dict[str, float]:
        """Fraction of zeros per pruned kernel, by weight key."""
        return masks_lib.sparsity(self.masks)

    def kernel(self, key: str) -> np.ndarray:
        """Current value of the kernel ``key`` (e.g. ``"fc1/kernel"``)."""
        return self._w.variables[self._w.kernels[key]].numpy()

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
        write_npz(rd / "weights.npz", _numbered(self._w.snapshot()))
        write_json(path / "ticket.json", {
            "round": self.round, "config": asdict(self.config), "history": self.history,
            "kernels": sorted(self._w.kernels), "model": json.loads(self.source.to_json()),
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
        if sorted(ticket._w.kernels) != meta["kernels"]:
            raise TfLthError(f"{path} holds a ticket of another architecture (kernels {meta['kernels']})")
        ticket.round, ticket.history = meta["round"], meta["history"]
        ticket.theta0 = _unnumbered(read_npz(path / "theta0.npz"), len(ticket.theta0), path / "theta0.npz")
        if (path / "thetak.npz").exists():
            ticket.thetak = _unnumbered(read_npz(path / "thetak.npz"), len(ticket.theta0), path / "thetak.npz")
        rd = path / "rounds" / str(ticket.round)
        masks = {k.replace("|", "/"): m for k, m in read_npz(rd / "masks.npz").items()}
        if sorted(masks) != meta["kernels"]:
            raise TfLthError(f"{rd / 'masks.npz'} does not hold the masks of {', '.join(meta['kernels'])}")
        ticket.set_masks(masks, _unnumbered(read_npz(rd / "weights.npz"), len(ticket.theta0), rd / "weights.npz"))
        return ticket


CONTROLS = ("random_reinit", "random_mask")


def _saved_rounds(path: Path) -> list[str]:
    return sorted((p.parent.name for p in path.glob("rounds/*/masks.npz")), key=int)


def _numbered(arrays: list[np.ndarray]) -> dict[str, np.ndarray]:
    return {f"w{i}": a for i, a in enumerate(arrays)}


def _unnumbered(d: dict[str, np.ndarray], n: int, path) -> list[np.ndarray]:
    if sorted(d) != sorted(f"w{i}" for i in range(n)):
        raise TfLthError(f"{path} holds {len(d)} arrays, the model has {n} weights: wrong or damaged file")
    return [d[f"w{i}"] for i in range(n)]
