"""The experiment's tables: the layout of the paper's Table 1 with 95 % confidence intervals.

For every target and K: each arm (as-is, supervised, meta-learned, from scratch) and the paired
differences of the meta-learned arm against the others (paired by seed, i.e. by the same K
shots), each as mean ± 95 % CI over seeds. Unadapted models appear as K = 0.
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from metapose.results import RunResult, select
from metapose.stats import Estimate, mean_ci

TABLE_METRICS = ("ap", "ap50", "ap75", "ar", "ar50", "ar75")
METRIC_TITLES = {
    "ap": "AP",
    "ap50": "AP50",
    "ap75": "AP75",
    "ar": "AR",
    "ar50": "AR50",
    "ar75": "AR75",
    "pck": "PCK@0.2",
}
MODEL_TITLES = {
    "scratch": "From scratch",
    "as-is": "As-is",
    "supervised": "Supervised",
    "meta": "Meta-learned",
}
MODEL_ORDER = tuple(MODEL_TITLES)
# Seed-paired differences reported for every (target, K): (minuend, subtrahend).
DIFFERENCES = (("meta", "as-is"), ("meta", "supervised"))


def difference_name(minuend: str, subtrahend: str) -> str:
    return f"{minuend} - {subtrahend}"


def is_difference(model: str) -> bool:
    return " - " in model


@dataclass(frozen=True)
class SummaryRow:
    target: str
    shots: int
    model: str  # an arm's name, or a difference (see difference_name)
    metrics: dict[str, Estimate]

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "shots": self.shots,
            "model": self.model,
            "metrics": {k: v.as_dict() for k, v in self.metrics.items()},
        }


def _metric_names(results: Sequence[RunResult]) -> list[str]:
    present = set().union(*(r.metrics for r in results)) if results else set()
    return [m for m in (*TABLE_METRICS, "pck") if m in present]


def summarize(results: Sequence[RunResult]) -> list[SummaryRow]:
    """Mean ± CI per (target, K, model), and the seed-paired differences of DIFFERENCES."""
    metrics = _metric_names(results)
    rows: list[SummaryRow] = []
    targets = list(dict.fromkeys(r.target for r in results))
    for target in targets:
        for shots in sorted({r.shots for r in select(results, target=target)}):
            group = select(results, target=target, shots=shots)
            for model in MODEL_ORDER:
                runs = select(group, model=model)
                if runs:
                    rows.append(
                        SummaryRow(
                            target,
                            shots,
                            model,
                            {m: mean_ci([r.metrics[m] for r in runs]) for m in metrics},
                        )
                    )
            for minuend, subtrahend in DIFFERENCES:
                first = {r.seed: r for r in select(group, model=minuend)}
                second = {r.seed: r for r in select(group, model=subtrahend)}
                paired = sorted(set(first) & set(second))
                if paired:
                    rows.append(
                        SummaryRow(
                            target,
                            shots,
                            difference_name(minuend, subtrahend),
                            {
                                m: mean_ci(
                                    [first[s].metrics[m] - second[s].metrics[m] for s in paired]
                                )
                                for m in metrics
                            },
                        )
                    )
    return rows


def format_table(rows: Sequence[SummaryRow], metrics: Sequence[str] | None = None) -> str:
    """A markdown table: Dataset | Model | AP | AP50 | AP75 | AR | AR50 | AR75 (| PCK@0.2)."""
    if not rows:
        return "(no results)\n"
    names = (
        list(metrics)
        if metrics is not None
        else [m for m in (*TABLE_METRICS, "pck") if any(m in r.metrics for r in rows)]
    )
    head = "| Dataset | Model | " + " | ".join(METRIC_TITLES[m] for m in names) + " |"
    lines = [head, "|" + "---|" * (len(names) + 2)]
    for r in rows:
        dataset = f"{r.target} K={r.shots}" if r.shots else f"{r.target} (not adapted)"
        model = MODEL_TITLES.get(r.model, r.model)
        cells = []
        for m in names:
            est = r.metrics.get(m)
            text = est.format() if est is not None else ""
            if is_difference(r.model) and est is not None:
                text = ("+" if est.mean >= 0 else "") + text
            cells.append(text)
        lines.append(f"| {dataset} | {model} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def verdicts(rows: Sequence[SummaryRow], metric: str = "ap") -> list[str]:
    """Plain-language reading of each difference row: win, loss or tie at 95 %."""
    out = []
    for r in rows:
        if not is_difference(r.model) or metric not in r.metrics:
            continue
        minuend, subtrahend = r.model.split(" - ")
        est = r.metrics[metric]
        where = f"{r.target} K={r.shots}" if r.shots else f"{r.target} (not adapted)"
        if est.n < 2:
            word = "single seed, no interval"
        elif est.mean - est.half_width > 0:
            word = f"{minuend} wins"
        elif est.mean + est.half_width < 0:
            word = f"{subtrahend} wins"
        else:
            word = "tie (the 95 % interval contains 0)"
        out.append(
            f"{where}: {METRIC_TITLES[metric]} {r.model} {est.format()} -> {word}"
        )
    return out


def table_html(rows: Sequence[SummaryRow]) -> str:
    """The table of :func:`format_table` as HTML; differences coloured by their verdict."""
    md = format_table(rows).strip().splitlines()
    out = ["<table>"]
    header = [c.strip() for c in md[0].strip("|").split("|")]
    out.append("<tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in header) + "</tr>")
    for r, line in zip(rows, md[2:], strict=True):
        cells = [c.strip() for c in line.strip("|").split("|")]
        css = ""
        if is_difference(r.model) and "ap" in r.metrics:
            est = r.metrics["ap"]
            if est.n >= 2 and est.mean - est.half_width > 0:
                css = ' class="win"'
            elif est.n >= 2 and est.mean + est.half_width < 0:
                css = ' class="loss"'
        out.append(f"<tr{css}>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


def write_index_html(
    path: str | Path,
    *,
    title: str,
    rows: Sequence[SummaryRow],
    figures: Sequence[tuple[str, str]],
    notes: Sequence[str],
    config_yaml: str,
    provenance: dict[str, Any],
) -> Path:
    """One self-contained page: table, verdicts, figures (relative links), config, provenance."""
    figs = "\n".join(
        f'<figure><img src="{html.escape(src)}" alt="{html.escape(caption)}">'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        for caption, src in figures
    )
    items = "\n".join(f"<li>{html.escape(n)}</li>" for n in notes)
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: sans-serif; max-width: 1100px; margin: 2em auto; }}
table {{ border-collapse: collapse; }} td, th {{ border: 1px solid #ccc; padding: 3px 8px; }}
tr.win td {{ background: #e3f6e3; }} tr.loss td {{ background: #fbe3e3; }}
figure {{ margin: 1.5em 0; }} img {{ max-width: 100%; }}
pre {{ background: #f5f5f5; padding: 1em; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
<p>Mean ± 95 % confidence interval over seeds (Student t). "meta - ..." rows are paired
by seed (same K shots for both models). OKS AP/AR computed by pycocotools on each target's test
split.</p>
{table_html(rows)}
<ul>{items}</ul>
{figs}
<h2>Configuration</h2><pre>{html.escape(config_yaml)}</pre>
<h2>Provenance</h2><pre>{html.escape(json.dumps(provenance, indent=2))}</pre>
</body></html>
"""
    path = Path(path)
    path.write_text(page)
    return path
