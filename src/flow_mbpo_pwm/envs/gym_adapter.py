"""Any Gymnasium environment id behind the batched interface of `flow_mbpo_pwm.envs` (CPU simulation).

`num_envs` independent copies are stepped in a Python loop (Gymnasium's own SyncVectorEnv does the same); done
copies are reset individually and their pre-reset observation is returned in `info["final_obs"]`. Actions in
[-1, 1] are mapped linearly onto the action space's [low, high]. Tensors are returned on `device` (the copy to a
GPU is unavoidable: these simulators run on the host).

Seeding: copy i is first reset with seed `SeedSequence(seed).generate_state(num_envs)[i]`; later resets continue
its own `np_random` stream, so a seed fixes the whole trajectory. A list of S seeds (a stack of seeds) makes S
blocks of `num_envs / S` copies, block s seeded as a lone env of that many copies with seed s.

Exact resume (`state_dict`): for MuJoCo-based environments it saves `mj_getState(..., mjSTATE_INTEGRATION)` (the
state MuJoCo documents as sufficient for bitwise-identical integration: qpos, qvel, act, warm start, time, ...),
the `np_random` state and the step counters, so a restore continues bitwise. For other environments it saves the
`unwrapped.state` array if there is one (Gymnasium's classic-control tasks keep their whole dynamic state there)
plus RNG and counters; that is best-effort (it misses any other attribute an env keeps). Environments with neither
raise NotImplementedError from `state_dict()`.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import torch

from .validation import check_action_shape, check_actions_finite, check_num_envs, seed_blocks


def _import_gymnasium():
    try:
        import gymnasium
    except ImportError as err:  # optional extra
        raise ImportError(
            "Gymnasium tasks ('gym:<id>') need the optional extra: pip install 'flow-mbpo-pwm[gym]' (gymnasium[mujoco])"
        ) from err
    return gymnasium


def _time_limit(env):
    import gymnasium

    w = env
    while isinstance(w, gymnasium.Wrapper):
        if isinstance(w, gymnasium.wrappers.TimeLimit):
            return w
        w = w.env
    return None


class GymVectorEnv:
    """Batched wrapper around `num_envs` copies of one Gymnasium environment."""

    def __init__(
        self,
        env_id: str,
        num_envs: int,
        device: str | torch.device = "cpu",
        seed: int = 0,
        *,
        episode_length: int | None = None,
        check_actions: bool = True,
    ):
        gym = _import_gymnasium()
        check_num_envs(num_envs)
        block_seeds, block = seed_blocks(seed, num_envs)
        try:
            spec = gym.spec(env_id)
        except gym.error.Error as err:
            raise ValueError(f"unknown Gymnasium environment id '{env_id}' (task 'gym:{env_id}'): {err}") from err
        self.task = f"gym:{env_id}"
        self.env_id = env_id
        self.max_episode_steps = int(episode_length or spec.max_episode_steps or 1000)
        self.envs = [
            gym.make(env_id, max_episode_steps=self.max_episode_steps, disable_env_checker=True)
            for _ in range(num_envs)
        ]
        act_space, obs_space = self.envs[0].action_space, self.envs[0].observation_space
        if not isinstance(act_space, gym.spaces.Box) or not isinstance(obs_space, gym.spaces.Box):
            raise ValueError(f"'{env_id}' needs Box observation and action spaces, got {obs_space} / {act_space}")
        if not (np.all(np.isfinite(act_space.low)) and np.all(np.isfinite(act_space.high))):
            raise ValueError(f"'{env_id}' has an unbounded action space; actions in [-1, 1] cannot be mapped")
        self.num_envs = num_envs
        self.device = torch.device(device)
        self.seed = list(seed) if isinstance(seed, list | tuple) else seed
        self.obs_dim = int(np.prod(obs_space.shape))
        self.act_dim = int(np.prod(act_space.shape))
        self.check_actions = bool(check_actions)
        self._low = act_space.low.astype(np.float64).reshape(-1)
        self._high = act_space.high.astype(np.float64).reshape(-1)
        self._act_shape = act_space.shape
        self._seeds = [int(s) for b in block_seeds for s in np.random.SeedSequence(b).generate_state(block)]
        self._seeded = False
        self._obs = np.zeros((num_envs, self.obs_dim), dtype=np.float32)
        self._episode_step = np.zeros(num_envs, dtype=np.int64)
        self.nonfinite_actions = torch.zeros(1, dtype=torch.int32, device=self.device)
        self.physics_failures = torch.zeros(1, dtype=torch.int32, device=self.device)

    def _reset_one(self, i: int) -> np.ndarray:
        seed = None if self._seeded else self._seeds[i]
        obs, _ = self.envs[i].reset(seed=seed)
        self._episode_step[i] = 0
        return np.asarray(obs, dtype=np.float32).reshape(-1)

    def _to_torch(self, x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.array(x)).to(self.device)

    def reset(self) -> torch.Tensor:
        for i in range(self.num_envs):
            self._obs[i] = self._reset_one(i)
        self._seeded = True
        return self._to_torch(self._obs)

    def step(self, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, dict]:
        check_action_shape(actions, self.num_envs, self.act_dim)
        if self.check_actions:
            check_actions_finite(actions)
        if not self._seeded:
            raise RuntimeError("call reset() before step()")
        a = actions.detach().to("cpu", torch.float64).numpy()
        bad = ~np.isfinite(a)
        if bad.any():  # only reachable with check_actions=False: zero the entry, count it, never step NaN
            self.nonfinite_actions += int(bad.sum())
            a = np.where(bad, 0.0, a)
        a = np.clip(a, -1.0, 1.0)
        scaled = self._low + (a + 1.0) * 0.5 * (self._high - self._low)
        reward = np.zeros(self.num_envs, dtype=np.float32)
        terminated = np.zeros(self.num_envs, dtype=bool)
        truncated = np.zeros(self.num_envs, dtype=bool)
        final_obs = np.empty_like(self._obs)
        for i, env in enumerate(self.envs):
            obs, r, term, trunc, _ = env.step(scaled[i].reshape(self._act_shape).astype(np.float32))
            self._episode_step[i] += 1
            obs = np.asarray(obs, dtype=np.float32).reshape(-1)
            final_obs[i] = obs
            reward[i] = r
            terminated[i] = term
            truncated[i] = (trunc or self._episode_step[i] >= self.max_episode_steps) and not term
            self._obs[i] = self._reset_one(i) if (term or truncated[i]) else obs
        info = {
            "final_obs": self._to_torch(final_obs),
            "nonfinite_actions": self.nonfinite_actions,
            "physics_failures": self.physics_failures,
        }
        return (
            self._to_torch(self._obs),
            self._to_torch(reward),
            self._to_torch(terminated),
            self._to_torch(truncated),
            info,
        )

    def current_obs(self) -> torch.Tensor:
        """The observation of the current state (restored by load_state_dict)."""
        return self._to_torch(self._obs)

    def raise_if_nonfinite_actions(self) -> None:
        count = int(self.nonfinite_actions.item())
        if count:
            raise ValueError(f"{count} non-finite action entries were received (replaced by 0)")

    # ------------------------------------------------------------------------------------------------------
    # Resume (see module docstring for what is exact and what is best-effort)
    # ------------------------------------------------------------------------------------------------------

    def _sim_state(self, env) -> np.ndarray:
        u = env.unwrapped
        if hasattr(u, "model") and hasattr(u, "data"):
            import mujoco

            spec = mujoco.mjtState.mjSTATE_INTEGRATION
            state = np.empty(mujoco.mj_stateSize(u.model, spec), dtype=np.float64)
            mujoco.mj_getState(u.model, u.data, state, spec)
            return state
        if isinstance(getattr(u, "state", None), np.ndarray | tuple | list):
            return np.asarray(u.state, dtype=np.float64).reshape(-1)
        raise NotImplementedError(
            f"state_dict() cannot capture the simulation state of '{self.env_id}': it is neither MuJoCo-based "
            "nor keeps its state in `unwrapped.state`; exact resume is not possible for this task"
        )

    def _set_sim_state(self, env, state: np.ndarray) -> None:
        u = env.unwrapped
        if hasattr(u, "model") and hasattr(u, "data"):
            import mujoco

            mujoco.mj_setState(u.model, u.data, state, mujoco.mjtState.mjSTATE_INTEGRATION)
            return
        old = np.asarray(u.state)
        u.state = state.astype(old.dtype).reshape(old.shape)

    def state_dict(self) -> dict[str, Any]:
        sims = np.stack([self._sim_state(env) for env in self.envs])
        return {
            "sim_state": torch.from_numpy(sims),
            "obs": torch.from_numpy(self._obs.copy()),
            "episode_step": torch.from_numpy(self._episode_step.copy()),
            "rng": json.dumps([env.unwrapped.np_random.bit_generator.state for env in self.envs]),
            "nonfinite_actions": self.nonfinite_actions.clone(),
            "meta": {
                "task": self.task,
                "num_envs": self.num_envs,
                "seed": self.seed,
                "seeded": self._seeded,
                "max_episode_steps": self.max_episode_steps,
            },
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        meta = state.get("meta")
        if not isinstance(meta, dict):
            raise ValueError("state_dict has no 'meta' entry; not a state_dict of this env")
        for key in ("task", "num_envs", "seed"):
            if meta.get(key) != getattr(self, key):
                raise ValueError(
                    f"state_dict mismatch on '{key}': saved {meta.get(key)!r}, this env has {getattr(self, key)!r}"
                )
        rngs = json.loads(state["rng"])
        sims = state["sim_state"].numpy()
        for i, env in enumerate(self.envs):
            if not self._seeded and meta["seeded"]:
                env.reset(seed=self._seeds[i])  # initialise the env's internals before overwriting them
            self._set_sim_state(env, sims[i])
            env.unwrapped.np_random.bit_generator.state = rngs[i]
            limit = _time_limit(env)
            if limit is not None:
                limit._elapsed_steps = int(state["episode_step"][i])
        self._obs[:] = state["obs"].numpy()
        self._episode_step[:] = state["episode_step"].numpy()
        self._seeded = bool(meta["seeded"])
        self.nonfinite_actions.copy_(state["nonfinite_actions"])
