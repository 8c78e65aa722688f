"""The tf_keras route of an export (:func:`tf_lth.export.export_ticket` dispatches here through the flavour
record): TF-MOT's ``strip_pruning``, a float32 copy with the masks applied, its SavedModel, then the TFLite
files, checks and ticket.json both flavours share (:mod:`tf_lth.export.formats`).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from tf_lth.errors import TfLthError
from tf_lth.export.checks import (INPUT, accuracy, check_batch, dir_bytes, float32, outputs_of, output_name,
                                  weight_stats)
from tf_lth.export.formats import write_formats
from tf_lth.keras2 import keras, require_tf_keras_model, tf
from tf_lth.util.io import staged_dir


def export(model, path: Path, *, name, round, dataset, formats, benchmark, sample, quantization, optimize_for,
           scale) -> dict:
    """Export the tf_keras ``model`` (a ticket's, wrapped, or a plain one) to ``path`` and return ticket.json
    (the arguments are :func:`tf_lth.export.export_ticket`'s; ``scale``: an
    :class:`~tf_lth.data.input_scale.InputScale`)."""
    from tf_lth.data import pipeline as data_lib
    from tf_lth.export import quantize
    require_tf_keras_model(model)
    if None in model.input_shape[1:]:
        raise TfLthError(f"{model.name} has input shape {model.input_shape}: export needs it fixed but for the batch")
    data = data_lib.load(dataset) if isinstance(dataset, str) else dataset
    data = data.with_input_scale(scale.scale) if data is not None else None
    net = stripped(model)
    quantization = quantization or quantize.Options()
    quantize.check(net, data, formats, quantization)
    test = data.arrays("test") if data is not None else None
    x, source = check_batch(net.input_shape[1:], test, sample, getattr(data, "name", ""), scale)
    x = x.astype(net.inputs[0].dtype.as_numpy_dtype)
    keras_outputs = outputs_of(net, x)
    output = output_name(net)
    info = {"name": name, "round": round, "input": {"name": INPUT, "shape": [None, *net.input_shape[1:]],
                                                      "dtype": net.inputs[0].dtype.name, **scale.to_dict()},
            "output": {"name": output, "shape": list(net.output_shape)}, **weight_stats(net),
            "check": {"source": source, "examples": len(x)}}
    if test is not None:
        info["keras_test_accuracy"] = accuracy(outputs_of(net, test[0]), test[1])
    with staged_dir(path) as tmp:
        saved = tmp / "saved_model"
        write_saved_model(net, saved, output)
        info["formats"] = {}
        if "saved_model" in formats:
            info["formats"]["saved_model"] = {"path": "saved_model", **dir_bytes(saved)}
        write_formats(info, tmp, saved, net, x, keras_outputs, test, formats, data=data, quantization=quantization,
                      benchmark=benchmark, optimize_for=optimize_for)
        if "saved_model" not in formats:
            shutil.rmtree(saved)
        (tmp / "ticket.json").write_text(json.dumps(info, indent=2) + "\n")
    return info


def stripped(model):
    """A float32 copy of the tf_keras ``model`` without pruning wrappers, each pruned weight multiplied
    by its mask (a ticket trained under a mixed policy exports float32 logits, and int8 made from float32)."""
    from tensorflow_model_optimization.python.core.sparsity.keras.prune import strip_pruning
    from tensorflow_model_optimization.python.core.sparsity.keras.pruning_wrapper import PruneLowMagnitude
    masked = {}
    for layer in model.layers:
        if isinstance(layer, PruneLowMagnitude):
            masked.update({id(w): w.numpy() * m.numpy() for w, m, _ in layer.pruning_vars})
    plain = strip_pruning(model)  # shares the wrapped layers (and variables) with ``model``
    copy = keras.models.clone_model(plain, clone_function=lambda lay: type(lay).from_config(float32(lay.get_config())))
    copy.set_weights([masked.get(id(v), v.numpy()) for v in plain.weights])
    return copy


def write_saved_model(net, folder: Path, output: str) -> None:
    """SavedModel with a ``serving_default`` signature ``image -> {output: ...}`` (``"logits"`` or
    ``"probabilities"``); loads with ``tf.saved_model.load`` and ``keras.models.load_model``."""
    spec = tf.TensorSpec([None, *net.input_shape[1:]], net.inputs[0].dtype, name=INPUT)
    serve = tf.function(lambda image: {output: net(image, training=False)}, input_signature=[spec])
    net.save(str(folder), save_format="tf", include_optimizer=False, signatures={"serving_default": serve})


__all__ = ["export", "stripped", "write_saved_model"]
