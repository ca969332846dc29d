"""The host thread of an eager PyTorch program, as engine tasks.

In eager mode every kernel is issued by the Python thread: each call costs the host time the
profile measured for that call type (``mm``, ``index_select``, ``all_to_all_single_splits``, ...,
each issued back to back with the GPU busy), or the profile's launch figure for a kernel whose
call was not measured; calls that launch no kernel (``empty``, ``slice``) cost host time too. The GPU runs a kernel only once it has been issued, so when
the GPU is faster than the host it waits. :class:`HostThread` models one rank's thread as a
chain of tasks on the ``host`` stream of that rank, in program order; every GPU task it issues
depends on its issue task. The thread never waits for the GPU (the measured programs never
synchronise inside the timed region: NCCL ``wait()`` only orders streams). ``scale`` multiplies
every host cost of the thread: the rank's host speed relative to the profile's
(:meth:`~lab.legacy_validate.context.ValidationContext.host_scales`; 1 without an in-process probe).
"""
from __future__ import annotations

from typing import Iterable

from moesim.engine import Simulation, Task
from lab.legacy_validate.context import Kernel, ValidationContext

HOST_STREAM = "host"


class HostThread:
    """One rank's issuing thread; kernel host costs come from ``ctx`` (see :class:`Kernel`)."""

    def __init__(self, sim: Simulation, rank: int, ctx: ValidationContext, scale: float = 1.0) -> None:
        self.sim, self.rank, self.ctx, self.scale = sim, rank, ctx, scale
        self.busy_ns = 0

    def issue(self, host_ns: int, name: str) -> Task:
        """Spend ``host_ns`` (at the profile's host speed) of host time on the next call, times
        the thread's ``scale``; returns the issue task."""
        host_ns = host_ns if self.scale == 1.0 else max(1, int(round(host_ns * self.scale)))
        self.busy_ns += host_ns
        return self.sim.compute(self.rank, host_ns, f"issue:{name}", category="host", stream=HOST_STREAM)

    def call(self, call: str, name: str) -> Task:
        """A host-only call of a measured type (``empty``, ``slice``, a collective call, ...)."""
        return self.issue(self.ctx.host_ns(call), name)

    def kernel(self, kernel: Kernel, deps: Iterable[Task] = (), stream: str = "compute") -> Task:
        """Launch ``kernel`` on the GPU after its issue; it also waits for ``deps``."""
        issued = self.issue(self.ctx.kernel_host_ns(kernel), kernel.name)
        return self.sim.compute(self.rank, kernel.duration_ns, kernel.name, stream=stream,
                                category="gemm" if kernel.is_gemm else "kernel", deps=[issued, *deps],
                                args={"flops": kernel.flops})

    def kernels(self, kernels: Iterable[Kernel], deps: Iterable[Task] = ()) -> list[Task]:
        """Launch kernels back to back; the first also waits for ``deps``."""
        out: list[Task] = []
        pending = list(deps)
        for k in kernels:
            out.append(self.kernel(k, pending))
            pending = []
        return out
