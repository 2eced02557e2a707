"""Weight import: state dicts in the documented key layouts, round-tripped output for output.

The layouts and the reference forward pass below are written from the ResNet paper and the
SimpleBaseline release, independently of :mod:`metapose.resnet`, so a renaming or wiring error in
the importer (or a stride on the wrong convolution) shows up as different heatmaps.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import Tensor

from metapose.config import ModelConfig, ResNetConfig
from metapose.errors import DataError
from metapose.models.checkpoint import load_checkpoint
from metapose.models.weights import import_checkpoint, import_weights
from metapose.models.weights.layouts import input_size_from_name, read_weights

BLOCKS = {18: ("basic", (2, 2, 2, 2)), 50: ("bottleneck", (3, 4, 6, 3))}
PLANES = (64, 128, 256, 512)
BN_EPS = 1e-5


def _bn_layout(prefix: str, channels: int) -> Iterator[tuple[str, tuple[int, ...]]]:
    for name in ("weight", "bias", "running_mean", "running_var"):
        yield f"{prefix}.{name}", (channels,)
    yield f"{prefix}.num_batches_tracked", ()


def resnet_layout(depth: int) -> dict[str, tuple[int, ...]]:
    """torchvision's ResNet parameter names and shapes (without ``fc``)."""
    kind, counts = BLOCKS[depth]
    expansion = 4 if kind == "bottleneck" else 1
    layout = {"conv1.weight": (64, 3, 7, 7), **dict(_bn_layout("bn1", 64))}
    inplanes = 64
    for stage, (planes, blocks) in enumerate(zip(PLANES, counts, strict=True), start=1):
        for j in range(blocks):
            p = f"layer{stage}.{j}"
            if kind == "basic":
                convs = [(planes, inplanes, 3, 3), (planes, planes, 3, 3)]
            else:
                convs = [
                    (planes, inplanes, 1, 1),
                    (planes, planes, 3, 3),
                    (planes * expansion, planes, 1, 1),
                ]
            for c, shape in enumerate(convs, start=1):
                layout[f"{p}.conv{c}.weight"] = shape
                layout.update(_bn_layout(f"{p}.bn{c}", shape[0]))
            if j == 0 and (stage > 1 or inplanes != planes * expansion):
                layout[f"{p}.downsample.0.weight"] = (planes * expansion, inplanes, 1, 1)
                layout.update(_bn_layout(f"{p}.downsample.1", planes * expansion))
            inplanes = planes * expansion
    return layout


def head_layout(
    in_channels: int, channels: tuple[int, ...], keypoints: int, final_kernel: int = 1
) -> dict[str, tuple[int, ...]]:
    """SimpleBaseline's head: ``deconv_layers.{0,1,3,4,6,7}``, ``final_layer``."""
    layout: dict[str, tuple[int, ...]] = {}
    for i, c in enumerate(channels):
        layout[f"deconv_layers.{3 * i}.weight"] = (in_channels, c, 4, 4)
        layout.update(_bn_layout(f"deconv_layers.{3 * i + 1}", c))
        in_channels = c
    layout["final_layer.weight"] = (keypoints, in_channels, final_kernel, final_kernel)
    layout["final_layer.bias"] = (keypoints,)
    return layout


def random_state(layout: dict[str, tuple[int, ...]], seed: int) -> dict[str, Tensor]:
    """Random values that keep activations finite and BatchNorm statistics valid."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for name, shape in layout.items():
        if name.endswith("num_batches_tracked"):
            state[name] = torch.tensor(7)
        elif name.endswith("running_var") or (name.endswith(".weight") and len(shape) == 1):
            state[name] = 0.5 + torch.rand(shape, generator=g)
        elif len(shape) == 1:
            state[name] = 0.1 * torch.randn(shape, generator=g)
        else:
            # ConvTranspose2d weights are (in, out, kh, kw); the others (out, in, ...).
            fan_in = math.prod(shape[:1] + shape[2:] if name.startswith("deconv") else shape[1:])
            state[name] = torch.randn(shape, generator=g) * (2.0 / fan_in) ** 0.5
    return state


def _bn(s: dict[str, Tensor], x: Tensor, p: str) -> Tensor:
    return F.batch_norm(
        x,
        s[f"{p}.running_mean"],
        s[f"{p}.running_var"],
        s[f"{p}.weight"],
        s[f"{p}.bias"],
        training=False,
        eps=BN_EPS,
    )


def _conv_bn(s: dict[str, Tensor], x: Tensor, p: str, c: str, stride: int = 1) -> Tensor:
    """Convolution ``{p}.conv{c}`` (padding keeps the size) then BatchNorm ``{p}.bn{c}``."""
    weight = s[f"{p}.conv{c}.weight"]
    return _bn(s, F.conv2d(x, weight, stride=stride, padding=weight.shape[-1] // 2), f"{p}.bn{c}")


def reference_backbone(s: dict[str, Tensor], depth: int, x: Tensor) -> Tensor:
    """ResNet v1.5 from the torchvision-named tensors ``s`` (stride on the 3x3 convolution)."""
    kind, counts = BLOCKS[depth]
    x = F.max_pool2d(
        F.relu(_bn(s, F.conv2d(x, s["conv1.weight"], stride=2, padding=3), "bn1")), 3, 2, 1
    )
    for stage, blocks in enumerate(counts, start=1):
        for j in range(blocks):
            p = f"layer{stage}.{j}"
            stride = 2 if stage > 1 and j == 0 else 1
            identity = x
            if f"{p}.downsample.0.weight" in s:
                shortcut = F.conv2d(x, s[f"{p}.downsample.0.weight"], stride=stride)
                identity = _bn(s, shortcut, f"{p}.downsample.1")
            if kind == "basic":
                out = _conv_bn(s, F.relu(_conv_bn(s, x, p, "1", stride)), p, "2")
            else:
                out = F.relu(_conv_bn(s, x, p, "1"))
                out = F.relu(_conv_bn(s, out, p, "2", stride))
                out = _conv_bn(s, out, p, "3")
            x = F.relu(out + identity)
    return x


def reference_head(s: dict[str, Tensor], x: Tensor) -> Tensor:
    i = 0
    while f"deconv_layers.{i}.weight" in s:
        x = F.conv_transpose2d(x, s[f"deconv_layers.{i}.weight"], stride=2, padding=1)
        p = f"deconv_layers.{i + 1}"
        x = F.relu(_bn(s, x, p))
        i += 3
    return F.conv2d(x, s["final_layer.weight"], s["final_layer.bias"])


TINY_HEAD = (16, 16, 16)


def simplebaseline_state(
    depth: int, head: tuple[int, ...] = TINY_HEAD, seed: int = 0
) -> dict[str, Tensor]:
    backbone = resnet_layout(depth)
    out_channels = backbone[max(k for k in backbone if k.startswith("layer4.0.conv"))][0]
    return random_state({**backbone, **head_layout(out_channels, head, 17)}, seed)


def images(height: int = 64, width: int = 32) -> Tensor:
    return torch.randn(2, 3, height, width, generator=torch.Generator().manual_seed(1))


def assert_close(actual: Tensor, expected: Tensor) -> None:
    assert actual.shape == expected.shape
    assert expected.abs().max() > 1e-2  # values large enough that a wiring error would show
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------------------------ round trips


@pytest.mark.parametrize("depth", [18, 50])
def test_simplebaseline_release_round_trips_output_for_output(tmp_path: Path, depth: int) -> None:
    state = simplebaseline_state(depth)
    path = tmp_path / "pose_resnet_256x192.pth.tar"
    torch.save(state, path)
    model, report = import_weights(path, "simplebaseline", input_size=(32, 64))
    assert report.complete and not report.fresh
    assert len(report.loaded) == len(state)
    assert (
        model.config.backbone == ResNetConfig(depth=depth)
        and model.config.deconv_channels == TINY_HEAD
    )
    x = images()
    with torch.no_grad():
        actual = model.eval()(x)
    assert_close(actual, reference_head(state, reference_backbone(state, depth, x)))


def test_mmpose_checkpoint_round_trips_output_for_output(tmp_path: Path) -> None:
    state = simplebaseline_state(18, seed=3)
    mmpose = {
        (f"backbone.{k}" if k.startswith(("conv1", "bn1", "layer")) else f"head.{k}"): v
        for k, v in state.items()
    }
    path = tmp_path / "td-hm_res18_8xb64-210e_coco-256x192-deadbeef_20230101.pth"
    torch.save({"meta": {"epoch": 210, "mmpose_version": "1.3.0"}, "state_dict": mmpose}, path)
    model, report = import_weights(path, "mmpose", input_size=(32, 64))
    assert report.complete
    x = images()
    with torch.no_grad():
        actual = model.eval()(x)
    assert_close(actual, reference_head(state, reference_backbone(state, 18, x)))


def test_torchvision_weights_become_the_backbone_and_the_head_stays_fresh(tmp_path: Path) -> None:
    layout = resnet_layout(18)
    layout.update({"fc.weight": (1000, 512), "fc.bias": (1000,)})
    state = random_state(layout, seed=5)
    path = tmp_path / "resnet18-f37072fd.safetensors"
    save_file(state, str(path))
    model, report = import_weights(path, "torchvision", input_size=(32, 64))
    assert report.complete
    assert set(report.dropped) == {"fc.weight", "fc.bias"}
    assert report.fresh and all(
        k.startswith(("deconv_layers.", "final_layer.")) for k in report.fresh
    )
    x = images()
    with torch.no_grad():
        features = model.eval().forward_features(x)
    assert_close(features, reference_backbone(state, 18, x))
    # Same init seed, same fresh head: the import is reproducible to the byte.
    again, _ = import_weights(path, "torchvision", input_size=(32, 64))
    assert torch.equal(again.final_layer.weight, model.final_layer.weight)


def test_import_writes_a_checkpoint_that_loads_back(tmp_path: Path) -> None:
    state = simplebaseline_state(18)
    src = tmp_path / "pose_resnet_18_256x192.pth"
    torch.save({f"module.{k}": v for k, v in state.items()}, src)  # a DataParallel save
    written, report, _ = import_checkpoint(src, "simplebaseline", tmp_path / "out" / "imported")
    loaded = load_checkpoint(written)
    assert loaded.model.config.input_size == (192, 256)  # from "256x192" in the file name
    assert loaded.meta["imported_from"]["format"] == "simplebaseline"
    assert loaded.meta["imported_from"]["loaded"] == len(report.loaded) == len(state)
    for key, value in loaded.model.state_dict().items():
        expected = state[key.removeprefix("backbone.")]
        assert torch.equal(value, expected.to(value.dtype)), key


def test_resnet50_release_layout_matches_names_and_shapes(tmp_path: Path) -> None:
    layout = {**resnet_layout(50), **head_layout(2048, (256, 256, 256), 17)}
    path = tmp_path / "pose_resnet_50_384x288.pth.tar"
    torch.save({k: torch.zeros(shape) for k, shape in layout.items()}, path)
    model, report = import_weights(path, "simplebaseline")
    assert report.complete and len(report.loaded) == len(layout) == len(model.state_dict())
    assert model.config == ModelConfig(backbone=ResNetConfig(depth=50), input_size=(288, 384))


def test_checkpoints_without_batchnorm_counters_still_load_completely(tmp_path: Path) -> None:
    state = {k: v for k, v in simplebaseline_state(18).items() if "num_batches" not in k}
    path = tmp_path / "old.pth"
    torch.save(state, path)
    _, report = import_weights(path, "simplebaseline", input_size=(32, 64))
    assert report.complete and len(report.loaded) == len(state)


# ------------------------------------------------------------------------------ mismatches


def test_a_head_that_does_not_fit_is_reported_or_refused(tmp_path: Path) -> None:
    backbone = resnet_layout(18)
    layout = {**backbone, **head_layout(512, TINY_HEAD, 17, final_kernel=3)}
    layout["layer5.0.conv1.weight"] = (8, 8, 1, 1)
    state = random_state(layout, seed=2)
    path = tmp_path / "odd.pth"
    torch.save(state, path)
    with pytest.raises(DataError, match=r"(?s)odd\.pth.*final_layer\.weight"):
        import_weights(path, "simplebaseline", input_size=(32, 64))
    model, report = import_weights(path, "simplebaseline", input_size=(32, 64), strict=False)
    assert [m.key for m in report.shape_mismatches] == ["final_layer.weight"]
    assert report.shape_mismatches[0].file_shape == (17, 16, 3, 3)
    assert report.unexpected == ("layer5.0.conv1.weight",)
    assert torch.equal(model.final_layer.bias, state["final_layer.bias"])
    assert torch.equal(model.backbone.conv1.weight, state["conv1.weight"])


def test_missing_backbone_tensors_are_named(tmp_path: Path) -> None:
    state = simplebaseline_state(18)
    del state["layer2.0.bn1.running_var"]
    path = tmp_path / "holes.pth"
    torch.save(state, path)
    with pytest.raises(DataError, match="backbone.layer2.0.bn1.running_var"):
        import_weights(path, "simplebaseline", input_size=(32, 64))


def test_the_wrong_format_is_one_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "sb.pth"
    torch.save(simplebaseline_state(18), path)
    with pytest.raises(DataError, match=r"sb\.pth: no key of the 'mmpose' layout"):
        import_weights(path, "mmpose")


class Payload:
    """Not a tensor: weights_only loading must refuse to build it."""


def test_files_that_are_not_state_dicts_are_refused(tmp_path: Path) -> None:
    pickled = tmp_path / "code.pth"
    torch.save({"state_dict": {"conv1.weight": torch.zeros(1)}, "hook": Payload()}, pickled)
    with pytest.raises(DataError, match=r"code\.pth: holds Python objects .*Payload.*weights_only"):
        read_weights(pickled)
    tensor = tmp_path / "tensor.pth"
    torch.save(torch.zeros(3), tensor)
    with pytest.raises(DataError, match=r"tensor\.pth: expected a state dict"):
        read_weights(tensor)
    mixed = tmp_path / "mixed.pth"
    torch.save({"conv1.weight": torch.zeros(1), "epoch": 3}, mixed)
    with pytest.raises(DataError, match=r"mixed\.pth.*'epoch'.*int"):
        read_weights(mixed)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"neither a zip archive nor a pickle")
    with pytest.raises(DataError, match=r"garbage\.pth: not a PyTorch weights file"):
        read_weights(garbage)
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(DataError, match=r"broken\.safetensors: not a readable safetensors"):
        read_weights(broken)
    with pytest.raises(DataError, match="not found"):
        read_weights(tmp_path / "absent.pth")


def test_input_size_is_read_from_release_file_names() -> None:
    assert input_size_from_name("pose_resnet_152_384x288.pth.tar") == (288, 384)
    assert input_size_from_name("td-hm_res50_8xb64-210e_coco-256x192-04af38ce_20220923.pth") == (
        192,
        256,
    )
    assert input_size_from_name("resnet50-0676ba61.pth") is None
    assert input_size_from_name("model_250x190.pth") is None  # not a multiple of 32
