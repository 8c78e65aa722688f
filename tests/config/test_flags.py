"""Flags generated from config fields (tf_lth.config.flags): one flag per field, its default left to the
config file or the field, ``--flag/--no-flag`` for booleans, an optional value where the field has a
``const``, and the value parsers' one-line errors. No TensorFlow."""
import argparse
from dataclasses import dataclass

import pytest

from tf_lth.config import ExperimentConfig
from tf_lth.config.flags import add_flags, csv, kind_rates, option, pair, whole
from tf_lth.errors import TfLthError


@dataclass(frozen=True)
class Small:
    rate: float = option(0.2, "a rate", parse=float)
    jit: bool | None = option(None, "XLA", flag="--jit")
    eps: float | None = option(None, "a threshold", parse=float, metavar="EPS", const=0.105)
    names: tuple = option((), "names", parse=csv, metavar="LIST")


def parser():
    p = argparse.ArgumentParser()
    add_flags(p, Small)
    return p


def test_a_flag_per_field_and_defaults_left_to_the_config():
    assert vars(parser().parse_args([])) == {}  # SUPPRESS: a flag not given does not override a config file
    args = vars(parser().parse_args(["--rate", "0.5", "--no-jit", "--eps", "--names", "a,b"]))
    assert args == {"rate": 0.5, "jit": False, "eps": 0.105, "names": ("a", "b")}
    assert vars(parser().parse_args(["--eps", "0.2"]))["eps"] == 0.2


def test_the_experiment_config_has_a_flag_for_each_field():
    p = argparse.ArgumentParser()
    add_flags(p, ExperimentConfig)
    flags = {a.dest for a in p._actions}
    for name in ("model", "rounds", "rate", "rewind", "epochs", "early_bird", "optimize_for", "input_scale", "keras"):
        assert name in flags


def test_the_parsers():
    assert csv("a,b,none") == ("a", "b") and csv("none") == ()
    assert kind_rates("dense=0.2,output=0.1") == {"dense": 0.2, "output": 0.1}
    assert pair("x", "4x1")("4x1") == (4, 1)
    with pytest.raises(argparse.ArgumentTypeError, match="is not of the form 4x1"):
        pair("x", "4x1")("4by1")
    with pytest.raises(TfLthError, match="rounds = -1 must be a whole number >= 0"):
        whole("rounds", -1, 0)
