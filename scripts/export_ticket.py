#!/usr/bin/env python
"""Export a round of a tf-lth run folder as SavedModel + sparse TFLite with a ticket.json report.

    scripts/export_ticket.py RUN_DIR [--round K] [--out DIR] [--formats saved_model tflite int8 fp16]
                             [--dataset NAME] [--no-benchmark]

Same as ``tf-lth export``; bad input prints one ``tf-lth: error: ...`` line and exits with 2.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from tf_lth import cli  # noqa: E402

if __name__ == "__main__":
    sys.exit(cli.main(["export", *sys.argv[1:]]))
