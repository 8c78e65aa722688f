"""The layer wrapper of a masked model: TF-MOT's ``PruneLowMagnitude`` with the mask in the forward pass.

:class:`MaskedWrapper` hands its layer ``w * mask`` (in the layer's compute dtype) for the length of
each call, and installs :class:`KeepMasked` on the variable the optimizer really writes where pruned
weights are frozen rather than zero. :mod:`tf_lth.keras2.masked` wraps a model with it and owns the
invariant; the reasons for each mechanism are in its docstring.
"""
from __future__ import annotations

import inspect

from tf_lth.keras2 import keras, tf
from tensorflow_model_optimization.python.core.sparsity.keras import prunable_layer, prune_registry
from tensorflow_model_optimization.python.core.sparsity.keras.pruning_wrapper import PruneLowMagnitude


def prunable(layer) -> bool:
    """Whether TF-MOT can wrap ``layer`` and would prune at least one of its weights."""
    if isinstance(layer, prunable_layer.PrunableLayer):
        return True
    if not prune_registry.PruneRegistry.supports(layer):
        return False
    try:
        return bool(prune_registry.PruneRegistry.make_prunable(layer).get_prunable_weights())
    except (AttributeError, ValueError):  # not built, or an RNN cell TF-MOT does not know
        return False


def inner_variables(variable):
    """The variable an optimizer assigns through ``variable``: inside an AutoCastVariable (mixed
    precision), and each replica's component of a distributed variable."""
    inner = getattr(variable, "_variable", variable)  # AutoCastVariable wraps the float32 variable
    return list(getattr(inner, "_values", None) or (inner,))


class KeepMasked:
    """The constraint the optimizer applies after each update to a kernel with frozen pruned weights:
    pruned entries back to their frozen values. It wraps the variable's own constraint."""

    def __init__(self, keep, frozen, previous=None):
        self.keep, self.frozen, self.previous = keep, frozen, previous

    def __call__(self, w):
        if self.previous is not None:
            w = self.previous(w)
        return masked_value(w, self.keep, self.frozen, w.dtype)


def masked_value(w, keep, frozen, dtype):
    """``w * keep`` (``+ frozen * (1 - keep)``) in ``dtype``: what the network computes with."""
    w = tf.cast(w, dtype)
    k = tf.cast(keep, dtype)
    return w * k if frozen is None else w * k + tf.cast(frozen, dtype) * (1 - k)


@keras.utils.register_keras_serializable(package="tf_lth")
class MaskedWrapper(PruneLowMagnitude):
    """TF-MOT's pruning wrapper for rounds whose masks never change, with the mask in the forward pass.

    TF-MOT's ``call`` counts the step, asks the schedule for a mask update at every training step
    and assigns ``weight * mask`` before the forward pass. Here masks change only between rounds
    (:class:`~tf_lth.keras2.frozen_mask.FrozenMask`), so ``call`` runs the layer with each pruned weight
    attribute replaced by its masked value for the length of the call: no variable is written, the
    gradient of a pruned weight is zero, and nothing written to the variable outside the optimizer
    can reach the output. A weight that is no attribute of the layer or its sublayers (a custom
    ``PrunableLayer`` may compute it) is masked by assignment before the call instead.
    """

    def build(self, input_shape):
        super().build(input_shape)
        owners = [self.layer, *(m for m in self.layer.submodules if isinstance(m, keras.layers.Layer))]
        self.views = []  # (owner, attribute or None, weight, keep, frozen)
        for weight, mask, _ in self.pruning_vars:
            spot = next(((o, a) for o in owners for a, v in vars(o).items() if v is weight), (None, None))
            self.views.append([*spot, weight, mask, None])
        self.install_constraints()

    def mask_with(self, keeps: list, frozens: list) -> None:
        """Use these keep (1 alive, 0 pruned) and frozen-value variables, one per pruned weight,
        instead of TF-MOT's masks (``pruned="frozen"`` keeps TF-MOT's masks at ones, so that
        ``strip_pruning`` leaves the frozen values in place)."""
        for view, keep, frozen in zip(self.views, keeps, frozens):
            view[3], view[4] = keep, frozen
        self.install_constraints()

    def install_constraints(self) -> None:
        """Frozen pruned values get a constraint (weight decay would move them); zeroed ones need none:
        their gradient is zero and the optimizer's state for them is too (fresh after every
        ``next_round``), so no update moves them. A constraint an earlier ticket left is removed."""
        for _, _, weight, keep, frozen in self.views:
            for component in inner_variables(weight):
                own = component.constraint
                while isinstance(own, KeepMasked):
                    own = own.previous
                component._constraint = own if frozen is None else KeepMasked(keep, frozen, own)

    def call(self, inputs, training=None, **kwargs):
        if "training" in inspect.getfullargspec(self.layer.call).args:
            kwargs["training"] = training
        dtype = self.layer.compute_dtype
        swapped, updates = [], []
        for owner, name, weight, keep, frozen in self.views:
            if name is None:
                updates.append(weight.assign(masked_value(weight, keep, frozen, weight.dtype)))
            else:
                swapped.append((owner, name, weight))
                object.__setattr__(owner, name, masked_value(weight, keep, frozen, dtype))
        try:
            with tf.control_dependencies(updates):
                return self.layer.call(inputs, **kwargs)
        finally:
            for owner, name, weight in swapped:
                object.__setattr__(owner, name, weight)


__all__ = ["MaskedWrapper", "KeepMasked", "masked_value", "prunable", "inner_variables"]
