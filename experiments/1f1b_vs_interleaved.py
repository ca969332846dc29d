"""1F1B versus interleaved 1F1B: when does splitting each GPU's layers into virtual chunks pay?

Interleaving (Megatron's virtual pipeline, v chunks per GPU) divides the warm-up/cool-down
bubble by v, but every microbatch now crosses every GPU v times: v x more pipeline sends, each
on the critical path of the warm-up, and smaller compute per transfer.

* Pays: Llama-3-70B on 4 x DGX H100 (TP8 inside each node, PP4 across nodes, 8 microbatches
  of one 8K sequence). The 1F1B bubble is (p-1)/(m+p-1) = 27%; with v=5 it falls to ~7% while
  the extra activations (4K x 8K x 2 B / 8 = 16 MB per send) ride 50 GB/s InfiniBand, hidden
  behind 4-layer chunks of compute.
* Barely pays: Llama-3-8B at 1K sequences on one HGX H100 PCIe box (no NVLink), DP2 x PP4,
  32 microbatches, pipeline transfers not overlapped with compute (Megatron without
  --overlap-p2p-communication). The 1F1B bubble is already small at m=32, and v=4 multiplies
  the blocking PCIe transfers by four, which ends the last backward later; what interleaving
  wins back is the gradient all-reduce over PCIe: each chunk's starts once that chunk's last
  backward is done (as Megatron's overlapped grad reduce issues it), so three of the four
  chunks reduce while the rest of the backward still runs.

Run: python -m moesim run experiments/1f1b_vs_interleaved.py [--set plan.num_microbatches=16]
"""
import dataclasses

from moesim.experiment import Comparison, Experiment, ParallelPlan, Scenario
from moesim.workload.presets import get_model

LLAMA_70B = get_model("llama3-70b")
LLAMA_8B_1K = dataclasses.replace(get_model("llama3-8b"), seq_len=1024)

big = dict(topology="dgx_h100", nodes=4, model=LLAMA_70B)
small = dict(topology="hgx_h100_pcie", model=LLAMA_8B_1K)

EXPERIMENT = Experiment(
    name="1f1b_vs_interleaved",
    description="When interleaved 1F1B (virtual pipeline stages) beats plain 1F1B, and when it does not.",
    scenarios=(
        Scenario(name="70b_1f1b", schedule="1f1b", plan=ParallelPlan(tp=8, pp=4, num_microbatches=8), **big,
                 description="Llama-3-70B, 32 H100, TP8 PP4, m=8, 1F1B"),
        Scenario(name="70b_interleaved_v5", schedule="interleaved",
                 plan=ParallelPlan(tp=8, pp=4, vpp=5, num_microbatches=8), **big,
                 description="same, interleaved with 5 chunks per GPU (4 layers each)"),
        Scenario(name="8b_pcie_1f1b", schedule="1f1b",
                 plan=ParallelPlan(dp=2, pp=4, num_microbatches=32, p2p_overlap=False), **small,
                 description="Llama-3-8B 1K seq, 8 H100 PCIe, DP2 PP4, m=32, blocking P2P, 1F1B"),
        Scenario(name="8b_pcie_interleaved_v4", schedule="interleaved",
                 plan=ParallelPlan(dp=2, pp=4, vpp=4, num_microbatches=32, p2p_overlap=False), **small,
                 description="same, interleaved with 4 chunks per GPU (2 layers each)"),
    ),
    comparisons=(
        Comparison("70b_1f1b", "70b_interleaved_v5",
                   "few microbatches, fast fabric, big chunks: interleaving cuts the bubble and pays"),
        Comparison("8b_pcie_1f1b", "8b_pcie_interleaved_v4",
                   "many microbatches, small chunks, blocking transfers over PCIe: interleaving barely pays, "
                   "by reducing the early chunks' gradients during the backward"),
    ),
)
