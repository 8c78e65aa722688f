"""Ship a ticket: SavedModel, sparse TFLite (fp32, int8, fp16) and a ticket.json of what they give.

One export folder (default ``saved_models/<name>/round_<k>/``)::

    saved_model/          serving signature: input "image" -> output "logits"
    ticket.tflite         fp32, EXPERIMENTAL_SPARSITY (weights >= 30% zeros stored sparse)
    ticket_int8.tflite    + dynamic-range int8 (Optimize.DEFAULT)
    ticket_fp16.tflite    + float16 weights (optional)
    ticket.json           sparsity, parameter counts, bytes (raw, gzipped, vs dense), Keras-vs-TFLite
                          logit difference, accuracy, ops, sparse check, op resolver, latency

A dense fp32 conversion of the same weights is made as the reference for bytes and latency and is
not kept. The folder is written beside its destination and renamed into place at the end, so a
killed export leaves the previous export or none, never half of one. TFLite runs through
``ai_edge_litert`` only; an int8 + sparse file cannot be prepared by the default XNNPACK delegate,
and int8 in 1x4 blocks loads but computes inf/NaN there, so each file is run with the default op
resolver first and, if it does not load or gives non-finite logits, with builtin kernels without
default delegates (ticket.json records which, and why). A file no resolver runs (fp16 in 1x4 blocks
gives NaN) fails the export.

Every TFLite file is verified against Keras on the check batch (:data:`TOLERANCES`, recorded in
ticket.json): its logits must stay within ``logit x max(1, max |Keras logit|)`` (below 1, absolute
errors are what moves the softmax) and its argmax agree with Keras' on at least
``argmax_agreement`` of the examples. An example where TFLite picks a class that Keras scores
within that logit tolerance of its top class is a tie at the format's precision and does not count
against it: an untrained ticket's logits are near-ties everywhere (margins ~0.01, on real digits
and uniform noise alike) and int8 swaps ~2% of them without being wrong. A failed check fails the
export with one line, and the previous export stays in place.
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import secrets
import shutil
import statistics
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from tf_lth import data as data_lib
from tf_lth.keras2 import keras, require_tf_keras_model, tf
from tf_lth.errors import TfLthError
from ai_edge_litert.interpreter import Interpreter, OpResolverType
from tensorflow_model_optimization.python.core.sparsity.keras.prune import strip_pruning
from tensorflow_model_optimization.python.core.sparsity.keras.pruning_wrapper import PruneLowMagnitude

INPUT, OUTPUT = "image", "logits"
SPARSITY, DEFAULT = tf.lite.Optimize.EXPERIMENTAL_SPARSITY, tf.lite.Optimize.DEFAULT
# format -> (file, converter optimizations, float16 weights); "dense" is the reference, not kept
TFLITE = {
    "dense": (None, [], False),
    "tflite": ("ticket.tflite", [SPARSITY], False),
    "int8": ("ticket_int8.tflite", [SPARSITY, DEFAULT], False),
    "fp16": ("ticket_fp16.tflite", [SPARSITY, DEFAULT], True),
}
FORMATS = ("saved_model", "tflite", "int8", "fp16")
DEFAULT_FORMATS = ("saved_model", "tflite", "int8")
RESOLVERS = (OpResolverType.AUTO, OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
# Per TFLite format: largest |logit difference| from Keras as a fraction of max(1, max |Keras logit|),
# and the least argmax agreement (near-ties excluded, see above). fp32 must be exact up to float
# rounding; fp16 weights move logits by ~1e-3 and int8 (dynamic range) by ~0.01-0.02 on LeNet
# tickets, trained or not: each limit is a few times what is measured, so a wrong file fails.
# Only fp32 fails on its logit difference: quantized files are judged by their argmax (their logit
# limit only marks near-ties), since a 98%-sparse int8 ticket can move a logit by ~10% of the scale
# and still pick the same class.
TOLERANCES = {
    "tflite": {"logit": 1e-5, "argmax_agreement": 1.0, "logit_fails": True},
    "fp16": {"logit": 1e-2, "argmax_agreement": 0.99, "logit_fails": False},
    "int8": {"logit": 5e-2, "argmax_agreement": 0.99, "logit_fails": False},
}
CHECK_EXAMPLES = 256  # the fixed batch Keras and TFLite logits are compared on
BENCH_BATCHES = (1, 64)
BENCH_SECONDS = 2.0  # total budget of the interleaved latency rounds
BENCH_CHUNK_SECONDS = 0.002  # invokes per timed chunk are chosen to last about this long


def default_path(name: str, round: int | None = None) -> Path:
    """``saved_models/<name>/round_<k>`` (``.../latest`` when the round is unknown)."""
    return Path("saved_models") / name / (f"round_{round}" if round is not None else "latest")


def export_ticket(model, path=None, *, name: str | None = None, round: int | None = None, dataset=None,
                  formats=DEFAULT_FORMATS, fp16: bool = False, benchmark: bool = True, sample=None) -> dict:
    """Export ``model`` (TF-MOT wrappers stripped, masks applied) to ``path`` and return ticket.json.

    ``dataset`` (a :class:`~tf_lth.data.Dataset` or its name) gives the comparison batch and the
    test accuracy; without it ``sample`` (an input array) or a seeded uniform batch is compared.
    ``fp16=True`` adds ``"fp16"`` to ``formats``; ``benchmark=False`` skips the latency runs.
    """
    require_tf_keras_model(model)
    formats = tuple(dict.fromkeys([*formats, *(["fp16"] if fp16 else [])]))
    unknown = set(formats) - set(FORMATS)
    if unknown:
        raise TfLthError(f"unknown export format(s) {', '.join(sorted(unknown))}: choose from {', '.join(FORMATS)}")
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise TfLthError(f"{model.name} has {len(model.inputs)} inputs and {len(model.outputs)} outputs: "
                         "export needs exactly one of each")
    if None in model.input_shape[1:]:
        raise TfLthError(f"{model.name} has input shape {model.input_shape}: export needs it fixed but for the batch")
    name = name or model.name
    path = Path(path) if path is not None else default_path(name, round)
    data = data_lib.load(dataset) if isinstance(dataset, str) else dataset
    net = stripped(model)
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
        kinds = [f for f in TFLITE if f in formats]
        if kinds:
            dense = convert(saved, "dense")
            info["dense"] = {"bytes": len(dense), "gzip_bytes": _gzip_len(dense), **inspect_tflite(dense)}
            files = {"dense": dense}
            for kind in kinds:
                files[kind] = convert(saved, kind)
                (tmp / TFLITE[kind][0]).write_bytes(files[kind])
                info["formats"][kind] = _tflite_report(kind, files[kind], info["dense"], keras_logits, x, test)
                verify(kind, info["formats"][kind], source)
            if benchmark:
                _add_latency(info, files, x.shape[1:], x.dtype)
        if "saved_model" not in formats:
            shutil.rmtree(saved)
        (tmp / "ticket.json").write_text(json.dumps(info, indent=2) + "\n")
    return info


def stripped(model) -> keras.Model:
    """A copy of ``model`` without pruning wrappers, each pruned weight multiplied by its mask."""
    masked = {}
    for layer in model.layers:
        if isinstance(layer, PruneLowMagnitude):
            masked.update({id(w): w.numpy() * m.numpy() for w, m, _ in layer.pruning_vars})
    plain = strip_pruning(model)  # shares the wrapped layers (and variables) with ``model``
    copy = keras.models.clone_model(plain)
    copy.set_weights([masked.get(id(v), v.numpy()) for v in plain.weights])
    return copy


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


def convert(saved_model, kind: str) -> bytes:
    """The TFLite flatbuffer of format ``kind`` (a key of :data:`TFLITE`) from a SavedModel folder."""
    _, optimizations, half = TFLITE[kind]
    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model))
    converter.optimizations = optimizations
    if half:
        converter.target_spec.supported_types = [tf.float16]
    return converter.convert()


def _tflite(model: bytes | str | os.PathLike) -> dict:
    return {"model_content": model} if isinstance(model, bytes) else {"model_path": str(model)}


def open_tflite(model, resolver: str | None = None, threads: int | None = None) -> tuple[Interpreter, str]:
    """An allocated interpreter for a .tflite path or bytes with op resolver ``resolver`` (a name of
    ``OpResolverType``), by default the default one if it can prepare the model, else builtin
    kernels without default delegates; and the name of the resolver used."""
    last = None
    for r in ([OpResolverType[resolver]] if resolver else RESOLVERS):
        try:
            interpreter = Interpreter(**_tflite(model), experimental_op_resolver_type=r, num_threads=threads)
            interpreter.allocate_tensors()
            return interpreter, r.name
        except (RuntimeError, ValueError) as e:
            last = e
    raise TfLthError(f"TFLite cannot load the model with any op resolver: {str(last).splitlines()[0]}")


def inspect_tflite(model) -> dict:
    """Whether the file holds sparse tensors (non-empty ``sparsity_parameters``) and its ops."""
    interpreter = Interpreter(**_tflite(model), experimental_op_resolver_type=RESOLVERS[1])
    return {"sparse": any(t["sparsity_parameters"] for t in interpreter.get_tensor_details()),
            "ops": sorted({op["op_name"] for op in interpreter._get_ops_details()})}


def is_sparse_tflite(model) -> bool:
    """True when a .tflite path or bytes stores at least one tensor in a sparse format."""
    return inspect_tflite(model)["sparse"]


def run_tflite(interpreter: Interpreter, x: np.ndarray, batch: int = 256) -> np.ndarray:
    """The outputs of ``interpreter`` on ``x``, fed in batches of up to ``batch``."""
    index, out = interpreter.get_input_details()[0]["index"], interpreter.get_output_details()[0]["index"]
    results = []
    for i in range(0, len(x), batch):
        xb = x[i:i + batch]
        if tuple(interpreter.get_input_details()[0]["shape"]) != xb.shape:
            interpreter.resize_tensor_input(index, xb.shape)
            interpreter.allocate_tensors()
        interpreter.set_tensor(index, xb)
        interpreter.invoke()
        results.append(interpreter.get_tensor(out).copy())
    return np.concatenate(results)


def _tflite_report(kind: str, model: bytes, dense: dict, keras_logits, x, test) -> dict:
    interpreter, resolver, logits, problems = _run_checked(kind, model, x, keras_logits)
    report = {"bytes": len(model), "gzip_bytes": _gzip_len(model),
              "bytes_vs_dense": round(len(model) / dense["bytes"], 4),
              "gzip_vs_dense": round(_gzip_len(model) / dense["gzip_bytes"], 4),
              **inspect_tflite(model), "resolver": resolver, "resolver_problems": problems,
              **compare_logits(kind, logits, keras_logits)}
    if test is not None:
        report["test_accuracy"] = _accuracy(run_tflite(interpreter, test[0].astype(x.dtype)), test[1])
    return report


def compare_logits(kind: str, logits: np.ndarray, keras_logits: np.ndarray) -> dict:
    """How far TFLite logits are from Keras', and the limits they are held to (see :data:`TOLERANCES`)."""
    tolerance = TOLERANCES[kind]
    limit = float(tolerance["logit"] * max(1.0, float(np.max(np.abs(keras_logits)))))
    top, chosen = keras_logits.argmax(-1), logits.argmax(-1)
    rows = np.arange(len(keras_logits))
    differ = top != chosen
    ties = differ & (keras_logits[rows, top] - keras_logits[rows, chosen] <= limit)
    n = max(len(keras_logits), 1)
    return {"max_abs_logit_diff": float(np.max(np.abs(logits - keras_logits))),
            "argmax_agreement": round(float(np.mean(~differ)), 6),
            "argmax_ties": int(ties.sum()),
            "argmax_agreement_beyond_ties": round(float(1 - (differ & ~ties).sum() / n), 6),
            "tolerance": {"max_abs_logit_diff": limit, "logit_relative": tolerance["logit"],
                          "argmax_agreement": tolerance["argmax_agreement"], "logit_fails": tolerance["logit_fails"]}}


def verify(kind: str, report: dict, source: str = "the check batch") -> None:
    """Fail the export when a TFLite file's logits or argmax are further from Keras' than its tolerance."""
    tol, what = report["tolerance"], f"the {kind} TFLite file"
    cause = {"tflite": "TFLite computes this model differently from Keras (a converter bug or an unsupported op)",
             "int8": "int8 quantization changes this model too much",
             "fp16": "float16 weights change this model too much"}[kind]
    fix = f"{cause}: export without {kind} (formats= / --formats)"
    if not np.isfinite(report["max_abs_logit_diff"]) or (
            tol["logit_fails"] and not report["max_abs_logit_diff"] <= tol["max_abs_logit_diff"]):
        raise TfLthError(f"{what} differs from Keras by {report['max_abs_logit_diff']:.3g} in a logit on {source}, "
                         f"over its tolerance {tol['max_abs_logit_diff']:.3g} ({tol['logit_relative']:g} x max(1, "
                         f"max |logit|)): {fix}")
    if report["argmax_agreement_beyond_ties"] < tol["argmax_agreement"]:
        raise TfLthError(f"{what} agrees with Keras' argmax on {100 * report['argmax_agreement_beyond_ties']:.2f}% "
                         f"of {source} (near-ties excluded), under its tolerance "
                         f"{100 * tol['argmax_agreement']:g}%: {fix}")


def _run_checked(kind: str, model: bytes, x, keras_logits):
    """Run ``model`` on ``x`` with the first op resolver that loads it and gives finite logits, and
    say what went wrong with the others: XNNPACK cannot prepare int8 + sparse files and computes
    inf/NaN for int8 in 1x4 blocks; fp16 in 1x4 blocks gives NaN everywhere (never ship that)."""
    problems = []
    for r in RESOLVERS:
        try:
            interpreter, _ = open_tflite(model, r.name)
        except TfLthError:
            problems.append(f"{r.name}: does not load")
            continue
        logits = run_tflite(interpreter, x)
        if np.isfinite(logits).all() or not np.isfinite(keras_logits).all():
            return interpreter, r.name, logits, problems
        problems.append(f"{r.name}: NaN/inf logits")
    raise TfLthError(f"TFLite cannot run the {kind} file ({'; '.join(problems)}), a TFLite bug for these "
                     f"weights: export without {kind}")


def benchmark(models: dict, input_shape, dtype=np.float32, seconds: float = BENCH_SECONDS) -> dict:
    """Median µs per call at each batch size of :data:`BENCH_BATCHES` for ``{key: (model, resolver)}``,
    single-threaded; the models take turns chunk by chunk so machine noise hits them alike."""
    rng = np.random.default_rng(0)
    runners = []
    for key, (model, resolver) in models.items():
        for batch in BENCH_BATCHES:
            interpreter, _ = open_tflite(model, resolver, threads=1)
            x = rng.random((batch, *input_shape)).astype(dtype)
            run_tflite(interpreter, x)  # resize, allocate, warm up
            start = time.perf_counter()
            interpreter.invoke()
            n = max(1, int(BENCH_CHUNK_SECONDS / max(time.perf_counter() - start, 1e-7)))
            runners.append((key, batch, interpreter, n, []))
    deadline, rounds = time.perf_counter() + seconds, 0
    while rounds < 5 or (rounds < 500 and time.perf_counter() < deadline):
        rounds += 1
        for _, _, interpreter, n, times in runners:
            start = time.perf_counter()
            for _ in range(n):
                interpreter.invoke()
            times.append((time.perf_counter() - start) / n)
    out = {}
    for key, batch, _, _, times in runners:
        out.setdefault(key, {})[f"batch{batch}"] = round(statistics.median(times) * 1e6, 2)
    return out


def _add_latency(info: dict, files: dict, input_shape, dtype) -> None:
    """Latency of each format under its op resolver and of the dense file under every resolver;
    speed-up = dense under the same resolver / format."""
    jobs = {("dense", r.name): (files["dense"], r.name) for r in RESOLVERS}
    jobs.update({(kind, None): (files[kind], info["formats"][kind]["resolver"]) for kind in files if kind != "dense"})
    started = time.perf_counter()
    latency = benchmark(jobs, input_shape, dtype)
    info["dense"]["latency_us"] = {r.name: latency[("dense", r.name)] for r in RESOLVERS}
    for kind in files.keys() - {"dense"}:
        report = info["formats"][kind]
        report["latency_us"] = latency[(kind, None)]
        dense = info["dense"]["latency_us"][report["resolver"]]
        report["speedup_vs_dense"] = {b: round(dense[b] / t, 3) for b, t in report["latency_us"].items()}
    info["benchmark"] = {"threads": 1, "batches": list(BENCH_BATCHES),
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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of ``tf-lth export`` (the command itself lives in :mod:`tf_lth.cli`)."""
    parser.add_argument("run_dir", help="folder written by LotteryTicket.save / tf-lth run")
    parser.add_argument("--round", type=int, help="round to export (default: the last saved one)")
    parser.add_argument("--out", help="export folder (default: saved_models/<run folder name>/round_<k>)")
    parser.add_argument("--formats", nargs="+", choices=FORMATS, default=list(DEFAULT_FORMATS),
                        help="what to write (default: %(default)s)")
    parser.add_argument("--dataset", choices=data_lib.DATASETS, help="compare on and score its test split")
    parser.add_argument("--data-dir", metavar="DIR", help="folder with the dataset's files")
    parser.add_argument("--no-benchmark", action="store_true", help="skip the latency runs")


__all__ = ["export_ticket", "default_path", "stripped", "weight_stats", "convert", "open_tflite", "inspect_tflite",
           "is_sparse_tflite", "run_tflite", "compare_logits", "verify", "benchmark", "staged_dir", "summary",
           "format_table", "add_arguments", "FORMATS", "TFLITE", "TOLERANCES"]
