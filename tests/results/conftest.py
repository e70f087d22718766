"""Fixtures for the select and evaluate tests: real policy checkpoints of a real (tiny) PWM agent, written by
`checkpoints.save_policy`, in run folders laid out as `train` writes them (docs/contracts.md "Run folder")."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import yaml

from flow_mbpo_pwm import io
from flow_mbpo_pwm.config import ExperimentConfig, TrainConfig, load_experiment

# Two real Gymnasium tasks: InvertedPendulum ends an episode when the pole falls (an untrained policy cannot
# balance it for 40 steps), Pendulum-v1 never terminates (every episode ends by the time limit).
TASK, GYM_TASK = "pendulum", "gym:InvertedPendulum-v5"
TIME_LIMIT_TASK, TIME_LIMIT_GYM_TASK = "swing", "gym:Pendulum-v1"


EXPERIMENT = {
    "tasks": {
        TASK: {"task": GYM_TASK, "num_envs": 2, "episode_length": 40},
        TIME_LIMIT_TASK: {"task": TIME_LIMIT_GYM_TASK, "num_envs": 2, "episode_length": 12},
    },
    "sizes": ["tiny", "5M"],
    "dynamics": {"deterministic": {}, "flow": {}},
    "seeds": [0, 3],
    "evaluation": {"episodes": 5, "num_envs": 2},
}


@pytest.fixture(scope="session")
def experiment_yaml(tmp_path_factory) -> Path:
    """The experiment config as a YAML file, for tests that go through the command line."""
    path = tmp_path_factory.mktemp("config") / "experiment.yaml"
    io.write_text(path, yaml.safe_dump(EXPERIMENT))
    return path


@pytest.fixture(scope="session")
def experiment() -> ExperimentConfig:
    return load_experiment(EXPERIMENT)


def _env_dims(gym_task: str) -> tuple[int, int]:
    from flow_mbpo_pwm import envs

    env = envs.make(gym_task, num_envs=1, device="cpu", seed=0)
    return int(env.obs_dim), int(env.act_dim)


@pytest.fixture(scope="session")
def env_dims() -> Callable[[str], tuple[int, int]]:
    """env_dims(gym_task) -> (obs_dim, act_dim) of the real env."""
    return _env_dims


@pytest.fixture(scope="session")
def task_dims() -> tuple[int, int]:
    """(obs_dim, act_dim) of the select tests' task."""
    return _env_dims(GYM_TASK)


def policy_meta(config: TrainConfig, obs_dim: int, act_dim: int, epoch: int, val_return: float) -> dict:
    return {
        "task": config.task_name,
        "size": config.size,
        "dynamics": config.dynamics_name,
        "seed": config.run.seed,
        "epoch": epoch,
        "env_steps": epoch * config.env.num_envs * config.pwm.horizon,
        "obs_dim": obs_dim,
        "act_dim": act_dim,
        "val_return": val_return,
        "config": config.to_dict(),
    }


@pytest.fixture
def save_checkpoint() -> Callable[..., Path]:
    """save_checkpoint(path, config, obs_dim, act_dim, epoch, val_return, **meta_changes): a freshly initialised
    real agent (weights seeded by the epoch, so checkpoints differ) saved by `checkpoints.save_policy`."""
    from flow_mbpo_pwm.algorithms.pwm import PWM
    from flow_mbpo_pwm.checkpoints import save_policy

    def save(path: Path, config: TrainConfig, obs_dim: int, act_dim: int, epoch: int, val_return: float = 0.0,
             **meta_changes) -> Path:  # fmt: skip
        torch.manual_seed(1000 + epoch)
        agent = PWM(obs_dim, act_dim, config, torch.device("cpu"))
        save_policy(path, agent, policy_meta(config, obs_dim, act_dim, epoch, val_return) | meta_changes)
        return path

    return save


@pytest.fixture
def make_run(experiment, task_dims, save_checkpoint) -> Callable[..., Path]:
    """make_run(run_dir, [(epoch, val_return, flag_reason), ...]): a completed run folder with those validations
    (one policy checkpoint each; flagged when flag_reason is not empty)."""

    def make(run_dir: Path, validations: list[tuple[int, float, str]], config: TrainConfig | None = None) -> Path:
        config = config or experiment.cell(TASK, "tiny", "deterministic", 0)
        obs_dim, act_dim = task_dims
        rows, checkpoints = [], []
        cell = {"task": config.task_name, "size": config.size, "dynamics": config.dynamics_name,
                "seed": config.run.seed}  # fmt: skip
        for epoch, val_return, flag_reason in validations:
            rel = f"work/checkpoints/epoch_{epoch:06d}.pt"
            save_checkpoint(run_dir / rel, config, obs_dim, act_dim, epoch, val_return)
            env_steps = epoch * config.env.num_envs * config.pwm.horizon
            flagged = bool(flag_reason)
            rows.append(cell | {"epoch": epoch, "env_steps": env_steps, "val_return_mean": val_return,
                                "val_return_std": 1.0, "val_episodes": config.run.validation_episodes,
                                "checkpoint": rel, "flagged": flagged, "flag_reason": flag_reason})  # fmt: skip
            checkpoints.append({"epoch": epoch, "env_steps": env_steps, "path": rel, "val_return": val_return,
                                "flagged": flagged, "flag_reason": flag_reason})  # fmt: skip
        write_validation_csv(run_dir / "validation.csv", rows)
        finite = [v for _, v, _ in validations if math.isfinite(v)]
        io.write_json(run_dir / "train_summary.json", cell | {
            "status": "completed", "epochs": max(e for e, _, _ in validations), "env_steps": rows[-1]["env_steps"],
            "train_seconds": 1.0, "params": {"world_model": 1, "actor": 1, "critic": 1, "total": 3},
            "best_train_return": max(finite, default=0.0), "final_train_return": 0.0, "checkpoints": checkpoints,
        })  # fmt: skip
        return run_dir

    return make


def write_validation_csv(path: Path, rows: list[dict]) -> None:
    """validation.csv exactly as `train` writes it (its own table writer)."""
    from flow_mbpo_pwm.run_folder import VALIDATION_COLUMNS, write_table

    write_table(path, VALIDATION_COLUMNS, rows)


def flip_weight_bytes(path: Path, module: str = "actor") -> None:
    """Flip bits inside the bytes of `module`'s largest weight tensor, in place in the file: the zip layout and
    every other byte stay as they were (what a bad disk or a broken copy does)."""
    data = torch.load(path, weights_only=True)
    weight = max(data[module].values(), key=lambda t: t.numel())
    needle = weight.contiguous().numpy().tobytes()[:32]
    raw = bytearray(path.read_bytes())
    at = raw.find(needle)
    assert at >= 0 and raw.find(needle, at + 1) < 0, "weight bytes not found exactly once"
    raw[at + 5] ^= 0x10
    path.write_bytes(bytes(raw))


@pytest.fixture
def flip_bytes() -> Callable[..., None]:
    return flip_weight_bytes
