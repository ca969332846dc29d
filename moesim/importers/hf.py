"""``moesim model from-hf``: a Hugging Face ``config.json`` read into a spec, and its report.

The reading itself lives in :mod:`moesim.workload.hf_config` (the presets use it too); this
module renders what it found: the spec's shape, its parameter counts, which config field set
which spec field, which fields moesim does not model (and what it does instead) and which carry
no cost. JSON output (``to_json``) holds the same facts for scripts.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from moesim.workload.hf_config import HFImport, load_hf_config

SHAPE_FIELDS = ("num_layers", "hidden", "num_heads", "num_kv_heads", "head_dim", "ffn_hidden", "vocab", "seq_len",
                "dtype", "tied_embeddings", "q_lora_rank", "kv_lora_rank", "qk_rope_head_dim", "v_head_dim",
                "sliding_window", "attention_sinks", "num_nextn_predict_layers", "num_experts", "top_k",
                "expert_ffn_hidden", "num_shared_experts", "shared_expert_ffn_hidden", "first_k_dense", "moe_layer_freq", "n_groups",
                "topk_groups", "score_func", "norm", "qk_norm")


def import_config(path: str | Path, *, name: str | None = None, seq_len: int | None = None,
                  strict: bool = True) -> HFImport:
    """Read ``path`` (a ``config.json`` or a directory holding one)."""
    return load_hf_config(path, name=name, seq_len=seq_len, strict=strict)


def shape_rows(imp: HFImport) -> list[tuple[str, str]]:
    """(spec field, value) for the fields that describe the model, skipping zero / default MLA fields."""
    rows = []
    for field in SHAPE_FIELDS:
        if not hasattr(imp.spec, field):
            continue
        value = getattr(imp.spec, field)
        if field in ("q_lora_rank", "kv_lora_rank", "qk_rope_head_dim", "v_head_dim", "sliding_window",
                     "num_nextn_predict_layers", "num_shared_experts", "shared_expert_ffn_hidden", "first_k_dense",
                     "attention_sinks", "qk_norm") and not value:
            continue
        rows.append((field, _short(value)))
    if getattr(imp.spec, "layer_types", ()):
        kinds = imp.spec.layer_types
        rows.append(("layer_types", f"{kinds.count('sliding_attention')} sliding, {kinds.count('full_attention')} full"))
    return rows


def summary_lines(imp: HFImport) -> list[str]:
    """Parameter counts and the source, as text lines."""
    spec = imp.spec
    lines = [f"{spec.name}: {type(spec).__name__} ({imp.architecture}) from {spec.source}",
             f"parameters: {spec.total_params / 1e9:.2f}B total, {spec.activated_params / 1e9:.2f}B activated per token"]
    if imp.seq_len_from:
        lines.append(f"sequence length {spec.seq_len}: {imp.seq_len_from}")
    lines.append(f"training precision {spec.dtype}" + (
        f" (config.json {', '.join(k for k in ('torch_dtype', 'dtype') if k in dict(imp.used))} is the checkpoint's "
        "storage dtype, not the training precision)" if {"torch_dtype", "dtype"} & set(dict(imp.used)) else ""))
    mtp = getattr(spec, "mtp_params", 0)
    if mtp:
        lines.append(f"MTP modules: {mtp / 1e9:.2f}B more (outside the total, as the model's own count)")
    return lines


def to_json(imp: HFImport) -> str:
    """The import as JSON text (spec fields, used / not modelled / no-cost fields)."""
    return json.dumps(imp.to_dict(), indent=1, sort_keys=True, default=_jsonable) + "\n"


def _short(value: Any) -> str:
    if isinstance(value, tuple) and len(value) > 8:
        return f"{sum(value)} of {len(value)} layers" if set(value) <= {0, 1} else f"{value[:8]}..."
    return str(value)


def _jsonable(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else str(value)
