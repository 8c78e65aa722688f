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
"""
from __future__ import annotations

import gzip
import json
import os
import secrets
import shutil
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from tf_lth import data as data_lib
from tf_lth import quantize, tflite
from tf_lth.config import DEFAULT_EXPORT_FORMATS, EXPORT_FORMATS
from tf_lth.keras2 import keras, require_tf_keras_model, tf
from tf_lth.errors import TfLthError
from tensorflow_model_optimization.python.core.sparsity.keras.prune import strip_pruning
from tensorflow_model_optimization.python.core.sparsity.keras.pruning_wrapper import PruneLowMagnitude

INPUT, OUTPUT = "image", "logits"
CHECK_EXAMPLES = 256  # the fixed batch Keras and TFLite logits are compared on


def default_path(name: str, round: int | None = None) -> Path:
    """``saved_models/<name>/round_<k>`` (``.../latest`` when the round is unknown)."""
    return Path("saved_models") / name / (f"round_{round}" if round is not None else "latest")


def export_ticket(model, path=None, *, name: str | None = None, round: int | None = None, dataset=None,
                  formats=DEFAULT_EXPORT_FORMATS, fp16: bool = False, benchmark: bool = True, sample=None,
                  quantization: quantize.Options | None = None) -> dict:
    """Export ``model`` (TF-MOT wrappers stripped, masks applied) to ``path`` and return ticket.json.

    ``dataset`` (a :class:`~tf_lth.data.Dataset` or its name) gives the comparison batch and the
    test accuracy, and the training examples int8_full / int8_qat need; without it ``sample`` (an input
    array) or a seeded uniform batch is compared. ``fp16=True`` adds ``"fp16"`` to ``formats``;
    ``benchmark=False`` skips the latency runs; ``quantization`` sets the full-integer formats' I/O type,
    calibration and QAT fine-tune.
    """
    require_tf_keras_model(model)
    formats = tuple(dict.fromkeys([*formats, *(["fp16"] if fp16 else [])]))
    unknown = set(formats) - set(EXPORT_FORMATS)
    if unknown:
        raise TfLthError(f"unknown export format(s) {', '.join(sorted(unknown))}: "
                         f"choose from {', '.join(EXPORT_FORMATS)}")
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise TfLthError(f"{model.name} has {len(model.inputs)} inputs and {len(model.outputs)} outputs: "
                         "export needs exactly one of each")
    if None in model.input_shape[1:]:
        raise TfLthError(f"{model.name} has input shape {model.input_shape}: export needs it fixed but for the batch")
    name = name or model.name
    path = Path(path) if path is not None else default_path(name, round)
    data = data_lib.load(dataset) if isinstance(dataset, str) else dataset
    net = stripped(model)
    quantization = quantization or quantize.Options()
    quantize.check(net, data, formats, quantization)
    x, source = _check_batch(net, data, sample)
    info = {"name": name, "round": round, "input": {"name": INPUT, "shape": [None, *net.input_shape[1:]],
                                                      "dtype": net.inputs[0].dtype.name},
            "output": {"name": OUTPUT, "shape": list(net.output_shape)}, **weight_stats(net),
            "check": {"source": source, "examples": len(x)}}
    keras_logits = _keras_logits(net, x)
    test = data.arrays("test") if data is not None else None
    if test is not None:
        info["keras_test_accuracy"] = _accuracy(_keras_logits(net, test[0]), test[1])
    with staged_dir(path) as tmp:
        saved = tmp / "saved_model"
        _save(net, saved)
        info["formats"] = {}
        if "saved_model" in formats:
            info["formats"]["saved_model"] = {"path": "saved_model", **_dir_bytes(saved)}
        kinds = [f for f in tflite.TFLITE if f in formats]
        if kinds:
            dense = tflite.convert(saved, "dense")
            info["dense"] = {"bytes": len(dense), "gzip_bytes": _gzip_len(dense), **tflite.inspect_tflite(dense)}
            files = {"dense": dense}
            for kind in kinds:  # a full-integer file is checked against the model it is converted from
                files[kind], reference, extra = (quantize.convert(kind, net, saved, data, x, keras_logits, quantization)
                                                 if kind in quantize.FORMATS else (tflite.convert(saved, kind), keras_logits, {}))
                (tmp / tflite.TFLITE[kind][0]).write_bytes(files[kind])
                info["formats"][kind] = {**_tflite_report(kind, files[kind], info["dense"], reference, x, test), **extra}
                tflite.verify(kind, info["formats"][kind], source)
            if benchmark:
                _add_latency(info, files, x.shape[1:], x.dtype)
        if "saved_model" not in formats:
            shutil.rmtree(saved)
        (tmp / "ticket.json").write_text(json.dumps(info, indent=2) + "\n")
    return info


def stripped(model) -> keras.Model:
    """A float32 copy of ``model`` without pruning wrappers, each pruned weight multiplied by its mask
    (a ticket trained under a mixed policy exports float32 logits, and int8 made from float32)."""
    masked = {}
    for layer in model.layers:
        if isinstance(layer, PruneLowMagnitude):
            masked.update({id(w): w.numpy() * m.numpy() for w, m, _ in layer.pruning_vars})
    plain = strip_pruning(model)  # shares the wrapped layers (and variables) with ``model``
    copy = keras.models.clone_model(plain, clone_function=lambda lay: type(lay).from_config(float32(lay.get_config())))
    copy.set_weights([masked.get(id(v), v.numpy()) for v in plain.weights])
    return copy


def float32(config):
    """A layer config with every mixed-precision policy in it (nested layers too) made float32."""
    if isinstance(config, dict):
        if config.get("class_name") == "Policy":
            return "float32"
        return {k: "float32" if k == "dtype" and str(v).startswith("mixed_") else float32(v) for k, v in config.items()}
    return [float32(v) for v in config] if isinstance(config, list) else config


def weight_stats(model) -> dict:
    """Parameter counts (total, non-zero) and per-weight sparsity of a plain Keras model."""
    layers, total, nonzero = {}, 0, 0
    for layer in model.layers:
        for w in layer.weights:
            a = w.numpy()
            nz = int(np.count_nonzero(a))
            layers[f"{layer.name}/{w.name.split('/')[-1].split(':')[0]}"] = {
                "shape": list(a.shape), "nonzero": nz, "sparsity": round(1 - nz / max(a.size, 1), 6)}
            total, nonzero = total + a.size, nonzero + nz
    return {"parameters": {"total": int(total), "nonzero": nonzero, "sparsity": round(1 - nonzero / max(total, 1), 6)},
            "layers": layers}


def _check_batch(net, data, sample) -> tuple[np.ndarray, str]:
    """The fixed batch Keras and TFLite are compared on, and where it came from."""
    dtype = net.inputs[0].dtype.as_numpy_dtype
    if data is not None:
        return data.arrays("test")[0][:CHECK_EXAMPLES].astype(dtype), f"{data.name} test[:{CHECK_EXAMPLES}]"
    if sample is not None:
        return np.asarray(sample, dtype), "sample"
    rng = np.random.default_rng(0)
    return rng.random((CHECK_EXAMPLES, *net.input_shape[1:])).astype(dtype), "uniform [0, 1), seed 0"


def _keras_logits(net, x, batch: int = 256) -> np.ndarray:
    return np.concatenate([net(x[i:i + batch], training=False).numpy() for i in range(0, len(x), batch)])


def _accuracy(logits, y) -> float:
    return round(float(np.mean(np.argmax(logits, -1) == y)), 6)


def _save(net, folder: Path) -> None:
    """SavedModel with a ``serving_default`` signature ``image -> {"logits": ...}``; loads with
    ``tf.saved_model.load`` and ``keras.models.load_model``."""
    spec = tf.TensorSpec([None, *net.input_shape[1:]], net.inputs[0].dtype, name=INPUT)
    serve = tf.function(lambda image: {OUTPUT: net(image, training=False)}, input_signature=[spec])
    net.save(str(folder), save_format="tf", include_optimizer=False, signatures={"serving_default": serve})


def _tflite_report(kind: str, model: bytes, dense: dict, keras_logits, x, test) -> dict:
    """ticket.json's entry for one TFLite file: bytes vs dense, sparse check, resolver, logits vs Keras."""
    interpreter, resolver, logits, problems = tflite.run_checked(kind, model, x, keras_logits)
    report = {"bytes": len(model), "gzip_bytes": _gzip_len(model),
              "bytes_vs_dense": round(len(model) / dense["bytes"], 4),
              "gzip_vs_dense": round(_gzip_len(model) / dense["gzip_bytes"], 4),
              **tflite.inspect_tflite(model), "resolver": resolver, "resolver_problems": problems,
              **tflite.compare_logits(kind, logits, keras_logits)}
    if test is not None:
        report["test_accuracy"] = _accuracy(tflite.run_tflite(interpreter, test[0].astype(x.dtype)), test[1])
    return report


def _add_latency(info: dict, files: dict, input_shape, dtype) -> None:
    """Latency of each format under its op resolver and of the dense file under every resolver;
    speed-up = dense under the same resolver / format."""
    jobs = {("dense", r.name): (files["dense"], r.name) for r in tflite.RESOLVERS}
    jobs.update({(kind, None): (files[kind], info["formats"][kind]["resolver"]) for kind in files if kind != "dense"})
    started = time.perf_counter()
    latency = tflite.benchmark(jobs, input_shape, dtype)
    info["dense"]["latency_us"] = {r.name: latency[("dense", r.name)] for r in tflite.RESOLVERS}
    for kind in files.keys() - {"dense"}:
        report = info["formats"][kind]
        report["latency_us"] = latency[(kind, None)]
        dense = info["dense"]["latency_us"][report["resolver"]]
        report["speedup_vs_dense"] = {b: round(dense[b] / t, 3) for b, t in report["latency_us"].items()}
    info["benchmark"] = {"threads": 1, "batches": list(tflite.BENCH_BATCHES),
                         "seconds": round(time.perf_counter() - started, 2),
                         "method": "median over interleaved chunks of repeated invokes, random input"}


def _gzip_len(content: bytes) -> int:
    return len(gzip.compress(content, mtime=0))


def _dir_bytes(folder: Path) -> dict:
    files = [p for p in sorted(folder.rglob("*")) if p.is_file()]
    return {"bytes": sum(p.stat().st_size for p in files), "gzip_bytes": sum(_gzip_len(p.read_bytes()) for p in files)}


@contextmanager
def staged_dir(path: Path):
    """A temp folder beside ``path`` that replaces ``path`` only when the block succeeds; the
    previous content is moved aside first and deleted last. OSErrors become one-line errors."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
        tmp.mkdir()
    except OSError as e:
        raise _unwritable(path, e) from None
    old = tmp.with_suffix(".old")
    try:
        yield tmp
        if path.exists():
            os.replace(path, old)
        os.replace(tmp, path)
    except BaseException as e:
        if old.exists() and not path.exists():
            os.replace(old, path)
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, OSError):
            raise _unwritable(path, e) from None
        raise
    shutil.rmtree(old, ignore_errors=True)


def _unwritable(path: Path, e: OSError) -> TfLthError:
    where = f" ({e.filename})" if e.filename else ""
    return TfLthError(f"cannot write the export to {path}: {e.strerror or e}{where}")


def summary(info: dict) -> str:
    """A table of a ticket.json: bytes, sparse storage, logit difference, accuracy, latency, ops."""
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


__all__ = ["export_ticket", "default_path", "stripped", "weight_stats", "staged_dir", "summary", "format_table"]
