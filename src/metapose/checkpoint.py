"""Checkpoints: safetensors weights plus a JSON sidecar; loading never unpickles.

``model.safetensors`` holds the state dict; ``model.json`` beside it holds the resolved model config
(enough to rebuild the network), the config of the run, provenance (git commit, versions) and
metrics. A training state (optimiser tensors and counters) for exact resume is stored the same
way under another name.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from metapose.config import ModelConfig, from_dict, to_dict
from metapose.data.coco import write_json_atomic
from metapose.errors import DataError
from metapose.model import PoseResNet
from metapose.provenance import provenance

WEIGHTS_SUFFIX = ".safetensors"


def sidecar_path(path: str | Path) -> Path:
    return Path(path).with_suffix(".json")


@dataclass(frozen=True)
class LoadedCheckpoint:
    model: PoseResNet
    meta: dict[str, Any]


def _atomic_save_tensors(
    tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str] | None = None
) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    save_file(
        {k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp), metadata=metadata
    )
    tmp.replace(path)


def save_checkpoint(
    path: str | Path,
    model: PoseResNet,
    *,
    run_config: Any = None,
    metrics: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write ``path`` (``.safetensors``) and its JSON sidecar; returns the weights path."""
    path = Path(path)
    if path.suffix != WEIGHTS_SUFFIX:
        path = path.with_suffix(WEIGHTS_SUFFIX)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "format": "metapose-checkpoint/1",
        "model": to_dict(model.config),
        "run_config": to_dict(run_config) if run_config is not None else None,
        "metrics": metrics or {},
        "provenance": provenance(),
        **(extra or {}),
    }
    _atomic_save_tensors(model.state_dict(), path, {"format": "metapose-checkpoint/1"})
    write_json_atomic(sidecar_path(path), meta, indent=2)
    return path


def read_sidecar(path: str | Path) -> dict[str, Any]:
    side = sidecar_path(path)
    if not side.is_file():
        raise DataError(
            side, "checkpoint sidecar not found (expected beside the .safetensors file)"
        )
    try:
        meta = json.loads(side.read_text())
    except json.JSONDecodeError as err:
        raise DataError(side, f"malformed JSON at line {err.lineno}: {err.msg}") from None
    if not isinstance(meta, dict) or "model" not in meta:
        raise DataError(side, "missing key", field="model")
    return meta


def load_checkpoint(path: str | Path, device: torch.device | str = "cpu") -> LoadedCheckpoint:
    """Rebuild the model of a checkpoint from its sidecar and load its weights (strictly)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "checkpoint not found")
    meta = read_sidecar(path)
    config = from_dict(ModelConfig, meta["model"])
    model = PoseResNet(config)
    state = load_file(str(path), device=str(device))
    load_state_strict(model, state, path)
    return LoadedCheckpoint(model.to(device), meta)


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
    model.load_state_dict(state)


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


def save_state(path: str | Path, state: dict[str, Any]) -> None:
    """Save a nested training state (tensors, numbers, strings) as safetensors + JSON."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, torch.Tensor] = {}
    skeleton = _split_tensors(state, "s", tensors)
    _atomic_save_tensors(tensors, path)
    write_json_atomic(sidecar_path(path), skeleton)


def load_state(path: str | Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    path = Path(path)
    tensors = load_file(str(path), device=str(device))
    skeleton = json.loads(sidecar_path(path).read_text())
    out = _join_tensors(skeleton, tensors)
    assert isinstance(out, dict)
    return out


def optimizer_state_from_json(state: dict[str, Any]) -> dict[str, Any]:
    """JSON turned optimiser state keys into strings; torch wants parameter indices as ints."""
    return {
        "state": {int(k): v for k, v in state["state"].items()},
        "param_groups": state["param_groups"],
    }
