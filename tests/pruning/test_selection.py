"""Mask criteria and selection on hand-made weights: the kept set is exactly the expected one."""
import numpy as np
import pytest

from tf_lth.pruning import selection as masks
from tf_lth.errors import TfLthError

W0 = np.array([0.5, -0.1, 0.3, -0.4, 0.05, 0.2])
WF = np.array([0.6, -0.7, -0.2, -0.05, 0.02, 0.4])
# index:           0     1     2     3      4     5

EXPECTED_KEEP_3 = {  # keep 3 of 6 by each criterion
    "large_final": {0, 1, 5},  # |wf| .6 .7 .2 .05 .02 .4
    "small_final": {2, 3, 4},
    "large_init": {0, 2, 3},  # |w0| .5 .1 .3 .4 .05 .2
    "small_init": {1, 4, 5},
    "large_init_large_final": {0, 2, 5},  # min .5 .1 .2 .05 .02 .2 (stable order keeps 2 before 5)
    "small_init_small_final": {2, 3, 4},  # max .6 .7 .3 .4 .05 .4 → smallest .05, .3, then .4 (3 before 5)
    "magnitude_increase": {1, 0, 5},  # .1 .6 -.1 -.35 -.03 .2
    "movement": {1, 2, 3},  # .1 .6 .5 .35 .03 .2
    "large_final_same_sign": {0, 1, 5},  # wf·sign(w0): .6 .7 -.2 .05 .02 .4
}


@pytest.mark.parametrize("criterion", sorted(EXPECTED_KEEP_3))
def test_criterion_keeps_expected_weights(criterion):
    score = masks.scores(criterion, {"k": W0}, {"k": WF}, np.random.default_rng(0))
    kept = masks.select_layerwise(score, {"k": np.ones(6, bool)}, {"k": 3})["k"]
    assert set(np.flatnonzero(kept)) == EXPECTED_KEEP_3[criterion]


def test_small_init_small_final_tie_order():
    # the expected sets above rely on max(|w0|,|wf|) for small_init_small_final: check the arithmetic once
    score = masks.CRITERIA["small_init_small_final"](W0, WF, None)
    assert np.allclose(-score, [0.6, 0.7, 0.3, 0.4, 0.05, 0.4])


def test_same_sign_prefers_unchanged_signs():
    w0 = np.array([1.0, 1.0, -1.0, -1.0])
    wf = np.array([0.1, -5.0, -0.2, 3.0])  # large but sign-flipped weights 1 and 3 go first
    score = masks.scores("large_final_same_sign", {"k": w0}, {"k": wf}, None)
    kept = masks.select_layerwise(score, {"k": np.ones(4, bool)}, {"k": 2})["k"]
    assert set(np.flatnonzero(kept)) == {0, 2}


def test_random_criterion_is_seeded():
    a = masks.scores("random", {"k": W0}, {"k": WF}, np.random.default_rng(1))["k"]
    b = masks.scores("random", {"k": W0}, {"k": WF}, np.random.default_rng(1))["k"]
    assert np.array_equal(a, b) and len(set(a)) == 6


def test_unknown_criterion():
    with pytest.raises(TfLthError, match="unknown mask criterion 'nope'"):
        masks.scores("nope", {}, {}, None)


def test_dead_weights_never_return():
    score = {"k": np.array([9.0, 8.0, 1.0, 2.0])}
    alive = {"k": np.array([False, True, True, True])}
    kept = masks.select_layerwise(score, alive, {"k": 2})["k"]
    assert list(kept) == [False, True, False, True]


def test_global_selection_is_one_threshold():
    score = {"a": np.array([0.9, 0.1, 0.5]), "b": np.array([0.8, 0.7, 0.2, 0.3])}
    alive = {k: np.ones(v.shape, bool) for k, v in score.items()}
    kept = masks.select_global(score, alive, 4)
    assert list(kept["a"]) == [True, False, True] and list(kept["b"]) == [True, True, False, False]


def test_block_selection_keeps_whole_1x4_blocks():
    rng = np.random.default_rng(0)
    score = {"k": rng.random((16, 6))}
    kept = masks.select_layerwise(score, {"k": np.ones((16, 6), bool)}, {"k": 16 * 6 // 4}, block=(4, 1))["k"]
    blocks = kept.reshape(4, 4, 6)  # 4 consecutive inputs of one output form a block
    assert np.all(blocks.all(axis=1) | ~blocks.any(axis=1))
    assert kept.sum() == 24
    means = score["k"].reshape(4, 4, 6).mean(axis=1)
    assert means[blocks.all(axis=1)].min() >= means[~blocks.any(axis=1)].max()


def test_m_by_n_keeps_at_most_n_of_each_m_inputs():
    rng = np.random.default_rng(0)
    score = rng.random((8, 5))
    kept = masks.m_by_n(score, np.ones((8, 5), bool), 2, 4)
    groups = kept.reshape(2, 4, 5)
    assert np.all(groups.sum(axis=1) == 2)
    top = np.sort(score.reshape(2, 4, 5), axis=1)[:, 2:, :]
    assert np.allclose(np.sort(np.where(groups, score.reshape(2, 4, 5), 0), axis=1)[:, 2:, :], top)


def test_random_like_keeps_counts():
    m = {"k": np.array([[True, False, True], [False, False, True]])}
    r = masks.random_like(m, np.random.default_rng(0))
    assert r["k"].sum() == 3 and r["k"].shape == (2, 3)


@pytest.mark.parametrize("seed", range(6))
def test_layerwise_selection_is_a_stable_sorts_first_n_ties_and_dead_weights_included(seed):
    """The linear-time selection keeps exactly what a stable sort of the alive scores keeps: the n highest,
    ties to the lowest index, never a dead weight (scores from few values, so ties are everywhere)."""
    rng = np.random.default_rng(seed)
    score = rng.integers(-3, 4, size=(40, 30)).astype(np.float32) * 0.5
    if seed % 2:
        score[rng.random(score.shape) < 0.05] = np.nan  # a diverged run: NaN scores still select n
    alive = rng.random(score.shape) < 0.7
    for n in (0, 1, 7, 300, int(alive.sum()) - 1, int(alive.sum())):
        kept = masks.select_layerwise({"k": score}, {"k": alive}, {"k": n})["k"]
        flat = np.where(alive, np.nan_to_num(score, nan=-1e30), -np.inf).ravel()  # NaN: the lowest alive
        expected = np.zeros(flat.size, bool)
        expected[np.argsort(-flat, kind="stable")[:n]] = True
        np.testing.assert_array_equal(kept.ravel(), expected)
        assert kept.sum() == n and not (kept & ~alive).any()
