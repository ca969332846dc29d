"""Expert popularity vectors: which experts a layer's router prefers, and how that drifts.

A popularity vector ``p[expert]`` (positive, sums to 1) is the router's preference in one layer
at one training step: the per-token sampler (:mod:`moesim.moe.sampling`) picks experts with
probability proportional to ``p`` (Plackett-Luce, i.e. Gumbel-top-k on ``log p``). Base shapes:
uniform, Zipf (``p ∝ rank**-s`` with a seeded permutation choosing which expert is hot,
reference moe_and_hardware.md §5.2) and Dirichlet(``alpha``). Drift moves the hot set between
steps as a pure function of ``(seed, layer, step)``: ``rotate`` rolls the vector by
``drift_rate`` experts per step; ``random_walk`` adds a Brownian motion of ``drift_rate`` per
step (standard deviation, in log-popularity) built by the Lévy midpoint construction, so step
``s`` costs O(log s) draws and every step lies on one consistent path. Every draw comes from a
``numpy.random.SeedSequence`` keyed by a purpose tag, the layer and (for drift) a tree node.
"""
from __future__ import annotations

import math

import numpy as np

POPULARITY_KINDS = ("uniform", "zipf", "dirichlet")
DRIFT_KINDS = ("none", "rotate", "random_walk")
MIN_POPULARITY = 1e-12  # floor (relative to uniform) so every expert stays reachable
DRIFT_HORIZON_LEVELS = 40  # random-walk paths are defined for steps < 2**40

_TAG_BASE = 101
_TAG_DRIFT = 102


def stream(seed: int, *key: int) -> np.random.Generator:
    """An independent generator for ``(seed, *key)``: the one way this package derives RNGs."""
    return np.random.default_rng(np.random.SeedSequence(entropy=seed, spawn_key=tuple(key)))


def zipf_popularity(num_experts: int, s: float, rng: np.random.Generator) -> np.ndarray:
    """``p ∝ rank**-s`` over ranks 1..E, ranks assigned to experts by a random permutation."""
    by_rank = np.arange(1, num_experts + 1, dtype=np.float64) ** -float(s)
    p = np.empty(num_experts)
    p[rng.permutation(num_experts)] = by_rank
    return normalise(p)


def dirichlet_popularity(num_experts: int, alpha: float, rng: np.random.Generator) -> np.ndarray:
    """One draw of a symmetric Dirichlet(alpha); small alpha gives a few very hot experts."""
    return normalise(rng.dirichlet(np.full(num_experts, float(alpha))))


def normalise(p: np.ndarray) -> np.ndarray:
    """Scale to sum 1, flooring each entry at ``MIN_POPULARITY / E`` so no expert has zero mass."""
    p = np.asarray(p, dtype=np.float64)
    p = p / p.sum()
    p = np.maximum(p, MIN_POPULARITY / p.size)
    return p / p.sum()


def base_popularity(kind: str, num_experts: int, seed: int, layer: int, *,
                    zipf_s: float = 1.0, dirichlet_alpha: float = 1.0) -> np.ndarray:
    """The step-0 popularity of ``layer`` (pass ``layer=0`` for every layer to share one)."""
    rng = stream(seed, _TAG_BASE, layer)
    if kind == "uniform":
        return np.full(num_experts, 1.0 / num_experts)
    if kind == "zipf":
        return zipf_popularity(num_experts, zipf_s, rng)
    if kind == "dirichlet":
        return dirichlet_popularity(num_experts, dirichlet_alpha, rng)
    raise AssertionError(f"unvalidated popularity kind {kind!r}")


def drifted(p0: np.ndarray, drift: str, drift_rate: float, seed: int, layer: int, step: int) -> np.ndarray:
    """Popularity at ``step`` given the step-0 vector ``p0`` (pure in its arguments)."""
    if drift == "none" or step == 0 or drift_rate == 0:
        return p0
    if drift == "rotate":
        return np.roll(p0, int(math.floor(step * drift_rate)) % p0.size)
    if drift == "random_walk":
        walk = brownian_at(seed, layer, step, p0.size, drift_rate)
        logits = np.log(p0) + walk
        return normalise(np.exp(logits - logits.max()))
    raise AssertionError(f"unvalidated drift {drift!r}")


def brownian_at(seed: int, layer: int, step: int, size: int, sigma: float) -> np.ndarray:
    """W(step) of a ``size``-dimensional Brownian motion with W(0) = 0 and Var W(1) = sigma².

    Lévy construction: W at the horizon end is drawn first, then midpoints of dyadic intervals
    are drawn conditioned on their endpoints (Brownian bridge), each from its own tree-node
    stream, so any step is reached in ``DRIFT_HORIZON_LEVELS`` draws and all steps agree.
    """
    assert 0 <= step < 2 ** DRIFT_HORIZON_LEVELS
    lo, hi, node = 0, 2 ** DRIFT_HORIZON_LEVELS, 1
    w_lo = np.zeros(size)
    w_hi = sigma * math.sqrt(hi) * stream(seed, _TAG_DRIFT, layer, 0).standard_normal(size)
    while step != lo:
        mid = (lo + hi) // 2
        z = stream(seed, _TAG_DRIFT, layer, node).standard_normal(size)
        w_mid = 0.5 * (w_lo + w_hi) + sigma * math.sqrt((hi - lo) / 4.0) * z
        if step < mid:
            hi, w_hi, node = mid, w_mid, 2 * node
        else:
            lo, w_lo, node = mid, w_mid, 2 * node + 1
    return w_lo


def popularity_at(kind: str, num_experts: int, seed: int, layer: int, step: int, *,
                  zipf_s: float = 1.0, dirichlet_alpha: float = 1.0,
                  drift: str = "none", drift_rate: float = 0.0) -> np.ndarray:
    """Base popularity of ``layer`` moved by ``drift`` to ``step``."""
    p0 = base_popularity(kind, num_experts, seed, layer, zipf_s=zipf_s, dirichlet_alpha=dirichlet_alpha)
    return drifted(p0, drift, drift_rate, seed, layer, step)
