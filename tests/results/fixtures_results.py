"""Hand-made result trees for the aggregate and plot tests: the files `evaluate` and `train` would write
(docs/contracts.md), with returns chosen by the test."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from flow_mbpo_pwm.aggregate import grid_runs
from flow_mbpo_pwm.config import ExperimentConfig, load_experiment

PARAMS = {"tiny": 20_000, "5M": 5_000_000, "reference": 100_000}


def small_experiment(
    dynamics: dict[str, Any] | None = None,
    seeds: tuple[int, ...] = (0, 1, 2),
    sizes: tuple[str, ...] = ("tiny", "5M"),
    tasks: tuple[str, ...] = ("ant",),
    episodes: int = 8,
    reference: bool = False,
) -> ExperimentConfig:
    return load_experiment(
        {
            "tasks": {name: {"task": "ant", "num_envs": 4, "episode_length": 50} for name in tasks},
            "sizes": list(sizes),
            "dynamics": dynamics if dynamics is not None else {"deterministic": {}, "flow": {}},
            "seeds": list(seeds),
            "evaluation": {"episodes": episodes},
            "reference": {"enabled": reference, "num_envs": 4, "env_steps": 1000, "horizon": 8, "snapshots": 3},
            "pretrain": {"enabled": reference},
        }
    )


def run_dir(root: Path, task: str, size: str, dynamics: str, seed: int) -> Path:
    return root / task / f"{size}-{dynamics}" / f"seed{seed}"


def write_episodes(path: Path, cell: tuple[str, str, str, int], returns: np.ndarray) -> Path:
    task, size, dynamics, seed = cell
    n = len(returns)
    frame = pd.DataFrame(
        {
            "task": task,
            "size": size,
            "dynamics": dynamics,
            "seed": seed,
            "episode": np.arange(n),
            "eval_seed": 1_000_000 + seed,
            "return": np.asarray(returns, dtype=float),
            "length": 50,
            "terminated": False,
            "truncated": True,
        }
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)
    return path


def write_summary(
    path: Path,
    cell: tuple[str, str, str, int],
    best: float | None,
    seconds: float = 100.0,
    status: str = "completed",
    params: int | None = None,
) -> Path:
    task, size, dynamics, seed = cell
    summary = {
        "task": task,
        "size": size,
        "dynamics": dynamics,
        "seed": seed,
        "status": status,
        "epochs": 10,
        "env_steps": 4000,
        "train_seconds": seconds,
        "params": {
            "world_model": (params or PARAMS[size]) // 2,
            "actor": 1000,
            "critic": 2000,
            "total": params or PARAMS[size],
        },
        "best_train_return": best,
        "final_train_return": None if best is None else best - 1.0,
        "checkpoints": [],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary))
    return path


def write_metrics(path: Path, cell: tuple[str, str, str, int], rows: int = 6) -> Path:
    task, size, dynamics, seed = cell
    epoch = np.arange(1, rows + 1) * 25
    rng = np.random.default_rng(seed)
    train_return = epoch * (2.0 if dynamics != "deterministic" else 1.0) + rng.normal(0, 5, rows)
    train_return[0] = np.nan  # no training episode finished in the first window
    frame = pd.DataFrame(
        {
            "task": task,
            "size": size,
            "dynamics": dynamics,
            "seed": seed,
            "epoch": epoch,
            "env_steps": epoch * 64,
            "wall_seconds": epoch * 0.1,
            "train_return_mean": train_return,
            "train_return_max": train_return + 1,
            "train_episodes": 4,
        }
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)
    return path


def write_wm_diagnostics(path: Path, cell: tuple[str, str, str, int], validations: int = 3, horizon: int = 4) -> Path:
    """wm_diagnostics.csv of one run: latent error growing along the horizon, below the copy baseline for the flow
    variants, and the critic's value error at 2x its copy baseline for every variant; the gradient cosine measured
    at every validation but the first."""
    task, size, dynamics, seed = cell
    rng = np.random.default_rng(seed)
    rows = []
    for v in range(1, validations + 1):
        cosine = np.nan if v == 1 else float(np.clip(0.2 * v + rng.normal(0, 0.05), -1, 1))
        for step in range(1, horizon + 1):
            copy = 0.01 * step
            wm = copy * (0.5 if dynamics != "deterministic" else 1.2) * (1 + rng.normal(0, 0.05))
            rows.append({"task": task, "size": size, "dynamics": dynamics, "seed": seed, "epoch": 25 * v,
                         "env_steps": 1600 * v, "step": step, "wm_latent_mse": wm, "copy_latent_mse": copy,
                         "wm_reward_mse": 0.1 * step, "wm_value_mse": 2.0 * step, "copy_value_mse": float(step),
                         "grad_cosine": cosine,
                         "grad_cosine_step": cosine / step})  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def write_results(
    root: Path,
    experiment: ExperimentConfig,
    returns: Callable[[tuple[str, str, str, int]], np.ndarray],
    best: Callable[[tuple[str, str, str, int]], float | None] = lambda cell: 10.0 + cell[3],
) -> tuple[list[Path], list[Path]]:
    """Episodes CSVs and training summaries for every run of `experiment` (PWM cells and PPO reference runs)."""
    episodes, summaries = [], []
    for cell in grid_runs(experiment):
        folder = run_dir(root, *cell)
        episodes.append(write_episodes(folder / "eval" / "episodes.csv", cell, returns(cell)))
        summaries.append(write_summary(folder / "train_summary.json", cell, best(cell), seconds=100.0 + 10 * cell[3]))
    return episodes, summaries
