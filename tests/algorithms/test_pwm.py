import math

import pytest
import torch
from pwm_helpers import TASK, small_config

from flow_mbpo_pwm import io
from flow_mbpo_pwm.algorithms.pwm import PWM
from flow_mbpo_pwm.algorithms.stack import stack_draws
from flow_mbpo_pwm.config import with_overrides
from flow_mbpo_pwm.data.replay import ReplayBuffer
from flow_mbpo_pwm.envs import make

EPOCH_METRICS = (
    "actor_loss", "critic_loss", "wm_loss", "wm_dynamics_loss", "wm_reward_loss", "actor_grad_norm",
    "critic_grad_norm", "wm_grad_norm", "actor_lr", "critic_lr", "wm_lr", "episodes_finished",
    "episode_return_sum", "episode_return_max",
)  # fmt: skip


def build(dynamics: str = "deterministic", seed: int = 0, env_seed: int | None = None, **overrides):
    config = small_config(dynamics, **overrides)
    torch.manual_seed(seed)
    env_seed = seed if env_seed is None else env_seed
    env = make(TASK, config.env.num_envs, "cpu", env_seed, episode_length=config.env.episode_length)
    agent = PWM(env.obs_dim, env.act_dim, config, "cpu")
    buffer = ReplayBuffer(config.pwm.buffer_size, env.num_envs, env.obs_dim, env.act_dim, "cpu",
                          horizon=config.pwm.horizon)  # fmt: skip
    return agent, env, buffer, env.reset()


def run_until_warm(agent, env, buffer, obs, max_epochs: int = 50):
    """Collect-only epochs until the buffer is ready, then the warm-up (the caller's host-side rule), then one
    training epoch."""
    for e in range(max_epochs):
        obs, metrics = agent.epoch(env, obs, buffer, e / 100)
        assert metrics["updated"].item() == 0.0
        if buffer.ready():
            agent.train_world_model(buffer, agent.config.pwm.wm_warmup_steps)
            assert agent.warmed_up
            obs, metrics = agent.epoch(env, obs, buffer, (e + 1) / 100)
            assert metrics["updated"].item() == 1.0
            return obs, metrics
    raise AssertionError("the buffer never became ready")


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def changed(before: dict[str, torch.Tensor], module: torch.nn.Module) -> list[str]:
    return [k for k, v in module.state_dict().items() if not torch.equal(before[k], v)]


@pytest.mark.parametrize("dynamics", ["deterministic", "flow"])
def test_actor_loss_moves_only_the_actor_with_gradients_through_the_dynamics(dynamics):
    agent, env, buffer, obs = build(dynamics)
    obs, _ = run_until_warm(agent, env, buffer, obs)
    # Gradients reach the actions through the model: d F(z, a) / d a is non-zero (through every flow substep).
    z = agent.world_model.encode(obs)
    a = torch.zeros(env.num_envs, env.act_dim, requires_grad=True)
    (grad_a,) = torch.autograd.grad(agent.world_model.next(z, a, agent.generator).pow(2).sum(), a)
    assert grad_a.abs().sum() > 0

    rollout, _ = agent.imagine(env, obs, buffer, with_grad=True)
    assert rollout.objective.requires_grad
    wm_before, critic_before, actor_before = snapshot(agent.world_model), snapshot(agent.critic), snapshot(agent.actor)
    # Gradients land on the stack's parameters (`agent.stacked`, the autograd leaves; the modules' are views).
    others = [p for name, p in agent.stacked.items() if not name.startswith("actor.")]
    for p in others:
        p.grad = None
    loss, grad_norm = agent.actor_step(rollout.objective)
    assert torch.isfinite(loss) and grad_norm > 0
    mu_net = [p for name, p in agent.stacked.items() if name.startswith("actor.mu_net.")]
    assert mu_net and all(p.grad is not None and p.grad.abs().sum() > 0 for p in mu_net)
    assert changed(actor_before, agent.actor)
    assert changed(wm_before, agent.world_model) == []
    assert changed(critic_before, agent.critic) == []
    assert all(p.grad is None for p in others)


def test_epochs_collect_only_until_the_buffer_is_ready():
    agent, env, buffer, obs = build(horizon=4)
    before = {f"{name}.{k}": v.clone() for name in ("world_model", "actor", "critic")
              for k, v in getattr(agent, name).state_dict().items()}  # fmt: skip
    # A warm-up on a buffer without any full window trains nothing and does not count.
    agent.train_world_model(buffer, 3)
    assert not agent.warmed_up
    obs, metrics = agent.epoch(env, obs, buffer, 0.0)  # 4 steps: no finished episode yet
    assert not agent.warmed_up and metrics["updated"].item() == 0.0
    assert all(metrics[k].item() == 0.0 for k in ("actor_loss", "critic_loss", "wm_loss"))
    # Data was collected (running reward statistics moved), but no parameter changed.
    assert buffer.num_added == 4 and agent.rew_rms.count.item() > 1
    for name in ("world_model", "actor", "critic"):
        module = getattr(agent, name)
        assert all(torch.equal(before[f"{name}.{k}"], v) for k, v in module.state_dict().items())


VARIANTS = {
    "deterministic": ("deterministic", {}),
    "flow": ("flow", {}),
    "binned-reward": ("deterministic", {"world_model": {"reward_head": "binned"}}),
    "flow-noise-rk4-raw-time": (
        "flow",
        {"dynamics_overrides": {"source": "noise", "integrator": "rk4", "time_embedding": "raw"}},
    ),
    "flow-euler-unprojected": ("flow", {"dynamics_overrides": {"integrator": "euler", "project": "none"}}),
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_a_few_epochs_on_a_real_gym_env_run_with_finite_losses(variant):
    dynamics, overrides = VARIANTS[variant]
    agent, env, buffer, obs = build(dynamics, **overrides)
    obs, metrics = run_until_warm(agent, env, buffer, obs)
    for epoch in range(3):
        obs, metrics = agent.epoch(env, obs, buffer, 0.5 + epoch / 10)
        assert set(EPOCH_METRICS) <= set(metrics)
        assert all(v.shape == (1,) for v in metrics.values())  # one value per seed of the stack (S = 1)
        assert metrics["updated"].item() == 1.0
        for name in EPOCH_METRICS[:11]:
            assert math.isfinite(metrics[name].item()), name
        assert metrics["wm_loss"].item() > 0 and metrics["critic_loss"].item() > 0
    cfg = agent.config.pwm
    assert metrics["actor_lr"].item() == pytest.approx(cfg.actor_lr + (cfg.lr_min - cfg.actor_lr) * 0.7)
    assert metrics["wm_lr"].item() == pytest.approx(cfg.wm_lr + (cfg.wm_lr_min - cfg.wm_lr) * 0.7)
    assert obs.shape == (env.num_envs, env.obs_dim)


def test_training_episode_statistics_are_the_real_env_returns():
    agent, env, buffer, obs = build(num_envs=3, horizon=8)
    finished, total, best = 0.0, 0.0, -math.inf
    for e in range(6):
        obs, m = agent.epoch(env, obs, buffer, e / 10)
        finished += m["episodes_finished"].item()
        total += m["episode_return_sum"].item()
        best = max(best, m["episode_return_max"].item())
    # Recompute every finished episode's return from the real rewards stored in the buffer (all steps are there).
    data = buffer.chronological()
    ended = data["terminated"] | data["truncated"]
    returns = []
    for env_id in range(3):
        running = 0.0
        for t in range(ended.shape[0]):
            running += data["reward"][t, env_id].item()
            if ended[t, env_id]:
                returns.append(running)
                running = 0.0
    assert finished == len(returns) > 0
    assert total == pytest.approx(sum(returns))
    assert best == pytest.approx(max(returns))


def test_state_dict_round_trip_continues_bitwise(tmp_path):
    agent, env, buffer, obs = build("flow", seed=3)
    obs, _ = run_until_warm(agent, env, buffer, obs)
    obs, _ = agent.epoch(env, obs, buffer, 0.3)
    # Save everything a resume needs, through the real checkpoint IO (weights_only loading).
    state = {"agent": agent.state_dict(), "buffer": buffer.state_dict(), "env": env.state_dict(), "obs": obs}
    io.torch_save(tmp_path / "state.pt", state)
    loaded = io.torch_load(tmp_path / "state.pt")
    for e in range(2):
        obs, metrics_a = agent.epoch(env, obs, buffer, 0.4 + e / 10)

    other, env_b, buffer_b, _ = build("flow", seed=99, env_seed=3)  # another init: all of it must be overwritten
    other.load_state_dict(loaded["agent"])
    buffer_b.load_state_dict(loaded["buffer"])
    env_b.load_state_dict(loaded["env"])
    obs_b = loaded["obs"]
    assert other.warmed_up
    for e in range(2):
        obs_b, metrics_b = other.epoch(env_b, obs_b, buffer_b, 0.4 + e / 10)
    assert torch.equal(obs, obs_b)
    for (k, v), (k2, v2) in zip(agent.state_dict()["modules"].items(), other.state_dict()["modules"].items(),
                                strict=True):  # fmt: skip
        assert k == k2 and torch.equal(v, v2), k
    for name in metrics_a:
        assert torch.equal(metrics_a[name], metrics_b[name]), name


def test_world_model_loss_weights_its_terms():
    """`pwm.wm_dynamics_coef` and `pwm.wm_reward_coef` weigh the two terms of the total; the terms themselves
    are reported unweighted."""
    agent, env, buffer, obs = build("deterministic")
    run_until_warm(agent, env, buffer, obs)
    weighted, _, _, _ = build("deterministic", wm_dynamics_coef=20.0, wm_reward_coef=0.1)
    weighted.load_state_dict(agent.state_dict())
    batch = buffer.sample(8, agent.generator)
    plain, scaled = seed_loss(agent, batch), seed_loss(weighted, batch)
    torch.testing.assert_close(scaled.dynamics, plain.dynamics)
    torch.testing.assert_close(scaled.reward, plain.reward)
    torch.testing.assert_close(scaled.total, 20.0 * plain.dynamics + 0.1 * plain.reward)


def test_bad_inputs_are_refused_with_clear_errors():
    agent, env, buffer, obs = build()
    with pytest.raises(ValueError, match="progress"):
        agent.epoch(env, obs, buffer, 1.5)
    other_env = make(TASK, 2, "cpu", 0)
    with pytest.raises(ValueError, match="2 envs"):
        agent.epoch(other_env, other_env.reset(), buffer, 0.0)
    with pytest.raises(ValueError, match="normalize_obs"):
        PWM(4, 1, with_overrides(small_config(), pwm={"normalize_obs": True}), "cpu")


def seed_loss(agent, batch):
    """`PWM.world_model_loss` of a lone batch (the stack of one seed: a leading seed axis in and out)."""
    losses = agent.world_model_loss(stack_draws([batch]))
    return type(losses)(*(x[0] for x in losses))


@pytest.mark.parametrize("dynamics", ["deterministic", "flow"])
def test_world_model_loss_definition_and_masking_of_invalid_rows(dynamics):
    agent, env, buffer, obs = build(dynamics, gamma=1.0)
    run_until_warm(agent, env, buffer, obs)
    batch = buffer.sample(8, agent.generator)
    assert batch.valid.all()
    losses = seed_loss(agent, batch)
    torch.testing.assert_close(losses.total, losses.dynamics + losses.reward)
    if dynamics == "deterministic":  # with gamma = 1 the latent MSE is the dynamics loss itself
        torch.testing.assert_close(losses.dynamics, losses.latent_mse)
    # Rows flagged invalid contribute nothing, and do not dilute the mean of the valid ones.
    half = batch._replace(valid=torch.arange(8) < 4)
    first = batch._replace(**{f: getattr(batch, f)[:4] for f in batch._fields})
    agent.generator.manual_seed(5)
    masked = seed_loss(agent, half)
    agent.generator.manual_seed(5)
    reference = seed_loss(agent, first)
    if dynamics == "deterministic":  # (flow draws tau per row, so only the deterministic loss is comparable)
        torch.testing.assert_close(masked.total, reference.total)
    none = seed_loss(agent, batch._replace(valid=torch.zeros(8, dtype=torch.bool)))
    assert none.total.item() == 0.0 and none.valid_rows.item() == 0


@pytest.mark.parametrize("reward_norm", ["none", "std", "meanstd"])
def test_reward_normalisation_of_the_world_model_target(reward_norm):
    """ "none" regresses raw rewards; "std" divides by the running std without clipping; "meanstd" centres and
    clips (the spec's rew_rms). Checked through the reward term of the world-model loss."""
    agent, env, buffer, obs = build("deterministic", gamma=1.0, reward_norm=reward_norm)
    run_until_warm(agent, env, buffer, obs)
    batch = buffer.sample(8, agent.generator)
    agent.rew_rms.mean.fill_(0.5)
    agent.rew_rms.var.fill_(0.01)  # std ~0.1: InvertedPendulum's reward of 1 becomes ~10 under "std"
    raw = batch.reward.transpose(0, 1)
    target = {
        "none": raw,
        "std": raw / agent.rew_rms.std().float(),
        "meanstd": ((raw - 0.5) / agent.rew_rms.std().float()).clamp(-5, 5),
    }[reward_norm]
    latents = [agent.world_model.encode(batch.obs[:, 0])]
    for t in range(batch.action.shape[1] - 1):
        latents.append(agent.world_model.next(latents[-1], batch.action[:, t], agent.generator))
    predicted = agent.world_model.reward(torch.stack(latents), batch.action.transpose(0, 1))
    expected = (predicted - target).pow(2).mean()
    torch.testing.assert_close(seed_loss(agent, batch).reward, expected, rtol=1e-4, atol=1e-5)
    if reward_norm == "std":
        assert target.max() > 5  # never clipped


@pytest.mark.parametrize("threshold", [0.0, 0.95])
def test_the_saturation_penalty_pulls_a_saturated_actor_back_where_the_return_alone_does_not(threshold):
    """`pwm.actor_saturation_coef`: with every action saturated (the last layer's bias at 12, tanh'(u) ~ 1e-10),
    the imagined return passes no gradient to that bias; the penalty (mean -log tanh'(u), beyond
    `actor_saturation_threshold`) pulls it down."""
    margin = -math.log1p(-(threshold**2))  # the penalty starts at -log tanh'(u) = margin
    grads = {}
    for coef in (0.0, 1.0):
        agent, env, buffer, obs = build(actor_saturation_coef=coef, actor_saturation_threshold=threshold * (coef > 0))
        obs, _ = run_until_warm(agent, env, buffer, obs)
        name = [n for n in agent.stacked if n.startswith("actor.mu_net.") and n.endswith(".bias")][-1]  # last layer
        bias = agent.stacked[name]
        with torch.no_grad():
            bias.fill_(12.0)
        rollout, _ = agent.imagine(env, obs, buffer, with_grad=True)
        if coef == 0.0:
            assert torch.equal(rollout.saturation, torch.zeros_like(rollout.saturation))
        else:  # -log tanh'(u) with u ~ 12: ~ 2 (u - log 2) ~ 22.6
            assert rollout.saturation.requires_grad and (rollout.saturation > 20 - margin).all()
        bias.grad = None
        agent.actor_step(rollout.objective, saturation=rollout.saturation)
        grads[coef] = bias.grad
    assert grads[0.0].abs().max() < 1e-6
    # Positive (descent lowers the bias, back towards tanh's linear range) and far from vanishing, after the clip of
    # the actor's whole gradient to norm `actor_grad_clip` = 1.
    assert (grads[1.0] > 0.05).all()


def test_with_a_threshold_an_actor_inside_it_pays_no_penalty_and_gets_no_gradient_from_it():
    """`pwm.actor_saturation_threshold`: with the last layer zeroed (mu = 0, u = sigma * eps, |a| far below 0.99)
    the penalty is exactly 0 and passes no gradient to the actor; without the threshold it is positive."""
    for threshold, free in ((0.99, True), (0.0, False)):
        agent, env, buffer, obs = build(actor_saturation_coef=0.1, actor_saturation_threshold=threshold)
        obs, _ = run_until_warm(agent, env, buffer, obs)
        last = [n for n in agent.stacked if n.startswith("actor.mu_net.") and n.endswith(".bias")][-1]  # last layer
        with torch.no_grad():
            agent.stacked[last].zero_()
            agent.stacked[last.removesuffix("bias") + "weight"].zero_()
        rollout, _ = agent.imagine(env, obs, buffer, with_grad=True)
        actor = [t for n, t in agent.stacked.items() if n.startswith("actor.")]
        grads = torch.autograd.grad(rollout.saturation.sum(), actor, allow_unused=True)
        if free:
            assert torch.equal(rollout.saturation, torch.zeros_like(rollout.saturation))
            assert all(g is None or not g.any() for g in grads)
        else:
            assert (rollout.saturation > 0).all()
            assert any(g is not None and g.any() for g in grads)


def test_the_smoothness_penalty_is_the_deterministic_actions_squared_change_within_episodes():
    """`pwm.actor_smoothness_coef`: the rollout's `smoothness` is, per env, the mean over the H - 1 step pairs of
    mean((tanh(mu(z_t)) - tanh(mu(z_{t-1})))^2), a pair across a reset counting 0; it carries the actor's gradient
    and enters the actor's loss. Without the coefficient it is zeros and the loss is PWM's."""
    agent, env, buffer, obs = build(horizon=8, actor_smoothness_coef=1.0)
    obs, _ = run_until_warm(agent, env, buffer, obs)
    for _ in range(10):  # until a rollout holds a reset before its last step (InvertedPendulum falls often)
        rollout, obs = agent.imagine(env, obs, buffer, with_grad=True)
        if rollout.dones[:-1].any():
            break
    assert rollout.dones[:-1].any() and not rollout.dones[:-1].all()
    actor = agent.members[0].actor
    with torch.no_grad():
        actions = torch.stack([actor.act(z[0]) for z in rollout.latents])  # [H, N, act]
        change = (actions[1:] - actions[:-1]).pow(2).mean(-1)
        expected = torch.where(rollout.dones[:-1, 0], 0.0, change).sum(0) / 7
    torch.testing.assert_close(rollout.smoothness[0], expected)
    assert (rollout.smoothness > 0).all()
    params = [t for n, t in agent.stacked.items() if n.startswith("actor.mu_net.")]
    grads = torch.autograd.grad(rollout.smoothness.sum(), params, retain_graph=True)
    assert any(g is not None and g.any() for g in grads)
    objective, smoothness = rollout.objective.detach(), rollout.smoothness.detach()
    loss, _ = agent.actor_step(rollout.objective, smoothness=rollout.smoothness)
    plain = -(objective / agent.ret_stats.std().float().unsqueeze(1)).mean(1)  # the scale the step updated
    torch.testing.assert_close(loss, plain + smoothness.mean(1))
    off, env_off, buffer_off, obs_off = build(horizon=8)
    obs_off, _ = run_until_warm(off, env_off, buffer_off, obs_off)
    rollout_off, _ = off.imagine(env_off, obs_off, buffer_off, with_grad=True)
    assert torch.equal(rollout_off.smoothness, torch.zeros_like(rollout_off.smoothness))


@pytest.mark.parametrize("dynamics", ["deterministic", "flow"])
def test_the_consistency_term_is_the_actors_gap_between_the_models_latents_and_the_real_ones(dynamics):
    """`pwm.actor_consistency_coef`: windows replayed from the seed's buffer (its generator), the model rolled from
    E(o_0) along the recorded actions; the term is the mean squared gap per action entry between the actor on z_h
    and on E(o_h), h = 1..H, over the valid rows. It reaches the actor only, and the actor's loss adds coef x it."""
    agent, env, buffer, obs = build(dynamics, actor_consistency_coef=0.5)
    obs, _ = run_until_warm(agent, env, buffer, obs)
    member, state = agent.members[0], agent.members[0].generator.get_state()
    term = agent.actor_consistency(buffer)
    after = member.generator.get_state()
    member.generator.set_state(state)  # the same draws, by hand
    batch = buffer.sample(agent.config.pwm.wm_batch, member.generator)
    with torch.no_grad():
        z, gaps = member.world_model.encode(batch.obs[:, 0]), []
        for h in range(batch.action.shape[1]):
            draws = member.world_model.dynamics.draw_next((agent.config.pwm.wm_batch,), member.generator)
            z = member.world_model.next(z, batch.action[:, h], **draws)
            real = member.actor.act(member.world_model.encode(batch.obs[:, h + 1]))
            gaps.append((member.actor.act(z) - real).pow(2).mean(-1))
        expected = torch.stack(gaps, 1).mean(1)[batch.valid].mean()
    assert torch.equal(member.generator.get_state(), after) and batch.valid.all()
    torch.testing.assert_close(term[0], expected)
    assert term[0] > 0  # a model fitted for a few steps is not the env
    params = dict(agent.stacked)
    grads = torch.autograd.grad(term.sum(), list(params.values()), allow_unused=True)
    reached = {name for name, g in zip(params, grads, strict=True) if g is not None and g.any()}
    assert reached and all(name.startswith("actor.mu_net.") for name in reached)

    rollout, _ = agent.imagine(env, obs, buffer, with_grad=True)
    objective = rollout.objective.detach()
    member.generator.set_state(state := member.generator.get_state())
    term = agent.actor_consistency(buffer).detach()
    member.generator.set_state(state)
    loss, _ = agent.actor_step(rollout.objective, sources=buffer)
    plain = -(objective / agent.ret_stats.std().float().unsqueeze(1)).mean(1)
    torch.testing.assert_close(loss, plain + 0.5 * term)
    rollout, _ = agent.imagine(env, obs, buffer, with_grad=True)
    with pytest.raises(ValueError, match="actor_consistency_coef needs the replay buffers"):
        agent.actor_step(rollout.objective)


def segments_objective(rollout, gamma: float, value_coef: float) -> torch.Tensor:
    """The actor's objective recomputed from a rollout's detached fields, one env and step at a time: each segment
    (cut by a done, closed by the rollout's end) adds `sum_t gamma^t r_t + value_coef gamma^L V(z_L)`."""
    H, S, N = rollout.rewards.shape
    objective = torch.zeros(S, N)
    for s in range(S):
        for n in range(N):
            segment, t = 0.0, 0
            for i in range(H):
                segment += gamma**t * rollout.rewards[i, s, n].item()
                t += 1
                if rollout.dones[i, s, n] or i == H - 1:
                    objective[s, n] += segment + value_coef * gamma**t * rollout.next_values[i, s, n].item()
                    segment, t = 0.0, 0
    return objective


@pytest.mark.parametrize("value_coef", [1.0, 0.5, 0.0])
def test_the_actor_objective_weighs_the_critics_term_by_actor_value_coef(value_coef):
    """`pwm.actor_value_coef`: per env, the objective sums each segment's discounted model rewards and
    `coef x gamma^L V(z_L)` (1: PWM's; 0: the imagined rewards alone, no gradient reaching the critic's term)."""
    agent, env, buffer, obs = build(horizon=8, actor_value_coef=value_coef)
    obs, _ = run_until_warm(agent, env, buffer, obs)
    for _ in range(10):  # until a rollout holds a reset before its last step (InvertedPendulum falls often)
        rollout, obs = agent.imagine(env, obs, buffer, with_grad=True)
        if rollout.dones[:-1].any():
            break
    assert rollout.dones[:-1].any() and rollout.next_values.abs().sum() > 0
    expected = segments_objective(rollout, agent.config.pwm.gamma, value_coef)
    torch.testing.assert_close(rollout.objective.detach(), expected, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("env_actions", ["imagined", "observed"])
def test_the_env_takes_the_imagined_actions_or_the_same_noise_around_the_actor_on_its_own_observations(env_actions):
    """`pwm.env_actions`: the real env's action at step i is the imagined step's `tanh(mu(z_i) + sigma eps_i)`
    (PWM's, z_i imagined from E(o_0)), or `tanh(mu(E(o_i)) + sigma eps_i)` with the same eps_i (observed); at i = 0
    the two agree. Recomputed from the buffer's observations and a copy of the seed's generator."""
    agent, env, buffer, obs = build(horizon=8, env_actions=env_actions)
    obs, _ = run_until_warm(agent, env, buffer, obs)
    member = agent.members[0]
    replay = member.generator.get_state()
    before = buffer.num_added
    rollout, _ = agent.imagine(env, obs, buffer, with_grad=False)
    generator = torch.Generator().set_state(replay)
    stored = {k: v[-8:] for k, v in buffer.chronological().items()}
    assert buffer.num_added == before + 8
    actor, encode = member.actor, member.world_model.encode
    with torch.no_grad():
        for i in range(8):
            draws = member.draw_step(env.num_envs, generator)
            observed = actor.sample(encode(stored["obs"][i]), noise=draws["action"])
            imagined = actor.sample(rollout.latents[i, 0], noise=draws["action"])
            expected = observed if env_actions == "observed" else imagined
            torch.testing.assert_close(stored["action"][i], expected)
            if i == 0:
                torch.testing.assert_close(observed, imagined)
            elif env_actions == "observed":
                assert not torch.allclose(stored["action"][i], imagined)  # the model's latent has moved away


def test_actor_steps_with_the_consistency_term_bring_the_actor_closer_to_itself_on_the_models_latents():
    """From the same warmed-up agent (same seed, env and data), 20 actor steps on PWM's objective with
    `pwm.actor_consistency_coef` leave a smaller gap between the actor's actions on the model's latents and on the
    real ones than 20 steps without it (measured on the same replayed windows)."""
    gaps = []
    for coef in (0.0, 10.0):
        agent, env, buffer, obs = build(actor_consistency_coef=coef)
        obs, _ = run_until_warm(agent, env, buffer, obs)
        for _ in range(20):
            rollout, obs = agent.imagine(env, obs, buffer, with_grad=True)
            agent.actor_step(rollout.objective, sources=buffer)
        agent.members[0].generator.manual_seed(123)  # the same windows for both
        with torch.no_grad():
            gaps.append(float(agent.actor_consistency(buffer)[0]))
    assert gaps[1] < 0.5 * gaps[0], gaps  # measured: 0.089 against 0.436


@pytest.mark.parametrize("critic_bootstrap", ["imagined", "real"])
def test_the_critic_bootstraps_where_a_segment_closes_from_the_models_latent_or_the_real_next_observation(
    critic_bootstrap,
):
    """`pwm.critic_bootstrap`: the critic's bootstrap at step i is V(z_{i+1}) of the model's next latent inside a
    segment; where a segment closes (the rollout's last step, an episode's end) it is V(z_{i+1}) (imagined, PWM's)
    or V(E(o_{i+1})) of the real env's next observation (real), zero after a termination either way. Recomputed
    from the rollout's latents and the buffer's transitions."""
    agent, env, buffer, obs = build(horizon=8, critic_bootstrap=critic_bootstrap)
    obs, _ = run_until_warm(agent, env, buffer, obs)
    for _ in range(10):  # until a rollout holds an episode's end before its last step (InvertedPendulum falls)
        rollout, obs = agent.imagine(env, obs, buffer, with_grad=False)
        if rollout.dones[:-1].any():
            break
    dones = rollout.dones[:, 0]
    assert dones[:-1].any() and not dones[:-1].all()
    member = agent.members[0]
    stored = {k: v[-8:] for k, v in buffer.chronological().items()}
    alive = ~stored["terminated"]
    with torch.no_grad():
        real = member.critic.value(member.world_model.encode(stored["next_obs"])) * alive
        inner = member.critic.value(rollout.latents[1:, 0]) * alive[:-1]  # the critic at the next imagined latent
    values = rollout.next_values[:, 0]
    torch.testing.assert_close(values[:-1][~dones[:-1]], inner[~dones[:-1]])
    if critic_bootstrap == "real":
        closes = torch.cat([dones[:-1], torch.ones(1, 1, dtype=torch.bool).expand(1, dones.shape[1])])
        torch.testing.assert_close(values[closes], real[closes])
    else:
        assert not torch.allclose(values[-1], real[-1])  # the model's H-th latent is not the real one
