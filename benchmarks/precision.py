"""The default precision against bfloat16 autocast: NaN-free and reproducible runs, and speed.

1. Tiny ``metapose train`` and ``metapose meta`` runs (ResNet-18, 32x64 input, 3 upsamplings of
   16 channels, batch 4; the probe that found NaN with bfloat16 on AMX CPUs), ``--runs`` of each
   with seeds 0, 1, ..., with the defaults and with ``amp: true``: how many ended in NaN
   ("training diverged"), and whether two runs of seed 0 give the same tensors.
2. Training and inference images/s of the same models in both precisions (``architectures.py``'s
   timing: batch 32, forward + JointsMSE + backward + Adam).

Run: ``python benchmarks/precision.py [--runs 20] [--threads 2]``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import tempfile
from pathlib import Path

import torch
from architectures import architectures, measure
from safetensors.torch import load_file

from metapose.cli import main as metapose
from metapose.device import DeviceOptions, cpu_has_bf16

TINY = "model: {depth: 18, input_size: [32, 64], deconv_channels: [16, 16, 16]}\n"
RUNS = {
    "train": "train: {steps: 10, batch_size: 4, lr_milestones: [0.5], amp: AMP}\n",
    "meta": "meta: {meta_steps: 10, inner_steps: 2, batch_size: 4, amp: AMP}\n",
}


def tiny_run(command: str, amp: str, seed: int, folder: Path) -> dict[str, torch.Tensor] | None:
    """The run's final tensors, or None when it stopped on a non-finite loss."""
    folder.mkdir(exist_ok=True)
    config = folder / f"{command}-{amp}-{seed}.yaml"
    config.write_text(TINY + RUNS[command].replace("AMP", amp) + f"seed: {seed}\n")
    out = folder / config.stem
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        code = metapose([command, "--config", str(config), "--out", str(out), "--no-resume"])
    return load_file(out / "model.safetensors") if code == 0 else None


def same_tensors(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"native bf16: {cpu_has_bf16()}, threads {args.threads}, torch {torch.__version__}")
    with tempfile.TemporaryDirectory() as tmp:
        if args.runs > 0:  # --runs 0: the timing only
            print("| run | precision | NaN runs | seed 0 twice: same tensors |")
            print("|---|---|---|---|")
        for command in RUNS if args.runs > 0 else ():
            for amp in ("auto", "true"):
                finals = [tiny_run(command, amp, s, Path(tmp)) for s in range(args.runs)]
                again = tiny_run(command, amp, 0, Path(tmp) / "again")
                nan = sum(f is None for f in finals)
                first = finals[0]
                same = first is not None and again is not None and same_tensors(first, again)
                print(f"| {command} | {amp} | {nan} of {args.runs} | {same} |")
    print("\n| model (128x96) | precision | train img/s | infer img/s |")
    print("|---|---|---|---|")
    cpu = torch.device("cpu")
    for name, config in architectures((96, 128)).items():
        if name not in ("ResNet-18", "Lite-HRNet (PP-TinyPose)"):
            continue
        for label, options in (
            ("default (float32)", DeviceOptions(cpu)),
            ("amp: true (bf16)", DeviceOptions(cpu, amp=True)),
        ):
            if label.startswith("amp") and not options.use_amp:
                continue
            train, infer = measure(config, options, args.repeats)
            print(f"| {name} | {label} | {train:.1f} | {infer:.1f} |")


if __name__ == "__main__":
    main()
