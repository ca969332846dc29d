"""Eager PyTorch versus a host that stays ahead (CUDA graphs): where the Python thread sets the pace.

Each pair runs the same step twice: ``host="ahead"`` (the default, also called "graphs": every
kernel is issued before the GPU needs it, as CUDA graphs or a fast host do) and ``host="eager"``
(one simulated host thread per GPU issues its work in program order; ``moesim.lowering.host``).
Calibrated H200 costs throughout, host time per op class included (``host_op`` rows measured on
a fresh H200 on 2026-12-06: one eager call's host time per class, forward, backward and without
autograd, times the measured mixed-program factor) and 50-67 us per NCCL call, one call per
collective a folded TP collective stands for.

* Llama-3-8B, TP8 on one DGX H200, 4 microbatches of 256 tokens: each GPU's kernels are short
  (TP8 splits every GEMM) and there are ~30 of them per layer plus two TP all-reduces: the host
  thread cannot keep up: 83 ms ahead, 214 ms eager.
* The same at 4,096 tokens per microbatch: the kernels are 16x longer, the launches the same:
  348 ms ahead, 361 ms eager (+3.8%).
* Llama-3-8B, TP1 x PP4 x DP2 with 16 microbatches of 2,048 tokens: large kernels per GPU; the
  host thread issues each pipeline send and receive where the program makes it: 955 ms ahead,
  958 ms eager (+0.3%).
* Qwen3-30B-A3B layers, EP8 at 4,096 tokens: 16 experts per GPU run as grouped GEMMs (one kernel
  per projection; ``moe.experts="grouped"``), two all-to-all calls per layer and microbatch, and
  torchtitan's read-back of the split sizes before each dispatch: 220 ms ahead, 221 ms eager
  (+0.6%). With ``--set moe.experts=loop`` each expert is a chain of small kernels after a
  read-back of the counts (each body priced by its measured ``expert_loop_body`` host time):
  282 ms ahead, 298 ms eager.

Run: python -m moesim run experiments/eager_host.py
"""
import dataclasses

from moesim.experiment import Comparison, Experiment, MoEOptions, ParallelPlan, Scenario
from moesim.moe.routing import RoutingConfig
from moesim.workload.presets import get_model

LLAMA_8B = get_model("llama3-8b")
QWEN_MOE = dataclasses.replace(get_model("qwen3-30b-a3b"), num_layers=4, seq_len=4096)


def pair(name: str, **kw) -> tuple[Scenario, Scenario]:
    ahead = Scenario(name=f"{name}_ahead", topology="dgx_h200", cost_model="calibrated", **kw)
    return ahead, dataclasses.replace(ahead, name=f"{name}_eager", host="eager")


TP8_SHORT = pair("tp8_256tok", model=dataclasses.replace(LLAMA_8B, seq_len=256),
                 plan=ParallelPlan(tp=8, num_microbatches=4))
TP8_LONG = pair("tp8_4096tok", model=dataclasses.replace(LLAMA_8B, seq_len=4096),
                plan=ParallelPlan(tp=8, num_microbatches=4))
PP4 = pair("pp4_dp2", model=dataclasses.replace(LLAMA_8B, seq_len=2048),
           plan=ParallelPlan(tp=1, dp=2, pp=4, num_microbatches=16, order="dp-pp-tp"))
EP8 = pair("moe_ep8", model=QWEN_MOE, plan=ParallelPlan(dp=8, ep=8, num_microbatches=4),
           moe=MoEOptions(routing=RoutingConfig(kind="zipf", zipf_s=0.5, seed=2)))

EXPERIMENT = Experiment(
    name="eager_host",
    description="Eager PyTorch host threads versus a host kept ahead (CUDA graphs), dense and MoE.",
    scenarios=TP8_SHORT + TP8_LONG + PP4 + EP8,
    comparisons=(
        Comparison("tp8_256tok_eager", "tp8_256tok_ahead", "TP8, 256 tokens: short kernels, the host sets the pace"),
        Comparison("tp8_4096tok_eager", "tp8_4096tok_ahead", "TP8, 4,096 tokens: 16x the GPU work per launch"),
        Comparison("pp4_dp2_eager", "pp4_dp2_ahead", "PP4 x DP2, 2,048 tokens: large kernels, the host keeps up"),
        Comparison("moe_ep8_eager", "moe_ep8_ahead", "EP8 MoE: many small expert GEMMs and all-to-all calls"),
    ),
)
