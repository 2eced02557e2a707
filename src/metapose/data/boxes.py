"""A detected person box: what a detector returns and a COCO detection-results file holds.

Kept apart from :mod:`metapose.data.detections` (which builds torch datasets from them) so that
the torch-free detector (:mod:`metapose.inference.detector`) can return it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Detection:
    """One detected person: ``bbox`` ``(x, y, w, h)`` in image pixels and the detector's score."""

    image_id: int
    bbox: tuple[float, float, float, float]
    score: float
