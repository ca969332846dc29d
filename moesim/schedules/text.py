"""The compact text form of a schedule, and its parser; the two round-trip exactly.

An action is ``{stage}{kind}{microbatch}`` ("1F3" = forward of microbatch 3 on stage 1,
"2BW0", "0W1"), with ``@{path}`` appended on DualPipe's second path ("3B2@1"). An overlapped
pair joins two actions with ``&`` ("1F3&1B0"). A schedule is a header line carrying the shape,
then one line per rank::

    # schedule name=1f1b ranks=2 microbatches=2 chunks=1 paths=1 layout=looped
    rank 0: 0F0 0F1 0BW0 0BW1
    rank 1: 1F0 1BW0 1F1 1BW1
"""
from __future__ import annotations

import re

from moesim.errors import ConfigError
from moesim.schedules.model import Action, Overlap, Schedule, Step, actions_of

_ACTION = re.compile(r"^(\d+)(BW|F|B|W)(\d+)(?:@(\d+))?$")
_HEADER_FIELDS = {"ranks": "num_ranks", "microbatches": "num_microbatches", "chunks": "num_chunks", "paths": "num_paths"}


def to_text(schedule: Schedule) -> str:
    """Render ``schedule`` as its header line plus one line per rank."""
    header = (
        f"# schedule name={schedule.name} ranks={schedule.num_ranks} microbatches={schedule.num_microbatches} "
        f"chunks={schedule.num_chunks} paths={schedule.num_paths} layout={schedule.layout}"
    )
    rows = [f"rank {r}: " + " ".join(str(step) for step in row) for r, row in enumerate(schedule.steps)]
    return "\n".join([header, *(row.rstrip() for row in rows)]) + "\n"


def parse_step(token: str) -> Step:
    """Parse one step token: an action ("1F3") or an overlapped pair ("1F3&1B0")."""
    parts = token.split("&")
    if len(parts) == 2:
        return Overlap(parse_action(parts[0]), parse_action(parts[1]))
    if len(parts) != 1:
        raise ConfigError("schedule text", f"bad step {token!r}", "an overlapped pair joins exactly two actions")
    return parse_action(token)


def parse_action(token: str) -> Action:
    """Parse ``{stage}{F|B|W|BW}{microbatch}[@path]``."""
    match = _ACTION.match(token)
    if not match:
        raise ConfigError("schedule text", f"bad action {token!r}", "write actions like 1F3, 2BW0 or 0W1@1")
    stage, kind, microbatch, path = match.groups()
    return Action(kind, int(stage), int(microbatch), int(path or 0))


def from_text(text: str, *, name: str | None = None, layout: str | None = None, num_chunks: int | None = None) -> Schedule:
    """Parse the text form. Without a header line the shape is inferred from the actions;
    ``name``, ``layout`` and ``num_chunks`` override the header (or fill in for a missing one)."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    header: dict[str, str] = {}
    if lines and lines[0].startswith("#"):
        header = _parse_header(lines.pop(0))
    rows = tuple(_parse_row(line, expected_rank=r) for r, line in enumerate(lines))
    fields = {key: int(header[k]) for k, key in _HEADER_FIELDS.items() if k in header}
    fields.setdefault("num_ranks", len(rows))
    inferred = _infer_shape(rows, fields["num_ranks"])
    for key, value in inferred.items():
        fields.setdefault(key, value)
    if num_chunks is not None:
        fields["num_chunks"] = num_chunks
    return Schedule(
        name=name or header.get("name", "custom"),
        layout=layout or header.get("layout", "looped"),
        steps=rows,
        **fields,
    )


def _parse_header(line: str) -> dict[str, str]:
    words = line.lstrip("#").split()
    if not words or words[0] != "schedule":
        raise ConfigError("schedule text", f"bad header {line!r}", "start it with '# schedule name=... ranks=...'")
    pairs = [w.split("=", 1) for w in words[1:]]
    if any(len(p) != 2 for p in pairs):
        raise ConfigError("schedule text", f"bad header {line!r}", "write header fields as key=value")
    return dict(pairs)  # type: ignore[arg-type]


def _parse_row(line: str, expected_rank: int) -> tuple[Step, ...]:
    label, sep, body = line.partition(":")
    if not sep or label.split() != ["rank", str(expected_rank)]:
        raise ConfigError("schedule text", f"bad rank line {line!r}", f"start line {expected_rank} with 'rank {expected_rank}:'")
    return tuple(parse_step(token) for token in body.split())


def _infer_shape(rows: tuple[tuple[Step, ...], ...], num_ranks: int) -> dict[str, int]:
    """Shape fields for text without a header: the smallest shape that holds every action."""
    actions = [a for row in rows for step in row for a in actions_of(step)]
    paths = 1 + max((a.path for a in actions), default=0)
    stages = 1 + max((a.stage for a in actions), default=0)
    microbatches = 1 + max((a.microbatch for a in actions), default=0)
    return {
        "num_paths": paths,
        "num_microbatches": microbatches * paths,
        "num_chunks": 2 if paths == 2 else max(1, -(-stages // max(num_ranks, 1))),
    }
