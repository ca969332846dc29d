"""Fabrics as typed networkx graphs: model, parameterised builders, YAML loader and analysis.

``load_topology("dgx_h100", nodes=4)`` is the usual entry point; ``moesim topo`` (``cli.py``)
shows, routes and draws the same files from the command line.
"""
from moesim.topology.model import LINK_KINDS, NODE_TYPES, Link, Route, Topology
from moesim.topology.loader import available_topologies, build_topology, load_topology
from moesim.topology.spec import GPU_KINDS, INTRA_TYPES, SCALE_OUT_TYPES, FabricSpec

__all__ = [
    "GPU_KINDS", "INTRA_TYPES", "LINK_KINDS", "NODE_TYPES", "SCALE_OUT_TYPES",
    "FabricSpec", "Link", "Route", "Topology",
    "available_topologies", "build_topology", "load_topology",
]
