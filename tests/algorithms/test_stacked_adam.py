"""The stack's Adam (algorithms/stacked_adam.py): torch.optim.Adam's update for every seed at once, per-seed state
and step counts, seeds that do not train left bitwise as they were, and each seed's state in a lone torch Adam's
state_dict format (both ways)."""

from __future__ import annotations

import math

import pytest
import torch

from flow_mbpo_pwm.algorithms.stacked_adam import StackedAdam

SHAPES = ((5, 3), (7,), (2, 3, 4))
SEEDS = 3
BETAS = (0.7, 0.95)


def stack(lr: float = 1e-2, betas: tuple[float, float] = BETAS) -> tuple[StackedAdam, list[torch.Tensor]]:
    """A StackedAdam over random `[SEEDS, *shape]` parameters; each seed's parameters are views, as in PWM."""
    g = torch.Generator().manual_seed(0)
    params = [torch.randn(SEEDS, *shape, generator=g).requires_grad_() for shape in SHAPES]
    seed_params = [[torch.nn.Parameter(p.detach()[s]) for p in params] for s in range(SEEDS)]
    return StackedAdam(params, seed_params, lr, betas), params


def random_grads(generator: torch.Generator) -> list[torch.Tensor]:
    return [torch.randn(SEEDS, *shape, generator=generator) * 10 ** torch.randint(-4, 2, ()).item() for shape in SHAPES]


def test_each_seed_steps_as_torch_adam_with_its_own_step_count():
    """40 steps; seed 2 joins at step 10, so the seeds' step counts (bias corrections) differ."""
    adam, params = stack()
    lone = [[p.detach()[s].clone().requires_grad_() for p in params] for s in range(SEEDS)]
    torch_adams = [torch.optim.Adam(ps, lr=1e-2, betas=BETAS) for ps in lone]
    g = torch.Generator().manual_seed(1)
    for step in range(40):
        flags = (True, True, step >= 10)
        grads = random_grads(g)
        adam.step(grads, torch.tensor(flags))
        for s in range(SEEDS):
            if flags[s]:
                for p, grad in zip(lone[s], grads, strict=True):
                    p.grad = grad[s].clone()
                torch_adams[s].step()
    assert adam.steps.tolist() == [40.0, 40.0, 30.0]
    for s in range(SEEDS):
        for p, mine in zip(lone[s], params, strict=True):
            torch.testing.assert_close(mine.detach()[s], p.detach(), rtol=1e-6, atol=1e-7)
        ours = adam.seeds[s].state_dict()["state"]
        for i, state in enumerate(torch_adams[s].state_dict()["state"].values()):
            for key in ("exp_avg", "exp_avg_sq"):
                # Rounding, with cancellation where a moment is near 0: relative to the tensor's largest entry.
                scale = state[key].abs().max().item()
                torch.testing.assert_close(ours[i][key], state[key], rtol=1e-6, atol=1e-6 * scale)
            assert float(ours[i]["step"]) == float(state["step"])


def test_a_masked_seed_is_untouched_bitwise_even_with_nan():
    adam, params = stack()
    g = torch.Generator().manual_seed(2)
    for _ in range(3):
        adam.step(random_grads(g), torch.tensor([True, True, True]))
    with torch.no_grad():
        params[0][1, 0, 0] = math.nan  # a stopped seed may hold NaN parameters...
    grads = random_grads(g)
    for grad in grads:
        grad[1] = math.nan  # ... and NaN gradients

    def seed_one() -> list[torch.Tensor]:
        """Seed 1's parameters, moments and step count, as raw bits (so NaN compares too)."""
        moments = [state[key] for state in adam.seed_state(1) for key in ("exp_avg", "exp_avg_sq")]
        return [t.detach().clone().view(torch.int32) for t in (*(p[1] for p in params), *moments, adam.steps[1])]

    before, others = seed_one(), [p.detach()[[0, 2]].clone() for p in params]
    adam.step(grads, torch.tensor([True, False, True]))
    assert all(torch.equal(old, new) for old, new in zip(before, seed_one(), strict=True))
    assert adam.steps.tolist() == [4.0, 3.0, 4.0]
    for p, old in zip(params, others, strict=True):
        assert torch.isfinite(p.detach()[[0, 2]]).all() and not torch.equal(p.detach()[[0, 2]], old)


def test_a_seeds_state_round_trips_through_a_lone_torch_adam():
    """A seed's state_dict loads into a plain torch.optim.Adam (a lone run before this change) and back, and both
    then take the same step."""
    adam, params = stack()
    g = torch.Generator().manual_seed(3)
    for _ in range(5):
        adam.step(random_grads(g), torch.tensor([True, True, True]))
    lone = [p.detach()[1].clone().requires_grad_() for p in params]
    torch_adam = torch.optim.Adam(lone, lr=0.5, betas=BETAS)
    saved = adam.seeds[1].state_dict()
    assert set(saved["state"][0]) == {"step", "exp_avg", "exp_avg_sq"} and saved["param_groups"][0]["lr"] == 1e-2
    torch_adam.load_state_dict(saved)
    grads = random_grads(g)
    for p, grad in zip(lone, grads, strict=True):
        p.grad = grad[1].clone()
    torch_adam.step()
    # Back into seed 0 of the stack, in place, in the capturable format a GPU run saved (tensor lr and steps).
    state = torch_adam.state_dict()
    state["param_groups"][0].update(lr=torch.tensor(0.125), capturable=True)
    held = [adam.exp_avg.data_ptr(), adam.steps.data_ptr()]
    adam.seeds[0].load_state_dict(state)
    assert [adam.exp_avg.data_ptr(), adam.steps.data_ptr()] == held
    assert float(adam.lr) == 0.125 and adam.seeds[2].param_groups[0]["lr"] == 0.125  # the seeds share one lr
    with torch.no_grad():
        for p, mine in zip(lone, params, strict=True):
            mine[0] = p
    assert adam.steps.tolist() == [6.0, 5.0, 5.0]
    for i, p in enumerate(lone):
        loaded = adam.seeds[0].state_dict()["state"][i]
        assert torch.equal(loaded["exp_avg"], torch_adam.state[p]["exp_avg"])
        assert torch.equal(loaded["exp_avg_sq"], torch_adam.state[p]["exp_avg_sq"])


def test_a_never_stepped_state_loads_as_zeros_and_other_hyperparameters_are_refused():
    adam, params = stack()
    adam.step(random_grads(torch.Generator().manual_seed(4)), torch.tensor([True, True, True]))
    fresh = torch.optim.Adam([p.detach()[0].clone() for p in params], lr=1e-2, betas=BETAS)
    adam.seeds[0].load_state_dict(fresh.state_dict())  # empty state: never stepped
    assert adam.steps.tolist() == [0.0, 1.0, 1.0]
    assert all(not state["exp_avg"].any() for state in adam.seed_state(0))
    for kwargs in ({"weight_decay": 0.1}, {"amsgrad": True}, {"betas": (0.9, 0.999)}, {"eps": 1e-6}):
        other = torch.optim.Adam([p.detach()[0].clone() for p in params], lr=1e-2, **{"betas": BETAS, **kwargs})
        with pytest.raises(ValueError, match="hyperparameters"):
            adam.seeds[0].load_state_dict(other.state_dict())


def test_set_lr_fills_the_lr_tensor_in_place_and_a_seed_is_not_stepped_alone():
    adam, _ = stack()
    held = adam.lr
    adam.set_lr(0.25)
    assert adam.lr is held and float(held) == 0.25
    assert all(optimizer.param_groups[0]["lr"] == 0.25 for optimizer in adam.seeds)
    with pytest.raises(RuntimeError, match="StackedAdam"):
        adam.seeds[0].step()
