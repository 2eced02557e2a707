"""``metapose experiment``: the paper's comparison, from a config to the report."""

from __future__ import annotations

import argparse
import time

from metapose.cli.common import (
    Commands,
    TqdmProgress,
    resolve_device,
)


def cmd_experiment(args: argparse.Namespace) -> int:
    from metapose.config import ExperimentConfig, load_config
    from metapose.experiment.run import run_experiment

    cfg = load_config(args.config, ExperimentConfig)
    device = resolve_device(args.device)
    t0 = time.perf_counter()
    outcome = run_experiment(cfg, args.out, device, progress=TqdmProgress(not args.quiet))
    minutes = (time.perf_counter() - t0) / 60
    print()
    print(outcome.table)
    for line in outcome.verdicts:
        print(f"  {line}")
    print(f"\nreport: {outcome.report_dir / 'index.html'}   ({minutes:.1f} min on {device})")
    return 0


def stages_kept(args: argparse.Namespace) -> str:
    return f"{args.out} keeps every finished stage; run the same command again to resume"


def register(sub: Commands) -> None:
    """Add the group's commands to the ``metapose`` parser."""
    p = sub.add_parser(
        "experiment", help="run the paper's experiment from a config and write the report"
    )
    p.add_argument("--config", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--device", default="auto")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_experiment, interrupted=stages_kept)
