import torch

from flow_mbpo_pwm.config import WorldModelConfig
from flow_mbpo_pwm.models.twohot import symexp, symlog, two_hot, two_hot_cross_entropy, two_hot_decode
from flow_mbpo_pwm.models.world_model import RewardHead

BINS = torch.linspace(-10.0, 10.0, 101)


def test_symlog_symexp_are_inverse():
    x = torch.tensor([-1000.0, -3.5, -0.1, 0.0, 0.2, 7.0, 5000.0], dtype=torch.float64)
    torch.testing.assert_close(symexp(symlog(x)), x)


def test_two_hot_is_a_distribution_on_two_neighbouring_bins_that_decodes_exactly():
    r = torch.tensor([-50.0, -5.0, -0.37, 0.0, 0.123, 1.0, 4.99, 300.0])
    encoded = two_hot(symlog(r), BINS)
    torch.testing.assert_close(encoded.sum(-1), torch.ones(len(r)))
    assert ((encoded > 0).sum(-1) <= 2).all()
    torch.testing.assert_close(two_hot_decode(encoded, BINS), r, rtol=1e-5, atol=1e-4)
    # Hand example: bins are -10 + 0.2 k; x = 1.1 lies halfway between bin 55 (1.0) and bin 56 (1.2).
    hand = two_hot(torch.tensor([1.1]), BINS)[0]
    torch.testing.assert_close(hand[55:57], torch.tensor([0.5, 0.5]))
    assert hand.sum().item() == 1.0


def test_values_outside_the_support_are_clipped_to_the_edge_bins():
    encoded = two_hot(torch.tensor([-99.0, 99.0]), BINS)
    assert encoded[0, 0] == 1.0 and encoded[1, -1] == 1.0


def test_cross_entropy_is_minimised_by_the_two_hot_logits_and_trains_the_binned_head():
    r = torch.tensor([0.0, 2.5, -1.25])
    target = two_hot(symlog(r), BINS)
    best = two_hot_cross_entropy(torch.log(target + 1e-12), r, BINS)
    uniform = two_hot_cross_entropy(torch.zeros(3, 101), r, BINS)
    assert (best < uniform).all()
    # The entropy of the two-hot target is the minimum of the cross-entropy.
    entropy = -(target * torch.log(target.clamp_min(1e-12))).sum(-1)
    torch.testing.assert_close(best, entropy, atol=1e-5, rtol=1e-4)

    torch.manual_seed(0)
    config = WorldModelConfig(units=(32,), encoder_units=(16,), latent_dim=16, reward_head="binned")
    head = RewardHead(16, 2, config)
    z, a = torch.rand(8, 16), torch.rand(8, 2)
    rewards = torch.linspace(-3, 3, 8)
    opt = torch.optim.Adam(head.parameters(), lr=1e-2)
    for _ in range(300):
        loss = head.loss(z, a, rewards).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    torch.testing.assert_close(head(z, a), rewards, atol=0.1, rtol=0.05)
