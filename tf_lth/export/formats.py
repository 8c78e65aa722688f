"""The TFLite files of an export, each made, checked and stored by a stated rule; a failing format is left
out with its reason, so one format never costs the others.

For every TFLite format asked for (:data:`tf_lth.export.tflite.TFLITE`) two *storages* are candidates: the
weights stored **sparse** (``EXPERIMENTAL_SPARSITY``: compressed tensors, decompressed by a DENSIFY op or
read directly by the 1x4-block kernels) and stored **dense**. Each candidate is checked against Keras on
the check batch like any file (:func:`tf_lth.export.tflite.verify`). Which one is written follows
``optimize_for`` (:data:`OPTIMIZE_FOR`):

- ``"latency"`` (default): the faster at batch 1, as measured here (candidates within
  :data:`SAME_SPEED` of each other count as equally fast, and the smaller wins); without a benchmark,
  the runtime's known behaviour (:func:`expected_faster`).
- ``"size"``: the smaller file.

A sparse candidate that LiteRT is known to compute wrongly (:func:`tf_lth.export.sparse_storage.problem`)
is not made, and one that fails its check is not used: the dense one is written instead, and ticket.json
says so. Both candidates' figures (bytes, latency, check) are in ticket.json under ``storage_choice``.
A format none of whose candidates passes is left out: its reason goes to ticket.json's ``failed`` and
the caller warns (:func:`tf_lth.export.export_ticket`).
"""
from __future__ import annotations

import gzip
import time
from dataclasses import dataclass, field

import numpy as np

from tf_lth.export import sparse_storage
from tf_lth.config.configs import OPTIMIZE_FOR
from tf_lth.errors import TfLthError

STORAGES = ("sparse", "dense")
# ticket.json field names before they said "output" (a model may end in probabilities): still read (field)
RENAMED = {"max_abs_output_diff": "max_abs_logit_diff", "output_diff_checked": "logit_fails", "relative": "logit_relative"}
SAME_SPEED = 0.05  # latencies within 5% are the same speed (the benchmark's run-to-run spread is ~2-4%)


@dataclass
class Candidate:
    """One storage of one format: its file (``None`` if it could not be made), ticket.json report, and
    what is wrong with it (``None``: it passed its check)."""

    storage: str
    model: bytes | None = None
    report: dict = field(default_factory=dict)
    problem: str | None = None


def field(report: dict, name: str):
    """``report[name]``, or its value under the name ticket.json files written before it was renamed had
    (:data:`RENAMED`), or ``None``."""
    return report.get(name, report.get(RENAMED.get(name, name)))


def full_integer_note(kind: str, report: dict) -> str:
    """The export summary's lines on a full-integer file: calibration, I/O, zeros kept, QAT fine-tune."""
    z, c = report["zeros"], report["calibration"]
    text = (f"{kind}: calibrated on {c['examples']} {c['split']} examples (seed {c['seed']}), "
            f"{report['input']['dtype']} I/O; the ticket's {z['ticket']:,} zeros kept "
            f"(+{z['tflite_from_rounding']:,} rounded to 0)")
    if "qat" in report:
        q = report["qat"]
        text += (f"\n{kind}: QAT {q['steps']} steps (Adam {q['learning_rate']:g}, batch {q['batch']}), QAT Keras "
                 f"test accuracy {q['keras_test_accuracy']:.4f}, argmax = ticket's on "
                 f"{100 * q['argmax_agreement_with_ticket']:.1f}% of the check batch")
    return text


def gzip_len(content: bytes) -> int:
    return len(gzip.compress(content, mtime=0))


def one_line(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if isinstance(error, TfLthError) else f"{type(error).__name__}: {text}"


def write_formats(info: dict, tmp, saved, net, x, keras_outputs, test, formats, *, data=None, quantization=None,
                  benchmark: bool = True, calibration=None, optimize_for: str = "latency") -> None:
    """Both flavours' TFLite files of ``formats`` from the SavedModel ``saved`` into ``tmp``, each held to
    ``keras_outputs`` on ``x``: ticket.json entries in ``info["formats"]`` (the chosen storage's), the
    dense fp32 reference in ``info["dense"]``, and ``info["failed"]`` for the formats left out."""
    from tf_lth.export import tflite
    kinds = [f for f in tflite.TFLITE if f in formats and f != "dense"]
    if not kinds:
        return
    if optimize_for not in OPTIMIZE_FOR:
        raise TfLthError(f"optimize_for={optimize_for!r}: choose {' or '.join(OPTIMIZE_FOR)}")
    try:  # the reference every TFLite file is measured against (and the fp32 file stored dense)
        dense = tflite.convert(saved, "dense")
    except Exception as e:  # noqa: BLE001 - the TFLite formats fail; the SavedModel (and .keras) stand
        info["failed"] = {kind: f"the fp32 conversion every TFLite format starts from failed: {one_line(e)}"
                          for kind in kinds}
        return
    info["dense"] = {"bytes": len(dense), "gzip_bytes": gzip_len(dense), **tflite.inspect_tflite(dense)}
    made, failed = {}, {}
    for kind in kinds:
        try:
            made[kind] = candidates(kind, info, saved, net, x, keras_outputs, test, dense, data, quantization,
                                    calibration)
        except Exception as e:  # noqa: BLE001 - whatever a converter raises costs this format only
            failed[kind] = one_line(e)
    if benchmark:
        add_latency(info, dense, made, x.shape[1:], x.dtype)
    for kind, found in made.items():
        passed = [c for c in found if c.problem is None]
        if not passed:
            failed[kind] = "; ".join(f"stored {c.storage}: {c.problem}" for c in found)
            continue
        chosen, why = choose(kind, passed, optimize_for, benchmark)
        (tmp / tflite.TFLITE[kind][0]).write_bytes(chosen.model)
        info["formats"][kind] = {"path": tflite.TFLITE[kind][0], **chosen.report, "storage": chosen.storage,
                                 "storage_choice": {"rule": optimize_for, "why": why, **{
                                     c.storage: summary_of(c) for c in found}}}
    if failed:
        info["failed"] = failed


def candidates(kind: str, info: dict, saved, net, x, keras_outputs, test, dense: bytes, data, quantization,
               calibration) -> list[Candidate]:
    """The sparse and dense storages of ``kind``, each made and checked (its problem recorded, not raised);
    one candidate only when the converter stores nothing sparse (no kernel has enough zeros)."""
    from tf_lth.export import quantize
    from tf_lth.export import tflite
    full = quantize.FullInteger(kind, net, saved, data, x, keras_outputs, quantization, calibration) \
        if kind in quantize.FORMATS else None
    reference = full.reference if full is not None else keras_outputs
    kernels, found = sparse_storage.kernels_of(net), []
    for storage in STORAGES:
        candidate = Candidate(storage)
        found.append(candidate)
        if storage == "sparse" and (known := sparse_storage.problem(kind, kernels)):
            candidate.problem = f"not made: LiteRT computes it wrongly: {known}"
            continue
        try:
            if full is not None:
                candidate.model, extra = full.convert(sparse=storage == "sparse")
            else:
                candidate.model, extra = (dense if kind == "tflite" and storage == "dense"
                                          else tflite.convert(saved, kind, sparse=storage == "sparse")), {}
            candidate.report = {**report(kind, candidate.model, info["dense"], reference, x, test), **extra}
            tflite.verify(kind, candidate.report, info["check"]["source"])
        except Exception as e:  # noqa: BLE001 - a converter or runtime failure of this storage only
            candidate.problem = one_line(e)
        if storage == "sparse" and candidate.model is not None and not tflite.is_sparse_tflite(candidate.model):
            candidate.storage, candidate.report["storage_note"] = "dense", (
                "the converter stored it dense: it stores a weight tensor sparse only from ~30% zeros up")
            break  # the same file as the dense storage
    return found


def report(kind: str, model: bytes, dense: dict, reference, x, test) -> dict:
    """ticket.json's entry for one TFLite file: bytes vs dense, sparse check, resolver, outputs vs Keras."""
    from tf_lth.export import tflite
    interpreter, resolver, outputs, problems = tflite.run_checked(kind, model, x, reference)
    entry = {"bytes": len(model), "gzip_bytes": gzip_len(model), "bytes_vs_dense": round(len(model) / dense["bytes"], 4),
             "gzip_vs_dense": round(gzip_len(model) / dense["gzip_bytes"], 4), **tflite.inspect_tflite(model),
             "resolver": resolver, "resolver_problems": problems, **tflite.compare_outputs(kind, outputs, reference)}
    if test is not None:
        predicted = tflite.run_tflite(interpreter, np.asarray(test[0], x.dtype)).argmax(-1)
        entry["test_accuracy"] = round(float(np.mean(predicted == np.asarray(test[1]))), 6)
    return entry


def summary_of(candidate: Candidate) -> dict:
    """A candidate's figures for ticket.json's ``storage_choice``."""
    r = candidate.report
    out = {k: r[k] for k in ("bytes", "gzip_bytes", "resolver", "latency_us") if k in r}
    out["check"] = "passed" if candidate.problem is None else candidate.problem
    return out


def choose(kind: str, passed: list[Candidate], optimize_for: str, measured: bool) -> tuple[Candidate, str]:
    """The candidate to write and why, by ``optimize_for``: the smaller file, or the faster one."""
    if len(passed) == 1:
        c = passed[0]
        other = "sparse" if c.storage == "dense" else "dense"
        return c, c.report.get("storage_note") or f"stored {c.storage}: the {other} storage failed its check"
    by_size = sorted(passed, key=lambda c: c.report["bytes"])
    if optimize_for == "size":
        small, big = by_size
        return small, f"size: {small.report['bytes']:,} bytes stored {small.storage} vs {big.report['bytes']:,} {big.storage}"
    if measured:
        fast, slow = sorted(passed, key=lambda c: c.report["latency_us"]["batch1"])
        t_fast, t_slow = fast.report["latency_us"]["batch1"], slow.report["latency_us"]["batch1"]
        measured_text = (f"{t_fast:.1f} us stored {fast.storage} vs {t_slow:.1f} us {slow.storage} at batch 1, "
                         f"measured")
        if t_slow <= t_fast * (1 + SAME_SPEED):  # the same speed: the smaller file
            return by_size[0], f"latency: the same speed ({measured_text}), the smaller file"
        return fast, f"latency: {measured_text}"
    from tf_lth.export import tflite
    storage, reason = tflite.expected_faster(kind, {c.storage: c.report for c in passed})
    return next(c for c in passed if c.storage == storage), f"latency (not measured): {reason}"


def add_latency(info: dict, dense: bytes, made: dict[str, list[Candidate]], input_shape, dtype) -> None:
    """Latency of every candidate that passed (its resolver) and of the dense fp32 file (every resolver),
    timed together; the speed-up of each is the dense file's time under its resolver over its own."""
    from tf_lth.export import tflite
    jobs = {("dense", r.name): (dense, r.name) for r in tflite.RESOLVERS}
    for kind, found in made.items():
        jobs.update({(kind, c.storage): (c.model, c.report["resolver"]) for c in found if c.problem is None})
    started = time.perf_counter()
    latency = tflite.benchmark(jobs, input_shape, dtype)
    info["dense"]["latency_us"] = {r.name: latency[("dense", r.name)] for r in tflite.RESOLVERS}
    for kind, found in made.items():
        for c in found:
            if c.problem is None:
                c.report["latency_us"] = latency[(kind, c.storage)]
                reference = info["dense"]["latency_us"][c.report["resolver"]]
                c.report["speedup_vs_dense"] = {b: round(reference[b] / t, 3) for b, t in c.report["latency_us"].items()}
    info["benchmark"] = {"threads": 1, "batches": list(tflite.BENCH_BATCHES),
                         "seconds": round(time.perf_counter() - started, 2),
                         "method": "median over interleaved chunks of repeated invokes, random input"}


__all__ = ["write_formats", "candidates", "choose", "report", "add_latency", "Candidate", "OPTIMIZE_FOR", "STORAGES",
           "SAME_SPEED", "RENAMED", "field", "full_integer_note", "gzip_len", "one_line"]
