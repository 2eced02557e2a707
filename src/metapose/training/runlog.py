"""Run logs on disk: a CSV of scalars per step, mirrored to TensorBoard when it is installed."""

from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


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
        with self.path.open() as f:
            rows = [r for r in csv.DictReader(f) if int(float(r.get("step", 0))) <= step]
        with self.path.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self._fields)
            writer.writeheader()
            writer.writerows(rows)

    def write(self, row: dict[str, Any]) -> None:
        if self._fields is None:
            self._fields = list(row)
            with self.path.open("w", newline="") as f:
                csv.DictWriter(f, fieldnames=self._fields).writeheader()
        with self.path.open("a", newline="") as f:
            csv.DictWriter(f, fieldnames=self._fields, extrasaction="ignore").writerow(row)
        if self._tb is not None:
            step = int(row.get("step", 0))
            for key, value in row.items():
                if key != "step" and isinstance(value, int | float):
                    self._tb.add_scalar(key, value, step)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
