"""`run.compile`: the world-model loss, the imagination and the critic loss compiled (torch.compile, inductor) train as
the eager code does."""

from __future__ import annotations

from dataclasses import replace

import torch
from pwm_helpers import small_config

from flow_mbpo_pwm.algorithms.pwm import PWM
from flow_mbpo_pwm.config import with_overrides
from flow_mbpo_pwm.data.replay import ReplayBuffer
from flow_mbpo_pwm.envs import make


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
    torch._dynamo.utils.counters.clear()
    metrics = [agent.world_model_steps(buffers, 2) for agent in agents]
    for key in ("wm_loss", "wm_dynamics_loss", "wm_reward_loss", "wm_grad_norm"):
        torch.testing.assert_close(metrics[1][key], metrics[0][key], rtol=1e-4, atol=1e-6)
    eager, compiled = (dict(agent.stacked) for agent in agents)
    for name, value in eager.items():
        torch.testing.assert_close(compiled[name], value, rtol=1e-4, atol=1e-6, msg=name)
    # Two graphs, without breaks: one rollout step (compiled once, run for every step) and the loss terms.
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 2


def test_compiled_epochs_equal_eager_ones_on_the_ant():
    """Whole epochs of a stack of two flow seeds on the real Ant: collect-only epochs, the warm-up, then training
    epochs (imagination with the actor step, critic, world model). With `run.compile` the imagination's step and
    value are compiled too; every metric and parameter agrees with eager to float32 rounding."""
    seeds, envs_per_seed, epochs = (0, 1), 2, 6
    config = small_config("flow", num_envs=envs_per_seed, dynamics_overrides={"integrator": "euler", "substeps": 2})
    config = with_overrides(config, env={"task": "ant", "episode_length": 8})
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    runs = []
    for compiled in (False, True):
        agent_config = replace(config, run=replace(config.run, compile=compiled))
        env = make("ant", envs_per_seed * len(seeds), "cpu", list(seeds), episode_length=8)
        agent = PWM(env.obs_dim, env.act_dim, agent_config, "cpu", seeds=seeds)
        buffers = [ReplayBuffer(400, envs_per_seed, env.obs_dim, env.act_dim, "cpu", config.pwm.horizon) for _ in seeds]
        obs, history = env.reset(), []
        for epoch in range(epochs):
            obs, metrics = agent.epoch(env, obs, buffers, epoch / epochs)
            if not agent.members[0].warmed_up and all(buffer.ready() for buffer in buffers):
                agent.train_world_model(buffers, config.pwm.wm_warmup_steps)
            history.append(metrics)
        runs.append((agent, history))
    # Compiled without breaks: the world-model step and terms, the imagination's step and value (each with and
    # without gradients: collect-only epochs imagine without them), the critic's minibatch loss (7 graphs without
    # it, 8 with it, on torch 2.13).
    assert not torch._dynamo.utils.counters["graph_break"]
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 8
    (eager, eager_history), (compiled, compiled_history) = runs
    assert sum(m["updated"].sum().item() for m in compiled_history) >= 4, "too few training epochs to compare"
    for epoch, (mine, theirs) in enumerate(zip(compiled_history, eager_history, strict=True)):
        for name, value in mine.items():
            torch.testing.assert_close(value, theirs[name], rtol=1e-4, atol=1e-5, msg=f"epoch {epoch}: {name}")
    for name, value in eager.stacked.items():
        torch.testing.assert_close(compiled.stacked[name], value, rtol=1e-4, atol=1e-5, msg=name)


def _sample(actor, z, noise):
    return actor.sample(z, noise=noise)


def test_a_compiled_step_reads_the_std_floor_set_in_place_without_compiling_again():
    """`pwm.min_logstd_decay_epochs` changes the actors' floor every epoch in place (`PWM.set_logstd_floor`): a
    compiled per-seed step (as the imagination's) must read the tensor, not a constant baked in at compile time."""
    from flow_mbpo_pwm.algorithms.stack import vmapped
    from flow_mbpo_pwm.models.actor import Actor

    torch.manual_seed(0)
    actors = [Actor(6, 3, (8,), init_logstd=-1.0, min_logstd=-1.0) for _ in range(2)]
    params, _ = torch.func.stack_module_state(actors)
    state = {f"m.{name}": value.detach() for name, value in params.items()}
    z, noise = torch.randn(2, 5, 6), torch.randn(2, 5, 3)
    eager, compiled = vmapped(actors[0], _sample), vmapped(actors[0], _sample, compile=True)
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    first = compiled(state, (z, noise))
    torch.testing.assert_close(first, eager(state, (z, noise)))
    actors[0].set_floor(0.0)  # above every seed's logstd (-1.0): the std becomes 1 everywhere
    raised = compiled(state, (z, noise))
    torch.testing.assert_close(raised, eager(state, (z, noise)))
    assert not torch.allclose(raised, first)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 1


def test_the_imaginations_penalised_step_compiled_equals_eager():
    """The configs' actor loss (saturation and smoothness penalties) takes the imagination's penalised step, which
    `run.compile` compiles since 2026-12-04 (eager, it cost ~7% of a 5M deterministic epoch on an H200): compiled,
    it gives eager's action, reward, next latent, tanh slopes and tanh(mu), and the same gradient into the actor,
    in one graph."""
    from flow_mbpo_pwm.algorithms.pwm import _encode, _imagine_step_with_terms

    config = small_config("deterministic", horizon=2, actor_saturation_coef=0.1, actor_smoothness_coef=0.3)
    agents = [PWM(4, 1, replace(config, run=replace(config.run, compile=c)), "cpu", seeds=(0, 1)) for c in (0, 1)]
    obs = torch.randn(2, 5, 4, generator=torch.Generator().manual_seed(3))
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    outputs, grads = [], []
    for agent in agents:
        with torch.no_grad():
            z = agent.per_seed(_encode, obs)
        draws = agent.draw(lambda s, g, agent=agent: agent.members[s].draw_step(5, g))
        out = agent._per_seed(agent._acting_state, _imagine_step_with_terms, z, draws)
        actor = agent._net_params["actor"]  # the stacked actor parameters, which the acting state holds as they are
        grads.append(torch.autograd.grad(sum(o.sum() for o in out), actor, allow_unused=True))
        outputs.append(out)
    for name, mine, theirs in zip(("action", "reward", "z_next", "log_slope", "mean_action"), *outputs, strict=True):
        torch.testing.assert_close(mine, theirs, rtol=1e-4, atol=1e-5, msg=name)
    assert any(g is not None for g in grads[0]), "no gradient reached the actor"
    for mine, theirs in zip(*grads, strict=True):
        assert (mine is None) == (theirs is None)
        if mine is not None:
            torch.testing.assert_close(mine, theirs, rtol=1e-4, atol=1e-5)
    assert not torch._dynamo.utils.counters["graph_break"]
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 1
