#!/usr/bin/env python
"""Learn a supermask of LeNet-300-100 with the default recipe, then export it as a sparse TFLite ticket.

    scripts/supermask_demo.py [--dataset mnist5k] [--weights signed_constant] [--epochs 5] [--seed 0]
                              [--export DIR]

Prints the test accuracy (thresholded mask), the weights kept, the training time and, with
``--export``, the test accuracy of the exported TFLite file.
"""
import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from tf_lth.data import pipeline as data  # noqa: E402
from tf_lth.data import specs as datasets
from tf_lth.models import networks
from tf_lth.keras2 import supermask
from tf_lth.keras2 import keras  # noqa: E402
from tf_lth.keras2.training import LOSS  # noqa: E402


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    p.add_argument("--dataset", default="mnist5k", choices=datasets.DATASETS.names())
    p.add_argument("--weights", default="signed_constant", choices=supermask.WEIGHTS)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--export", type=Path, help="export the ticket (TFLite) to this folder")
    args = p.parse_args(argv)
    ds = data.load(args.dataset)
    keras.utils.set_random_seed(args.seed)
    model = supermask.learn_supermask(networks.lenet_300_100(ds.input_shape, ds.num_classes), weights=args.weights,
                                      seed=args.seed)
    model.compile(supermask.optimizer(), LOSS, metrics=["accuracy"])
    start = time.perf_counter()
    model.fit(ds.pipeline("train", 60, shuffle=True, seed=args.seed), epochs=args.epochs, verbose=0)
    seconds = time.perf_counter() - start
    accuracy = model.evaluate(ds.pipeline("test", 1000), verbose=0)[1]
    ticket = supermask.to_ticket(model)
    line = (f"{ds.name} {args.weights}: {args.epochs} epochs in {seconds:.1f} s, test accuracy {accuracy:.4f}, "
            f"weights kept {ticket.weights_remaining:.3f}")
    if args.export:
        from tf_lth.export import export_ticket

        info = export_ticket(ticket.model, args.export, name=f"supermask_{ds.name}", dataset=ds,
                             formats=("tflite",), benchmark=False)
        line += f", TFLite test accuracy {info['formats']['tflite']['test_accuracy']:.4f}"
    print(line)


if __name__ == "__main__":
    main()
