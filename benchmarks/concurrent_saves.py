"""Many ``save_checkpoint`` calls to one path at the same moment: how many fail?

``--calls`` saves of a tiny model to the same file, started together from ``--processes``
processes, each running its share on as many threads. Every save writes a temporary beside the
file and renames it over; with a temporary name shared by all writers, one writer's rename can
take away another's half-written file. Reported: the calls, the errors (by message), whether the
file left loads, and the temporaries left behind. Usage::

    OMP_NUM_THREADS=1 python benchmarks/concurrent_saves.py [--calls 300] [--processes 4]
"""

from __future__ import annotations

import argparse
import collections
import multiprocessing
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from metapose.models import TopDownModel


def _model() -> TopDownModel:
    import torch

    from metapose.config import LiteHRNetConfig, ModelConfig
    from metapose.models import TopDownModel

    torch.manual_seed(0)
    backbone = LiteHRNetConfig(stem_channels=8, branch_channels=(8, 16), modules_per_stage=(1,))
    return TopDownModel(ModelConfig(backbone=backbone, input_size=(32, 64), deconv_channels=()))


def _saves(path: str, first: int, count: int) -> list[str]:
    """Run ``count`` saves on ``count`` threads released together; their error messages."""
    from metapose.models.checkpoint import save_checkpoint

    model = _model()
    gate = threading.Barrier(count)

    def save(i: int) -> str | None:
        gate.wait()
        try:
            save_checkpoint(path, model, extra={"writer": i})
        except Exception as err:  # noqa: BLE001 - counting every kind of failure is the point
            return f"{type(err).__name__}: {str(err)[:100]}"
        return None

    with ThreadPoolExecutor(max_workers=count) as pool:
        results = list(pool.map(save, range(first, first + count)))
    return [r for r in results if r is not None]


def _process(args: tuple[str, int, int]) -> list[str]:
    return _saves(*args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--processes", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "model.safetensors")
        share = [args.calls // args.processes] * args.processes
        share[-1] += args.calls - sum(share)
        jobs = [(path, sum(share[:i]), n) for i, n in enumerate(share)]
        with multiprocessing.get_context("spawn").Pool(args.processes) as pool:
            errors = [e for found in pool.map(_process, jobs) for e in found]
        from metapose.models.checkpoint import load_checkpoint

        writer = load_checkpoint(path).meta["writer"]
        left = sorted(p.name for p in Path(tmp).iterdir() if p.name != "model.safetensors")
    print(f"{args.calls} concurrent save_checkpoint calls ({args.processes} processes x threads)")
    print(f"errors: {len(errors)}")
    for message, n in collections.Counter(errors).most_common(5):
        print(f"  {n} x {message}")
    print(f"file left loads: yes (written by call {writer}); other files left: {left or 'none'}")


if __name__ == "__main__":
    main()
