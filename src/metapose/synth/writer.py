"""Writing a synthetic domain to disk as a COCO-format keypoint dataset.

Built on :class:`metapose.data.coco.CocoWriter` (staged, atomic): ``out/annotations/
person_keypoints_<split>.json`` and ``out/<split>/<id>.png``, which
:func:`metapose.data.coco.load_coco` reads unchanged. Image ``i`` (1-based id ``i + 1``) is item
``i`` of the stream ``(domain, seed)`` (see :mod:`metapose.synth.items`), rendered by the
calling process or by a pool of ``workers`` processes; either way the files are byte-identical.
The pool spawns fresh interpreters: forking a process whose OpenCV or torch thread pools are
running can deadlock the children.
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import cv2

from metapose.config import MAX_COUNT, MAX_WORKERS, check_int, check_seed
from metapose.config.model import MAX_INPUT_SIDE
from metapose.data.coco_writer import CocoWriter
from metapose.data.records import LabelledImage
from metapose.synth.domains import Domain, get_domain
from metapose.synth.items import Mode, item_rng, render_item

log = logging.getLogger(__name__)

CHUNK = 4  # images per task handed to a worker
LOG_EVERY = 0.1  # with progress=True, log every tenth of the run


class Updatable(Protocol):
    """A tqdm bar or anything with ``update(n)``."""

    def update(self, n: int = 1) -> Any: ...


ProgressHook = Callable[[int], None] | Updatable | bool | None


def _progress_callback(progress: ProgressHook, total: int, name: str) -> Callable[[int], None]:
    if progress is None or progress is False:
        return lambda n: None
    if progress is True:
        done = [0]
        step = max(1, int(total * LOG_EVERY))

        def log_progress(n: int) -> None:
            before, done[0] = done[0], done[0] + n
            if done[0] // step != before // step or done[0] == total:
                log.info("synth %s: %d/%d images", name, done[0], total)

        return log_progress
    if hasattr(progress, "update"):
        return progress.update
    if callable(progress):
        return progress
    raise TypeError(f"progress must be a bool, a callable or have update(n), got {progress!r}")


def _render(job: tuple[Domain, int, int, Mode, tuple[int, int]]) -> LabelledImage:
    domain, seed, index, mode, size = job
    return render_item(domain, item_rng(seed, index), mode, size)


def _init_worker() -> None:
    # The pool already uses every core; OpenCV's own threads would only compete.
    cv2.setNumThreads(1)
    # Ctrl-C reaches the whole process group: the parent stops the pool and reports it once,
    # instead of every worker printing its own traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _labelled_images(
    domain: Domain, num_images: int, seed: int, mode: Mode, size: tuple[int, int], workers: int
) -> Iterator[LabelledImage]:
    jobs = ((domain, seed, i, mode, size) for i in range(num_images))
    if workers <= 0:
        yield from map(_render, jobs)
        return
    with multiprocessing.get_context("spawn").Pool(workers, initializer=_init_worker) as pool:
        # imap keeps the order of the jobs, so worker scheduling cannot change the files.
        yield from pool.imap(_render, jobs, chunksize=CHUNK)


def write_synth_dataset(
    domain: Domain | str,
    num_images: int,
    seed: int,
    out: str | Path,
    *,
    width: int = 640,
    height: int = 480,
    split: str = "train",
    workers: int = 0,
    progress: ProgressHook = None,
    mode: Mode = "scene",
    overwrite: bool = False,
) -> Path:
    """Render ``num_images`` images of ``domain`` into the COCO-format folder ``out``.

    ``mode="scene"`` renders whole ``width x height`` scenes (1 to ``domain.max_people``
    people); ``"crop"`` renders one-person top-down crops. ``progress`` is called with the
    number of images finished (a callable or a tqdm bar); ``True`` logs progress instead.
    Returns the annotation file.
    """
    domain = get_domain(domain)
    check_int("synth", "images", num_images, 1, MAX_COUNT)
    check_int("synth", "width", width, 1, MAX_INPUT_SIDE)
    check_int("synth", "height", height, 1, MAX_INPUT_SIDE)
    check_int("synth", "workers", workers, 0, MAX_WORKERS)
    check_seed("synth", "seed", seed)
    report = _progress_callback(progress, num_images, domain.name)
    # No dates or paths: the same arguments must give the same bytes.
    info = {
        "description": f"metapose synthetic domain '{domain.name}'",
        "generator": "metapose.synth",
        "domain": domain.name,
        "seed": seed,
        "mode": mode,
    }
    with CocoWriter(out, split, info=info, overwrite=overwrite) as writer:
        images = _labelled_images(domain, num_images, seed, mode, (width, height), workers)
        for labelled in images:
            writer.add(labelled)
            report(1)
    log.info("wrote %d %s images to %s", num_images, domain.name, writer.annotation_file)
    return writer.annotation_file
