"""The ``metapose`` command line: the only place that parses argv, prints and draws progress.

One module a command group; :mod:`.common` holds what they share.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from tqdm import tqdm

from metapose.cli import (
    adapt,
    data,
    evaluation,
    experiment,
    inference,
    labels,
    models,
    synth,
    training,
)
from metapose.cli.common import Parser, document, version_string
from metapose.config import ConfigError
from metapose.errors import CheckFailed, DataError

GROUPS = (synth, experiment, training, adapt, data, inference, models, labels, evaluation)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="metapose",
        description="Few-shot adaptation of top-down pose estimators by meta-learned init.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at debug level")
    parser.add_argument("--version", action="version", version=f"%(prog)s {version_string()}")
    sub = parser.add_subparsers(dest="command", required=True)
    for group in GROUPS:
        group.register(sub)
    document(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from metapose.training.distributed import init_from_env

    if not init_from_env().is_main:
        # Under torchrun only rank 0 talks: no progress bars or tables from the other ranks.
        os.environ["TQDM_DISABLE"] = "1"
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - lives as long as the process
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args))
    except (DataError, ConfigError, CheckFailed, FileExistsError) as err:
        for bar in list(getattr(tqdm, "_instances", ())):
            bar.close()  # an open progress bar would swallow the line
        print(f"error: {err}", file=sys.stderr)
        return 2


__all__ = ["build_parser", "main"]
