"""Export of Keras 3 tickets: ``ticket.keras`` (plain, loads without tf-lth), SavedModel, sparse TFLite.

Two tickets trained on sklearn's real 8x8 digits and pruned twice (functional CNN with
BatchNormalization; subclassed model) are exported on the TensorFlow backend, and a functional one on
JAX in a subprocess (its SavedModel and TFLite come from a TensorFlow child process). The fresh
processes that load the files hold no TF_USE_LEGACY_KERAS (the suite's conftest loads tf_keras, which
sets it). This module imports tf-lth only inside functions: the fresh processes import it for the
model classes and must not load tf-lth. fp32 TFLite must match Keras to 1e-5 x max(1, max |logit|).
"""
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import keras

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
# the fields of a tf_keras export's ticket.json (tf_lth/export.py), and of each TFLite format's entry
TICKET_FIELDS = {"name", "round", "input", "output", "parameters", "layers", "check", "keras_test_accuracy",
                 "formats", "dense", "benchmark"}
TFLITE_FIELDS = {"path", "storage", "storage_choice", "bytes", "gzip_bytes", "bytes_vs_dense", "gzip_vs_dense", "sparse", "ops", "resolver",
                 "resolver_problems", "max_abs_output_diff", "argmax_agreement", "argmax_ties",
                 "argmax_agreement_beyond_ties", "tolerance", "test_accuracy", "latency_us", "speedup_vs_dense"}


def digits():
    from sklearn.datasets import load_digits
    d = load_digits()
    x = (d.data / 16.0).astype("float32").reshape(-1, 8, 8, 1)
    return x[:1400], d.target[:1400].astype("int32"), x[1400:], d.target[1400:].astype("int32")


def functional_cnn():
    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 1))
    h = keras.layers.Conv2D(8, 3, padding="same", name="conv1")(inp)
    h = keras.layers.BatchNormalization(name="bn")(h)
    h = keras.layers.Activation("relu")(h)
    h = keras.layers.Flatten()(h)
    h = keras.layers.Dense(32, activation="relu", name="fc1")(h)
    return keras.Model(inp, keras.layers.Dense(10, name="output")(h), name="func")


@keras.saving.register_keras_serializable("tf_lth_export_tests")
class Small(keras.Model):
    """A subclassed CNN (loading it needs this module: a fresh process imports it)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.conv = keras.layers.Conv2D(6, 3, name="sconv")
        self.flat = keras.layers.Flatten()
        self.hidden = keras.layers.Dense(32, activation="relu", name="sfc")
        self.out = keras.layers.Dense(10, name="sout")

    def call(self, x, training=False):
        return self.out(self.hidden(self.flat(self.conv(x))))


def pruned_ticket(model, rounds=2, epochs=3):
    """A ticket of ``model`` trained ``epochs`` on the digits before each of ``rounds`` prunings and after."""
    from tf_lth import LotteryTicket
    x, y, _, _ = digits()
    ticket = LotteryTicket(model, rate=0.5)
    for _ in range(rounds + 1):
        ticket.model.compile(keras.optimizers.Adam(5e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        ticket.model.fit(x, y, batch_size=64, epochs=epochs, verbose=0, callbacks=[ticket.callback()])
        if len(ticket.history) <= rounds:
            ticket.next_round()
    return ticket


def child_env(**extra):
    from tf_lth.keras3 import environment_for_children
    return environment_for_children({**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), str(ROOT)]), **extra})


LOAD = """
import json, sys, numpy as np, keras
import test_keras3_export  # the subclassed model's class (this module does not import tf_lth)
x, out = np.load(sys.argv[1]), {}
for path in sys.argv[2:]:
    net = keras.saving.load_model(path, compile=False)
    out[path] = {"logits": np.asarray(net(x, training=False)).tolist(), "kernels": {
        f"{l.name}/{w.name}": np.asarray(w.numpy()).tolist() for l in net.layers for w in l.weights if w.name == "kernel"}}
out["modules"] = sorted({m.split(".")[0] for m in sys.modules})
print(json.dumps(out))
"""
NAMES = ("functional", "subclassed")


def fresh_backend() -> str:
    """JAX where installed (a fresh process loads it in seconds, and the file crosses backends), else TensorFlow."""
    return "jax" if importlib.util.find_spec("jax") else "tensorflow"


@pytest.fixture(scope="module")
def jax_run(tmp_path_factory):
    """The JAX export script (:data:`JAX_EXPORT`), started first so that it runs beside the TensorFlow
    exports (two cores); None without JAX."""
    if importlib.util.find_spec("jax") is None:
        yield None
        return
    out = tmp_path_factory.mktemp("jax") / "jax"
    with open(out.parent / "stdout", "w") as stdout, open(out.parent / "stderr", "w") as stderr:  # files: no pipe to fill
        proc = subprocess.Popen([sys.executable, "-c", JAX_EXPORT, str(out)], stdout=stdout, stderr=stderr,
                                env=child_env(KERAS_BACKEND="jax"))
    yield proc, out
    if proc.poll() is None:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def exported(jax_run, tmp_path_factory):
    """name -> (ticket, export folder, ticket.json) of both models, exported on the TensorFlow backend
    (latency measured on the functional one, briefly)."""
    from tf_lth.export import tflite
    _, _, xt, yt = digits()
    found, root = {}, tmp_path_factory.mktemp("k3")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tflite, "BENCH_SECONDS", 0.2)
        for name in NAMES:
            found[name] = export_one(name, root / name, xt, yt)
    return found


def export_one(name, path, xt, yt):
    from tf_lth import export
    model = functional_cnn() if name == "functional" else Small()
    if name == "subclassed":
        model(xt[:1])
    ticket = pruned_ticket(model)
    info = export.export_ticket(ticket.model, path, name=name, round=2, dataset=(xt, yt), benchmark=name == "functional",
                                optimize_for="size")
    return ticket, path, info


@pytest.fixture(scope="module")
def loaded_fresh(exported, tmp_path_factory):
    """Both ticket.keras files loaded by plain Keras 3 in a fresh process: its logits on 64 test digits,
    its kernels, the top-level modules it imported."""
    _, _, xt, _ = digits()
    x = tmp_path_factory.mktemp("x") / "x.npy"
    np.save(x, xt[:64])
    files = [str(exported[name][1] / "ticket.keras") for name in NAMES]
    done = subprocess.run([sys.executable, "-c", LOAD, str(x), *files],
                          capture_output=True, text=True, env=child_env(KERAS_BACKEND=fresh_backend()), timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout.splitlines()[-1])
    return {name: out[f] for name, f in zip(NAMES, files)}, out["modules"]


@pytest.mark.parametrize("name", NAMES)
def test_keras_file_loads_plain_with_the_ticket_zeros_and_logits(name, exported, loaded_fresh):
    ticket, _, info = exported[name]
    loaded, modules = loaded_fresh[0][name], loaded_fresh[1]
    assert "tf_lth" not in modules and "tf_keras" not in modules
    _, _, xt, _ = digits()
    kernels = {k: np.array(v) for k, v in loaded["kernels"].items()}
    assert set(kernels) == set(ticket.masks) and len(kernels) >= 3
    for key, mask in ticket.masks.items():
        assert np.array_equal(kernels[key] != 0, mask), key  # zeros exactly where pruned
        assert 0.1 < mask.mean() < 0.6, key  # two rounds at rate 0.5 (the output layer at half the rate)
    want = np.asarray(ticket.model(xt[:64], training=False))
    assert np.abs(np.array(loaded["logits"]) - want).max() <= 1e-5 * max(1.0, np.abs(want).max())
    assert info["check"]["keras_file_max_abs_output_diff"] <= 1e-5


@pytest.mark.parametrize("name", NAMES)
def test_fp32_tflite_matches_keras_and_is_sparse(name, exported):
    from tf_lth.export import tflite
    ticket, path, info = exported[name]
    _, _, xt, yt = digits()
    interpreter, _ = tflite.open_tflite(path / "ticket.tflite", info["formats"]["tflite"]["resolver"])
    got, want = tflite.run_tflite(interpreter, xt), np.asarray(ticket.model(xt, training=False))
    assert np.abs(got - want).max() <= 1e-5 * max(1.0, np.abs(want).max())
    assert info["formats"]["tflite"]["sparse"] and "DENSIFY" in info["formats"]["tflite"]["ops"]
    assert info["formats"]["tflite"]["bytes"] < info["dense"]["bytes"]
    assert info["keras_test_accuracy"] > 0.8  # it learned the digits
    assert info["formats"]["int8"]["argmax_agreement_beyond_ties"] >= 0.99
    saved = path / "saved_model"
    assert (saved / "saved_model.pb").exists()


@pytest.mark.parametrize("name", NAMES)
def test_ticket_json_has_the_tf_keras_fields(name, exported):
    _, path, info = exported[name]
    on_disk = json.loads((path / "ticket.json").read_text())
    assert on_disk == json.loads(json.dumps(info))
    benchmarked = "benchmark" in info
    assert set(info) == TICKET_FIELDS - (set() if benchmarked else {"benchmark"})
    assert set(info["formats"]) == {"keras", "saved_model", "tflite", "int8"}
    for kind in ("tflite", "int8"):
        assert set(info["formats"][kind]) == TFLITE_FIELDS - (set() if benchmarked else {"latency_us", "speedup_vs_dense"})
    assert {k: info["input"][k] for k in ("name", "shape", "dtype", "scale", "range")} == {
        "name": "image", "shape": [None, 8, 8, 1], "dtype": "float32", "scale": "unit", "range": [0, 1]}
    assert info["output"] == {"name": "logits", "shape": [None, 10]}
    assert info["parameters"]["sparsity"] > 0.5
    assert sorted(p.name for p in path.iterdir()) == ["saved_model", "ticket.json", "ticket.keras", "ticket.tflite",
                                                       "ticket_int8.tflite"]


def test_int8_qat_is_refused_in_one_line(tmp_path):
    from tf_lth import export
    from tf_lth.errors import TfLthError
    with pytest.raises(TfLthError, match=r"^int8_qat .* tf_keras models only: .*int8_full") as e:
        export.export_ticket(functional_cnn(), tmp_path / "x", formats=("tflite", "int8_qat"))
    assert "\n" not in str(e.value) and not (tmp_path / "x").exists()


JAX_EXPORT = """
import json, sys
import numpy as np, keras
sys.modules["tensorflow"] = None  # not importable (Keras' set_random_seed loads it when found): JAX trains without it
import test_keras3_export as t
from tf_lth import export
assert keras.backend.backend() == "jax"
ticket = t.pruned_ticket(t.functional_cnn(), rounds=1, epochs=1)
_, _, xt, yt = t.digits()
bare = export.export_ticket(ticket.model, sys.argv[1] + "_bare", name="jax", round=1, dataset=(xt, yt), benchmark=False)
del sys.modules["tensorflow"]  # importable again: the export runs it in a child process
info = export.export_ticket(ticket.model, sys.argv[1], name="jax", round=1, dataset=(xt, yt), benchmark=False)
print(json.dumps({"info": info, "bare": bare, "masks": {k: v.tolist() for k, v in ticket.masks.items()},
                  "logits": np.asarray(ticket.model(xt, training=False)).tolist(),
                  "modules": sorted(m for m in sys.modules if m in ("tensorflow", "tf_keras", "tf_lth.keras2"))}))
"""


def test_jax_ticket_exports_through_a_tensorflow_child(jax_run, exported):
    if jax_run is None:
        pytest.skip("jax is not installed")
    from tf_lth.export import tflite
    info = exported["functional"][2]
    proc, tmp_path = jax_run[0], jax_run[1].parent
    proc.wait(timeout=240)
    assert proc.returncode == 0, (tmp_path / "stderr").read_text()[-3000:]
    out = json.loads((tmp_path / "stdout").read_text().splitlines()[-1])
    assert out["modules"] == []  # the JAX process never loaded TensorFlow, tf_keras or tf-lth's tf_keras module
    bare = out["bare"]  # without TensorFlow: ticket.keras and ticket.json, and why no more
    assert sorted(p.name for p in (tmp_path / "jax_bare").iterdir()) == ["ticket.json", "ticket.keras"]
    assert set(bare["formats"]) == {"keras"} and "\n" not in bare["tensorflow"] and "TensorFlow" in bare["tensorflow"]
    assert set(bare) == TICKET_FIELDS - {"dense", "benchmark"} | {"tensorflow"}
    jax_info, jax_logits = out["info"], np.array(out["logits"])
    assert jax_info["check"]["tensorflow_backend_max_abs_output_diff"] <= 1e-5
    _, _, xt, _ = digits()
    interpreter, _ = tflite.open_tflite(tmp_path / "jax" / "ticket.tflite", jax_info["formats"]["tflite"]["resolver"])
    scale = max(1.0, np.abs(jax_logits).max())
    assert np.abs(tflite.run_tflite(interpreter, xt) - jax_logits).max() <= 1e-5 * scale
    # the TensorFlow graph a TF-backend ticket gets, not jax2tf's (resource variables, unfolded BatchNorm)
    assert jax_info["formats"]["tflite"]["ops"] == info["formats"]["tflite"]["ops"]
    # the same graph and weights; the files' metadata strings may differ by a few bytes (seen: 12-20)
    assert jax_info["formats"]["tflite"]["sparse"]
    assert abs(jax_info["dense"]["bytes"] - info["dense"]["bytes"]) <= 0.001 * info["dense"]["bytes"]
    net = keras.saving.load_model(tmp_path / "jax" / "ticket.keras", compile=False)  # here: TensorFlow backend
    for layer in (layer for layer in net.layers if f"{layer.name}/kernel" in out["masks"]):
        assert np.array_equal(np.asarray(layer.kernel.numpy()) != 0, np.array(out["masks"][f"{layer.name}/kernel"]))
    assert np.abs(np.asarray(net(xt, training=False)) - jax_logits).max() <= 1e-5 * scale


def test_a_mixed_float16_ticket_exports_a_float32_model(tmp_path):
    from tf_lth import export_ticket
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        ticket = pruned_ticket(functional_cnn(), rounds=1, epochs=1)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert ticket.model.get_layer("fc1").compute_dtype == "float16"
    _, _, xt, yt = digits()
    info = export_ticket(ticket.model, tmp_path / "mp", dataset=(xt, yt), formats=("tflite",), benchmark=False)
    net = keras.saving.load_model(tmp_path / "mp" / "ticket.keras")
    assert {layer.dtype_policy.name for layer in net.layers} == {"float32"}  # as tf_keras exports are
    kernel = np.asarray(net.get_layer("fc1").kernel.numpy())
    assert np.array_equal(kernel == 0, ~ticket.masks["fc1/kernel"])
    ticket_logits = np.asarray(ticket.model(xt, training=False), np.float32)
    assert 0 < info["check"]["keras_file_max_abs_output_diff"] <= 2e-2 * np.abs(ticket_logits).max()  # float16 vs 32
    assert info["formats"]["tflite"]["max_abs_output_diff"] <= 1e-5 * max(1.0, np.abs(ticket_logits).max())
