"""What every command shares: progress bars, the device option, run configs, help texts, and
what a command says when it is interrupted."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import TypeAlias, TypeVar

import torch
from tqdm import tqdm

from metapose.config import PCK_ALPHA, CodecConfig, ModelConfig
from metapose.models import TopDownModel
from metapose.training.run_folder import StepLog

T = TypeVar("T")

log = logging.getLogger("metapose")


class TqdmProgress:
    """Progress bars for the library's long stages."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self._bar: tqdm | None = None

    def stage(self, name: str, total: int) -> Callable[[int], None]:
        self.close_stage()
        self._bar = tqdm(
            total=total, desc=name, disable=not self.enabled, dynamic_ncols=True, leave=True
        )
        bar = self._bar

        def advance(n: int) -> None:
            bar.update(n)

        return advance

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


# ------------------------------------------------------------------------------ interrupts


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C raises KeyboardInterrupt, so that the same clean-up runs
    (temporary files removed, earlier outputs left as they were)."""


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    raise Terminated


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM raises :class:`Terminated` in the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def nothing_written(args: argparse.Namespace) -> str:
    """What an interrupted command that writes its output at the end leaves: nothing new."""
    out = getattr(args, "out", None)
    if out is None:
        return "nothing was written; run the command again"
    return f"nothing written to {out} (what was there is unchanged); run the command again"


def run_kept(args: argparse.Namespace) -> str:
    """What an interrupted ``train`` or ``meta`` leaves: the last resume state."""
    from metapose.training.run_folder import saved_step

    step = saved_step(args.out)
    if step is None:
        return f"no checkpoint in {args.out} yet; run the same command again to start over"
    again = "the same command again" + (" without --no-resume" if args.no_resume else "")
    return f"{args.out} keeps the state of step {step}; run {again} to resume from it"


# ------------------------------------------------------------------------------ commands


def run_config(path: str | None, cls: type[T]) -> T:
    from metapose.config import load_config

    return load_config(path, cls) if path else cls()


def initial_model(
    model_cfg: ModelConfig, init: str | None, seed: int, device: torch.device
) -> TopDownModel:
    """Weights from ``--init`` (whose own model config wins) or random ones drawn from ``seed``."""
    from metapose.models import seeded_model
    from metapose.models.checkpoint import load_checkpoint

    if init:
        loaded = load_checkpoint(init, device)
        if loaded.model.config != model_cfg:
            log.warning("using the model config of %s, not the run config's", init)
        return loaded.model
    return seeded_model(model_cfg, seed)


def metrics_line(metrics: dict[str, float]) -> str:
    names = (("ap", "AP"), ("ap50", "AP50"), ("ar", "AR"), ("pck", f"PCK@{PCK_ALPHA:g}"))
    return "  ".join(f"{title} {metrics[key]:.3f}" for key, title in names if key in metrics)


def step_bar(total: int, desc: str, done: int = 0) -> tuple[tqdm, Callable[[StepLog], None]]:
    bar = tqdm(total=total, initial=done, desc=desc, dynamic_ncols=True)

    def on_step(entry: StepLog) -> None:
        bar.update(1)
        bar.set_postfix(loss=f"{entry.loss:.2e}", images=entry.images)

    return bar, on_step


def check_resume_of(out: Path, cfg: object, args: argparse.Namespace) -> None:
    """Refuse a different configuration before config.yaml is overwritten."""
    from metapose.training.run_folder import check_resume, run_identity

    if not args.no_resume:
        check_resume(out, run_identity(cfg, args.init), cfg)


def id_range(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    lo, _, hi = text.partition("-")
    try:
        first, last = int(lo), int(hi or lo)
    except ValueError:
        raise SystemExit(f"error: expected an image id range like 1-4000, got {text!r}") from None
    if first > last:
        raise SystemExit(f"error: image id range {text!r} is empty: write it low-high, e.g. 1-4000")
    return first, last


def codec_override(args: argparse.Namespace) -> CodecConfig | None:
    """The checkpoint's codec with ``--encoding``/``--dark`` applied, or None if neither given."""
    if args.crop is None and args.encoding is None and args.dark is None:
        return None
    from metapose.config import from_dict, replace
    from metapose.models.checkpoint import read_metadata
    from metapose.models.zoo import resolve_model

    own = from_dict(ModelConfig, read_metadata(resolve_model(args.checkpoint))["model"]).codec
    changes: dict[str, object] = {}
    if args.crop is not None:
        changes["crop"] = args.crop
    if args.encoding is not None:
        changes["encoding"] = args.encoding
    if args.dark is not None:
        changes["dark"] = args.dark == "on"
    return replace(own, **changes)


def keypoint_names(text: str | None) -> tuple[str, ...] | None:
    """``--keypoints nose,left_eye``: the names (checked against the skeleton where used)."""
    return tuple(name.strip() for name in text.split(",")) if text else None


CHECKPOINT_HELP = "a .safetensors file, or a bundled model's name: see `metapose zoo`"

# Help for options that recur across commands (set where a command leaves its help empty).
COMMON_HELP = {
    "out": "where to write (see the command's description)",
    "device": "auto (CUDA when available, else CPU), cpu, cuda or cuda:N",
    "quiet": "no progress bars",
    "no_resume": "start over even if --out holds a resumable run",
    "config": "a YAML file overriding the defaults of the command's config",
    "images": "image folder of the annotations (default: found beside them)",
    "seed": "random seed",
    "workers": "worker processes",
    "width": "image width in pixels",
    "height": "image height in pixels",
    "split": "split name in the file names (person_keypoints_<split>.json)",
    "epochs": "passes over the shots",
    "lr": "learning rate",
    "optimizer": "optimiser of the fine-tune",
    "batch_size": "images (adapt) or person crops (predict, evaluate) per batch",
    "opset": "ONNX opset to write",
    "no_overlays": "write results.json only",
}


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Defaults appended to the help, except where there is none or the help says it."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False or "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


class Parser(argparse.ArgumentParser):
    """Every command's help shows each option's default."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]


def document(parser: argparse.ArgumentParser) -> None:
    """Give every option without help text the common one (so its default is shown too)."""
    for action in parser._actions:
        if action.help is None and action.dest in COMMON_HELP:
            action.help = COMMON_HELP[action.dest]
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                document(child)


def version_string() -> str:
    from importlib.metadata import PackageNotFoundError, version

    import metapose

    try:
        return version("metapose")
    except PackageNotFoundError:
        return metapose.__version__


Commands: TypeAlias = "argparse._SubParsersAction[Parser]"
