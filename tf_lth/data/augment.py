"""Data augmentation of CIFAR's recipe inside ``tf.data``: random crops of the image padded with
:data:`AUGMENT_PAD` zeros a side, and horizontal flips, drawn by stateless ops from ``(seed, epoch)``
alone, so a resumed run sees exactly the batches of an uninterrupted one
(:meth:`tf_lth.data.pipeline.Dataset.epochs` applies it).
"""
from __future__ import annotations

from tf_lth.util.tensorflow import tensorflow

tf = tensorflow()
AUGMENT_PAD = 4  # pixels of zeros around an image before the random crop back to its size (CIFAR's recipe)


def augment_draws(seed: int, epoch, n: int):
    """The random draws of one epoch's ``n`` places, ``(n, 3)`` int32: crop offsets (row, column) in
    ``0 .. 2 * AUGMENT_PAD`` and a flip bit, from stateless ops seeded by ``(seed, epoch)`` alone."""
    offsets_seed, flips_seed = tf.unstack(tf.random.experimental.stateless_split(
        tf.stack([tf.cast(seed, tf.int64), tf.cast(epoch, tf.int64)]), 2))
    offsets = tf.random.stateless_uniform([n, 2], offsets_seed, minval=0, maxval=2 * AUGMENT_PAD + 1, dtype=tf.int32)
    flips = tf.random.stateless_uniform([n, 1], flips_seed, minval=0, maxval=2, dtype=tf.int32)
    return tf.concat([offsets, flips], axis=1)


def crop_and_flip(images, draws):
    """A batch of images ``(B, H, W, C)`` padded with ``AUGMENT_PAD`` zeros a side, cropped back to
    ``H x W`` at the offsets ``draws[:, :2]`` and flipped left-right where ``draws[:, 2]`` is 1.

    Crop and flip are one gather of rows then columns per image (a flip reads the crop's columns
    backwards), on the uint8 images before they are normalised: no float copy, no per-image ops.
    """
    height, width = images.shape[1], images.shape[2]
    padded = tf.pad(images, [[0, 0], [AUGMENT_PAD, AUGMENT_PAD], [AUGMENT_PAD, AUGMENT_PAD], [0, 0]])
    rows = draws[:, :1] + tf.range(height)[None]
    forward = tf.range(width)[None]
    cols = draws[:, 1:2] + tf.where(draws[:, 2:3] == 1, width - 1 - forward, forward)
    return tf.gather(tf.gather(padded, rows, axis=1, batch_dims=1), cols, axis=2, batch_dims=1)
