"""Rewind modes and survivor actions (values and signs as defined by Zhou et al. 2019)."""
import numpy as np
import pytest

from tf_lth.errors import TfLthError
from tf_lth.pruning.rewind import parse, survivor_values

RNG = np.random.default_rng(0)
THETA0 = RNG.normal(size=(20, 10)).astype(np.float32)
MASK = RNG.random((20, 10)) < 0.4
FINAL = RNG.normal(size=(20, 10)).astype(np.float32)
FRESH = RNG.normal(size=(20, 10)).astype(np.float32)


def values(action):
    return survivor_values(action, THETA0, MASK, FINAL, FRESH, np.random.default_rng(1))


def test_pruned_entries_are_zero_for_every_action():
    for action in ("original", "reinit", "reshuffle", "signed_constant", "random_sign_constant"):
        assert np.all(values(action)[~MASK] == 0), action


def test_original_takes_the_rewound_source_and_reinit_the_fresh_draw():
    np.testing.assert_array_equal(values("original")[MASK], FINAL[MASK])
    np.testing.assert_array_equal(values("reinit")[MASK], FRESH[MASK])


def test_reshuffle_permutes_the_survivors_initial_values():
    v = values("reshuffle")[MASK]
    np.testing.assert_array_equal(np.sort(v), np.sort(THETA0[MASK]))
    assert not np.array_equal(v, THETA0[MASK])


def test_signed_constant_keeps_sign_with_layer_sigma():
    v = values("signed_constant")[MASK]
    np.testing.assert_allclose(np.abs(v), THETA0.std(), rtol=1e-6)
    np.testing.assert_array_equal(np.sign(v), np.sign(THETA0[MASK]))


def test_random_sign_constant_has_sigma_and_random_signs():
    v = values("random_sign_constant")[MASK]
    np.testing.assert_allclose(np.abs(v), THETA0.std(), rtol=1e-6)
    agree = np.mean(np.sign(v) == np.sign(THETA0[MASK]))
    assert 0.3 < agree < 0.7


@pytest.mark.parametrize("text, mode, k, step", [
    ("init", "init", 0, 0), ("iteration:500", "iteration", 500, 500), ("iteration:0", "init", 0, 0),
    ("lr", "lr", 0, 0), ("finetune", "finetune", 0, 1234),
])
def test_rewind_parsing_and_optimizer_step(text, mode, k, step):
    r = parse(text)
    assert (r.name, r.iteration, r.optimizer_iteration(1234)) == (mode, k, step)


@pytest.mark.parametrize("text", ["iteration:-1", "iteration:x", "rewind", ""])
def test_bad_rewind(text):
    with pytest.raises(TfLthError, match="unknown rewind"):
        parse(text)
