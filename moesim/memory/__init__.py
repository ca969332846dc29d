"""Per-GPU memory budgets: weights, gradients, optimizer state, activations, buffers, KV cache.

``config.py`` (:class:`MemoryConfig`), ``layout.py`` (layers per pipeline rank, peak live
activations over a schedule), ``parts.py`` (the arithmetic of each part), ``budget.py``
(:func:`memory_budget` -> :class:`Budget`), ``validate.py`` (:func:`validate_budget`),
``render.py`` (rich tables), ``cli.py`` (``moesim memory show``).
"""
from moesim.memory.budget import PARTS, Budget, RankBudget, Sharding, memory_budget
from moesim.memory.config import MemoryConfig
from moesim.memory.parts import kv_cache_bytes_per_token
from moesim.memory.validate import validate_budget

__all__ = ["PARTS", "Budget", "MemoryConfig", "RankBudget", "Sharding", "kv_cache_bytes_per_token", "memory_budget",
           "validate_budget"]
