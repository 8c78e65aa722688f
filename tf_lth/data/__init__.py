"""The data a ticket trains on.

No TensorFlow: :mod:`~tf_lth.data.specs` (the named datasets: shape, classes, split sizes, files,
readers), :mod:`~tf_lth.data.user` (a user's ``npz:PATH`` / ``folder:PATH``, and :func:`load_arrays`),
:mod:`~tf_lth.data.image_folders` (their layout; Keras reads the images), :mod:`~tf_lth.data.input_scale`
(the pixel range a model is fed). TensorFlow, no Keras: :mod:`~tf_lth.data.pipeline` (:class:`Dataset`:
uint8 splits and ``tf.data`` pipelines, :func:`load`) and :mod:`~tf_lth.data.augment`. The pipeline's
names (``tf_lth.data.load``, ``Dataset``, ...) load TensorFlow on first use.
"""
import importlib

from tf_lth.data.specs import DATA_DIR_ENV, DATASETS, DatasetSpec, read_idx
from tf_lth.data.user import RESIZE_MODES, load_arrays, resolve

_PIPELINE = ("Dataset", "load", "load_config", "normalize", "fit_images", "ALIGN")
__all__ = ["DATA_DIR_ENV", "DATASETS", "DatasetSpec", "read_idx", "RESIZE_MODES", "load_arrays", "resolve", *_PIPELINE]


def __getattr__(name: str):
    if name in _PIPELINE:
        return getattr(importlib.import_module("tf_lth.data.pipeline"), name)
    raise AttributeError(f"module 'tf_lth.data' has no attribute {name!r}")
