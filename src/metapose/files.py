"""Files: JSON reading with errors that name the file, the checks of JSON values the readers
share, atomic writing (a reader never sees half a file) and the lock of an output.

Every output goes through :func:`atomic_write`: a temporary file with a name unique to the
process and the call (``.<name>.<pid>.<random>.tmp``, so concurrent writers never collide) in the
output's folder, renamed over the output once complete. Whatever stops the write (a full or
read-only disk, Ctrl-C, SIGTERM) removes the temporary and leaves the earlier output as it was; a
signal that lands inside that clean-up cuts it short, and the CLI then removes what is left
(:func:`discard_temporaries`). A failed write becomes one :class:`~metapose.errors.WriteError`
naming the output.
:func:`output_lock` makes a second process writing the same output stop with a line naming the
first one's pid.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import math
import os
import re
import secrets
import shutil
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from metapose.errors import DataError, OutputInUse, WriteError

try:
    import fcntl
except ImportError:  # Windows: outputs are not locked
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)


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


# Errors of a write that no retry fixes: the output's disk or folder refuses it.
WRITE_ERRNOS = frozenset(
    {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG}
)
TMP_SUFFIX = ".tmp"
# Temporaries of writes a killed process never finished: ours (``.<name>.<pid>.<hex>.tmp``, or
# ``.<name>.tmp`` from earlier versions) and the ones safetensors' own atomic write leaves
# (Rust's tempfile crate: ``.tmp`` + 6 characters).
STALE_PATTERNS = (f".*{TMP_SUFFIX}", ".tmp??????")
_OWNER = re.compile(r"\.(\d+)\.[0-9a-f]+\.tmp$")


# Temporaries this process made and has not yet renamed or removed. A signal can land between
# any two lines of a ``finally``, so a clean-up may be cut short; :func:`discard_temporaries`
# (the CLI calls it on its way out) finishes it. A name is recorded before its file exists.
_made: set[Path] = set()
_made_guard = threading.Lock()


def _unique_name(path: Path, suffix: str) -> Path:
    stem = path.name[:180]  # the name must stay under the file system's 255 bytes
    return path.with_name(f".{stem}.{os.getpid()}.{secrets.token_hex(4)}{suffix}")


def _make(path: Path, suffix: str, create: Callable[[Path], None]) -> Path:
    """A new name beside ``path``, recorded, then made by ``create`` (which refuses a name that
    exists); the record is dropped if nothing was made."""
    while True:
        tmp = _unique_name(path, suffix)
        with _made_guard:
            _made.add(tmp)
        try:
            create(tmp)
            return tmp
        except FileExistsError:
            forget_temporary(tmp)
        except BaseException:
            forget_temporary(tmp)
            raise


def _new_file(tmp: Path) -> None:
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))


def temporary_path(path: Path) -> Path:
    """A new, empty file beside ``path`` named for this process and call, with the mode a plain
    ``open`` would give it (0666 less the umask). Rename it or :func:`remove_temporary` it."""
    return _make(path, TMP_SUFFIX, _new_file)


def temporary_folder(path: Path, label: str) -> Path:
    """A new, empty folder beside ``path`` (``.<name>.<pid>.<random>.<label>``) with the mode
    ``mkdir`` would give it. Rename it or :func:`remove_temporary` it."""
    return _make(path, f".{label}", os.mkdir)


def forget_temporary(tmp: Path) -> None:
    """``tmp`` was renamed into place (or never made): it is no longer this process's to remove."""
    with _made_guard:
        _made.discard(tmp)


def remove_temporary(tmp: Path) -> None:
    """Remove the temporary file or folder ``tmp`` (if it is there) and forget it."""
    if tmp.is_dir() and not tmp.is_symlink():
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        tmp.unlink(missing_ok=True)
    forget_temporary(tmp)


def discard_temporaries() -> None:
    """Remove every temporary this process made and has neither renamed nor removed: those whose
    clean-up an interrupt cut short."""
    with _made_guard:
        left = list(_made)
    for tmp in left:
        remove_temporary(tmp)


def replace_folder(new: Path, out: Path) -> None:
    """Put the folder ``new`` in place of ``out``: an earlier ``out`` is moved aside, then
    removed, so the two are never mixed. Stopped between the two renames (a signal, a refused
    rename), the earlier ``out`` is put back before the error goes on."""
    aside = _unique_name(out, ".old")  # not recorded: it may hold the only earlier output
    try:
        if out.exists():
            os.replace(out, aside)
        os.replace(new, out)
    except BaseException:
        if aside.exists() and not out.exists():
            os.replace(aside, out)
        raise
    shutil.rmtree(aside, ignore_errors=True)


def current_umask() -> int:
    """The process's umask (the mode bits ``open`` and ``mkdir`` leave out)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_write(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; when the block ends it replaces ``path``.

    The block writes the file (any writer that takes a path: safetensors, ONNX, matplotlib). If
    it raises (or is interrupted) the temporary is removed and ``path`` keeps what it held. A
    full, read-only or forbidden disk becomes a :class:`WriteError` naming ``path``.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = temporary_path(path)
    except OSError as err:
        raise write_error(path, err) from None
    try:
        mode = tmp.stat().st_mode & 0o777
        yield tmp
        os.chmod(tmp, mode)  # writers that replace the file (safetensors) leave 0600
        os.replace(tmp, path)
    except OSError as err:
        raise write_error(path, err) from None
    finally:
        remove_temporary(tmp)


def write_error(path: Path, err: OSError) -> OSError:
    """``err`` as a WriteError naming ``path`` when the disk refused the write, else as is."""
    if isinstance(err, WriteError) or err.errno not in WRITE_ERRNOS:
        return err
    return WriteError(path, err)


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    with atomic_write(path) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(path: str | Path, text: str) -> None:
    """``text`` as UTF-8, line ends as they are in it, through :func:`atomic_write`."""
    with atomic_write(path) as tmp:
        tmp.write_text(text, encoding="utf-8", newline="")


def write_json_atomic(path: str | Path, payload: Any, *, indent: int | None = None) -> None:
    """Write JSON through :func:`atomic_write`, so a reader never sees half a file.

    The file gets the user's umask (as ``open`` would give it), and a NaN or infinite number is
    written as ``null``: the output is strict JSON any reader parses.
    """
    text = json.dumps(_finite_or_null(payload), indent=indent, allow_nan=False)
    write_text_atomic(path, text)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temporaries(folder: str | Path) -> None:
    """Delete the temporaries left in ``folder`` by writes that were killed (those of a process
    still running are kept)."""
    for pattern in STALE_PATTERNS:
        for tmp in Path(folder).glob(pattern):
            owner = _OWNER.search(tmp.name)
            if owner and int(owner.group(1)) != os.getpid() and _alive(int(owner.group(1))):
                continue
            if tmp.is_file():
                tmp.unlink(missing_ok=True)


# ------------------------------------------------------------------------------ output locks

_held: dict[Path, tuple[int, int]] = {}  # lock file -> (descriptor, times entered)
_held_guard = threading.Lock()


def lock_path(output: str | Path) -> Path:
    """The lock file of ``output`` (a file or a folder): ``.<name>.lock`` beside it, so that an
    output replaced whole (a folder swapped in) keeps its lock. Every spelling of one output
    (relative, through a link) has the same lock."""
    output = Path(output).resolve()
    if not output.name:  # the root folder
        return output / ".metapose.lock"
    return output.with_name(f".{output.name[:200]}.lock")


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _lock(output: Path, lock: Path) -> int:
    """A descriptor of ``lock`` holding its exclusive lock, with this process's pid in it."""
    assert fcntl is not None
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _read_pid(fd)
            os.close(fd)
            raise OutputInUse(output, pid) from None
        # The holder before us removes the file as it lets go: lock the file at the path now.
        try:
            now = os.stat(lock)
        except FileNotFoundError:
            now = None
        mine = os.fstat(fd)
        if now is not None and (now.st_dev, now.st_ino) == (mine.st_dev, mine.st_ino):
            break
        os.close(fd)
    before = _read_pid(fd)
    if before is not None:
        # A process killed while writing leaves its lock file; the kernel released its lock.
        log.info("%s: taking over the lock of pid %d, which has ended", output, before)
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


@contextlib.contextmanager
def output_lock(output: str | Path) -> Iterator[None]:
    """Hold ``output``'s lock for the block: another process (another ``metapose`` writing the
    same ``--out``) gets :class:`OutputInUse` naming this one's pid.

    The kernel releases the lock when its process ends, however it ends, so the lock of a killed
    run is taken over without asking. Entering it again in the same process is allowed.
    """
    output = Path(output)
    lock = lock_path(output)
    if fcntl is None:
        yield
        return
    # Folders made for the lock alone are removed with it if the command left them empty.
    made = [d for d in (lock.parent, *lock.parent.parents) if not d.exists()]
    with _held_guard:
        if lock in _held:
            fd, depth = _held[lock]
            _held[lock] = (fd, depth + 1)
        else:
            try:
                lock.parent.mkdir(parents=True, exist_ok=True)
                _held[lock] = (_lock(output, lock), 1)
            except OSError as err:  # named for the output: its folder refuses the lock file
                raise write_error(output, err) from None
    try:
        yield
    finally:
        with _held_guard:
            fd, depth = _held[lock]
            if depth > 1:
                _held[lock] = (fd, depth - 1)
            else:
                # In this order, a signal landing here leaves the lock in ``_held`` for
                # release_held_locks until its file is gone.
                lock.unlink(missing_ok=True)  # before the lock is let go: see _lock
                del _held[lock]
                os.close(fd)
                for folder in made:
                    with contextlib.suppress(OSError):
                        folder.rmdir()


def release_held_locks() -> None:
    """Remove the lock files this process still holds and let the locks go: those whose
    release an interrupt cut short (the CLI calls it on its way out)."""
    with _held_guard:
        left = list(_held.items())
        _held.clear()
    for lock, (fd, _) in left:
        with contextlib.suppress(OSError):
            mine, there = os.fstat(fd), os.stat(lock)
            # the file may already be gone and another process's lock made under its name
            if (mine.st_dev, mine.st_ino) == (there.st_dev, there.st_ino):
                lock.unlink()
        with contextlib.suppress(OSError):
            os.close(fd)
