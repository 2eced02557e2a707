"""``metapose adapt --unlabelled``: K = 0 without --data, shots plus unlabelled images, and one
clear line for bad input."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from metapose.cli import main
from metapose.data.images import write_rgb
from metapose.models import TopDownModel
from metapose.models.checkpoint import read_metadata, save_checkpoint
from tests.conftest import COCO_TINY, TINY_MODEL, require

VAL = "annotations/person_keypoints_val2017.json"


@pytest.fixture
def start(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    return save_checkpoint(tmp_path / "start.safetensors", TopDownModel(TINY_MODEL))


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        write_rgb(folder / f"p{i}.png", rng.integers(0, 255, (70, 40, 3), dtype=np.uint8))
    return folder


SEMI = ["--semi-steps", "2", "--confidence", "0", "--batch-size", "2", "--quiet"]
WHOLE = ["--unlabelled-boxes", "whole"]  # noise photos: the detector would find nobody


@pytest.mark.parametrize("method", ["adabn", "mean_teacher"])
def test_k0_adapts_on_unlabelled_images_alone(
    tmp_path: Path, start: Path, photos: Path, method: str
) -> None:
    out = tmp_path / "m.safetensors"
    args = ["adapt", "--checkpoint", str(start), "--unlabelled", str(photos), "--out", str(out)]
    assert main([*args, "--semi", method, *SEMI, *WHOLE]) == 0
    meta = read_metadata(out)
    assert meta["shot_image_ids"] == [] and meta["unlabelled_people"] == 4
    assert meta["semi"]["method"] == method and meta["data"] == "no labels"


def test_shots_and_unlabelled_images(tmp_path: Path, start: Path, photos: Path) -> None:
    val = require(COCO_TINY / VAL)
    out = tmp_path / "m.safetensors"
    args = ["adapt", "--checkpoint", str(start), "--data", str(val), "--shots", "2"]
    args += ["--semi", "mean_teacher"]
    assert (
        main(
            [*args, "--epochs", "1", "--unlabelled", str(photos), "--out", str(out), *SEMI, *WHOLE]
        )
        == 0
    )
    meta = read_metadata(out)
    assert len(meta["shot_image_ids"]) == 2 and len(meta["semi_losses"]) == 2


def test_bad_unlabelled_input_is_one_line(
    tmp_path: Path, start: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "m.safetensors"
    missing = tmp_path / "nowhere"
    code = main(
        ["adapt", "--checkpoint", str(start), "--unlabelled", str(missing), "--out", str(out)]
    )
    err = capsys.readouterr().err
    assert code != 0 and "nowhere" in err and "Traceback" not in err and not out.exists()
    with pytest.raises(SystemExit, match="give --data"):
        main(["adapt", "--checkpoint", str(start), "--out", str(out)])


def test_distillation_from_a_larger_teacher(tmp_path: Path, start: Path, photos: Path) -> None:
    torch.manual_seed(1)
    big = TopDownModel(replace(TINY_MODEL, input_size=(64, 128)))
    teacher = save_checkpoint(tmp_path / "teacher.safetensors", big)
    val = require(COCO_TINY / VAL)
    out = tmp_path / "m.safetensors"
    args = [
        "adapt",
        "--checkpoint",
        str(start),
        "--data",
        str(val),
        "--shots",
        "2",
        "--epochs",
        "1",
    ]
    more = ["--unlabelled", str(photos), "--semi", "distill", "--teacher", str(teacher)]
    assert main([*args, *more, "--out", str(out), *SEMI, *WHOLE]) == 0
    meta = read_metadata(out)
    assert meta["semi"]["method"] == "distill" and meta["semi"]["teacher"] == str(teacher)
    assert len(meta["semi_losses"]) == 2 and meta["unlabelled_people"] == 4
    assert meta["semi"]["teacher_adapt"] is True
    assert main([*args, *more, "--teacher-as-is", "--out", str(out), *SEMI, *WHOLE]) == 0
    assert read_metadata(out)["semi"]["teacher_adapt"] is False


def test_people_in_unlabelled_photos_come_from_the_detector(
    tmp_path: Path, start: Path, photos: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """By default the bundled detector finds the people: none in noise (one clear line), some
    in real photos (the images without anybody are left out, with a warning)."""
    out = tmp_path / "m.safetensors"
    args = ["adapt", "--checkpoint", str(start), "--out", str(out), "--semi", "mean_teacher"]
    assert main([*args, "--unlabelled", str(photos), *SEMI]) != 0
    err = capsys.readouterr().err
    assert "found no person" in err and "Traceback" not in err and not out.exists()
    images = require(COCO_TINY / "val2017")
    real = tmp_path / "real"
    real.mkdir()
    for path in sorted(images.iterdir())[:2]:
        (real / path.name).write_bytes(path.read_bytes())
    (real / "noise.png").write_bytes((photos / "p0.png").read_bytes())
    assert main([*args, "--unlabelled", str(real), *SEMI]) == 0
    assert read_metadata(out)["unlabelled_people"] >= 1
    assert "of 3 unlabelled images it read; they are not used" in capsys.readouterr().err


def test_distill_flags_outside_distill_warn_once_each(
    tmp_path: Path, start: Path, photos: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "m.safetensors"
    args = ["adapt", "--checkpoint", str(start), "--unlabelled", str(photos), "--out", str(out)]
    more = ["--semi", "adabn", "--teacher-scales", "1", "1.1", "--teacher-as-is"]
    assert main([*args, *more, *SEMI, *WHOLE]) == 0
    err = capsys.readouterr().err
    assert err.count("--teacher-scales is distill's") == 1
    assert err.count("--teacher-as-is is distill's") == 1


def test_the_semi_flags_become_the_settings_and_none_keeps_the_defaults() -> None:
    import argparse

    from metapose.cli.unlabelled import add_unlabelled_arguments, semi_config
    from metapose.config.training import SemiConfig

    parser = argparse.ArgumentParser()
    add_unlabelled_arguments(parser)
    assert semi_config(parser.parse_args([])) == SemiConfig()
    semi = semi_config(parser.parse_args(["--semi-lr", "2e-4", "--semi-schedule", "cosine"]))
    assert semi == SemiConfig(lr=2e-4, lr_schedule="cosine")


def test_the_student_flags_warn_once_each_with_adabn(capsys: pytest.CaptureFixture[str]) -> None:
    import argparse

    from metapose.cli.unlabelled import add_unlabelled_arguments, semi_config

    parser = argparse.ArgumentParser()
    add_unlabelled_arguments(parser)
    semi_config(
        parser.parse_args(["--semi", "adabn", "--semi-lr", "1e-5", "--semi-schedule", "cosine"])
    )
    err = capsys.readouterr().err
    assert err.count("adabn takes none and ignores it") == 2
    assert "--semi-lr" in err and "--semi-schedule" in err
    semi_config(parser.parse_args(["--semi", "distill", "--semi-lr", "1e-5"]))
    assert capsys.readouterr().err == ""
