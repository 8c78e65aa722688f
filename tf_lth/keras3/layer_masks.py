"""Masks on one Keras 3 layer: the swap class, the mask variables, the select (any backend).

Used by :class:`tf_lth.keras3.masked.MaskedModel`, which owns the invariant and says why it is built this
way (``docs/keras3_design.md`` has the evidence: constraints, wrappers and Variable subclasses each
fail on JAX, with EMA or on a direct write). A masked layer keeps ``_lth_views``: one
``(attribute, raw variable, keep mask, frozen values or None)`` per pruned weight.
"""
from __future__ import annotations

import contextlib
import functools

import numpy as np

from tf_lth.errors import TfLthError
from tf_lth.keras3 import keras, ops

# Weights tf-lth prunes: the names of the variables layers multiply inputs by (Dense, Conv*,
# EinsumDense, Embedding, depthwise/separable convs, RNN cells).
PRUNED_NAMES = ("kernel", "depthwise_kernel", "pointwise_kernel", "recurrent_kernel", "embeddings")
CLASSES: dict = {}  # base class -> its swap class


def effective(raw, keep, frozen):
    """What the network computes with: ``raw`` where kept, else 0 (or the frozen value), in the dtype
    ``raw`` is read in (the compute dtype under mixed precision; the masks are never autocast)."""
    w = raw.value if isinstance(raw, keras.Variable) else raw
    base = ops.zeros_like(w) if frozen is None else ops.cast(frozen.value, w.dtype)
    return ops.where(keep.value, w, base)


def to_numpy(x) -> np.ndarray:
    """A variable's or tensor's value as a NumPy array, on any backend."""
    if isinstance(x, keras.Variable):
        x = x.value
    if keras.backend.backend() == "tensorflow" and hasattr(x, "numpy"):
        return x.numpy()  # (NumPy 2 warns on a TF tensor's __array__, which takes no copy=)
    return np.asarray(ops.convert_to_numpy(x))  # JAX, torch (detached, on the CPU), NumPy


@contextlib.contextmanager
def _swapped(layer):
    """The layer's pruned attributes hold their effective values for the block (``object.__setattr__``:
    Keras' attribute tracking must not see the tensors)."""
    views = layer.__dict__.get("_lth_views", ())
    saved = [(attr, layer.__dict__[attr]) for attr, _, _, _ in views]
    for attr, raw, keep, frozen in views:
        object.__setattr__(layer, attr, effective(raw, keep, frozen))
    try:
        yield
    finally:
        for attr, value in saved:
            object.__setattr__(layer, attr, value)


@contextlib.contextmanager
def _plain_lists(layer, effective_values: bool):
    """The layer's variable lists as the plain layer's: masks hidden (and, to save, kernels replaced
    by their effective values)."""
    views = layer.__dict__["_lth_views"]
    masks = {id(m) for _, _, k, f in views for m in (k, f) if m is not None}
    trainable, other = layer._trainable_variables, layer._non_trainable_variables
    saved = list(trainable), list(other)
    other[:] = [v for v in other if id(v) not in masks]
    if effective_values:
        values = {id(raw): to_numpy(effective(raw, keep, frozen)) for _, raw, keep, frozen in views}
        trainable[:] = [values.get(id(v), v) for v in trainable]
    try:
        yield
    finally:
        trainable[:], other[:] = saved


def masked_class(base):
    """The swap class of ``base`` (cached): its ``call`` masks; a copy made from its config is plain."""
    if base in CLASSES:
        return CLASSES[base]

    @functools.wraps(base.call)  # the same signature: Keras reads call's arguments (shapes, training)
    def call(self, *args, **kwargs):
        recorder = RECORDING_STACK[-1] if RECORDING_STACK else None
        if recorder is not None:
            recorder.append(self)
        with _swapped(self):
            return base.call(self, *args, **kwargs)

    def save_own_variables(self, store):
        hook = self.__dict__.get("_lth_on_save")
        if hook is not None:
            hook()
        with _plain_lists(self, effective_values=True):
            base.save_own_variables(self, store)

    def load_own_variables(self, store):
        with _plain_lists(self, effective_values=False):
            base.load_own_variables(self, store)
        for _, raw, keep, _ in self.__dict__["_lth_views"]:
            raw.assign(effective(raw, keep, None))  # raw pruned entries back to zero

    namespace = {"__module__": base.__module__, "__qualname__": base.__qualname__, "call": call,
                 "save_own_variables": save_own_variables, "load_own_variables": load_own_variables,
                 "from_config": classmethod(lambda cls, config: base.from_config(config))}
    cls = type(base.__name__, (base,), namespace)
    from keras.src.saving import object_registration  # a user's registered layer keeps its name
    if base in object_registration.GLOBAL_CUSTOM_NAMES:
        object_registration.GLOBAL_CUSTOM_NAMES[cls] = object_registration.GLOBAL_CUSTOM_NAMES[base]
    CLASSES[base] = cls
    return cls


RECORDING_STACK: list = []  # lists that masked layers append themselves to when called


@contextlib.contextmanager
def recording():
    """The masked layers called in the block, in call order (a subclassed model's output layer is
    the last pruned layer its forward pass calls)."""
    calls: list = []
    RECORDING_STACK.append(calls)
    try:
        yield calls
    finally:
        RECORDING_STACK.pop()


def layers_of(model) -> list:
    """Every layer inside ``model``, at any depth."""
    return list(model._flatten_layers(include_self=False, recursive=True))


def prunable(layer) -> list[tuple[str, object]]:
    """(attribute, variable) of each weight of ``layer`` itself that tf-lth prunes; a layer whose pruned
    weight is not an attribute, or that is LoRA-enabled or quantized, is refused in one line."""
    own = {id(v) for v in layer._trainable_variables if v.name in PRUNED_NAMES}
    if not own:
        return []
    what = f"layer {layer.name} ({type(layer).__name__})"
    if getattr(layer, "lora_enabled", False) or getattr(layer, "quantization_mode", None):
        raise TfLthError(f"{what} is LoRA-enabled or quantized: tf-lth masks float kernels; prune the "
                         "model before enable_lora()/quantize()")
    found = [(attr, v) for attr, v in vars(layer).items() if isinstance(v, keras.Variable) and id(v) in own]
    if len(found) != len(own):
        raise TfLthError(f"{what} holds a kernel that is not one of its attributes, which the Keras 3 "
                         "path cannot mask: keep each weight as `self.<name> = self.add_weight(...)`")
    return found


def add_masks(layer, raw, frozen: bool):
    locked = layer._tracker.locked if layer._tracker else False
    if layer._tracker:
        layer._tracker.unlock()  # the tracker is locked after build (as Dense.enable_lora does)
    try:
        keep = layer.add_weight(shape=raw.shape, initializer="ones", trainable=False, dtype="bool",
                                autocast=False, name=f"{raw.name}_keep")
        value = (layer.add_weight(shape=raw.shape, initializer="zeros", trainable=False, dtype="float32",
                                  autocast=False, name=f"{raw.name}_frozen") if frozen else None)
    finally:
        if locked:
            layer._tracker.lock()
    return keep, value




def plain_values(model) -> list[np.ndarray]:
    """``model``'s weights as a plain copy of it holds them: masks left out, pruned entries of each
    kernel zero (or frozen), in the copy's ``weights`` order."""
    views = [view for layer in layers_of(model) for view in layer.__dict__.get("_lth_views", ())]
    masks = {id(m) for _, _, keep, frozen in views for m in (keep, frozen) if m is not None}
    values = {id(raw): effective(raw, keep, frozen) for _, raw, keep, frozen in views}
    return [to_numpy(values.get(id(v), v)) for v in model.weights if id(v) not in masks]


def is_masked(layer) -> bool:
    return "_lth_views" in layer.__dict__


def set_save_hook(layer, callback) -> None:
    """``callback()`` runs before the masked ``layer`` saves its variables (a weak hold on nothing: the
    ticket's bound method; a layer outliving its ticket keeps it alive, as its masks do)."""
    object.__setattr__(layer, "_lth_on_save", callback)


def set_views(layer, views: list) -> None:
    """Record the layer's pruned weights and masks, and swap its class (call masks, save is plain)."""
    object.__setattr__(layer, "_lth_views", views)
    layer.__class__ = masked_class(type(layer))


__all__ = ["PRUNED_NAMES", "effective", "masked_class", "layers_of", "prunable", "add_masks", "recording",
           "is_masked", "set_save_hook", "set_views", "to_numpy", "plain_values"]
