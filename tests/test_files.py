"""Files the library writes: readable with the user's umask, strict JSON (no NaN)."""

from __future__ import annotations

import errno
import json
import math
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from metapose.config import LiteHRNetConfig, ModelConfig
from metapose.errors import WriteError
from metapose.files import (
    atomic_write,
    discard_temporaries,
    lock_path,
    output_lock,
    release_held_locks,
    remove_stale_temporaries,
    write_json_atomic,
)
from metapose.models import TopDownModel
from metapose.models.checkpoint import load_checkpoint, save_checkpoint


def test_json_gets_the_umask_and_null_for_nan(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        write_json_atomic(tmp_path / "table.json", {"ap": math.nan, "rows": [1.5, math.inf]})
    finally:
        os.umask(old)
    path = tmp_path / "table.json"
    assert path.stat().st_mode & 0o777 == 0o644
    text = path.read_text()
    assert json.loads(text, parse_constant=lambda c: 1 / 0) == {"ap": None, "rows": [1.5, None]}
    assert [p.name for p in tmp_path.iterdir()] == ["table.json"]  # no temporary left


# ----------------------------------------------------------- atomic writes and output locks


def test_a_failed_write_keeps_the_earlier_file_and_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "out.json"
    path.write_text("earlier")
    with pytest.raises(KeyboardInterrupt), atomic_write(path) as tmp:
        tmp.write_text("half")
        raise KeyboardInterrupt
    assert path.read_text() == "earlier" and [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_temporaries_are_unique_and_named_for_their_process(tmp_path: Path) -> None:
    with atomic_write(tmp_path / "a.bin") as one, atomic_write(tmp_path / "a.bin") as two:
        assert one != two
        assert one.name.startswith(f".a.bin.{os.getpid()}.") and one.name.endswith(".tmp")


def test_a_refused_write_names_the_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def full(src: object, dst: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "replace", full)
    with pytest.raises(WriteError) as caught:
        write_json_atomic(tmp_path / "r.json", [1])
    assert str(caught.value) == f"cannot write {tmp_path / 'r.json'}: No space left on device"
    assert caught.value.errno == errno.ENOSPC and list(tmp_path.iterdir()) == []


def test_stale_temporaries_of_a_running_process_are_kept(tmp_path: Path) -> None:
    mine = tmp_path / f".x.{os.getpid()}.00ff00ff.tmp"
    dead = tmp_path / ".x.999999999.00ff00ff.tmp"  # no such pid
    running = tmp_path / ".x.1.00ff00ff.tmp"  # pid 1 always runs
    old = tmp_path / ".x.tmp"  # an earlier version's name
    for path in (mine, dead, running, old):
        path.write_text("")
    remove_stale_temporaries(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == [running.name]


def test_the_lock_refuses_another_process_and_is_reentrant(tmp_path: Path) -> None:
    out = tmp_path / "run"
    script = (
        "import sys\nfrom metapose.files import output_lock\n"
        f"try:\n    with output_lock({str(out)!r}): pass\n"
        "except Exception as err:\n    print(err)"
    )
    with output_lock(out), output_lock(out):  # the same process may enter it again
        assert lock_path(out).read_text() == f"{os.getpid()}\n"
        said = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, check=True
        ).stdout.strip()
    assert said == (
        f"{out} is being written by another metapose process (pid {os.getpid()}); "
        "wait for it to finish or choose another --out"
    )
    assert not lock_path(out).exists()  # removed on release


def _cut_short(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """The first removal of a file called ``name`` is interrupted as it starts, as a signal
    landing there would be."""
    real = Path.unlink

    def unlink(self: Path, missing_ok: bool = False) -> None:
        if self.name == name:
            monkeypatch.setattr(Path, "unlink", real)
            raise KeyboardInterrupt
        real(self, missing_ok=missing_ok)

    monkeypatch.setattr(Path, "unlink", unlink)


def test_a_clean_up_cut_short_is_finished_later(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out.json"
    with pytest.raises(KeyboardInterrupt), atomic_write(out) as tmp:
        _cut_short(monkeypatch, tmp.name)
        raise KeyboardInterrupt  # the first signal, while the file is written
    assert [p.name for p in tmp_path.iterdir()] == [tmp.name]  # its removal was cut short
    with pytest.raises(KeyboardInterrupt), output_lock(out):
        _cut_short(monkeypatch, lock_path(out).name)
    assert lock_path(out).exists()
    discard_temporaries()
    release_held_locks()
    assert list(tmp_path.iterdir()) == []
    with output_lock(out):  # the lock was let go
        assert lock_path(out).read_text() == f"{os.getpid()}\n"


def _lite_model() -> TopDownModel:
    """A model of 2,872 numbers: 300 saves of it take a second."""
    torch.manual_seed(0)
    backbone = LiteHRNetConfig(stem_channels=8, branch_channels=(8, 16), modules_per_stage=(1,))
    return TopDownModel(ModelConfig(backbone=backbone, input_size=(32, 64), deconv_channels=()))


def test_300_concurrent_saves_to_one_path_all_succeed(tmp_path: Path) -> None:
    model = _lite_model()
    path = tmp_path / "model.safetensors"

    def save(i: int) -> None:
        save_checkpoint(path, model, extra={"writer": i})

    with ThreadPoolExecutor(max_workers=300) as pool:
        errors = [f.exception() for f in [pool.submit(save, i) for i in range(300)]]
    assert [e for e in errors if e is not None] == []
    assert load_checkpoint(path).meta["writer"] in range(300)
    assert [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]


def test_folders_made_for_a_lock_alone_go_with_it(tmp_path: Path) -> None:
    with output_lock(tmp_path / "a" / "b" / "out"):
        assert (tmp_path / "a" / "b" / ".out.lock").is_file()
    assert list(tmp_path.iterdir()) == []  # a command refused later leaves no empty folder
    with output_lock(tmp_path / "a" / "out"):
        (tmp_path / "a" / "out").write_text("written")
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["out"]


def _interrupt_rename_into(monkeypatch: pytest.MonkeyPatch, target: Path) -> None:
    """The first rename that puts a new output at ``target`` is interrupted (the earlier one
    has already been moved aside)."""
    real, fired = os.replace, []

    def replace(src: object, dst: object) -> None:
        if Path(str(dst)) == target and not fired:
            fired.append(src)
            raise KeyboardInterrupt
        real(src, dst)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "replace", replace)


def test_an_output_replaced_whole_comes_back_when_stopped_between_renames(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from metapose.data.coco_writer import CocoWriter
    from metapose.inference.pose_runner import staged_folder

    out = tmp_path / "pred"
    out.mkdir()
    (out / "results.json").write_text("earlier")
    _interrupt_rename_into(monkeypatch, out.resolve())
    with pytest.raises(KeyboardInterrupt), staged_folder(out) as staged:
        (staged / "results.json").write_text("new")
    assert (out / "results.json").read_text() == "earlier"
    assert [p.name for p in tmp_path.iterdir()] == ["pred"]  # no staged or old folder left

    root = tmp_path / "coco"
    (root / "train").mkdir(parents=True)
    (root / "train" / "a.png").write_text("earlier")
    _interrupt_rename_into(monkeypatch, root / "train")
    with pytest.raises(KeyboardInterrupt), CocoWriter(root, overwrite=True):
        pass
    assert (root / "train" / "a.png").read_text() == "earlier"
    assert sorted(p.name for p in root.iterdir()) == ["train"]
