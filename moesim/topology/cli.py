"""``moesim topo``: inspect fabric files from the command line (show, path, draw).

A Typer sub-app; the top-level CLI mounts it as ``topo``. FILE is a path or a shipped name such
as ``dgx_h100``; ``--nodes`` overrides the number of hosts. Bad input prints the ConfigError
message (file, field, fix) and exits with code 2, never a traceback.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from moesim.errors import ConfigError
from moesim.topology.analysis import describe, route_summary
from moesim.topology.loader import load_topology
from moesim.topology.model import Topology

app = typer.Typer(help="Inspect GPU fabric topologies (topologies/*.yaml).", no_args_is_help=True)

FileArg = Annotated[str, typer.Argument(help="topology YAML path or shipped name, e.g. dgx_h100")]
NodesOpt = Annotated[Optional[int], typer.Option("--nodes", "-n", help="override the number of hosts (nodes)")]


def _console() -> Console:
    return Console(width=120)


def _fail(error: ConfigError) -> None:
    Console(stderr=True).print(f"error: {error}", markup=False, style="red", soft_wrap=True)
    raise typer.Exit(2)


def _load(file: str, nodes: int | None) -> Topology:
    try:
        return load_topology(file, nodes=nodes)
    except ConfigError as e:
        _fail(e)
        raise  # unreachable: _fail exits


@app.command()
def show(file: FileArg, nodes: NodesOpt = None,
         as_json: Annotated[bool, typer.Option("--json", help="print the summary as JSON")] = False) -> None:
    """GPUs, hosts, link kinds, per-GPU bandwidths, bisection bandwidth and sample routes."""
    info = describe(_load(file, nodes))
    console = _console()
    if as_json:
        console.print_json(json.dumps(info))
        return
    summary = Table(title=f"{info['name']}: {info['description']}", show_header=False)
    for key in ("source", "gpu_kind", "num_gpus", "num_hosts", "gpus_per_host", "intra", "scale_out"):
        summary.add_row(key, str(info[key]))
    summary.add_row("nodes by type", ", ".join(f"{k} {v}" for k, v in info["node_types"].items()))
    summary.add_row("directed links by kind", ", ".join(f"{k} {v}" for k, v in info["link_kinds"].items()))
    summary.add_row("per-GPU GB/s per direction", ", ".join(f"{k} {v:g}" for k, v in info["gpu_bandwidth_gbps"].items()))
    summary.add_row("bisection GB/s (first half -> second half)", f"{info['bisection_gbps']:g}")
    console.print(summary)
    if info["routes"]:
        routes = Table(title="sample routes from rank 0")
        for col in ("route", "dst", "link kinds", "latency ns", "bottleneck GB/s", "ECMP paths"):
            routes.add_column(col)
        for r in info["routes"]:
            routes.add_row(r["label"], r["dst"], " > ".join(r["kinds"]), str(r["latency_ns"]),
                           f"{r['bottleneck_gbps']:g}", str(r["num_paths"]))
        console.print(routes)


@app.command()
def path(file: FileArg,
         src: Annotated[str, typer.Argument(help="source GPU: rank or name such as n0.gpu3")],
         dst: Annotated[str, typer.Argument(help="destination GPU: rank or name")],
         nodes: NodesOpt = None,
         key: Annotated[int, typer.Option("--key", help="ECMP key: picks one of the equal-cost paths")] = 0) -> None:
    """The route from SRC to DST: hops with kinds, bottleneck bandwidth and latency."""
    topo = _load(file, nodes)
    try:
        s, d = topo.rank_of(src), topo.rank_of(dst)
    except ConfigError as e:
        _fail(e)
        return
    if s == d:
        _console().print(f"{topo.gpus[s]} to itself: no links crossed")
        return
    info = route_summary(topo, s, d, key=key)
    table = Table(title=f"{info['src']} (rank {s}) -> {info['dst']} (rank {d})")
    for col in ("hop", "from", "to", "kind", "GB/s per direction", "latency ns"):
        table.add_column(col)
    for i, h in enumerate(info["hops"], 1):
        table.add_row(str(i), h["from"], h["to"], h["kind"], f"{h['bandwidth_gbps']:g}", str(h["latency_ns"]))
    console = _console()
    console.print(table)
    console.print(f"bottleneck {info['bottleneck_gbps']:g} GB/s, latency {info['latency_ns']} ns, "
                  f"{info['num_paths']} equal-cost path(s); --key {key} picks path {key % info['num_paths']}")


@app.command()
def draw(file: FileArg,
         output: Annotated[Path, typer.Option("--output", "-o", help="image file to write (.png, .svg, .pdf)")]
         = Path("topology.png"),
         nodes: NodesOpt = None) -> None:
    """A layered picture: spines, leaves, NICs, GPUs, switches, CPUs in rows; links coloured by kind."""
    from moesim.topology.draw import draw_topology  # matplotlib: only when drawing

    if output.is_dir() or output.suffix.lower() not in DRAW_FORMATS:
        what = "is a directory" if output.is_dir() else f"has no image suffix ({', '.join(DRAW_FORMATS)})"
        _fail(ConfigError("--output", f"{str(output)!r} {what}",
                          f"give the image file to write, e.g. -o {output / 'topology.png' if output.is_dir() else output.with_suffix('.png')}"))
    _check_draw_size(file, nodes)
    topo = _load(file, nodes)
    if topo.num_gpus > MAX_DRAW_GPUS:  # 128k GPUs drew for minutes; a picture of 8,192 is already a blur
        _fail(ConfigError("--nodes", f"{topo.num_gpus:,} GPUs is more than the {MAX_DRAW_GPUS:,} 'topo draw' draws",
                          "draw fewer nodes (--nodes): hosts and rails repeat"))
    try:
        written = draw_topology(topo, output)
    except (OSError, ValueError) as err:  # a directory that does not exist, an image format matplotlib lacks
        _fail(ConfigError("--output", f"cannot write {str(output)!r} ({getattr(err, 'strerror', None) or err})",
                          "give a writable path ending in .png, .svg or .pdf"))
    _console().print(f"wrote {written}")


MAX_DRAW_GPUS = 8192
DRAW_FORMATS = (".png", ".svg", ".pdf")


def _check_draw_size(file: str, nodes: int | None) -> None:
    """Refuse from the file's fields, before building, a fabric too big to draw (building 128,000
    GPUs alone takes ~20 s)."""
    from moesim.topology.loader import read_spec, resolve_path

    try:
        spec, _source = read_spec(resolve_path(file))
    except ConfigError as e:
        _fail(e)
    per_node, hosts = spec.get("gpus_per_node"), nodes if nodes is not None else spec.get("nodes", 1)
    if isinstance(per_node, int) and isinstance(hosts, int) and per_node * hosts > MAX_DRAW_GPUS:
        _fail(ConfigError("--nodes", f"{hosts:,} hosts x {per_node} GPUs = {per_node * hosts:,} GPUs is more than the "
                          f"{MAX_DRAW_GPUS:,} 'topo draw' draws", "draw fewer nodes (--nodes): hosts and rails repeat"))
