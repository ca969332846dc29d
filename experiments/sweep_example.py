"""A base scenario to sweep: which pipeline schedule and microbatch count for Llama-3-8B?

One scenario (Llama-3-8B, 4K sequences, one DGX H100: TP2 x PP4) for ``moesim sweep`` to vary.
GPipe keeps every microbatch's activations until its backward, 1F1B at most one per stage
still to drain, interleaving trades a smaller bubble for more pipeline sends and a little more
memory; more microbatches shrink the bubble but lengthen the step. The Pareto plot shows which
combinations are worth their memory.

Run:
  python -m moesim sweep experiments/sweep_example.py \\
      --grid schedule=1f1b,gpipe,interleaved --grid plan.vpp=1,2 --grid plan.num_microbatches=8,16,32

(vpp=2 with a schedule other than interleaved is an invalid combination: those points are
recorded as failures with their error, and the rest of the sweep goes on.)
"""
import dataclasses

from moesim.experiment import Experiment, ParallelPlan, Scenario
from moesim.workload.presets import get_model

LLAMA_8B_4K = dataclasses.replace(get_model("llama3-8b"), seq_len=4096)

EXPERIMENT = Experiment(
    name="sweep_example",
    description="Base scenario for a schedule x microbatch sweep of Llama-3-8B on one DGX H100.",
    scenarios=(
        Scenario(name="llama8b_tp2_pp4", topology="dgx_h100", model=LLAMA_8B_4K,
                 plan=ParallelPlan(tp=2, pp=4, num_microbatches=8),
                 description="Llama-3-8B 4K seq, 8 H100, TP2 PP4"),
    ),
)
