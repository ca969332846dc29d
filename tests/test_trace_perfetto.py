"""Chrome/Perfetto JSON export: structure, exact µs, lanes, flows, counters, determinism."""
from __future__ import annotations

import gzip
import json
from decimal import Decimal
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from moesim.engine.recorder import Recorder, Span
from moesim.trace import dumps_chrome_trace, to_chrome_trace, validate_chrome_trace, write_chrome_trace
from moesim.trace.perfetto import EXACT_FLOAT_LIMIT_NS, Micros, _dump_event_exact, assign_lanes, format_micros
from moesim.trace.synthetic import synthetic_recorder

LINK = "link:n0.nic0->leaf0"


def _span(rec: Recorder, task: int, rank: int, host: int, stream: str, name: str, cat: str,
          start: int, end: int, **args: object) -> int:
    return rec.add_span(Span(task, rank, host, stream, name, cat, start, end, dict(args)))


def hand_recorder() -> Recorder:
    """Three GPUs on two hosts; one stream with a partial overlap; two arrows; one link counter."""
    rec = Recorder(meta={"num_ranks": 3, "mode": "fluid", "cost_model": "roofline", "scenario": "hand",
                         "ranks": {0: {"host": 0, "gpu": "H100"}, 1: {"host": 0, "gpu": "H100"},
                                   2: {"host": 1, "gpu": "H100"}},
                         "links": {LINK: {"kind": "ib", "bandwidth_gbps": 50.0}}})
    _span(rec, 0, 0, 0, "compute", "fwd0", "forward", 0, 1500, stage=0, microbatch=0)
    _span(rec, 1, 0, 0, "comm.pp_send", "send0", "send", 1500, 2750, bytes=1 << 20)
    _span(rec, 1, 1, 0, "comm.pp_recv", "recv0", "recv", 1500, 2750, bytes=1 << 20)
    _span(rec, 2, 1, 0, "compute", "fwd1", "forward", 3000, 4001, stage=1, microbatch=0)
    for rank, host in ((0, 0), (1, 0), (2, 1)):
        _span(rec, 3, rank, host, "comm.dp", "ar", "all_reduce", 4001, 6000, bytes=123)
    _span(rec, 4, 2, 1, "compute", "a", "expert", 100, 600, expert=3)
    _span(rec, 5, 2, 1, "compute", "b", "expert", 300, 900, expert=4)  # partially overlaps "a"
    _span(rec, 6, 2, 1, "compute", "z", "router", 900, 900)
    rec.add_arrow(0, 1, "pp")
    rec.add_arrow(1, 2, "pp")  # the engine's send -> recv arrow: both spans share one interval
    rec.add_arrow(2, 3, "pp")
    for t_ns, value in ((1500, 0.8), (2750, 0.0), (1500, 0.9), (4001, 0.5), (6000, 0.0), (6000, 0.0)):
        rec.add_counter(LINK, t_ns, value)
    return rec


def _load(path: Path) -> dict:
    return json.loads(path.read_text(), parse_float=Decimal, parse_constant=_reject)


def _reject(name: str) -> None:
    raise AssertionError(f"non-JSON constant {name} in trace")


def _written(tmp_path: Path, rec: Recorder) -> dict:
    return _load(write_chrome_trace(rec, tmp_path / "trace.json"))


def _names(events: list[dict]) -> tuple[dict[int, str], dict[tuple[int, int], str]]:
    procs = {e["pid"]: e["args"]["name"] for e in events if e["ph"] == "M" and e["name"] == "process_name"}
    threads = {(e["pid"], e["tid"]): e["args"]["name"] for e in events if e["ph"] == "M" and e["name"] == "thread_name"}
    return procs, threads


def test_hand_trace_is_clean_for_the_importer(tmp_path: Path) -> None:
    trace = _written(tmp_path, hand_recorder())
    assert validate_chrome_trace(trace) == []


def test_processes_and_threads_are_named_and_sorted(tmp_path: Path) -> None:
    events = _written(tmp_path, hand_recorder())["traceEvents"]
    procs, threads = _names(events)
    assert procs == {1: "host0", 2: "host1", 3: "network"}
    assert sorted(threads.values()) == sorted([
        "gpu0 compute", "gpu0 comm.dp", "gpu0 comm.pp_send", "gpu1 compute", "gpu1 comm.dp",
        "gpu1 comm.pp_recv", "gpu2 compute", "gpu2 compute #2", "gpu2 comm.dp"])
    assert all(tid != 0 for _, tid in threads)
    sort_index = {(e["pid"], e["tid"]): e["args"]["sort_index"] for e in events
                  if e["ph"] == "M" and e["name"] == "thread_sort_index"}
    assert set(sort_index) == set(threads)
    ordered = [threads[k] for k in sorted(threads, key=lambda k: (k[0], sort_index[k]))]
    assert ordered[:3] == ["gpu0 compute", "gpu0 comm.dp", "gpu0 comm.pp_send"]
    assert ordered[-3:] == ["gpu2 compute", "gpu2 compute #2", "gpu2 comm.dp"]


def test_every_span_becomes_one_exact_slice(tmp_path: Path) -> None:
    rec = hand_recorder()
    events = _written(tmp_path, rec)["traceEvents"]
    _, threads = _names(events)
    got = sorted((threads[(e["pid"], e["tid"])].split(" #")[0], e["name"], e["ts"] * 1000, e["dur"] * 1000,
                  e["args"]["task_id"]) for e in events if e["ph"] == "X")
    want = sorted((f"gpu{s.rank} {s.stream}", s.name, Decimal(s.start_ns), Decimal(s.end_ns - s.start_ns),
                   s.task_id) for s in rec.spans)
    assert got == want
    fwd1 = next(e for e in events if e.get("name") == "fwd1")
    assert (str(fwd1["ts"]), str(fwd1["dur"])) == ("3.0", "1.001")
    assert fwd1["args"] == {"microbatch": 0, "stage": 1, "task_id": 2}


def test_slices_on_one_thread_never_overlap(tmp_path: Path) -> None:
    events = _written(tmp_path, hand_recorder())["traceEvents"]
    per_thread: dict[tuple[int, int], list[tuple[Decimal, Decimal]]] = {}
    for e in events:
        if e["ph"] == "X":
            per_thread.setdefault((e["pid"], e["tid"]), []).append((e["ts"], e["ts"] + e["dur"]))
    for intervals in per_thread.values():
        intervals.sort()
        assert all(end <= nxt_start for (_, end), (nxt_start, _) in zip(intervals, intervals[1:]))
    _, threads = _names(events)
    lane2 = [e["name"] for e in events if e["ph"] == "X" and threads[(e["pid"], e["tid"])] == "gpu2 compute #2"]
    assert lane2 == ["b"]


def test_flows_have_both_ends_inside_their_slices(tmp_path: Path) -> None:
    rec = hand_recorder()
    events = _written(tmp_path, rec)["traceEvents"]
    _, threads = _names(events)
    starts = {e["id"]: e for e in events if e["ph"] == "s"}
    ends = {e["id"]: e for e in events if e["ph"] == "f"}
    assert set(starts) == set(ends) == {1, 2, 3}
    for flow_id, arrow in zip((1, 2, 3), rec.arrows):
        s, f = starts[flow_id], ends[flow_id]
        assert (s["cat"], s["name"]) == (f["cat"], f["name"]) == ("flow", "pp")
        assert f["bp"] == "e"
        src, dst = rec.spans[arrow.src_span], rec.spans[arrow.dst_span]
        assert threads[(s["pid"], s["tid"])] == f"gpu{src.rank} {src.stream}"
        assert threads[(f["pid"], f["tid"])] == f"gpu{dst.rank} {dst.stream}"
        assert src.start_ns <= s["ts"] * 1000 < src.end_ns
        assert dst.start_ns <= f["ts"] * 1000 < dst.end_ns
        assert s["ts"] <= f["ts"]
    assert [(starts[i]["ts"] * 1000, ends[i]["ts"] * 1000) for i in (1, 2, 3)] == [
        (1499, 1501), (1500, 1500), (2749, 3001)]
    order = [(e["ph"], e["id"]) for e in events if e["ph"] in "sf"]
    assert order.index(("s", 2)) < order.index(("f", 2))  # equal ts: file order decides


def test_counter_track_is_a_clean_step_function(tmp_path: Path) -> None:
    events = _written(tmp_path, hand_recorder())["traceEvents"]
    samples = [(e["ts"], e["args"]["utilisation"]) for e in events if e["ph"] == "C" and e["name"] == LINK]
    assert samples == [(Decimal("1.5"), Decimal("0.9")), (Decimal("2.75"), Decimal("0.0")),
                       (Decimal("4.001"), Decimal("0.5")), (Decimal("6"), Decimal("0.0"))]
    assert all(a[0] < b[0] for a, b in zip(samples, samples[1:]))
    assert {e["pid"] for e in events if e["ph"] == "C"} == {3}


def test_same_recorder_same_bytes(tmp_path: Path) -> None:
    first = write_chrome_trace(hand_recorder(), tmp_path / "a.json").read_bytes()
    second = write_chrome_trace(hand_recorder(), tmp_path / "b.json").read_bytes()
    assert first == second
    assert dumps_chrome_trace(to_chrome_trace(hand_recorder())).encode() == first
    zipped = [write_chrome_trace(hand_recorder(), tmp_path / f"{n}.json.gz").read_bytes() for n in "cd"]
    assert zipped[0] == zipped[1] and gzip.decompress(zipped[0]) == first


def test_trace_dict_is_plain_json_and_metadata_is_scalar() -> None:
    trace = to_chrome_trace(hand_recorder())
    text = json.dumps(trace, allow_nan=False)
    assert json.loads(text)["metadata"] == {"cost_model": "roofline", "mode": "fluid", "num_ranks": 3,
                                            "producer": "moesim", "scenario": "hand", "time_unit": "us"}
    assert trace["otherData"]["ranks"]["2"] == {"gpu": "H100", "host": 1}


def test_micros_keep_exact_nanoseconds() -> None:
    assert [format_micros(ns) for ns in (0, 1, 999, 1000, 1001, 1500, 123456789012345678, -1500)] == [
        "0.0", "0.001", "0.999", "1.0", "1.001", "1.5", "123456789012345.678", "-1.5"]
    big = Micros(123456789012345678)
    assert big.ns == 123456789012345678 and isinstance(big, float)


@settings(max_examples=200, deadline=None)
@given(ns=st.integers(-EXACT_FLOAT_LIMIT_NS + 1, EXACT_FLOAT_LIMIT_NS - 1))
def test_fast_float_text_is_the_exact_decimal(ns: int) -> None:
    assert format_micros(ns) == repr(ns / 1000)
    assert Decimal(format_micros(ns)) * 1000 == ns


def test_huge_times_are_printed_exactly() -> None:
    rec = Recorder()
    start = 10**17 + 1  # past what a double holds to the ns
    rec.add_span(Span(0, 0, 0, "compute", "late", "compute", start, start + 2, {}))
    text = dumps_chrome_trace(to_chrome_trace(rec))
    assert '"dur":0.002' in text and '"ts":100000000000000.001' in text
    small = to_chrome_trace(hand_recorder())
    exact = "{" + ",".join(f'"{k}":' + json.dumps(small[k], sort_keys=True, separators=(",", ":"))
                           for k in ("metadata", "otherData")) + ',"traceEvents":[\n' + ",\n".join(
        _dump_event_exact(e) for e in small["traceEvents"]) + "\n]}\n"
    assert dumps_chrome_trace(small) == exact


def test_lanes_are_minimal_and_disjoint() -> None:
    spans = [Span(i, 0, 0, "compute", str(i), "compute", s, e, {})
             for i, (s, e) in enumerate([(0, 10), (5, 15), (10, 20), (12, 13), (20, 20), (20, 30)])]
    assert assign_lanes(spans) == [0, 1, 0, 2, 0, 0]


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), num_ranks=st.integers(1, 6), num_tasks=st.integers(0, 60))
def test_synthetic_recorders_export_cleanly(seed: int, num_ranks: int, num_tasks: int) -> None:
    rec = synthetic_recorder(seed, num_ranks, num_tasks)
    trace = json.loads(dumps_chrome_trace(to_chrome_trace(rec)), parse_float=Decimal)
    assert validate_chrome_trace(trace) == []
    events = trace["traceEvents"]
    xs = [e for e in events if e["ph"] == "X"]
    assert len(xs) == len(rec.spans)
    assert sorted(e["ts"] * 1000 for e in xs) == sorted(Decimal(s.start_ns) for s in rec.spans)
    assert sum(1 for e in events if e["ph"] == "s") == len(rec.arrows)


def test_validator_reports_what_perfetto_would_trip_on() -> None:
    bad = {"traceEvents": [
        {"ph": "X", "pid": 1, "tid": 1, "ts": 0, "dur": 10, "name": "a"},
        {"ph": "X", "pid": 1, "tid": 1, "ts": 5, "dur": 10, "name": "b"},
        {"ph": "X", "pid": 1, "tid": 0, "ts": 0, "dur": 1, "name": "c"},
        {"ph": "s", "pid": 1, "tid": 1, "ts": 1, "cat": "flow", "name": "x", "id": 7},
        {"ph": "C", "pid": 2, "ts": 0, "name": "n", "args": {"v": "high"}},
    ]}
    errors = "\n".join(validate_chrome_trace(bad))
    assert "partially overlaps" in errors
    assert "tid 0" in errors
    assert "only one end" in errors
    assert "(C)" in errors


def _odd_recorder() -> Recorder:
    """Spans sharing a task's args (a collective on three GPUs), args that need converting
    (tuples, numpy scalars, inf, nested dicts, non-ASCII), one huge time."""
    import numpy as np

    rec = hand_recorder()
    shared = {"bytes": 1.5, "peers": (1, 2), "n": np.int64(3), "bad": float("inf"), "nest": {"k": [1.0, "é"]}}
    for rank in range(3):
        _span(rec, 9, rank, rank // 2, "comm.ep", "a2a", "all_to_all", 7000, 9000 + rank)
        rec.spans[-1] = rec.spans[-1]._replace(args=shared)
    _span(rec, 10, 0, 0, "compute", "ünïcode", "expert", 9000, 9500, flops=2.5e12, note=None)
    return rec


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), num_ranks=st.integers(1, 6), num_tasks=st.integers(0, 60))
def test_the_writer_prints_what_the_trace_dict_dumps_to(tmp_path_factory, seed: int, num_ranks: int,
                                                        num_tasks: int) -> None:
    path = tmp_path_factory.mktemp("w") / "t.json"
    for rec in (synthetic_recorder(seed, num_ranks, num_tasks), _odd_recorder()):
        assert write_chrome_trace(rec, path).read_text() == dumps_chrome_trace(to_chrome_trace(rec))
    huge = _odd_recorder()
    huge.add_span(Span(11, 1, 0, "compute", "late", "compute", 10**17 + 1, 10**17 + 3, {"x": 1}))
    assert write_chrome_trace(huge, path).read_text() == dumps_chrome_trace(to_chrome_trace(huge))
