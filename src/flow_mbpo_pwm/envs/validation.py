"""Input checks shared by every env backend: clear errors before any state is touched."""

from __future__ import annotations

import torch


def check_action_shape(actions: object, num_envs: int, act_dim: int) -> None:
    if not isinstance(actions, torch.Tensor):
        raise ValueError(f"actions must be a torch.Tensor of shape ({num_envs}, {act_dim}), got {type(actions)}")
    if tuple(actions.shape) != (num_envs, act_dim):
        raise ValueError(
            f"actions must have shape ({num_envs}, {act_dim}) = (num_envs, act_dim), got {tuple(actions.shape)}"
        )
    if not actions.dtype.is_floating_point:
        raise ValueError(f"actions must be a floating-point tensor, got dtype {actions.dtype}")


def check_actions_finite(actions: torch.Tensor) -> None:
    """Host-side NaN/Inf check (one device sync on CUDA)."""
    finite = torch.isfinite(actions)
    if not bool(finite.all()):
        bad_rows = (~finite).any(dim=1).nonzero().flatten().tolist()
        raise ValueError(
            f"actions contain NaN or Inf in env rows {bad_rows[:10]}"
            f"{' ...' if len(bad_rows) > 10 else ''}; the environment state was not changed"
        )


def check_num_envs(num_envs: object) -> int:
    if not isinstance(num_envs, int) or isinstance(num_envs, bool) or num_envs < 1:
        raise ValueError(f"num_envs must be an integer >= 1, got {num_envs!r}")
    return num_envs


def check_episode_length(episode_length: object) -> int:
    if not isinstance(episode_length, int) or isinstance(episode_length, bool) or episode_length < 1:
        raise ValueError(f"episode_length must be an integer >= 1, got {episode_length!r}")
    return episode_length


def seed_blocks(seed: object, num_envs: int) -> tuple[list[int], int]:
    """`(block seeds, block size)` of an env's `seed`: an int seeds all `num_envs` copies as one block; a sequence of
    S seeds (a stack of seeds, algorithms/pwm.py) splits them into S equal blocks, block s drawing exactly what a
    lone env of `num_envs / S` copies seeded `seed[s]` draws."""

    def check(value: object) -> int:
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ValueError(f"seed must be a non-negative int or a list of them, got {seed!r}")
        return value

    if isinstance(seed, list | tuple):
        seeds = [check(s) for s in seed]
        if not seeds or num_envs % len(seeds):
            raise ValueError(f"{num_envs} envs cannot be split into {len(seeds)} equal blocks of seeds {seeds}")
        return seeds, num_envs // len(seeds)
    return [check(seed)], num_envs
