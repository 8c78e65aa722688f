"""The masked model: TF-MOT's wrappers around the prunable layers, and the one owner of the invariant.

**A pruned weight is zero (or, under ``pruned="frozen"``, its frozen value) in every forward pass,
after every optimizer step and in every file tf-lth writes, whatever wrote the weights.** Three
mechanisms, each for the writers the others cannot see:

1. *Mask in the forward pass.* :class:`MaskedWrapper` (TF-MOT's ``PruneLowMagnitude``) hands its
   layer ``w * mask`` instead of ``w`` for the length of each call, so a value written by
   ``set_weights``, ``load_weights``, a custom loop's ``assign`` or an EMA overwrite never reaches
   an output, and the gradient of a pruned weight is exactly zero. It works on any precision
   policy: the masked value is made in the layer's compute dtype.
2. *Nothing moves a pruned weight in a step.* Its gradient is zero (1.) and :meth:`MaskedModel.
   reset_optimizer` gives every round a fresh optimizer state, so momentum, Adam's moments, EMA
   averages and decoupled weight decay all leave a zero at zero. Frozen pruned values (which weight
   decay would shrink) carry a constraint that the Keras optimizer applies after each update,
   installed on the variable the optimizer really writes: under mixed precision the
   ``AutoCastVariable`` delegates ``constraint`` to the float32 variable inside it, and under
   ``tf.distribute`` every replica's component gets it.
3. *Mask at the edges of training and on write.* :meth:`MaskedModel.apply_masks` writes the masked
   values into the variables; the round's callback calls it when ``fit`` begins and ends (after
   ``finalize_variable_values`` copied EMA averages in), :meth:`MaskedModel.assign` after writing,
   and :meth:`MaskedModel.weights` returns masked values, so tf-lth's files are always sparse.

TF-MOT's own per-step mask update and assignment are skipped (masks change only between rounds),
so the compiled step costs one multiply per pruned kernel (and its gradient) over the plain model's.
"""
from __future__ import annotations

import weakref

import numpy as np

from tf_lth.errors import TfLthError
from tf_lth.keras2 import keras, require_graph_model, tf
from tf_lth.keras2.frozen_mask import FrozenMask
from tf_lth.keras2.wrapper import MaskedWrapper, masked_value, prunable


# Layers whose variables a live MaskedModel shares: a second one on the same layers gets its own copy.
_OWNERS: dict[int, tuple[weakref.ref, weakref.ref]] = {}


def _owned(model) -> bool:
    for layer in model.layers:
        layer_ref, owner_ref = _OWNERS.get(id(layer), (lambda: None, lambda: None))
        if layer_ref() is layer and owner_ref() is not None:
            return True
    return False


def _key_of(layer, weight) -> str:
    """``<layer>/<weight>`` (``fc1/kernel``; ``mha/query/kernel`` for a sublayer's weight)."""
    name = weight.name.split(":")[0]
    prefix = f"{layer.name}/"
    return f"{layer.name}/{name[len(prefix):] if name.startswith(prefix) else name.split('/')[-1]}"


class MaskedModel:
    """``source`` with every prunable layer wrapped by :class:`MaskedWrapper`, indexed.

    ``model`` shares the source's layers and variables (as TF-MOT's ``prune_low_magnitude`` does),
    unless another live ``MaskedModel`` already holds them: then it is built on a copy, so two
    tickets of one model never write each other's weights or masks. ``variables`` lists every
    variable of the (inner) layers in a fixed order, the order of all weight lists tf-lth uses;
    ``kernels`` maps each pruned weight's key to its index there, ``layers`` to its inner layer.
    """

    def __init__(self, source, frozen: bool = False):
        require_graph_model(source)
        names = {layer.name for layer in source.layers if layer.weights and prunable(layer)}
        if not names:
            raise TfLthError(f"{source.name} has no layer TF-MOT can prune (Dense, Conv, Embedding, ...): "
                             "nothing to find a ticket in")
        with source.distribute_strategy.scope():
            if _owned(source):
                copy = keras.models.clone_model(source)
                copy.set_weights(source.get_weights())
                source = copy
            self.source = source
            self.model = keras.models.clone_model(
                source, clone_function=lambda layer: MaskedWrapper(layer, pruning_schedule=FrozenMask())
                if layer.name in names else layer)
            self.variables, self.kernels, self.layers = [], {}, {}
            self.keep, self.frozen = {}, {}  # key -> the variables the wrapper masks with
            for layer in self.model.layers:
                inner = layer.layer if isinstance(layer, MaskedWrapper) else layer
                index = {id(v): len(self.variables) + j for j, v in enumerate(inner.weights)}
                self.variables.extend(inner.weights)
                if not isinstance(layer, MaskedWrapper):
                    continue
                for weight, mask, _ in layer.pruning_vars:
                    key = _key_of(inner, weight)
                    self.kernels[key], self.layers[key] = index[id(weight)], inner
                    if frozen:
                        self.keep[key] = tf.Variable(tf.ones_like(mask), trainable=False)
                        self.frozen[key] = tf.Variable(tf.zeros(weight.shape, mask.dtype), trainable=False)
                    else:
                        self.keep[key], self.frozen[key] = mask, None
                if frozen:
                    keys = [_key_of(inner, w) for w, _, _ in layer.pruning_vars]
                    layer.mask_with([self.keep[k] for k in keys], [self.frozen[k] for k in keys])
        for layer in source.layers:
            _OWNERS[id(layer)] = (weakref.ref(layer), weakref.ref(self))
        self.unpruned_layers = [layer.name for layer in source.layers
                                if layer.trainable_weights and layer.name not in names]

    # -- weights -----------------------------------------------------------------------------
    def raw_weights(self) -> list[np.ndarray]:
        """What the variables hold (pruned entries may differ from the invariant until masked)."""
        return [v.numpy() for v in self.variables]

    def weights(self) -> list[np.ndarray]:
        """The weights the network computes with: pruned entries zero (or frozen)."""
        values = self.raw_weights()
        for key, i in self.kernels.items():
            keep = self.keep[key].numpy().astype(bool)
            base = 0 if self.frozen[key] is None else self.frozen[key].numpy()
            values[i] = np.where(keep, values[i], base).astype(values[i].dtype)
        return values

    def assign(self, values) -> None:
        """Write ``values`` (in :attr:`variables` order), then the masks over them."""
        if len(values) != len(self.variables):
            raise TfLthError(f"got {len(values)} arrays for the {len(self.variables)} weights of {self.model.name}")
        for v, a in zip(self.variables, values):
            v.assign(a)
        self.apply_masks()

    def apply_masks(self) -> None:
        """Write the invariant into the variables: pruned entries to zero (or their frozen value)."""
        for key, i in self.kernels.items():
            v = self.variables[i]
            v.assign(masked_value(v, self.keep[key], self.frozen[key], v.dtype))

    def set_masks(self, masks: dict, frozen: dict | None = None) -> None:
        """Write boolean ``masks`` (and, for frozen pruned weights, their values) by key."""
        for key, m in masks.items():
            self.keep[key].assign(np.asarray(m, np.float32))
            if self.frozen[key] is not None and frozen is not None:
                self.frozen[key].assign(frozen[key])

    def kernel(self, key: str) -> np.ndarray:
        return self.variables[self.kernels[key]].numpy()

    # -- layers ------------------------------------------------------------------------------
    def output_layer_names(self) -> set[str]:
        """The last pruned layer on the path to each model output (the papers' "output layer", which
        gets its own rate even when an Activation, Softmax or Reshape follows it)."""
        pruned = {layer.name for layer in self.layers.values()}
        members = {id(layer) for layer in self.source.layers}
        found, seen = set(), set()
        stack = [self.source.get_layer(name) for name in self.source.output_names]
        while stack:
            layer = stack.pop()
            if id(layer) in seen:
                continue
            seen.add(id(layer))
            if layer.name in pruned:
                found.add(layer.name)
                continue
            for node in layer.inbound_nodes:
                stack.extend(p for p in tf.nest.flatten(node.inbound_layers) if id(p) in members)
        return found

    def fresh_values(self, seed: int) -> list[np.ndarray]:
        """A new draw of every weight from its layer's initializer (seeded per weight)."""
        out = []
        for j, v in enumerate(self.variables):
            init = _initializer(_layer_of(self.model, v), v)
            cfg = init.get_config()
            if "seed" in cfg:
                init = type(init).from_config({**cfg, "seed": int(seed) + j})
            out.append(np.asarray(init(v.shape, v.dtype)))
        return out

    def clone_source(self):  # a copy of the architecture with fresh weights (a control's model)
        with self.scope():
            return keras.models.clone_model(self.source)

    def plain_copy(self, values) -> "keras.Model":
        """A plain copy of the source model (no wrappers) holding ``values`` (in :attr:`variables` order)."""
        copy = self.clone_source()
        start = 0
        for layer in copy.layers:  # the wrapped model's layer order: its inner layers' weights, in turn
            n = len(layer.weights)
            layer.set_weights(values[start:start + n])
            start += n
        return copy

    def on_save(self, callback) -> None:
        """tf_keras tickets are saved through :func:`tf_lth.export_ticket` (which asks the ticket itself):
        nothing to hook here."""

    def scope(self):  # where this model's variables are made (its distribution strategy's scope)
        return self.source.distribute_strategy.scope()

    # -- optimizer ---------------------------------------------------------------------------
    def reset_optimizer(self, step: int) -> None:
        """Give the compiled optimizer the state a freshly built optimizer of its config has (zero
        moments, Adagrad's initial accumulators, EMA averages equal to the weights, a new loss
        scale) and set its step to ``step``."""
        opt = self.model.optimizer
        if opt is None:
            return
        current = list(opt.variables() if callable(opt.variables) else opt.variables)
        if len(current) > 1:  # built: more than the step counter
            with self.model.distribute_strategy.scope():
                fresh = keras.optimizers.deserialize(keras.optimizers.serialize(opt))
                fresh.build(self.model.trainable_variables)
            new = list(fresh.variables() if callable(fresh.variables) else fresh.variables)
            if [tuple(v.shape) for v in new] != [tuple(v.shape) for v in current]:
                raise TfLthError("the optimizer was built for other variables than ticket.model's: compile "
                                 "ticket.model with a new optimizer")
            for v, f in zip(current, new):
                v.assign(f.numpy())
        opt.iterations.assign(step)


def _layer_of(model, variable):
    for layer in model.layers:
        inner = layer.layer if isinstance(layer, MaskedWrapper) else layer
        if any(variable is w for w in inner.weights):
            return inner
    raise AssertionError("variable of no layer")  # the index is built from the layers


def _initializer(layer, variable):
    """The initializer ``layer`` (or its sublayer owning ``variable``) drew ``variable`` from:
    ``<weight>_initializer``, or ``<kind>_initializer`` for ``<kind>_kernel`` (``recurrent_kernel``,
    ``pointwise_kernel``, ``depthwise_kernel``)."""
    owners = [m for m in (layer, *layer.submodules) if isinstance(m, keras.layers.Layer)
              and any(variable is w for w in m.weights)]
    short = variable.name.split(":")[0].split("/")[-1]
    names = [f"{short}_initializer"]
    if short.endswith("_kernel"):
        names.append(f"{short[:-len('_kernel')]}_initializer")
    for owner in reversed(owners):  # the innermost owner first
        for name in names:
            init = getattr(owner, name, None)
            if init is not None:
                return keras.initializers.get(init)
    raise TfLthError(f"cannot draw {layer.name}/{short} again: {type(layer).__name__} has no {names[0]} "
                     "(survivors='reinit' and the random_reinit control need every weight's initializer)")


__all__ = ["MaskedModel"]
