from moesim.experiment import Experiment, ParallelPlan, Scenario
from moesim.workload.transformer import TransformerSpec
TINY = TransformerSpec(name="tiny", num_layers=4, hidden=512, num_heads=8, num_kv_heads=8, head_dim=64,
                       ffn_hidden=1024, vocab=32000, seq_len=512)
EXPERIMENT = Experiment(name="../elsewhere", scenarios=(
    Scenario(name="a", topology="dgx_h100", model=TINY, plan=ParallelPlan(tp=2, pp=4, num_microbatches=4)),))
