#!/usr/bin/env python3
"""Train a network with tf-lth: a thin wrapper around ``tf-lth train`` (``make demo`` runs it).

    python scripts/run_lth.py [--model lenet_300_100] [--dataset mnist5k] [--epochs 5] ...

TensorFlow's native libraries print INFO lines to stderr while they load, before any log level
applies (``TF_CPP_MIN_LOG_LEVEL`` does not reach them); they are dropped here so that an error
stays the one line on stderr. Anything else printed during the import is passed on.
"""
import importlib
import os
import re
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:  # runs from a checkout even without `pip install -e .`
    sys.path.insert(0, ROOT)

NATIVE_NOISE = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|I\d{4} [\d:.]+\s+\d+ \S+:\d+\] .*)$"
)


def import_quietly(name: str):
    """Import module ``name`` with native INFO start-up lines filtered out of stderr."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            return importlib.import_module(name)
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            lines = captured.read().decode(errors="replace").splitlines(keepends=True)
            sys.stderr.write("".join(line for line in lines if not NATIVE_NOISE.match(line.rstrip("\n"))))
            sys.stderr.flush()


if __name__ == "__main__":
    cli = import_quietly("tf_lth.cli")
    sys.exit(cli.main(["train", *sys.argv[1:]]))
