"""kill -9 at random moments during ``metapose train`` and ``metapose meta``, resume, compare.

Each command runs once uninterrupted (the reference), then again in a fresh folder where it is
killed with SIGKILL at a random moment, restarted with the same arguments, killed again, ... until
a run ends by itself. A checkpoint is written after every step, so many kills land in a
checkpoint write. Reported per command: the kills, how many left a temporary file behind (a
kill during a write), and max |difference| of the final weights against the reference (0 means
bit-identical). Also checks the CSV log shows every step exactly once. Usage::

    OMP_NUM_THREADS=1 python benchmarks/kill_resume.py [--trials 2] [--seed 0]
"""

from __future__ import annotations

import argparse
import csv
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from safetensors.torch import load_file

from metapose.files import STALE_PATTERNS

MODEL = "model: {depth: 18, input_size: [32, 64], deconv_channels: [16, 16, 16]}\n"
CONFIGS = {
    "train": MODEL
    + "train: {steps: 24, batch_size: 4, checkpoint_every: 1, lr_milestones: [0.5, 0.75]}\n",
    "meta": MODEL + "meta: {meta_steps: 10, inner_steps: 2, batch_size: 4, checkpoint_every: 1}\n",
}


def command(kind: str, config: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "metapose.cli", kind, "--config", str(config), "--out", str(out)]


def run_to_end(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def killed_until_done(
    cmd: list[str], out: Path, duration: float, rng: np.random.Generator, max_kills: int
) -> tuple[int, int]:
    """Kill ``cmd`` at random moments until it finishes by itself; (kills, kills mid-write)."""
    kills = mid_write = 0
    while True:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if kills >= max_kills:
            assert proc.wait() == 0, f"{cmd} failed after {kills} kills"
            return kills, mid_write
        try:
            code = proc.wait(timeout=float(rng.uniform(0.2, 0.9 * duration)))
            assert code == 0, f"{cmd} exited {code}"
            return kills, mid_write
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            kills += 1
            mid_write += any(p for pattern in STALE_PATTERNS for p in out.glob(pattern))


def max_difference(a: Path, b: Path) -> float:
    ta, tb = load_file(str(a)), load_file(str(b))
    assert set(ta) == set(tb)
    return max(float((ta[k].double() - tb[k].double()).abs().max()) for k in ta)


def steps_logged(folder: Path, kind: str) -> list[int]:
    with (folder / f"{kind}.csv").open() as f:
        return [int(float(row["step"])) for row in csv.DictReader(f)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=2, help="killed runs per command")
    parser.add_argument("--max-kills", type=int, default=8, help="kills per killed run")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for kind, text in CONFIGS.items():
            config = root / f"{kind}.yaml"
            config.write_text(text)
            reference = root / f"{kind}-reference"
            duration = run_to_end(command(kind, config, reference))
            for trial in range(args.trials):
                out = root / f"{kind}-killed-{trial}"
                kills, mid_write = killed_until_done(
                    command(kind, config, out), out, duration, rng, args.max_kills
                )
                diff = max_difference(reference / "model.safetensors", out / "model.safetensors")
                logged = steps_logged(out, kind)
                log_ok = logged == steps_logged(reference, kind)
                left = sorted(p.name for p in out.glob(".*"))
                print(
                    f"{kind} trial {trial}: {kills} kills ({mid_write} left a temporary file, "
                    f"i.e. landed in a write); max |final weight difference| {diff:.3g}; "
                    f"log steps {'identical' if log_ok else 'DIFFER'}; "
                    f"temporaries at the end: {left or 'none'}  (reference run {duration:.1f} s)"
                )


if __name__ == "__main__":
    main()
