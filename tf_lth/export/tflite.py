"""A .tflite file of a ticket: conversion, LiteRT interpreter, the check against Keras and latency.

:func:`tf_lth.export.export_ticket` writes the export folder; this module knows only TFLite files
(bytes or paths) and the SavedModel or (QAT) Keras model they come from; it imports neither export
nor a Keras flavour (tickets of both convert here). Formats (:data:`TFLITE`): fp32 with
EXPERIMENTAL_SPARSITY (weights >= 30% zeros stored sparse), int8 adds dynamic-range quantization
(Optimize.DEFAULT), fp16 float16 weights; "dense" is an fp32 conversion without sparsity, the
reference for bytes and latency. :data:`FULL_INTEGER` formats (:mod:`tf_lth.export.quantize`) quantize
activations too; :func:`run_tflite` takes float images for int8 I/O.

TFLite runs through ``ai_edge_litert`` only; XNNPACK cannot prepare int8 + sparse files and computes
inf/NaN for int8 in 1x4 blocks, so each file runs with the default op resolver first and, if it does
not load or gives non-finite logits, with builtin kernels (:func:`run_checked` says which, and why).
A file no resolver runs (fp16 in 1x4 blocks: NaN) fails. Every file is verified against Keras on the
check batch (:data:`TOLERANCES`): logits within ``logit x max(1, max |Keras logit|)`` (below 1,
absolute errors are what moves the softmax), argmax agreeing on ``argmax_agreement`` of the examples.
A class TFLite picks that Keras scores within that tolerance of its top class is a tie at the format's
precision, not an error: an untrained ticket's logits are near-ties everywhere (margins ~0.01) and
int8 swaps ~2% of them. A failed check raises one line (:func:`verify`).
"""
from __future__ import annotations

import os
import statistics
import time

import numpy as np

from tf_lth.errors import TfLthError
from tf_lth.util.native_log import native_noise_filtered
from tf_lth.util.tensorflow import tensorflow

tf = tensorflow()  # the converter only, never tf.keras
with native_noise_filtered():
    from ai_edge_litert.interpreter import Interpreter, OpResolverType


SPARSITY, DEFAULT = tf.lite.Optimize.EXPERIMENTAL_SPARSITY, tf.lite.Optimize.DEFAULT
# format -> (file, converter optimizations, float16 weights); "dense" is the reference, not kept
TFLITE = {
    "dense": (None, [], False),
    "tflite": ("ticket.tflite", [SPARSITY], False),
    "int8": ("ticket_int8.tflite", [SPARSITY, DEFAULT], False),
    "fp16": ("ticket_fp16.tflite", [SPARSITY, DEFAULT], True),
    "int8_full": ("ticket_int8_full.tflite", [SPARSITY, DEFAULT], False),
    "int8_qat": ("ticket_int8_qat.tflite", [SPARSITY, DEFAULT], False),
}
FULL_INTEGER = ("int8_full", "int8_qat")  # int8 weights and activations (TFLITE_BUILTINS_INT8 ops only)
KERNEL_OPS = ("FULLY_CONNECTED", "CONV_2D", "DEPTHWISE_CONV_2D")  # the ops whose weights a ticket prunes
RESOLVERS = (OpResolverType.AUTO, OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
# Per format: the largest |output difference| from Keras as a fraction of max(1, max |Keras output|), and
# the least argmax agreement (near-ties excluded), each a few times what LeNet tickets measure (fp16 ~1e-3,
# int8 ~0.01-0.02, int8_full ~5% and 99.3% argmax, int8_qat vs its QAT model ~1%). Only fp32 is held to its
# output difference (``output_diff_checked``); quantized files are judged by argmax (a 98%-sparse int8 ticket
# moves its outputs ~10% yet agrees). "Outputs" are what the model ends in: logits or probabilities.
TOLERANCES = {
    "tflite": {"output": 1e-5, "argmax_agreement": 1.0, "output_diff_checked": True},
    "fp16": {"output": 1e-2, "argmax_agreement": 0.99, "output_diff_checked": False},
    "int8": {"output": 5e-2, "argmax_agreement": 0.99, "output_diff_checked": False},
    "int8_full": {"output": 0.1, "argmax_agreement": 0.97, "output_diff_checked": False},
    "int8_qat": {"output": 5e-2, "argmax_agreement": 0.99, "output_diff_checked": False},
}
BENCH_BATCHES = (1, 32)  # one example (a phone app), a small batch (a server)
BENCH_SECONDS = 2.0  # total budget of the interleaved latency rounds
BENCH_CHUNK_SECONDS = 0.002  # invokes per timed chunk are chosen to last about this long
# the sparsity structures the benchmarks compare: name -> block_size (4x1 = 1x4 blocks, TFLite's sparse kernel)
BLOCK_STRUCTURES = {"unstructured": None, "1x4 blocks": (4, 1)}


def convert(source, kind: str, representative=None, int8_io: bool = False, sparse: bool = True) -> bytes:
    """The TFLite flatbuffer of format ``kind`` (a key of :data:`TFLITE`) from a SavedModel folder or a
    tf_keras model (TF-MOT's QAT models). Full-integer formats calibrate activation ranges on
    ``representative`` (fed one at a time); ``int8_io``: int8 input and output, else float.
    ``sparse=False`` stores the weights dense (a file XNNPACK runs, for the benchmarks' comparison)."""
    _, optimizations, half = TFLITE[kind]
    converter = (tf.lite.TFLiteConverter.from_saved_model(str(source)) if isinstance(source, (str, os.PathLike))
                 else tf.lite.TFLiteConverter.from_keras_model(source))
    converter.optimizations = [o for o in optimizations if sparse or o != SPARSITY]
    if half:
        converter.target_spec.supported_types = [tf.float16]
    if kind in FULL_INTEGER:
        converter.representative_dataset = lambda: ([representative[i:i + 1]] for i in range(len(representative)))
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = converter.inference_output_type = tf.int8 if int8_io else tf.float32
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
            with native_noise_filtered():
                interpreter = Interpreter(**_tflite(model), experimental_op_resolver_type=r, num_threads=threads)
                interpreter.allocate_tensors()
            return interpreter, r.name
        except (RuntimeError, ValueError) as e:
            last = e
    raise TfLthError(f"TFLite cannot load the model with any op resolver: {str(last).splitlines()[0]}")


def inspect_tflite(model) -> dict:
    """Whether the file holds sparse tensors (non-empty ``sparsity_parameters``) and its ops."""
    with native_noise_filtered():
        interpreter = Interpreter(**_tflite(model), experimental_op_resolver_type=RESOLVERS[1])
    return {"sparse": any(t["sparsity_parameters"] for t in interpreter.get_tensor_details()),
            "ops": sorted({op["op_name"] for op in interpreter._get_ops_details()})}


def is_sparse_tflite(model) -> bool:
    """True when a .tflite path or bytes stores at least one tensor in a sparse format."""
    return inspect_tflite(model)["sparse"]


def run_tflite(interpreter: Interpreter, x: np.ndarray, batch: int = 256) -> np.ndarray:
    """The outputs of ``interpreter`` on ``x``, fed in batches of up to ``batch``; float ``x`` is
    quantized for an integer input and an integer output dequantized (their scale and zero point)."""
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    if np.issubdtype(inp["dtype"], np.integer) and not np.issubdtype(x.dtype, np.integer):
        (scale, zero), limits = inp["quantization"], np.iinfo(inp["dtype"])
        x = np.clip(np.round(x / scale + zero), limits.min, limits.max).astype(inp["dtype"])
    results = []
    for i in range(0, len(x), batch):
        xb = x[i:i + batch]
        if tuple(interpreter.get_input_details()[0]["shape"]) != xb.shape:
            interpreter.resize_tensor_input(inp["index"], xb.shape)
            interpreter.allocate_tensors()
        interpreter.set_tensor(inp["index"], xb)
        interpreter.invoke()
        y, (scale, zero) = interpreter.get_tensor(out["index"]), out["quantization"]
        results.append((y.astype(np.float32) - zero) * scale if np.issubdtype(y.dtype, np.integer) else y.copy())
    return np.concatenate(results)


def kernels(model) -> list[tuple[str, np.ndarray, str]]:
    """``(name, weights, output type)`` of each :data:`KERNEL_OPS` op in execution order, weights in
    TFLite's layout ([out, in], [out, h, w, in]), densified (DENSIFY's output after one invoke on zeros)."""
    with native_noise_filtered():
        interpreter = Interpreter(**_tflite(model), experimental_op_resolver_type=RESOLVERS[1],
                                  experimental_preserve_all_tensors=True)
        interpreter.allocate_tensors()
    detail = interpreter.get_input_details()[0]
    interpreter.set_tensor(detail["index"], np.zeros(detail["shape"], detail["dtype"]))
    interpreter.invoke()
    tensors, ops = {t["index"]: t for t in interpreter.get_tensor_details()}, interpreter._get_ops_details()
    made_by, found = {o: op for op in ops for o in op["outputs"]}, []
    for op, w in ((op, op["inputs"][1]) for op in ops if op["op_name"] in KERNEL_OPS):
        source = made_by.get(w, {"op_name": None})
        stored = tensors[source["inputs"][0] if source["op_name"] == "DENSIFY" else w]["name"]
        found.append((stored, interpreter.get_tensor(w), tensors[op["outputs"][0]]["dtype"].__name__))
    return found


def compare_outputs(kind: str, outputs: np.ndarray, reference: np.ndarray) -> dict:
    """How far a TFLite file's outputs are from Keras' (``reference``), and the limits they are held to
    (see :data:`TOLERANCES`)."""
    tolerance = TOLERANCES[kind]
    limit = float(tolerance["output"] * max(1.0, float(np.max(np.abs(reference)))))
    top, chosen, rows, n = reference.argmax(-1), outputs.argmax(-1), np.arange(len(reference)), max(len(reference), 1)
    differ = top != chosen
    ties = differ & (reference[rows, top] - reference[rows, chosen] <= limit)
    return {"max_abs_output_diff": float(np.max(np.abs(outputs - reference))),
            "argmax_agreement": round(float(np.mean(~differ)), 6),
            "argmax_ties": int(ties.sum()),
            "argmax_agreement_beyond_ties": round(float(1 - (differ & ~ties).sum() / n), 6),
            "tolerance": {"max_abs_output_diff": limit, "relative": tolerance["output"],
                          "argmax_agreement": tolerance["argmax_agreement"],
                          "output_diff_checked": tolerance["output_diff_checked"]}}


def verify(kind: str, report: dict, source: str = "the check batch") -> None:
    """Fail (one line) when a TFLite file's outputs or argmax are further from Keras' than its tolerance."""
    tol, what = report["tolerance"], f"the {kind} TFLite file"
    cause = {"tflite": "TFLite computes this model differently from Keras (a converter bug or an unsupported op)",
             "int8": "int8 quantization changes this model too much",
             "fp16": "float16 weights change this model too much",
             "int8_full": "full-integer quantization changes this model too much (try int8_qat)",
             "int8_qat": "the TFLite file computes differently from its QAT Keras model (a converter bug)"}[kind]
    diff = report["max_abs_output_diff"]
    if not np.isfinite(diff) or (tol["output_diff_checked"] and not diff <= tol["max_abs_output_diff"]):
        raise TfLthError(f"{what} differs from Keras by {diff:.3g} in an output on {source}, over its tolerance "
                         f"{tol['max_abs_output_diff']:.3g} ({tol['relative']:g} x max(1, max |output|)): {cause}")
    if report["argmax_agreement_beyond_ties"] < tol["argmax_agreement"]:
        raise TfLthError(f"{what} agrees with Keras' argmax on {100 * report['argmax_agreement_beyond_ties']:.2f}% "
                         f"of {source} (near-ties excluded), under its tolerance {100 * tol['argmax_agreement']:g}%: "
                         f"{cause}")


def run_checked(kind: str, model: bytes, x, keras_logits):
    """``(interpreter, resolver name, logits, problems)``: ``model`` run on ``x`` with the first op resolver
    that loads and runs it and gives finite logits (any, when Keras' are not finite), and what went wrong
    with those before: XNNPACK cannot prepare int8 + sparse files (with a Keras 3 Flatten's dynamic
    reshape it prepares one at batch 1 and fails at the check batch), gives inf/NaN for int8 in 1x4 blocks
    and fp16 in 1x4 blocks NaN everywhere: when no resolver runs it, one line names the format to drop."""
    problems = []
    for r in RESOLVERS:
        try:
            interpreter, _ = open_tflite(model, r.name)
            logits = run_tflite(interpreter, x)
        except (TfLthError, RuntimeError) as e:
            problems.append(f"{r.name}: " + ("does not load" if isinstance(e, TfLthError) else f"fails at batch {len(x)}"))
            continue
        if np.isfinite(logits).all() or not np.isfinite(keras_logits).all():
            return interpreter, r.name, logits, problems
        problems.append(f"{r.name}: NaN/inf logits")
    raise TfLthError(f"TFLite cannot run the {kind} file ({'; '.join(problems)}), a TFLite bug for these "
                     "weights")


def expected_faster(kind: str, reports: dict) -> tuple[str, str]:
    """``(storage, why)``: which of the checked ``reports`` (by storage) runs faster at batch 1 where it
    cannot be measured, from the runtime's behaviour measured on tickets here (README, export bench):
    full-integer files stored sparse run on the builtin kernels only (XNNPACK refuses them), 0.43x the
    dense fp32 file's speed on LeNet against ~5x stored dense; a file whose sparse weights a kernel reads
    directly (1x4 blocks: no DENSIFY op) is faster sparse; otherwise DENSIFY restores the dense weights
    and both compute alike, so the smaller file is as fast."""
    sparse = reports.get("sparse")
    if sparse is None:
        return "dense", "only the dense storage passed its check"
    if "dense" not in reports:
        return "sparse", "only the sparse storage passed its check"
    if kind in FULL_INTEGER:
        return "dense", "full-integer files stored sparse run on the builtin kernels only (XNNPACK refuses them)"
    if "DENSIFY" not in sparse["ops"]:
        return "sparse", "its kernels read the sparse weights directly (no DENSIFY op)"
    if sparse["resolver"] != reports["dense"]["resolver"]:
        return "dense", (f"stored sparse it runs on {sparse['resolver']}, stored dense on "
                         f"{reports['dense']['resolver']} (XNNPACK prepares it only dense)")
    return "sparse", "DENSIFY restores the dense weights: both storages compute alike, the sparse file is smaller"


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


__all__ = ["convert", "open_tflite", "inspect_tflite", "is_sparse_tflite", "run_tflite", "kernels", "compare_outputs",
           "verify", "run_checked", "benchmark", "expected_faster", "native_noise_filtered", "TFLITE", "FULL_INTEGER", "KERNEL_OPS",
           "RESOLVERS", "TOLERANCES", "SPARSITY", "DEFAULT", "BENCH_BATCHES", "BENCH_SECONDS", "BENCH_CHUNK_SECONDS",
           "BLOCK_STRUCTURES"]
