import math

import pytest
import torch

from flow_mbpo_pwm.models.integrators import INTEGRATORS, evaluation_times, integrate


def velocity(x: torch.Tensor, t: float) -> torch.Tensor:
    # dx/dt = cos(t) x, exact solution x(t) = x0 exp(sin t): time-dependent, so every stage's t matters.
    return math.cos(t) * x


@pytest.mark.parametrize(("method", "order"), [("euler", 1), ("heun", 2), ("rk4", 4)])
def test_convergence_order(method, order):
    x0 = torch.tensor([1.0, -2.0], dtype=torch.float64)
    exact = x0 * math.exp(math.sin(1.0))
    errors = [(integrate(velocity, x0, k, method) - exact).abs().max().item() for k in (8, 16, 32)]
    ratios = [errors[i] / errors[i + 1] for i in range(2)]
    measured = [math.log2(r) for r in ratios]
    for p in measured:
        assert abs(p - order) < 0.25, f"{method}: measured orders {measured}, expected {order}"


def test_integrate_rejects_unknown_method_and_bad_substeps():
    x0 = torch.zeros(2)
    with pytest.raises(ValueError, match="unknown integrator"):
        integrate(velocity, x0, 4, "midpoint")
    with pytest.raises(ValueError, match="substeps"):
        integrate(velocity, x0, 0, "euler")


@pytest.mark.parametrize("method", INTEGRATORS)
@pytest.mark.parametrize("substeps", [1, 3, 4])
def test_evaluation_times_are_the_floats_integrate_evaluates_at(method, substeps):
    calls = []
    integrate(lambda x, t: (calls.append(t), torch.ones_like(x))[1], torch.zeros(2), substeps, method)
    assert evaluation_times(substeps, method) == tuple(dict.fromkeys(calls))
