"""ncnn import: PP-TinyPose's released files against the ncnn runtime, tiny Lite-HRNets written
to ncnn files here and read back, and bad files."""

from __future__ import annotations

import json
import struct
from collections import Counter
from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch import Tensor, nn

from metapose.config import LiteHRNetConfig, ModelConfig, Normalization
from metapose.errors import DataError
from metapose.models import TopDownModel
from metapose.models.backbones.lite_hrnet import ConvNorm, LiteHRNetModule, SeparableConv
from metapose.models.weights.ncnn import import_ncnn
from metapose.models.weights.ncnn_reader import TAG_FLOAT16, read_ncnn
from tests.conftest import REPO

SHARED = REPO.parent / "shared"
PP_TINYPOSE = SHARED / "models" / "pp_tinypose"
COCO_MINI = SHARED / "data" / "coco" / "mini"
INPUT_BLOB = "image"
OUTPUT_BLOB = "save_infer_model/scale_0.tmp_1"
MAX_DIFF = 1e-3
MIN_PEAK_AGREEMENT = 0.995
CROP_PADDING = 1.25

TINY = LiteHRNetConfig(
    stem_channels=8,
    branch_channels=(8, 16, 24, 32),
    modules_per_stage=(1, 2, 1),
    blocks_per_module=2,
)
TINY_MODEL = ModelConfig(backbone=TINY, num_keypoints=5, input_size=(64, 96), deconv_channels=())


def require_shared(path: Path) -> Path:
    """Skip, saying why, when the shared models and data beside the repository are absent."""
    if not path.exists():
        pytest.skip(f"{path} not found: PP-TinyPose's ncnn files and COCO mini live in ../shared")
    return path


# ----------------------------------------------------------------------------- ncnn helpers


def run_ncnn(
    param: Path, weights: Path, images: np.ndarray, output: str = OUTPUT_BLOB
) -> np.ndarray:
    """``(B, 3, H, W)`` -> the ncnn runtime's outputs, in float32 throughout (no fp16)."""
    ncnn = pytest.importorskip("ncnn", reason="the ncnn runtime (PyPI 'ncnn') is not installed")
    net = ncnn.Net()
    net.opt.use_fp16_packed = False
    net.opt.use_fp16_storage = False
    net.opt.use_fp16_arithmetic = False
    net.opt.use_packing_layout = False
    net.opt.num_threads = 2
    assert net.load_param(str(param)) == 0
    assert net.load_model(str(weights)) == 0
    outs = []
    for image in images:
        array = np.ascontiguousarray(image, dtype=np.float32)  # the Mat shares this memory
        mat = ncnn.Mat(array)
        extractor = net.create_extractor()
        extractor.input(INPUT_BLOB, mat)
        ret, out = extractor.extract(output)
        assert ret == 0
        outs.append(np.array(out))
    return np.stack(outs)


@dataclass
class _Layer:
    type: str
    name: str
    inputs: list[str]
    outputs: list[str]
    params: str
    data: bytes = b""


@dataclass
class NcnnWriter:
    """Writes a graph as an ncnn converter does, Split layers in front of shared blobs."""

    fp16: bool = False
    layers: list[_Layer] = field(default_factory=list)

    def emit(self, kind: str, inputs: list[str], params: str = "", n_out: int = 1) -> list[str]:
        n = len(self.layers)
        outputs = (
            [INPUT_BLOB] if kind == "Input" else [f"{kind.lower()}_{n}.{k}" for k in range(n_out)]
        )
        self.layers.append(_Layer(kind, f"{kind}_{n}", inputs, outputs, params))
        return outputs

    def one(self, kind: str, inputs: list[str], params: str = "") -> str:
        return self.emit(kind, inputs, params)[0]

    def conv(
        self,
        blob: str,
        weight: Tensor,
        bias: Tensor | None,
        *,
        stride: int = 1,
        groups: int = 1,
        relu: bool = False,
        relu_layer: bool = False,
    ) -> str:
        out, _, kh, kw = weight.shape
        kind = "ConvolutionDepthWise" if groups > 1 else "Convolution"
        params = f"0={out} 1={kw} 11={kh} 3={stride} 4={kh // 2} 5={int(bias is not None)}"
        params += f" 6={weight.numel()}" + (f" 7={groups}" if groups > 1 else "")
        params += " 9=1" if relu and not relu_layer else ""
        values = weight.detach().numpy().ravel()
        if self.fp16:
            raw = values.astype("<f2").tobytes()
            data = struct.pack("<I", TAG_FLOAT16) + raw + b"\0" * (-len(raw) % 4)
        else:
            data = struct.pack("<I", 0) + values.astype("<f4").tobytes()
        if bias is not None:
            data += bias.detach().numpy().astype("<f4").tobytes()
        result = self.one(kind, [blob], params)
        self.layers[-1].data = data
        return self.one("ReLU", [result]) if relu and relu_layer else result

    def text_and_bytes(self) -> tuple[str, bytes]:
        readers = Counter(b for layer in self.layers for b in layer.inputs)
        pending: dict[str, list[str]] = {}
        lines: list[_Layer] = []
        for layer in self.layers:
            inputs = [pending[b].pop(0) if b in pending else b for b in layer.inputs]
            lines.append(_Layer(layer.type, layer.name, inputs, layer.outputs, layer.params))
            for blob in layer.outputs:
                if readers[blob] > 1:
                    copies = [f"{blob}_splitncnn_{k}" for k in range(readers[blob])]
                    pending[blob] = list(copies)
                    lines.append(_Layer("Split", f"split_{blob}", [blob], copies, ""))
        blobs = {b for layer in lines for b in layer.outputs}
        text = f"7767517\n{len(lines)} {len(blobs)}\n"
        for layer in lines:
            blobs_text = " ".join([*layer.inputs, *layer.outputs])
            head = f"{layer.type} {layer.name} {len(layer.inputs)} {len(layer.outputs)}"
            text += f"{head} {blobs_text} {layer.params}".rstrip() + "\n"
        return text, b"".join(layer.data for layer in self.layers)

    def save(self, directory: Path, name: str = "model") -> tuple[Path, Path]:
        text, data = self.text_and_bytes()
        param, weights = directory / f"{name}.param", directory / f"{name}.bin"
        param.write_text(text)
        weights.write_bytes(data)
        return param, weights


def folded(module: ConvNorm) -> tuple[Tensor, Tensor]:
    """A ConvNorm's weight and bias with its (evaluation-mode) BatchNorm folded in."""
    bn = module.bn
    assert bn.running_var is not None and bn.running_mean is not None
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    return module.conv.weight * scale[:, None, None, None], bn.bias - bn.running_mean * scale


class LiteHRNetExporter:
    """Writes a TopDownModel with a LiteHRNet backbone as an ncnn graph, op for op as the
    PP-TinyPose conversion has it. ``quirks=False`` writes the fusion without PaddleDetection's
    doubling (a graph the importer must refuse)."""

    def __init__(self, writer: NcnnWriter, *, quirks: bool = True) -> None:
        self.w = writer
        self.quirks = quirks

    def convnorm(self, blob: str, m: ConvNorm, relu_layer: bool = False) -> str:
        weight, bias = folded(m)
        conv = m.conv
        return self.w.conv(
            blob,
            weight,
            bias,
            stride=conv.stride[0],
            groups=conv.groups,
            relu=m.relu,
            relu_layer=relu_layer,
        )

    def separable(self, blob: str, m: SeparableConv) -> str:
        return self.convnorm(self.convnorm(blob, m.depthwise), m.pointwise)

    def shuffle(self, blob: str, channels: int, size: tuple[int, int]) -> str:
        h, w = size
        blob = self.w.one("Reshape", [blob], f"0={h * w} 1={channels // 2} 2=2")
        blob = self.w.one("Permute", [blob], "0=2")
        return self.w.one("Reshape", [blob], f"0={w} 1={h} 2={channels}")

    def halves(self, blob: str) -> list[str]:
        return self.w.emit("Slice", [blob], "-23300=2,-233,-233", n_out=2)

    def add(self, a: str, b: str) -> str:
        return self.w.one("BinaryOp", [a, b], "0=0")

    def module(self, m: LiteHRNetModule, xs: list[str], sizes: list[tuple[int, int]]) -> list[str]:
        outs = []
        for b, (branch, x) in enumerate(zip(m.branches, xs, strict=True)):
            for unit in branch:
                a, c = self.halves(x)
                for conv in unit.branch2:
                    c = self.convnorm(c, conv)
                x = self.shuffle(self.w.one("Concat", [a, c]), m.channels[b], sizes[b])
            outs.append(x)
        fused = []
        y0 = outs[0]
        for i, row in enumerate(m.fuse_layers):
            if i == 0:
                y = self.add(outs[0], outs[0]) if self.quirks else outs[0]
            else:
                first = y0
                for step in row[0]:
                    first = self.separable(first, step)
                y = self.add(first, first) if self.quirks else first
            for j in range(1, len(outs)):
                if j == i:
                    t = outs[j]
                elif j > i:
                    t = self.convnorm(outs[j], row[j].conv)
                    scale = 2.0 ** (j - i)
                    t = self.w.one("Interp", [t], f"0=1 1={scale:e} 2={scale:e}")
                else:
                    t = outs[j]
                    for step in row[j]:
                        t = self.separable(t, step)
                y = self.add(y, t)
            if i == 0:
                y0 = y
            fused.append(self.w.one("ReLU", [y]))
        return fused

    def export(self, model: TopDownModel) -> None:
        backbone = model.backbone
        width, height = model.config.input_size
        stride = model.config.backbone.stride
        n = len(model.config.backbone.branch_channels)
        sizes = [(height // stride // 2**b, width // stride // 2**b) for b in range(n)]
        channels = model.config.backbone.stem_channels
        image = self.w.one("Input", [], f"0={width} 1={height} 2=3")
        stem = backbone.stem
        x = self.convnorm(image, stem.conv1, relu_layer=True)  # ReLU as its own layer here
        a, b = self.halves(x)
        a = self.separable(a, stem.branch1)
        for conv in (stem.expand_conv, stem.depthwise_conv, stem.linear_conv):
            b = self.convnorm(b, conv)
        branches = [self.shuffle(self.w.one("Concat", [a, b]), channels, sizes[0])]
        for transition, stage in zip(backbone.transitions, backbone.stages, strict=True):
            new = []
            for i, layer in enumerate(transition):
                t = branches[min(i, len(branches) - 1)]
                for step in layer if isinstance(layer, nn.Sequential) else ():
                    t = self.separable(t, step)
                new.append(t)
            branches = new
            for module in stage:
                branches = self.module(module, branches, sizes)
        last = None
        for project, x, size in zip(
            backbone.head.projects, branches[::-1], sizes[: len(branches)][::-1], strict=True
        ):
            if last is not None:
                up = self.w.one("Interp", [last], f"0=2 3={size[0]} 4={size[1]} 6=1")
                x = self.add(x, up)
            last = self.separable(x, project)
        assert last is not None
        self.w.conv(last, model.final_layer.weight, model.final_layer.bias)


def tiny_model(seed: int = 0) -> TopDownModel:
    """TINY_MODEL with weights and BatchNorm statistics far from the identity."""
    torch.manual_seed(seed)
    model = TopDownModel(TINY_MODEL)
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight)
        elif isinstance(m, nn.BatchNorm2d):
            assert m.running_var is not None and m.running_mean is not None
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.normal_(m.bias, std=0.1)
            m.running_mean.normal_(std=0.1)
            m.running_var.uniform_(0.5, 2.0)
    nn.init.normal_(model.final_layer.bias, std=0.1)
    return model.eval()


def export(
    model: TopDownModel, directory: Path, *, fp16: bool = False, quirks: bool = True
) -> tuple[Path, Path]:
    writer = NcnnWriter(fp16=fp16)
    with torch.no_grad():
        LiteHRNetExporter(writer, quirks=quirks).export(model)
    return writer.save(directory)


# ----------------------------------------------------------------------------- COCO crops


@cache
def coco_crops(size: tuple[int, int], count: int) -> np.ndarray:
    """``count`` ground-truth people of COCO mini val, cropped to ``size`` (W, H) with
    cv2.warpAffine (box padded by 1.25 at the crop's aspect ratio), RGB, ImageNet-normalised:
    ``(count, 3, H, W)`` float32."""
    root = require_shared(COCO_MINI)
    gt = json.loads((root / "annotations" / "person_keypoints_val2017.json").read_text())
    files = {image["id"]: image["file_name"] for image in gt["images"]}
    people = sorted(
        (a for a in gt["annotations"] if not a["iscrowd"] and a["num_keypoints"] >= 8),
        key=lambda a: a["id"],
    )[:count]
    assert len(people) == count
    width, height = size
    normalization = Normalization()
    crops = []
    for person in people:
        image = cv2.imread(str(root / "val2017" / files[person["image_id"]]))
        assert image is not None
        x, y, w, h = person["bbox"]
        cx, cy = x + w / 2, y + h / 2
        if w * height > h * width:
            h = w * height / width
        else:
            w = h * width / height
        w, h = w * CROP_PADDING, h * CROP_PADDING
        corners = [[cx - w / 2, cy - h / 2], [cx + w / 2, cy - h / 2], [cx - w / 2, cy + h / 2]]
        src = np.array(corners, dtype=np.float32)
        dst = np.array([[0, 0], [width, 0], [0, height]], dtype=np.float32)
        crop = cv2.warpAffine(image, cv2.getAffineTransform(src, dst), (width, height))
        crops.append(normalization.apply(cv2.cvtColor(crop, cv2.COLOR_BGR2RGB)))
    return np.stack(crops)


# ----------------------------------------------------------------------------- PP-TinyPose


@pytest.mark.parametrize(
    ("name", "crops"), [("tinypose_128x96", 16), ("tinypose_256x192", 8)], ids=["128x96", "256x192"]
)
def test_pp_tinypose_matches_the_ncnn_runtime(name: str, crops: int) -> None:
    param = require_shared(PP_TINYPOSE / f"{name}.param")
    model, report = import_ncnn(param)
    height, width = (int(v) for v in name.split("_")[1].split("x"))
    assert report.config.input_size == (width, height)
    assert report.config.backbone == LiteHRNetConfig()
    assert report.config.num_keypoints == 17 and report.config.deconv_channels == ()
    assert report.complete and not report.fresh
    images = coco_crops((width, height), crops)
    with torch.no_grad():
        ours = model.eval()(torch.from_numpy(images)).numpy()
    theirs = run_ncnn(param, param.with_suffix(".bin"), images)
    assert ours.shape == theirs.shape == (crops, 17, height // 4, width // 4)
    assert np.abs(ours - theirs).max() <= MAX_DIFF
    peaks_ours = ours.reshape(crops, 17, -1).argmax(-1)
    peaks_theirs = theirs.reshape(crops, 17, -1).argmax(-1)
    assert (peaks_ours == peaks_theirs).mean() >= MIN_PEAK_AGREEMENT
    assert ours.max() > 0.1  # real heatmaps, not an all-zero agreement


def test_read_pp_tinypose() -> None:
    graph = read_ncnn(require_shared(PP_TINYPOSE / "tinypose_128x96.param"))
    assert len(graph.layers) == 698 and graph.blob_count == 826
    assert graph.parameter_count() == 1_300_177
    assert graph.input_blobs == (INPUT_BLOB,) and graph.output_blobs == (OUTPUT_BLOB,)
    first = graph.layers[1]
    assert first.type == "Convolution" and first.weights["weight"].shape == (32, 3, 3, 3)
    assert first.weights["weight"].dtype == np.float32 and first.weights["bias"].shape == (32,)
    depthwise = graph.layers[3]
    assert depthwise.weights["weight"].shape == (16, 1, 3, 3)


def test_imported_model_trains() -> None:
    model, _ = import_ncnn(require_shared(PP_TINYPOSE / "tinypose_128x96.param"))
    bn = model.backbone.stem.conv1.bn
    assert torch.all(bn.weight == 1) and torch.all(bn.running_mean == 0)
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    loss = model(torch.randn(2, 3, 64, 64)).square().mean()  # any multiple of 32 will do
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss)
    assert all(p.grad is not None for p in model.parameters())


# ----------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("fp16", [False, True], ids=["float32", "float16"])
def test_tiny_round_trip(tmp_path: Path, fp16: bool) -> None:
    """A tiny Lite-HRNet written as ncnn files: the ncnn runtime computes what the native model
    does, and the import reads back its configuration and its function."""
    model = tiny_model()
    param, weights = export(model, tmp_path, fp16=fp16)
    imported, report = import_ncnn(param, weights)
    assert report.config == replace(TINY_MODEL, codec=report.config.codec)
    assert report.complete and not report.unexpected
    width, height = TINY_MODEL.input_size
    images = np.random.default_rng(0).standard_normal((3, 3, height, width)).astype(np.float32)
    with torch.no_grad():
        native = model(torch.from_numpy(images)).numpy()
        ours = imported.eval()(torch.from_numpy(images)).numpy()
    theirs = run_ncnn(param, weights, images, output=read_ncnn(param).output_blobs[0])
    scale = np.abs(native).max()
    assert scale > 0.1
    np.testing.assert_allclose(ours, theirs, atol=1e-5 * scale)
    np.testing.assert_allclose(native, theirs, atol=(3e-3 if fp16 else 1e-5) * scale)


def test_unused_layers_are_reported(tmp_path: Path) -> None:
    writer = NcnnWriter()
    with torch.no_grad():
        LiteHRNetExporter(writer).export(tiny_model())
    heatmaps = writer.layers[-1].outputs[0]
    writer.conv(heatmaps, torch.ones(2, 5, 1, 1), None)  # a layer after the heatmaps
    param, _ = writer.save(tmp_path)
    with pytest.raises(DataError, match="expected nothing after them"):
        import_ncnn(param)
    writer.layers.pop()
    writer.conv(writer.layers[0].outputs[0], torch.ones(2, 3, 1, 1), None)  # a dead branch
    param, _ = writer.save(tmp_path)
    _, report = import_ncnn(param)
    assert report.unexpected == (f"{writer.layers[-1].name} (Convolution)",)
    assert not report.missing


# ----------------------------------------------------------------------------- bad input


def single_conv(directory: Path, *, fp16: bool = False) -> tuple[Path, Path]:
    writer = NcnnWriter(fp16=fp16)
    image = writer.one("Input", [], "0=8 1=8 2=3")
    weight = torch.arange(2 * 3 * 3 * 3, dtype=torch.float32).reshape(2, 3, 3, 3) / 64
    writer.conv(image, weight, torch.tensor([0.5, -0.5]), relu=True)
    return writer.save(directory)


@pytest.mark.parametrize("fp16", [False, True], ids=["float32", "float16"])
def test_read_weights(tmp_path: Path, fp16: bool) -> None:
    graph = read_ncnn(*single_conv(tmp_path, fp16=fp16))
    conv = graph.layers[1]
    expected = np.arange(54, dtype=np.float32).reshape(2, 3, 3, 3) / 64  # exact in float16
    np.testing.assert_array_equal(conv.weights["weight"], expected)
    np.testing.assert_array_equal(conv.weights["bias"], [0.5, -0.5])
    assert conv.params[9] == 1 and conv.int_param(11, 0) == 3


def test_not_a_lite_hrnet(tmp_path: Path) -> None:
    param, _ = single_conv(tmp_path)
    with pytest.raises(DataError, match=r"model\.param: not a Lite-HRNet graph .*Convolution_1"):
        import_ncnn(param)


def test_fusion_without_the_quirks_is_refused(tmp_path: Path) -> None:
    """The importer only accepts what the native model computes: a fusion that does not count
    branch 0 twice is another network."""
    param, _ = export(tiny_model(), tmp_path, quirks=False)
    with pytest.raises(DataError, match="not a Lite-HRNet graph .*expected a BinaryOp Add"):
        import_ncnn(param)


def test_wrong_magic(tmp_path: Path) -> None:
    param, _ = single_conv(tmp_path)
    param.write_text(param.read_text().replace("7767517", "7767518", 1))
    with pytest.raises(DataError, match=r"model\.param: not an ncnn \.param file: magic"):
        read_ncnn(param)


def test_truncated_bin(tmp_path: Path) -> None:
    param, weights = single_conv(tmp_path)
    weights.write_bytes(weights.read_bytes()[:-4])
    with pytest.raises(DataError, match=r"model\.bin: truncated: layer 'Convolution_1'.* bias"):
        read_ncnn(param)


def test_bin_longer_than_param_says(tmp_path: Path) -> None:
    param, weights = single_conv(tmp_path)
    weights.write_bytes(weights.read_bytes() + b"\0" * 8)
    with pytest.raises(DataError, match=r"model\.bin: 8 bytes left .*does not match model\.param"):
        read_ncnn(param)


def test_param_and_bin_sizes_disagree(tmp_path: Path) -> None:
    param, _ = single_conv(tmp_path)
    param.write_text(param.read_text().replace("6=54", "6=27"))  # weights for 1 output
    with pytest.raises(DataError, match="Convolution_1.*weight_data_size 27 does not fit 2"):
        read_ncnn(param)


def test_unknown_layer_type(tmp_path: Path) -> None:
    writer = NcnnWriter()
    image = writer.one("Input", [], "")
    writer.one("Swish", [image])
    param, _ = writer.save(tmp_path)
    with pytest.raises(DataError, match="layer 'Swish_1'.*unsupported layer type 'Swish'"):
        read_ncnn(param)


def test_malformed_param(tmp_path: Path) -> None:
    param, _ = single_conv(tmp_path)
    text = param.read_text()
    param.write_text(text.replace("\n2 ", "\n3 ", 1))
    with pytest.raises(DataError, match="announces 3 layers but holds 2"):
        read_ncnn(param)
    param.write_text(text.replace("1 1 image", "1 1 nowhere"))
    with pytest.raises(DataError, match="reads blob 'nowhere' before any layer makes it"):
        read_ncnn(param)
    param.write_text(text.replace("5=1", "5=x"))
    with pytest.raises(DataError, match="line 4 .*Convolution_1"):
        read_ncnn(param)


def test_unsupported_weight_encoding(tmp_path: Path) -> None:
    param, weights = single_conv(tmp_path)
    data = bytearray(weights.read_bytes())
    data[:4] = struct.pack("<I", 0x000D4B38)
    weights.write_bytes(bytes(data))
    with pytest.raises(DataError, match="Convolution_1.*int8 weights are not supported"):
        read_ncnn(param)


def test_missing_bin(tmp_path: Path) -> None:
    param, weights = single_conv(tmp_path)
    weights.unlink()
    with pytest.raises(DataError, match=r"model\.bin: cannot read"):
        read_ncnn(param)
