"""``metapose adapt``: every labelled image by default, --out as a file or a folder, the paired
verdict (a worse model is not written unless --keep-worse), --quiet, and --eval leaving the
fine-tune bit-identical."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from metapose.cli import main
from metapose.cli.adapt import Verdict, loss_line, out_path, paired_verdict
from metapose.evaluation.coco import EvalResult
from metapose.models import TopDownModel
from metapose.models.checkpoint import read_metadata, save_checkpoint
from metapose.skeleton import COCO17
from metapose.training.adapt import AdaptResult
from tests.conftest import COCO_TINY, TINY_MODEL, require

VAL = "annotations/person_keypoints_val2017.json"


def test_out_is_a_file_or_a_folder(tmp_path: Path) -> None:
    assert out_path(f"{tmp_path}/x/") == tmp_path / "x" / "model.safetensors"
    assert out_path(str(tmp_path)) == tmp_path / "model.safetensors"  # an existing folder
    assert out_path(f"{tmp_path}/m.safetensors") == tmp_path / "m.safetensors"
    assert out_path(f"{tmp_path}/m") == tmp_path / "m.safetensors"


def test_flags_override_the_config_file(tmp_path: Path) -> None:
    from metapose.cli import build_parser
    from metapose.cli.adapt import _adapt_config

    yaml = tmp_path / "adapt.yaml"
    yaml.write_text("l2sp: 0.5\nlr_schedule: cosine\nepochs: 3\n")
    base = ["adapt", "--checkpoint", "m", "--out", str(tmp_path / "o"), "--config", str(yaml)]
    parser = build_parser()
    from_file = _adapt_config(parser.parse_args(base))
    assert (from_file.l2sp, from_file.lr_schedule, from_file.epochs) == (0.5, "cosine", 3)
    flags = ["--l2sp", "1e-3", "--lr-schedule", "constant", "--epochs", "2"]
    config = _adapt_config(parser.parse_args(base + flags))
    assert (config.l2sp, config.lr_schedule, config.epochs) == (1e-3, "constant", 2)
    plain = _adapt_config(parser.parse_args(base[:5]))
    assert (plain.l2sp, plain.lr_schedule) == (0.0, "constant")


def result(ap: float, people: dict[int, float]) -> EvalResult:
    return replace(EvalResult.from_stats([ap] + [0.0] * 9), person_oks=tuple(people.items()))


def test_verdict_is_a_paired_interval() -> None:
    before = result(0.5, {1: 0.5, 2: 0.6, 3: 0.7, 4: 0.8})
    after = result(0.4, {1: 0.4, 2: 0.52, 3: 0.58, 4: 0.71, 9: 1.0})  # 9: not in both
    verdict = paired_verdict(before, after)
    assert verdict.people == 4 and verdict.worse and verdict.clear
    assert verdict.mean == pytest.approx(-0.0975)
    assert verdict.low < verdict.mean < verdict.high < 0
    lines = "\n".join(verdict.lines())
    assert "AP -0.100" in lines and "paired t over the 4 people" in lines
    noisy = paired_verdict(before, result(0.5, {1: 0.6, 2: 0.5, 3: 0.8, 4: 0.7}))
    assert not noisy.worse and not noisy.clear and "within noise" in noisy.lines()[1]
    assert isinstance(noisy, Verdict)


def test_the_loss_line_is_per_epoch_or_per_run_of_steps() -> None:
    # 3 epochs of 2 steps: one mean an epoch
    assert loss_line(AdaptResult((1.0, 3.0, 2.0, 2.0, 5.0, 5.0), 24, 2)) == (
        "loss per epoch: 2.00e+00 2.00e+00 5.00e+00"
    )
    # 200 one-step "epochs" (each unlabelled person seen once) are summarised in 20 runs
    line = loss_line(AdaptResult(tuple(float(i // 10) for i in range(200)), 4800, 1))
    assert line.startswith("loss per 10 steps: 0.00e+00 1.00e+00") and len(line.split()) == 24


@pytest.fixture
def start(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    return save_checkpoint(tmp_path / "start.safetensors", TopDownModel(TINY_MODEL))


def adapt(*extra: str, data: Path, checkpoint: Path, out: Path | str) -> int:
    return main(
        [
            "adapt",
            "--checkpoint",
            str(checkpoint),
            "--data",
            str(data),
            "--epochs",
            "1",
            "--batch-size",
            "4",
            "--out",
            str(out),
            *extra,
        ]
    )


def test_eval_leaves_the_fine_tune_bit_identical(tmp_path: Path) -> None:
    """An evaluation used to switch the weights to channels_last before the fine-tune (on this
    Lite-HRNet that moved the adapted weights); it must change nothing the fine-tune computes."""
    val = require(COCO_TINY / VAL)
    zoo = Path("pp-tinypose-128x96")
    plain, checked = tmp_path / "plain.safetensors", tmp_path / "checked.safetensors"
    assert adapt("--shots", "3", "--quiet", data=val, checkpoint=zoo, out=plain) == 0
    assert (
        adapt(
            "--shots",
            "3",
            "--quiet",
            "--eval",
            str(val),
            "--keep-worse",
            data=val,
            checkpoint=zoo,
            out=checked,
        )
        == 0
    )
    a, b = load_file(str(plain)), load_file(str(checked))
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    assert read_metadata(checked)["verdict"]["people"] > 0


def test_shots_default_to_every_labelled_image(
    tmp_path: Path, start: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    val = require(COCO_TINY / VAL)
    assert adapt("--pool-ids", "0-100000", data=val, checkpoint=start, out=f"{tmp_path}/run/") == 0
    written = tmp_path / "run" / "model.safetensors"
    meta = read_metadata(written)
    printed = capsys.readouterr().out
    assert f"adapted model written to {written}" in printed
    assert "no held-out split" in printed
    assert len(meta["shot_image_ids"]) > 0 and "loss per epoch" in printed
    assert all(i <= 100000 for i in meta["shot_image_ids"])


def test_a_worse_model_is_reported_and_not_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    val = require(COCO_TINY / VAL)
    out = tmp_path / "hurt.safetensors"
    # A pretrained model shaken by a huge learning rate on two images gets worse.
    args = ("--shots", "2", "--lr", "0.05", "--eval", str(val), "--quiet")
    assert adapt(*args, data=val, checkpoint=Path("pp-tinypose-128x96"), out=out) == 1
    printed = capsys.readouterr().out
    assert "verdict: worse" in printed and "not written" in printed and not out.exists()
    assert "before:" not in printed  # --quiet: the verdict only
    assert (
        adapt(*args, "--keep-worse", data=val, checkpoint=Path("pp-tinypose-128x96"), out=out) == 0
    )
    assert read_metadata(out)["verdict"]["oks_change"] < 0
    capsys.readouterr()
    assert main(["inspect", str(out)]) == 0
    shown = capsys.readouterr().out
    for text in (
        "adapted from:  pp-tinypose-128x96",
        "shots:         2 images",
        "lr 0.05",
        "before adapting: AP",
        "verdict:       per-person OKS -",
    ):
        assert text in shown, text


def test_inspect_a_zoo_model(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", "pp-tinypose-128x96"]) == 0
    shown = capsys.readouterr().out
    assert "lite_hrnet" in shown and "96x128 pixels" in shown and "crop udp" in shown
    assert "17 keypoints (nose, left_eye" in shown and "PaddleDetection" in shown
    assert main(["inspect", "pp-tinypose-128x96", "--json"]) == 0
    assert '"format": "metapose-checkpoint/2"' in capsys.readouterr().out


def test_labels_with_left_and_right_exchanged_are_warned_about(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Coordinates mirrored under the canonical names: the pretrained model's poses disagree."""
    val = require(COCO_TINY / VAL)
    payload = json.loads(val.read_text())
    flip = COCO17.flip_index
    for ann in payload["annotations"]:
        ann["keypoints"] = np.asarray(ann["keypoints"]).reshape(-1, 3)[flip].reshape(-1).tolist()
    swapped = tmp_path / "swapped.json"
    swapped.write_text(json.dumps(payload))
    common = ["--shots", "4", "--quiet", "--images", str(COCO_TINY / "val2017")]
    zoo = Path("pp-tinypose-128x96")
    assert adapt(*common, data=swapped, checkpoint=zoo, out=tmp_path / "a.safetensors") == 0
    err = capsys.readouterr().err
    assert "fit the model's poses better with left and right exchanged" in err
    assert adapt(*common, data=val, checkpoint=zoo, out=tmp_path / "b.safetensors") == 0
    assert "left and right exchanged" not in capsys.readouterr().err
