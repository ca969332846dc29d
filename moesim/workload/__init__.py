"""Model specs and the per-op FLOPs/bytes they imply: dense transformers, MoE, custom blocks.

``transformer.py`` (dense spec, attention and FFN ops), ``moe.py`` (MoE spec, router, experts,
permutation, all-to-all payloads), ``custom.py`` (user-described layers), ``layers.py`` (one
entry point per layer for any spec), ``presets.py`` (published models by name).
"""
from moesim.workload.common import CommOp, comm_only, compute_only
from moesim.workload.moe import MoESpec
from moesim.workload.presets import MODELS, get_model
from moesim.workload.transformer import TransformerSpec

__all__ = ["MODELS", "CommOp", "MoESpec", "TransformerSpec", "comm_only", "compute_only", "get_model"]
