#!/usr/bin/env python
"""The same experiment in both Keras flavours (issue 12, acceptance 3): LeNet-300-100 on Fashion-MNIST,
8 pruning rounds with the paper's recipe (Adam 1.2e-3, batch 60; 5 epochs per round as in the README's
reproduction command), once with tf_keras (``keras=2``) and once with Keras 3 on the TensorFlow backend
(``keras=3``), from the same seed, through the library (:class:`tf_lth.runner.experiment.Experiment`). Prints
the ticket's test accuracy per round for both and their absolute difference, the mean absolute
difference (acceptance: <= 0.5 pp), and writes it all to ``<out>/keras_flavours.json``.

    scripts/keras_flavours.py [--out runs/keras_flavours] [--rounds 8] [--epochs 5] [--seed 0] [--data-dir DIR]

Each flavour's run lives in ``<out>/keras<k>/`` and resumes like any run (rerun the same command after an
interruption). Several minutes per flavour on 2 CPU cores.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runs without install

THRESHOLD_PP = 0.5


def run_flavour(keras: int, args) -> tuple[list[dict], float]:
    from tf_lth.config.configs import ExperimentConfig
    from tf_lth.runner.experiment import Experiment

    cfg = ExperimentConfig.from_dict({"model": "lenet_300_100", "dataset": "fashion_mnist", "rounds": args.rounds,
                                      "epochs": args.epochs, "seed": args.seed, "controls": (), "export": (),
                                      "keras": keras, "data_dir": args.data_dir})
    started = time.perf_counter()
    result = Experiment(cfg, Path(args.out) / f"keras{keras}", verbose=0,
                        log=lambda line: print(f"  [keras {keras}] {line}", flush=True)).run()
    return result["rounds"], time.perf_counter() - started


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/keras_flavours")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", help="folder of the IDX files (default: the system copy, or $TF_LTH_DATA_DIR)")
    args = parser.parse_args(argv)

    runs, seconds = {}, {}
    for keras in (2, 3):
        print(f"== keras {keras}", flush=True)
        runs[keras], seconds[keras] = run_flavour(keras, args)
    rows = []
    for a, b in zip(runs[2], runs[3]):
        assert a["round"] == b["round"] and abs(a["weights_remaining"] - b["weights_remaining"]) < 1e-9, (a, b)
        rows.append({"round": a["round"], "weights_remaining": a["weights_remaining"],
                     "tf_keras_test_accuracy": a["test_accuracy"], "keras3_test_accuracy": b["test_accuracy"],
                     "abs_diff_pp": round(100 * abs(a["test_accuracy"] - b["test_accuracy"]), 3)})
    mean = sum(r["abs_diff_pp"] for r in rows) / len(rows)
    print(f"{'round':>5}  {'weights':>8}  {'tf_keras':>8}  {'keras3':>8}  {'|diff| pp':>9}")
    for r in rows:
        print(f"{r['round']:>5}  {100 * r['weights_remaining']:>7.1f}%  {r['tf_keras_test_accuracy']:>8.4f}  "
              f"{r['keras3_test_accuracy']:>8.4f}  {r['abs_diff_pp']:>9.2f}")
    ok = mean <= THRESHOLD_PP
    print(f"mean |diff| {mean:.3f} pp over {len(rows)} rounds: {'PASS' if ok else 'FAIL'} (<= {THRESHOLD_PP} pp); "
          f"seconds: tf_keras {seconds[2]:.0f}, keras3 {seconds[3]:.0f} (this process, resumed rounds excluded)")
    report = {"model": "lenet_300_100", "dataset": "fashion_mnist", "rounds": args.rounds, "epochs": args.epochs,
              "seed": args.seed, "rows": rows, "mean_abs_diff_pp": round(mean, 4), "threshold_pp": THRESHOLD_PP,
              "pass": ok, "seconds": {"tf_keras": round(seconds[2], 1), "keras3": round(seconds[3], 1)}}
    path = Path(args.out) / "keras_flavours.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {path}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
