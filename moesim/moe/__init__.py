"""Mixture-of-Experts routing and expert placement: pure, seeded, engine-free.

Routing (:mod:`.routing`, :mod:`.sampling`, :mod:`.popularity`, :mod:`.traces`) produces
``counts[layer, microbatch, src_rank, expert]``; placement (:mod:`.layout`, :mod:`.placement`,
:mod:`.eplb`, :mod:`.topology_aware`) decides which GPU holds which experts and replicas;
:mod:`.dispatch` splits a sample's tokens over replicas; :mod:`.metrics` measures balance and
locality. The engine replay (``lowering``) consumes these arrays.
"""
from moesim.moe.dispatch import SPLIT_POLICIES, TokenSplit, split_to_gpus
from moesim.moe.layout import Placement, node_index
from moesim.moe.placement import PLACEMENTS, PlacementInputs, make_placement
from moesim.moe.routing import (
    RoutingBatch,
    RoutingConfig,
    apply_capacity,
    expert_capacity,
    expert_nodes,
    generate_counts,
    generate_routing,
    layer_popularity,
)
from moesim.moe.sampling import deepseek_gate, sample_topk
from moesim.moe.traces import RoutingTrace, load_trace, write_assignments_trace, write_counts_trace

__all__ = [
    "PLACEMENTS", "SPLIT_POLICIES", "Placement", "PlacementInputs", "RoutingBatch", "RoutingConfig",
    "RoutingTrace", "TokenSplit", "apply_capacity", "deepseek_gate", "expert_capacity", "expert_nodes",
    "generate_counts", "generate_routing", "layer_popularity", "load_trace", "make_placement", "node_index",
    "sample_topk", "split_to_gpus", "write_assignments_trace", "write_counts_trace",
]
