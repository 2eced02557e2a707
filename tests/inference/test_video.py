"""Poses on a video: per-frame results with their frame index, the overlay video, bad files."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from metapose.cli import main
from metapose.device import DeviceOptions
from metapose.errors import DataError
from metapose.inference.estimators import estimator_from_checkpoint
from metapose.inference.video import predict_video
from metapose.models import TopDownModel
from metapose.models.checkpoint import save_checkpoint
from tests.conftest import TINY_MODEL

CPU = DeviceOptions(torch.device("cpu"), amp=False)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny", TopDownModel(TINY_MODEL))


def write_video(path: Path, frames: int, size: tuple[int, int] = (64, 48)) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), 10.0, size)
    rng = np.random.default_rng(0)
    for _ in range(frames):
        writer.write(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    writer.release()
    return path


def test_every_strided_frame_gets_results_and_an_overlay_frame(
    tmp_path: Path, checkpoint: Path
) -> None:
    video = write_video(tmp_path / "clip.mp4", 7)
    summary = predict_video(
        video, estimator_from_checkpoint(checkpoint, CPU), tmp_path / "out",
        detector=None, frame_stride=3,
    )  # fmt: skip
    assert (summary.frames, summary.frames_run, summary.people) == (7, 3, 3)
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert [(r["frame"], r["image_id"], r["file_name"]) for r in results] == [
        (0, 1, "clip.mp4"),
        (3, 4, "clip.mp4"),
        (6, 7, "clip.mp4"),
    ]
    overlay = cv2.VideoCapture(str(summary.overlay_path))
    read = 0
    while overlay.read()[0]:
        read += 1
    assert read == 3 and overlay.get(cv2.CAP_PROP_FRAME_WIDTH) == 64


def test_a_file_that_is_not_a_video_is_one_line_and_nothing_written(
    tmp_path: Path, checkpoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fake = tmp_path / "holiday.mp4"
    fake.write_text("not a video")
    with pytest.raises(DataError, match=r"holiday\.mp4: cannot open as a video"):
        predict_video(
            fake, estimator_from_checkpoint(checkpoint, CPU), tmp_path / "out", detector=None
        )
    argv = ["predict", str(fake), "--checkpoint", str(checkpoint), "--out", str(tmp_path / "o")]
    assert main([*argv, "--quiet"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: {fake}: cannot open as a video (not a video file, or a codec OpenCV lacks)"
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["holiday.mp4"]


def test_a_truncated_video_stops_with_the_frame_and_keeps_the_old_output(
    tmp_path: Path, checkpoint: Path
) -> None:
    estimator = estimator_from_checkpoint(checkpoint, CPU)
    video = write_video(tmp_path / "clip.mp4", 30, size=(160, 120))
    predict_video(video, estimator, tmp_path / "out", detector=None, frame_stride=10)
    before = (tmp_path / "out" / "results.json").read_bytes()
    data = video.read_bytes()
    cut = tmp_path / "cut.mp4"
    # mp4v writes the index (moov) at the end: keep it, drop part of the frames' data instead.
    moov = data.rfind(b"moov") - 4
    cut.write_bytes(data[: moov // 2] + bytes(moov - moov // 2) + data[moov:])
    with pytest.raises(DataError, match=r"cut\.mp4: frame \d+ of 30 cannot be decoded"):
        predict_video(cut, estimator, tmp_path / "out", detector=None)
    assert (tmp_path / "out" / "results.json").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4", "cut.mp4", "out"]
