"""Helpers for the training tests: a tiny experiment YAML on a cheap Gymnasium task, and the real CLI in a
subprocess (what Snakemake runs)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from flow_mbpo_pwm import io
from flow_mbpo_pwm.config import deep_merge as deep_update  # noqa: F401 -- the tests' name for it

REPO = Path(__file__).resolve().parents[2]

# A small but real PWM run: InvertedPendulum (obs 4, act 1) with short episodes, tiny world model, small actor and
# critic. Values chosen so a run of a few dozen epochs costs seconds on 2 CPU cores.
TINY_EXPERIMENT: dict[str, Any] = {
    "tasks": {"pendulum": {"task": "gym:InvertedPendulum-v5", "num_envs": 4, "episode_length": 50}},
    "sizes": ["tiny"],
    "dynamics": {"deterministic": {}, "flow": {"kind": "flow", "substeps": 2}},
    "seeds": [0, 1],
    "evaluation": {"episodes": 4, "num_envs": 4},
    "train": {
        "world_model": {"units": [32, 32], "encoder_units": [32], "latent_dim": 16},
        "pwm": {
            "epochs": 12,
            "horizon": 4,
            "actor_units": [32, 32],
            "critic_units": [32, 32],
            "critic_iterations": 2,
            "critic_minibatches": 2,
            "wm_batch": 16,
            "wm_steps": 2,
            "wm_warmup_steps": 10,
            "buffer_size": 2000,
        },
        "run": {
            "device": "cpu",
            "log_every": 2,
            "validate_every": 4,
            "save_state_every": 3,
            "validation_episodes": 2,
            "guard": {"check_every": 2},
        },
    },
}


# Settings with which PWM learns InvertedPendulum (tests/train/test_learning.py): 16 envs, episodes of at most
# 100 steps, 300 epochs of H=4 (flow: 500, test_learning.py), latent 64, actor/critic lr 2e-4.
EPISODE_LENGTH = 100
LEARNING_RUN = {
    "tasks": {"pendulum": {"num_envs": 16, "episode_length": EPISODE_LENGTH}},
    "train": {
        "world_model": {"units": [64, 64], "encoder_units": [64], "latent_dim": 64},
        "pwm": {
            "epochs": 300,
            "horizon": 4,
            "actor_units": [64, 64],
            "critic_units": [64, 64],
            "actor_lr": 2e-4,
            "critic_lr": 2e-4,
            "critic_iterations": 4,
            "critic_minibatches": 2,
            "wm_batch": 64,
            "wm_steps": 8,
            "wm_warmup_steps": 200,
            "buffer_size": 50_000,
        },
        "run": {"log_every": 5, "validate_every": 20, "save_state_every": 100, "validation_episodes": 8},
    },
}


def cli_args(config: Path, run_dir: Path, dynamics: str = "deterministic", seed: int = 0) -> list[str]:
    return [
        sys.executable,
        "-m",
        "flow_mbpo_pwm.cli",
        "train",
        "--config",
        str(config),
        "--task",
        "pendulum",
        "--size",
        "tiny",
        "--dynamics",
        dynamics,
        "--seed",
        str(seed),
        "--run-dir",
        str(run_dir),
    ]


def subprocess_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO / "src") + os.pathsep + env.get("PYTHONPATH", "")
    env["PYTHONUNBUFFERED"] = "1"
    # One intra-op thread: these networks are tiny, and on a busy 2-core CI machine two spinning OpenMP threads per
    # process made an epoch ~10x slower. Every run of a test uses the same setting, so results stay comparable.
    env["OMP_NUM_THREADS"] = "1"
    # MKL's default (alignment-dependent) mode, as users run: tests/conftest.py sets the strict mode for the
    # in-process tests only; a test that compares stacked with lone runs asks for it (test_stacked_runs.py).
    env.pop("MKL_CBWR", None)
    env.update(extra)
    return env


def run_cli(args: list[str], timeout: float = 600, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=subprocess_env(**env))


def wait_for(proc: subprocess.Popen, condition: Callable[[], bool], timeout: float = 300) -> None:
    """Poll `condition` until it holds, failing if `proc` ends first or `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, f"training ended (rc {proc.returncode}) before the awaited moment"
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def killed_and_rerun(config: Path, run: Path) -> subprocess.CompletedProcess:
    """The real CLI SIGKILLed right after its first periodic state save (no final outputs yet), then the same
    command again: the rerun's result."""
    with (run.parent / f"{run.name}.log").open("w") as log:
        proc = subprocess.Popen(cli_args(config, run), stdout=log, stderr=subprocess.STDOUT, env=subprocess_env())
        wait_for(proc, lambda: (run / "work" / "state.pt").exists())
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert not (run / "final.pt").exists()
    return run_cli(cli_args(config, run))


def _tensors(obj, prefix=""):
    if isinstance(obj, torch.Tensor):
        return {prefix: obj}
    if isinstance(obj, dict):
        out = {}
        for key, value in obj.items():
            out.update(_tensors(value, f"{prefix}.{key}"))
        return out
    return {}


def assert_same_run(reference: Path, other: Path) -> None:
    """Bitwise the same final weights, metric, validation and world-model diagnostic rows (wall times aside)."""
    a, b = _tensors(io.torch_load(reference / "final.pt")), _tensors(io.torch_load(other / "final.pt"))
    assert a.keys() == b.keys() and len(a) > 10
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"final weights differ: {different[:5]}"
    for table in ("metrics.csv", "validation.csv"):
        ta, tb = pd.read_csv(reference / table), pd.read_csv(other / table)
        assert len(ta) == len(tb) and tb["epoch"].is_unique, table
        ta, tb = ta.drop(columns=["wall_seconds"], errors="ignore"), tb.drop(columns=["wall_seconds"], errors="ignore")
        pd.testing.assert_frame_equal(ta, tb, check_exact=True)
    diagnostics = [pd.read_csv(run / "wm_diagnostics.csv") for run in (reference, other)]
    pd.testing.assert_frame_equal(*diagnostics, check_exact=True)
