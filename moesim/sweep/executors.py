"""Where sweep points run: a local process pool (default) or Ray tasks.

An executor takes (point, base scenario) pairs and yields each point's record (a plain dict from
:func:`moesim.sweep.worker.run_point`) as soon as it finishes, in completion order. Closing the
generator early (Ctrl-C) cancels the points not started. ``EXECUTORS`` maps ``--executor``
names to factories taking ``(workers, address)``. Ray is imported only by the Ray executor.
"""
from __future__ import annotations

import logging
import os
import pickle
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Protocol, Sequence

from moesim.errors import ConfigError, MoesimError, unknown_name
from moesim.experiment.scenario import Scenario
from moesim.sweep.grid import SweepPoint
from moesim.sweep.worker import error_record, run_point

Task = tuple[SweepPoint, Scenario]
RAY_INSTALL_HINT = "pip install 'moesim[ray]' (or pip install ray), or use --executor local"


class SweepAborted(MoesimError, RuntimeError):
    """The executor itself failed (a worker process died); finished points are already saved."""


class Executor(Protocol):
    """Runs sweep points; see the module docstring."""

    name: str

    def run(self, tasks: Sequence[Task]) -> Iterator[dict[str, Any]]:
        """Yield one record per task, in completion order."""
        ...


@dataclass
class LocalExecutor:
    """A ``concurrent.futures`` process pool of ``workers`` processes; ``workers=1`` runs the
    points one after another in this process (no pickling, easiest to debug)."""

    workers: int
    name: str = "local"

    def run(self, tasks: Sequence[Task]) -> Iterator[dict[str, Any]]:
        if self.workers == 1 or len(tasks) <= 1:
            for point, base in tasks:
                yield run_point(point, base)
            return
        check_picklable(tasks)
        pool = ProcessPoolExecutor(max_workers=min(self.workers, len(tasks)))
        try:
            futures = {pool.submit(run_point, point, base): point for point, base in tasks}
            for future in as_completed(futures):
                try:
                    record = future.result()
                except BrokenProcessPool as err:
                    raise SweepAborted(f"a sweep worker process died ({err}); finished points are saved in "
                                       "results.jsonl: rerun the same command to resume") from None
                yield record
        finally:
            pool.shutdown(wait=False, cancel_futures=True)


def check_picklable(tasks: Sequence[Task]) -> None:
    """Fail early, naming the scenario, when a base scenario cannot be sent to a worker process."""
    seen: set[str] = set()
    for _point, base in tasks:
        if base.name in seen:
            continue
        seen.add(base.name)
        try:
            pickle.dumps(base)
        except Exception as err:  # noqa: BLE001 - pickling raises many types
            raise ConfigError(f"scenario {base.name!r}", f"cannot be sent to a worker process ({err})",
                              "define its model and routing objects in an importable module, or use --workers 1") from None


@dataclass
class RayExecutor:
    """Ray tasks (one CPU each) on the cluster at ``address``, or on a local Ray instance of
    ``num_cpus`` CPUs started for the sweep. An already initialised Ray is used as it is."""

    address: str | None = None
    num_cpus: int | None = None
    name: str = "ray"

    def __post_init__(self) -> None:
        self._ray = import_ray()

    def run(self, tasks: Sequence[Task]) -> Iterator[dict[str, Any]]:
        ray = self._ray
        started = not ray.is_initialized()
        if started:
            self._init()
        pending: list[Any] = []
        try:
            remote = ray.remote(num_cpus=1)(run_point)
            bases = {base.name: ray.put(base) for _p, base in tasks}
            points = {remote.remote(point, bases[base.name]): point for point, base in tasks}
            pending = list(points)
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                yield self._get(done[0], points[done[0]])
        finally:
            for ref in pending:
                ray.cancel(ref)
            if started:
                ray.shutdown()

    def _init(self) -> None:
        kwargs: dict[str, Any] = {"logging_level": logging.WARNING}
        if self.address:
            kwargs["address"] = self.address
        else:
            kwargs.update(num_cpus=self.num_cpus, include_dashboard=False)
        self._ray.init(**kwargs)

    def _get(self, ref: Any, point: SweepPoint) -> dict[str, Any]:
        try:
            return self._ray.get(ref)
        except self._ray.exceptions.RayError as err:
            return error_record(point, f"Ray task failed: {err}", type(err).__name__)


def import_ray() -> Any:
    """The ``ray`` module, or a ConfigError telling how to install it."""
    try:
        import ray
    except ImportError:
        raise ConfigError("--executor", "'ray' needs the Ray package, which is not installed", RAY_INSTALL_HINT) from None
    return ray


def _local(workers: int | None, address: str | None) -> Executor:
    if address:
        raise ConfigError("--address", "is only used by --executor ray", "drop --address, or add --executor ray")
    return LocalExecutor(workers or os.cpu_count() or 1)


def _ray(workers: int | None, address: str | None) -> Executor:
    if address and workers:
        raise ConfigError("--workers", "with --address the Ray cluster decides how many points run at once",
                          "drop --workers (it sizes a local Ray instance only)")
    return RayExecutor(address=address, num_cpus=workers)


EXECUTORS: dict[str, Callable[[int | None, str | None], Executor]] = {"local": _local, "ray": _ray}


def make_executor(name: str, workers: int | None = None, address: str | None = None) -> Executor:
    """The executor called ``name`` (``--executor``), validated."""
    if name not in EXECUTORS:
        raise unknown_name("--executor", name, list(EXECUTORS))
    if workers is not None and (isinstance(workers, bool) or workers < 1):
        raise ConfigError("--workers", f"must be an integer >= 1, got {workers!r}", "e.g. --workers 4")
    return EXECUTORS[name](workers, address)
