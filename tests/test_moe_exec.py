"""The MoE layer as frameworks run it: kernel sequences, expert modes, padding, exact engine times."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from fabrics import star
from moesim.engine import Simulation
from moesim.errors import ConfigError
from moesim.experiment import MoEOptions, ParallelPlan, Scenario
from moesim.experiment.build import build_scenario
from moesim.lowering.moe_costs import Exchange, MoEStageTable
from moesim.lowering.moe_exchange import ExchangePlan, MoEExchangeLowering
from moesim.lowering.moe_routing import BalancedRouting
from moesim.lowering.pipeline import Grid, StageWork
from moesim.moe.routing import RoutingConfig
from moesim.ops import Gemm, GroupedGemm, MemoryOp
from moesim.schedules import Action, generate
from moesim.workload import moe_exec
from moesim.workload import token_movement as tokmove
from moesim.workload.moe import MoESpec, moe_block_forward_program

SPEC = MoESpec(name="tiny-moe", num_layers=2, hidden=512, num_heads=8, num_kv_heads=8, head_dim=64,
               ffn_hidden=1024, vocab=32000, seq_len=512, num_experts=8, top_k=2, expert_ffn_hidden=256)


def kernels(ops) -> list[tuple[str, str]]:
    return [(op.name, getattr(op, "variant", "")) for op in ops]


# -- router and token movement per framework ------------------------------------------------
def test_torchtitan_forward_kernels_in_launch_order():
    assert kernels(tokmove.dispatch_side_forward(SPEC, 64, "torchtitan")) == [
        ("router.gate", ""), ("router.to_fp32", "cast_fp32"), ("router.softmax", "softmax_fp32"), ("router.topk", "topk"),
        ("router.histc", "histc"), ("moe.argsort", "argsort"), ("moe.sort_scores", "gather"),
        ("moe.token_index", ""), ("moe.permute", "gather"), ("moe.probs.to_fp32", "cast_fp32"), ("moe.probs_mul", "prob_mul_fp32"),
        ("moe.probs.to_dtype", "cast_bf16")]
    assert kernels(tokmove.combine_side_forward(SPEC, 64, "torchtitan")) == [
        ("moe.zeros", "zeros"), ("moe.unpermute", "scatter_add")]


def test_megatron_forward_kernels_in_launch_order():
    assert kernels(tokmove.dispatch_side_forward(SPEC, 64, "megatron")) == [
        ("router.gate", ""), ("router.topk", "topk"), ("router.softmax", "softmax_fp32"), ("router.probs.zeros", "zeros"),
        ("router.probs.scatter", ""), ("router.map.zeros", "zeros"), ("router.map.to_int", ""),
        ("router.map.scatter", ""), ("router.map.to_bool", ""), ("router.counts", ""), ("moe.map.transpose", ""),
        ("moe.arange", ""), ("moe.masked_select", ""), ("moe.probs.transpose", ""), ("moe.probs.masked_select", ""),
        ("moe.permute", "index_select")]
    assert kernels(tokmove.combine_side_forward(SPEC, 64, "megatron")) == [
        ("moe.probs_mul", "prob_mul"), ("moe.zeros", "zeros"), ("moe.unpermute", "scatter_add")]
    # y * probs.unsqueeze(-1) and its input gradient g * probs broadcast (PyTorch's non-vectorized
    # kernel, the profile's measured prob_mul); the probabilities' gradient g * y does not
    assert [k for k in kernels(tokmove.combine_side_backward(SPEC, 64, "megatron")) if k[0].startswith("moe.probs_mul")] \
        == [("moe.probs_mul.bwd.probs", ""), ("moe.probs_mul.bwd", "prob_mul")]


def test_expert_bias_adds_its_kernels_where_each_framework_runs_them():
    biased = dataclasses.replace(SPEC, expert_bias=True)
    titan = kernels(tokmove.dispatch_side_forward(biased, 64, "torchtitan"))
    assert titan[:8] == [("router.gate", ""), ("router.to_fp32", "cast_fp32"), ("router.softmax", "softmax_fp32"),
                         ("router.expert_bias", "add"), ("router.topk", "topk"), ("router.gather_scores", "gather"),
                         ("router.histc", "histc"), ("router.tokens_per_expert", "add")]
    assert titan[8:] == kernels(tokmove.dispatch_side_forward(SPEC, 64, "torchtitan"))[5:]
    mega = kernels(tokmove.dispatch_side_forward(biased, 64, "megatron"))
    assert mega[1:4] == [("router.expert_bias", "add"), ("router.topk", "topk"), ("router.gather_scores", "gather")]
    assert mega[mega.index(("router.counts", "")) + 1] == ("router.tokens_per_expert", "add")
    sig = kernels(tokmove.dispatch_side_forward(dataclasses.replace(biased, score_func="sigmoid"), 64, "megatron"))
    assert sig[1:5] == [("router.sigmoid", "sigmoid_fp32"), ("router.expert_bias", "add"), ("router.topk", "topk"),
                        ("router.gather_scores", "gather")]
    # the fused router applies the bias in its kernel; the backward is unchanged (topk's gather's)
    assert tokmove.dispatch_side_forward(biased, 64, "fused") == tokmove.dispatch_side_forward(SPEC, 64, "fused")
    for movement in tokmove.TOKEN_MOVEMENTS:
        assert tokmove.dispatch_side_backward(biased, 64, movement) == tokmove.dispatch_side_backward(SPEC, 64, movement)
    with pytest.raises(ConfigError, match="expert_bias"):
        dataclasses.replace(SPEC, expert_bias="yes")


def test_grouped_experts_compute_their_offsets_once_a_forward():
    counts = [5, 0, 7, 4, 0, 0, 9, 3]
    fwd = moe_exec.expert_tasks(SPEC, counts, "F")
    assert fwd[0].name == "experts.offsets" and fwd[0].ops[0].variant == "cumsum"
    assert [t.name for t in fwd[1:]] == ["expert.w1", "expert.silu", "expert.w3", "expert.mul", "expert.w2"]
    for phase in ("B", "W", "BW"):
        assert all(t.name != "experts.offsets" for t in moe_exec.expert_tasks(SPEC, counts, phase))
    loop = moe_exec.expert_tasks(SPEC, counts, "F", experts="loop")
    assert loop[0].name == "experts.counts_to_host"   # the loop reads the counts on the host instead


def test_fused_movement_is_one_kernel_each_way_of_the_moved_bytes():
    T, P, h = 64, 64 * SPEC.top_k, SPEC.hidden
    fwd = tokmove.dispatch_side_forward(SPEC, T, "fused")
    assert kernels(fwd) == [("router.gate", ""), ("router.fused_topk", ""), ("router.counts", ""),
                            ("moe.permute", "fused_permute")]
    (unpermute,) = tokmove.combine_side_forward(SPEC, T, "fused")
    assert (unpermute.kind, unpermute.variant) == ("permute", "fused_unpermute")
    assert fwd[-1].bytes == 2 * 2 * P * h + 4 * P   # bf16 rows read and written, fp32 probs read


def test_backward_ends_with_the_router_input_gradient_and_names_every_kernel_backward():
    for movement in tokmove.TOKEN_MOVEMENTS:
        ops = tokmove.combine_side_backward(SPEC, 64, movement) + tokmove.dispatch_side_backward(SPEC, 64, movement)
        assert ops[-1] == Gemm(m=64, n=SPEC.hidden, k=SPEC.num_experts, name="router.gate.dgrad")
        assert all({"bwd", "dgrad"} & set(op.name.split(".")) for op in ops), movement


def test_torchtitan_permute_and_unpermute_sizes_are_read_plus_written_bytes():
    T, P, h = 64, 128, SPEC.hidden
    ops = {op.name: op for op in tokmove.dispatch_side_forward(SPEC, T) + tokmove.combine_side_forward(SPEC, T)}
    assert ops["moe.permute"].bytes == 2 * 2 * P * h           # P bf16 rows gathered and written
    assert ops["moe.unpermute"].bytes == 2 * 2 * P * h         # P rows read, added into T rows
    assert ops["moe.zeros"].bytes == 2 * T * h                 # a fill writes only
    assert ops["router.topk"].bytes == 4 * T * SPEC.num_experts + 12 * P


def test_block_program_keeps_flops_and_follows_the_framework():
    base = moe_block_forward_program(SPEC, 1)
    for movement in tokmove.TOKEN_MOVEMENTS:
        prog = moe_block_forward_program(SPEC, 1, token_movement=movement)
        assert sum(getattr(x, "flops", 0.0) for x in prog) == sum(getattr(x, "flops", 0.0) for x in base)
    names = [x.name for x in moe_block_forward_program(SPEC, 1, token_movement="megatron")]
    assert "moe.masked_select" in names and "moe.argsort" not in names


# -- experts -------------------------------------------------------------------------------
def test_grouped_is_one_kernel_per_projection_over_the_whole_count_vector():
    tasks = moe_exec.expert_tasks(SPEC, (5, 0, 3), "F", "grouped", "torchtitan")
    assert [t.name for t in tasks] == ["experts.offsets", "expert.w1", "expert.silu", "expert.w3", "expert.mul",
                                       "expert.w2"]
    gemms = [t.ops[0] for t in tasks if isinstance(t.ops[0], GroupedGemm)]
    assert [(g.counts, g.n, g.k, g.layout) for g in gemms] == [((5, 0, 3), 256, 512, "fwd"), ((5, 0, 3), 256, 512, "fwd"),
                                                                ((5, 0, 3), 512, 256, "fwd")]
    megatron = moe_exec.expert_tasks(SPEC, (5, 0, 3), "F", "grouped", "megatron")
    assert [t.name for t in megatron] == ["experts.offsets", "expert.fc1", "expert.swiglu", "expert.fc2"]
    assert megatron[1].ops[0].n == 2 * SPEC.expert_ffn_hidden     # TE fuses gate and up into fc1
    wgrad = moe_exec.expert_tasks(SPEC, (5, 0, 3), "W", "grouped", "megatron")
    assert [(t.ops[0].layout, t.ops[0].n, t.ops[0].k) for t in wgrad] == [("wgrad", 512, 512), ("wgrad", 512, 256)]
    flops = sum(t.flops for t in moe_exec.expert_tasks(SPEC, (5, 0, 3), "F"))
    assert flops == pytest.approx(2 * 8 * 3 * SPEC.hidden * SPEC.expert_ffn_hidden)


def test_unfused_glu_of_a_fused_fc1_is_chunk_silu_mul_and_its_backward_cats_the_halves():
    """Megatron without bias_activation_fusion (``glu``: chunk, silu of the gate half, mul by the
    up half): two kernels forward; backward mul's and silu's kernels, then chunk's cat of the
    two halves' grads into [rows, 2F] before the one fc1 dgrad."""
    eager = dataclasses.replace(SPEC, activation_fusion=False)
    rows, f, e = 8, SPEC.expert_ffn_hidden, 2
    fwd = moe_exec.kernel_ops(eager, (5, 0, 3), "F", "megatron")
    assert [op.name for op in fwd] == ["experts.offsets", "expert.fc1", "expert.silu", "expert.mul", "expert.fc2"]
    assert [op.bytes for op in fwd[2:4]] == [2 * e * rows * f, 3 * e * rows * f]
    # chunk's halves are strided views: their kernels are the measured glu_* variants
    assert [op.variant for op in fwd[2:4]] == ["glu_silu", "glu_mul"]
    bwd = moe_exec.kernel_ops(eager, (5, 0, 3), "B", "megatron")
    assert [op.name for op in bwd] == ["expert.fc2.dgrad", "expert.mul.bwd", "expert.mul.bwd.a", "expert.silu.bwd",
                                       "expert.glu_cat.bwd", "expert.fc1.dgrad"]
    assert [op.bytes for op in bwd[1:5]] == [3 * e * rows * f, 3 * e * rows * f, 3 * e * rows * f, 4 * e * rows * f]
    assert [op.variant for op in bwd[1:4]] == ["glu_mul", "", "glu_silu_bwd"]   # g * up strided, g * a contiguous
    assert bwd[4].kind == "copy" and bwd[5].k == 2 * f          # one dgrad over both halves
    # the fused default: one kernel each way; torchtitan's three GEMMs do not depend on the flag
    assert [op.name for op in moe_exec.kernel_ops(SPEC, (5, 0, 3), "F", "megatron")][2] == "expert.swiglu"
    assert kernels(moe_exec.kernel_ops(eager, (5, 0, 3), "F")) == kernels(moe_exec.kernel_ops(SPEC, (5, 0, 3), "F"))
    # a loop's chain (SequentialMLP's MLP, or plain torch calls) follows the same flag
    assert [op.name for op in moe_exec.loop_chain_ops(eager, 5, "F", "megatron")] == \
        ["expert.fc1", "expert.silu", "expert.mul", "expert.fc2"]


@pytest.mark.parametrize(("framework", "experts", "eager"), [(True, "grouped", False), (True, "loop", True),
                                                             (False, "grouped", True), (False, "loop", True)])
def test_megatron_core_grouped_mlp_jit_fuses_its_glu_whatever_the_fusion_flag(framework, experts, eager):
    """GroupedMLP's ``activation_func_with_probs`` is ``@jit_fuser``: one kernel even with
    ``activation_fusion`` False; SequentialMLP's MLP and plain torch calls run it eager."""
    spec = dataclasses.replace(SPEC, activation_fusion=False)
    table = MoEStageTable(spec, generate("1f1b", 1, 1), SyntheticCost(), tp=1, ep=2, micro_batch_size=1,
                          sequence_parallel=False, experts=experts, token_movement="megatron",
                          framework_modules=framework)
    names = {op.name for task in table.expert_tasks("F", (5, 3)) for op in task.ops}
    assert ("expert.silu" in names) is eager and ("expert.swiglu" in names) is not eager


def test_megatron_core_adds_fc2_bias_per_local_expert_outside_the_grouped_gemm():
    """TEGroupedMLP._apply_bias: torch.cat([t + b * p ...]) per local expert with rows; its
    backward the gradients of b and p (a multiply and a reduction each), last expert first."""
    biased = dataclasses.replace(SPEC, expert_linear_bias=True)
    e, h = 2, SPEC.hidden
    fwd = moe_exec.kernel_ops(biased, (5, 0, 3), "F", "megatron", framework=True)
    assert [op.name for op in fwd[4:]] == ["expert.fc2_bias0.mul", "expert.fc2_bias0.add", "expert.fc2_bias2.mul",
                                           "expert.fc2_bias2.add", "expert.fc2_bias.cat"]
    assert [op.bytes for op in fwd[4:]] == [e * 5 * h, 3 * e * 5 * h, e * 3 * h, 3 * e * 3 * h, 2 * e * 8 * h]
    bwd = moe_exec.kernel_ops(biased, (5, 0, 3), "BW", "megatron", framework=True)
    assert [op.name for op in bwd[:4]] == ["expert.fc2_bias2.bwd.grad_b", "expert.fc2_bias2.bwd.grad_b.sum",
                                           "expert.fc2_bias2.bwd.grad_p", "expert.fc2_bias2.bwd.grad_p.sum"]
    assert len(bwd) == 8 + len(moe_exec.kernel_ops(SPEC, (5, 0, 3), "BW", "megatron"))
    assert moe_exec.kernel_ops(biased, (5, 0, 3), "W", "megatron", framework=True) == \
        moe_exec.kernel_ops(SPEC, (5, 0, 3), "W", "megatron")
    # plain torch calls (the harness) and torchtitan: the biases ride in the GEMMs
    assert moe_exec.kernel_ops(biased, (5, 0, 3), "F", "megatron") == moe_exec.kernel_ops(SPEC, (5, 0, 3), "F", "megatron")
    assert moe_exec.kernel_ops(biased, (5, 0, 3), "F", "torchtitan", framework=True) == \
        moe_exec.kernel_ops(SPEC, (5, 0, 3), "F", "torchtitan")
    tasks = moe_exec.expert_tasks(biased, (5, 0, 3), "F", "grouped", "fused", framework=True)
    assert tasks[-1].name == "expert.fc2_bias.cat"


def test_te_pads_fp8_grouped_rows_to_16_and_unpads_the_output():
    """TEGroupedMLP's Fp8Padding / Fp8Unpadding: copies in and out when a count is not a multiple
    of 16, their gradients' copies the other way round; none when aligned, in bf16 or outside
    Megatron-Core's modules."""
    fp8 = dataclasses.replace(SPEC, gemm_dtype="fp8")
    h = SPEC.hidden
    fwd = moe_exec.kernel_ops(fp8, (5, 0, 16), "F", "fused", framework=True)
    assert [op.name for op in fwd] == ["experts.fp8_pad", "experts.fp8_pad.probs", "experts.offsets", "expert.fc1",
                                       "expert.swiglu", "expert.fc2", "experts.fp8_unpad"]
    assert fwd[0].bytes == 2 * (21 + 32) * h and fwd[-1].bytes == 2 * (21 + 32) * h   # read 21 rows, write 32
    bwd = [op.name for op in moe_exec.kernel_ops(fp8, (5, 0, 16), "BW", "fused", framework=True)]
    assert bwd[0] == "experts.fp8_unpad.bwd" and bwd[-1] == "experts.fp8_pad.bwd"
    assert "experts.fp8_pad" not in [op.name for op in moe_exec.kernel_ops(fp8, (16, 0, 32), "F", "fused", True)]
    assert moe_exec.kernel_ops(fp8, (5, 0, 16), "F", "fused") == \
        [op for op in fwd if not op.name.startswith("experts.fp8_")]
    assert moe_exec.kernel_ops(SPEC, (5, 0, 16), "F", "fused", framework=True) == \
        moe_exec.kernel_ops(SPEC, (5, 0, 16), "F", "fused")


def test_loop_syncs_the_counts_then_one_chain_per_expert_with_tokens_then_cat():
    tasks = moe_exec.expert_tasks(SPEC, (5, 0, 3), "F", "loop", "torchtitan", experts_ids=(8, 9, 10))
    assert [t.name for t in tasks] == ["experts.counts_to_host", "expert8", "expert10", "experts.cat"]
    sync = tasks[0]
    assert sync.host_sync and sync.sync_bytes == 4 * 3 and sync.ops == ()
    chain = tasks[1].ops
    assert [op.name for op in chain] == ["expert.w1", "expert.silu", "expert.w3", "expert.mul", "expert.w2"]
    assert [op.m for op in chain if isinstance(op, Gemm)] == [5, 5, 5]
    # backward: autograd's order, the last expert first; no sync
    backward = moe_exec.expert_tasks(SPEC, (5, 0, 3), "B", "loop")
    assert [t.name for t in backward] == ["expert2", "expert0", "experts.cat.bwd"]
    assert [t.name for t in moe_exec.expert_tasks(SPEC, (5, 0, 3), "W", "loop", "megatron")] == \
        ["expert2.wgrad", "expert1.empty", "expert0.wgrad"]   # SequentialMLP's empty expert: zero fills
    assert [t.name for t in moe_exec.expert_tasks(SPEC, (5, 0, 3), "F", "loop", "megatron")] == \
        ["experts.counts_to_host", "expert0", "expert1.empty", "expert2", "experts.cat"]
    assert [(op.m, op.k) for op in moe_exec.expert_tasks(SPEC, (5,), "W", "loop")[0].ops] == [(512, 5)] * 2 + [(256, 5)]


def test_loop_backward_runs_each_expert_whole_before_the_previous_one():
    """Autograd's ready queue (latest node first) finishes expert e's input and weight gradients
    and its select-backward share before expert e - 1's; an expert without tokens still has its
    weight gradients filled with zeros and its select share; split's backward (a cat) last."""
    tasks = moe_exec.expert_tasks(SPEC, (5, 0, 3), "BW", "loop", "torchtitan", experts_ids=(8, 9, 10))
    assert [t.name for t in tasks] == ["expert10", "expert10.wgrad", "expert10.select_bwd",
                                       "expert9.wgrad", "expert9.select_bwd",
                                       "expert8", "expert8.wgrad", "expert8.select_bwd", "experts.cat.bwd"]
    assert [t.expert for t in tasks] == [10, 10, 10, 9, 9, 8, 8, 8, None]   # host: each a repeated loop body
    empty = tasks[3].ops
    assert [op.name for op in empty] == ["expert.w2.wgrad.zeros", "expert.w3.wgrad.zeros", "expert.w1.wgrad.zeros"]
    assert {op.bytes for op in empty} == {2.0 * 256 * 512} and all(op.flops == 0 for op in empty)
    # the first contribution to each stacked gradient is stored, every later one added
    adds = [sum(op.name.endswith("select_bwd.sum") for op in t.ops) for t in tasks if t.name.endswith("select_bwd")]
    assert adds == [0, 3, 3]
    # a split backward keeps the same order: B the chains, W the weight gradients and select shares
    b, w = (moe_exec.expert_tasks(SPEC, (5, 0, 3), ph, "loop", experts_ids=(8, 9, 10)) for ph in ("B", "W"))
    assert [t.name for t in b] == [t.name for t in tasks if "." not in t.name or t.name == "experts.cat.bwd"]
    assert [t.name for t in w] == [t.name for t in tasks if t.name.endswith(("wgrad", "select_bwd"))]


def _work(tasks) -> tuple[float, float, int]:
    """Total FLOPs, bytes and kernel count of some expert tasks."""
    ops = [op for t in tasks for op in t.ops]
    return sum(op.flops for op in ops), sum(getattr(op, "bytes", 0.0) for op in ops), len(ops)


@pytest.mark.parametrize("experts", ["loop", "grouped"])
@pytest.mark.parametrize("movement", ["torchtitan", "megatron"])
def test_interleaved_backward_does_the_same_gpu_work(experts, movement):
    """BW reorders the backward, it adds no work: the same FLOPs, bytes and kernels as the B
    chains, the W chains and (torchtitan's loop) the lumped select backward of all experts."""
    counts = (5, 2, 3, 7)
    bw = moe_exec.expert_tasks(SPEC, counts, "BW", experts, movement)
    before = moe_exec.expert_tasks(SPEC, counts, "B", experts, movement)
    before += [t for eid, n in enumerate(counts) for t in
               [moe_exec.ExpertTask(f"e{eid}", tuple(moe_exec.loop_chain_ops(SPEC, n, "W", movement)), n)]] \
        if experts == "loop" else moe_exec.expert_tasks(SPEC, counts, "W", experts, movement)
    if experts == "loop" and movement == "torchtitan":
        before.append(moe_exec.ExpertTask("select", tuple(moe_exec.stacked_select_backward_ops(SPEC, len(counts))), 0))
    assert _work(bw) == pytest.approx(_work(before))
    if experts == "grouped":
        assert [t.name for t in bw] == [t.name for t in before]


def test_stacked_weight_loop_backward_fills_the_whole_tensor_per_expert():
    """torchtitan's loop indexes [E, F, H] weights: each select's backward is a full-size zero
    tensor, and the E contributions are summed (E - 1 full-size adds), per projection."""
    ops = [op for t in moe_exec.expert_tasks(SPEC, (5, 0, 3), "W", "loop", "torchtitan")
           if t.name.endswith("select_bwd") for op in t.ops]
    assert ops == moe_exec.stacked_select_backward_ops(SPEC, 3)
    full = 2.0 * 3 * 256 * 512  # bf16, 3 local experts, one [256, 512] projection
    zeros = [op for op in ops if op.name.endswith("select_bwd.zeros")]
    sums = [op for op in ops if op.name.endswith("select_bwd.sum")]
    assert len(zeros) == 3 * 3 and len(sums) == 3 * 2 and {op.bytes for op in zeros} == {full}
    assert {op.bytes for op in sums} == {3 * full} and {op.variant for op in sums} == {"add"}
    with pytest.raises(ConfigError, match="BW"):
        moe_exec.loop_chain_ops(SPEC, 5, "BW")


def test_padded_runs_every_expert_at_capacity_and_refuses_more():
    tasks = moe_exec.expert_tasks(SPEC, (5, 0, 3), "F", "padded", padded_rows=8)
    assert {t.ops[0].counts for t in tasks if isinstance(t.ops[0], GroupedGemm)} == {(8, 8, 8)}
    with pytest.raises(ConfigError, match="capacity"):
        moe_exec.padded_counts((9, 0), 8)


def test_padded_routing_drops_exactly_the_tokens_over_capacity():
    # 10 tokens x top-1 over 4 experts -> [3, 3, 2, 2] per source; cf 0.8 -> capacity ceil(2.0) = 2
    assert moe_exec.capacity(0.8, 10, 1, 4) == 2
    plan = BalancedRouting(4, 1, 10, 2, capacity_factor=0.8).plan(0, 0, 0, 0)
    assert plan.dropped == 2 * 2
    assert plan.experts == (((0, 4), (1, 4)), ((2, 4), (3, 4)))
    assert BalancedRouting(4, 1, 10, 2).plan(0, 0, 0, 0).dropped == 0


def test_bad_counts_are_refused():
    for bad in ((), (-1, 2), (1.5,)):
        with pytest.raises(ConfigError, match="counts"):
            moe_exec.expert_tasks(SPEC, bad, "F")


# -- options -------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, field", [
    ({"experts": "vectorised"}, "moe.experts"),
    ({"token_movement": "deepspeed"}, "moe.token_movement"),
    ({"experts": "padded", "capacity_factor": 0.0}, "moe.capacity_factor"),
    ({"experts": "padded", "capacity_factor": -1.0}, "moe.capacity_factor"),
    ({"experts": "padded", "capacity_factor": "x"}, "moe.capacity_factor"),
    ({"capacity_factor": 1.25}, "moe.capacity_factor"),
    ({"experts": "loop", "capacity_factor": 1.25}, "moe.capacity_factor"),
    ({"experts": "padded", "capacity_factor": 1.0, "dispatcher": "deepep"}, "moe.experts"),
    ({"experts": "padded", "capacity_factor": 1.0,
      "routing": RoutingConfig(kind="uniform", capacity_factor=2.0)}, "moe.capacity_factor"),
])
def test_bad_options_name_the_field(kwargs, field):
    with pytest.raises(ConfigError) as err:
        MoEOptions(**kwargs)
    assert err.value.field == field


def scenario(**moe) -> Scenario:
    return Scenario(name="m", topology="dgx_h100", model=SPEC, cost_model="roofline",
                    plan=ParallelPlan(tp=1, dp=8, pp=1, ep=8, num_microbatches=2), moe=MoEOptions(**moe))


def test_options_set_field_by_field_and_padded_without_capacity_is_refused_at_build():
    scn = scenario().with_overrides({"moe.experts": "padded", "moe.capacity_factor": "1.25"})
    assert (scn.moe.experts, scn.moe.capacity_factor) == ("padded", 1.25)
    with pytest.raises(ConfigError) as err:
        build_scenario(scenario(experts="padded"))
    assert err.value.field == "moe.capacity_factor"


def test_reduced_engine_refuses_padding():
    from moesim.scale.reduced import reducible

    scn = Scenario(name="r", topology="dgx_h100", model=SPEC, engine="reduced",
                   plan=ParallelPlan(tp=1, dp=8, pp=1, ep=8), moe=MoEOptions(experts="padded", capacity_factor=1.0))
    assert "moe.experts" in reducible(scn)


# -- the lowering ----------------------------------------------------------------------------
def test_grouped_counts_sum_to_the_pairs_each_gpu_received():
    routing = RoutingConfig(kind="zipf", zipf_s=1.2, seed=3)
    built = build_scenario(scenario(routing=routing))
    res = built.sim.run()
    per_step: dict[tuple, int] = {}
    for s in res.recorder.spans:
        if s.name.startswith("expert.w1.L") and ".dgrad" not in s.name and ".wgrad" not in s.name:
            (op,) = s.args["ops"]
            assert isinstance(op, GroupedGemm) and len(op.counts) == 1 and sum(op.counts) == s.args["tokens"]
            key = (s.args["layer"], s.args["microbatch"])
            per_step[key] = per_step.get(key, 0) + sum(op.counts)
    pairs = 8 * built.table.tokens_per_rank * SPEC.top_k
    assert per_step and set(per_step.values()) == {pairs}
    assert sum(built.exchange.stats.gpu_tokens.values()) == pairs * len(per_step)


class SyntheticCost:
    """Exactly known kernel times: a grouped GEMM 1000 + 10 ns per row, a GEMM 500 + 10 ns per
    row (m), a memory kernel 100 ns, a counts copy 2000 ns; no region cost."""

    name = "synthetic"

    def compute_ns(self, op) -> int:
        if isinstance(op, GroupedGemm):
            return 1000 + 10 * op.rows
        if isinstance(op, Gemm):
            return 500 + 10 * op.m
        assert isinstance(op, MemoryOp)
        return 100

    def sync_ns(self, nbytes: float) -> int:
        return 2000


class FixedRouting:
    def __init__(self, plan):
        self._plan = plan

    def plan(self, tp, group, layer, microbatch):
        return self._plan


def lower_exchange(experts: str, phase: str = "F", wgrad: bool = False):
    """GPU0 holds experts 0 (300 tokens) and 1 (none), GPU1 experts 2 and 3 (50 each); every
    token is its own GPU's, so no bytes move. The table, the lowering's ready map, the run."""
    table = MoEStageTable(SPEC, generate("1f1b", 1, 1), SyntheticCost(), tp=1, ep=2, micro_batch_size=1,
                          sequence_parallel=False, experts=experts)
    plan = ExchangePlan(np.array([[300, 0], [0, 100]]), (((0, 300), (1, 0)), ((2, 50), (3, 50))))
    sim = Simulation(star(2))
    ready = {(d, 0): [sim.compute(d, 0, "pre")] for d in range(2)}
    ex = MoEExchangeLowering(table, FixedRouting(plan), ep=2, host_of=lambda r: 0)
    kind = "F" if phase == "F" else "BW"
    ctx = {"name": f"{kind}0.0", "args": {"stage": 0, "microbatch": 0}}
    ex.lower(sim, Exchange(0, phase, StageWork(0, 0.0), wgrad=wgrad), Action(kind, 0, 0), ctx, 0,
             Grid(1, 2, 1, (0, 1)), ready)
    return table, ready, sim.run()


def exchange_end(experts: str) -> dict[int, int]:
    """The forward exchange's end on each GPU (the expert work's)."""
    _table, ready, res = lower_exchange(experts)
    assert {s.name.split(".L")[0] for s in res.recorder.spans if s.args.get("host_sync")} == \
        ({"experts.counts_to_host"} if experts == "loop" else set())
    return {d: ready[(d, 0)][-1].end_ns for d in range(2)}


def test_grouped_and_loop_take_exactly_their_kernels_time():
    # grouped: the offsets' cumsum, silu and mul at 100 each, w1, w3, w2 at 1000 + 10 x rows
    assert exchange_end("grouped") == {0: 3 * (1000 + 3000) + 300, 1: 3 * (1000 + 1000) + 300}
    # loop: the counts' copy, a chain per expert with tokens (3 GEMMs at 500 + 10 m, silu, mul), the cat
    assert exchange_end("loop") == {0: 2000 + 3 * (500 + 3000) + 200 + 100,
                                    1: 2000 + 2 * (3 * (500 + 500) + 200) + 100}


def test_reduced_engine_costs_a_gpu_as_the_full_engine_runs_it():
    for experts, gpu0 in (("grouped", 12300), ("loop", 12800)):
        table = MoEStageTable(SPEC, generate("1f1b", 1, 1), SyntheticCost(), tp=1, ep=2, micro_batch_size=1,
                              sequence_parallel=False, experts=experts)
        ns, _region, flops = table.gpu_expert_ns("F", (300, 0))
        assert ns == gpu0 == exchange_end(experts)[0]
        assert flops == pytest.approx(2 * 300 * 3 * SPEC.hidden * SPEC.expert_ffn_hidden)


@pytest.mark.parametrize("experts", ["grouped", "loop"])
def test_backward_with_weight_gradients_runs_autograds_order_in_both_engines(experts):
    """A backward exchange whose weight gradients are not split off (``wgrad``) lowers phase BW:
    a loop's experts one by one from the last, each with its W chain and select share; the
    reduced engine prices a GPU's queue (``gpu_expert_ns``) on the same tasks, to the ns."""
    table, ready, res = lower_exchange(experts, "B", wgrad=True)
    gpu0 = sorted((s for s in res.recorder.spans if s.category == "expert" and s.rank == 0), key=lambda s: s.start_ns)
    names = [s.name.split(".L")[0] for s in gpu0]
    assert names == [t.name for t in table.expert_tasks("BW", (300, 0), (0, 1))]
    if experts == "loop":
        assert names == ["expert1.wgrad", "expert1.select_bwd", "expert0", "expert0.wgrad", "expert0.select_bwd",
                         "experts.cat.bwd"]
        assert all(s.args["host_phase"] == "bwd" for s in gpu0)
        assert [s.args.get("expert") for s in gpu0] == [1, 1, 0, 0, 0, None]
    assert gpu0[-1].end_ns == table.gpu_expert_ns("BW", (300, 0))[0]


def test_the_reduced_engine_issues_a_loop_backward_as_the_full_one():
    """Eager hosts priced per op class (the H100 profile): the reduced engine's lane runs the
    busiest GPU's BW tasks one by one, its select shares priced as loop bodies (``expert`` in
    their args) as the full engine prices them: host time within 1%, the step within 2%."""
    import dataclasses

    from moesim.experiment.runner import run_scenario

    scn = Scenario(name="m", topology="dgx_h100", model=SPEC, cost_model="calibrated", host="eager",
                   plan=ParallelPlan(tp=1, dp=8, pp=1, ep=4, num_microbatches=2),
                   moe=MoEOptions(experts="loop", routing=RoutingConfig(kind="zipf", zipf_s=1.2, seed=3)))
    full, _ = run_scenario(scn, force=True)
    red, rec = run_scenario(dataclasses.replace(scn, engine="reduced"))
    shares = [s for s in rec.spans if s.category == "expert" and s.name.endswith("select_bwd")]
    assert shares and all(s.args.get("expert") is not None and s.args["host_phase"] == "bwd" for s in shares)
    assert red.host_issue["host_busy_ms"] == pytest.approx(full.host_issue["host_busy_ms"], rel=0.01)
    assert red.step_time_ms == pytest.approx(full.step_time_ms, rel=0.02)   # the busiest GPU stands for all


def test_a_loop_backward_keeps_its_weight_gradients_in_the_layer_backward():
    """An unsplit backward (BW) of a loop runs the experts' weight gradients inside the MoE
    exchange (autograd computes them with the input gradients); grouped keeps its W pass, and a
    split schedule's B and W stay apart for both."""
    from moesim.experiment.build import resolve_cost_model

    def exchanges(experts: str, kind: str) -> list:
        table = MoEStageTable(SPEC, generate("1f1b", 1, 1), resolve_cost_model("roofline", "H200"), tp=1, ep=2,
                              micro_batch_size=1, sequence_parallel=False, experts=experts)
        return [(x.phase, x.wgrad) for x in table.segments(Action(kind, 0, 0)) if isinstance(x, Exchange)]

    assert exchanges("loop", "BW") == [("B", True)] * SPEC.num_moe_layers
    assert exchanges("grouped", "BW") == [("B", False)] * SPEC.num_moe_layers + [("W", False)] * SPEC.num_moe_layers
    assert exchanges("loop", "W") == [("W", False)] * SPEC.num_moe_layers
    assert exchanges("loop", "B") == [("B", False)] * SPEC.num_moe_layers


def test_padded_run_drops_over_capacity_and_pads_every_expert_and_its_dispatch():
    routing = RoutingConfig(kind="zipf", zipf_s=1.2, seed=3)
    built = build_scenario(scenario(routing=routing, experts="padded", capacity_factor=1.0))
    table, ex = built.table, built.exchange
    cap = moe_exec.capacity(1.0, table.tokens_per_rank, SPEC.top_k, SPEC.num_experts)
    assert table.capacity == cap == table.tokens_per_rank * SPEC.top_k // SPEC.num_experts
    res = built.sim.run()
    w1 = [s for s in res.recorder.spans if s.name.startswith("expert.w1.L") and "grad" not in s.name]
    assert w1 and {s.args["ops"][0].counts for s in w1} == {(8 * cap,)}   # ep sources x capacity
    kept = sum(ex.stats.gpu_tokens.values())
    routed = 2 * SPEC.num_moe_layers * 8 * table.tokens_per_rank * SPEC.top_k   # microbatches x layers x ranks
    assert ex.stats.dropped_tokens > 0 and kept + ex.stats.dropped_tokens == routed
    plan = ex.routing.plan(0, 0, 0, 0)
    assert (ex._tokens(plan) == cap).all()   # one expert per GPU: every source sends it its capacity
    unpadded = MoEExchangeLowering(MoEStageTable(SPEC, generate("1f1b", 1, 1), SyntheticCost(), tp=1, ep=8,
                                                 micro_batch_size=1, sequence_parallel=False), ex.routing, 8,
                                   lambda r: 0)
    assert unpadded._tokens(plan) is plan.tokens


def test_megatron_forward_syncs_the_eager_host_where_it_reads_results_back():
    """Megatron's counts .cpu() and its two masked_select make an eager host wait for the GPU:
    the forward's dispatch side is cut into segments marked host_sync, and the eager run is
    slower than the same program without those waits; torchtitan's grouped path has none."""
    from moesim.experiment.block import block_scenario, simulate_block
    from moesim.experiment.scenario import MoEOptions

    def run(movement: str):
        scn = block_scenario(SPEC, layer="moe_block", tokens=512, seq_len=512, passes="fwd", host="eager",
                             cost_model="roofline", moe=MoEOptions(token_movement=movement))
        res = simulate_block(scn)
        return res, [s for s in res.recorder.spans if s.stream == "host" and s.name.startswith("sync ")]

    megatron, waits = run("megatron")
    assert len(waits) == 3
    _, titan_waits = run("torchtitan")
    assert titan_waits == []


def test_megatrons_layer_overhead_is_added_once_per_moe_layer_and_pass_before_the_dispatch():
    """A profile's ``megatron_moe_layer`` host class (Megatron's MoELayer beyond its kernels'
    calls) adds to the host time of each MoE layer's first segment before the dispatch, in the
    forward (``fwd``) and the backward (``bwd``), for Megatron's token movements only; a profile
    without the class changes nothing."""
    from moesim.costs.calibrated import CalibratedCostModel
    from moesim.costs.profile import load_profile

    asked = set()

    class WithLayerClass(CalibratedCostModel):
        def host_call_ns(self, call, phase, local_experts=None):
            if call == moe_exec.FRAMEWORK_LAYER_CLASS:
                asked.add(local_experts)
                return {"fwd": 300_000.0, "bwd": 500_000.0}.get(phase)
            return super().host_call_ns(call, phase, local_experts)

    class WithoutLayerClass(CalibratedCostModel):
        def host_call_ns(self, call, phase, local_experts=None):
            return (None if call == moe_exec.FRAMEWORK_LAYER_CLASS
                    else super().host_call_ns(call, phase, local_experts))

    profile = load_profile("h100_sxm")

    def host_ns(cost, movement: str, kind: str, framework: bool = True, ep: int = 1) -> tuple[int, list[int]]:
        table = MoEStageTable(SPEC, generate("1f1b", 1, 1), cost, tp=1, ep=ep, micro_batch_size=1,
                              sequence_parallel=False, token_movement=movement, framework_modules=framework)
        segs = table._segments(kind, 0)
        return sum(s.host_ns for s in segs if isinstance(s, StageWork)), \
            [i for i, s in enumerate(segs) if isinstance(s, Exchange) and s.phase != "W"]

    for movement, per_layer in (("megatron", True), ("fused", True), ("torchtitan", False)):
        for kind, extra in (("F", 300_000), ("BW", 500_000)):
            base, cuts = host_ns(WithoutLayerClass(profile), movement, kind)
            more, same_cuts = host_ns(WithLayerClass(profile), movement, kind)
            assert same_cuts == cuts and len(cuts) == 2   # two MoE layers: two exchanges (W's apart)
            assert more - base == (2 * extra if per_layer else 0)
            assert host_ns(WithLayerClass(profile), movement, kind, framework=False)[0] == \
                host_ns(WithoutLayerClass(profile), movement, kind, framework=False)[0]   # plain torch calls
    assert asked - {None} == {SPEC.num_experts}   # priced at the GPU's local expert count (None: a presence check)
    asked.clear()
    host_ns(WithLayerClass(profile), "megatron", "F", ep=2)
    assert asked - {None} == {SPEC.num_experts // 2}
    with pytest.raises(ConfigError, match="moe.framework_modules"):
        MoEOptions(framework_modules="sometimes")
    assert MoEOptions(framework_modules="false").framework_modules is False   # as --set passes it


def test_megatrons_alltoall_dispatcher_regroups_tokens_by_local_expert_and_fuses_the_probs():
    """With Megatron-Core's own modules the alltoall dispatcher copies a GPU's received tokens
    into local-expert order before its experts and back after them (two ``[rows, h]`` copies and
    the probabilities' in the forward, the same copies in reverse in the backward, none in W, none
    with one local expert, with DeepEP or with plain torch calls); the ``megatron`` movement's
    unpermute carries no probabilities multiply (the fused SwiGLU applies them)."""
    def table(movement="megatron", framework=True, dispatcher="alltoall", ep=2):
        return MoEStageTable(SPEC, generate("1f1b", 1, 1), SyntheticCost(), tp=1, ep=ep, micro_batch_size=1,
                             sequence_parallel=False, token_movement=movement, framework_modules=framework,
                             dispatcher=dispatcher)

    e, h = 2, SPEC.hidden
    tasks = table().expert_tasks("F", (30, 10))
    assert [t.name for t in tasks[:2]] == ["moe.sort_chunks", "moe.sort_chunks.probs"]
    assert tasks[-1].name == "moe.unsort_chunks" and tasks[0].ops[0].bytes == 2 * e * 40 * h
    back = table().expert_tasks("BW", (30, 10))
    assert back[0].name == "moe.unsort_chunks.bwd" and [t.name for t in back[-2:]] == \
        ["moe.sort_chunks.bwd", "moe.sort_chunks.probs.bwd"]
    assert not any("sort" in t.name for t in table().expert_tasks("W", (30, 10)))
    for t in (table(framework=False), table(dispatcher="deepep"), table(movement="torchtitan")):
        assert not any("sort" in x.name for x in t.expert_tasks("F", (30, 10)))
    assert not any("sort" in x.name for x in table().expert_tasks("F", (40,)))   # one local expert
    assert table().gpu_expert_ns("F", (30, 10))[0] > table(framework=False).gpu_expert_ns("F", (30, 10))[0]

    def names(t, kind):
        return {getattr(x, "name", "") for x in t._program(kind, 0)}
    assert "moe.probs_mul" in names(table(framework=False), "F") and "moe.probs_mul" not in names(table(), "F")
    assert not names(table(), "B") & tokmove.PROBS_AFTER_EXPERTS
    assert "moe.probs_mul" not in names(table(movement="fused"), "F")   # TE's fused unpermute merges them


def test_megatrons_shared_expert_module_is_priced_by_its_measured_mlp_class():
    """With Megatron-Core's own modules a layer's shared experts (``SharedExpertMLP``, Megatron's
    ``MLP``) cost the measured ``megatron_expert_mlp`` call in place of their per-op host sum: the
    forward call for the forward ops, the backward for the backward ops; plain torch calls keep the
    per-op sum, and the exchange's shared-experts task carries that host time."""
    import dataclasses as dc

    from moesim.costs.calibrated import CalibratedCostModel
    from moesim.costs.profile import load_profile
    from moesim.lowering import host as host_mod
    from moesim.lowering.moe_costs import split_moe_program

    class WithMlpClass(CalibratedCostModel):
        def host_call_ns(self, call, phase, local_experts=None):
            if call == moe_exec.MEGATRON_BODY_CLASS:
                return {"fwd": 250_000.0, "bwd": 400_000.0}.get(phase)
            return super().host_call_ns(call, phase, local_experts)

    spec = dc.replace(SPEC, num_shared_experts=1)
    cost = WithMlpClass(load_profile("h100_sxm"))

    def table(framework: bool) -> MoEStageTable:
        return MoEStageTable(spec, generate("1f1b", 1, 1), cost, tp=1, ep=1, micro_batch_size=1,
                             sequence_parallel=False, token_movement="megatron", framework_modules=framework)
    for kind, phase, want in (("F", "fwd", 250_000), ("B", "bwd", 400_000)):
        _, _, shared = split_moe_program(table(True)._program(kind, 0))
        assert shared and all(host_mod.op_phase(x) == phase for x in shared)
        per_op = table(False)._shared_work(shared).host_ns
        assert per_op == table(True).host.ops_ns(shared, phase) > 0
        assert table(True)._shared_work(shared).host_ns == want
        segs = table(True)._segments(kind, 0)
        shared_work = [s.shared for s in segs if isinstance(s, Exchange) and s.phase == kind]
        assert shared_work and all(w.host_ns == want for w in shared_work)


def test_the_shared_experts_task_carries_its_segments_host_time():
    """The exchange's shared-experts compute task is issued with its segment's host time (its ops
    priced per class), not the per-kernel eager figure; a segment not priced per op (host_ns 0)
    leaves the task to the per-kernel figure as before."""
    from moesim.lowering import moe_exchange
    from moesim.lowering.moe_costs import Exchange as Ex

    class FakeSim:
        def __init__(self):
            self.calls = []

        def compute(self, gpu, duration, name, category, deps, args, region_ns):
            self.calls.append(args)
            return name

    for host_ns, want in ((123_456, {"host_ns": 123_456}), (0, {})):
        sim = FakeSim()
        seg = Ex(0, "F", StageWork(5_000, 1.0, kernels=4, host_ns=host_ns))
        ready = {"a": [], "b": []}
        moe_exchange._shared_experts(sim, seg, {"name": "mb0"}, [0, 1], ["a", "b"], ready, {"stage": 0})
        assert len(sim.calls) == 2 and all(c["kernels"] == 4 for c in sim.calls)
        assert all({k: c[k] for k in c if k == "host_ns"} == want for c in sim.calls)
