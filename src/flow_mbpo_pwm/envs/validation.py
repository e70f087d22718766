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
