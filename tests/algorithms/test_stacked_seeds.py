"""A stack of seeds (algorithms/pwm.py, algorithms/stack.py) trains each seed exactly as it would be trained alone:
same initial weights (a function of the seed), same env randomness (its block of the batched Ant draws what a lone
Ant with that seed draws), same data, same random draws (each seed's own generator, drawn outside vmap), and its
own optimiser state, gradient clipping and running statistics. Checked on the real Ant on the CPU, bitwise (with
MKL's strict reproducibility mode, tests/conftest.py: a seed's slice of a stacked tensor is not memory-aligned as
a lone tensor is, and MKL's matrix products otherwise differ in the last bit with alignment)."""

from __future__ import annotations

import math

import pytest
import torch
from pwm_helpers import small_config

from flow_mbpo_pwm.algorithms.pwm import PWM
from flow_mbpo_pwm.config import with_overrides
from flow_mbpo_pwm.data.replay import ReplayBuffer
from flow_mbpo_pwm.envs import make

SEEDS = (3, 0, 7)
ENVS_PER_SEED = 2
EPOCHS = 30


def ant_config(dynamics: str, reward_head: str = "binned"):
    config = small_config(dynamics, num_envs=ENVS_PER_SEED, world_model={"reward_head": reward_head})
    return with_overrides(config, env={"task": "ant", "episode_length": 12})


def train(seeds: tuple[int, ...], config, epochs: int = EPOCHS, nan_epoch: int | None = None):
    """`epochs` epochs of a stack of `seeds` on one batched Ant, with the host's warm-up rule per seed (the world
    model of a seed trains once its buffer is ready). `nan_epoch`: seed index 1's actor is filled with NaN before
    that epoch. Returns the agent, the per-epoch metrics, the buffers and the env's last observations."""
    env = make("ant", ENVS_PER_SEED * len(seeds), "cpu", list(seeds), episode_length=config.env.episode_length)
    agent = PWM(env.obs_dim, env.act_dim, config, "cpu", seeds=seeds)
    buffers = [
        ReplayBuffer(config.pwm.buffer_size, ENVS_PER_SEED, env.obs_dim, env.act_dim, "cpu", config.pwm.horizon)
        for _ in seeds
    ]
    obs, history = env.reset(), []
    for epoch in range(epochs):
        if epoch == nan_epoch:
            with torch.no_grad():
                next(agent.members[1].actor.parameters()).fill_(math.nan)
        obs, metrics = agent.epoch(env, obs, buffers, epoch / epochs)
        due = [not member.warmed_up and buffer.ready() for member, buffer in zip(agent.members, buffers, strict=True)]
        if any(due):
            agent.train_world_model(buffers, config.pwm.wm_warmup_steps, due)
        history.append(metrics)
    return agent, history, buffers, obs.reshape(len(seeds), ENVS_PER_SEED, -1)


def assert_seed_equals_lone(stack, lone, index: int, compare) -> None:
    """Seed `index` of `stack` against the lone run `lone` (both from `train`), every value through `compare`."""
    agent, history, buffers, obs = stack
    lone_agent, lone_history, lone_buffers, lone_obs = lone
    assert agent.members[index].warmed_up and lone_agent.members[0].warmed_up
    for epoch, (metrics, lone_metrics) in enumerate(zip(history, lone_history, strict=True)):
        for name, value in metrics.items():
            compare(value[index], lone_metrics[name][0], f"epoch {epoch}: {name}")
    mine, theirs = agent.seed_state_dict(index), lone_agent.seed_state_dict(0)
    for name, value in mine["modules"].items():
        compare(value, theirs["modules"][name], name)
    for name in ("actor_optimizer", "critic_optimizer", "wm_optimizer"):
        for key, state in mine[name]["state"].items():
            for field, value in state.items():
                compare(value, theirs[name]["state"][key][field], f"{name} {key} {field}")
    assert torch.equal(mine["generator"], theirs["generator"])
    for field, value in buffers[index].chronological().items():
        compare(value, lone_buffers[0].chronological()[field], f"buffer {field}")
    compare(obs[index], lone_obs[0], "observations")


def bitwise(a: torch.Tensor, b: torch.Tensor, what: str) -> None:
    assert torch.equal(a, b), what


@pytest.mark.parametrize("dynamics", ["deterministic", "flow"])
def test_a_seed_in_a_stack_of_three_is_bitwise_the_seed_trained_alone(dynamics):
    """Bitwise: every per-epoch metric, every parameter, optimiser moment and step count, the generator, the
    replay buffer and the env's observations. (A binned reward head: see the next test for the scalar one.)"""
    config = ant_config(dynamics)
    stack = train(SEEDS, config)
    assert all(member.warmed_up for member in stack[0].members)
    # The seeds really differ (distinct weights, env noise and data), so the equality below is not vacuous.
    assert not torch.equal(stack[3][0], stack[3][1])
    for index in range(len(SEEDS)):
        assert_seed_equals_lone(stack, train((SEEDS[index],), config), index, bitwise)


@pytest.mark.parametrize("threshold", [0.0, 0.5])
def test_with_the_saturation_penalty_a_seed_in_a_stack_is_bitwise_the_seed_trained_alone(threshold):
    """`pwm.actor_saturation_coef` runs another per-seed imagination step (with the actions' tanh slopes); the
    penalty's mean over action entries (with or without `actor_saturation_threshold`) is taken over the whole stack."""
    pwm = {"actor_saturation_coef": 0.1, "actor_saturation_threshold": threshold}
    config = with_overrides(ant_config("deterministic"), pwm=pwm)
    stack = train(SEEDS[:2], config)
    for index in range(2):
        assert_seed_equals_lone(stack, train((SEEDS[index],), config), index, bitwise)
    plain = train(SEEDS[:1], ant_config("deterministic"))  # the penalty changes the training
    assert not torch.equal(plain[0].seed_state_dict(0)["modules"]["actor.mu_net.0.weight"],
                           stack[0].seed_state_dict(0)["modules"]["actor.mu_net.0.weight"])  # fmt: skip


def test_with_the_env_on_the_actors_own_policy_a_seed_in_a_stack_is_bitwise_the_seed_trained_alone():
    """`pwm.env_actions: observed`: each seed's env block takes its actor's action on its own encoded observations
    (a per-seed call of its own), with the seed's imagined noise; the real env then sees other actions than PWM's."""
    config = with_overrides(ant_config("deterministic"), pwm={"env_actions": "observed"})
    stack = train(SEEDS[:2], config)
    for index in range(2):
        assert_seed_equals_lone(stack, train((SEEDS[index],), config), index, bitwise)
    imagined = train(SEEDS[:1], ant_config("deterministic"))
    assert not torch.equal(stack[2][0].chronological()["action"], imagined[2][0].chronological()["action"])


@pytest.mark.parametrize("dynamics", ["deterministic", "flow"])
def test_with_the_consistency_term_a_seed_in_a_stack_is_bitwise_the_seed_trained_alone(dynamics):
    """`pwm.actor_consistency_coef`: each seed replays windows from its own buffer with its own generator (and, for
    a flow, the dynamics' draws) in the actor step; the term is a per-seed call of its own."""
    config = with_overrides(ant_config(dynamics), pwm={"actor_consistency_coef": 1.0})
    stack = train(SEEDS[:2], config)
    for index in range(2):
        assert_seed_equals_lone(stack, train((SEEDS[index],), config), index, bitwise)
    plain = train(SEEDS[:1], ant_config(dynamics))  # the term changes the training
    assert not torch.equal(plain[0].seed_state_dict(0)["modules"]["actor.mu_net.0.weight"],
                           stack[0].seed_state_dict(0)["modules"]["actor.mu_net.0.weight"])  # fmt: skip


def test_with_the_critic_bootstrapping_from_the_real_env_a_seed_in_a_stack_is_bitwise_the_seed_trained_alone():
    """`pwm.critic_bootstrap: real`: each seed's critic bootstraps from its own encoder and critic at its env block's
    next observations (a per-seed call of its own); the critic then trains on other targets than PWM's."""
    config = with_overrides(ant_config("deterministic"), pwm={"critic_bootstrap": "real"})
    stack = train(SEEDS[:2], config)
    for index in range(2):
        assert_seed_equals_lone(stack, train((SEEDS[index],), config), index, bitwise)
    plain = train(SEEDS[:1], ant_config("deterministic"))
    assert not torch.equal(plain[0].seed_state_dict(0)["modules"]["critic.weights.0"],
                           stack[0].seed_state_dict(0)["modules"]["critic.weights.0"])  # fmt: skip


def test_with_the_latent_standardised_a_seed_in_a_stack_is_bitwise_the_seed_trained_alone():
    """`pwm.latent_norm: standardize`: each seed fits its actor's and critics' latent statistics on its own buffer
    when it warms up; the statistics are per-seed slices of the stack, read inside the per-seed calls, saved with
    the seed's state and never trained."""
    config = with_overrides(ant_config("deterministic"), pwm={"latent_norm": "standardize"})
    stack = train(SEEDS[:2], config)
    for index in range(2):
        assert_seed_equals_lone(stack, train((SEEDS[index],), config), index, bitwise)
    states = [stack[0].seed_state_dict(index)["modules"] for index in range(2)]
    for name in ("actor.input_norm.mean", "actor.input_norm.std", "critic.input_norm.std"):
        assert not torch.equal(states[0][name], states[1][name]), name  # each seed's own encoder and data
    assert not torch.equal(states[0]["actor.input_norm.std"], torch.ones_like(states[0]["actor.input_norm.std"]))
    torch.testing.assert_close(states[0]["actor.input_norm.mean"], states[0]["critic.input_norm.mean"])


def test_with_a_scalar_reward_head_a_seed_in_a_stack_equals_it_alone_up_to_float_rounding():
    """The scalar reward head ends in a Linear with ONE output. For that shape the CPU BLAS computes a lone seed's
    (batch of one) matrix product with a matrix-vector kernel and a stack's batched product with another kernel,
    whose sums differ in the last bit (every wider layer is bitwise the same, previous test; MKL's strict mode
    does not cover this). Those 1-ulp differences grow slowly through training and the Ant's physics: after 30
    epochs, measured: parameters within 7e-6, observations within 2e-4, every done flag the same. Tolerance 1e-3."""
    config = ant_config("deterministic", reward_head="scalar")
    stack = train(SEEDS, config)

    def close(a: torch.Tensor, b: torch.Tensor, what: str) -> None:
        if a.dtype == torch.bool or not a.dtype.is_floating_point:
            assert torch.equal(a, b), what
        else:
            torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-3, msg=lambda m: f"{what}: {m}")

    assert_seed_equals_lone(stack, train((SEEDS[1],), config), 1, close)


def test_a_seed_that_goes_non_finite_leaves_its_siblings_exactly_as_they_were():
    """Seed index 1's actor turns NaN mid-run: its block of the env acts with zero torque (the env never sees a
    NaN), its own models go non-finite, and seeds 0 and 2 end bitwise equal to their lone runs."""
    config = ant_config("deterministic")
    stack = train(SEEDS, config, nan_epoch=EPOCHS // 2)
    agent, history, buffers, _ = stack
    assert not torch.isfinite(history[-1]["actor_loss"][1])
    assert all(torch.isfinite(history[-1]["actor_loss"][[0, 2]]))
    assert torch.isfinite(buffers[1].chronological()["action"]).all()
    for index in (0, 2):
        assert_seed_equals_lone(stack, train((SEEDS[index],), config), index, bitwise)
