"""``metapose synth``: render synthetic COCO-format datasets or preview grids."""

from __future__ import annotations

import argparse
import inspect
from pathlib import Path

from tqdm import tqdm

from metapose.cli.common import (
    Commands,
    nothing_written,
)
from metapose.config import MAX_COUNT, check_int
from metapose.synth.writer import write_synth_dataset


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
    # Refused before a progress bar is drawn (write_synth_dataset checks them again).
    domain = get_domain(args.domain)
    check_int("", "--images", args.images, 1, MAX_COUNT)
    bar = tqdm(total=args.images, desc=f"synth {args.domain}", dynamic_ncols=True)
    path = write_synth_dataset(
        domain,
        args.images,
        args.seed,
        out,
        width=args.width,
        height=args.height,
        split=args.split,
        workers=args.workers,
        progress=bar,
    )
    bar.close()
    print(f"wrote {args.images} images and {path}")
    return 0


def synth_interrupted(args: argparse.Namespace) -> str:
    if args.preview:
        return f"the previews finished before are in {args.out}; run the command again"
    return nothing_written(args)


def register(sub: Commands) -> None:
    """Add the group's commands to the ``metapose`` parser."""
    p = sub.add_parser("synth", help="render a synthetic COCO-format dataset, or preview grids")
    p.add_argument("--domain", help="built-in domain (rgb, thermal, unique, ...)")
    p.add_argument("--images", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    defaults = inspect.signature(write_synth_dataset).parameters
    p.add_argument("--width", type=int, default=defaults["width"].default)
    p.add_argument("--height", type=int, default=defaults["height"].default)
    p.add_argument("--split", default=defaults["split"].default)
    p.add_argument("--workers", type=int, default=defaults["workers"].default)
    p.add_argument("--preview", action="store_true", help="write one labelled grid PNG per domain")
    p.set_defaults(func=cmd_synth, interrupted=synth_interrupted)
