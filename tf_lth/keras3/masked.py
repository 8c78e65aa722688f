"""The Keras 3 masked model: masks on the user's own layers, and the owner of the invariant there.

TF-MOT has no Keras 3 path, so the masks are tf-lth's own (design and evidence:
``docs/keras3_design.md``). Each prunable layer of the model (Sequential, functional or subclassed,
at any depth) gets, in place:

* a non-trainable **bool** variable ``<w>_keep`` per pruned weight (and, with ``pruned="frozen"``, a
  float32 ``<w>_frozen``), added with ``add_weight``: model state, so a jitted JAX step or a compiled
  TF ``fit`` reads the current masks after every ``next_round`` (an untracked mask would be baked in
  when the step is traced);
* its **class swapped** for a cached subclass of its own class (same name, module and registered
  name) whose ``call`` hands the layer ``where(keep, w, 0 | frozen)`` in place of ``w`` for the length
  of the call, and whose save/load hide the masks and write the masked value, so ``model.save``
  gives a plain ``.keras`` file that loads without tf-lth.

**A pruned weight is zero (or its frozen value) in every forward pass** (the select: whatever wrote
the variable, ``assign``, ``load_weights``, an EMA overwrite, never reaches an output, and its
gradient is zero), **after every step** (the raw pruned entries are kept at exactly 0 in both modes:
zero gradient, and a fresh optimizer state each round, so momentum, Adam, EMA and weight decay leave
them there; frozen values live in the select, not in the variable) **and in every file** (masked
value saved). No constraint is used: on JAX a constraint cannot read the masks (``fit`` purges model
variables while it traces) and with EMA it runs after the averages were taken.
"""
from __future__ import annotations

import contextlib

import numpy as np

from tf_lth.errors import TfLthError
from tf_lth.keras3 import keras
from tf_lth.keras3.layer_masks import (add_masks, effective, is_masked, layers_of, plain_values, prunable, recording,
                                set_save_hook, set_views, to_numpy)

class MaskedModel:
    """``source`` with masks on its prunable layers (in place: ``model is source``), indexed as
    :class:`tf_lth.keras2.masked.MaskedModel` is: ``variables`` (every weight but the masks, in the order of a
    plain copy's ``get_weights()``), ``kernels`` (key ``<layer>/<weight>`` -> index), ``layers``.

    If the layers already carry masks (another ticket was made of this model), the masks go on a
    copy: two tickets never write each other's weights.
    """

    def __init__(self, source, frozen: bool = False):
        if source.built and not source.weights and source.get_build_config():
            # a subclassed model without build(): Keras marks it built; one call makes its weights
            source(np.zeros(_input_shape(source), "float32"), training=False)
        if not source.built or not source.weights:
            raise TfLthError(f"{source.name} is not built: give it an Input, call model.build(input_shape) "
                             "or call it on a batch first")
        if any(is_masked(layer) for layer in layers_of(source)):
            source = _copy(source)
        self.model = self.source = source
        self.kernels, self.layers, self.keep, self.frozen, raws = {}, {}, {}, {}, {}
        pruned = [(layer, prunable(layer)) for layer in layers_of(source)]
        if not any(weights for _, weights in pruned):
            raise TfLthError(f"{source.name} has no layer with a kernel or embeddings (Dense, Conv, Embedding, "
                             "...): nothing to find a ticket in")
        for layer, weights in pruned:
            if not weights:
                continue
            views = []
            for attr, raw in weights:
                key = f"{layer.name}/{raw.name}"
                if key in raws:
                    raise TfLthError(f"two layers of {source.name} are named {layer.name}: give them unique names")
                keep, value = add_masks(layer, raw, frozen)
                raws[key], self.layers[key], self.keep[key], self.frozen[key] = raw, layer, keep, value
                views.append((attr, raw, keep, value))
            set_views(layer, views)
        masks = {id(v) for v in (*self.keep.values(), *self.frozen.values()) if v is not None}
        self.variables = [v for v in source.weights if id(v) not in masks]
        index = {id(v): i for i, v in enumerate(self.variables)}
        self.kernels = {key: index[id(raw)] for key, raw in raws.items()}
        pruned_names = {layer.name for layer in self.layers.values()}
        self.unpruned_layers = [layer.name for layer in layers_of(source)
                                if layer._trainable_variables and layer.name not in pruned_names]

    # -- weights -----------------------------------------------------------------------------
    def raw_weights(self) -> list[np.ndarray]:
        """What the variables hold (pruned entries are zero in both modes)."""
        return [to_numpy(v) for v in self.variables]

    def weights(self) -> list[np.ndarray]:
        """The weights the network computes with: pruned entries zero (or frozen)."""
        values = self.raw_weights()
        for key, i in self.kernels.items():
            values[i] = self._masked(key, values[i])
        return values

    def assign(self, values) -> None:
        """Write ``values`` (in :attr:`variables` order), then the masks over them."""
        if len(values) != len(self.variables):
            raise TfLthError(f"got {len(values)} arrays for the {len(self.variables)} weights of {self.model.name}")
        for v, a in zip(self.variables, values):
            v.assign(np.asarray(a).astype(v.dtype))
        self.apply_masks()

    def apply_masks(self) -> None:
        """Raw pruned entries to zero (frozen values are selected in the forward pass, not stored)."""
        for key, i in self.kernels.items():
            raw = self.variables[i]
            raw.assign(effective(raw, self.keep[key], None))

    def set_masks(self, masks: dict, frozen: dict | None = None) -> None:
        """Write boolean ``masks`` (and, for frozen pruned weights, their values) by key."""
        for key, m in masks.items():
            self.keep[key].assign(np.asarray(m, bool))
            if self.frozen[key] is not None and frozen is not None:
                self.frozen[key].assign(np.asarray(frozen[key], np.float32))

    def kernel(self, key: str) -> np.ndarray:
        """The kernel as the network computes with it."""
        return self._masked(key, to_numpy(self.variables[self.kernels[key]]))

    def _masked(self, key: str, raw: np.ndarray) -> np.ndarray:
        base = 0 if self.frozen[key] is None else to_numpy(self.frozen[key])
        return np.where(to_numpy(self.keep[key]), raw, base).astype(raw.dtype)

    # -- layers ------------------------------------------------------------------------------
    def output_layer_names(self) -> set[str]:
        """The last pruned layer on the path to each output: by walking a functional/Sequential graph
        back from its outputs, else (subclassed) the last pruned layer a forward pass calls."""
        pruned = {layer.name for layer in self.layers.values()}
        graph = getattr(self.source, "_functional", None) or self.source
        outputs = getattr(graph, "outputs", None)
        found = set()
        if outputs:
            stack, seen = [t._keras_history.operation for t in keras.tree.flatten(outputs)], set()
            while stack:
                op = stack.pop()
                if id(op) in seen:
                    continue
                seen.add(id(op))
                if getattr(op, "name", None) in pruned:
                    found.add(op.name)
                    continue
                for node in getattr(op, "_inbound_nodes", []):
                    stack.extend(parent.operation for parent in node.parent_nodes)
        return found or self._last_called(pruned)

    def _last_called(self, pruned: set[str]) -> set[str]:
        with recording() as calls:
            self.source(np.zeros(_input_shape(self.source), "float32"), training=False)
        names = [layer.name for layer in calls if layer.name in pruned]
        return {names[-1]} if names else set()

    def fresh_values(self, seed: int) -> list[np.ndarray]:
        """A new draw of every weight from its layer's initializer (seeded per weight)."""
        out = []
        for j, v in enumerate(self.variables):
            init = _initializer(self.source, v)
            config = init.get_config()
            if "seed" in config:
                init = type(init).from_config({**config, "seed": int(seed) + j})
            out.append(to_numpy(init(v.shape, v.dtype)))
        return out

    def clone_source(self):
        """A plain copy of the architecture with fresh weights (the swap classes build plain layers)."""
        return _copy(self.source, weights=False)

    def plain_copy(self, values):
        """A plain copy of the model (no masks) holding ``values`` (in :attr:`variables` order)."""
        copy = self.clone_source()
        copy.set_weights(values)
        return copy

    def on_save(self, callback) -> None:
        """Call ``callback()`` whenever a masked layer is saved (``model.save``, ``save_weights``): the ticket
        warns there if the model holds untrained weights."""
        for layer in {id(layer): layer for layer in self.layers.values()}.values():
            set_save_hook(layer, callback)

    def scope(self):
        return contextlib.nullcontext()

    # -- optimizer ---------------------------------------------------------------------------
    def reset_optimizer(self, step: int) -> None:
        """A freshly built optimizer's state (zero moments, EMA averages = weights, a new loss scale)
        and its step set to ``step``; an optimizer not yet built only gets the step."""
        opt = getattr(self.model, "optimizer", None)
        if opt is None:
            return
        if opt.built and len(opt.variables) > 2:
            fresh = type(opt).from_config(opt.get_config())  # (Keras' serialize would import TensorFlow)
            fresh.build(self.model.trainable_variables)
            if [tuple(v.shape) for v in fresh.variables] != [tuple(v.shape) for v in opt.variables]:
                raise TfLthError("the optimizer was built for other variables than ticket.model's: compile "
                                 "ticket.model with a new optimizer")
            for v, f in zip(opt.variables, fresh.variables):
                v.assign(f.value)
        opt.iterations.assign(step)


def _copy(model, weights: bool = True):
    """A plain copy of ``model`` (functional, Sequential or subclassed), built, with its effective
    weights unless ``weights`` is False."""
    if getattr(model, "_functional", None) is not None or hasattr(model, "_nodes_by_depth") or \
            isinstance(model, keras.Sequential):
        copy = keras.models.clone_model(model)
    else:
        copy = type(model).from_config(model.get_config())
    if not copy.weights:  # subclassed: run it once on zeros of the source's build shape
        copy(np.zeros(_input_shape(model), "float32"), training=False)
    if weights:
        copy.set_weights(plain_values(model))
    return copy


def _input_shape(model) -> list[int]:
    """One example's worth of the shape ``model`` was built for (its batch dimension 1)."""
    shape = (model.get_build_config() or {}).get("input_shape")
    if not isinstance(shape, (list, tuple)) or not shape or isinstance(shape[0], (list, tuple, dict)):
        raise TfLthError(f"{model.name} was not built on one input tensor, which a subclassed model needs "
                         "here: build it with model.build(input_shape)")
    return [1 if d is None else int(d) for d in shape]


def _initializer(model, variable):
    """The initializer the innermost layer owning ``variable`` drew it from: ``<weight>_initializer``,
    or ``<kind>_initializer`` for ``<kind>_kernel``."""
    owners = [layer for layer in layers_of(model)
              if any(variable is w for w in (*layer._trainable_variables, *layer._non_trainable_variables))]
    names = [f"{variable.name}_initializer"]
    if variable.name.endswith("_kernel"):
        names.append(f"{variable.name[:-len('_kernel')]}_initializer")
    for owner in owners:
        for name in names:
            init = getattr(owner, name, None)
            if init is not None:
                return keras.initializers.get(init)
    where = f"{owners[0].name} ({type(owners[0]).__name__})" if owners else model.name
    raise TfLthError(f"cannot draw {variable.name} of {where} again: it has no {names[0]} "
                     "(survivors='reinit' and the random_reinit control need every weight's initializer)")


__all__ = ["MaskedModel"]
