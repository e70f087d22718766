"""Batched environments behind one Gymnasium-like interface (docs/contracts.md, "Environments").

    env = make("ant", num_envs=128, device="cuda", seed=0)          # Newton Ant (Warp kernels, CUDA graph)
    env = make("gym:InvertedPendulum-v5", num_envs=8, device="cpu", seed=0)   # any Gymnasium id
    obs = env.reset()                                                # [N, obs_dim] float32
    obs, reward, terminated, truncated, info = env.step(actions)     # actions [N, act_dim], clipped to [-1, 1]

Done envs (terminated | truncated) are reset individually inside `step`; `obs` holds their post-reset
observation and `info["final_obs"]` the pre-reset one (equal to `obs` for the other rows). Every tensor lives on
`env.device`. Attributes: `num_envs, obs_dim, act_dim, device, max_episode_steps`. `state_dict()` /
`load_state_dict()` continue bitwise (Ant; Gymnasium backends: see `gym_adapter`); after a restore,
`current_obs()` returns the observation to continue from (no reset needed).

NaN/Inf actions: with `env.check_actions` True (default on CPU) `step` raises ValueError before touching
anything. With it False (default for the Ant on CUDA, so the hot path has no host sync) a non-finite entry is
applied as 0 and counted in the device tensor `env.nonfinite_actions`; `env.raise_if_nonfinite_actions()` syncs
and raises. Either way the simulation state is never corrupted. `env.physics_failures` counts envs reset because
their state became non-finite (never seen with the calibrated Ant).

Overrides accepted by `make`: `episode_length` for every task; for the Ant also `solver`
("semi_implicit" | "featherstone"), `check_actions`, `use_cuda_graph`, `deterministic` and the calibration constants of
`AntCalibration`; for Gymnasium tasks also `check_actions`. An unknown override raises ValueError naming it.
"""

from __future__ import annotations

from typing import Any

import torch

from .validation import check_episode_length, check_num_envs

GYM_PREFIX = "gym:"
TASKS = ("ant", "gym:<Gymnasium id>")


def make(task: str, num_envs: int, device: str | torch.device, seed: int | list[int], **overrides: Any):
    """Build the batched env `task` with `num_envs` copies on `device`, seeded by `seed` (a list of S seeds: S
    equal blocks of copies, block s seeded as a lone env of `num_envs / S` copies with seed s)."""
    check_num_envs(num_envs)
    if not isinstance(task, str):
        raise ValueError(f"task must be a string, got {task!r}")
    if "episode_length" in overrides:
        check_episode_length(overrides["episode_length"])
    if task == "ant":
        return _make_ant(num_envs, device, seed, overrides)
    if task.startswith(GYM_PREFIX) and len(task) > len(GYM_PREFIX):
        from .gym_adapter import GymVectorEnv

        allowed = {"episode_length", "check_actions"}
        _reject_unknown(task, overrides, allowed)
        return GymVectorEnv(task[len(GYM_PREFIX) :], num_envs, device, seed, **overrides)
    raise ValueError(f"unknown task '{task}'; known tasks: {', '.join(TASKS)} (e.g. 'gym:InvertedPendulum-v5')")


def make_from_config(
    env_config, device: str | torch.device, seed: int | list[int], num_envs: int | None = None, **overrides: Any
):
    """`make` from an `EnvConfig` (task, num_envs, episode_length, solver); `num_envs` overrides the config's."""
    n = env_config.num_envs if num_envs is None else num_envs
    overrides = {"episode_length": env_config.episode_length, **overrides}
    calibration = getattr(env_config, "calibration", "newton")
    if env_config.task == "ant":
        overrides.setdefault("solver", env_config.solver)
        if calibration != "newton":
            from .ant import CALIBRATION_PRESETS

            overrides = {**CALIBRATION_PRESETS[calibration], **overrides}
    elif env_config.solver != "semi_implicit" or calibration != "newton":
        raise ValueError(
            f"env.solver / env.calibration only apply to the Ant, not to '{env_config.task}' "
            f"(got solver={env_config.solver!r}, calibration={calibration!r})"
        )
    return make(env_config.task, n, device, seed, **overrides)


def make_for_seeds(
    env_config, device: str | torch.device, seeds: list[int] | tuple[int, ...], per_seed: int | None = None
):
    """The one batched env of a stack of seeds: `per_seed` copies per seed (default `env_config.num_envs`), block s
    drawing exactly as a lone env with seed s (one seed: that seed's lone env)."""
    seed = seeds[0] if len(seeds) == 1 else list(seeds)
    n = env_config.num_envs if per_seed is None else per_seed
    return make_from_config(env_config, device, seed=seed, num_envs=n * len(seeds))


def _reject_unknown(task: str, overrides: dict[str, Any], allowed: set[str] | frozenset[str]) -> None:
    unknown = sorted(set(overrides) - set(allowed))
    if unknown:
        raise ValueError(f"unknown override(s) {unknown} for task '{task}'; allowed: {sorted(allowed)}")


def _make_ant(num_envs: int, device, seed: int | list[int], overrides: dict[str, Any]):
    import dataclasses

    from .ant import CALIBRATION_FIELDS, AntCalibration, AntEnv

    env_keys = {"episode_length", "solver", "check_actions", "use_cuda_graph", "deterministic"}
    _reject_unknown("ant", overrides, env_keys | CALIBRATION_FIELDS)
    cal_overrides = {k: v for k, v in overrides.items() if k in CALIBRATION_FIELDS}
    env_kwargs = {k: v for k, v in overrides.items() if k in env_keys}
    calibration = dataclasses.replace(AntCalibration(), **cal_overrides)
    return AntEnv(num_envs, device, seed, calibration=calibration, **env_kwargs)
