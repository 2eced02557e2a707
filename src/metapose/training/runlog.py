"""Run logs on disk: a CSV of scalars per step, mirrored to TensorBoard when it is installed."""

from __future__ import annotations

import csv
import io
import logging
import math
from pathlib import Path
from typing import Any

from metapose.errors import WriteError
from metapose.files import WRITE_ERRNOS, write_text_atomic

log = logging.getLogger(__name__)


def _step_of(row: dict[str, Any]) -> float:
    """The step of a CSV row; infinite for a row cut short (by a kill or a full disk)."""
    if None in row.values() or None in row:
        return math.inf
    try:
        return float(row.get("step", 0))
    except ValueError:
        return math.inf


class RunLog:
    """Appends rows of scalars to ``<dir>/<name>.csv`` (header from the first row)."""

    def __init__(
        self, directory: str | Path, name: str = "log", *, tensorboard: bool = True
    ) -> None:
        self.path = Path(directory) / f"{name}.csv"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fields: list[str] | None = None
        if self.path.exists() and self.path.stat().st_size > 0:
            with self.path.open() as f:
                self._fields = next(csv.reader(f), None)
        self._tb: Any = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(log_dir=str(Path(directory) / "tensorboard"))
            except ImportError:
                log.debug("tensorboard not installed; CSV log only")

    def truncate_after(self, step: int) -> None:
        """Drop rows beyond ``step`` (a resumed run rewrites what came after its checkpoint)."""
        if not self.path.exists() or self._fields is None:
            return
        with self.path.open(newline="") as f:
            rows = [r for r in csv.DictReader(f) if _step_of(r) <= step]
        text = io.StringIO(newline="")
        writer = csv.DictWriter(text, fieldnames=self._fields)
        writer.writeheader()
        writer.writerows(rows)
        write_text_atomic(self.path, text.getvalue())

    def write(self, row: dict[str, Any]) -> None:
        try:
            if self._fields is None:
                self._fields = list(row)
                with self.path.open("w", newline="") as f:
                    csv.DictWriter(f, fieldnames=self._fields).writeheader()
            with self.path.open("a", newline="") as f:
                csv.DictWriter(f, fieldnames=self._fields, extrasaction="ignore").writerow(row)
        except OSError as err:
            # A row cut short by a full disk is dropped on resume (rows after the saved step).
            raise (WriteError(self.path, err) if err.errno in WRITE_ERRNOS else err) from None
        if self._tb is not None:
            step = int(row.get("step", 0))
            for key, value in row.items():
                if key != "step" and isinstance(value, int | float):
                    self._tb.add_scalar(key, value, step)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
