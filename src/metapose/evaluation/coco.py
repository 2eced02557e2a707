"""COCO OKS AP/AR through pycocotools, and COCO keypoint results files.

OKS AP/AR is the COCO keypoint evaluation (https://cocodataset.org/#keypoints-eval) computed by
pycocotools' ``COCOeval(iouType="keypoints")`` itself; this module only validates the inputs,
restricts them to a subset of keypoints when asked and returns the ten summary numbers.

Partial skeletons. ``computeOks`` scores only the joints a ground-truth person has labelled
(``v > 0``), so on people with labels the joints a dataset never labels (LSP/LSPet: no nose,
eyes or ears) and their sigmas play no part. pycocotools still looks at every predicted joint in
two places: a person with no labelled joint (``num_keypoints == 0``, or a crowd region) is
"ignored" ground truth that absorbs predictions lying near its box, judged on all joints; and
a prediction's area, which decides whether an unmatched one counts for APm/APl, is the extent of
all its keypoints. Evaluating on the labelled joints (``keypoints=labelled_keypoints(gt)``, or
the names) removes both: ground truth, predictions and sigmas are sliced alike and
``num_keypoints`` is recounted, so people labelled only outside the subset become ignored.
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from metapose.config import PCK_ALPHA, ConfigError
from metapose.data.coco import CocoDataset, coco_category, parse_coco, resolve_annotation_file
from metapose.data.keypoint_results import (
    IN_MEMORY_RESULTS,
    read_keypoint_results,
    validate_results,
)
from metapose.data.label_formats import to_coco_payload
from metapose.errors import DataError
from metapose.files import read_json
from metapose.skeleton import COCO17, Skeleton

log = logging.getLogger(__name__)

# Where errors in in-memory inputs say they come from.
IN_MEMORY_GT = Path("<ground truth>")
# pycocotools writes -1 for a number with no ground truth to score (e.g. APm without medium people).
UNDEFINED = -1.0


@dataclass(frozen=True)
class EvalResult:
    """The ten ``COCOeval.stats`` of a keypoint evaluation, in pycocotools' order, and PCK.

    ``-1`` (:data:`UNDEFINED`) is pycocotools' value for a number with no ground truth behind it.
    """

    ap: float
    ap50: float
    ap75: float
    ap_m: float
    ap_l: float
    ar: float
    ar50: float
    ar75: float
    ar_m: float
    ar_l: float
    pck: float | None = None
    # (annotation id, OKS of its pose) per person posed in a ground-truth box, for paired
    # comparisons of two models on the same people; not part of the metrics.
    person_oks: tuple[tuple[int, float], ...] | None = field(
        default=None, compare=False, repr=False
    )

    def __str__(self) -> str:
        """One line of the headline numbers: ``AP 0.565  AP50 0.795  AR 0.593  PCK@0.2 0.912``."""
        shown = [("AP", self.ap), ("AP50", self.ap50), ("AR", self.ar)]
        if self.pck is not None:
            shown.append((f"PCK@{PCK_ALPHA:g}", self.pck))
        return "  ".join(f"{title} {value:.3f}" for title, value in shown)

    @classmethod
    def from_stats(cls, stats: Sequence[float], pck: float | None = None) -> EvalResult:
        if len(stats) != len(STAT_NAMES):
            raise ValueError(f"expected {len(STAT_NAMES)} COCOeval stats, got {len(stats)}")
        ap, ap50, ap75, ap_m, ap_l, ar, ar50, ar75, ar_m, ar_l = (float(s) for s in stats)
        return cls(ap, ap50, ap75, ap_m, ap_l, ar, ar50, ar75, ar_m, ar_l, pck=pck)

    @property
    def stats(self) -> tuple[float, ...]:
        """The ten numbers in ``COCOeval.stats`` order."""
        return tuple(getattr(self, name) for name in STAT_NAMES)

    def as_dict(self) -> dict[str, float]:
        """Name -> value; ``pck`` only when it was computed."""
        return {k: v for k, v in asdict(self).items() if v is not None and k != "person_oks"}


STAT_NAMES = ("ap", "ap50", "ap75", "ap_m", "ap_l", "ar", "ar50", "ar75", "ar_m", "ar_l")
STAT_TITLES = ("AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl")


# ------------------------------------------------------------------------------ OKS AP/AR


def _from_payload(payload: Any, path: Path) -> tuple[CocoDataset, dict[int, np.ndarray]]:
    """Validate a COCO ground-truth payload; also returns its keypoints at full precision."""
    payload = to_coco_payload(payload, path, COCO17)  # other tools' layouts, names in order
    images, annotations, person_id = parse_coco(payload, path)
    dataset = CocoDataset(path, path.parent, images, annotations, COCO17, person_id)
    raw = {
        entry["id"]: np.asarray(entry["keypoints"], np.float64).reshape(-1, 3)
        for entry in payload["annotations"]
        if entry.get("category_id", person_id) == person_id
    }
    return dataset, raw


def _as_ground_truth(
    gt: CocoDataset | Mapping[str, Any] | str | Path,
) -> tuple[CocoDataset, dict[int, np.ndarray]]:
    """The dataset and each annotation's ``(K, 3)`` float64 keypoints.

    From a file or a dict the keypoints are the JSON's own numbers, so pycocotools sees what it
    would read from the file (a loaded dataset holds them as float32).
    """
    if isinstance(gt, CocoDataset):
        return gt, {a.id: a.keypoints.astype(np.float64) for a in gt.annotations}
    if isinstance(gt, Mapping):
        return _from_payload(dict(gt), IN_MEMORY_GT)
    # The images are not needed to score results, so their folder is never looked for.
    path = resolve_annotation_file(gt)
    return _from_payload(read_json(path), path)


def keypoint_indices(skeleton: Skeleton, names: Sequence[str] | None) -> np.ndarray:
    """Indices of ``names`` in ``skeleton`` (all keypoints when ``None``), in skeleton order."""
    if names is None:
        return np.arange(skeleton.num_keypoints)
    if not names:
        raise ConfigError("the keypoint subset is empty")
    unknown = [n for n in names if n not in skeleton.keypoints]
    if unknown:
        raise ConfigError(
            f"unknown keypoints {unknown} for skeleton {skeleton.name!r} "
            f"(known: {', '.join(skeleton.keypoints)})"
        )
    return np.array(sorted({skeleton.index(n) for n in names}), dtype=np.int64)


def labelled_keypoints(dataset: CocoDataset) -> tuple[str, ...]:
    """Names of the keypoints at least one person of ``dataset`` labels, in skeleton order."""
    labelled = np.zeros(dataset.skeleton.num_keypoints, dtype=bool)
    for ann in dataset.annotations:
        labelled |= ann.keypoints[:, 2] > 0
    return tuple(name for name, on in zip(dataset.skeleton.keypoints, labelled, strict=True) if on)


def _gt_payload(
    dataset: CocoDataset, keypoints_by_id: Mapping[int, np.ndarray], indices: np.ndarray
) -> dict[str, Any]:
    """The ground truth as the dict pycocotools' ``COCO`` holds, restricted to ``indices``."""
    annotations = []
    for ann in dataset.annotations:
        keypoints = keypoints_by_id[ann.id][indices]
        annotations.append(
            {
                "id": ann.id,
                "image_id": ann.image_id,
                "category_id": dataset.person_category_id,
                "bbox": list(ann.bbox),
                "area": ann.area,
                "iscrowd": int(ann.iscrowd),
                "keypoints": keypoints.reshape(-1).tolist(),
                "num_keypoints": int((keypoints[:, 2] > 0).sum()),
            }
        )
    category = coco_category(dataset.skeleton, dataset.person_category_id)
    category["keypoints"] = [dataset.skeleton.keypoints[i] for i in indices]
    return {
        "images": [
            {"id": i.id, "file_name": i.file_name, "width": i.width, "height": i.height}
            for i in dataset.images
        ],
        "annotations": annotations,
        "categories": [category],
    }


def _results_subset(
    results: list[dict[str, Any]], indices: np.ndarray, num_keypoints: int
) -> list[dict[str, Any]]:
    out = []
    for entry in results:
        keypoints = np.asarray(entry["keypoints"], dtype=np.float64).reshape(num_keypoints, 3)
        out.append({**entry, "keypoints": keypoints[indices].reshape(-1).tolist()})
    return out


def _coco_from_payload(payload: dict[str, Any]) -> COCO:
    coco = COCO()
    coco.dataset = payload
    coco.createIndex()
    return coco


def _check_results_against_gt(
    results: list[dict[str, Any]], dataset: CocoDataset, source: Path
) -> None:
    image_ids = set(dataset.image_by_id)
    for i, entry in enumerate(results):
        if entry["image_id"] not in image_ids:
            raise DataError(
                source,
                f"no image with this id in {dataset.annotation_file}",
                field=f"[{i}].image_id",
                image_id=entry["image_id"],
            )
        if entry["category_id"] != dataset.person_category_id:
            raise DataError(
                source,
                f"must be the person category {dataset.person_category_id} of "
                f"{dataset.annotation_file}, got {entry['category_id']}",
                field=f"[{i}].category_id",
                image_id=entry["image_id"],
            )


@dataclass(frozen=True)
class MatchedResults:
    """Result entries with the ground truth's image ids, and how they were matched."""

    entries: list[dict[str, Any]]
    by: str  # "image id" or "file name"


def match_results(entries: list[dict[str, Any]], dataset: CocoDataset) -> MatchedResults:
    """Give results the ground truth's image ids: by id where they agree with it, else by the
    entries' ``file_name`` (as ``metapose predict`` writes them) where every entry names an
    image of the ground truth. Otherwise the ids are left as they are (and checked later)."""
    names = {Path(i.file_name).name: i.id for i in dataset.images}
    if not entries or not all(isinstance(e.get("file_name"), str) for e in entries):
        return MatchedResults(entries, "image id")
    named = [str(e["file_name"]) for e in entries]
    ids_agree = all(
        e["image_id"] in dataset.image_by_id
        and Path(dataset.image_by_id[e["image_id"]].file_name).name == Path(n).name
        for e, n in zip(entries, named, strict=True)
    )
    if ids_agree or not all(Path(n).name in names for n in named):
        return MatchedResults(entries, "image id")
    remapped = [{**e, "image_id": names[Path(n).name]} for e, n in zip(entries, named, strict=True)]
    log.info("results matched to %s by file name (their image ids differ)", dataset.annotation_file)
    return MatchedResults(remapped, "file name")


def how_results_match(gt: CocoDataset | Mapping[str, Any] | str | Path, results: str | Path) -> str:
    """How :func:`evaluate_oks` will match the entries of a results file to ``gt``'s images:
    ``"image id"`` or ``"file name"``."""
    dataset, _ = _as_ground_truth(gt)
    return match_results(read_keypoint_results(results, dataset.skeleton.num_keypoints), dataset).by


def evaluate_oks(
    gt: CocoDataset | Mapping[str, Any] | str | Path,
    results: Sequence[Mapping[str, Any]] | str | Path,
    *,
    keypoints: Sequence[str] | None = None,
    sigmas: Sequence[float] | np.ndarray | None = None,
) -> EvalResult:
    """COCO OKS AP/AR of keypoint ``results`` against ``gt``, computed by pycocotools.

    ``gt``: a loaded dataset, a COCO ground-truth dict or its JSON file. ``results``: COCO
    keypoint result entries (see :func:`make_result`) or their JSON file; entries naming their
    ``file_name`` are matched to images by it where their ids disagree (:func:`match_results`).
    ``keypoints``: score only these keypoint names (ground truth, predictions and sigmas are
    sliced alike).
    ``sigmas``: per keypoint of the dataset's skeleton, default the skeleton's own. An empty
    results list scores 0 wherever there is ground truth. Every input is validated first; bad
    input raises :class:`~metapose.errors.DataError` naming the file, the entry and the field.
    """
    dataset, keypoints_by_id = _as_ground_truth(gt)
    skeleton = dataset.skeleton
    indices = keypoint_indices(skeleton, keypoints)
    all_sigmas = skeleton.sigmas_array() if sigmas is None else np.asarray(sigmas, np.float64)
    if all_sigmas.shape != (skeleton.num_keypoints,):
        raise ValueError(
            f"{all_sigmas.shape} sigmas for the {skeleton.num_keypoints} keypoints of "
            f"skeleton {skeleton.name!r}"
        )
    if isinstance(results, str | Path):
        source = Path(results)
        entries = read_keypoint_results(source, skeleton.num_keypoints)
    else:
        source = IN_MEMORY_RESULTS
        entries = validate_results(list(results), skeleton.num_keypoints, source)
    entries = match_results(entries, dataset).entries
    _check_results_against_gt(entries, dataset, source)

    payload = _gt_payload(dataset, keypoints_by_id, indices)
    if not any(a["num_keypoints"] > 0 and not a["iscrowd"] for a in payload["annotations"]):
        raise DataError(
            dataset.annotation_file,
            "no person with labelled keypoints to evaluate"
            + ("" if keypoints is None else f" among {', '.join(keypoints)}"),
            field="annotations",
        )
    entries = _results_subset(entries, indices, skeleton.num_keypoints)

    log_buffer = io.StringIO()
    # pycocotools prints its progress and table; keep them for the debug log only.
    with contextlib.redirect_stdout(log_buffer):
        coco_gt = _coco_from_payload(payload)
        if entries:
            coco_dt = coco_gt.loadRes(entries)
        else:
            # loadRes cannot take an empty list; an empty result set is an empty COCO object.
            coco_dt = _coco_from_payload({**payload, "annotations": []})
        evaluator = COCOeval(coco_gt, coco_dt, iouType="keypoints")
        evaluator.params.kpt_oks_sigmas = all_sigmas[indices]
        evaluator.params.catIds = [dataset.person_category_id]
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    log.debug("pycocotools output:\n%s", log_buffer.getvalue())
    return EvalResult.from_stats(evaluator.stats)


def format_eval_result(result: EvalResult) -> str:
    """A markdown table of the ten numbers (and PCK when present), as fractions like every
    other report of metapose (0.512, not 51.2)."""
    titles = list(STAT_TITLES)
    values = list(result.stats)
    if result.pck is not None:
        titles.append("PCK")
        values.append(result.pck)
    cells = ["n/a" if v == UNDEFINED else f"{v:.3f}" for v in values]
    widths = [max(len(t), len(c)) for t, c in zip(titles, cells, strict=True)]
    header = "| " + " | ".join(t.rjust(w) for t, w in zip(titles, widths, strict=True)) + " |"
    rule = "|" + "|".join("-" * (w + 1) + ":" for w in widths) + "|"
    row = "| " + " | ".join(c.rjust(w) for c, w in zip(cells, widths, strict=True)) + " |"
    return "\n".join((header, rule, row))


def format_eval_results(rows: Mapping[str, EvalResult]) -> str:
    """A markdown table of several results side by side, one row each (AP, AP50, AP75, AR)."""
    titles = ["boxes", "AP", "AP50", "AP75", "AR"]
    lines = [
        [name, *(f"{v:.3f}" for v in (r.ap, r.ap50, r.ap75, r.ar))] for name, r in rows.items()
    ]
    widths = [max(len(row[i]) for row in (titles, *lines)) for i in range(len(titles))]

    def show(row: Sequence[str]) -> str:
        return "| " + " | ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) + " |"

    rule = "|" + "|".join("-" * (w + 1) + ":" for w in widths) + "|"
    return "\n".join([show(titles), rule, *(show(row) for row in lines)])
