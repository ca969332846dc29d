"""Provenance of a measurement run: device, driver, CUDA, NCCL and torch versions, date, command.

Everything a reader needs to judge or repeat the numbers, and nothing that names the host.
"""
from __future__ import annotations

import datetime as _dt
import os
import platform
import re
import shlex
import subprocess
import sys

import torch

NCCL_ENV_KEYS = ("NCCL_NVLS_ENABLE", "TORCH_SYMM_MEM_DISABLE_MULTICAST", "NVSHMEM_DISABLE_NVLS", "NCCL_ALGO", "NCCL_PROTO")


def _run(cmd: list[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.strip()


def driver_version() -> str:
    """NVIDIA driver version from nvidia-smi, or ``"unavailable"``."""
    out = _run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"])
    return out.splitlines()[0].strip() if out else "unavailable"


def nccl_version() -> str:
    """NCCL version torch was built with, e.g. ``"2.27.7"``, or ``"unavailable"``."""
    try:
        v = torch.cuda.nccl.version()
    except Exception:  # CPU builds have no NCCL
        return "unavailable"
    return ".".join(str(x) for x in v) if isinstance(v, tuple) else str(v)


def gpu_topology() -> str:
    """``nvidia-smi topo -m`` (how the GPUs are linked), or an empty string."""
    return re.sub(r"\x1b\[[0-9;]*m", "", _run(["nvidia-smi", "topo", "-m"]))


def gpu_state() -> list[dict[str, str]]:
    """Per GPU: temperature (C), SM clock (MHz), power (W) and throttle reasons from nvidia-smi,
    or an empty list (no nvidia-smi). Logged after each section: the thermal state matters."""
    out = _run(["nvidia-smi", "--query-gpu=index,temperature.gpu,clocks.sm,power.draw,clocks_throttle_reasons.active",
                "--format=csv,noheader,nounits"])
    keys = ("gpu", "temp_c", "sm_mhz", "power_w", "throttle")
    return [dict(zip(keys, (v.strip() for v in line.split(",")))) for line in out.splitlines() if line.strip()]


def command_line() -> str:
    """The command that is running, as a shell-quoted string."""
    return "python3 -m " + __spec_name() + " " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def __spec_name() -> str:
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    return spec.name if spec is not None else os.path.basename(sys.argv[0])


def collect(device: str, gpu_count: int) -> dict[str, object]:
    """The provenance block shared by the profile and the validation measurements."""
    on_gpu = device == "cuda" and torch.cuda.is_available()
    props = torch.cuda.get_device_properties(0) if on_gpu else None
    return {
        "device": torch.cuda.get_device_name(0) if on_gpu else "cpu",
        "gpu_count": gpu_count,
        "driver": driver_version() if on_gpu else "unavailable",
        "cuda": str(torch.version.cuda) if torch.version.cuda else "unavailable",
        "nccl": nccl_version() if on_gpu else "unavailable",
        "torch": torch.__version__,
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": command_line(),
        "gpu_memory_bytes": int(props.total_memory) if props else 0,
        "sm_count": int(props.multi_processor_count) if props else 0,
        "environment": {k: os.environ[k] for k in NCCL_ENV_KEYS if k in os.environ},
        "gpu_topology": gpu_topology() if on_gpu and gpu_count > 1 else "",
        "host_cpu": host_cpu(),
    }


def host_cpu() -> dict[str, object]:
    """The host CPU the run issued from (its model name and the logical CPUs this process may use):
    host-issue rows depend on it, and the lent machines' containers share one hostname."""
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            model = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), model)
    except OSError:
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 0)
    return {"model": model, "logical_cpus": usable}
