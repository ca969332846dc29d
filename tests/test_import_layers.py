"""The layering docs/architecture.md draws, enforced: every import contract in ``.importlinter``
(layers with nothing importing upward, no cycles between sibling modules, a domain-free engine,
pure schedules, typer/rich/matplotlib only in CLI and plotting modules) holds. Skipped where
import-linter is not installed (it is in the ``test`` extra)."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_the_import_contracts_hold() -> None:
    exe = shutil.which("lint-imports")
    if exe is None:
        pytest.skip("import-linter not installed (pip install -e '.[test]')")
    run = subprocess.run([exe, "--no-cache", "--no-logo", str(ROOT / ".importlinter")], cwd=ROOT,
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert "0 broken" in run.stdout and "BROKEN" not in run.stdout
