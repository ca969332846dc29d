"""The YAML loader: overrides, ``extends`` and one error test per kind of bad input.

Every error must name the file, the field and a fix (ConfigError message: ``FILE: FIELD: problem
(fix: ...)``).
"""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from moesim.errors import ConfigError
from moesim.topology import build_topology, load_topology

VALID = {
    "name": "tiny",
    "gpu": {"kind": "H100"},
    "nodes": 1,
    "gpus_per_node": 4,
    "intra": {"type": "nvswitch", "bandwidth_gbps": 450, "latency_ns": 300},
    "scale_out": {"type": "rail_fat_tree", "kind": "ib", "nic_gbps": 50, "latency_ns": 450,
                  "pcie_gbps": 64, "pcie_latency_ns": 950, "spines": 2},
}


def write(tmp_path: Path, spec: dict, name: str = "tiny.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(spec))
    return path


def variant(**changes) -> dict:
    """VALID with dotted-key changes; a value of ... deletes the key."""
    spec = copy.deepcopy(VALID)
    for key, value in changes.items():
        *parents, leaf = key.split("__")
        target = spec
        for p in parents:
            target = target[p]
        if value is ...:
            del target[leaf]
        else:
            target[leaf] = value
    return spec


def load_error(tmp_path: Path, spec: dict, **overrides) -> str:
    path = write(tmp_path, spec)
    with pytest.raises(ConfigError) as info:
        load_topology(path, **overrides)
    message = str(info.value)
    assert str(path) in message, message  # names the file
    assert "fix:" in message, message  # and says how to fix it
    return message


def test_valid_file_loads_and_overrides_apply(tmp_path):
    path = write(tmp_path, VALID)
    assert load_topology(path).num_gpus == 4
    big = load_topology(path, nodes=3, **{"scale_out.spines": 3})
    assert (big.num_gpus, big.num_paths(0, 5)) == (12, 3)
    assert "nodes=3" in big.meta["source"]
    assert build_topology(VALID, "inline").meta["spec"]["intra"] == VALID["intra"]


def test_bare_name_and_missing_file():
    assert load_topology("dgx_h100").name == "dgx_h100"
    with pytest.raises(ConfigError, match="dgx_h100.*h800_cluster"):
        load_topology("dgx_h1OO")


def test_unknown_top_level_key_suggests_closest(tmp_path):
    spec = variant(gpus_per_nod=8)
    msg = load_error(tmp_path, spec)
    assert "gpus_per_nod: unknown key" in msg and "did you mean 'gpus_per_node'" in msg


def test_unknown_block_key_suggests_closest(tmp_path):
    msg = load_error(tmp_path, variant(intra__bandwith_gbps=450))
    assert "intra.bandwith_gbps: unknown key for intra type 'nvswitch'" in msg and "'bandwidth_gbps'" in msg
    msg = load_error(tmp_path, variant(scale_out__spine=4))
    assert "scale_out.spine:" in msg and "did you mean 'spines'" in msg


def test_missing_required_fields(tmp_path):
    assert "gpus_per_node: is missing" in load_error(tmp_path, variant(gpus_per_node=...))
    assert "intra.latency_ns: is missing" in load_error(tmp_path, variant(intra__latency_ns=...))
    assert "scale_out.nic_gbps: is missing" in load_error(tmp_path, variant(nodes=2, scale_out__nic_gbps=...))
    assert "intra.type: is missing" in load_error(tmp_path, variant(intra__type=...))
    assert "gpu.kind: is missing" in load_error(tmp_path, variant(gpu={}))


def test_non_positive_bandwidth_and_negative_latency(tmp_path):
    assert "intra.bandwidth_gbps: must be > 0, got 0" in load_error(tmp_path, variant(intra__bandwidth_gbps=0))
    assert "scale_out.nic_gbps: must be > 0" in load_error(tmp_path, variant(scale_out__nic_gbps=-50))
    assert "scale_out.latency_ns: must be >= 0, got -1" in load_error(tmp_path, variant(scale_out__latency_ns=-1))
    assert "nodes: must be >= 1" in load_error(tmp_path, variant(nodes=0))


def test_wrong_types(tmp_path):
    assert "gpus_per_node: must be a whole number, got str 'eight'" in load_error(tmp_path, variant(gpus_per_node="eight"))
    assert "nodes: must be a whole number, got float 2.5" in load_error(tmp_path, variant(nodes=2.5))
    assert "intra.bandwidth_gbps: must be a number, got bool" in load_error(tmp_path, variant(intra__bandwidth_gbps=True))
    assert "scale_out.nodes_per_leaf: must be a whole number or null" in load_error(tmp_path, variant(scale_out__nodes_per_leaf="all"))
    assert "gpu: must be a mapping" in load_error(tmp_path, variant(gpu="H100"))
    assert "intra: must be a mapping" in load_error(tmp_path, variant(intra="nvswitch"))


def test_unknown_types_list_the_valid_ones(tmp_path):
    msg = load_error(tmp_path, variant(intra__type="nvswich"))
    assert "intra.type: unknown type 'nvswich'" in msg and "nvswitch, nvlink_pairs, pcie_tree, nvl72" in msg
    msg = load_error(tmp_path, variant(scale_out__type="dragonfly"))
    assert "scale_out.type: unknown type 'dragonfly'" in msg and "rail_fat_tree" in msg and "single_switch" in msg
    msg = load_error(tmp_path, variant(scale_out__kind="roce"))
    assert "scale_out.kind: unknown name 'roce'" in msg and "ethernet, ib" in msg
    msg = load_error(tmp_path, variant(gpu__kind="H20"))
    assert "gpu.kind: unknown name 'H20'" in msg and "H800" in msg


def test_several_nodes_need_a_scale_out(tmp_path):
    msg = load_error(tmp_path, variant(nodes=2, scale_out=...))
    assert "scale_out: nodes is 2" in msg and "rail_fat_tree" in msg
    msg = load_error(tmp_path, variant(scale_out=...), nodes=4)
    assert "scale_out: nodes is 4" in msg and "nodes=4" in msg


def test_disconnected_gpus(tmp_path):
    spec = variant(intra={"type": "nvlink_pairs", "bandwidth_gbps": 450, "latency_ns": 600, "group_size": 2})
    msg = load_error(tmp_path, spec)
    assert "intra: GPU n0.gpu2 cannot reach GPU n0.gpu0" in msg
    # the same pairs become connected through the NICs once there are several hosts
    assert load_topology(write(tmp_path, spec), nodes=2).route(0, 2).kinds[1] == "ib"


def test_builder_constraints_name_the_block_field(tmp_path):
    pcie = {"type": "pcie_tree", "bandwidth_gbps": 64, "latency_ns": 500, "cpu_link_gbps": 64, "gpus_per_switch": 4, "sockets": 2}
    assert "intra.sockets: 2 sockets for only 1 PCIe switch" in load_error(tmp_path, variant(intra=pcie))
    nvl = {"type": "nvl72", "bandwidth_gbps": 900, "latency_ns": 300, "c2c_gbps": 450, "c2c_latency_ns": 300, "gpus_per_cpu": 3}
    assert "intra.gpus_per_cpu:" in load_error(tmp_path, variant(intra=nvl))


def test_duplicate_yaml_keys_are_refused(tmp_path):
    path = tmp_path / "dup.yaml"
    path.write_text("name: a\ngpu: {kind: H100}\ngpus_per_node: 8\ngpus_per_node: 4\n"
                    "intra: {type: nvswitch, bandwidth_gbps: 450, latency_ns: 300}\n")
    with pytest.raises(ConfigError, match=r"dup.yaml: gpus_per_node: appears twice in one block \(line 4\)"):
        load_topology(path)


def test_yaml_syntax_and_non_mapping_files(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml: yaml: cannot parse"):
        load_topology(bad)
    bad.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="bad.yaml: \\(file\\): expected a mapping"):
        load_topology(bad)


def test_bad_overrides(tmp_path):
    msg = load_error(tmp_path, VALID, node=2)
    assert "node: is not a topology field" in msg and "did you mean 'nodes'" in msg
    spec = variant(scale_out=...)
    assert "the file has no 'scale_out' block" in load_error(tmp_path, spec, **{"scale_out.spines": 2})


def test_extends_merges_blocks_and_detects_cycles(tmp_path):
    write(tmp_path, VALID, "base.yaml")
    write(tmp_path, {"extends": "base.yaml", "name": "child", "nodes": 2, "scale_out": {"spines": 3}}, "child.yaml")
    child = load_topology(tmp_path / "child.yaml")
    assert (child.name, child.num_gpus, child.num_paths(0, 5)) == ("child", 8, 3)
    assert "extends" in child.meta["source"]
    write(tmp_path, {"extends": "b.yaml", "name": "a"}, "a.yaml")
    write(tmp_path, {"extends": "a.yaml", "name": "b"}, "b.yaml")
    with pytest.raises(ConfigError, match="extends: .*a cycle"):
        load_topology(tmp_path / "a.yaml")


def test_extends_with_a_new_block_type_replaces_the_block(tmp_path):
    write(tmp_path, VALID, "base.yaml")
    write(tmp_path, {"extends": "base.yaml", "intra": {"type": "nvlink_pairs", "bandwidth_gbps": 300, "latency_ns": 600}}, "c.yaml")
    t = load_topology(tmp_path / "c.yaml")
    assert t.route(0, 1).kinds == ("nvlink",) and t.route(0, 1).bottleneck_gbps == 100.0
