"""Offline data into a replay buffer: streams go to env columns in groups, and no window crosses a seam."""

from __future__ import annotations

import torch

from flow_mbpo_pwm.data.datasets import fill_buffer
from flow_mbpo_pwm.data.replay import ReplayBuffer


def _streams(num_streams: int, steps: int) -> dict[str, torch.Tensor]:
    """Stream e, step t has observation value 100 e + t (so every stored row says where it came from)."""
    index = (100 * torch.arange(num_streams).unsqueeze(1) + torch.arange(steps)).float()
    return {
        "observations": index.unsqueeze(-1).repeat(1, 1, 2),
        "actions": torch.zeros(num_streams, steps, 1),
        "rewards": index,
        "next_observations": (index + 1).unsqueeze(-1).repeat(1, 1, 2),
        "terminated": torch.zeros(num_streams, steps, dtype=torch.bool),
        "truncated": torch.zeros(num_streams, steps, dtype=torch.bool),
    }


def test_streams_fill_columns_in_groups_with_the_short_group_completed_from_its_start():
    buffer = ReplayBuffer(capacity=4 * 30, num_envs=4, obs_dim=2, act_dim=1, horizon=3)
    assert fill_buffer(buffer, _streams(6, 5)) == 2 * 4 * 5
    rows = buffer.chronological()["obs"][..., 0]  # [T, columns]
    assert rows.shape == (10, 4)
    assert rows[:5].T.tolist() == [[100 * e + t for t in range(5)] for e in (0, 1, 2, 3)]
    assert rows[5:].T.tolist() == [[100 * e + t for t in range(5)] for e in (4, 5, 4, 5)]


def test_no_sampled_window_crosses_from_one_stream_into_the_next():
    buffer = ReplayBuffer(capacity=2 * 40, num_envs=2, obs_dim=2, act_dim=1, horizon=3)
    fill_buffer(buffer, _streams(4, 6))
    batch = buffer.sample(512, torch.Generator().manual_seed(0))
    assert batch.valid.all()
    stream = (batch.obs[..., 0] // 100).long()
    assert (stream == stream[:, :1]).all()  # every window lies inside one stream
    truncated = buffer.chronological()["truncated"]
    assert truncated[5].all() and truncated[11].all() and truncated.sum() == 4  # each stream's last step
