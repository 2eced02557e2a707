import json
import re
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from metapose.config import CodecConfig, Normalization, replace
from metapose.errors import DataError
from metapose.models import TopDownModel
from metapose.models.checkpoint import (
    load_checkpoint,
    load_state,
    optimizer_state_from_json,
    save_checkpoint,
    save_state,
)
from tests.conftest import TINY_MODEL


def test_checkpoint_round_trip_rebuilds_the_same_model(
    tmp_path: Path, tiny_model: TopDownModel
) -> None:
    path = save_checkpoint(tmp_path / "m", tiny_model, metrics={"ap": 0.5})
    assert path.suffix == ".safetensors" and not path.with_suffix(".json").exists()
    loaded = load_checkpoint(path)
    assert loaded.model.config == TINY_MODEL and loaded.meta["metrics"] == {"ap": 0.5}
    for k, v in tiny_model.state_dict().items():
        assert torch.equal(v, loaded.model.state_dict()[k])
    assert "git_commit" in loaded.meta["provenance"]


def test_one_file_carries_codec_and_normalisation(tmp_path: Path) -> None:
    config = replace(
        TINY_MODEL,
        codec=CodecConfig(crop="udp", encoding="udp", dark=True, sigma_at_48=3.0),
        normalization=Normalization(mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25)),
    )
    path = save_checkpoint(tmp_path / "m", TopDownModel(config))
    moved = tmp_path / "elsewhere" / "shared.safetensors"
    moved.parent.mkdir()
    path.rename(moved)  # alone, without anything beside it
    assert load_checkpoint(moved).model.config == config


def test_checkpoint_file_is_not_a_pickle(tmp_path: Path, tiny_model: TopDownModel) -> None:
    path = save_checkpoint(tmp_path / "m.safetensors", tiny_model)
    header_len = int.from_bytes(path.read_bytes()[:8], "little")
    header = json.loads(path.read_bytes()[8 : 8 + header_len])
    assert "conv1.weight" not in header and "backbone.conv1.weight" in header  # safetensors header


def test_two_file_checkpoints_of_earlier_versions_still_load(
    tmp_path: Path, tiny_model: TopDownModel
) -> None:
    """The format before one-file checkpoints: bare safetensors + a sidecar with ``depth``."""
    path = tmp_path / "old.safetensors"
    save_file({k: v.contiguous() for k, v in tiny_model.state_dict().items()}, str(path))
    legacy_model = {
        "depth": 18,
        "num_keypoints": 17,
        "input_size": list(TINY_MODEL.input_size),
        "deconv_channels": list(TINY_MODEL.deconv_channels),
        "deconv_kernel": 4,
    }
    path.with_suffix(".json").write_text(
        json.dumps({"format": "metapose-checkpoint/1", "model": legacy_model, "metrics": {}})
    )
    loaded = load_checkpoint(path)
    assert loaded.model.config == TINY_MODEL
    for k, v in tiny_model.state_dict().items():
        assert torch.equal(v, loaded.model.state_dict()[k])


def test_compact_storage_is_lossless_for_half_precision_weights(
    tmp_path: Path, tiny_model: TopDownModel
) -> None:
    with torch.no_grad():
        tiny_model.final_layer.weight.copy_(tiny_model.final_layer.weight.half().float())
    full = save_checkpoint(tmp_path / "full", tiny_model)
    compact = save_checkpoint(tmp_path / "compact", tiny_model, compact=True)
    assert compact.stat().st_size < full.stat().st_size
    reloaded = load_checkpoint(compact).model.state_dict()
    for k, v in tiny_model.state_dict().items():
        assert torch.equal(v, reloaded[k]), k


def test_mismatched_weights_name_the_file_and_key(tmp_path: Path, tiny_model: TopDownModel) -> None:
    other = TopDownModel(replace(TINY_MODEL, num_keypoints=14))
    path = save_checkpoint(tmp_path / "m", other)
    state = {k: v.contiguous() for k, v in tiny_model.state_dict().items()}
    save_file(state, str(path), metadata=safe_open(str(path), "pt").metadata())
    with pytest.raises(DataError, match=r"m\.safetensors.*final_layer"):
        load_checkpoint(path)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("model.pth", b"PK\x03\x04 not really", "PyTorch file: import it with `metapose"),
        ("model.onnx", b"\x08\x07", "ONNX model: pass it with --onnx"),
        ("model.json", b"{}", "JSON file"),
        ("model.safetensors", b"garbage", "not a metapose checkpoint"),
    ],
)
def test_other_files_given_as_checkpoint_say_what_they_are(
    tmp_path: Path, name: str, content: bytes, message: str
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(DataError, match=re.escape(message)):
        load_checkpoint(path)


def test_plain_safetensors_without_metadata_points_to_import_weights(
    tmp_path: Path, tiny_model: TopDownModel
) -> None:
    path = tmp_path / "plain.safetensors"
    save_file({k: v.contiguous() for k, v in tiny_model.state_dict().items()}, str(path))
    with pytest.raises(DataError, match="import-weights"):
        load_checkpoint(path)


def test_training_state_restores_the_optimiser_exactly(
    tmp_path: Path, tiny_model: TopDownModel
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
