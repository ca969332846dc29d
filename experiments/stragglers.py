"""Stragglers and faults: how one slow GPU or link propagates, and which schedule absorbs it.

Pipeline part: Llama-3-8B (4K sequences) on 2 x DGX H100, DP4 x PP4 (ranks: dp innermost, so
stages 0-1 on node 0, stages 2-3 on node 1), 16 microbatches per replica. The last stage also
runs the 128K-vocabulary output head, so it is the slowest stage: the others have slack.

* A GPU of the last stage (rank 13: DP replica 1, stage 3) runs every kernel 30% slower. It
  is on the critical stage, so its replica slows down, and the DP gradient all-reduce makes
  the other three replicas wait for it: one slow GPU slows all 16. Each schedule runs healthy
  and with this straggler, so the cost per schedule is visible.
* The same slowdown on a stage with slack (rank 5: replica 1, stage 1) is mostly absorbed.
* The NIC of rank 4 (stage 1, whose activations cross to node 1) drops to a quarter of its
  bandwidth; every transfer gets up to 5 us of jitter.

MoE part: Qwen3-30B-A3B layers (4 layers) on one DGX H100, EP8, one GPU 30% slow: every
expert-parallel combine waits for its experts, so all eight GPUs inherit the delay.

Run: python -m moesim run experiments/stragglers.py
"""
import dataclasses

from moesim.experiment import Comparison, Experiment, MoEOptions, ParallelPlan, Scenario
from moesim.experiment.faults import Faults
from moesim.moe.routing import RoutingConfig
from moesim.workload.presets import get_model

LLAMA_8B = get_model("llama3-8b")
SLOW_GPU = Faults(slow_gpus={13: 1.3})        # critical (last) stage
SLOW_GPU_SLACK = Faults(slow_gpus={5: 1.3})   # a stage with slack
dense = dict(topology="dgx_h100", nodes=2, model=LLAMA_8B)


def pipe(name: str, schedule: str, faults=None, vpp: int = 1) -> Scenario:
    plan = ParallelPlan(tp=1, dp=4, pp=4, vpp=vpp, num_microbatches=16, order="dp-pp-tp")
    return Scenario(name=name, schedule=schedule, plan=plan, faults=faults, **dense)


MOE = dataclasses.replace(get_model("qwen3-30b-a3b"), num_layers=4, seq_len=4096)
moe = dict(topology="dgx_h100", model=MOE, plan=ParallelPlan(dp=8, ep=8, num_microbatches=4),
           moe=MoEOptions(routing=RoutingConfig(kind="zipf", zipf_s=0.5, seed=2)))

EXPERIMENT = Experiment(
    name="stragglers",
    description="One slow GPU, a slow NIC and jitter in a pipeline and in an expert-parallel all-to-all.",
    scenarios=(
        pipe("1f1b", "1f1b"),
        pipe("1f1b_slow_gpu", "1f1b", SLOW_GPU),
        pipe("1f1b_slow_gpu_slack", "1f1b", SLOW_GPU_SLACK),
        pipe("interleaved", "interleaved", vpp=2),
        pipe("interleaved_slow_gpu", "interleaved", SLOW_GPU, vpp=2),
        pipe("zb_h1", "zb-h1"),
        pipe("zb_h1_slow_gpu", "zb-h1", SLOW_GPU),
        pipe("1f1b_slow_nic", "1f1b", Faults(slow_nics={4: 0.25})),
        pipe("1f1b_jitter", "1f1b", Faults(jitter_ns=5000)),
        Scenario(name="moe", **moe),
        Scenario(name="moe_slow_gpu", faults=Faults(slow_gpus={3: 1.3}), **moe),
    ),
    comparisons=(
        Comparison("1f1b", "1f1b_slow_gpu", "1F1B: one GPU of the critical stage at 1.3x"),
        Comparison("1f1b", "1f1b_slow_gpu_slack", "1F1B: the same GPU slowdown on a stage with slack"),
        Comparison("interleaved", "interleaved_slow_gpu", "interleaved: one GPU of the critical stage at 1.3x"),
        Comparison("zb_h1", "zb_h1_slow_gpu", "ZB-H1: one GPU of the critical stage at 1.3x"),
        Comparison("1f1b", "1f1b_slow_nic", "one NIC at 25% bandwidth on the pipeline path"),
        Comparison("1f1b", "1f1b_jitter", "up to 5 us jitter on every transfer"),
        Comparison("moe", "moe_slow_gpu", "one slow GPU in an EP8 all-to-all"),
    ),
)
