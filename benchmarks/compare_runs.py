"""Compare two finished experiments job by job: did changing the configuration help?

For every (target, model, K, seed) that both runs scored, the metric of run B minus that of run A;
per (target, model, K) the mean difference with its 95 % t-interval over the seeds they share.
Seeds pick the same shots in both runs when the target's pool is the same, so the difference is
seed-paired (the script says so where the recorded shots differ). Usage::

    python benchmarks/compare_runs.py runs/lspet_cpu runs/lspet_cpu_rgb_source [--metric pck]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from metapose.experiment.results import load_results
from metapose.experiment.statistics import mean_ci


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a", type=Path, help="a finished `metapose experiment` folder")
    parser.add_argument("b", type=Path, help="another one, scored on the same target")
    parser.add_argument("--metric", nargs="+", default=["ap", "pck"])
    args = parser.parse_args()
    runs = [
        {(r.target, r.model, r.shots, r.seed): r for r in load_results(d / "results")}
        for d in (args.a, args.b)
    ]
    shared = sorted(set(runs[0]) & set(runs[1]))
    if not shared:
        raise SystemExit(f"{args.a} and {args.b} have no (target, model, K, seed) in common")
    unpaired = [k for k in shared if runs[0][k].shot_image_ids != runs[1][k].shot_image_ids]
    if unpaired:
        print(f"note: {len(unpaired)} jobs adapted on different shots in A and B (not paired)")
    groups: dict[tuple[str, str, int], list[tuple[str, str, int, int]]] = {}
    for key in shared:
        groups.setdefault(key[:3], []).append(key)
    cols = " | ".join(f"{m} A | {m} B | {m} B - A" for m in args.metric)
    print(f"A = {args.a}, B = {args.b}; mean ± 95 % CI over shared seeds\n")
    print(f"| target | model | K | seeds | {cols} |")
    print("|---|---|---|---|" + "---|" * 3 * len(args.metric))
    for (target, model, shots), keys in sorted(groups.items()):
        cells = []
        for metric in args.metric:
            a = [runs[0][k].metrics[metric] for k in keys]
            b = [runs[1][k].metrics[metric] for k in keys]
            diff = [y - x for x, y in zip(a, b, strict=True)]
            cells += [mean_ci(a).format(), mean_ci(b).format(), mean_ci(diff).format()]
        print(f"| {target} | {model} | {shots} | {len(keys)} | {' | '.join(cells)} |")


if __name__ == "__main__":
    main()
