"""Same seed, same bytes; another seed, other bytes; workers change nothing (must show 1)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from torch.utils.data import DataLoader

from metapose.data.coco import load_coco
from metapose.skeleton import COCO17
from metapose.synth.items import synth_item
from metapose.synth.writer import write_synth_dataset
from tests.synth_stream import SynthStream

SIZE = dict(width=96, height=72)


def folder_bytes(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path: Path) -> None:
    for name in ("a", "b"):
        write_synth_dataset("rgb", 3, 5, tmp_path / name, **SIZE)
    write_synth_dataset("rgb", 3, 6, tmp_path / "c", **SIZE)
    a, b, c = (folder_bytes(tmp_path / n) for n in "abc")
    assert a == b
    assert a.keys() == c.keys()
    assert all(a[k] != c[k] for k in a)


@pytest.mark.slow
def test_workers_do_not_change_the_bytes(tmp_path: Path) -> None:
    write_synth_dataset("thermal", 6, 2, tmp_path / "serial", **SIZE)
    write_synth_dataset("thermal", 6, 2, tmp_path / "pool", workers=2, **SIZE)
    assert folder_bytes(tmp_path / "serial") == folder_bytes(tmp_path / "pool")


def test_written_dataset_loads_with_the_coco_reader(tmp_path: Path) -> None:
    ann = write_synth_dataset("unique", 4, 1, tmp_path / "u", split="val", **SIZE)
    dataset = load_coco(ann, check_images="decode")
    assert len(dataset.images) == 4
    assert dataset.trainable()
    category = dataset.to_coco_dict()["categories"][0]
    assert category["keypoints"] == list(COCO17.keypoints)
    assert category["skeleton"] == COCO17.coco_skeleton()
    for ann_ in dataset.annotations:
        assert ann_.area > 0 and ann_.bbox[2] > 0 and ann_.bbox[3] > 0


def test_crop_mode_writes_one_person_per_image(tmp_path: Path) -> None:
    ann = write_synth_dataset("rgb", 3, 1, tmp_path / "c", mode="crop", width=48, height=64)
    dataset = load_coco(ann)
    assert [len(dataset.annotations_by_image[i.id]) for i in dataset.images] == [1, 1, 1]


def test_stream_items_do_not_depend_on_the_number_of_workers() -> None:
    # Start OpenCV's thread pool first: forked workers inherit it half-alive, which must not hang
    # them (a cv2.setNumThreads call in a worker did).
    cv2.GaussianBlur(np.zeros((512, 512), np.float32), (0, 0), 3.0)
    stream = SynthStream("rgb", seed=3, size=(48, 64), length=4)
    serial = [item.image for item in stream]
    loader = DataLoader(stream, batch_size=None, num_workers=2)
    parallel = [item.image for item in loader]
    assert len(parallel) == 4
    for i, (a, b) in enumerate(zip(serial, parallel, strict=True)):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, synth_item("rgb", 3, i, size=(48, 64)).image)


def test_stream_transform_gets_the_item_generator() -> None:
    def shape_and_draw(labelled, rng):  # type: ignore[no-untyped-def]
        return labelled.image.shape, float(rng.random())

    stream = SynthStream(
        ["rgb", "thermal"], seed=1, size=(48, 64), length=3, transform=shape_and_draw
    )
    first = list(stream)
    assert first == list(stream)
    assert all(shape == (64, 48, 3) for shape, _ in first)
    assert len({draw for _, draw in first}) == 3
