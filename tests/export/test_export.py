"""Export of tickets to SavedModel and sparse TFLite: fidelity, sizes, sparse storage, CLI, atomicity.

Tolerances: fp32 TFLite must match Keras to 1e-5 in every logit. Dynamic-range int8 stores weights
in 8 bits and quantizes activations on the fly, so logits move by ~0.02 on this LeNet (logits of
magnitude ~10): it must stay within INT8_TOLERANCE and agree on the argmax for >= 99% of the test set.
The export itself enforces tflite.TOLERANCES; the tests below make it fail.
"""
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import tflite_logits

import tf_lth
from tf_lth import cli, export, keras
from tf_lth.export import tflite
from tf_lth.config.configs import EXPORT_FORMATS
from tf_lth.errors import TfLthError, TfLthWarning
from tf_lth.keras2 import export as keras2_export

ROOT = Path(__file__).resolve().parents[2]
INT8_TOLERANCE = 0.1
from tf_lth.keras2.training import LOSS
RATE_95 = 1 - 0.05 ** 0.5  # two rounds at this rate leave 5% of every layer


def lenet_ticket(rounds=1, **options):
    keras.utils.set_random_seed(0)
    ticket = tf_lth.LotteryTicket(tf_lth.networks.lenet_300_100(), **options)
    for _ in range(rounds):
        ticket.next_round()
    return ticket


def train(ticket, data, epochs=1):
    ticket.model.compile(optimizer=keras.optimizers.Adam(1.2e-3), loss=LOSS)
    ticket.model.fit(data.pipeline("train", 60, shuffle=True), epochs=epochs, callbacks=[ticket.callback()], verbose=0)


@pytest.fixture(scope="module")
def ticket90(mnist5k):
    """LeNet-300-100 pruned to 10% of every layer in one round, trained one epoch before and after."""
    ticket = lenet_ticket(0, rates={"dense": 0.9, "output": 0.9})
    train(ticket, mnist5k)
    ticket.next_round()
    train(ticket, mnist5k)
    return ticket


@pytest.fixture(scope="module")
def exported(ticket90, mnist5k, tmp_path_factory):
    path = tmp_path_factory.mktemp("export") / "lenet" / "round_1"
    info = export.export_ticket(ticket90.model, path, name="lenet", round=1, dataset=mnist5k, optimize_for="size")
    return path, info


def test_every_export_format_but_saved_model_and_shrunk_is_a_tflite_format():
    # shrunk is the smaller dense network's own folder of formats (tests/export/test_shrunk_export.py)
    assert set(EXPORT_FORMATS) - {"saved_model", "shrunk"} <= set(tflite.TFLITE)


def test_fp32_tflite_matches_keras(exported, ticket90, mnist5k):
    path, info = exported
    x, _ = mnist5k.arrays("test")
    diff = np.abs(tflite_logits(path, "tflite", info, x) - ticket90.model.predict(x, verbose=0))
    assert diff.max() <= 1e-5
    assert info["formats"]["tflite"]["max_abs_output_diff"] <= 1e-5
    assert info["check"] == {"source": "mnist5k test[:256]", "examples": 256}


def test_int8_tflite_within_tolerance_and_same_argmax(exported, ticket90, mnist5k):
    path, info = exported
    x, _ = mnist5k.arrays("test")
    keras_logits, int8 = ticket90.model.predict(x, verbose=0), tflite_logits(path, "int8", info, x)
    assert np.abs(int8 - keras_logits).max() <= INT8_TOLERANCE
    assert np.mean(int8.argmax(1) == keras_logits.argmax(1)) >= 0.99
    assert info["formats"]["int8"]["resolver"] == "BUILTIN_WITHOUT_DEFAULT_DELEGATES"  # XNNPACK refuses int8+sparse
    assert abs(info["formats"]["int8"]["test_accuracy"] - info["keras_test_accuracy"]) <= 0.01


def test_saved_model_reloads_in_a_fresh_process(exported, ticket90, mnist5k, tmp_path):
    path, _ = exported
    x = mnist5k.arrays("test")[0][:64]
    np.savez(tmp_path / "io.npz", x=x, logits=ticket90.model.predict(x, verbose=0))
    code = (
        "import sys, numpy as np, tensorflow as tf, tf_keras\n"
        "io = np.load(sys.argv[2])\n"
        "served = tf.saved_model.load(sys.argv[1]).signatures['serving_default'](image=tf.constant(io['x']))\n"
        "print(np.abs(served['logits'].numpy() - io['logits']).max())\n"
        "print(np.abs(tf_keras.models.load_model(sys.argv[1])(io['x']).numpy() - io['logits']).max())\n")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run([sys.executable, "-c", code, str(path / "saved_model"), str(tmp_path / "io.npz")],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    served, loaded = map(float, done.stdout.split()[-2:])
    assert served <= 1e-5 and loaded <= 1e-5


def test_exported_weights_have_exactly_the_tickets_zeros(exported, ticket90):
    path, info = exported
    loaded = keras.models.load_model(path / "saved_model", compile=False)
    for key, mask in ticket90.masks.items():
        kernel = loaded.get_layer(key.split("/")[0]).kernel.numpy()
        np.testing.assert_array_equal(kernel != 0, mask, err_msg=key)
        assert info["layers"][key]["sparsity"] == pytest.approx(1 - mask.mean(), abs=1e-6)
    assert info["parameters"]["total"] == 266_610


def test_sizes_at_90_percent_sparsity(exported):
    _, info = exported
    tflite, int8 = info["formats"]["tflite"], info["formats"]["int8"]
    assert tflite["bytes"] <= 0.16 * info["dense"]["bytes"]
    assert int8["bytes"] <= 0.09 * info["dense"]["bytes"]
    assert tflite["sparse"] and int8["sparse"] and not info["dense"]["sparse"]
    assert "DENSIFY" in tflite["ops"]  # unstructured sparsity: stored compressed, densified to compute
    for kind in ("tflite", "int8"):  # optimize_for="size": the smaller storage, both recorded
        choice = info["formats"][kind]["storage_choice"]
        assert info["formats"][kind]["storage"] == "sparse" and choice["rule"] == "size"
        assert choice["sparse"]["bytes"] == info["formats"][kind]["bytes"] < choice["dense"]["bytes"]
        assert choice["sparse"]["check"] == choice["dense"]["check"] == "passed"


def test_sparse_check_is_false_on_a_dense_file(exported, tmp_path):
    path, _ = exported
    dense = tflite.convert(path / "saved_model", "dense")
    (tmp_path / "dense.tflite").write_bytes(dense)
    assert not tflite.is_sparse_tflite(dense)
    assert not tflite.is_sparse_tflite(tmp_path / "dense.tflite")
    assert tflite.is_sparse_tflite(path / "ticket.tflite")


def test_ticket_json_records_resolvers_ops_and_latency(exported):
    path, info = exported
    assert json.loads((path / "ticket.json").read_text()) == info
    assert sorted(os.listdir(path)) == ["saved_model", "ticket.json", "ticket.tflite", "ticket_int8.tflite"]
    assert os.listdir(path.parent) == ["round_1"]  # no temp or moved-aside folder left
    assert info["formats"]["tflite"]["resolver"] == "AUTO"
    assert set(info["dense"]["latency_us"]) == {"AUTO", "BUILTIN_WITHOUT_DEFAULT_DELEGATES"}
    for kind in ("tflite", "int8"):
        report = info["formats"][kind]
        assert report["latency_us"]["batch1"] > 0 and report["latency_us"]["batch32"] > 0
        dense = info["dense"]["latency_us"][report["resolver"]]["batch1"]
        assert report["speedup_vs_dense"]["batch1"] == pytest.approx(dense / report["latency_us"]["batch1"], rel=1e-2)
    assert info["formats"]["tflite"]["test_accuracy"] == pytest.approx(info["keras_test_accuracy"], abs=0.002)
    assert "dense fp32   (reference)" in export.summary(info)
    tflite_limit, int8_limit = info["formats"]["tflite"]["tolerance"], info["formats"]["int8"]["tolerance"]
    assert (tflite_limit["relative"], tflite_limit["argmax_agreement"], tflite_limit["output_diff_checked"]) == (
        1e-5, 1.0, True)
    assert (int8_limit["relative"], int8_limit["argmax_agreement"], int8_limit["output_diff_checked"]) == (
        0.05, 0.99, False)
    assert info["output"]["name"] == "logits" and info["input"]["scale"] == "unit" and info["input"]["range"] == [0, 1]
    assert tflite_limit["max_abs_output_diff"] > 1e-5  # relative to this trained net's logits, larger than 1


def test_block_1x4_ticket_is_read_sparse_without_densify(tmp_path):
    ticket = lenet_ticket(2, block_size=(4, 1), rates={"dense": RATE_95, "output": RATE_95})
    info = export.export_ticket(ticket.model, tmp_path / "blocks", formats=("tflite", "int8"), benchmark=False)
    assert info["parameters"]["sparsity"] == pytest.approx(0.95, abs=0.002)
    assert sorted(os.listdir(tmp_path / "blocks")) == ["ticket.json", "ticket.tflite", "ticket_int8.tflite"]
    fp32, int8 = info["formats"]["tflite"], info["formats"]["int8"]
    assert fp32["sparse"] and "FULLY_CONNECTED" in fp32["ops"] and "DENSIFY" not in fp32["ops"], fp32["ops"]
    assert fp32["max_abs_output_diff"] <= 1e-5
    # int8 in 1x16 blocks: XNNPACK (an app's default) reads them as dense weights, so it is never shipped sparse
    assert int8["storage"] == "dense" and not int8["sparse"] and int8["max_abs_output_diff"] <= INT8_TOLERANCE
    assert "XNNPACK (LiteRT's default) reads fc1/kernel's int8 1x16-block weights" in int8["storage_choice"]["sparse"]["check"]
    # untrained: its logits (max 0.07) are near-ties that int8 swaps on ~2% of the uniform batch
    assert int8["argmax_agreement_beyond_ties"] == 1.0


def test_fp16_in_1x4_blocks_is_stored_dense(tmp_path):
    # TFLite computes NaN from fp16 weights stored in 1x4 blocks under every resolver: that storage is never
    # shipped; stored dense the file is right, so that is what is written, and ticket.json says why
    ticket = lenet_ticket(2, block_size=(4, 1), rates={"dense": RATE_95, "output": RATE_95})
    info = export.export_ticket(ticket.model, tmp_path / "fp16", formats=(), fp16=True, benchmark=False)
    fp16 = info["formats"]["fp16"]
    assert fp16["storage"] == "dense" and not fp16["sparse"] and "failed" not in info
    problem = fp16["storage_choice"]["sparse"]["check"]  # known before conversion (tf_lth.export.sparse_storage)
    assert problem == "not made: LiteRT computes it wrongly: float16 weights in 1x4 blocks (fc1/kernel) give NaN under every LiteRT resolver"
    assert fp16["storage_choice"]["dense"]["check"] == "passed"
    assert sorted(os.listdir(tmp_path / "fp16")) == ["ticket.json", "ticket_fp16.tflite"]


def test_fp16_of_an_unstructured_ticket_is_exported(ticket90, mnist5k, tmp_path):
    info = export.export_ticket(ticket90.model, tmp_path / "fp16", formats=("fp16",), dataset=mnist5k, benchmark=False)
    assert sorted(os.listdir(tmp_path / "fp16")) == ["ticket.json", "ticket_fp16.tflite"]
    fp16 = info["formats"]["fp16"]
    assert fp16["sparse"] and fp16["bytes"] <= 0.12 * info["dense"]["bytes"]  # 10% of the weights, stored sparse
    x, _ = mnist5k.arrays("test")
    logits = tflite_logits(tmp_path / "fp16", "fp16", info, x)
    assert np.abs(logits - ticket90.model.predict(x, verbose=0)).max() <= 1e-2
    assert fp16["argmax_agreement"] >= 0.99 and fp16["tolerance"]["argmax_agreement"] == 0.99
    assert abs(fp16["test_accuracy"] - info["keras_test_accuracy"]) <= 0.002


# --- verification: an export whose files do not compute what Keras computes fails ------------------


def made_up_logits(rows=256):
    """Keras-like logits: class 0 on top at 10 (so the limits are 10x the relative tolerances)."""
    logits = np.random.default_rng(0).uniform(-3, 3, (rows, 10))
    logits[:, 0] = 10.0
    return logits


def flip(keras_logits, tflite_logits, rows, margin, shift):
    """Keras scores class 1 ``margin`` under class 0 in ``rows``; TFLite moves both by ``shift`` towards each other."""
    keras_logits[rows, 1] = 10.0 - margin
    tflite_logits[rows, 0], tflite_logits[rows, 1] = 10.0 - shift, 10.0 - margin + shift


def test_verify_fails_past_each_tolerance():
    keras_logits = made_up_logits()
    tflite.verify("tflite", tflite.compare_outputs("tflite", keras_logits + 0.9e-5 * 10, keras_logits))
    report = tflite.compare_outputs("tflite", keras_logits + 1.1e-5 * 10, keras_logits)
    with pytest.raises(TfLthError, match=r"the tflite TFLite file differs from Keras by .* over its tolerance"):
        tflite.verify("tflite", report)
    for kind in ("fp16", "int8"):  # quantized files are judged by their argmax: a uniform shift keeps it
        tflite.verify(kind, tflite.compare_outputs(kind, keras_logits + 1.0, keras_logits))
    # int8 (limit 0.5 here): argmaxes flipped where Keras' margin (0.75) exceeds the limit: 2 of 256 pass, 3 fail
    keras_logits, int8 = made_up_logits(), made_up_logits()
    flip(keras_logits, int8, [0, 1], margin=0.75, shift=0.4)
    flip(keras_logits, int8, list(range(10, 30)), margin=0.25, shift=0.2)  # near-ties: never counted
    report = tflite.compare_outputs("int8", int8, keras_logits)
    assert (report["argmax_agreement"], report["argmax_ties"], report["argmax_agreement_beyond_ties"]) == (
        round(234 / 256, 6), 20, round(254 / 256, 6))
    tflite.verify("int8", report)  # 99.2% >= 99%
    flip(keras_logits, int8, [2], margin=0.75, shift=0.4)
    with pytest.raises(TfLthError) as failed:
        tflite.verify("int8", tflite.compare_outputs("int8", int8, keras_logits), "mnist5k test[:256]")
    assert str(failed.value).startswith("the int8 TFLite file agrees with Keras' argmax on 98.83% of mnist5k "
                                        "test[:256] (near-ties excluded), under its tolerance 99%: int8 "
                                        "quantization changes this model too much")
    # fp32 tolerates no flip beyond a tie: one (margin 1.5e-4, logits moved 0.8e-4) fails
    keras_logits, fp32 = made_up_logits(), made_up_logits()
    flip(keras_logits, fp32, [5], margin=1.5e-4, shift=0.8e-4)
    with pytest.raises(TfLthError, match=r"tflite TFLite file agrees with Keras' argmax on 99.61% .* 100%"):
        tflite.verify("tflite", tflite.compare_outputs("tflite", fp32, keras_logits))
    nan = tflite.compare_outputs("tflite", np.full_like(keras_logits, np.nan), keras_logits)
    with pytest.raises(TfLthError, match="differs from Keras by nan"):
        tflite.verify("tflite", nan)


def test_m_by_n_ticket_keeps_at_most_2_of_4_inputs(tmp_path):
    ticket = lenet_ticket(1, m_by_n=(2, 4))
    export.export_ticket(ticket.model, tmp_path / "nm", formats=("saved_model",), benchmark=False)
    loaded = keras.models.load_model(tmp_path / "nm" / "saved_model", compile=False)
    for key in ticket.masks:
        kernel = loaded.get_layer(key.split("/")[0]).kernel.numpy()
        per_group = np.count_nonzero(kernel.reshape(kernel.shape[0] // 4, 4, -1), axis=1)
        assert per_group.max() <= 2 and (per_group == 2).any(), key


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A run folder with rounds 0 and 1 saved by tf_lth.store.save (untrained, 50% pruned)."""
    path = tmp_path_factory.mktemp("runs") / "lenet_run"
    ticket = lenet_ticket(0, rates={"dense": 0.5, "output": 0.5})
    tf_lth.store.save(ticket, path)
    ticket.next_round()
    tf_lth.store.save(ticket, path)
    return path


def test_cli_exports_the_last_or_a_chosen_round(run_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    kernel = json.loads((run_dir / "ticket.json").read_text())["kernels"][0]
    assert cli.main(["export", str(run_dir), "--formats", "saved_model", "--no-benchmark"]) == 0
    last = json.loads((tmp_path / "saved_models" / "lenet_run" / "round_1" / "ticket.json").read_text())
    assert last["round"] == 1 and last["layers"][kernel]["sparsity"] == pytest.approx(0.5, abs=1e-3)
    assert cli.main(["export", str(run_dir), "--round", "0", "--out", "r0", "--formats", "saved_model", "--no-benchmark"]) == 0
    first = json.loads((tmp_path / "r0" / "ticket.json").read_text())
    assert first["round"] == 0 and first["layers"][kernel]["sparsity"] == 0
    assert "exported to r0" in capsys.readouterr().out


def no_masks(run_dir, tmp_path):
    copy = shutil.copytree(run_dir, tmp_path / "no_masks")
    for masks in copy.glob("rounds/*/masks.npz"):
        masks.unlink()
    return [str(copy)]


def file_as_parent(run_dir, tmp_path):
    (tmp_path / "a_file").write_text("")
    return [str(run_dir), "--out", str(tmp_path / "a_file" / "export")]


@pytest.mark.parametrize("args, message", [
    (lambda run, tmp: [str(run), "--round", "7"], "has no round 7 (rounds saved: 0, 1)"),
    (no_masks, "masks.npz is missing"),
    (lambda run, tmp: [str(tmp)], "is not a tf-lth run folder"),
    (file_as_parent, "cannot write the export to"),
], ids=["missing_round", "no_masks", "not_a_run", "unwritable_out"])
def test_cli_bad_input_is_one_line_exit_2_and_writes_nothing(run_dir, tmp_path, monkeypatch, capsys, args, message):
    monkeypatch.chdir(tmp_path)
    argv = args(run_dir, tmp_path)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    assert cli.main(["export", *argv, "--formats", "saved_model", "--no-benchmark"]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if not line.startswith("tf-lth: warning: ")]
    assert len(err) == 1 and err[0].startswith("tf-lth: error: ") and message in err[0], err  # (the run is untrained:
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before  # a warning line may come first)


def test_script_reports_bad_round_on_stderr_with_exit_2(run_dir):
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "export_ticket.py"), str(run_dir), "--round", "9"],
                          capture_output=True, text=True, timeout=120, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert done.returncode == 2
    lines = done.stderr.splitlines()  # TensorFlow's own start-up log lines may come first
    expected = f"tf-lth: error: {run_dir} has no round 9 (rounds saved: 0, 1)"
    assert lines[-1] == expected and [line for line in lines if line.startswith("tf-lth")] == [expected], done.stderr


def folder_bytes(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def wrong_model(ticket, tmp_path, by=1e-3):
    """A SavedModel of the ticket with one weight moved: one output bias + ``by``."""
    wrong = keras2_export.stripped(ticket.model)
    bias = wrong.get_layer("output").bias
    bias.assign(bias.numpy() + np.eye(bias.shape[0], dtype=np.float32)[3] * by)
    wrong.save(str(tmp_path / "wrong"), save_format="tf")
    return tmp_path / "wrong"


def test_a_sparse_file_that_differs_is_not_shipped(run_dir, tmp_path, monkeypatch):
    ticket = tf_lth.store.load(run_dir)
    wrong, real_convert = wrong_model(ticket, tmp_path), tflite.convert
    monkeypatch.setattr(tflite, "convert", lambda saved, kind, *args, sparse=True, **kw: real_convert(
        wrong if kind == "tflite" and sparse else saved, kind, *args, sparse=sparse, **kw))
    info = export.export_ticket(ticket.model, tmp_path / "out", formats=("tflite",), benchmark=False, optimize_for="size")
    fp32 = info["formats"]["tflite"]
    assert fp32["storage"] == "dense" and not fp32["sparse"] and fp32["max_abs_output_diff"] <= 1e-5 and "failed" not in info
    problem = fp32["storage_choice"]["sparse"]["check"]
    assert "\n" not in problem and re.fullmatch(
        r"the tflite TFLite file differs from Keras by 0\.001 in an output on uniform \[0, 1\), seed 0, over its "
        r"tolerance 1(\.\d+)?e-05 \(1e-05 x max\(1, max \|output\|\)\): TFLite computes .*", problem), problem
    assert "sparse storage failed its check" in fp32["storage_choice"]["why"]
    assert "ticket.tflite is stored dense" in export.summary(info)


def test_a_format_whose_every_storage_fails_is_left_out_and_the_rest_written(run_dir, tmp_path, monkeypatch):
    ticket = tf_lth.store.load(run_dir)
    wrong, real_convert = wrong_model(ticket, tmp_path, by=100.0), tflite.convert  # class 3 everywhere
    monkeypatch.setattr(tflite, "convert", lambda saved, kind, *args, **kw: real_convert(
        wrong if kind == "int8" else saved, kind, *args, **kw))
    with pytest.warns(TfLthWarning, match="int8 left out of the export: stored sparse: the int8 TFLite file"):
        info = export.export_ticket(ticket.model, tmp_path / "default", benchmark=False)  # the default formats: a warning
    assert set(info["formats"]) == {"saved_model", "tflite"} and set(info["failed"]) == {"int8"}
    assert "stored dense: the int8 TFLite file" in info["failed"]["int8"]
    assert sorted(os.listdir(tmp_path / "default")) == ["saved_model", "ticket.json", "ticket.tflite"]
    assert json.loads((tmp_path / "default" / "ticket.json").read_text())["failed"] == info["failed"]
    with pytest.raises(TfLthError, match="written without int8, which failed: stored sparse"):  # named: an error
        export.export_ticket(ticket.model, tmp_path / "named", formats=("tflite", "int8"), benchmark=False)
    assert sorted(os.listdir(tmp_path / "named")) == ["ticket.json", "ticket.tflite"]  # the rest is written
    monkeypatch.setattr(tflite, "convert", lambda *args, **kw: (_ for _ in ()).throw(RuntimeError("converter crashed")))
    with pytest.warns(TfLthWarning):
        crashed = export.export_ticket(ticket.model, tmp_path / "crashed", benchmark=False)
    assert set(crashed["formats"]) == {"saved_model"} and "RuntimeError: converter crashed" in crashed["failed"]["int8"]


def test_failed_export_leaves_the_previous_one_intact(run_dir, tmp_path, monkeypatch):
    ticket = tf_lth.store.load(run_dir)
    out = tmp_path / "exports" / "round_1"
    export.export_ticket(ticket.model, out, round=1, formats=("saved_model",), benchmark=False)
    before = (out / "ticket.json").read_text()

    def broken(*args, **kwargs):
        raise RuntimeError("SavedModel writer crashed")

    monkeypatch.setattr(keras2_export, "write_saved_model", broken)  # what every format is made from: nothing can be exported
    with pytest.raises(RuntimeError, match="SavedModel writer crashed"):
        export.export_ticket(ticket.model, out, round=2, formats=("saved_model", "tflite"), benchmark=False)
    assert (out / "ticket.json").read_text() == before and (out / "saved_model" / "saved_model.pb").exists()
    assert os.listdir(out.parent) == ["round_1"]
    monkeypatch.undo()
    export.export_ticket(ticket.model, out, round=3, formats=("saved_model",), benchmark=False)
    assert json.loads((out / "ticket.json").read_text())["round"] == 3
    assert os.listdir(out.parent) == ["round_1"]
