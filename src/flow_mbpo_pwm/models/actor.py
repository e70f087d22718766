"""The policy: latent -> 400 -> 200 -> 100 -> act_dim (hidden `Linear -> Mish -> LayerNorm`, PyTorch's default Linear
init as in PWM), with a state-independent learnable log-std (init -1.0, never below its floor: `min_logstd`, or what
`set_floor` puts there). With `standardize_input` (`pwm.latent_norm: standardize`) the latent is first standardised
per entry by statistics fitted once (`input_norm`, models/standardize.py).

Training action `tanh(mu + sigma * eps)` (reparameterised); evaluation action `tanh(mu)`."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from flow_mbpo_pwm.models.standardize import Standardize


class Actor(nn.Module):
    def __init__(
        self,
        latent_dim: int,
        act_dim: int,
        units: Sequence[int] = (400, 200, 100),
        init_logstd: float = -1.0,
        min_logstd: float = -1.427,
        standardize_input: bool = False,
    ):
        super().__init__()
        self.input_norm = Standardize(latent_dim) if standardize_input else nn.Identity()
        dims = [latent_dim, *units]
        layers: list[nn.Module] = []
        for i in range(len(units)):
            layers += [nn.Linear(dims[i], dims[i + 1]), nn.Mish(), nn.LayerNorm(dims[i + 1])]
        layers.append(nn.Linear(dims[-1], act_dim))
        self.mu_net = nn.Sequential(*layers)
        self.logstd = nn.Parameter(torch.full((act_dim,), float(init_logstd)))
        # A tensor, filled in place by `set_floor` (a captured graph or compiled step reads it), and not part of
        # the state: the floor is a function of the epoch (`PWMConfig.logstd_floor`).
        self.register_buffer("logstd_floor", torch.tensor(float(min_logstd)), persistent=False)

    @torch.no_grad()
    def set_floor(self, min_logstd: float) -> None:
        self.logstd_floor.fill_(min_logstd)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """The mean `mu` of the pre-tanh Gaussian."""
        return self.mu_net(self.input_norm(z))

    def std(self) -> torch.Tensor:
        return self.logstd.clamp(min=self.logstd_floor).exp()

    def sample(
        self, z: torch.Tensor, generator: torch.Generator | None = None, noise: torch.Tensor | None = None
    ) -> torch.Tensor:
        """`tanh(mu + sigma * eps)`, eps ~ N(0, I) drawn from `generator`, or given as `noise` (drawn by the caller,
        e.g. outside `torch.vmap`, whose own randomness would come from the global RNG)."""
        return torch.tanh(self._mean_and_pre_tanh(z, generator, noise)[1])

    def sample_with_terms(
        self, z: torch.Tensor, noise: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`sample`'s action (bitwise), the terms of the actor's penalties: per action entry `log tanh'(u)`, u = mu
        + sigma * eps (0 in tanh's linear range, about -6.2 where |a| = 0.999; computed from u, so that a saturated
        action (a == 1 in float32) still has a gradient back towards the linear range), and the deterministic
        policy's action `tanh(mu)`."""
        mu, u = self._mean_and_pre_tanh(z, None, noise)
        return torch.tanh(u), log_tanh_slope(u), torch.tanh(mu)

    def _mean_and_pre_tanh(
        self, z: torch.Tensor, generator: torch.Generator | None, noise: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """`mu` and `u = mu + sigma * eps`."""
        mu = self(z)
        if noise is None:
            noise = torch.randn(mu.shape, generator=generator, dtype=mu.dtype, device=mu.device)
        return mu, mu + self.std() * noise

    def act(self, z: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self(z))

    @torch.no_grad()
    def clamp_logstd_(self) -> None:
        """Keep the parameter itself at or above the floor (after each optimiser step), so gradients keep flowing."""
        self.logstd.clamp_(min=self.logstd_floor)


def saturation_penalty(log_slope: torch.Tensor, threshold: float = 0.0) -> torch.Tensor:
    """The actor's saturation penalty per row: the mean over the last dim (action entries) of `-log tanh'(u)` beyond
    the action magnitude `threshold`, i.e. of `max(0, -log tanh'(u) + log(1 - threshold^2))` (tanh' = 1 - a^2), from
    `log_slope = log tanh'(u)`. With `threshold` 0 every entry counts (`-log tanh'(u)` >= 0, the tanh term of a
    tanh-Gaussian's entropy); with e.g. 0.95 only actions at |a| > 0.95 do, each with the same gradient as without a
    threshold, so the penalty frees saturated actions without pulling the others towards 0."""
    if threshold == 0.0:
        return (-log_slope).mean(-1)
    return torch.relu(math.log1p(-threshold * threshold) - log_slope).mean(-1)


def log_tanh_slope(u: torch.Tensor) -> torch.Tensor:
    """`log(1 - tanh(u)^2)`, the log of tanh's derivative, as `log 4 + log sigmoid(2u) + log sigmoid(-2u)`
    (1 - tanh(u)^2 = 4 sigmoid(2u) sigmoid(-2u)): exact, and finite with a gradient (`-2 tanh(u)`) where
    `1 - tanh(u)^2` rounds to 0. (Not the softplus form: CPU softplus rounds differently with the tensor's size, so
    a seed in a stack would not be bitwise the seed alone.)"""
    return math.log(4.0) + F.logsigmoid(2.0 * u) + F.logsigmoid(-2.0 * u)
