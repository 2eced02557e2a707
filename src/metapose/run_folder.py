"""The folder a training loop writes: CSV log, last checkpoint, resume state and final model.

Supervised training and Reptile keep the same layout and the same resume rule: the state file
holds the model, the loop's own state and the step it reached; resuming truncates the CSV log
after that step so the log never shows a step twice. Under torchrun only rank 0 writes.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from metapose.checkpoint import load_state, save_checkpoint, save_state
from metapose.models import TopDownModel
from metapose.runlog import RunLog

log = logging.getLogger(__name__)

STATE_FILE = "train_state.safetensors"
LAST_FILE = "last.safetensors"
FINAL_FILE = "model.safetensors"


class RunFolder:
    """``out_dir`` (or nothing, when ``None``) of one training loop named ``name``."""

    def __init__(
        self, out_dir: str | Path | None, name: str, *, is_main: bool, run_config: Any = None
    ) -> None:
        self.out = Path(out_dir) if out_dir is not None else None
        self.writes = self.out is not None and is_main
        self.run_config = run_config
        self.runlog = RunLog(self.out, name) if self.writes and self.out is not None else None

    def resume_state(self, device: torch.device, resume: bool) -> dict[str, Any] | None:
        """The saved state (with its ``"step"``) when resuming is asked for and possible."""
        if self.out is None or not resume or not (self.out / STATE_FILE).exists():
            return None
        state = load_state(self.out / STATE_FILE, device)
        if self.runlog is not None:
            self.runlog.truncate_after(int(state["step"]))
        log.info("resuming from %s at step %d", self.out / STATE_FILE, int(state["step"]))
        return state

    def save(
        self, model: TopDownModel, step: int, state: dict[str, Any], extra: dict[str, Any]
    ) -> None:
        """Last checkpoint (with ``extra`` in its sidecar) and the resume state at ``step``."""
        if not self.writes or self.out is None:
            return
        save_checkpoint(self.out / LAST_FILE, model, run_config=self.run_config, extra=extra)
        save_state(self.out / STATE_FILE, {"model": model.state_dict(), **state, "step": step})

    def finish(self, model: TopDownModel, extra: dict[str, Any]) -> None:
        """The final model, then close the log."""
        if self.writes and self.out is not None:
            save_checkpoint(self.out / FINAL_FILE, model, run_config=self.run_config, extra=extra)
        if self.runlog is not None:
            self.runlog.close()

    def write_log(self, row: dict[str, Any]) -> None:
        if self.runlog is not None:
            self.runlog.write(row)
