"""Ship a ticket: SavedModel, TFLite (fp32, int8, fp16, full-integer int8) and a ticket.json.

One export folder (default ``saved_models/<name>/round_<k>/``)::

    saved_model/          serving signature: input "image" -> output "logits" (or "probabilities" for a
                          model that ends in a softmax)
    ticket.tflite         fp32
    ticket_int8.tflite    dynamic-range int8 (Optimize.DEFAULT)
    ticket_fp16.tflite    float16 weights (optional)
    ticket_int8_full.tflite, ticket_int8_qat.tflite   full-integer (optional, :mod:`tf_lth.export.quantize`)
    ticket.json           input range, sparsity, parameter counts, bytes (raw, gzipped, vs dense), each
                          file's storage (sparse or dense) and why, Keras-vs-TFLite output difference,
                          accuracy, ops, op resolver, latency; the formats left out and why

Each TFLite file is stored sparse or dense by the rule ``optimize_for`` (:mod:`tf_lth.export.formats`),
and checked against Keras on a fixed batch (:mod:`tf_lth.export.tflite`, tolerances recorded). A format that
fails is left out with its reason in ticket.json and one warning; the others are written. When the
caller named the formats (``formats=[...]``, ``--export``, ``--formats``), a failed one also raises
a one-line error once the folder is in place. A dense fp32 conversion of the same weights is the
reference for bytes and latency and is not kept. The folder is written beside its destination and
renamed into place at the end, so a killed export leaves the previous export or none, never half.

Give the :class:`~tf_lth.LotteryTicket` itself (``export_ticket(ticket)``): its last *trained* round is
exported, also after ``next_round`` rewound the model. Given a ticket's model that sits at a rewind
point (untrained weights), the export warns in one line. The pixel range the files expect is the
model's (:mod:`tf_lth.data.input_scale`), in ticket.json's ``input``.

This package is the export's front (dispatch, summary) and what both flavours share: the checks
(:mod:`~tf_lth.export.checks`), the TFLite formats and their storage (:mod:`~tf_lth.export.formats`,
:mod:`~tf_lth.export.sparse_storage`), TFLite itself (:mod:`~tf_lth.export.tflite`), full-integer
quantization (:mod:`~tf_lth.export.quantize`) and running the files (:mod:`~tf_lth.export.predict`). The
flavour's route (:mod:`tf_lth.keras2.export`, :mod:`tf_lth.keras3.export`: ``ticket.keras`` too) is reached
through its :class:`~tf_lth.ticket.flavours.Flavour` record, so a Keras 3 export (on JAX too) never loads
tf_keras or TF-MOT. The formats are :data:`tf_lth.config.configs.EXPORT_FORMATS`, there so that the command line
knows them without importing TensorFlow.
"""
from __future__ import annotations

from pathlib import Path

from tf_lth.config.configs import DEFAULT_EXPORT_FORMATS, EXPORT_FORMATS, OPTIMIZE_FOR
from tf_lth.data import input_scale as input_scale_lib
from tf_lth.errors import TfLthError, warn
from tf_lth.export.formats import field, full_integer_note
from tf_lth.ticket import flavours
from tf_lth.ticket.ticket import LotteryTicket, ticket_of


def default_path(name: str, round: int | None = None) -> Path:
    """``saved_models/<name>/round_<k>`` (``.../latest`` when the round is unknown)."""
    return Path("saved_models") / name / (f"round_{round}" if round is not None else "latest")


def export_ticket(ticket, path=None, *, name: str | None = None, round: int | None = None, dataset=None,
                  formats=None, fp16: bool = False, benchmark: bool = True, sample=None, quantization=None,
                  optimize_for: str = "latency", input_scale: str | None = None, strict=None,
                  verbose: int = 1) -> dict:
    """Export a ticket to ``path`` and return its ticket.json.

    ``ticket``: a :class:`~tf_lth.LotteryTicket` (its latest trained round, or ``round`` if that one is in
    memory: :meth:`~tf_lth.LotteryTicket.trained_model`) or a Keras model of either flavour (a ticket's
    ``model``, wrappers stripped and masks applied, or any plain model). ``dataset`` (a
    :class:`~tf_lth.data.pipeline.Dataset` or its name) gives the check batch and the test accuracy, and the
    training examples int8_full / int8_qat need; without it ``sample`` (an input array) or a seeded uniform
    batch is compared. ``formats``: ``None`` exports :data:`~tf_lth.config.configs.DEFAULT_EXPORT_FORMATS` and only
    warns about a format that fails; a list names them, and a failed one raises (after the others are
    written; ``strict=True`` / ``False``, or the formats that must pass, decides instead). ``fp16=True`` adds ``"fp16"``;
    ``benchmark=False`` skips the latency runs; ``optimize_for``: ``"latency"`` or ``"size"``, how each file's storage is chosen (:mod:`tf_lth.export.formats`);
    ``input_scale``: ``"unit"`` or ``"raw"``, the pixel range of the model (default: detected);
    ``quantization`` (a :class:`tf_lth.export.quantize.Options`): the full-integer formats' I/O, calibration and
    QAT fine-tune; ``verbose=1`` prints a summary.
    """
    model, name, round = _model_to_export(ticket, name, round)
    strict = formats is not None if strict is None else strict  # True, False, or the formats that must pass
    formats = tuple(dict.fromkeys([*(DEFAULT_EXPORT_FORMATS if formats is None else formats),
                                   *(["fp16"] if fp16 else [])]))
    unknown = set(formats) - set(EXPORT_FORMATS)
    if unknown:
        raise TfLthError(f"unknown export format(s) {', '.join(sorted(unknown))}: "
                         f"choose from {', '.join(EXPORT_FORMATS)}")
    if optimize_for not in OPTIMIZE_FOR:
        raise TfLthError(f"optimize_for={optimize_for!r}: choose {' or '.join(OPTIMIZE_FOR)}")
    inputs, outputs = (len(getattr(model, side, None) or [None]) for side in ("inputs", "outputs"))  # subclassed: 1
    if inputs != 1 or outputs != 1:
        raise TfLthError(f"{model.name} has {inputs} inputs and {outputs} outputs: export needs exactly one of each")
    path = Path(path) if path is not None else default_path(name, round)
    scale = input_scale_lib.decide(model, input_scale)
    options = dict(name=name, round=round, dataset=dataset, benchmark=benchmark, sample=sample,
                   quantization=quantization, optimize_for=optimize_for, scale=scale)
    # a Keras 3 route never loads tf_keras
    info = flavours.of(model).export(model, path, formats=tuple(f for f in formats if f != "shrunk"), **options)
    if "shrunk" in formats:
        _export_shrunk(ticket, model, path, info, formats, options)
    for kind, reason in info.get("failed", {}).items():
        warn(f"{kind} left out of the export: {reason}")
    if verbose:
        print(summary(info))
        print(f"exported to {path}/")
    named = set(formats) if strict is True else set(strict or ())  # the formats whose failure is an error
    failed = [kind for kind in info.get("failed", {}) if kind in named]
    if failed:
        raise TfLthError(f"{path} was written without {', '.join(failed)}, which failed: "
                         f"{'; '.join(info['failed'][k] for k in failed)} (leave it out of formats= / --formats / "
                         "--export to export without it)")
    return info


def _export_shrunk(ticket, model, path: Path, info: dict, formats, options: dict) -> None:
    """The ``shrunk`` format: the ticket without the units nobody reads (:mod:`tf_lth.export.shrink`), checked
    against the ticket's outputs and exported with the same route and checks into ``path/shrunk/``; its units,
    MACs and parameters, and every file's cost against the dense file (``compute``), go to ticket.json."""
    from tf_lth.data import pipeline as data_lib
    from tf_lth.export import checks, shrink
    from tf_lth.export.formats import one_line
    from tf_lth.util.io import write_json

    owner = ticket if isinstance(ticket, LotteryTicket) else ticket_of(ticket)
    try:
        if isinstance(ticket, LotteryTicket):  # the trained round exported above
            _, masks, weights = ticket.trained_weights(info.get("round"))
            plain = ticket.masked.plain_copy(weights)
        elif owner is not None:  # a ticket's model, as it is
            plain, masks = owner.masked.plain_copy(owner.masked.weights()), owner.masks
        else:
            plain, masks = model, shrink.zero_masks(model)
        small, plan = shrink.shrink_model(plain, masks)
        data = options["dataset"]
        data = data_lib.load(data) if isinstance(data, str) else data
        test = data.with_input_scale(options["scale"].scale).arrays("test") if data is not None else None
        x, _ = checks.check_batch(tuple(plain.input_shape[1:]), test, options["sample"], "", options["scale"])
        agree = shrink.agreement(plain, small, x)
        if not agree["passed"]:
            raise TfLthError(f"the shrunk model's outputs differ from the ticket's by {agree['max_abs_output_diff_vs_ticket']:.2e}"
                             f" (over its tolerance {agree['tolerance']:.2e}): please report this model")
        sub = [f for f in formats if f not in ("shrunk", "int8_qat")]
        report = flavours.of(small).export(small, path / "shrunk", formats=tuple(dict.fromkeys(["saved_model", *sub])),
                                           **options)
    except Exception as e:  # noqa: BLE001  (one failing format never costs the others)
        info.setdefault("failed", {})["shrunk"] = one_line(e)
    else:
        info["shrunk"] = {"path": "shrunk", **shrink.plan_report(plan), "check": agree,
                          **{k: report[k] for k in ("keras_test_accuracy", "parameters", "dense") if k in report},
                          "formats": {k: {**r, "path": f"shrunk/{r['path']}"} for k, r in report["formats"].items()},
                          **({"failed": report["failed"]} if report.get("failed") else {})}
        if owner is not None and owner.config.granularity == "weight":
            info["shrunk"]["note"] = ("a weight-level ticket: only units whose every outgoing weight was pruned are "
                                      "removed (granularity unit or refill removes whole units)")
        info["compute"] = shrink.compute_table(info)
    write_json(path / "ticket.json", info)


def _model_to_export(ticket, name, round):
    """``(model, name, round)``: a ticket's trained round as a plain model, or the model given (with a
    one-line warning when it is a ticket's model at a rewind point)."""
    if isinstance(ticket, LotteryTicket):
        trained_round, _, weights = ticket.trained_weights(round)
        return ticket.masked.plain_copy(weights), name or ticket.source.name, trained_round
    owner = ticket_of(ticket)
    if owner is not None:
        owner.rewound_warning("exporting")
    if flavours.of(ticket) is None:
        raise TfLthError(f"export_ticket takes a LotteryTicket or a Keras model (tf_keras or Keras 3), got "
                         f"{type(ticket).__name__}")
    return ticket, name or ticket.name, round


def summary(info: dict) -> str:
    """A ticket.json in a few lines: the ticket, the input it expects, a row per file (storage, bytes,
    output difference, accuracy, latency), why a file is stored dense, and the formats left out."""
    p = info["parameters"]
    accuracy = f", Keras test accuracy {info['keras_test_accuracy']:.4f}" if "keras_test_accuracy" in info else ""
    which = info["name"] if info.get("round") is None else f"{info['name']} round {info['round']}"
    lines = [f"{which}: {p['nonzero']:,} of {p['total']:,} weights non-zero "
             f"({100 * p['sparsity']:.1f}% sparse){accuracy}"]
    if "range" in info.get("input", {}):
        low, high = info["input"]["range"]
        lines.append(f"input: float32 pixels in [{low:g}, {high:g}] ({info['input'].get('reason', '')})")
    batches = [f"batch{b}" for b in info.get("benchmark", {}).get("batches", [])]
    table = [("format", "file", "storage", "bytes", "x dense", "max|dout|", "test acc",
              *(f"us b{b[5:]}" for b in batches), *(["x faster b1"] if batches else []))]
    for kind, r in ([("dense fp32", info["dense"])] if "dense" in info else []) + list(info["formats"].items()):
        lat, speed = r.get("latency_us", {}), r.get("speedup_vs_dense", {})
        if kind == "dense fp32":
            lat = lat.get("AUTO", lat.get("BUILTIN_WITHOUT_DEFAULT_DELEGATES", {})) if lat else {}
        storage = r.get("storage", {True: "sparse", False: "dense"}.get(r.get("sparse"), ""))
        table.append((kind, "(reference)" if kind == "dense fp32" else r.get("path", ""), storage, f"{r['bytes']:,}",
                      _fmt(r.get("bytes_vs_dense"), ".3f"), _fmt(field(r, "max_abs_output_diff"), ".1e"),
                      _fmt(r.get("test_accuracy"), ".4f"), *(_fmt(lat.get(b), ".1f") for b in batches),
                      *([_fmt(speed.get("batch1"), ".2f")] if batches else [])))
    lines.append(format_table(table))
    for kind, r in info["formats"].items():
        choice = r.get("storage_choice")
        if choice and r.get("storage") == "dense":
            lines.append(f"{r['path']} is stored dense: {choice['why']}")
    lines += [full_integer_note(kind, r) for kind, r in info["formats"].items() if "calibration" in r]
    if "shrunk" in info:
        lines.append(_shrunk_lines(info))
    lines += [f"left out: {kind}: {reason}" for kind, reason in info.get("failed", {}).items()]
    return "\n".join(lines)


def _shrunk_lines(info: dict) -> str:
    """The shrunk model's units and every file's compute against the dense file (ticket.json's ``compute``)."""
    s = info["shrunk"]
    cut = [f"{layer} {k}/{n}" for layer, (k, n) in s["units"].items() if k < n]
    lines = [f"shrunk: {s['params'][0]:,} of {s['params'][1]:,} parameters, {100 * (s['macs_remaining'] or 1):.1f}% of "
             f"the MACs ({'units kept: ' + ', '.join(cut) if cut else 'no unit could go'}); outputs = the ticket's "
             f"within {s['check']['max_abs_output_diff_vs_ticket']:.1e}"]
    batches = sorted({b for row in info.get("compute", []) for b in row["latency_us"]}, key=lambda b: int(b[5:]))
    table = [("file", "params x", "MACs x", "bytes x", *(f"x faster b{b[5:]}" for b in batches))]
    for row in info.get("compute", []):
        v = row["vs_dense"]
        table.append((row["file"], _fmt(v["params"], ".3f"), _fmt(v["macs"], ".3f"), _fmt(v["bytes"], ".3f"),
                      *(_fmt(v.get(f"speedup_{b}"), ".2f") for b in batches)))
    return "\n".join(lines + [format_table(table)])


def format_table(rows) -> str:
    """Rows of strings as left-aligned columns."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows)


def _fmt(value, spec: str) -> str:
    return "" if value is None else format(value, spec)


__all__ = ["export_ticket", "default_path", "summary", "format_table"]
