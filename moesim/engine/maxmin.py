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
        starts = boundary.nonzero()[0]
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
    rounds, in the same order of incidences, so the same rates bit for bit (see
    :func:`solve_rows`)."""
    return solve_rows(paths, np.append(np.asarray(remaining, dtype=np.float64), np.inf))


def solve_rows(paths: np.ndarray, remaining: np.ndarray) -> np.ndarray:
    """The kernel of :func:`solve_padded` on ``remaining`` that already ends with the padding
    link (``inf``): ``paths`` index into it, rows padded with ``remaining.size - 1``. A fixed
    row width replaces the per-flow segment bookkeeping with row-wise minima, and the count of
    unfrozen flows per link is kept up to date instead of recounted (integers: the same shares).
    Most solves of a simulation end in one round, so nothing a later round needs is set up
    before it."""
    num_flows, width = paths.shape
    size = remaining.shape[0]
    rem = np.maximum(remaining, 0.0)
    flat = paths.ravel()
    cnt = np.bincount(flat, minlength=size)
    scale = 1.0 + _TIE
    rates = ids = None
    link_min = np.empty(size)
    # (ufunc reductions called directly: the array methods add a Python layer per call)
    while True:
        share = rem / np.maximum(cnt, 1)
        inc_share = share[paths]
        # row-wise reductions over a few columns are numpy's slow case: on many rows, reduce a
        # transposed copy along its first axis instead (the same minima)
        wide = paths.shape[0] > 64
        flow_min = np.minimum.reduce(inc_share.T.copy() if wide else inc_share, axis=int(not wide))
        link_min.fill(np.inf)
        np.minimum.at(link_min, flat, flow_min.repeat(width))
        link_min *= scale
        # a flow freezes where it crosses a link whose share is no larger than the share of
        # any link its flows cross (the padding link, share inf, never qualifies)
        bottleneck = inc_share <= link_min[paths]
        frozen = np.logical_or.reduce(bottleneck.T.copy() if wide else bottleneck, axis=int(not wide))
        at = frozen.nonzero()[0]
        if at.size == frozen.size:
            if rates is None:
                return flow_min
            rates[ids] = flow_min
            return rates
        if rates is None:
            rates, ids = np.empty(num_flows), np.arange(num_flows)
        took = flow_min[at]
        rates[ids[at]] = took
        done = paths.take(at, axis=0).ravel()  # (take: faster than fancy indexing on rows)
        rem -= np.bincount(done, weights=took.repeat(width), minlength=size)
        np.maximum(rem, 0.0, out=rem)
        cnt -= np.bincount(done, minlength=size)
        keep = (~frozen).nonzero()[0]
        paths, ids = paths.take(keep, axis=0), ids.take(keep)
        flat = paths.ravel()


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
    starts = boundary.nonzero()[0]
    local = np.cumsum(boundary) - 1
    while True:
        flow_label = np.minimum.reduceat(label[inc_link], starts)
        new = label.copy()
        np.minimum.at(new, inc_link, flow_label[local])
        new = new[new]  # pointer jumping: a label's own label is smaller still
        if np.array_equal(new, label):
            return label
        label = new
