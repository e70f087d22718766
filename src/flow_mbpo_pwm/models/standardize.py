"""`Standardize`: `(x - mean) / std` per entry, with statistics fitted once and then held fixed (buffers: saved with
the module and, in a stack of seeds, one slice per seed). The actor and the critics read the latent through one with
`pwm.latent_norm: standardize`."""

from __future__ import annotations

import torch
from torch import nn

STD_EPS = 1e-5  # added to each entry's std, so an entry that never varied divides by this, not by 0


class Standardize(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    @torch.no_grad()
    def fit(self, x: torch.Tensor) -> None:
        """Statistics of the samples `x [n, dim]` (mean and population std + `STD_EPS`), copied in place (a captured
        graph or compiled step reads these tensors)."""
        x = x.reshape(-1, self.mean.shape[0]).to(torch.float64)
        mean = x.mean(0)
        self.mean.copy_(mean)
        self.std.copy_((x - mean).square().mean(0).sqrt() + STD_EPS)
