"""Which weights survive a round: criterion scores and layerwise/global top-k selection (numpy).

Masks are boolean arrays keyed by weight name (``"dense/kernel"``). Selection only ever keeps
weights that are still alive, so masks shrink monotonically across rounds. Sparsity targets are
computed from the round number, ``keep = round(size * (1 - p) ** k)``, so rounding never drifts.

Two registries: :data:`CRITERIA` (how a weight is scored) and :data:`SCOPES` (how many weights of
which kernel are kept: ``layerwise`` per kernel, ``global`` one cut over all). Both select units:
single weights, or ``block``-shaped tiles of rank-2 kernels; ``m_by_n`` filters the result (keep
at most N of every M inputs). :func:`prune` is one round of all of it.
"""
from __future__ import annotations

from typing import Callable, Mapping, NamedTuple

import numpy as np

from tf_lth.errors import TfLthError
from tf_lth.registry import Registry

Masks = dict[str, np.ndarray]


class NofM(NamedTuple):
    """``m_by_n``'s value: keep at most ``n`` of every ``m`` consecutive inputs (2:4 is ``NofM(2, 4)``)."""

    n: int
    m: int


def _same_sign_final(w0, wf, rng):
    return wf * np.sign(w0)  # > 0 where the sign survived training, larger for larger |w_f|


# Score per weight, higher is kept (Zhou et al. 2019, "Deconstructing Lottery Tickets").
CRITERIA: Registry[Callable] = Registry("mask criterion")
for _name, _score in {
    "large_final": lambda w0, wf, rng: np.abs(wf),
    "small_final": lambda w0, wf, rng: -np.abs(wf),
    "large_init": lambda w0, wf, rng: np.abs(w0),
    "small_init": lambda w0, wf, rng: -np.abs(w0),
    # both large: the weight is kept by the smaller of its two magnitudes (one threshold on both)
    "large_init_large_final": lambda w0, wf, rng: np.minimum(np.abs(w0), np.abs(wf)),
    "small_init_small_final": lambda w0, wf, rng: -np.maximum(np.abs(w0), np.abs(wf)),
    "magnitude_increase": lambda w0, wf, rng: np.abs(wf) - np.abs(w0),
    "movement": lambda w0, wf, rng: np.abs(wf - w0),
    "random": lambda w0, wf, rng: rng.random(np.shape(w0)),
    "large_final_same_sign": _same_sign_final,
}.items():
    CRITERIA.add(_name, _score)


def scores(criterion: str, theta0: Mapping[str, np.ndarray], thetaf: Mapping[str, np.ndarray],
           rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Score every weight of every key by ``criterion`` (see :data:`CRITERIA`)."""
    fn = CRITERIA.get(criterion)
    return {k: np.asarray(fn(theta0[k], thetaf[k], rng), np.float64) for k in sorted(theta0)}


def _to_blocks(a: np.ndarray, block: tuple[int, int], reduce) -> np.ndarray:
    """Reduce a rank-2 array over ``block``-shaped tiles (padding the edges)."""
    bh, bw = block
    h, w = a.shape
    ph, pw = -h % bh, -w % bw
    padded = np.pad(a, ((0, ph), (0, pw)), constant_values=np.nan)
    tiles = padded.reshape((h + ph) // bh, bh, (w + pw) // bw, bw)
    return reduce(tiles, axis=(1, 3))


def _from_blocks(b: np.ndarray, block: tuple[int, int], shape) -> np.ndarray:
    return np.kron(b, np.ones(block, dtype=b.dtype))[: shape[0], : shape[1]]


def _units(score: np.ndarray, mask: np.ndarray, block) -> tuple[np.ndarray, np.ndarray, int]:
    """Flat scores of selectable units (weights, or tiles for block sparsity), dead ones -inf (NaN
    ones, from a diverged run, just above: the last alive ones chosen, never before a dead one)."""
    if block is None or score.ndim != 2:
        score = np.asarray(score, dtype=np.float64)
        s = np.where(mask, np.where(np.isnan(score), np.finfo(np.float64).min, score), -np.inf).ravel()
        return s, mask.ravel(), 1
    alive = _to_blocks(mask.astype(float), block, np.nanmax) > 0
    s = np.where(alive, _to_blocks(score, block, np.nanmean), -np.inf)
    return s.ravel(), alive.ravel(), block[0] * block[1]


def _alive_per_unit(mask: np.ndarray, block, n_units: int) -> np.ndarray:
    """How many alive weights each selectable unit of :func:`_units` holds."""
    if block is None or mask.ndim != 2:
        return mask.ravel().astype(np.int64)
    return _to_blocks(mask.astype(float), block, np.nansum).ravel().astype(np.int64)


def _expand(keep_units: np.ndarray, mask: np.ndarray, block) -> np.ndarray:
    if block is None or mask.ndim != 2:
        return keep_units.reshape(mask.shape)
    nb = (-(-mask.shape[0] // block[0]), -(-mask.shape[1] // block[1]))
    return _from_blocks(keep_units.reshape(nb), block, mask.shape) & mask


def _top(s: np.ndarray, n: int) -> np.ndarray:
    """The ``n`` highest of ``s``, ties to the lowest index: a stable sort's first ``n``, found in
    linear time (the n-th largest by partition, then the ties in index order); early-bird rounds draw
    a candidate at every evaluation point, where a full sort of LeNet's first kernel took ~6 ms."""
    keep = np.zeros(s.shape, bool)
    if n <= 0:
        return keep
    if n >= s.size:
        keep[:] = True
        return keep
    nth = np.partition(s, s.size - n)[s.size - n]
    np.greater(s, nth, out=keep)
    keep[np.flatnonzero(s == nth)[: n - int(keep.sum())]] = True
    return keep


def select_layerwise(score: Mapping[str, np.ndarray], masks: Masks, keep: Mapping[str, int],
                     block: tuple[int, int] | None = None) -> Masks:
    """Per key, keep the ``keep[key]`` highest-scoring weights among those still alive."""
    out = {}
    for k, m in masks.items():
        s, alive, size = _units(score[k], m, block)
        n = min(int(round(keep[k] / size)), int(alive.sum()))
        out[k] = _expand(_top(s, n), m, block)
    return out


def select_global(score: Mapping[str, np.ndarray], masks: Masks, keep: int,
                  block: tuple[int, int] | None = None) -> Masks:
    """One cut over all keys: keep the ``keep`` highest-scoring alive weights in total.

    With ``block``, rank-2 kernels are cut in tiles and other weights one by one, so units differ in
    size: they are taken in score order while they fit the weights still to keep, which keeps
    exactly ``keep`` when the single weights allow it (and never more).
    """
    keys = sorted(masks)
    parts = [_units(score[k], masks[k], block) for k in keys]
    flat = np.concatenate([s for s, _, _ in parts])
    sizes = np.concatenate([_alive_per_unit(masks[k], block, s.size) for k, (s, _, _) in zip(keys, parts)])
    order = np.argsort(-flat, kind="stable")
    order = order[flat[order] > -np.inf]
    total = np.cumsum(sizes[order])
    n = int(np.searchsorted(total, keep, side="right"))  # the longest prefix that fits
    chosen = np.zeros(flat.shape, bool)
    chosen[order[:n]] = True
    left, rest = int(keep) - (int(total[n - 1]) if n else 0), order[n:]
    while left > 0:  # then the best smaller units that still fit
        fits = np.flatnonzero(sizes[rest] <= left)
        if not fits.size:
            break
        i = rest[fits[0]]
        chosen[i], left, rest = True, left - int(sizes[i]), rest[fits[0] + 1:]
    out, start = {}, 0
    for k, (s, _, _) in zip(keys, parts):
        out[k] = _expand(chosen[start: start + s.size], masks[k], block)
        start += s.size
    return out


def m_by_n(score: np.ndarray, mask: np.ndarray, n: int, m: int) -> np.ndarray:
    """Keep at most ``n`` of every ``m`` consecutive input weights (axis -2 of a kernel), e.g. 2:4."""
    if score.ndim < 2 or score.shape[-2] % m:
        raise TfLthError(f"{n}:{m} sparsity needs a kernel whose input size is a multiple of {m}, got {score.shape}")
    s = np.moveaxis(np.where(mask, score, -np.inf), -2, -1)
    groups = s.reshape(-1, m)
    rank = np.argsort(np.argsort(-groups, axis=1, kind="stable"), axis=1)
    keep = np.moveaxis((rank < n).reshape(s.shape), -1, -2)
    return keep & mask


def keep_counts(masks: Masks, rates: Mapping[str, float], rounds: float) -> dict[str, int]:
    """Weights each kernel keeps after ``rounds`` rounds at its rate: ``round(size * (1 - rate) ** rounds)``."""
    return {k: int(round(masks[k].size * (1 - rates[k]) ** rounds)) for k in masks}


# scope name -> select(score, alive, rates, rounds, block): the masks kept after ``rounds`` rounds
SCOPES: Registry[Callable] = Registry("scope")


@SCOPES.register("layerwise")
def _layerwise(score, alive: Masks, rates, rounds, block) -> Masks:
    return select_layerwise(score, alive, keep_counts(alive, rates, rounds), block)


@SCOPES.register("global")
def _global(score, alive: Masks, rates, rounds, block) -> Masks:
    """One threshold over all kernels; the rate is the same for all of them (global scope has no
    per-layer rates)."""
    if len(set(rates.values())) > 1:
        raise TfLthError("global pruning takes one rate for all layers")
    total = sum(m.size for m in alive.values())
    rate = next(iter(rates.values()), 0.0)
    return select_global(score, alive, int(round(total * (1 - rate) ** rounds)), block)


def prune(score: Mapping[str, np.ndarray], alive: Masks, rates: Mapping[str, float], rounds: float,
          scope: str = "layerwise", block: tuple[int, int] | None = None,
          n_of_m: NofM | None = None) -> Masks:
    """The masks of ``alive``'s kernels after ``rounds`` rounds of pruning at ``rates``: selected by
    ``scope`` in units of ``block``, then at most n of every m inputs kept (kernels of rank >= 2)."""
    new = SCOPES.get(scope)(score, alive, rates, rounds, block)
    if n_of_m:
        n, m = n_of_m
        new = {k: m_by_n(score[k], v, n, m) if v.ndim >= 2 else v for k, v in new.items()}
    return new


def level_rates(sizes: Mapping[str, int], rates: Mapping[str, float], remaining: float) -> dict[str, float]:
    """One-shot rates per key that leave ``remaining`` (a fraction) of all weights of ``sizes``, the
    kernels in the ratio of their per-round ``rates``: each keeps ``(1 - rate) ** k`` of its weights
    for one real ``k``, found by bisection (a level reached as k rounds' worth in one step)."""
    if not 0 < remaining < 1:
        raise TfLthError(f"weights remaining {remaining} must be a fraction strictly between 0 and 1")
    total = sum(sizes.values())

    def left(k):
        return sum(n * (1 - rates[key]) ** k for key, n in sizes.items()) / total

    lo, hi = 0.0, 1.0
    while left(hi) > remaining:
        hi *= 2
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if left(mid) > remaining else (lo, mid)
    k = (lo + hi) / 2
    return {key: 1 - (1 - rates[key]) ** k for key in sizes}


def random_like(masks: Masks, rng: np.random.Generator) -> Masks:
    """Random masks with exactly the same number of survivors per key (the random-pruning control)."""
    out = {}
    for k in sorted(masks):
        m = masks[k]
        flat = np.zeros(m.size, bool)
        flat[rng.permutation(m.size)[: int(m.sum())]] = True
        out[k] = flat.reshape(m.shape)
    return out


def sparsity(masks: Masks) -> dict[str, float]:
    """Fraction of zeros per key."""
    return {k: float(1.0 - m.mean()) for k, m in masks.items()}


def remaining(masks: Masks) -> float:
    """Fraction of all masked weights still alive."""
    total = sum(m.size for m in masks.values())
    return float(sum(int(m.sum()) for m in masks.values()) / max(total, 1))
