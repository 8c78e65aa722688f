"""The command line: one-line errors with exit code 2, and a short real training run."""
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tf_lth import cli

ROOT = Path(__file__).resolve().parents[1]
RUN_LTH = ROOT / "scripts" / "run_lth.py"


def run_script(*args):
    return subprocess.run([sys.executable, str(RUN_LTH), *args], capture_output=True, text=True, timeout=180,
                          cwd=ROOT)


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
    from test_data import write_mnist_folder

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
    (["train", "--epochs", "0"], "--epochs"),
    (["train", "--learning-rate", "-1"], "--learning-rate"),
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


def test_subcommands_are_a_table():
    assert set(cli.COMMANDS) >= {"train"}
    assert all(callable(c.add_arguments) and callable(c.handler) for c in cli.COMMANDS.values())


def test_train_one_epoch_learns(capsys):
    assert cli.main(["train", "--epochs", "1", "--seed", "0"]) == 0
    out = capsys.readouterr().out
    assert "59/59" in out and "val_accuracy" in out  # one verbose=2 line per epoch (3,500 / 60 steps)
    accuracy = float(re.search(r"^test accuracy: (\d\.\d{4})$", out, re.M).group(1))
    assert accuracy > 0.8
    assert np.isfinite(accuracy)
