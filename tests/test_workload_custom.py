"""Custom-block models: derivation of backward GEMMs, TP splits, dict loading and errors."""
from __future__ import annotations

import pytest

from moesim.errors import ConfigError
from moesim.ops import Gemm, MemoryOp
from moesim.workload import custom, layers
from moesim.workload.common import CommOp

BLOCK = {
    "name": "mlp-block", "num_layers": 3, "seq_len": 16, "hidden": 8,
    "layer": {
        "gemms": [{"name": "up", "m": "tokens", "n": 32, "k": 8, "tp": "column"},
                  {"name": "down", "m": "tokens", "n": 8, "k": 32, "tp": "row"}],
        "elementwise": [{"name": "act", "bytes_per_token": 128, "tp_sharded": True}],
    },
}
SPEC = custom.custom_model_from_dict(BLOCK)


def test_forward_ops_resolve_tokens():
    fwd = custom.custom_forward_ops(SPEC, 0, 2)
    assert fwd == [Gemm(32, 32, 8, name="up"), Gemm(32, 8, 32, name="down"), MemoryOp("elementwise", 128 * 32, "act")]


def test_backward_is_derived_from_each_gemm():
    bwd = custom.custom_backward_input_ops(SPEC, 0, 2)
    assert bwd[0] == MemoryOp("elementwise", 1.5 * 128 * 32, "act.bwd")
    assert [(g.name, g.m, g.n, g.k) for g in bwd[1:]] == [("down.dgrad", 32, 32, 8), ("up.dgrad", 32, 8, 32)]
    w = custom.custom_backward_weight_ops(SPEC, 0, 2)
    assert [(g.name, g.m, g.n, g.k) for g in w] == [("down.wgrad", 32, 8, 32), ("up.wgrad", 8, 32, 32)]
    fwd_flops = sum(o.flops for o in custom.custom_forward_ops(SPEC, 0, 2))
    assert sum(o.flops for o in bwd if isinstance(o, Gemm)) == fwd_flops == sum(o.flops for o in w)


def test_tp_splits_and_collectives():
    prog = custom.custom_forward_program(SPEC, 0, 2, tp=4)
    assert [(o.name, o.n, o.k) for o in prog if isinstance(o, Gemm)] == [("up", 8, 8), ("down", 8, 8)]
    assert [o for o in prog if isinstance(o, CommOp)] == [CommOp("all_reduce", 2.0 * 32 * 8, "down.tp_all_reduce")]
    assert next(o for o in prog if isinstance(o, MemoryOp)).bytes == 128 * 32 / 4
    back = custom.custom_backward_input_program(SPEC, 0, 2, tp=4)
    assert [o.name for o in back if isinstance(o, CommOp)] == ["up.tp_all_reduce.bwd"]


def test_activation_x_activation_gemm_has_no_weight_gradient():
    spec = custom.custom_model_from_dict({**BLOCK, "layer": {"gemms": [
        {"name": "scores", "m": "tokens", "n": 16, "k": 8, "weight": False}]}})
    bwd = custom.custom_backward_input_ops(spec, 0, 1)
    assert [(g.name, g.m, g.n, g.k) for g in bwd] == [("scores.dgrad", 16, 8, 16), ("scores.dgrad_b", 8, 16, 16)]
    assert custom.custom_backward_weight_ops(spec, 0, 1) == []
    assert spec.total_params == 0


def test_per_layer_list_and_memory():
    second = {"gemms": [{"name": "x", "m": 4, "n": 8, "k": 8}]}
    base = {k: v for k, v in BLOCK.items() if k != "layer"}
    two = custom.custom_model_from_dict({**base, "num_layers": 2, "layers": [BLOCK["layer"], second]})
    assert custom.custom_forward_ops(two, 1, 1) == [Gemm(4, 8, 8, name="x")]
    assert SPEC.total_params == 3 * (8 * 32 + 32 * 8)
    assert layers.weight_bytes(SPEC, 0, tp=2) == 2 * (8 * 32 + 32 * 8) / 2
    assert layers.activation_bytes(SPEC, 0, 1) == 2 * 16 * (8 + 32)     # inputs of up and down
    assert layers.forward_program(SPEC, 2, 1) == custom.custom_forward_program(SPEC, 2, 1)


@pytest.mark.parametrize("mutate, field", [
    (lambda d: d["layer"]["gemms"][0].update(n=0), "layer.gemms[0].n"),
    (lambda d: d["layer"]["gemms"][1].update(m="rows"), "layer.gemms[1].m"),
    (lambda d: d["layer"]["gemms"][0].update(tp="diagonal"), "layer.gemms[0].tp"),
    (lambda d: d["layer"]["gemms"][0].update(colour="red"), "layer.gemms[0]"),
    (lambda d: d["layer"]["elementwise"][0].update(kind="magic"), "layer.elementwise[0].kind"),
    (lambda d: d.update(num_layers=0), "num_layers"),
    (lambda d: d.pop("hidden"), "hidden"),
    (lambda d: d.update(layers=[]), "layer"),
])
def test_errors_name_the_key(mutate, field):
    import copy

    data = copy.deepcopy(BLOCK)
    mutate(data)
    with pytest.raises(ConfigError) as err:
        custom.custom_model_from_dict(data)
    assert err.value.field == field


def test_direct_construction_validates_too():
    bad = custom.CustomLayer(gemms=(custom.CustomGemm("g", "tokens", 0, 8),))
    with pytest.raises(ConfigError) as err:
        custom.CustomModelSpec(name="x", num_layers=1, seq_len=4, hidden=8, layers=(bad,))
    assert err.value.field == "layers[0].gemms[0].n"


def test_tp_that_does_not_divide_names_the_gemm():
    with pytest.raises(ConfigError) as err:
        custom.custom_forward_ops(SPEC, 0, 1, tp=3)
    assert err.value.field == "layers[0].gemms[0].n"
