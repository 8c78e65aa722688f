"""Config fields that are also command-line flags: :func:`option` declares a field with its help,
choices and parser, :func:`add_flags` turns a config dataclass into ``argparse`` flags, and the
parsers here read what flags and config files give (lists, ``K=R`` maps, ``4x1`` pairs, lengths like
``160ep`` / ``63000it``). No TensorFlow: ``tf-lth run --help`` answers at once.
"""
from __future__ import annotations

import argparse
from dataclasses import MISSING, field, fields, is_dataclass

from tf_lth.errors import TfLthError
from tf_lth.registry import Registry


def csv(text: str) -> tuple:
    """``a,b`` -> ``("a", "b")``; ``none`` or empty -> ``()``."""
    return tuple(t for t in text.split(",") if t and t != "none")


def kind_rates(text: str) -> dict:
    try:
        return {k.strip(): float(v) for k, v in (part.split("=") for part in text.split(","))}
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not KIND=RATE[,KIND=RATE...], e.g. dense=0.2,output=0.1")


def pair(separator: str, example: str):
    def parse(text: str) -> tuple:
        try:
            a, b = (int(v) for v in text.split(separator))
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not of the form {example}") from None
        return a, b

    return parse


def option(default=None, help: str = "", *, choices=None, parse=None, metavar=None, shown=None, flag=None,
           const=None):
    """A config field and its flag: ``shown`` is the default as help prints it (default: ``default``),
    ``choices`` a registry or tuple, ``parse`` the flag's type, ``flag`` the flag's name if not
    ``--field-name`` (a boolean field gets ``--flag/--no-flag``), ``const`` the value of the flag given
    without one (its value is then optional)."""
    meta = {"help": help, "choices": choices, "parse": parse, "metavar": metavar, "shown": shown, "flag": flag,
            "const": const}
    return field(default=default, metadata=meta)


def check_steps_per_execution(every: int, marks: dict) -> None:
    """One-line error unless each step of ``marks`` (name -> step, None if unknown) is a multiple of
    ``every``: with ``steps_per_execution=every`` Keras calls batch hooks once per ``every`` steps."""
    bad = [f"{name} ({n or 'unknown'})" for name, n in marks.items() if not n or n % every]
    if bad:
        raise TfLthError(f"steps_per_execution = {every} must divide {' and '.join(bad)}: Keras calls callbacks "
                         f"once per {every} steps; use steps_per_execution = 1 or a common divisor")


def check_keras3(config) -> None:
    """An experiment config's ``keras`` as 2 or 3, and a one-line refusal of what ``keras = 3`` cannot run:
    tf.distribute strategies, mixed precision, and the int8_qat export (TF-MOT)."""
    if str(config.keras) not in ("2", "3"):
        raise TfLthError(f"keras = {config.keras!r}: use 2 (tf_keras) or 3 (Keras 3)")
    object.__setattr__(config, "keras", int(config.keras))
    if config.keras == 2:
        return
    if config.strategy != "default" or config.devices:
        raise TfLthError("--keras 3 trains on one device: --strategy and --devices (tf.distribute) need --keras 2")
    if config.training.mixed_precision:
        raise TfLthError("--keras 3 does not take --mixed-precision yet: use --keras 2")
    if "int8_qat" in config.export:  # refused before training, not when the export comes at the end
        raise TfLthError("--keras 3 cannot export int8_qat (TF-MOT's quantization-aware training takes tf_keras "
                         "models only): drop it from --export, or use --keras 2")


def whole(name: str, value, least: int = 1) -> None:
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < least):
        raise TfLthError(f"{name} = {value} must be a whole number >= {least}")


def add_flags(parser, cls, only=None, shown: dict | None = None, seen: set | None = None) -> None:
    """Add a flag per field of ``cls`` (nested configs included; a name already seen, like the ticket's
    ``seed``, once; only the fields named in ``only`` if given; ``shown`` overrides defaults as help
    prints them) whose default is ``SUPPRESS``, so that a flag not given leaves the config file's
    value or the field's default."""
    seen, shown = set() if seen is None else seen, shown or {}
    for f in fields(cls):
        if f.default_factory is not MISSING and is_dataclass(f.default_factory):
            add_flags(parser, f.default_factory, only, shown, seen)
            continue
        if f.name in seen or (only is not None and f.name not in only):
            continue
        seen.add(f.name)
        meta = f.metadata
        flag = meta.get("flag") or "--" + f.name.replace("_", "-")
        default = shown.get(f.name, meta.get("shown") or ("none" if f.default is None else f.default))
        kwargs = {"dest": f.name, "default": argparse.SUPPRESS, "help": f"{meta.get('help', '')} (default: {default})"}
        if meta.get("choices") is not None:
            choices = meta["choices"]
            kwargs["choices"] = choices.names() if isinstance(choices, Registry) else tuple(choices)
        if f.type in ("bool | None", "bool", bool, bool | None):  # (annotations as text or as types)
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["type"] = meta.get("parse") or str
            if meta.get("metavar"):
                kwargs["metavar"] = meta["metavar"]
            if meta.get("const") is not None:
                kwargs.update(nargs="?", const=meta["const"])
        parser.add_argument(flag, **kwargs)
