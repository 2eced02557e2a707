import json
from pathlib import Path

import pytest
import torch

from metapose.checkpoint import (
    load_checkpoint,
    load_state,
    optimizer_state_from_json,
    save_checkpoint,
    save_state,
)
from metapose.errors import DataError
from metapose.model import PoseResNet
from tests.conftest import TINY_MODEL


def test_checkpoint_round_trip_rebuilds_the_same_model(
    tmp_path: Path, tiny_model: PoseResNet
) -> None:
    path = save_checkpoint(tmp_path / "m", tiny_model, metrics={"ap": 0.5})
    assert path.suffix == ".safetensors" and path.with_suffix(".json").is_file()
    loaded = load_checkpoint(path)
    assert loaded.model.config == TINY_MODEL and loaded.meta["metrics"] == {"ap": 0.5}
    for k, v in tiny_model.state_dict().items():
        assert torch.equal(v, loaded.model.state_dict()[k])
    assert "git_commit" in loaded.meta["provenance"]


def test_checkpoint_file_is_not_a_pickle(tmp_path: Path, tiny_model: PoseResNet) -> None:
    path = save_checkpoint(tmp_path / "m.safetensors", tiny_model)
    header_len = int.from_bytes(path.read_bytes()[:8], "little")
    header = json.loads(path.read_bytes()[8 : 8 + header_len])
    assert "conv1.weight" not in header and "backbone.conv1.weight" in header  # safetensors header


def test_mismatched_weights_name_the_file_and_key(tmp_path: Path, tiny_model: PoseResNet) -> None:
    path = save_checkpoint(tmp_path / "m", tiny_model)
    meta = json.loads(path.with_suffix(".json").read_text())
    meta["model"]["num_keypoints"] = 14
    path.with_suffix(".json").write_text(json.dumps(meta))
    with pytest.raises(DataError, match=r"m\.safetensors.*final_layer"):
        load_checkpoint(path)


def test_training_state_restores_the_optimiser_exactly(
    tmp_path: Path, tiny_model: PoseResNet
) -> None:
    opt = torch.optim.Adam(tiny_model.parameters(), lr=1e-3)
    tiny_model(torch.randn(2, 3, 64, 32)).sum().backward()
    opt.step()
    save_state(tmp_path / "s.safetensors", {"optimizer": opt.state_dict(), "step": 1})
    state = load_state(tmp_path / "s.safetensors")
    fresh = torch.optim.Adam(tiny_model.parameters(), lr=1e-3)
    fresh.load_state_dict(optimizer_state_from_json(state["optimizer"]))
    a, b = opt.state_dict()["state"][0], fresh.state_dict()["state"][0]
    assert torch.equal(a["exp_avg"], b["exp_avg"]) and torch.equal(a["step"], b["step"])
    assert state["step"] == 1
