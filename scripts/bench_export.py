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
"""
import argparse
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
    dataset, results, rows = data.load(args.dataset), [], []
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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="lenet_300_100", choices=models.MODELS.names())
    parser.add_argument("--sparsity", type=float, nargs="+", default=None, help="default: 0.5 0.8 0.9 0.95 "
                        "(--quantized: 0.9)")
    parser.add_argument("--formats", nargs="+", default=["tflite", "int8"], choices=EXPORT_FORMATS[1:])
    parser.add_argument("--out", help="default: saved_models/bench_export.json (--quantized: bench_quantized.json)")
    parser.add_argument("--quantized", action="store_true", help="trained tickets in every format, full-integer too")
    parser.add_argument("--models", nargs="+", default=["lenet_300_100", "conv2"], choices=models.MODELS.names())
    parser.add_argument("--dataset", default="fashion_mnist", choices=data.DATASETS.names())
    parser.add_argument("--steps", type=int, nargs=2, metavar=("DENSE", "TICKET"), help="training steps before and "
                        "after pruning (default: QUANTIZED_STEPS)")
    parser.add_argument("--optimize-for", choices=("latency", "size"), default="latency",
                        help="how each file's storage is chosen (default: %(default)s)")
    args = parser.parse_args(argv)
    args.out = args.out or f"saved_models/bench_{'quantized' if args.quantized else 'export'}.json"
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
