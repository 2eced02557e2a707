"""Ctrl-C, SIGTERM, a full or read-only disk and a second writer, on every command that writes:
one line on stderr, exit code 130 (Ctrl-C), 143 (SIGTERM) or 2, no temporary file left, and
what the output held before left as it was.

The interrupt is simulated by making a function deep inside the command raise
KeyboardInterrupt (or the CLI's SIGTERM exception); a full or read-only disk by making the
rename of every temporary (or safetensors' write) fail with the error the system gives. Tests run
as root, whom permission bits do not stop, so no folder is made read-only for real. The real
signals are sent to a real ``metapose train`` in a subprocess.
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch

from metapose.cli import main
from metapose.cli.common import Terminated
from metapose.config import MobileNetV2Config, ModelConfig
from metapose.data.images import write_rgb
from metapose.models import TopDownModel
from metapose.models.checkpoint import save_checkpoint
from metapose.synth.writer import write_synth_dataset
from metapose.training.run_folder import saved_step

# A model small enough that every command runs in about a second.
LITE_MODEL = (
    "model: {backbone: {kind: lite_hrnet, stem_channels: 8, branch_channels: [8, 16], "
    "modules_per_stage: [1]}, input_size: [32, 64], deconv_channels: []}\n"
)
TRAIN = LITE_MODEL + "train: {steps: 3, batch_size: 2, checkpoint_every: 1, log_every: 1}\n"
META = LITE_MODEL + "meta: {meta_steps: 3, inner_steps: 1, batch_size: 2, checkpoint_every: 1}\n"
EXPERIMENT = f"""
name: toy
{LITE_MODEL}pretrain: {{steps: 1, batch_size: 2}}
supervised: {{steps: 1, batch_size: 2}}
meta: {{meta_steps: 1, inner_steps: 1, batch_size: 2}}
adapt: {{epochs: 1, batch_size: 2}}
targets:
  - {{name: thermal, domain: thermal, pool_size: 2, test_size: 2, scene_size: [96, 64]}}
shots: [1]
seeds: [0]
"""
OLD = b"what an earlier run wrote"


@dataclass(frozen=True)
class World:
    """Inputs every command reads, made once per module."""

    root: Path
    checkpoint: Path
    coco: Path  # person_keypoints JSON of 4 synthetic images
    onnx: Path

    def config(self, name: str, text: str) -> Path:
        path = self.root / name
        path.write_text(text)
        return path


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    from metapose.config import load_config
    from metapose.config.training import TrainRunConfig
    from metapose.inference.export import export_onnx

    root = tmp_path_factory.mktemp("inputs")
    (root / "lite.yaml").write_text(LITE_MODEL)
    torch.manual_seed(0)
    model = TopDownModel(load_config(root / "lite.yaml", TrainRunConfig).model)
    coco = write_synth_dataset("rgb", 4, 0, root / "synth", width=96, height=64)
    checkpoint = save_checkpoint(root / "lite.safetensors", model)
    # The ONNX importer reads MobileNetV2-like graphs (not Lite-HRNet's shuffles).
    mobile = ModelConfig(
        backbone=MobileNetV2Config(width_mult=0.25, last_channels=32),
        input_size=(32, 64),
        deconv_channels=(16,),
        deconv_separable=True,
    )
    onnx = export_onnx(TopDownModel(mobile), root / "mobilenet.onnx")
    return World(root, checkpoint, coco, onnx)


@dataclass(frozen=True)
class Case:
    """A command, the function inside it that the fault is put into, and its output."""

    name: str
    argv: Callable[[World, Path], list[str]]
    deep: str  # "module:attribute" raising on its ``call``-th call
    call: int = 1
    out: str = "out"  # --out, in ``tmp``
    output: str | None = None  # where an earlier run left OLD ("" for nowhere; None: --out)
    said: str = "nothing written to"

    def earlier(self, tmp: Path) -> Path | None:
        name = self.out if self.output is None else self.output
        return tmp / name if name else None

    def write_earlier(self, tmp: Path) -> Path | None:
        """What an earlier run left in the output (OLD), if this command has one."""
        old = self.earlier(tmp)
        if old is not None:
            old.parent.mkdir(parents=True, exist_ok=True)
            old.write_bytes(OLD)
        return old


def _lsp(world: World, tmp: Path) -> list[str]:
    joints = np.zeros((14, 3, 2))
    joints[:, :2] = 20.0 + np.arange(14)[:, None, None]
    joints[:, 2] = 1
    scipy.io.savemat(tmp / "joints.mat", {"joints": joints})
    (tmp / "im").mkdir()
    for n in (1, 2):
        write_rgb(tmp / "im" / f"im{n:05d}.jpg", np.zeros((64, 48, 3), np.uint8))
    return ["data", "import-lsp", "--joints", str(tmp / "joints.mat"), "--images", str(tmp / "im")]


CASES = [
    Case(
        "train",
        lambda w, t: ["train", "--config", str(w.config("t.yaml", TRAIN)), "--device", "cpu"],
        "metapose.training.train:step_on_batch",
        call=3,
        output="",
        said="keeps the state of step 2; run the same command again to resume from it",
    ),
    Case(
        "meta",
        lambda w, t: ["meta", "--config", str(w.config("m.yaml", META)), "--device", "cpu"],
        "metapose.training.meta:reptile_step",
        call=2,
        output="",
        said="keeps the state of step 1; run the same command again to resume from it",
    ),
    Case(
        "adapt",
        lambda w, t: [
            "adapt",
            "--checkpoint",
            str(w.checkpoint),
            "--data",
            str(w.coco),
            "--shots",
            "2",
            "--epochs",
            "1",
            "--device",
            "cpu",
        ],
        "metapose.models.checkpoint:save_file",  # while the adapted model is being written
        out="out.safetensors",
    ),
    Case(
        "export",
        lambda w, t: ["export", "--checkpoint", str(w.checkpoint), "--quiet"],
        "metapose.inference.onnx_runtime:OnnxHeatmapModel.__call__",  # the parity check
    ),
    Case(
        "predict",
        lambda w, t: [
            "predict",
            str(w.coco.parents[1] / "train"),
            "--checkpoint",
            str(w.checkpoint),
            "--whole-image",
            "--device",
            "cpu",
            "--quiet",
        ],
        "metapose.models:TopDownModel.forward",
        output="out/results.json",
    ),
    Case(
        "evaluate",
        lambda w, t: [
            "evaluate",
            "--gt",
            str(w.coco),
            "--checkpoint",
            str(w.checkpoint),
            "--device",
            "cpu",
            "--quiet",
            "--save-results",
            str(t / "out"),
        ],
        "metapose.models:TopDownModel.forward",
        said="nothing was written",
    ),
    Case(
        "synth",
        lambda w, t: [
            "synth",
            "--domain",
            "rgb",
            "--images",
            "3",
            "--width",
            "64",
            "--height",
            "48",
        ],
        "metapose.synth.writer:render_item",
        call=2,
        output="out/notes.txt",
    ),
    Case("import-lsp", _lsp, "metapose.data.lsp:lsp_person", call=2),
    Case(
        "import-weights",
        lambda w, t: ["import-weights", str(w.onnx)],
        "metapose.models.checkpoint:save_file",
        out="out.safetensors",
    ),
    Case(
        "experiment",
        lambda w, t: [
            "experiment",
            "--config",
            str(w.config("e.yaml", EXPERIMENT)),
            "--quiet",
            "--device",
            "cpu",
        ],
        "metapose.experiment.run:prepare_target",
        output="",
        said="keeps every finished stage; run the same command again to resume",
    ),
]


def _argv(case: Case, world: World, tmp: Path) -> list[str]:
    argv = case.argv(world, tmp)
    return argv if case.name == "evaluate" else [*argv, "--out", str(tmp / case.out)]


def _fault(monkeypatch: pytest.MonkeyPatch, deep: str, call: int, error: BaseException) -> None:
    """Make ``deep`` raise ``error`` on its ``call``-th call (the calls before run as usual)."""
    import importlib

    module_name, _, attribute = deep.partition(":")
    owner: object = importlib.import_module(module_name)
    *parents, name = attribute.split(".")
    for part in parents:
        owner = getattr(owner, part)
    real = getattr(owner, name)
    calls = [0]

    def faulty(*args: object, **kwargs: object) -> object:
        calls[0] += 1
        if calls[0] == call:
            raise error
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, faulty)


def leftovers(folder: Path) -> list[str]:
    """Temporaries, staging folders and lock files anywhere under ``folder``."""
    return sorted(
        str(p.relative_to(folder))
        for p in folder.rglob("*")
        if p.name.endswith((".tmp", ".lock", ".partial", ".staging", ".old"))
        or p.name.startswith((".tmp", ".staging-", "metapose-overlays-"))
    )


def last_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = [line for line in err.replace("\r", "\n").splitlines() if line.strip()]
    return lines[-1]


@pytest.mark.parametrize("stop", [KeyboardInterrupt, Terminated], ids=["ctrl-c", "sigterm"])
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_interrupted_command_says_one_line_and_leaves_no_temporary(
    case: Case,
    stop: type[KeyboardInterrupt],
    world: World,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = _argv(case, world, tmp_path)
    old = case.write_earlier(tmp_path)
    _fault(monkeypatch, case.deep, case.call, stop())

    code = main(argv)

    assert code == (143 if stop is Terminated else 130)
    line = last_line(capsys)
    assert line.startswith("interrupted: ") and case.said in line, line
    assert leftovers(tmp_path) == []
    if old is not None:
        assert old.read_bytes() == OLD  # what was there before is untouched


def _cut_first_clean_up(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """The first removal of a temporary that is there is interrupted as it starts (a second
    SIGTERM, or the first arriving just as a write ends); returns what it left (one path, once
    it has)."""
    from metapose import files
    from metapose.data import coco_writer
    from metapose.inference import pose_runner

    real, cut = files.remove_temporary, []

    def remove(tmp: Path) -> None:
        if not cut and tmp.exists():
            cut.append(tmp)
            raise Terminated
        real(tmp)

    for module in (files, coco_writer, pose_runner):
        monkeypatch.setattr(module, "remove_temporary", remove)
    return cut


# The commands interrupted while a temporary file or folder of theirs is there.
WRITING = [c for c in CASES if c.name in ("adapt", "export", "predict", "import-weights")]


@pytest.mark.parametrize("case", WRITING, ids=[c.name for c in WRITING])
def test_a_signal_inside_the_clean_up_still_leaves_no_temporary(
    case: Case,
    world: World,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A signal lands between any two lines, a ``finally`` included. The CLI removes what a
    clean-up cut short left."""
    argv = _argv(case, world, tmp_path)
    old = case.write_earlier(tmp_path)
    _fault(monkeypatch, case.deep, case.call, Terminated())
    cut = _cut_first_clean_up(monkeypatch)

    assert main(argv) == 143
    assert last_line(capsys).startswith("interrupted: ")
    assert len(cut) == 1 and not cut[0].exists()  # it was cut short, and removed later
    assert leftovers(tmp_path) == []
    if old is not None:
        assert old.read_bytes() == OLD


def test_an_interrupted_train_resumes_and_logs_every_step_once(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    argv = _argv(CASES[0], world, tmp_path)
    with monkeypatch.context() as patch:
        _fault(patch, CASES[0].deep, 3, KeyboardInterrupt())
        assert main(argv) == 130
    assert main(argv) == 0
    steps = [line.split(",")[0] for line in (tmp_path / "out" / "train.csv").read_text().split()]
    assert steps == ["step", "1", "2", "3"]


# ------------------------------------------------------------------ full and read-only disks


DISK_ERRORS = {
    "full": (errno.ENOSPC, "No space left on device"),
    "read-only": (errno.EROFS, "Read-only file system"),
}


def _refuse_renames(monkeypatch: pytest.MonkeyPatch, code: int) -> None:
    """The disk refuses every temporary being put in place (as a full or read-only one does)."""
    real = os.replace

    def replace(src: object, dst: object) -> None:
        if str(src).endswith(".tmp"):
            raise OSError(code, os.strerror(code), str(src))
        real(src, dst)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "replace", replace)


@pytest.mark.parametrize("disk", DISK_ERRORS)
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_a_full_or_read_only_disk_is_one_line_naming_the_file(
    case: Case,
    disk: str,
    world: World,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = _argv(case, world, tmp_path)
    old = case.write_earlier(tmp_path)
    code, reason = DISK_ERRORS[disk]
    _refuse_renames(monkeypatch, code)

    assert main(argv) == 2
    line = last_line(capsys)
    assert line.startswith(f"error: cannot write {tmp_path / 'out'}"), line
    assert line.endswith(f": {reason}"), line
    assert leftovers(tmp_path) == []
    if old is not None:
        assert old.read_bytes() == OLD


@pytest.mark.parametrize(
    "case", [c for c in CASES if c.deep.endswith("save_file")] + CASES[:1], ids=lambda c: c.name
)
def test_safetensors_on_a_full_disk_is_one_line_naming_the_file(
    case: Case,
    world: World,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from safetensors import SafetensorError

    argv = _argv(case, world, tmp_path)
    full = SafetensorError(
        "Error while serializing: I/O error: No space left on device (os error 28)"
    )
    _fault(monkeypatch, "metapose.models.checkpoint:save_file", 1, full)

    assert main(argv) == 2
    line = last_line(capsys)
    assert line.startswith(f"error: cannot write {tmp_path / 'out'}"), line
    assert line.endswith(".safetensors: No space left on device"), line
    assert leftovers(tmp_path) == []


def test_a_full_disk_while_logging_names_the_log(
    world: World,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from metapose.training import runlog

    real = Path.open

    def full_open(self: Path, mode: str = "r", *args: object, **kwargs: object) -> object:
        if self.name == "train.csv" and mode == "a":
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, mode, *args, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr(runlog.Path, "open", full_open)
    assert main(_argv(CASES[0], world, tmp_path)) == 2
    assert last_line(capsys) == (
        f"error: cannot write {tmp_path / 'out' / 'train.csv'}: No space left on device"
    )


# ----------------------------------------------------------------------- one writer an output


def _hold_lock(out: Path) -> subprocess.Popen[str]:
    """Another process holding ``out``'s lock until its stdin closes."""
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from metapose.files import output_lock\n"
            f"with output_lock({str(out)!r}):\n    print('held', flush=True); sys.stdin.read()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    return holder


WRITERS = [c for c in CASES if c.name != "evaluate"]  # evaluate has no --out to hold


@pytest.mark.parametrize("case", WRITERS, ids=[c.name for c in WRITERS])
def test_a_second_writer_of_the_same_output_is_refused(
    case: Case, world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    holder = _hold_lock(tmp_path / case.out)
    try:
        assert main(_argv(case, world, tmp_path)) == 2
        assert last_line(capsys) == (
            f"error: {tmp_path / case.out} is being written by another metapose process "
            f"(pid {holder.pid}); wait for it to finish or choose another --out"
        )
        assert not (tmp_path / case.out).exists()  # the refused command wrote nothing
    finally:
        holder.communicate("")
    assert leftovers(tmp_path) == []  # the holder removed its lock as it let go


def test_the_lock_of_a_killed_process_is_taken_over(world: World, tmp_path: Path) -> None:
    holder = _hold_lock(tmp_path / "out")
    holder.kill()
    holder.wait()
    assert leftovers(tmp_path) == [".out.lock"]  # killed: its lock file stays, its lock does not
    assert main([*_argv(CASES[3], world, tmp_path)]) == 0  # export
    assert (tmp_path / "out").is_file() and leftovers(tmp_path) == []


# --------------------------------------------------------------------- real signals, real run


@pytest.mark.parametrize(
    ("sig", "code"),
    [
        pytest.param(signal.SIGINT, 130, id="sigint", marks=pytest.mark.slow),  # Python's own
        pytest.param(signal.SIGTERM, 143, id="sigterm"),  # the handler the CLI installs
    ],
)
def test_a_signal_stops_a_real_train_run_at_a_resumable_step(
    sig: signal.Signals, code: int, tmp_path: Path
) -> None:
    config = tmp_path / "t.yaml"
    config.write_text(LITE_MODEL + "train: {steps: 100000, batch_size: 2, checkpoint_every: 2}\n")
    out = tmp_path / "out"
    argv = [
        sys.executable,
        "-m",
        "metapose.cli",
        "train",
        "--config",
        str(config),
        "--out",
        str(out),
        "--device",
        "cpu",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.Popen(argv, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 120
    while not (out / "train_state.safetensors").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(0.5)
    run.send_signal(sig)
    _, err = run.communicate(timeout=60)

    assert run.returncode == code, err
    assert "Traceback" not in err, err
    line = err.replace("\r", "\n").strip().splitlines()[-1]
    assert line.startswith(f"interrupted: {out} keeps the state of step "), line
    assert leftovers(tmp_path) == []
    step = int(line.split("step ")[1].split(";")[0])
    assert step >= 2 and step % 2 == 0 and saved_step(out) == step
