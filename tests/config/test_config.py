"""One source per option: flags, defaults, help and choices come from the config dataclasses, the model's
recipe is resolved once, and the command line answers --help and flag errors without TensorFlow."""
import json
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest

from tf_lth import cli
from tf_lth.config import configs as config
from tf_lth.pruning import controls
from tf_lth.pruning import selection as masks
from tf_lth.models import specs as models
from tf_lth.training import recipe
from tf_lth.pruning import rewind
from tf_lth.config.configs import ExperimentConfig, TicketConfig, TrainingConfig
from tf_lth.errors import TfLthError

ROOT = Path(__file__).resolve().parents[2]


def run_actions():
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")  # argparse's own structure
    return {a.dest: a for a in sub.choices["run"]._actions}


def test_every_config_field_is_a_flag_with_its_help_and_choices():
    actions = run_actions()
    for cls in (ExperimentConfig, TicketConfig, TrainingConfig):
        for f in fields(cls):
            if f.name in ("ticket", "training"):
                continue
            action = actions[f.name]
            assert f.metadata["help"] in action.help, f.name
            shown = f.metadata["shown"] or ("none" if f.default is None else f.default)
            assert f"(default: {shown})" in action.help, f.name
    assert tuple(actions["criterion"].choices) == masks.CRITERIA.names()
    assert tuple(actions["survivors"].choices) == rewind.SURVIVORS.names()
    assert tuple(actions["schedule"].choices) == recipe.SCHEDULES.names()
    assert all(name in actions["model"].help for name in models.MODELS.names())  # and module:function, files
    assert "npz:PATH" in actions["dataset"].help and "folder:PATH" in actions["dataset"].help
    assert "--no-jit" in actions["jit_compile"].option_strings


def test_flat_options_go_to_their_part_and_round_trip_through_config_json():
    cfg = ExperimentConfig.from_dict({"rate": 0.3, "epochs": 2, "rounds": 4, "seed": 7, "block-size": [4, 1]})
    assert (cfg.ticket.rate, cfg.ticket.block_size, cfg.training.epochs, cfg.rounds) == (0.3, (4, 1), 2, 4)
    resolved = cfg.resolved()
    assert resolved.ticket.seed == 7 and resolved.training.batch_size == 60
    again = ExperimentConfig.from_dict(json.loads(json.dumps(resolved.to_dict())))
    assert again == resolved
    with pytest.raises(TfLthError, match="unknown config key"):
        ExperimentConfig.from_dict({"epoks": 3})


def test_the_model_recipe_is_resolved_once():
    lenet = ExperimentConfig().resolved()
    assert (lenet.training.batch_size, lenet.training.learning_rate, lenet.training.optimizer,
            lenet.training.epochs) == (60, 1.2e-3, "adam", 10)
    assert (lenet.ticket.rate, lenet.ticket.rates) == (0.2, {"dense": 0.2, "output": 0.1})
    conv = ExperimentConfig(model="conv6").resolved()
    assert conv.training.learning_rate == 3e-4 and conv.ticket.rates["conv"] == 0.15
    given = ExperimentConfig.from_dict({"model": "conv6", "rate": 0.3, "learning_rate": 0.01, "iterations": 500})
    given = given.resolved()
    assert (given.ticket.rate, given.ticket.rates, given.training.learning_rate) == (0.3, None, 0.01)
    assert given.training.epochs is None  # iterations decide
    assert given.resolved() == given  # resolving twice changes nothing


def test_validation_is_the_dataclasses_own():
    with pytest.raises(TfLthError, match="strictly between 0 and 1"):
        ExperimentConfig.from_dict({"rate": 1.5})  # the ticket's check, not a copy of it
    with pytest.raises(TfLthError, match="unknown control 'lucky'"):
        ExperimentConfig(controls=("lucky",))
    with pytest.raises(TfLthError, match="unknown optimizer"):
        TrainingConfig(optimizer="rmsprop")
    assert controls.CONTROLS.names() == ("random_reinit", "random_mask")
    assert config.OPTIMIZERS.names() == ("adam", "sgd")


@pytest.mark.parametrize("argv, code", [
    (["run", "--help"], 0),
    (["--help"], 0),
    (["run", "--rate", "2"], 2),
    (["run", "--model", "resnet"], 2),
])
def test_help_and_flag_errors_do_not_import_tensorflow(argv, code):
    script = ("import sys; from tf_lth import cli; code = cli.main(sys.argv[1:]); "
              "print('TF' if 'tensorflow' in sys.modules else 'no TF'); sys.exit(code)")
    result = subprocess.run([sys.executable, "-c", script, *argv], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == code, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "no TF"


def test_a_folder_with_the_flat_config_of_earlier_versions_is_the_same_experiment(tmp_path):
    from tf_lth.runner.experiment import Experiment

    flat = {"rate": None, "rates": None, "scope": "layerwise", "rewind": "init", "criterion": "large_final",
            "survivors": "original", "pruned": "zero", "ignore": [], "block_size": None, "m_by_n": None, "seed": 0,
            "model": "lenet_300_100", "dataset": "mnist5k", "data_dir": None, "rounds": 10,
            "controls": ["random_reinit"], "epochs": None, "iterations": None, "batch_size": None,
            "optimizer": None, "learning_rate": None, "momentum": 0.0, "validation": None, "eval_every": None,
            "export": ["saved_model", "tflite", "int8"], "jit_compile": None, "steps_per_execution": None}
    (tmp_path / "config.json").write_text(json.dumps(flat))
    (tmp_path / "ticket.json").write_text("{}")  # a started experiment (a bare config.json is a failed start)
    Experiment(ExperimentConfig(), tmp_path).claim_folder()  # resumes
    with pytest.raises(TfLthError, match="another config .*rounds: 10 -> 3"):
        Experiment(ExperimentConfig(rounds=3), tmp_path).claim_folder()
