"""Weighted draws from a generator, cheaper than ``Generator.choice(p=...)`` for a few options.

``Generator.choice`` with probabilities validates and normalises them on every call, which costs
more than the rest of a person's look; these draw one uniform number and search the cumulative
weights instead (the same distribution).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

import numpy as np

Option = TypeVar("Option")


def weighted_index(rng: np.random.Generator, weights: Sequence[float]) -> int:
    """An index ``i`` drawn with probability ``weights[i] / sum(weights)``."""
    cumulative = np.cumsum(weights)
    if cumulative[-1] <= 0:
        raise ValueError(f"weights must have a positive sum, got {list(weights)}")
    index = int(np.searchsorted(cumulative, rng.random() * cumulative[-1], side="right"))
    return min(index, len(cumulative) - 1)


def weighted_choice(
    rng: np.random.Generator, options: Sequence[Option], weights: Sequence[float]
) -> Option:
    """One of ``options``, drawn with the given (unnormalised) ``weights``."""
    if len(options) != len(weights):
        raise ValueError(f"{len(options)} options but {len(weights)} weights")
    return options[weighted_index(rng, weights)]
