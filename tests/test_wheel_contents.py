"""The wheel a plain ``pip install .`` builds: every module, the shipped data, no lab/ or tests/.

The wheel is built from a copy of the checkout (without build/, virtual environments and caches)
so a developer's stale ``build/lib`` cannot hide or add files. Skipped when pip is missing, when
the build's own requirements (setuptools, wheel) cannot be fetched, or when the build takes over
60 s; any other build failure fails the test.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BUILD_TIMEOUT_S = 60
NOT_COPIED = (".git", "build", "dist", ".venv*", "*.egg-info", "__pycache__", "runs", ".hypothesis",
              ".pytest_cache", ".whl", ".import_linter_cache")
OFFLINE_SIGNS = ("No matching distribution found", "Could not find a version", "Failed to establish a new connection")


@pytest.fixture(scope="module")
def wheel_names(tmp_path_factory) -> list[str]:
    if importlib.util.find_spec("pip") is None:
        pytest.skip("pip is not installed")
    tmp = tmp_path_factory.mktemp("wheel")
    src, out = tmp / "src", tmp / "out"
    shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(*NOT_COPIED))
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--disable-pip-version-check", str(src), "-w", str(out)]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S, cwd=tmp)
    except subprocess.TimeoutExpired:
        pytest.skip(f"pip wheel took over {BUILD_TIMEOUT_S} s")
    if done.returncode != 0 and any(sign in done.stderr for sign in OFFLINE_SIGNS):
        pytest.skip("the build requirements could not be fetched: " + done.stderr.strip().splitlines()[-1])
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    (wheel,) = out.glob("moesim-*.whl")
    with zipfile.ZipFile(wheel) as z:
        z.extractall(tmp / "unpacked")
        return z.namelist()


def _source(pattern: str) -> set[str]:
    return {p.relative_to(REPO).as_posix() for p in REPO.glob(pattern)}


def test_the_wheel_holds_every_module_of_the_package_and_nothing_stale(wheel_names):
    modules = {n for n in wheel_names if n.endswith(".py")}
    source = {p.relative_to(REPO).as_posix() for p in (REPO / "moesim").rglob("*.py") if "__pycache__" not in p.parts}
    assert modules == source
    packages = {p.parent.relative_to(REPO).as_posix() for p in (REPO / "moesim").rglob("*.py")
                if "__pycache__" not in p.parts}
    assert {f"{pkg}/__init__.py" for pkg in packages} <= modules


def test_the_wheel_holds_the_shipped_data(wheel_names):
    names = set(wheel_names)
    topologies = {f"moesim/_data/topologies/{Path(p).name}" for p in _source("topologies/*.yaml")}
    assert topologies and topologies <= names
    assert "moesim/_data/data/validation/h200_measurements.json" in names
    layers = {f"moesim/_data/data/validation/layers/{Path(p).name}" for p in _source("data/validation/layers/*.json")}
    assert layers <= names
    profiles = _source("moesim/profiles/*.json")
    assert profiles and profiles <= names
    assert "moesim/py.typed" in names


def test_the_wheel_holds_no_lab_and_no_tests(wheel_names):
    tops = {n.split("/", 1)[0] for n in wheel_names}
    assert tops == {"moesim", next(t for t in tops if t.endswith(".dist-info"))}
    assert not [n for n in wheel_names if "/lab/" in n or "/tests/" in n or Path(n).name.startswith("test_")]


def test_the_installed_package_finds_its_data_inside_itself(wheel_names, tmp_path_factory):
    unpacked = next(p for p in tmp_path_factory.getbasetemp().glob("wheel*/unpacked"))
    code = ("from moesim.shipped import data_path; from moesim.topology.loader import load_topology; "
            "print(data_path('topologies')); print(load_topology('dgx_h100').num_gpus)")
    env = {**os.environ, "PYTHONPATH": str(unpacked)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=unpacked.parent, env=env,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    where, gpus = done.stdout.split()
    assert Path(where) == unpacked / "moesim" / "_data" / "topologies" and int(gpus) == 8
