"""A ticket shrunk into a smaller dense model: the units nobody reads removed (issue 24).

A channel of a group (:mod:`tf_lth.pruning.groups`) is removed exactly when no consumer reads it: every
input row of that channel is masked in every layer that reads the group. The smaller model then computes
the same function as the masked one: what the removed channel carried (its bias, its BatchNormalization
beta, ...) was multiplied by zero rows downstream. A structured ticket (whole units masked) loses its
masked units; a weight-level ticket goes through the same test and loses only the channels nobody reads.
A fixed group keeps all its channels.

The model is read by its flavour (``<flavour>.graph.describe``, through the :class:`Flavour` record) and
rebuilt from its config in that flavour's Keras (public calls only): this module imports no Keras.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from tf_lth.pruning import groups as channel_groups
from tf_lth.ticket import flavours


@dataclass
class ShrinkPlan:
    """What :func:`shrink_model` did: ``units`` (producer layer -> (kept, total) units or filters),
    ``macs`` (layer -> (kept, dense) multiply-adds of one example), ``params`` ((kept, dense) parameters,
    non-trainable ones included) and ``fixed`` ((reason, layers) of each group that keeps all its channels)."""

    units: dict = field(default_factory=dict)
    macs: dict = field(default_factory=dict)
    params: tuple = (0, 0)
    fixed: list = field(default_factory=list)

    @property
    def total_macs(self) -> tuple[int, int]:
        return sum(k for k, _ in self.macs.values()), sum(d for _, d in self.macs.values())

    def summary(self) -> str:
        kept, dense = self.total_macs
        lines = [f"parameters {self.params[0]:,} of {self.params[1]:,}; multiply-adds {kept:,} of {dense:,}"]
        lines += [f"  {name}: {k} of {n} units" for name, (k, n) in self.units.items() if k < n]
        lines += [f"  kept whole: {', '.join(layers)} ({why})" for why, layers in self.fixed]
        return "\n".join(lines)


def _sliced(graph, values: dict, layer: str, out_keep, channel_keep, rows_gone) -> dict:
    """``values`` (weight name -> array) of ``layer`` with its removed units, channels and input rows cut."""
    node = graph.nodes[layer]
    kernel = node.kernel[len(layer) + 1:] if node.kernel else None
    values = dict(values)
    for name, value in values.items():
        value = np.asarray(value)
        if name == kernel and rows_gone is not None and node.kind == "producer":
            value = np.delete(value, rows_gone, axis=-2)
        for keep, axis in ((out_keep, -1), (channel_keep, -2)):  # a depthwise kernel: [h, w, channels, 1]
            if keep is None:
                continue
            if name == kernel:
                value = np.compress(keep, value, axis=axis)
            elif value.ndim == 1 and value.shape[0] == keep.size:
                value = value[keep]
        values[name] = value
    return values


def _weight_name(variable) -> str:
    """``kernel``, ``gamma``, ...: a variable's own name in either flavour (tf_keras: ``dense/kernel:0``)."""
    return variable.name.split(":")[0].split("/")[-1]


def layer_weights(model, names) -> dict:
    """Layer name -> {weight name: value} for the layers ``names`` (public Keras calls, either flavour)."""
    found = {}
    for name in names:
        layer = model.get_layer(name)
        found[name] = {_weight_name(w): v for w, v in zip(layer.weights, layer.get_weights())}
    return found


def rebuild(keras, model, units: dict, changed: dict):
    """A new model of ``keras`` (the model's flavour's) like ``model`` with ``units[layer]`` units (Dense) or
    filters (convolutions), holding ``changed[layer]`` (weight name -> value) where given and ``model``'s
    weights everywhere else: the config with the new widths (stale ``build_config`` shapes dropped), rebuilt."""
    from tf_lth.errors import TfLthError
    from tf_lth.pruning import layer_kinds
    sequential = isinstance(model, keras.Sequential)
    config = model.get_config() if sequential else layer_kinds.graph_config(model)
    if config is None:
        if units:
            raise TfLthError(f"{model.name} is a subclassed model: tf-lth cannot rebuild it with fewer units")
        return model
    for entry in config["layers"]:
        entry.pop("build_config", None)
        entry_config = entry["config"]
        if entry_config["name"] in units:
            entry_config["units" if "units" in entry_config else "filters"] = int(units[entry_config["name"]])
    try:
        new = (keras.Sequential if sequential else keras.Model).from_config(config)
    except Exception as error:  # noqa: BLE001  (custom layers without their classes, ...)
        raise TfLthError(f"cannot rebuild {model.name} from its config: {error}".splitlines()[0]) from error
    for layer in model.layers:
        target = new.get_layer(layer.name)
        if layer.name in changed:
            target.set_weights([np.asarray(changed[layer.name][_weight_name(w)]) for w in target.weights])
        elif layer.weights:
            target.set_weights(layer.get_weights())
    return new


def shrink_model(model, masks: dict):
    """``(shrunk, plan)``: ``model`` (a plain Keras model of either flavour holding the ticket's weights,
    pruned entries zero) without the channels no consumer reads under ``masks`` (kernel key -> bool array),
    as a smaller dense model of the same flavour, and the :class:`ShrinkPlan`."""
    flavour = flavours.of_model(model)
    graph = flavour.describe(model)
    groups = channel_groups.find(graph, set(masks))
    kept = channel_groups.read_channels(groups, masks)
    plan = ShrinkPlan()
    out_keep, channel_keep, rows_gone = {}, {}, {}
    for g in groups:
        keep = kept[g.index]
        if g.fixed:
            plan.fixed.append((g.fixed, g.layers()))
        for m in g.members:
            if m.role == "out":
                plan.units[m.layer] = (int(keep.sum()), g.size)
            if keep.all():
                continue
            if m.role == "out":
                out_keep[m.layer] = keep
            elif m.role == "channel":
                channel_keep[m.layer] = keep
            else:
                rows_gone.setdefault(m.layer, []).extend(m.rows[:, ~keep].ravel().tolist())
    touched = list(dict.fromkeys([*out_keep, *channel_keep, *rows_gone]))
    values = layer_weights(model, touched)
    changed = {layer: _sliced(graph, values[layer], layer, out_keep.get(layer), channel_keep.get(layer),
                              sorted(rows_gone[layer]) if layer in rows_gone else None) for layer in touched}
    units = {layer: plan.units[layer][0] for layer in out_keep}
    shrunk = rebuild(flavour.keras, model, units, changed)
    dense, small = channel_groups.macs(graph, groups), channel_groups.macs(graph, groups, kept)
    plan.macs = {layer: (small[layer], dense[layer]) for layer in dense}
    plan.params = (int(shrunk.count_params()), int(model.count_params()))
    return shrunk, plan


__all__ = ["ShrinkPlan", "shrink_model"]


# -- a ticket shrunk, and its export format ``shrunk`` ------------------------------------------------------
TOLERANCE = 1e-5  # the shrunk model's outputs agree with the ticket's within this times max |output|


def zero_masks(model) -> dict:
    """Masks read off a plain model's weights: every Dense / convolution kernel entry that is not zero."""
    graph = flavours.of_model(model).describe(model)
    keys = [node.kernel for node in graph.nodes.values() if node.kernel]
    values = layer_weights(model, [key.split("/")[0] for key in keys])
    return {key: np.asarray(values[key.split("/")[0]][key.split("/", 1)[1]]) != 0 for key in keys}


def ticket_model(ticket, round: int | None = None) -> tuple:
    """``(plain model, masks, round)`` of what to shrink: a LotteryTicket's last trained round (or ``round``),
    as :func:`tf_lth.export.export_ticket` picks it, or a plain model with masks read off its zeros."""
    from tf_lth.ticket.ticket import LotteryTicket
    if isinstance(ticket, LotteryTicket):
        trained_round, masks, weights = ticket.trained_weights(round)
        return ticket.masked.plain_copy(weights), masks, trained_round
    return ticket, zero_masks(ticket), round


def shrink_ticket(ticket, round: int | None = None) -> tuple:
    """``(shrunk model, ShrinkPlan)`` of a :class:`~tf_lth.LotteryTicket` (its last trained round) or a plain model."""
    model, masks, _ = ticket_model(ticket, round)
    return shrink_model(model, masks)


def shrink(ticket, round: int | None = None):
    """The ticket as an ordinary, smaller dense Keras model of its own flavour: every unit (Dense neuron,
    convolution filter) that no layer reads any more is gone, with its kernel column, bias,
    BatchNormalization statistics and the next layers' input rows, so the model computes the same
    function as the masked ticket. A structured ticket (``granularity="unit"`` or ``"refill"``) loses every
    unit it pruned; a weight-level ticket only units whose every outgoing weight was pruned.

    ``ticket``: a :class:`~tf_lth.LotteryTicket` (its last trained round, also after ``next_round``; or
    ``round``) or a plain Keras model (units whose outgoing weights are all zero go)."""
    return shrink_ticket(ticket, round)[0]


def agreement(ticket_model_, shrunk, x) -> dict:
    """How far the shrunk model's outputs are from the ticket's on ``x``: max |difference| and its bound."""
    from tf_lth.export.checks import outputs_of
    a, b = outputs_of(ticket_model_, x), outputs_of(shrunk, x)
    diff, bound = float(np.max(np.abs(a - b))), TOLERANCE * max(float(np.max(np.abs(a))), 1e-12)
    return {"max_abs_output_diff_vs_ticket": diff, "tolerance": bound, "passed": diff <= bound,
            "argmax_agreement": float(np.mean(a.argmax(-1) == b.argmax(-1)))}


def plan_report(plan: ShrinkPlan) -> dict:
    """ticket.json's ``shrunk`` figures of a :class:`ShrinkPlan`."""
    kept, dense = plan.total_macs
    return {"units": {k: list(v) for k, v in plan.units.items()}, "macs": {k: list(v) for k, v in plan.macs.items()},
            "macs_total": [kept, dense], "macs_remaining": round(kept / dense, 6) if dense else None,
            "params": list(plan.params), "kept_whole": [{"layers": layers, "why": why} for why, layers in plan.fixed]}


def compute_table(info: dict) -> list[dict]:
    """Per exported file, what it costs against the dense model's fp32 file of the same export: parameters,
    multiply-adds of one example, bytes and TFLite latency at each benchmarked batch (XNNPACK or the
    resolver the file runs on, one thread). A sparse file computes the dense MACs (no kernel skips its
    zeros, 1x4 Dense blocks aside); a shrunk file computes only its units'."""
    dense = info.get("dense", {})
    dense_lat = dense.get("latency_us", {})
    dense_lat = dense_lat.get("AUTO", dense_lat.get("BUILTIN_WITHOUT_DEFAULT_DELEGATES", {}))
    shrunk = info.get("shrunk", {})
    macs_dense = shrunk.get("macs_total", [None, None])[1]
    rows = [{"file": "(dense fp32)", "params": info["parameters"]["total"], "macs": macs_dense,
             "bytes": dense.get("bytes"), "latency_us": dense_lat}]
    sources = [(info.get("formats", {}), info["parameters"]["nonzero"], macs_dense)]
    if shrunk:
        nonzero = shrunk.get("parameters", {}).get("nonzero", shrunk["params"][0])  # non-zeros, as for the files above
        sources.append((shrunk.get("formats", {}), nonzero, shrunk["macs_total"][0]))
    for formats, params, macs in sources:
        for kind, r in formats.items():
            if "bytes" not in r:
                continue
            rows.append({"file": r.get("path", kind), "format": kind, "params": params, "macs": macs,
                         "bytes": r["bytes"], "latency_us": r.get("latency_us", {})})
    for row in rows:
        row["vs_dense"] = {  # fractions of the dense file's parameters, MACs and bytes; its latency over this file's
            "params": _ratio(row["params"], rows[0]["params"]), "macs": _ratio(row["macs"], macs_dense),
            "bytes": _ratio(row["bytes"], rows[0]["bytes"]),
            **{f"speedup_{b}": _ratio(dense_lat.get(b), t) for b, t in row["latency_us"].items()}}
    return rows


def _ratio(a, b):
    """``a / b`` to 4 decimals, None where either is unknown."""
    if not a or not b:
        return None
    return round(a / b, 4)


__all__ += ["shrink", "shrink_ticket", "ticket_model", "zero_masks", "agreement", "plan_report", "compute_table",
            "TOLERANCE"]
