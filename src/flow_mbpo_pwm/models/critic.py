"""Vectorised critic ensemble: K critics latent -> 400 -> 200 -> 1 evaluated as one batched computation.

Parameters are stacked along a leading ensemble axis (`weight [K, in, out]`), so a forward pass is one `baddbmm` per
layer for all critics — no Python loop over networks. Hidden block `Linear -> Mish -> LayerNorm` (per-critic affine),
orthogonal init with gain sqrt(2) and zero bias (PWM's critic), including the output layer. No target network.
With `standardize_input` every critic reads the latent standardised per entry, as the actor does (`input_norm`)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from flow_mbpo_pwm.models.standardize import Standardize


class CriticEnsemble(nn.Module):
    def __init__(
        self,
        latent_dim: int,
        units: Sequence[int] = (400, 200),
        num_critics: int = 3,
        init_gain: float = math.sqrt(2.0),
        standardize_input: bool = False,
    ):
        super().__init__()
        self.num_critics = num_critics
        self.input_norm = Standardize(latent_dim) if standardize_input else nn.Identity()
        dims = [latent_dim, *units, 1]
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        self.norm_weights = nn.ParameterList()
        self.norm_biases = nn.ParameterList()
        for fan_in, fan_out in zip(dims[:-1], dims[1:], strict=True):
            weight = torch.empty(num_critics, fan_in, fan_out)
            for k in range(num_critics):  # init only: each critic gets its own orthogonal matrix
                w = torch.empty(fan_out, fan_in)
                nn.init.orthogonal_(w, gain=init_gain)
                weight[k] = w.T
            self.weights.append(nn.Parameter(weight))
            self.biases.append(nn.Parameter(torch.zeros(num_critics, 1, fan_out)))
        for width in units:
            self.norm_weights.append(nn.Parameter(torch.ones(num_critics, 1, width)))
            self.norm_biases.append(nn.Parameter(torch.zeros(num_critics, 1, width)))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Values of every critic: `z [..., latent]` -> `[K, ...]`."""
        lead = z.shape[:-1]
        z = self.input_norm(z)
        h = z.reshape(1, -1, z.shape[-1]).expand(self.num_critics, -1, -1)
        hidden = len(self.norm_weights)
        for i, (weight, bias) in enumerate(zip(self.weights, self.biases, strict=True)):
            h = torch.baddbmm(bias, h, weight)
            if i < hidden:
                h = F.layer_norm(F.mish(h), h.shape[-1:]) * self.norm_weights[i] + self.norm_biases[i]
        return h.squeeze(-1).reshape(self.num_critics, *lead)

    def value(self, z: torch.Tensor) -> torch.Tensor:
        """Pessimistic value: the minimum over the ensemble, `[...]`."""
        return self(z).min(dim=0).values
