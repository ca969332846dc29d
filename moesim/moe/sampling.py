"""Per-token expert selection: plain, group-limited and node-limited top-k, vectorised.

The score model: token t gives expert i the affinity ``score = log p_i + Gumbel``, so the plain
top-k of the scores is a Plackett-Luce draw of k distinct experts from the popularity ``p``
(the Zipf calibration of reference moe_and_hardware.md §5.2). Group-limited routing follows the
DeepSeek-V3 gate (§1.1, ``Gate.forward``): a group's score is the sum of its top
``top_k // topk_groups`` expert scores (2 for V3), each token keeps its ``topk_groups`` best
groups, then takes its top_k experts inside them. Node-limited routing is the same with one
group per node, so a token reaches at most M nodes.

Nothing materialises a tokens x experts score matrix. In key form (``key = Exp(1) / p``, score
``= -log key``) the ordered keys inside one group are a sequential process: the next smallest key
adds ``Exp(1) / (mass not yet picked)`` and its expert is drawn from the unpicked ones in
proportion to ``p`` (memorylessness). So each (token, group) row draws only as many experts as
it needs: ``top_k // topk_groups`` per group to score the groups, then up to top_k in the chosen
groups. A distinct draw is a free draw kept unless it repeats; repeats are redrawn exactly from
the unchosen mass by inverse CDF, skipping the chosen experts' intervals. :func:`deepseek_gate`
applies the DeepSeek rule to an explicit score matrix.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from moesim.errors import ConfigError

CHUNK_TOKENS = 32768
GUIDE_PER_EXPERT = 8  # guide-table entries per expert for inverse-CDF draws
_TINY_MASS = 1e-300


@dataclass(frozen=True)
class GroupLayout:
    """Experts sorted so each group is contiguous: ``order[j]`` is the expert at sorted slot j."""

    group_of: np.ndarray
    order: np.ndarray
    starts: np.ndarray
    sizes: np.ndarray

    @classmethod
    def from_groups(cls, group_of: np.ndarray) -> "GroupLayout":
        group_of = np.asarray(group_of, dtype=np.int64)
        num_groups = int(group_of.max()) + 1
        sizes = np.bincount(group_of, minlength=num_groups)
        if (sizes == 0).any():
            raise ConfigError("group_of", f"group(s) {np.flatnonzero(sizes == 0).tolist()} hold no expert",
                              "number groups 0..G-1 with at least one expert each")
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        return cls(group_of, np.argsort(group_of, kind="stable"), starts, sizes)

    @property
    def num_groups(self) -> int:
        return int(self.sizes.size)


def contiguous_groups(num_experts: int, n_groups: int) -> np.ndarray:
    """``group_of`` for DeepSeek groups: experts ``[g*E/G, (g+1)*E/G)`` form group g."""
    return np.arange(num_experts) // (num_experts // n_groups)


def group_score_width(top_k: int, topk_groups: int) -> int:
    """Experts summed into a group's score: ``top_k // topk_groups`` (V3: 8 // 4 = 2), at least 1."""
    return max(1, top_k // topk_groups)


def check_groups(layout: GroupLayout, top_k: int, topk_groups: int) -> None:
    """ConfigError unless every token can always find top_k experts in its chosen groups."""
    if topk_groups > layout.num_groups:
        raise ConfigError("topk_groups", f"{topk_groups} exceeds the {layout.num_groups} groups",
                          "use topk_groups <= number of groups (nodes)")
    width = group_score_width(top_k, topk_groups)
    if layout.sizes.min() < width:
        raise ConfigError("group_of", f"a group holds {layout.sizes.min()} experts, fewer than the "
                          f"{width} summed into a group score", "use larger groups or fewer top_k")
    if np.sort(layout.sizes)[:topk_groups].sum() < top_k:
        raise ConfigError("topk_groups", f"the {topk_groups} smallest groups hold fewer than top_k = {top_k} "
                          "experts", "raise topk_groups (max_nodes_per_token) or balance the groups")


class _Sampler:
    """Draws from the popularity restricted to each row's group, for many rows at once."""

    def __init__(self, popularity: np.ndarray, layout: GroupLayout, rng: np.random.Generator) -> None:
        self.rng = rng
        self.layout = layout
        self.p = np.asarray(popularity, dtype=np.float64)[layout.order]
        self.cdf0 = np.concatenate([[0.0], np.cumsum(self.p)])
        self.mass = self.cdf0[layout.starts + layout.sizes] - self.cdf0[layout.starts]
        # guide table: guide[b] = last slot whose CDF interval starts at or before b / size
        self.guide = np.searchsorted(self.cdf0, np.arange(GUIDE_PER_EXPERT * self.p.size) / (GUIDE_PER_EXPERT *
                                     self.p.size), side="right") - 1

    def locate(self, u: np.ndarray) -> np.ndarray:
        """Slot whose CDF interval holds each ``u`` (inverse CDF): a guide-table jump, two
        one-step corrections, binary search for the few still short."""
        last = self.p.size - 1
        idx = np.minimum(self.guide[np.minimum((u * self.guide.size).astype(np.int64), self.guide.size - 1)], last)
        for _ in range(2):
            idx = np.minimum(idx + (self.cdf0[idx + 1] <= u), last)
        short = np.flatnonzero(self.cdf0[idx + 1] <= u)
        idx[short] = np.minimum(np.searchsorted(self.cdf0, u[short], side="right") - 1, last)
        return idx

    def draw_excluding(self, group: np.ndarray, chosen: np.ndarray) -> np.ndarray:
        """One expert (sorted slot id) per row from its group, in proportion to p, never one of
        the row's ``chosen``. A free draw is kept unless it repeats (rejection, exact); repeats
        are redrawn directly from the unchosen mass (:meth:`_draw_skipping`)."""
        out = self._draw(group)
        if chosen.shape[1] == 0:
            return out
        todo = np.flatnonzero(_any_equal(chosen, out))
        if todo.size:
            out[todo] = self._draw_skipping(group[todo], chosen[todo])
        return out

    def _draw(self, group: np.ndarray) -> np.ndarray:
        """Independent draws from each row's group (inverse CDF on the global cumulative sum)."""
        if self.layout.num_groups == 1:
            return self.locate(self.rng.random(group.size) * self.mass[0])
        start = self.layout.starts[group]
        u = self.cdf0[start] + self.rng.random(group.size) * self.mass[group]
        return np.clip(self.locate(u), start, start + self.layout.sizes[group] - 1)

    def _draw_skipping(self, group: np.ndarray, chosen: np.ndarray) -> np.ndarray:
        """Exact draw from the unchosen experts: a uniform point in the unchosen mass, then walk
        the chosen experts in slot order, jumping over each one's CDF interval it reaches.
        Chosen experts of other groups (a token's picks elsewhere) are ignored."""
        start, size = self.layout.starts[group], self.layout.sizes[group]
        inside = (chosen >= start[:, None]) & (chosen < (start + size)[:, None])
        chosen = np.sort(np.where(inside, chosen, self.p.size), axis=1)  # outsiders last
        p_ext = np.append(self.p, 0.0)
        edge = np.append(self.cdf0[:-1], np.inf)
        x = self.cdf0[start] + self.rng.random(group.size) * np.maximum(
            self.mass[group] - _sum_columns(p_ext[chosen]), 0.0)
        for c in range(chosen.shape[1]):
            x = np.where(x >= edge[chosen[:, c]], x + p_ext[chosen[:, c]], x)
        idx = np.clip(self.locate(x), start, start + size - 1)
        stuck = np.flatnonzero(_any_equal(chosen, idx))  # float round-off at an edge
        if stuck.size:
            idx[stuck] = self._draw_masked(group[stuck], chosen[stuck])
        return idx

    def _draw_masked(self, group: np.ndarray, chosen: np.ndarray) -> np.ndarray:
        """Exact draw by explicit weights over the group with the chosen ones zeroed (slow, sure)."""
        start, size = self.layout.starts[group], self.layout.sizes[group]
        width = int(size.max())
        offsets = np.arange(width)
        members = np.minimum(start[:, None] + offsets[None, :], self.p.size - 1)
        w = np.zeros((group.size, width + 1))  # the last column absorbs picks outside the group
        w[:, :width] = np.where(offsets[None, :] < size[:, None], self.p[members], 0.0)
        local = chosen - start[:, None]
        w[np.arange(group.size)[:, None], np.where((local >= 0) & (local < size[:, None]), local, width)] = 0.0
        cum = np.cumsum(w[:, :width], axis=1)
        u = self.rng.random(group.size) * cum[:, -1]
        return start + np.minimum((cum <= u[:, None]).sum(axis=1), size - 1)

    def sequence(self, group: np.ndarray, length: int) -> np.ndarray:
        """The first ``length`` experts of each row's Plackett-Luce order inside its group."""
        picks = np.empty((group.size, length), dtype=np.int64)
        for col in range(length):
            picks[:, col] = self.draw_excluding(group, picks[:, :col])
        return picks

    def race_keys(self, group: np.ndarray, picks: np.ndarray, length: int) -> np.ndarray:
        """The ``length`` smallest exponential-race keys of each row's group, given the experts
        holding the first ``length - 1`` of them: key j adds Exp(1) / (mass not yet picked)."""
        p_pick = self.p[picks[:, :length - 1]]
        used_before = np.concatenate([np.zeros((group.size, 1)), _cumsum_columns(p_pick)], axis=1)
        remaining = np.maximum(self.mass[group][:, None] - used_before, _TINY_MASS)
        return _cumsum_columns(self.rng.standard_exponential((group.size, length)) / remaining)


def sample_topk(rng: np.random.Generator, popularity: np.ndarray, num_tokens: int, top_k: int,
                group_of: np.ndarray | None = None, topk_groups: int = 1) -> np.ndarray:
    """Experts chosen by ``num_tokens`` tokens: int array ``[num_tokens, top_k]``, distinct per row.

    ``group_of[expert]`` (groups or nodes) with ``topk_groups`` < number of groups turns on
    group-limited selection; otherwise every token picks top_k of all experts.
    """
    p = np.asarray(popularity, dtype=np.float64)
    if not 1 <= top_k <= p.size:
        raise ConfigError("top_k", f"{top_k} must be in 1..num_experts = {p.size}", "lower top_k")
    if group_of is not None:
        group_of = np.unique(np.asarray(group_of), return_inverse=True)[1].reshape(-1)  # labels -> 0..G-1
        if group_of.size != p.size:
            raise ConfigError("group_of", f"{group_of.size} entries for {p.size} experts", "give one group per expert")
    limited = group_of is not None and topk_groups < int(np.max(group_of)) + 1
    layout = GroupLayout.from_groups(group_of if limited else np.zeros(p.size, dtype=np.int64))
    if limited:
        check_groups(layout, top_k, topk_groups)
    sampler = _Sampler(p, layout, rng)
    out = np.empty((num_tokens, top_k), dtype=np.int64)
    for lo in range(0, num_tokens, CHUNK_TOKENS):
        tokens = min(num_tokens, lo + CHUNK_TOKENS) - lo
        if limited:
            picks = _limited_chunk(sampler, tokens, top_k, topk_groups)
        else:
            picks = sampler.sequence(np.zeros(tokens, dtype=np.int64), top_k)
        out[lo:lo + tokens] = layout.order[picks]
    return out


def _limited_chunk(sampler: _Sampler, tokens: int, top_k: int, topk_groups: int) -> np.ndarray:
    """Score every group by its top ``width`` keys, keep ``topk_groups``, then merge their
    key sequences, drawing an expert only when its key is among the token's top_k."""
    num_groups = sampler.layout.num_groups
    width = group_score_width(top_k, topk_groups)
    rows = np.tile(np.arange(num_groups), tokens)
    head = sampler.sequence(rows, width - 1)
    head_keys = sampler.race_keys(rows, head, width)
    score = _sum_columns(np.log(head_keys)).reshape(tokens, num_groups)  # = -(sum of top scores)
    best = np.argpartition(score, topk_groups - 1, axis=1)[:, :topk_groups]
    chosen = (np.arange(tokens)[:, None] * num_groups + best)
    return _merge(sampler, best, head[chosen], head_keys[chosen], top_k)


def _merge(sampler: _Sampler, group: np.ndarray, head: np.ndarray, head_keys: np.ndarray,
           top_k: int) -> np.ndarray:
    """k-way merge of the chosen groups' ascending key sequences ``[tokens, topk_groups, ...]``."""
    tokens, chosen_groups = group.shape
    width = head_keys.shape[2]
    row0 = np.arange(tokens) * chosen_groups
    next_key = head_keys[:, :, 0].ravel()  # flat [token * chosen_groups + g] views from here on
    group, taken, used = group.ravel(), np.zeros(group.size, dtype=np.int64), np.zeros(group.size)
    head, head_keys = head.reshape(group.size, width - 1), head_keys.reshape(group.size, width)
    picks = np.empty((tokens, top_k), dtype=np.int64)
    for col in range(top_k):
        at = row0 + np.argmin(next_key.reshape(tokens, chosen_groups), axis=1)
        n, grp = taken[at], group[at]
        known = n < width - 1
        ids = np.empty(tokens, dtype=np.int64)
        ids[known] = head[at[known], n[known]]
        ids[~known] = sampler.draw_excluding(grp[~known], picks[~known, :col])
        picks[:, col] = ids
        used[at] += sampler.p[ids]
        taken[at] = n + 1
        fresh = sampler.rng.standard_exponential(tokens) / np.maximum(sampler.mass[grp] - used[at], _TINY_MASS)
        grown = np.where(n + 1 < sampler.layout.sizes[grp], next_key[at] + fresh, np.inf)
        next_key[at] = np.where(n + 1 < width, head_keys[at, np.minimum(n + 1, width - 1)], grown)
    return picks


def _cumsum_columns(x: np.ndarray) -> np.ndarray:
    """``np.cumsum(x, axis=1)`` for a few columns, a column at a time (cumsum adds in order, so
    the same floats; numpy's cumsum along a short axis is slow)."""
    out = np.empty_like(x)
    if x.shape[1]:
        out[:, 0] = x[:, 0]
    for c in range(1, x.shape[1]):
        out[:, c] = out[:, c - 1] + x[:, c]
    return out


def _sum_columns(x: np.ndarray) -> np.ndarray:
    """``x.sum(axis=1)``: for fewer than 8 columns numpy adds them in order, as this loop does."""
    if not 0 < x.shape[1] < 8:
        return x.sum(axis=1)
    out = x[:, 0].copy()
    for c in range(1, x.shape[1]):
        out += x[:, c]
    return out


def _any_equal(chosen: np.ndarray, values: np.ndarray) -> np.ndarray:
    """``(chosen == values[:, None]).any(axis=1)``, a column at a time."""
    hit = np.zeros(values.shape[0], dtype=bool)
    for c in range(chosen.shape[1]):
        hit |= chosen[:, c] == values
    return hit


def deepseek_gate(scores: np.ndarray, top_k: int, n_groups: int = 1, topk_groups: int = 1,
                  bias: np.ndarray | None = None) -> np.ndarray:
    """DeepSeek-V3 ``Gate.forward`` selection on explicit ``scores[tokens, experts]``.

    ``bias`` (aux-loss-free balancing) shifts selection only. Groups are contiguous expert
    ranges; a group's score is the sum of its top ``top_k // topk_groups`` biased scores; the
    ``topk_groups`` best groups stay, the rest are masked, then the top_k experts are taken.
    Returns expert ids ``[tokens, top_k]``, best first.
    """
    s = np.asarray(scores, dtype=np.float64)
    if bias is not None:
        s = s + np.asarray(bias, dtype=np.float64)[None, :]
    tokens, num_experts = s.shape
    if n_groups > 1 and topk_groups < n_groups:
        width = group_score_width(top_k, topk_groups)
        grouped = s.reshape(tokens, n_groups, num_experts // n_groups)
        group_score = -np.sort(-grouped, axis=2)[:, :, :width].sum(axis=2)
        keep = np.argsort(-group_score, axis=1, kind="stable")[:, :topk_groups]
        mask = np.ones((tokens, n_groups), dtype=bool)
        np.put_along_axis(mask, keep, False, axis=1)
        s = np.where(np.repeat(mask, num_experts // n_groups, axis=1), -np.inf, s)
    return np.argsort(-s, axis=1, kind="stable")[:, :top_k]
