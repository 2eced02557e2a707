"""Configuration loading: YAML <-> nested frozen dataclasses, path resolution, errors.

The defaults are the documented experiment. YAML may override only fields that exist: an unknown
key, a wrong type or a value out of range is an error naming the key. Each component receives its
own sub-config, never the root.
"""

from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

import yaml

from metapose.errors import cut
from metapose.files import show, write_text_atomic

T = TypeVar("T")


# Field metadata marking a file or folder path: relative paths in a YAML file are resolved
# against that file's folder when it is loaded (see load_config), so a run does not depend on the
# shell's current directory. MODEL_PATH: a checkpoint path or a bundled model's name (kept as is).
PATH: dict[str, str] = {"path": "file"}
MODEL_PATH: dict[str, str] = {"path": "model"}


class ConfigError(ValueError):
    """A configuration file or value is invalid; the message names the key."""


def check_finite(config: Any, owner: str) -> None:
    """Refuse NaN and infinite numbers in ``config``'s float fields (and tuples of floats).

    A NaN compares false with every bound, so range checks alone let it through.
    """
    for f in fields(config):
        value = getattr(config, f.name)
        values = value if isinstance(value, tuple) else (value,)
        for v in values:
            if isinstance(v, float) and not math.isfinite(v):
                raise ConfigError(f"{owner}.{f.name} must be a finite number, got {show(value)}")


# Bounds on sizes and counts, checked before anything is allocated: far beyond any real run, yet
# small enough that a typo (``batch_size: 100000000000``, ``workers: 100000``) is refused at once
# instead of exhausting memory or hanging. Seeds are what numpy and torch both accept.
MAX_STEPS = 10**9  # optimisation, meta or fine-tuning steps / epochs
MAX_BATCH = 4096  # images in one batch
MAX_WORKERS = 64  # data-loading processes
MAX_COUNT = 10**6  # images, shots, tasks and the like
SEED_LIMIT = 2**32  # seeds are in [0, 2**32)


def check_int(owner: str, name: str, value: int, low: int, high: int) -> None:
    """Refuse an integer field outside ``[low, high]``; the message names ``owner.name`` (just
    ``name`` for a root config's field, ``owner`` empty)."""
    if not low <= value <= high:
        key = f"{owner}.{name}" if owner else name
        raise ConfigError(f"{key} must be in [{low}, {high}], got {show(value)}")


def check_seed(owner: str, name: str, value: int) -> None:
    """Refuse a seed numpy or torch would not take (negative, or 2**32 and beyond)."""
    if not 0 <= value < SEED_LIMIT:
        key = f"{owner}.{name}" if owner else name
        raise ConfigError(
            f"{key} must be in [0, 2**32) (what numpy and torch accept), got {show(value)}"
        )


# ------------------------------------------------------------------------- YAML <-> objects


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp)


def _convert(value: Any, tp: Any, key: str) -> Any:
    """Check/convert a YAML value to the annotated type ``tp``; ``key`` names it in errors."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None:
            if type(None) in args:
                return None
            raise ConfigError(f"{key}: must not be null")
        tagged = _tagged_member(value, args, key)
        if tagged is not None:
            return _convert(value, tagged, key)
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, key)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(
            errors[0] if len(errors) == 1 else f"{key}: {show(value)} matches none of {tp}"
        )
    if origin is Literal:
        if value not in get_args(tp):
            raise ConfigError(f"{key}: must be one of {list(get_args(tp))}, got {show(value)}")
        return value
    if is_dataclass(tp) and isinstance(tp, type):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: must be a mapping, got {show(value)}")
        return _from_dict(tp, value, key)
    if origin is tuple:
        args = get_args(tp)
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key}: must be a list, got {show(value)}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(v, args[0], f"{key}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{key}: must have {len(args)} items, got {len(value)}")
        return tuple(
            _convert(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args, strict=True))
        )
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: must be a mapping, got {show(value)}")
        kt, vt = get_args(tp)
        return {_convert(k, kt, key): _convert(v, vt, f"{key}.{k}") for k, v in value.items()}
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key}: must be a number, got {show(value)}")
        try:
            number = float(value)
        except OverflowError:
            number = math.inf
        if not math.isfinite(number):
            raise ConfigError(f"{key}: must be a finite number, got {show(value)}")
        return number
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: must be an integer, got {show(value)}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: must be true or false, got {show(value)}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: must be a string, got {show(value)}")
        return value
    raise ConfigError(f"{key}: unsupported config type {_type_name(tp)}")


def _tagged_member(value: Any, args: tuple[Any, ...], key: str) -> Any:
    """The dataclass of a union whose ``kind`` field's default is ``value['kind']``, if any."""
    kinds: dict[str, Any] = {
        str(f.default): arg
        for arg in args
        if is_dataclass(arg)
        for f in fields(arg)
        if f.name == "kind"
    }
    if not kinds or not isinstance(value, dict) or "kind" not in value:
        return None
    if value["kind"] not in kinds:
        known = sorted(kinds, key=str)
        raise ConfigError(f"{key}.kind: must be one of {known}, got {show(value['kind'])}")
    return kinds[value["kind"]]


def _from_dict(cls: type[T], data: dict[str, Any], prefix: str = "") -> T:
    upgrade = getattr(cls, "upgrade_dict", None)
    if upgrade is not None:
        data = upgrade(data)
    hints = typing.get_type_hints(cls)
    known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - known)
    if unknown:
        where = f"{prefix}." if prefix else ""
        raise ConfigError(
            f"unknown key {where}{cut(str(unknown[0]))} (known: {', '.join(sorted(known))})"
        )
    kwargs = {
        name: _convert(value, hints[name], f"{prefix}.{name}" if prefix else name)
        for name, value in data.items()
    }
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{prefix or cls.__name__}: {err}") from None


def from_dict(cls: type[T], data: dict[str, Any]) -> T:
    """Build config ``cls`` from a plain mapping, overriding its defaults."""
    return _from_dict(cls, data)


def to_dict(config: Any) -> dict[str, Any]:
    """A plain, YAML/JSON-ready mapping of a config (tuples become lists)."""

    def plain(value: Any) -> Any:
        if is_dataclass(value) and not isinstance(value, type):
            return {f.name: plain(getattr(value, f.name)) for f in fields(value)}
        if isinstance(value, tuple | list):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, Path):
            return str(value)
        return value

    out = plain(config)
    assert isinstance(out, dict)
    return out


def is_model_name(value: str) -> bool:
    """Whether a MODEL_PATH value is a bundled model's name (``pp-tinypose-128x96``): a bare word
    with neither a folder nor a file suffix, where a checkpoint is a ``.safetensors`` file."""
    return bool(value) and Path(value).name == value and not Path(value).suffix


def _resolve_path(value: str, base: Path, kind: str) -> str:
    if kind == "model" and is_model_name(value):
        return value
    if Path(value).expanduser().is_absolute():
        return value
    return os.path.normpath(base / value)


def resolve_paths(config: T, base: str | Path) -> T:
    """``config`` with each relative path (fields marked PATH or MODEL_PATH, at any depth)
    joined to the folder ``base``; absolute paths and bundled model names are kept."""
    if not is_dataclass(config) or isinstance(config, type):
        return config
    base = Path(base).absolute()
    changes: dict[str, Any] = {}
    for f in fields(config):
        value = getattr(config, f.name)
        kind = f.metadata.get("path")
        new: Any
        if kind is not None and isinstance(value, str):
            new = _resolve_path(value, base, kind)
        elif isinstance(value, tuple):
            new = tuple(resolve_paths(v, base) for v in value)
        else:
            new = resolve_paths(value, base)
        if new != value:
            changes[f.name] = new
    return dataclasses.replace(config, **changes) if changes else config


class _StrictLoader(yaml.SafeLoader):
    """``yaml.safe_load`` without aliases and without duplicate keys.

    An alias (``*name``) repeats a node where it appears: nested ones make a 1 KB file expand to
    gigabytes (an "alias bomb"), and configs have no need of them. A key given twice would
    silently replace the first section by the second.
    """

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(
                None,
                None,
                f"aliases (*{cut(str(event.anchor))}) are not allowed in a config: "
                "write the values out",
                event.start_mark,
            )
        return super().compose_node(parent, index)

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        if isinstance(node, yaml.MappingNode):
            first: dict[str, Any] = {}
            for key_node, _ in node.value:
                if not isinstance(key_node, yaml.ScalarNode):
                    continue
                if key_node.value in first:
                    line = first[key_node.value].line + 1
                    raise yaml.constructor.ConstructorError(
                        None,
                        None,
                        f"duplicate key '{cut(key_node.value)}' (first given at line {line})",
                        key_node.start_mark,
                    )
                first[key_node.value] = key_node.start_mark
        return super().construct_mapping(node, deep)


def _yaml_problem(err: yaml.YAMLError) -> str:
    """A PyYAML error on one line: ``line L, column C: problem``."""
    if isinstance(err, yaml.MarkedYAMLError) and err.problem_mark is not None:
        mark = err.problem_mark
        return f"line {mark.line + 1}, column {mark.column + 1}: {err.problem}"
    return " ".join(str(err).split())


def read_yaml(path: str | Path) -> Any:
    """The YAML file ``path`` parsed (aliases and duplicate keys refused); ConfigError names
    the file and the line."""
    path = Path(path)
    try:
        return yaml.load(path.read_text(), Loader=_StrictLoader)
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text (YAML) file") from None
    except OSError as err:
        raise ConfigError(f"{path}: cannot read: {err.strerror or err}") from None
    except RecursionError:
        raise ConfigError(f"{path}: malformed YAML: nested too deeply") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: malformed YAML: {_yaml_problem(err)}") from None


def load_config(path: str | Path, cls: type[T]) -> T:
    """Read YAML ``path`` into config ``cls``; errors name the file and the key.

    Relative paths in the file (see PATH) are taken relative to the file's folder.
    """
    path = Path(path)
    data = read_yaml(path) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    try:
        return resolve_paths(from_dict(cls, data), path.parent)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None


def save_config(config: Any, path: str | Path) -> None:
    """Write ``config`` as YAML, atomically (a reader never sees half a file)."""
    write_text_atomic(path, yaml.safe_dump(to_dict(config), sort_keys=False))


def replace(config: T, **changes: Any) -> T:
    """``dataclasses.replace`` re-exported so callers need only this module."""
    return dataclasses.replace(config, **changes)  # type: ignore[type-var]
