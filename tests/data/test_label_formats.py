"""Label files from other tools: keypoint names mapped by name, CVAT and Label Studio exports,
any person category id, derived boxes, areas and sizes, file names with folder prefixes.

The files are made by hand in each tool's layout from a canonical COCO file; each must load to
the same people, and (on the real COCO files) adapt and evaluate to the same AP.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from metapose.cli import main
from metapose.data.coco import CocoDataset, load_coco
from metapose.data.images import write_rgb
from metapose.data.keypoint_names import canonical_name
from metapose.device import DeviceOptions
from metapose.errors import DataError
from metapose.evaluation.evaluate import evaluate
from metapose.inference.estimators import torch_estimator
from metapose.models import TopDownModel
from metapose.models.checkpoint import save_checkpoint
from metapose.skeleton import COCO17
from tests.conftest import COCO_TINY, TINY_MODEL, require

K = COCO17.num_keypoints
UPLOAD = "3f2a1b9c-"  # the hash prefix Label Studio puts on uploaded files


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("left_shoulder", "left_shoulder"),
        ("l_shoulder", "left_shoulder"),
        ("LShoulder", "left_shoulder"),
        ("shoulder_l", "left_shoulder"),
        ("Left Shoulder", "left_shoulder"),
        ("R-Hip", "right_hip"),
        ("rightAnkle", "right_ankle"),
        ("Nose", "nose"),
        ("tail", "tail"),
    ],
)
def test_synonyms(name: str, expected: str) -> None:
    assert canonical_name(name) == expected


# ----------------------------------------------------------------------- files made by hand


def synthetic_coco(tmp_path: Path, people: int = 3) -> Path:
    """A canonical COCO file of ``people`` one-person images (written beside it in images/)."""
    rng = np.random.default_rng(0)
    (tmp_path / "images").mkdir(exist_ok=True)
    images, annotations = [], []
    for i in range(1, people + 1):
        write_rgb(tmp_path / "images" / f"p{i}.png", np.zeros((60, 40, 3), np.uint8))
        images.append({"id": i, "file_name": f"p{i}.png", "width": 40, "height": 60})
        xy = rng.uniform(5, 35, size=(K, 2)).round(2)
        flags = np.where(rng.random(K) < 0.2, 0, 2)
        xy[flags == 0] = 0
        kps = np.concatenate([xy, flags[:, None]], axis=1)
        annotations.append(
            {
                "id": 10 + i,
                "image_id": i,
                "category_id": 1,
                "bbox": [4.0, 4.0, 32.0, 32.0],
                "area": 700.0,
                "iscrowd": 0,
                "keypoints": kps.reshape(-1).tolist(),
                "num_keypoints": int((flags > 0).sum()),
            }
        )
    category = {"id": 1, "name": "person", "keypoints": list(COCO17.keypoints)}
    path = tmp_path / "canonical.json"
    path.write_text(
        json.dumps({"images": images, "annotations": annotations, "categories": [category]})
    )
    return path


def reordered(payload: dict[str, Any]) -> dict[str, Any]:
    """The right side listed before the left, names and coordinates moved together."""
    names = list(COCO17.keypoints)
    order = sorted(range(K), key=lambda i: (not names[i].startswith("right_"), i))
    out = copy.deepcopy(payload)
    out["categories"][0]["keypoints"] = [names[i] for i in order]
    for ann in out["annotations"]:
        kps = np.asarray(ann["keypoints"]).reshape(K, 3)
        ann["keypoints"] = kps[order].reshape(-1).tolist()
    return out


def cvat(payload: dict[str, Any]) -> dict[str, Any]:
    """CVAT's "COCO Keypoints 1.0": a skeleton label of its own name and id 0, OpenPose-style
    point names in another order, CVAT's extra fields, images under images/."""
    style = {
        n: re.sub(r"^(left|right)_(\w)", lambda m: m[1][0].upper() + m[2].upper(), n)
        for n in COCO17.keypoints
    }  # left_shoulder -> LShoulder
    out = reordered(payload)
    out["categories"] = [
        {
            "id": 0,
            "name": "body",
            "supercategory": "",
            "skeleton": [[1, 2]],
            "keypoints": [style[n] for n in out["categories"][0]["keypoints"]],
        }
    ]
    out["licenses"] = [{"name": "", "id": 0, "url": ""}]
    for img in out["images"]:
        img.update(file_name=f"images/{img['file_name']}", license=0, flickr_url="", coco_url="")
    for ann in out["annotations"]:
        ann.update(category_id=0, segmentation=[], attributes={"occluded": False})
    return out


def label_studio_json(payload: dict[str, Any], *, rectangles: bool = True) -> list[dict[str, Any]]:
    """Label Studio's JSON export: a task per image, points and person rectangles in percent of
    the image, each point's parentID its person's rectangle; no visibility flags."""
    tasks = []
    by_image: dict[int, list[dict[str, Any]]] = {}
    for ann in payload["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann)
    for img in payload["images"]:
        w, h = img["width"], img["height"]
        results: list[dict[str, Any]] = []
        for ann in by_image.get(img["id"], []):
            if ann["iscrowd"] or ann["num_keypoints"] == 0:
                continue
            rect = f"r{ann['id']}"
            x, y, bw, bh = ann["bbox"]
            if rectangles:
                results.append(
                    {
                        "id": rect,
                        "type": "rectanglelabels",
                        "from_name": "box",
                        "to_name": "img",
                        "original_width": w,
                        "original_height": h,
                        "image_rotation": 0,
                        "value": {
                            "x": 100 * x / w,
                            "y": 100 * y / h,
                            "width": 100 * bw / w,
                            "height": 100 * bh / h,
                            "rotation": 0,
                            "rectanglelabels": ["person"],
                        },
                    }
                )
            kps = np.asarray(ann["keypoints"]).reshape(K, 3)
            for j, (px, py, v) in enumerate(kps):
                if v > 0:
                    results.append(
                        {
                            "id": f"{rect}k{j}",
                            "type": "keypointlabels",
                            "from_name": "kp",
                            "to_name": "img",
                            "original_width": w,
                            "original_height": h,
                            "image_rotation": 0,
                            **({"parentID": rect} if rectangles else {}),
                            "value": {
                                "x": 100 * px / w,
                                "y": 100 * py / h,
                                "width": 0.5,
                                "keypointlabels": [COCO17.keypoints[j]],
                            },
                        }
                    )
        tasks.append(
            {
                "id": img["id"],
                "data": {"image": f"/data/upload/1/{UPLOAD}{img['file_name']}"},
                "annotations": [{"id": 1, "was_cancelled": False, "result": results}],
            }
        )
    return tasks


def label_studio_coco(payload: dict[str, Any]) -> dict[str, Any]:
    """Label Studio's COCO export of keypoints: a category per point label (ids from 0), one
    annotation per point; one person per image."""
    cats = [{"id": j, "name": n, "keypoints": [n]} for j, n in enumerate(COCO17.keypoints)]
    anns = []
    for ann in payload["annotations"]:
        for j, (x, y, v) in enumerate(np.asarray(ann["keypoints"]).reshape(K, 3)):
            if v > 0:
                anns.append(
                    {
                        "id": len(anns),
                        "image_id": ann["image_id"],
                        "category_id": j,
                        "keypoints": [float(x), float(y), 2],
                        "num_keypoints": 1,
                    }
                )
    images = [
        {**img, "file_name": f"images/{UPLOAD}{img['file_name']}"} for img in payload["images"]
    ]
    return {"images": images, "annotations": anns, "categories": cats}


def write(path: Path, payload: Any) -> Path:
    path.write_text(json.dumps(payload))
    return path


def people(dataset: CocoDataset) -> list[tuple[int, np.ndarray]]:
    return [(a.image_id, a.keypoints) for a in dataset.annotations]


def same_people(a: CocoDataset, b: CocoDataset, *, exact: bool = True) -> None:
    assert [i for i, _ in people(a)] == [i for i, _ in people(b)]
    for (_, ka), (_, kb) in zip(people(a), people(b), strict=True):
        # Label Studio records no visibility: every labelled point reads as visible (2).
        np.testing.assert_array_equal(ka[:, 2] > 0, kb[:, 2] > 0)
        np.testing.assert_allclose(ka[:, :2], kb[:, :2], atol=0 if exact else 1e-3)


def test_every_layout_loads_to_the_same_people(tmp_path: Path) -> None:
    canonical_file = synthetic_coco(tmp_path)
    payload = json.loads(canonical_file.read_text())
    canonical = load_coco(canonical_file, tmp_path / "images")
    for name, made in (("reordered", reordered(payload)), ("cvat", cvat(payload))):
        loaded = load_coco(write(tmp_path / f"{name}.json", made), tmp_path / "images")
        same_people(canonical, loaded)
        assert [a.bbox for a in loaded.annotations] == [a.bbox for a in canonical.annotations]
    cvat_set = load_coco(tmp_path / "cvat.json", tmp_path / "images")
    assert cvat_set.person_category_id == 0
    assert cvat_set.images[0].file_name == "p1.png"  # found without its images/ prefix
    for name, made in (
        ("ls", label_studio_json(payload)),
        ("ls_points_only", label_studio_json(payload, rectangles=False)),
        ("ls_coco", label_studio_coco(payload)),
    ):
        loaded = load_coco(write(tmp_path / f"{name}.json", made), tmp_path / "images")
        same_people(canonical, loaded, exact=False)
        assert loaded.images[0].file_name == "p1.png"


def test_missing_box_area_and_size_are_derived(tmp_path: Path) -> None:
    payload = json.loads(synthetic_coco(tmp_path).read_text())
    ann = payload["annotations"][0]
    del ann["bbox"], ann["area"]
    ann["segmentation"] = [[2, 2, 22, 2, 22, 12, 2, 12]]
    del payload["annotations"][1]["bbox"]
    del payload["images"][0]["width"], payload["images"][0]["height"]
    loaded = load_coco(write(tmp_path / "sparse.json", payload), tmp_path / "images")
    first, second = loaded.annotations[:2]
    assert first.bbox == (2.0, 2.0, 20.0, 10.0) and first.area == 200.0  # from the polygon
    labelled = second.keypoints[second.keypoints[:, 2] > 0, :2]
    x0, y0, w, h = second.bbox
    assert x0 < labelled[:, 0].min() and x0 + w > labelled[:, 0].max()
    assert y0 < labelled[:, 1].min() and y0 + h > labelled[:, 1].max()
    assert (loaded.images[0].width, loaded.images[0].height) == (40, 60)  # read from the file


def test_far_off_keypoints_are_refused_once_a_missing_size_is_read(tmp_path: Path) -> None:
    payload = json.loads(synthetic_coco(tmp_path).read_text())
    del payload["images"][0]["width"], payload["images"][0]["height"]
    ann = next(a for a in payload["annotations"] if a["image_id"] == payload["images"][0]["id"])
    ann["keypoints"][0:3] = [1e6, -1e6, 2]
    with pytest.raises(DataError, match=r"keypoints.*outside its 40 x 60 image"):
        load_coco(write(tmp_path / "far.json", payload), tmp_path / "images")


def test_unknown_names_are_one_line_and_a_map_resolves_them(tmp_path: Path) -> None:
    payload = json.loads(synthetic_coco(tmp_path).read_text())
    names = payload["categories"][0]["keypoints"]
    names[0], names[1] = "snout", "eye_l"
    bad = write(tmp_path / "bad.json", payload)
    with pytest.raises(DataError, match=r"'snout'.*--keypoint-map") as info:
        load_coco(bad, tmp_path / "images")
    assert "\n" not in str(info.value) and "eye_l" not in str(info.value)
    fixed = load_coco(bad, tmp_path / "images", keypoint_map={"snout": "nose"})
    same_people(load_coco(tmp_path / "canonical.json", tmp_path / "images"), fixed)
    with pytest.raises(DataError, match="several names map to the same keypoint: nose"):
        load_coco(bad, tmp_path / "images", keypoint_map={"snout": "nose", "eye_l": "nose"})


def test_points_of_several_people_without_rectangles_are_refused(tmp_path: Path) -> None:
    payload = json.loads(synthetic_coco(tmp_path).read_text())
    payload["annotations"][1]["image_id"] = 1  # two people on image 1
    tasks = label_studio_json(payload, rectangles=False)
    with pytest.raises(DataError, match="two 'nose' points for one person"):
        load_coco(write(tmp_path / "ls.json", tasks), tmp_path / "images")


def test_predictions_score_against_a_person_category_0(tmp_path: Path) -> None:
    canonical_file = synthetic_coco(tmp_path)
    payload = cvat(json.loads(canonical_file.read_text()))
    data = load_coco(write(tmp_path / "cvat.json", payload), tmp_path / "images")
    torch.manual_seed(0)
    estimator = torch_estimator(TopDownModel(TINY_MODEL), DeviceOptions(torch.device("cpu")))
    ours = evaluate(estimator, data)
    assert ours == evaluate(estimator, load_coco(canonical_file, tmp_path / "images"))


# ----------------------------------------------------------- the real files, adapt + evaluate


def adapt_output(tmp_path: Path, name: str, data: Path, checkpoint: Path, capsys: Any) -> str:
    out = tmp_path / f"{name}.safetensors"
    assert (
        main(
            [
                "adapt",
                "--checkpoint",
                str(checkpoint),
                "--data",
                str(data),
                "--images",
                str(COCO_TINY / "val2017"),
                "--shots",
                "3",
                "--epochs",
                "1",
                "--eval",
                str(data),
                "--eval-images",
                str(COCO_TINY / "val2017"),
                "--out",
                str(out),
                "--keep-worse",
                "--quiet",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    return "\n".join(line for line in printed.splitlines() if "AP" in line)


def test_other_layouts_adapt_and_evaluate_to_the_same_ap(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    val = require(COCO_TINY / "annotations" / "person_keypoints_val2017.json")
    payload = json.loads(val.read_text())
    torch.manual_seed(0)
    checkpoint = save_checkpoint(tmp_path / "start.safetensors", TopDownModel(TINY_MODEL))
    canonical = adapt_output(tmp_path, "canonical", val, checkpoint, capsys)
    for name, made in (("reordered", reordered(payload)), ("cvat", cvat(payload))):
        got = adapt_output(
            tmp_path, name, write(tmp_path / f"{name}.json", made), checkpoint, capsys
        )
        assert got == canonical, name
    # Label Studio keeps neither crowd regions, unlabelled people nor segmentation areas: its
    # file adapts and scores as the canonical file without them, areas taken from the boxes.
    kept = copy.deepcopy(payload)
    kept["annotations"] = [
        {**a, "area": a["bbox"][2] * a["bbox"][3]}
        for a in kept["annotations"]
        if not a["iscrowd"] and a["num_keypoints"] > 0
    ]
    reference = adapt_output(
        tmp_path, "kept", write(tmp_path / "kept.json", kept), checkpoint, capsys
    )
    got = adapt_output(
        tmp_path, "ls", write(tmp_path / "ls.json", label_studio_json(payload)), checkpoint, capsys
    )
    assert got == reference


def test_a_file_without_categories_boxes_or_areas_parses() -> None:
    from metapose.data.coco import parse_coco

    payload = {
        "images": [{"id": 1, "file_name": "a.jpg", "width": 40, "height": 40}],
        "annotations": [{"id": 1, "image_id": 1, "keypoints": [10, 20, 2] * 16 + [30, 5, 2]}],
    }
    _, (ann,), person = parse_coco(payload, Path("plain.json"))
    assert person == 1 and ann.bbox[2] > 20 and ann.area == ann.bbox[2] * ann.bbox[3]
