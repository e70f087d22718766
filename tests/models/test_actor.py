"""The actor's tanh slope (`log_tanh_slope`, `Actor.sample_with_log_slope`): what the optional saturation penalty
(`pwm.actor_saturation_coef`) is made of."""

import math

import torch

from flow_mbpo_pwm.models.actor import Actor, log_tanh_slope


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


def test_sample_with_log_slope_samples_bitwise_as_sample_does():
    torch.manual_seed(0)
    actor = Actor(latent_dim=6, act_dim=3, units=(8, 8))
    z, noise = torch.randn(5, 6), torch.randn(5, 3)
    action, log_slope = actor.sample_with_log_slope(z, noise)
    assert torch.equal(action, actor.sample(z, noise=noise))
    u = actor(z) + actor.std() * noise
    assert log_slope.shape == (5,)
    assert torch.allclose(log_slope, torch.log(1 - torch.tanh(u) ** 2).mean(-1), atol=1e-6)
