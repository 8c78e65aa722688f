"""How the TFLite converter stores a ticket's kernels sparse, and when LiteRT then computes them wrongly
(numpy only: decided from the Keras kernels before any conversion).

Measured on TF 2.21's converter and ai-edge-litert 2.3 (600 kernel/format cases, issue 25): with
``EXPERIMENTAL_SPARSITY`` a weight tensor (TFLite layout [out, in], the Keras kernel transposed; for
int8 formats its per-output-channel int8 values, so weights that round to 0 count as zeros) is stored

- dense when under 30% of it is zero;
- in 1 x B blocks (B = 4 for float, 16 for int8 weights) when nearly all its zeros fill whole blocks
  (block zeros / all zeros > 0.9 for float, 0.8 for int8): FULLY_CONNECTED reads it directly;
- else random-sparse behind a DENSIFY op, which computes exactly like the dense tensor (convolution
  kernels: always so).

Three runtime failures follow, each reproduced on tickets: (1) a block-stored kernel loses its last
``in % B`` input rows, which the converter never encodes (every resolver, every format; LeNet's fc2 has
300 inputs, 300 % 16 = 12); (2) XNNPACK (the default resolver) reads a dynamic-range int8 1x16-block
weight as if it were dense: garbage outputs, finite, so nothing complains; (3) float16 weights in 1x4
blocks give NaN everywhere. Dynamic-range int8 quantizes only weights of at least 1,024 elements.
:func:`problem` says which applies, so such a file is stored dense instead (tf_lth.export.formats);
the export's check would catch (1) and (3) anyway, but (2) only under XNNPACK.
"""
from __future__ import annotations

import numpy as np

MIN_QUANTIZED = 1024  # dynamic-range int8 leaves smaller weights float32
RANDOM_SPARSE_FROM = 0.3  # the converter stores a tensor sparse from this fraction of zeros
BLOCKS = {False: (4, 0.9), True: (16, 0.8)}  # int8 weights? -> (block width, block-zeros threshold)
INTEGER = ("int8_full", "int8_qat")


def quantized(kernel: np.ndarray, kind: str) -> bool:
    """Whether ``kind`` stores ``kernel`` as int8."""
    return kind in INTEGER or (kind == "int8" and kernel.size >= MIN_QUANTIZED)


def zeros(kernel: np.ndarray, as_int8: bool) -> np.ndarray:
    """The zeros of a kernel in TFLite's layout (output channels first), after symmetric per-output-channel
    int8 rounding if ``as_int8``."""
    w = np.moveaxis(np.asarray(kernel, np.float64), -1, 0)
    if not as_int8:
        return w == 0
    scale = np.abs(w).reshape(len(w), -1).max(axis=1) / 127.0
    scale = np.where(scale == 0, 1.0, scale).reshape(-1, *([1] * (w.ndim - 1)))
    return np.round(w / scale) == 0


def storage(kernel: np.ndarray, kind: str) -> str:
    """``"dense"``, ``"densify"`` (random-sparse) or ``"block4"`` / ``"block16"`` for one Keras kernel
    (Dense ``[in, out]``; convolutions are never block-stored) in a sparse file of ``kind``."""
    kernel = np.asarray(kernel)
    as_int8 = quantized(kernel, kind)
    z = zeros(kernel, as_int8)
    if z.mean() < RANDOM_SPARSE_FROM:
        return "dense"
    if kernel.ndim != 2:
        return "densify"
    width, threshold = BLOCKS[as_int8]
    n_out, n_in = z.shape
    covered = (n_in // width) * width  # the converter looks at these columns only: the rest count as zeros
    nonzero_blocks = int((~z[:, :covered].reshape(n_out, -1, width).all(-1)).sum())
    block_zeros = 1.0 - nonzero_blocks * width / z.size
    return f"block{width}" if block_zeros / z.mean() > threshold else "densify"


def dropped(kernel: np.ndarray, kind: str, width: int) -> int:
    """Non-zero weights in the last ``in % width`` input rows, which a block encoding leaves out."""
    z = zeros(kernel, quantized(np.asarray(kernel), kind))
    return int((~z[:, (z.shape[1] // width) * width:]).sum())


def problem(kind: str, kernels: dict) -> str | None:
    """Why LiteRT would compute ``kind`` wrongly with these kernels (``{name: Keras kernel}``) stored
    sparse, or ``None``."""
    for name, kernel in kernels.items():
        found = storage(kernel, kind)
        if not found.startswith("block"):
            continue
        width = int(found[5:])
        lost = dropped(kernel, kind, width)
        inputs = np.shape(kernel)[0]
        if lost:
            return (f"the converter would store {name} in 1x{width} blocks, which leaves out its last "
                    f"{inputs % width} input rows ({inputs} % {width}) and {lost} weights in them")
        if kind == "fp16":
            return f"float16 weights in 1x{width} blocks ({name}) give NaN under every LiteRT resolver"
        if kind == "int8" and width == 16:
            return (f"XNNPACK (LiteRT's default) reads {name}'s int8 1x16-block weights as if they were dense "
                    "and computes wrong, finite outputs")
    return None


def kernels_of(net) -> dict:
    """``{layer/weight: array}`` of every kernel (``kernel``, ``depthwise_kernel``, ``pointwise_kernel``) of a
    plain Keras model of either flavour."""
    found = {}
    for layer in net.layers:
        for w in layer.weights:
            short = w.name.split("/")[-1].split(":")[0]
            if short.endswith("kernel"):
                found[f"{layer.name}/{short}"] = w.numpy() if hasattr(w, "numpy") else np.asarray(w)
    return found


__all__ = ["storage", "dropped", "problem", "kernels_of", "quantized", "zeros", "MIN_QUANTIZED"]
