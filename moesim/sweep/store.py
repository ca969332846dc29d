"""``results.jsonl``: the append-only record of a sweep, one JSON line per finished point.

Each line is written and flushed as soon as its point finishes, so an interrupted sweep (Ctrl-C,
a killed job) leaves every finished point on disk. :meth:`ResultsStore.load` reads the file back
(the last line of an id wins, so a retried failure replaces the old one); a torn last line
from a hard kill is ignored and the next append starts on a fresh line.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import IO, Any

RESULTS_FILE = "results.jsonl"


class ResultsStore:
    """Read and append the records of one sweep directory."""

    def __init__(self, out_dir: str | Path) -> None:
        self.path = Path(out_dir) / RESULTS_FILE
        self.num_bad_lines = 0
        self._file: IO[str] | None = None

    def load(self) -> dict[str, dict[str, Any]]:
        """Records by point id (the last one of each id); unreadable lines are counted and skipped."""
        records: dict[str, dict[str, Any]] = {}
        self.num_bad_lines = 0
        if not self.path.is_file():
            return records
        for line in self.path.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                self.num_bad_lines += 1
                continue
            if isinstance(rec, dict) and isinstance(rec.get("id"), str):
                records[rec["id"]] = rec
            else:
                self.num_bad_lines += 1
        return records

    def append(self, record: dict[str, Any]) -> None:
        """Write one record as a line and flush it to the OS at once."""
        if self._file is None:
            self._file = self._open()
        self._file.write(json.dumps(record, sort_keys=True) + "\n")
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> "ResultsStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _open(self) -> IO[str]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        torn = False
        if self.path.is_file() and self.path.stat().st_size > 0:
            with self.path.open("rb") as raw:
                raw.seek(-1, 2)
                torn = raw.read(1) != b"\n"
        handle = self.path.open("a", encoding="utf-8")
        if torn:
            handle.write("\n")
        return handle
