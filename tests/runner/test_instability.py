"""The instability scan as a folder (tf_lth/runner/instability.py) and ``--rewind auto``: a scan killed after a
piece, or inside a copy's training, resumes to the very JSON of an uninterrupted one; bad requests are one
line and exit 2; ``--rewind auto`` takes the smallest stable point, records it and reads it back on a rerun;
a run without it never loads the scan."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tf_lth import cli
from tf_lth.config.configs import ExperimentConfig
from tf_lth.errors import TfLthError
from tf_lth.runner import instability
from tf_lth.runner.experiment import Experiment
from tf_lth.training import fit_round, stability
from tf_lth.util.io import read_json

ROOT = Path(__file__).resolve().parents[2]
# 20 steps a round (two epochs of 10 on mnist5k), tracing without XLA is quicker
TINY = ["--iterations", "20", "--batch-size", "350", "--no-jit"]
SCAN = [*TINY, "--rewind-points", "0,5", "--alphas", "3", "--quiet"]


def quiet(*args):
    pass


class Killed(Exception):
    pass


@pytest.fixture(scope="module")
def whole(tmp_path_factory):
    out = tmp_path_factory.mktemp("scan") / "whole"
    assert cli.main(["instability", *SCAN, "-o", str(out)]) == 0
    return out


@pytest.mark.heavy
def test_the_scan_writes_its_files(whole):
    content = read_json(whole / instability.SCAN_FILE)
    assert [e["k"] for e in content["points"]] == [0, 5] and content["threshold"] == 0.02
    for e in content["points"]:
        assert e["alphas"] == [0.0, 0.5, 1.0] and len(e["errors"]) == len(e["losses"]) == 3
        assert e["error_barrier"] == pytest.approx(stability.barrier(e["errors"]))
        assert e["loss_barrier"] == pytest.approx(stability.barrier(e["losses"]))
        assert e["stable"] == (e["error_barrier"] < 0.02) and e["trunk_step"] == e["k"]
        assert [c["seed"] for c in e["copies"]] == [1, 2] and all(c["iterations"] == 20 for c in e["copies"])
        # no BatchNormalization in LeNet: the path's endpoints are the copies' own test errors
        assert e["errors"][0] == pytest.approx(1 - e["copies"][0]["test_accuracy"], abs=1e-6)
        assert e["errors"][-1] == pytest.approx(1 - e["copies"][1]["test_accuracy"], abs=1e-6)
    assert (whole / "instability.csv").read_text().splitlines()[0].startswith("round,k,trunk_step")
    assert {p.name for p in (whole / "plots").iterdir()} == {"instability_path.png", "instability_barrier.png"}
    assert not list(whole.rglob("*.ckpt.npz")) and (whole / "k_5" / "thetak.npz").exists()


@pytest.mark.heavy
def test_a_killed_scan_resumes_to_the_same_json(whole, tmp_path, monkeypatch):
    out = tmp_path / "killed"
    lines = []

    def log_then_die(line):  # killed once the first copy of k=0 is written
        lines.append(line)
        if "copy a" in line:
            raise Killed(line)

    config = ExperimentConfig.from_dict({"iterations": 20, "batch_size": 350, "jit_compile": False,
                                         "rewind_points": (0, 5)})
    with pytest.raises(Killed):
        instability.scan_config(config, out, alphas=3, log=log_then_die)
    assert (out / "k_0" / "copy_a.npz").exists() and not (out / "k_0" / "copy_b.npz").exists()

    train = fit_round.train_round
    calls = []

    def die_in_copy_b_of_k5(kit, ticket, data, training, **options):  # inside a copy: after its first epoch
        checkpoint = options.get("checkpoint")
        calls.append(Path(checkpoint).name if checkpoint else None)
        if checkpoint is not None and "k_5" in str(checkpoint) and Path(checkpoint).name == "copy_b.ckpt.npz":
            class Stop(kit.keras.callbacks.Callback):
                def on_epoch_begin(self, epoch, logs=None):
                    if epoch == 1:
                        raise Killed("copy b, epoch 1")
            options["callbacks"] = (Stop(),)
        return train(kit, ticket, data, training, **options)

    with monkeypatch.context() as m:
        m.setattr(fit_round, "train_round", die_in_copy_b_of_k5)
        with pytest.raises(Killed):
            instability.scan_config(config, out, alphas=3, log=quiet)
    assert calls == ["copy_b.ckpt.npz", "trunk.ckpt.npz", "copy_a.ckpt.npz", "copy_b.ckpt.npz"]  # k=0 copy a read back
    assert (out / "k_5" / "copy_b.ckpt.npz").exists()  # its first epoch kept
    instability.scan_config(config, out, alphas=3, log=quiet)
    assert read_json(out / instability.SCAN_FILE) == read_json(whole / instability.SCAN_FILE)
    assert not list(out.rglob("*.ckpt.npz"))


@pytest.mark.heavy
def test_a_finished_scan_is_read_back_without_training(whole, monkeypatch):
    def no_training(*args, **kwargs):
        raise AssertionError("a finished scan trained again")

    monkeypatch.setattr(fit_round, "train_round", no_training)
    before = (whole / instability.SCAN_FILE).read_bytes()
    assert cli.main(["instability", *SCAN, "-o", str(whole)]) == 0
    assert (whole / instability.SCAN_FILE).read_bytes() == before
    assert cli.main(["instability", *SCAN, "--threshold", "0.0001", "-o", str(whole)]) == 0  # only the verdicts
    assert read_json(whole / instability.SCAN_FILE)["threshold"] == 0.0001


@pytest.mark.parametrize("argv, message", [
    (["/nonexistent/run"], "not a tf-lth run folder"),
    ([*TINY, "--rewind-points", "0,20"], "give steps from 0 to 19"),
    ([*TINY, "--rewind-points", "0,x"], "rewind-points"),
    ([*TINY, "--seeds", "3,3"], "the same twice"),
    ([*TINY, "--alphas", "1"], "at least 2"),
    ([*TINY, "--rounds", "1"], "give its RUN_DIR"),
    ([*TINY, "--threshold", "2"], "between 0 and 1"),
])
def test_bad_requests_are_one_line_and_exit_2(argv, message, tmp_path, capsys):
    assert cli.main(["instability", *argv, "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err


def test_a_run_folder_scan_refuses_flags_of_another_run(tmp_path, capsys):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "ticket.json").write_text("{}")
    assert cli.main(["instability", str(tmp_path), "--model", "conv2"]) == 2
    assert "drop --model" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli.main(["instability", str(empty)]) == 2


def test_auto_points_are_nice_fractions_of_the_round():
    assert instability.auto_points(30_000) == (0, 200, 500, 2000)
    assert instability.auto_points(20) == (0, 2)
    assert instability.auto_points(30_000, every=300) == (0, 300, 1800)  # multiples of steps_per_execution (300)
    assert [instability.nice(x) for x in (0.5, 1, 7, 19, 250)] == [0, 1, 5, 10, 200]
    assert cli.build_parser().parse_args(["instability", "x"]).alphas == instability.DEFAULT_ALPHAS
    with pytest.raises(TfLthError):
        ExperimentConfig.from_dict({"rewind_points": "5,-1"})
    assert ExperimentConfig.from_dict({"rewind_points": "500,0,100"}).rewind_points == (0, 100, 500)
    assert ExperimentConfig.from_dict({"rewind": "auto"}).ticket.rewind == "auto"
    with pytest.raises(TfLthError, match="chosen by the runner"):
        ExperimentConfig.from_dict({"rewind": "auto"}).ticket.rewind_mode  # noqa: B018


@pytest.mark.heavy
def test_rewind_auto_takes_the_smallest_stable_point_and_reads_it_back(tmp_path, monkeypatch):
    out, lines = tmp_path / "auto", []
    cfg = ExperimentConfig.from_dict({"keras": 3, "rounds": 0, "iterations": 20, "batch_size": 350, "jit_compile": False,
                                      "export": (), "controls": (), "rewind": "auto", "rewind_points": (0, 5, 10),
                                      "rewind_threshold": 0.001})
    result = Experiment(cfg, out, log=lines.append).run()
    scan = read_json(out / instability.FOLDER / instability.SCAN_FILE)
    barriers = [e["error_barrier"] for e in scan["points"]]
    stable = [e["k"] for e in scan["points"] if e["error_barrier"] < 0.001]
    chosen = stable[0] if stable else scan["points"][-1]["k"]
    if stable:  # the scan stops at the first stable point
        assert scan["points"][-1]["k"] == stable[0]
    else:
        assert [e["k"] for e in scan["points"]] == [0, 5, 10]
    auto = read_json(out / "results.json")["rewind_auto"]
    assert auto == {"points": [e["k"] for e in scan["points"]], "barriers": barriers, "threshold": 0.001,
                    "chosen": f"iteration:{chosen}" if chosen else "init", "stable": bool(stable)}
    assert sum(line.startswith("rewind auto:") for line in lines) == 1
    assert read_json(out / instability.FOLDER / instability.AUTO_FILE) == auto
    ticket = read_json(out / "ticket.json")
    assert ticket["config"]["rewind"] == auto["chosen"] and ticket["flavour"] == "keras3"
    assert (out / "thetak.npz").exists() == (chosen > 0)
    assert read_json(out / "config.json")["ticket"]["rewind"] == "auto"
    assert result["rounds"][0]["iterations"] == 20

    def no_training(*args, **kwargs):
        raise AssertionError("a resumed run retrained")

    monkeypatch.setattr(fit_round, "train_round", no_training)
    Experiment(cfg, out, log=quiet).run()  # resumed: the scan and the round read back
    assert read_json(out / "results.json")["rewind_auto"] == auto


@pytest.fixture(scope="module")
def plain_run(tmp_path_factory):
    """A run of a dense round and one pruned round without --rewind auto, in a fresh process that reports which
    of the scan's modules it loaded (none should be) and how long `tf-lth run --help` took."""
    folder = tmp_path_factory.mktemp("plain") / "run"
    code = ("import sys, time\nfrom tf_lth import cli\n"
            "t = time.perf_counter()\ntry:\n    cli.main(['run', '--help'])\nexcept SystemExit:\n    pass\n"
            "help_s = time.perf_counter() - t\nassert 'tensorflow' not in sys.modules\n"
            f"assert cli.main(['run', '--rounds', '1', {', '.join(map(repr, TINY))}, '--export', 'none', '--controls', "
            f"'none', '--quiet', '-o', {str(folder)!r}]) == 0\n"
            "print('LOADED', [m for m in ('tf_lth.training.stability', 'tf_lth.runner.instability') if m in sys.modules],"
            " round(help_s, 3))\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    line = next((l for l in done.stdout.splitlines() if l.startswith("LOADED")), None)
    assert line, done.stderr[-2000:]
    return folder, line


@pytest.mark.heavy
def test_a_run_without_auto_never_loads_the_scan(plain_run):
    assert plain_run[1].startswith("LOADED []"), plain_run[1]
    assert "rewind_auto" not in read_json(plain_run[0] / "results.json")


@pytest.mark.heavy
def test_a_run_folder_scan_with_a_rounds_ticket_keeps_its_masks(plain_run):
    run_dir = plain_run[0]
    assert cli.main(["instability", str(run_dir), "--rounds", "1", "--rewind-points", "0", "--alphas", "2",
                     "--quiet"]) == 0
    import numpy as np
    from tf_lth.ticket import store

    ticket = store.load(run_dir, round=1)
    folder = run_dir / instability.FOLDER
    assert read_json(folder / instability.SCAN_FILE)["settings"]["round"] == 0
    assert read_json(folder / "round_1" / instability.SCAN_FILE)["settings"]["round"] == 1
    copy = store.unnumbered(dict(np.load(folder / "round_1" / "k_0" / "copy_a.npz")), len(ticket.theta0), "copy")
    for key, i in ticket.kernels().items():
        assert not copy[i][~ticket.masks[key]].any() and copy[i][ticket.masks[key]].any()  # pruned stay zero
    dense = store.unnumbered(dict(np.load(folder / "k_0" / "copy_a.npz")), len(ticket.theta0), "copy")
    assert all(np.count_nonzero(w) == w.size for w in dense[::2])  # the dense copies: every kernel weight alive
    assert cli.main(["instability", str(run_dir), "--rounds", "2", "--rewind-points", "0"]) == 2  # no round 2
