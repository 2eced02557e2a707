"""JSON files: reading with errors that name the file, the checks of JSON values the readers
share, and atomic writing (a reader never sees half a file)."""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

from metapose.errors import DataError


def is_number(value: Any) -> bool:
    """A finite JSON number that a float holds (not a boolean, which Python counts as an int)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an int beyond float's range, e.g. 10**400
        return False


INT64 = 2**63


def is_integer(value: Any) -> bool:
    """A JSON integer (not a boolean) that fits int64, as ids and sizes must for torch/numpy."""
    return isinstance(value, int) and not isinstance(value, bool) and -INT64 <= value < INT64


def show(value: Any, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters, for error messages about odd values."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 15]}... ({len(text)} chars)"


def read_json(path: str | Path) -> Any:
    """Parse a JSON file; a syntax error becomes a DataError with its line and column."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "file not found")
    try:
        with path.open("rb") as f:
            return json.load(f)
    except json.JSONDecodeError as err:
        raise DataError(
            path, f"malformed JSON at line {err.lineno}, column {err.colno}: {err.msg}"
        ) from None
    except UnicodeDecodeError as err:
        raise DataError(path, f"not UTF-8 text ({err.reason})") from None
    except RecursionError:
        raise DataError(path, "JSON nested too deeply to be a COCO file") from None
    except ValueError as err:  # e.g. an integer of more than 4300 digits
        raise DataError(path, f"unreadable JSON: {str(err).split(';')[0]}") from None


# Nesting deeper than this in JSON read from a checkpoint header or a resume state is refused:
# metapose writes at most a few levels, and the recursive readers behind the parser (configs,
# tensor references) would otherwise end in a RecursionError.
MAX_JSON_DEPTH = 64


def json_depth(value: Any) -> int:
    """How deeply lists and objects nest in a parsed JSON ``value`` (a scalar is 0), iteratively."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item
        if isinstance(item, dict | list):
            deepest = max(deepest, depth)
            stack.extend((child, depth + 1) for child in children)
    return deepest


def parse_json(
    text: str | bytes,
    source: str | Path,
    *,
    field: str | None = None,
    max_depth: int = MAX_JSON_DEPTH,
) -> Any:
    """Parse JSON ``text`` read from ``source`` (``field`` names where in it): malformed JSON or
    nesting deeper than ``max_depth`` is a DataError naming both, never a RecursionError."""
    too_deep = f"JSON nested deeper than {max_depth} levels"
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        where = f"line {err.lineno}, column {err.colno}"
        raise DataError(source, f"malformed JSON at {where}: {err.msg}", field=field) from None
    except RecursionError:
        raise DataError(source, too_deep, field=field) from None
    except ValueError as err:  # not UTF-8, or an integer of more than 4300 digits
        raise DataError(source, f"unreadable JSON: {str(err).split(';')[0]}", field=field) from None
    if json_depth(value) > max_depth:
        raise DataError(source, too_deep, field=field)
    return value


def _finite_or_null(value: Any) -> Any:
    """``value`` with every NaN or infinite float replaced by None (JSON has no NaN)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite_or_null(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite_or_null(v) for v in value]
    return value


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_json_atomic(path: str | Path, payload: Any, *, indent: int | None = None) -> None:
    """Write JSON through a temporary file and a rename, so a reader never sees half a file.

    The file gets the user's umask (as ``open`` would give it, not mkstemp's 0600), and a NaN or
    infinite number is written as ``null``: the output is strict JSON any reader parses.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(_finite_or_null(payload), f, indent=indent, allow_nan=False)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
