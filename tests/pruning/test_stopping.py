"""The stop rules on hand-made sequences (no TensorFlow): the early-bird rule, patience, the mask distance,
and the StopRules value a config gives."""
import numpy as np
import pytest

from tf_lth.config import TrainingConfig
from tf_lth.pruning.stopping import StopRules, early_bird_stop, mask_distance, val_loss_stop


def test_early_bird_rule():
    assert not early_bird_stop([], 0.1, 1)
    assert not early_bird_stop([0.05, 0.2, 0.05], 0.1, 2)
    assert early_bird_stop([0.3, 0.05, 0.09], 0.1, 2)
    assert not early_bird_stop([0.3, 0.05, 0.1], 0.1, 2)  # strictly below
    first = next(i for i in range(1, 7) if early_bird_stop([0.5, 0.2, 0.08, 0.3, 0.05, 0.01][:i], 0.1, 2))
    assert first == 6


def test_patience_rule():
    assert not val_loss_stop([1.0, 0.9], 2)
    assert val_loss_stop([1.0, 0.8, 0.85, 0.81], 2)
    assert not val_loss_stop([1.0, 0.8, 0.85, 0.79], 2)


def test_mask_distance_is_the_fraction_of_weights_that_changed():
    a = {"x": np.array([True, True, False, False]), "y": np.ones((2, 3), bool)}
    b = {"x": np.array([True, False, True, False]), "y": np.ones((2, 3), bool)}
    assert mask_distance(a, b) == pytest.approx(2 / 10)
    assert mask_distance(a, a) == 0
    alive = {"x": np.array([True, True, True, False]), "y": np.zeros((2, 3), bool)}  # 3 weights left to decide
    assert mask_distance(a, b, alive) == pytest.approx(2 / 3)


def test_stop_rules_of_a_config():
    assert StopRules() == StopRules.of(TrainingConfig()) and not StopRules().active
    rules = StopRules.of(TrainingConfig(early_bird=0.1, early_bird_window=3))
    assert rules == StopRules(0.1, 2, 3, None) and rules.active and StopRules(patience=4).active
