"""Fingerprints of tiny ``train`` and ``meta_train`` runs, to show a change moves no number.

Each loop runs twice on the synthetic stream (ResNet-18, 32x64 input, batch 4, float32): once
straight through, once stopped by a KeyboardInterrupt in the middle and resumed in the same
folder. ``train`` validates every 2 steps and decays its learning rate after the resume point.
Printed per run: sha256 of the final ``model.safetensors``' tensor bytes, of its header without
the provenance (creation time and git commit, which differ run to run), of the resume state's
tensor bytes and of its header without wall times, of the loss history (``float.hex``), and of
the CSV logs without their ``seconds`` column. Run it before and after a change to the loops;
every line must be equal, and each resumed run must equal its straight run. Usage::

    OMP_NUM_THREADS=1 python benchmarks/loop_identity.py
"""

from __future__ import annotations

import csv
import hashlib
import json
import struct
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from metapose.config import (
    MetaRunConfig,
    ModelConfig,
    ReptileConfig,
    ResNetConfig,
    SourceConfig,
    TaskAugmentConfig,
    TopDownAugmentConfig,
    TrainConfig,
    TrainRunConfig,
)
from metapose.config.training import OptimizerConfig
from metapose.data.codec import HeatmapCodec
from metapose.models import TopDownModel
from metapose.models.topdown import seeded_model
from metapose.training.meta import meta_train
from metapose.training.run_folder import FINAL_FILE, STATE_FILE, History, StepLog
from metapose.training.sources import batches_for
from metapose.training.train import train

CPU = torch.device("cpu")
MODEL = ModelConfig(
    backbone=ResNetConfig(depth=18), input_size=(32, 64), deconv_channels=(16, 16, 16)
)
TRAIN = TrainConfig(
    steps=6,
    batch_size=4,
    checkpoint_every=2,
    log_every=1,
    lr_milestones=(0.75,),
    amp=False,
    channels_last=False,
)
META = ReptileConfig(
    meta_steps=5,
    inner_steps=2,
    batch_size=4,
    tasks_per_step=2,
    meta_step_final=0.01,
    inner=OptimizerConfig(name="sgd", lr=0.05),
    checkpoint_every=2,
    log_every=1,
    amp=False,
    channels_last=False,
)
STOP_AT = {"train": 5, "meta": 4}  # the step whose on_step interrupts the first try


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def split_safetensors(path: Path) -> tuple[dict[str, Any], bytes]:
    """(header, tensor bytes) of a safetensors file."""
    raw = path.read_bytes()
    (size,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8 : 8 + size]), raw[8 + size :]


def without(value: Any, keys: set[str]) -> Any:
    """``value`` with every mapping's ``keys`` dropped, recursively (also inside JSON strings)."""
    if isinstance(value, dict):
        return {k: without(v, keys) for k, v in value.items() if k not in keys}
    if isinstance(value, list):
        return [without(v, keys) for v in value]
    if isinstance(value, str) and value.startswith("{"):
        return json.dumps(without(json.loads(value), keys), sort_keys=True)
    return value


def file_prints(path: Path, volatile: set[str]) -> tuple[str, str]:
    header, tensors = split_safetensors(path)
    return sha(tensors), sha(json.dumps(without(header, volatile), sort_keys=True).encode())


def csv_print(path: Path) -> str:
    if not path.exists():
        return "-"
    with path.open() as handle:
        rows = [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(handle)]
    return sha(json.dumps(rows).encode())


def fingerprint(folder: Path, history: History) -> dict[str, str]:
    model_tensors, model_header = file_prints(folder / FINAL_FILE, {"provenance"})
    state_tensors, state_header = file_prints(folder / STATE_FILE, {"seconds"})
    losses = [(s.step, s.images, s.loss.hex(), float(s.lr).hex()) for s in history.steps]
    return {
        "model tensors": model_tensors,
        "model header": model_header,
        "state tensors": state_tensors,
        "state header": state_header,
        "losses": sha(json.dumps([losses, history.evals]).encode()),
        "logs": " ".join(csv_print(folder / f"{n}.csv") for n in ("train", "meta", "val")),
    }


def interrupt_at(step: int) -> Callable[[StepLog], None]:
    def on_step(entry: StepLog) -> None:
        if entry.step == step:
            raise KeyboardInterrupt

    return on_step


def probe(model: TopDownModel) -> dict[str, float]:
    """A validation that reads the weights in eval mode (deterministic, no data)."""
    model.eval()
    with torch.no_grad():
        out = model(torch.linspace(-1, 1, 3 * 64 * 32).reshape(1, 3, 64, 32))
    return {"mean": float(out.mean()), "max": float(out.max())}


def run_once(name: str, folder: Path, on_step: Callable[[StepLog], None] | None) -> History:
    """One call of ``train`` or ``meta_train`` (a fresh model and stream) writing to ``folder``."""
    stream = batches_for(
        SourceConfig(),
        HeatmapCodec.for_model(MODEL),
        augment=TopDownAugmentConfig(),
        task_augment=TaskAugmentConfig() if name == "meta" else None,
        batch_size=4,
    )
    model = seeded_model(MODEL, 0)
    if name == "meta":
        run_config = MetaRunConfig(model=MODEL, meta=META)
        return meta_train(
            model, stream, META, CPU, out_dir=folder, run_config=run_config, on_step=on_step
        )
    return train(
        model,
        stream,
        TRAIN,
        CPU,
        out_dir=folder,
        run_config=TrainRunConfig(model=MODEL, train=TRAIN),
        on_step=on_step,
        validate=probe,
        validate_every=2,
    )


def run(name: str, folder: Path, stop: int | None) -> History:
    """``name``'s run in ``folder``; with ``stop``, interrupted after that step, then resumed."""
    if stop is not None:
        try:
            run_once(name, folder, interrupt_at(stop))
        except KeyboardInterrupt:
            pass
        else:
            raise AssertionError("the run was not interrupted")
    return run_once(name, folder, None)


def main() -> None:
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("train", "meta"):
            prints = {}
            for how, stop in (("straight", None), ("resumed", STOP_AT[name])):
                folder = Path(tmp) / f"{name}-{how}"
                prints[how] = fingerprint(folder, run(name, folder, stop))
                for key, value in prints[how].items():
                    print(f"{name:5s} {how:8s} {key:13s} {value}")
            same = [k for k in prints["straight"] if prints["straight"][k] == prints["resumed"][k]]
            print(f"{name:5s} resumed equals straight in: {', '.join(same)}")


if __name__ == "__main__":
    main()
