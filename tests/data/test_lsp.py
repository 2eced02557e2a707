import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import scipy.io

from metapose.data.coco import load_coco
from metapose.data.lsp import (
    AREA_PER_JOINT_BOX,
    LSP_JOINTS,
    LSP_TO_COCO,
    import_lsp,
    lsp_person,
    read_lsp_joints,
)
from metapose.errors import DataError
from metapose.skeleton import COCO17
from tests.conftest import LSPET, require


def test_twelve_body_joints_map_to_the_coco_slot_of_the_same_name() -> None:
    assert len(LSP_TO_COCO) == 12
    for lsp, coco in LSP_TO_COCO.items():
        assert LSP_JOINTS[lsp] == COCO17.keypoints[coco]
    assert LSP_TO_COCO[0] == COCO17.index("right_ankle") == 16
    assert LSP_TO_COCO[9] == COCO17.index("left_shoulder") == 5


def person_joints() -> np.ndarray:
    """A frontal person in a 200x200 image: their right side is on the image's left."""
    j = np.zeros((14, 3))
    xs = {"right": 80.0, "left": 120.0}
    ys = {"ankle": 180, "knee": 140, "hip": 100, "wrist": 110, "elbow": 80, "shoulder": 50}
    for i, name in enumerate(LSP_JOINTS[:12]):
        side, part = name.split("_")
        j[i] = (xs[side], ys[part], 1)
    j[12] = (100, 40, 1)  # neck
    j[13] = (100, 10, 1)  # head top
    return j


def test_flags_coordinates_and_extras() -> None:
    j = person_joints()
    j[0] = (-5.0, -30.0, 0)  # right ankle unlabelled (outside, flag 0)
    j[6] = (70.0, 115.0, 0)  # right wrist inside the image, flag 0: labelled, not marked visible
    kp, extra, box, area = lsp_person(j, 200, 200)
    assert kp[16].tolist() == [0, 0, 0]
    assert kp[COCO17.index("right_wrist")].tolist() == [70, 115, 1]
    assert kp[COCO17.index("left_knee")].tolist() == [120, 140, 2]
    assert kp[:5, 2].max() == 0  # no face keypoints in LSP
    assert extra == {"lsp_neck": [100.0, 40.0, 2], "lsp_head_top": [100.0, 10.0, 2]}
    # Extent of the labelled joints: x 70..120, y 10..180.
    assert area == pytest.approx(AREA_PER_JOINT_BOX * 50 * 170)
    x, y, w, h = box
    assert x == pytest.approx(70 - 17) and y == 0 and x + w == pytest.approx(120 + 17)


def test_person_centric_sides_survive_the_import() -> None:
    kp, _, _, _ = lsp_person(person_joints(), 200, 200)
    # Facing the camera: the person's right shoulder is on the image's left.
    assert kp[COCO17.index("right_shoulder"), 0] < kp[COCO17.index("left_shoulder"), 0]
    assert kp[COCO17.index("right_ankle"), 0] < kp[COCO17.index("left_ankle"), 0]


@pytest.mark.parametrize("layout", ["lspet", "lsp"])
def test_both_matlab_layouts_read_the_same(tmp_path: Path, layout: str) -> None:
    people = np.stack([person_joints(), person_joints() + [5, 5, 0]])  # (N, 14, 3)
    data = people.transpose(1, 2, 0) if layout == "lspet" else people.transpose(2, 1, 0)
    scipy.io.savemat(tmp_path / "joints.mat", {"joints": data})
    assert np.array_equal(read_lsp_joints(tmp_path / "joints.mat"), people)


def test_import_writes_a_coco_dataset_the_reader_loads(tmp_path: Path) -> None:
    people = np.stack([person_joints()] * 3)
    scipy.io.savemat(tmp_path / "joints.mat", {"joints": people.transpose(1, 2, 0)})
    images = tmp_path / "images"
    images.mkdir()
    for n in (1, 3):  # image 2 missing: its person is skipped
        cv2.imwrite(str(images / f"im{n:05d}.jpg"), np.full((200, 200, 3), 90, np.uint8))
    out = import_lsp(tmp_path / "joints.mat", images, tmp_path / "lsp.json")
    ds = load_coco(out, images)
    assert [i.id for i in ds.images] == [1, 3]
    assert [a.num_keypoints for a in ds.annotations] == [12, 12]


def test_bad_matlab_file_names_the_variable(tmp_path: Path) -> None:
    scipy.io.savemat(tmp_path / "j.mat", {"joints": np.zeros((5, 3, 2))})
    with pytest.raises(DataError, match="joints"):
        read_lsp_joints(tmp_path / "j.mat")
    scipy.io.savemat(tmp_path / "k.mat", {"points": np.zeros((14, 3, 2))})
    with pytest.raises(DataError, match="missing variable"):
        read_lsp_joints(tmp_path / "k.mat")


def test_real_lspet_sides_are_consistent_between_shoulders_and_hips() -> None:
    """Left/right on real LSPet: shoulders and hips agree on which side is the person's right.

    A mapping that swapped one pair but not the other would make them disagree in most images.
    """
    joints = read_lsp_joints(require(LSPET) / "joints.mat")
    agree = total = 0
    for j in joints:
        kp, _, _, _ = lsp_person(j, 10_000, 10_000)
        sh = kp[[COCO17.index("right_shoulder"), COCO17.index("left_shoulder")]]
        hp = kp[[COCO17.index("right_hip"), COCO17.index("left_hip")]]
        if (sh[:, 2] > 0).all() and (hp[:, 2] > 0).all():
            dsh, dhp = sh[0, 0] - sh[1, 0], hp[0, 0] - hp[1, 0]
            if abs(dsh) > 5 and abs(dhp) > 5:
                total += 1
                agree += int(np.sign(dsh) == np.sign(dhp))
    assert total > 1000 and agree / total > 0.9


def test_the_image_checked_by_eye_imports_as_seen(tmp_path: Path) -> None:
    """LSPet im00001 (docs/lspet_overlay.png, first tile), checked by eye: a gymnast sitting on the
    floor, facing left of the camera, her right arm raised high on the image's right, her left
    hand low beside her, her legs stretched out to the image's left, her right ankle unlabelled."""
    lspet = require(LSPET)
    joints = read_lsp_joints(lspet / "joints.mat")
    scipy.io.savemat(tmp_path / "one.mat", {"joints": joints[:1].transpose(1, 2, 0)})
    (tmp_path / "images").mkdir()
    shutil.copy(lspet / "images" / "im00001.jpg", tmp_path / "images")
    ds = load_coco(
        import_lsp(tmp_path / "one.mat", tmp_path / "images", tmp_path / "one.json"),
        tmp_path / "images",
    )
    (ann,) = ds.annotations
    kp = {name: ann.keypoints[COCO17.index(name)] for name in COCO17.keypoints}
    assert ds.images[0].file_name == "im00001.jpg" and ann.num_keypoints == 11
    assert kp["right_wrist"][1] < kp["right_elbow"][1] < kp["right_shoulder"][1]  # arm raised
    assert kp["right_wrist"][0] > kp["right_shoulder"][0] + 30  # on the image's right
    assert kp["left_wrist"][1] > kp["left_shoulder"][1]  # the other hand is low
    assert kp["left_ankle"][0] < kp["left_knee"][0] < kp["left_hip"][0]  # legs to the left
    assert kp["right_ankle"][2] == 0 and (kp["right_ankle"][:2] == 0).all()
    assert all(kp[n][2] == 0 for n in ("nose", "left_eye", "right_eye", "left_ear", "right_ear"))


def test_import_reports_progress_with_its_total(tmp_path: Path) -> None:
    from tests.helpers import RecordingProgress

    people = np.stack([person_joints()] * 3)
    scipy.io.savemat(tmp_path / "joints.mat", {"joints": people.transpose(1, 2, 0)})
    images = tmp_path / "images"
    images.mkdir()
    for n in (1, 2, 3):
        cv2.imwrite(str(images / f"im{n:05d}.jpg"), np.full((200, 200, 3), 90, np.uint8))
    progress = RecordingProgress()
    import_lsp(tmp_path / "joints.mat", images, tmp_path / "lsp.json", progress=progress)
    assert progress.finished() == [("import LSP images", 3)]


def test_import_lsp_command_draws_a_bar_with_the_total(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from metapose.cli import main

    scipy.io.savemat(tmp_path / "joints.mat", {"joints": person_joints()[:, :, None]})
    images = tmp_path / "images"
    images.mkdir()
    cv2.imwrite(str(images / "im00001.jpg"), np.full((200, 200, 3), 90, np.uint8))
    args = ["data", "import-lsp", "--joints", str(tmp_path / "joints.mat"), "--images"]
    assert main([*args, str(images), "--out", str(tmp_path / "lsp.json")]) == 0
    err = capsys.readouterr().err
    assert "import LSP images: 100%" in err and "1/1" in err
