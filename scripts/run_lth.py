#!/usr/bin/env python3
"""Find a lottery ticket: ``tf-lth run`` (``make demo`` runs it with no flags: the embedded demo).

    python scripts/run_lth.py [--model lenet_300_100] [--dataset mnist5k] [--rounds 10] ...
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # runs without install

from tf_lth import cli  # noqa: E402

if __name__ == "__main__":
    sys.exit(cli.main(["run", *sys.argv[1:]]))
