"""The command line end to end on a temporary folder: train -> meta -> adapt -> export -> predict
-> evaluate, at toy size, on the built-in synthetic data and the real COCO files."""

import json
from pathlib import Path

import pytest

from metapose.cli import main
from metapose.models.checkpoint import read_metadata
from tests.conftest import COCO_TINY, require

TOY_MODEL = "model: {depth: 18, input_size: [32, 64], deconv_channels: [16, 16, 16]}\n"


def run(*argv: str) -> None:
    assert main([*argv]) == 0, argv


def test_user_workflow(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    coco = require(COCO_TINY)
    val = coco / "annotations" / "person_keypoints_val2017.json"
    train_cfg = tmp_path / "train.yaml"
    train_cfg.write_text(TOY_MODEL + "train: {steps: 2, batch_size: 4, lr_milestones: [0.5]}\n")
    meta_cfg = tmp_path / "meta.yaml"
    meta_cfg.write_text(TOY_MODEL + "meta: {meta_steps: 1, inner_steps: 2, batch_size: 4}\n")

    run("train", "--config", str(train_cfg), "--out", str(tmp_path / "base"))
    base = tmp_path / "base" / "model.safetensors"
    assert base.is_file() and (tmp_path / "base" / "train.csv").is_file()
    run("meta", "--config", str(meta_cfg), "--out", str(tmp_path / "meta"), "--init", str(base))
    meta = tmp_path / "meta" / "model.safetensors"
    assert meta.is_file()

    run(
        "adapt",
        "--checkpoint",
        str(meta),
        "--data",
        str(val),
        "--shots",
        "2",
        "--epochs",
        "1",
        "--eval",
        str(val),
        "--keep-worse",  # a toy model may well get worse: written anyway
        "--out",
        str(tmp_path / "adapted.safetensors"),
    )
    printed = capsys.readouterr().out
    assert "before: AP" in printed and "after:  AP" in printed and "loss per epoch" in printed
    assert "verdict: " in printed and "paired t over the" in printed
    adapted = tmp_path / "adapted.safetensors"
    meta = read_metadata(adapted)
    assert len(meta["shot_image_ids"]) == 2 and "ap" in meta["metrics"]
    assert not adapted.with_suffix(".json").exists()  # one file is the whole model

    run("export", "--checkpoint", str(adapted), "--out", str(tmp_path / "model.onnx"))
    assert "onnx.checker passed" in capsys.readouterr().out

    image = next((coco / "val2017").glob("*.jpg"))
    run(
        "predict",
        str(image),
        "--checkpoint",
        str(adapted),
        "--whole-image",
        "--out",
        str(tmp_path / "pred_torch"),
        "--quiet",
    )
    run(
        "predict",
        str(image),
        "--onnx",
        str(tmp_path / "model.onnx"),
        "--whole-image",
        "--out",
        str(tmp_path / "pred_onnx"),
        "--quiet",
    )
    for folder in ("pred_torch", "pred_onnx"):
        results = json.loads((tmp_path / folder / "results.json").read_text())
        assert len(results) == 1 and len(results[0]["keypoints"]) == 51
        assert (tmp_path / folder / "overlays" / f"{image.stem}.jpg").is_file()

    run(
        "evaluate",
        "--gt",
        str(val),
        "--images",
        str(coco / "val2017"),
        "--checkpoint",
        str(adapted),
        "--save-results",
        str(tmp_path / "res.json"),
        "--quiet",
    )
    run(
        "evaluate",
        "--gt",
        str(val),
        "--results",
        str(tmp_path / "res.json"),
        "--json",
        str(tmp_path / "scores.json"),
    )
    table = capsys.readouterr().out
    assert "AP" in table and set(json.loads((tmp_path / "scores.json").read_text())) >= {"ap", "ar"}


def test_bad_data_is_one_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"images": [], "annotations": [')
    assert (
        main(
            [
                "adapt",
                "--checkpoint",
                "missing.safetensors",
                "--data",
                str(bad),
                "--out",
                str(tmp_path / "x.safetensors"),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "missing.safetensors" in err
    assert not (tmp_path / "x.safetensors").exists()
