"""Max-min fair rate allocation (progressive filling), vectorised with numpy.

Given flows that each cross a set of links and per-link capacities, return each flow's rate
such that no link is over capacity and no flow can get more without taking from a flow that
has less. This is the fluid network's only numerical kernel; it is pure and tested on its own.
"""
from __future__ import annotations

import numpy as np


def maxmin_rates(inc_flow: np.ndarray, inc_link: np.ndarray, num_flows: int, capacity: np.ndarray) -> np.ndarray:
    """Max-min fair rates by progressive filling.

    Args:
        inc_flow: flow index of each (flow, link) incidence.
        inc_link: link index of each incidence (same length as ``inc_flow``).
        num_flows: number of flows; a flow with no incidence gets rate ``inf``.
        capacity: capacity of every link (bytes per ns), indexed by link id.

    Returns:
        float64 array of rates, one per flow.
    """
    rates = np.full(num_flows, np.inf)
    if inc_flow.size == 0:
        return rates
    num_links = capacity.shape[0]
    remaining = capacity.astype(np.float64).copy()
    frozen = np.zeros(num_flows, dtype=bool)
    has_link = np.zeros(num_flows, dtype=bool)
    has_link[inc_flow] = True
    frozen[~has_link] = True
    active_inc = np.ones(inc_flow.shape[0], dtype=bool)
    while active_inc.any():
        links = inc_link[active_inc]
        counts = np.bincount(links, minlength=num_links)
        used = counts > 0
        share = np.full(num_links, np.inf)
        share[used] = np.maximum(remaining[used], 0.0) / counts[used]
        level = share.min()
        tight = used & (share <= level * (1.0 + 1e-12))
        newly = np.zeros(num_flows, dtype=bool)
        newly[inc_flow[active_inc & tight[inc_link]]] = True
        rates[newly] = level
        frozen |= newly
        took = active_inc & newly[inc_flow]
        remaining -= np.bincount(inc_link[took], minlength=num_links) * level
        active_inc &= ~took
    return rates
