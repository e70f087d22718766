"""`Standardize` (models/standardize.py) and the actor and critics that read the latent through it
(`pwm.latent_norm: standardize`)."""

import torch

from flow_mbpo_pwm.models.actor import Actor
from flow_mbpo_pwm.models.critic import CriticEnsemble
from flow_mbpo_pwm.models.standardize import STD_EPS, Standardize


def simplex_latents(n: int, groups: int = 2, size: int = 4) -> torch.Tensor:
    """SimNorm-like latents: entries in (0, 1), each group of `size` summing to 1."""
    return torch.softmax(torch.randn(n, groups, size), -1).flatten(1)


def test_fit_takes_each_entrys_mean_and_population_std_and_the_output_is_standardised():
    torch.manual_seed(0)
    x = simplex_latents(1000) * torch.linspace(0.5, 2.0, 8)  # entries of different scales
    norm = Standardize(8)
    torch.testing.assert_close(norm(x), x)  # before fitting: the identity
    norm.fit(x)
    expected = x.double().std(0, unbiased=False) + STD_EPS
    torch.testing.assert_close(norm.mean, x.double().mean(0).float())
    torch.testing.assert_close(norm.std, expected.float())
    y = norm(x)
    torch.testing.assert_close(y.mean(0), torch.zeros(8), rtol=0, atol=1e-5)
    torch.testing.assert_close(y.std(0, unbiased=False), torch.ones(8), rtol=1e-3, atol=1e-3)
    tensors = norm.mean, norm.std
    norm.fit(x[:10])  # in place: a captured graph keeps reading the same tensors
    assert norm.mean is tensors[0] and norm.std is tensors[1]
    constant = torch.ones(5, 8)  # an entry that never varies divides by STD_EPS, not by 0
    norm.fit(constant)
    assert torch.equal(norm(constant), torch.zeros(5, 8))


def test_the_actor_and_the_critics_read_the_standardised_latent_and_save_its_statistics():
    torch.manual_seed(0)
    z = simplex_latents(64)
    standardized = (z - z.mean(0)) / (z.std(0, unbiased=False) + STD_EPS)
    builders = (
        lambda standardize: Actor(latent_dim=8, act_dim=3, units=(16, 16), standardize_input=standardize),
        lambda standardize: CriticEnsemble(8, (16,), num_critics=3, standardize_input=standardize),
    )
    for build in builders:
        torch.manual_seed(1)
        plain = build(False)
        torch.manual_seed(1)
        normed = build(True)  # the same weights
        normed.input_norm.fit(z)
        assert normed.state_dict().keys() - plain.state_dict().keys() == {"input_norm.mean", "input_norm.std"}
        assert not any(name.startswith("input_norm.") for name, _ in normed.named_parameters())  # not trained
        torch.testing.assert_close(normed(z), plain(standardized), rtol=1e-4, atol=1e-4)
        restored = build(True)
        restored.load_state_dict(normed.state_dict())  # the statistics travel with the saved state
        torch.testing.assert_close(restored(z), normed(z))
