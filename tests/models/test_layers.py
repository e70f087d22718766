import torch
from torch import nn

from flow_mbpo_pwm.config import DynamicsConfig, WorldModelConfig
from flow_mbpo_pwm.models.layers import NormedLinear, SimNorm, mlp
from flow_mbpo_pwm.models.world_model import WorldModel


def test_simnorm_groups_are_probability_simplices_and_shape_is_kept():
    x = torch.randn(5, 3, 32) * 4
    y = SimNorm(8)(x)
    assert y.shape == x.shape
    groups = y.view(5, 3, 4, 8)
    torch.testing.assert_close(groups.sum(-1), torch.ones(5, 3, 4))
    assert (y > 0).all() and (y < 1).all()
    # Each group is the softmax of its own entries only.
    torch.testing.assert_close(groups[0, 0, 1], torch.softmax(x[0, 0, 8:16], dim=0))


def test_simnorm_rejects_a_width_that_is_not_a_multiple_of_the_group():
    try:
        SimNorm(8)(torch.zeros(2, 12))
    except ValueError as err:
        assert "multiple" in str(err)
    else:
        raise AssertionError("expected ValueError")


def test_normed_linear_init_trunc_normal_002_zero_bias_identity_layernorm():
    torch.manual_seed(0)
    layer = NormedLinear(256, 512)
    std = layer.weight.std().item()
    assert abs(std - 0.02) < 0.002
    assert layer.weight.abs().max().item() < 0.2  # trunc-normal: no stray large weights
    assert torch.all(layer.bias == 0)
    assert torch.all(layer.ln.weight == 1) and torch.all(layer.ln.bias == 0)
    assert isinstance(layer.act, nn.Mish)
    # Linear -> LayerNorm -> Mish
    x = torch.randn(4, 256)
    expected = nn.functional.mish(nn.functional.layer_norm(x @ layer.weight.T + layer.bias, (512,)))
    torch.testing.assert_close(layer(x), expected)


def test_mlp_last_layer_plain_linear_or_normed_with_activation():
    plain = mlp(10, (16, 16), 3)
    assert type(plain[-1]) is nn.Linear and len(plain) == 3
    normed = mlp(10, (16,), 8, last_act=SimNorm(4))
    assert isinstance(normed[-1], NormedLinear) and isinstance(normed[-1].act, SimNorm)


def test_world_model_reward_head_starts_at_zero_and_latents_are_simnormed():
    wm = WorldModel(5, 2, WorldModelConfig(units=(32, 32), encoder_units=(16,), latent_dim=16), DynamicsConfig())
    assert torch.all(wm.reward_head.net[-1].weight == 0)
    obs, act = torch.randn(7, 5), torch.rand(7, 2) * 2 - 1
    z = wm.encode(obs)
    torch.testing.assert_close(z.view(7, 2, 8).sum(-1), torch.ones(7, 2))
    torch.testing.assert_close(wm.reward(z, act), torch.zeros(7))
    z_next = wm.next(z, act)
    torch.testing.assert_close(z_next.view(7, 2, 8).sum(-1), torch.ones(7, 2))
