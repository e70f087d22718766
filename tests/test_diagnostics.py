"""Diagnostics of where learning stalls (`flow_mbpo_pwm.diagnostics`) on cases with a known answer: hand-built world
models over a known linear system, a smooth toy return, and hand-placed episode ends."""

from __future__ import annotations

import math

import pytest
import torch
from linear_system import (
    A_MATRIX,
    ACT,
    OBS,
    LinearSystemModel,
    N,
    T,
    linear_actor,
    linear_system_record,
    true_next,
    true_reward,
)

from flow_mbpo_pwm.algorithms.running_stats import RunningMeanStd
from flow_mbpo_pwm.diagnostics import (
    NO_FIT,
    EpisodeRecord,
    EpisodeRecorder,
    action_columns,
    cosine,
    critic_fit,
    cut_windows,
    finite_difference_gradient,
    first_episode_steps,
    gradient_agreement,
    gradient_cosine,
    horizon_errors,
    model_gradient,
    model_return,
    objective_split,
    policy_shift,
    real_terms,
    returns_to_go,
    reward_units,
    start_steps,
    summary_columns,
    validation_diagnostics,
)

H = 4


def test_identity_model_error_equals_the_copy_baseline_at_every_step():
    windows = cut_windows(linear_system_record().record, H)
    errors = horizon_errors(LinearSystemModel(lambda z, a: z), windows)
    assert errors.wm_latent_mse.shape == (H,)
    assert torch.equal(errors.wm_latent_mse, errors.copy_latent_mse)
    assert (errors.copy_latent_mse > 0).all()


def test_validation_rows_give_ratio_one_for_the_identity_model_and_no_cosine_without_an_env():
    rows, grad, split, fit, real = validation_diagnostics(LinearSystemModel(lambda z, a: z), linear_system_record(),
                                                          H, 0.99)  # fmt: skip
    assert [r["step"] for r in rows] == list(range(1, H + 1))
    assert all(r["latent_ratio"] == 1.0 for r in rows) and math.isnan(grad)
    assert all(math.isnan(x) for x in split)  # no actor and no critic: no objective split either
    assert fit == NO_FIT  # and no critic fit
    assert all(math.isnan(x) for x in real)  # nor the terms as paid
    summary = summary_columns(rows, grad)
    assert summary["latent_ratio_hH"] == 1.0 and summary["wm_latent_mse_hH"] == rows[-1]["wm_latent_mse"]
    # no value function given: the value columns are NaN, not made up
    assert all(math.isnan(r[c]) for r in rows for c in ("wm_value_mse", "copy_value_mse", "value_ratio"))
    assert math.isnan(summary["value_ratio_hH"])


# A value that is linear in the latent: V(z) = w . z, so a latent offset d costs exactly (w . d)^2.
VALUE_WEIGHTS = torch.tensor([0.5, -1.0, 2.0])


def linear_value(z: torch.Tensor) -> torch.Tensor:
    return z @ VALUE_WEIGHTS


def test_value_error_is_zero_for_a_model_equal_to_the_data_dynamics_and_the_copy_baseline_for_identity():
    windows = cut_windows(linear_system_record(dones_at={(7, 1), (20, 3)}).record, H)
    exact = horizon_errors(LinearSystemModel(true_next), windows, value=linear_value)
    assert exact.wm_value_mse.abs().max() < 1e-10
    assert (exact.copy_value_mse > 1e-3).all()
    copying = horizon_errors(LinearSystemModel(lambda z, a: z), windows, value=linear_value)
    assert torch.equal(copying.wm_value_mse, copying.copy_value_mse)
    rows = validation_diagnostics(LinearSystemModel(lambda z, a: z), linear_system_record(), H, 0.99,
                                  value=linear_value).rows  # fmt: skip
    assert all(r["value_ratio"] == 1.0 for r in rows)
    summary = summary_columns(rows, math.nan)
    assert summary["value_ratio_hH"] == 1.0 and summary["wm_value_mse_hH"] == rows[-1]["wm_value_mse"]


def test_value_error_of_a_biased_model_is_the_value_of_its_accumulated_latent_offset():
    # next = A z + B a + d: after h steps the imagined latent is off by sum_{k<h} A^k d in every window
    bias = torch.tensor([0.05, -0.02, 0.01])
    windows = cut_windows(linear_system_record().record, H)
    errors = horizon_errors(LinearSystemModel(lambda z, a: true_next(z, a) + bias), windows, value=linear_value)
    offset, expected = torch.zeros(OBS), []
    for _ in range(H):
        offset = offset @ A_MATRIX.T + bias
        expected.append(float(offset @ VALUE_WEIGHTS) ** 2)
    assert errors.wm_value_mse.tolist() == pytest.approx(expected, rel=1e-4)


def test_model_equal_to_the_data_dynamics_has_zero_latent_and_reward_error():
    windows = cut_windows(linear_system_record(dones_at={(7, 1), (20, 3)}).record, H)
    errors = horizon_errors(LinearSystemModel(true_next), windows)
    assert errors.wm_latent_mse.abs().max() < 1e-10
    assert errors.wm_reward_mse.abs().max() < 1e-10
    assert (errors.copy_latent_mse > 1e-3).all()


def test_reward_error_grows_along_the_horizon_when_only_the_dynamics_are_wrong():
    windows = cut_windows(linear_system_record().record, H)
    errors = horizon_errors(LinearSystemModel(lambda z, a: z), windows)
    assert float(errors.wm_reward_mse[0]) < 1e-10  # scored on E(o_0): no imagined latent yet
    assert (errors.wm_reward_mse[1:] > 1e-3).all()


def test_reward_error_is_in_the_world_models_units():
    rms = RunningMeanStd(())
    rms.update(torch.tensor([0.0, 4.0, 8.0]))
    std = float(rms.std())
    assert reward_units("none", rms, 5.0)(torch.tensor([3.0])).item() == 3.0
    assert reward_units("std", rms, 5.0)(torch.tensor([3.0])).item() == pytest.approx(3.0 / std)
    assert reward_units("meanstd", rms, 0.1)(torch.tensor([100.0])).item() == pytest.approx(0.1)


def test_windows_never_cross_an_episode_end():
    ends = {(5, 0), (6, 0), (10, 2), (T - 1, 4), (0, 3)}
    recorder = EpisodeRecorder(T, N, 2, 1, torch.device("cpu"))
    episode = torch.zeros(N)
    for t in range(T):
        done = torch.tensor([(t, n) in ends for n in range(N)])
        obs = torch.stack([episode, torch.full((N,), float(t))], dim=1)  # (episode id, time)
        next_obs = torch.stack([episode, torch.full((N,), float(t + 1))], dim=1)
        recorder.add(t, obs, torch.zeros(N, 1), torch.zeros(N), next_obs, done)
        episode = episode + done.float()
    windows = cut_windows(recorder.record, H)
    # every window lies in one episode and its observations are consecutive
    assert (windows.obs[:, :, 0] == windows.obs[:, :1, 0]).all()
    assert (windows.obs[:, 1:, 1] - windows.obs[:, :-1, 1] == 1).all()

    # and every such window is found: T - H + 1 starts per env, minus those with an end before their last step
    def crossing(t, n):
        return any((s, n) in ends for s in range(t, t + H - 1))

    expected = sum(not crossing(t, n) for t in range(T - H + 1) for n in range(N))
    assert windows.obs.shape == (expected, H + 1, 2)
    strided = cut_windows(recorder.record, H, stride=H)
    assert (strided.obs[:, 0, 1] % H == 0).all()


def test_no_window_gives_nan_errors():
    recorder = EpisodeRecorder(3, 2, OBS, ACT, torch.device("cpu"))
    windows = cut_windows(recorder.record, H)  # episodes shorter than the horizon
    assert windows.obs.shape[0] == 0
    errors = horizon_errors(LinearSystemModel(true_next), windows)
    assert all(math.isnan(float(v)) for v in errors.wm_latent_mse)


def test_start_steps_leave_a_horizon_and_skip_the_reset():
    assert start_steps(1000, 16, 4) == [196, 393, 590, 787]
    assert start_steps(10, 16, 4) == []
    assert all(0 < t <= 50 - 4 for t in start_steps(50, 4, 3))


# A smooth toy system: x_{t+1} = x_t + a_t (vectors of A entries), r_t = -|x_{t+1} - goal|^2. Its return as a function
# of the action sequence is known in closed form through autograd, so a "model" with the same return must agree.
GOAL = torch.tensor([0.3, -0.2], dtype=torch.float64)
X0 = torch.tensor([0.1, 0.4], dtype=torch.float64)
GAMMA = 0.9


def toy_returns(actions: torch.Tensor) -> torch.Tensor:
    """Batched: `[M, H, A] -> [M]`."""
    x = X0.expand(actions.shape[0], -1)
    total = torch.zeros(actions.shape[0], dtype=actions.dtype)
    for t in range(actions.shape[1]):
        x = x + actions[:, t]
        total = total + GAMMA**t * -(x - GOAL).pow(2).sum(-1)
    return total


def toy_actions():
    return torch.tensor([[0.2, -0.1], [0.0, 0.3], [-0.4, 0.1]], dtype=torch.float64)


def test_gradient_cosine_is_one_when_the_model_return_is_the_env_return():
    actions = toy_actions()
    fd = finite_difference_gradient(toy_returns, actions, 1e-4)
    exact = model_gradient(lambda a: toy_returns(a.unsqueeze(0))[0], actions)
    assert torch.allclose(fd, exact, atol=1e-6)
    assert gradient_cosine(lambda a: toy_returns(a.unsqueeze(0))[0], toy_returns, actions, 1e-4) == pytest.approx(
        1.0, abs=1e-8
    )


def test_per_step_cosine_finds_the_step_where_the_model_gradient_goes_wrong():
    actions = toy_actions()

    def wrong_last_action(a):  # the model ignores how the last action moves x (its reward term is cut off)
        cut = torch.cat([a[:-1], a[-1:].detach()])
        return toy_returns(cut.unsqueeze(0))[0]

    agreement = gradient_agreement(wrong_last_action, toy_returns, actions, 1e-4)
    assert agreement.per_step[:-1] == pytest.approx([1.0, 1.0], abs=1e-8)
    assert math.isnan(agreement.per_step[-1])  # a zero model gradient has no direction
    assert 0 < agreement.cosine < 1
    # the two gradients it compared: the env's is the finite differences', the model's is zero at the last action
    assert torch.equal(agreement.env, finite_difference_gradient(toy_returns, actions, 1e-4))
    assert agreement.model[-1].abs().sum() == 0 and torch.allclose(agreement.model[:-1], agreement.env[:-1], atol=1e-6)


def test_gradient_cosine_is_minus_one_for_a_negated_model():
    actions = toy_actions()
    negated = gradient_cosine(lambda a: -toy_returns(a.unsqueeze(0))[0], toy_returns, actions, 1e-4)
    assert negated == pytest.approx(-1.0, abs=1e-8)


def test_cosine_of_a_zero_gradient_is_nan():
    assert math.isnan(cosine(torch.zeros(3), torch.ones(3)))
    assert cosine(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 2.0])) == 0.0


def test_model_return_rolls_out_the_world_model():
    model = LinearSystemModel(true_next)
    obs = torch.tensor([0.5, -0.5, 1.0])
    actions = torch.tensor([[0.1, 0.2], [-0.3, 0.4]])
    expected = true_reward(obs, actions[0]) + 0.5 * true_reward(true_next(obs, actions[0]), actions[1])
    assert model_return(model, obs, 0.5)(actions).item() == pytest.approx(expected.item())


def action_record(actions: torch.Tensor, dones: torch.Tensor) -> EpisodeRecord:
    steps, envs, _ = actions.shape
    zeros = torch.zeros(steps, envs, OBS)
    return EpisodeRecord(zeros, actions, torch.zeros(steps, envs), zeros, dones)


def action_jitter(record: EpisodeRecord) -> float:
    return action_columns(record)["action_jitter"]


def action_saturation(record: EpisodeRecord) -> float:
    return action_columns(record)["action_saturation"]


def test_action_jitter_is_zero_for_a_constant_action_and_two_for_one_flipping_between_the_bounds():
    no_end = torch.zeros(6, 2, dtype=torch.bool)
    assert action_jitter(action_record(torch.full((6, 2, ACT), 0.3), no_end)) == 0.0
    flipping = torch.tensor([1.0, -1.0] * 3).reshape(6, 1, 1).expand(6, 2, ACT)
    assert action_jitter(action_record(flipping, no_end)) == pytest.approx(2.0)
    # one entry flips, the other stays: half the per-entry mean
    half = torch.stack([flipping[..., 0], torch.zeros(6, 2)], dim=-1)
    assert action_jitter(action_record(half, no_end)) == pytest.approx(1.0)


def test_action_jitter_counts_only_step_pairs_inside_each_envs_first_episode():
    # env 0 ends its episode at step 1: only the pair (0, 1) counts, not the big jumps after its reset; env 1 runs on
    actions = torch.tensor([[[0.0], [0.0]], [[0.5], [0.1]], [[-1.0], [0.2]], [[1.0], [0.3]]])
    dones = torch.tensor([[False, False], [True, False], [False, False], [False, False]])
    assert action_jitter(action_record(actions, dones)) == pytest.approx((0.5 + 0.1 + 0.1 + 0.1) / 4)
    assert math.isnan(action_jitter(action_record(actions[:1], dones[:1])))  # one step: no pair


def test_action_saturation_is_the_fraction_of_entries_at_the_tanh_bounds_inside_each_first_episode():
    no_end = torch.zeros(4, 2, dtype=torch.bool)
    assert action_saturation(action_record(torch.full((4, 2, ACT), 0.3), no_end)) == 0.0
    assert action_saturation(action_record(torch.full((4, 2, ACT), -0.995), no_end)) == 1.0
    one_entry = torch.stack([torch.full((4, 2), 0.99), torch.zeros(4, 2)], dim=-1)  # the threshold counts
    assert action_saturation(action_record(one_entry, no_end)) == pytest.approx(0.5)
    # env 0 ends at step 1: its steps 0 and 1 count (saturated, then not), its saturated steps after the reset do
    # not; env 1's four steps: one saturated -> (1 + 1) / (2 + 4)
    actions = torch.tensor([[[1.0], [0.0]], [[0.5], [0.1]], [[-1.0], [1.0]], [[1.0], [0.3]]])
    dones = torch.tensor([[False, False], [True, False], [False, False], [False, False]])
    assert action_saturation(action_record(actions, dones)) == pytest.approx(2 / 6)
    assert action_saturation(action_record(actions[:1], dones[:1])) == 0.5  # one step is enough
    assert math.isnan(action_jitter(action_record(actions[:1], dones[:1])))


def test_action_magnitude_is_the_mean_absolute_action_entry_inside_each_first_episode():
    no_end = torch.zeros(4, 2, dtype=torch.bool)
    assert action_columns(action_record(torch.zeros(4, 2, ACT), no_end))["action_magnitude"] == 0.0
    assert action_columns(action_record(torch.full((4, 2, ACT), -1.0), no_end))["action_magnitude"] == 1.0
    half = torch.stack([torch.full((4, 2), 0.5), torch.full((4, 2), -0.25)], dim=-1)  # entries 0.5 and 0.25
    assert action_columns(action_record(half, no_end))["action_magnitude"] == pytest.approx(0.375)
    # env 0 ends at step 1: its |a| 1 and 0.5 count, not the steps after its reset; env 1's four steps count
    actions = torch.tensor([[[1.0], [0.0]], [[0.5], [0.1]], [[-1.0], [1.0]], [[1.0], [0.3]]])
    dones = torch.tensor([[False, False], [True, False], [False, False], [False, False]])
    magnitude = action_columns(action_record(actions, dones))["action_magnitude"]
    assert magnitude == pytest.approx((1.0 + 0.5 + 0.0 + 0.1 + 1.0 + 0.3) / 6)


def test_policy_shift_is_the_mean_absolute_action_change_on_the_recorded_first_episode_states():
    # env 0 ends at step 1: its steps after the reset do not count; the earlier policy acts by the observation, so a
    # step that counted by mistake would change the answer
    actions = torch.tensor([[[1.0], [0.0]], [[0.5], [0.1]], [[-1.0], [1.0]], [[1.0], [0.3]]])
    dones = torch.tensor([[False, False], [True, False], [False, False], [False, False]])
    obs = torch.arange(8.0).reshape(4, 2, 1).expand(4, 2, OBS)  # step t of env n observes 2t + n
    record = EpisodeRecord(obs, actions, torch.zeros(4, 2), obs, dones)
    assert policy_shift(record, lambda o: record.actions[first_episode_steps(dones)]) == 0.0  # the same policy
    assert policy_shift(record, lambda o: torch.zeros(len(o), 1)) == pytest.approx(
        (1.0 + 0.5 + 0.0 + 0.1 + 1.0 + 0.3) / 6
    )
    # an earlier policy that acted -a_t + (2t + n) / 10 where this one acts a_t: |2 a_t - (2t + n) / 10| per step
    earlier = lambda o: -record.actions[first_episode_steps(dones)] + o[:, :1] / 10  # noqa: E731
    counted = [(1.0, 0.0), (0.0, 0.1), (0.5, 0.2), (0.1, 0.3), (1.0, 0.5), (0.3, 0.7)]  # (a, (2t + n) / 10)
    expected = sum(abs(2 * a - o) for a, o in counted) / 6
    assert policy_shift(record, earlier) == pytest.approx(expected)


def test_a_recorder_of_blocks_splits_into_what_each_blocks_lone_recorder_records():
    """A stack's validation envs (2 seeds x 3 envs) recorded together: each block's part holds its envs' rows and the
    start states a lone recorder of its 3 envs keeps (the k-th start's env k mod 3, its own rows)."""
    steps, blocks, size, gen = 5, 2, 3, torch.Generator().manual_seed(1)
    together = EpisodeRecorder(steps, blocks * size, OBS, ACT, torch.device("cpu"), blocks=blocks)
    lone = [EpisodeRecorder(steps, size, OBS, ACT, torch.device("cpu")) for _ in range(blocks)]
    for t in range(steps):
        step = (torch.randn(blocks * size, OBS, generator=gen), torch.rand(blocks * size, ACT, generator=gen),
                torch.randn(blocks * size, generator=gen), torch.randn(blocks * size, OBS, generator=gen),
                torch.rand(blocks * size, generator=gen) < 0.3)  # fmt: skip
        q, qd = torch.randn(blocks * size, 15, generator=gen), torch.randn(blocks * size, 14, generator=gen)
        if t in (1, 2, 4):
            together.add_joint_states(t, q, qd)
        together.add(t, *step)
        for b, recorder in enumerate(lone):
            rows = slice(b * size, (b + 1) * size)
            if t in (1, 2, 4):
                recorder.add_joint_state(t, len(recorder.joint_states) % size, q[rows], qd[rows])
            recorder.add(t, *(x[rows] for x in step))
    parts = together.split()
    assert len(parts) == blocks
    for part, recorder in zip(parts, lone, strict=True):
        for mine, theirs in zip(part.record, recorder.record, strict=True):
            assert mine.is_contiguous() and torch.equal(mine, theirs)
        assert part.joint_states.keys() == recorder.joint_states.keys() == {1, 2, 4}
        for t, (env, q, qd) in recorder.joint_states.items():
            assert part.joint_states[t][0] == env and torch.equal(part.joint_states[t][1], q)
            assert torch.equal(part.joint_states[t][2], qd)
        assert [env for env, _, _ in part.joint_states.values()] == [0, 1, 2]
    alone = EpisodeRecorder(steps, size, OBS, ACT, torch.device("cpu"))
    assert alone.split() == [alone]
    with pytest.raises(ValueError, match="7 envs cannot be split into 2 equal blocks"):
        EpisodeRecorder(steps, 7, OBS, ACT, torch.device("cpu"), blocks=2)


# ----------------------------------------------------------------------------------------------------------------
# The actor's objective split into its reward and value terms
# ----------------------------------------------------------------------------------------------------------------

GAIN = torch.tensor([1.0, -2.0])


class TranslationModel:
    """Latents are observations (E = identity) that the action moves: next(z, a) = z + a; reward(z, a) = GAIN . a."""

    def encode(self, o):
        return o

    def next(self, z, a, generator=None):
        return z + a

    def reward(self, z, a):
        return a @ GAIN


class TanhActor(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.mu = torch.nn.Linear(ACT, ACT)

    def act(self, z):
        return torch.tanh(self.mu(z))


def starts(n: int = 6) -> torch.Tensor:
    return torch.randn(n, ACT, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_a_value_along_the_reward_gives_parallel_gradients_scaled_by_gamma_to_the_horizon(sign):
    # H = 1: the reward term GAIN . a_0 and the value term gamma sign GAIN . (z_0 + a_0) have the action gradients
    # GAIN and gamma sign GAIN, so through the same actor their parameter gradients are parallel (or opposite), the
    # value's gamma times as long.
    split = objective_split(TranslationModel(), TanhActor(), lambda z: sign * (z @ GAIN), starts(), 1, 0.9)
    assert split.reward_norm > 0
    assert split.value_norm == pytest.approx(0.9 * split.reward_norm, rel=1e-6)  # float32 gradients
    assert split.cosine == pytest.approx(sign, abs=1e-6)


def test_a_flat_critic_carries_none_of_the_update():
    split = objective_split(TranslationModel(), TanhActor(), lambda z: 0.0 * z.sum(-1), starts(), 3, 0.9)
    assert split.reward_norm > 0 and split.value_norm == 0.0 and math.isnan(split.cosine)


def test_the_split_differentiates_through_the_states_only_and_touches_no_model_gradient():
    # H = 2, reward GAIN . a_t: the actor reads sg(z_1), so a_0 reaches the value gamma^2 GAIN . (z_0 + a_0 + a_1)
    # only through z_2, never through a_1; the reward term's gradient is GAIN through both actions. Checked against
    # the same sums formed by hand, and no parameter's .grad is set.
    actor, obs, gamma = TanhActor(), starts(), 0.9
    split = objective_split(TranslationModel(), actor, lambda z: z @ GAIN, obs, 2, gamma)
    a0 = actor.act(obs)
    a1 = actor.act((obs + a0).detach())
    params = list(actor.parameters())
    by_hand = [((a0 + gamma * a1) @ GAIN).mean(), gamma**2 * ((obs + a0 + a1) @ GAIN).mean()]
    grads = [torch.cat([g.flatten() for g in torch.autograd.grad(t, params, retain_graph=True)]) for t in by_hand]
    assert split.reward_norm == pytest.approx(float(grads[0].norm()), rel=1e-6)
    assert split.value_norm == pytest.approx(float(grads[1].norm()), rel=1e-6)
    assert split.cosine == pytest.approx(cosine(grads[0], grads[1]), abs=1e-6)
    assert all(p.grad is None for p in actor.parameters())


def test_no_start_gives_no_split():
    split = objective_split(TranslationModel(), TanhActor(), lambda z: z @ GAIN, torch.zeros(0, ACT), 2, 0.9)
    assert all(math.isnan(x) for x in split)


def test_validation_diagnostics_report_the_split_of_the_recorded_windows_starts():
    # the linear system's windows, a value and an actor: the split validation reports is objective_split's at the
    # windows' first observations, and summary_columns carries it into validation.csv's columns
    actor = torch.nn.Module()
    actor.mu = torch.nn.Linear(OBS, ACT)
    actor.act = lambda z: torch.tanh(actor.mu(z))
    record = linear_system_record(dones_at={(7, 1), (20, 3)})  # two ended episodes: their returns are whole
    rows, grad, split, fit, real = validation_diagnostics(LinearSystemModel(true_next), record, H, 0.99,
                                                          value=linear_value, actor=actor)  # fmt: skip
    first_obs = cut_windows(record.record, H, stride=H).obs[:, 0]
    assert split == objective_split(LinearSystemModel(true_next), actor, linear_value, first_obs, H, 0.99)
    assert split.reward_norm > 0 and split.value_norm > 0
    summary = summary_columns(rows, grad, split)
    assert (
        summary["actor_grad_reward_norm"],
        summary["actor_grad_value_norm"],
        summary["actor_grad_terms_cosine"],
        summary["imagined_reward_term"],
        summary["imagined_value_term"],
    ) == tuple(split)
    windows = cut_windows(record.record, H, stride=H)
    assert real == real_terms(LinearSystemModel(true_next), linear_value, windows, 0.99)
    assert math.isnan(summary["real_reward_term"])  # not passed
    summary = summary_columns(rows, grad, split, real=real)
    assert (summary["real_reward_term"], summary["real_value_term"]) == tuple(real)
    # and the critic's fit on the recorded episodes, as critic_fit finds it
    assert fit == critic_fit(LinearSystemModel(true_next), linear_value, record.record, 0.99)
    assert fit.states == 8 + 21  # the ended episodes' steps (40 steps leave every other tail cut too short)
    assert math.isnan(summary["critic_explained_variance"]) and math.isnan(summary["critic_bias"])  # not passed
    summary = summary_columns(rows, grad, split, fit)
    assert (summary["critic_explained_variance"], summary["critic_bias"], summary["critic_return_mean"]) == (
        fit.explained_variance,
        fit.bias,
        fit.return_mean,
    )


# ------------------------------------------------------------------------------------------------------------------
# The critic against the real returns
# ------------------------------------------------------------------------------------------------------------------


def test_returns_to_go_by_hand():
    # one env, T = 4, gamma 0.5: rewards 1, 2, 3, 4 with a done at step 1 (the episode ends there; a new one starts)
    rewards = torch.tensor([[1.0], [2.0], [3.0], [4.0]])
    dones = torch.tensor([[False], [True], [False], [False]])
    G, left_out = returns_to_go(rewards, dones, 0.5)
    assert G.squeeze(1).tolist() == [1 + 0.5 * 2, 2, 3 + 0.5 * 4, 4]
    # the ended episode's returns are whole; the last one is cut at the record's end: gamma^(steps to the end)
    assert left_out.squeeze(1).tolist() == [0, 0, 0.25, 0.5]
    # a done at the record's last step may be the step limit's truncation: still a cut
    G, left_out = returns_to_go(rewards, torch.tensor([[False], [False], [False], [True]]), 0.5)
    assert left_out.squeeze(1).tolist() == [0.5**4, 0.5**3, 0.25, 0.5]


class ValueOfTheRecord:
    """A 'critic' that reads the recorded return-to-go off the observation's index (the observations are the
    indices t * N + n): exact on every counted state."""

    def __init__(self, G, shift=0.0, scale=1.0):
        self.values, self.shift, self.scale = G.flatten(), shift, scale

    def __call__(self, z):
        return self.scale * self.values[z[..., 0].long()] + self.shift


def indexed_record(rewards, dones):
    T, N = rewards.shape
    obs = torch.arange(T * N, dtype=torch.float32).view(T, N, 1)
    return EpisodeRecord(obs, torch.zeros(T, N, 1), rewards, obs, dones)


def test_critic_fit_of_the_exact_critic_a_shifted_one_and_a_constant_one():
    gen = torch.Generator().manual_seed(0)
    T, N, gamma = 60, 3, 0.9
    rewards = torch.rand(T, N, generator=gen)
    dones = torch.zeros(T, N, dtype=torch.bool)
    dones[20, 1] = True  # env 1's first episode ends at step 20
    record = indexed_record(rewards, dones)
    G, left_out = returns_to_go(rewards, dones, gamma)
    model = LinearSystemModel(None)  # E = identity
    exact = critic_fit(model, ValueOfTheRecord(G), record, gamma, cut=0.01)
    counted = int((left_out <= 0.01).sum())
    # 0.9^44 = 0.0097: steps 0..16 of a 60-step record are counted, and env 1's steps 0..20 (its episode ended)
    assert exact.states == counted == 17 + 21 + 17
    assert exact.explained_variance == pytest.approx(1.0) and exact.bias == pytest.approx(0.0, abs=1e-12)
    shifted = critic_fit(model, ValueOfTheRecord(G, shift=0.5), record, gamma, cut=0.01)
    assert shifted.explained_variance == pytest.approx(1.0) and shifted.bias == pytest.approx(0.5)
    assert shifted.return_mean == pytest.approx(float(G[left_out <= 0.01].mean()))
    mean = float(G[left_out <= 0.01].mean())
    constant = critic_fit(model, lambda z: torch.full(z.shape[:-1], mean), record, gamma, cut=0.01)
    assert constant.explained_variance == pytest.approx(0.0, abs=1e-9) and constant.bias == pytest.approx(0.0, abs=1e-6)
    # a critic that ranks states the wrong way round is worse than the mean: negative
    inverted = critic_fit(model, ValueOfTheRecord(G, shift=2 * mean, scale=-1.0), record, gamma, cut=0.01)
    assert inverted.explained_variance == pytest.approx(-3.0)


def test_critic_fit_in_the_world_models_reward_units():
    # rewards normalised for the world model: the returns are summed in those units, so the exact critic of the
    # normalised returns fits exactly
    T, N, gamma = 50, 2, 0.8
    rewards = torch.rand(T, N, generator=torch.Generator().manual_seed(1)) * 10
    dones = torch.zeros(T, N, dtype=torch.bool)

    def units(r):
        return (r - 5.0) / 2.0

    G, _ = returns_to_go(units(rewards), dones, gamma)
    fit = critic_fit(LinearSystemModel(None), ValueOfTheRecord(G), indexed_record(rewards, dones), gamma, units)
    assert fit.explained_variance == pytest.approx(1.0)
    raw = critic_fit(LinearSystemModel(None), ValueOfTheRecord(G), indexed_record(rewards, dones), gamma)
    assert raw.bias < -10  # in raw units the returns are ~5x larger: the same critic reads far too low


def test_critic_fit_without_counted_states_is_nan():
    rewards, dones = torch.ones(5, 2), torch.zeros(5, 2, dtype=torch.bool)  # 5 steps: every tail is cut too short
    fit = critic_fit(LinearSystemModel(None), lambda z: z[..., 0], indexed_record(rewards, dones), 0.99)
    assert fit.states == 0 and math.isnan(fit.explained_variance) and math.isnan(fit.bias)


# ------------------------------------------------------------------------------------------------------------------
# The actor's two terms as imagined and as the env paid them
# ------------------------------------------------------------------------------------------------------------------


def policy_record(actor, dones_at=()):
    """The linear system driven by `actor.act(o)` (deterministic, E = identity), as validation records its policy."""
    return linear_system_record(dones_at, policy=actor.act, seed=2).record


def test_a_model_equal_to_the_env_imagines_the_policys_terms_as_the_env_pays_them():
    # The record is the policy's own closed loop; the exact model imagines the same H steps from the same starts, so
    # the imagined reward and value terms equal the paid ones (float32 rollouts against float64 sums).
    actor = linear_actor()
    windows = cut_windows(policy_record(actor), H, stride=H)
    split = objective_split(LinearSystemModel(true_next), actor, linear_value, windows.obs[:, 0], H, 0.99)
    paid = real_terms(LinearSystemModel(true_next), linear_value, windows, 0.99)
    assert paid.reward_term != 0.0 and paid.value_term != 0.0
    assert split.reward_term == pytest.approx(paid.reward_term, rel=1e-5)
    assert split.value_term == pytest.approx(paid.value_term, rel=1e-5)


def test_a_model_that_stands_still_imagines_the_first_reward_for_every_step():
    # next(z, a) = z: the imagined policy repeats its first step, so its reward term is sum_t gamma^t R(o_0, a_0)
    # and its value term gamma^H V(o_0); the paid terms stay the env's.
    actor, gamma = linear_actor(), 0.9
    windows = cut_windows(policy_record(actor), H, stride=H)
    o0 = windows.obs[:, 0]
    split = objective_split(LinearSystemModel(lambda z, a: z), actor, linear_value, o0, H, gamma)
    with torch.no_grad():
        first = true_reward(o0, actor.act(o0)).double()
    expected_reward = float((first * sum(gamma**t for t in range(H))).mean())
    assert split.reward_term == pytest.approx(expected_reward, rel=1e-5)
    assert split.value_term == pytest.approx(float(gamma**H * linear_value(o0).double().mean()), rel=1e-5)
    assert split.value_norm == 0.0  # V(z_H) = V(o_0) does not depend on the actions
    paid = real_terms(LinearSystemModel(lambda z, a: z), linear_value, windows, gamma)
    assert paid == real_terms(LinearSystemModel(true_next), linear_value, windows, gamma)  # no model in the paid terms


def test_the_paid_terms_are_the_windows_discounted_rewards_and_no_value_after_an_ended_episode():
    # A done at t = 7 of env 1 ends the window 4..7 at its last transition: its real terminal value is 0.
    actor, gamma = linear_actor(), 0.9
    windows = cut_windows(policy_record(actor, dones_at={(7, 1)}), H, stride=H)
    assert int(windows.ended.sum()) == 1
    paid = real_terms(LinearSystemModel(true_next), linear_value, windows, gamma, units=lambda r: 2.0 * r)
    discounts = torch.tensor([gamma**t for t in range(H)], dtype=torch.float64)
    by_hand = (2.0 * windows.rewards.double() * discounts).sum(1).mean()
    values = torch.where(windows.ended, 0.0, gamma**H * linear_value(windows.obs[:, -1]).double())
    assert paid.reward_term == pytest.approx(float(by_hand), rel=1e-12)
    assert paid.value_term == pytest.approx(float(values.mean()), rel=1e-12)
    no_windows = cut_windows(policy_record(actor), T + 1)
    assert all(math.isnan(x) for x in real_terms(LinearSystemModel(true_next), linear_value, no_windows, gamma))
