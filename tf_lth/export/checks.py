"""What every export shares, whatever the Keras flavour: the fixed check batch (in the model's pixel range),
the model's outputs on it and their name, a float32 config, parameter counts, accuracy and file sizes.
No Keras and no TensorFlow are imported here: both flavours' routes call it with their own models.
"""
from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

INPUT = "image"  # the SavedModel signature's input; its output is output_name(net)
CHECK_EXAMPLES = 256  # the fixed batch Keras and TFLite outputs are compared on


def float32(config):
    """A model's or layer's config (either flavour, nested layers too) with every mixed-precision policy
    made float32: the exported ticket computes in float32 whatever precision it was trained in."""
    if isinstance(config, dict):
        name = str(config.get("config", {}).get("name", "")) if config.get("class_name") == "DTypePolicy" else ""
        if config.get("class_name") == "Policy" or name.startswith("mixed_"):
            return "float32"
        return {k: "float32" if k == "dtype" and str(v).startswith("mixed_") else float32(v) for k, v in config.items()}
    return [float32(v) for v in config] if isinstance(config, list) else config


def check_batch(shape, test, sample, name: str, scale) -> tuple[np.ndarray, str]:
    """The fixed batch Keras and TFLite are compared on (float32, in the model's pixel range ``scale``),
    and where it came from: the test split's first :data:`CHECK_EXAMPLES`, ``sample``, or a seeded
    uniform draw over the pixel range."""
    if test is not None:
        return np.asarray(test[0][:CHECK_EXAMPLES], np.float32), f"{name} test[:{CHECK_EXAMPLES}]"
    if sample is not None:
        return np.asarray(sample, np.float32), "sample"
    low, high = scale.range
    draw = np.random.default_rng(0).random((CHECK_EXAMPLES, *shape)).astype(np.float32)
    return low + (high - low) * draw, f"uniform [{low:g}, {high:g}), seed 0"


def outputs_of(net, x, batch: int = 256) -> np.ndarray:
    """``net``'s inference outputs on ``x`` (logits or probabilities), float32 numpy (either flavour)."""
    return np.concatenate([np.asarray(net(x[i:i + batch], training=False), np.float32) for i in range(0, len(x), batch)])


def output_name(net) -> str:
    """What ``net`` outputs, as the SavedModel signature and ticket.json name it: ``"probabilities"`` when its
    last layer ends in a softmax or sigmoid, else ``"logits"`` (the networks here all end in logits)."""
    last = net.layers[-1] if getattr(net, "layers", None) else None
    activation = getattr(getattr(last, "activation", None), "__name__", "")
    kinds = {cls.__name__ for cls in type(last).__mro__} if last is not None else set()
    return "probabilities" if activation in ("softmax", "sigmoid") or "Softmax" in kinds else "logits"


def weight_stats(model) -> dict:
    """Parameter counts (total, non-zero) and per-weight sparsity of a plain Keras model (either flavour)."""
    layers, total, nonzero = {}, 0, 0
    for layer in model.layers:
        for w in layer.weights:
            nz = int(np.count_nonzero(a := np.asarray(w.numpy())))
            layers[f"{layer.name}/{w.name.split('/')[-1].split(':')[0]}"] = {
                "shape": list(a.shape), "nonzero": nz, "sparsity": round(1 - nz / max(a.size, 1), 6)}
            total, nonzero = total + a.size, nonzero + nz
    return {"parameters": {"total": int(total), "nonzero": nonzero, "sparsity": round(1 - nonzero / max(total, 1), 6)},
            "layers": layers}


def accuracy(logits, y) -> float:
    return round(float(np.mean(np.argmax(logits, -1) == np.asarray(y))), 6)


def dir_bytes(folder: Path, files=None) -> dict:
    """Bytes and gzipped bytes of ``files`` (default: every file under ``folder``)."""
    files = [p for p in sorted(folder.rglob("*")) if p.is_file()] if files is None else files
    return {"bytes": sum(p.stat().st_size for p in files),
            "gzip_bytes": sum(len(gzip.compress(p.read_bytes(), mtime=0)) for p in files)}


__all__ = ["check_batch", "outputs_of", "output_name", "float32", "weight_stats", "accuracy", "dir_bytes",
           "INPUT", "CHECK_EXAMPLES"]
