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
    """Statistics of a stream of `shape`-sized samples; with `seeds=S`, of S independent streams (a stack of seeds:
    `mean [S, *shape]`, `count [S]`), each updated exactly as a lone one would be."""

    def __init__(self, shape: tuple[int, ...] = (), epsilon: float = 1e-4, seeds: int | None = None):
        super().__init__()
        self.shape = tuple(shape)
        self.seeds = seeds
        lead = () if seeds is None else (seeds,)
        self.register_buffer("mean", torch.zeros(lead + self.shape, dtype=torch.float64))
        self.register_buffer("var", torch.ones(lead + self.shape, dtype=torch.float64))
        self.register_buffer("count", torch.full(lead, float(epsilon), dtype=torch.float64))

    @torch.no_grad()
    def update(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> None:
        """Add a batch `[..., *shape]` (all leading axes are samples); stacked: `[S, ..., *shape]`, per seed, and
        only the seeds where `mask [S]` (bool) is set, if given."""
        if self.seeds is None:
            x, axis = x.detach().to(torch.float64).reshape(-1, *self.shape), 0
        else:
            x, axis = x.detach().to(torch.float64).reshape(self.seeds, -1, *self.shape), 1
        batch_count = x.shape[axis]
        batch_mean = x.mean(axis)
        # Two passes, not `x.var`: its algorithm (and last bit) depends on the tensor's shape, and a seed's
        # statistics must not depend on how many seeds are stacked.
        batch_var = (x - batch_mean.unsqueeze(axis)).square().mean(axis)
        count = self._lead(self.count, batch_mean)
        total = count + batch_count
        delta = batch_mean - self.mean
        m2 = self.var * count + batch_var * batch_count + delta.square() * count * batch_count / total
        mean, var, total = self.mean + delta * batch_count / total, m2 / total, self.count + batch_count
        if mask is not None:
            mean = torch.where(self._lead(mask, mean), mean, self.mean)
            var = torch.where(self._lead(mask, var), var, self.var)
            total = torch.where(mask, total, self.count)
        self.mean.copy_(mean)
        self.var.copy_(var)
        self.count.copy_(total)

    def std(self) -> torch.Tensor:
        return torch.sqrt(self.var + NORM_EPS)

    def normalize(self, x: torch.Tensor, clip: float | None = None, center: bool = True) -> torch.Tensor:
        """`(x - mean) / std` (or `x / std` with `center=False`), optionally clipped to `[-clip, clip]`, in the
        dtype of `x` (stacked: `x [S, ..., *shape]`, each seed by its own statistics)."""
        mean, std = self._lead(self.mean, x), self._lead(self.std(), x)
        if self.seeds is not None and not self.shape:
            # As a lone 0-d statistic enters the arithmetic (type promotion casts it to x's dtype).
            mean, std = mean.to(x.dtype), std.to(x.dtype)
        out = (((x - mean) if center else x) / std).to(x.dtype)
        return out.clamp(-clip, clip) if clip is not None else out

    def _lead(self, stat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """A per-seed `stat [S, ...]` viewed to broadcast against `x [S, ..., *shape]` (lone: unchanged)."""
        if self.seeds is None:
            return stat
        return stat.reshape(stat.shape[:1] + (1,) * (x.dim() - stat.dim()) + stat.shape[1:])
