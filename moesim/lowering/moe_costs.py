"""Segments of each pipeline action for an MoE model: compute, then the MoE exchange, per layer.

For an MoE layer the workload's program is ``[attention.., norm, router, permute, DISPATCH,
experts (balanced), COMBINE, unpermute, shared experts.., residual]``. This table cuts it at the
two expert-parallel all-to-alls: what precedes the dispatch and what follows the combine become
:class:`StageWork` segments (dense layers in between fold into them); the balanced expert
compute is dropped and replaced, in an :class:`Exchange` segment, by per-GPU expert work sized
from typing import Callable
from the actual routing counts and placement; the shared experts move into the exchange so they
run while the dispatch is in flight. Backward mirrors this; W (weight gradients) has a per-GPU
expert segment with no communication.

The router and token movement follow ``token_movement``'s framework and the experts
``experts`` (grouped kernels over a GPU's count vector, a per-expert loop, or capacity padding):
:mod:`moesim.workload.moe_exec`. :meth:`MoEStageTable.expert_tasks` and
:meth:`MoEStageTable.task_ns` give one GPU's expert tasks and their times to both engines.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import lru_cache

from moesim.costs.regions import sequence
from moesim.lowering import host as host_mod
from moesim.lowering.fp8_quantize import with_quantize
from moesim.lowering.stage_costs import StageTable
from moesim.lowering.pipeline import StageWork
from moesim.ops import DTYPE_BYTES, GroupedGemm, MemoryOp
from moesim.workload import moe as moe_ops
from moesim.workload import moe_exec
from moesim.workload import token_movement as movement
from moesim.workload.common import CommOp, ProgramItem


@dataclass(frozen=True)
class Exchange:
    """The MoE block of ``layer`` in ``phase`` F (dispatch, experts, combine), B (mirrored) or W
    (expert weight gradients only); ``shared`` runs while the first all-to-all is in flight."""

    layer: int
    phase: str
    shared: StageWork
    wgrad: bool = False   # B only: the experts' weight gradients run before the dispatch backward


def _is_ep(item: ProgramItem) -> bool:
    return isinstance(item, CommOp) and item.group == "ep"


def _is_shared(item: ProgramItem) -> bool:
    return getattr(item, "name", "").startswith("shared")


def _is_expert(item: ProgramItem) -> bool:
    return getattr(item, "name", "").startswith("expert")


def split_moe_program(program: list[ProgramItem]) -> tuple[list, list, list]:
    """(before the first EP all-to-all, after the second, shared-expert items), experts dropped."""
    cut = [i for i, item in enumerate(program) if _is_ep(item)]
    assert len(cut) == 2, f"an MoE block program has two expert-parallel all-to-alls, found {len(cut)}"
    pre, post = program[:cut[0]], program[cut[1] + 1:]
    shared = [x for x in pre + post if _is_shared(x)]
    return [x for x in pre if not _is_shared(x)], [x for x in post if not _is_shared(x)], shared


def exec_kwargs(moe_options) -> dict:
    """The :class:`MoEStageTable` keywords of a scenario's ``MoEOptions`` (experts, token
    movement, capacity factor; the defaults for an object without them)."""
    return {"experts": getattr(moe_options, "experts", "grouped"),
            "token_movement": getattr(moe_options, "token_movement", "torchtitan"),
            "framework_modules": getattr(moe_options, "framework_modules", True),
            "dispatcher": getattr(moe_options, "dispatcher", "alltoall"),
            "capacity_factor": getattr(moe_options, "capacity_factor", None),
            "grouped_gemm": getattr(moe_options, "grouped_gemm", "torch")}


class MoEStageTable(StageTable):
    """StageWorkTable with per-layer MoE exchanges; dense parts costed as in StageTable."""

    def __init__(self, spec: moe_ops.MoESpec, schedule, cost, *, tp: int, ep: int, micro_batch_size: int,
                 sequence_parallel: bool, grad_dtype_bytes: int = 4, recompute: str = "none",
                 experts: str = "grouped", token_movement: str = "torchtitan",
                 capacity_factor: "float | None" = None, autograd: bool = True, shared_overlap: bool = True,
                 fused_wgrad: bool = False, recompute_modules: "tuple[str, ...] | None" = None,
                 split_slots: tuple[int, int] = (0, 0), framework_modules: bool = True,
                 dispatcher: str = "alltoall", grouped_gemm: str = "torch", expert_tp: int = 1,
                 recompute_at: "Callable[[int], str] | None" = None) -> None:
        super().__init__(spec, schedule, cost, tp=tp, micro_batch_size=micro_batch_size,
                         sequence_parallel=sequence_parallel, grad_dtype_bytes=grad_dtype_bytes, ep=ep,
                         recompute=recompute, autograd=autograd, recompute_modules=recompute_modules,
                         recompute_at=recompute_at, split_slots=split_slots)
        self.tokens_per_rank = moe_ops.moe_input_tokens(spec, micro_batch_size, tp, self.sp)
        self.expert_tp = expert_tp   # each GPU holds 1/expert_tp of its experts' weights (ParallelPlan.expert_tp)
        moe_exec.check_exec(experts, token_movement, capacity_factor, grouped_gemm=grouped_gemm)
        self.experts, self.token_movement, self.capacity_factor = experts, token_movement, capacity_factor
        self.grouped_gemm = grouped_gemm   # "te": the grouped GEMMs issued as Transformer Engine's (GroupedGemm.impl)
        # Megatron's modules around the kernels (host classes megatron_moe_layer / megatron_expert_mlp)
        self.framework_modules = moe_exec.framework_modules_run(framework_modules, token_movement)
        # Megatron's alltoall dispatcher regroups a GPU's received tokens by local expert and back
        self.sort_chunks = self.framework_modules and dispatcher == "alltoall"
        # Megatron-Core's own modules with the "megatron" movement: the routing probabilities are
        # applied inside the experts' fused SwiGLU, not after them
        self.megatron_local = self.framework_modules and token_movement == "megatron"
        # the routed experts' SwiGLU, fused or eager as the framework runs it (moe_exec.experts_fuse_activation)
        self.expert_spec = moe_exec.expert_spec(spec, self.framework_modules, experts)
        # moesim.lowering.overlap: shared experts during the dispatch (else before it); a BW's
        # weight gradients inside each layer's backward (else after the whole input backward)
        self.shared_overlap, self.fused_wgrad = shared_overlap, fused_wgrad
        # --recompute-modules moe_act / shared_experts: re-run before the backward that needs them
        modules = (self.recompute_modules or ()) if recompute == "selective" else ()
        self.recompute_act, self.recompute_shared = "moe_act" in modules, "shared_experts" in modules
        # padded: each source rank sends every expert exactly its capacity (Megatron pads before the all-to-all)
        self.capacity = (moe_exec.capacity(capacity_factor, self.tokens_per_rank, spec.top_k, spec.num_experts)
                         if experts == "padded" else 0)

    def _program(self, kind: str, layer: int) -> list[ProgramItem]:
        """A pass of ``layer``; with Megatron-Core's own modules (``megatron`` movement), the
        unpermute carries no probabilities multiply: Megatron-Core 0.13+ applies the routing
        probabilities inside the experts' fused weighted SwiGLU (``MLP(per_token_scale=...)``,
        ``GroupedMLP.activation_func_with_probs``) and unpermutes without them (the alltoall
        dispatcher's ``unpermute(..., probs=None)``)."""
        program = super()._program(kind, layer)
        if not self.megatron_local:
            return program
        return [x for x in program if getattr(x, "name", "") not in movement.PROBS_AFTER_EXPERTS]

    def _layer_segments(self, kind: str, layer: int, acc: list[ProgramItem]) -> tuple[list, list[ProgramItem]]:
        program = self._program(kind, layer)
        if not self.spec.is_moe_layer(layer):
            return [], acc + program
        if kind == "W":
            rest = [x for x in program if not _is_expert(x)]
            return [self._cost(acc + rest), Exchange(layer, "W", StageWork(0, 0.0))], []
        pre, post, shared = split_moe_program(program)
        if kind == "B":
            shared = self._shared_again(layer) + shared
        if not self.shared_overlap:   # shared experts before the router: the dispatch waits for them
            return [*self._framework(kind, self._synced(acc + shared + pre), self._shared_module_extra(shared)),
                    Exchange(layer, kind, StageWork(0, 0.0))], list(post)
        return [*self._framework(kind, self._synced(acc + pre)), Exchange(layer, kind, self._shared_work(shared))], list(post)

    def _shared_work(self, shared: list[ProgramItem]) -> StageWork:
        """The shared experts' segment; with Megatron-Core's own modules its host time is that of
        the module calls (:meth:`_shared_module_extra`)."""
        work = self._cost(shared)
        extra = self._shared_module_extra(shared)
        return dataclasses.replace(work, host_ns=work.host_ns + extra) if extra else work

    def _shared_module_extra(self, shared: list[ProgramItem]) -> int:
        """Host ns to add to the per-op host sum of ``shared`` (a layer's shared-expert ops in a
        pass) where Megatron-Core's own modules run them: ``SharedExpertMLP`` is Megatron's
        ``MLP`` module, the module ``SequentialMLP`` calls per expert, so each of its calls costs
        the measured ``megatron_expert_mlp`` class (its forward call for the forward ops, a
        recomputed forward included, its backward for the backward ops) in place of the per-op
        sum; 0 without Megatron's modules, without shared experts or where the profile lacks
        the class. In split schedules (B and W apart) the class's backward stands for the B
        pass's ops and the W pass prices the shared weight gradients per op again (their per-op
        issue counted twice: tens of us per layer). Never below the per-op sum (0 extra where
        the class measured less)."""
        ops = [x for x in shared if not isinstance(x, CommOp)]
        total = 0
        for phase in ("fwd", "bwd"):
            mine = [x for x in ops if host_mod.op_phase(x) == phase]
            if not mine:
                continue
            whole = self._module_ns(moe_exec.MEGATRON_BODY_CLASS, phase)
            if whole is None:
                return 0
            total += int(round(whole)) - self.host.ops_ns(mine, phase)
        return max(0, total)

    def _module_ns(self, call: str, phase: str, local_experts: "int | None" = None) -> "float | None":
        """The profile's measured host class ``call`` in ``phase`` (the pass's own autograd mode)
        where Megatron-Core's modules run and the host is priced per op class; else None."""
        measured = getattr(self.host.model, "host_call_ns", None)
        if not self.framework_modules or not self.host.per_op or not callable(measured):
            return None
        return measured(call, self.host._phase(phase), local_experts=local_experts)

    def _framework(self, kind: str, segments: list[StageWork], extra_ns: int = 0) -> list[StageWork]:
        """``segments`` (an MoE layer's, up to its dispatch) with the host time Megatron-Core's
        ``MoELayer`` spends beyond its kernels' calls (``host_op`` class ``megatron_moe_layer``:
        module calls, router and dispatcher bookkeeping, autograd functions in Python; measured
        as Megatron's layer minus the same kernels by plain torch calls, at the GPU's local
        expert count where the profile measured several: the dispatcher's Python runs per local
        expert chunk) added to the first one,
        issued before the layer's first read-back of GPU results, where the token movement is
        Megatron's (``megatron``, or ``fused``: the same layer with Transformer Engine's permute)
        and the profile measured the class in this pass; unchanged otherwise. Where in the layer
        that Python runs is not measured apart: placed after the last read-back instead, it
        would be exposed in full on GPU-bound layers, which Megatron's own layer does not show
        (Qwen3-30B-A3B block, 16,384 tokens, one H100: 4.97 ms measured, 5.04 without the class,
        5.71 with it after the read-backs, 5.17 before them; data/validation/layers)."""
        ns = self._framework_ns(kind) + extra_ns   # extra_ns: the shared experts' module calls
        if not ns or not segments:
            return segments
        return [dataclasses.replace(segments[0], host_ns=segments[0].host_ns + ns), *segments[1:]]

    @lru_cache(maxsize=None)
    def _framework_ns(self, kind: str) -> int:
        ns = self._module_ns(moe_exec.FRAMEWORK_LAYER_CLASS, "fwd" if kind == "F" else "bwd",
                             self.spec.num_experts // self.ep)
        return int(round(ns)) if ns else 0

    @lru_cache(maxsize=None)
    def _segments(self, kind: str, stage: int) -> tuple:
        if kind == "BW" and (self.fused_wgrad or self.experts == "loop"):
            return tuple(self._fused_backward(stage))
        return super()._segments(kind, stage)

    def _fused_backward(self, stage: int) -> list:
        """A BW whose weight gradients stay inside each layer's backward (Megatron without
        ``--delay-wgrad-compute``; a per-expert loop always: its ``torch.matmul`` chains run under
        plain autograd, whose ``MmBackward`` computes an expert's input and weight gradient
        together, and the stacked weights' select backward follows each expert, so the experts'
        weight gradients cannot wait for the rest of the backward): a layer's dense weight
        gradients follow its input gradients, its experts' run in the exchange before the
        dispatch backward (phase BW, :meth:`expert_tasks`), the shared experts' with the shared
        experts' input gradients. Split schedules (B and W actions) keep B and W apart."""
        before, after = self._edges("B", stage)
        w_before, w_after = self._edges("W", stage)
        out: list = []
        acc: list[ProgramItem] = list(before) + list(w_before)
        layers = list(self._layer_range(stage))
        for layer in reversed(layers):
            acc = acc + self._recomputed(layer, layers.index(layer))
            program, weights = self._program("B", layer), self._program("W", layer)
            if not self.spec.is_moe_layer(layer):
                acc = acc + program + weights
                continue
            pre, post, shared = split_moe_program(program)
            shared = self._shared_again(layer) + shared + [x for x in weights if _is_shared(x)]
            dense_w = [x for x in weights if not _is_shared(x) and not _is_expert(x)]
            if not self.shared_overlap:
                out += [*self._framework("B", self._synced(acc + shared + pre), self._shared_module_extra(shared)),
                        Exchange(layer, "B", StageWork(0, 0.0), wgrad=True)]
            else:
                out += [*self._framework("B", self._synced(acc + pre)),
                        Exchange(layer, "B", self._shared_work(shared), wgrad=True)]
            acc = list(post) + dense_w
        out.append(self._cost(acc + after + w_after))
        return out

    def _shared_again(self, layer: int) -> list[ProgramItem]:
        """The shared experts' forward, re-run before their backward under ``shared_experts``
        recompute (their activations were not kept); nothing otherwise."""
        return split_moe_program(self._program("F", layer))[2] if self.recompute_shared else []

    def _synced(self, program: list[ProgramItem]) -> list[StageWork]:
        """``program`` as compute segments cut after each op whose result the host must read
        (``token_movement.HOST_SYNC_OPS``: Megatron's counts ``.cpu()`` and ``masked_select``, whose
        output size lives on the GPU, torchtitan's expert-parallel split sizes; a padded dispatch
        knows its splits and reads no counts); each such segment is marked ``host_sync``, so an
        eager host thread waits for it before issuing on."""
        syncs = movement.HOST_SYNC_OPS - (movement.COUNT_SYNC_OPS if self.experts == "padded" else frozenset())
        cuts = [i + 1 for i, item in enumerate(program) if getattr(item, "name", "") in syncs]
        if not cuts:
            return [self._cost(program)]
        bounds = [0, *cuts, *([len(program)] if cuts[-1] < len(program) else [])]
        return [dataclasses.replace(self._cost(program[a:b]), host_sync=b in cuts) for a, b in zip(bounds, bounds[1:])]

    # -- gradients ---------------------------------------------------------------------------
    def _chunk_expert_params(self, rank: int, chunk: "int | None") -> float:
        stages = [st for path, st in self.layout.held[rank] if chunk is None or self.schedule.chunk_of(path, st) == chunk]
        layers = sum(1 for st in stages for layer in self._layer_range(st) if self.spec.is_moe_layer(layer))
        return layers * (self.spec.num_experts // self.ep) * self.spec.expert_params / self.expert_tp

    def expert_grad_bytes(self, rank: int, chunk: int) -> float:
        """Gradient bytes of the routed experts of one model chunk on one GPU (``num_experts / ep``
        per MoE layer, ``1 / expert_tp`` of each: ``ParallelPlan.expert_tp``); they reduce over the
        expert-data-parallel group."""
        return self._chunk_expert_params(rank, chunk) * self.grad_dtype_bytes

    def expert_params(self, rank: int) -> float:
        return self._chunk_expert_params(rank, None)

    # -- expert costs and payloads -----------------------------------------------------------
    def expert_tasks(self, phase: str, counts: tuple[int, ...],
                     expert_ids: "tuple[int, ...] | None" = None) -> list[moe_exec.ExpertTask]:
        """One GPU's expert work in phase F, B (input grad), W (weight grad) or BW (both, in one
        backward) for its local experts' token ``counts``, as the scenario's ``experts`` mode runs it
        (:func:`moesim.workload.moe_exec.expert_tasks`; padded: ``ep * capacity`` rows each)."""
        tasks = moe_exec.expert_tasks(self.expert_spec, counts, phase, self.experts, self.token_movement, expert_ids,
                                      padded_rows=self.ep * self.capacity, recompute_act=self.recompute_act,
                                      framework=self.framework_modules)
        tasks = [self._quantized(task, phase) for task in tasks]
        before, after = self._sort_ops(phase, counts)
        rows = self._rows(counts)
        return ([moe_exec.ExpertTask(op.name, (op,), rows) for op in before] + tasks
                + [moe_exec.ExpertTask(op.name, (op,), rows) for op in after])

    def _rows(self, counts: tuple[int, ...]) -> int:
        return self.ep * self.capacity * len(counts) if self.experts == "padded" else sum(int(c) for c in counts)

    def _sort_ops(self, phase: str, counts: tuple[int, ...]) -> tuple[list, list]:
        """Megatron's alltoall dispatcher's regrouping copies around this GPU's experts
        (:func:`moesim.workload.token_movement.sort_chunk_ops`; none without Megatron's modules)."""
        if not self.sort_chunks or len(counts) < 2:   # one local expert: nothing to regroup
            return [], []
        return movement.sort_chunk_ops(self.spec, self._rows(counts), phase)

    def _quantized(self, task: moe_exec.ExpertTask, phase: str) -> moe_exec.ExpertTask:
        """``task`` with each FP8 GEMM preceded by its operand's quantize kernels
        (:mod:`moesim.lowering.fp8_quantize`); an fp8 dispatch delivers the first forward
        projection's input already quantized (the source casts before sending); torchtitan's w3
        reads the input w1 quantized (each is its own task here, so by name)."""
        task = self._issued_task(task)
        skip = self._skip(phase)
        ops = tuple(with_quantize(task.ops, DTYPE_BYTES[self.spec.dtype], skip))
        if len(ops) == len(task.ops):
            return task
        body = tuple(with_quantize(task.body, DTYPE_BYTES[self.spec.dtype], skip)) if task.body else ()
        return dataclasses.replace(task, ops=ops, body=body)

    def _issued(self, ops) -> tuple:
        """``ops`` with the grouped GEMMs issued as ``grouped_gemm`` says (``"te"``: Transformer
        Engine's per-expert streams, priced from its own rows: :func:`moesim.costs.grouped.grouped_gemm_ns`)."""
        if self.grouped_gemm != "te":
            return tuple(ops)
        return tuple(dataclasses.replace(op, impl="te") if isinstance(op, GroupedGemm) else op for op in ops)

    def _issued_task(self, task: moe_exec.ExpertTask) -> moe_exec.ExpertTask:
        if self.grouped_gemm != "te" or not any(isinstance(op, GroupedGemm) for op in task.ops):
            return task
        return dataclasses.replace(task, ops=self._issued(task.ops))

    def task_ns(self, task: moe_exec.ExpertTask) -> tuple[int, int]:
        """``(duration_ns, region_ns)`` of one expert task: its kernels back to back
        (:mod:`moesim.costs.regions`), or the device time of a counts' copy to the host."""
        if task.host_sync:
            return self.sync_ns(task.sync_bytes), 0
        return self._ops_ns(task.ops)

    @lru_cache(maxsize=4096)
    def _ops_ns(self, ops: tuple) -> tuple[int, int]:
        return sequence([self.cost.compute_ns(op) for op in ops], *self.region)

    @lru_cache(maxsize=None)
    def sync_ns(self, nbytes: int) -> int:
        """Device time of copying ``nbytes`` of counts to the host: the cost model's ``sync_ns``
        (measured ``sync`` rows) where it has one, else a copy kernel of those bytes."""
        sync = getattr(self.cost, "sync_ns", None)
        if callable(sync):
            return max(1, int(round(sync(nbytes))))
        return self.cost.compute_ns(MemoryOp("copy", float(nbytes), "moe.counts_to_host"))

    @lru_cache(maxsize=4096)
    def gpu_expert_ns(self, phase: str, counts: tuple[int, ...]) -> tuple[int, int, float]:
        """``(ns, region_ns, flops)`` of one GPU's whole expert work for ``counts``: its tasks back
        to back on one stream, as the full engine runs them (every task after the first queued
        behind the previous one, saving its region cost); ``region_ns`` is the first task's."""
        if self.experts == "loop":
            tasks = self.expert_tasks(phase, counts)
            programs = [t.ops for t in tasks]
            times = [self.task_ns(t) for t in tasks]
        else:   # one task per kernel, each its quantize kernels and the kernel: priced without the task objects
            programs = self._kernel_programs(phase, counts)
            times = [sequence([self.cost.compute_ns(op) for op in ops], *self.region) for ops in programs]
        if not times:
            return 0, 0, 0.0
        total = times[0][0] + sum(ns - region for ns, region in times[1:])
        return total, times[0][1], sum(op.flops for ops in programs for op in ops)

    def _kernel_programs(self, phase: str, counts: tuple[int, ...]) -> list[tuple]:
        """The ops of each task :meth:`expert_tasks` makes in grouped / padded mode (one kernel
        per task, with its quantize kernels), as tuples."""
        moe_exec.check_exec(self.experts, self.token_movement, 1.0 if self.experts == "padded" else None)
        vec = tuple(int(c) for c in counts)
        rows = moe_exec.padded_counts(vec, self.ep * self.capacity) if self.experts == "padded" else vec
        skip = self._skip(phase)
        act = DTYPE_BYTES[self.spec.dtype]
        before, after = self._sort_ops(phase, vec)
        return [(op,) for op in before] + [tuple(with_quantize((op,), act, skip))
                for op in self._issued(moe_exec.kernel_ops(self.expert_spec, rows, phase, self.token_movement,
                                                           self.recompute_act, self.framework_modules))] \
            + [(op,) for op in after]

    def _skip(self, phase: str) -> frozenset:
        """GEMMs whose input arrives quantized (:meth:`_quantized`)."""
        fp8_dispatch = phase == "F" and self.spec.dispatch_dtype == "fp8"
        return frozenset(name for name in ("expert.fc1", "expert.up", "expert.w1", "expert.w3")
                         if fp8_dispatch or (phase == "F" and name == "expert.w3"))

    def expert_ns(self, phase: str, num_tokens: int) -> int:
        """One expert's kernel chain (the loop mode's, of the scenario's framework) on
        ``num_tokens`` tokens in phase F, B or W, its kernels back to back."""
        return self._expert(phase, num_tokens)[0]

    @lru_cache(maxsize=None)
    def expert_kernels(self, phase: str) -> int:
        """Kernels one expert's chain launches in ``phase`` (independent of its token count)."""
        return len(self._loop_chain(phase, 1))

    def expert_region_ns(self, phase: str, num_tokens: int) -> int:
        """What that expert's task saves when queued behind another on its stream."""
        return self._expert(phase, num_tokens)[1]

    @lru_cache(maxsize=None)
    def _expert(self, phase: str, num_tokens: int) -> tuple[int, int]:
        return self._ops_ns(self._loop_chain(phase, num_tokens))

    def _loop_chain(self, phase: str, num_tokens: int) -> tuple:
        """One expert's loop chain, FP8 GEMMs preceded by their quantize kernels."""
        task = moe_exec.ExpertTask("expert", tuple(moe_exec.loop_chain_ops(self.expert_spec, num_tokens, phase,
                                                                           self.token_movement, self.recompute_act)),
                                   num_tokens)
        return self._quantized(task, phase).ops

    @lru_cache(maxsize=None)
    def expert_flops(self, phase: str, num_tokens: int) -> float:
        return sum(op.flops for op in moe_exec.loop_chain_ops(self.expert_spec, num_tokens, phase, self.token_movement))

    def bytes_per_token(self, phase: str) -> tuple[float, float]:
        """(outbound, return) bytes per routed token: dispatch/combine forward, gradients backward."""
        if phase == "F":
            return moe_ops.dispatch_bytes_per_token(self.spec), moe_ops.combine_bytes_per_token(self.spec)
        grad = self.spec.hidden * DTYPE_BYTES[self.spec.dtype]
        return grad, grad
