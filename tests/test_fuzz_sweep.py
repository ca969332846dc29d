"""Sweep hardening: pool workers die with their parent, an unreachable Ray address is refused
fast, a resume names the results.jsonl lines it could not read."""
from __future__ import annotations

import json
import shutil
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from moesim.errors import ConfigError
from moesim.sweep.executors import check_reachable
from moesim.sweep.store import ResultsStore

PARENT = textwrap.dedent("""
    import os, sys, time
    from moesim.sweep.executors import make_pool
    pool = make_pool(2)
    pids = {pool.submit(os.getpid).result() for _ in range(8)}
    for _ in range(2):
        pool.submit(time.sleep, 600)
    print(" ".join(map(str, sorted(pids))), flush=True)
    time.sleep(600)
""")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (exited, not yet reaped by init) counts as gone
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return os.path.exists(f"/proc/{pid}") if sys.platform.startswith("linux") else True


def test_pool_workers_exit_when_the_parent_is_killed_with_sigkill(tmp_path: Path) -> None:
    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True)
    try:
        workers = [int(p) for p in parent.stdout.readline().split()]
        assert workers and all(_alive(p) for p in workers)
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=10)
        deadline = time.monotonic() + 10
        while any(_alive(p) for p in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [p for p in workers if _alive(p)], "pool workers outlived their killed parent"
    finally:
        if parent.poll() is None:
            parent.kill()


@pytest.mark.parametrize("address, message", [
    ("127.0.0.1:1", "nothing answers at 127.0.0.1:1"),
    ("ray://127.0.0.1:1", "nothing answers at 127.0.0.1:1"),
    ("foo:bar", "is not host:port"),
    (":6379", "is not host:port"),
])
def test_an_unreachable_or_malformed_ray_address_is_refused_within_the_timeout(address: str, message: str) -> None:
    t0 = time.monotonic()
    with pytest.raises(ConfigError, match=message) as err:
        check_reachable(address, timeout_s=2.0)
    assert err.value.field == "--address" and time.monotonic() - t0 < 5


def test_a_resume_names_the_lines_it_could_not_read(tmp_path: Path) -> None:
    good = {"id": "a", "name": "a", "base": "a", "overrides": {}, "status": "error", "error": "x"}
    (tmp_path / "results.jsonl").write_bytes(
        json.dumps(good).encode() + b"\n{torn\n" + b"\xff\xfe not utf-8\n" + b"[" * 100_000 + b"\n[1, 2]\n")
    store = ResultsStore(tmp_path)
    assert list(store.load()) == ["a"]
    assert store.bad_lines == [2, 3, 4, 5] and store.num_bad_lines == 4


def test_a_local_ray_instance_listens_on_the_loopback_address_only() -> None:
    ray = pytest.importorskip("ray")
    if ray.is_initialized():
        pytest.skip("a Ray instance is already running in this process")
    from moesim.sweep.executors import RayExecutor

    RayExecutor(num_cpus=1)._init()
    try:
        assert ray.get_runtime_context().gcs_address.startswith("127.0.0.1:")
        if shutil.which("ss"):
            listening = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True).stdout.splitlines()
            ray_sockets = [line.split()[3] for line in listening if "gcs_server" in line or "raylet" in line]
            assert ray_sockets and all("127.0.0.1" in addr for addr in ray_sockets), ray_sockets
    finally:
        ray.shutdown()
