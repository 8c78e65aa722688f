"""Ship a ticket: SavedModel, sparse TFLite (fp32, int8, fp16, full-integer int8) and a ticket.json.

One export folder (default ``saved_models/<name>/round_<k>/``)::

    saved_model/          serving signature: input "image" -> output "logits"
    ticket.tflite         fp32, EXPERIMENTAL_SPARSITY (weights >= 30% zeros stored sparse)
    ticket_int8.tflite    + dynamic-range int8 (Optimize.DEFAULT)
    ticket_fp16.tflite    + float16 weights (optional)
    ticket_int8_full.tflite, ticket_int8_qat.tflite   full-integer (optional, :mod:`tf_lth.quantize`)
    ticket.json           sparsity, parameter counts, bytes (raw, gzipped, vs dense), Keras-vs-TFLite
                          logit difference, accuracy, ops, sparse check, op resolver, latency

A dense fp32 conversion of the same weights is made as the reference for bytes and latency and is
not kept. The folder is written beside its destination and renamed into place at the end, so a
killed export leaves the previous export or none, never half of one. :mod:`tf_lth.tflite` converts,
runs (which op resolver, and why), verifies against Keras (its tolerances are recorded in
ticket.json) and times each TFLite file; a failed check fails the export with one line, and the
previous export stays in place. The formats are :data:`tf_lth.config.EXPORT_FORMATS`, there so
that the command line knows them without importing TensorFlow.

A Keras 3 ticket goes to :mod:`tf_lth.export3` (the same folder plus ``ticket.keras``), which also holds
the steps both flavours share; this module imports tf_keras and TF-MOT only inside the tf_keras route,
so that a Keras 3 export (on JAX too) never loads them.
"""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np

from tf_lth import flavours
from tf_lth.config import DEFAULT_EXPORT_FORMATS, EXPORT_FORMATS
from tf_lth.errors import TfLthError
from tf_lth.export3 import (CHECK_EXAMPLES, INPUT, JOB, KERAS_FILE, OUTPUT, accuracy, dir_bytes, export_keras3, float32, logits,
                            staged_dir, tensorflow_half, weight_stats, write_tflite)


def default_path(name: str, round: int | None = None) -> Path:
    """``saved_models/<name>/round_<k>`` (``.../latest`` when the round is unknown)."""
    return Path("saved_models") / name / (f"round_{round}" if round is not None else "latest")


def export_ticket(model, path=None, *, name: str | None = None, round: int | None = None, dataset=None,
                  formats=DEFAULT_EXPORT_FORMATS, fp16: bool = False, benchmark: bool = True, sample=None,
                  quantization=None) -> dict:
    """Export ``model`` (TF-MOT wrappers stripped, masks applied) to ``path`` and return ticket.json.
    A Keras 3 ticket goes to :func:`tf_lth.export3.export_keras3` (``ticket.keras`` too; no int8_qat).

    ``dataset`` (a :class:`~tf_lth.data.Dataset` or its name) gives the comparison batch and the
    test accuracy, and the training examples int8_full / int8_qat need; without it ``sample`` (an input
    array) or a seeded uniform batch is compared. ``fp16=True`` adds ``"fp16"`` to ``formats``;
    ``benchmark=False`` skips the latency runs; ``quantization`` (a :class:`tf_lth.quantize.Options`) sets
    the full-integer formats' I/O type, calibration and QAT fine-tune.
    """
    keras3 = flavours.of(model) == flavours.KERAS3
    if not keras3:
        from tf_lth.keras2 import require_tf_keras_model
        require_tf_keras_model(model)
    formats = tuple(dict.fromkeys([*formats, *(["fp16"] if fp16 else [])]))
    unknown = set(formats) - set(EXPORT_FORMATS)
    if unknown:
        raise TfLthError(f"unknown export format(s) {', '.join(sorted(unknown))}: "
                         f"choose from {', '.join(EXPORT_FORMATS)}")
    inputs, outputs = (len(getattr(model, side, None) or [None]) for side in ("inputs", "outputs"))  # subclassed: 1
    if inputs != 1 or outputs != 1:
        raise TfLthError(f"{model.name} has {inputs} inputs and {outputs} outputs: export needs exactly one of each")
    name = name or model.name
    path = Path(path) if path is not None else default_path(name, round)
    if keras3:  # never loads tf_keras or TF-MOT (nor TensorFlow, on JAX): tf_lth.export3
        return export_keras3(model, path, name=name, round=round, dataset=dataset, formats=formats,
                             benchmark=benchmark, sample=sample, quantization=quantization)
    from tf_lth import data as data_lib
    from tf_lth import quantize
    if None in model.input_shape[1:]:
        raise TfLthError(f"{model.name} has input shape {model.input_shape}: export needs it fixed but for the batch")
    data = data_lib.load(dataset) if isinstance(dataset, str) else dataset
    net = stripped(model)
    quantization = quantization or quantize.Options()
    quantize.check(net, data, formats, quantization)
    x, source = _check_batch(net, data, sample)
    info = {"name": name, "round": round, "input": {"name": INPUT, "shape": [None, *net.input_shape[1:]],
                                                      "dtype": net.inputs[0].dtype.name},
            "output": {"name": OUTPUT, "shape": list(net.output_shape)}, **weight_stats(net),
            "check": {"source": source, "examples": len(x)}}
    keras_logits = logits(net, x)
    test = data.arrays("test") if data is not None else None
    if test is not None:
        info["keras_test_accuracy"] = accuracy(logits(net, test[0]), test[1])
    with staged_dir(path) as tmp:
        saved = tmp / "saved_model"
        _save(net, saved)
        info["formats"] = {}
        if "saved_model" in formats:
            info["formats"]["saved_model"] = {"path": "saved_model", **dir_bytes(saved)}
        write_tflite(info, tmp, saved, net, x, keras_logits, test, formats, data=data, quantization=quantization,
                     benchmark=benchmark)
        if "saved_model" not in formats:
            shutil.rmtree(saved)
        (tmp / "ticket.json").write_text(json.dumps(info, indent=2) + "\n")
    return info


def stripped(model):
    """A float32 copy of the tf_keras ``model`` without pruning wrappers, each pruned weight multiplied
    by its mask (a ticket trained under a mixed policy exports float32 logits, and int8 made from float32)."""
    from tf_lth.keras2 import keras
    from tensorflow_model_optimization.python.core.sparsity.keras.prune import strip_pruning
    from tensorflow_model_optimization.python.core.sparsity.keras.pruning_wrapper import PruneLowMagnitude
    masked = {}
    for layer in model.layers:
        if isinstance(layer, PruneLowMagnitude):
            masked.update({id(w): w.numpy() * m.numpy() for w, m, _ in layer.pruning_vars})
    plain = strip_pruning(model)  # shares the wrapped layers (and variables) with ``model``
    copy = keras.models.clone_model(plain, clone_function=lambda lay: type(lay).from_config(float32(lay.get_config())))
    copy.set_weights([masked.get(id(v), v.numpy()) for v in plain.weights])
    return copy


def _check_batch(net, data, sample) -> tuple[np.ndarray, str]:
    """The fixed batch Keras and TFLite are compared on, and where it came from."""
    dtype = net.inputs[0].dtype.as_numpy_dtype
    if data is not None:
        return data.arrays("test")[0][:CHECK_EXAMPLES].astype(dtype), f"{data.name} test[:{CHECK_EXAMPLES}]"
    if sample is not None:
        return np.asarray(sample, dtype), "sample"
    rng = np.random.default_rng(0)
    return rng.random((CHECK_EXAMPLES, *net.input_shape[1:])).astype(dtype), "uniform [0, 1), seed 0"


def _save(net, folder: Path) -> None:
    """SavedModel with a ``serving_default`` signature ``image -> {"logits": ...}``; loads with
    ``tf.saved_model.load`` and ``keras.models.load_model``."""
    from tf_lth.keras2 import tf
    spec = tf.TensorSpec([None, *net.input_shape[1:]], net.inputs[0].dtype, name=INPUT)
    serve = tf.function(lambda image: {OUTPUT: net(image, training=False)}, input_signature=[spec])
    net.save(str(folder), save_format="tf", include_optimizer=False, signatures={"serving_default": serve})


def child_main(folder: str) -> None:
    """The TensorFlow process of a JAX ticket's export (``python -m tf_lth.export <staged folder>``, from
    :func:`tf_lth.export3.run_child`; here, not in export3, for the size limit): ``ticket.keras`` loaded on
    the TensorFlow backend and held to JAX's logits, then the SavedModel and TFLite files; the new
    ticket.json entries go to ``job.out.json``."""
    import importlib
    tmp = Path(folder)
    job, arrays = json.loads((tmp / f"{JOB}.json").read_text()), dict(np.load(tmp / f"{JOB}.npz"))
    for module in job.pop("modules"):
        importlib.import_module(module)
    from tf_lth.keras3 import keras
    net = keras.saving.load_model(tmp / KERAS_FILE, compile=False)
    x, parent = arrays["x"], arrays["keras_logits"]
    diff = float(np.max(np.abs(logits(net, x) - parent)))
    if not diff <= 1e-5 * max(1.0, float(np.max(np.abs(parent)))):
        raise TfLthError(f"{KERAS_FILE} on TensorFlow computes logits {diff:.3g} away from JAX's")
    if job["calibration"] is not None:
        job["calibration"] = (arrays["representative"], job["calibration"])
    info = {"formats": {}, "check": {"source": job.pop("source")}}
    test = (arrays["test_x"], arrays["test_y"]) if "test_x" in arrays else None
    tensorflow_half(info, tmp, net, x, parent, test, **job)
    info["check"] = {"tensorflow_backend_max_abs_logit_diff": diff}
    (tmp / f"{JOB}.out.json").write_text(json.dumps(info))


def summary(info: dict) -> str:
    """A table of a ticket.json: bytes, sparse storage, logit difference, accuracy, latency, ops."""
    from tf_lth import quantize
    p = info["parameters"]
    accuracy = f", Keras test accuracy {info['keras_test_accuracy']:.4f}" if "keras_test_accuracy" in info else ""
    lines = [f"{info['name']} round {info['round']}: {p['nonzero']:,} of {p['total']:,} weights non-zero "
             f"({100 * p['sparsity']:.1f}% sparse){accuracy}"]
    table = [("format", "bytes", "x dense", "gzip", "sparse", "max|dlogit|", "acc", "us b1", "us b64", "x faster b1",
              "resolver", "ops")]
    for kind, r in ([("dense", info["dense"])] if "dense" in info else []) + list(info["formats"].items()):
        lat, speed = r.get("latency_us", {}), r.get("speedup_vs_dense", {})
        table.append((kind, f"{r['bytes']:,}", _fmt(r.get("bytes_vs_dense"), ".3f"), f"{r['gzip_bytes']:,}",
                      {True: "yes", False: "no"}.get(r.get("sparse"), ""), _fmt(r.get("max_abs_logit_diff"), ".1e"),
                      _fmt(r.get("test_accuracy"), ".4f"), _fmt(lat.get("batch1"), ".1f"),
                      _fmt(lat.get("batch64"), ".1f"), _fmt(speed.get("batch1"), ".2f"), r.get("resolver", ""),
                      ",".join(r.get("ops", []))))
    lines.append(format_table(table))
    lines += [quantize.note(kind, r) for kind, r in info["formats"].items() if kind in quantize.FORMATS]
    for resolver, lat in info.get("dense", {}).get("latency_us", {}).items():
        lines.append(f"dense fp32 with {resolver}: {lat['batch1']:.1f} us at batch 1, "
                     f"{lat['batch64']:.1f} us at batch 64")
    return "\n".join(lines)


def format_table(rows) -> str:
    """Rows of strings as left-aligned columns."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows)


def _fmt(value, spec: str) -> str:
    return "" if value is None else format(value, spec)


__all__ = ["export_ticket", "default_path", "stripped", "weight_stats", "staged_dir", "summary", "format_table",
           "child_main"]

if __name__ == "__main__":
    child_main(sys.argv[1])
