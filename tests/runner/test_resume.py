"""Resume is identical on every path: each rewind mode, killed before a round's first epoch
checkpoint, killed while a control trains. A kill is an exception raised inside ``fit`` at the
chosen point (the files are written atomically, so that is what SIGKILL leaves too; the subprocess
SIGKILL test lives in test_experiment.py)."""
import json

import numpy as np
import pytest

from tf_lth.config.configs import ExperimentConfig
from tf_lth.runner.experiment import Experiment
from tf_lth.keras2.training import EpochCheckpoint


class Killed(Exception):
    pass


def run(cfg, out, kills=(), monkeypatch=None, checkpoint=EpochCheckpoint):
    """Run the experiment, killed at each of ``kills`` in turn and resumed: ``(name, round, when)``
    raises at that training's first epoch end, ``"before"`` its checkpoint is written or ``"after"``
    (``checkpoint``: the flavour's checkpoint callback; test_keras3_runner.py passes Keras 3's)."""
    original = checkpoint.on_epoch_end
    for kill in kills:
        def on_epoch_end(self, epoch, logs=None, kill=kill):
            hit = (self.path.name.split(".")[0], int(self.path.parent.name)) == kill[:2] and epoch == 0
            if hit and kill[2] == "before":
                raise Killed
            original(self, epoch, logs)
            if hit:
                raise Killed

        monkeypatch.setattr(checkpoint, "on_epoch_end", on_epoch_end)
        with pytest.raises(Killed):
            Experiment(cfg, out, verbose=0, log=lambda *a: None).run()
        monkeypatch.undo()
    return Experiment(cfg, out, verbose=0, log=lambda *a: None).run()


def rows(out):
    data = json.loads((out / "results.json").read_text())["rounds"]
    for row in data:
        row.pop("wall_seconds")
    return data


@pytest.mark.parametrize("rewind", ["init", "iteration:59", "lr", "finetune"])
def test_resume_is_identical_for_every_rewind_mode(rewind, tmp_path, monkeypatch):
    cfg = ExperimentConfig.from_dict(dict(rounds=1, epochs=2, rewind=rewind, controls=("random_mask",), export=(),
                                          rate=0.5, jit_compile=False))
    run(cfg, tmp_path / "whole")
    # killed before round 1's first checkpoint, then again while its control trains
    run(cfg, tmp_path / "killed", [("ticket", 1, "before"), ("random_mask", 1, "after")], monkeypatch)
    assert rows(tmp_path / "killed") == rows(tmp_path / "whole")
    for k in range(2):
        for name in ("masks.npz", "weights.npz"):
            with np.load(tmp_path / "whole" / "rounds" / str(k) / name) as x, \
                    np.load(tmp_path / "killed" / "rounds" / str(k) / name) as y:
                assert all(np.array_equal(x[n], y[n]) for n in x.files), (k, name)
