"""Small composable layers of the TD-MPC2-style world model: `NormedLinear`, `SimNorm` and one `mlp` builder.

Init follows TD-MPC2 / PWM: every Linear weight trunc-normal(std 0.02), zero bias; LayerNorm starts at the identity
affine map. Heads that must start silent (the reward head) zero their last weight with `zero_last_layer`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class SimNorm(nn.Module):
    """Simplicial normalisation: view the last axis as groups of `dim` entries and softmax within each group.

    Every group of the output is a point on the probability simplex (entries in (0, 1), summing to 1)."""

    def __init__(self, dim: int = 8):
        super().__init__()
        self.dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        if shape[-1] % self.dim:
            raise ValueError(f"SimNorm: last dimension {shape[-1]} is not a multiple of the group size {self.dim}")
        return torch.softmax(x.unflatten(-1, (-1, self.dim)), dim=-1).flatten(-2)

    def extra_repr(self) -> str:
        return f"dim={self.dim}"


class NormedLinear(nn.Linear):
    """`Linear -> LayerNorm -> act` (act defaults to Mish): the hidden block of every world-model network."""

    def __init__(self, in_features: int, out_features: int, act: nn.Module | None = None):
        super().__init__(in_features, out_features)
        self.ln = nn.LayerNorm(out_features)
        self.act = act if act is not None else nn.Mish()
        init_linear(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.ln(super().forward(x)))


def init_linear(layer: nn.Linear) -> None:
    """TD-MPC2 init: trunc-normal(std 0.02) weights, zero bias."""
    nn.init.trunc_normal_(layer.weight, std=0.02)
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)


def mlp(in_dim: int, hidden: Sequence[int], out_dim: int, last_act: nn.Module | None = None) -> nn.Sequential:
    """`in_dim -> hidden... -> out_dim` with `NormedLinear` hidden layers.

    The last layer is `Linear -> LayerNorm -> last_act` when `last_act` is given (e.g. SimNorm for latents) and a
    plain `Linear` otherwise (regression heads, and the flow velocity head, whose targets are unbounded)."""
    dims = [in_dim, *hidden]
    layers: list[nn.Module] = [NormedLinear(dims[i], dims[i + 1]) for i in range(len(hidden))]
    if last_act is not None:
        layers.append(NormedLinear(dims[-1], out_dim, act=last_act))
    else:
        last = nn.Linear(dims[-1], out_dim)
        init_linear(last)
        layers.append(last)
    return nn.Sequential(*layers)


def zero_last_layer(net: nn.Sequential) -> None:
    """Zero the weight of the final Linear, so the head starts by predicting its bias (zero)."""
    last = net[-1]
    if not isinstance(last, nn.Linear):
        raise TypeError(f"expected the last layer to be a Linear, got {type(last).__name__}")
    nn.init.zeros_(last.weight)
