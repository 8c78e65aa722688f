"""The export format ``shrunk``: the structured ticket as a smaller dense network, checked, beside the other files."""
import json

import numpy as np
import pytest

import tf_lth
from tf_lth import keras
from tf_lth.keras2.training import LOSS
from helpers import tflite_logits


def trained_ticket(mnist5k, granularity):
    x, y = mnist5k.arrays("train")
    keras.utils.set_random_seed(0)
    inputs = keras.Input((28, 28, 1))
    h = keras.layers.Flatten()(inputs)
    h = keras.layers.Dense(64, activation="relu", name="fc1")(h)
    h = keras.layers.Dense(32, activation="relu", name="fc2")(h)
    ticket = tf_lth.LotteryTicket(keras.Model(inputs, keras.layers.Dense(10, name="output")(h)),
                                  granularity=granularity, rate=0.5)
    ticket.model.compile(keras.optimizers.Adam(2e-3), LOSS, jit_compile=False)
    for r in range(2):
        ticket.model.fit(x[:2000], y[:2000], batch_size=100, epochs=1, verbose=0, callbacks=[ticket.callback()])
        ticket.next_round()  # the export takes the last trained round (round 1), not these rewound weights
    return ticket


def test_a_unit_ticket_exports_its_shrunk_network_with_the_same_outputs(tmp_path, mnist5k):
    ticket = trained_ticket(mnist5k, "unit")
    info = tf_lth.export_ticket(ticket, tmp_path / "out", dataset=mnist5k, benchmark=False, verbose=0,
                                formats=["saved_model", "tflite", "shrunk"])
    on_disk = json.loads((tmp_path / "out" / "ticket.json").read_text())
    assert on_disk["shrunk"] == info["shrunk"]
    s = info["shrunk"]
    assert s["units"] == {"fc1": [32, 64], "fc2": [16, 32], "output": [10, 10]}  # round 1: half of each
    assert s["check"]["passed"] and s["check"]["argmax_agreement"] == 1.0
    assert s["macs_total"] == [784 * 32 + 32 * 16 + 16 * 10, 784 * 64 + 64 * 32 + 32 * 10]
    assert s["params"][0] == (784 + 1) * 32 + (32 + 1) * 16 + (16 + 1) * 10
    assert set(s["formats"]) == {"saved_model", "tflite"} and s["formats"]["tflite"]["path"] == "shrunk/ticket.tflite"
    # the shrunk TFLite file computes the ticket's outputs
    x = mnist5k.arrays("test")[0][:64]
    small = tflite_logits(tmp_path / "out" / "shrunk", "tflite", {"formats": {"tflite": {
        **s["formats"]["tflite"], "path": "ticket.tflite"}}}, x)
    full = tflite_logits(tmp_path / "out", "tflite", info, x)
    np.testing.assert_allclose(small, full, atol=1e-4 * np.abs(full).max())
    rows = {row["file"]: row for row in info["compute"]}
    assert rows["shrunk/ticket.tflite"]["vs_dense"]["macs"] == pytest.approx(s["macs_total"][0] / s["macs_total"][1],
                                                                             abs=1e-4)
    assert rows["ticket.tflite"]["vs_dense"]["macs"] == 1.0  # a sparse file computes the dense MACs
    assert "shrunk:" in tf_lth.export.summary(info)


def test_a_weight_ticket_shrinks_only_units_nobody_reads_and_says_so(tmp_path, mnist5k):
    ticket = trained_ticket(mnist5k, "weight")
    small = tf_lth.shrink(ticket)
    assert [layer.units for layer in small.layers if hasattr(layer, "units")] == [64, 32, 10]  # 50%: all still read
    info = tf_lth.export_ticket(ticket, tmp_path / "w", benchmark=False, verbose=0, formats=["tflite", "shrunk"])
    assert "only units whose every outgoing weight was pruned" in info["shrunk"]["note"]
    assert info["shrunk"]["macs_remaining"] == 1.0


def test_strict_covers_only_the_formats_named(tmp_path, mnist5k, monkeypatch):
    """A structured run adds shrunk to the formats the user named: its failure is then a warning, not exit 2."""
    from tf_lth.errors import TfLthError
    from tf_lth.export import shrink

    def broken(model, masks):
        raise TfLthError("cannot shrink this one")

    monkeypatch.setattr(shrink, "shrink_model", broken)
    ticket = trained_ticket(mnist5k, "unit")
    info = tf_lth.export_ticket(ticket, tmp_path / "a", benchmark=False, verbose=0, formats=["tflite", "shrunk"],
                                strict=["tflite"])
    assert info["failed"] == {"shrunk": "cannot shrink this one"} and (tmp_path / "a" / "ticket.tflite").exists()
    with pytest.raises(TfLthError, match="without shrunk"):
        tf_lth.export_ticket(ticket, tmp_path / "b", benchmark=False, verbose=0, formats=["tflite", "shrunk"])
