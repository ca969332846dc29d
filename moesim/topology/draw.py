"""Draw a :class:`Topology` as a layered picture (PNG/SVG/PDF) with matplotlib's Agg backend.

Rows from top to bottom: spines, leaves, NICs, GPUs, NVSwitch/PCIe switches, CPUs. Host-local
nodes sit in their host's column block; leaves and spines spread across the whole width. Links
are coloured by kind. No pyplot: a bare ``Figure`` keeps global matplotlib state untouched.
"""
from __future__ import annotations

import re
from pathlib import Path

from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from moesim.topology.model import Topology

ROW_OF_TYPE = {"spine": 5, "leaf": 4, "nic": 3, "gpu": 2, "nvswitch": 1, "pcie_switch": 1, "cpu": 0}
KIND_COLORS = {"nvswitch": "tab:green", "nvlink": "tab:olive", "pcie": "tab:blue", "ib": "tab:red",
               "ethernet": "tab:orange", "c2c": "tab:purple"}
TYPE_MARKERS = {"gpu": ("s", "black"), "nvswitch": ("D", "tab:green"), "pcie_switch": ("D", "tab:blue"),
                "cpu": ("o", "tab:purple"), "nic": ("^", "tab:gray"), "leaf": ("h", "tab:red"), "spine": ("H", "darkred")}
MAX_LABELLED_NODES = 120


def _natural(name: str) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(name))]


def layout(topo: Topology) -> dict[str, tuple[float, float]]:
    """(x, y) of every node: y = layer row, x = position inside its host block or the full width."""
    g = topo.graph
    num_hosts = max(1, topo.num_hosts)
    rows: dict[tuple[int, object], list[str]] = {}
    for node, d in g.nodes(data=True):
        row = ROW_OF_TYPE.get(d.get("type"), 0)
        host = d.get("host", 0) if d.get("type") == "gpu" else d.get("host")
        rows.setdefault((row, host), []).append(node)
    pos = {}
    for (row, host), nodes in rows.items():
        nodes.sort(key=_natural)
        left, width = (0.0, float(num_hosts)) if host is None else (float(host), 1.0)
        for i, node in enumerate(nodes):
            pos[node] = (left + width * (i + 0.5) / len(nodes), float(row))
    return pos


def draw_topology(topo: Topology, path: str | Path, dpi: int = 120) -> Path:
    """Write the picture to ``path`` (format from the suffix) and return the path."""
    pos = layout(topo)
    fig = Figure(figsize=(min(40.0, 4.0 + 3.0 * topo.num_hosts), 6.0))
    ax = fig.subplots()
    seen: set[tuple[str, str]] = set()
    by_kind: dict[str, list] = {}
    for l in topo.links:
        if (l.dst, l.src) in seen:
            continue
        seen.add((l.src, l.dst))
        by_kind.setdefault(l.kind, []).append([pos[l.src], pos[l.dst]])
    for kind, segments in by_kind.items():
        ax.add_collection(LineCollection(segments, colors=KIND_COLORS.get(kind, "gray"), linewidths=0.6, alpha=0.6))
    for node_type, (marker, color) in TYPE_MARKERS.items():
        pts = [pos[n] for n, d in topo.graph.nodes(data=True) if d.get("type") == node_type]
        if pts:
            ax.scatter([p[0] for p in pts], [p[1] for p in pts], marker=marker, c=color, s=30, zorder=3, label=node_type)
    if topo.graph.number_of_nodes() <= MAX_LABELLED_NODES:
        for node, (x, y) in pos.items():
            ax.annotate(str(node), (x, y), xytext=(0, -10), textcoords="offset points", ha="center", va="top", fontsize=6)
    handles = [Line2D([], [], color=KIND_COLORS.get(k, "gray"), label=k) for k in sorted(by_kind)]
    ax.legend(handles=handles + ax.get_legend_handles_labels()[0], loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=7)
    ax.set_title(f"{topo.name}: {topo.num_gpus} x {topo.gpu_kind}, {topo.num_hosts} host(s)")
    ax.set_yticks(sorted(set(ROW_OF_TYPE.values())))
    ax.set_yticklabels(["cpu", "switch", "gpu", "nic", "leaf", "spine"])
    ax.set_xticks([])
    ax.set_xlim(0, max(1, topo.num_hosts))
    ax.set_ylim(-0.6, 5.6)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi)
    return out
