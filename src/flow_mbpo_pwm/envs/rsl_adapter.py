"""Our batched env (`flow_mbpo_pwm.envs`) behind rsl-rl's `VecEnv` interface (rsl-rl-lib 5.x), for the PPO reference.

A thin translation, no algorithm: observations become a `TensorDict` with one group, `"policy"` (the PPO config
maps both its "actor" and "critic" observation sets to it, so the rollout storage holds one copy); `dones` is
`terminated | truncated`; `extras["time_outs"]` marks truncations, which rsl-rl's PPO bootstraps with the value
(`r += gamma * V(s)`) instead of treating them as terminal. Everything stays on `env.device`; nothing is read on
the host (the env resets done rows itself and already returns their post-reset observations).

`episode_length_buf` counts each env's steps in its current episode (zeroed on done). It is informative only: the
env owns its own step counters, so rsl-rl's `init_at_random_ep_len` (which overwrites this buffer) cannot shorten
episodes here, and our reference loop never uses it.
"""

from __future__ import annotations

from typing import Any

import torch
from rsl_rl.env import VecEnv
from tensordict import TensorDict

POLICY_GROUP = "policy"


class RslVecEnv(VecEnv):
    def __init__(self, env: Any):
        self.env = env
        self.num_envs = int(env.num_envs)
        self.num_actions = int(env.act_dim)
        self.num_obs = int(env.obs_dim)
        self.max_episode_length = int(env.max_episode_steps)
        self.device = env.device
        self.cfg: dict[str, Any] = {"task": getattr(env, "task", type(env).__name__)}
        self.episode_length_buf = torch.zeros(self.num_envs, dtype=torch.long, device=self.device)
        self._obs = env.reset()

    def _wrap(self, obs: torch.Tensor) -> TensorDict:
        return TensorDict({POLICY_GROUP: obs}, batch_size=[self.num_envs], device=self.device)

    def get_observations(self) -> TensorDict:
        return self._wrap(self._obs)

    def set_observations(self, obs: torch.Tensor) -> None:
        """After `env.load_state_dict` (resume): continue from the restored state's observation."""
        self._obs = obs

    def step(self, actions: torch.Tensor) -> tuple[TensorDict, torch.Tensor, torch.Tensor, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(actions)
        dones = terminated | truncated
        self._obs = obs
        self.episode_length_buf = torch.where(dones, 0, self.episode_length_buf + 1)
        # A truncation that coincides with a termination is a termination: no bootstrapping.
        extras = {"time_outs": truncated & ~terminated, "final_obs": info["final_obs"], "terminated": terminated}
        return self._wrap(obs), reward, dones, extras
