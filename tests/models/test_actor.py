"""The actor's tanh slope (`log_tanh_slope`, `Actor.sample_with_terms`), the optional saturation penalty made of
it (`saturation_penalty`; `pwm.actor_saturation_coef`, `pwm.actor_saturation_threshold`), and its std's floor."""

import math

import torch

from flow_mbpo_pwm.models.actor import Actor, log_tanh_slope, saturation_penalty


def test_log_tanh_slope_is_the_log_of_tanhs_derivative_and_keeps_a_gradient_where_tanh_is_flat():
    u = torch.tensor([-3.0, -0.5, 0.0, 0.7, 2.0], dtype=torch.float64)
    assert torch.allclose(log_tanh_slope(u), torch.log(1 - torch.tanh(u) ** 2), rtol=1e-12, atol=1e-12)
    assert log_tanh_slope(torch.tensor(0.0)) == 0.0  # tanh'(0) = 1
    # Saturated: 1 - tanh(u)^2 rounds to 0 in float32 (log gives -inf), the closed form stays finite, with the
    # gradient -2 tanh(u) pointing back to the linear range.
    far = torch.tensor([20.0, -20.0], requires_grad=True)
    assert torch.isinf(torch.log(1 - torch.tanh(far.detach()) ** 2)).all()
    value = log_tanh_slope(far)
    assert torch.allclose(value, torch.tensor([2 * (math.log(2) - 20.0)] * 2))
    (grad,) = torch.autograd.grad(value.sum(), far)
    assert torch.allclose(grad, torch.tensor([-2.0, 2.0]))


def test_sample_with_terms_samples_bitwise_as_sample_does():
    torch.manual_seed(0)
    actor = Actor(latent_dim=6, act_dim=3, units=(8, 8))
    z, noise = torch.randn(5, 6), torch.randn(5, 3)
    action, log_slope, mean_action = actor.sample_with_terms(z, noise)
    assert torch.equal(action, actor.sample(z, noise=noise))
    assert torch.equal(mean_action, actor.act(z))
    u = actor(z) + actor.std() * noise
    assert log_slope.shape == (5, 3)
    assert torch.allclose(log_slope, torch.log(1 - torch.tanh(u) ** 2), atol=1e-6)


def test_the_saturation_penalty_without_a_threshold_is_the_mean_negative_log_slope():
    log_slope = log_tanh_slope(torch.tensor([[0.0, 0.5, -2.0], [3.0, -0.1, 1.0]]))
    assert torch.equal(saturation_penalty(log_slope), -log_slope.mean(-1))
    assert (saturation_penalty(log_slope) >= 0).all()


def test_a_threshold_leaves_actions_below_it_free_and_pulls_saturated_ones_back_as_before():
    # |a| = tanh(|u|): 0.0, 0.46, 0.96 and 0.9999 for u = 0, 0.5, 2 and 5; threshold 0.95 (u0 = atanh(0.95) ~ 1.83).
    u = torch.tensor([[0.0, 0.5, -2.0, 5.0]], dtype=torch.float64, requires_grad=True)
    penalty = saturation_penalty(log_tanh_slope(u), threshold=0.95)
    beyond = -torch.log(1 - torch.tanh(u.detach()) ** 2) + math.log(1 - 0.95**2)  # per entry, where |a| > 0.95
    expected = torch.where(torch.tanh(u.detach()).abs() > 0.95, beyond, 0.0).mean(-1)
    torch.testing.assert_close(penalty, expected, rtol=1e-12, atol=1e-12)
    (grad,) = torch.autograd.grad(penalty.sum(), u)
    # No gradient below the threshold; beyond it d/du (-log tanh'(u)) / 4 entries = 2 tanh(u) / 4, as without one.
    a = torch.tanh(u.detach())
    torch.testing.assert_close(grad, torch.where(a.abs() > 0.95, 2 * a / 4, 0.0))
    # At |a| exactly the threshold the penalty is 0, and it rises continuously from there.
    at = torch.tensor([math.atanh(0.95)], dtype=torch.float64)
    assert saturation_penalty(log_tanh_slope(at), threshold=0.95).abs().item() < 1e-12


def test_the_std_floor_is_a_tensor_set_in_place_and_no_part_of_the_saved_policy():
    actor = Actor(latent_dim=6, act_dim=3, units=(8,), init_logstd=-1.0, min_logstd=-1.5)
    floor = actor.logstd_floor
    with torch.no_grad():
        actor.logstd.copy_(torch.tensor([-2.0, -1.2, 0.0]))
    torch.testing.assert_close(actor.std(), torch.tensor([-1.5, -1.2, 0.0]).exp())
    actor.set_floor(-1.0)  # raised: the std and the parameter's clamp follow it
    assert actor.logstd_floor is floor and floor.item() == -1.0  # the same tensor (a captured graph reads it)
    torch.testing.assert_close(actor.std(), torch.tensor([-1.0, -1.0, 0.0]).exp())
    actor.clamp_logstd_()
    assert actor.logstd.tolist() == [-1.0, -1.0, 0.0]
    assert "logstd_floor" not in actor.state_dict()  # a function of the epoch, not of the policy
    Actor(latent_dim=6, act_dim=3, units=(8,)).load_state_dict(actor.state_dict())
