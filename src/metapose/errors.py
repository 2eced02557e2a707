"""Exception types: bad user input (files, fields, annotation ids) and a diverged run."""

from __future__ import annotations

import math
from pathlib import Path


def cut(text: str, limit: int = 40) -> str:
    """``text`` as shown in a message: a 5,000-character id or name would drown the message."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} chars)"


class DataError(ValueError):
    """Bad input data: the message names the file, the field and, where there is one, the id.

    Raised before any output is written, so a failed command leaves nothing half-done.
    """

    def __init__(
        self,
        path: str | Path,
        message: str,
        *,
        field: str | None = None,
        annotation_id: int | str | None = None,
        image_id: int | str | None = None,
    ) -> None:
        where = [str(path)]
        if image_id is not None:
            where.append(f"image id {cut(str(image_id))}")
        if annotation_id is not None:
            where.append(f"annotation id {cut(str(annotation_id))}")
        if field is not None:
            where.append(f"field '{field}'")
        super().__init__(f"{': '.join(where)}: {message}")
        self.path = Path(path)
        self.field = field
        self.annotation_id = annotation_id
        self.image_id = image_id


class CheckFailed(RuntimeError):
    """A run stopped by a check on its own numbers (diverged training, export parity)."""


class DivergedError(CheckFailed):
    """Training produced a NaN or infinite loss or weights: the run stops, nothing is saved.

    ``loss`` and ``step`` (1-based) are set when a loss was the cause, so that an outer loop
    (Reptile's meta step around its inner steps) can say where it happened.
    """

    def __init__(self, message: str, *, loss: float | None = None, step: int | None = None):
        super().__init__(message)
        self.loss = loss
        self.step = step


def diverged(
    loss: float, where: str, what: str = "loss", *, step: int | None = None
) -> DivergedError:
    """The error for a non-finite ``loss`` taken ``where`` (e.g. ``"step 3"``)."""
    return DivergedError(
        f"{what} is {loss} at {where}: training diverged (try a smaller learning rate); "
        "stopped without saving (checkpoints saved before are kept)",
        loss=loss,
        step=step,
    )


def check_finite_loss(loss: float, step: int, what: str = "loss") -> None:
    """Raise DivergedError when ``loss`` (taken at ``step``, 1-based) is NaN or infinite."""
    if not math.isfinite(loss):
        raise diverged(loss, f"step {step}", what, step=step)


class WriteError(OSError):
    """An output could not be written (disk full, read-only file system, no permission).

    Raised with the temporary file already removed and the earlier output (if any) untouched.
    """

    def __init__(self, path: str | Path, err: OSError) -> None:
        super().__init__(err.errno, err.strerror or str(err), str(path))
        self.path = Path(path)

    def __str__(self) -> str:
        return f"cannot write {self.path}: {self.strerror}"


class OutputInUse(RuntimeError):
    """Another process is writing the same output (it holds the output's lock file)."""

    def __init__(self, path: str | Path, pid: int | None) -> None:
        who = f"pid {pid}" if pid is not None else "pid unknown"
        super().__init__(
            f"{path} is being written by another metapose process ({who}); wait for it to "
            "finish or choose another --out"
        )
        self.path = Path(path)
        self.pid = pid
