"""moesim validate through the product path: layer-workloads entries as block Scenarios run by
simulate_block, single kernels priced by the cost model, the summary arithmetic, bad input."""
from __future__ import annotations

import copy
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from moesim.errors import ConfigError
from moesim.validate.compare import Comparison, summarize
from moesim.validate.layers import (FORMAT, LayerEntry, entry_scenario, load_layer_file, model_spec, predict_entry,
                                    routing_config)
from moesim.validate.report import build_report

ROOT = Path(__file__).resolve().parents[1]
# a few CPU smoke cases of every program kind, a few seconds in all
SMOKE_SELECTIONS = ("grouped.scatter_add.t32.zipf1", "tiny_dense.dense.s32", "loop.scatter_add.t32.uniform")


@pytest.fixture(scope="module")
def smoke_file(tmp_path_factory) -> Path:
    """A layer-workloads file written by the harness's --device cpu smoke, a subset of its cases."""
    pytest.importorskip("torch")
    from moesim.calibrate import layer_workloads

    out = tmp_path_factory.mktemp("layers")
    docs = [layer_workloads.run("cpu", 60.0, out / f"part{i}.json", None, only, False, 0.0)
            for i, only in enumerate(SMOKE_SELECTIONS)]
    merged = dict(docs[0], entries=[e for d in docs for e in d["entries"]])
    path = out / "smoke.json"
    path.write_text(json.dumps(merged))
    return path


@pytest.fixture(scope="module")
def smoke_doc(smoke_file: Path) -> dict:
    return json.loads(smoke_file.read_text())


def _write(tmp_path: Path, doc: dict, name: str = "layers.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(doc))
    return path


# -- end to end ------------------------------------------------------------------------------------
def test_smoke_file_goes_through_the_block_path(smoke_file: Path, smoke_doc: dict) -> None:
    layer_file = load_layer_file(smoke_file, gpu="H200")
    assert layer_file.gpu == "H200" and layer_file.device == "cpu"
    kinds = {(e.kind, e.workload.get("experts"), e.workload.get("token_movement")) for e in layer_file.entries}
    assert kinds == {("moe_block", "grouped", "torchtitan"), ("moe_block", "grouped", "megatron"),
                     ("moe_block", "loop", "torchtitan"), ("dense_layer", None, None)}
    report = build_report([smoke_file], None, gpu="H200")
    assert not report.refused and len(report.cases) == len(smoke_doc["entries"])
    classes = {c.workload_class for c in report.cases}
    assert classes == {"torchtitan grouped", "megatron grouped", "torchtitan loop", "dense"}
    for case, entry in zip(report.cases, smoke_doc["entries"]):
        assert case.case_id == entry["id"] and case.measured_ns == entry["measured"]["time_ns"]
        assert case.predicted_ns > 0 and case.gpu == "H200" and "h200" in case.cost_model.lower()
    assert "smoke test of the path" in report.sources[0].note


def test_each_entry_becomes_the_block_scenario_it_describes(smoke_file: Path) -> None:
    for entry in load_layer_file(smoke_file, gpu="H100").entries:
        scn = entry_scenario(entry, "H100")
        assert scn.host == "eager" and scn.plan.num_microbatches == entry.iterations
        assert scn.plan.dp == scn.plan.pp == scn.plan.tp == 1 and scn.topology == "dgx_h100"
        assert scn.mode == ("forward" if entry.passes == "fwd" else "train") and not scn.optimizer
        spec = scn.model
        assert spec.num_layers == 1 and spec.hidden == entry.workload["model"]["hidden"]
        assert scn.plan.micro_batch_size * spec.seq_len == entry.workload["tokens"]
        if entry.kind == "moe_block":
            assert not spec.attention and spec.num_experts == entry.workload["model"]["num_experts"]
            assert scn.moe.experts == entry.workload["experts"] and scn.moe.step == scn.moe.stats_step == 0
            assert scn.moe.token_movement == entry.workload["token_movement"]
        else:
            assert spec.attention and spec.num_kv_heads == entry.workload["model"]["kv_heads"]
            assert spec.rope_impl == "halves"   # the harness's RoPE: chunk, 4 mul, sub, add, cat


def test_a_timed_burst_is_priced_at_the_clock_its_own_gemm_share_holds(smoke_file: Path) -> None:
    """The harness times a burst after an idle GPU: gpu_clock='duty' where the profile holds burst
    times and GEMM-duty rows (the H100's), else its sustained rows, said in each case's notes (the H200's)."""
    from moesim.validate.layers import BURST_NOTE, protocol_clock

    entry = load_layer_file(smoke_file, gpu="H100").entries[0]
    assert protocol_clock("H100") == "duty" and protocol_clock("H200") == "sustained"
    assert entry_scenario(entry, "H100").gpu_clock == "duty"
    assert entry_scenario(entry, "H200").gpu_clock == "sustained"
    h100, h200 = predict_entry(entry, "H100"), predict_entry(entry, "H200")
    assert "clock of GEMM duty" in h100.cost_model and BURST_NOTE not in h100.notes
    assert " at the " not in h200.cost_model and BURST_NOTE in h200.notes
    assert protocol_clock("H100", "roofline") == "sustained"


def test_the_prediction_reads_nothing_measured(smoke_file: Path) -> None:
    """The measured time (and anything else under ``measured`` but the iteration count of the
    timed region) does not change the prediction."""
    entry = load_layer_file(smoke_file, gpu="H200").entries[0]
    other = LayerEntry(entry.case_id, entry.workload, entry.measured_ns * 7.0, entry.iterations, not entry.small)
    assert predict_entry(entry, "H200").predicted_ns == predict_entry(other, "H200").predicted_ns


# -- routing ---------------------------------------------------------------------------------------
def test_the_entry_routing_config_reproduces_its_counts(smoke_file: Path) -> None:
    from moesim.moe.routing import generate_counts

    moe_entries = [e for e in load_layer_file(smoke_file, gpu="H200").entries if e.kind == "moe_block"]
    assert {e.workload["routing"]["kind"] for e in moe_entries} == {"uniform", "zipf"}
    for entry in moe_entries:
        spec = model_spec(entry)
        cfg = routing_config(entry, spec)
        drawn = generate_counts(cfg, spec, 1, 1, 1, 0)[0, 0, 0]
        assert drawn.tolist() == entry.workload["routing"]["counts"]
        assert int(drawn.sum()) == entry.workload["tokens"] * spec.top_k


def test_the_harness_draw_is_moesim_routing_at_full_size() -> None:
    """The harness's draw (torch-free numpy) for the shipped shapes equals generate_counts of the
    config it stores, so a GPU file's entries are described exactly."""
    pytest.importorskip("torch")
    from moesim.calibrate.layer_cases import MOE_SHAPES
    from moesim.calibrate.layer_workloads import draw_routing

    for shape, tokens, kind, s in ((MOE_SHAPES["qwen3_30b_a3b"], 4096, "zipf", 1.0),
                                   (MOE_SHAPES["deepseek_v2_lite"], 1024, "zipf", 0.5),
                                   (MOE_SHAPES["mixtral_8x7b"], 1024, "uniform", 0.0)):
        _, routing = draw_routing(shape, tokens, kind, s)
        workload = {"tokens": tokens, "seq": tokens, "routing": routing, "model": {
            "name": shape.name, "hidden": shape.hidden, "num_experts": shape.num_experts, "top_k": shape.top_k,
            "expert_ffn": shape.expert_ffn, "shared_experts": shape.shared_experts}, "kind": "moe_block"}
        entry = LayerEntry(f"{shape.name}.t{tokens}", workload, 1e6, 1, False)
        assert routing_config(entry, model_spec(entry)).tokens_per_rank == tokens


def test_an_entry_whose_counts_do_not_reproduce_is_refused(tmp_path: Path, smoke_doc: dict) -> None:
    doc = copy.deepcopy(smoke_doc)
    moe = next(e for e in doc["entries"] if e["workload"]["kind"] == "moe_block")
    counts = moe["workload"]["routing"]["counts"]
    i, j = int(np.argmax(counts)), int(np.argmin(counts))
    counts[i], counts[j] = counts[j], counts[i]          # same total, not the draw
    path = _write(tmp_path, doc)
    entry = next(e for e in load_layer_file(path, gpu="H200").entries if e.case_id == moe["id"])
    with pytest.raises(ConfigError, match="are not what its config draws"):
        routing_config(entry, model_spec(entry))
    report = build_report([path], None, gpu="H200")
    assert [case for case, _ in report.refused] == [moe["id"]]
    assert len(report.cases) == len(doc["entries"]) - 1


def test_counts_that_do_not_sum_to_tokens_times_top_k_are_refused(smoke_doc: dict) -> None:
    raw = copy.deepcopy(next(e for e in smoke_doc["entries"] if e["workload"]["kind"] == "moe_block"))
    raw["workload"]["routing"]["counts"][0] += 1
    entry = LayerEntry(raw["id"], raw["workload"], 1e6, 1, False)
    with pytest.raises(ConfigError, match="tokens x top_k"):
        routing_config(entry, model_spec(entry))


# -- summary arithmetic ------------------------------------------------------------------------------
def _c(cid: str, cls: str, measured: float, predicted: float, passes: str = "fwd", small: bool = False) -> Comparison:
    return Comparison(cid, cls, passes, "H200", measured, predicted, small)


def test_summary_per_class_pass_and_size() -> None:
    cases = [_c("a1", "torchtitan grouped", 2e6, 2.2e6),      # +10%
             _c("a2", "torchtitan grouped", 4e6, 3.0e6),      # -25%
             _c("a3", "torchtitan grouped", 1e6, 1.04e6),     # +4%
             _c("a4", "torchtitan grouped", 5e5, 6e5, small=True),      # +20%, flagged
             _c("a5", "torchtitan grouped", 8e5, 7.6e5, small=True),    # -5%, flagged
             _c("b1", "torchtitan grouped", 3e6, 3.3e6, passes="fwd_bwd"),  # +10%
             _c("d1", "dense", 2e6, 1.72e6)]                  # -14%: not above 15%
    got = {(s.workload_class, s.passes, s.size): s for s in summarize(cases)}
    assert list(got) == [("torchtitan grouped", "fwd", "main"), ("torchtitan grouped", "fwd", "small"),
                         ("torchtitan grouped", "fwd_bwd", "main"), ("dense", "fwd", "main")]
    main = got["torchtitan grouped", "fwd", "main"]
    assert main.cases == 3 and main.median_abs == pytest.approx(0.10) and main.max_abs == pytest.approx(0.25)
    assert main.over == 1 and main.worst_case == "a2"
    small = got["torchtitan grouped", "fwd", "small"]
    assert small.cases == 2 and small.median_abs == pytest.approx(0.125) and small.over == 1
    assert got["torchtitan grouped", "fwd_bwd", "main"].cases == 1
    dense = got["dense", "fwd", "main"]
    assert dense.max_abs == pytest.approx(0.14) and dense.over == 0
    assert cases[1].error == pytest.approx(-0.25)


# -- single kernels --------------------------------------------------------------------------------------
def test_single_kernels_are_priced_by_the_run_cost_model() -> None:
    from moesim.experiment.build import resolve_cost_model
    from moesim.ops import Gemm
    from moesim.validate.kernels import predict_kernels
    from moesim.validate.measurements import load_measurements

    measurements = load_measurements()
    cases = predict_kernels(measurements)
    assert {c.workload_class for c in cases} == {"kernel: gemm", "kernel: swiglu_ffn", "kernel: attention",
                                                 "kernel: memory"}
    for thermal, clock in (("as_found", "boost"), ("hot", "sustained"), ("steady", "sustained")):
        gemm = next(m for m in measurements.cases if m.kind == "gemm" and m.thermal == thermal)
        d = gemm.description   # the protocol it ran under is the clock setting it is predicted with
        want = resolve_cost_model("auto", "H200", gpu_clock=clock).compute_ns(Gemm(m=d["m"], n=d["n"], k=d["k"]))
        assert next(c for c in cases if c.case_id == gemm.case_id).predicted_ns == want


def test_default_report_says_what_it_left_out() -> None:
    report = build_report([], ROOT / "data" / "validation" / "h200_measurements.json")
    assert dict(report.left_out) == {"collective": 180, "pipeline": 135, "moe_layer": 120}
    assert any("multi-GPU issue" in n for n in report.notes)
    assert all(c.workload_class.startswith("kernel: ") for c in report.cases)


def test_the_default_kernels_are_both_gpus_files() -> None:
    """The stored H200 and H100 single-kernel files are both predicted by default, each with its
    GPU's cost model."""
    from moesim.validate.report import KERNELS_FILES

    report = build_report([], [p for p in KERNELS_FILES if p.is_file()])
    kernels = [s for s in report.sources if s.kind == "kernels"]
    assert sorted(s.gpu for s in kernels) == ["H100", "H200"] and all(s.predicted > 200 for s in kernels)
    assert {c.gpu for c in report.cases} == {"H100", "H200"}


def test_the_held_out_shapes_are_off_every_calibration_grid() -> None:
    """``validate_workloads --shape-set holdout``: no GEMM is a point of a profile's GEMM grid and
    no attention shape a point of its attention grid (on the H100 and H200 profiles)."""
    pytest.importorskip("torch")
    from moesim.calibrate.validate_workloads import HOLDOUT, shape_lists

    assert shape_lists("cuda", "holdout") == (HOLDOUT["gemm"], HOLDOUT["swiglu"], HOLDOUT["attention"], HOLDOUT["memory"])
    with pytest.raises(ValueError, match="shape set"):
        shape_lists("cuda", "mine")
    for name in ("h100_sxm", "h200_sxm"):
        rows = json.loads((ROOT / "moesim" / "profiles" / f"{name}.json").read_text())["samples"]
        gemms = {(r["m"], r["n"], r["k"]) for r in rows if r.get("op") == "gemm"}
        attn = {(r["batch"], r["heads"], r["seq"], r["head_dim"]) for r in rows if r.get("op") == "attention"}
        assert gemms and attn
        assert not gemms & set(HOLDOUT["gemm"]) and not attn & set(HOLDOUT["attention"])


# -- the command ---------------------------------------------------------------------------------------
def test_cli_renders_table_markdown_and_json(smoke_file: Path) -> None:
    from moesim.cli import app

    runner = CliRunner()
    base = ["validate", "--layers", str(smoke_file), "--gpu", "H200", "--no-kernels"]
    table = runner.invoke(app, base)
    assert table.exit_code == 0, table.output
    assert "Summary per workload class" in table.output and "torchtitan grouped" in table.output
    md = runner.invoke(app, base + ["--format", "markdown"])
    assert md.exit_code == 0 and "| class | pass | GPU | size |" in md.output
    js = runner.invoke(app, base + ["--format", "json"])
    doc = json.loads(js.output)
    assert doc["format"] == "moesim.validate/2" and len(doc["cases"]) == len(json.loads(smoke_file.read_text())["entries"])
    assert {s["size"] for s in doc["summary"]} <= {"main", "small"}


def test_importing_the_cli_loads_no_validate_module() -> None:
    code = "import sys, moesim.cli; print(sorted(m for m in sys.modules if m.startswith('moesim.validate')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "[]"


# -- bad input ---------------------------------------------------------------------------------------------
def _one_line_error(args: list[str]) -> str:
    from moesim.cli import app

    result = CliRunner().invoke(app, ["validate", "--no-kernels", *args])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    return lines[0]


def test_a_file_of_another_format_is_one_line_error(tmp_path: Path) -> None:
    other = ROOT / "data" / "validation" / "h200_measurements.json"
    assert FORMAT in _one_line_error(["--layers", str(other)])


def test_an_entry_missing_a_field_is_one_line_error(tmp_path: Path, smoke_doc: dict) -> None:
    doc = copy.deepcopy(smoke_doc)
    moe = next(i for i, e in enumerate(doc["entries"]) if e["workload"]["kind"] == "moe_block")
    del doc["entries"][moe]["workload"]["model"]["top_k"]
    line = _one_line_error(["--layers", str(_write(tmp_path, doc)), "--gpu", "H200"])
    assert f"entries[{moe}].workload.model.top_k: missing" in line
    doc = copy.deepcopy(smoke_doc)
    del doc["entries"][0]["measured"]["iterations"]
    assert "entries[0].measured.iterations" in _one_line_error(["--layers", str(_write(tmp_path, doc)), "--gpu", "H200"])


def test_a_cpu_smoke_file_needs_a_gpu_kind(smoke_file: Path) -> None:
    assert "--gpu" in _one_line_error(["--layers", str(smoke_file)])
    assert "unknown GPU" in _one_line_error(["--layers", str(smoke_file), "--gpu", "A100"])


def test_an_install_without_stored_data_reports_so(monkeypatch, tmp_path: Path) -> None:
    """Defaults that are missing (a wheel without data/validation) are stated, not an error; a
    file the user names and that is missing is an error."""
    import moesim.validate.cli as vcli
    import moesim.validate.report as vreport

    monkeypatch.setattr(vcli, "KERNELS_FILES", (tmp_path / "absent.json",))
    monkeypatch.setattr(vreport, "LAYERS_DIR", tmp_path / "layers")
    report, text = vcli.validate()
    assert not report.cases and "kernels not validated" in text and "layers and blocks are not validated" in text
    with pytest.raises(ConfigError, match="no measurement file"):
        vcli.validate(kernels=tmp_path / "absent.json")


def test_a_timed_host_issue_gets_its_own_comparison_against_the_simulated_host_thread(
        tmp_path: Path, smoke_doc: dict) -> None:
    from moesim.engine.sim import HOST_STREAM
    from moesim.experiment.block import simulate_block
    from moesim.validate.layers import entry_scenario, predict_entry_cases

    doc = json.loads(json.dumps(smoke_doc))
    entry = next(e for e in doc["entries"] if e["workload"].get("experts") == "grouped"
                 and e["workload"].get("token_movement") == "torchtitan")
    entry["measured"]["host_steady_ns"] = 123_456.0
    layer_file = load_layer_file(_write(tmp_path, dict(doc, entries=[entry])), gpu="H100")
    main, host = predict_entry_cases(layer_file.entries[0], "H100")
    assert main.workload_class == "torchtitan grouped" and host.workload_class == "host issue: torchtitan grouped"
    assert "steady state" in host.notes
    assert host.measured_ns == 123_456.0
    rec = simulate_block(entry_scenario(layer_file.entries[0], "H100")).recorder
    issue = sum(s.end_ns - s.start_ns for s in rec.spans if s.stream == HOST_STREAM and s.name.startswith("issue "))
    assert host.predicted_ns == pytest.approx(issue / layer_file.entries[0].iterations) and host.predicted_ns > 0
    older = dict(entry, measured={k: v for k, v in entry["measured"].items() if k != "host_steady_ns"})
    older["measured"]["host_issue_ns"] = 150_000.0   # files before 2026-12-06c: the first iteration after a sync
    _, host_old = predict_entry_cases(load_layer_file(_write(tmp_path, dict(doc, entries=[older]), "old.json"),
                                                      gpu="H100").entries[0], "H100")
    assert host_old.workload_class == "host issue after a sync: torchtitan grouped" and host_old.measured_ns == 150_000.0
    from moesim.lowering.host import host_pricing
    from moesim.lowering.resolve import resolve_cost_model
    after = host_pricing(resolve_cost_model("auto", "H100")).after_sync_extra(0.0, host.predicted_ns)
    assert after > 0 and host_old.predicted_ns == pytest.approx(host.predicted_ns + after)   # the after-sync curve
    entry["measured"]["host_steady_ns"] = -1
    with pytest.raises(ConfigError, match="host_steady_ns"):
        load_layer_file(_write(tmp_path, dict(doc, entries=[entry]), "bad.json"), gpu="H100")


def test_a_bad_kernels_file_is_refused_before_any_layer_is_predicted(monkeypatch, tmp_path: Path,
                                                                      smoke_file: Path) -> None:
    import moesim.validate.layers as layers_mod

    def no_prediction(*_a, **_k):
        raise AssertionError("a layer was predicted before the kernels file was checked")
    monkeypatch.setattr(layers_mod, "predict_entry_cases", no_prediction)
    bad = tmp_path / "kernels.json"
    bad.write_text("not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        build_report([smoke_file], bad, gpu="H200")


def test_a_dense_entry_that_forced_flash_is_priced_as_that_backend(smoke_file: Path) -> None:
    """A harness record saying SDPA was held to FlashAttention-2 becomes model.attention_backend='flash'
    (its own kernel rows), and the case's notes say so."""
    from moesim.validate.layers import unmodelled

    dense = next(e for e in load_layer_file(smoke_file, gpu="H100").entries if e.kind == "dense_layer")
    assert model_spec(dense).attention_backend == "default"
    forced = dataclasses.replace(dense, workload={**dense.workload, "attention": {
        **(dense.workload.get("attention") or {}), "backend": "flash (sdpa_kernel FLASH_ATTENTION on cuda)"}})
    assert model_spec(forced).attention_backend == "flash"
    assert "attention_backend='flash'" in unmodelled(forced)
