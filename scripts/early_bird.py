#!/usr/bin/env python
"""Full IMP against early-bird IMP from the same seed and θ0: accuracy, mask overlap, iterations.

    scripts/early_bird.py FULL_RUN EB_RUN [--out DIR]

Both folders are `tf-lth run` outputs of the same experiment but for the stop rules (e.g. the
README's Fashion-MNIST command with and without ``--early-bird EPS``). For every round both have, it
prints weights remaining, each run's test accuracy (its final ticket is the last round, trained to
the end in both), the overlap of their masks (kept weights in common / kept weights in either) and
the iterations each trained, and writes ``early_bird.json`` and ``early_bird.png`` (accuracy vs
weights remaining) to ``--out`` (default: EB_RUN). Reads results files only (no TensorFlow).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from tf_lth.runner import plots  # noqa: E402
from tf_lth.util.io import read_json, read_npz, write_json  # noqa: E402


def overlap(a: dict, b: dict) -> float:
    """Kept weights in common over kept weights in either (Jaccard), over all kernels."""
    both = sum(int((a[k] & b[k]).sum()) for k in a)
    either = sum(int((a[k] | b[k]).sum()) for k in a)
    return both / max(either, 1)


def compare(full: Path, early: Path) -> dict:
    rows_full = {r["round"]: r for r in read_json(full / "results.json")["rounds"]}
    rows_early = {r["round"]: r for r in read_json(early / "results.json")["rounds"]}
    rows = []
    for k in sorted(set(rows_full) & set(rows_early)):
        f, e = rows_full[k], rows_early[k]
        masks = [read_npz(run / "rounds" / str(k) / "masks.npz") for run in (full, early)]
        rows.append({"round": k, "weights_remaining": e["weights_remaining"], "full_test_accuracy": f["test_accuracy"],
                     "early_bird_test_accuracy": e["test_accuracy"], "mask_overlap": overlap(*masks),
                     "full_iterations": f["iterations"], "early_bird_iterations": e["iterations"],
                     "stopped": e.get("stopped", "end"),
                     "random_reinit": e.get("controls", {}).get("random_reinit", {}).get("test_accuracy")})
    totals = {name: sum(r[f"{name}_iterations"] for r in rows) for name in ("full", "early_bird")}
    return {"full": str(full), "early_bird": str(early), "rounds": rows, "total_iterations": totals,
            "iterations_ratio": totals["early_bird"] / max(totals["full"], 1)}


def table(result: dict) -> str:
    lines = [f"{'round':>5} {'remain%':>8} {'full':>7} {'early':>7} {'overlap':>8} {'it full':>8} {'it early':>9}  stopped"]
    for r in result["rounds"]:
        lines.append(f"{r['round']:>5} {100 * r['weights_remaining']:>8.2f} {r['full_test_accuracy']:>7.4f} "
                     f"{r['early_bird_test_accuracy']:>7.4f} {r['mask_overlap']:>8.3f} {r['full_iterations']:>8} "
                     f"{r['early_bird_iterations']:>9}  {r['stopped']}")
    t = result["total_iterations"]
    lines.append(f"total iterations: full {t['full']:,}, early-bird {t['early_bird']:,} "
                 f"({result['iterations_ratio']:.2f}x)")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("full", type=Path, help="run folder of full IMP")
    parser.add_argument("early", type=Path, help="run folder of early-bird IMP (same experiment and seed)")
    parser.add_argument("--out", type=Path, help="where early_bird.json and .png go (default: the early-bird run)")
    args = parser.parse_args(argv)
    result = compare(args.full, args.early)
    out = args.out or args.early
    write_json(out / "early_bird.json", result)
    series = {name: [(100 * r["weights_remaining"], r[key], r[key], r[key]) for r in result["rounds"] if r[key]]
              for name, key in (("full IMP", "full_test_accuracy"), ("early-bird IMP", "early_bird_test_accuracy"),
                                ("random reinit (early-bird masks)", "random_reinit"))}
    plots.band_figure(series, None, "test accuracy", "Full vs early-bird IMP", out / "early_bird.png")
    print(table(result))
    print(f"wrote {out / 'early_bird.json'} and {out / 'early_bird.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
