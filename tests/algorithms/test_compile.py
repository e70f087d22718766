"""`run.compile`: the world-model loss compiled (torch.compile, inductor) trains as the eager code does."""

from __future__ import annotations

from dataclasses import replace

import torch
from pwm_helpers import small_config

from flow_mbpo_pwm.algorithms.pwm import PWM
from flow_mbpo_pwm.data.replay import ReplayBuffer


def filled_buffer(seed: int) -> ReplayBuffer:
    buffer = ReplayBuffer(400, 4, 4, 1, "cpu", horizon=2)
    g = torch.Generator().manual_seed(seed + 1)
    for t in range(40):
        done = torch.full((4,), t % 13 == 12)
        shapes = ((4, 4), (4, 1), (4,), (4, 4))
        buffer.add(*(torch.randn(s, generator=g) for s in shapes), done, done)
    return buffer


def test_compiled_world_model_updates_equal_eager_ones_for_a_stack_of_flow_seeds():
    """Two world-model updates of a stack of two flow seeds (Euler, K = 2: a small graph to compile on the CPU):
    compiled and eager agree in losses and parameters to float32 rounding (inductor fuses and reorders the
    elementwise arithmetic, so not bitwise)."""
    config = small_config("flow", horizon=2, dynamics_overrides={"integrator": "euler", "substeps": 2})
    agents = [PWM(4, 1, replace(config, run=replace(config.run, compile=c)), "cpu", seeds=(0, 1)) for c in (0, 1)]
    buffers = [filled_buffer(seed) for seed in (0, 1)]
    torch._dynamo.reset()
    metrics = [agent.world_model_steps(buffers, 2) for agent in agents]
    for key in ("wm_loss", "wm_dynamics_loss", "wm_reward_loss", "wm_grad_norm"):
        torch.testing.assert_close(metrics[1][key], metrics[0][key], rtol=1e-4, atol=1e-6)
    eager, compiled = (dict(agent.stacked) for agent in agents)
    for name, value in eager.items():
        torch.testing.assert_close(compiled[name], value, rtol=1e-4, atol=1e-6, msg=name)
    # Two graphs, without breaks: one rollout step (compiled once, run for every step) and the loss terms.
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 2
