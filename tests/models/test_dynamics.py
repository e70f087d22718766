"""The flow-matching dynamics' documented decisions (models/dynamics.py), each protected here."""

import pytest
import torch
from torch import nn

from flow_mbpo_pwm.config import DynamicsConfig
from flow_mbpo_pwm.models.dynamics import DeterministicDynamics, FlowDynamics, TimeEmbedding
from flow_mbpo_pwm.models.integrators import evaluation_times
from flow_mbpo_pwm.models.layers import NormedLinear, SimNorm

LATENT, ACT, GROUP = 16, 2, 8


def simplex_batch(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return SimNorm(GROUP)(torch.randn(n, LATENT, generator=g) * 2)


def flow(**overrides) -> FlowDynamics:
    config = DynamicsConfig(kind="flow", **overrides)
    return FlowDynamics(LATENT, ACT, (64, 64), GROUP, config)


def fit(net: nn.Module, inputs: torch.Tensor, target: torch.Tensor, steps: int = 400) -> float:
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in range(steps):
        loss = (net(inputs) - target).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return loss.item()


def test_velocity_head_ends_in_plain_linear_and_fits_negative_targets_a_simnorm_head_cannot():
    torch.manual_seed(0)
    dyn = flow(project="none")
    assert type(dyn.velocity_net[-1]) is nn.Linear
    # The fork's velocity target: x1 - x0 between two simplex latents (negative entries, zero group sums).
    z, z_next = simplex_batch(32, 1), simplex_batch(32, 2)
    target = z_next - z
    assert (target < 0).any()
    tau = torch.rand(32, 1)
    inputs = torch.cat([(1 - tau) * z + tau * z_next, torch.rand(32, ACT), dyn.time_embedding(tau)], -1)
    plain_loss = fit(dyn.velocity_net, inputs, target)
    # The same network with the fork's last layer (Linear -> LayerNorm -> SimNorm).
    torch.manual_seed(0)
    defective = flow(project="none").velocity_net
    defective[-1] = NormedLinear(64, LATENT, act=SimNorm(GROUP))
    simnorm_loss = fit(defective, inputs, target)
    # A SimNorm output has group sums 1 vs the target's 0: MSE >= (1/8)^2 per entry whatever it learns.
    assert simnorm_loss > 1.0 / GROUP**2 * 0.99
    assert plain_loss < 1e-3
    assert simnorm_loss > 20 * plain_loss


def test_simnorm_projection_is_the_exact_inverse_of_the_log_chart_and_keeps_latents_on_the_simplex():
    dyn = flow(project="simnorm")
    z = simplex_batch(10, 3)
    torch.testing.assert_close(dyn.from_flow_space(dyn.to_flow_space(z)), z)
    # Whatever the (untrained) velocity field, the integrated latent is a valid SimNorm latent.
    with torch.no_grad():
        for p in dyn.velocity_net.parameters():
            p.normal_(0, 0.5)
        out = dyn(z, torch.rand(10, ACT))
    torch.testing.assert_close(out.view(10, -1, GROUP).sum(-1), torch.ones(10, LATENT // GROUP))
    assert (out > 0).all()


def test_projection_none_returns_the_raw_integrated_state():
    dyn = flow(project="none", integrator="euler", substeps=1)
    z, a = simplex_batch(6, 4), torch.rand(6, ACT)
    with torch.no_grad():
        expected = z + dyn.velocity(z, a, 0.0)  # one Euler step from x0 = z
        torch.testing.assert_close(dyn(z, a), expected)


@pytest.mark.parametrize("project", ["simnorm", "none"])
def test_flow_loss_trains_the_integrated_latent_onto_the_target(project):
    torch.manual_seed(0)
    dyn = flow(project=project, integrator="heun", substeps=4)
    z, target, a = simplex_batch(16, 5), simplex_batch(16, 6), torch.rand(16, ACT) * 2 - 1
    gen = torch.Generator().manual_seed(0)
    opt = torch.optim.Adam(dyn.parameters(), lr=3e-3)
    initial = (dyn(z, a) - target).pow(2).mean().item()
    for _ in range(300):
        loss, _ = dyn.loss(z, a, target, gen)
        opt.zero_grad()
        loss.mean().backward()
        opt.step()
    with torch.no_grad():
        final = (dyn(z, a) - target).pow(2).mean().item()
    assert final < 0.05 * initial


def test_noise_source_is_stochastic_and_reproducible_from_the_generator():
    dyn = flow(source="noise")
    z, a = simplex_batch(4, 7), torch.rand(4, ACT)
    with torch.no_grad():
        first = dyn(z, a, torch.Generator().manual_seed(1))
        again = dyn(z, a, torch.Generator().manual_seed(1))
        other = dyn(z, a, torch.Generator().manual_seed(2))
    torch.testing.assert_close(first, again)
    assert not torch.allclose(first, other)
    assert dyn.velocity_net[0].in_features == LATENT + LATENT + ACT + 32  # x, conditioning [z, a], time


def test_time_embeddings():
    tau = torch.tensor([[0.0], [0.5], [1.0]])
    sinusoidal = TimeEmbedding("sinusoidal", 32)
    assert sinusoidal(tau).shape == (3, 32) and sinusoidal.dim == 32
    torch.testing.assert_close(sinusoidal(tau)[0], torch.cat([torch.zeros(16), torch.ones(16)]))
    raw = TimeEmbedding("raw", 32)
    assert raw.dim == 1 and torch.equal(raw(tau), tau)
    assert flow(time_embedding="raw").velocity_net[0].in_features == LATENT + ACT + 1


@pytest.mark.parametrize("integrator,substeps", [("euler", 3), ("heun", 4), ("rk4", 2)])
@pytest.mark.parametrize("kind", ["sinusoidal", "raw"])
def test_integration_times_use_precomputed_embeddings_equal_to_computed_ones(integrator, substeps, kind):
    """The integrator's evaluations read their time embedding from a table made once: exactly what computing it
    per evaluation gives, so the velocity and the integrated latent are bitwise the same."""
    dyn = flow(integrator=integrator, substeps=substeps, time_embedding=kind)
    z, a = simplex_batch(6, 3), torch.rand(6, ACT)
    x, cond = dyn._start(z, a, None)
    for t in evaluation_times(substeps, integrator):
        per_row = dyn.time_embedding(torch.full((6, 1), t))
        assert torch.equal(dyn.fixed_time_embeddings[dyn._time_rows[t]].expand(6, -1), per_row)
        direct = dyn.velocity_net(torch.cat([x, cond, per_row], dim=-1))
        assert torch.equal(dyn.velocity(x, cond, t), direct)
    computed = []
    dyn.time_embedding.register_forward_hook(lambda module, args, out: computed.append(args[0]))
    dyn(z, a)
    assert computed == []  # the integration computed no embedding
    dyn.velocity(x, cond, 0.3)  # any other time still works, computed
    assert len(computed) == 1


def test_both_dynamics_share_one_interface():
    z, a, target = simplex_batch(5, 8), torch.rand(5, ACT), simplex_batch(5, 9)
    for dyn in (DeterministicDynamics(LATENT, ACT, (32,), GROUP), flow()):
        assert dyn(z, a).shape == (5, LATENT)
        loss, z_next = dyn.loss(z, a, target, torch.Generator().manual_seed(0))
        assert loss.shape == (5,) and z_next.shape == (5, LATENT)


def test_residual_deterministic_dynamics_start_as_the_copy_baseline_and_stay_on_the_simplex():
    torch.manual_seed(0)
    dyn = DeterministicDynamics(LATENT, ACT, (64, 64), GROUP, residual=True)
    z, a = simplex_batch(32, 3), torch.rand(32, ACT) * 2 - 1
    assert torch.allclose(dyn(z, a), z, atol=1e-6)  # f starts at zero: z' = SimNorm(log z) = z
    target = simplex_batch(32, 4)
    opt = torch.optim.Adam(dyn.parameters(), lr=3e-3)
    for _ in range(200):
        loss, z_next = dyn.loss(z, a, target)
        opt.zero_grad()
        loss.mean().backward()
        opt.step()
    assert loss.mean().item() < 0.1 * (z - target).pow(2).mean().item()  # it learns the change
    groups = z_next.unflatten(-1, (-1, GROUP))
    assert (groups > 0).all() and torch.allclose(groups.sum(-1), torch.ones(()), atol=1e-5)


def test_residual_is_refused_for_flow_dynamics():
    from flow_mbpo_pwm.config import ConfigError

    with pytest.raises(ConfigError, match="dynamics.residual"):
        DynamicsConfig(kind="flow", residual=True).validate()


@pytest.mark.parametrize("project", ["simnorm", "none"])
def test_untrained_delta_flow_is_the_copy_baseline(project):
    """The velocity net's last layer starts at zero: x_1 = x_0, so the untrained flow predicts z' = z (as the residual
    deterministic model does), whatever the integrator."""
    torch.manual_seed(0)
    z, a = simplex_batch(32, 5), torch.rand(32, ACT) * 2 - 1
    for integrator in ("euler", "heun", "rk4"):
        assert torch.allclose(flow(project=project, integrator=integrator)(z, a), z, atol=1e-6)


def test_a_detached_source_keeps_the_flow_loss_off_the_encoder_but_not_the_rollout():
    """`detach_source`: the flow-matching loss sends no gradient into z through its source x_0 = log z, so it cannot
    shrink `x_1 - x_0` by moving z; its velocity net gets exactly the gradient it gets without the option, and the
    predicted next latent (which the rollout and the reward term continue from) still depends on z."""
    torch.manual_seed(0)
    attached, detached = flow(), flow(detach_source=True)
    nn.init.normal_(attached.velocity_net[-1].weight, std=0.1)  # a trained-looking velocity: z' depends on z
    detached.load_state_dict(attached.state_dict())
    z0, a, target = simplex_batch(32, 1), torch.rand(32, ACT) * 2 - 1, simplex_batch(32, 2)
    tau = torch.rand(32, 1)
    grads = []
    for model in (attached, detached):
        z = z0.clone().requires_grad_()
        loss, z_next = model.loss(z, a, target, tau=tau)
        (flow_grad_z,) = torch.autograd.grad(loss.sum(), z, retain_graph=True, allow_unused=True)
        velocity_grads = torch.autograd.grad(loss.sum(), list(model.velocity_net.parameters()), retain_graph=True)
        (rollout_grad_z,) = torch.autograd.grad((z_next * target).sum(), z)
        grads.append((flow_grad_z, velocity_grads, rollout_grad_z))
    (attached_z, attached_v, attached_roll), (detached_z, detached_v, detached_roll) = grads
    assert attached_z is not None and attached_z.abs().sum() > 0
    assert detached_z is None or torch.count_nonzero(detached_z) == 0
    for mine, theirs in zip(detached_v, attached_v, strict=True):
        torch.testing.assert_close(mine, theirs)
    assert detached_roll.abs().sum() > 0
    torch.testing.assert_close(detached_roll, attached_roll)


def test_detach_source_is_refused_where_it_means_nothing():
    from flow_mbpo_pwm.config import ConfigError

    for bad in (
        DynamicsConfig(kind="deterministic", detach_source=True),
        DynamicsConfig(kind="flow", source="noise", detach_source=True),
    ):
        with pytest.raises(ConfigError, match="dynamics.detach_source"):
            bad.validate()


def test_the_endpoint_term_adds_the_latent_mse_of_the_integrated_latent_and_trains_the_source_through_it():
    """`endpoint_coef` c: the loss is the flow-matching loss plus c x MSE(z', target) per sample, z' the integrated
    next latent the rollout continues from; c = 0 is the flow-matching loss alone, bitwise. With a detached source
    the flow-matching term sends no gradient into z, and the endpoint term does (through the integration)."""
    torch.manual_seed(0)
    plain, with_endpoint = flow(detach_source=True), flow(detach_source=True, endpoint_coef=2.5)
    nn.init.normal_(plain.velocity_net[-1].weight, std=0.1)
    with_endpoint.load_state_dict(plain.state_dict())
    z0, a, target = simplex_batch(32, 1), torch.rand(32, ACT) * 2 - 1, simplex_batch(32, 2)
    tau = torch.rand(32, 1)
    x0, x1 = torch.log(z0), torch.log(target)
    x_tau = (1 - tau) * x0 + tau * x1
    flow_matching = (plain.velocity(x_tau, a, tau) - (x1 - x0)).pow(2).mean(-1)

    z = z0.clone().requires_grad_()
    loss, z_next = plain.loss(z, a, target, tau=tau)
    assert torch.equal(loss, flow_matching)
    (grad_z,) = torch.autograd.grad(loss.sum(), z, allow_unused=True)
    assert grad_z is None or torch.count_nonzero(grad_z) == 0

    z = z0.clone().requires_grad_()
    loss, z_next_endpoint = with_endpoint.loss(z, a, target, tau=tau)
    torch.testing.assert_close(z_next_endpoint, z_next)
    torch.testing.assert_close(loss, flow_matching + 2.5 * (z_next - target).pow(2).mean(-1))
    (grad_z,) = torch.autograd.grad(loss.sum(), z)
    assert grad_z.abs().sum() > 0


def test_endpoint_coef_is_refused_where_it_means_nothing_or_is_not_a_weight():
    from flow_mbpo_pwm.config import ConfigError

    for bad in (
        DynamicsConfig(kind="deterministic", endpoint_coef=1.0),
        DynamicsConfig(kind="flow", endpoint_coef=-0.5),
        DynamicsConfig(kind="flow", endpoint_coef=float("nan")),
    ):
        with pytest.raises(ConfigError, match="dynamics.endpoint_coef"):
            bad.validate()


def test_the_simplex_loss_metric_weights_each_chart_error_by_its_probability_at_x_tau():
    """`loss_metric: simplex`: entry i of the velocity error counts as p_i e_i, p = SimNorm(x_tau); "chart" is the
    plain MSE, bitwise as before."""
    torch.manual_seed(0)
    chart, simplex = flow(detach_source=True), flow(detach_source=True, loss_metric="simplex")
    nn.init.normal_(chart.velocity_net[-1].weight, std=0.1)
    simplex.load_state_dict(chart.state_dict())
    z, a, target, tau = simplex_batch(32, 1), torch.rand(32, ACT) * 2 - 1, simplex_batch(32, 2), torch.rand(32, 1)
    x0, x1 = torch.log(z), torch.log(target)
    x_tau = (1 - tau) * x0 + tau * x1
    error = chart.velocity(x_tau, a, tau) - (x1 - x0)

    assert torch.equal(chart.loss(z, a, target, tau=tau)[0], error.pow(2).mean(-1))
    torch.testing.assert_close(simplex.loss(z, a, target, tau=tau)[0], (SimNorm(GROUP)(x_tau) * error).pow(2).mean(-1))


def test_under_the_simplex_metric_the_untrained_flows_loss_is_the_copy_baselines_latent_mse():
    """Known answer: the untrained delta flow predicts no change (its last layer is zero), so its error is the whole
    log-change. For a small change and tau = 0, weighted by p = z that is z' - z to first order: the loss is the copy
    baseline's latent MSE, the deterministic model's loss scale. The chart metric's is the log-change's MSE, far
    larger where entries are near zero."""
    z, a = simplex_batch(64, 3), torch.rand(64, ACT) * 2 - 1
    g = torch.Generator().manual_seed(4)
    target = SimNorm(GROUP)(torch.log(z) + 1e-3 * torch.randn(64, LATENT, generator=g))
    copy_mse = (target - z).pow(2).mean(-1)
    tau = torch.zeros(64, 1)

    simplex_loss = flow(detach_source=True, loss_metric="simplex").loss(z, a, target, tau=tau)[0]
    chart_loss = flow(detach_source=True).loss(z, a, target, tau=tau)[0]
    torch.testing.assert_close(simplex_loss, copy_mse, rtol=0.02, atol=0.0)
    assert (chart_loss > 10 * copy_mse).all()


def test_the_simplex_loss_metric_is_refused_outside_the_log_simplex_chart():
    from flow_mbpo_pwm.config import ConfigError

    for bad in (
        DynamicsConfig(kind="deterministic", loss_metric="simplex"),
        DynamicsConfig(kind="flow", project="none", loss_metric="simplex"),
    ):
        with pytest.raises(ConfigError, match="dynamics.loss_metric"):
            bad.validate()
