"""Export of a Keras 3 ticket, and the half of every export that both Keras flavours share.

:func:`export_keras3` saves the masked model (its layers write their effective weights, masks hidden),
loads it back as the stripped ticket (``clone_model`` cannot copy a subclassed model) and re-saves that
without optimizer as ``ticket.keras``; its SavedModel comes from ``keras.export.ExportArchive``
(``from_keras_model`` fails for subclassed models loaded from ``.keras``), then the TFLite files, checks
and ticket.json both flavours share (:func:`tf_lth.export_formats.write_formats`). On JAX, jax2tf would
give another graph (resource variables, unfolded BatchNormalization, twice the bytes), so a
TensorFlow-backend child makes them from the file, held to JAX's outputs (``docs/keras3_design.md`` §6); without TensorFlow, only ``ticket.keras``
and ticket.json. int8_qat needs TF-MOT (tf_keras only). The shared half lives here as export imports
this module and a Keras 3 export must not load tf_keras; TensorFlow and Keras load inside functions.
"""
from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np

from tf_lth.errors import TfLthError
from tf_lth.io import staged_dir

INPUT = "image"  # the SavedModel signature's input; its output is output_name(net)
CHECK_EXAMPLES = 256  # the fixed batch Keras and TFLite outputs are compared on
KERAS_FILE, JOB = "ticket.keras", "job"  # JOB: the JAX route's hand-over files (job.json, .npz, .out.json)
QAT_REFUSED = ("int8_qat fine-tunes with TF-MOT's quantization-aware training, which takes tf_keras models only: "
               "export this Keras 3 ticket as int8_full instead (formats= / --formats)")


def export_keras3(model, path: Path, *, name, round, dataset, formats, benchmark, sample, quantization,
                  optimize_for, scale) -> dict:
    """Export the Keras 3 ticket ``model`` (masks installed, or a plain model) to ``path`` and return
    ticket.json; ``dataset``: a :class:`~tf_lth.data.Dataset` (int8_full needs one) or ``(x_test, y_test)``
    arrays (in the model's pixel range, ``scale``: an :class:`~tf_lth.input_scale.InputScale`)."""
    from tf_lth.keras3 import backend, keras
    if "int8_qat" in formats or isinstance(dataset, str):
        raise TfLthError(QAT_REFUSED if "int8_qat" in formats else f"dataset {dataset!r} is a name, and loading "
                         "one needs tf_keras: pass a loaded tf_lth Dataset or (x_test, y_test) for a Keras 3 ticket")
    data = dataset.with_input_scale(scale.scale) if hasattr(dataset, "arrays") else None
    test = data.arrays("test") if data is not None else None if dataset is None else tuple(dataset)
    job = {"formats": list(formats), "benchmark": benchmark, "quantization": {}, "calibration": None,
           "optimize_for": optimize_for}
    if "int8_full" in formats:  # quantize loads TensorFlow: only when asked for
        from tf_lth import quantize
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


def float32(config):
    """A model's or layer's config (either flavour, nested layers too) with every mixed-precision policy
    made float32: the exported ticket computes in float32 whatever precision it was trained in."""
    if isinstance(config, dict):
        name = str(config.get("config", {}).get("name", "")) if config.get("class_name") == "DTypePolicy" else ""
        if config.get("class_name") == "Policy" or name.startswith("mixed_"):
            return "float32"
        return {k: "float32" if k == "dtype" and str(v).startswith("mixed_") else float32(v) for k, v in config.items()}
    return [float32(v) for v in config] if isinstance(config, list) else config


def float32_file(path: Path) -> None:
    """Rewrite the ``.keras`` archive at ``path`` with a float32 config (the weights are float32 already)."""
    with zipfile.ZipFile(path) as archive:
        entries = {n: archive.read(n) for n in archive.namelist()}
    entries["config.json"] = json.dumps(float32(json.loads(entries["config.json"]))).encode()
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for n, content in entries.items():
            archive.writestr(n, content)


def check_batch(shape, test, sample, name: str, scale) -> tuple[np.ndarray, str]:
    """The fixed batch Keras and TFLite are compared on (float32, in the model's pixel range ``scale``),
    and where it came from: the test split's first :data:`CHECK_EXAMPLES`, ``sample``, or a seeded
    uniform draw over the pixel range."""
    if test is not None:
        return np.asarray(test[0][:CHECK_EXAMPLES], np.float32), f"{name} test[:{CHECK_EXAMPLES}]"
    if sample is not None:
        return np.asarray(sample, np.float32), "sample"
    low, high = scale.range
    draw = np.random.default_rng(0).random((CHECK_EXAMPLES, *shape)).astype(np.float32)
    return low + (high - low) * draw, f"uniform [{low:g}, {high:g}), seed 0"


def outputs_of(net, x, batch: int = 256) -> np.ndarray:
    """``net``'s inference outputs on ``x`` (logits or probabilities), float32 numpy (either flavour)."""
    return np.concatenate([np.asarray(net(x[i:i + batch], training=False), np.float32) for i in range(0, len(x), batch)])


def output_name(net) -> str:
    """What ``net`` outputs, as the SavedModel signature and ticket.json name it: ``"probabilities"`` when its
    last layer ends in a softmax or sigmoid, else ``"logits"`` (the networks here all end in logits)."""
    last = net.layers[-1] if getattr(net, "layers", None) else None
    activation = getattr(getattr(last, "activation", None), "__name__", "")
    kinds = {cls.__name__ for cls in type(last).__mro__} if last is not None else set()
    return "probabilities" if activation in ("softmax", "sigmoid") or "Softmax" in kinds else "logits"


def tensorflow_half(info: dict, tmp: Path, net, x, keras_outputs, test, *, formats, benchmark, quantization,
                    calibration, optimize_for) -> None:
    """The SavedModel and TFLite files of the plain Keras 3 model ``net`` (TensorFlow backend) in ``tmp``."""
    import tensorflow as tf
    from tf_lth.export_formats import write_formats
    from tf_lth.keras3 import keras
    from tf_lth.quantize import Options
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
    """:func:`tensorflow_half` in ``python -m tf_lth.export <tmp>`` (:func:`tf_lth.export.child_main`) on the
    TensorFlow backend, from ``ticket.keras`` and held to this process's outputs. The modules of the model's
    own classes are imported there first (this process's ``sys.path``), so they cannot be ``__main__``."""
    from importlib.util import find_spec
    from tf_lth.keras3 import environment_for_children
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
    done = subprocess.run([sys.executable, "-m", "tf_lth.export", str(tmp)], env=env, capture_output=True, text=True)
    if done.returncode or not (tmp / f"{JOB}.out.json").exists():
        lines = [line for line in done.stderr.splitlines() if line.strip()] or [f"exit status {done.returncode}"]
        raise TfLthError(f"the TensorFlow process exporting the JAX ticket failed: {lines[-1]}")
    out = json.loads((tmp / f"{JOB}.out.json").read_text())
    info["formats"].update(out.pop("formats"))
    info["check"].update(out.pop("check"))
    info.update(out)
    for suffix in (".npz", ".json", ".out.json"):
        (tmp / f"{JOB}{suffix}").unlink()


def weight_stats(model) -> dict:
    """Parameter counts (total, non-zero) and per-weight sparsity of a plain Keras model (either flavour)."""
    layers, total, nonzero = {}, 0, 0
    for layer in model.layers:
        for w in layer.weights:
            nz = int(np.count_nonzero(a := np.asarray(w.numpy())))
            layers[f"{layer.name}/{w.name.split('/')[-1].split(':')[0]}"] = {
                "shape": list(a.shape), "nonzero": nz, "sparsity": round(1 - nz / max(a.size, 1), 6)}
            total, nonzero = total + a.size, nonzero + nz
    return {"parameters": {"total": int(total), "nonzero": nonzero, "sparsity": round(1 - nonzero / max(total, 1), 6)},
            "layers": layers}


def accuracy(logits, y) -> float:
    return round(float(np.mean(np.argmax(logits, -1) == np.asarray(y))), 6)


def dir_bytes(folder: Path, files=None) -> dict:
    """Bytes and gzipped bytes of ``files`` (default: every file under ``folder``)."""
    files = [p for p in sorted(folder.rglob("*")) if p.is_file()] if files is None else files
    return {"bytes": sum(p.stat().st_size for p in files),
            "gzip_bytes": sum(len(gzip.compress(p.read_bytes(), mtime=0)) for p in files)}


__all__ = ["export_keras3", "weight_stats", "staged_dir", "check_batch", "outputs_of", "output_name", "accuracy",
           "dir_bytes", "float32", "float32_file", "INPUT", "CHECK_EXAMPLES", "KERAS_FILE"]
