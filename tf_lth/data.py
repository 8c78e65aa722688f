"""Datasets as train / validation / test splits of uint8 images, normalised on the fly.

Every split holds ``x`` as ``uint8`` of shape ``(N, H, W, C)`` (0-255) and ``y`` as ``uint8``
class ids; :meth:`Dataset.pipeline` turns a split into a ``tf.data`` pipeline of ``float32``
images in [0, 1]. Keeping uint8 until the batch is made costs a quarter of the memory of a
float copy, and no full-dataset float array is ever made. The pipelines read the arrays in place:
each split becomes a TensorFlow tensor once per process, sharing the numpy array's memory (DLPack),
and ``tf.data`` is told not to rewrite the pipeline graph, which would serialise a copy of it.

Which datasets exist, where their files are found and how they are read is
:mod:`tf_lth.datasets` (one :class:`~tf_lth.datasets.DatasetSpec` each, in a registry); this
module holds out the validation split and makes the pipelines.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from tf_lth.datasets import DATA_DIR_ENV, DATASETS, read_idx
from tf_lth.errors import TfLthError
from tf_lth.keras2 import tf

# DATA_DIR_ENV, DATASETS (the registry of specs) and read_idx live in tf_lth.datasets; they are
# named here too because the command line and scripts reach them as data.<name>.
__all__ = ["ALIGN", "DATASETS", "DATA_DIR_ENV", "Dataset", "load", "normalize", "read_idx"]
ALIGN = 64  # bytes: TensorFlow only shares the memory of arrays aligned like its own tensors


@dataclass(frozen=True)
class Dataset:
    """Train / validation / test splits of one dataset (uint8 images, uint8 labels)."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int = 10

    @property
    def input_shape(self) -> tuple:
        return tuple(self.x_train.shape[1:])

    def split(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """The ``(x, y)`` uint8 arrays of ``train``, ``val`` or ``test``."""
        if name not in ("train", "val", "test"):
            raise TfLthError(f"unknown split {name!r}: use train, val or test")
        return getattr(self, f"x_{name}"), getattr(self, f"y_{name}")

    def pipeline(self, split: str, batch_size: int, shuffle: bool = False, seed: int = 0):
        """A ``tf.data`` pipeline of ``(float32 image in [0, 1], int32 label)`` batches.

        The uint8 arrays are sliced, batched, then normalised per batch; with ``shuffle`` the
        order is reshuffled every epoch from ``seed`` (deterministic across runs).
        """
        x, y = self._tensors[split]
        ds = tf.data.Dataset.from_tensor_slices((x, y))
        if shuffle:
            ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
        return _in_place(ds.batch(batch_size).map(normalize, num_parallel_calls=tf.data.AUTOTUNE))

    def epochs(self, batch_size: int, epochs: int, seed: int = 0, initial_epoch: int = 0):
        """Training batches for epochs ``initial_epoch .. epochs - 1``, and the steps per epoch.

        Epoch ``e`` is ordered by a permutation drawn from ``(seed, e)`` alone, so a run resumed
        at any epoch sees exactly the batches an uninterrupted run sees. Batches are gathered from
        the uint8 arrays and normalised on the fly (no float copy of the dataset).
        """
        x, y = self._tensors["train"]
        n = len(self.x_train)
        order = np.stack([np.random.default_rng([seed, e]).permutation(n).astype(np.int32)
                          for e in range(initial_epoch, epochs)])
        ds = tf.data.Dataset.from_tensor_slices(order).flat_map(
            lambda perm: tf.data.Dataset.from_tensor_slices(perm).batch(batch_size))
        ds = ds.map(lambda idx: normalize(tf.gather(x, idx), tf.gather(y, idx)), num_parallel_calls=tf.data.AUTOTUNE)
        return _in_place(ds), -(-n // batch_size)

    @cached_property
    def _tensors(self) -> dict:
        """Split -> ``(x, y)`` tensors that share the arrays' memory (made once, on first use)."""
        return {name: tuple(_shared_tensor(a) for a in self.split(name)) for name in ("train", "val", "test")}

    def arrays(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """``(float32 x in [0, 1], int32 y)`` numpy arrays: handy for small splits and tests."""
        x, y = self.split(split)
        return x.astype(np.float32) / 255.0, y.astype(np.int32)


def _aligned(a: np.ndarray) -> np.ndarray:
    """``a`` itself if TensorFlow can share its memory (C order, writable, aligned), else such a copy."""
    if a.flags.c_contiguous and a.flags.writeable and a.ctypes.data % ALIGN == 0:
        return a
    return _take(a, np.arange(len(a)))


def _take(a: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``a[rows]`` gathered straight into a new ``ALIGN``-byte aligned array."""
    shape = (len(rows), *a.shape[1:])
    size = int(np.prod(shape)) * a.itemsize
    buffer = np.empty(size + ALIGN, np.uint8)
    start = -buffer.ctypes.data % ALIGN
    out = buffer[start:start + size].view(a.dtype).reshape(shape)
    np.take(a, rows, axis=0, out=out, mode="clip")  # "clip": no temporary buffer (rows are valid)
    return out


def _shared_tensor(a: np.ndarray):
    """A tensor over the memory of ``a`` (or of an aligned copy): no copy of the data in TensorFlow."""
    return tf.experimental.dlpack.from_dlpack(_aligned(a).__dlpack__())


def _in_place(ds):
    """Prefetched, without tf.data's default graph rewrites: they serialise the pipeline's captured
    tensors (here the whole training split) into a graph, a transient copy of the data per pipeline."""
    options = tf.data.Options()
    options.experimental_optimization.apply_default_optimizations = False
    return ds.prefetch(tf.data.AUTOTUNE).with_options(options)


def normalize(x, y):
    """uint8 images to float32 in [0, 1], labels to int32 (used inside ``tf.data``)."""
    return tf.cast(x, tf.float32) / 255.0, tf.cast(y, tf.int32)


def load(name: str = "mnist5k", data_dir: str | os.PathLike | None = None, validation: int | None = None,
         seed: int = 0) -> Dataset:
    """Load dataset ``name`` and hold ``validation`` examples of train out (seeded by ``seed``).

    ``data_dir`` (or the ``TF_LTH_DATA_DIR`` environment variable) names a folder with the
    standard files, directly or in a sub-folder named after the dataset.
    """
    spec = DATASETS.get(name)
    (x_train, y_train), (x_test, y_test) = spec.read(data_dir)
    if validation is None:
        validation = spec.sizes[1]
    if not 0 <= validation < len(x_train):
        raise TfLthError(
            f"validation={validation} must be between 0 and {len(x_train) - 1} for {name}"
        )
    order = np.random.default_rng(seed).permutation(len(x_train))
    train, val = order[: len(x_train) - validation], order[len(x_train) - validation:]
    return Dataset(name, _take(x_train, train), _take(y_train, train), _take(x_train, val), _take(y_train, val),
                   _aligned(x_test), _aligned(y_test), num_classes=spec.num_classes)
