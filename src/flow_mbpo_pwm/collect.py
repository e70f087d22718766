"""`flow-mbpo-pwm collect`: an offline dataset (HDF5, `data/datasets.py` format) from the PPO reference's snapshots.

Every snapshot of one reference run (untrained, standing, ..., running) drives `collect.num_envs` fresh envs for
`collect.steps_per_snapshot` steps with ITS OWN exploration noise: action = mean + `collect.noise_scale` x the
snapshot's Gaussian std x N(0, I), clipped to [-1, 1] (by the env; the dataset stores the clipped, i.e. applied,
action). So the data covers every stage of learning with the state distribution each policy actually visited.
Each snapshot's envs become separate streams: streams `k * num_envs .. (k + 1) * num_envs - 1` come from snapshot
`k` (attrs `snapshots`, a JSON list in that order). Env seed of snapshot k = `collect.env_seed_base + k`, disjoint
from training, validation and evaluation seeds (config validation); the noise generator is seeded the same way.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import torch

from flow_mbpo_pwm import io
from flow_mbpo_pwm.config import REFERENCE_SIZE, CollectConfig, ExperimentConfig
from flow_mbpo_pwm.data.datasets import DatasetError, write_dataset
from flow_mbpo_pwm.io import CheckpointError


def collect(experiment: ExperimentConfig, task: str, reference_dir: Path, out: Path, device: str | None = None) -> int:
    """Stage entry point: write the dataset to `out`; 0, or 1 with the reason on stderr."""
    try:
        count, attrs = collect_dataset(experiment, task, Path(reference_dir), Path(out), device)
    except (DatasetError, CheckpointError) as err:
        print(f"flow-mbpo-pwm collect: {err}", file=sys.stderr)
        return 1
    print(
        f"flow-mbpo-pwm collect: {count} transitions from {len(json.loads(attrs['snapshots']))} snapshots of "
        f"{reference_dir} -> {out}"
    )
    return 0


def collect_dataset(
    experiment: ExperimentConfig, task: str, reference_dir: Path, out: Path, device: str | None = None
) -> tuple[int, dict[str, Any]]:
    """Run every snapshot listed in the reference's `train_summary.json`; returns (transitions, attrs)."""
    from flow_mbpo_pwm.devices import resolve_device

    if task not in experiment.tasks:
        raise DatasetError(f"task '{task}' is not in this config's tasks {list(experiment.tasks)}")
    summary = _reference_summary(reference_dir, task)
    cfg = experiment.collect
    torch_device = resolve_device(device or experiment.reference.device, "--device" if device else "reference.device")
    env_config = experiment.tasks[task]
    streams: list[dict[str, torch.Tensor]] = []
    snapshots = []
    for k, checkpoint in enumerate(summary["checkpoints"]):
        path = reference_dir / checkpoint["path"]
        data, std = _run_snapshot(path, env_config, cfg, cfg.env_seed_base + k, torch_device)
        streams.append(data)
        snapshots.append({"path": checkpoint["path"], "env_steps": checkpoint["env_steps"], "std": std})
    data = {name: torch.cat([s[name] for s in streams]) for name in streams[0]}
    attrs = {
        "task": env_config.task,
        "episode_length": env_config.episode_length,
        "source": "reference",
        "source_task_name": task,
        "source_seed": int(summary["seed"]),
        "source_dir": str(reference_dir),
        "snapshots": json.dumps(snapshots),
        "streams_per_snapshot": cfg.num_envs,
        "steps_per_snapshot": cfg.steps_per_snapshot,
        "noise_scale": cfg.noise_scale,
        "env_seed_base": cfg.env_seed_base,
        "action": "mean + noise_scale * std * N(0, I), clipped to [-1, 1] (as applied)",
    }
    return write_dataset(out, data, attrs), attrs


def _reference_summary(reference_dir: Path, task: str) -> dict[str, Any]:
    path = reference_dir / "train_summary.json"
    if not path.is_file():
        raise DatasetError(f"{reference_dir}: no train_summary.json; collect needs a completed reference run")
    try:
        summary = io.read_json(path)
    except ValueError as err:
        raise DatasetError(str(err)) from err
    if not isinstance(summary, dict) or summary.get("size") != REFERENCE_SIZE or not summary.get("checkpoints"):
        raise DatasetError(f"{path}: not the summary of a PPO reference run (size '{REFERENCE_SIZE}', checkpoints)")
    if summary.get("task") != task:
        raise DatasetError(f"{path}: is a reference run of task {summary.get('task')!r}, not {task!r}")
    return summary


@torch.no_grad()
def _run_snapshot(
    path: Path, env_config: Any, cfg: CollectConfig, env_seed: int, device: torch.device
) -> tuple[dict[str, torch.Tensor], list[float]]:
    """`steps_per_snapshot` steps of `num_envs` envs under the snapshot's noisy policy, as [E, T, ...] fields."""
    from flow_mbpo_pwm import envs
    from flow_mbpo_pwm.reference_policy import load_reference_policy

    policy, meta = load_reference_policy(path, device)
    env = envs.make_from_config(env_config, device, seed=env_seed, num_envs=cfg.num_envs)
    if (int(meta["obs_dim"]), int(meta["act_dim"])) != (env.obs_dim, env.act_dim):
        raise CheckpointError(
            f"{path}: policy has obs_dim={meta['obs_dim']}, act_dim={meta['act_dim']} but task "
            f"'{env_config.task}' has {env.obs_dim}, {env.act_dim}"
        )
    generator = torch.Generator(device=device).manual_seed(env_seed)
    std = policy.std.to(device) * cfg.noise_scale
    fields: dict[str, list[torch.Tensor]] = {
        k: [] for k in ("observations", "actions", "rewards", "next_observations", "terminated", "truncated")
    }
    obs = env.reset()
    for _ in range(cfg.steps_per_snapshot):
        mean = policy(obs)
        noise = torch.randn(mean.shape, generator=generator, device=device)
        action = (mean + std * noise).clamp(-1.0, 1.0)
        next_obs, reward, terminated, truncated, info = env.step(action)
        for name, value in zip(fields, (obs, action, reward, info["final_obs"], terminated, truncated), strict=True):
            fields[name].append(value)
        obs = next_obs
    data = {name: torch.stack(values, dim=1) for name, values in fields.items()}  # [E, T, ...]
    return data, policy.std.cpu().tolist()
