"""Paired bootstrap intervals: is run B better than run A on the same questions?

Two runs scored on the same items (questions, episodes) differ partly by
chance. The paired bootstrap resamples the items with replacement, keeping
each item's pair of scores together, and reads the 2.5% and 97.5%
percentiles of the mean difference. An interval that excludes 0 is the
evidence the project's claims ask for.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["paired_bootstrap"]


def paired_bootstrap(a: Sequence[float], b: Sequence[float], *, n_resamples: int = 10_000, seed: int = 0,
                     confidence: float = 0.95) -> dict[str, float | int]:
    """Mean of ``b - a`` and its bootstrap interval over the paired items."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"paired scores need two lists of the same length, got {x.shape} and {y.shape}")
    if len(x) == 0:
        raise ValueError("no paired items")
    diff = y - x
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, len(diff), size=(n_resamples, len(diff)))].mean(axis=1)
    tail = (1 - confidence) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return {"n": int(len(diff)), "mean_a": float(x.mean()), "mean_b": float(y.mean()), "diff": float(diff.mean()),
            "low": float(low), "high": float(high), "excludes_zero": bool(low > 0 or high < 0)}
