"""`flow-mbpo-pwm evaluate`: held-out episodes of the selected policy, with the deterministic action `tanh(mu)`.

Seeds: the env is seeded with `evaluation.seed_base + run.seed`, which config validation keeps disjoint from the
training seed (`run.seed`) and the validation seed (`run.validation_seed_base + run.seed`).

Which episodes count. `num_envs = min(episodes, evaluation.num_envs)` envs run side by side; every env slot plays
episodes back to back (the env resets done rows by itself). Episode `k` of env `i` gets the global index
`episode = k * num_envs + i`, and exactly the indices `0 .. episodes-1` are recorded: env `i` contributes its first
`ceil((episodes - i) / num_envs)` episodes and is ignored afterwards. The recorded set is fixed before anything
runs, so it depends on neither timing nor episode lengths. (Keeping "the first N episodes to finish" instead would
over-represent short episodes, i.e. early falls, and bias the mean return.)

The policy runs at the cell's matrix precision (`run.tf32`), as it ran in the validation episodes that selected it.

The check that the checkpoint fits the cell (task, size preset, dynamics, observation and action sizes) runs after
the env is built (its sizes are needed) and before it is reset or stepped. Outputs are written only after every
episode has finished, each atomically; if anything fails, neither output is left behind.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from flow_mbpo_pwm import io
from flow_mbpo_pwm.config import EvaluationConfig, TrainConfig
from flow_mbpo_pwm.devices import resolve_device
from flow_mbpo_pwm.io import CheckpointError
from flow_mbpo_pwm.train_state import set_matmul_precision

EPISODE_COLUMNS = (
    "task",
    "size",
    "dynamics",
    "seed",
    "episode",
    "eval_seed",
    "return",
    "length",
    "terminated",
    "truncated",
)
TRAJECTORY_FORMAT = "flow-mbpo-pwm/trajectories/1"
CHECK_EVERY = 32  # env steps between host reads of "have all envs finished their episodes?"


class EvaluationError(RuntimeError):
    """Evaluation could not produce its episodes (bad arguments, or an env that never ends its episodes)."""


def evaluate(
    config: TrainConfig, evaluation: EvaluationConfig, checkpoint: Path, episodes: int, out_csv: Path, out_h5: Path
) -> int:
    """Stage entry point: run `episodes` held-out episodes, write `out_csv` and `out_h5`; non-zero exit on error."""
    try:
        result = run_episodes(config, evaluation, checkpoint, episodes)
        write_outputs(result, out_csv, out_h5)
    except (CheckpointError, EvaluationError) as err:
        print(f"flow-mbpo-pwm evaluate: {err}", file=sys.stderr)
        return 1
    returns = result["returns"]
    print(
        f"{checkpoint}: {episodes} episodes, return mean {returns.mean():.3f} std {returns.std():.3f} "
        f"(eval seed {result['eval_seed']}, {result['num_envs']} envs)"
    )
    return 0


def evaluation_seed(config: TrainConfig, evaluation: EvaluationConfig) -> int:
    return evaluation.seed_base + config.run.seed


def run_episodes(config: TrainConfig, evaluation: EvaluationConfig, checkpoint: Path, episodes: int) -> dict[str, Any]:
    """Play the episodes; returns host arrays (numpy) of everything the outputs hold."""
    from flow_mbpo_pwm import envs
    from flow_mbpo_pwm.checkpoints import check_policy_matches, load_policy

    if isinstance(episodes, bool) or not isinstance(episodes, int) or episodes < 1:
        raise EvaluationError(f"episodes must be a positive integer, got {episodes!r}")
    device = resolve_device(config.run.device)
    set_matmul_precision(config.run.tf32)
    policy, meta = load_policy(Path(checkpoint), device)
    num_envs = min(episodes, evaluation.num_envs)
    seed = evaluation_seed(config, evaluation)
    env = envs.make_from_config(config.env, device, seed=seed, num_envs=num_envs)
    try:
        check_policy_matches(meta, config, env.obs_dim, env.act_dim)
    except CheckpointError as err:
        raise CheckpointError(f"{checkpoint}: does not match cell {_cell_name(config)}: {err}") from err
    torch.manual_seed(seed)  # the deterministic action draws no random numbers; seeding keeps it so if one ever does
    policy.eval()
    with torch.no_grad():
        arrays = _play(env, policy, episodes, num_envs, device)
    return {
        **arrays,
        "config": config,
        "meta": meta,
        "eval_seed": seed,
        "num_envs": num_envs,
        "checkpoint": str(checkpoint),
    }


def _play(env: Any, policy: torch.nn.Module, episodes: int, n: int, device: torch.device) -> dict[str, Any]:
    T, obs_dim, act_dim = int(env.max_episode_steps), int(env.obs_dim), int(env.act_dim)
    env_index = torch.arange(n, device=device)
    # quota[i]: how many episodes env i contributes (indices i, i + n, i + 2n, ... below `episodes`).
    quota = torch.div(episodes - 1 - env_index, n, rounding_mode="floor") + 1
    # Row `episodes` is a scratch row: envs past their quota keep stepping (batched) but write there.
    observations = torch.zeros(episodes + 1, T, obs_dim, device=device)
    final_observations = torch.zeros(episodes + 1, obs_dim, device=device)
    actions = torch.zeros(episodes + 1, T, act_dim, device=device)
    rewards = torch.zeros(episodes + 1, T, device=device)
    lengths = torch.zeros(episodes + 1, dtype=torch.long, device=device)
    terminated = torch.zeros(episodes + 1, dtype=torch.bool, device=device)
    truncated = torch.zeros(episodes + 1, dtype=torch.bool, device=device)
    finished = torch.zeros(n, dtype=torch.long, device=device)  # episodes completed per env
    step_in_episode = torch.zeros(n, dtype=torch.long, device=device)
    overran = torch.zeros((), dtype=torch.bool, device=device)  # an episode longer than max_episode_steps

    # An env that never ended an episode would loop forever: bound the steps by the longest possible schedule.
    max_steps = int(math.ceil(episodes / n)) * T + CHECK_EVERY
    obs = env.reset()
    for step in range(1, max_steps + 1):
        row = torch.where(finished < quota, finished * n + env_index, episodes)
        t = step_in_episode.clamp(max=T - 1)
        overran |= (step_in_episode >= T).any()
        action = policy(obs)
        observations[row, t] = obs
        actions[row, t] = action
        obs, reward, term, trunc, info = env.step(action)
        rewards[row, t] = reward
        done = term | trunc
        # Scatter only done rows' results: index_put with the scratch row for the rest.
        done_row = torch.where(done, row, episodes)
        lengths[done_row] = step_in_episode + 1
        terminated[done_row] = term
        truncated[done_row] = trunc
        final_observations[done_row] = info["final_obs"]
        finished += done.long()
        step_in_episode = torch.where(done, 0, step_in_episode + 1)
        if step % CHECK_EVERY == 0 and bool((finished >= quota).all()):
            break
    else:
        if not bool((finished >= quota).all()):
            raise EvaluationError(
                f"episodes did not end within {max_steps} steps (max_episode_steps={T}); "
                "the env does not truncate its episodes"
            )
    if bool(overran):
        raise EvaluationError(f"an episode ran longer than the env's max_episode_steps={T}")

    keep = slice(0, episodes)
    host = {
        "observations": observations[keep].cpu().numpy(),
        "final_observations": final_observations[keep].cpu().numpy(),
        "actions": actions[keep].cpu().numpy(),
        "rewards": rewards[keep].cpu().numpy(),
        "lengths": lengths[keep].cpu().numpy(),
        "terminated": terminated[keep].cpu().numpy(),
        "truncated": truncated[keep].cpu().numpy(),
    }
    # Padding past each episode's length stays zero: a recorded row is written only while its episode runs.
    host["returns"] = host["rewards"].astype("float64").sum(axis=1)
    if not (host["lengths"] >= 1).all():
        raise EvaluationError("internal error: an episode was not recorded")
    _check_finite(host)
    return host


def _check_finite(host: dict[str, Any]) -> None:
    """Non-finite actions or physics must not turn into numbers in the results table. On CUDA the Ant does not
    check actions on the host (it replaces NaN by zero torque and counts it), so the recorded actions are checked
    here; a physics blow-up ends the episode with a non-finite observation and reward."""
    for name in ("actions", "observations", "rewards", "final_observations"):
        values = host[name]
        bad = ~np.isfinite(values.reshape(values.shape[0], -1)).all(axis=1)
        if bad.any():
            episodes = np.flatnonzero(bad).tolist()
            raise EvaluationError(
                f"non-finite {name} in episode(s) {episodes[:10]}{' ...' if len(episodes) > 10 else ''}"
                + (" (the policy's actions are NaN/Inf)" if name == "actions" else " (the simulation blew up)")
            )


def write_outputs(result: dict[str, Any], out_csv: Path, out_h5: Path) -> None:
    """Write the trajectories, then the per-episode table; on failure remove what this call wrote."""
    written: list[Path] = []
    try:
        _write_h5(result, Path(out_h5))
        written.append(Path(out_h5))
        io.write_csv(out_csv, _episode_table(result))
        written.append(Path(out_csv))
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        raise


def _episode_table(result: dict[str, Any]):
    import pandas as pd

    config: TrainConfig = result["config"]
    n = len(result["lengths"])
    return pd.DataFrame(
        {
            "task": [config.task_name] * n,
            "size": [config.size] * n,
            "dynamics": [config.dynamics_name] * n,
            "seed": [config.run.seed] * n,
            "episode": range(n),
            "eval_seed": [result["eval_seed"]] * n,
            "return": result["returns"],
            "length": result["lengths"],
            "terminated": result["terminated"],
            "truncated": result["truncated"],
        },
        columns=list(EPISODE_COLUMNS),
    )


def _write_h5(result: dict[str, Any], path: Path) -> None:
    import h5py

    config: TrainConfig = result["config"]
    meta = result["meta"]
    with io.atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        for name in ("observations", "actions", "rewards"):
            f.create_dataset(name, data=result[name], compression="gzip", compression_opts=4)
        f.create_dataset("final_observations", data=result["final_observations"])
        f.create_dataset("lengths", data=result["lengths"])
        f.create_dataset("terminated", data=result["terminated"])
        f.create_dataset("truncated", data=result["truncated"])
        f.create_dataset("returns", data=result["returns"])
        f.attrs.update(
            {
                "format": TRAJECTORY_FORMAT,
                "task": config.task_name,
                "size": config.size,
                "dynamics": config.dynamics_name,
                "seed": config.run.seed,
                "env_task": config.env.task,
                "eval_seed": result["eval_seed"],
                "num_envs": result["num_envs"],
                "episode_order": "episode = k * num_envs + env_index for the k-th episode of env env_index",
                "checkpoint": result["checkpoint"],
                "checkpoint_epoch": int(meta.get("epoch", -1)),
                "deterministic_action": True,
                "tf32": bool(config.run.tf32),
            }
        )


def _cell_name(config: TrainConfig) -> str:
    return f"{config.task_name}/{config.size}-{config.dynamics_name}/seed{config.run.seed}"
