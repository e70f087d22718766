"""The learning curves read at fixed env steps: every cell's training-episode return at each of
`evaluation.curve_env_steps`, against the PPO reference's at the same env steps (PWM per env step against a
model-free learner, and in the paper's metric: its curves are training returns). `plot` writes this table beside the
learning_curves figure, from the same metrics. pandas/numpy only.

A run's return at env step `x` is the mean return of the training episodes that ended within one *episode period*
before `x`: the env steps in which every one of its envs completes at least one episode (`num_envs x
episode_length`: 128k for a PWM run of 128 ants, 4.1M for the reference's 4,096). Each metrics row holds the mean of
the episodes that ended in one log window and their count, so that mean is the count-weighted mean of the rows in
`(end - period, end]`, `end` the row that closes the log window holding `x` (at most one log window past `x`: 51k env
steps for a PWM run logging every 25 epochs, 1.3M for the reference logging every 10 iterations).

Over a shorter span the episodes that ended are a biased sample: the reference's ants start in step and mostly
finish their 1,000-step episodes together, once per period, so a log window between those bursts holds only the few
episodes cut short by a fall (such rows read 40-300 where the bursts read ~1,300). For the same reason a run has no
value before one period has passed (only falls can have ended by then), past its last row, or where no episode ended
in the span. `n_seeds` says how many runs a value averages (a run stopped early by the collapse guard, or a short
one, drops out of the later marks).
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


def return_at(curve: pd.DataFrame, env_steps: int, period: int) -> float:
    """One run's training return at `env_steps`: the mean return of its training episodes that ended in the
    `period` env steps up to the end of the log window holding `env_steps` (its rows' means weighted by their
    episode counts); NaN before one period, past the run's last row, or where no episode ended in that span."""
    x = curve["env_steps"].to_numpy(dtype=float)
    if env_steps < period or x.size == 0 or x.max() < env_steps:
        return float("nan")
    end = x[x >= env_steps].min()  # the row closing the log window in which `env_steps` falls
    window = curve[(x > end - period) & (x <= end)].dropna(subset=["train_return_mean"])
    episodes = window["train_episodes"].to_numpy(dtype=float)
    if episodes.sum() <= 0:
        return float("nan")
    return float(np.average(window["train_return_mean"].to_numpy(dtype=float), weights=episodes))


def episode_period(experiment: ExperimentConfig, task: str, dynamics: str) -> int:
    """Env steps in which every env of a run of this cell completes at least one episode: its env count times the
    task's episode length (the reference trains on `reference.num_envs` envs, a PWM run on the task's)."""
    env = experiment.tasks[task]
    num_envs = experiment.reference.num_envs if dynamics == REFERENCE_DYNAMICS else env.num_envs
    return num_envs * env.episode_length


def period_curves(experiment: ExperimentConfig, metrics: pd.DataFrame) -> pd.DataFrame:
    """Every run's metrics rows with `train_return_mean` read as the table reads it (`return_at` at the row's env
    steps, over the run's episode period), rows without a value left out: the learning_curves figure's data."""
    runs = []
    for run, curve in metrics.groupby(RUN, sort=False):
        period = episode_period(experiment, run[0], run[2])
        read = curve.assign(train_return_mean=[return_at(curve, x, period) for x in curve["env_steps"]])
        runs.append(read.dropna(subset=["train_return_mean"]))
    return pd.concat(runs, ignore_index=True) if runs else metrics.iloc[:0]


def curve_table(experiment: ExperimentConfig, metrics: pd.DataFrame) -> pd.DataFrame:
    """One row per cell (the PWM cells in config order, then each task's reference) and env step that at least
    one of its runs reaches: the mean over those runs, their standard deviation, and for PWM cells the reference's
    mean at the same env steps and the ratio to it."""
    steps = experiment.evaluation.curve_env_steps
    # (task, size, dynamics) -> per env step, the returns of the cell's runs that reach it.
    reached: dict[tuple[str, str, str], list[list[float]]] = {}
    for run, curve in metrics.groupby(RUN, sort=False):
        values = reached.setdefault(run[:3], [[] for _ in steps])
        period = episode_period(experiment, run[0], run[2])
        for i, x in enumerate(steps):
            value = return_at(curve, x, period)
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
