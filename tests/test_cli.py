"""The command line: one-line errors with exit code 2, and a short real training run."""
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tf_lth import cli

ROOT = Path(__file__).resolve().parents[1]
RUN_LTH = ROOT / "scripts" / "run_lth.py"


def run_script(*args):
    return subprocess.run([sys.executable, str(RUN_LTH), *args], capture_output=True, text=True, timeout=180,
                          cwd=ROOT)


@pytest.mark.heavy
@pytest.mark.parametrize("flag, word", [("--model", "model"), ("--dataset", "dataset")])
def test_script_unknown_name_is_one_line(flag, word):
    result = run_script(flag, "nope")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "error" in lines[0] and f"--{word}" in lines[0] and "'nope'" in lines[0]
    assert "Traceback" not in result.stderr


def one_error_line(capsys):
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    return lines[0]


def test_empty_data_dir(tmp_path, capsys):
    assert cli.main(["train", "--dataset", "mnist", "--data-dir", str(tmp_path)]) == 2
    line = one_error_line(capsys)
    assert line.startswith("tf-lth: error: ") and str(tmp_path) in line


def test_missing_data_dir(tmp_path, capsys):
    assert cli.main(["train", "--dataset", "fashion_mnist", "--data-dir", str(tmp_path / "nowhere")]) == 2
    assert "does not exist" in one_error_line(capsys)


def test_truncated_file(tmp_path, capsys):
    from helpers import write_mnist_folder

    write_mnist_folder(tmp_path, gz=False)
    path = tmp_path / "t10k-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-100])
    assert cli.main(["train", "--dataset", "mnist", "--data-dir", str(tmp_path)]) == 2
    line = one_error_line(capsys)
    assert line.startswith("tf-lth: error: ") and "t10k-images-idx3-ubyte" in line and "truncated" in line


@pytest.mark.parametrize("argv, needle", [
    ([], "required"),
    (["fly"], "invalid choice"),
    (["train", "--model", "resnet"], "--model"),
    (["train", "--epochs", "0"], "epochs = 0 must be a whole number >= 1"),  # the config's check: one source
    (["train", "--learning-rate", "-1"], "learning_rate = -1.0 must be > 0"),
    (["train", "--batch-size", "many"], "--batch-size"),
    (["train", "--bogus"], "--bogus"),
])
def test_usage_errors_are_one_line(argv, needle, capsys):
    assert cli.main(argv) == 2
    line = one_error_line(capsys)
    assert "error:" in line and needle in line


def test_help(capsys):
    assert cli.main(["train", "--help"]) == 0
    out = capsys.readouterr().out
    for flag in ("--model", "--dataset", "--data-dir", "--epochs", "--batch-size", "--learning-rate", "--seed"):
        assert flag in out


def test_help_lists_the_commands(capsys):
    assert cli.main(["--help"]) == 0
    assert re.findall(r"^    (\w+)  ", capsys.readouterr().out, re.M) == ["run", "branch", "compare", "export", "predict",
                                                                                "train"]


def test_each_command_runs_its_own_handler(tmp_path, capsys):
    import tf_lth

    ticket = tf_lth.LotteryTicket(tf_lth.networks.lenet_300_100(), rate=0.5)
    ticket.next_round()
    tf_lth.store.save(ticket, tmp_path / "run")
    out = tmp_path / "exported"
    assert cli.main(["export", str(tmp_path / "run"), "--out", str(out), "--formats", "saved_model",
                     "--no-benchmark"]) == 0
    assert capsys.readouterr().out.endswith(f"exported to {out}/\n")
    written = json.loads((out / "ticket.json").read_text())
    assert written["round"] == 1 and written["layers"]["fc1/kernel"]["sparsity"] == pytest.approx(0.5, abs=1e-5)
    assert sorted(p.name for p in out.iterdir()) == ["saved_model", "ticket.json"]
    # run: its own validation (train has no --rounds), and nothing written for a bad value
    assert cli.main(["run", "-o", str(tmp_path / "runs"), "--rounds", "-2"]) == 2
    assert one_error_line(capsys) == "tf-lth: error: rounds = -2 must be a whole number >= 0"
    assert not (tmp_path / "runs").exists()


@pytest.mark.heavy
def test_train_one_epoch_learns(capsys):
    assert cli.main(["train", "--epochs", "1", "--seed", "0"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == ("training lenet_300_100 on mnist5k (3500 train / 500 validation / 1000 test): 1 epoch, "
                        "batch 60, Adam 0.0012, seed 0")
    epochs = [line for line in lines if re.match(r"\d+/\d+ - ", line)]
    assert len(epochs) == 1 and epochs[0].startswith("59/59 - ")  # one epoch of ceil(3,500 / 60) steps
    val = float(re.search(r"val_accuracy: (\d\.\d{4})", epochs[0]).group(1))
    assert lines[-1].startswith("test accuracy: ")
    test = float(re.fullmatch(r"test accuracy: (\d\.\d{4})", lines[-1]).group(1))
    # scored on the 500 validation and the 1,000 test digits: whole numbers of them right
    assert abs(val * 500 - round(val * 500)) < 1e-6 and abs(test * 1000 - round(test * 1000)) < 1e-6
    assert 0.8 < val <= 1 and 0.8 < test <= 1  # it learned: chance is 0.1
    assert test != val  # the same weights score 0.8760 on the validation digits: these are the test digits
