"""Replay buffer on the training device: one ring of time slots, each holding one transition of every env.

Stored per env step for all N envs: `(obs, action, reward, next_obs, terminated, truncated)`. For a finished
episode `next_obs` is the pre-reset terminal observation (the env's `info["final_obs"]`), so the last transition of
an episode is as usable as any other.

Sampling returns sub-trajectories of `horizon` transitions (`horizon + 1` observations) of one env that never cross
an episode boundary: an episode may end only at the window's last transition. Validity of every window start is
kept incrementally in a `[slots, N]` mask (O(N * horizon) per `add`), and `sample` draws uniformly among the valid
starts by inverse CDF — no host reads, static shapes, RNG from a torch generator. Until a valid window exists the
sampled rows are flagged `valid = False` (callers mask them out; `ready()` tells the host when sampling is useful).

The write position and counters are device tensors so that `add` can later be captured in a CUDA graph; a host
mirror (`num_added`) serves bookkeeping (sizes, export, state_dict) on the host.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch


class ReplayBatch(NamedTuple):
    obs: torch.Tensor  # [B, H+1, obs_dim]: o_0 .. o_H
    action: torch.Tensor  # [B, H, act_dim]: a_0 .. a_{H-1}
    reward: torch.Tensor  # [B, H]: raw env rewards r_0 .. r_{H-1}
    terminated: torch.Tensor  # [B, H] bool
    truncated: torch.Tensor  # [B, H] bool
    valid: torch.Tensor  # [B] bool: the row is a real within-episode window (False only before any exists)


FIELDS = ("obs", "action", "reward", "next_obs", "terminated", "truncated")


class ReplayBuffer:
    def __init__(
        self,
        capacity: int,
        num_envs: int,
        obs_dim: int,
        act_dim: int,
        device: str | torch.device = "cpu",
        horizon: int = 16,
    ):
        if num_envs < 1 or obs_dim < 1 or act_dim < 1 or horizon < 1:
            raise ValueError(
                f"ReplayBuffer: num_envs ({num_envs}), obs_dim ({obs_dim}), act_dim ({act_dim}) and "
                f"horizon ({horizon}) must all be >= 1"
            )
        slots = capacity // num_envs
        if slots < horizon + 1:
            raise ValueError(
                f"ReplayBuffer: capacity {capacity} holds {slots} steps per env for {num_envs} envs; "
                f"need at least horizon + 1 = {horizon + 1}"
            )
        self.capacity, self.slots, self.num_envs = slots * num_envs, slots, num_envs
        self.obs_dim, self.act_dim, self.horizon = obs_dim, act_dim, horizon
        self.device = torch.device(device)
        d = self.device
        self.obs = torch.zeros(slots, num_envs, obs_dim, device=d)
        self.action = torch.zeros(slots, num_envs, act_dim, device=d)
        self.reward = torch.zeros(slots, num_envs, device=d)
        self.next_obs = torch.zeros(slots, num_envs, obs_dim, device=d)
        self.terminated = torch.zeros(slots, num_envs, dtype=torch.bool, device=d)
        self.truncated = torch.zeros(slots, num_envs, dtype=torch.bool, device=d)
        self.valid_start = torch.zeros(slots, num_envs, dtype=torch.bool, device=d)
        self.position = torch.zeros((), dtype=torch.long, device=d)  # next slot to write
        self.steps = torch.zeros((), dtype=torch.long, device=d)  # adds so far
        self.finished_any = torch.zeros((), dtype=torch.bool, device=d)  # some episode has ended
        self._window = torch.arange(horizon, device=d)
        self.num_added = 0  # host mirror of `steps`

    def __len__(self) -> int:
        """Transitions stored (all envs)."""
        return min(self.num_added, self.slots) * self.num_envs

    # ------------------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def add(
        self,
        obs: torch.Tensor,
        action: torch.Tensor,
        reward: torch.Tensor,
        next_obs: torch.Tensor,
        terminated: torch.Tensor,
        truncated: torch.Tensor,
    ) -> None:
        """Store one env step of all envs. `next_obs` must be the pre-reset observation for done envs."""
        n = self.num_envs
        expected = {
            "obs": (n, self.obs_dim),
            "action": (n, self.act_dim),
            "reward": (n,),
            "next_obs": (n, self.obs_dim),
            "terminated": (n,),
            "truncated": (n,),
        }
        values = {
            "obs": obs,
            "action": action,
            "reward": reward,
            "next_obs": next_obs,
            "terminated": terminated,
            "truncated": truncated,
        }
        for name, shape in expected.items():
            if tuple(values[name].shape) != shape:
                raise ValueError(f"ReplayBuffer.add: {name} has shape {tuple(values[name].shape)}, expected {shape}")
        slot = self.position.view(1)
        self.obs.index_copy_(0, slot, obs.unsqueeze(0).to(self.obs.dtype))
        self.action.index_copy_(0, slot, action.unsqueeze(0).to(self.action.dtype))
        self.reward.index_copy_(0, slot, reward.unsqueeze(0).to(self.reward.dtype))
        self.next_obs.index_copy_(0, slot, next_obs.unsqueeze(0).to(self.next_obs.dtype))
        self.terminated.index_copy_(0, slot, terminated.unsqueeze(0).bool())
        self.truncated.index_copy_(0, slot, truncated.unsqueeze(0).bool())
        self.finished_any |= (terminated | truncated).any()
        self.steps += 1
        # The start at this slot now begins new, incomplete data; the start H-1 slots back has just completed.
        self.valid_start.index_fill_(0, slot, False)
        start = (self.position - (self.horizon - 1)) % self.slots
        window = (start + self._window[:-1]) % self.slots  # all but the last transition must not end an episode
        complete = self.steps >= self.horizon
        ended = self.terminated.index_select(0, window) | self.truncated.index_select(0, window)
        ok = complete & ~ended.any(0)
        self.valid_start.index_copy_(0, start.view(1), ok.unsqueeze(0))
        self.position.copy_((self.position + 1) % self.slots)
        self.num_added += 1

    # ------------------------------------------------------------------------------------------------------------
    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> ReplayBatch:
        """`batch_size` windows drawn uniformly (with replacement) among all valid starts."""
        flat = self.valid_start.reshape(-1)
        cdf = flat.long().cumsum(0)
        total = cdf[-1]
        u = torch.rand(batch_size, generator=generator, dtype=torch.float64, device=self.device)
        rank = (u * total).long().clamp(max=(total - 1).clamp(min=0))
        index = torch.searchsorted(cdf, rank, right=True).clamp(max=flat.numel() - 1)
        valid = flat.index_select(0, index)
        start, env = index // self.num_envs, index % self.num_envs
        times = (start.unsqueeze(1) + self._window) % self.slots  # [B, H]
        envs = env.unsqueeze(1).expand_as(times)
        obs = torch.cat([self.obs[start, env].unsqueeze(1), self.next_obs[times, envs]], dim=1)
        return ReplayBatch(
            obs=obs,
            action=self.action[times, envs],
            reward=self.reward[times, envs],
            terminated=self.terminated[times, envs],
            truncated=self.truncated[times, envs],
            valid=valid,
        )

    def ready(self) -> bool:
        """Host read (a device sync): an episode has finished and a full within-episode window exists."""
        return bool((self.finished_any & self.valid_start.any()).item())

    def has_finished_episode(self) -> bool:
        """Host read (a device sync)."""
        return bool(self.finished_any.item())

    def observations(self) -> torch.Tensor:
        """Every stored observation `[n, obs_dim]` (a view, in slot order)."""
        return self.obs[: min(self.num_added, self.slots)].reshape(-1, self.obs_dim)

    def chronological(self) -> dict[str, torch.Tensor]:
        """Stored transitions oldest first, each field `[T, N, ...]` (T = steps stored per env); for export."""
        filled = min(self.num_added, self.slots)
        order = (torch.arange(filled, device=self.device) + (self.num_added - filled)) % self.slots
        return {name: getattr(self, name).index_select(0, order) for name in FIELDS}

    # ------------------------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Only the filled slots are saved (a young 1M-transition buffer saves small)."""
        filled = min(self.num_added, self.slots)
        state: dict[str, Any] = {name: getattr(self, name)[:filled].clone() for name in FIELDS}
        state.update(
            valid_start=self.valid_start[:filled].clone(),
            position=self.position.clone(),
            steps=self.steps.clone(),
            finished_any=self.finished_any.clone(),
            num_added=self.num_added,
            slots=self.slots,
            num_envs=self.num_envs,
            obs_dim=self.obs_dim,
            act_dim=self.act_dim,
            horizon=self.horizon,
        )
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key in ("slots", "num_envs", "obs_dim", "act_dim", "horizon"):
            if int(state[key]) != getattr(self, key):
                raise ValueError(
                    f"ReplayBuffer.load_state_dict: saved {key}={state[key]} but this buffer has "
                    f"{key}={getattr(self, key)}"
                )
        filled = min(int(state["num_added"]), self.slots)
        for name in (*FIELDS, "valid_start"):
            getattr(self, name)[:filled].copy_(state[name])
            getattr(self, name)[filled:].zero_()
        self.position.copy_(state["position"])
        self.steps.copy_(state["steps"])
        self.finished_any.copy_(state["finished_any"])
        self.num_added = int(state["num_added"])
