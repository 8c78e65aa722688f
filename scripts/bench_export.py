#!/usr/bin/env python
"""Size and latency of exported tickets vs sparsity, unstructured and in 1x4 blocks.

    scripts/bench_export.py [--model lenet_300_100] [--sparsity 0.5 0.8 0.9 0.95] [--out FILE.json]

Each ticket is the model pruned in one round to the given sparsity in every layer (untrained:
bytes and latency do not depend on the weight values), exported with :func:`tf_lth.export.export_ticket`.
Prints one row per format and writes every ticket.json to ``--out``. Latency is single-threaded;
speed-up is the dense fp32 file under the same op resolver divided by the format's time.
"""
import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from tf_lth import export, keras, models, networks  # noqa: E402
from tf_lth.config import EXPORT_FORMATS  # noqa: E402
from tf_lth.io import write_json  # noqa: E402
from tf_lth.lottery import LotteryTicket  # noqa: E402
from tf_lth.tflite import BLOCK_STRUCTURES  # noqa: E402


def ticket_json(model: str, sparsity: float, block_size, formats) -> dict:
    """export_ticket's report of ``model`` pruned one-shot to ``sparsity`` in every layer (every kind
    its recipe prunes: a rate for a kind the model lacks is an error). Untrained: its initial
    weights serve as both θ0 and θ_final (the criterion only needs some magnitudes)."""
    keras.utils.set_random_seed(0)
    net = networks.build(model)
    weights = net.get_weights()
    ticket = LotteryTicket.one_shot(net, weights, weights, block_size=block_size,
                                    rates={kind: sparsity for kind in models.spec(model).rates})
    with tempfile.TemporaryDirectory() as tmp:
        return export.export_ticket(ticket.model, Path(tmp) / "export", name=model, round=1, formats=formats)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="lenet_300_100", choices=models.MODELS.names())
    parser.add_argument("--sparsity", type=float, nargs="+", default=[0.5, 0.8, 0.9, 0.95])
    parser.add_argument("--formats", nargs="+", default=["tflite", "int8"], choices=EXPORT_FORMATS[1:])
    parser.add_argument("--out", default="saved_models/bench_export.json")
    args = parser.parse_args(argv)
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
                             f"{r['latency_us']['batch64']:.1f}", f"{r['speedup_vs_dense']['batch64']:.2f}"))
    dense = results[0]["ticket"]["dense"]
    print(f"{args.model}: dense fp32 {dense['bytes']:,} bytes; " + "; ".join(
        f"{res}: {lat['batch1']:.1f} us (batch 1), {lat['batch64']:.1f} us (batch 64)"
        for res, lat in dense["latency_us"].items()))
    table = [("structure", "sparsity", "format", "bytes", "x dense", "gzip", "DENSIFY", "resolver",
              "us b1", "x faster b1", "us b64", "x faster b64"), *rows]
    print(export.format_table(table))
    write_json(args.out, {"model": args.model, "results": results})
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
