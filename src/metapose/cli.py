"""The ``metapose`` command line: the only place that parses argv, prints and draws progress bars."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from tqdm import tqdm

from metapose.config import ConfigError
from metapose.errors import DataError

log = logging.getLogger("metapose")


class TqdmProgress:
    """Progress bars for the library's long stages."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self._bar: tqdm | None = None

    def stage(self, name: str, total: int) -> Callable[[int], None]:
        self.close_stage()
        self._bar = tqdm(total=total, desc=name, disable=not self.enabled, dynamic_ncols=True, leave=True)
        bar = self._bar
        return lambda n: bar.update(n)

    def close_stage(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def resolve_device(name: str) -> torch.device:
    """``auto`` picks the local CUDA device (under torchrun: ``LOCAL_RANK``'s), else the CPU."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda asked for, but no CUDA device is available")
    return device


# ------------------------------------------------------------------------------ commands


def cmd_synth(args: argparse.Namespace) -> int:
    from metapose.synth.domains import DOMAINS, get_domain
    from metapose.synth.preview import write_previews
    from metapose.synth.writer import write_synth_dataset

    out = Path(args.out)
    if args.preview:
        names = [args.domain] if args.domain else list(DOMAINS)
        for path in write_previews(names, out, seed=args.seed):
            print(f"wrote {path}")
        return 0
    if not args.domain:
        raise SystemExit("error: --domain is required (or use --preview)")
    bar = tqdm(total=args.images, desc=f"synth {args.domain}", dynamic_ncols=True)
    path = write_synth_dataset(
        get_domain(args.domain), args.images, args.seed, out, width=args.width, height=args.height,
        split=args.split, workers=args.workers, progress=lambda n: bar.update(n),
    )
    bar.close()
    print(f"wrote {args.images} images and {path}")
    return 0


def cmd_experiment(args: argparse.Namespace) -> int:
    from metapose.config import ExperimentConfig, load_config
    from metapose.experiment import run_experiment

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


def cmd_evaluate(args: argparse.Namespace) -> int:
    from metapose.evaluate import evaluate_oks, format_table, load_results

    keypoints = tuple(args.keypoints.split(",")) if args.keypoints else None
    # Scoring needs the annotations only, never the images.
    result = evaluate_oks(args.gt, load_results(args.results), keypoints=keypoints)
    print(format_table(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result.as_dict(), indent=2))
    return 0


# ------------------------------------------------------------------------------ parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="metapose",
        description="Few-shot adaptation of top-down pose estimators by meta-learned initial weights.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at debug level")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("synth", help="render a synthetic COCO-format dataset, or preview grids")
    p.add_argument("--domain", help="built-in domain (rgb, thermal, unique, ...)")
    p.add_argument("--images", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--split", default="train")
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--preview", action="store_true", help="write one labelled grid PNG per domain")
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser("experiment", help="run the paper's experiment from a config and write the report")
    p.add_argument("--config", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--device", default="auto")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_experiment)

    p = sub.add_parser("evaluate", help="OKS AP/AR of a COCO results JSON against ground truth")
    p.add_argument("--gt", required=True, help="person_keypoints JSON")
    p.add_argument("--results", required=True, help="COCO keypoint results JSON")
    p.add_argument("--keypoints", help="comma-separated subset of keypoint names to score")
    p.add_argument("--json", help="also write the numbers to this file")
    p.set_defaults(func=cmd_evaluate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args))
    except (DataError, ConfigError, FileExistsError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
