"""Megatron-LM's argument table and parser, for :mod:`moesim.importers.megatron`: the option
strings of ``megatron/training/arguments.py`` (``megatron_flags.json``, dumped from Megatron-LM with
the ModelOpt arguments ``pretrain_gpt.py`` adds), an argparse parser built from them that raises
ConfigError, and the given values over Megatron's defaults (:class:`Args`)."""
from __future__ import annotations

import argparse
import difflib
import functools
import json
from pathlib import Path
from typing import Any

from moesim.errors import ConfigError

FLAGS_FILE = Path(__file__).with_name("megatron_flags.json")


@functools.cache
def option_table() -> dict[str, dict[str, Any]]:
    """Megatron's option strings -> their description (see the module docstring), with the ModelOpt
    arguments ``pretrain_gpt.py`` adds (:func:`modelopt_options`)."""
    doc = json.loads(FLAGS_FILE.read_text())
    return {**doc["options"], **doc["modelopt_options"]}


@functools.cache
def modelopt_options() -> frozenset[str]:
    """The option strings of ``megatron.post_training.arguments.add_modelopt_args``: ``pretrain_gpt.py``
    adds them (``extra_args_provider``) when nvidia-modelopt is installed, and Megatron's own examples
    pass them (examples/gptoss/02_train.sh: ``--export-force-local-attention --enable-gpt-oss``).
    They act only with ModelOpt enabled (a ModelOpt checkpoint in ``--load``, or
    ``--export-kd-teacher-load``), which moesim does not simulate: listed, never used."""
    return frozenset(json.loads(FLAGS_FILE.read_text())["modelopt_options"])


@functools.cache
def literal_flags() -> frozenset[str]:
    """Flags whose value Megatron converts (int, float, a choice): a shell expression there is an error."""
    return frozenset(f for f, o in option_table().items()
                     if o["kind"] == "value" and (o["type"] in ("int", "float") or o.get("choices")))


def flag_of(dest: str) -> str:
    """The option string of ``dest`` (the first in Megatron's table)."""
    return next((f for f, o in option_table().items() if o["dest"] == dest), "--" + dest.replace("_", "-"))


def given_flags(tokens: list[str]) -> list[str]:
    """The option strings the user wrote, in order, without duplicates."""
    seen: list[str] = []
    for t in tokens:
        if t.startswith("--"):
            flag = t.split("=", 1)[0]
            if flag not in seen:
                seen.append(flag)
    return seen


class _RaisingParser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise ConfigError("--megatron-args", message, "check the flag against Megatron-LM's arguments")


@functools.cache
def _parser() -> argparse.ArgumentParser:
    p = _RaisingParser(prog="megatron", add_help=False, allow_abbrev=False)
    for flag, o in option_table().items():
        kw: dict[str, Any] = {"dest": o["dest"], "default": argparse.SUPPRESS}
        if o["kind"] == "true" or (o["kind"] == "boolopt" and not flag.startswith("--no-")):
            kw["action"] = "store_true"
        elif o["kind"] in ("false", "boolopt"):
            kw["action"] = "store_false"
        else:
            kw["type"] = {"int": int, "float": float}.get(o["type"], str)
            if o.get("nargs"):
                kw["nargs"] = o["nargs"]
            if o.get("choices") and o["type"] == "str" and o["dest"] != "attention_backend":
                kw["choices"] = o["choices"]
        p.add_argument(flag, **kw)
    return p


def parse_args(tokens: list[str]) -> argparse.Namespace:
    ns, rest = _parser().parse_known_args(tokens)
    unknown = [t.split("=", 1)[0] for t in rest if t.startswith("-")]
    if unknown:
        hints = [f"{u} (did you mean {m[0]}?)" if (m := difflib.get_close_matches(u, option_table(), 1)) else u
                 for u in unknown]
        raise ConfigError("--megatron-args", f"not Megatron-LM argument(s): {', '.join(hints)}",
                          "use the names of megatron/training/arguments.py")
    stray = [t for t in rest if not t.startswith("-")]
    if stray:
        raise ConfigError("--megatron-args", f"value(s) without a flag: {' '.join(stray[:5])}",
                          "every value follows its --flag")
    return ns


class Args:
    """Given values, else Megatron's defaults."""

    def __init__(self, ns: argparse.Namespace, notes: list[str]) -> None:
        self.given = vars(ns)
        self.defaults = {o["dest"]: o.get("default") for o in option_table().values() if "default" in o}
        if self.given.get("recompute_activations"):   # validate_args: --recompute-activations is selective
            before = self.given.get("recompute_granularity")
            self.given["recompute_granularity"] = "selective"
            notes.append("--recompute-activations: --recompute-granularity selective, as Megatron's validate_args "
                         "sets it"
                         + (f" (overriding --recompute-granularity {before}, as Megatron does)"
                            if before not in (None, "selective") else ""))

    def get(self, dest: str) -> Any:
        return self.given[dest] if dest in self.given else self.defaults.get(dest)

    def has(self, dest: str) -> bool:
        return dest in self.given


# Integer flags that must be >= 1 when given (0 is no size: Megatron fails on it, or asserts);
# ``--num-experts 0`` is Megatron's "no experts" (validate_args turns it into None): >= 0.
_POSITIVE = ("micro_batch_size", "global_batch_size", "seq_length", "num_layers", "hidden_size", "ffn_hidden_size",
             "num_attention_heads", "num_query_groups", "kv_channels", "vocab_size", "tensor_model_parallel_size",
             "pipeline_model_parallel_size", "expert_model_parallel_size", "expert_tensor_parallel_size",
             "context_parallel_size", "num_layers_per_virtual_pipeline_stage", "num_virtual_stages_per_pipeline_rank",
             "moe_router_topk", "moe_ffn_hidden_size", "moe_shared_expert_intermediate_size", "moe_router_num_groups",
             "moe_router_group_topk", "padded_vocab_size", "q_lora_rank", "kv_lora_rank", "qk_head_dim", "v_head_dim",
             "moe_deepep_num_sms")
_NON_NEGATIVE = ("num_experts", "mtp_num_layers", "qk_pos_emb_head_dim")


def check_values(a: Args) -> None:
    """Sizes of 0 (or below) are errors naming the flag, never replaced by a default."""
    for dest in _POSITIVE + _NON_NEGATIVE:
        value = a.given.get(dest)
        if value is not None and value < (1 if dest in _POSITIVE else 0):
            raise ConfigError(flag_of(dest), f"must be >= {1 if dest in _POSITIVE else 0}, got {value}",
                              f"give a positive {flag_of(dest)}, or leave the flag out for Megatron's default")
