"""One result of the experiment: a model, adapted (or not) to a target, scored on its test split.

Each result is written to its own JSON file as soon as it exists, so an interrupted experiment
resumes where it stopped and a report can be rebuilt from the files alone.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from metapose.files import write_json_atomic


@dataclass(frozen=True)
class RunResult:
    target: str
    model: str  # "baseline", "meta" or "scratch"
    shots: int  # K; 0 = not adapted
    seed: int
    metrics: dict[str, float]
    epoch_losses: tuple[float, ...] = ()
    seconds: float = 0.0
    shot_image_ids: tuple[int, ...] = field(default=())

    @property
    def key(self) -> str:
        return f"{self.target}__{self.model}__k{self.shots}__s{self.seed}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunResult:
        return cls(
            target=data["target"],
            model=data["model"],
            shots=int(data["shots"]),
            seed=int(data["seed"]),
            metrics={k: float(v) for k, v in data["metrics"].items()},
            epoch_losses=tuple(float(v) for v in data.get("epoch_losses", ())),
            seconds=float(data.get("seconds", 0.0)),
            shot_image_ids=tuple(int(v) for v in data.get("shot_image_ids", ())),
        )


def result_path(directory: str | Path, key: str) -> Path:
    return Path(directory) / f"{key}.json"


def save_result(directory: str | Path, result: RunResult) -> Path:
    path = result_path(directory, result.key)
    write_json_atomic(path, result.to_dict(), indent=1)
    return path


def load_result(directory: str | Path, key: str) -> RunResult | None:
    path = result_path(directory, key)
    if not path.is_file():
        return None
    return RunResult.from_dict(json.loads(path.read_text()))


def load_results(directory: str | Path) -> list[RunResult]:
    return [
        RunResult.from_dict(json.loads(p.read_text()))
        for p in sorted(Path(directory).glob("*.json"))
    ]


def select(
    results: Iterable[RunResult],
    *,
    target: str | None = None,
    model: str | None = None,
    shots: int | None = None,
) -> list[RunResult]:
    return [
        r
        for r in results
        if (target is None or r.target == target)
        and (model is None or r.model == model)
        and (shots is None or r.shots == shots)
    ]
