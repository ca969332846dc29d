"""FP8 GEMMs pay their changing operand's quantize kernels (moesim.lowering.fp8_quantize): exact bytes
per GEMM, where the kernels land in dense programs and MoE expert tasks, and exact segment times."""
from __future__ import annotations

import dataclasses

from moesim.lowering.fp8_quantize import quantize_ops, with_quantize
from moesim.lowering.moe_costs import MoEStageTable
from moesim.lowering.stage_costs import StageTable
from moesim.ops import Gemm, GroupedGemm, MemoryOp
from moesim.schedules import generate
from moesim.schedules.model import Action
from moesim.workload.common import ffn_forward_ops
from moesim.workload.moe import MoESpec
from moesim.workload.presets import get_model

TINY = MoESpec(name="tiny-moe", num_layers=2, hidden=512, num_heads=8, num_kv_heads=8, head_dim=64,
               ffn_hidden=1024, vocab=32000, seq_len=512, num_experts=8, top_k=2, expert_ffn_hidden=256,
               gemm_dtype="fp8")


class CastBytes:
    """A cast kernel costs 1 ns per byte it moves; everything else is free (no host model, no region)."""

    peak_flops = 1e15

    def compute_ns(self, op) -> int:
        return int(op.bytes) if isinstance(op, MemoryOp) and op.kind == "cast" else 0


def sizes(ops) -> list[tuple[str, float]]:
    return [(op.name, op.bytes) for op in ops]


def test_tensorwise_gemm_quantizes_its_input_with_an_amax_and_a_cast_transpose():
    op = Gemm(m=4096, n=5120, k=2048, dtype="fp8", name="attn.qkv")
    ops = quantize_ops(op, 2)
    assert sizes(ops) == [("attn.qkv.fp8_amax", 2 * 4096 * 2048), ("attn.qkv.fp8_cast_transpose", 4 * 4096 * 2048)]
    assert {(o.kind, o.variant) for o in ops} == {("cast", "cast_fp8")}


def test_dgrad_quantizes_the_output_gradient_and_wgrad_nothing():
    dgrad = Gemm(m=4096, n=2048, k=5120, dtype="fp8", name="attn.qkv.dgrad")   # dX = dY[4096, 5120] W
    assert [b for _n, b in sizes(quantize_ops(dgrad, 2))] == [2 * 4096 * 5120, 4 * 4096 * 5120]
    assert quantize_ops(Gemm(m=2048, n=5120, k=4096, dtype="fp8", name="attn.qkv.wgrad"), 2) == []
    assert quantize_ops(Gemm(m=4096, n=5120, k=2048, dtype="bf16", name="attn.qkv"), 2) == []


def test_grouped_gemm_quantizes_all_its_rows_rowwise_in_two_passes():
    fwd = GroupedGemm((3, 5), n=32, k=16, dtype="fp8", layout="fwd", name="expert.fc1")
    assert sizes(quantize_ops(fwd, 2)) == [("expert.fc1.fp8_quantize_rows", 3 * 8 * 16),
                                           ("expert.fc1.fp8_quantize_cols", 3 * 8 * 16)]
    assert quantize_ops(dataclasses.replace(fwd, layout="wgrad"), 2) == []


def test_swiglu_up_projection_reuses_the_gate_projections_quantized_input():
    program = ffn_forward_ops(64, 32, 48, "swiglu", "bf16", "mlp", gemm_dtype="fp8",
                              fused_activation=False)  # gate, up, silu, mul, down
    out = with_quantize(program, 2)
    assert [op.name for op in out] == ["mlp.gate.fp8_amax", "mlp.gate.fp8_cast_transpose", "mlp.gate", "mlp.up",
                                       "mlp.silu", "mlp.mul", "mlp.down.fp8_amax", "mlp.down.fp8_cast_transpose",
                                       "mlp.down"]
    assert sum(op.bytes for op in out if isinstance(op, MemoryOp) and op.kind == "cast") == 6 * 64 * 32 + 6 * 64 * 48
    # fused (Megatron): gate and up are one fc1 GEMM, its input quantized once all the same
    fused = with_quantize(ffn_forward_ops(64, 32, 48, "swiglu", "bf16", "mlp", gemm_dtype="fp8"), 2)
    assert [op.name for op in fused] == ["mlp.fc1.fp8_amax", "mlp.fc1.fp8_cast_transpose", "mlp.fc1", "mlp.swiglu",
                                         "mlp.down.fp8_amax", "mlp.down.fp8_cast_transpose", "mlp.down"]
    assert sum(op.bytes for op in fused if isinstance(op, MemoryOp) and op.kind == "cast") == 6 * 64 * 32 + 6 * 64 * 48


def test_dense_stage_pays_six_bytes_per_quantized_element():
    # llama3-8b in fp8, 2 layers on stage 0 of 2: per layer forward qkv, out, gate (up shares it), down
    spec = dataclasses.replace(get_model("llama3-8b"), num_layers=4, gemm_dtype="fp8")
    table = StageTable(spec, generate("1f1b", 2, 2), CastBytes(), tp=1, micro_batch_size=1, sequence_parallel=False)
    T, h, f = spec.seq_len, spec.hidden, spec.ffn_hidden
    (forward,) = table.segments(Action("F", 0, 0))
    assert forward.duration_ns == 2 * 6 * T * (h + h + h + f)
    # backward input gradients: qkv dgrad reads dY[T, 6144], out dgrad dY[T, h], gate/up dgrad dY[T, f] each,
    # down dgrad dY[T, h]
    (backward,) = table.segments(Action("B", 0, 0))
    qkv_out = (spec.num_heads + 2 * spec.num_kv_heads) * spec.head_dim
    assert backward.duration_ns == 2 * 6 * T * (qkv_out + h + 2 * f + h)
    bf16 = StageTable(dataclasses.replace(spec, gemm_dtype=None), generate("1f1b", 2, 2), CastBytes(), tp=1,
                      micro_batch_size=1, sequence_parallel=False)
    assert bf16.segments(Action("F", 0, 0))[0].duration_ns == 0


def test_megatron_expert_tasks_carry_their_quantize_kernels():
    table = MoEStageTable(TINY, generate("1f1b", 1, 1), CastBytes(), tp=1, ep=2, micro_batch_size=1,
                          sequence_parallel=False, token_movement="megatron")
    rows = 100 + 28
    fwd = {t.name: t for t in table.expert_tasks("F", (100, 28))}
    assert [op.name for op in fwd["expert.fc1"].ops] == ["expert.fc1.fp8_quantize_rows",
                                                          "expert.fc1.fp8_quantize_cols", "expert.fc1"]
    assert table.task_ns(fwd["expert.fc1"]) == (2 * 3 * rows * 512, 0)        # input [rows, hidden]
    assert table.task_ns(fwd["expert.fc2"]) == (2 * 3 * rows * 256, 0)        # input [rows, expert ffn]
    bwd = {t.name: t for t in table.expert_tasks("B", (100, 28))}
    assert table.task_ns(bwd["expert.fc2.dgrad"]) == (2 * 3 * rows * 512, 0)  # dY [rows, hidden]
    assert table.task_ns(bwd["expert.fc1.dgrad"]) == (2 * 3 * rows * 512, 0)  # dY [rows, 2 x expert ffn]
    assert all(table.task_ns(t) == (0, 0) for t in table.expert_tasks("W", (100, 28)))
    assert table.gpu_expert_ns("F", (100, 28))[0] == 6 * rows * (512 + 256)


def test_fp8_dispatch_delivers_the_first_projection_quantized():
    spec = dataclasses.replace(TINY, dispatch_dtype="fp8")
    table = MoEStageTable(spec, generate("1f1b", 1, 1), CastBytes(), tp=1, ep=2, micro_batch_size=1,
                          sequence_parallel=False, token_movement="megatron")
    fwd = {t.name: table.task_ns(t)[0] for t in table.expert_tasks("F", (64, 64)) if t.name.startswith("expert.")}
    assert fwd == {"expert.fc1": 0, "expert.swiglu": 0, "expert.fc2": 6 * 128 * 256}   # (the dispatcher's copies apart)


def test_torchtitan_w3_reuses_w1s_quantized_input():
    table = MoEStageTable(TINY, generate("1f1b", 1, 1), CastBytes(), tp=1, ep=2, micro_batch_size=1,
                          sequence_parallel=False, token_movement="torchtitan")
    fwd = {t.name: table.task_ns(t)[0] for t in table.expert_tasks("F", (64, 64))}
    assert fwd == {"experts.offsets": 0, "expert.w1": 6 * 128 * 512, "expert.silu": 0, "expert.w3": 0, "expert.mul": 0,
                   "expert.w2": 6 * 128 * 256}
