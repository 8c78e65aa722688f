"""Which pixel range a model expects: the input contract of training and of every exported file.

tf-lth keeps images as uint8 and makes float batches on the fly. A model is fed either
``"unit"`` pixels (``x / 255``, in [0, 1]: the papers' networks) or ``"raw"`` ones (0-255 as floats),
which is what a model that starts with its own ``Rescaling(1/255)`` or ``Normalization`` layer (the
Keras idiom of every image tutorial) expects: fed [0, 1] it would see its inputs scaled twice and
train on nearly black images without any error. :func:`detect` reads the model's first layers
(either Keras flavour, by class name, importing neither) and says which range and why; the runner's
``--input-scale`` and ``export_ticket(input_scale=)`` override it. The decision is recorded in
results.json and in every export's ticket.json (``input.range``), so the exported files are fed the
same way.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tf_lth.errors import TfLthError

SCALES = {"unit": (0.0, 1.0), "raw": (0.0, 255.0)}  # name -> the pixel range the model is fed
# layers that pass pixel values on unchanged in scale (shape, crop, augmentation): looked through
PASS_THROUGH = ("InputLayer", "Reshape", "Flatten", "Permute", "Resizing", "CenterCrop", "Cropping1D", "Cropping2D",
                "Cropping3D", "ZeroPadding1D", "ZeroPadding2D", "ZeroPadding3D", "RandomFlip", "RandomCrop",
                "RandomRotation", "RandomZoom", "RandomTranslation", "RandomContrast", "RandomBrightness", "Dropout",
                "GaussianNoise", "Identity")
SCALING = ("Rescaling", "Normalization")


@dataclass(frozen=True)
class InputScale:
    """The pixel range a model is fed (``scale``: a key of :data:`SCALES`) and why."""

    scale: str
    reason: str

    @property
    def range(self) -> tuple[float, float]:
        return SCALES[self.scale]

    def to_dict(self) -> dict:
        return {"scale": self.scale, "range": list(self.range), "reason": self.reason}


def check(scale: str | None) -> str | None:
    """``scale`` if it names a range (or is ``None``: detect), else a one-line error."""
    if scale is not None and scale not in SCALES:
        raise TfLthError(f"input scale {scale!r}: use unit (pixels / 255, in [0, 1]) or raw (0-255)")
    return scale


def _first_layers(model) -> list:
    """The model's layers in the order inputs reach them (Sequential and functional: their order;
    subclassed: the order they were assigned, the best a model without a graph offers)."""
    return [layer for layer in getattr(model, "layers", []) if layer is not model]


def _class_names(layer) -> set[str]:
    return {cls.__name__ for cls in type(layer).__mro__}


def _normalization_mean(layer) -> float | None:
    """The largest |mean| a Normalization layer subtracts (``None`` if it has none yet)."""
    for value in (getattr(layer, "mean", None), *(w for w in getattr(layer, "weights", []) if "mean" in w.name)):
        if value is None:
            continue
        try:
            array = np.asarray(value.numpy() if hasattr(value, "numpy") else value, np.float64)
        except (TypeError, ValueError):
            continue
        if array.size:
            return float(np.max(np.abs(array)))
    return None


def detect(model) -> InputScale:
    """The range ``model`` expects: ``raw`` if its first layer that changes pixel values is a
    ``Rescaling``, or a ``Normalization`` whose mean is that of 0-255 pixels (|mean| > 1); else ``unit``."""
    for layer in _first_layers(model):
        names = _class_names(layer)
        if names & set(PASS_THROUGH) and not names & set(SCALING):
            continue
        if "Rescaling" in names:
            scale = getattr(layer, "scale", None)
            return InputScale("raw", f"the model starts with Rescaling {layer.name!r} (scale {scale}): "
                                     "it is fed pixel values 0-255")
        if "Normalization" in names:
            mean = _normalization_mean(layer)
            if mean is not None and mean > 1.0:
                return InputScale("raw", f"the model starts with Normalization {layer.name!r} adapted to 0-255 "
                                         f"pixels (|mean| up to {mean:.3g}): it is fed pixel values 0-255")
            return InputScale("unit", f"the model starts with Normalization {layer.name!r} whose mean "
                                      f"({'unset' if mean is None else f'{mean:.3g}'}) is that of [0, 1] pixels: "
                                      "it is fed pixels / 255")
        break
    return InputScale("unit", "the model has no leading Rescaling or Normalization layer: it is fed pixels / 255, "
                              "in [0, 1]")


def decide(model, scale: "str | InputScale | None" = None) -> InputScale:
    """``scale`` if given (the user's override, or a decision made already), else :func:`detect`."""
    if isinstance(scale, InputScale):
        return scale
    if check(scale) is not None:
        found = detect(model)
        note = "" if found.scale == scale else f" (the model alone would say {found.scale})"
        return InputScale(scale, f"set by the user{note}")
    return detect(model)


__all__ = ["SCALES", "InputScale", "check", "detect", "decide"]
