"""Memory model against the GPU memory probe: one decoder layer's kept bytes per recompute option.

Reads a ``lab.memory_probe`` JSON (the probe lives in lab/, with the other device probes) and predicts each case through
:mod:`moesim.memory.activations`: the layer's shape as a one-layer spec, the case's Megatron
recompute modules, bf16 (no FP8 caching) and torchtitan's MoE (router scores applied to the
fp32 expert outputs, ``probs_on_expert_output``). The measured figure is the probe's
``saved_bytes`` (allocated after the forward minus before it, the layer output standing in for
the input the layer keeps); the target is within 10%. Cases the probe ran with K/V repeated to
the query heads (no fused SDPA kernel took ``enable_gqa``) are predicted with as many K/V heads.

Run: ``python -m moesim.validate.memory data/validation/memory/h100_layers.json``
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from moesim.memory.activations import activation_bytes
from moesim.memory.config import MemoryConfig
from moesim.workload.moe import MoESpec
from moesim.workload.transformer import TransformerSpec

TARGET_REL_ERROR = 0.10


@dataclass(frozen=True)
class MemoryCase:
    """One probe case against its prediction."""

    shape: str
    case: str
    measured_bytes: float
    predicted_bytes: float

    @property
    def rel_error(self) -> float:
        """(predicted - measured) / measured."""
        return (self.predicted_bytes - self.measured_bytes) / self.measured_bytes

    @property
    def within_target(self) -> bool:
        return abs(self.rel_error) <= TARGET_REL_ERROR


def spec_of(shape: dict[str, Any]) -> TransformerSpec:
    """The one-layer spec of a probe shape (vocabulary unused: no edges)."""
    common = dict(name=shape["name"], num_layers=1, hidden=shape["hidden"], num_heads=shape["num_heads"],
                  num_kv_heads=shape["num_kv_heads"], head_dim=shape["head_dim"], ffn_hidden=shape["ffn_hidden"],
                  vocab=128, seq_len=shape["seq_len"], edges=False, kv_lora_rank=shape.get("kv_lora_rank", 0),
                  q_lora_rank=shape.get("q_lora_rank", 0),
                  qk_rope_head_dim=shape.get("qk_rope_head_dim", 0), v_head_dim=shape.get("v_head_dim", 0))
    if shape.get("num_experts"):
        return MoESpec(**common, num_experts=shape["num_experts"], top_k=shape["top_k"],  # type: ignore[arg-type]
                       expert_ffn_hidden=shape["ffn_hidden"])
    return TransformerSpec(**common)  # type: ignore[arg-type]


def config_of(case: str, moe: bool) -> MemoryConfig:
    """The memory options of a probe case: "none", "full" or '+'-joined recompute modules."""
    if case in ("none", "full"):
        return MemoryConfig(recompute=case, fp8_linear_inputs=False, probs_on_expert_output=moe)
    return MemoryConfig(recompute="selective", recompute_modules=tuple(case.split("+")), fp8_linear_inputs=False,
                        probs_on_expert_output=moe)


def predict(shape: dict[str, Any], case: str) -> float:
    """Bytes moesim says the layer keeps per microbatch under ``case``."""
    spec = spec_of(shape)
    return activation_bytes(spec, 0, shape.get("mbs", 1), 1, False, config_of(case, bool(shape.get("num_experts"))))


def compare(probe: dict[str, Any]) -> list[MemoryCase]:
    """Every probe result against moesim's prediction."""
    shapes = {s["name"]: s for s in probe["shapes"]}
    return [MemoryCase(r["shape"], r["case"], float(r["saved_bytes"]), predict(_as_run(shapes[r["shape"]], r), r["case"]))
            for r in probe["results"] if "error" not in r]


def _as_run(shape: dict[str, Any], row: dict[str, Any]) -> dict[str, Any]:
    """The shape as the case ran: K/V repeated to the query heads when the probe had to."""
    return {**shape, "num_kv_heads": shape["num_heads"]} if row.get("kv_repeated") else shape


def report_lines(cases: list[MemoryCase], provenance: dict[str, Any]) -> list[str]:
    """A plain-text table: shape, case, measured and predicted MiB, error, within 10%."""
    lines = [f"device: {provenance.get('device', provenance.get('gpu', '?'))}",
             f"{'shape':22s} {'case':26s} {'measured MiB':>13s} {'moesim MiB':>11s} {'error':>7s}"]
    for c in cases:
        lines.append(f"{c.shape:22s} {c.case:26s} {c.measured_bytes / 2**20:13.2f} {c.predicted_bytes / 2**20:11.2f} "
                     f"{100 * c.rel_error:+6.1f}%{'' if c.within_target else '  (over 10%)'}")
    inside = sum(c.within_target for c in cases)
    lines.append(f"{inside} of {len(cases)} cases within {100 * TARGET_REL_ERROR:.0f}%")
    return lines


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m moesim.validate.memory PROBE.json", file=sys.stderr)
        return 2
    probe = json.loads(Path(args[0]).read_text())
    print("\n".join(report_lines(compare(probe), probe.get("provenance", {}))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
