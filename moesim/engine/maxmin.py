"""Max-min fair rate allocation, vectorised with numpy.

Given flows that each cross a set of links and per-link capacities, return each flow's rate
such that no link is over capacity and no flow can get more without taking from a flow that
has less. This is the fluid network's only numerical kernel; it is pure and tested on its own.

The solver freezes, in rounds, every *locally* bottlenecked link at once: a link whose fair
share (remaining capacity over unfrozen flows) is no larger than the fair share of any other
link its flows cross. Progressive filling would saturate such a link exactly at that share
(a neighbour's share only grows as flows elsewhere freeze below it), so the answer is the
max-min allocation progressive filling gives, in far fewer rounds than one per distinct rate.
Every step is local to the links a flow crosses, so solving one connected component of the
flow-link graph alone gives bit-for-bit the rates a solve of the whole graph gives it, as long
as the component's flows keep their relative order.
"""
from __future__ import annotations

import numpy as np

# Shares within this relative distance are one level (floating-point ties).
_TIE = 1e-12


def maxmin_rates(inc_flow: np.ndarray, inc_link: np.ndarray, num_flows: int, capacity: np.ndarray) -> np.ndarray:
    """Max-min fair rates.

    Args:
        inc_flow: flow index of each (flow, link) incidence.
        inc_link: link index of each incidence (same length as ``inc_flow``).
        num_flows: number of flows; a flow with no incidence gets rate ``inf``.
        capacity: capacity of every link (bytes per ns), indexed by link id.

    Returns:
        float64 array of rates, one per flow.
    """
    rates = np.full(num_flows, np.inf)
    inc_flow = np.asarray(inc_flow, dtype=np.int64)
    if inc_flow.size == 0:
        return rates
    order = np.argsort(inc_flow, kind="stable")
    flows_sorted = inc_flow[order]
    used, compact_link = np.unique(np.asarray(inc_link, dtype=np.int64)[order], return_inverse=True)
    present, compact_flow = np.unique(flows_sorted, return_inverse=True)
    remaining = np.asarray(capacity, dtype=np.float64)[used]
    rates[present] = solve_compact(compact_flow, compact_link, present.size, remaining)
    return rates


def solve_compact(inc_flow: np.ndarray, inc_link: np.ndarray, num_flows: int, remaining: np.ndarray) -> np.ndarray:
    """Max-min rates on compacted indices; the kernel behind :func:`maxmin_rates`.

    ``inc_flow`` is sorted and covers ``0..num_flows-1`` (every flow crosses a link);
    ``inc_link`` indexes ``remaining``, the capacity left on each link in use (copied, not
    changed). Returns one rate per flow.
    """
    rates = np.empty(num_flows)
    remaining = np.maximum(np.asarray(remaining, dtype=np.float64), 0.0)
    num_links = remaining.shape[0]
    f, l = inc_flow, inc_link
    while f.size:
        boundary = np.empty(f.size, dtype=bool)
        boundary[0] = True
        np.not_equal(f[1:], f[:-1], out=boundary[1:])
        starts = np.flatnonzero(boundary)
        local = np.cumsum(boundary) - 1            # flow segment of each incidence
        share = remaining / np.maximum(np.bincount(l, minlength=num_links), 1)
        flow_min = np.minimum.reduceat(share[l], starts)
        inc_min = flow_min[local]
        link_min = np.full(num_links, np.inf)
        np.minimum.at(link_min, l, inc_min)
        frozen = np.logical_or.reduceat((share <= link_min * (1.0 + _TIE))[l], starts)
        rates[f[starts[frozen]]] = flow_min[frozen]
        took = frozen[local]
        remaining -= np.bincount(l[took], weights=inc_min[took], minlength=num_links)
        np.maximum(remaining, 0.0, out=remaining)
        keep = ~took
        f, l = f[keep], l[keep]
    return rates


def solve_padded(paths: np.ndarray, remaining: np.ndarray) -> np.ndarray:
    """:func:`solve_compact` on a padded path matrix: row ``f`` lists flow f's link indices into
    ``remaining``, padded with ``remaining.size`` (a link no flow is limited by). The same
    rounds, in the same order of incidences, so the same rates bit for bit; a fixed row width
    replaces the per-flow segment bookkeeping with row-wise minima (fewer numpy calls a round)."""
    num_flows, width = paths.shape
    pad = remaining.shape[0]
    rem = np.append(np.maximum(np.asarray(remaining, dtype=np.float64), 0.0), np.inf)
    rates = np.empty(num_flows)
    ids = np.arange(num_flows)
    while ids.size:
        flat = paths.ravel()
        share = rem / np.maximum(np.bincount(flat, minlength=pad + 1), 1)
        flow_min = share[paths].min(axis=1)
        inc_min = np.repeat(flow_min, width)
        link_min = np.full(pad + 1, np.inf)
        np.minimum.at(link_min, flat, inc_min)
        bottleneck = share <= link_min * (1.0 + _TIE)
        bottleneck[pad] = False
        frozen = bottleneck[paths].any(axis=1)
        rates[ids[frozen]] = flow_min[frozen]
        rem -= np.bincount(paths[frozen].ravel(), weights=np.repeat(flow_min[frozen], width), minlength=pad + 1)
        np.maximum(rem, 0.0, out=rem)
        keep = ~frozen
        paths, ids = paths[keep], ids[keep]
    return rates


def link_components(inc_flow: np.ndarray, inc_link: np.ndarray, num_links: int) -> np.ndarray:
    """Connected components of links joined by flows: for each link, the smallest link index of
    its component (links no flow crosses are alone). ``inc_flow`` sorted, as in
    :func:`solve_compact`. Min-label propagation with pointer jumping, all vectorised."""
    label = np.arange(num_links)
    if not inc_flow.size:
        return label
    boundary = np.empty(inc_flow.size, dtype=bool)
    boundary[0] = True
    np.not_equal(inc_flow[1:], inc_flow[:-1], out=boundary[1:])
    starts = np.flatnonzero(boundary)
    local = np.cumsum(boundary) - 1
    while True:
        flow_label = np.minimum.reduceat(label[inc_link], starts)
        new = label.copy()
        np.minimum.at(new, inc_link, flow_label[local])
        new = new[new]  # pointer jumping: a label's own label is smaller still
        if np.array_equal(new, label):
            return label
        label = new
