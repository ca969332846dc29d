"""Recorded routing: load, validate and replay routing traces stored as ``.npz`` files.

The format is documented in docs/routing_traces.md. A trace holds either ``counts`` (tokens per
source rank and expert: ``[steps, layers, ranks, experts]``, or with a microbatch axis
``[steps, layers, microbatches, ranks, experts]``) or per-token ``assignments``
(``[steps, layers, tokens, top_k]``) with ``src_rank`` and ``num_experts`` (optionally
``num_ranks``, ``microbatch``, ``num_microbatches``). :class:`RoutingTrace` turns either into
the counts of one (step, layer) split over the requested microbatches, exactly conserving
tokens. Steps past the end wrap around (the trace is replayed cyclically).
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass

import numpy as np

from moesim.errors import ConfigError

FORMAT_VERSION = 1
# Bounds that keep a bad file from turning into a huge allocation (bincount over
# microbatches x ranks x experts cells) or an int64 overflow.
MAX_EXPERTS, MAX_RANKS, MAX_MICROBATCHES = 1 << 16, 1 << 17, 1 << 16
MAX_ENTRY = 1 << 40
MAX_CELLS = 1 << 28
# Bytes the archive's arrays may take once decompressed, checked from the zip directory before
# any array is read: a few-MB .npz of zeros can expand to tens of GB (a decompression bomb).
MAX_ARRAY_BYTES = 2 << 30


@dataclass(frozen=True)
class RoutingTrace:
    """A loaded trace. Exactly one of ``counts`` (5-D) or ``assignments`` is set."""

    source: str
    num_experts: int
    num_ranks: int
    counts: np.ndarray | None = None          # [steps, layers, microbatches, ranks, experts]
    assignments: np.ndarray | None = None     # [steps, layers, tokens, top_k]
    src_rank: np.ndarray | None = None        # [steps, layers, tokens]
    microbatch: np.ndarray | None = None      # [steps, layers, tokens] or None
    num_microbatches: int = 0                 # 0: split each source's tokens in order on request

    @property
    def num_steps(self) -> int:
        return int((self.counts if self.counts is not None else self.assignments).shape[0])

    @property
    def num_layers(self) -> int:
        return int((self.counts if self.counts is not None else self.assignments).shape[1])

    @property
    def top_k(self) -> int | None:
        """Experts per token, known only for the assignments format."""
        return None if self.assignments is None else int(self.assignments.shape[3])

    def step_counts(self, step: int, layer: int, num_microbatches: int) -> np.ndarray:
        """``[num_microbatches, ranks, experts]`` tokens of ``layer`` at ``step`` (cyclic)."""
        if not 0 <= layer < self.num_layers:
            raise ConfigError("num_layers", f"layer {layer} is outside the trace's {self.num_layers} layers",
                              "request at most the recorded layers", source=self.source)
        if num_microbatches < 1 or num_microbatches * self.num_ranks * self.num_experts > MAX_CELLS:
            raise ConfigError("num_microbatches", f"{num_microbatches} microbatches x {self.num_ranks} ranks x "
                              f"{self.num_experts} experts is outside 1..{MAX_CELLS} cells",
                              "request fewer microbatches", source=self.source)
        s = step % self.num_steps
        if self.counts is not None:
            return self._split_counts(self.counts[s, layer], num_microbatches)
        return self._count_assignments(s, layer, num_microbatches)

    def _split_counts(self, counts: np.ndarray, num_microbatches: int) -> np.ndarray:
        if counts.shape[0] == num_microbatches:
            return counts.copy()
        if counts.shape[0] != 1:
            raise ConfigError("num_microbatches", f"the trace records {counts.shape[0]} microbatches, "
                              f"{num_microbatches} requested", "request the recorded number", source=self.source)
        return split_evenly(counts[0], num_microbatches)

    def _count_assignments(self, s: int, layer: int, num_microbatches: int) -> np.ndarray:
        assert self.assignments is not None and self.src_rank is not None
        chosen, src = self.assignments[s, layer], self.src_rank[s, layer]
        if self.microbatch is not None:
            if num_microbatches != self.num_microbatches:
                raise ConfigError("num_microbatches", f"the trace records {self.num_microbatches} microbatches, "
                                  f"{num_microbatches} requested", "request the recorded number", source=self.source)
            mb = self.microbatch[s, layer]
        else:
            mb = microbatch_in_order(src, self.num_ranks, num_microbatches)
        cell = (mb * self.num_ranks + src) * self.num_experts
        flat = np.bincount((cell[:, None] + chosen).ravel(),
                           minlength=num_microbatches * self.num_ranks * self.num_experts)
        return flat.reshape(num_microbatches, self.num_ranks, self.num_experts)


def split_evenly(counts: np.ndarray, parts: int) -> np.ndarray:
    """Split integer ``counts[ranks, experts]`` into ``parts`` near-equal integer parts
    ``[parts, ranks, experts]`` that sum back exactly, with no negative count.

    Each cell gives every part ``count // parts``; its remainder units go to consecutive parts,
    continuing, within each rank's row (last axis), where the previous expert's left off. So a
    cell's parts differ by at most 1 and each rank's row is split as evenly as its total allows:
    a rank routing ``parts * n`` pairs gives every part exactly ``n`` (per-microbatch tokens x
    top_k). Rows start at rotating parts so no part is systematically heavier. Deterministic."""
    counts = np.asarray(counts)
    if parts < 1:
        raise ValueError(f"parts must be >= 1, got {parts}")
    base, rem = np.divmod(counts, parts)
    if counts.size == 0:
        return np.zeros((parts, *counts.shape), dtype=base.dtype)
    rows = rem.reshape(-1, counts.shape[-1] if counts.ndim else 1)
    rotation = ((np.cumsum(rows, axis=-1) - rows + np.arange(rows.shape[0])[:, None]) % parts).reshape(counts.shape)
    part = np.arange(parts).reshape(parts, *([1] * counts.ndim))
    return base[None] + ((part - rotation[None]) % parts < rem[None])


def microbatch_in_order(src: np.ndarray, num_ranks: int, num_microbatches: int) -> np.ndarray:
    """Microbatch of each token when each source's tokens are cut, in order, into equal runs."""
    order = np.argsort(src, kind="stable")
    per_rank = np.bincount(src, minlength=num_ranks)
    first = np.concatenate([[0], np.cumsum(per_rank)[:-1]])
    ordinal = np.empty(src.size, dtype=np.int64)
    ordinal[order] = np.arange(src.size) - first[src[order]]
    return ordinal * num_microbatches // np.maximum(per_rank[src], 1)


def load_trace(path: str | os.PathLike[str]) -> RoutingTrace:
    """Load and validate a trace (cached per file path, size and modification time)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ConfigError("trace_path", f"no file {path!r}", "give the path of a routing-trace .npz")
    st = os.stat(path)
    return _load_cached(os.path.abspath(path), st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=8)
def _load_cached(path: str, mtime_ns: int, size: int) -> RoutingTrace:
    data = _read_npz(path)
    version = _scalar(data, "format_version", FORMAT_VERSION, path, low=0)
    if version != FORMAT_VERSION:
        raise ConfigError("format_version", f"unsupported version {version}", f"write version {FORMAT_VERSION}",
                          source=path)
    if "counts" in data:
        return _from_counts(path, data["counts"])
    if "assignments" in data:
        return _from_assignments(path, data)
    raise ConfigError("trace", "holds neither 'counts' nor 'assignments'",
                      "see docs/routing_traces.md for the two layouts", source=path)


def _read_npz(path: str) -> dict[str, np.ndarray]:
    """Every array of the archive; any failure to parse it is a ConfigError naming the file."""
    try:
        with np.load(path, allow_pickle=False) as z:
            unpacked = sum(info.file_size for info in z.zip.infolist())
            if unpacked > MAX_ARRAY_BYTES:
                raise ConfigError("trace_path", f"its arrays take {unpacked:,} bytes once decompressed, more than "
                                  f"{MAX_ARRAY_BYTES:,}", "record fewer steps or layers (the trace is replayed "
                                  "cyclically)", source=path)
            return {k: z[k] for k in z.files}
    except ConfigError:
        raise
    except Exception as exc:  # noqa: BLE001 - a corrupt archive fails in numpy, zipfile or zlib, in many types
        raise ConfigError("trace_path", f"cannot read the file as an .npz archive of plain arrays "
                          f"({type(exc).__name__}: {exc})", "write it with write_counts_trace or "
                          "write_assignments_trace (docs/routing_traces.md)", source=path) from None


def _check_ints(path: str, name: str, a: np.ndarray) -> np.ndarray:
    if not np.issubdtype(a.dtype, np.integer):
        raise ConfigError(name, f"dtype {a.dtype} is not integer", "store integer arrays", source=path)
    if a.size and a.min() < 0:
        raise ConfigError(name, "holds negative entries", "store non-negative ids and counts", source=path)
    if a.size and a.max() > MAX_ENTRY:
        raise ConfigError(name, f"holds an entry above {MAX_ENTRY}", "store token counts and ids", source=path)
    return a.astype(np.int64)


def _from_counts(path: str, counts: np.ndarray) -> RoutingTrace:
    counts = _check_ints(path, "counts", counts)
    if counts.ndim == 4:
        counts = counts[:, :, None]
    if counts.ndim != 5 or 0 in counts.shape:
        raise ConfigError("counts", f"shape {counts.shape} is not [steps, layers, (microbatches,) ranks, experts]",
                          "store a non-empty 4-D or 5-D array", source=path)
    return RoutingTrace(path, int(counts.shape[4]), int(counts.shape[3]), counts=counts)


def _scalar(data: dict[str, np.ndarray], key: str, default: int | None, path: str, low: int = 1,
            high: int = MAX_RANKS) -> int:
    if key not in data:
        if default is None:
            raise ConfigError(key, "is missing", f"store the scalar {key!r}", source=path)
        value = default
    else:
        a = data[key]
        if a.size != 1 or not np.issubdtype(a.dtype, np.integer):
            raise ConfigError(key, f"must be one integer, got shape {a.shape} of dtype {a.dtype}",
                              f"store {key} as a scalar integer", source=path)
        value = int(a.reshape(()))
    if not low <= value <= high:
        raise ConfigError(key, f"must be in {low}..{high}, got {value}", "fix the scalar", source=path)
    return value


def _per_token(path: str, name: str, a: np.ndarray, shape3: tuple[int, ...]) -> np.ndarray:
    """An integer array broadcast to ``[steps, layers, tokens]``."""
    a = _check_ints(path, name, a)
    try:
        return np.broadcast_to(a, shape3)
    except ValueError:
        raise ConfigError(name, f"shape {a.shape} does not broadcast to [steps, layers, tokens] = {shape3}",
                          "store one entry per token", source=path) from None


def _from_assignments(path: str, data: dict[str, np.ndarray]) -> RoutingTrace:
    chosen = _check_ints(path, "assignments", data["assignments"])
    if chosen.ndim != 4 or 0 in chosen.shape:
        raise ConfigError("assignments", f"shape {chosen.shape} is not [steps, layers, tokens, top_k]",
                          "store a non-empty 4-D array", source=path)
    if "src_rank" not in data:
        raise ConfigError("src_rank", "is missing", "store the source rank of every token", source=path)
    shape3 = chosen.shape[:3]
    src = _per_token(path, "src_rank", data["src_rank"], shape3)
    num_experts = _scalar(data, "num_experts", None, path, high=MAX_EXPERTS)
    num_ranks = _scalar(data, "num_ranks", int(src.max()) + 1, path, high=MAX_RANKS)
    if chosen.max() >= num_experts or src.max() >= num_ranks:
        raise ConfigError("assignments", "holds an expert id >= num_experts or a rank >= num_ranks",
                          "fix the ids or the scalars", source=path)
    ordered = np.sort(chosen, axis=3)
    if (ordered[..., 1:] == ordered[..., :-1]).any():
        raise ConfigError("assignments", "a token selects the same expert twice",
                          "store distinct experts per token", source=path)
    mb, num_mb = None, 0
    if "microbatch" in data:
        mb = _per_token(path, "microbatch", data["microbatch"], shape3)
        num_mb = _scalar(data, "num_microbatches", int(mb.max()) + 1, path, high=MAX_MICROBATCHES)
        if mb.max() >= num_mb:
            raise ConfigError("microbatch", f"holds an index >= num_microbatches = {num_mb}",
                              "fix the indices or the scalar", source=path)
    return RoutingTrace(path, num_experts, num_ranks, assignments=chosen, src_rank=src,
                        microbatch=mb, num_microbatches=num_mb)


def write_counts_trace(path: str | os.PathLike[str], counts: np.ndarray) -> None:
    """Write ``counts`` ([steps, layers, (microbatches,) ranks, experts]) as a routing trace."""
    np.savez_compressed(path, counts=np.asarray(counts, dtype=np.int64), format_version=FORMAT_VERSION)


def write_assignments_trace(path: str | os.PathLike[str], assignments: np.ndarray, src_rank: np.ndarray,
                            num_experts: int, num_ranks: int | None = None,
                            microbatch: np.ndarray | None = None) -> None:
    """Write per-token choices ``assignments[steps, layers, tokens, top_k]`` with each token's
    ``src_rank`` (any shape broadcastable to ``[steps, layers, tokens]``)."""
    extra: dict[str, np.ndarray | int] = {}
    if num_ranks is not None:
        extra["num_ranks"] = num_ranks
    if microbatch is not None:
        extra["microbatch"] = np.asarray(microbatch, dtype=np.int64)
    np.savez_compressed(path, assignments=np.asarray(assignments, dtype=np.int64),
                        src_rank=np.asarray(src_rank, dtype=np.int64), num_experts=num_experts,
                        format_version=FORMAT_VERSION, **extra)
