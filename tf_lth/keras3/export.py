"""The Keras 3 route of an export (:func:`tf_lth.export.export_ticket` dispatches here through the flavour
record): ``ticket.keras``, then the SavedModel and TFLite files every export has.

:func:`export` saves the ticket (its layers write their effective weights, masks hidden), loads it back
as the stripped model (``clone_model`` cannot copy a subclassed model) and re-saves that without its
optimizer as ``ticket.keras``; its SavedModel comes from ``keras.export.ExportArchive``
(``from_keras_model`` fails for subclassed models loaded from ``.keras``), then the TFLite files, checks and
ticket.json both flavours share (:mod:`tf_lth.export.formats`). On JAX, jax2tf would give another graph
(resource variables, unfolded BatchNormalization, twice the bytes), so a TensorFlow-backend child process
(:func:`child_main`, ``python -m tf_lth.keras3.export``) makes them from the file, held to JAX's outputs
(``docs/keras3_design.md`` §6); without TensorFlow, only ``ticket.keras`` and ticket.json. int8_qat needs
TF-MOT (tf_keras only). This module never imports tf_keras or TF-MOT; TensorFlow loads inside functions.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np

from tf_lth.errors import TfLthError
from tf_lth.keras3 import backend, environment_for_children, keras
from tf_lth.export.checks import (CHECK_EXAMPLES, INPUT, accuracy, check_batch, dir_bytes, float32, outputs_of,
                                  output_name, weight_stats)
from tf_lth.util.io import staged_dir

JOB = "job"  # the JAX route's hand-over files (job.json, job.npz, job.out.json)
KERAS_FILE = "ticket.keras"
QAT_REFUSED = ("int8_qat fine-tunes with TF-MOT's quantization-aware training, which takes tf_keras models only: "
               "export this Keras 3 ticket as int8_full instead (formats= / --formats)")


def export(model, path: Path, *, name, round, dataset, formats, benchmark, sample, quantization, optimize_for,
           scale) -> dict:
    """Export the Keras 3 ticket ``model`` (masks installed, or a plain model) to ``path`` and return
    ticket.json; ``dataset``: a :class:`~tf_lth.data.pipeline.Dataset` (int8_full needs one) or ``(x_test, y_test)``
    arrays (in the model's pixel range, ``scale``: an :class:`~tf_lth.data.input_scale.InputScale`)."""
    if "int8_qat" in formats or isinstance(dataset, str):
        raise TfLthError(QAT_REFUSED if "int8_qat" in formats else f"dataset {dataset!r} is a name, and loading "
                         "one needs tf_keras: pass a loaded tf_lth Dataset or (x_test, y_test) for a Keras 3 ticket")
    data = dataset.with_input_scale(scale.scale) if hasattr(dataset, "arrays") else None
    test = data.arrays("test") if data is not None else None if dataset is None else tuple(dataset)
    job = {"formats": list(formats), "benchmark": benchmark, "quantization": {}, "calibration": None,
           "optimize_for": optimize_for}
    if "int8_full" in formats:  # quantize loads TensorFlow: only when asked for
        from tf_lth.export import quantize
        quantization = quantization or quantize.Options()
        quantize.check(None, data, formats, quantization)
        job.update(quantization=vars(quantization), calibration=(
            quantize.representative_set(data, quantization), f"{data.name} train"))
    with staged_dir(path) as tmp:
        model.save(tmp / KERAS_FILE)  # a plain file already, but with the optimizer state: loaded, re-saved
        mixed = model.dtype_policy.name.startswith("mixed_") or any(
            layer.dtype_policy.name.startswith("mixed_") for layer in model._flatten_layers())
        if mixed:  # trained in mixed precision: the file computes in float32 (as tf_keras exports do)
            float32_file(tmp / KERAS_FILE)
        net = keras.saving.load_model(tmp / KERAS_FILE, compile=False)
        net.save(tmp / KERAS_FILE)
        shape = net.input_shape[1:] if hasattr(net, "inputs") else net.get_build_config()["input_shape"][1:]
        x, source = check_batch(shape, test, sample, getattr(data, "name", "dataset"), scale)
        keras_outputs, ticket_outputs = outputs_of(net, x), outputs_of(model, x)
        diff = float(np.max(np.abs(keras_outputs - ticket_outputs)))  # the file computes what the ticket does
        if not diff <= (2e-2 if mixed else 1e-5) * max(1.0, float(np.max(np.abs(ticket_outputs)))):  # (float16: ~3 digits)
            raise TfLthError(f"{KERAS_FILE} is {diff:.3g} from the ticket's outputs on {source}: a layer saves wrong weights")
        info = {"name": name, "round": round,
                "input": {"name": INPUT, "shape": [None, *x.shape[1:]], "dtype": "float32", **scale.to_dict()},
                "output": {"name": output_name(net), "shape": [None, *keras_outputs.shape[1:]]}, **weight_stats(net),
                "check": {"source": source, "examples": len(x), "keras_file_max_abs_output_diff": diff}}
        if test is not None:
            info["keras_test_accuracy"] = accuracy(outputs_of(net, np.asarray(test[0], np.float32)), test[1])
        info["formats"] = {"keras": {"path": KERAS_FILE, **dir_bytes(tmp, [tmp / KERAS_FILE])}}
        (tensorflow_half if backend() == "tensorflow" else run_child)(info, tmp, net, x, keras_outputs, test, **job)
        (tmp / "ticket.json").write_text(json.dumps(info, indent=2) + "\n")
    return info


def float32_file(path: Path) -> None:
    """Rewrite the ``.keras`` archive at ``path`` with a float32 config (the weights are float32 already)."""
    with zipfile.ZipFile(path) as archive:
        entries = {n: archive.read(n) for n in archive.namelist()}
    entries["config.json"] = json.dumps(float32(json.loads(entries["config.json"]))).encode()
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for n, content in entries.items():
            archive.writestr(n, content)


def tensorflow_half(info: dict, tmp: Path, net, x, keras_outputs, test, *, formats, benchmark, quantization,
                    calibration, optimize_for) -> None:
    """The SavedModel and TFLite files of the plain Keras 3 model ``net`` (TensorFlow backend) in ``tmp``."""
    import tensorflow as tf
    from tf_lth.export.formats import write_formats
    from tf_lth.export.quantize import Options
    archive, saved, output = keras.export.ExportArchive(), tmp / "saved_model", output_name(net)
    archive.track(net)
    archive.add_endpoint("serving_default", lambda image: {output: net(image, training=False)},
                         input_signature=[tf.TensorSpec([None, *x.shape[1:]], tf.float32, name=INPUT)])
    archive.write_out(str(saved), verbose=False)
    if "saved_model" in formats:
        info["formats"]["saved_model"] = {"path": "saved_model", **dir_bytes(saved)}
    write_formats(info, tmp, saved, net, x, keras_outputs, test, formats, quantization=Options(**quantization),
                  benchmark=benchmark, calibration=calibration, optimize_for=optimize_for)
    if "saved_model" not in formats:
        shutil.rmtree(saved)


def run_child(info: dict, tmp: Path, net, x, keras_outputs, test, **job) -> None:
    """:func:`tensorflow_half` in ``python -m tf_lth.keras3.export <tmp>`` (:func:`child_main`) on the
    TensorFlow backend, from ``ticket.keras`` and held to this process's outputs. The modules of the model's
    own classes are imported there first (this process's ``sys.path``), so they cannot be ``__main__``."""
    from importlib.util import find_spec
    if find_spec("tensorflow") is None:  # looked up, not imported: a JAX process stays TensorFlow-free
        info["tensorflow"] = "no SavedModel or TFLite files: they need TensorFlow, not installed here (install tensorflow)"
        return
    classes = {type(layer) for layer in net._flatten_layers()}
    if own := sorted(c.__name__ for c in classes if c.__module__ == "__main__"):
        raise TfLthError(f"{', '.join(own)} is defined in __main__, which the TensorFlow process that exports a JAX "
                         "ticket cannot import: define it in a module")
    arrays = {"x": x, "keras_outputs": keras_outputs, **({"test_x": test[0], "test_y": test[1]} if test else {}),
              **({"representative": job["calibration"][0]} if job["calibration"] else {})}
    job["calibration"] = job["calibration"] and job["calibration"][1]
    np.savez(tmp / f"{JOB}.npz", **arrays)
    modules = sorted({c.__module__ for c in classes if c.__module__.split(".")[0] != "keras"})
    (tmp / f"{JOB}.json").write_text(json.dumps({**job, "modules": modules, "source": info["check"]["source"]}))
    env = environment_for_children({**os.environ, "KERAS_BACKEND": "tensorflow",
                                    "PYTHONPATH": os.pathsep.join(p or os.getcwd() for p in sys.path)})
    done = subprocess.run([sys.executable, "-m", "tf_lth.keras3.export", str(tmp)], env=env, capture_output=True, text=True)
    if done.returncode or not (tmp / f"{JOB}.out.json").exists():
        lines = [line for line in done.stderr.splitlines() if line.strip()] or [f"exit status {done.returncode}"]
        raise TfLthError(f"the TensorFlow process exporting the JAX ticket failed: {lines[-1]}")
    out = json.loads((tmp / f"{JOB}.out.json").read_text())
    info["formats"].update(out.pop("formats"))
    info["check"].update(out.pop("check"))
    info.update(out)
    for suffix in (".npz", ".json", ".out.json"):
        (tmp / f"{JOB}{suffix}").unlink()


def child_main(folder: str) -> None:
    """The TensorFlow process of a JAX ticket's export (``python -m tf_lth.keras3.export <staged folder>``, from
    :func:`run_child`): ``ticket.keras`` loaded on the TensorFlow backend and held to JAX's
    outputs, then the SavedModel and TFLite files; the new ticket.json entries go to ``job.out.json``."""
    import importlib
    tmp = Path(folder)
    job, arrays = json.loads((tmp / f"{JOB}.json").read_text()), dict(np.load(tmp / f"{JOB}.npz"))
    for module in job.pop("modules"):
        importlib.import_module(module)
    net = keras.saving.load_model(tmp / KERAS_FILE, compile=False)
    x, parent = arrays["x"], arrays["keras_outputs"]
    diff = float(np.max(np.abs(outputs_of(net, x) - parent)))
    if not diff <= 1e-5 * max(1.0, float(np.max(np.abs(parent)))):
        raise TfLthError(f"{KERAS_FILE} on TensorFlow computes outputs {diff:.3g} away from JAX's")
    if job["calibration"] is not None:
        job["calibration"] = (arrays["representative"], job["calibration"])
    info = {"formats": {}, "check": {"source": job.pop("source")}}
    test = (arrays["test_x"], arrays["test_y"]) if "test_x" in arrays else None
    tensorflow_half(info, tmp, net, x, parent, test, **job)
    info["check"] = {"tensorflow_backend_max_abs_output_diff": diff}
    (tmp / f"{JOB}.out.json").write_text(json.dumps(info))


__all__ = ["export", "child_main", "float32_file", "tensorflow_half", "run_child", "KERAS_FILE", "QAT_REFUSED"]

if __name__ == "__main__":
    child_main(sys.argv[1])
