import pytest
import torch

from flow_mbpo_pwm.data.replay import ReplayBuffer

OBS, ACT = 3, 2


def fill(buffer: ReplayBuffer, steps: int, done_prob: float, seed: int) -> None:
    """Random episodes: obs[0] carries (env, global step) so every transition is identifiable; next_obs of a done
    step is a distinct 'terminal' observation (what info["final_obs"] holds), marked by obs[2] = -1."""
    g = torch.Generator().manual_seed(seed)
    n = buffer.num_envs
    for t in range(steps):
        env_ids = torch.arange(n, dtype=torch.float32)
        obs = torch.stack([env_ids, torch.full((n,), float(t)), torch.zeros(n)], -1)
        done = torch.rand(n, generator=g) < done_prob
        terminated = done & (torch.rand(n, generator=g) < 0.5)
        truncated = done & ~terminated
        next_obs = torch.stack([env_ids, torch.full((n,), float(t + 1)), torch.where(done, -1.0, 0.0)], -1)
        action = torch.stack([env_ids, torch.full((n,), float(t))], -1)
        buffer.add(obs, action, torch.full((n,), float(t)), next_obs, terminated, truncated)


@pytest.mark.parametrize("seed", range(6))
def test_sampled_windows_never_cross_an_episode_boundary(seed):
    horizon = 5
    buffer = ReplayBuffer(capacity=4 * 40, num_envs=4, obs_dim=OBS, act_dim=ACT, horizon=horizon)
    fill(buffer, steps=97, done_prob=0.12, seed=seed)  # wraps the 40-slot ring more than twice
    batch = buffer.sample(512, torch.Generator().manual_seed(seed))
    assert batch.obs.shape == (512, horizon + 1, OBS) and batch.action.shape == (512, horizon, ACT)
    assert batch.valid.all()
    # One env per window, consecutive steps, actions and rewards aligned with o_0 .. o_{H-1}.
    assert (batch.obs[:, :, 0] == batch.obs[:, :1, 0]).all()
    steps = batch.obs[:, :, 1]
    assert (steps[:, 1:] - steps[:, :-1] == 1).all()
    assert torch.equal(batch.action[:, :, 1], steps[:, :-1]) and torch.equal(batch.reward, steps[:, :-1])
    # No episode ends before the window's last transition; o_1..o_{H-1} are never terminal observations.
    ended = batch.terminated | batch.truncated
    assert not ended[:, :-1].any()
    assert (batch.obs[:, 1:-1, 2] == 0).all()
    # Only data still in the ring: the oldest of the 40 slots holds global step 97 - 40.
    assert (steps[:, 0] >= 97 - 40).all()
    # A window ending an episode carries the pre-reset terminal observation last.
    assert torch.equal(batch.obs[:, -1, 2] == -1, ended[:, -1])
    assert ended[:, -1].any()


def test_every_valid_start_is_sampled_and_no_invalid_one():
    buffer = ReplayBuffer(capacity=2 * 12, num_envs=2, obs_dim=OBS, act_dim=ACT, horizon=3)
    fill(buffer, steps=30, done_prob=0.25, seed=11)
    batch = buffer.sample(4000, torch.Generator().manual_seed(0))
    sampled = {(int(e), int(s)) for e, s in zip(batch.obs[:, 0, 0], batch.obs[:, 0, 1], strict=True)}
    # Brute force over the stored data: starts whose 3 transitions are contiguous and end no episode early.
    data = buffer.chronological()
    expected = set()
    for env in range(2):
        for t in range(data["obs"].shape[0] - 2):
            ends = data["terminated"][t : t + 2, env] | data["truncated"][t : t + 2, env]
            if not ends.any():
                expected.add((env, int(data["obs"][t, env, 1])))
    assert sampled == expected


def test_before_any_full_window_rows_are_flagged_invalid_and_ready_is_false():
    buffer = ReplayBuffer(capacity=2 * 10, num_envs=2, obs_dim=OBS, act_dim=ACT, horizon=4)
    fill(buffer, steps=3, done_prob=0.0, seed=0)
    assert not buffer.ready()
    assert not buffer.sample(8).valid.any()
    fill(buffer, steps=1, done_prob=1.0, seed=0)  # the 4th step completes a window and ends the episodes
    assert buffer.has_finished_episode() and buffer.ready()
    assert len(buffer) == 8


def test_state_dict_round_trip_continues_identically():
    a = ReplayBuffer(capacity=3 * 20, num_envs=3, obs_dim=OBS, act_dim=ACT, horizon=4)
    fill(a, steps=13, done_prob=0.2, seed=3)
    b = ReplayBuffer(capacity=3 * 20, num_envs=3, obs_dim=OBS, act_dim=ACT, horizon=4)
    b.load_state_dict(a.state_dict())
    for buf in (a, b):
        fill(buf, steps=30, done_prob=0.2, seed=4)
    sa, sb = a.sample(64, torch.Generator().manual_seed(5)), b.sample(64, torch.Generator().manual_seed(5))
    for x, y in zip(sa, sb, strict=True):
        assert torch.equal(x, y)
    with pytest.raises(ValueError, match="horizon"):
        ReplayBuffer(capacity=3 * 20, num_envs=3, obs_dim=OBS, act_dim=ACT, horizon=5).load_state_dict(a.state_dict())


def test_bad_shapes_and_capacity_are_refused():
    with pytest.raises(ValueError, match="horizon \\+ 1"):
        ReplayBuffer(capacity=10, num_envs=4, obs_dim=OBS, act_dim=ACT, horizon=16)
    buffer = ReplayBuffer(capacity=100, num_envs=2, obs_dim=OBS, act_dim=ACT, horizon=2)
    with pytest.raises(ValueError, match="next_obs"):
        z = torch.zeros(2)
        buffer.add(torch.zeros(2, OBS), torch.zeros(2, ACT), z, torch.zeros(3, OBS), z.bool(), z.bool())
