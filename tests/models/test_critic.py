import math

import torch
from torch import nn

from flow_mbpo_pwm.models.critic import CriticEnsemble


def independent_critics(ensemble: CriticEnsemble) -> list[nn.Sequential]:
    """The K critics as ordinary nn.Sequential networks holding copies of the ensemble's parameters."""
    critics = []
    for k in range(ensemble.num_critics):
        layers: list[nn.Module] = []
        for i, (w, b) in enumerate(zip(ensemble.weights, ensemble.biases, strict=True)):
            linear = nn.Linear(w.shape[1], w.shape[2])
            linear.weight.data.copy_(w[k].T)
            linear.bias.data.copy_(b[k, 0])
            layers.append(linear)
            if i < len(ensemble.norm_weights):
                norm = nn.LayerNorm(w.shape[2])
                norm.weight.data.copy_(ensemble.norm_weights[i][k, 0])
                norm.bias.data.copy_(ensemble.norm_biases[i][k, 0])
                layers += [nn.Mish(), norm]
        critics.append(nn.Sequential(*layers))
    return critics


def test_vectorised_ensemble_equals_three_independently_evaluated_critics():
    torch.manual_seed(0)
    ensemble = CriticEnsemble(24, (40, 20), num_critics=3)
    with torch.no_grad():  # non-trivial LayerNorm affines and biases, so every parameter is exercised
        for p in [*ensemble.norm_weights, *ensemble.norm_biases, *ensemble.biases]:
            p.add_(torch.randn_like(p) * 0.3)
    z = torch.randn(5, 7, 24)
    values = ensemble(z)
    assert values.shape == (3, 5, 7)
    for k, critic in enumerate(independent_critics(ensemble)):
        torch.testing.assert_close(values[k], critic(z).squeeze(-1))
    torch.testing.assert_close(ensemble.value(z), values.min(0).values)


def test_members_have_their_own_orthogonal_init_with_gain_sqrt2_and_zero_bias():
    torch.manual_seed(0)
    ensemble = CriticEnsemble(64, (32,), num_critics=3)
    w = ensemble.weights[0]  # [3, 64, 32]: columns orthogonal with norm sqrt(2)
    for k in range(3):
        torch.testing.assert_close(w[k].T @ w[k], 2.0 * torch.eye(32), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(w[0], w[1])
    assert all(torch.all(b == 0) for b in ensemble.biases)
    assert math.isclose(ensemble.weights[1][0].norm().item(), math.sqrt(2.0), rel_tol=1e-5)


def test_gradients_of_one_member_leave_the_others_untouched():
    ensemble = CriticEnsemble(8, (16,), num_critics=3)
    ensemble(torch.randn(4, 8))[1].sum().backward()
    grad = ensemble.weights[0].grad
    assert grad[1].abs().sum() > 0 and grad[0].abs().sum() == 0 and grad[2].abs().sum() == 0
