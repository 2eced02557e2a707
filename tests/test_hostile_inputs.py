"""Absurd sizes, corrupt files and silent mistakes end in one clear line naming the file and the
field, before anything is allocated or written; never a traceback, a hang or a wrong result."""

from __future__ import annotations

import json
import shutil
import struct
import zlib
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from metapose.cli import main
from metapose.config import (
    AdaptConfig,
    ConfigError,
    ExperimentConfig,
    MetaRunConfig,
    TrainRunConfig,
    load_config,
)
from metapose.config.training import OptimizerConfig, ReptileConfig, TrainConfig
from metapose.data.batches import EpochBatches
from metapose.data.coco import load_coco
from metapose.data.detections import load_detections
from metapose.data.images import MAX_IMAGE_PIXELS, header_size, read_rgb
from metapose.device import DeviceOptions
from metapose.errors import CheckFailed, DataError, DivergedError
from metapose.files import parse_json
from metapose.models import TopDownModel
from metapose.models.checkpoint import load_checkpoint, save_checkpoint
from metapose.training.adapt import fine_tune
from metapose.training.meta import meta_train
from metapose.training.run_folder import STATE_FILE, StepLog
from metapose.training.train import train
from tests.conftest import REPO, TINY_MODEL
from tests.helpers import tiny_dataset

CPU = torch.device("cpu")
LONG = "x" * 5000

# ------------------------------------------------------------------------------ configuration

CONFIG_CASES: list[tuple[type[Any], str, str]] = [
    (TrainRunConfig, "train: {batch_size: 100000000000}", "train.batch_size must be in [1, 4096]"),
    (TrainRunConfig, "train: {batch_size: 1.0e+11}", "train.batch_size: must be an integer"),
    (TrainRunConfig, "train: {batch_size: 1e11}", "train.batch_size: must be an integer"),
    (TrainRunConfig, "train: {steps: 0}", "train.steps must be in [1, 1000000000]"),
    (TrainRunConfig, "train: {lr_gamma: -10}", "train.lr_gamma must be in (0, 1]"),
    (TrainRunConfig, "train: {lr_gamma: 10}", "train.lr_gamma must be in (0, 1]"),
    (TrainRunConfig, "train: {optimizer: {lr: .nan}}", "must be a finite number"),
    (TrainRunConfig, "train: {optimizer: {weight_decay: -1.0}}", "weight_decay must be >= 0"),
    (TrainRunConfig, "workers: 100000", "workers must be in [0, 64]"),
    (TrainRunConfig, "seed: -1", "seed must be in [0, 2**32)"),
    (TrainRunConfig, "seed: 100000000000000000000000000", "seed must be in [0, 2**32)"),
    (TrainRunConfig, "model: {deconv_channels: [100000]}", "deconv_channels[0] must be in"),
    (TrainRunConfig, "model: {num_keypoints: 2147483648}", "num_keypoints must be in [1, 1024]"),
    (TrainRunConfig, "model: {input_size: [65536, 65536]}", "at most 4096 pixels a side"),
    (TrainRunConfig, "model: {backbone: {kind: mobilenet_v2, width_mult: 1000.0}}", "width_mult"),
    (
        TrainRunConfig,
        "model: {backbone: {kind: lite_hrnet, blocks_per_module: 100000}}",
        "backbone.blocks_per_module must be in [1, 64]",
    ),
    (MetaRunConfig, "meta: {inner_steps: 100000000000}", "meta.inner_steps must be in"),
    (MetaRunConfig, "meta: {batch_size: 100000}", "meta.batch_size must be in [1, 4096]"),
    (AdaptConfig, "epochs: 100000000000000000000", "adapt.epochs must be in [1, 100000]"),
    (ExperimentConfig, "seeds: [0, -1]", "seeds[1] must be in [0, 2**32)"),
    (ExperimentConfig, "eval_batch_size: 0", "eval_batch_size must be in [1, 4096]"),
    (ExperimentConfig, "workers: 100000", "workers must be in [0, 64]"),
    # A 1 KB alias bomb would expand to gigabytes; aliases are refused outright.
    (
        TrainRunConfig,
        "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n",
        "line 2, column 8: aliases (*a) are not allowed",
    ),
    # The second section would silently replace the first.
    (
        TrainRunConfig,
        "train:\n  steps: 5\nseed: 1\ntrain:\n  batch_size: 4\n",
        "line 4, column 1: duplicate key 'train' (first given at line 1)",
    ),
    (TrainRunConfig, f"seed: {LONG}", "seed: must be an integer, got 'xxxx"),
    (TrainRunConfig, f"? {LONG}\n: 1\n", "unknown key xxxx"),
]


@pytest.mark.parametrize(("cls", "text", "message"), CONFIG_CASES)
def test_config_values_out_of_range_are_refused(
    tmp_path: Path, cls: type[Any], text: str, message: str
) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(path, cls)
    said = str(caught.value)
    assert said.startswith(f"{path}: ") and message in said, said
    assert "\n" not in said and len(said) < 400, said  # one line; values are cut short


def test_the_shipped_configs_still_load() -> None:
    configs = REPO / "configs"
    for path in sorted(configs.glob("*.yaml")):
        load_config(path, ExperimentConfig)


# -------------------------------------------------------------------------------- checkpoints


def _tiny_checkpoint(tmp_path: Path) -> tuple[Path, dict[str, Any], dict[str, torch.Tensor]]:
    torch.manual_seed(0)
    path = save_checkpoint(tmp_path / "tiny.safetensors", TopDownModel(TINY_MODEL))
    with safe_open(str(path), framework="pt") as handle:
        meta = json.loads((handle.metadata() or {})["metapose"])
    return path, meta, load_file(str(path))


def _model_field(meta: dict[str, Any], key: str, value: Any) -> str:
    changed = json.loads(json.dumps(meta))
    changed["model"][key] = value
    return json.dumps(changed)


def _tensor(change: str, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = dict(tensors)
    if change == "nan":
        out["backbone.conv1.weight"] = out["backbone.conv1.weight"].clone()
        out["backbone.conv1.weight"][0, 0, 0, 0] = float("nan")
    elif change == "int8":
        out["backbone.conv1.weight"] = (out["backbone.conv1.weight"] * 100).to(torch.int8)
    elif change == "inf variance":
        out["backbone.bn1.running_var"] = out["backbone.bn1.running_var"].clone()
        out["backbone.bn1.running_var"][0] = float("inf")
    elif change == "negative variance":
        out["backbone.bn1.running_var"] = -out["backbone.bn1.running_var"]
    return out


CHECKPOINT_CASES = [
    ("deconv_channels", "deconv_channels[0] must be in [1, 2048], got 100000"),
    ("num_keypoints", "num_keypoints must be in [1, 1024], got 2147483648"),
    ("input_size", "at most 4096 pixels a side, got (65536, 65536)"),
    ("deep metadata", "field 'header metapose': JSON nested deeper than 64 levels"),
    ("very deep metadata", "field 'header metapose': JSON nested deeper than 64 levels"),
    ("nan", "field 'backbone.conv1.weight': tensor holds NaN or infinite values"),
    ("int8", "field 'backbone.conv1.weight': tensor is int8, the model needs floating point"),
    ("inf variance", "field 'backbone.bn1.running_var': tensor holds NaN or infinite values"),
    ("negative variance", "field 'backbone.bn1.running_var': BatchNorm variance is negative"),
]


@pytest.mark.parametrize(("case", "message"), CHECKPOINT_CASES)
def test_broken_checkpoints_are_refused_before_the_model_is_built(
    tmp_path: Path, case: str, message: str
) -> None:
    path, meta, tensors = _tiny_checkpoint(tmp_path)
    header = json.dumps(meta)
    if case == "deconv_channels":
        header = _model_field(meta, case, [100000])
    elif case == "num_keypoints":
        header = _model_field(meta, case, 2**31)
    elif case == "input_size":
        header = _model_field(meta, case, [65536, 65536])
    elif case == "deep metadata":
        header = '{"model": {}, "x": ' + "[" * 500 + "]" * 500 + "}"
    elif case == "very deep metadata":
        header = '{"model": ' + "[" * 100000 + "]" * 100000 + "}"
    bad = tmp_path / "bad.safetensors"
    save_file(_tensor(case, tensors), str(bad), metadata={"metapose": header})
    with pytest.raises(DataError) as caught:
        load_checkpoint(bad)
    assert str(caught.value).startswith(str(bad)) and message in str(caught.value)


def test_parse_json_bounds_the_depth() -> None:
    assert parse_json("[[[1]]]", "x.json", max_depth=3) == [[[1]]]
    with pytest.raises(DataError, match="nested deeper than 2 levels"):
        parse_json("[[[1]]]", "x.json", max_depth=2)


# ------------------------------------------------------------------------------- resume state


def _stored_state(path: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    with safe_open(str(path), framework="pt") as handle:
        skeleton = json.loads((handle.metadata() or {})["metapose_state"])
    return skeleton, load_file(str(path))


RESUME_CASES = [
    ("step text", "field 'step': must be an integer in [0, 2], got 'abc'"),
    ("step huge", "field 'step': must be an integer in [0, 2], got 1e+30"),
    ("no optimizer", "field 'optimizer': missing or not a mapping"),
    ("optimizer shape", "field 'optimizer': does not fit the model (exp_avg of parameter 0"),
    ("model shape", "weights do not fit the model: shape of backbone.conv1.weight"),
    ("deep", "JSON nested deeper than 64 levels"),
    ("very deep", "JSON nested deeper than 64 levels"),
]


RESUME_CONFIG = TrainConfig(steps=2, batch_size=4, checkpoint_every=1, lr_milestones=())


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished two-step run folder (trained once for all the resume cases)."""
    out = tmp_path_factory.mktemp("run")
    torch.manual_seed(0)
    stream = EpochBatches(tiny_dataset(8), 4, seed=1)
    train(TopDownModel(TINY_MODEL), stream, RESUME_CONFIG, CPU, out_dir=out)
    return out


@pytest.mark.parametrize(("case", "message"), RESUME_CASES)
def test_a_corrupt_resume_state_is_one_line_naming_the_field(
    tmp_path: Path, trained_run: Path, case: str, message: str
) -> None:
    cfg, data = RESUME_CONFIG, tiny_dataset(8)
    shutil.copytree(trained_run, tmp_path, dirs_exist_ok=True)
    path = tmp_path / STATE_FILE
    skeleton, tensors = _stored_state(path)
    text = None
    if case == "step text":
        skeleton["step"] = "abc"
    elif case == "step huge":
        skeleton["step"] = 1e30  # would be read as a finished run
    elif case == "no optimizer":
        del skeleton["optimizer"]
    elif case == "optimizer shape":
        tensors["s.optimizer.state.0.exp_avg"] = torch.zeros(3, 3)
    elif case == "model shape":
        tensors["s.model.backbone.conv1.weight"] = torch.zeros(3, 3)
    elif case == "deep":
        text = '{"step": 1, "x": ' + "[" * 900 + "]" * 900 + "}"
    elif case == "very deep":  # beyond the parser's own recursion limit
        text = '{"step": 1, "x": ' + "[" * 100000 + "]" * 100000 + "}"
    save_file(tensors, str(path), metadata={"metapose_state": text or json.dumps(skeleton)})
    with pytest.raises(DataError) as caught:
        train(TopDownModel(TINY_MODEL), EpochBatches(data, 4, seed=1), cfg, CPU, out_dir=tmp_path)
    assert str(caught.value).startswith(str(path)) and message in str(caught.value)


# ------------------------------------------------------------------------------ images, labels


def _png_header(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize("ext", [".png", ".jpg"])
def test_header_size_reads_png_and_jpeg(ext: str) -> None:
    ok, encoded = cv2.imencode(ext, np.zeros((37, 53, 3), np.uint8))
    assert ok and header_size(encoded.tobytes()) == (53, 37)


@pytest.mark.parametrize(("width", "height"), [(40000, 40000), (2**17, 8), (16385, 16385)])
def test_an_image_over_the_pixel_limit_is_an_unreadable_image(
    tmp_path: Path, width: int, height: int
) -> None:
    path = tmp_path / "huge.png"
    path.write_bytes(_png_header(width, height))
    with pytest.raises(DataError, match=f"image too large: {width} x {height} pixels"):
        read_rgb(path)
    assert width * height > MAX_IMAGE_PIXELS or max(width, height) > 2**16


def test_a_box_far_outside_any_image_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "boxes.json"
    entry = {"image_id": 1, "category_id": 1, "bbox": [1e30, 1e30, 1e30, 1e30], "score": 0.9}
    path.write_text(json.dumps([entry]))
    with pytest.raises(DataError, match=r"field '\[0\].bbox': coordinates beyond 262144"):
        load_detections(path)


def _coco_file(tmp_path: Path, first_keypoint: list[float]) -> Path:
    """A one-image, one-person COCO file (64 x 48 image) whose first keypoint is given."""
    keypoints = [0.0] * 51
    keypoints[0:3] = first_keypoint
    payload = {
        "images": [{"id": 1, "file_name": "a.png", "width": 64, "height": 48}],
        "annotations": [
            {
                "id": 7,
                "image_id": 1,
                "bbox": [1.0, 1.0, 10.0, 10.0],
                "area": 100.0,
                "num_keypoints": 1,
                "keypoints": keypoints,
            }
        ],
        "categories": [{"id": 1, "name": "person"}],
    }
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(payload))
    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((48, 64, 3), np.uint8))
    return path


def test_keypoints_far_outside_their_image_are_refused(tmp_path: Path) -> None:
    path = _coco_file(tmp_path, [1e6, -1e6, 2])
    with pytest.raises(DataError) as caught:
        load_coco(path, image_dir=tmp_path)
    assert "annotation id 7: field 'keypoints': (1e+06, -1e+06) lies more than 2 image sizes" in (
        str(caught.value)
    )
    # A keypoint just outside the frame (a person cut by the border) stays a label.
    path = _coco_file(tmp_path, [-20.0, 60.0, 1])
    assert len(load_coco(path, image_dir=tmp_path).annotations) == 1


# ---------------------------------------------------------------------- misleading diagnoses


def test_fine_tuning_broken_weights_says_so_not_diverged() -> None:
    torch.manual_seed(0)
    model = TopDownModel(TINY_MODEL)
    with torch.no_grad():
        model.backbone.conv1.weight[0, 0, 0, 0] = float("nan")
    options = DeviceOptions(CPU, amp=False, channels_last=False)
    with pytest.raises(CheckFailed, match="starting weights are not finite") as caught:
        fine_tune(model, tiny_dataset(4), AdaptConfig(epochs=1, batch_size=4), options)
    assert not isinstance(caught.value, DivergedError)


def test_a_nan_in_reptile_names_the_meta_step_and_the_inner_step() -> None:
    torch.manual_seed(0)
    model = TopDownModel(TINY_MODEL)
    config = ReptileConfig(
        meta_steps=4, inner_steps=2, batch_size=4, inner=OptimizerConfig(name="sgd", lr=1e-3)
    )

    def poison(entry: StepLog) -> None:  # weights break after meta step 2
        if entry.step == 2:
            with torch.no_grad():
                model.final_layer.weight.fill_(float("nan"))

    stream = EpochBatches(tiny_dataset(8), 4, seed=0)
    with pytest.raises(DivergedError, match=r"at meta step 3 \(inner step 1\)"):
        meta_train(model, stream, config, CPU, on_step=poison)


# ------------------------------------------------------------------------------ the commands


def _one_line_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    code = main(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip() and "it/s" not in line]
    assert code not in (0, None) and "Traceback" not in err, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def test_synth_refuses_bad_arguments_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = str(tmp_path / "s")
    line = _one_line_error(["synth", "--domain", "nope", "--images", "2", "--out", out], capsys)
    assert "unknown synthetic domain 'nope'" in line
    line = _one_line_error(["synth", "--domain", "rgb", "--images", "-5", "--out", out], capsys)
    assert "--images must be in [1, 1000000], got -5" in line
    assert not Path(out).exists()


def test_import_lsp_with_joints_that_are_not_numbers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import scipy.io

    joints = tmp_path / "joints.mat"
    scipy.io.savemat(str(joints), {"joints": "abc"})
    images = tmp_path / "images"
    images.mkdir()
    cv2.imwrite(str(images / "im0001.png"), np.zeros((8, 8, 3), np.uint8))
    argv = ["data", "import-lsp", "--joints", str(joints), "--images", str(images)]
    line = _one_line_error([*argv, "--out", str(tmp_path / "o.json"), "--quiet"], capsys)
    assert "field 'joints': must be an array of numbers" in line


def test_onnx_external_data_outside_the_folder_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.ones((4, 3, 3, 3), np.float32), "w")
    weight.ClearField("raw_data")
    weight.data_location = TensorProto.EXTERNAL
    location = weight.external_data.add()
    location.key, location.value = "location", "../../etc/passwd"
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 6, 6])],
        [weight],
    )
    model = tmp_path / "escape.onnx"
    model.write_bytes(helper.make_model(graph).SerializeToString())
    assert onnx.load_model_from_string(model.read_bytes()).graph.node
    out = tmp_path / "w.safetensors"
    line = _one_line_error(["import-weights", str(model), "--out", str(out)], capsys)
    assert "points outside the directory" in line and not out.exists()


def test_export_refuses_a_negative_seed_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, _, _ = _tiny_checkpoint(tmp_path)
    out = tmp_path / "m.onnx"
    argv = ["export", "--checkpoint", str(path), "--seed", "-1", "--out", str(out)]
    assert "--seed must be in [0, 2**32)" in _one_line_error(argv, capsys)
    assert not out.exists()


def test_shots_refuse_a_seed_numpy_would_not_take(tmp_path: Path) -> None:
    from metapose.training.few_shot import choose_shots

    data = load_coco(_coco_file(tmp_path, [10.0, 10.0, 2]), image_dir=tmp_path)
    assert choose_shots(data, 1, 0) == [1]
    with pytest.raises(ConfigError, match=r"seed must be in \[0, 2\*\*32\)"):
        choose_shots(data, 1, -1)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"input_size": [65536, 65536]}, "sizes must be 1 to 4096 pixels"),
        ({"keypoints": []}, "0 keypoints"),
        ({"mean": "abc"}, "malformed metadata"),
    ],
)
def test_onnx_metadata_sizes_are_bounded(change: dict[str, Any], message: str) -> None:
    from metapose.inference.onnx_runtime import ModelMetadata

    raw = {
        "input_size": [32, 64],
        "heatmap_size": [8, 16],
        "keypoints": ["nose"],
        "flip_index": [0],
        "mean": [0.0, 0.0, 0.0],
        "std": [1.0, 1.0, 1.0],
    }
    with pytest.raises(DataError, match=message):
        ModelMetadata.from_json(json.dumps({**raw, **change}), Path("m.onnx"))
    deep = "[" * 1000 + "]" * 1000
    with pytest.raises(DataError, match="nested deeper"):
        ModelMetadata.from_json(deep, Path("m.onnx"))


def test_a_folder_run_skips_an_image_over_the_pixel_limit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, _, _ = _tiny_checkpoint(tmp_path)
    images = tmp_path / "images"
    images.mkdir()
    cv2.imwrite(str(images / "a.png"), np.full((48, 64, 3), 128, np.uint8))
    (images / "huge.png").write_bytes(_png_header(40000, 40000))
    out = tmp_path / "out"
    argv = ["predict", str(images), "--checkpoint", str(path), "--whole-image", "--out", str(out)]
    assert main([*argv, "--no-overlays", "--quiet"]) == 0
    assert "huge.png: image too large: 40000 x 40000 pixels" in capsys.readouterr().err
    assert len(json.loads((out / "results.json").read_text())) == 1
