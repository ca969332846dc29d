"""Is Megatron's per-expert MLP call slower when its token counts vary from expert to expert?

``host_megatron``'s ``megatron_expert_mlp`` chain calls every local expert on the same row count.
In a real ``SequentialMLP`` the counts differ per expert, and the weighted SwiGLU is compiled by
``torch.compile``: a second shape makes dynamo recompile it for dynamic shapes, whose calls check
symbolic guards. Times the same chain (the section's own ``measure_class``) three ways, in order:
``static`` (one row count), ``varied`` (row counts falling 128, 120, ..., 8 along the chain),
``static_after`` (one row count again, after the varied chain made the compiled graph dynamic).

    python3 -m lab.loop_dynamic_probe --out FILE
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from moesim.calibrate import framework_host as fh
from moesim.calibrate.host_classes import GPU_SIZES, Chain, measure_class


def chain(varied: bool) -> Chain:
    from megatron.core.models.gpt.moe_module_specs import get_moe_module_spec
    from megatron.core.transformer.moe.experts import SequentialMLP
    from megatron.core.transformer.moe.moe_layer import get_default_pg_collection
    s, n = GPU_SIZES, max(GPU_SIZES.long, GPU_SIZES.long_multi)
    cfg = fh.megatron_config(s.hidden, n, 2, s.hidden // 2, "cuda")
    spec = get_moe_module_spec(use_te=False, num_experts=n, moe_grouped_gemm=False)
    mlp = SequentialMLP(n, cfg, spec.submodules.experts.submodules, pg_collection=get_default_pg_collection())
    mlp = mlp.to(device="cuda", dtype=torch.bfloat16)
    rows = s.tokens // s.groups
    probs = torch.full((rows,), 0.5, device="cuda", dtype=torch.bfloat16)
    experts = list(mlp.local_experts)

    def step(y: torch.Tensor, i: int) -> torch.Tensor:
        r = max(8, rows - 8 * i) if varied else rows // 2
        return experts[i](y[:r], probs[:r])[0]
    x0 = torch.randn(rows, s.hidden, device="cuda", dtype=torch.bfloat16).requires_grad_()
    return Chain(x0, step, tuple(mlp.parameters()), multi=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    fh.install_gmm_stand_in()
    fh.init_megatron_single_rank("cuda")
    out = []
    for name, varied in (("static", False), ("varied", True), ("static_after", False), ("varied_again", True)):
        for r in measure_class("megatron_expert_mlp", chain(varied), GPU_SIZES, "cuda"):
            r["variant"] = name
            out.append(r)
            print(name, r["phase"], round(r["time_ns"] / 1e3, 1), "us", flush=True)
    args.out.write_text(json.dumps({"device": torch.cuda.get_device_name(0), "megatron_core": fh.megatron_version(),
                                    "torch": torch.__version__,
                                    "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "rows": out}, indent=1))


if __name__ == "__main__":
    main()
