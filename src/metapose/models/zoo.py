"""The bundled model zoo: COCO-trained models that ship with metapose, by name.

Each entry is a one-file checkpoint in ``metapose/models/zoo_data/`` converted from a public
release by ``scripts/convert_zoo.py`` (re-running it reproduces the files byte for byte; the
checksums are listed here and tested). Every option that takes a checkpoint also takes a name
from :data:`ZOO`. Licences: see ``NOTICE`` (PP-TinyPose: PaddleDetection, Apache-2.0).
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

ZOO_PACKAGE = "metapose.models"
ZOO_FOLDER = "zoo_data"


@dataclass(frozen=True)
class ZooModel:
    """A bundled model: where it came from and how good it is on COCO val2017 (GT boxes)."""

    name: str
    file: str  # in metapose/models/zoo_data/
    sha256: str
    architecture: str
    source: str
    licence: str
    published_ap: float  # the publisher's COCO val2017 AP
    # metapose's own, on ../shared/data/coco/mini val (79 images, GT boxes, flip test, its codec;
    # benchmarks/zoo_accuracy.py)
    measured_ap: float | None

    @property
    def path(self) -> Path:
        return Path(str(resources.files(ZOO_PACKAGE).joinpath(ZOO_FOLDER, self.file)))


ZOO: dict[str, ZooModel] = {
    m.name: m
    for m in (
        ZooModel(
            name="pp-tinypose-128x96",
            file="pp_tinypose_128x96.safetensors",
            sha256="00bd7da23ed8fbaa1e3e75797367256f5b4d472f0119ce22956969e69ad15ea4",
            architecture="Lite-HRNet (wider naive, width 40), 128x96, UDP + DARK",
            source="PaddleDetection PP-TinyPose (tinypose_128x96), via its ncnn conversion",
            licence="Apache-2.0",
            published_ap=0.581,
            measured_ap=0.567,
        ),
        ZooModel(
            name="pp-tinypose-256x192",
            file="pp_tinypose_256x192.safetensors",
            sha256="d60cdf0274dce746b5910cf904a3761663c371815e779884fc8cc3dc8bbdb7eb",
            architecture="Lite-HRNet (wider naive, width 40), 256x192, UDP + DARK",
            source="PaddleDetection PP-TinyPose (tinypose_256x192), via its ncnn conversion",
            licence="Apache-2.0",
            published_ap=0.688,
            measured_ap=0.654,
        ),
    )
}


def resolve_model(name_or_path: str | Path) -> Path:
    """The file of a bundled model's name, else ``name_or_path`` as a path."""
    if isinstance(name_or_path, str) and name_or_path in ZOO:
        return ZOO[name_or_path].path
    return Path(name_or_path)
