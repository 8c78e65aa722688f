"""What a Keras layer is to the channel groups (:mod:`tf_lth.pruning.groups`), told from its class name and
its config alone (pure Python: both flavours' ``graph.describe`` call :func:`node`).

A layer this module does not know becomes ``unknown``: the groups it touches keep all their channels.
"""
from __future__ import annotations

import math

from tf_lth.pruning.groups import Node

PRODUCERS = {"Dense", "Conv1D", "Conv2D", "Conv3D"}
DEPTHWISE = {"DepthwiseConv1D", "DepthwiseConv2D"}
ACTIVATIONS = {"ReLU", "LeakyReLU", "ELU", "ThresholdedReLU"}
PASS_THROUGH = {"Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D", "GaussianNoise",
                "GaussianDropout", "AlphaDropout", "ActivityRegularization", "Identity"}
SPATIAL = {f"{kind}{d}D" for d in (1, 2, 3) for kind in (
    "MaxPooling", "AveragePooling", "GlobalMaxPooling", "GlobalAveragePooling", "ZeroPadding", "Cropping",
    "UpSampling")} | {"MaxPool2D", "AvgPool2D", "GlobalAvgPool2D", "GlobalMaxPool2D"}
MERGES = {"Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum"}
MIXING = ("softmax", "log_softmax")  # activations that mix a layer's channels


def _known(shape) -> bool:
    return shape is not None and all(d is not None for d in shape)


def _activation(config) -> str | None:
    """The activation's name, or None when it is not a plain string (a custom function)."""
    value = config.get("activation", "linear")
    if isinstance(value, dict):  # Keras 3 may serialise a built-in activation as an object
        value = value.get("config", value.get("class_name")) if value.get("module", "").startswith("keras") else None
    return value if isinstance(value, str) else None


def _last_axis(axis, rank: int) -> bool:
    """``axis`` (an int or a one-element list, counting the batch axis) is the last of a ``rank``-d tensor."""
    if isinstance(axis, (list, tuple)) or type(axis).__name__ == "ListWrapper":
        axis = list(axis)
        if len(axis) != 1:
            return False
        axis = axis[0]
    return isinstance(axis, int) and axis in (-1, rank - 1)


def _scalar(value) -> bool:
    return value is None or isinstance(value, (int, float)) or (hasattr(value, "size") and value.size == 1)


def node(name: str, class_name: str, config: dict, inputs: list, in_shapes: list, out_shape, kernel: str | None = None,
         calls: int = 1) -> Node:
    """The :class:`Node` of one layer: ``class_name`` and ``config`` (its ``get_config()``), the layers
    feeding it (``inputs``), one example's shapes (``in_shapes``, ``out_shape``; no batch axis), the key
    of its kernel (``<layer>/<weight>``) and how many times the model calls it (``calls``)."""
    in_shapes = [tuple(s) if s is not None else None for s in in_shapes]
    out_shape = tuple(out_shape) if out_shape is not None else None
    made = Node(name, "unknown", list(inputs), in_shapes, out_shape, what=class_name)
    if class_name == "InputLayer":
        made.kind = "input"
        return made
    if calls != 1 or len(in_shapes) < 1 or not all(_known(s) for s in in_shapes) or not _known(out_shape):
        return made  # a shared layer, or one whose shapes are not known: unknown
    if config.get("data_format", "channels_last") != "channels_last":
        return made
    activation = _activation(config)
    first = in_shapes[0]
    if class_name in PRODUCERS and len(in_shapes) == 1 and config.get("groups", 1) == 1 and activation:
        units = config.get("units", config.get("filters"))
        if class_name == "Dense":
            spatial, positions = 1, math.prod(first[:-1])
        else:
            spatial, positions = math.prod(config["kernel_size"]), math.prod(out_shape[:-1])
        made.kind, made.units, made.kernel, made.spatial = "producer", int(units), kernel, int(spatial)
        made.macs = int(positions * spatial * first[-1] * units)
        made.fixed = f"ends in {activation}" if activation in MIXING else None
    elif class_name in DEPTHWISE and config.get("depth_multiplier", 1) == 1 and activation and activation not in MIXING:
        made.kind, made.kernel = "depthwise", kernel
        made.spatial = int(math.prod(config["kernel_size"]))
        made.macs = int(math.prod(out_shape[:-1]) * made.spatial * first[-1])
    elif class_name == "BatchNormalization" and _last_axis(config.get("axis", -1), len(first) + 1):
        made.kind, made.weighted = "channelwise", True
    elif class_name == "Activation" and activation and activation not in MIXING:
        made.kind = "channelwise"
    elif class_name in ACTIVATIONS | PASS_THROUGH | SPATIAL:
        made.kind = "channelwise"
    elif class_name == "Rescaling" and _scalar(config.get("scale")) and _scalar(config.get("offset")):
        made.kind = "channelwise"
    elif class_name == "Flatten" and len(in_shapes) == 1:
        made.kind = "flatten"
    elif class_name in MERGES and len({s[-1] for s in in_shapes}) == 1 and all(len(s) == len(first) for s in in_shapes):
        made.kind = "merge"
    elif class_name == "Concatenate" and _last_axis(config.get("axis", -1), len(out_shape) + 1):
        made.kind = "concat"
    if made.kind == "channelwise" and (len(in_shapes) != 1 or out_shape[-1] != first[-1]):
        made.kind = "unknown"
    return made


def opaque(names: list[str], what: str = "") -> dict:
    """Nodes for layers whose connections cannot be read (a subclassed model): each ``unknown``."""
    return {n: Node(n, "unknown", [], [], (), what=what or "a layer of a model tf-lth cannot read") for n in names}




def graph_config(model) -> dict | None:
    """A functional model's config (either flavour), or None (a subclassed model)."""
    try:
        config = model.get_config()
    except NotImplementedError:
        return None
    return config if config and "layers" in config and "output_layers" in config else None


def read(model, sequential: bool, chain, linked):
    """A model's Graph, by the flavour's readers: ``chain(model)`` for a Sequential, ``linked(model, config)``
    for a functional model, every layer ``unknown`` for a subclassed one (its graph cannot be read)."""
    from tf_lth.pruning.groups import Graph
    if sequential:
        return chain(model)
    config = graph_config(model)
    if config is None:
        return Graph(opaque([layer.name for layer in model.layers]), [])
    return linked(model, config)


__all__ = ["node", "opaque", "graph_config", "read", "PRODUCERS", "DEPTHWISE", "MERGES"]
