"""``moesim topo`` sub-app: show, path and draw, and exit code 2 with a message on bad input."""
from __future__ import annotations

import json

from typer.testing import CliRunner

from moesim.topology.cli import app

runner = CliRunner()


def test_show_prints_the_summary():
    result = runner.invoke(app, ["show", "dgx_h100", "--nodes", "2"])
    assert result.exit_code == 0, result.output
    for text in ("dgx_h100", "num_hosts", "nvswitch 450, pcie 64, ib 50", "bisection", "400", "pcie > ib > ib > pcie"):
        assert text in result.output


def test_show_json_is_describe():
    result = runner.invoke(app, ["show", "h200x2_nvlink", "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert (info["num_gpus"], info["bisection_gbps"], info["gpu_bandwidth_gbps"]) == (2, 450.0, {"nvlink": 450.0})


def test_path_by_rank_and_by_name():
    result = runner.invoke(app, ["path", "dgx_h100_4node", "0", "n1.gpu1", "--key", "2"])
    assert result.exit_code == 0, result.output
    assert "spine2" in result.output and "bottleneck 50 GB/s, latency 3700 ns, 4 equal-cost path(s)" in result.output
    same = runner.invoke(app, ["path", "dgx_h100", "n0.gpu0", "3"])
    assert "nvswitch" in same.output and "bottleneck 450 GB/s, latency 600 ns" in same.output


def test_draw_writes_a_png(tmp_path):
    out = tmp_path / "sub" / "fabric.png"
    result = runner.invoke(app, ["draw", "dgx_h100", "-o", str(out), "--nodes", "2"])
    assert result.exit_code == 0, result.output
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_draw_refuses_a_directory_or_a_name_without_an_image_suffix(tmp_path):
    """matplotlib would write 'name.png' beside either while the CLI printed the path given."""
    for target, needle in ((tmp_path, "is a directory"), (tmp_path / "noext", "has no image suffix")):
        result = runner.invoke(app, ["draw", "dgx_h100", "-o", str(target)])
        assert result.exit_code == 2 and needle in result.output.replace("\n", "")
    assert list(tmp_path.iterdir()) == []


def test_bad_file_exits_2_with_the_message(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ngpu: {kind: H100}\ngpus_per_node: 8\nintra: {type: nvswitch, bandwidth_gbps: -1, latency_ns: 1}\n")
    for args in (["show", str(bad)], ["path", str(bad), "0", "1"], ["draw", str(bad), "-o", str(tmp_path / "x.png")]):
        result = runner.invoke(app, args)
        assert result.exit_code == 2
        assert "bad.yaml: intra.bandwidth_gbps: must be > 0" in result.output
        assert "Traceback" not in result.output
    assert not (tmp_path / "x.png").exists()


def test_unknown_name_and_bad_rank_exit_2():
    result = runner.invoke(app, ["show", "dgx_h1000"])
    assert result.exit_code == 2 and "no file or shipped topology named 'dgx_h1000'" in result.output
    result = runner.invoke(app, ["path", "dgx_h100", "0", "8"])
    assert result.exit_code == 2 and "rank 8 out of range" in result.output
    result = runner.invoke(app, ["show", "hgx_h100_pcie", "--nodes", "2"])
    assert result.exit_code == 2 and "scale_out: nodes is 2" in result.output
