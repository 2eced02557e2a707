"""The folder the training loop (:mod:`metapose.training.loop`) writes: CSV log, resume state
and final model.

Supervised training and Reptile keep the same layout and the same resume rule: the state file
holds the model, the loop's own state, the step it reached and the configuration of the run; it
is written as one file through a rename, so a process killed at any moment (``kill -9``
included) leaves a folder that resumes to the same bytes. Resuming truncates the CSV log after
the saved step so the log never shows a step twice, and refuses a different configuration.
Under torchrun only rank 0 writes.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from metapose.config import MAX_STEPS, ConfigError, to_dict
from metapose.errors import DataError, DivergedError, cut
from metapose.files import parse_json, remove_stale_temporaries, show
from metapose.models import TopDownModel
from metapose.models.checkpoint import (
    first_non_finite,
    load_state,
    load_state_strict,
    optimizer_state_from_json,
    save_checkpoint,
    save_state,
    scheduler_state_from_json,
)
from metapose.training.runlog import RunLog

log = logging.getLogger(__name__)

STATE_FILE = "train_state.safetensors"
FINAL_FILE = "model.safetensors"
# Written by earlier versions beside the state: a copy of the model, no longer kept.
OLD_FILES = ("last.safetensors", "last.json", "train_state.json")


def run_identity(run_config: Any, init: str | None = None) -> dict[str, Any]:
    """What must not change when a run is resumed: its configuration and starting weights."""
    return {
        "run_config": to_dict(run_config) if run_config is not None else None,
        "init": None if init is None else str(init),
    }


def _differences(saved: Any, now: Any, prefix: str = "") -> list[str]:
    if isinstance(saved, dict) and isinstance(now, dict):
        out: list[str] = []
        for key in sorted(set(saved) | set(now), key=str):
            name = f"{prefix}.{key}" if prefix else str(key)
            out += _differences(saved.get(key), now.get(key), name)
        return out
    return [] if saved == now else [f"{prefix or 'value'}: {show(saved)} -> {show(now)}"]


def _saved_skeleton(out_dir: str | Path) -> dict[str, Any] | None:
    """The non-tensor part of ``out_dir``'s resume state, or None without a readable one."""
    path = Path(out_dir) / STATE_FILE
    if not path.is_file():
        return None
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            text = (handle.metadata() or {}).get("metapose_state")
        skeleton = parse_json(text, path) if text else {}
    except (SafetensorError, OSError, ValueError, RecursionError):  # DataError included
        return None  # load_state names the problem when the run is resumed
    return skeleton if isinstance(skeleton, dict) else None


def saved_identity(out_dir: str | Path) -> dict[str, Any] | None:
    """The identity stored in ``out_dir``'s resume state, or None without a (new-style) state."""
    identity = (_saved_skeleton(out_dir) or {}).get("identity")
    return identity if isinstance(identity, dict) else None


def saved_step(out_dir: str | Path) -> int | None:
    """The step ``out_dir``'s resume state was saved at, or None without a readable state."""
    step = (_saved_skeleton(out_dir) or {}).get("step")
    return step if isinstance(step, int) and not isinstance(step, bool) else None


def check_resume(out_dir: str | Path, identity: dict[str, Any], run_config: Any = None) -> None:
    """Refuse (one line) to resume a run in ``out_dir`` made with another configuration.

    The saved configuration is first read as ``run_config``'s class reads older files (its
    ``upgrade_dict``), so a run saved before a key moved compares equal."""
    saved = saved_identity(out_dir)
    if saved is None:
        return
    upgrade = getattr(type(run_config), "upgrade_dict", None)
    if upgrade is not None and isinstance(saved.get("run_config"), dict):
        saved = {**saved, "run_config": upgrade(saved["run_config"])}
    changed = _differences(saved, json.loads(json.dumps(identity)))
    if changed:
        more = f" (and {len(changed) - 1} more)" if len(changed) > 1 else ""
        raise ConfigError(
            f"{out_dir} holds a run of a different configuration ({changed[0]}{more}); "
            "choose another --out, pass --no-resume to start over, or delete the folder"
        )


def check_finite_weights(model: TopDownModel, step: int) -> None:
    """Refuse to save weights holding NaN or inf (the last good state stays on disk)."""
    key = first_non_finite(model.state_dict())
    if key is not None:
        raise DivergedError(
            f"weight {key} is not finite after step {step}: training diverged (try a "
            "smaller learning rate); stopped without saving (the last good checkpoint is kept)"
        )


@dataclass(frozen=True)
class StepLog:
    """One optimisation (or meta) step as the log and the progress bar report it."""

    step: int  # steps done after this one
    images: int  # images processed so far
    loss: float
    lr: float  # step size: the learning rate in training, the meta step beta in Reptile
    seconds: float  # wall time since the start of this process's run


@dataclass
class History:
    """What a run did: every step and every validation."""

    steps: list[StepLog] = field(default_factory=list)
    evals: list[dict[str, float]] = field(default_factory=list)

    @property
    def images_seen(self) -> int:
        return self.steps[-1].images if self.steps else 0

    def losses(self) -> list[float]:
        return [s.loss for s in self.steps]

    def to_dict(self) -> dict[str, Any]:
        return {"steps": [asdict(s) for s in self.steps], "evals": self.evals}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> History:
        return cls([StepLog(**s) for s in data.get("steps", [])], list(data.get("evals", [])))


def check_step(path: Path, state: dict[str, Any], total: int | None) -> None:
    """Refuse a resume state whose step is not an integer in ``[0, total]`` (``step: 1e30``
    would otherwise be taken as a finished run)."""
    step = state.get("step")
    high = MAX_STEPS if total is None else total
    if isinstance(step, bool) or not isinstance(step, int) or not 0 <= step <= high:
        raise DataError(
            path,
            f"must be an integer in [0, {high}], got {show(step)}; start over with --no-resume",
            field="step",
        )


def restore_state(
    path: Path,
    state: dict[str, Any],
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
) -> History:
    """Load a resume state read from ``path`` into ``model`` (and ``optimizer``, ``scheduler``);
    returns its history. A missing or mis-shaped field is a DataError naming the file and the
    field, before the loop runs."""

    def broken(name: str, why: str) -> DataError:
        return DataError(path, f"{why}; start over with --no-resume", field=name)

    needed = ["model", "history"]
    needed += ["optimizer"] if optimizer is not None else []
    needed += ["scheduler"] if scheduler is not None else []
    for name in needed:
        if not isinstance(state.get(name), dict):
            raise broken(name, "missing or not a mapping")
    weights = state["model"]
    if not all(isinstance(v, torch.Tensor) for v in weights.values()):
        raise broken("model", "holds values that are not tensors")
    load_state_strict(model, weights, path)
    try:
        history = History.from_dict(state["history"])
    except (TypeError, ValueError, AttributeError) as err:
        raise broken("history", f"unreadable ({cut(str(err), 80)})") from None
    if optimizer is not None:
        try:
            saved = optimizer_state_from_json(state["optimizer"])
            _check_optimizer_shapes(optimizer, saved)
            optimizer.load_state_dict(saved)
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise broken("optimizer", f"does not fit the model ({cut(str(err), 80)})") from None
    if scheduler is not None:
        try:
            scheduler.load_state_dict(scheduler_state_from_json(state["scheduler"]))
        except (TypeError, ValueError, AttributeError) as err:
            raise broken("scheduler", f"unreadable ({cut(str(err), 80)})") from None
    return history


def _check_optimizer_shapes(optimizer: torch.optim.Optimizer, saved: dict[str, Any]) -> None:
    """Raise ValueError when a saved per-parameter tensor (e.g. Adam's moments) does not have
    its parameter's shape: torch would load it and fail only at the next step."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    saved_ids = [i for group in saved["param_groups"] for i in group["params"]]
    if len(saved_ids) != len(params):
        raise ValueError(f"{len(saved_ids)} parameters saved, the model has {len(params)}")
    by_id = dict(zip(saved_ids, params, strict=True))
    for index, values in saved["state"].items():
        if index not in by_id or not isinstance(values, dict):
            raise ValueError(f"state of unknown parameter {cut(str(index))}")
        shape = by_id[index].shape
        for name, value in values.items():
            if isinstance(value, torch.Tensor) and value.dim() and value.shape != shape:
                raise ValueError(
                    f"{name} of parameter {index} has shape {tuple(value.shape)}, "
                    f"the parameter {tuple(shape)}"
                )


class RunFolder:
    """``out_dir`` (or nothing, when ``None``) of one training loop named ``name``."""

    def __init__(
        self,
        out_dir: str | Path | None,
        name: str,
        *,
        is_main: bool,
        run_config: Any = None,
        init: str | None = None,
    ) -> None:
        self.out = Path(out_dir) if out_dir is not None else None
        self.name = name
        self.writes = self.out is not None and is_main
        self.run_config = run_config
        self.identity = run_identity(run_config, init)
        if self.writes and self.out is not None and self.out.is_dir():
            remove_stale_temporaries(self.out)
        self.runlog: RunLog | None = None
        self.val_log: RunLog | None = None  # validation metrics (the loop's ``validate``)

    @property
    def state_path(self) -> Path:
        """The resume state's file (only for a folder that has one)."""
        assert self.out is not None
        return self.out / STATE_FILE

    def resume_state(
        self, device: torch.device, resume: bool, *, total: int | None = None
    ) -> dict[str, Any] | None:
        """The saved state (with its ``"step"``) when resuming is asked for and possible.

        Raises ConfigError, before anything is written, when the saved run's configuration
        differs from this one's; DataError when its step is not an integer in ``[0, total]``.
        """
        state = None
        if self.out is not None and resume and (self.out / STATE_FILE).exists():
            check_resume(self.out, self.identity, self.run_config)
            state = load_state(self.out / STATE_FILE, device)
            check_step(self.out / STATE_FILE, state, total)
        if self.writes and self.out is not None:
            self.runlog = RunLog(self.out, self.name)
            self.val_log = RunLog(self.out, "val", tensorboard=False)
        if state is None:
            return None
        assert self.out is not None
        for runlog in (self.runlog, self.val_log):
            if runlog is not None:
                runlog.truncate_after(int(state["step"]))
        log.info("resuming from %s at step %d", self.out / STATE_FILE, int(state["step"]))
        return state

    def save(self, model: TopDownModel, step: int, state: dict[str, Any]) -> None:
        """The resume state at ``step``: the model, the loop's ``state`` and the identity."""
        if not self.writes or self.out is None:
            return
        check_finite_weights(model, step)
        save_state(
            self.out / STATE_FILE,
            {"model": model.state_dict(), **state, "step": step, "identity": self.identity},
        )
        for old in OLD_FILES:
            (self.out / old).unlink(missing_ok=True)

    def finish(
        self, model: TopDownModel, step: int, extra: dict[str, Any], *, steps_run: int = 1
    ) -> None:
        """The final model (after ``step`` steps, ``extra`` in its metadata), then close the log.

        A resumed run that had already finished (``steps_run`` 0, final model present) keeps
        its final model and provenance as they are.
        """
        if self.writes and self.out is not None:
            final = self.out / FINAL_FILE
            if steps_run or not final.exists():
                check_finite_weights(model, step)
                save_checkpoint(final, model, run_config=self.run_config, extra=extra)
        if self.runlog is not None:
            self.runlog.close()

    def write_log(self, row: dict[str, Any]) -> None:
        if self.runlog is not None:
            self.runlog.write(row)

    def write_val(self, metrics: dict[str, Any]) -> None:
        """One validation (``metrics`` with its ``step``) to ``val.csv``."""
        if self.val_log is not None:
            self.val_log.write(metrics)

    def record_step(self, history: History, entry: StepLog, *, total: int, log_every: int) -> None:
        """Add ``entry`` to ``history``; write it to the log every ``log_every`` steps and at
        the last of ``total``."""
        history.steps.append(entry)
        if entry.step % log_every == 0 or entry.step == total:
            self.write_log(asdict(entry))
