"""Where sweep points run: a local process pool (default) or Ray tasks.

An executor takes (point, base scenario) pairs and yields each point's record (a plain dict from
:func:`moesim.sweep.worker.run_point`) as soon as it finishes, in completion order. Closing the
generator early (Ctrl-C) cancels the points not started. ``EXECUTORS`` maps ``--executor``
names to factories taking ``(workers, address)``. Ray is imported only by the Ray executor.
"""
from __future__ import annotations

import ctypes
import logging
import os
import pickle
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
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
        pool = make_pool(min(self.workers, len(tasks)))
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


def make_pool(workers: int) -> ProcessPoolExecutor:
    """A process pool whose workers end when this process ends, even by ``kill -9`` (the pool's
    own shutdown never runs then, and the workers went on simulating for nobody)."""
    return ProcessPoolExecutor(max_workers=workers, initializer=die_with_parent, initargs=(os.getpid(),))


PARENT_POLL_S = 0.5


def die_with_parent(parent_pid: int) -> None:
    """Worker initializer: on Linux the kernel sends SIGKILL when the parent dies
    (``PR_SET_PDEATHSIG``); everywhere a daemon thread also polls the parent pid and exits."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(PARENT_POLL_S)
        os._exit(1)

    if os.getppid() != parent_pid:  # the parent died before the signal was armed
        os._exit(1)
    threading.Thread(target=watch, name="moesim-parent-watch", daemon=True).start()


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
    connect_timeout_s: float = 10.0

    def __post_init__(self) -> None:
        if not self.address:
            loopback_only_ray()  # before ray is imported, where it reads the setting
        self._ray = import_ray()
        if self.address:
            check_reachable(self.address, self.connect_timeout_s)

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
                if self._temp_dir is not None:   # the private instance's session files, logs and sockets
                    shutil.rmtree(self._temp_dir, ignore_errors=True)
                    self._temp_dir = None

    _temp_dir: "str | None" = None

    def _init(self) -> None:
        kwargs: dict[str, Any] = {"logging_level": logging.WARNING}
        if self.address:
            kwargs["address"] = self.address
        else:  # a private instance on the loopback address only, no dashboard (see loopback_only_ray)
            loopback_only_ray()
            # its session directory (logs, sockets) in a private temporary directory removed at
            # shutdown, not Ray's shared /tmp/ray; short, as Ray's socket paths must be
            self._temp_dir = tempfile.mkdtemp(prefix="moesim-ray-")
            kwargs.update(num_cpus=self.num_cpus, include_dashboard=False, _node_ip_address=LOCAL_RAY_IP,
                          _temp_dir=self._temp_dir)
        try:
            self._ray.init(**kwargs)
        except (ConnectionError, TimeoutError, RuntimeError, ValueError) as err:
            raise ConfigError("--address" if self.address else "--executor",
                              f"Ray did not start or connect ({type(err).__name__}: {str(err).splitlines()[0][:200]})",
                              "check the address (ray status on the head node), or use --executor local") from None

    def _get(self, ref: Any, point: SweepPoint) -> dict[str, Any]:
        try:
            return self._ray.get(ref)
        except self._ray.exceptions.RayError as err:
            return error_record(point, f"Ray task failed: {err}", type(err).__name__)


LOCAL_RAY_IP = "127.0.0.1"
RAY_DEFAULT_PORT, RAY_CLIENT_PORT = 6379, 10001


def loopback_only_ray() -> None:
    """Make a Ray instance started here listen on 127.0.0.1 only. On Linux Ray treats a node as
    part of a cluster and turns a 127.0.0.1 node address into the machine's external one, so its
    GCS, raylet and workers listened on every interface (``ss -ltn``: ``*:port``); with
    ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` (its single-machine mode) they bind to 127.0.0.1.
    A value the user set is kept: that is how to tell moesim otherwise."""
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # read by the processes Ray starts
    if os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] == "0":
        # The driver read the variable when ray was imported: set the constant it derived from it
        # (ray._private.services.get_node_ip_address reads it on every call).
        constants = sys.modules.get("ray._private.ray_constants")
        if constants is not None and hasattr(constants, "ENABLE_RAY_CLUSTER"):
            constants.ENABLE_RAY_CLUSTER = False


def check_reachable(address: str, timeout_s: float) -> None:
    """Refuse, within ``timeout_s``, a Ray address nothing answers at (``ray.init`` retried it for
    ever). ``auto`` / ``local`` are Ray's to resolve; ``ray://host[:port]`` and ``host[:port]`` are
    probed with one TCP connection."""
    if address in ("auto", "local"):
        return
    rest = address.removeprefix("ray://")
    default = RAY_CLIENT_PORT if address.startswith("ray://") else RAY_DEFAULT_PORT
    host, sep, port_text = rest.rpartition(":") if ":" in rest else (rest, "", "")
    host = host.strip("[]") if sep else rest
    try:
        port = int(port_text) if sep else default
        if not (host and 0 < port < 65536):
            raise ValueError
    except ValueError:
        raise ConfigError("--address", f"{address!r} is not host:port", "write e.g. --address 10.0.0.5:6379 or "
                          "ray://10.0.0.5:10001") from None
    try:
        socket.create_connection((host, port), timeout=timeout_s).close()
    except OSError as err:
        raise ConfigError("--address", f"nothing answers at {host}:{port} within {timeout_s:g} s "
                          f"({err.strerror or type(err).__name__})",
                          "start the cluster (ray start --head) or fix the address; or use --executor local") from None


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


def max_workers() -> int:
    """The most worker processes a sweep starts: 4 per CPU (points are CPU-bound)."""
    return 4 * (os.cpu_count() or 1)


def make_executor(name: str, workers: int | None = None, address: str | None = None) -> Executor:
    """The executor called ``name`` (``--executor``), validated."""
    if name not in EXECUTORS:
        raise unknown_name("--executor", name, list(EXECUTORS))
    if workers is not None and (isinstance(workers, bool) or workers < 1):
        raise ConfigError("--workers", f"must be an integer >= 1, got {workers!r}", "e.g. --workers 4")
    most = max_workers()
    if workers is not None and workers > most:  # each worker holds a ~100 MB interpreter and a simulation
        raise ConfigError("--workers", f"{workers:,} is more than {most} (4 per CPU of this machine)",
                          f"give at most {most}; more processes than CPUs only share them")
    return EXECUTORS[name](workers, address)
