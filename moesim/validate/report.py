"""One validation report: what was predicted, from which files, and its renderings.

:func:`build_report` runs the layer-workloads files (:mod:`moesim.validate.layers`) and the
single-kernel file (:mod:`moesim.validate.kernels`) through the product path and collects the
per-case :class:`~moesim.validate.compare.Comparison` records, the entries refused (with why) and
what was left out. :func:`to_markdown` and :func:`to_json` render it; the console table is
:mod:`moesim.validate.cli`'s.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from moesim.errors import ConfigError
from moesim.shipped import data_path
from moesim.validate.compare import MEDIAN_TARGET, OVER, ClassSummary, Comparison, summarize

DATA_DIR = data_path("data", "validation")  # installed with the package, or the checkout's
LAYERS_DIR = DATA_DIR / "layers"
KERNELS_FILES = (DATA_DIR / "h200_measurements.json", DATA_DIR / "h100_measurements.json")


@dataclass(frozen=True)
class Source:
    """One input file: its path, GPU and how many of its entries were predicted."""

    path: str
    kind: str      # "layers" or "kernels"
    gpu: str
    predicted: int
    note: str = ""


@dataclass(frozen=True)
class Report:
    """Everything one ``moesim validate`` run found."""

    cases: tuple[Comparison, ...]
    sources: tuple[Source, ...]
    refused: tuple[tuple[str, str], ...] = ()          # (case id, reason)
    left_out: tuple[tuple[str, int], ...] = ()         # (multi-GPU kind, count)
    notes: tuple[str, ...] = ()
    command: str = "moesim validate"
    summaries: tuple[ClassSummary, ...] = field(default=())

    def summary(self) -> list[ClassSummary]:
        return list(self.summaries) or summarize(self.cases)


def default_layer_files() -> list[Path]:
    """The stored layer-workloads files (``data/validation/layers/*.json``), sorted."""
    return sorted(LAYERS_DIR.glob("*.json")) if LAYERS_DIR.is_dir() else []


Progress = Callable[[str, int, int], None]   # (case id, cases done, cases in the file)


def build_report(layer_files: Sequence[Path], kernels_files: "Sequence[Path] | Path | None", gpu: "str | None" = None,
                 cost_model: str = "auto", command: str = "moesim validate",
                 progress: Optional[Progress] = None) -> Report:
    """Predict every entry of ``layer_files`` and the single kernels of each of ``kernels_files``
    (None or empty: none); ``progress`` is told each layer case before it runs."""
    cases: list[Comparison] = []
    sources: list[Source] = []
    refused: list[tuple[str, str]] = []
    notes: list[str] = []
    from moesim.validate.layers import load_layer_file

    if not layer_files:
        notes.append(f"no layer-workloads files in {_short(LAYERS_DIR)} yet: layers and blocks are not validated")
    if isinstance(kernels_files, (str, Path)):
        kernels_files = [Path(kernels_files)]
    from moesim.validate.measurements import load_measurements

    # every input is read and checked before the first prediction
    measured = [load_measurements(path) for path in (kernels_files or ())]
    loaded = [load_layer_file(path, gpu) for path in layer_files]
    for layer_file in loaded:
        got, bad, source = _layer_cases(layer_file, cost_model, progress)
        cases += got
        refused += bad
        sources.append(source)
    from moesim.validate.kernels import gpu_of, left_out, predict_kernels

    left: dict[str, int] = {}
    for measurements in measured:
        got = predict_kernels(measurements, cost_model)
        cases += got
        for kind, n in left_out(measurements).items():
            left[kind] = left.get(kind, 0) + n
        sources.append(Source(_short(measurements.path), "kernels", gpu_of(measurements), len(got),
                              "single-GPU kernels, the cost model alone; each case's thermal state and clock ignored"))
    if left:
        notes.append(f"left out: {', '.join(f'{n} {k}' for k, n in left.items())} multi-GPU entries "
                     "(collectives, pipelines, expert-parallel MoE): they belong to the multi-GPU issue")
    return Report(tuple(cases), tuple(sources), tuple(refused), tuple(left.items()), tuple(notes), command)


def _layer_cases(layer_file: Any, cost_model: str, progress: Optional[Progress] = None
                 ) -> tuple[list[Comparison], list[tuple[str, str]], Source]:
    """One loaded file's comparisons; an entry the product cannot describe (its routing does not
    reproduce, a shape it refuses) is refused with the reason, the rest still run."""
    from moesim.validate.layers import predict_entry_cases

    got: list[Comparison] = []
    bad: list[tuple[str, str]] = []
    for i, entry in enumerate(layer_file.entries):
        if progress is not None:
            progress(entry.case_id, i, len(layer_file.entries))
        try:
            got.extend(predict_entry_cases(entry, layer_file.gpu, cost_model))
        except ConfigError as err:
            bad.append((entry.case_id, str(err)))
    note = f"measured on {layer_file.device or 'an unnamed device'}"
    if layer_file.gpu not in layer_file.device.upper():
        note += f", predicted as {layer_file.gpu}: a smoke test of the path, not a validation"
    if layer_file.skipped:
        note += f"; {layer_file.skipped} entries the harness skipped"
    return got, bad, Source(_short(layer_file.path), "layers", layer_file.gpu, len(got), note)


# -- renderings ----------------------------------------------------------------------------------
def pct(x: float) -> str:
    return f"{100.0 * x:+.1f}%"


def time_text(ns: float) -> str:
    return f"{ns / 1e6:.2f} ms" if ns >= 1e6 else f"{ns / 1e3:.1f} us"


def size_text(s: ClassSummary) -> str:
    """``>= 1 ms`` / ``< 1 ms (flagged)`` for layers, ``>= 50 us`` / ``< 50 us`` for kernels."""
    bound = "50 us" if s.workload_class.startswith("kernel") else "1 ms"
    return f">= {bound}" if s.size == "main" else f"< {bound} (flagged)"


def summary_rows(report: Report) -> list[list[str]]:
    """The summary table's rows (header first)."""
    rows = [["class", "pass", "GPU", "size", "cases", "median abs error", "max abs error", f"over {OVER:.0%}",
             "in host band", "worst case"]]
    for s in report.summary():
        rows.append([s.workload_class, s.passes, s.gpu, size_text(s), str(s.cases), f"{100 * s.median_abs:.1f}%",
                     f"{100 * s.max_abs:.1f}%", str(s.over), f"{s.in_band}/{s.banded}" if s.banded else "",
                     s.worst_case])
    return rows


def case_rows(cases: Sequence[Comparison]) -> list[list[str]]:
    rows = [["case", "class", "pass", "GPU", "measured", "predicted", "error", "small", "notes"]]
    for c in cases:
        rows.append([c.case_id, c.workload_class, c.passes, c.gpu, time_text(c.measured_ns), time_text(c.predicted_ns),
                     pct(c.error), "yes" if c.small else "", _notes(c)])
    return rows


def _notes(c: Comparison) -> str:
    fallback = f"fallback: {', '.join(c.fallbacks)}" if c.fallbacks else ""
    band = f"host band {time_text(c.band[0])} - {time_text(c.band[1])}" if c.band else ""
    return "; ".join(x for x in (c.notes, fallback, band) if x)


def footer_lines(report: Report) -> list[str]:
    lines = [f"source: {s.path} ({s.kind}, {s.gpu}, {s.predicted} predicted; {s.note})" for s in report.sources]
    models = sorted({(c.gpu, c.cost_model) for c in report.cases})
    lines += [f"cost model on {gpu}: {model}" for gpu, model in models]
    with_fallback = [c for c in report.cases if c.fallbacks]
    if with_fallback:
        classes = sorted({f for c in with_fallback for f in c.fallbacks})
        lines.append(f"{len(with_fallback)} of {len(report.cases)} cases have op classes priced without a measurement "
                     f"(roofline or stand-in, see each case's notes): {', '.join(classes)}")
    lines += [f"refused {case}: {why}" for case, why in report.refused]
    lines += list(report.notes)
    if any(c.band for c in report.cases):
        lines.append("in host band: cases measured between the predictions at the profile's fastest and slowest "
                     "host runs (Scenario.host_speed), where the prediction moves with the host CPU")
    lines.append(f"targets (issue 13): layers and blocks >= 1 ms median |error| <= {MEDIAN_TARGET:.0%}, none above "
                 f"{OVER:.0%}; single kernels >= 50 us within 10%")
    return lines


def _markdown_table(rows: list[list[str]], right: set[int]) -> list[str]:
    out = ["| " + " | ".join(rows[0]) + " |", "|" + "|".join("---:" if i in right else "---"
                                                           for i in range(len(rows[0]))) + "|"]
    return out + ["| " + " | ".join(r) + " |" for r in rows[1:]]


def to_markdown(report: Report) -> str:
    """Summary per class, the per-case table, then sources and notes."""
    lines = [f"Generated by `{report.command}`.", "", "### Summary per workload class", ""]
    lines += _markdown_table(summary_rows(report), {4, 5, 6, 7, 8})
    lines += ["", "### Cases", ""]
    lines += _markdown_table(case_rows(report.cases), {4, 5, 6})
    lines += ["", *[f"- {line}" for line in footer_lines(report)]]
    return "\n".join(lines) + "\n"


def to_json(report: Report) -> dict[str, Any]:
    return {"format": "moesim.validate/2", "command": report.command,
            "sources": [s.__dict__ for s in report.sources],
            "summary": [s.to_dict() for s in report.summary()],
            "cases": [c.to_dict() for c in report.cases],
            "refused": [{"id": i, "reason": r} for i, r in report.refused],
            "left_out": dict(report.left_out), "notes": list(report.notes)}


def _short(path: "str | Path") -> str:
    text = str(path)
    marker = "data/validation/"
    return text[text.index(marker):] if marker in text else text
