from moesim.experiment import Experiment, MoEOptions, ParallelPlan, Scenario
from moesim.moe.routing import RoutingConfig
from moesim.workload.moe import MoESpec
SPEC = MoESpec(name="t-moe", num_layers=2, hidden=256, num_heads=8, num_kv_heads=8, head_dim=32, ffn_hidden=512,
               vocab=1000, seq_len=256, num_experts=16, top_k=2, expert_ffn_hidden=256)
EXPERIMENT = Experiment(name="tinymoe", scenarios=(Scenario(name="m", topology="dgx_h100", model=SPEC, cost_model="roofline",
    plan=ParallelPlan(tp=1, dp=8, pp=1, ep=8, num_microbatches=2), moe=MoEOptions(routing=RoutingConfig(kind="uniform"))),))
