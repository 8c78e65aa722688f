#!/usr/bin/env python
"""Size and latency of exported tickets vs sparsity, unstructured and in 1x4 blocks; or, with
``--quantized``, trained tickets in every TFLite format, full-integer ones included.

    scripts/bench_export.py [--model lenet_300_100] [--sparsity 0.5 0.8 0.9 0.95] [--out FILE.json]
    scripts/bench_export.py --quantized [--models lenet_300_100 conv2] [--dataset fashion_mnist]
                            [--sparsity 0.9] [--steps DENSE TICKET] [--optimize-for latency|size]

Each ticket of the sweep is the model pruned in one round to the given sparsity in every layer
(untrained: bytes and latency do not depend on the weight values), exported with
:func:`tf_lth.export.export_ticket`. Prints one row per format and writes every ticket.json to
``--out``. Latency is single-threaded; speed-up is the dense fp32 file under the same op resolver
divided by the format's time.

``--quantized`` needs accuracies, so its tickets are trained (:func:`trained_ticket`): the dense
network for a number of steps (:data:`QUANTIZED_STEPS`, the model's recipe otherwise), pruned by
magnitude to ``--sparsity`` in one round, rewound to θ0 and trained as long again; then exported as
fp32, dynamic-range int8, int8_full and int8_qat (float I/O) with the test split scored. Each file is
stored sparse or dense as ``--optimize-for`` chooses (latency by default, measured in the export); the
table gives the chosen storage, its bytes, accuracy and batch-1 latency against the dense fp32 file
under the default op resolver (XNNPACK, what an app gets without asking), and the other storage's
bytes, latency and check beside it (both figures are in each ticket.json's ``storage_choice``). The
sweep (without ``--quantized``) stores every file as ``--optimize-for size`` would: sparse.

``--shrink`` (issue 24) compares what the tickets *compute*: for each of ``--models`` (default
LeNet-300-100; Conv-2 and the other 32x32x3 networks on the dataset zero-padded to 32x32, 3 channels)
the dense network is trained for the first of ``--epochs`` (recipe optimizer, rate and batch, seed 0),
then three tickets are cut in one shot from its trained weights
(:meth:`tf_lth.LotteryTicket.one_shot`), each keeping ``--remaining`` of the weights: granularity
``weight`` (rates from :func:`tf_lth.pruning.selection.level_rates`), ``refill`` (the same unstructured
cut refilled into whole units, within one unit per layer) and ``unit`` (whole units by L1 norm; the
per-layer rates found by bisection so that the ticket keeps the same fraction of the weights). Each
ticket is fine-tuned under its masks for the second of ``--epochs`` (``--rewind finetune``, the
default: from the trained weights; ``--rewind init`` retrains from θ0 instead) and exported, as is the
dense network, in ``tflite``, ``int8``, ``int8_full`` and ``shrunk`` (the ticket as a smaller dense
network: every unit nobody reads removed; on the weight ticket only those). The table has one row per
file of each export's ``compute`` rows (ticket.json): parameters, MACs and bytes as fractions of the
dense fp32 file's, TFLite latency at batch 1 and 32 (XNNPACK where the file runs on it, one thread,
medians) and the speed-up over the dense fp32 file measured in the same export, and the file's test
accuracy. ``--train-examples`` / ``--test-examples`` cut the splits (smoke tests), ``--no-benchmark``
skips the latency runs. Writes every ticket.json and the rows to ``--out``
(default saved_models/bench_shrink.json).

    scripts/bench_export.py --shrink [--models lenet_300_100 conv2] [--remaining 0.2] [--epochs 2 1]
                            [--rewind finetune|init] [--data-dir DIR]
"""
import argparse
import dataclasses
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from tf_lth import export, keras  # noqa: E402
from tf_lth import data
from tf_lth.models import specs as models
from tf_lth.models import networks
from tf_lth.export import quantize
from tf_lth.export import tflite
from tf_lth.pruning import selection
from tf_lth.config.configs import EXPORT_FORMATS, OPTIMIZERS  # noqa: E402
from tf_lth.util.io import write_json  # noqa: E402
from tf_lth.ticket.ticket import LotteryTicket  # noqa: E402
from tf_lth.export.tflite import BLOCK_STRUCTURES  # noqa: E402
from tf_lth.keras2.training import LOSS  # noqa: E402

QUANTIZED = ("tflite", "int8", "int8_full", "int8_qat")
# training steps (batch of the model's recipe) before and after pruning: LeNet-300-100 two epochs of
# Fashion-MNIST's 55,000 training images each; Conv-2 a third of an epoch each (~0.2 s a step on two
# CPU cores: full epochs would take the benchmark past ten minutes)
QUANTIZED_STEPS = {"lenet_300_100": (1834, 1834), "conv2": (300, 300)}
SHRUNK = ("saved_model", "tflite", "int8", "int8_full", "shrunk")
GRANULARITIES = ("weight", "unit", "refill")


def ticket_json(model: str, sparsity: float, block_size, formats, optimize_for: str = "size") -> dict:
    """export_ticket's report of ``model`` pruned one-shot to ``sparsity`` in every layer (every kind
    its recipe prunes: a rate for a kind the model lacks is an error). Untrained: its initial
    weights serve as both θ0 and θ_final (the criterion only needs some magnitudes)."""
    keras.utils.set_random_seed(0)
    net = networks.build(model)
    weights = net.get_weights()
    ticket = LotteryTicket.one_shot(net, weights, weights, block_size=block_size,
                                    rates={kind: sparsity for kind in models.spec(model).rates})
    with tempfile.TemporaryDirectory() as tmp:
        return export.export_ticket(ticket.model, Path(tmp) / "export", name=model, round=1, formats=formats,
                                    optimize_for=optimize_for, verbose=0)


def trained_ticket(model: str, dataset, sparsity: float, steps: tuple[int, int]) -> tuple[LotteryTicket, float]:
    """A ticket of ``model`` at ``sparsity`` in every layer it prunes, trained with its recipe's
    optimizer, learning rate and batch (seed 0), and the dense network's test accuracy before pruning."""
    keras.utils.set_random_seed(0)
    spec = models.spec(model)
    ticket = LotteryTicket(networks.build(model, dataset.input_shape), rates={kind: sparsity for kind in spec.rates})
    batches = dataset.pipeline("train", spec.batch_size, shuffle=True).repeat()
    dense_accuracy = None
    for phase, n in enumerate(steps):
        ticket.model.compile(optimizer=getattr(keras.optimizers, OPTIMIZERS.get(spec.optimizer))(spec.learning_rate),
                             loss=LOSS, metrics=["accuracy"])
        ticket.model.fit(batches, steps_per_epoch=n, epochs=1, callbacks=[ticket.callback()], verbose=0)
        if phase == 0:
            dense_accuracy = ticket.model.evaluate(dataset.pipeline("test", 500), verbose=0)[1]
            ticket.next_round()
    return ticket, round(float(dense_accuracy), 4)


def other_storage(r: dict) -> tuple[str, str, str]:
    """The storage a format did not choose: its bytes, batch-1 latency and check (or why it was not made)."""
    chosen = r["storage"]
    other = next((k for k in ("sparse", "dense") if k != chosen and k in r["storage_choice"]), None)
    if other is None:
        return "-", "-", "the converter stores it dense"
    o = r["storage_choice"][other]
    latency = f"{o['latency_us']['batch1']:.1f}" if "latency_us" in o else "-"
    return f"{other} {o['bytes']:,}" if "bytes" in o else other, latency, o["check"][:60]


def quantized(args) -> int:
    """The ``--quantized`` table: every TFLite format of trained tickets, each stored as ``--optimize-for``
    chooses (sparse or dense), against the other storage: bytes, accuracy, latency."""
    dataset, results, rows = data.load(args.dataset, args.data_dir), [], []
    for model in args.models:
        steps = tuple(args.steps or QUANTIZED_STEPS.get(model, (1000, 1000)))
        ticket, dense_accuracy = trained_ticket(model, dataset, args.sparsity[0], steps)
        with tempfile.TemporaryDirectory() as tmp:
            info = export.export_ticket(ticket.model, Path(tmp) / "export", name=model, round=1, dataset=dataset,
                                        formats=("saved_model", *QUANTIZED), optimize_for=args.optimize_for, verbose=0)
        results.append({"model": model, "steps": steps, "dense_test_accuracy": dense_accuracy, "ticket": info})
        dense = info["dense"]
        base = dense["latency_us"]["AUTO"]["batch1"]
        rows.append((model, "dense fp32", "dense", f"{dense['bytes']:,}", "1.000", f"{dense_accuracy:.4f}",
                     f"{base:.1f}", "1.00", "AUTO", "", "", ""))
        for kind in QUANTIZED:
            r = info["formats"][kind]
            rows.append((model, kind, r["storage"], f"{r['bytes']:,}", f"{r['bytes_vs_dense']:.3f}",
                         f"{r['test_accuracy']:.4f}", f"{r['latency_us']['batch1']:.1f}",
                         f"{base / r['latency_us']['batch1']:.2f}", r["resolver"], *other_storage(r)))
        print(export.summary(info))
    print(f"{args.dataset}, {100 * args.sparsity[0]:.0f}% sparse tickets, storage chosen for {args.optimize_for}; "
          "dense fp32 accuracy: the dense network before pruning (Keras); latency: batch 1, one thread")
    print(export.format_table([("model", "format", "storage", "bytes", "x dense", "test acc", "us b1",
                                "x faster than dense fp32", "resolver", "other storage: bytes", "us b1", "its check"),
                               *rows]))
    write_json(args.out, {"dataset": args.dataset, "sparsity": args.sparsity[0], "optimize_for": args.optimize_for,
                          "results": results})
    print(f"wrote {args.out}")
    return 0


# -- --shrink: dense vs weight vs unit vs refill tickets, what each file computes ---------------------------
def shrink_data(args, model: str):
    """The dataset ``model`` trains on: ``--dataset`` as it is, or zero-padded to 32x32x3 for a network built
    for that shape; ``--train-examples`` / ``--test-examples`` keep the first examples of those splits."""
    shape = models.spec(model).input_shape
    pad = shape is not None and tuple(shape) == (32, 32, 3)
    ds = data.load(args.dataset, args.data_dir, **(dict(image_size=(32, 32), channels=3, resize="pad") if pad else {}))
    n, m = args.train_examples, args.test_examples
    return dataclasses.replace(ds, x_train=ds.x_train[:n], y_train=ds.y_train[:n], x_test=ds.x_test[:m],
                               y_test=ds.y_test[:m])


def fit(net, model: str, dataset, epochs: int, callbacks=()) -> None:
    """``epochs`` of the training split with ``model``'s recipe optimizer, learning rate and batch."""
    spec = models.spec(model)
    net.compile(optimizer=getattr(keras.optimizers, OPTIMIZERS.get(spec.optimizer))(spec.learning_rate), loss=LOSS,
                metrics=["accuracy"])
    if epochs:
        net.fit(dataset.pipeline("train", spec.batch_size, shuffle=True, seed=0), epochs=epochs,
                callbacks=list(callbacks), verbose=0)


def fresh(model: str, dataset, weights: list):
    """``model`` built for ``dataset`` holding ``weights``."""
    net = networks.build(model, dataset.input_shape, dataset.num_classes)
    net.set_weights(weights)
    return net


def level(model: str, dataset, final: list, granularity: str, remaining: float) -> dict:
    """Rates by layer name that make a one-shot ticket of ``granularity`` keep ``remaining`` of the weights of
    the layers the recipe prunes: :func:`~tf_lth.pruning.selection.level_rates` for ``weight`` and ``refill``
    (refill keeps the unstructured cut's budget in whole units), bisection on the same family of rates
    ``1 - (1 - rate) ** k`` for ``unit`` (its masks drawn from ``final`` as the ticket will draw them)."""
    template = LotteryTicket(fresh(model, dataset, final), granularity=granularity, rates=models.spec(model).rates)
    keys, base = template.pruned_keys(), dict(template.rates)
    sizes = {k: template.masks[k].size for k in keys}
    names = {k: template.masked.layers[k].name for k in keys}
    if granularity != "unit":
        return {names[k]: r for k, r in selection.level_rates(sizes, base, remaining).items()}

    def rates(k: float) -> dict:
        return {key: 1 - (1 - base[key]) ** k for key in keys}

    def left(k: float) -> float:
        template.rates = rates(k)
        masks = template.draw_masks()
        return sum(int(masks[key].sum()) for key in keys) / sum(sizes.values())

    lo, hi = 0.0, 1.0
    while left(hi) > remaining and hi < 1e3:
        hi *= 2
    for _ in range(40):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if left(mid) > remaining else (lo, mid)
    best = min((lo, hi), key=lambda k: abs(left(k) - remaining))
    return {names[key]: r for key, r in rates(best).items()}


def compute_rows(model: str, kind: str, info: dict, dense_accuracy: float) -> list[dict]:
    """ticket.json's ``compute`` rows of one export with each file's test accuracy (the dense fp32 file's:
    the dense network's in Keras), one row each."""
    rows = []
    for row in info.get("compute", []):
        fmt, file = row.get("format"), row["file"]
        source = info["shrunk"]["formats"] if file.startswith("shrunk/") else info["formats"]
        accuracy = dense_accuracy if fmt is None else source.get(fmt, {}).get("test_accuracy")
        rows.append({"model": model, "ticket": kind, "file": file, "format": fmt, "params": row["params"],
                     "macs": row["macs"], "bytes": row["bytes"], "latency_us": row["latency_us"],
                     "vs_dense": row["vs_dense"], "test_accuracy": accuracy})
    return rows


def shrunk_tickets(args) -> int:
    """The ``--shrink`` table: the dense network and its weight, unit and refill tickets in every format."""
    def fmt(value, spec):
        return "-" if value is None else format(value, spec)

    results, rows = [], []
    for model in args.models:
        dataset = shrink_data(args, model)
        keras.utils.set_random_seed(0)
        dense = networks.build(model, dataset.input_shape, dataset.num_classes)
        theta0 = dense.get_weights()
        fit(dense, model, dataset, args.epochs[0])
        final = dense.get_weights()
        dense_accuracy = round(float(dense.evaluate(dataset.pipeline("test", 500), verbose=0)[1]), 4)
        print(f"{model}: dense network trained {args.epochs[0]} epoch(s) on {len(dataset.x_train):,} images: "
              f"test accuracy {dense_accuracy:.4f}", flush=True)
        entries = [("dense", dense, None, None)]
        for granularity in GRANULARITIES:
            rates = level(model, dataset, final, granularity, args.remaining)
            keras.utils.set_random_seed(0)
            ticket = LotteryTicket.one_shot(fresh(model, dataset, final), theta0, final, granularity=granularity,
                                            rates=rates, rewind=args.rewind)
            fit(ticket.model, model, dataset, args.epochs[1], callbacks=[ticket.callback()])
            entries.append((granularity, ticket, rates, ticket))
        for kind, what, rates, ticket in entries:
            with tempfile.TemporaryDirectory() as tmp:
                info = export.export_ticket(what, Path(tmp) / "export", name=model, round=1 if ticket else None,
                                            dataset=dataset, formats=SHRUNK, optimize_for=args.optimize_for,
                                            benchmark=args.benchmark, verbose=0)
            found = compute_rows(model, kind, info, dense_accuracy)
            results.append({"model": model, "ticket": kind, "rates": rates, "dense_test_accuracy": dense_accuracy,
                            "weights_remaining": ticket.weights_remaining if ticket else 1.0,
                            "macs_remaining": ticket.macs_remaining if ticket else 1.0, "export": info, "rows": found})
            for kind_failed, why in info.get("failed", {}).items():
                print(f"{model} {kind}: {kind_failed} left out: {why}")
            for r in found:
                if r["format"] == "saved_model" or (kind == "dense" and r["file"].startswith("shrunk/")) or (
                        kind != "dense" and r["format"] is None):
                    continue  # in the JSON: SavedModels, the dense network shrunk (nothing goes), each export's
                    # dense fp32 reference (printed once, with the dense network)
                v, lat = r["vs_dense"], r["latency_us"]
                rows.append((model, kind, r["file"], fmt(v["params"], ".3f"), fmt(v["macs"], ".3f"),
                             fmt(v["bytes"], ".3f"), fmt(lat.get("batch1"), ".1f"), fmt(lat.get("batch32"), ".1f"),
                             fmt(v.get("speedup_batch1"), ".2f"), fmt(v.get("speedup_batch32"), ".2f"),
                             fmt(r["test_accuracy"], ".4f")))
            print(f"{model} {kind}: exported", flush=True)
    print(f"{args.dataset}: tickets cut in one shot to {100 * args.remaining:.0f}% of the weights, fine-tuned "
          f"{args.epochs[1]} epoch(s) (rewind {args.rewind}); x: fractions of the dense fp32 file's parameters, "
          "MACs and bytes; latency: TFLite, one thread, median; x faster: the dense fp32 file of the same export "
          "over this file")
    print(export.format_table([("model", "ticket", "file", "params x", "MACs x", "bytes x", "us b1", "us b32",
                                "x faster b1", "x faster b32", "test acc"), *rows]))
    write_json(args.out, {"dataset": args.dataset, "remaining": args.remaining, "epochs": list(args.epochs),
                          "rewind": args.rewind, "train_examples": args.train_examples,
                          "test_examples": args.test_examples, "benchmark": args.benchmark, "results": results})
    print(f"wrote {args.out}")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="lenet_300_100", choices=models.MODELS.names())
    parser.add_argument("--sparsity", type=float, nargs="+", default=None, help="default: 0.5 0.8 0.9 0.95 "
                        "(--quantized: 0.9)")
    parser.add_argument("--formats", nargs="+", default=["tflite", "int8"], choices=EXPORT_FORMATS[1:])
    parser.add_argument("--out", help="default: saved_models/bench_export.json (--quantized: bench_quantized.json, "
                        "--shrink: bench_shrink.json)")
    parser.add_argument("--quantized", action="store_true", help="trained tickets in every format, full-integer too")
    parser.add_argument("--models", nargs="+", choices=models.MODELS.names(), help="default: lenet_300_100 conv2 "
                        "(--shrink: lenet_300_100)")
    parser.add_argument("--dataset", default="fashion_mnist", choices=data.DATASETS.names())
    parser.add_argument("--steps", type=int, nargs=2, metavar=("DENSE", "TICKET"), help="training steps before and "
                        "after pruning (default: QUANTIZED_STEPS)")
    parser.add_argument("--optimize-for", choices=("latency", "size"), default="latency",
                        help="how each file's storage is chosen (default: %(default)s)")
    parser.add_argument("--shrink", action="store_true", help="dense vs weight, unit and refill tickets: params, "
                        "MACs, bytes, latency of every format, shrunk files too")
    parser.add_argument("--remaining", type=float, default=0.2, help="--shrink: fraction of the weights each ticket "
                        "keeps (default: %(default)s)")
    parser.add_argument("--epochs", type=int, nargs=2, default=[2, 1], metavar=("DENSE", "TICKET"),
                        help="--shrink: epochs of the dense network, then of each ticket (default: 2 1)")
    parser.add_argument("--rewind", default="finetune", help="--shrink: where the tickets restart from "
                        "(default: %(default)s, the trained weights; init: theta0)")
    parser.add_argument("--data-dir", help="folder with the dataset's files (default: the usual places)")
    parser.add_argument("--train-examples", type=int, help="--shrink: first N training images only (smoke tests)")
    parser.add_argument("--test-examples", type=int, help="--shrink: first N test images only")
    parser.add_argument("--no-benchmark", dest="benchmark", action="store_false",
                        help="--shrink: skip the latency runs")
    args = parser.parse_args(argv)
    part = "quantized" if args.quantized else "shrink" if args.shrink else "export"
    args.out = args.out or f"saved_models/bench_{part}.json"
    if args.shrink:
        args.models = args.models or ["lenet_300_100"]
        return shrunk_tickets(args)
    args.models = args.models or ["lenet_300_100", "conv2"]
    if args.quantized:
        args.sparsity = args.sparsity or [0.9]
        return quantized(args)
    args.sparsity = args.sparsity or [0.5, 0.8, 0.9, 0.95]
    results, rows = [], []
    for structure, block in BLOCK_STRUCTURES.items():
        for sparsity in args.sparsity:
            info = ticket_json(args.model, sparsity, block, args.formats)
            results.append({"structure": structure, "sparsity": sparsity, "ticket": info})
            for kind in args.formats:
                r = info["formats"][kind]
                rows.append((structure, f"{sparsity:.2f}", kind, f"{r['bytes']:,}", f"{r['bytes_vs_dense']:.3f}",
                             f"{r['gzip_bytes']:,}", "yes" if "DENSIFY" in r["ops"] else "no", r["resolver"],
                             f"{r['latency_us']['batch1']:.1f}", f"{r['speedup_vs_dense']['batch1']:.2f}",
                             f"{r['latency_us']['batch32']:.1f}", f"{r['speedup_vs_dense']['batch32']:.2f}"))
    dense = results[0]["ticket"]["dense"]
    print(f"{args.model}: dense fp32 {dense['bytes']:,} bytes; " + "; ".join(
        f"{res}: {lat['batch1']:.1f} us (batch 1), {lat['batch32']:.1f} us (batch 32)"
        for res, lat in dense["latency_us"].items()))
    table = [("structure", "sparsity", "format", "bytes", "x dense", "gzip", "DENSIFY", "resolver",
              "us b1", "x faster b1", "us b32", "x faster b32"), *rows]
    print(export.format_table(table))
    write_json(args.out, {"model": args.model, "results": results})
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
