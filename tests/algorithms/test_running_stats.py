import numpy as np
import torch

from flow_mbpo_pwm.algorithms.running_stats import RunningMeanStd


def test_matches_numpy_mean_and_variance_over_the_concatenated_batches():
    rng = np.random.default_rng(0)
    batches = [rng.normal(3.0, 2.0, size=(n, 4)) * rng.uniform(0.5, 2.0, size=4) for n in (1, 7, 100, 33)]
    stats = RunningMeanStd((4,), epsilon=0.0)
    for batch in batches:
        stats.update(torch.as_tensor(batch, dtype=torch.float32))
    everything = np.concatenate(batches).astype(np.float32).astype(np.float64)
    np.testing.assert_allclose(stats.mean.numpy(), everything.mean(0), rtol=1e-10)
    np.testing.assert_allclose(stats.var.numpy(), everything.var(0), rtol=1e-10)
    assert stats.count.item() == len(everything)


def test_default_pseudo_count_only_nudges_the_statistics_and_normalize_clips():
    stats = RunningMeanStd(())
    data = torch.arange(1000, dtype=torch.float32)
    stats.update(data[:500])
    stats.update(data[500:])
    assert abs(stats.mean.item() - 499.5) < 1e-3
    assert abs(stats.var.item() - data.double().var(unbiased=False).item()) / stats.var.item() < 1e-6
    normalized = stats.normalize(torch.tensor([499.5, 1e9, -1e9]), clip=5.0)
    assert normalized.dtype == torch.float32
    torch.testing.assert_close(normalized, torch.tensor([0.0, 5.0, -5.0]), atol=1e-6, rtol=0)


def test_statistics_are_buffers_in_the_state_dict():
    stats = RunningMeanStd(())
    stats.update(torch.tensor([1.0, 2.0, 3.0]))
    other = RunningMeanStd(())
    other.load_state_dict(stats.state_dict())
    assert torch.equal(other.mean, stats.mean) and torch.equal(other.var, stats.var)
    assert torch.equal(other.count, stats.count)


def test_scale_only_normalisation_keeps_the_sign_of_an_alive_bonus():
    """reward_norm="std": a constant positive reward stays positive (centring would map it to 0)."""
    stats = RunningMeanStd(())
    stats.update(torch.tensor([1.0, 1.2, 0.8, 1.0]))
    std = torch.sqrt(stats.var + 1e-5).float()
    scaled = stats.normalize(torch.tensor([1.0, -1.0]), clip=5.0, center=False)
    torch.testing.assert_close(scaled, (torch.tensor([1.0, -1.0]) / std).clamp(-5, 5))
    assert scaled[0] > 0 and abs(stats.normalize(torch.tensor([1.0]), center=True).item()) < 1e-3


def test_stacked_statistics_equal_one_lone_stream_per_seed_and_masked_seeds_stay_unchanged():
    """A stack of S seeds keeps S independent streams: seed s's statistics are exactly (bitwise) those of a lone
    RunningMeanStd fed seed s's samples; a seed masked out of an update is left as it was."""
    generator = torch.Generator().manual_seed(0)
    seeds = 3
    stacked = RunningMeanStd((), seeds=seeds)
    lone = [RunningMeanStd(()) for _ in range(seeds)]
    masks = [None, torch.tensor([True, False, True]), torch.tensor([False, True, False]), None]
    for step, mask in enumerate(masks):
        batch = torch.randn(seeds, 5, generator=generator) * (step + 1) + torch.arange(seeds).view(-1, 1)
        stacked.update(batch, mask)
        for s in range(seeds):
            if mask is None or mask[s]:
                lone[s].update(batch[s])
    for s in range(seeds):
        for name in ("mean", "var", "count"):
            assert torch.equal(getattr(stacked, name)[s], getattr(lone[s], name)), (s, name)
    x = torch.randn(seeds, 4, 2, generator=generator)
    normalized = stacked.normalize(x, clip=1.0)
    for s in range(seeds):
        assert torch.equal(normalized[s], lone[s].normalize(x[s], clip=1.0))
    assert torch.equal(stacked.std()[1], lone[1].std())
