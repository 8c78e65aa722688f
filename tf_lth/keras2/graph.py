"""A tf_keras model's layer graph for the channel groups (:mod:`tf_lth.pruning.groups`), and a model rebuilt
with fewer units (:func:`rebuild`, what :func:`tf_lth.export.shrink.shrink_model` makes a smaller model with).

The graph is read through public API only: a functional model's ``get_config()`` (its ``inbound_nodes``:
``[[layer, node, tensor, kwargs], ...]`` per call; node indices there count this model's calls only), each
layer's output shape (its ``output``, or ``compute_output_shape`` for a layer another model calls too); a
Sequential model is a chain. A subclassed model's connections cannot be read: every layer is ``unknown``.
"""
from __future__ import annotations

from tf_lth.keras2 import keras
from tf_lth.pruning import layer_kinds
from tf_lth.pruning.groups import Graph


def _references(obj, found: list) -> list:
    """Every ``[layer, node, tensor, ...]`` reference inside an inbound node, in order."""
    if isinstance(obj, (list, tuple)):
        if len(obj) >= 3 and isinstance(obj[0], str) and isinstance(obj[1], int) and isinstance(obj[2], int):
            found.append((obj[0], obj[1], obj[2]))
        else:
            for item in obj:
                _references(item, found)
    elif isinstance(obj, dict):
        for item in obj.values():
            _references(item, found)
    return found


def _shape(tensor):
    return None if tensor is None else tuple(tensor.shape[1:])


def kernel_key(layer) -> str | None:
    """The key of ``layer``'s kernel as tickets name it (``conv1/kernel``, ``dw/depthwise_kernel``), or None."""
    weight = getattr(layer, "depthwise_kernel", None)
    weight = getattr(layer, "kernel", None) if weight is None else weight
    if weight is None or not hasattr(weight, "name"):
        return None
    return f"{layer.name}/{weight.name.split(':')[0].split('/')[-1]}"


def _node(layer, inputs, in_shapes, out_shape, calls=1):
    return layer_kinds.node(layer.name, type(layer).__name__, layer.get_config(), inputs, in_shapes, out_shape,
                            kernel_key(layer), calls)


def _sequential(model) -> Graph:
    first = f"{model.name}:input"
    try:
        shape = tuple(model.input_shape[1:])
    except (AttributeError, ValueError, RuntimeError):
        shape = None
    nodes = {first: layer_kinds.node(first, "InputLayer", {}, [], [], shape)}
    previous = first
    for layer in model.layers:
        out = _out_shape(layer, [shape])
        nodes[layer.name] = _node(layer, [previous], [shape], out)
        previous, shape = layer.name, out
    return Graph(nodes, [previous])


def _out_shape(layer, in_shapes):
    """One example's output shape of ``layer``: its output tensor's where it has one call, else what it
    computes from ``in_shapes`` (a layer shared with another model); None where neither says."""
    try:
        out = layer.output
        if not isinstance(out, (list, tuple)):
            return _shape(out)
    except (AttributeError, ValueError, RuntimeError):
        pass
    if not in_shapes or any(s is None for s in in_shapes):
        return None
    try:
        batched = [(None, *s) for s in in_shapes]
        out = layer.compute_output_shape(batched[0] if len(batched) == 1 else batched)
        out = out.as_list() if hasattr(out, "as_list") else list(out)
    except Exception:  # noqa: BLE001  (a layer that cannot say: unknown)
        return None
    return tuple(out[1:]) if all(d is None or isinstance(d, int) for d in out) else None


def _linked(model, config) -> Graph:
    entries, outputs = config["layers"], _references(config["output_layers"], [])
    shapes = {ref[0]: _shape(t) for ref, t in zip(_references(config["input_layers"], []), model.inputs)}
    nodes = {}
    for entry in entries:
        name = entry["config"]["name"]
        layer = model.get_layer(name)
        reads = [ref[0] for ref in _references(entry["inbound_nodes"], [])]
        in_shapes = [shapes.get(n) for n in reads]
        shapes.setdefault(name, _out_shape(layer, in_shapes))
        nodes[name] = _node(layer, list(dict.fromkeys(reads)), in_shapes, shapes[name], max(1, len(entry["inbound_nodes"])))
    return Graph(nodes, list(dict.fromkeys(r[0] for r in outputs)))


def describe(model) -> Graph:
    """The :class:`~tf_lth.pruning.groups.Graph` of a built tf_keras model (Sequential, functional or, with
    every layer ``unknown``, subclassed)."""
    return layer_kinds.read(model, isinstance(model, keras.Sequential), _sequential, _linked)


__all__ = ["describe", "kernel_key"]
