"""Run an exported ticket: its TFLite file or SavedModel on image files or a dataset's test split, fed the
way its ticket.json says (input shape and pixel range), so that the deployed file is used exactly as it
was checked. ``tf-lth predict`` is this module; ``docs/export.md`` shows the same in a few lines of
plain LiteRT / TensorFlow code.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from tf_lth.errors import TfLthError
from tf_lth.data.input_scale import SCALES


def export_info(model: Path) -> dict:
    """The ticket.json of the export folder holding ``model`` (a .tflite file or a saved_model folder),
    or ``{}`` when there is none (a file copied elsewhere: then 28x28x1 is not assumed, its shape is read)."""
    path = model.parent / "ticket.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def input_range(info: dict) -> tuple[str, str]:
    """``(scale, where it came from)`` for an export's ticket.json (files written before the input range was
    recorded were all fed pixels / 255)."""
    scale = info.get("input", {}).get("scale")
    if scale in SCALES:
        return scale, "its ticket.json"
    return "unit", "no input range recorded: pixels / 255"


def load_images(paths, shape) -> np.ndarray:
    """Image files as uint8 ``(N, H, W, C)`` at the model's ``shape`` ``(H, W, C)``: grey or RGB as C says,
    rescaled (bilinear) to H x W."""
    from PIL import Image, UnidentifiedImageError
    height, width, channels = shape
    images = []
    for path in paths:
        try:
            with Image.open(path) as image:
                image = image.convert("L" if channels == 1 else "RGB").resize((width, height), Image.BILINEAR)
                images.append(np.asarray(image, np.uint8).reshape(height, width, channels))
        except (OSError, UnidentifiedImageError) as e:
            raise TfLthError(f"cannot read the image {path} ({e}): give PNG, JPEG, BMP or GIF files") from None
    return np.stack(images)


class Runner:
    """An exported file ready to run: ``.tflite`` through LiteRT, a ``saved_model`` folder through
    TensorFlow; :meth:`__call__` takes uint8 images and feeds them in the export's pixel range."""

    def __init__(self, path):
        self.path = Path(path)
        if not self.path.exists():
            raise TfLthError(f"{self.path} does not exist: give an exported .tflite file or saved_model folder")
        self.info = export_info(self.path)
        self.scale, self.scale_source = input_range(self.info)
        if self.path.suffix == ".tflite":
            from tf_lth.export import tflite
            self.interpreter, _ = tflite.open_tflite(self.path)
            self.shape = tuple(int(d) for d in self.interpreter.get_input_details()[0]["shape"][1:])
        elif (self.path / "saved_model.pb").is_file():
            from tf_lth.util.tensorflow import tensorflow
            tf = tensorflow()  # saved_model.load only: no Keras of either flavour
            self.serve = tf.saved_model.load(str(self.path)).signatures["serving_default"]
            self.shape = tuple(int(d) for d in self.serve.structured_input_signature[1]["image"].shape[1:])
        else:
            raise TfLthError(f"{self.path} is neither a .tflite file nor a SavedModel folder")

    def __call__(self, images: np.ndarray) -> np.ndarray:
        x = images.astype(np.float32) / (255.0 if self.scale == "unit" else 1.0)
        if self.path.suffix == ".tflite":
            from tf_lth.export import tflite
            return tflite.run_tflite(self.interpreter, x)
        return np.concatenate([next(iter(self.serve(image=x[i:i + 256]).values())).numpy()
                               for i in range(0, len(x), 256)])


__all__ = ["Runner", "load_images", "export_info", "input_range"]
