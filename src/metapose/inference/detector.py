"""Finding people in photos: a YOLOX-layout ONNX detector on onnxruntime, torch-free.

metapose bundles YOLOX-Nano (Ge et al., 2021, "YOLOX: Exceeding YOLO Series in 2021"; Megvii,
Apache-2.0, see ``NOTICE``), the official 416x416 ONNX export: 0.91 M parameters, person AP 0.40
on COCO mini val. Any ONNX detector with the same layout runs too: input ``(1, 3, H, W)`` BGR
0-255 (H and W multiples of the largest stride), output ``(1, N, 5 + classes)`` with one row per
grid cell of strides 8, 16 and 32, columns ``(x, y, log w, log h, objectness, class scores)``,
scores already sigmoid-ed. Pre- and post-processing follow YOLOX's own demo
(``yolox/data/data_augment.py`` ``preproc``, ``yolox/utils/demo_utils.py`` ``demo_postprocess``):
the image is resized keeping its aspect ratio to fit the input, placed top-left on a canvas of
114; a cell's box centre is ``(x + column, y + row) * stride`` and its size ``exp(log w, log h) *
stride``; the score of a person is objectness x person score; boxes are divided by the resize
ratio and non-maximum suppressed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort

from metapose.data.boxes import Detection
from metapose.data.images import read_rgb
from metapose.data.keypoint_results import PERSON_CATEGORY_ID
from metapose.errors import DataError

log = logging.getLogger(__name__)

# The detector shipped as package data (see NOTICE).
BUNDLED_DETECTOR = (
    Path(__file__).resolve().parents[1] / "models" / "zoo_data" / ("yolox_nano_416x416.onnx")
)
STRIDES = (8, 16, 32)  # YOLOX's three output levels
PAD_VALUE = 114  # YOLOX's letterbox grey
BOX_COLUMNS = 5  # x, y, log w, log h, objectness; class scores follow
PERSON_CLASS = 0  # COCO's person is the first of YOLOX's 80 classes


# Scoring pose AP from detected people (``evaluate --detect``): AP rewards recall, and the poses
# are rescored anyway, so low-scoring boxes help (COCO mini val, PP-TinyPose 256x192: AP 0.566
# at 0.1 against 0.519 at 0.3); overlays keep the demo's 0.3, which draws fewer false people.
EVALUATION_SCORE_THRESHOLD = 0.1


@dataclass(frozen=True)
class DetectorOptions:
    """Which detected people are kept.

    Defaults: YOLOX's demo threshold and NMS IoU; at most 20 people an image (ranked by score);
    boxes narrower or lower than 8 pixels dropped (too small to show a pose).
    """

    score_threshold: float = 0.3
    nms_iou: float = 0.45
    max_people: int = 20
    min_box_size: float = 8.0

    def __post_init__(self) -> None:
        if not 0 <= self.score_threshold <= 1:
            raise ValueError(f"score_threshold must be in [0, 1], got {self.score_threshold}")
        if not 0 < self.nms_iou <= 1:
            raise ValueError(f"nms_iou must be in (0, 1], got {self.nms_iou}")
        if self.max_people < 1:
            raise ValueError(f"max_people must be >= 1, got {self.max_people}")
        if self.min_box_size < 0:
            raise ValueError(f"min_box_size must be >= 0, got {self.min_box_size}")


def letterbox(image_rgb: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, float]:
    """``(1, 3, H, W)`` float32 BGR 0-255 input of a ``size`` = (W, H) detector, and the ratio.

    The image is scaled by ``ratio`` (its longer side fills the input), placed top-left, the rest
    filled with :data:`PAD_VALUE`.
    """
    width, height = size
    h, w = image_rgb.shape[:2]
    ratio = min(width / w, height / h)
    new_w, new_h = max(1, int(w * ratio)), max(1, int(h * ratio))
    resized = cv2.resize(image_rgb, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    canvas = np.full((height, width, 3), PAD_VALUE, np.uint8)
    canvas[:new_h, :new_w] = resized[:, :, ::-1]  # RGB -> BGR
    return np.ascontiguousarray(canvas.transpose(2, 0, 1)[None], dtype=np.float32), ratio


def grid_cells(size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Every output row's cell ``(N, 2)`` (column, row) and stride ``(N, 1)``, in YOLOX's order."""
    width, height = size
    cells, strides = [], []
    for stride in STRIDES:
        cols, rows = np.meshgrid(np.arange(width // stride), np.arange(height // stride))
        cells.append(np.stack([cols, rows], axis=2).reshape(-1, 2))
        strides.append(np.full((cells[-1].shape[0], 1), stride))
    return np.concatenate(cells).astype(np.float32), np.concatenate(strides).astype(np.float32)


def nms(boxes_xyxy: np.ndarray, scores: np.ndarray, iou: float) -> np.ndarray:
    """Greedy non-maximum suppression: indices kept, best score first."""
    order = np.argsort(-scores, kind="stable")
    x0, y0, x1, y1 = boxes_xyxy.T
    areas = np.maximum(x1 - x0, 0) * np.maximum(y1 - y0, 0)
    keep: list[int] = []
    while order.size:
        best, rest = order[0], order[1:]
        keep.append(int(best))
        w = np.maximum(0.0, np.minimum(x1[best], x1[rest]) - np.maximum(x0[best], x0[rest]))
        h = np.maximum(0.0, np.minimum(y1[best], y1[rest]) - np.maximum(y0[best], y0[rest]))
        inter = w * h
        overlap = inter / np.maximum(areas[best] + areas[rest] - inter, 1e-9)
        order = rest[overlap <= iou]
    return np.array(keep, dtype=np.int64)


def decode(
    output: np.ndarray,
    size: tuple[int, int],
    ratio: float,
    image_size: tuple[int, int],
    options: DetectorOptions,
    image_id: int = 0,
) -> tuple[Detection, ...]:
    """People in one ``(N, 5 + classes)`` output row block, in the original image's pixels.

    ``size``: the detector input (W, H); ``image_size``: the image's (W, H).
    """
    cells, strides = grid_cells(size)
    centres = (output[:, :2] + cells) * strides
    sizes = np.exp(np.minimum(output[:, 2:4], 20.0)) * strides  # clamp: exp of garbage overflows
    scores = output[:, 4] * output[:, BOX_COLUMNS + PERSON_CLASS]
    chosen = scores >= options.score_threshold
    if not chosen.any():
        return ()
    xyxy = (
        np.concatenate(
            [centres[chosen] - sizes[chosen] / 2, centres[chosen] + sizes[chosen] / 2], axis=1
        )
        / ratio
    )
    width, height = image_size
    xyxy = np.clip(xyxy, 0, [width, height, width, height])
    scores = scores[chosen]
    wide = np.minimum(xyxy[:, 2] - xyxy[:, 0], xyxy[:, 3] - xyxy[:, 1]) >= max(
        options.min_box_size, 1e-3
    )
    xyxy, scores = xyxy[wide], scores[wide]
    keep = nms(xyxy, scores, options.nms_iou)[: options.max_people]
    return tuple(
        Detection(
            image_id,
            (float(x0), float(y0), float(x1 - x0), float(y1 - y0)),
            float(score),
        )
        for (x0, y0, x1, y1), score in zip(xyxy[keep], scores[keep], strict=True)
    )


class PersonDetector:
    """A YOLOX-layout ONNX detector: ``detect(image_rgb)`` -> the people in it.

    The layout is checked when the file is opened; a detector of another layout is one
    :class:`~metapose.errors.DataError` naming the file and what differs.
    """

    def __init__(
        self,
        path: str | Path = BUNDLED_DETECTOR,
        options: DetectorOptions | None = None,
        *,
        threads: int | None = None,
    ) -> None:
        self.path = Path(path)
        self.options = options or DetectorOptions()
        if not self.path.is_file():
            raise DataError(self.path, "detector ONNX file not found")
        session_options = ort.SessionOptions()
        if threads is not None:
            session_options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(
                str(self.path), sess_options=session_options, providers=["CPUExecutionProvider"]
            )
        except Exception as err:  # onnxruntime raises its own untyped errors for bad files
            raise DataError(self.path, f"onnxruntime cannot load the detector: {err}") from None
        self.input_name, self.size = self._check_layout()

    def _check_layout(self) -> tuple[str, tuple[int, int]]:
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        shapes = (
            [list(i.shape) for i in inputs],
            [list(o.shape) for o in outputs],
        )
        layout = (
            "expected a YOLOX-layout detector: one input (1, 3, H, W) with H and W multiples of "
            f"{STRIDES[-1]}, an output (1, N, 5 + classes) with N the grid cells of strides "
            f"{', '.join(map(str, STRIDES))}; got inputs {shapes[0]}, outputs {shapes[1]}"
        )
        if len(inputs) != 1 or not outputs:
            raise DataError(self.path, layout)
        in_shape, out_shape = inputs[0].shape, outputs[0].shape
        if len(in_shape) != 4 or len(out_shape) != 3 or in_shape[1] != 3:
            raise DataError(self.path, layout)
        height, width = in_shape[2], in_shape[3]
        if not (isinstance(height, int) and isinstance(width, int)):
            raise DataError(self.path, layout + " (the input size must be fixed)")
        if height % STRIDES[-1] or width % STRIDES[-1]:
            raise DataError(self.path, layout)
        cells = sum((height // s) * (width // s) for s in STRIDES)
        rows, columns = out_shape[1], out_shape[2]
        if (isinstance(rows, int) and rows != cells) or (
            isinstance(columns, int) and columns <= BOX_COLUMNS + PERSON_CLASS
        ):
            raise DataError(self.path, layout + f" (N should be {cells})")
        return inputs[0].name, (width, height)

    def detect(self, image_rgb: np.ndarray, image_id: int = 0) -> tuple[Detection, ...]:
        """The people in an ``(H, W, 3)`` uint8 RGB image, best score first."""
        batch, ratio = letterbox(image_rgb, self.size)
        output = np.asarray(self.session.run(None, {self.input_name: batch})[0], np.float32)
        cells = grid_cells(self.size)[0].shape[0]
        if output.ndim != 3 or output.shape[1] != cells or output.shape[2] <= BOX_COLUMNS:
            raise DataError(
                self.path,
                f"output of shape {output.shape}; a YOLOX-layout detector gives (1, {cells}, "
                "5 + classes)",
            )
        height, width = image_rgb.shape[:2]
        return decode(output[0], self.size, ratio, (width, height), self.options, image_id)


def detection_entries(
    detections: Sequence[Detection], file_name: str | None = None
) -> list[dict[str, object]]:
    """COCO detection-results entries of person boxes (``file_name`` added when given)."""
    out: list[dict[str, object]] = []
    for d in detections:
        entry: dict[str, object] = {
            "image_id": d.image_id,
            "category_id": PERSON_CATEGORY_ID,
            "bbox": [round(v, 2) for v in d.bbox],
            "score": round(d.score, 5),
        }
        if file_name is not None:
            entry["file_name"] = file_name
        out.append(entry)
    return out


def people_in_files(
    detector: PersonDetector,
    files: Sequence[Path],
    *,
    on_image: Callable[[int], None] | None = None,
    enough: int | None = None,
) -> dict[Path, tuple[tuple[float, float, float, float], ...]]:
    """The people ``detector`` finds in each image file, as ``(x, y, w, h)`` boxes by path (an
    image with nobody maps to no boxes); ``on_image(1)`` after each file. With ``enough``, the
    files are read in the order given until that many of them have somebody in them; the rest
    are left out of the result."""
    out: dict[Path, tuple[tuple[float, float, float, float], ...]] = {}
    peopled = 0
    for path in files:
        if enough is not None and peopled >= enough:
            break
        out[path] = tuple(d.bbox for d in detector.detect(read_rgb(path)))
        peopled += bool(out[path])
        if on_image is not None:
            on_image(1)
    return out
