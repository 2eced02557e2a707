"""Mean and Student-t confidence intervals over seeds, for the experiment's tables."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class Estimate:
    """``mean`` ± ``half_width`` (a two-sided confidence interval) over ``n`` values."""

    mean: float
    half_width: float
    n: int

    def format(self, digits: int = 3) -> str:
        if self.n < 2 or not math.isfinite(self.half_width):
            return f"{self.mean:.{digits}f}"
        return f"{self.mean:.{digits}f} ± {self.half_width:.{digits}f}"

    def as_dict(self) -> dict[str, float | int]:
        return {"mean": self.mean, "ci95": self.half_width, "n": self.n}


def mean_ci(values: Sequence[float], confidence: float = 0.95) -> Estimate:
    """Sample mean with the t-interval half width (``nan`` for fewer than two values)."""
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        raise ValueError("mean_ci of no values")
    mean = float(x.mean())
    if x.size < 2:
        return Estimate(mean, float("nan"), int(x.size))
    sem = float(x.std(ddof=1) / math.sqrt(x.size))
    t = float(stats.t.ppf(0.5 + confidence / 2, df=x.size - 1))
    return Estimate(mean, t * sem, int(x.size))
