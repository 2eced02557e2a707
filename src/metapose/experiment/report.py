"""The experiment's tables: the layout of the paper's Table 1 with 95 % confidence intervals.

For every target and K: each arm (as-is, supervised, meta-learned, from scratch) and the paired
differences of the meta-learned arm against the others (paired by seed, i.e. by the same K
shots), each as mean ± 95 % CI over seeds. Unadapted models appear as K = 0. With unlabelled
images (``ExperimentConfig.semi``) each arm's twin ``<arm>+<method>`` follows it, and the
differences ask the same question with unlabelled data (``meta+M - as-is+M``,
``meta+M - supervised+M``) and what the unlabelled data adds to each arm (``meta+M - meta``, ...);
twins adapted on unlabelled people alone appear as K = 0 too.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args

from metapose.config import PCK_ALPHA
from metapose.config.experiment import semi_twin, twin_arm
from metapose.config.training import SemiMethod
from metapose.experiment.results import RunResult, select
from metapose.experiment.statistics import Estimate, mean_ci
from metapose.files import write_text_atomic

TABLE_METRICS = ("ap", "ap50", "ap75", "ar", "ar50", "ar75")
METRIC_TITLES = {
    "ap": "AP",
    "ap50": "AP50",
    "ap75": "AP75",
    "ar": "AR",
    "ar50": "AR50",
    "ar75": "AR75",
    "pck": f"PCK@{PCK_ALPHA:g}",
}
ARM_TITLES = {"as-is": "As-is", "supervised": "Supervised", "meta": "Meta-learned"}
SEMI_METHODS: tuple[str, ...] = get_args(SemiMethod)
SEMI_TITLES = {"adabn": "AdaBN", "mean_teacher": "mean teacher", "distill": "distillation"}


def _with_twins(arms: dict[str, str]) -> dict[str, str]:
    """Each arm's title followed by its semi-supervised twins' (``meta``, ``meta+adabn``, ...)."""
    titles = {}
    for arm, title in arms.items():
        titles[arm] = title
        for method in SEMI_METHODS:
            titles[semi_twin(arm, method)] = f"{title} + {SEMI_TITLES.get(method, method)}"
    return titles


MODEL_TITLES = {"scratch": "From scratch", **_with_twins(ARM_TITLES)}
MODEL_ORDER = tuple(MODEL_TITLES)
# Seed-paired differences reported for every (target, K): (minuend, subtrahend). With unlabelled
# images by method M: does meta-learning help then too, and what do the unlabelled images add?
DIFFERENCES = (
    ("meta", "as-is"),
    ("meta", "supervised"),
    *(
        pair
        for m in SEMI_METHODS
        for pair in (
            (semi_twin("meta", m), semi_twin("as-is", m)),
            (semi_twin("meta", m), semi_twin("supervised", m)),
            (semi_twin("meta", m), "meta"),
            (semi_twin("as-is", m), "as-is"),
            (semi_twin("supervised", m), "supervised"),
        )
    ),
)


def difference_name(minuend: str, subtrahend: str) -> str:
    return f"{minuend} - {subtrahend}"


def is_difference(model: str) -> bool:
    return " - " in model


def _where(row: SummaryRow) -> str:
    """``thermal K=16``; at K = 0 ``thermal (not adapted)``, unless a twin (adapted on unlabelled
    people alone) is in the row."""
    models = row.model.split(" - ")
    if row.shots or any(twin_arm(m)[1] is not None for m in models):
        return f"{row.target} K={row.shots}"
    return f"{row.target} (not adapted)"


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
        dataset = _where(r)
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


def _outcome(est: Estimate) -> str:
    """``win``, ``loss`` or ``tie`` of a difference at 95 %, ``single`` without an interval."""
    if est.n < 2 or not math.isfinite(est.half_width):
        return "single"
    if est.mean - est.half_width > 0:
        return "win"
    if est.mean + est.half_width < 0:
        return "loss"
    return "tie"


def verdicts(rows: Sequence[SummaryRow], metric: str = "ap") -> list[str]:
    """Plain-language reading of each difference row: win, loss or tie at 95 %."""
    out = []
    for r in rows:
        if not is_difference(r.model) or metric not in r.metrics:
            continue
        minuend, subtrahend = r.model.split(" - ")
        est = r.metrics[metric]
        where = _where(r)
        word = {
            "single": "single seed, no interval",
            "win": f"{minuend} wins",
            "loss": f"{subtrahend} wins",
            "tie": "tie (the 95 % interval contains 0)",
        }[_outcome(est)]
        out.append(f"{where}: {METRIC_TITLES[metric]} {r.model} {est.format()} -> {word}")
    return out


_VERBS = {"win": "beats", "loss": "loses to", "tie": "ties", "single": "has one seed against"}


def headline(rows: Sequence[SummaryRow], metric: str = "ap") -> str | None:
    """One line summarising the seed-paired differences of the adapted arms (K > 0).

    E.g. ``Meta-learned init (AP, seed-paired 95 % CI): ties as-is at every K; beats supervised
    at K=16, ties it at K=32.`` Targets are named when there are several. None when no
    difference was computed (a single arm, or no meta arm).
    """
    diffs = [r for r in rows if is_difference(r.model) and r.shots > 0 and metric in r.metrics]
    if not diffs:
        return None
    several_targets = len({r.target for r in diffs}) > 1
    minuends = list(dict.fromkeys(r.model.split(" - ")[0] for r in diffs))
    parts = []
    for minuend in minuends:
        clauses = []
        mine_all = (r.model for r in diffs if r.model.split(" - ")[0] == minuend)
        for difference in dict.fromkeys(mine_all):
            subtrahend = difference.split(" - ")[1]
            mine = [r for r in diffs if r.model == difference]
            by_outcome: dict[str, list[SummaryRow]] = {}
            for r in mine:
                by_outcome.setdefault(_outcome(r.metrics[metric]), []).append(r)
            segments = []
            for i, (outcome, group) in enumerate(by_outcome.items()):
                if len(by_outcome) == 1:
                    where = "at every K" + (" on every target" if several_targets else "")
                else:
                    where = "at " + _places(group, several_targets)
                segments.append(f"{_VERBS[outcome]} {subtrahend if i == 0 else 'it'} {where}")
            clauses.append(", ".join(segments))
        title = MODEL_TITLES.get(minuend, minuend)
        title = title[0].upper() + title[1:]
        n = max(r.metrics[metric].n for r in diffs)
        parts.append(
            f"{title} init ({METRIC_TITLES[metric]}, seed-paired 95 % CI over {n} seeds): "
            + "; ".join(clauses)
            + "."
        )
    return " ".join(parts)


def _places(rows: Sequence[SummaryRow], name_targets: bool) -> str:
    """``K=4, 16`` or, with several targets, ``thermal K=4, 16 and unique K=32``."""
    by_target: dict[str, list[int]] = {}
    for r in rows:
        by_target.setdefault(r.target, []).append(r.shots)
    places = [
        (f"{target} " if name_targets else "") + "K=" + ", ".join(map(str, shots))
        for target, shots in by_target.items()
    ]
    return " and ".join(places)


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
            outcome = _outcome(r.metrics["ap"])
            css = f' class="{outcome}"' if outcome in ("win", "loss") else ""
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
    summary: str | None = None,
) -> Path:
    """One self-contained page: a one-line verdict (``summary``, by default :func:`headline`),
    the table, verdicts, figures (relative links), config, provenance."""
    summary = headline(rows) if summary is None else summary
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
{f'<p class="verdict"><strong>{html.escape(summary)}</strong></p>' if summary else ""}
<p>Mean ± 95 % confidence interval over seeds (Student t). "a - b" rows are paired
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
    write_text_atomic(path, page)
    return path
