"""Checkpoints: one safetensors file holding the weights and, in its header, what they are.

``model.safetensors`` is a complete, shareable model: its header metadata holds (as JSON under
the key ``metapose``) the resolved model config (architecture, input size, codec and input
normalisation), the config of the run that made it, provenance (git commit, versions) and
metrics. Loading never unpickles. Checkpoints of the earlier two-file format (a ``.json``
sidecar beside the weights) still load. A training state (optimiser tensors and counters) for
exact resume is stored as safetensors + JSON under another name. Every function that takes a
checkpoint also takes a bundled model's name (:mod:`metapose.models.zoo`).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from metapose.config import ConfigError, ModelConfig, from_dict, to_dict
from metapose.errors import DataError, cut
from metapose.files import parse_json
from metapose.models import TopDownModel
from metapose.models.zoo import resolve_model
from metapose.provenance import provenance

WEIGHTS_SUFFIX = ".safetensors"
FORMAT = "metapose-checkpoint/2"
LEGACY_FORMAT = "metapose-checkpoint/1"  # weights + JSON sidecar
METADATA_KEY = "metapose"
# What a file given as a checkpoint may be instead, and the command that reads it.
OTHER_FORMATS = {
    ".pth": "a PyTorch file: import it with `metapose import-weights FILE --format ...`",
    ".pt": "a PyTorch file: import it with `metapose import-weights FILE --format ...`",
    ".onnx": "an ONNX model: pass it with --onnx, or import it with `metapose import-weights`",
    ".param": "an ncnn model: import it with `metapose import-weights FILE --format ncnn`",
    ".bin": "ncnn weights: import the .param with `metapose import-weights FILE --format ncnn`",
    ".json": "a JSON file: pass the .safetensors beside it",
}


def sidecar_path(path: str | Path) -> Path:
    return Path(path).with_suffix(".json")


@dataclass(frozen=True)
class LoadedCheckpoint:
    model: TopDownModel
    meta: dict[str, Any]
    path: Path


def _storage_dtype(tensor: torch.Tensor, compact: bool) -> torch.Tensor:
    """``tensor`` as float16 when ``compact`` and float16 holds it exactly, else as it is."""
    if compact and tensor.dtype == torch.float32:
        half = tensor.half()
        if torch.equal(half.float(), tensor):
            return half
    return tensor


def _atomic_save_tensors(
    tensors: dict[str, torch.Tensor],
    path: Path,
    metadata: dict[str, str] | None = None,
    *,
    compact: bool = False,
) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        save_file(
            {k: _storage_dtype(v.detach().contiguous().cpu(), compact) for k, v in tensors.items()},
            str(tmp),
            metadata=metadata,
        )
        os.chmod(tmp, 0o666 & ~_umask())
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def save_checkpoint(
    path: str | Path,
    model: TopDownModel,
    *,
    run_config: Any = None,
    metrics: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
    compact: bool = False,
    origin: dict[str, Any] | None = None,
) -> Path:
    """Write ``path`` (``.safetensors``, metadata in its header); returns the path written.

    ``compact`` stores every float32 tensor that float16 holds exactly as float16 (weights
    converted from a float16 release lose nothing; the file is about half the size).
    ``origin`` replaces the provenance (versions, commit, time) by a fixed description, for files
    that must come out byte-identical whenever they are made again (the bundled zoo).
    """
    path = Path(path)
    if path.suffix != WEIGHTS_SUFFIX:
        path = path.with_suffix(WEIGHTS_SUFFIX)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "format": FORMAT,
        "model": to_dict(model.config),
        "run_config": to_dict(run_config) if run_config is not None else None,
        "metrics": metrics or {},
        "provenance": provenance() if origin is None else origin,
        **(extra or {}),
    }
    # One key only: safetensors writes its metadata map in no fixed order, and the bundled zoo
    # must come out byte-identical whenever it is converted again.
    header = {METADATA_KEY: json.dumps(meta)}
    _atomic_save_tensors(model.state_dict(), path, header, compact=compact)
    sidecar_path(path).unlink(missing_ok=True)  # an older format's sidecar would be stale
    return path


def _not_a_checkpoint(path: Path) -> DataError:
    what = OTHER_FORMATS.get(path.suffix.lower())
    if what:
        return DataError(path, f"not a metapose checkpoint: this is {what}")
    return DataError(path, "not a metapose checkpoint (expected a .safetensors file)")


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The metadata of checkpoint ``path``: from its header, or from an older format's sidecar."""
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as handle:
            header = handle.metadata() or {}
    except (SafetensorError, OSError, ValueError):
        raise _not_a_checkpoint(path) from None
    if METADATA_KEY in header:
        meta = parse_json(header[METADATA_KEY], path, field=f"header {METADATA_KEY}")
    else:
        meta = _read_sidecar(path)
    if not isinstance(meta, dict) or not isinstance(meta.get("model"), dict):
        raise DataError(path, "checkpoint metadata has no model config", field="model")
    return meta


def _read_sidecar(path: Path) -> Any:
    side = sidecar_path(path)
    if not side.is_file():
        raise DataError(
            path,
            "safetensors file without metapose metadata (neither in its header nor in a "
            f"{side.name} beside it): import plain weights with `metapose import-weights`",
        )
    try:
        text = side.read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(side, f"cannot read: {err}") from None
    return parse_json(text, side)


def load_checkpoint(path: str | Path, device: torch.device | str = "cpu") -> LoadedCheckpoint:
    """Rebuild the model of a checkpoint (a path or a bundled model's name), load its weights."""
    path = resolve_model(path)
    if not path.is_file():
        raise DataError(path, "checkpoint not found (give a .safetensors file or a zoo name)")
    meta = read_metadata(path)
    try:
        config = from_dict(ModelConfig, meta["model"])
    except ConfigError as err:
        raise DataError(path, f"checkpoint model config: {err}") from None
    model = TopDownModel(config)
    state = load_file(str(path), device=str(device))
    load_state_strict(model, state, path)
    return LoadedCheckpoint(model.to(device), meta, path)


def load_state_strict(model: nn.Module, state: dict[str, torch.Tensor], source: str | Path) -> None:
    """``load_state_dict`` whose failure names the file and the first offending keys."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mismatched = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or mismatched:
        parts = []
        if missing:
            parts.append(f"missing {missing[:3]}")
        if unexpected:
            parts.append(f"unexpected {unexpected[:3]}")
        if mismatched:
            k = mismatched[0]
            parts.append(
                f"shape of {k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
            )
        raise DataError(source, "weights do not fit the model: " + "; ".join(parts))
    check_weights(state, own, source)
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()})


def first_non_finite(state: dict[str, torch.Tensor]) -> str | None:
    """The name of the first floating tensor of ``state`` holding NaN or inf, or None."""
    for key, value in state.items():
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            return key
    return None


def check_weights(
    state: dict[str, torch.Tensor], own: dict[str, torch.Tensor], source: str | Path
) -> None:
    """Refuse weights that would load but compute nonsense: an integer (e.g. int8-quantised)
    tensor where the model holds floats (a plain cast would drop its scale), NaN or infinite
    values, or a negative BatchNorm variance. The message names the file and the tensor."""
    for key, value in state.items():
        if not own[key].is_floating_point():
            continue
        if not value.is_floating_point():
            raise DataError(
                source,
                f"tensor is {str(value.dtype).removeprefix('torch.')}, the model needs floating "
                "point (quantised weights are not read)",
                field=key,
            )
        if first_non_finite({key: value}):
            raise DataError(
                source, "tensor holds NaN or infinite values: the weights are broken", field=key
            )
        if key.endswith("running_var") and bool((value < 0).any()):
            raise DataError(
                source, "BatchNorm variance is negative: the weights are broken", field=key
            )


# ------------------------------------------------------------------- training state (resume)


def _split_tensors(obj: Any, prefix: str, tensors: dict[str, torch.Tensor]) -> Any:
    """Move every tensor of a nested structure into ``tensors``; leave a reference string."""
    if isinstance(obj, torch.Tensor):
        tensors[prefix] = obj
        return {"__tensor__": prefix}
    if isinstance(obj, dict):
        return {str(k): _split_tensors(v, f"{prefix}.{k}", tensors) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_split_tensors(v, f"{prefix}.{i}", tensors) for i, v in enumerate(obj)]
    return obj


def _join_tensors(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, dict):
        if set(obj) == {"__tensor__"}:
            return tensors[obj["__tensor__"]]
        return {k: _join_tensors(v, tensors) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_join_tensors(v, tensors) for v in obj]
    return obj


STATE_KEY = "metapose_state"  # header key of a training state's nested non-tensor part


def save_state(path: str | Path, state: dict[str, Any]) -> None:
    """Save a nested training state (tensors, numbers, strings) as one safetensors file.

    The non-tensor part goes into the file's header, so the state is written as one unit
    through a temporary file and a rename: a process killed at any moment leaves either the
    previous state or the new one, never a mix of two steps.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, torch.Tensor] = {}
    skeleton = _split_tensors(state, "s", tensors)
    _atomic_save_tensors(tensors, path, {STATE_KEY: json.dumps(skeleton, allow_nan=False)})
    sidecar_path(path).unlink(missing_ok=True)  # an older format's sidecar would be stale


def load_state(path: str | Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    """A state written by :func:`save_state` (or by the older safetensors + JSON pair)."""
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as handle:
            header = handle.metadata() or {}
        tensors = load_file(str(path), device=str(device))
        text = header.get(STATE_KEY)
        if text is None:
            text = sidecar_path(path).read_text()
        skeleton = parse_json(text, path, field=f"header {STATE_KEY}")
        out = _join_tensors(skeleton, tensors)
    except DataError:
        raise
    except (SafetensorError, OSError, ValueError, KeyError, TypeError) as err:
        raise DataError(
            path, f"unreadable training state ({cut(str(err), 80)}); start over with --no-resume"
        ) from None
    if not isinstance(out, dict) or "step" not in out:
        raise DataError(path, "training state without a step; start over with --no-resume")
    return out


def optimizer_state_from_json(state: dict[str, Any]) -> dict[str, Any]:
    """JSON turned optimiser state keys into strings; torch wants parameter indices as ints."""
    return {
        "state": {int(k): v for k, v in state["state"].items()},
        "param_groups": state["param_groups"],
    }


def scheduler_state_from_json(state: dict[str, Any]) -> dict[str, Any]:
    """JSON turned a MultiStepLR's milestone steps into strings; the scheduler needs ints.

    With string keys ``step in milestones`` is never true and a resumed run stops decaying.
    """
    from collections import Counter

    out = dict(state)
    if isinstance(out.get("milestones"), dict):
        out["milestones"] = Counter({int(k): int(v) for k, v in out["milestones"].items()})
    return out
