"""Mixed precision (``--mixed-precision``): a bfloat16 round on CPU keeps every pruned weight exactly
zero after every step and ends within 1 pp of the float32 round on mnist5k; the export stays float32
(and int8 made from float32); float16 gets loss scaling, whose state the epoch checkpoint keeps; a
mixed-precision run killed mid-round resumes to the same results."""
import json

import numpy as np
import pytest

from tf_lth.keras2 import distribute
from tf_lth.training import fit_round
from tf_lth.config.configs import ExperimentConfig
from tf_lth.runner.experiment import Experiment
from tf_lth.keras2 import keras, tf
from tf_lth.ticket.ticket import LotteryTicket
from tf_lth.keras2.training import EpochCheckpoint, compile_round, restore, steps_per_epoch, train_round

EPOCHS = 3


class PrunedStayZero(keras.callbacks.Callback):
    """After every step: the variables of the pruned weights hold exactly zero."""

    def __init__(self, ticket):
        super().__init__()
        self.ticket, self.steps, self.nonzero = ticket, 0, 0

    def on_train_batch_end(self, batch, logs=None):
        self.steps += 1
        self.nonzero += sum(int(np.count_nonzero(self.ticket.kernel(k)[~m])) for k, m in self.ticket.masks.items())


def run(out, monkeypatch, **options):
    """One dense and one pruned round of LeNet-300-100 on mnist5k through the runner, every step checked."""
    checks = []

    def checked(kit, ticket, *args, callbacks=(), **kwargs):
        checks.append(PrunedStayZero(ticket))
        return real(kit, ticket, *args, callbacks=(*callbacks, checks[-1]), **kwargs)

    real = fit_round.train_round
    monkeypatch.setattr(fit_round, "train_round", checked)  # what the runner calls
    cfg = ExperimentConfig.from_dict(dict(rounds=1, epochs=EPOCHS, controls=(), steps_per_execution=1, **options))
    Experiment(cfg, out, verbose=0, log=lambda *a: None).run()
    monkeypatch.undo()
    return json.loads((out / "results.json").read_text()), checks


def test_a_bfloat16_round_keeps_pruned_weights_zero_and_the_float32_accuracy(tmp_path, monkeypatch):
    fp32, _ = run(tmp_path / "fp32", monkeypatch, export=())
    mixed, checks = run(tmp_path / "bf16", monkeypatch, mixed_precision=True, export=("saved_model", "tflite", "int8"))
    assert keras.mixed_precision.global_policy().name == "float32"  # restored after the run
    assert mixed["distribution"]["precision"] == "mixed_bfloat16" and fp32["distribution"]["precision"] == "float32"
    steps = EPOCHS * -(-3500 // 60)
    assert [c.steps for c in checks] == [steps, steps] and all(c.nonzero == 0 for c in checks)
    assert mixed["rounds"][1]["weights_remaining"] < 0.85
    for a, b in zip(fp32["rounds"], mixed["rounds"]):
        assert abs(a["test_accuracy"] - b["test_accuracy"]) <= 0.01, (a["test_accuracy"], b["test_accuracy"])
    # the export is float32 (int8 converted from it): fp32 logits and weights, TFLite checked against them
    info = json.loads((tmp_path / "bf16" / "export" / "round_1" / "ticket.json").read_text())
    assert info["input"]["dtype"] == "float32"
    assert info["formats"]["tflite"]["test_accuracy"] == info["keras_test_accuracy"]
    saved = tf.saved_model.load(str(tmp_path / "bf16" / "export" / "round_1" / "saved_model"))
    assert {v.dtype for v in saved.variables} == {tf.float32}
    assert saved.signatures["serving_default"].structured_outputs["logits"].dtype == tf.float32
    masks = np.load(tmp_path / "bf16" / "rounds" / "1" / "masks.npz")
    for name, kernel in (("fc1|kernel", "fc1/kernel"), ("output|kernel", "output/kernel")):
        value = next(v.numpy() for v in saved.variables if v.name.startswith(kernel))
        assert np.all(value[~masks[name]] == 0)


def small_net():
    """784-16-10: float16 has no fast CPU kernels, so the float16 test keeps its matrices small."""
    inputs = keras.Input((28, 28, 1))
    x = keras.layers.Dense(16, activation="relu", name="fc1")(keras.layers.Flatten()(inputs))
    return keras.Model(inputs, keras.layers.Dense(10, name="output")(x))


def test_float16_gets_loss_scaling_and_its_scale_is_checkpointed(mnist5k, tmp_path):
    cfg = ExperimentConfig.from_dict(dict(epochs=1, batch_size=500, jit_compile=False, steps_per_execution=1)).resolved()
    with distribute.precision("mixed_float16") as policy:
        assert policy == "mixed_float16"
        keras.utils.set_random_seed(0)
        ticket = LotteryTicket(small_net(), rate=0.5)
        compile_round(ticket, cfg.training, steps_per_epoch(mnist5k, cfg.training))
        optimizer = ticket.model.optimizer
        assert isinstance(optimizer, keras.mixed_precision.LossScaleOptimizer)
        train_round(ticket, mnist5k, cfg.training)
        ticket.next_round()
        check = PrunedStayZero(ticket)
        train_round(ticket, mnist5k, cfg.training, checkpoint=tmp_path / "ckpt.npz", callbacks=(check,))
        assert check.steps == 7 and check.nonzero == 0
        state = distribute.optimizer_variables(optimizer)
        assert len(state) == len(optimizer.variables) + 2  # + the dynamic loss scale and its counter
        saved = [v.numpy() for v in state]
        for v in state[len(optimizer.variables):]:
            v.assign(tf.ones_like(v) * 3)
        restore(ticket, tmp_path / "ckpt.npz", ticket.callback())
        for v, s in zip(distribute.optimizer_variables(optimizer), saved):
            np.testing.assert_array_equal(v.numpy(), s)
    assert keras.mixed_precision.global_policy().name == "float32"


def test_the_policy_is_restored_when_the_block_fails():
    with pytest.raises(RuntimeError):
        with distribute.precision(True) as policy:
            assert keras.mixed_precision.global_policy().name == policy == "mixed_bfloat16"  # no GPU here
            raise RuntimeError
    assert keras.mixed_precision.global_policy().name == "float32"


@pytest.mark.slow  # ~25 s; resume itself stays in CI (test_resume, the SIGKILL test); `make test-slow`
def test_a_mixed_precision_run_killed_mid_round_resumes_to_the_same_results(tmp_path, monkeypatch):
    cfg = ExperimentConfig.from_dict(dict(rounds=1, epochs=2, controls=(), export=(), mixed_precision=True))
    write = EpochCheckpoint.on_epoch_end

    def killed(self, epoch, logs=None):  # what SIGKILL leaves: the first checkpoint of round 1, written atomically
        write(self, epoch, logs)
        if self.path.parent.name == "1" and epoch == 0:
            raise KeyboardInterrupt

    for name in ("whole", "killed"):
        if name == "killed":
            monkeypatch.setattr(EpochCheckpoint, "on_epoch_end", killed)
            with pytest.raises(KeyboardInterrupt):
                Experiment(cfg, tmp_path / name, verbose=0, log=lambda *a: None).run()
            monkeypatch.undo()
            assert keras.mixed_precision.global_policy().name == "float32"
        Experiment(cfg, tmp_path / name, verbose=0, log=lambda *a: None).run()
    rows = [[{k: v for k, v in row.items() if k != "wall_seconds"}
             for row in json.loads((tmp_path / name / "results.json").read_text())["rounds"]] for name in ("whole", "killed")]
    assert rows[0] == rows[1]
    for name in ("masks.npz", "weights.npz"):
        with np.load(tmp_path / "whole" / "rounds" / "1" / name) as a, np.load(tmp_path / "killed" / "rounds" / "1" / name) as b:
            assert all(np.array_equal(a[k], b[k]) for k in a.files), name
