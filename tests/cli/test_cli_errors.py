"""Common mistakes end in one line naming the value and what to do, never in a traceback, and
nothing is written before the inputs have been checked."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from metapose.cli import main
from metapose.data.images import read_rgb
from metapose.errors import DataError
from metapose.models import TopDownModel
from metapose.models.checkpoint import save_checkpoint
from tests.conftest import COCO_TINY, TINY_MODEL, require


@pytest.fixture
def tiny_checkpoint(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    return save_checkpoint(tmp_path / "tiny.safetensors", TopDownModel(TINY_MODEL))


def one_line_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """Run the CLI; assert it failed with exactly one line on stderr; return that line."""
    said = ""
    try:
        code: object = main(argv)
    except SystemExit as stop:  # argparse, and the CLI's own checks (Python prints the text)
        code = stop.code
        said = stop.code if isinstance(stop.code, str) else ""
    err = (capsys.readouterr().err + said).strip()
    assert code not in (0, None), argv
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err and len(lines) >= 1, err
    line = lines[-1]
    assert line.startswith("error: ") or "error:" in line, err
    return line


def _val() -> tuple[Path, Path]:
    coco = require(COCO_TINY)
    return coco / "annotations" / "person_keypoints_val2017.json", coco / "val2017"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--shots", "500"], "asked for 500 shots but the pool has only 17"),
        (["--shots", "0"], "shots must be >= 1, got 0"),
        (["--pool-ids", "5-1"], "image id range '5-1' is empty"),
        (["--lr", "nan"], "lr must be a finite number, got nan"),
        (["--eval-ids", "1-9", "--keypoints", "nose,elbow"], "unknown keypoints ['elbow']"),
        (["--keypoints", "nose"], "--keypoints chooses what is scored: give --eval or --eval-ids"),
    ],
)
def test_adapt_mistakes(
    extra: list[str],
    message: str,
    tiny_checkpoint: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    data, images = _val()
    out = tmp_path / "adapted.safetensors"
    argv = ["adapt", "--checkpoint", str(tiny_checkpoint), "--data", str(data)]
    argv += ["--images", str(images), "--out", str(out), "--epochs", "1", *extra]
    assert message in one_line_error(argv, capsys)
    assert not out.exists()


def test_evaluate_unknown_keypoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data, _ = _val()
    gt = json.loads(data.read_text())
    ann = next(a for a in gt["annotations"] if a["num_keypoints"] > 0)
    results = tmp_path / "results.json"
    results.write_text(
        json.dumps(
            [
                {
                    "image_id": ann["image_id"],
                    "category_id": 1,
                    "keypoints": ann["keypoints"],
                    "score": 1.0,
                }
            ]
        )
    )
    line = one_line_error(
        ["evaluate", "--gt", str(data), "--results", str(results), "--keypoints", "nose,elbow"],
        capsys,
    )
    assert "unknown keypoints ['elbow']" in line and "left_elbow" in line


def test_export_bad_opset(
    tiny_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "m.onnx"
    line = one_line_error(
        ["export", "--checkpoint", str(tiny_checkpoint), "--out", str(out), "--opset", "5"], capsys
    )
    assert "--opset must be in [7," in line and not out.exists()


def test_import_lsp_of_a_file_that_is_not_matlab(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mat = tmp_path / "joints.mat"
    mat.write_text("hello")
    line = one_line_error(
        [
            "data",
            "import-lsp",
            "--joints",
            str(mat),
            "--images",
            str(tmp_path),
            "--out",
            str(tmp_path / "x.json"),
        ],
        capsys,
    )
    assert "not a readable MATLAB (.mat) file" in line


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (b"\x00\x01\xff\xfe", "not a text (YAML) file"),
        (
            b"model:\n  codec: {sigma_at_48: .nan}\n",
            "model.codec.sigma_at_48: must be a finite number",
        ),
        (b"train: {optimizer: {lr: .inf}}\n", "train.optimizer.lr: must be a finite number"),
        (b"train: {lr_gamma: -.inf}\n", "train.lr_gamma: must be a finite number"),
    ],
)
def test_config_mistakes(
    text: bytes, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "c.yaml"
    config.write_bytes(text)
    out = tmp_path / "run"
    assert message in one_line_error(["train", "--config", str(config), "--out", str(out)], capsys)
    assert not out.exists()


def test_predict_into_a_file_given_as_out_folder(
    tiny_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, images = _val()
    out = tmp_path / "afile"
    out.write_text("x")
    line = one_line_error(
        [
            "predict",
            str(next(images.glob("*.jpg"))),
            "--checkpoint",
            str(tiny_checkpoint),
            "--whole-image",
            "--out",
            str(out),
            "--quiet",
        ],
        capsys,
    )
    assert "afile: exists and is not a folder" in line


def _mixed_inputs(tmp_path: Path) -> Path:
    _, images = _val()
    jpgs = sorted(images.glob("*.jpg"))
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(jpgs[0].read_bytes())
    (folder / "a.jpeg").write_bytes(jpgs[1].read_bytes())  # same stem as a.jpg
    (folder / "cut.jpg").write_bytes(jpgs[2].read_bytes()[:3000])  # truncated JPEG
    (folder / "junk.png").write_text("not an image")
    return folder


def test_predict_skips_bad_images_with_a_count_and_keeps_same_stem_overlays(
    tiny_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = _mixed_inputs(tmp_path)
    out = tmp_path / "out"
    argv = ["predict", str(folder), "--checkpoint", str(tiny_checkpoint), "--whole-image"]
    assert main([*argv, "--out", str(out), "--quiet"]) == 0
    captured = capsys.readouterr()
    assert "skipped 2 unreadable image(s)" in captured.out
    assert "cut.jpg: truncated JPEG" in captured.err and "junk.png: cannot decode" in captured.err
    assert sorted(p.name for p in (out / "overlays").iterdir()) == ["a-2.jpg", "a.jpg"]
    assert len(json.loads((out / "results.json").read_text())) == 2

    strict = tmp_path / "strict"
    line = one_line_error([*argv, "--out", str(strict), "--quiet", "--strict"], capsys)
    assert "cut.jpg: truncated JPEG" in line or "junk.png" in line
    assert not strict.exists()  # no empty overlays/ left behind


def test_a_truncated_jpeg_is_refused(tmp_path: Path) -> None:
    _, images = _val()
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(next(images.glob("*.jpg")).read_bytes()[:-200])
    with pytest.raises(DataError, match="truncated JPEG"):
        read_rgb(cut)


def test_export_parity_fails_on_a_nan_model(tmp_path: Path) -> None:
    import numpy as np

    from metapose.inference.export import ParityError, export_checked

    torch.manual_seed(0)
    model = TopDownModel(TINY_MODEL).eval()
    with torch.no_grad():
        model.final_layer.weight.fill_(float("nan"))
    with pytest.raises(ParityError, match="NaN or infinite heatmaps.*nothing written"):
        export_checked(model, tmp_path / "m.onnx", np.random.default_rng(0))
    assert not (tmp_path / "m.onnx").exists()


def test_adapt_that_diverges_saves_no_model(
    tiny_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data, images = _val()
    out = tmp_path / "adapted.safetensors"
    argv = ["adapt", "--checkpoint", str(tiny_checkpoint), "--data", str(data)]
    argv += ["--images", str(images), "--out", str(out), "--shots", "2", "--epochs", "30"]
    argv += ["--optimizer", "sgd", "--lr", "1e12"]
    line = one_line_error(argv, capsys)
    assert "training diverged" in line and not out.exists()


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        ("source: {domains: [rgb, nope]}\n", "source.domains: unknown synthetic domain 'nope'"),
        (
            "targets:\n  - {name: real, annotations: missing.json, pool_ids: [1, 9], "
            "test_ids: [10, 20]}\n",
            # Relative to the config file's folder, whatever the current directory.
            "target 'real': annotations file not found: {tmp}/missing.json",
        ),
    ],
)
def test_experiment_validates_before_writing(
    yaml_text: str, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "exp.yaml"
    config.write_text(yaml_text)
    out = tmp_path / "run"
    line = one_line_error(["experiment", "--config", str(config), "--out", str(out)], capsys)
    assert message.format(tmp=tmp_path) in line and not out.exists()


def test_adapt_eval_ids_must_not_overlap_the_shots(
    tiny_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data, images = _val()
    ids = sorted(im["id"] for im in json.loads(data.read_text())["images"])
    argv = ["adapt", "--checkpoint", str(tiny_checkpoint), "--data", str(data)]
    argv += ["--images", str(images), "--out", str(tmp_path / "a.safetensors"), "--shots", "2"]
    argv += ["--pool-ids", f"{ids[0]}-{ids[-1]}", "--eval-ids", f"{ids[0]}-{ids[-1]}"]
    assert "overlaps the shots" in one_line_error(argv, capsys)


def test_help_shows_defaults_from_the_library_and_version(
    capsys: pytest.CaptureFixture[str],
) -> None:
    import metapose
    from metapose.config import AdaptConfig

    with pytest.raises(SystemExit):
        main(["--version"])
    assert metapose.__version__ in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["adapt", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert f"default {AdaptConfig().epochs}" in text and "--eval-ids" in text
    assert "--device DEVICE auto (CUDA when available, else CPU), cpu, cuda or cuda:N" in text
    assert "(default: auto)" in text


def test_adapt_scores_the_keypoint_subset_like_the_experiment(
    tiny_checkpoint: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import metapose.evaluation.evaluate
    from metapose.models.checkpoint import read_metadata

    data, images = _val()
    ids = sorted(im["id"] for im in json.loads(data.read_text())["images"])
    made = []
    real = metapose.evaluation.evaluate.make_eval_set

    def spy(*args: object, **kwargs: object) -> object:
        made.append(kwargs.get("keypoints"))
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(metapose.evaluation.evaluate, "make_eval_set", spy)
    out = tmp_path / "a.safetensors"
    argv = ["adapt", "--checkpoint", str(tiny_checkpoint), "--data", str(data)]
    argv += ["--images", str(images), "--out", str(out), "--shots", "2", "--epochs", "1"]
    argv += ["--pool-ids", f"{ids[0]}-{ids[9]}", "--eval-ids", f"{ids[10]}-{ids[-1]}"]
    assert main([*argv, "--keypoints", "left_hip, right_hip,left_knee"]) == 0
    assert made == [("left_hip", "right_hip", "left_knee")]
    meta = read_metadata(out)
    assert meta["scored_keypoints"] == ["left_hip", "right_hip", "left_knee"]
    assert "ap" in meta["metrics"]
