"""The learning curves read at fixed env steps: every cell's training-episode return at each of
`evaluation.curve_env_steps`, against the PPO reference's at the same env steps (PWM per env step against a
model-free learner, and in the paper's metric: its curves are training returns). `plot` writes this table beside the
learning_curves figure, from the same metrics. pandas/numpy only.

A run's return at env step `x` is read off its metrics rows (the mean training-episode return of each log window,
windows where no episode ended left out) by linear interpolation between the two rows around `x`. A run whose rows
do not reach `x` does not count there, so `n_seeds` says how many runs a value averages (a run stopped early by the
collapse guard, or a short one, drops out of the later marks).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from flow_mbpo_pwm.aggregate import CELL, RUN
from flow_mbpo_pwm.config import REFERENCE_DYNAMICS, REFERENCE_SIZE, ExperimentConfig

CURVE_COLUMNS = [
    *CELL,
    "env_steps",
    "n_seeds",
    "train_return_mean",
    "train_return_seed_std",
    "reference_train_return",
    "ratio_to_reference",
]


def return_at(curve: pd.DataFrame, env_steps: int) -> float:
    """One run's training return at `env_steps`, interpolated between its metrics rows; NaN outside them."""
    finished = curve.dropna(subset=["train_return_mean"]).sort_values("env_steps")
    x = finished["env_steps"].to_numpy(dtype=float)
    if x.size == 0 or not x[0] <= env_steps <= x[-1]:
        return float("nan")
    return float(np.interp(env_steps, x, finished["train_return_mean"].to_numpy(dtype=float)))


def curve_table(experiment: ExperimentConfig, metrics: pd.DataFrame) -> pd.DataFrame:
    """One row per cell (the PWM cells in config order, then each task's reference) and env step that at least
    one of its runs reaches: the mean over those runs, their standard deviation, and for PWM cells the reference's
    mean at the same env steps and the ratio to it."""
    steps = experiment.evaluation.curve_env_steps
    # (task, size, dynamics) -> per env step, the returns of the cell's runs that reach it.
    reached: dict[tuple[str, str, str], list[list[float]]] = {}
    for run, curve in metrics.groupby(RUN, sort=False):
        values = reached.setdefault(run[:3], [[] for _ in steps])
        for i, x in enumerate(steps):
            value = return_at(curve, x)
            if np.isfinite(value):
                values[i].append(value)
    rows = []
    for cell in dict.fromkeys(run[:3] for run in [*experiment.cells(), *experiment.reference_cells()]):
        reference = (cell[0], REFERENCE_SIZE, REFERENCE_DYNAMICS)
        own = reached.get(cell)
        ref = reached.get(reference) if cell != reference else None  # the reference's rows have no ratio
        for i, env_steps in enumerate(steps):
            values = own[i] if own else []
            if not values:
                continue
            mean = float(np.mean(values))
            ref_mean = float(np.mean(ref[i])) if ref and ref[i] else float("nan")
            rows.append(
                {
                    **dict(zip(CELL, cell, strict=True)),
                    "env_steps": env_steps,
                    "n_seeds": len(values),
                    "train_return_mean": mean,
                    "train_return_seed_std": float(np.std(values, ddof=1)) if len(values) > 1 else float("nan"),
                    "reference_train_return": ref_mean,
                    "ratio_to_reference": mean / ref_mean if ref_mean > 0 else float("nan"),
                }
            )
    return pd.DataFrame(rows, columns=CURVE_COLUMNS)
