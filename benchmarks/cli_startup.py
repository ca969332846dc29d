"""CLI start-up: CPU seconds (user + system) of ``python -m moesim --help`` and of a few verbs' help.

    python benchmarks/cli_startup.py [--repeats 5]

Each command runs in a fresh interpreter; the figure is the median over repeats of the child's
user + system CPU time (``resource.getrusage(RUSAGE_CHILDREN)``), next to a bare ``python -c pass``
and ``import typer`` for reference. Target: ``moesim --help`` under 0.3 s (issue 14). On the 2-core
development machine (Python 3.11) it went from 1.04 s to 0.16 s here (``/usr/bin/time -f %U+%S``:
0.97-1.19 s to 0.22-0.24 s) when the verbs became lazily imported (moesim/cli.py); ``moesim run
--help`` still costs about 0.65 s (it imports the experiment package).
"""
from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = {
    "python -c pass": ["-c", "pass"],
    "python -c 'import typer'": ["-c", "import typer"],
    "moesim --help": ["-m", "moesim", "--help"],
    "moesim run --help": ["-m", "moesim", "run", "--help"],
    "moesim topo --help": ["-m", "moesim", "topo", "--help"],
}


def child_cpu_s(args: list[str]) -> float:
    """User + system CPU seconds of one ``python ARGS`` run."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run([sys.executable, *args], cwd=ROOT, stdout=subprocess.DEVNULL, check=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    for label, argv in COMMANDS.items():
        times = [child_cpu_s(argv) for _ in range(args.repeats)]
        print(f"{label:<28} {statistics.median(times):.3f} s CPU (median of {args.repeats}; "
              f"min {min(times):.3f}, max {max(times):.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
