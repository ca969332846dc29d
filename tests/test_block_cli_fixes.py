"""``moesim layer``: truthful labels, refused contradicting --set, CLI-named errors, trace routing."""
from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from moesim.cli import app
from moesim.errors import ConfigError
from moesim.experiment.block import simulate_block
from moesim.experiment.block_cli import layer_notes, layer_scenario, parse_routing, report

runner = CliRunner()
BASE = ["layer", "--model", "qwen3-30b-a3b", "--block", "moe", "--pass", "fwd"]


def flags(**kw):
    out = dict(model="qwen3-30b-a3b", block="moe", tokens=512, passes="fwd", gpus=2, gpu="H200", host="eager",
               iterations=1, seq_len=None, experts="", routing="balanced", cost_model="roofline", sets=())
    return {**out, **kw}


def one_line_error(args):
    result = runner.invoke(app, ["layer", *args])
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1, result.output
    return lines[0]


def test_h100_collectives_are_labelled_borrowed_and_profile_sha_recorded(tmp_path):
    result = runner.invoke(app, BASE + ["--tokens", "512", "--gpus", "2", "--gpu", "H100", "--out", str(tmp_path)],
                           env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    assert "measured collectives" not in result.output
    summary = json.loads((tmp_path / "block.json").read_text())
    comm = next(c for c in summary["op_classes"] if c["name"].startswith("comm:"))
    assert comm["provenance"] == summary["cost_sources"]["collectives"]
    assert "(borrowed)" in comm["provenance"]
    assert summary["profile"]["name"] == "h100_sxm" and len(summary["profile"]["sha256"]) >= 8
    assert summary["profile"]["sha256"] in result.output


def test_profile_without_collectives_says_roofline_for_communication():
    from moesim.experiment.block import class_source

    class R:
        calibrated, host_issue = True, {}
    sources = {"collectives": "roofline", "gemm": "measured (GPU)"}
    assert class_source("comm: all_to_all", None, sources, R()) == "roofline"
    assert class_source("GEMM", "measured", sources, R()) == "measured (GPU)"
    assert class_source("attention", "roofline fallback", sources, R()) == "roofline fallback"


@pytest.mark.parametrize("args,key,flag", [
    (["--iterations", "20", "--set", "plan.num_microbatches=1"], "plan.num_microbatches", "--iterations"),
    (["--set", "plan.micro_batch_size=4"], "plan.micro_batch_size", "--tokens"),
    (["--set", "model.seq_len=1024"], "model.seq_len", "--tokens"),
    (["--pass", "fwd_bwd", "--set", "mode=forward"], "mode", "--pass")])
def test_set_contradicting_a_flag_is_refused_naming_both(args, key, flag):
    line = one_line_error(["--model", "llama3-8b", "--tokens", "2048", "--cost-model", "roofline", *args])
    assert line.startswith(f"error: --set {key}: layer sets it from {flag}") and f"fix: use {flag}" in line


def test_set_agreeing_with_the_flag_passes():
    scn = layer_scenario(**flags(iterations=3, sets=("plan.num_microbatches=3",)))
    assert scn.plan.num_microbatches == 3


def test_too_large_hint_names_what_layer_can_do():
    from moesim.experiment.block_cli import _too_large

    err = _too_large(ConfigError("scenario", "too large to simulate here: x", "pass --force; --set engine=reduced"))
    assert "--force" not in err.fix.split("no --force")[0] and "engine=reduced" not in err.fix
    assert "--gpus" in err.fix and "--iterations" in err.fix and "--tokens" in err.fix


def test_routing_hints_and_zipf_zero():
    assert parse_routing("zipf:0", 64).zipf_s == 0.0
    with pytest.raises(ConfigError, match="S >= 0, 0 is uniform"):
        parse_routing("zipf:-1", 64)
    line = one_line_error(BASE[1:] + ["--tokens", "64", "--set", "moe.routing.kind=zipf"])
    assert "s: 1.2" not in line and "--routing" in line and "trace:PATH" in line
    line = one_line_error(BASE[1:] + ["--tokens", "64", "--routing", "uniform", "--set",
                                      "moe.routing.tokens_per_rank=None"])
    assert "--routing trace:PATH" in line


def test_routing_trace_replays_through_layer(tmp_path):
    from moesim.moe.traces import write_counts_trace

    rng = np.random.default_rng(0)
    path = tmp_path / "t.npz"
    write_counts_trace(path, np.stack([rng.multinomial(512 * 8, np.ones(128) / 128) for _ in range(2)])[None, None])
    scn = layer_scenario(**flags(routing=f"trace:{path}"))
    assert scn.moe.routing.kind == "trace" and scn.moe.routing.tokens_per_rank is None
    assert scn.moe.routing.trace_path == str(path)
    assert simulate_block(scn).step_time_ns > 0
    assert "not found" in one_line_error(BASE[1:] + ["--tokens", "64", "--routing", f"trace:{tmp_path / 'no.npz'}"])


def test_gpu_table_is_a_partition_and_host_is_separate():
    from rich.console import Console

    res = simulate_block(layer_scenario(**flags()))
    exposed = res.comm_exposed
    assert exposed and all(0 <= exposed[c.name] <= c.time_ns + 1e-6 for c in res.op_classes if c.name in exposed)
    busy = sum(c.time_ns for c in res.gpu_classes if c.name not in exposed) + sum(exposed.values())
    assert busy <= res.time_per_iteration_ns * (1 + 1e-9)
    console = Console(width=250, record=True)
    for part in report(res):
        console.print(part)
    text = console.export_text()
    table = text.split("critical path")[0]
    pcts = [float(line.split("│")[3].strip().rstrip("%")) for line in table.splitlines()
            if line.startswith("│") and line.split("│")[3].strip().endswith("%")]
    assert sum(pcts) == pytest.approx(100.0, abs=0.1 * len(pcts))
    assert "│ host " not in table and "host thread (its own lane" in text


def test_layer_index_note_and_flag_named_errors():
    assert "picks the attention kind only" in layer_notes(model="deepseek-v3", block="decoder", layer_index=0)[0]
    assert layer_notes(model="deepseek-v3", block="decoder", layer_index=5) == []
    line = one_line_error(["--model", "llama3-8b", "--tokens", "64", "--layer-index", "99"])
    assert line.startswith("error: --layer-index:") and "layer_index" not in line
    line = one_line_error(["--model", "llama3-8b", "--block", "moe", "--tokens", "64"])
    assert line.startswith("error: --block:") and "layer=" not in line
    line = one_line_error(["--model", "llama3-8b", "--tokens", "1000000000", "--cost-model", "roofline"])
    assert line.startswith("error: --tokens:")
    line = one_line_error(["--model", "llama3-8b", "--tokens", "64", "--seq-len", "48"])
    assert line.startswith("error: --seq-len:") and "tokens=" not in line
