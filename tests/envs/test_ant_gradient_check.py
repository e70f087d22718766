"""The gradient check on the real Ant: saved states from a recorded episode, a dedicated env of 2 H A rows placed in
each, and a (random) world model; the cosine must come out finite and in [-1, 1]."""

from __future__ import annotations

import math

import torch
from torch import nn

from flow_mbpo_pwm.config import DYNAMICS_PRESETS, SIZE_PRESETS
from flow_mbpo_pwm.diagnostics import EpisodeRecorder, JointStateReturns, gradient_cosines, start_steps
from flow_mbpo_pwm.envs import make
from flow_mbpo_pwm.models.world_model import WorldModel

H, STEPS = 2, 12


def test_ant_gradient_cosine_is_finite_and_bounded(ant_env):
    torch.manual_seed(0)
    model = WorldModel(ant_env.obs_dim, ant_env.act_dim, SIZE_PRESETS["tiny"], DYNAMICS_PRESETS["deterministic"])
    last = [m for m in model.reward_head.modules() if isinstance(m, nn.Linear)][-1]
    nn.init.normal_(last.weight, std=0.1)  # the head starts at zero: no gradient to compare

    recorder = EpisodeRecorder(STEPS, ant_env.num_envs, ant_env.obs_dim, ant_env.act_dim, torch.device("cpu"))
    starts = start_steps(STEPS, H, 2)
    obs = ant_env.reset()
    gen = torch.Generator().manual_seed(0)
    for t in range(STEPS):
        if t in starts:
            recorder.add_joint_state(t, t % ant_env.num_envs, *ant_env.joint_state())
        actions = torch.rand(ant_env.num_envs, ant_env.act_dim, generator=gen) * 2 - 1
        next_obs, reward, terminated, truncated, info = ant_env.step(actions)
        recorder.add(t, obs, actions, reward, info["final_obs"], terminated | truncated)
        obs = next_obs
    states = recorder.start_states(H)
    assert states is not None and states.actions.shape == (len(starts), H, ant_env.act_dim)
    for s, t in enumerate(starts):  # each start's window: the observations its recorded actions were taken from
        env = t % ant_env.num_envs
        assert torch.equal(states.obs_window[s], recorder.record.obs[t : t + H, env])
        assert torch.equal(states.obs_window[s, 0], states.obs[s])

    probe_env = make("ant", 2 * H * ant_env.act_dim, "cpu", seed=1, episode_length=H)
    agreements = gradient_cosines(model, states, JointStateReturns(probe_env, 0.99), 0.99, eps=0.01)
    assert len(agreements) == len(starts)
    for agreement in agreements:
        assert all(math.isfinite(c) and -1.0 <= c <= 1.0 for c in [agreement.cosine, *agreement.per_step]), agreement
        assert len(agreement.per_step) == H
