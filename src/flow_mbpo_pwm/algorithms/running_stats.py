"""Running mean and variance of a data stream, as a module whose statistics are buffers (saved with the agent,
moved with `.to(device)`, updated on the device without host reads).

Batches are merged with the parallel algorithm of Chan et al., so the statistics equal the mean and (population)
variance of all samples seen, up to the `epsilon` pseudo-count the stream starts from (PWM/SHAC start from mean 0,
var 1, count 1e-4). Statistics are kept in float64: 30M rewards would otherwise lose precision in the count."""

from __future__ import annotations

import torch
from torch import nn

NORM_EPS = 1e-5  # added to the variance before taking the square root (as PWM does)


class RunningMeanStd(nn.Module):
    def __init__(self, shape: tuple[int, ...] = (), epsilon: float = 1e-4):
        super().__init__()
        self.shape = tuple(shape)
        self.register_buffer("mean", torch.zeros(self.shape, dtype=torch.float64))
        self.register_buffer("var", torch.ones(self.shape, dtype=torch.float64))
        self.register_buffer("count", torch.tensor(float(epsilon), dtype=torch.float64))

    @torch.no_grad()
    def update(self, x: torch.Tensor) -> None:
        """Add a batch `[..., *shape]` (all leading axes are samples)."""
        x = x.detach().to(torch.float64).reshape(-1, *self.shape)
        batch_count = x.shape[0]
        batch_mean = x.mean(0)
        batch_var = x.var(0, unbiased=False)
        total = self.count + batch_count
        delta = batch_mean - self.mean
        m2 = self.var * self.count + batch_var * batch_count + delta.square() * self.count * batch_count / total
        self.mean.add_(delta * batch_count / total)
        self.var.copy_(m2 / total)
        self.count.copy_(total)

    def std(self) -> torch.Tensor:
        return torch.sqrt(self.var + NORM_EPS)

    def normalize(self, x: torch.Tensor, clip: float | None = None, center: bool = True) -> torch.Tensor:
        """`(x - mean) / std` (or `x / std` with `center=False`), optionally clipped to `[-clip, clip]`, in the
        dtype of `x`."""
        out = (((x - self.mean) if center else x) / self.std()).to(x.dtype)
        return out.clamp(-clip, clip) if clip is not None else out
