"""Fixed-step ODE integrators for the flow-matching dynamics: integrate dx/dtau = v(x, tau) from tau=0 to 1.

Fixed steps keep shapes and the number of network evaluations static (CUDA-graph friendly), and gradients flow
through every evaluation. Evaluations per call: Euler K, Heun 2K, RK4 4K. Global error orders: 1, 2, 4.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

VelocityField = Callable[[torch.Tensor, float], torch.Tensor]

INTEGRATORS = ("euler", "heun", "rk4")


def euler_step(v: VelocityField, x: torch.Tensor, t: float, h: float) -> torch.Tensor:
    return x + h * v(x, t)


def heun_step(v: VelocityField, x: torch.Tensor, t: float, h: float) -> torch.Tensor:
    """Explicit trapezoid (RK2): an Euler predictor, then the average of both end slopes."""
    k1 = v(x, t)
    k2 = v(x + h * k1, t + h)
    return x + 0.5 * h * (k1 + k2)


def rk4_step(v: VelocityField, x: torch.Tensor, t: float, h: float) -> torch.Tensor:
    k1 = v(x, t)
    k2 = v(x + 0.5 * h * k1, t + 0.5 * h)
    k3 = v(x + 0.5 * h * k2, t + 0.5 * h)
    k4 = v(x + h * k3, t + h)
    return x + (h / 6.0) * (k1 + 2.0 * k2 + 2.0 * k3 + k4)


_STEPS = {"euler": euler_step, "heun": heun_step, "rk4": rk4_step}


def integrate(
    v: VelocityField, x0: torch.Tensor, substeps: int, method: str = "heun", t0: float = 0.0, t1: float = 1.0
) -> torch.Tensor:
    """x(t1) from x(t0) = x0 in `substeps` equal steps of `method` (euler | heun | rk4)."""
    if method not in _STEPS:
        raise ValueError(f"unknown integrator '{method}' (known: {list(INTEGRATORS)})")
    if substeps < 1:
        raise ValueError(f"substeps must be >= 1, got {substeps}")
    step = _STEPS[method]
    h = (t1 - t0) / substeps
    x = x0
    for k in range(substeps):
        x = step(v, x, t0 + k * h, h)
    return x


def evaluation_times(substeps: int, method: str = "heun", t0: float = 0.0, t1: float = 1.0) -> tuple[float, ...]:
    """The distinct times at which `integrate` evaluates the velocity, in first-use order: the same floats, computed
    by the same steps (a recording velocity field), so a table keyed by them is exact."""
    times: dict[float, None] = {}

    def record(x: torch.Tensor, t: float) -> torch.Tensor:
        times[t] = None
        return x

    integrate(record, torch.zeros(()), substeps, method, t0, t1)
    return tuple(times)
