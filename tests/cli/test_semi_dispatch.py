"""``metapose adapt --unlabelled`` runs the semi methods through the library's one dispatcher
(:func:`metapose.inference.semi_adapt.adapt_with_unlabelled`, which the experiment's twins call)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import metapose.inference.semi_adapt as semi_adapt
from metapose.cli import main
from metapose.data.images import write_rgb
from metapose.models import TopDownModel
from metapose.models.checkpoint import read_metadata, save_checkpoint
from tests.conftest import TINY_MODEL


def test_adapt_unlabelled_calls_the_shared_dispatcher(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    torch.manual_seed(0)
    start = save_checkpoint(tmp_path / "start.safetensors", TopDownModel(TINY_MODEL))
    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        write_rgb(photos / f"p{i}.png", rng.integers(0, 255, (70, 40, 3), dtype=np.uint8))
    calls: list[dict[str, Any]] = []
    original = semi_adapt.adapt_with_unlabelled

    def recording(*args: Any, **kwargs: Any) -> Any:
        calls.append({"support": args[1], "people": len(args[2]), "semi": args[4], **kwargs})
        return original(*args, **kwargs)

    monkeypatch.setattr(semi_adapt, "adapt_with_unlabelled", recording)
    out = tmp_path / "m.safetensors"
    args = ["adapt", "--checkpoint", str(start), "--unlabelled", str(photos), "--out", str(out)]
    more = ["--semi", "mean_teacher", "--semi-steps", "2", "--unlabelled-boxes", "whole"]
    assert main([*args, *more, "--seed", "4", "--quiet"]) == 0
    assert len(calls) == 1
    call = calls[0]
    assert call["support"] is None and call["people"] == 3 and call["seed"] == 4
    assert call["semi"].method == "mean_teacher" and call["semi"].steps == 2
    assert len(read_metadata(out)["semi_losses"]) == 2
