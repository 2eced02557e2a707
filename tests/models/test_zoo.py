"""The bundled zoo: present in the package, loadable by name, reproducible from the release."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from metapose.cli import main
from metapose.config import LiteHRNetConfig
from metapose.models.checkpoint import load_checkpoint
from metapose.models.zoo import ZOO, resolve_model
from tests.conftest import REPO

SHARED_MODELS = REPO.parent / "shared" / "models"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("name", sorted(ZOO))
def test_zoo_files_ship_with_the_package_and_match_their_checksums(name: str) -> None:
    entry = ZOO[name]
    assert entry.path.is_file(), f"{entry.path} missing: run scripts/convert_zoo.py"
    assert sha256(entry.path) == entry.sha256


@pytest.mark.parametrize("name", sorted(ZOO))
def test_zoo_models_load_by_name_with_their_codec(name: str) -> None:
    loaded = load_checkpoint(name)
    config = loaded.model.config
    assert isinstance(config.backbone, LiteHRNetConfig) and config.deconv_channels == ()
    assert config.codec.crop == "udp" and config.codec.dark and config.stride == 4
    w, h = config.input_size
    assert name.endswith(f"{h}x{w}")
    with torch.no_grad():
        heatmaps = loaded.model.eval()(torch.zeros(1, 3, h, w))
    assert heatmaps.shape == (1, 17, h // 4, w // 4)
    assert (
        resolve_model(name) == ZOO[name].path
        and resolve_model("x.safetensors").name == "x.safetensors"
    )


def test_conversion_reproduces_the_shipped_files(tmp_path: Path) -> None:
    if not (SHARED_MODELS / "pp_tinypose").is_dir():
        pytest.skip(f"the PP-TinyPose release is not at {SHARED_MODELS} (../shared/models)")
    subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "convert_zoo.py"),
            "--models",
            str(SHARED_MODELS),
            "--out",
            str(tmp_path),
        ],
        check=True,
        capture_output=True,
    )
    for entry in ZOO.values():
        assert_same_checkpoint(tmp_path / entry.file, entry.path)


def assert_same_checkpoint(made: Path, shipped: Path) -> None:
    """The same metadata and tensors; calibrated BatchNorm statistics within measurement noise.

    The statistics are averages over real crops, whose last bits depend on the CPU's kernels and
    on the image library's resampling, so the bytes match on one machine but not across machines
    or package versions: with OpenCV 5.1 the re-conversion moved them by up to 3.1e-4 of each
    tensor's largest magnitude (relative to single values near 0, by far more), hence a tolerance
    of 1e-3 of that magnitude. A wrong layer, order or scale moves a tensor by its own size.
    """
    with safe_open(made, "pt") as a, safe_open(shipped, "pt") as b:
        assert a.metadata() == b.metadata(), made.name
        keys = sorted(a.keys())
        assert keys == sorted(b.keys()), made.name
        for key in keys:
            x, y = a.get_tensor(key), b.get_tensor(key)
            assert x.shape == y.shape, key
            scale = float(y.float().abs().max())
            torch.testing.assert_close(
                x.float(), y.float(), rtol=1e-3, atol=max(1e-5, 1e-3 * scale), msg=key
            )


def test_zoo_command_lists_every_model(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["zoo"]) == 0
    out = capsys.readouterr().out
    for entry in ZOO.values():
        assert entry.name in out and f"{entry.published_ap:.3f}" in out
