"""A Keras 3 model's layer graph for the channel groups (:mod:`tf_lth.pruning.groups`), and a model rebuilt
with fewer units (:func:`rebuild`, what :func:`tf_lth.export.shrink.shrink_model` makes a smaller model with).

The graph is read through public API only: a functional model's ``get_config()`` (each call's
``inbound_nodes``: ``{"args": [...], "kwargs": {...}}`` holding ``__keras_tensor__`` references with their
``keras_history`` and shape); a Sequential model is a chain. A subclassed model's connections cannot be
read: every layer is ``unknown``, so nothing is removed.
"""
from __future__ import annotations

from tf_lth.keras3 import keras
from tf_lth.pruning import layer_kinds
from tf_lth.pruning.groups import Graph


def _references(obj, found: list) -> list:
    """Every tensor reference inside an inbound node: ``((layer, node, tensor), shape)``, in order."""
    if isinstance(obj, dict):
        if obj.get("class_name") == "__keras_tensor__":
            history, shape = obj["config"]["keras_history"], obj["config"].get("shape")
            found.append((tuple(history[:3]), None if shape is None else tuple(shape[1:])))
        else:
            for item in obj.values():
                _references(item, found)
    elif isinstance(obj, (list, tuple)):
        for item in obj:
            _references(item, found)
    return found


def kernel_key(layer) -> str | None:
    """The key of ``layer``'s kernel as tickets name it (``conv1/kernel``), or None."""
    weight = getattr(layer, "kernel", None)
    return None if weight is None or not hasattr(weight, "name") else f"{layer.name}/{weight.name}"


def _node(layer, inputs, in_shapes, out_shape, calls=1):
    try:
        config = layer.get_config()
    except NotImplementedError:  # a custom layer without get_config: unknown anyway
        config = {}
    return layer_kinds.node(layer.name, type(layer).__name__, config, inputs, in_shapes, out_shape,
                            kernel_key(layer), calls)


def _sequential(model) -> Graph:
    first = f"{model.name}:input"
    try:
        shape = tuple(model.inputs[0].shape[1:])
    except (AttributeError, ValueError, IndexError, TypeError):
        shape = None
    nodes = {first: layer_kinds.node(first, "InputLayer", {}, [], [], shape)}
    previous = first
    for layer in model.layers:
        try:
            out = tuple(layer.compute_output_shape((None, *shape)))[1:] if shape is not None else None
        except Exception:  # noqa: BLE001  (a layer that cannot say: unknown)
            out = None
        nodes[layer.name] = _node(layer, [previous], [shape], out)
        previous, shape = layer.name, out
    return Graph(nodes, [previous])


def _outputs(config) -> list[tuple]:
    found = config["output_layers"]
    return [tuple(found[:3])] if found and isinstance(found[0], str) else [tuple(r[:3]) for r in found]


def _linked(model, config) -> Graph:
    entries = config["layers"]
    shapes, reads = {}, {}
    for entry in entries:
        found = _references(entry["inbound_nodes"], [])
        reads[entry["name"]] = [ref[0] for ref, _ in found]
        for ref, shape in found:
            shapes.setdefault(ref[0], shape)
    outputs = _outputs(config)
    for ref, tensor in zip(outputs, model.outputs):
        shapes.setdefault(ref[0], tuple(tensor.shape[1:]))
    for tensor, entry in zip(model.inputs, [e for e in entries if e["class_name"] == "InputLayer"]):
        shapes.setdefault(entry["name"], tuple(tensor.shape[1:]))
    nodes = {}
    for entry in entries:
        name = entry["name"]
        inputs = reads[name]
        nodes[name] = _node(model.get_layer(name), list(dict.fromkeys(inputs)), [shapes.get(n) for n in inputs],
                            shapes.get(name), max(1, len(entry["inbound_nodes"])))
    return Graph(nodes, list(dict.fromkeys(r[0] for r in outputs)))


def describe(model) -> Graph:
    """The :class:`~tf_lth.pruning.groups.Graph` of a built Keras 3 model (Sequential, functional or, with
    every layer ``unknown``, subclassed)."""
    return layer_kinds.read(model, isinstance(model, keras.Sequential), _sequential, _linked)


__all__ = ["describe", "kernel_key"]
