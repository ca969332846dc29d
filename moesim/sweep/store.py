"""``results.jsonl``: the append-only record of a sweep, one JSON line per finished point.

Each line is written and flushed as soon as its point finishes, so an interrupted sweep (Ctrl-C,
a killed job) leaves every finished point on disk. :meth:`ResultsStore.load` reads the file back
(the last line of an id wins, so a retried failure replaces the old one); a torn last line
from a hard kill is ignored and the next append starts on a fresh line. A whole record that
lacks what the summary reads (an ``ok`` line without its ``result``: edited by hand, or written
by something else) is a :class:`ConfigError` naming the file and line, not a traceback later.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import IO, Any

from moesim.errors import ConfigError

RESULTS_FILE = "results.jsonl"
RESULT_KEYS = ("step_time_ms", "tokens_per_s", "mfu", "bubble_fraction", "memory_gib", "tokens_per_step",
               "cost_model", "network_mode")  # what summary.md and the Pareto front read from an ok record


class ResultsStore:
    """Read and append the records of one sweep directory."""

    def __init__(self, out_dir: str | Path) -> None:
        self.path = Path(out_dir) / RESULTS_FILE
        self.bad_lines: list[int] = []  # line numbers load() could not read (their points run again)
        self._file: IO[str] | None = None

    @property
    def num_bad_lines(self) -> int:
        return len(self.bad_lines)

    def load(self) -> dict[str, dict[str, Any]]:
        """Records by point id (the last one of each id); unreadable lines are counted and skipped."""
        records: dict[str, dict[str, Any]] = {}
        self.bad_lines = []
        if not self.path.is_file():
            return records
        for lineno, raw in enumerate(self.path.read_bytes().split(b"\n"), 1):
            if not raw.strip():
                continue
            try:
                rec = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):  # torn, edited, or not text
                self.bad_lines.append(lineno)
                continue
            if isinstance(rec, dict) and isinstance(rec.get("id"), str):
                self._check(rec, lineno)
                records[rec["id"]] = rec
            else:
                self.bad_lines.append(lineno)
        return records

    def _check(self, rec: dict[str, Any], lineno: int) -> None:
        """A record the summary can read: name, base, overrides, and an ok record's result figures."""
        where = f"{self.path}:{lineno}"
        fix = "delete that line (its point runs again) or sweep into a new --out"
        for key, kind in (("name", str), ("base", str), ("overrides", dict)):
            if not isinstance(rec.get(key), kind):
                raise ConfigError("results.jsonl", f"record {rec['id']!r} has no {key} ({kind.__name__})", fix,
                                  source=where)
        if rec.get("status") != "ok":
            return
        result = rec.get("result")
        missing = [k for k in RESULT_KEYS if k not in result] if isinstance(result, dict) else ["result"]
        if missing:
            raise ConfigError("results.jsonl", f"record {rec['id']!r} has status 'ok' but no "
                              + ("result" if missing == ["result"] else f"result {', '.join(missing)}"), fix,
                              source=where)

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
