"""The host (CPU issue) figures of a calibrated profile: :class:`CalibratedHost`, a part of
:class:`moesim.costs.calibrated.CalibratedCostModel`.

Eager host time per op class and phase (``host_op`` rows, :mod:`moesim.costs.host_classes`), per
measured call (``host`` rows), the back-to-back launch, the device-to-host copy (``sync`` rows),
the issue slowdown after a read-back (``host_after_sync`` rows) and the in-program per-kernel
figure (``eager_host``). Every issue figure is priced at the chosen ``host_speed`` (the mean of
the profile's host runs, or its slowest or fastest run); the device-to-host copies are not.
"""
from __future__ import annotations

from typing import Any

from moesim.costs.host_classes import HostClassTable, check_phase, speed_factor
from moesim.ops import ComputeOp


class CalibratedHost:
    """Host figures of a profile; expects ``profile``, ``device``, ``host_speed`` and
    ``fallback_ops`` on the instance (set by :class:`~moesim.costs.calibrated.CalibratedCostModel`)."""

    def _build_host(self) -> None:
        """Host time per eager call, by call name (the profile's ``host`` samples), and the
        back-to-back launch figure, read once: ``host_op_ns`` and ``sync_ns`` fall back to it per op."""
        self._host_calls: dict[str, float] = {}
        for r in self.profile.select("host"):
            self._host_calls[r["call"]] = float(r["time_ns"])
        launch = self.profile.select("launch", variant="eager_back_to_back")
        self._launch_ns = int(round(launch[0]["time_ns"])) if launch else 0
        self._host_classes = HostClassTable.from_rows(self.profile.select("host_op"), self.profile.select("sync"),
                                                      self.profile.select("host_mix"))

    def _set_host_speed(self) -> None:
        """``host_speed``: every host issue figure times the chosen run's speed
        (:mod:`moesim.costs.host_classes`); device-to-host copies (``sync_ns``) are not scaled."""
        self._speed = speed_factor(self._host_classes.speeds, self.host_speed,
                                   f"the {self.profile.name} profile ({self.device})")

    def _host(self, ns: float) -> float:
        """A host issue time of the profile (the mean of its runs) at the chosen host speed."""
        return ns * self._speed

    def host_ns(self, call: str) -> int:
        """Host (CPU issue) time of one eager PyTorch call of ``call`` (``"mm"``, ``"index_select"``,
        ``"all_to_all_single_splits"``, ...; see :meth:`host_calls`), measured back to back with the
        GPU busy. A call not in the profile costs the launch figure (:meth:`launch_overhead_ns`)."""
        if call in self._host_calls:
            return max(1, int(round(self._host(self._host_calls[call]))))
        return self.launch_overhead_ns()

    def host_calls(self) -> list[str]:
        """The calls with a measured host time."""
        return sorted(self._host_calls)

    def host_op_ns(self, op: ComputeOp, phase: str, mixed: bool = True) -> int:
        """Host time of issuing ``op`` eagerly in ``phase`` (``"fwd"``: forward with autograd
        recording, ``"bwd"``: an op of a backward list, ``"plain"``: no autograd), from the
        profile's ``host_op`` rows by op class (:mod:`moesim.costs.host_classes`: how an op maps
        to its classes, and why a GEMM's dgrad and wgrad each carry half of its class's backward).
        A class the profile lacks costs the per-kernel eager figure (:meth:`eager_host_ns`, else
        the back-to-back launch), recorded in ``fallback_ops`` as ``host_op <call>/<phase>``.
        Called by ``moesim.lowering.host`` for every op an eager host thread issues; ``mixed``
        False for a per-expert loop's repeated body (no mixed-program factor: see that module)."""
        ns, missing = self._host_classes.op_ns(op, phase, self._eager_host_raw() or float(self._launch_ns), mixed)
        for call in missing:
            self.fallback_ops.add(f"host_op {call} (not measured: the per-kernel eager figure)")
        return max(1, int(round(self._host(ns))))

    def host_call_ns(self, call: str, phase: str, local_experts: "int | None" = None) -> "float | None":
        """One measured host call of class ``call`` in ``phase`` as its chain timed it (no
        mixed-program factor), or None where the profile did not measure it; a class measured at
        several expert counts is read at ``local_experts`` (:meth:`HostClassTable.call_ns`)."""
        ns = self._host_classes.call_ns(call, check_phase(phase), local_experts)
        return None if ns is None else self._host(ns)

    def host_speeds(self) -> dict[Any, float]:
        """Per profile run with host rows, its host's speed as a factor on the mean this model
        prices at ``host_speed="mean"`` (:func:`moesim.costs.host_classes.run_speeds`)."""
        return dict(self._host_classes.speeds or {})

    def host_mix_factors(self) -> dict[str, float]:
        """Mixed-program factor per phase (:mod:`moesim.costs.host_classes`); empty: not measured."""
        return dict(self._host_classes.mix or {})

    def host_op_calls(self) -> list[tuple[str, str]]:
        """The (call, phase) pairs with a measured ``host_op`` time."""
        return self._host_classes.calls()

    def host_after_sync_curve(self) -> "tuple[tuple[float, float], ...] | None":
        """How much longer a host thread takes to issue its calls right after it waited for the GPU
        (``host_after_sync`` rows, :mod:`moesim.calibrate.host_sync`): points ``(S, E)``, ``E`` the
        extra host ns once ``S`` ns of steady-state issue have followed the read, from ``(0, 0)``;
        per measured mark the mean over the profile's runs, ``E`` held non-decreasing (the calls
        after a read are never faster than steady ones). None where the profile has no rows."""
        by_calls: dict[int, list[tuple[float, float]]] = {}
        for r in self.profile.select("host_after_sync"):
            by_calls.setdefault(int(r["calls"]), []).append((float(r["steady_ns"]), float(r["time_ns"])))
        if not by_calls:
            return None
        points, extra, last_s = [(0.0, 0.0)], 0.0, 0.0
        for calls in sorted(by_calls):
            rows = by_calls[calls]
            steady = sum(a for a, _ in rows) / len(rows)
            after = sum(b for _, b in rows) / len(rows)
            if steady <= last_s:
                continue
            extra, last_s = max(extra, after - steady), steady
            points.append((self._host(steady), self._host(extra)))
        return tuple(points)

    def sync_ns(self, nbytes: float, variant: str = "queued") -> int:
        """Host time of the device-to-host copy of ``nbytes`` that ``.tolist()`` forces:
        ``"queued"`` (default) from the end of the GPU work queued before it until the host holds
        the values (the wait for that work is the caller's dependency); ``"idle"``: issue to
        values on an idle GPU. Unmeasured: one back-to-back launch at the profile's mean host speed
        (a lower bound; like measured copies, not scaled by ``host_speed``), recorded in
        ``fallback_ops``."""
        t = self._host_classes.sync_ns(nbytes, variant)
        if t is None:
            self.fallback_ops.add("sync (not measured: one back-to-back launch, a lower bound)")
            t = float(self._launch_ns)
        return max(1, int(round(t)))

    def module_call_ns(self, phase: str = "fwd") -> int:
        """Host time one ``nn.Module`` call adds around its op (the isolated framework glue:
        ``module_linear`` - ``linear`` rows); 0 where not measured."""
        t = self._host_classes.module_call_ns(phase)
        return 0 if t is None else int(round(self._host(t)))

    def eager_host_ns(self) -> float:
        """Host time of eager PyTorch per kernel moesim counts (profile field ``eager_host``,
        written by ``lab/eager_host.py``; 0 if not measured), at the chosen host speed."""
        return self._host(self._eager_host_raw())

    def _eager_host_raw(self) -> float:
        rec = self.profile.extra.get("eager_host")
        return float(rec["per_kernel_ns"]) if rec else 0.0

    def launch_overhead_ns(self) -> int:
        """Host time per back-to-back eager kernel launch (0 if not measured), at the chosen host speed."""
        return int(round(self._host(self._launch_ns)))
