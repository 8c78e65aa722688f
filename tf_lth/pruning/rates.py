"""Prune rates per kernel (no TensorFlow): the config's ``rate``, overridden per layer kind or layer
name by ``rates``, the output layer at half unless ``rates`` says otherwise (Frankle & Carbin prune
LeNet's fc layers 20% per round and its output layer 10%).
"""
from __future__ import annotations

from typing import Mapping

from tf_lth.errors import TfLthError

DEFAULT_RATE = 0.2  # Frankle & Carbin's fc rate, when the config gives none


def kind(class_name: str) -> str:
    """A layer's kind for ``rates``: ``conv`` for every convolution, else its class name in lower case."""
    return "conv" if "conv" in class_name.lower() else class_name.lower()


def layer_rates(layers: Mapping[str, tuple[str, str]], outputs: set, rate: float | None,
                rates: Mapping[str, float] | None, layerwise: bool = True) -> dict[str, float]:
    """The rate of each kernel key of ``layers`` (key -> (layer name, kind)): ``rates[layer name]``,
    else for a layer in ``outputs`` under layerwise pruning ``rates["output"]`` or half its kind's
    rate, else ``rates[kind]`` or ``rate``. A key of ``rates`` that names no layer or kind here is a
    one-line error listing the valid ones."""
    rates, rate = dict(rates or {}), DEFAULT_RATE if rate is None else rate
    names = sorted({name for name, _ in layers.values()})
    kinds = sorted({k for _, k in layers.values()})
    unknown = sorted(set(rates) - {*names, *kinds, "output"})
    if unknown:
        raise TfLthError(f"rates key(s) {', '.join(unknown)} name no prunable layer or kind of this model: "
                         f"use a layer name ({', '.join(names)}) or a kind ({', '.join(kinds)}, output)")
    out = {}
    for key, (name, layer_kind) in layers.items():
        base = rates.get(layer_kind, rate)
        if name in rates:
            out[key] = rates[name]
        elif name in outputs and layerwise:
            out[key] = rates.get("output", base / 2)
        else:
            out[key] = base
    return out
