"""Summary statistics and bootstrap confidence intervals for evaluation returns. numpy only (no torch).

Returns of one cell (task x size x dynamics) are grouped by training seed: `groups[s]` holds the episode returns
of seed `s`. Seeds are the independent units of the experiment and episodes are nested inside them, so the
bootstrap is hierarchical: each resample draws seeds with replacement, then episodes with replacement within every
drawn seed, and computes the statistic over the pooled resampled episodes. With one value per seed (the best
training return of each run) it reduces to the ordinary bootstrap over seeds.

Intervals are percentile intervals of the bootstrap distribution (the method `rliable` uses by default).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

Statistic = Literal["mean", "iqm"]

# Resamples processed at once: bounds memory to about chunk x seeds x episodes floats.
_CHUNK_ELEMENTS = 4_000_000


def iqm(values: np.ndarray | Sequence[float]) -> float:
    """Interquartile mean: the mean of the values left after cutting `int(0.25 n)` from each end of the sorted
    values (the same convention as `scipy.stats.trim_mean(x, 0.25)` and `rliable`)."""
    x = np.sort(np.asarray(values, dtype=float).ravel())
    if x.size == 0:
        return float("nan")
    cut = int(0.25 * x.size)
    return float(x[cut : x.size - cut].mean())


def _row_iqm(rows: np.ndarray) -> np.ndarray:
    """IQM of every row of `rows`, ignoring NaN padding (rows may hold different numbers of values)."""
    counts = np.sum(~np.isnan(rows), axis=1)
    ordered = np.sort(rows, axis=1)  # NaN sorts last
    cumulative = np.concatenate(
        [np.zeros((rows.shape[0], 1)), np.cumsum(np.nan_to_num(ordered, nan=0.0), axis=1)], axis=1
    )
    lower = (0.25 * counts).astype(int)
    upper = counts - lower
    index = np.arange(rows.shape[0])
    with np.errstate(invalid="ignore", divide="ignore"):
        return (cumulative[index, upper] - cumulative[index, lower]) / (upper - lower)


def _pad(groups: Sequence[np.ndarray | Sequence[float]]) -> tuple[np.ndarray, np.ndarray]:
    arrays = [np.asarray(g, dtype=float).ravel() for g in groups]
    if not arrays or any(a.size == 0 for a in arrays):
        raise ValueError("every group (seed) needs at least one value")
    lengths = np.array([a.size for a in arrays])
    padded = np.full((len(arrays), lengths.max()), np.nan)
    for row, a in zip(padded, arrays, strict=True):
        row[: a.size] = a
    return padded, lengths


def hierarchical_bootstrap(
    groups: Sequence[np.ndarray | Sequence[float]],
    statistic: Statistic,
    n_resamples: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """Bootstrap distribution (`n_resamples` values) of `statistic` over the pooled values of all groups,
    resampling groups with replacement and then values with replacement within each drawn group."""
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    padded, lengths = _pad(groups)
    n_groups, width = padded.shape
    chunk = max(1, _CHUNK_ELEMENTS // (n_groups * width))
    out = np.empty(n_resamples)
    for start in range(0, n_resamples, chunk):
        b = min(chunk, n_resamples - start)
        group_index = rng.integers(0, n_groups, size=(b, n_groups))
        drawn_lengths = lengths[group_index][..., None]  # [b, groups, 1]
        value_index = rng.integers(0, drawn_lengths, size=(b, n_groups, width))
        values = padded[group_index[..., None], value_index]
        # A drawn group contributes as many values as it has; the padding columns beyond that are dropped.
        values = np.where(np.arange(width) < drawn_lengths, values, np.nan).reshape(b, -1)
        if statistic == "mean":
            out[start : start + b] = np.nanmean(values, axis=1)
        elif statistic == "iqm":
            out[start : start + b] = _row_iqm(values)
        else:
            raise ValueError(f"unknown statistic {statistic!r} (known: mean, iqm)")
    return out


def percentile_interval(samples: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Two-sided percentile interval of a bootstrap distribution; NaN if any sample is NaN."""
    samples = np.asarray(samples, dtype=float)
    if samples.size == 0 or np.isnan(samples).any():
        return float("nan"), float("nan")
    tail = 100.0 * (1.0 - level) / 2.0
    low, high = np.percentile(samples, [tail, 100.0 - tail])
    return float(low), float(high)


def ratio_estimate(
    numerator: float,
    denominator: float,
    numerator_samples: np.ndarray,
    denominator_samples: np.ndarray,
    level: float = 0.95,
) -> tuple[float, float, float, str]:
    """Ratio `numerator / denominator` of two means with a percentile CI from independently drawn bootstrap
    distributions of each. Returns (ratio, ci_low, ci_high, note); `note` is empty when all are defined.

    A ratio of returns only reads as "x times as good" when the reference is positive: for a reference mean <= 0
    the ratio is NaN. When some bootstrap draws of the reference are <= 0 the ratio's distribution is unbounded,
    so the CI is NaN while the point ratio is kept.
    """
    if not np.isfinite(denominator) or denominator <= 0:
        return (
            float("nan"),
            float("nan"),
            float("nan"),
            (f"undefined: deterministic mean return {denominator:.6g} is not positive"),
        )
    ratio = float(numerator / denominator)
    denominator_samples = np.asarray(denominator_samples, dtype=float)
    bad = float(np.mean(~(denominator_samples > 0)))
    if bad > 0:
        return (
            ratio,
            float("nan"),
            float("nan"),
            (f"CI undefined: {bad:.1%} of the deterministic mean's bootstrap draws are not positive"),
        )
    low, high = percentile_interval(np.asarray(numerator_samples, dtype=float) / denominator_samples, level)
    return ratio, low, high, ""
