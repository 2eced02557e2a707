"""The ``metapose`` command line: the only place that parses argv, prints and draws progress.

One module a command group; :mod:`.common` holds what they share.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
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
from metapose.cli.common import (
    Parser,
    Terminated,
    document,
    nothing_written,
    sigterm_as_interrupt,
    version_string,
)
from metapose.config import ConfigError
from metapose.errors import CheckFailed, DataError, OutputInUse, WriteError
from metapose.files import discard_temporaries, output_lock, release_held_locks

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

    is_main = init_from_env().is_main
    if not is_main:
        # Under torchrun only rank 0 talks: no progress bars or tables from the other ranks.
        os.environ["TQDM_DISABLE"] = "1"
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - lives as long as the process
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        with sigterm_as_interrupt(), contextlib.ExitStack() as held:
            if getattr(args, "out", None) and is_main:
                # One writer per output: a second process writing the same --out is refused.
                # (Under torchrun only rank 0 writes.)
                held.enter_context(output_lock(args.out))
            return int(args.func(args))
    except KeyboardInterrupt as stop:
        # Ctrl-C (130) or SIGTERM (143): temporaries gone (see _finish_clean_ups), earlier
        # outputs intact.
        note = getattr(args, "interrupted", nothing_written)(args)
        _say(f"interrupted: {note}")
        return 143 if isinstance(stop, Terminated) else 130
    except (DataError, ConfigError, CheckFailed, FileExistsError, OutputInUse, WriteError) as err:
        _say(f"error: {err}")
        return 2
    except OSError as err:
        # The system refused a read or write: one line naming the file, not a traceback.
        logging.getLogger("metapose").debug("%s", err, exc_info=True)
        where = f"{err.filename}: " if err.filename else ""
        _say(f"error: {where}{err.strerror or err}")
        return 2
    finally:
        _finish_clean_ups()


def _finish_clean_ups() -> None:
    """Remove the temporaries and output locks whose own clean-up a signal cut short (it can land
    between any two lines of a ``finally``), with SIGINT and SIGTERM held off meanwhile."""
    held = {signal.SIGINT, signal.SIGTERM}
    mask = getattr(signal, "pthread_sigmask", None)  # not on Windows
    before = mask(signal.SIG_BLOCK, held) if mask else None
    try:
        discard_temporaries()
        release_held_locks()
    finally:
        if mask:
            mask(signal.SIG_SETMASK, before)


def _say(line: str) -> None:
    """``line`` on stderr, after closing the progress bars (an open bar would swallow it)."""
    for bar in list(getattr(tqdm, "_instances", ())):
        bar.close()
    print(line, file=sys.stderr)


__all__ = ["build_parser", "main"]
