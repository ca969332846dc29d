"""Fabrics as typed networkx graphs: model, parameterised builders and the YAML loader."""
from moesim.topology.model import LINK_KINDS, NODE_TYPES, Link, Route, Topology

__all__ = ["LINK_KINDS", "NODE_TYPES", "Link", "Route", "Topology"]
