"""ONNX graph import: Ultralight-Nano-SimplePose parity with onnxruntime on real COCO crops,
round trips through metapose's own exports, and bad files.

Ultralight-SimplePose has no licence: it is only read from ``../shared/models`` beside the
repository, never copied, and the tests that need it skip where it is absent.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper
from torch import nn

from metapose.config import MobileNetV2Config, ModelConfig, replace
from metapose.errors import DataError
from metapose.models import TopDownModel
from metapose.models.backbones.mobilenet_v2 import MobileNetV2, block_specs
from metapose.models.weights.layouts import ImportReport
from metapose.models.weights.onnx_graph import _fit_width, import_onnx
from tests.conftest import REPO

SHARED = REPO.parent / "shared"
ULTRALIGHT = SHARED / "models" / "ultralight_simplepose" / "deploy.onnx"
COCO_MINI = SHARED / "data" / "coco" / "mini"

INPUT_SIZE = (192, 256)  # (width, height)
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)
NUM_CROPS = 24
MAX_ABS_DIFF = 1e-3
MIN_PEAK_AGREEMENT = 0.995

TINY_CONFIG = ModelConfig(
    backbone=MobileNetV2Config(width_mult=0.25, last_channels=32),
    input_size=(32, 64),
    deconv_channels=(16, 16, 16),
    deconv_separable=True,
)


def require(path: Path) -> Path:
    """Skip (with the reason shown) when the shared files beside the repository are absent."""
    if not path.exists():
        pytest.skip(f"{path} not found (../shared beside the repository holds it)")
    return path


# ------------------------------------------------------------------------------ helpers


def person_crops(n: int) -> np.ndarray:
    """``n`` labelled COCO val people as SimpleBaseline crops: ``(n, 3, 256, 192)`` normalised RGB.

    The box is widened to the crop's aspect ratio and padded by 1.25 (SimpleBaseline), then
    mapped onto the crop with ``cv2.warpAffine``.
    """
    root = require(COCO_MINI)
    coco = json.loads((root / "annotations" / "person_keypoints_val2017.json").read_text())
    files = {im["id"]: im["file_name"] for im in coco["images"]}
    people = sorted(
        (a for a in coco["annotations"] if not a["iscrowd"] and a["num_keypoints"] >= 5),
        key=lambda a: a["id"],
    )[:n]
    assert len(people) == n, f"only {len(people)} labelled people in {root}"
    width, height = INPUT_SIZE
    crops = np.empty((n, 3, height, width), np.float32)
    for i, person in enumerate(people):
        image = cv2.imread(str(root / "val2017" / files[person["image_id"]]), cv2.IMREAD_COLOR)
        assert image is not None
        rgb = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        x, y, w, h = person["bbox"]
        cx, cy = x + w / 2, y + h / 2
        if w > h * width / height:
            h = w * height / width
        else:
            w = h * width / height
        w, h = w * 1.25, h * 1.25
        src = np.array([[cx - w / 2, cy - h / 2], [cx + w / 2, cy - h / 2], [cx, cy]], np.float32)
        dst = np.array([[0, 0], [width, 0], [width / 2, height / 2]], np.float32)
        matrix = cv2.getAffineTransform(src, dst)
        crop = cv2.warpAffine(rgb, matrix, (width, height), flags=cv2.INTER_LINEAR)
        crops[i] = ((crop.astype(np.float32) / 255 - IMAGENET_MEAN) / IMAGENET_STD).transpose(
            2, 0, 1
        )
    return crops


def onnxruntime_heatmaps(path: Path, crops: np.ndarray) -> np.ndarray:
    """The graph's heatmaps, one crop at a time (Ultralight's batch axis is fixed to 1)."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return np.concatenate(
        [session.run(None, {name: crops[i : i + 1]})[0] for i in range(len(crops))]
    )


def torch_heatmaps(model: TopDownModel, crops: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        heatmaps: np.ndarray = model.eval()(torch.from_numpy(crops)).numpy()
    return heatmaps


def peak_agreement(a: np.ndarray, b: np.ndarray) -> float:
    flat_a, flat_b = a.reshape(*a.shape[:2], -1), b.reshape(*b.shape[:2], -1)
    return float((flat_a.argmax(-1) == flat_b.argmax(-1)).mean())


def lively_tiny_model(seed: int = 0, last_activation: str = "relu6") -> TopDownModel:
    """A tiny MobileNetV2 SimpleBaseline with heatmaps of order one and non-trivial BatchNorm."""
    torch.manual_seed(seed)
    backbone = replace(TINY_CONFIG.backbone, last_activation=last_activation)
    model = TopDownModel(replace(TINY_CONFIG, backbone=backbone))
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                assert m.running_mean is not None and m.running_var is not None
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
            elif isinstance(m, nn.Conv2d | nn.ConvTranspose2d):
                nn.init.kaiming_normal_(m.weight)
        assert model.final_layer.bias is not None
        model.final_layer.bias.uniform_(-0.5, 0.5)
    return model.eval()


def export(model: TopDownModel, path: Path, *, opset: int, keep_batchnorm: bool) -> Path:
    """TorchScript export (as metapose.inference.export does); ``keep_batchnorm``: no Conv+BN
    fusion."""
    width, height = model.config.input_size
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (torch.zeros(1, 3, height, width),),
            str(path),
            dynamo=False,
            opset_version=opset,
            input_names=["images"],
            output_names=["heatmaps"],
            dynamic_axes={"images": {0: "batch"}, "heatmaps": {0: "batch"}},
            training=(
                torch.onnx.TrainingMode.PRESERVE if keep_batchnorm else torch.onnx.TrainingMode.EVAL
            ),
        )
    return path


def random_crops(n: int, size: tuple[int, int], seed: int = 0) -> np.ndarray:
    width, height = size
    return np.random.default_rng(seed).standard_normal((n, 3, height, width)).astype(np.float32)


# ------------------------------------------------------------------------------ Ultralight


@pytest.fixture(scope="module")
def ultralight() -> tuple[TopDownModel, ImportReport]:
    require(ULTRALIGHT)
    model, report = import_onnx(ULTRALIGHT)
    return model.eval(), report


@pytest.fixture(scope="module")
def coco_crops() -> np.ndarray:
    return person_crops(NUM_CROPS)


def test_ultralight_architecture_is_inferred(ultralight: tuple[TopDownModel, ImportReport]) -> None:
    model, report = ultralight
    assert report.config == ModelConfig(
        backbone=MobileNetV2Config(width_mult=0.5, last_channels=128, last_activation="relu"),
        deconv_channels=(128, 128, 128),
        deconv_kernel=4,
        deconv_separable=True,
        input_size=(192, 256),
    )
    assert isinstance(model.backbone, MobileNetV2)
    assert model.backbone.last_activation == "relu"  # the graph's 160 -> 128 conv ends in Relu
    assert report.format == "onnx"
    assert report.complete
    assert not (report.missing or report.unexpected or report.fresh)
    # Every initializer of the file (291) plus the heatmap layer's bias, absent (zero) in it.
    assert len(report.loaded) == 292
    assert model.final_layer.bias is not None and not model.final_layer.bias.any()


def test_ultralight_matches_onnxruntime_on_coco_crops(
    ultralight: tuple[TopDownModel, ImportReport], coco_crops: np.ndarray
) -> None:
    model, _ = ultralight
    expected = onnxruntime_heatmaps(ULTRALIGHT, coco_crops)
    actual = torch_heatmaps(model, coco_crops)
    assert actual.shape == expected.shape == (NUM_CROPS, 17, 64, 48)
    assert expected.max() > 0.3  # real people: the tolerance means something
    diff = float(np.abs(actual - expected).max())
    agreement = peak_agreement(actual, expected)
    print(
        f"Ultralight parity on {NUM_CROPS} COCO crops: max|diff| {diff:.3g}, peaks {agreement:.2%}"
    )
    assert diff <= MAX_ABS_DIFF
    assert agreement >= MIN_PEAK_AGREEMENT


def test_ultralight_import_export_round_trip(
    ultralight: tuple[TopDownModel, ImportReport], coco_crops: np.ndarray, tmp_path: Path
) -> None:
    from metapose.inference.export import export_onnx
    from metapose.inference.onnx_runtime import OnnxHeatmapModel

    model, _ = ultralight
    crops = coco_crops[:8]
    expected = onnxruntime_heatmaps(ULTRALIGHT, crops)
    exported = export_onnx(model, tmp_path / "ultralight_metapose.onnx")
    actual = OnnxHeatmapModel(exported)(crops)
    assert float(np.abs(actual - expected).max()) <= MAX_ABS_DIFF
    assert peak_agreement(actual, expected) >= MIN_PEAK_AGREEMENT
    # metapose's export (BatchNorm folded into the backbone's convolutions) imports back.
    again, report = import_onnx(exported)
    assert report.complete and report.config == model.config
    assert float(np.abs(torch_heatmaps(again, crops) - expected).max()) <= MAX_ABS_DIFF


# ------------------------------------------------------------------------------ own exports


@pytest.mark.parametrize(
    ("opset", "keep_batchnorm", "last_activation"),
    [(9, True, "relu"), (17, True, "relu6"), (17, False, "relu6")],
    ids=["opset9-bn-relu", "opset17-bn", "opset17-folded"],
)
def test_own_export_round_trip(
    tmp_path: Path, opset: int, keep_batchnorm: bool, last_activation: str
) -> None:
    model = lively_tiny_model(last_activation=last_activation)
    path = export(model, tmp_path / "tiny.onnx", opset=opset, keep_batchnorm=keep_batchnorm)
    imported, report = import_onnx(path)
    assert report.config == model.config
    assert report.complete and not report.missing
    assert isinstance(imported.backbone, MobileNetV2)
    assert imported.backbone.last_activation == last_activation
    crops = random_crops(3, TINY_CONFIG.input_size)
    expected = torch_heatmaps(model, crops)
    assert expected.std() > 0.1
    assert float(np.abs(torch_heatmaps(imported, crops) - expected).max()) <= 1e-4
    session_out = onnxruntime_heatmaps(path, crops)
    assert float(np.abs(session_out - expected).max()) <= 1e-4


def test_conv_biases_fold_into_batchnorm_and_epsilon_is_the_files(tmp_path: Path) -> None:
    """Give every BatchNorm-followed Conv a bias and every BatchNorm an epsilon of 1e-3: the
    import must still compute what onnxruntime computes from the edited graph."""
    path = export(lively_tiny_model(), tmp_path / "tiny.onnx", opset=17, keep_batchnorm=True)
    proto = onnx.load(str(path))
    rng = np.random.default_rng(0)
    readers = {i: n for n in proto.graph.node for i in n.input}
    sizes = {t.name: t.dims[0] for t in proto.graph.initializer}
    biased = 0
    for node in proto.graph.node:
        if node.op_type == "BatchNormalization":
            for attr in node.attribute:
                if attr.name == "epsilon":
                    attr.f = 1e-3
        follower = readers.get(node.output[0])
        if (
            node.op_type == "Conv"
            and len(node.input) == 2
            and follower is not None
            and follower.op_type == "BatchNormalization"
        ):
            bias = rng.uniform(-0.5, 0.5, sizes[follower.input[1]]).astype(np.float32)
            name = f"added_bias_{biased}"
            proto.graph.initializer.append(onnx.numpy_helper.from_array(bias, name))
            node.input.append(name)
            biased += 1
    assert biased > 40
    edited = tmp_path / "edited.onnx"
    onnx.save(proto, str(edited))
    imported, report = import_onnx(edited)
    assert report.complete and not report.unexpected
    assert all(
        m.eps == pytest.approx(1e-3) for m in imported.modules() if isinstance(m, nn.BatchNorm2d)
    )
    crops = random_crops(3, TINY_CONFIG.input_size)
    expected = onnxruntime_heatmaps(edited, crops)
    assert float(np.abs(expected - onnxruntime_heatmaps(path, crops)).max()) > 0.01  # it matters
    assert float(np.abs(torch_heatmaps(imported, crops) - expected).max()) <= 1e-4


def test_import_is_deterministic_and_keeps_the_global_rng(tmp_path: Path) -> None:
    path = export(lively_tiny_model(), tmp_path / "tiny.onnx", opset=17, keep_batchnorm=True)
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a, _ = import_onnx(path, init_seed=1)
    assert torch.rand(1) == before
    b, _ = import_onnx(path, init_seed=2)
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(x, y), name


@pytest.mark.parametrize("width", [0.25, 0.35, 0.5, 0.75, 1.0, 1.3, 1.4])
def test_width_multiplier_is_recovered_from_channels(width: float) -> None:
    stem, blocks = block_specs(width)
    _, base = block_specs(1.0)
    pairs = [(32, stem)]
    pairs += [(b.out_channels, s.out_channels) for b, s in zip(base, blocks, strict=True)]
    found = _fit_width(pairs)
    assert found is not None and block_specs(found) == block_specs(width)


# ------------------------------------------------------------------------------ bad files


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        import_onnx(tmp_path / "absent.onnx")


def test_a_text_file_is_not_onnx(tmp_path: Path) -> None:
    path = tmp_path / "model.onnx"
    path.write_text("this is a text file, not a model\n" * 20)
    with pytest.raises(DataError, match="not an ONNX") as err:
        import_onnx(path)
    assert str(path) in str(err.value)


def test_a_truncated_file(tmp_path: Path) -> None:
    whole = export(lively_tiny_model(), tmp_path / "whole.onnx", opset=17, keep_batchnorm=True)
    data = whole.read_bytes()
    for fraction in (0.1, 0.5, 0.9):
        cut = tmp_path / f"cut{fraction}.onnx"
        cut.write_bytes(data[: int(len(data) * fraction)])
        with pytest.raises(DataError, match=r"cut.*\.onnx"):
            import_onnx(cut)


def conv_graph_with(op: str, path: Path) -> Path:
    """input -> Conv -> ``op`` -> output, as a small ONNX file."""
    weight = helper.make_tensor(
        "w", TensorProto.FLOAT, (4, 3, 3, 3), np.ones(4 * 27, np.float32).tolist()
    )
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="stem_conv", pads=[1, 1, 1, 1]),
        helper.make_node(op, ["c"], ["y"], name="odd_node"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 64, 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 64, 32])],
        initializer=[weight],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))
    return path


def test_an_unsupported_operator_names_the_node(tmp_path: Path) -> None:
    path = conv_graph_with("Sigmoid", tmp_path / "sigmoid.onnx")
    with pytest.raises(DataError, match=r"odd_node.*'Sigmoid' is not supported") as err:
        import_onnx(path)
    assert "sigmoid.onnx" in str(err.value)


def test_a_graph_that_is_not_a_mobilenet_v2(tmp_path: Path) -> None:
    path = conv_graph_with("Relu", tmp_path / "small.onnx")
    with pytest.raises(DataError, match="not a MobileNetV2 SimpleBaseline"):
        import_onnx(path)


def test_a_changed_layer_is_refused_by_name(tmp_path: Path) -> None:
    path = export(lively_tiny_model(), tmp_path / "tiny.onnx", opset=17, keep_batchnorm=True)
    proto = onnx.load(str(path))
    convs = [n for n in proto.graph.node if n.op_type == "Conv"]
    target = convs[5]
    for attr in target.attribute:
        if attr.name == "dilations":
            attr.ints[:] = [2, 2]
    onnx.save(proto, str(path))
    with pytest.raises(DataError, match=rf"{target.name}.*dilations \[2, 2\]"):
        import_onnx(path)


def test_a_clip_that_is_not_relu6(tmp_path: Path) -> None:
    path = export(lively_tiny_model(), tmp_path / "tiny.onnx", opset=9, keep_batchnorm=True)
    proto = onnx.load(str(path))
    clip = next(n for n in proto.graph.node if n.op_type == "Clip")
    for attr in clip.attribute:
        if attr.name == "max":
            attr.f = 5.0
    onnx.save(proto, str(path))
    with pytest.raises(DataError, match=rf"{clip.name}.*Clip to \[0.0, 5.0\]"):
        import_onnx(path)
