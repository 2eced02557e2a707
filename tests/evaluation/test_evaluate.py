"""OKS AP/AR (parity with pycocotools on the real COCO files), OKS itself, PCK and the table."""

from __future__ import annotations

import contextlib
import copy
import io
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from metapose.data.coco import load_coco
from metapose.data.keypoint_results import make_result, read_keypoint_results, results_to_json
from metapose.data.oks import oks
from metapose.errors import DataError
from metapose.evaluation.coco import (
    STAT_NAMES,
    UNDEFINED,
    EvalResult,
    evaluate_oks,
    format_eval_result,
    labelled_keypoints,
)
from metapose.evaluation.pck import bbox_size, pck, torso_diameter
from metapose.skeleton import COCO17
from tests.conftest import COCO_MINI, COCO_TINY, require

VAL = "annotations/person_keypoints_val2017.json"
FACE = ("nose", "left_eye", "right_eye", "left_ear", "right_ear")
BODY = tuple(n for n in COCO17.keypoints if n not in FACE)


def perturbed_results(gt_file: Path, seed: int) -> list[dict[str, Any]]:
    """Results made from the ground truth: seeded pixel noise, some people dropped, false alarms.

    The noise scales with each person's size so that some matches pass OKS 0.5 and fail 0.75.
    """
    rng = np.random.default_rng(seed)
    payload = json.loads(gt_file.read_text())
    results = []
    for ann in payload["annotations"]:
        if ann["iscrowd"] or ann["num_keypoints"] == 0 or rng.random() < 0.2:
            continue
        keypoints = np.asarray(ann["keypoints"], np.float64).reshape(-1, 3)
        spread = 0.1 * np.sqrt(ann["area"]) * rng.uniform(0.0, 1.0)
        keypoints[:, :2] += rng.normal(0.0, spread + 1.0, (len(keypoints), 2))
        keypoints[:, 2] = rng.uniform(0.05, 1.0, len(keypoints))
        results.append(make_result(ann["image_id"], keypoints, float(rng.uniform(0.1, 1.0))))
        if rng.random() < 0.15:  # a false alarm on the same image
            ghost = keypoints.copy()
            ghost[:, :2] += rng.uniform(50.0, 150.0, 2)
            results.append(make_result(ann["image_id"], ghost, float(rng.uniform(0.0, 0.5))))
    return results


def pycocotools_stats(
    gt_file: Path, results: list[dict[str, Any]], sigmas: np.ndarray | None = None
) -> tuple[float, ...]:
    """The ten numbers of pycocotools called directly, as its documentation shows."""
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(str(gt_file))
        coco_dt = coco_gt.loadRes(copy.deepcopy(results))
        evaluator = COCOeval(coco_gt, coco_dt, iouType="keypoints")
        if sigmas is not None:
            evaluator.params.kpt_oks_sigmas = sigmas
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return tuple(float(s) for s in evaluator.stats)


@pytest.fixture(params=[COCO_TINY, COCO_MINI], ids=["tiny", "mini"])
def val_file(request: pytest.FixtureRequest) -> Path:
    return require(request.param / VAL)


# ------------------------------------------------------------------------------ OKS


def test_oks_of_identical_poses_is_one_and_falls_with_error() -> None:
    rng = np.random.default_rng(0)
    gt = np.concatenate([rng.uniform(0, 200, (17, 2)), np.full((17, 1), 2.0)], axis=1)
    assert oks(gt, gt, 5000.0) == pytest.approx(1.0, abs=1e-12)
    direction = rng.normal(size=(17, 2))
    values = [float(oks(gt, gt[:, :2] + step * direction, 5000.0)) for step in (1, 2, 4, 8, 16)]
    assert all(a > b for a, b in zip(values, values[1:], strict=False))
    assert values[-1] < 0.5


def test_oks_counts_only_labelled_joints_and_is_zero_without_any() -> None:
    gt = np.zeros((17, 3))
    gt[:, :2] = np.arange(34).reshape(17, 2)
    gt[5:, 2] = 2
    pred = gt[:, :2].copy()
    pred[:5] += 1000.0  # far off, but on joints the ground truth does not label
    assert oks(gt, pred, 1000.0) == pytest.approx(1.0, abs=1e-12)
    gt[:, 2] = 0
    assert oks(gt, pred, 1000.0) == 0.0


def test_oks_matches_pycocotools_compute_oks() -> None:
    gt_file = require(COCO_MINI / VAL)
    results = perturbed_results(gt_file, seed=3)
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(str(gt_file))
        evaluator = COCOeval(coco_gt, coco_gt.loadRes(copy.deepcopy(results)), "keypoints")
        evaluator.evaluate()
    sigmas = COCO17.sigmas_array()
    compared = 0
    for (image_id, category_id), ious in evaluator.ious.items():
        gts = evaluator._gts[image_id, category_id]
        dts = evaluator._dts[image_id, category_id]
        if len(ious) == 0:
            continue
        dts = [dts[i] for i in np.argsort([-d["score"] for d in dts], kind="mergesort")]
        for j, g in enumerate(gts):
            if g["num_keypoints"] == 0:
                continue  # computeOks falls back to a box distance; documented, not mirrored
            gt_kp = np.asarray(g["keypoints"], np.float64).reshape(17, 3)
            det_kp = np.stack([np.asarray(d["keypoints"]).reshape(17, 3) for d in dts])
            ours = oks(gt_kp[None], det_kp, np.full(len(dts), g["area"]), sigmas)
            np.testing.assert_allclose(ours, ious[:, j], rtol=1e-12, atol=1e-15)
            compared += len(dts)
    assert compared > 50


# ------------------------------------------------------------------------------ AP/AR parity


def test_evaluate_oks_equals_pycocotools_on_perturbed_gt(val_file: Path) -> None:
    results = perturbed_results(val_file, seed=0)
    expected = pycocotools_stats(val_file, results)
    got = evaluate_oks(val_file, results)
    assert got.stats == expected  # exactly equal floats
    assert 0.05 < got.ap < 0.95  # the perturbation makes a non-trivial case


def test_evaluate_oks_reads_a_results_file_and_a_loaded_dataset(
    val_file: Path, tmp_path: Path
) -> None:
    results = perturbed_results(val_file, seed=1)
    results_file = tmp_path / "results.json"
    results_to_json(results_file, results)
    expected = pycocotools_stats(val_file, results)
    assert evaluate_oks(val_file, results_file).stats == expected
    dataset = load_coco(val_file, check_images="none", require_trainable=False)
    assert evaluate_oks(dataset, read_keypoint_results(results_file)).stats == expected
    assert evaluate_oks(json.loads(val_file.read_text()), results).stats == expected


def test_perfect_results_score_one(val_file: Path) -> None:
    payload = json.loads(val_file.read_text())
    results = [
        make_result(a["image_id"], np.asarray(a["keypoints"], float).reshape(17, 3), 1.0)
        for a in payload["annotations"]
        if not a["iscrowd"] and a["num_keypoints"] > 0
    ]
    got = evaluate_oks(val_file, results)
    assert got.ap == 1.0 and got.ap50 == 1.0 and got.ap75 == 1.0
    assert got.ar == 1.0


def test_empty_results_score_zero_not_crash(val_file: Path) -> None:
    got = evaluate_oks(val_file, [])
    assert all(v in (0.0, UNDEFINED) for v in got.stats)
    assert got.ap == 0.0 and got.ar == 0.0


def test_evaluate_oks_does_not_modify_the_results() -> None:
    gt_file = require(COCO_TINY / VAL)
    results = perturbed_results(gt_file, seed=2)
    before = copy.deepcopy(results)
    evaluate_oks(gt_file, results)
    assert results == before


def test_subset_matches_pycocotools_on_sliced_files(val_file: Path, tmp_path: Path) -> None:
    names = ("left_shoulder", "right_shoulder", "left_hip", "right_hip", "left_knee", "nose")
    index = np.array(sorted(COCO17.index(n) for n in names))
    results = perturbed_results(val_file, seed=4)

    payload = json.loads(val_file.read_text())
    for ann in payload["annotations"]:
        keypoints = np.asarray(ann["keypoints"]).reshape(17, 3)[index]
        ann["keypoints"] = keypoints.reshape(-1).tolist()
        ann["num_keypoints"] = int((keypoints[:, 2] > 0).sum())
    payload["categories"][0]["keypoints"] = [COCO17.keypoints[i] for i in index]
    sliced_gt = tmp_path / "gt.json"
    sliced_gt.write_text(json.dumps(payload))
    sliced_results = [
        {**r, "keypoints": np.asarray(r["keypoints"]).reshape(17, 3)[index].reshape(-1).tolist()}
        for r in results
    ]
    expected = pycocotools_stats(sliced_gt, sliced_results, COCO17.sigmas_array()[index])

    got = evaluate_oks(val_file, results, keypoints=names)
    assert got.stats == expected
    assert got.stats != evaluate_oks(val_file, results).stats


def face_stripped(gt_file: Path) -> dict[str, Any]:
    """The ground truth as LSP would label it: no face keypoints."""
    payload = json.loads(gt_file.read_text())
    for ann in payload["annotations"]:
        keypoints = np.asarray(ann["keypoints"]).reshape(17, 3)
        keypoints[: len(FACE)] = 0
        ann["keypoints"] = keypoints.reshape(-1).tolist()
        ann["num_keypoints"] = int((keypoints[:, 2] > 0).sum())
    return payload


def scramble_face(results: list[dict[str, Any]], seed: int) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    out = copy.deepcopy(results)
    for r in out:
        keypoints = np.asarray(r["keypoints"]).reshape(17, 3)
        keypoints[: len(FACE), :2] += rng.uniform(-300, 300, (len(FACE), 2))
        r["keypoints"] = keypoints.reshape(-1).tolist()
    return out


def test_labelled_keypoints_lists_joints_someone_labels(tmp_path: Path) -> None:
    gt_file = require(COCO_MINI / VAL)
    assert labelled_keypoints(load_coco(gt_file, check_images="none")) == COCO17.keypoints
    (tmp_path / "gt.json").write_text(json.dumps(face_stripped(gt_file)))
    stripped = load_coco(tmp_path / "gt.json", tmp_path, check_images="none")
    assert labelled_keypoints(stripped) == BODY


def test_labelled_subset_ignores_unlabelled_joints_entirely() -> None:
    """LSP-like labels: on the labelled joints, predicted face joints and face sigmas count nil."""
    payload = face_stripped(require(COCO_MINI / VAL))
    results = perturbed_results(COCO_MINI / VAL, seed=5)
    body = evaluate_oks(payload, results, keypoints=BODY)
    sigmas = COCO17.sigmas_array()
    sigmas[: len(FACE)] = 1.0
    scrambled = evaluate_oks(payload, scramble_face(results, 6), keypoints=BODY, sigmas=sigmas)
    assert scrambled.stats == body.stats


def test_full_skeleton_on_partial_labels_scores_labelled_joints_of_people() -> None:
    """Without a subset, face predictions matter only via ignored people and prediction areas."""
    payload = face_stripped(require(COCO_MINI / VAL))
    payload["annotations"] = [
        a for a in payload["annotations"] if a["num_keypoints"] > 0 and not a["iscrowd"]
    ]
    results = perturbed_results(COCO_MINI / VAL, seed=5)
    full = evaluate_oks(payload, results)
    scrambled = evaluate_oks(payload, scramble_face(results, 6))
    all_areas = [STAT_NAMES.index(n) for n in ("ap", "ap50", "ap75", "ar", "ar50", "ar75")]
    assert [scrambled.stats[i] for i in all_areas] == [full.stats[i] for i in all_areas]


def test_subset_without_labels_is_an_error() -> None:
    payload = face_stripped(require(COCO_TINY / VAL))
    with pytest.raises(DataError, match="no person with labelled keypoints to evaluate among nose"):
        evaluate_oks(payload, [], keypoints=FACE)


def test_bad_keypoint_names_and_sigmas_are_errors() -> None:
    gt_file = require(COCO_TINY / VAL)
    with pytest.raises(ValueError, match="unknown keypoints"):
        evaluate_oks(gt_file, [], keypoints=("left_shoulder", "neck"))
    with pytest.raises(ValueError, match="sigmas"):
        evaluate_oks(gt_file, [], sigmas=np.ones(12))


def test_cli_evaluate_prints_and_writes_pycocotools_numbers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from metapose.cli import main

    gt_file = require(COCO_MINI / VAL)
    results = perturbed_results(gt_file, seed=7)
    results_to_json(tmp_path / "res.json", results)
    out = tmp_path / "numbers.json"
    argv = ["evaluate", "--gt", str(gt_file), "--results", str(tmp_path / "res.json")]
    assert main([*argv, "--json", str(out)]) == 0
    expected = pycocotools_stats(gt_file, results)
    written = json.loads(out.read_text())
    assert tuple(written[name] for name in STAT_NAMES) == expected
    assert f"{expected[0]:.3f}" in capsys.readouterr().out


# ------------------------------------------------------------------------------ results, table


def test_make_result_and_results_file_round_trip(tmp_path: Path) -> None:
    keypoints = np.arange(51, dtype=np.float32).reshape(17, 3) / 7
    entry = make_result(42, keypoints, 0.25)
    assert entry["image_id"] == 42 and entry["category_id"] == 1 and entry["score"] == 0.25
    np.testing.assert_array_equal(np.asarray(entry["keypoints"]).reshape(17, 3), keypoints)
    results_to_json(tmp_path / "r.json", [entry])
    assert read_keypoint_results(tmp_path / "r.json") == [entry]
    with pytest.raises(ValueError, match=r"\(K, 3\)"):
        make_result(1, keypoints[:, :2], 1.0)


def test_eval_result_dict_and_table() -> None:
    stats = [0.5, 0.75, 0.25, UNDEFINED, 0.125, 0.625, 0.875, 0.375, UNDEFINED, 0.1]
    result = EvalResult.from_stats(stats)
    assert list(result.as_dict()) == list(STAT_NAMES)
    assert result.stats == tuple(stats)
    assert "pck" in EvalResult.from_stats(stats, pck=0.5).as_dict()
    table = format_eval_result(EvalResult.from_stats(stats, pck=0.5)).splitlines()
    assert len(table) == 3
    assert table[0].split("|")[1].strip() == "AP" and "PCK" in table[0]
    cells = [c.strip() for c in table[2].strip("|").split("|")]
    assert cells == [
        "0.500",
        "0.750",
        "0.250",
        "n/a",
        "0.125",
        "0.625",
        "0.875",
        "0.375",
        "n/a",
        "0.100",
        "0.500",
    ]


# ------------------------------------------------------------------------------ PCK


def test_pck_of_identical_poses_is_one() -> None:
    rng = np.random.default_rng(0)
    gt = np.concatenate([rng.uniform(0, 100, (4, 17, 2)), np.full((4, 17, 1), 2.0)], axis=2)
    result = pck(gt[..., :2], gt, torso_diameter(gt), 0.2)
    assert result.overall == 1.0 and result.counted == 4 * 17
    assert np.all(result.per_joint == 1.0)


def test_pck_hand_computed_case() -> None:
    # Two people, three joints; reference 10 and 20 px, alpha 0.5 -> thresholds 5 and 10 px.
    gt = np.array(
        [
            [[0, 0, 2], [10, 0, 2], [20, 0, 0]],
            [[0, 0, 2], [0, 10, 1], [0, 20, 2]],
        ],
        dtype=np.float64,
    )
    pred = gt[..., :2].copy()
    pred[0, 0] += (3, 4)  # 5 px: not strictly closer than 5 -> wrong
    pred[0, 1] += (0, 4.9)  # right
    pred[0, 2] += (100, 100)  # unlabelled: not counted
    pred[1, 0] += (6, 8)  # 10 px, threshold 10 -> wrong
    pred[1, 1] += (6, 0)  # right
    pred[1, 2] += (0, 9.9)  # right
    result = pck(pred, gt, np.array([10.0, 20.0]), alpha=0.5)
    assert (result.correct, result.counted) == (3, 5)
    assert result.overall == pytest.approx(0.6)
    np.testing.assert_allclose(result.per_joint, [0.0, 1.0, 1.0])
    assert result.mean_per_joint == pytest.approx(2 / 3)


def test_pck_leaves_out_people_without_reference() -> None:
    gt = np.zeros((2, 17, 3))
    gt[..., 2] = 2
    pred = gt[..., :2] + 1.0
    result = pck(pred, gt, np.array([np.nan, 100.0]), alpha=0.2)
    assert result.counted == 17 and result.overall == 1.0
    assert np.isnan(pck(pred, gt, np.array([np.nan, 0.0])).overall)


def test_torso_diameter_uses_left_shoulder_to_right_hip_then_other_diagonal() -> None:
    gt = np.zeros((3, 17, 3))
    ls, rs, lh, rh = (
        COCO17.index(n) for n in ("left_shoulder", "right_shoulder", "left_hip", "right_hip")
    )
    gt[:, ls] = (0, 0, 2)
    gt[:, rh] = (30, 40, 2)
    gt[:, rs] = (10, 0, 2)
    gt[:, lh] = (10, 5, 2)
    gt[1, rh, 2] = 0  # right hip unlabelled: right shoulder to left hip instead
    gt[2, [ls, lh], 2] = 0  # neither diagonal
    diameter = torso_diameter(gt)
    assert diameter[0] == pytest.approx(50.0)
    assert diameter[1] == pytest.approx(5.0)
    assert np.isnan(diameter[2])


def test_bbox_size_is_the_longer_side() -> None:
    np.testing.assert_array_equal(bbox_size(np.array([[0, 0, 30, 40], [5, 5, 50, 20]])), [40, 50])


def test_an_eval_result_prints_its_headline_numbers_as_fractions() -> None:
    result = EvalResult.from_stats([0.5652, 0.7949, 0.63, 0.6, 0.5, 0.5926, 0.8, 0.6, 0.6, 0.5])
    assert str(result) == "AP 0.565  AP50 0.795  AR 0.593"
    assert str(replace(result, pck=0.9122)).endswith("AR 0.593  PCK@0.2 0.912")
