"""How long jobs report progress: the CLI draws bars; the library only calls these hooks."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol

log = logging.getLogger(__name__)


class Progress(Protocol):
    """``stage(name, total)`` starts a stage and returns ``advance(n)``; ``close_stage()`` ends."""

    def stage(self, name: str, total: int) -> Callable[[int], None]: ...

    def close_stage(self) -> None: ...


class SilentProgress:
    """The library's default: stages go to the log at info level, nothing is drawn."""

    def stage(self, name: str, total: int) -> Callable[[int], None]:
        log.info("%s (%d)", name, total)
        return lambda n: None

    def close_stage(self) -> None:
        pass
