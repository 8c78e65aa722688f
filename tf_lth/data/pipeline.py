"""Datasets as train / validation / test splits of uint8 images, normalised on the fly.

Every split holds ``x`` as ``uint8`` of shape ``(N, H, W, C)`` (0-255) and ``y`` as ``uint8``
class ids; :meth:`Dataset.pipeline` turns a split into a ``tf.data`` pipeline of ``float32``
images in [0, 1], or in 0-255 for a model that scales its input itself (``input_scale="raw"``, see
:mod:`tf_lth.data.input_scale`). Keeping uint8 until the batch is made costs a quarter of the memory of a
float copy, and no full-dataset float array is ever made. The pipelines read the arrays in place:
each split becomes a TensorFlow tensor once per process, sharing the numpy array's memory (DLPack),
and ``tf.data`` is told not to rewrite the pipeline graph, which would serialise a copy of it.

Which datasets exist, where their files are found and how they are read is
:mod:`tf_lth.data.specs` (one :class:`~tf_lth.data.specs.DatasetSpec` each, in a registry, or made
from a user's ``npz:PATH`` / ``folder:PATH``); this module holds out the validation split, fits
the images to a model's input (:func:`fit_images`) and makes the pipelines, with the training
augmentation (:func:`crop_and_flip`) drawn by stateless random ops from ``(seed, epoch)``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, replace
from functools import cached_property

import numpy as np

from tf_lth.data.augment import augment_draws, crop_and_flip
from tf_lth.data.input_scale import check
from tf_lth.data.user import RESIZE_MODES, resolve
from tf_lth.errors import TfLthError
from tf_lth.util.tensorflow import tensorflow

tf = tensorflow()  # tf.data and a few image ops: no Keras here

__all__ = ["ALIGN", "Dataset", "fit_images", "load", "load_config", "normalize"]
ALIGN = 64  # bytes: TensorFlow only shares the memory of arrays aligned like its own tensors
RESIZE_ROWS = 1024  # images rescaled at a time: no float copy of a whole split


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
    input_scale: str = "unit"  # the pixel range fed to the model: unit ([0, 1]) or raw (0-255)

    def with_input_scale(self, scale: str) -> "Dataset":
        """This dataset fed in the pixel range ``scale`` (the same arrays, shared)."""
        return self if check(scale) == self.input_scale else replace(self, input_scale=scale)

    def normalize(self, x, y):
        """uint8 images to float32 in the dataset's pixel range, labels to int32 (inside ``tf.data``)."""
        return normalize(x, y, self.input_scale)

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
        return _in_place(ds.batch(batch_size).map(self.normalize, num_parallel_calls=tf.data.AUTOTUNE))

    def epochs(self, batch_size: int, epochs: int, seed: int = 0, initial_epoch: int = 0, augment: bool = False):
        """Training batches for epochs ``initial_epoch .. epochs - 1``, and the steps per epoch.

        Epoch ``e`` is ordered by a permutation drawn from ``(seed, e)`` alone, so a run resumed
        at any epoch sees exactly the batches an uninterrupted run sees. Batches are gathered from
        the uint8 arrays and normalised on the fly (no float copy of the dataset). With ``augment``
        each image is randomly cropped after zero padding and flipped (:func:`crop_and_flip`); the draws
        come from ``(seed, e)`` alone too (stateless ops), one per place in the epoch, so they do
        not depend on where a run was resumed, nor on the batch size.
        """
        x, y = self._tensors["train"]
        n = len(self.x_train)
        numbers = np.arange(initial_epoch, epochs, dtype=np.int64)
        order = np.stack([np.random.default_rng([seed, e]).permutation(n).astype(np.int32) for e in numbers])
        if augment:
            ds = tf.data.Dataset.from_tensor_slices((numbers, order)).flat_map(
                lambda e, perm: tf.data.Dataset.from_tensor_slices((perm, augment_draws(seed, e, n))).batch(batch_size))
            ds = ds.map(lambda idx, draws: self.normalize(crop_and_flip(tf.gather(x, idx), draws), tf.gather(y, idx)),
                        num_parallel_calls=tf.data.AUTOTUNE)
        else:
            ds = tf.data.Dataset.from_tensor_slices(order).flat_map(
                lambda perm: tf.data.Dataset.from_tensor_slices(perm).batch(batch_size))
            ds = ds.map(lambda idx: self.normalize(tf.gather(x, idx), tf.gather(y, idx)),
                        num_parallel_calls=tf.data.AUTOTUNE)
        return _in_place(ds), -(-n // batch_size)

    @cached_property
    def _tensors(self) -> dict:
        """Split -> ``(x, y)`` tensors that share the arrays' memory (made once, on first use)."""
        return {name: tuple(_shared_tensor(a) for a in self.split(name)) for name in ("train", "val", "test")}

    def arrays(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """``(float32 x in the dataset's pixel range, int32 y)`` numpy arrays: handy for small splits and tests."""
        x, y = self.split(split)
        x = x.astype(np.float32)
        return (x / 255.0 if self.input_scale == "unit" else x), y.astype(np.int32)


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


def normalize(x, y, input_scale: str = "unit"):
    """uint8 images to float32 in [0, 1] (``input_scale="raw"``: 0-255), labels to int32 (inside ``tf.data``)."""
    x = tf.cast(x, tf.float32)
    return (x / 255.0 if input_scale == "unit" else x), tf.cast(y, tf.int32)


def image_size_of(image_size) -> tuple[int, int]:
    """``image_size`` as ``(height, width)`` of positive ints, or a one-line error."""
    try:
        height, width = (int(v) for v in image_size)
    except (TypeError, ValueError):
        height = width = 0
    if height <= 0 or width <= 0 or tuple(image_size) != (height, width):
        raise TfLthError(f"image_size={image_size!r} must be (height, width), two positive whole numbers")
    return height, width


def fit_images(x: np.ndarray, image_size=None, channels: int | None = None, resize: str = "scale") -> np.ndarray:
    """uint8 images ``(N, H, W, C)`` fitted to a model's input: ``image_size`` ``(height, width)`` and
    ``channels`` (1 or 3); ``None`` keeps that of ``x``, and ``x`` itself is returned if nothing changes.

    ``resize="scale"`` rescales (bilinear, antialiased when shrinking; rounded back to uint8);
    ``resize="pad"`` pads with zeros around the centre, or crops the centre, as LeNet-5 pads 28x28
    MNIST to 32x32 (``tf.image.resize_with_crop_or_pad``'s placement). One channel becomes three by
    repeating it; three become one by luminance (ITU-R 601-2, Pillow's ``L``).
    """
    if resize not in RESIZE_MODES:
        raise TfLthError(f"resize={resize!r}: choose one of {', '.join(RESIZE_MODES)}")
    height, width = x.shape[1:3] if image_size is None else image_size_of(image_size)
    have = x.shape[3]
    want = have if channels is None else channels
    if want != have and (want, have) not in ((3, 1), (1, 3)):
        raise TfLthError(f"cannot make {want}-channel images from {have}-channel ones: use channels=1 or 3 "
                         f"(or the images' own {have})")
    if want < have:
        x = np.rint(x.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32))[..., None].astype(np.uint8)
    if (height, width) != x.shape[1:3]:
        x = _padded(x, height, width) if resize == "pad" else _rescaled(x, height, width)
    if want > have:
        x = np.repeat(x, want, axis=3)
    return x


def _padded(x: np.ndarray, height: int, width: int) -> np.ndarray:
    """``x`` centred in ``height x width`` zeros (or its centre cropped to it), per axis."""
    out = np.zeros((len(x), height, width, x.shape[3]), np.uint8)
    (top, crop_top, rows), (left, crop_left, cols) = (
        (max(size - have, 0) // 2, max(have - size, 0) // 2, min(size, have))
        for size, have in ((height, x.shape[1]), (width, x.shape[2])))
    out[:, top:top + rows, left:left + cols] = x[:, crop_top:crop_top + rows, crop_left:crop_left + cols]
    return out


def _rescaled(x: np.ndarray, height: int, width: int) -> np.ndarray:
    """``x`` rescaled to ``height x width`` (bilinear, antialiased), a chunk at a time."""
    out = np.empty((len(x), height, width, x.shape[3]), np.uint8)
    for start in range(0, len(x), RESIZE_ROWS):
        chunk = tf.image.resize(x[start:start + RESIZE_ROWS], (height, width), method="bilinear", antialias=True)
        out[start:start + RESIZE_ROWS] = np.clip(np.rint(chunk.numpy()), 0, 255)
    return out


def load(name: str = "mnist5k", data_dir: str | os.PathLike | None = None, validation: int | None = None,
         seed: int = 0, image_size=None, channels: int | None = None, resize: str = "scale") -> Dataset:
    """Load dataset ``name`` and hold ``validation`` examples of train out (seeded by ``seed``).

    ``name`` is a registered dataset, ``npz:PATH`` or ``folder:PATH`` (see :mod:`tf_lth.data.specs`).
    ``data_dir`` (or the ``TF_LTH_DATA_DIR`` environment variable) names a folder with the
    standard files, directly or in a sub-folder named after the dataset. ``image_size``,
    ``channels`` and ``resize`` fit every split to a model's input (:func:`fit_images`): e.g.
    Fashion-MNIST for the CIFAR networks is ``image_size=(32, 32), channels=3, resize="pad"``. An
    image folder is read at the asked size at once (one resize, by Keras) when ``resize="scale"``.
    """
    spec = resolve(name)
    if image_size is not None:
        image_size = image_size_of(image_size)
        if spec.resizes and resize == "scale":
            spec = replace(spec, shape=(*image_size, spec.shape[2]))
    if resize not in RESIZE_MODES:
        raise TfLthError(f"resize={resize!r}: choose one of {', '.join(RESIZE_MODES)}")
    if channels not in (None, 1, 3):
        raise TfLthError(f"channels={channels!r}: use 1 or 3 (or leave it out to keep the images' own)")
    (x_train, y_train), (x_test, y_test) = spec.read(data_dir)
    if validation is None:
        validation = spec.sizes[1]
    if not 0 <= validation < len(x_train):
        raise TfLthError(
            f"validation={validation} must be between 0 and {len(x_train) - 1} for {name}"
        )
    x_train = fit_images(x_train, image_size, channels, resize)
    x_test = fit_images(x_test, image_size, channels, resize)
    order = np.random.default_rng(seed).permutation(len(x_train))
    train, val = order[: len(x_train) - validation], order[len(x_train) - validation:]
    return Dataset(name, _take(x_train, train), _take(y_train, train), _take(x_train, val), _take(y_train, val),
                   _aligned(x_test), _aligned(y_test), num_classes=spec.num_classes)


def load_config(config, data_dir: str | os.PathLike | None = None) -> Dataset:
    """The data of an :class:`~tf_lth.config.configs.ExperimentConfig` (its dataset, validation split, seed and
    image size), from ``data_dir`` if given, else the config's."""
    return load(config.dataset, data_dir or config.data_dir, config.validation, config.seed,
                image_size=config.image_size, channels=config.channels, resize=config.resize)
